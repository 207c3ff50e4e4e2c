/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The WAL batch record codec (wal_batch.h): the payload a record of type
 * TIDE_WAL_BATCH carries inside the framing of wal.c. Little-endian;
 * docs/file-format.md, "WAL files", is the specification:
 *
 *   OFFSET  SIZE  DESCRIPTION
 *   0       8     producer id
 *   8       8     sequence
 *   16      4     number of columns C
 *   20      4     zero
 *   24      ...   C columns, each 8-byte aligned:
 *                 series id (8), account id (8), tier (2), type (1),
 *                 zero (1), points n (4), timestamps (8n), then values:
 *                 f64/i64 8n; bool n bytes; string 4n lengths then the
 *                 bytes; each part padded with zeros to a multiple of 8
 *
 * The producer-table record (type TIDE_WAL_PRODUCERS) is in dedup.c.
 */
#include "wal_batch.h"

#include <string.h>

#define COL_HEADER 24u
#define BATCH_HEADER TIDE_WAL_BATCH_HEADER

static size_t pad8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

static size_t values_bytes(const struct tide_column *c)
{
    size_t n = c->n, bytes = 0;

    switch (c->type) {
    case TIDE_TYPE_F64:
    case TIDE_TYPE_I64:
        return 8 * n;
    case TIDE_TYPE_BOOL:
        return pad8(n);
    case TIDE_TYPE_STR:
        for (size_t i = 0; i < n; i++)
            bytes += c->v.str[i].len;
        return pad8(4 * n) + pad8(bytes);
    }
    return 0;
}

size_t tide__wal_batch_column_bytes(const struct tide_column *c)
{
    return COL_HEADER + 8 * (size_t)c->n + values_bytes(c);
}

int tide__wal_batch_column_valid(const struct tide_column *c)
{
    if (c->series_id == 0 || c->type < TIDE_TYPE_F64 ||
        c->type > TIDE_TYPE_STR || (c->n && !c->ts_ns))
        return 0;
    if (c->n && !c->v.f64)
        return 0;
    if (c->type == TIDE_TYPE_STR)
        for (uint32_t i = 0; i < c->n; i++)
            if (c->v.str[i].len > TIDE_STR_BYTES_MAX ||
                (c->v.str[i].len && !c->v.str[i].ptr))
                return 0;
    return 1;
}

void tide__wal_batch_start(uint8_t *rec, uint64_t producer_id,
                           uint64_t sequence)
{
    memset(rec, 0, BATCH_HEADER);
    tide__put_le64(rec, producer_id);
    tide__put_le64(rec + 8, sequence);
}

uint64_t tide__wal_batch_producer(const uint8_t *rec)
{
    return tide__get_le64(rec);
}

uint64_t tide__wal_batch_sequence(const uint8_t *rec)
{
    return tide__get_le64(rec + 8);
}

uint8_t *tide__wal_batch_put_column(uint8_t *rec, uint8_t *p,
                                    const struct tide_column *c)
{
    size_t n = c->n;

    tide__put_le32(rec + 16, tide__get_le32(rec + 16) + 1);

    memset(p, 0, COL_HEADER);
    tide__put_le64(p, c->series_id);
    tide__put_le64(p + 8, c->account_id);
    p[16] = (uint8_t)c->tier;
    p[17] = (uint8_t)(c->tier >> 8);
    p[18] = c->type;
    tide__put_le32(p + 20, c->n);
    p += COL_HEADER;
    memcpy(p, c->ts_ns, 8 * n);
    p += 8 * n;
    switch (c->type) {
    case TIDE_TYPE_F64:
    case TIDE_TYPE_I64:
        memcpy(p, c->v.i64, 8 * n);
        return p + 8 * n;
    case TIDE_TYPE_BOOL:
        for (size_t i = 0; i < n; i++)
            p[i] = c->v.b[i] != 0;
        memset(p + n, 0, pad8(n) - n);
        return p + pad8(n);
    default: {
        uint8_t *s;

        for (size_t i = 0; i < n; i++)
            tide__put_le32(p + 4 * i, c->v.str[i].len);
        memset(p + 4 * n, 0, pad8(4 * n) - 4 * n);
        s = p + pad8(4 * n);
        for (size_t i = 0; i < n; i++) {
            if (c->v.str[i].len)
                memcpy(s, c->v.str[i].ptr, c->v.str[i].len);
            s += c->v.str[i].len;
        }
        while ((size_t)(s - p) % 8)
            *s++ = 0;
        return s;
    }
    }
}

