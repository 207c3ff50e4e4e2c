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

int tide__wal_batch_apply(struct head *h, const uint8_t *rec, uint32_t len,
                          struct tide_buf *scratch, uint32_t *skipped)
{
    const uint8_t *p = rec + BATCH_HEADER, *end = rec + len;
    uint32_t n_cols;

    if (len < BATCH_HEADER)
        return TIDE_ECORRUPT;
    n_cols = tide__get_le32(rec + 16);
    for (uint32_t c = 0; c < n_cols; c++) {
        uint64_t id, account;
        uint16_t tier;
        uint8_t type;
        uint32_t n;
        const uint8_t *ts, *v;
        size_t vbytes;
        int rc;

        if ((size_t)(end - p) < COL_HEADER)
            return TIDE_ECORRUPT;
        id = tide__get_le64(p);
        account = tide__get_le64(p + 8);
        tier = (uint16_t)(p[16] | p[17] << 8);
        type = p[18];
        n = tide__get_le32(p + 20);
        p += COL_HEADER;
        if ((size_t)(end - p) / 8 < n)
            return TIDE_ECORRUPT;
        ts = p;
        v = p + 8 * (size_t)n;
        switch (type) {
        case TIDE_TYPE_F64:
        case TIDE_TYPE_I64:
            vbytes = 8 * (size_t)n;
            break;
        case TIDE_TYPE_BOOL:
            vbytes = pad8(n);
            break;
        case TIDE_TYPE_STR:
            vbytes = pad8(4 * (size_t)n);
            break;
        default:
            return TIDE_ECORRUPT;
        }
        if ((size_t)(end - v) < vbytes)
            return TIDE_ECORRUPT;
        scratch->len = 0;
        if (type == TIDE_TYPE_STR) {
            const uint8_t *s = v + vbytes;
            struct tide_str *strs;
            size_t total = 0;

            rc = tide__buf_reserve(scratch, (size_t)n * sizeof(*strs));
            if (rc)
                return rc;
            strs = (struct tide_str *)scratch->data;
            for (uint32_t i = 0; i < n; i++) {
                uint32_t l = tide__get_le32(v + 4 * (size_t)i);

                if ((size_t)(end - s) - total < l || l > TIDE_STR_BYTES_MAX)
                    return TIDE_ECORRUPT;
                strs[i].ptr = (const char *)s + total;
                strs[i].len = l;
                total += l;
            }
            if ((size_t)(end - s) < pad8(total))
                return TIDE_ECORRUPT;
            vbytes += pad8(total);
            rc = tide__head_append(h, id, account, tier, type, n,
                                   (const int64_t *)(const void *)ts, NULL,
                                   strs);
        } else {
            const uint64_t *vals = (const uint64_t *)(const void *)v;

            /* f64 and i64 are used in place: records are 8-byte aligned
             * and little-endian like the host. Bools widen to 8 bytes. */
            if (type == TIDE_TYPE_BOOL) {
                uint64_t *wide;

                rc = tide__buf_reserve(scratch, 8 * (size_t)n);
                if (rc)
                    return rc;
                wide = (uint64_t *)(void *)scratch->data;
                for (uint32_t i = 0; i < n; i++)
                    wide[i] = v[i];
                vals = wide;
            }
            rc = tide__head_append(h, id, account, tier, type, n,
                                   (const int64_t *)(const void *)ts, vals,
                                   NULL);
        }
        if (rc == TIDE_ETYPE) {
            (*skipped)++;
            rc = 0;
        }
        if (rc)
            return rc;
        p = v + vbytes;
    }
    return 0;
}

int tide__wal_batch_columns(const uint8_t *rec, uint32_t len,
                            tide_wal_column_fn fn, void *ctx)
{
    const uint8_t *p = rec + BATCH_HEADER, *end = rec + len;
    uint32_t n_cols;

    if (len < BATCH_HEADER)
        return TIDE_ECORRUPT;
    n_cols = tide__get_le32(rec + 16);
    for (uint32_t c = 0; c < n_cols; c++) {
        uint32_t n;
        size_t need;

        if ((size_t)(end - p) < COL_HEADER)
            return TIDE_ECORRUPT;
        n = tide__get_le32(p + 20);
        need = COL_HEADER + 8 * (size_t)n;
        switch (p[18]) {
        case TIDE_TYPE_F64:
        case TIDE_TYPE_I64:
            need += 8 * (size_t)n;
            break;
        case TIDE_TYPE_BOOL:
            need += pad8(n);
            break;
        case TIDE_TYPE_STR: {
            size_t total = 0, lens = need;

            need += pad8(4 * (size_t)n);
            if ((size_t)(end - p) < need)
                return TIDE_ECORRUPT;
            for (uint32_t i = 0; i < n; i++)
                total += tide__get_le32(p + lens + 4 * (size_t)i);
            need += pad8(total);
            break;
        }
        default:
            return TIDE_ECORRUPT;
        }
        if ((size_t)(end - p) < need)
            return TIDE_ECORRUPT;
        fn(ctx, tide__get_le64(p), tide__get_le64(p + 8), n);
        p += need;
    }
    return 0;
}
