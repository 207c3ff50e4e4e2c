/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Column codecs of segment chunks: timestamps, f64, i64, bool and string
 * columns are transformed (delta-of-delta, decimal scaling, XOR, bitmap,
 * dictionary), bit-packed and LZ4-compressed. The spec is
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
 * PAYLOAD OF F64_DECIMAL (2)          v[i] = (double)k[i] / 10^e exactly
 *   OFFSET  SIZE  DESCRIPTION
 *   0       1     e, 0..9
 *   1       v     zigzag(k[0])                                  n >= 1
 *   .       .     INTS of the n - 1 values k[i] - k[i-1]        n >= 2
 *                 every |k[i]| <= 2^53
 *
 * PAYLOAD OF F64_XOR (3)
 *   OFFSET  SIZE  DESCRIPTION
 *   j*n     n     plane j = 0..7: byte i is bits 8j .. 8j+7 of
 *                 x[i] = bits(v[i]) XOR bits(v[i-1]), bits(v[-1]) = 0
 *
 * PAYLOAD OF I64_DELTA (4)                    empty when n = 0
 *   OFFSET  SIZE  DESCRIPTION
 *   0       v     zigzag(v[0])                                  n >= 1
 *   .       .     INTS of the n - 1 values v[i] - v[i-1]        n >= 2
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
 *
 * LIMITS CHECKED BEFORE ALLOCATING
 *   raw_bytes <= 9n + 64 (TS_DOD, F64_DECIMAL, I64_DELTA),
 *   = 8n (F64_XOR), = ceil(n/8) (BOOL_BITMAP), <= 65538n + 16 (STR_*);
 *   when c = 1 also raw_bytes <= 255 * body size and <= LZ4_MAX_INPUT_SIZE.
 */
#include "column.h"

#include <errno.h>
#include <lz4.h>
#include <math.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

/* Values per PACK block. Stored implicitly in every packed stream: frozen. */
#define PACK_BLOCK 128u

/* 2^53: the largest |k| of a decimal column; every integer up to it is an
 * exact double. */
#define DECIMAL_K_MAX 9007199254740992LL

/* An LZ4 block expands at most 255 times: each extra match-length byte
 * yields 255 bytes of output, and a sequence of t + 3 input bytes yields at
 * most 19 + 255 t. So a larger raw size in a header is corrupt. */
#define LZ4_RATIO_MAX 255u

/* Exact powers of ten; the decoder's expression is dec_value(). */
static const double p10[TIDE_COL_DECIMAL_EXP_MAX + 1] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9,
};

/* ---- Byte reader over a payload ---------------------------------------- */

struct rd {
    const uint8_t *p;
    size_t len;
    size_t pos;
};

