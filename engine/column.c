/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Column codecs of segment chunks, the shared machinery and the integer
 * codecs: the byte reader, PACK blocks, INTS and the column frame with
 * LZ4, then timestamps (delta-of-delta) and i64 (delta). Doubles are in
 * column_f64.c, booleans and strings in column_str.c, with their payload
 * tables; column_int.h is what the three share. The spec is
 * docs/file-format.md, "Column encodings"; its tables are repeated here.
 *
 * All fixed-width integers are little-endian. A varint is unsigned LEB128
 * (7 bits per byte, least significant group first, high bit set on every
 * byte but the last, at most 10 bytes, the 10th at most 0x01).
 * zigzag(x) = (x << 1) ^ (x >> 63) maps int64 to uint64. Integer
 * arithmetic on values is modulo 2^64 (two's complement), so any int64
 * sequence round trips.
 *
 * COLUMN (every codec)
 *   OFFSET  SIZE  DESCRIPTION
 *   0       1     codec id (below)
 *   1       v     n, the number of values (varint)
 *   .       v     h = raw_bytes * 2 + c (varint); raw_bytes is the size of
 *                 the payload, c is 1 when the body is LZ4-compressed
 *   .       rest  body. c = 0: the payload, exactly raw_bytes bytes.
 *                 c = 1: one LZ4 block of fewer than raw_bytes bytes that
 *                 decompresses to exactly raw_bytes bytes
 *
 * CODEC IDS (frozen, append-only)
 *   1 TS_DOD  2 F64_DECIMAL  3 F64_XOR  4 I64_DELTA  5 BOOL_BITMAP
 *   6 STR_PLAIN  7 STR_DICT; 0 and 8..255 are invalid.
 *
 * PACK (m unsigned values; m is never stored, it follows from n)
 *   ceil(m / 128) blocks; block j holds values 128j .. 128j + mb - 1.
 *   OFFSET  SIZE             DESCRIPTION
 *   0       1                w, the bit width of every value, 0..64
 *   1       ceil(mb * w / 8) value i at bits [i*w, i*w + w), bit 0 being
 *                            the least significant bit of byte 1; the
 *                            unused high bits of the last byte are 0
 *
 * INTS (m signed values s_i)
 *   OFFSET  SIZE  DESCRIPTION
 *   0       v     d >= 1, a common divisor (varint); the encoder writes the
 *                 greatest common divisor of all |s_i|, or 1 if all are 0
 *   .       .     PACK of m values q_i: s_i / d zigzagged,
 *                 q = 2 * (s / d) if s >= 0, else 2 * (|s| / d) - 1;
 *                 decoded a = (q >> 1) + (q & 1), s = q & 1 ? -(a * d) : a * d
 *
 * PAYLOAD OF TS_DOD (1)                       empty when n = 0
 *   OFFSET  SIZE  DESCRIPTION
 *   0       v     zigzag(ts[0])                                 n >= 1
 *   .       v     zigzag(ts[1] - ts[0])                         n >= 2
 *   .       .     INTS of the n - 2 values                      n >= 3
 *                 (ts[i] - ts[i-1]) - (ts[i-1] - ts[i-2]), i = 2 .. n-1
 *
 * PAYLOAD OF I64_DELTA (4)                    empty when n = 0
 *   OFFSET  SIZE  DESCRIPTION
 *   0       v     zigzag(v[0])                                  n >= 1
 *   .       .     INTS of the n - 1 values v[i] - v[i-1]        n >= 2
 *
 * LIMITS CHECKED BEFORE ALLOCATING
 *   raw_bytes <= 9n + 64 (TS_DOD, F64_DECIMAL, I64_DELTA),
 *   = 8n (F64_XOR), = ceil(n/8) (BOOL_BITMAP), <= 65538n + 16 (STR_*);
 *   when c = 1 also raw_bytes <= 255 * body size and <= LZ4_MAX_INPUT_SIZE.
 */
#include "column.h"

#include <errno.h>
#include <lz4.h>
#include <string.h>

#include "column_int.h"

/* An LZ4 block expands at most 255 times: each extra match-length byte
 * yields 255 bytes of output, and a sequence of t + 3 input bytes yields at
 * most 19 + 255 t. So a larger raw size in a header is corrupt. */
#define LZ4_RATIO_MAX 255u

/* ---- PACK: blocks of TIDE_COL_PACK_BLOCK values at one bit width ----- */

/* Upper bound of a PACK of m values. */
static size_t pack_bound(uint32_t m)
{
    return (m / TIDE_COL_PACK_BLOCK + 1) + 8 * (size_t)m;
}

/* Write one block of m <= TIDE_COL_PACK_BLOCK values at dst; returns bytes
 * written. Values of up to 56 bits go through a 64-bit accumulator that is
 * stored whole after each value (fewer than 8 bits stay pending, so 56 more
 * fit); wider ones are split in two halves. The stores run ahead of the packed
 * length, so they go to a stack buffer first. */
size_t tide__col_pack_block(uint8_t *dst, const uint64_t *vals, uint32_t m)
{
    uint8_t tmp[TIDE_COL_PACK_TMP_BYTES];
    uint64_t all = 0, acc = 0;
    size_t pos = 0, len;
    unsigned w, nb = 0;

    for (uint32_t i = 0; i < m; i++)
        all |= vals[i];
    w = tide__col_bit_width(all);
    dst[0] = (uint8_t)w;
    if (w == 0)
        return 1;
    for (uint32_t i = 0; i < m; i++) {
        unsigned shift;

        if (w <= 56) {
            acc |= vals[i] << nb;
            nb += w;
        } else {
            acc |= (vals[i] & 0xffffffffu) << nb;
            nb += 32;
            tide__col_st64(tmp + pos, acc);
            shift = nb & ~7u;
            pos += shift / 8;
            acc >>= shift;
            nb &= 7;
            acc |= (vals[i] >> 32) << nb;
            nb += w - 32;
        }
        tide__col_st64(tmp + pos, acc);
        shift = nb & ~7u;
        pos += shift / 8;
        acc >>= shift;
        nb &= 7;
    }
    if (nb)
        tmp[pos++] = (uint8_t)acc;
    len = tide__col_pack_bytes(m, w) - 1;
    TIDE_DEBUG_ASSERT(pos == len);
    memcpy(dst + 1, tmp, len);
    return 1 + len;
}

/* Unpack m <= TIDE_COL_PACK_BLOCK values of w <= 56 bits from src, which has at
 * least 8 readable bytes past the last one holding a value: value i is
 * one unaligned 8-byte load at bit i*w, shifted and masked. */
static void unpack_narrow(const uint8_t *src, uint32_t m, unsigned w,
                          uint64_t *vals)
{
    uint64_t mask = (UINT64_C(1) << w) - 1;

    if (w == 0) {
        memset(vals, 0, (size_t)m * sizeof(*vals));
        return;
    }
    for (uint32_t i = 0; i < m; i++) {
        size_t bit = (size_t)i * w;

        vals[i] = (tide__col_ld64(src + bit / 8) >> (bit % 8)) & mask;
    }
}

/* The same for 57..64 bits: two loads per value. */
void tide__col_unpack_wide(const uint8_t *src, uint32_t m, unsigned w,
                           uint64_t *vals)
{
    uint64_t hi_mask = (UINT64_C(1) << (w - 32)) - 1;

    for (uint32_t i = 0; i < m; i++) {
        size_t bit = (size_t)i * w, bit2 = bit + 32;
        uint64_t lo =
            (tide__col_ld64(src + bit / 8) >> (bit % 8)) & 0xffffffffu;
        uint64_t hi = (tide__col_ld64(src + bit2 / 8) >> (bit2 % 8)) & hi_mask;

        vals[i] = lo | hi << 32;
    }
}

/* Parse the width byte of a block of m <= TIDE_COL_PACK_BLOCK values and check
 * its bytes. *src points at them: in place when the payload has 8 more bytes
 * after them, else at a zero-padded copy in tmp (TIDE_COL_PACK_TMP_BYTES), so
 * the word loads of the unpackers never leave the payload. */
int tide__col_block_open(struct rd *r, uint32_t m, unsigned *w_out,
                         const uint8_t **src, uint8_t *tmp)
{
    unsigned w, tail;
    size_t nbytes;

    if (r->pos >= r->len)
        return TIDE_ECORRUPT;
    w = r->p[r->pos++];
    if (w > 64)
        return TIDE_ECORRUPT;
    nbytes = tide__col_pack_bytes(m, w) - 1;
    if (nbytes > r->len - r->pos)
        return TIDE_ECORRUPT;
    *src = r->p + r->pos;
    tail = (unsigned)(((size_t)m * w) % 8);
    if (tail && ((*src)[nbytes - 1] >> tail))
        return TIDE_ECORRUPT; /* non-zero padding bits */
    if (r->len - r->pos < nbytes + 8) {
        memcpy(tmp, *src, nbytes);
        memset(tmp + nbytes, 0, 8);
        *src = tmp;
    }
    r->pos += nbytes;
    *w_out = w;
    return 0;
}

/* Read one block of m <= TIDE_COL_PACK_BLOCK values into vals. */
int tide__col_unpack_block(struct rd *r, uint32_t m, uint64_t *vals)
{
    uint8_t tmp[TIDE_COL_PACK_TMP_BYTES];
    const uint8_t *src;
    unsigned w;
    int rc = tide__col_block_open(r, m, &w, &src, tmp);

    if (rc)
        return rc;
    if (w <= 56)
        unpack_narrow(src, m, w, vals);
    else
        tide__col_unpack_wide(src, m, w, vals);
    return 0;
}

/* ---- INTS: divisor, then zigzagged quotients, packed -------------------- */

static uint64_t magnitude(uint64_t s)
{
    return (s >> 63) ? 0 - s : s;
}

static uint64_t gcd(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;

        a = b;
        b = t;
    }
    return a;
}

