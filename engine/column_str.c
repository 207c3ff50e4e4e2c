/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Column codecs of bool and string columns: booleans as a bitmap, strings
 * plain (all lengths, then all bytes) or through a dictionary whose
 * indices are packed. The spec is docs/file-format.md, "Column
 * encodings"; the conventions, the column frame and PACK are at the top of
 * column.c, and the payload tables of these codecs are repeated here.
 *
 * PAYLOAD OF BOOL_BITMAP (5)
 *   OFFSET  SIZE        DESCRIPTION
 *   0       ceil(n/8)   value i is bit (i mod 8) of byte floor(i / 8);
 *                       the unused high bits of the last byte are 0
 *
 * PAYLOAD OF STR_PLAIN (6)
 *   OFFSET  SIZE   DESCRIPTION
 *   0       v * n  the length of each value, in order (varint, <= 65535)
 *   .       sum    the bytes of every value, concatenated in order
 *
 * PAYLOAD OF STR_DICT (7)
 *   OFFSET  SIZE   DESCRIPTION
 *   0       v      m, the number of entries, 1 <= m <= n (0 iff n = 0)
 *   .       v * m  the length of each entry (varint, <= 65535)
 *   .       sum    the bytes of every entry, concatenated
 *   .       .      PACK of the n entry indices, each < m
 */
#include <errno.h>
#include <string.h>

#include "column_int.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

/* ---- Booleans ----------------------------------------------------------- */

int tide__col_encode_bool(const uint8_t *v, uint32_t n, struct tide_buf *out)
{
    size_t nbytes = ((size_t)n + 7) / 8;
    uint8_t *map;
    int rc;

    map = tide_calloc(1, nbytes + 1);
    if (!map)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++)
        map[i / 8] |= (uint8_t)((v[i] != 0) << (i % 8));
    rc = tide__col_put_column(out, TIDE_COL_BOOL_BITMAP, n, map, nbytes);
    tide_free(map);
    return rc;
}

static int bool_parse(const uint8_t *p, size_t len, uint32_t n, uint8_t *v)
{
    if (len != ((size_t)n + 7) / 8)
        return TIDE_ECORRUPT;
    if (n % 8 && (p[len - 1] >> (n % 8)))
        return TIDE_ECORRUPT; /* non-zero padding bits */
    for (uint32_t i = 0; i < n; i++)
        v[i] = (p[i / 8] >> (i % 8)) & 1;
    return 0;
}

int tide__col_decode_bool(const uint8_t *in, size_t len, uint32_t n, uint8_t *v)
{
    struct col c;
    int rc;

    rc = tide__col_load(in, len, n, TIDE_COL_BOOL_BITMAP, TIDE_COL_BOOL_BITMAP,
                        &c);
    if (!rc)
        rc = bool_parse(c.payload, c.raw, n, v);
    tide_free(c.scratch);
    return rc;
}

/* ---- Strings ------------------------------------------------------------ */

static int str_eq(const struct tide_str *a, const struct tide_str *b)
{
    return a->len == b->len && (a->len == 0 || !memcmp(a->ptr, b->ptr, a->len));
}

/* Dictionary of a string column: ids[i] is value i's entry, first[e] the
 * value that entry e first appeared at. */
struct dict {
    uint32_t *slots; /* open addressing: 0 empty, else entry + 1 */
    uint32_t *ids;
    uint32_t *first;
    size_t mask;
    uint32_t m;
};

static size_t dict_slots(uint32_t n)
{
    size_t cap = 16;

    while (cap < 2 * (size_t)n)
        cap *= 2;
    return cap;
}

static void dict_build(struct dict *d, const struct tide_str *v, uint32_t n)
{
    memset(d->slots, 0, (d->mask + 1) * sizeof(*d->slots));
    d->m = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t h = (size_t)XXH3_64bits(v[i].ptr, v[i].len) & d->mask;

        /* At most n of the 2n slots are used: the probe ends. */
        while (d->slots[h] && !str_eq(&v[d->first[d->slots[h] - 1]], &v[i]))
            h = (h + 1) & d->mask;
        if (!d->slots[h]) {
            d->first[d->m] = i;
            d->slots[h] = ++d->m;
        }
        d->ids[i] = d->slots[h] - 1;
    }
}