/* Read a varint; rejects truncation and values above 2^64 - 1. */
static int rd_varint(struct rd *r, uint64_t *v)
{
    size_t k = tide__varint_get(r->p + r->pos, r->len - r->pos, v);

    if (k == 0 || (k == TIDE_VARINT_MAX && r->p[r->pos + k - 1] > 1))
        return TIDE_ECORRUPT;
    r->pos += k;
    return 0;
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;

    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static unsigned bit_width(uint64_t v)
{
    return v ? 64 - (unsigned)__builtin_clzll(v) : 0;
}

/* ---- PACK: blocks of PACK_BLOCK values at one bit width ----------------- */

static size_t pack_bytes(uint32_t m, unsigned w)
{
    return 1 + ((size_t)m * w + 7) / 8;
}

/* Upper bound of a PACK of m values. */
static size_t pack_bound(uint32_t m)
{
    return (m / PACK_BLOCK + 1) + 8 * (size_t)m;
}

/* Unaligned little-endian 8-byte access; compiles to one move on x86. */
static inline uint64_t ld64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline void st64(uint8_t *p, uint64_t v)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

/* Bytes a block of PACK_BLOCK values can take, plus 8 bytes of slack for
 * the word-at-a-time loops below. */
#define PACK_TMP_BYTES (PACK_BLOCK * 8u + 8u)

/* Write one block of m <= PACK_BLOCK values at dst; returns bytes written.
 * Values of up to 56 bits go through a 64-bit accumulator that is stored
 * whole after each value (fewer than 8 bits stay pending, so 56 more fit);
 * wider ones are split in two halves. The stores run ahead of the packed
 * length, so they go to a stack buffer first. */
static size_t pack_block(uint8_t *dst, const uint64_t *vals, uint32_t m)
{
    uint8_t tmp[PACK_TMP_BYTES];
    uint64_t all = 0, acc = 0;
    size_t pos = 0, len;
    unsigned w, nb = 0;

    for (uint32_t i = 0; i < m; i++)
        all |= vals[i];
    w = bit_width(all);
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
            st64(tmp + pos, acc);
            shift = nb & ~7u;
            pos += shift / 8;
            acc >>= shift;
            nb &= 7;
            acc |= (vals[i] >> 32) << nb;
            nb += w - 32;
        }
        st64(tmp + pos, acc);
        shift = nb & ~7u;
        pos += shift / 8;
        acc >>= shift;
        nb &= 7;
    }
    if (nb)
        tmp[pos++] = (uint8_t)acc;
    len = pack_bytes(m, w) - 1;
    TIDE_DEBUG_ASSERT(pos == len);
    memcpy(dst + 1, tmp, len);
    return 1 + len;
}

/* Unpack m <= PACK_BLOCK values of w <= 56 bits from src, which has at
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

        vals[i] = (ld64(src + bit / 8) >> (bit % 8)) & mask;
    }
}

/* The same for 57..64 bits: two loads per value. */
static void unpack_wide(const uint8_t *src, uint32_t m, unsigned w,
                        uint64_t *vals)
{
    uint64_t hi_mask = (UINT64_C(1) << (w - 32)) - 1;

    for (uint32_t i = 0; i < m; i++) {
        size_t bit = (size_t)i * w, bit2 = bit + 32;
        uint64_t lo = (ld64(src + bit / 8) >> (bit % 8)) & 0xffffffffu;
        uint64_t hi = (ld64(src + bit2 / 8) >> (bit2 % 8)) & hi_mask;

        vals[i] = lo | hi << 32;
    }
}

/* Parse the width byte of a block of m <= PACK_BLOCK values and check its
 * bytes. *src points at them: in place when the payload has 8 more bytes
 * after them, else at a zero-padded copy in tmp (PACK_TMP_BYTES), so the
 * word loads of the unpackers never leave the payload. */