size_t tide__col_ints_bound(uint32_t m)
{
    return TIDE_VARINT_MAX + pack_bound(m);
}

/* Write the m two's-complement values s[] as INTS; returns bytes written.
 * The quotient is exact because d divides every |s|, and |s| / d <= 2^63,
 * so the zigzag form fits 64 bits. */
size_t tide__col_ints_put(uint8_t *dst, const uint64_t *s, uint32_t m)
{
    uint64_t q[TIDE_COL_PACK_BLOCK];
    uint64_t d = 0;
    size_t pos;

    for (uint32_t i = 0; i < m && d != 1; i++)
        d = gcd(d, magnitude(s[i]));
    if (d == 0)
        d = 1;
    pos = tide__varint_put(dst, d);
    for (uint32_t i = 0; i < m; i += TIDE_COL_PACK_BLOCK) {
        uint32_t mb = m - i < TIDE_COL_PACK_BLOCK ? m - i : TIDE_COL_PACK_BLOCK;

        if (d == 1) { /* the common case: plain zigzag, no division */
            for (uint32_t j = 0; j < mb; j++)
                q[j] = (s[i + j] << 1) ^ (0 - (s[i + j] >> 63));
        } else {
            for (uint32_t j = 0; j < mb; j++) {
                uint64_t v = s[i + j];

                q[j] = (v >> 63) ? 2 * ((0 - v) / d) - 1 : 2 * (v / d);
            }
        }
        pos += tide__col_pack_block(dst + pos, q, mb);
    }
    return pos;
}