int tide__wal_batch_columns(const uint8_t *rec, uint32_t len,
                            tide_wal_column_fn fn, void *ctx)
{
    const uint8_t *p = rec + BATCH_HEADER, *end = rec + len;
    uint32_t n_cols;

    if (len < BATCH_HEADER)
        return TIDE_ECORRUPT;
    n_cols = tide__get_le32(rec + 16);
    for (uint32_t k = 0; k < n_cols; k++) {
        struct wal_col c;
        size_t vbytes;
        int rc;

        if ((size_t)(end - p) < COL_HEADER)
            return TIDE_ECORRUPT;
        c.series_id = tide__get_le64(p);
        c.account_id = tide__get_le64(p + 8);
        c.tier = (uint16_t)(p[16] | p[17] << 8);
        c.type = p[18];
        c.n = tide__get_le32(p + 20);
        p += COL_HEADER;
        if ((size_t)(end - p) / 8 < c.n)
            return TIDE_ECORRUPT;
        c.ts = p;
        c.v = p + 8 * (size_t)c.n;
        switch (c.type) {
        case TIDE_TYPE_F64:
        case TIDE_TYPE_I64:
            vbytes = 8 * (size_t)c.n;
            break;
        case TIDE_TYPE_BOOL:
            vbytes = pad8(c.n);
            break;
        case TIDE_TYPE_STR:
            vbytes = pad8(4 * (size_t)c.n);
            break;
        default:
            return TIDE_ECORRUPT;
        }
        if ((size_t)(end - c.v) < vbytes)
            return TIDE_ECORRUPT;
        if (c.type == TIDE_TYPE_STR) {
            const uint8_t *s = c.v + vbytes;
            size_t total = 0;

            for (uint32_t i = 0; i < c.n; i++) {
                uint32_t l = tide__get_le32(c.v + 4 * (size_t)i);

                if ((size_t)(end - s) - total < l || l > TIDE_STR_BYTES_MAX)
                    return TIDE_ECORRUPT;
                total += l;
            }
            if ((size_t)(end - s) < pad8(total))
                return TIDE_ECORRUPT;
            vbytes += pad8(total);
        }
        rc = fn(ctx, &c);
        if (rc)
            return rc;
        p = c.v + vbytes;
    }
    return 0;
}

/* Columns are applied APPLY_AHEAD behind the walk, so that the cache
 * misses of an append (slot, series, tails: one each per series at fleet
 * width) are prefetched in stages while earlier columns are applied. */
#define APPLY_AHEAD 16
#define APPLY_STAGE1 6  /* columns after its slot prefetch: the series */
#define APPLY_STAGE2 12 /* ... the tails */

struct apply {
    struct head *h;
    struct tide_buf *scratch;
    uint32_t *skipped;
    struct wal_col ring[APPLY_AHEAD];
    uint32_t n; /* columns walked */
};

/* Apply one checked column to the head. */
static int apply_column(void *ctx, const struct wal_col *c)
{
    struct apply *a = ctx;
    const int64_t *ts = (const int64_t *)(const void *)c->ts;
    int rc;

    a->scratch->len = 0;
    if (c->type == TIDE_TYPE_STR) {
        const uint8_t *s = c->v + pad8(4 * (size_t)c->n);
        struct tide_str *strs;
        size_t total = 0;

        rc = tide__buf_reserve(a->scratch, (size_t)c->n * sizeof(*strs));
        if (rc)
            return rc;
        strs = (struct tide_str *)a->scratch->data;
        for (uint32_t i = 0; i < c->n; i++) {
            strs[i].ptr = (const char *)s + total;
            strs[i].len = tide__get_le32(c->v + 4 * (size_t)i);
            total += strs[i].len;
        }
        rc = tide__head_append(a->h, c->series_id, c->account_id, c->tier,
                               c->type, c->n, ts, NULL, strs);
    } else {
        const uint64_t *vals = (const uint64_t *)(const void *)c->v;

        /* f64 and i64 are used in place: records are 8-byte aligned and
         * little-endian like the host. Bools widen to 8 bytes. */
        if (c->type == TIDE_TYPE_BOOL) {
            uint64_t *wide;

            rc = tide__buf_reserve(a->scratch, 8 * (size_t)c->n);
            if (rc)
                return rc;
            wide = (uint64_t *)(void *)a->scratch->data;
            for (uint32_t i = 0; i < c->n; i++)
                wide[i] = c->v[i];
            vals = wide;
        }
        rc = tide__head_append(a->h, c->series_id, c->account_id, c->tier,
                               c->type, c->n, ts, vals, NULL);
    }
    if (rc == TIDE_ETYPE) {
        (*a->skipped)++;
        rc = 0;
    }
    return rc;
}

/* The walk's step: column k joins the ring, prefetches advance, and the
 * column APPLY_AHEAD behind it is applied (in walk order). */
static int apply_ahead(void *ctx, const struct wal_col *c)
{
    struct apply *a = ctx;
    uint32_t k = a->n++;
    int rc = 0;

    if (k >= APPLY_AHEAD)
        rc = apply_column(a, &a->ring[k % APPLY_AHEAD]);
    a->ring[k % APPLY_AHEAD] = *c;
    tide__head_prefetch(a->h, c->series_id, 0);
    if (k >= APPLY_STAGE1)
        tide__head_prefetch(
            a->h, a->ring[(k - APPLY_STAGE1) % APPLY_AHEAD].series_id, 1);
    if (k >= APPLY_STAGE2)
        tide__head_prefetch(
            a->h, a->ring[(k - APPLY_STAGE2) % APPLY_AHEAD].series_id, 2);
    return rc;
}

int tide__wal_batch_apply(struct head *h, const uint8_t *rec, uint32_t len,
                          struct tide_buf *scratch, uint32_t *skipped)
{
    struct apply a = {.h = h, .scratch = scratch, .skipped = skipped};
    int rc = tide__wal_batch_columns(rec, len, apply_ahead, &a);
    uint32_t k = a.n > APPLY_AHEAD ? a.n - APPLY_AHEAD : 0;

    /* The columns still in the ring; none after an error. */
    for (; rc == 0 && k < a.n; k++)
        rc = apply_column(&a, &a.ring[k % APPLY_AHEAD]);
    return rc;
}