/* Size of the dictionary payload. */
static size_t dict_size(const struct dict *d, const struct tide_str *v,
                        uint32_t n)
{
    size_t size = tide__col_varint_len(d->m);

    for (uint32_t e = 0; e < d->m; e++)
        size += tide__col_varint_len(v[d->first[e]].len) + v[d->first[e]].len;
    for (uint32_t i = 0; i < n; i += TIDE_COL_PACK_BLOCK) {
        uint32_t mb = n - i < TIDE_COL_PACK_BLOCK ? n - i : TIDE_COL_PACK_BLOCK;
        uint32_t all = 0;

        for (uint32_t j = 0; j < mb; j++)
            all |= d->ids[i + j];
        size += tide__col_pack_bytes(mb, tide__col_bit_width(all));
    }
    return size;
}

static size_t dict_encode(const struct dict *d, const struct tide_str *v,
                          uint32_t n, uint8_t *p)
{
    uint64_t idx[TIDE_COL_PACK_BLOCK];
    size_t pos = tide__varint_put(p, d->m);

    for (uint32_t e = 0; e < d->m; e++)
        pos += tide__varint_put(p + pos, v[d->first[e]].len);
    for (uint32_t e = 0; e < d->m; e++) {
        const struct tide_str *s = &v[d->first[e]];

        if (s->len)
            memcpy(p + pos, s->ptr, s->len);
        pos += s->len;
    }
    for (uint32_t i = 0; i < n; i += TIDE_COL_PACK_BLOCK) {
        uint32_t mb = n - i < TIDE_COL_PACK_BLOCK ? n - i : TIDE_COL_PACK_BLOCK;

        for (uint32_t j = 0; j < mb; j++)
            idx[j] = d->ids[i + j];
        pos += tide__col_pack_block(p + pos, idx, mb);
    }
    return pos;
}

static size_t plain_encode(const struct tide_str *v, uint32_t n, uint8_t *p)
{
    size_t pos = 0;

    for (uint32_t i = 0; i < n; i++)
        pos += tide__varint_put(p + pos, v[i].len);
    for (uint32_t i = 0; i < n; i++) {
        if (v[i].len)
            memcpy(p + pos, v[i].ptr, v[i].len);
        pos += v[i].len;
    }
    return pos;
}

int tide__col_encode_str(const struct tide_str *v, uint32_t n,
                         struct tide_buf *out)
{
    struct dict d;
    size_t plain = 0, size, ints_bytes;
    uint8_t *scratch, *p;
    int rc;

    for (uint32_t i = 0; i < n; i++) {
        TIDE_ASSERT(v[i].len <= TIDE_STR_BYTES_MAX);
        plain += tide__col_varint_len(v[i].len) + v[i].len;
    }
    d.mask = dict_slots(n) - 1;
    ints_bytes = (d.mask + 1 + 2 * (size_t)n) * sizeof(uint32_t);
    scratch = tide_malloc(ints_bytes + plain);
    if (!scratch)
        return -ENOMEM;
    d.slots = (uint32_t *)scratch;
    d.ids = d.slots + d.mask + 1;
    d.first = d.ids + n;
    p = scratch + ints_bytes;
    dict_build(&d, v, n);
    if (n > 0 && dict_size(&d, v, n) < plain) {
        size = dict_encode(&d, v, n, p);
        rc = tide__col_put_column(out, TIDE_COL_STR_DICT, n, p, size);
    } else {
        size = plain_encode(v, n, p);
        TIDE_DEBUG_ASSERT(size == plain);
        rc = tide__col_put_column(out, TIDE_COL_STR_PLAIN, n, p, size);
    }
    tide_free(scratch);
    return rc;
}