int tide__col_ints_begin(struct rd *r, uint64_t *d)
{
    int rc = tide__col_rd_varint(r, d);

    if (rc)
        return rc;
    return *d == 0 ? TIDE_ECORRUPT : 0;
}

/* Next m <= TIDE_COL_PACK_BLOCK values, as two's-complement bit patterns.
 * Returns 1 instead of 0 when they are all zero (a width of 0, the usual case
 * of regular timestamps) without writing s[], so the caller can skip them. */
static int ints_block(struct rd *r, uint64_t d, uint32_t m, uint64_t *s)
{
    uint8_t tmp[TIDE_COL_PACK_TMP_BYTES];
    const uint8_t *src;
    unsigned w;
    int rc = tide__col_block_open(r, m, &w, &src, tmp);

    if (rc)
        return rc;
    if (w == 0)
        return 1;
    /* Unpacked and unzigzagged in one pass. The spec's formula without a
     * branch: for odd q, -(a * d) is ((q >> 1) XOR all-ones) * d modulo
     * 2^64. */
    if (w <= 56) {
        uint64_t mask = (UINT64_C(1) << w) - 1;

        for (uint32_t j = 0; j < m; j++) {
            size_t bit = (size_t)j * w;
            uint64_t q = (tide__col_ld64(src + bit / 8) >> (bit % 8)) & mask;

            s[j] = ((q >> 1) ^ (0 - (q & 1))) * d;
        }
    } else {
        tide__col_unpack_wide(src, m, w, s);
        for (uint32_t j = 0; j < m; j++)
            s[j] = ((s[j] >> 1) ^ (0 - (s[j] & 1))) * d;
    }
    return 0;
}

