/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the column codec files share: column.c (the byte reader, PACK
 * blocks, INTS, the column frame with LZ4; timestamps and i64),
 * column_f64.c (doubles) and column_str.c (booleans and strings). The
 * layouts named here (COLUMN, PACK, INTS) are specified at the top of
 * column.c. The small helpers of the hot loops are inline so that the
 * split costs no call.
 */
#ifndef TIDE_ENGINE_COLUMN_INT_H
#define TIDE_ENGINE_COLUMN_INT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "column.h"

/* Values per PACK block. Stored implicitly in every packed stream: frozen. */
#define TIDE_COL_PACK_BLOCK 128u

/* Bytes a block of TIDE_COL_PACK_BLOCK values can take, plus 8 bytes of
 * slack for the word-at-a-time loops. */
#define TIDE_COL_PACK_TMP_BYTES (TIDE_COL_PACK_BLOCK * 8u + 8u)

/* ---- Byte reader over a payload ---------------------------------------- */

struct rd {
    const uint8_t *p;
    size_t len;
    size_t pos;
};

/* Read a varint; rejects truncation and values above 2^64 - 1. */
static inline int tide__col_rd_varint(struct rd *r, uint64_t *v)
{
    size_t k = tide__varint_get(r->p + r->pos, r->len - r->pos, v);

    if (k == 0 || (k == TIDE_VARINT_MAX && r->p[r->pos + k - 1] > 1))
        return TIDE_ECORRUPT;
    r->pos += k;
    return 0;
}

static inline size_t tide__col_varint_len(uint64_t v)
{
    size_t n = 1;

    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline unsigned tide__col_bit_width(uint64_t v)
{
    return v ? 64 - (unsigned)__builtin_clzll(v) : 0;
}

/* Size of a PACK block of m values of w bits, width byte included. */
static inline size_t tide__col_pack_bytes(uint32_t m, unsigned w)
{
    return 1 + ((size_t)m * w + 7) / 8;
}

/* Unaligned little-endian 8-byte access; compiles to one move on x86. */
static inline uint64_t tide__col_ld64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline void tide__col_st64(uint8_t *p, uint64_t v)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

/* ---- PACK and INTS (column.c) ------------------------------------------- */

/* Write one block of m <= TIDE_COL_PACK_BLOCK values at dst; returns bytes
 * written. */
size_t tide__col_pack_block(uint8_t *dst, const uint64_t *vals, uint32_t m);

/* Unpack m <= TIDE_COL_PACK_BLOCK values of 57..64 bits from src, which has
 * 8 readable bytes past the last one holding a value. */
void tide__col_unpack_wide(const uint8_t *src, uint32_t m, unsigned w,
                           uint64_t *vals);

/* Parse the width byte of a block of m values and check its bytes; *src
 * points at them, in place or at a zero-padded copy in tmp
 * (TIDE_COL_PACK_TMP_BYTES), with 8 readable bytes after them. Returns 0
 * or TIDE_ECORRUPT. */
int tide__col_block_open(struct rd *r, uint32_t m, unsigned *w_out,
                         const uint8_t **src, uint8_t *tmp);

/* Read one block of m <= TIDE_COL_PACK_BLOCK values into vals. */
int tide__col_unpack_block(struct rd *r, uint32_t m, uint64_t *vals);

/* Upper bound of an INTS of m values. */
size_t tide__col_ints_bound(uint32_t m);

/* Write the m two's-complement values s[] as INTS; returns bytes written. */
size_t tide__col_ints_put(uint8_t *dst, const uint64_t *s, uint32_t m);

/* Read the divisor d of an INTS; 0 or TIDE_ECORRUPT. */
int tide__col_ints_begin(struct rd *r, uint64_t *d);

/* ---- The column frame (column.c) ---------------------------------------- */

/* A parsed column header. */
struct col {
    uint8_t codec;
    int lz4;
    size_t raw; /* payload bytes */
    const uint8_t *body;
    size_t body_len;
    /* Set by tide__col_load(): the raw bytes, which are the body itself or,
     * for an lz4 body, `scratch`: a tide_malloc'd copy decompressed, or
     * NULL. */
    const uint8_t *payload;
    uint8_t *scratch;
};

/* Append a whole column: header, then `raw`, LZ4-compressed if that makes
 * it strictly smaller. 0 or -ENOMEM. */
int tide__col_put_column(struct tide_buf *out, uint8_t codec, uint32_t n,
                         const uint8_t *raw, size_t raw_len);

/* Parse and bound the header of a column that must be of codec `a` or `b`
 * and hold n values. 0 or TIDE_ECORRUPT. */
int tide__col_open(const uint8_t *in, size_t len, uint32_t n, uint8_t a,
                   uint8_t b, struct col *c);

/* Decompress the body into dst (room for c->raw bytes). */
int tide__col_inflate(const struct col *c, uint8_t *dst);

/* tide__col_open(), then c->payload set to the raw bytes. Whatever the
 * result, the caller frees c->scratch. */
int tide__col_load(const uint8_t *in, size_t len, uint32_t n, uint8_t a,
                   uint8_t b, struct col *c);

#endif /* TIDE_ENGINE_COLUMN_INT_H */