static int block_open(struct rd *r, uint32_t m, unsigned *w_out,
                      const uint8_t **src, uint8_t *tmp)
{
    unsigned w, tail;
    size_t nbytes;

    if (r->pos >= r->len)
        return TIDE_ECORRUPT;
    w = r->p[r->pos++];
    if (w > 64)
        return TIDE_ECORRUPT;
    nbytes = pack_bytes(m, w) - 1;
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

/* Read one block of m <= PACK_BLOCK values into vals. */
static int unpack_block(struct rd *r, uint32_t m, uint64_t *vals)
{
    uint8_t tmp[PACK_TMP_BYTES];
    const uint8_t *src;
    unsigned w;
    int rc = block_open(r, m, &w, &src, tmp);

    if (rc)
        return rc;
    if (w <= 56)
        unpack_narrow(src, m, w, vals);
    else
        unpack_wide(src, m, w, vals);
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

static size_t ints_bound(uint32_t m)
{
    return TIDE_VARINT_MAX + pack_bound(m);
}

/* Write the m two's-complement values s[] as INTS; returns bytes written.
 * The quotient is exact because d divides every |s|, and |s| / d <= 2^63,
 * so the zigzag form fits 64 bits. */
static size_t ints_put(uint8_t *dst, const uint64_t *s, uint32_t m)
{
    uint64_t q[PACK_BLOCK];
    uint64_t d = 0;
    size_t pos;

    for (uint32_t i = 0; i < m && d != 1; i++)
        d = gcd(d, magnitude(s[i]));
    if (d == 0)
        d = 1;
    pos = tide__varint_put(dst, d);
    for (uint32_t i = 0; i < m; i += PACK_BLOCK) {
        uint32_t mb = m - i < PACK_BLOCK ? m - i : PACK_BLOCK;

        if (d == 1) { /* the common case: plain zigzag, no division */
            for (uint32_t j = 0; j < mb; j++)
                q[j] = (s[i + j] << 1) ^ (0 - (s[i + j] >> 63));
        } else {
            for (uint32_t j = 0; j < mb; j++) {
                uint64_t v = s[i + j];

                q[j] = (v >> 63) ? 2 * ((0 - v) / d) - 1 : 2 * (v / d);
            }
        }
        pos += pack_block(dst + pos, q, mb);
    }
    return pos;
}

static int ints_begin(struct rd *r, uint64_t *d)
{
    int rc = rd_varint(r, d);

    if (rc)
        return rc;
    return *d == 0 ? TIDE_ECORRUPT : 0;
}

/* Next m <= PACK_BLOCK values, as two's-complement bit patterns. Returns
 * 1 instead of 0 when they are all zero (a width of 0, the usual case of
 * regular timestamps) without writing s[], so the caller can skip them. */
static int ints_block(struct rd *r, uint64_t d, uint32_t m, uint64_t *s)
{
    uint8_t tmp[PACK_TMP_BYTES];
    const uint8_t *src;
    unsigned w;
    int rc = block_open(r, m, &w, &src, tmp);

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
            uint64_t q = (ld64(src + bit / 8) >> (bit % 8)) & mask;

            s[j] = ((q >> 1) ^ (0 - (q & 1))) * d;
        }
    } else {
        unpack_wide(src, m, w, s);
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
static int put_column(struct tide_buf *out, uint8_t codec, uint32_t n,
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

/* A parsed column header. */
struct col {
    uint8_t codec;
    int lz4;
    size_t raw; /* payload bytes */
    const uint8_t *body;
    size_t body_len;
    /* Set by col_load(): the raw bytes, which are the body itself or, for
     * an lz4 body, `scratch`: a tide_malloc'd copy decompressed, or NULL. */
    const uint8_t *payload;
    uint8_t *scratch;
};

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
static int col_open(const uint8_t *in, size_t len, uint32_t n, uint8_t a,
                    uint8_t b, struct col *c)
{
    struct rd r = {in, len, 0};
    uint64_t count, h, raw;
    int rc;

    if (len < 1 || (in[0] != a && in[0] != b))
        return TIDE_ECORRUPT;
    c->codec = in[0];
    r.pos = 1;
    rc = rd_varint(&r, &count);
    if (rc)
        return rc;
    if (count != n)
        return TIDE_ECORRUPT;
    rc = rd_varint(&r, &h);
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
static int col_inflate(const struct col *c, uint8_t *dst)
{
    int got = LZ4_decompress_safe((const char *)c->body, (char *)dst,
                                  (int)c->body_len, (int)c->raw);

    return got >= 0 && (size_t)got == c->raw ? 0 : TIDE_ECORRUPT;
}

/* Open a column of codec `a` or `b` holding n values, as col_open(), and
 * set c->payload to its raw bytes. Whatever the result, the caller frees
 * c->scratch. */
static int col_load(const uint8_t *in, size_t len, uint32_t n, uint8_t a,
                    uint8_t b, struct col *c)
{
    int rc;

    c->scratch = NULL;
    rc = col_open(in, len, n, a, b, c);
    if (rc)
        return rc;
    c->payload = c->body;
    if (!c->lz4)
        return 0;
    c->scratch = tide_malloc(c->raw);
    if (!c->scratch)
        return -ENOMEM;
    c->payload = c->scratch;
    return col_inflate(c, c->scratch);
}

/* ---- Timestamps --------------------------------------------------------- */

int tide__col_encode_ts(const int64_t *ts, uint32_t n, struct tide_buf *out)
{
    uint64_t *dod;
    uint8_t *scratch, *p;
    size_t pos = 0;
    int rc;

    scratch = tide_malloc(8 * (size_t)n + 2 * TIDE_VARINT_MAX + ints_bound(n));
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
        pos += ints_put(p + pos, dod, n - 2);
    rc = put_column(out, TIDE_COL_TS_DOD, n, p, pos);
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
    uint64_t s[PACK_BLOCK];
    uint64_t z, x = 0, delta = 0, d;
    int rc;

    if (n >= 1) {
        rc = rd_varint(&r, &z);
        if (rc)
            return rc;
        x = (uint64_t)tide__unzigzag(z);
        out[0] = (int64_t)x;
    }
    if (order == 2 && n >= 2) {
        rc = rd_varint(&r, &z);
        if (rc)
            return rc;
        delta = (uint64_t)tide__unzigzag(z);
        x += delta;
        out[1] = (int64_t)x;
    }
    if (n > order) {
        rc = ints_begin(&r, &d);
        if (rc)
            return rc;
        for (uint32_t i = order; i < n; i += PACK_BLOCK) {
            uint32_t mb = n - i < PACK_BLOCK ? n - i : PACK_BLOCK;

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

    rc = col_load(in, len, n, codec, codec, &c);
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

    scratch = tide_malloc(8 * (size_t)n + TIDE_VARINT_MAX + ints_bound(n));
    if (!scratch)
        return -ENOMEM;
    delta = (uint64_t *)scratch;
    p = scratch + 8 * (size_t)n;
    if (n >= 1)
        pos += tide__varint_put(p, tide__zigzag(v[0]));
    for (uint32_t i = 1; i < n; i++)
        delta[i - 1] = (uint64_t)v[i] - (uint64_t)v[i - 1];
    if (n >= 2)
        pos += ints_put(p + pos, delta, n - 1);
    rc = put_column(out, TIDE_COL_I64_DELTA, n, p, pos);
    tide_free(scratch);
    return rc;
}

int tide__col_decode_i64(const uint8_t *in, size_t len, uint32_t n, int64_t *v)
{
    return decode_int64s(in, len, n, TIDE_COL_I64_DELTA, 1, v);
}

/* ---- Doubles ------------------------------------------------------------ */

/* The one expression that turns a decimal column back into doubles; the
 * encoder checks every value with it. Both operands are exact doubles
 * (|k| <= 2^53, 10^e <= 10^9), so IEEE-754 division rounds the exact
 * quotient once and the result is the same on every conforming machine. */
static double dec_value(int64_t k, unsigned e)
{
    return (double)k / p10[e];
}

/* x rounded to an integer, for |x| <= 2^53. Adding and subtracting
 * 1.5 * 2^52 rounds to nearest in the current (default, to-nearest) mode
 * without llround()'s library call; from 2^52 up every double is already
 * an integer. Any nearby integer would do: dec_k() checks its candidate. */
static double round_int(double x)
{
    const double magic = 6755399441055744.0; /* 1.5 * 2^52 */

    return fabs(x) < 4503599627370496.0 ? (x + magic) - magic : x;
}

/* The integer k with dec_value(k, e) == v bit for bit, if there is one. */
static int dec_k(double v, unsigned e, int64_t *k)
{
    double x;

    /* -0.0 would come back as +0.0; NaN and infinities fail the bound. */
    if (v == 0.0 && signbit(v))
        return -1;
    x = v * p10[e];
    if (!(fabs(x) <= (double)DECIMAL_K_MAX))
        return -1;
    *k = (int64_t)round_int(x);
    /* Neither side is NaN or -0.0 here, so == compares the bits. */
    return dec_value(*k, e) == v ? 0 : -1;
}

/*
 * Smallest e for which every value is decimal, or -1; k[] receives the
 * integers at that e. A value that is k / 10^e is also (10k) / 10^(e+1):
 * the quotient is the same rational, and the division rounds it the same
 * way, so e only ever rises. When it does, the values before are redone
 * at the new e (the |k| bound can fail there); e rises at most
 * TIDE_COL_DECIMAL_EXP_MAX times, early in a chunk in practice, so this is
 * one pass over the values, not the two of a scan and an encode.
 */
static int dec_scan(const double *v, uint32_t n, int64_t *k)
{
    unsigned e = 0;

    for (uint32_t i = 0; i < n; i++) {
        if (dec_k(v[i], e, &k[i]) == 0)
            continue;
        do {
            if (++e > TIDE_COL_DECIMAL_EXP_MAX)
                return -1;
        } while (dec_k(v[i], e, &k[i]));
        for (uint32_t j = 0; j < i; j++)
            if (dec_k(v[j], e, &k[j]))
                return -1;
    }
    return (int)e;
}

/* Decimal payload of the integers k[0..n) at exponent e into p; returns
 * its size. k[] is overwritten with the deltas. */
static size_t dec_encode(int64_t *k, uint32_t n, unsigned e, uint8_t *p)
{
    uint64_t *delta = (uint64_t *)k, prev;
    size_t pos = 0;

    p[pos++] = (uint8_t)e;
    if (n == 0)
        return pos;
    pos += tide__varint_put(p + pos, tide__zigzag(k[0]));
    prev = (uint64_t)k[0];
    /* delta[i - 1] overwrites k[i - 1], already taken as prev. */
    for (uint32_t i = 1; i < n; i++) {
        uint64_t cur = (uint64_t)k[i];

        delta[i - 1] = cur - prev;
        prev = cur;
    }
    if (n >= 2)
        pos += ints_put(p + pos, delta, n - 1);
    return pos;
}

static void xor_encode(const double *v, uint32_t n, uint8_t *p)
{
    uint64_t prev = 0, bits;

    for (uint32_t i = 0; i < n; i++) {
        memcpy(&bits, &v[i], 8);
        for (unsigned j = 0; j < 8; j++)
            p[(size_t)j * n + i] = (uint8_t)((bits ^ prev) >> (8 * j));
        prev = bits;
    }
}

int tide__col_encode_f64(const double *v, uint32_t n, struct tide_buf *out)
{
    uint8_t *scratch, *p;
    uint8_t codec = TIDE_COL_F64_DECIMAL;
    size_t pos = 0;
    int e, rc;

    /* The decimal payload's bound also covers the XOR payload's 8n. */
    scratch = tide_malloc(8 * (size_t)n + 1 + TIDE_VARINT_MAX + ints_bound(n));
    if (!scratch)
        return -ENOMEM;
    p = scratch + 8 * (size_t)n;
    e = dec_scan(v, n, (int64_t *)(void *)scratch);
    if (e >= 0) {
        pos = dec_encode((int64_t *)(void *)scratch, n, (unsigned)e, p);
    } else {
        codec = TIDE_COL_F64_XOR;
        xor_encode(v, n, p);
        pos = 8 * (size_t)n;
    }
    rc = put_column(out, codec, n, p, pos);
    tide_free(scratch);
    return rc;
}

/* Is the running value x outside [-2^53, 2^53]? */
static unsigned k_out_of_range(uint64_t x)
{
    return x + (uint64_t)DECIMAL_K_MAX > 2 * (uint64_t)DECIMAL_K_MAX;
}

/* The next block of m deltas of a decimal column, turned into doubles:
 * unpacking, unzigzag, the running sum and the conversion in one pass, the
 * hot loop of every read. *x is the running k. The bound is tested once
 * per block. */
static int dec_block(struct rd *r, uint64_t d, uint32_t m, unsigned e,
                     uint64_t *x_io, double *v)
{
    uint8_t tmp[PACK_TMP_BYTES];
    uint64_t s[PACK_BLOCK];
    const uint8_t *src;
    uint64_t x = *x_io;
    unsigned w, bad = 0;
    int rc = block_open(r, m, &w, &src, tmp);

    if (rc)
        return rc;
    if (w == 0) {
        bad = k_out_of_range(x);
        for (uint32_t j = 0; j < m; j++)
            v[j] = dec_value((int64_t)x, e);
    } else if (w <= 56) {
        uint64_t mask = (UINT64_C(1) << w) - 1;

        for (uint32_t j = 0; j < m; j++) {
            size_t bit = (size_t)j * w;
            uint64_t q = (ld64(src + bit / 8) >> (bit % 8)) & mask;

            x += ((q >> 1) ^ (0 - (q & 1))) * d;
            bad |= k_out_of_range(x);
            v[j] = dec_value((int64_t)x, e);
        }
    } else {
        unpack_wide(src, m, w, s);
        for (uint32_t j = 0; j < m; j++) {
            x += ((s[j] >> 1) ^ (0 - (s[j] & 1))) * d;
            bad |= k_out_of_range(x);
            v[j] = dec_value((int64_t)x, e);
        }
    }
    *x_io = x;
    return bad ? TIDE_ECORRUPT : 0;
}

/* Advance the running k over a block of m deltas without converting them
 * (values before a range read's first point). */
static int dec_skip_block(struct rd *r, uint64_t d, uint32_t m, uint64_t *x_io)
{
    uint8_t tmp[PACK_TMP_BYTES];
    uint64_t s[PACK_BLOCK];
    const uint8_t *src;
    uint64_t x = *x_io;
    unsigned w;
    int rc = block_open(r, m, &w, &src, tmp);

    if (rc)
        return rc;
    if (w > 0 && w <= 56) {
        uint64_t mask = (UINT64_C(1) << w) - 1;

        for (uint32_t j = 0; j < m; j++) {
            size_t bit = (size_t)j * w;
            uint64_t q = (ld64(src + bit / 8) >> (bit % 8)) & mask;

            x += ((q >> 1) ^ (0 - (q & 1))) * d;
        }
    } else if (w > 56) {
        unpack_wide(src, m, w, s);
        for (uint32_t j = 0; j < m; j++)
            x += ((s[j] >> 1) ^ (0 - (s[j] & 1))) * d;
    }
    *x_io = x;
    return 0;
}

/* Decode values [0, n) of a decimal payload; with lo > 0 or hi < n only
 * v[lo, hi) are written: whole blocks before lo only advance the running
 * k, and decoding stops after the block holding hi - 1, so the payload's
 * tail is not checked (see tide__col_decode_f64_range). */
static int dec_parse(const uint8_t *p, size_t len, uint32_t n, uint32_t lo,
                     uint32_t hi, double *v)
{
    struct rd r = {p, len, 0};
    uint64_t z, x = 0, d;
    unsigned e;
    int64_t k;
    int rc;

    if (len < 1 || p[0] > TIDE_COL_DECIMAL_EXP_MAX)
        return TIDE_ECORRUPT;
    e = p[r.pos++];
    if (n >= 1) {
        rc = rd_varint(&r, &z);
        if (rc)
            return rc;
        k = tide__unzigzag(z);
        if (k > DECIMAL_K_MAX || k < -DECIMAL_K_MAX)
            return TIDE_ECORRUPT;
        x = (uint64_t)k;
        v[0] = dec_value(k, e);
    }
    if (n >= 2) {
        rc = ints_begin(&r, &d);
        if (rc)
            return rc;
        for (uint32_t i = 1; i < n; i += PACK_BLOCK) {
            uint32_t mb = n - i < PACK_BLOCK ? n - i : PACK_BLOCK;

            if (i >= hi)
                return 0;
            if (i + mb <= lo)
                rc = dec_skip_block(&r, d, mb, &x);
            else
                rc = dec_block(&r, d, mb, e, &x, v + i);
            if (rc)
                return rc;
        }
    }
    return r.pos == r.len ? 0 : TIDE_ECORRUPT;
}

static int xor_parse(const uint8_t *p, size_t len, uint32_t n, double *v)
{
    uint64_t prev = 0;

    if (len != 8 * (size_t)n)
        return TIDE_ECORRUPT;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t x = 0;

        for (unsigned j = 0; j < 8; j++)
            x |= (uint64_t)p[(size_t)j * n + i] << (8 * j);
        prev ^= x;
        memcpy(&v[i], &prev, 8);
    }
    return 0;
}

int tide__col_decode_f64(const uint8_t *in, size_t len, uint32_t n, double *v)
{
    return tide__col_decode_f64_range(in, len, n, 0, n, v);
}

int tide__col_decode_f64_range(const uint8_t *in, size_t len, uint32_t n,
                               uint32_t lo, uint32_t hi, double *v)
{
    struct col c;
    int rc;

    rc = col_load(in, len, n, TIDE_COL_F64_DECIMAL, TIDE_COL_F64_XOR, &c);
    if (!rc && c.codec == TIDE_COL_F64_DECIMAL)
        rc = dec_parse(c.payload, c.raw, n, lo, hi, v);
    else if (!rc)
        rc = xor_parse(c.payload, c.raw, n, v);
    tide_free(c.scratch);
    return rc;
}

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
    rc = put_column(out, TIDE_COL_BOOL_BITMAP, n, map, nbytes);
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

    rc = col_load(in, len, n, TIDE_COL_BOOL_BITMAP, TIDE_COL_BOOL_BITMAP, &c);
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
    size_t size = varint_len(d->m);

    for (uint32_t e = 0; e < d->m; e++)
        size += varint_len(v[d->first[e]].len) + v[d->first[e]].len;
    for (uint32_t i = 0; i < n; i += PACK_BLOCK) {
        uint32_t mb = n - i < PACK_BLOCK ? n - i : PACK_BLOCK;
        uint32_t all = 0;

        for (uint32_t j = 0; j < mb; j++)
            all |= d->ids[i + j];
        size += pack_bytes(mb, bit_width(all));
    }
    return size;
}

static size_t dict_encode(const struct dict *d, const struct tide_str *v,
                          uint32_t n, uint8_t *p)
{
    uint64_t idx[PACK_BLOCK];
    size_t pos = tide__varint_put(p, d->m);

    for (uint32_t e = 0; e < d->m; e++)
        pos += tide__varint_put(p + pos, v[d->first[e]].len);
    for (uint32_t e = 0; e < d->m; e++) {
        const struct tide_str *s = &v[d->first[e]];

        if (s->len)
            memcpy(p + pos, s->ptr, s->len);
        pos += s->len;
    }
    for (uint32_t i = 0; i < n; i += PACK_BLOCK) {
        uint32_t mb = n - i < PACK_BLOCK ? n - i : PACK_BLOCK;

        for (uint32_t j = 0; j < mb; j++)
            idx[j] = d->ids[i + j];
        pos += pack_block(p + pos, idx, mb);
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
        plain += varint_len(v[i].len) + v[i].len;
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
        rc = put_column(out, TIDE_COL_STR_DICT, n, p, size);
    } else {
        size = plain_encode(v, n, p);
        TIDE_DEBUG_ASSERT(size == plain);
        rc = put_column(out, TIDE_COL_STR_PLAIN, n, p, size);
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
        rc = rd_varint(r, &x);
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
    uint64_t idx[PACK_BLOCK];
    uint64_t m, sum;
    int rc;

    rc = rd_varint(&r, &m);
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
    for (uint32_t i = 0; i < n; i += PACK_BLOCK) {
        uint32_t mb = n - i < PACK_BLOCK ? n - i : PACK_BLOCK;

        rc = unpack_block(&r, mb, idx);
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

    rc = col_open(in, len, n, TIDE_COL_STR_PLAIN, TIDE_COL_STR_DICT, &c);
    if (rc)
        return rc;
    if (c.raw == 0) /* only a plain column of no values is empty */
        return n == 0 && c.codec == TIDE_COL_STR_PLAIN ? 0 : TIDE_ECORRUPT;
    rc = tide__buf_reserve(arena, c.raw);
    if (rc)
        return rc;
    p = arena->data + arena->len;
    if (c.lz4) {
        rc = col_inflate(&c, p);
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
