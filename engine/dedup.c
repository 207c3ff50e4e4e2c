/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The producer table (dedup.h) and its WAL record. The table is written as
 * the first record of every WAL file, so deduplication survives the
 * deletion of older files. Producer-table record payload (little-endian;
 * docs/file-format.md, "WAL files"):
 *
 *   OFFSET  SIZE  DESCRIPTION
 *   0       4     number of entries E
 *   4       4     zero
 *   8       16E   per entry: producer id (8), highest sequence (8)
 */
#include "dedup.h"

#include <errno.h>
#include <string.h>

#define PRODUCERS_MAX (1u << 16)

static uint32_t prod_slot(const struct producers *p, uint64_t id)
{
    return (uint32_t)((id * 0x9e3779b97f4a7c15ull) >> 32) & (p->cap - 1);
}

uint64_t tide__dedup_get(const struct producers *p, uint64_t id)
{
    if (p->cap == 0)
        return 0;
    for (uint32_t i = prod_slot(p, id);; i = (i + 1) & (p->cap - 1)) {
        if (p->ids[i] == id)
            return p->seqs[i];
        if (p->ids[i] == 0)
            return 0;
    }
}

void tide__dedup_fini(struct producers *p)
{
    tide_free(p->ids);
    tide_free(p->seqs);
    memset(p, 0, sizeof(*p));
}

/* Record `seq` for `id`. The table is bounded: when it holds
 * PRODUCERS_MAX producers it is cleared, which only means a retry of a
 * forgotten producer's batch is applied again, harmlessly, because a
 * repeated (series, timestamp) keeps one value. */
int tide__dedup_set(struct producers *p, uint64_t id, uint64_t seq)
{
    uint32_t i;

    if (id == 0)
        return 0;
    if ((p->n + 1) * 2 > p->cap) {
        struct producers q = {0};
        uint32_t cap = p->cap ? p->cap * 2 : 64;

        if (p->n >= PRODUCERS_MAX)
            cap = p->cap;
        q.cap = cap;
        q.ids = tide_calloc(cap, sizeof(*q.ids));
        q.seqs = tide_calloc(cap, sizeof(*q.seqs));
        if (!q.ids || !q.seqs) {
            tide__dedup_fini(&q);
            return -ENOMEM;
        }
        for (uint32_t j = 0; j < p->cap && p->n < PRODUCERS_MAX; j++) {
            if (!p->ids[j])
                continue;
            i = prod_slot(&q, p->ids[j]);
            while (q.ids[i])
                i = (i + 1) & (q.cap - 1);
            q.ids[i] = p->ids[j];
            q.seqs[i] = p->seqs[j];
            q.n++;
        }
        tide__dedup_fini(p);
        *p = q;
    }
    for (i = prod_slot(p, id); p->ids[i] && p->ids[i] != id;
         i = (i + 1) & (p->cap - 1))
        ;
    if (!p->ids[i])
        p->n++;
    p->ids[i] = id;
    if (seq > p->seqs[i])
        p->seqs[i] = seq;
    return 0;
}

/* Serialise the producer table as a WAL record payload. */
int tide__dedup_record(const struct producers *p, struct tide_buf *out)
{
    uint8_t e[16];
    int rc;

    out->len = 0;
    rc = tide__buf_reserve(out, 8 + (size_t)p->n * 16);
    if (rc)
        return rc;
    memset(e, 0, 8);
    tide__put_le32(e, p->n);
    tide__buf_append(out, e, 8);
    for (uint32_t i = 0; i < p->cap; i++) {
        if (!p->ids[i])
            continue;
        tide__put_le64(e, p->ids[i]);
        tide__put_le64(e + 8, p->seqs[i]);
        tide__buf_append(out, e, 16);
    }
    return 0;
}

int tide__dedup_load(struct producers *p, const uint8_t *rec, uint32_t len)
{
    uint32_t n;
    int rc;

    if (len < 8)
        return TIDE_ECORRUPT;
    n = tide__get_le32(rec);
    if ((uint64_t)n * 16 != len - 8)
        return TIDE_ECORRUPT;
    for (uint32_t i = 0; i < n; i++) {
        rc = tide__dedup_set(p, tide__get_le64(rec + 8 + 16 * i),
                             tide__get_le64(rec + 16 + 16 * i));
        if (rc)
            return rc;
    }
    return 0;
}