/* ---- The column frame: codec id, count, raw size, LZ4 ------------------ */

/* Raw columns shorter than this are stored uncompressed. */
#define LZ4_MIN_WORTH 32

/*
 * Append a whole column: header, then `raw` LZ4-compressed if that makes it
 * strictly smaller, else as is. The column is at most raw_len + 21 bytes.
 */
int tide__col_put_column(struct tide_buf *out, uint8_t codec, uint32_t n,
                         const uint8_t *raw, size_t raw_len)
{
    size_t pos, hpos;
    uint8_t *p;
    int clen = 0;
    int rc;

    rc = tide__buf_reserve(out, 1 + 2 * TIDE_VARINT_MAX + raw_len);
    if (rc)
        return rc;
    p = out->data + out->len;
    p[0] = codec;
    pos = 1 + tide__varint_put(p + 1, n);
    hpos = pos;
    /* The flag bit does not change the varint's length: rewriting the
     * header with c = 0 below keeps the body where it is. */
    pos += tide__varint_put(p + pos, (uint64_t)raw_len << 1 | 1);
    /* LZ4 cannot shrink a tiny input (its smallest match needs 12 bytes of
     * input past it), and each call clears a 16 KiB table: skipping small
     * columns saves that for the many short series of a wide fleet. */
    if (raw_len >= LZ4_MIN_WORTH && raw_len <= LZ4_MAX_INPUT_SIZE)
        clen = LZ4_compress_default((const char *)raw, (char *)p + pos,
                                    (int)raw_len, (int)raw_len - 1);
    if (clen > 0) {
        pos += (size_t)clen;
    } else {
        tide__varint_put(p + hpos, (uint64_t)raw_len << 1);
        if (raw_len)
            memcpy(p + pos, raw, raw_len);
        pos += raw_len;
    }
    out->len += pos;
    return 0;
}

/* Largest raw_bytes a column of `codec` with n values can have. */
static uint64_t raw_max(uint8_t codec, uint32_t n)
{
    switch (codec) {
    case TIDE_COL_F64_XOR:
        return 8 * (uint64_t)n;
    case TIDE_COL_BOOL_BITMAP:
        return ((uint64_t)n + 7) / 8;
    case TIDE_COL_STR_PLAIN:
    case TIDE_COL_STR_DICT:
        return (uint64_t)n * (3 + TIDE_STR_BYTES_MAX) + 16;
    default:
        return 9 * (uint64_t)n + 64;
    }
}

