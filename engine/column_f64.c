/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Column codec of f64 columns: decimal scaling (k / 10^e integers, delta,
 * INTS) when every value allows it, else XOR with the previous value in 8
 * byte planes. The spec is docs/file-format.md, "Column encodings"; the
 * conventions, the column frame, PACK and INTS are at the top of column.c,
 * and the payload tables of this codec are repeated here.
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
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "column_int.h"

/* 2^53: the largest |k| of a decimal column; every integer up to it is an
 * exact double. */
#define DECIMAL_K_MAX 9007199254740992LL

/* Exact powers of ten; the decoder's expression is dec_value(). */
static const double p10[TIDE_COL_DECIMAL_EXP_MAX + 1] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9,
};

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
        pos += tide__col_ints_put(p + pos, delta, n - 1);
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
    scratch = tide_malloc(8 * (size_t)n + 1 + TIDE_VARINT_MAX +
                          tide__col_ints_bound(n));
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
    rc = tide__col_put_column(out, codec, n, p, pos);
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
                     uint64_t *x_io, double *v, int64_t *k)
{
    uint8_t tmp[TIDE_COL_PACK_TMP_BYTES];
    uint64_t s[TIDE_COL_PACK_BLOCK];
    const uint8_t *src;
    uint64_t x = *x_io;
    unsigned w, bad = 0;
    int rc = tide__col_block_open(r, m, &w, &src, tmp);

    if (rc)
        return rc;
    if (w == 0) {
        bad = k_out_of_range(x);
        for (uint32_t j = 0; j < m; j++)
            v[j] = dec_value((int64_t)x, e);
        for (uint32_t j = 0; k && j < m; j++)
            k[j] = (int64_t)x;
    } else if (w <= 56) {
        uint64_t mask = (UINT64_C(1) << w) - 1;

        for (uint32_t j = 0; j < m; j++) {
            size_t bit = (size_t)j * w;
            uint64_t q = (tide__col_ld64(src + bit / 8) >> (bit % 8)) & mask;

            x += ((q >> 1) ^ (0 - (q & 1))) * d;
            bad |= k_out_of_range(x);
            v[j] = dec_value((int64_t)x, e);
            if (k)
                k[j] = (int64_t)x;
        }
    } else {
        tide__col_unpack_wide(src, m, w, s);
        for (uint32_t j = 0; j < m; j++) {
            x += ((s[j] >> 1) ^ (0 - (s[j] & 1))) * d;
            bad |= k_out_of_range(x);
            v[j] = dec_value((int64_t)x, e);
            if (k)
                k[j] = (int64_t)x;
        }
    }
    *x_io = x;
    return bad ? TIDE_ECORRUPT : 0;
}

/* Advance the running k over a block of m deltas without converting them
 * (values before a range read's first point). */
static int dec_skip_block(struct rd *r, uint64_t d, uint32_t m, uint64_t *x_io)
{
    uint8_t tmp[TIDE_COL_PACK_TMP_BYTES];
    uint64_t s[TIDE_COL_PACK_BLOCK];
    const uint8_t *src;
    uint64_t x = *x_io;
    unsigned w;
    int rc = tide__col_block_open(r, m, &w, &src, tmp);

    if (rc)
        return rc;
    /* Sums modulo 2^64, so sum * d == the sum of each delta * d. */
    if (w == 8) { /* the usual width: a plain byte loop the compiler widens */
        uint64_t sum = 0;

        for (uint32_t j = 0; j < m; j++)
            sum += ((uint64_t)src[j] >> 1) ^ (0 - ((uint64_t)src[j] & 1));
        x += sum * d;
    } else if (w > 0 && w <= 56) {
        uint64_t mask = (UINT64_C(1) << w) - 1, sum = 0;

        for (uint32_t j = 0; j < m; j++) {
            size_t bit = (size_t)j * w;
            uint64_t q = (tide__col_ld64(src + bit / 8) >> (bit % 8)) & mask;

            sum += (q >> 1) ^ (0 - (q & 1));
        }
        x += sum * d;
    } else if (w > 56) {
        tide__col_unpack_wide(src, m, w, s);
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
                     uint32_t hi, double *v, int64_t *kout)
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
        rc = tide__col_rd_varint(&r, &z);
        if (rc)
            return rc;
        k = tide__unzigzag(z);
        if (k > DECIMAL_K_MAX || k < -DECIMAL_K_MAX)
            return TIDE_ECORRUPT;
        x = (uint64_t)k;
        v[0] = dec_value(k, e);
        if (kout)
            kout[0] = k;
    }
    if (n >= 2) {
        rc = tide__col_ints_begin(&r, &d);
        if (rc)
            return rc;
        for (uint32_t i = 1; i < n; i += TIDE_COL_PACK_BLOCK) {
            uint32_t mb =
                n - i < TIDE_COL_PACK_BLOCK ? n - i : TIDE_COL_PACK_BLOCK;

            if (i >= hi)
                return 0;
            if (i + mb <= lo)
                rc = dec_skip_block(&r, d, mb, &x);
            else
                rc = dec_block(&r, d, mb, e, &x, v + i, kout ? kout + i : NULL);
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

    rc = tide__col_load(in, len, n, TIDE_COL_F64_DECIMAL, TIDE_COL_F64_XOR, &c);
    if (!rc && c.codec == TIDE_COL_F64_DECIMAL)
        rc = dec_parse(c.payload, c.raw, n, lo, hi, v, NULL);
    else if (!rc)
        rc = xor_parse(c.payload, c.raw, n, v);
    tide_free(c.scratch);
    return rc;
}

int tide__col_decode_f64_k(const uint8_t *in, size_t len, uint32_t n, double *v,
                           int64_t *k, int *e)
{
    struct col c;
    int rc;

    *e = -1;
    rc = tide__col_load(in, len, n, TIDE_COL_F64_DECIMAL, TIDE_COL_F64_XOR, &c);
    if (!rc && c.codec == TIDE_COL_F64_DECIMAL) {
        rc = dec_parse(c.payload, c.raw, n, 0, n, v, k);
        if (!rc)
            *e = c.payload[0];
    } else if (!rc) {
        rc = xor_parse(c.payload, c.raw, n, v);
    }
    tide_free(c.scratch);
    return rc;
}

int tide__col_encode_f64_k(const int64_t *k, uint32_t n, unsigned e,
                           struct tide_buf *out)
{
    uint8_t *scratch, *p;
    size_t pos;
    int rc;

    TIDE_ASSERT(e <= TIDE_COL_DECIMAL_EXP_MAX);
    scratch = tide_malloc(8 * (size_t)n + 1 + TIDE_VARINT_MAX +
                          tide__col_ints_bound(n));
    if (!scratch)
        return -ENOMEM;
    memcpy(scratch, k, 8 * (size_t)n);
    p = scratch + 8 * (size_t)n;
    pos = dec_encode((int64_t *)(void *)scratch, n, e, p);
    rc = tide__col_put_column(out, TIDE_COL_F64_DECIMAL, n, p, pos);
    tide_free(scratch);
    return rc;
}