/* Read `count` lengths into len[]; *sum receives their total. */
static int str_lengths(struct rd *r, uint32_t count, struct tide_str *s,
                       uint64_t *sum)
{
    uint64_t x;
    int rc;

    *sum = 0;
    for (uint32_t i = 0; i < count; i++) {
        rc = tide__col_rd_varint(r, &x);
        if (rc)
            return rc;
        if (x > TIDE_STR_BYTES_MAX)
            return TIDE_ECORRUPT;
        s[i].len = (uint32_t)x;
        *sum += x;
    }
    return 0;
}

/* Point s[0..count) at consecutive bytes from `at`, given their lengths. */
static void str_place(struct tide_str *s, uint32_t count, const uint8_t *at)
{
    for (uint32_t i = 0; i < count; i++) {
        s[i].ptr = (const char *)at;
        at += s[i].len;
    }
}

static int plain_parse(const uint8_t *p, size_t len, uint32_t n,
                       struct tide_str *v)
{
    struct rd r = {p, len, 0};
    uint64_t sum;
    int rc;

    rc = str_lengths(&r, n, v, &sum);
    if (rc)
        return rc;
    if (sum != r.len - r.pos)
        return TIDE_ECORRUPT;
    str_place(v, n, p + r.pos);
    return 0;
}

static int dict_parse(const uint8_t *p, size_t len, uint32_t n,
                      struct tide_str *v)
{
    struct rd r = {p, len, 0};
    struct tide_str *ent = NULL;
    uint64_t idx[TIDE_COL_PACK_BLOCK];
    uint64_t m, sum;
    int rc;

    rc = tide__col_rd_varint(&r, &m);
    if (rc)
        return rc;
    /* Each entry takes at least one length byte: bound m before
     * allocating. */
    if (m > n || (m == 0) != (n == 0) || m > len)
        return TIDE_ECORRUPT;
    ent = tide_malloc((size_t)m * sizeof(*ent) + 1);
    if (!ent)
        return -ENOMEM;
    rc = str_lengths(&r, (uint32_t)m, ent, &sum);
    if (rc)
        goto done;
    if (sum > r.len - r.pos) {
        rc = TIDE_ECORRUPT;
        goto done;
    }
    str_place(ent, (uint32_t)m, p + r.pos);
    r.pos += (size_t)sum;
    for (uint32_t i = 0; i < n; i += TIDE_COL_PACK_BLOCK) {
        uint32_t mb = n - i < TIDE_COL_PACK_BLOCK ? n - i : TIDE_COL_PACK_BLOCK;

        rc = tide__col_unpack_block(&r, mb, idx);
        if (rc)
            goto done;
        for (uint32_t j = 0; j < mb; j++) {
            if (idx[j] >= m) {
                rc = TIDE_ECORRUPT;
                goto done;
            }
            v[i + j] = ent[idx[j]];
        }
    }
    rc = r.pos == r.len ? 0 : TIDE_ECORRUPT;

done:
    tide_free(ent);
    return rc;
}

int tide__col_decode_str(const uint8_t *in, size_t len, uint32_t n,
                         struct tide_str *v, struct tide_buf *arena)
{
    struct col c;
    uint8_t *p;
    int rc;

    rc = tide__col_open(in, len, n, TIDE_COL_STR_PLAIN, TIDE_COL_STR_DICT, &c);
    if (rc)
        return rc;
    if (c.raw == 0) /* only a plain column of no values is empty */
        return n == 0 && c.codec == TIDE_COL_STR_PLAIN ? 0 : TIDE_ECORRUPT;
    rc = tide__buf_reserve(arena, c.raw);
    if (rc)
        return rc;
    p = arena->data + arena->len;
    if (c.lz4) {
        rc = tide__col_inflate(&c, p);
        if (rc)
            return rc;
    } else {
        memcpy(p, c.body, c.raw);
    }
    if (c.codec == TIDE_COL_STR_PLAIN)
        rc = plain_parse(p, c.raw, n, v);
    else
        rc = dict_parse(p, c.raw, n, v);
    if (!rc)
        arena->len += c.raw;
    return rc;
}