/* Parse and bound the header of a column that must be of codec `a` or `b`
 * and hold n values. */
int tide__col_open(const uint8_t *in, size_t len, uint32_t n, uint8_t a,
                   uint8_t b, struct col *c)
{
    struct rd r = {in, len, 0};
    uint64_t count, h, raw;
    int rc;

    if (len < 1 || (in[0] != a && in[0] != b))
        return TIDE_ECORRUPT;
    c->codec = in[0];
    r.pos = 1;
    rc = tide__col_rd_varint(&r, &count);
    if (rc)
        return rc;
    if (count != n)
        return TIDE_ECORRUPT;
    rc = tide__col_rd_varint(&r, &h);
    if (rc)
        return rc;
    raw = h >> 1;
    c->lz4 = (int)(h & 1);
    c->body = in + r.pos;
    c->body_len = len - r.pos;
    if (raw > raw_max(c->codec, n))
        return TIDE_ECORRUPT;
    if (!c->lz4) {
        if (c->body_len != raw)
            return TIDE_ECORRUPT;
    } else if (c->body_len == 0 || c->body_len >= raw ||
               raw > LZ4_MAX_INPUT_SIZE ||
               raw > LZ4_RATIO_MAX * (uint64_t)c->body_len) {
        return TIDE_ECORRUPT;
    }
    c->raw = (size_t)raw;
    return 0;
}

/* Decompress the body into dst (room for c->raw bytes). */
int tide__col_inflate(const struct col *c, uint8_t *dst)
{
    int got = LZ4_decompress_safe((const char *)c->body, (char *)dst,
                                  (int)c->body_len, (int)c->raw);

    return got >= 0 && (size_t)got == c->raw ? 0 : TIDE_ECORRUPT;
}

/* Open a column of codec `a` or `b` holding n values, as tide__col_open(), and
 * set c->payload to its raw bytes. Whatever the result, the caller frees
 * c->scratch. */
int tide__col_load(const uint8_t *in, size_t len, uint32_t n, uint8_t a,
                   uint8_t b, struct col *c)
{
    int rc;

    c->scratch = NULL;
    rc = tide__col_open(in, len, n, a, b, c);
    if (rc)
        return rc;
    c->payload = c->body;
    if (!c->lz4)
        return 0;
    c->scratch = tide_malloc(c->raw);
    if (!c->scratch)
        return -ENOMEM;
    c->payload = c->scratch;
    return tide__col_inflate(c, c->scratch);
}

/* ---- Timestamps --------------------------------------------------------- */

int tide__col_encode_ts(const int64_t *ts, uint32_t n, struct tide_buf *out)
{
    uint64_t *dod;
    uint8_t *scratch, *p;
    size_t pos = 0;
    int rc;

    scratch = tide_malloc(8 * (size_t)n + 2 * TIDE_VARINT_MAX +
                          tide__col_ints_bound(n));
    if (!scratch)
        return -ENOMEM;
    dod = (uint64_t *)scratch;
    p = scratch + 8 * (size_t)n;
    if (n >= 1)
        pos += tide__varint_put(p, tide__zigzag(ts[0]));
    if (n >= 2) {
        uint64_t prev = (uint64_t)ts[1] - (uint64_t)ts[0];

        pos += tide__varint_put(p + pos, tide__zigzag((int64_t)prev));
        for (uint32_t i = 2; i < n; i++) {
            uint64_t delta = (uint64_t)ts[i] - (uint64_t)ts[i - 1];

            dod[i - 2] = delta - prev;
            prev = delta;
        }
    }
    if (n >= 3)
        pos += tide__col_ints_put(p + pos, dod, n - 2);
    rc = tide__col_put_column(out, TIDE_COL_TS_DOD, n, p, pos);
    tide_free(scratch);
    return rc;
}

