/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The producer table (dedup.h) and its WAL record. The table is written as
 * the first record of every WAL file a rotation starts, so deduplication
 * survives the deletion of older files; recovery takes the highest
 * sequence found across all shards' files. Producer-table record payload
 * (little-endian; docs/file-format.md, "WAL files"):
 *
 *   OFFSET  SIZE  DESCRIPTION
 *   0       4     number of entries E
 *   4       4     zero
 *   8       16E   per entry: producer id (8), highest applied sequence (8)
 */
#include "dedup.h"

#include <errno.h>
#include <string.h>

#define PRODUCERS_MAX (1u << 16)

static uint32_t prod_slot(uint32_t cap, uint64_t id)
{
    return (uint32_t)((id * 0x9e3779b97f4a7c15ull) >> 32) & (cap - 1);
}

struct producer *tide__dedup_find(const struct producers *p, uint64_t id)
{
    if (p->cap == 0 || id == 0)
        return NULL;
    for (uint32_t i = prod_slot(p->cap, id);; i = (i + 1) & (p->cap - 1)) {
        if (p->e[i].id == id)
            return &p->e[i];
        if (p->e[i].id == 0)
            return NULL;
    }
}

void tide__dedup_fini(struct producers *p)
{
    tide_free(p->e);
    memset(p, 0, sizeof(*p));
}

/* Rebuild the table with `cap` slots; when `forget`, drop the producers
 * with nothing in flight. */
static int rebuild(struct producers *p, uint32_t cap, int forget)
{
    struct producer *e = tide_calloc(cap, sizeof(*e));
    uint32_t n = 0;

    if (!e)
        return -ENOMEM;
    for (uint32_t j = 0; j < p->cap; j++) {
        uint32_t i;

        if (!p->e[j].id || (forget && !p->e[j].inflight))
            continue;
        for (i = prod_slot(cap, p->e[j].id); e[i].id; i = (i + 1) & (cap - 1))
            ;
        e[i] = p->e[j];
        n++;
    }
    tide_free(p->e);
    p->e = e;
    p->cap = cap;
    p->n = n;
    return 0;
}

struct producer *tide__dedup_entry(struct producers *p, uint64_t id)
{
    struct producer *e = tide__dedup_find(p, id);
    uint32_t i;

    if (e)
        return e;
    if ((p->n + 1) * 2 > p->cap) {
        int forget = p->n >= PRODUCERS_MAX;

        if (rebuild(p, forget ? p->cap : p->cap ? p->cap * 2 : 64, forget))
            return NULL;
    }
    for (i = prod_slot(p->cap, id); p->e[i].id; i = (i + 1) & (p->cap - 1))
        ;
    p->e[i].id = id;
    p->n++;
    return &p->e[i];
}

int tide__dedup_set(struct producers *p, uint64_t id, uint64_t seq)
{
    struct producer *e;

    if (id == 0 || seq == 0)
        return 0;
    e = tide__dedup_entry(p, id);
    if (!e)
        return -ENOMEM;
    if (seq > e->applied)
        e->applied = seq;
    if (seq > e->accepted)
        e->accepted = seq;
    return 0;
}

/* Serialise the applied sequences as a WAL record payload. */
int tide__dedup_record(const struct producers *p, struct tide_buf *out)
{
    uint8_t e[16];
    uint32_t n = 0;
    int rc;

    out->len = 0;
    for (uint32_t i = 0; i < p->cap; i++)
        n += p->e[i].id && p->e[i].applied;
    rc = tide__buf_reserve(out, 8 + (size_t)n * 16);
    if (rc)
        return rc;
    memset(e, 0, 8);
    tide__put_le32(e, n);
    tide__buf_append(out, e, 8);
    for (uint32_t i = 0; i < p->cap; i++) {
        if (!p->e[i].id || !p->e[i].applied)
            continue;
        tide__put_le64(e, p->e[i].id);
        tide__put_le64(e + 8, p->e[i].applied);
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