/*
 * Parse `n` integers stored as differences of order 1 (i64: the first value
 * as a zigzag varint, then the packed deltas) or 2 (timestamps: the first
 * value and the first delta as zigzag varints, then the packed deltas of
 * the deltas). A packed block that ints_block() reports as all zeros keeps
 * the value (order 1) or the delta (order 2) as it is.
 */
static int diffs_parse(const uint8_t *p, size_t len, uint32_t n, uint32_t order,
                       int64_t *out)
{
    struct rd r = {p, len, 0};
    uint64_t s[TIDE_COL_PACK_BLOCK];
    uint64_t z, x = 0, delta = 0, d;
    int rc;

    if (n >= 1) {
        rc = tide__col_rd_varint(&r, &z);
        if (rc)
            return rc;
        x = (uint64_t)tide__unzigzag(z);
        out[0] = (int64_t)x;
    }
    if (order == 2 && n >= 2) {
        rc = tide__col_rd_varint(&r, &z);
        if (rc)
            return rc;
        delta = (uint64_t)tide__unzigzag(z);
        x += delta;
        out[1] = (int64_t)x;
    }
    if (n > order) {
        rc = tide__col_ints_begin(&r, &d);
        if (rc)
            return rc;
        for (uint32_t i = order; i < n; i += TIDE_COL_PACK_BLOCK) {
            uint32_t mb =
                n - i < TIDE_COL_PACK_BLOCK ? n - i : TIDE_COL_PACK_BLOCK;

            rc = ints_block(&r, d, mb, s);
            if (rc < 0)
                return rc;
            if (rc == 1 && order == 2) { /* a regular interval */
                for (uint32_t j = 0; j < mb; j++) {
                    x += delta;
                    out[i + j] = (int64_t)x;
                }
                continue;
            }
            for (uint32_t j = 0; j < mb; j++) {
                /* Order 1 adds the step to the value, order 2 to the
                 * delta that is then added to the value. */
                delta = (order == 2 ? delta : 0) + (rc ? 0 : s[j]);
                x += delta;
                out[i + j] = (int64_t)x;
            }
        }
    }
    return r.pos == r.len ? 0 : TIDE_ECORRUPT;
}

/* Decode a column of one int64 codec, stored as differences of `order`. */
static int decode_int64s(const uint8_t *in, size_t len, uint32_t n,
                         uint8_t codec, uint32_t order, int64_t *out)
{
    struct col c;
    int rc;

    rc = tide__col_load(in, len, n, codec, codec, &c);
    if (!rc)
        rc = diffs_parse(c.payload, c.raw, n, order, out);
    tide_free(c.scratch);
    return rc;
}

int tide__col_decode_ts(const uint8_t *in, size_t len, uint32_t n, int64_t *ts)
{
    return decode_int64s(in, len, n, TIDE_COL_TS_DOD, 2, ts);
}

/* ---- 64-bit integers ---------------------------------------------------- */

int tide__col_encode_i64(const int64_t *v, uint32_t n, struct tide_buf *out)
{
    uint64_t *delta;
    uint8_t *scratch, *p;
    size_t pos = 0;
    int rc;

    scratch =
        tide_malloc(8 * (size_t)n + TIDE_VARINT_MAX + tide__col_ints_bound(n));
    if (!scratch)
        return -ENOMEM;
    delta = (uint64_t *)scratch;
    p = scratch + 8 * (size_t)n;
    if (n >= 1)
        pos += tide__varint_put(p, tide__zigzag(v[0]));
    for (uint32_t i = 1; i < n; i++)
        delta[i - 1] = (uint64_t)v[i] - (uint64_t)v[i - 1];
    if (n >= 2)
        pos += tide__col_ints_put(p + pos, delta, n - 1);
    rc = tide__col_put_column(out, TIDE_COL_I64_DELTA, n, p, pos);
    tide_free(scratch);
    return rc;
}

int tide__col_decode_i64(const uint8_t *in, size_t len, uint32_t n, int64_t *v)
{
    return decode_int64s(in, len, n, TIDE_COL_I64_DELTA, 1, v);
}
