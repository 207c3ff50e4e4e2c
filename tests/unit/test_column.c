/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Description: tests of the column codecs (engine/column*.c): exact round
 * trips of every type at block boundaries and extreme values, the choice of
 * decimal scaling, golden bytes of each codec (docs/file-format.md, "Column
 * encodings"), the measured bytes per value, truncation at every offset,
 * every single-byte flip, random garbage, a wrong count or codec, and
 * injected allocation failures.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "column.h"
#include "internal.h"

#define CHECK(call)                                                            \
    do {                                                                       \
        int rc_ = (call);                                                      \
        cr_assert_eq(rc_, 0, "%s: %s", #call, tide_strerror(rc_));             \
    } while (0)

#define CHECK_CORRUPT(call)                                                    \
    do {                                                                       \
        int rc_ = (call);                                                      \
        cr_assert_eq(rc_, TIDE_ECORRUPT, "%s: %s, expected corrupt", #call,    \
                     tide_strerror(rc_));                                      \
    } while (0)

/* Counts the boundary tests use: block - 1, block, block + 1 for the
 * 4096-point chunks, and the 128-value pack blocks. */
static const uint32_t SIZES[] = {0,   1,   2,   3,    127,  128,
                                 129, 130, 131, 4095, 4096, 4097};
#define N_SIZES (sizeof(SIZES) / sizeof(SIZES[0]))

/* ---- Helpers ------------------------------------------------------------ */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static void rng_seed(uint64_t seed)
{
    rng_state = seed * 0x9e3779b97f4a7c15u + 1;
}

/* xorshift64*: deterministic across runs and machines. */
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1du;
}

/* Uniform in [lo, hi]. */
static int64_t rng_range(int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rng() % (uint64_t)(hi - lo + 1));
}

static double rng_unit(void)
{
    return (double)(rng() >> 11) / 9007199254740992.0;
}

/* A copy of exactly `len` bytes, so ASan sees any read past the end. */
static uint8_t *dup_exact(const uint8_t *p, size_t len)
{
    uint8_t *d = malloc(len ? len : 1);

    cr_assert_not_null(d);
    if (len)
        memcpy(d, p, len);
    return d;
}

/* An output array of exactly n elements (ASan checks every write). */
static void *out_exact(uint32_t n, size_t elem)
{
    void *p = malloc(n ? (size_t)n * elem : 1);

    cr_assert_not_null(p);
    return p;
}

static double bits_to_f64(uint64_t b)
{
    double v;

    memcpy(&v, &b, 8);
    return v;
}

static uint64_t f64_bits(double v)
{
    uint64_t b;

    memcpy(&b, &v, 8);
    return b;
}

static double per_value(const struct tide_buf *b, uint32_t n)
{
    return (double)b->len / n;
}

/* ---- Round trips, one per type; each returns the encoded column ---------- */

static struct tide_buf rt_ts(const int64_t *ts, uint32_t n)
{
    struct tide_buf b = {0};
    int64_t *got = out_exact(n, 8);
    uint8_t *in;

    CHECK(tide__col_encode_ts(ts, n, &b));
    cr_assert_eq(b.data[0], TIDE_COL_TS_DOD);
    in = dup_exact(b.data, b.len);
    CHECK(tide__col_decode_ts(in, b.len, n, got));
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(got[i], ts[i], "n=%u ts[%u]: %lld != %lld", n, i,
                     (long long)got[i], (long long)ts[i]);
    free(in);
    free(got);
    return b;
}

static struct tide_buf rt_f64(const double *v, uint32_t n)
{
    struct tide_buf b = {0};
    double *got = out_exact(n, 8);
    uint8_t *in;

    CHECK(tide__col_encode_f64(v, n, &b));
    in = dup_exact(b.data, b.len);
    CHECK(tide__col_decode_f64(in, b.len, n, got));
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(f64_bits(got[i]), f64_bits(v[i]),
                     "n=%u v[%u]: %016llx != %016llx", n, i,
                     (unsigned long long)f64_bits(got[i]),
                     (unsigned long long)f64_bits(v[i]));
    free(in);
    free(got);
    return b;
}

static struct tide_buf rt_i64(const int64_t *v, uint32_t n)
{
    struct tide_buf b = {0};
    int64_t *got = out_exact(n, 8);
    uint8_t *in;

    CHECK(tide__col_encode_i64(v, n, &b));
    cr_assert_eq(b.data[0], TIDE_COL_I64_DELTA);
    in = dup_exact(b.data, b.len);
    CHECK(tide__col_decode_i64(in, b.len, n, got));
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(got[i], v[i], "n=%u v[%u]", n, i);
    free(in);
    free(got);
    return b;
}

static struct tide_buf rt_bool(const uint8_t *v, uint32_t n)
{
    struct tide_buf b = {0};
    uint8_t *got = out_exact(n, 1);
    uint8_t *in;

    CHECK(tide__col_encode_bool(v, n, &b));
    cr_assert_eq(b.data[0], TIDE_COL_BOOL_BITMAP);
    in = dup_exact(b.data, b.len);
    CHECK(tide__col_decode_bool(in, b.len, n, got));
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(got[i], v[i] != 0, "n=%u v[%u]", n, i);
    free(in);
    free(got);
    return b;
}

static struct tide_buf rt_str(const struct tide_str *v, uint32_t n)
{
    struct tide_buf b = {0}, arena = {0};
    struct tide_str *got = out_exact(n, sizeof(*got));
    uint8_t *in;

    CHECK(tide__col_encode_str(v, n, &b));
    in = dup_exact(b.data, b.len);
    CHECK(tide__col_decode_str(in, b.len, n, got, &arena));
    for (uint32_t i = 0; i < n; i++) {
        cr_assert_eq(got[i].len, v[i].len, "n=%u v[%u] len", n, i);
        cr_assert(got[i].len == 0 || !memcmp(got[i].ptr, v[i].ptr, got[i].len),
                  "n=%u v[%u] bytes", n, i);
        cr_assert((const uint8_t *)got[i].ptr >= arena.data &&
                  (const uint8_t *)got[i].ptr + got[i].len <=
                      arena.data + arena.len);
    }
    free(in);
    free(got);
    tide__buf_fini(&arena);
    return b;
}

/* ---- Data generators ---------------------------------------------------- */

#define T0_NS 1700000000000000000LL
#define TEN_S_NS 10000000000LL

enum ts_shape { TS_EXACT, TS_JITTER_MS, TS_JITTER_NS, TS_RANDOM };

static void gen_ts(int64_t *ts, uint32_t n, enum ts_shape shape)
{
    for (uint32_t i = 0; i < n; i++) {
        int64_t t = T0_NS + (int64_t)i * TEN_S_NS;

        switch (shape) {
        case TS_EXACT:
            break;
        case TS_JITTER_MS: /* device clocks: whole milliseconds */
            t += rng_range(-5, 5) * 1000000;
            break;
        case TS_JITTER_NS:
            t += rng_range(-5000000, 5000000);
            break;
        case TS_RANDOM:
            t = (int64_t)rng();
            break;
        }
        ts[i] = t;
    }
}

/* Bounded 2-decimal random walk in [0, 100], steps of up to +-`step`
 * hundredths. */
static void gen_walk(double *v, uint32_t n, int64_t step)
{
    int64_t k = 5000;

    for (uint32_t i = 0; i < n; i++) {
        k += rng_range(-step, step);
        if (k < 0)
            k = -k;
        if (k > 10000)
            k = 20000 - k;
        v[i] = (double)k / 100.0;
    }
}

static const char *const STATES[] = {"moving", "parked", "idle", "charging"};

static void gen_states(struct tide_str *s, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        const char *p = STATES[rng() % 4];

        s[i].ptr = p;
        s[i].len = (uint32_t)strlen(p);
    }
}

/* Unique strings of 0..40 random bytes, backed by `pool`. */
static void gen_unique(struct tide_str *s, uint32_t n, char *pool)
{
    size_t pos = 0;

    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = (uint32_t)rng_range(0, 40);

        for (uint32_t j = 0; j < len; j++)
            pool[pos + j] = (char)rng();
        s[i].ptr = pool + pos;
        s[i].len = len;
        pos += len;
    }
}

/* ---- Round trips at boundaries ------------------------------------------ */

Test(column, ts_roundtrip_boundaries)
{
    static const enum ts_shape shapes[] = {TS_EXACT, TS_JITTER_MS, TS_JITTER_NS,
                                           TS_RANDOM};

    rng_seed(1);
    for (size_t s = 0; s < 4; s++) {
        for (size_t k = 0; k < N_SIZES; k++) {
            uint32_t n = SIZES[k];
            int64_t *ts = out_exact(n, 8);
            struct tide_buf b;

            gen_ts(ts, n, shapes[s]);
            b = rt_ts(ts, n);
            tide__buf_fini(&b);
            free(ts);
        }
    }
    cr_assert_eq(tide_alloc_live_bytes(), 0);
}

Test(column, ts_roundtrip_extremes)
{
    static const int64_t a[] = {INT64_MIN, INT64_MAX};
    static const int64_t b[] = {INT64_MAX, INT64_MIN, INT64_MAX, INT64_MIN,
                                0,         -1,        1,         INT64_MAX};
    static const int64_t c[] = {INT64_MIN, INT64_MIN + 1, -1,       0,
                                1,         INT64_MAX - 1, INT64_MAX};
    /* Deltas of +-2^63 only: the common divisor is 2^63. */
    static const int64_t d[] = {0, INT64_MIN, 0, INT64_MIN, INT64_MIN, 0, 0};
    static const struct {
        const int64_t *v;
        uint32_t n;
    } cases[] = {{a, 2}, {b, 8}, {c, 7}, {d, 7}};
    int64_t mix[1000];
    struct tide_buf out;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        out = rt_ts(cases[i].v, cases[i].n);
        tide__buf_fini(&out);
        out = rt_i64(cases[i].v, cases[i].n);
        tide__buf_fini(&out);
    }
    rng_seed(2);
    for (uint32_t i = 0; i < 1000; i++) {
        static const int64_t pick[] = {INT64_MIN, INT64_MAX, 0, -1, 1};

        mix[i] = (rng() & 1) ? pick[rng() % 5] : (int64_t)rng();
    }
    out = rt_ts(mix, 1000);
    tide__buf_fini(&out);
    out = rt_i64(mix, 1000);
    tide__buf_fini(&out);
}

Test(column, f64_roundtrip_boundaries)
{
    rng_seed(3);
    for (size_t k = 0; k < N_SIZES; k++) {
        uint32_t n = SIZES[k];
        double *v = out_exact(n, 8);
        struct tide_buf b;

        gen_walk(v, n, 100);
        b = rt_f64(v, n);
        cr_assert_eq(b.data[0], TIDE_COL_F64_DECIMAL, "walk n=%u", n);
        tide__buf_fini(&b);

        for (uint32_t i = 0; i < n; i++)
            v[i] = rng_unit() * 100;
        b = rt_f64(v, n);
        if (n > 0)
            cr_assert_eq(b.data[0], TIDE_COL_F64_XOR, "random n=%u", n);
        tide__buf_fini(&b);

        for (uint32_t i = 0; i < n; i++)
            v[i] = bits_to_f64(rng());
        b = rt_f64(v, n);
        tide__buf_fini(&b);
        free(v);
    }
    cr_assert_eq(tide_alloc_live_bytes(), 0);
}

/* NaN payloads, signed zeros, infinities, denormals: the XOR path keeps
 * every bit. */
Test(column, f64_roundtrip_specials)
{
    static const uint64_t special[] = {
        0x7ff8000000000000u, /* quiet NaN */
        0x7ff0000000000001u, /* signalling NaN payload */
        0xfff8000000000123u, /* negative NaN with payload */
        0x8000000000000000u, /* -0.0 */
        0x0000000000000000u, /* +0.0 */
        0x7ff0000000000000u, /* +inf */
        0xfff0000000000000u, /* -inf */
        0x0000000000000001u, /* smallest denormal */
        0x800fffffffffffffu, /* largest negative denormal */
        0x0010000000000000u, /* DBL_MIN */
        0x7fefffffffffffffu, /* DBL_MAX */
    };
    const uint32_t ns = sizeof(special) / sizeof(special[0]);
    double v[4097];
    struct tide_buf b;

    for (uint32_t i = 0; i < ns; i++) {
        v[0] = bits_to_f64(special[i]);
        b = rt_f64(v, 1);
        /* +0.0 alone is decimal (k = 0); everything else is not. */
        cr_assert_eq(b.data[0],
                     special[i] ? TIDE_COL_F64_XOR : TIDE_COL_F64_DECIMAL,
                     "special %016llx", (unsigned long long)special[i]);
        tide__buf_fini(&b);
    }
    /* One special value in a decimal walk forces the whole column to XOR,
     * at every position including the first and the last. */
    rng_seed(4);
    for (uint32_t i = 0; i < ns; i++) {
        if (!special[i])
            continue;
        for (uint32_t at = 0; at < 4097; at += 1024) {
            gen_walk(v, 4097, 100);
            v[at] = bits_to_f64(special[i]);
            b = rt_f64(v, 4097);
            cr_assert_eq(b.data[0], TIDE_COL_F64_XOR);
            tide__buf_fini(&b);
        }
    }
    for (uint32_t i = 0; i < 4097; i++)
        v[i] = bits_to_f64(special[rng() % ns]);
    b = rt_f64(v, 4097);
    tide__buf_fini(&b);
}

Test(column, i64_roundtrip_boundaries)
{
    rng_seed(5);
    for (size_t k = 0; k < N_SIZES; k++) {
        uint32_t n = SIZES[k];
        int64_t *v = out_exact(n, 8);
        struct tide_buf b;
        int64_t c = -1000;

        for (uint32_t i = 0; i < n; i++)
            v[i] = c += rng_range(0, 999);
        b = rt_i64(v, n);
        tide__buf_fini(&b);
        for (uint32_t i = 0; i < n; i++)
            v[i] = (int64_t)rng();
        b = rt_i64(v, n);
        tide__buf_fini(&b);
        for (uint32_t i = 0; i < n; i++)
            v[i] = 42;
        b = rt_i64(v, n);
        tide__buf_fini(&b);
        free(v);
    }
    cr_assert_eq(tide_alloc_live_bytes(), 0);
}

/* Every pack width 0..64, with and without a common divisor: the packer
 * and unpacker have a one-load path up to 56 bits and a two-load path
 * above, and the blocks nearest the end are unpacked from a padded copy.
 * Column sizes put the last block at 1, 127 and 128 values. */
Test(column, i64_roundtrip_every_width)
{
    static const uint32_t sizes[] = {2, 128, 129, 300, 385};

    rng_seed(11);
    for (unsigned w = 0; w <= 64; w++) {
        for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
            uint32_t n = sizes[k];
            int64_t *v = out_exact(n, 8);
            uint64_t mask = w == 64 ? ~UINT64_C(0) : (UINT64_C(1) << w) - 1;
            struct tide_buf b;

            for (int scaled = 0; scaled < 2; scaled++) {
                uint64_t x = 0;

                /* Zigzagged deltas of at most w bits, one of exactly w. */
                for (uint32_t i = 0; i < n; i++) {
                    uint64_t q = i == n / 2 ? mask : rng() & mask;
                    uint64_t s = (q >> 1) ^ (0 - (q & 1));

                    x += scaled && w <= 60 ? s * 7 : s;
                    v[i] = (int64_t)x;
                }
                b = rt_i64(v, n);
                tide__buf_fini(&b);
            }
            free(v);
        }
    }
    cr_assert_eq(tide_alloc_live_bytes(), 0);
}

/* A range decode writes exactly what a full decode does on [lo, hi), for
 * decimal and XOR columns and ranges at and across pack blocks; and on
 * damaged bytes it returns an error or values, never reads outside. */
Test(column, f64_decode_range_matches_full)
{
    static const uint32_t sizes[] = {1, 2, 129, 300, 1000};

    rng_seed(17);
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        uint32_t n = sizes[k];
        double *v = out_exact(n, 8), *full = out_exact(n, 8);
        double *part = out_exact(n, 8);

        for (int xor = 0; xor < 2; xor ++) {
            struct tide_buf b = {0};
            int64_t c = 5000;
            uint8_t *in;
            const uint32_t ranges[][2] = {
                {0, n},     {0, 0},     {n, n},         {1, n},
                {0, n / 2}, {n / 2, n}, {128, 129},     {129, 257},
                {127, 128}, {n - 1, n}, {n / 3, n / 2}, {257, n}};

            for (uint32_t i = 0; i < n; i++) {
                c += rng_range(-100, 100);
                v[i] = xor? rng_unit() : (double)c / 100.0;
            }
            CHECK(tide__col_encode_f64(v, n, &b));
            in = dup_exact(b.data, b.len);
            CHECK(tide__col_decode_f64(in, b.len, n, full));
            for (size_t r = 0; r < sizeof(ranges) / sizeof(ranges[0]); r++) {
                uint32_t lo = ranges[r][0], hi = ranges[r][1];

                if (lo > hi || hi > n)
                    continue;
                CHECK(tide__col_decode_f64_range(in, b.len, n, lo, hi, part));
                for (uint32_t i = lo; i < hi; i++)
                    cr_assert(!memcmp(&part[i], &full[i], 8),
                              "n=%u [%u, %u) v[%u]", n, lo, hi, i);
            }
            for (size_t at = 0; at < b.len; at++) {
                in[at] ^= 0x5a;
                (void)tide__col_decode_f64_range(in, b.len, n, n / 3, n / 2,
                                                 part);
                in[at] ^= 0x5a;
            }
            free(in);
            tide__buf_fini(&b);
        }
        free(v);
        free(full);
        free(part);
    }
    cr_assert_eq(tide_alloc_live_bytes(), 0);
}

Test(column, bool_roundtrip_boundaries)
{
    rng_seed(6);
    for (size_t k = 0; k < N_SIZES; k++) {
        uint32_t n = SIZES[k];
        uint8_t *v = out_exact(n, 1);
        struct tide_buf b;

        for (int shape = 0; shape < 4; shape++) {
            for (uint32_t i = 0; i < n; i++)
                v[i] = shape == 0   ? (uint8_t)(rng() & 1)
                       : shape == 1 ? 1
                       : shape == 2 ? 0
                                    : (uint8_t)(i & 1);
            b = rt_bool(v, n);
            tide__buf_fini(&b);
        }
        free(v);
    }
}

/* Any non-zero byte is stored as true. */
Test(column, bool_nonzero_is_true)
{
    static const uint8_t v[] = {0, 2, 0xff, 0, 1, 0x80};
    struct tide_buf b = rt_bool(v, 6);

    tide__buf_fini(&b);
}

Test(column, str_roundtrip_boundaries)
{
    rng_seed(7);
    for (size_t k = 0; k < N_SIZES; k++) {
        uint32_t n = SIZES[k];
        struct tide_str *s = out_exact(n, sizeof(*s));
        char *pool = malloc((size_t)n * 40 + 1);
        struct tide_buf b;

        gen_states(s, n);
        b = rt_str(s, n);
        if (n >= 127)
            cr_assert_eq(b.data[0], TIDE_COL_STR_DICT, "states n=%u", n);
        tide__buf_fini(&b);

        gen_unique(s, n, pool);
        b = rt_str(s, n);
        if (n >= 2)
            cr_assert_eq(b.data[0], TIDE_COL_STR_PLAIN, "unique n=%u", n);
        tide__buf_fini(&b);

        for (uint32_t i = 0; i < n; i++)
            s[i] = (struct tide_str){NULL, 0};
        b = rt_str(s, n);
        tide__buf_fini(&b);
        free(pool);
        free(s);
    }
    cr_assert_eq(tide_alloc_live_bytes(), 0);
}

/* Strings of the maximum length, and one byte less, in both encodings. */
Test(column, str_roundtrip_max_length)
{
    char *big = malloc(TIDE_STR_BYTES_MAX);
    struct tide_str s[5];
    struct tide_buf b;

    cr_assert_not_null(big);
    for (uint32_t i = 0; i < TIDE_STR_BYTES_MAX; i++)
        big[i] = (char)(i * 7);
    s[0] = (struct tide_str){big, TIDE_STR_BYTES_MAX};
    s[1] = (struct tide_str){big + 1, TIDE_STR_BYTES_MAX - 1};
    s[2] = (struct tide_str){"", 0};
    s[3] = s[0];
    s[4] = s[0];
    b = rt_str(s, 5);
    cr_assert_eq(b.data[0], TIDE_COL_STR_DICT);
    tide__buf_fini(&b);
    b = rt_str(s, 3);
    cr_assert_eq(b.data[0], TIDE_COL_STR_PLAIN);
    tide__buf_fini(&b);
    free(big);
}

/* Pointers from one decode share the bytes of equal dictionary values and
 * sit in the region appended to the arena; earlier arena bytes stay. */
Test(column, str_decode_appends_to_arena)
{
    struct tide_str s[4] = {
        {"moving", 6}, {"parked", 6}, {"moving", 6}, {"moving", 6}};
    struct tide_buf b = {0}, arena = {0};
    struct tide_str got[4];

    CHECK(tide__col_encode_str(s, 4, &b));
    CHECK(tide__buf_append(&arena, "prefix", 6));
    CHECK(tide__col_decode_str(b.data, b.len, 4, got, &arena));
    cr_assert_eq(memcmp(arena.data, "prefix", 6), 0);
    cr_assert_eq(got[0].ptr, got[2].ptr);
    cr_assert_eq(got[0].ptr, got[3].ptr);
    cr_assert((const uint8_t *)got[0].ptr >= arena.data + 6);
    tide__buf_fini(&b);
    tide__buf_fini(&arena);
}

/* ---- Decimal scaling ---------------------------------------------------- */

/* The smallest exponent that fits every value is chosen: byte 3 of a
 * small, uncompressed column is e. */
Test(column, f64_decimal_smallest_exponent)
{
    for (int e = 0; e <= TIDE_COL_DECIMAL_EXP_MAX; e++) {
        double v[2];
        struct tide_buf b;
        int64_t p = 1;

        for (int i = 0; i < e; i++)
            p *= 10;
        v[0] = 7.0 / (double)p;
        v[1] = 3.0;
        b = rt_f64(v, 2);
        cr_assert_eq(b.data[0], TIDE_COL_F64_DECIMAL, "e=%d", e);
        cr_assert_eq(b.data[2] & 1, 0, "e=%d: uncompressed", e);
        cr_assert_eq(b.data[3], e, "e=%d: chose %d", e, b.data[3]);
        tide__buf_fini(&b);
    }
}

Test(column, f64_decimal_limits)
{
    static const struct {
        double v;
        uint8_t codec;
    } cases[] = {
        {9007199254740992.0, TIDE_COL_F64_DECIMAL},  /* 2^53 */
        {-9007199254740992.0, TIDE_COL_F64_DECIMAL}, /* -2^53 */
        {9007199254740994.0, TIDE_COL_F64_XOR},      /* 2^53 + 2 */
        {1e-9, TIDE_COL_F64_DECIMAL},
        {1e-10, TIDE_COL_F64_XOR},          /* e would be 10 */
        {0.1 + 0.2, TIDE_COL_F64_XOR},      /* 0.30000000000000004 */
        {123456.789, TIDE_COL_F64_DECIMAL}, /* e = 3 */
        {1e300, TIDE_COL_F64_XOR},
        {-0.0, TIDE_COL_F64_XOR},
        {5e-324, TIDE_COL_F64_XOR},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        double v[3] = {cases[i].v, 3.0, cases[i].v};
        struct tide_buf b = rt_f64(v, 3);

        cr_assert_eq(b.data[0], cases[i].codec, "%.17g: codec %d", cases[i].v,
                     b.data[0]);
        tide__buf_fini(&b);
    }
}

/* A decimal value beyond 2^53 in the bytes is corrupt, not a wrong value. */
Test(column, f64_decimal_k_out_of_range)
{
    /* codec, n = 1, raw 11 bytes, e = 0, zigzag(2^53 + 1) as varint. */
    uint8_t col[16] = {TIDE_COL_F64_DECIMAL, 1, 11 << 1, 0};
    double v;
    size_t len = 4 + tide__varint_put(col + 4, tide__zigzag(9007199254740993));

    col[2] = (uint8_t)((len - 3) << 1);
    CHECK_CORRUPT(tide__col_decode_f64(col, len, 1, &v));
    len = 4 + tide__varint_put(col + 4, tide__zigzag(9007199254740992));
    CHECK(tide__col_decode_f64(col, len, 1, &v));
    cr_assert_eq(v, 9007199254740992.0);
}

/* ---- Golden bytes: the worked examples of docs/file-format.md ---------- */

static void assert_bytes(const struct tide_buf *b, const uint8_t *want,
                         size_t len)
{
    cr_assert_eq(b->len, len, "length %zu, expected %zu", b->len, len);
    for (size_t i = 0; i < len; i++)
        cr_assert_eq(b->data[i], want[i], "byte %zu: %02x, expected %02x", i,
                     b->data[i], want[i]);
}

Test(column, golden_bytes)
{
    static const int64_t ts[] = {1000, 2000, 3000, 3500};
    static const uint8_t ts_want[] = {0x01, 0x04, 0x10, 0xd0, 0x0f, 0xd0,
                                      0x0f, 0xf4, 0x03, 0x01, 0x02};
    static const double dec[] = {1.5, 2.25, -0.75};
    static const uint8_t dec_want[] = {0x02, 0x03, 0x0c, 0x02, 0xac,
                                       0x02, 0x4b, 0x03, 0x3a};
    static const double xor [] = {-0.0};
    static const uint8_t xor_want[] = {0x03, 0x01, 0x10, 0, 0,   0,
                                       0,    0,    0,    0, 0x80};
    static const int64_t i64[] = {-1, 1};
    static const uint8_t i64_want[] = {0x04, 0x02, 0x08, 0x01,
                                       0x02, 0x02, 0x02};
    static const uint8_t bools[] = {1, 0, 1, 1, 0, 0, 0, 0, 1};
    static const uint8_t bool_want[] = {0x05, 0x09, 0x04, 0x0d, 0x01};
    static const struct tide_str strs[] = {
        {"moving", 6}, {"parked", 6}, {"moving", 6}, {"moving", 6}};
    static const uint8_t dict_want[] = {0x07, 0x04, 0x22, 0x02, 0x06, 0x06, 'm',
                                        'o',  'v',  'i',  'n',  'g',  'p',  'a',
                                        'r',  'k',  'e',  'd',  0x01, 0x02};
    static const uint8_t plain_want[] = {0x06, 0x02, 0x1c, 0x06, 0x06, 'm',
                                         'o',  'v',  'i',  'n',  'g',  'p',
                                         'a',  'r',  'k',  'e',  'd'};
    struct tide_buf b;

    b = rt_ts(ts, 4);
    assert_bytes(&b, ts_want, sizeof(ts_want));
    tide__buf_fini(&b);
    b = rt_f64(dec, 3);
    assert_bytes(&b, dec_want, sizeof(dec_want));
    tide__buf_fini(&b);
    b = rt_f64(xor, 1);
    assert_bytes(&b, xor_want, sizeof(xor_want));
    tide__buf_fini(&b);
    b = rt_i64(i64, 2);
    assert_bytes(&b, i64_want, sizeof(i64_want));
    tide__buf_fini(&b);
    b = rt_bool(bools, 9);
    assert_bytes(&b, bool_want, sizeof(bool_want));
    tide__buf_fini(&b);
    b = rt_str(strs, 4);
    assert_bytes(&b, dict_want, sizeof(dict_want));
    tide__buf_fini(&b);
    b = rt_str(strs, 2);
    assert_bytes(&b, plain_want, sizeof(plain_want));
    tide__buf_fini(&b);
}

/* ---- Sizes -------------------------------------------------------------- */

/* The figures behind DESIGN.md's table, measured on 4096-point columns;
 * printed so they appear in the test output. */
Test(column, sizes_measured)
{
    enum { N = 4096 };
    static int64_t ts[N], iv[N];
    static double fv[N];
    static uint8_t bv[N];
    static struct tide_str sv[N];
    struct tide_buf b;
    double bpv;

    rng_seed(8);
    gen_ts(ts, N, TS_EXACT);
    b = rt_ts(ts, N);
    bpv = per_value(&b, N);
    fprintf(stderr, "column sizes: ts exact 10 s            %.4f B/value\n",
            bpv);
    cr_assert_lt(bpv, 0.02);
    tide__buf_fini(&b);

    gen_ts(ts, N, TS_JITTER_MS);
    b = rt_ts(ts, N);
    bpv = per_value(&b, N);
    fprintf(stderr, "column sizes: ts 10 s +-5 ms jitter (ms) %.4f B/value\n",
            bpv);
    cr_assert_lt(bpv, 1.0);
    tide__buf_fini(&b);

    gen_ts(ts, N, TS_JITTER_NS);
    b = rt_ts(ts, N);
    bpv = per_value(&b, N);
    fprintf(stderr, "column sizes: ts 10 s +-5 ms jitter (ns) %.4f B/value\n",
            bpv);
    cr_assert_lt(bpv, 3.5);
    tide__buf_fini(&b);

    gen_walk(fv, N, 100);
    b = rt_f64(fv, N);
    bpv = per_value(&b, N);
    cr_assert_eq(b.data[0], TIDE_COL_F64_DECIMAL);
    fprintf(stderr, "column sizes: f64 walk 0..100 step<=1.00 %.4f B/value\n",
            bpv);
    cr_assert_lt(bpv, 2.5);
    tide__buf_fini(&b);

    gen_walk(fv, N, 10);
    b = rt_f64(fv, N);
    bpv = per_value(&b, N);
    cr_assert_eq(b.data[0], TIDE_COL_F64_DECIMAL);
    fprintf(stderr, "column sizes: f64 walk 0..100 step<=0.10 %.4f B/value\n",
            bpv);
    cr_assert_lt(bpv, 2.5);
    tide__buf_fini(&b);

    for (uint32_t i = 0; i < N; i++)
        fv[i] = rng_unit() * 100;
    b = rt_f64(fv, N);
    bpv = per_value(&b, N);
    cr_assert_eq(b.data[0], TIDE_COL_F64_XOR);
    fprintf(stderr, "column sizes: f64 random [0,100) XOR     %.4f B/value\n",
            bpv);
    cr_assert_leq(b.len, 8 * N + 16);
    tide__buf_fini(&b);

    for (uint32_t i = 0; i < N; i++)
        iv[i] = 1000000 + i;
    b = rt_i64(iv, N);
    bpv = per_value(&b, N);
    fprintf(stderr, "column sizes: i64 counter +1             %.4f B/value\n",
            bpv);
    tide__buf_fini(&b);

    for (uint32_t i = 0; i < N; i++)
        iv[i] = (i ? iv[i - 1] : 0) + rng_range(0, 999);
    b = rt_i64(iv, N);
    bpv = per_value(&b, N);
    fprintf(stderr, "column sizes: i64 counter +0..999        %.4f B/value\n",
            bpv);
    cr_assert_lt(bpv, 1.5);
    tide__buf_fini(&b);

    for (uint32_t i = 0; i < N; i++)
        bv[i] = (uint8_t)(rng() & 1);
    b = rt_bool(bv, N);
    fprintf(stderr, "column sizes: bool random                %.4f B/value\n",
            per_value(&b, N));
    cr_assert_leq(b.len, N / 8 + 16);
    tide__buf_fini(&b);

    gen_states(sv, N);
    b = rt_str(sv, N);
    fprintf(stderr, "column sizes: str 4 states (dict)        %.4f B/value\n",
            per_value(&b, N));
    cr_assert_lt(per_value(&b, N), 0.5);
    tide__buf_fini(&b);
}

/* Incompressible input never grows by more than the header. */
Test(column, incompressible_bounded)
{
    enum { N = 4096 };
    static double fv[N];
    static uint8_t bv[N];
    struct tide_buf b;

    rng_seed(9);
    for (uint32_t i = 0; i < N; i++) {
        fv[i] = bits_to_f64(rng() | 0x7ff0000000000000u); /* all NaN/inf */
        bv[i] = (uint8_t)(rng() & 1);
    }
    b = rt_f64(fv, N);
    cr_assert_leq(b.len, 8 * N + 1 + 3 + 3);
    tide__buf_fini(&b);
    b = rt_bool(bv, N);
    cr_assert_leq(b.len, N / 8 + 1 + 3 + 2);
    tide__buf_fini(&b);
}

/* ---- Corruption --------------------------------------------------------- */

/* One decoder behind a common signature, writing n values of `elem` bytes
 * (strings also fill an arena). */
struct kind {
    const char *name;
    size_t elem;
    int (*dec)(const uint8_t *in, size_t len, uint32_t n, void *out,
               struct tide_buf *arena);
};

static int dec_ts(const uint8_t *in, size_t len, uint32_t n, void *out,
                  struct tide_buf *arena)
{
    (void)arena;
    return tide__col_decode_ts(in, len, n, out);
}

static int dec_f64(const uint8_t *in, size_t len, uint32_t n, void *out,
                   struct tide_buf *arena)
{
    (void)arena;
    return tide__col_decode_f64(in, len, n, out);
}

static int dec_i64(const uint8_t *in, size_t len, uint32_t n, void *out,
                   struct tide_buf *arena)
{
    (void)arena;
    return tide__col_decode_i64(in, len, n, out);
}

static int dec_bool(const uint8_t *in, size_t len, uint32_t n, void *out,
                    struct tide_buf *arena)
{
    (void)arena;
    return tide__col_decode_bool(in, len, n, out);
}

static int dec_str(const uint8_t *in, size_t len, uint32_t n, void *out,
                   struct tide_buf *arena)
{
    return tide__col_decode_str(in, len, n, out, arena);
}

static const struct kind K_TS = {"ts", 8, dec_ts};
static const struct kind K_F64 = {"f64", 8, dec_f64};
static const struct kind K_I64 = {"i64", 8, dec_i64};
static const struct kind K_BOOL = {"bool", 1, dec_bool};
static const struct kind K_STR = {"str", sizeof(struct tide_str), dec_str};

/* An encoded column to damage. */
struct sample {
    const struct kind *kind;
    const char *what;
    uint32_t n;
    struct tide_buf col;
};

#define MAX_SAMPLES 24

/* Columns of every codec, compressed and not, small enough to damage at
 * every byte. */
static size_t make_samples(struct sample *s)
{
    enum { N = 300 };
    static int64_t ts[N], iv[N];
    static double fv[N];
    static uint8_t bv[N];
    static struct tide_str sv[N];
    static char pool[N * 40];
    size_t k = 0;

#define ADD(KIND, WHAT, NN, ENC)                                               \
    do {                                                                       \
        s[k] = (struct sample){&KIND, WHAT, NN, {0}};                          \
        CHECK(ENC);                                                            \
        k++;                                                                   \
    } while (0)

    rng_seed(10);
    gen_ts(ts, N, TS_EXACT);
    ADD(K_TS, "ts exact", N, tide__col_encode_ts(ts, N, &s[k].col));
    gen_ts(ts, N, TS_JITTER_MS);
    ADD(K_TS, "ts jitter", N, tide__col_encode_ts(ts, N, &s[k].col));
    ADD(K_TS, "ts 1", 1, tide__col_encode_ts(ts, 1, &s[k].col));
    ADD(K_TS, "ts 0", 0, tide__col_encode_ts(ts, 0, &s[k].col));
    gen_walk(fv, N, 100);
    ADD(K_F64, "f64 decimal", N, tide__col_encode_f64(fv, N, &s[k].col));
    for (uint32_t i = 0; i < N; i++)
        fv[i] = i % 7 ? 1.25 : 2.5;
    ADD(K_F64, "f64 decimal lz4", N, tide__col_encode_f64(fv, N, &s[k].col));
    for (uint32_t i = 0; i < N; i++)
        fv[i] = rng_unit();
    ADD(K_F64, "f64 xor", N, tide__col_encode_f64(fv, N, &s[k].col));
    for (uint32_t i = 0; i < N; i++)
        fv[i] = i % 3 ? NAN : -0.0;
    ADD(K_F64, "f64 xor lz4", N, tide__col_encode_f64(fv, N, &s[k].col));
    for (uint32_t i = 0; i < N; i++)
        iv[i] = (int64_t)rng() >> (i % 60);
    ADD(K_I64, "i64 random", N, tide__col_encode_i64(iv, N, &s[k].col));
    for (uint32_t i = 0; i < N; i++)
        iv[i] = 7 * i;
    ADD(K_I64, "i64 counter lz4", N, tide__col_encode_i64(iv, N, &s[k].col));
    for (uint32_t i = 0; i < N; i++)
        bv[i] = (uint8_t)(rng() & 1);
    ADD(K_BOOL, "bool random", N, tide__col_encode_bool(bv, N, &s[k].col));
    ADD(K_BOOL, "bool 13", 13, tide__col_encode_bool(bv, 13, &s[k].col));
    for (uint32_t i = 0; i < N; i++)
        bv[i] = i < 250;
    ADD(K_BOOL, "bool runs lz4", N, tide__col_encode_bool(bv, N, &s[k].col));
    gen_states(sv, N);
    ADD(K_STR, "str dict", N, tide__col_encode_str(sv, N, &s[k].col));
    ADD(K_STR, "str dict 9", 9, tide__col_encode_str(sv, 9, &s[k].col));
    gen_unique(sv, N, pool);
    ADD(K_STR, "str plain", N, tide__col_encode_str(sv, N, &s[k].col));
    ADD(K_STR, "str 0", 0, tide__col_encode_str(sv, 0, &s[k].col));
    for (uint32_t i = 0; i < N; i++)
        sv[i] = (struct tide_str){"sensor/temperature/celsius", 26 - i % 3};
    ADD(K_STR, "str dict lz4", N, tide__col_encode_str(sv, N, &s[k].col));
#undef ADD
    cr_assert_leq(k, MAX_SAMPLES);
    return k;
}

static void free_samples(struct sample *s, size_t k)
{
    for (size_t i = 0; i < k; i++)
        tide__buf_fini(&s[i].col);
}

/* Decode a private copy of in[0..len) into exactly n values. Strings must
 * point inside the arena whenever the decode succeeds. */
static int try_decode(const struct kind *kind, const uint8_t *in, size_t len,
                      uint32_t n)
{
    struct tide_buf arena = {0};
    uint8_t *copy = dup_exact(in, len);
    void *out = out_exact(n, kind->elem);
    int rc = kind->dec(copy, len, n, out, &arena);

    if (rc == 0 && kind == &K_STR) {
        const struct tide_str *s = out;

        for (uint32_t i = 0; i < n; i++)
            cr_assert((const uint8_t *)s[i].ptr >= arena.data &&
                      (const uint8_t *)s[i].ptr + s[i].len <=
                          arena.data + arena.len);
    }
    tide__buf_fini(&arena);
    free(out);
    free(copy);
    return rc;
}

Test(column, samples_roundtrip_and_compress)
{
    struct sample s[MAX_SAMPLES];
    size_t k = make_samples(s);
    int lz4 = 0;

    for (size_t i = 0; i < k; i++) {
        int rc = try_decode(s[i].kind, s[i].col.data, s[i].col.len, s[i].n);

        cr_assert_eq(rc, 0, "%s: %s", s[i].what, tide_strerror(rc));
        /* The column's third field is raw_bytes * 2 + c; c = 1 for LZ4. */
        if (strstr(s[i].what, "lz4")) {
            struct tide_buf *c = &s[i].col;
            uint64_t count = 0, h = 0;
            size_t a = tide__varint_get(c->data + 1, c->len - 1, &count);

            cr_assert_neq(a, 0);
            cr_assert_neq(tide__varint_get(c->data + 1 + a, c->len - 1 - a, &h),
                          0);
            cr_assert(h & 1, "%s: expected LZ4", s[i].what);
            lz4++;
        }
    }
    cr_assert_eq(lz4, 5);
    free_samples(s, k);
}

Test(column, truncated_every_offset)
{
    struct sample s[MAX_SAMPLES];
    size_t k = make_samples(s);

    for (size_t i = 0; i < k; i++) {
        for (size_t cut = 0; cut < s[i].col.len; cut++) {
            int rc = try_decode(s[i].kind, s[i].col.data, cut, s[i].n);

            cr_assert_eq(rc, TIDE_ECORRUPT, "%s cut at %zu of %zu: %s",
                         s[i].what, cut, s[i].col.len, tide_strerror(rc));
        }
    }
    free_samples(s, k);
    cr_assert_eq(tide_alloc_live_bytes(), 0);
}

Test(column, trailing_bytes)
{
    struct sample s[MAX_SAMPLES];
    size_t k = make_samples(s);

    for (size_t i = 0; i < k; i++) {
        for (unsigned extra = 0; extra < 256; extra += 51) {
            uint8_t byte = (uint8_t)extra;
            int rc;

            CHECK(tide__buf_append(&s[i].col, &byte, 1));
            rc = try_decode(s[i].kind, s[i].col.data, s[i].col.len, s[i].n);
            cr_assert_eq(rc, TIDE_ECORRUPT, "%s + %02x: %s", s[i].what, byte,
                         tide_strerror(rc));
            s[i].col.len--;
        }
    }
    free_samples(s, k);
}

/* Checksums live at chunk level: a flipped byte may decode, but must never
 * crash or touch memory outside the buffers (ASan runs this). */
Test(column, every_byte_flipped)
{
    static const uint8_t masks[] = {0x01, 0x02, 0x10, 0x80, 0xff};
    struct sample s[MAX_SAMPLES];
    size_t k = make_samples(s);
    unsigned corrupt = 0, decoded = 0;

    for (size_t i = 0; i < k; i++) {
        uint8_t *p = s[i].col.data;

        for (size_t at = 0; at < s[i].col.len; at++) {
            for (size_t m = 0; m < sizeof(masks); m++) {
                int rc;

                p[at] ^= masks[m];
                rc = try_decode(s[i].kind, p, s[i].col.len, s[i].n);
                p[at] ^= masks[m];
                cr_assert(rc == 0 || rc == TIDE_ECORRUPT,
                          "%s byte %zu ^ %02x: %s", s[i].what, at, masks[m],
                          tide_strerror(rc));
                if (rc)
                    corrupt++;
                else
                    decoded++;
            }
        }
    }
    fprintf(stderr, "column flips: %u corrupt, %u decoded\n", corrupt, decoded);
    free_samples(s, k);
    cr_assert_eq(tide_alloc_live_bytes(), 0);
}

/* Random bytes behind a valid codec id and count. */
Test(column, random_garbage)
{
    static const struct {
        const struct kind *kind;
        uint8_t codec;
    } targets[] = {
        {&K_TS, TIDE_COL_TS_DOD},        {&K_F64, TIDE_COL_F64_DECIMAL},
        {&K_F64, TIDE_COL_F64_XOR},      {&K_I64, TIDE_COL_I64_DELTA},
        {&K_BOOL, TIDE_COL_BOOL_BITMAP}, {&K_STR, TIDE_COL_STR_PLAIN},
        {&K_STR, TIDE_COL_STR_DICT},
    };
    uint8_t buf[64];

    rng_seed(11);
    for (int iter = 0; iter < 20000; iter++) {
        size_t t = rng() % 7, len = 2 + rng() % 62;
        uint32_t n = (uint32_t)(rng() % 40);
        int rc;

        buf[0] = targets[t].codec;
        buf[1] = (uint8_t)n;
        for (size_t i = 2; i < len; i++)
            buf[i] = (uint8_t)rng();
        if (iter & 1) /* a plausible h: raw size near the body's */
            buf[2] =
                (uint8_t)(((len - 3 + rng() % 3) << 1 | (rng() & 1)) & 0x7f);
        rc = try_decode(targets[t].kind, buf, len, n);
        cr_assert(rc == 0 || rc == TIDE_ECORRUPT, "iter %d: %s", iter,
                  tide_strerror(rc));
    }
    cr_assert_eq(tide_alloc_live_bytes(), 0);
}

Test(column, wrong_count)
{
    struct sample s[MAX_SAMPLES];
    size_t k = make_samples(s);

    for (size_t i = 0; i < k; i++) {
        uint32_t n = s[i].n;

        CHECK_CORRUPT(
            try_decode(s[i].kind, s[i].col.data, s[i].col.len, n + 1));
        if (n > 0) {
            CHECK_CORRUPT(
                try_decode(s[i].kind, s[i].col.data, s[i].col.len, n - 1));
            CHECK_CORRUPT(
                try_decode(s[i].kind, s[i].col.data, s[i].col.len, 0));
        }
    }
    free_samples(s, k);
}

/* A column of one type handed to another type's decoder, or an unknown
 * codec id, is corrupt. */
Test(column, wrong_codec)
{
    static const struct kind *const kinds[] = {&K_TS, &K_F64, &K_I64, &K_BOOL,
                                               &K_STR};
    static const uint8_t bad[] = {0, 8, 9, 0x7f, 0x80, 0xff};
    struct sample s[MAX_SAMPLES];
    size_t k = make_samples(s);

    for (size_t i = 0; i < k; i++) {
        for (size_t j = 0; j < 5; j++) {
            if (kinds[j] == s[i].kind)
                continue;
            CHECK_CORRUPT(
                try_decode(kinds[j], s[i].col.data, s[i].col.len, s[i].n));
        }
        for (size_t j = 0; j < sizeof(bad); j++) {
            uint8_t codec = s[i].col.data[0];

            s[i].col.data[0] = bad[j];
            CHECK_CORRUPT(
                try_decode(s[i].kind, s[i].col.data, s[i].col.len, s[i].n));
            s[i].col.data[0] = codec;
        }
    }
    free_samples(s, k);
}

/* Hand-made columns, each broken in one way the encoder never produces. */
Test(column, crafted_corruptions)
{
    int64_t t[8];
    double f[4];
    uint8_t b[16];
    struct tide_str s[4];
    struct tide_buf arena = {0};

    /* Empty input. */
    CHECK_CORRUPT(tide__col_decode_ts((const uint8_t *)"", 0, 0, t));
    /* Count varint of 11 bytes; 10 bytes with bits beyond 2^64. */
    {
        uint8_t c[16] = {1,    0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                         0x80, 0x80, 0x80, 0x80, 0x00, 0x00};
        CHECK_CORRUPT(tide__col_decode_ts(c, 13, 0, t));
        c[10] = 0x02;
        CHECK_CORRUPT(tide__col_decode_ts(c, 12, 0, t));
    }
    /* LZ4 flag with raw size 0, and with a body not smaller than raw. */
    {
        const uint8_t c1[] = {1, 0, 0x01, 0x00};
        const uint8_t c2[] = {1, 1, 0x05, 0x10, 0x00};

        CHECK_CORRUPT(tide__col_decode_ts(c1, sizeof(c1), 0, t));
        CHECK_CORRUPT(tide__col_decode_ts(c2, sizeof(c2), 1, t));
    }
    /* Sizes beyond the bounds are rejected before any allocation: with the
     * next allocation set to fail, the answer is still TIDE_ECORRUPT. */
    {
        /* TS, n = 2, raw = 2^40 with LZ4, one body byte. */
        uint8_t c[16] = {1, 2};
        size_t len = 2 + tide__varint_put(c + 2, (UINT64_C(1) << 41) | 1);

        c[len++] = 0x00;
        tide_alloc_fail_nth(1);
        CHECK_CORRUPT(tide__col_decode_ts(c, len, 2, t));
        tide_alloc_fail_nth(0);
        /* STR, n = 1, raw = 1000 with LZ4: within 65538n + 16, but more
         * than 255 times the 3 body bytes. */
        c[0] = TIDE_COL_STR_PLAIN;
        c[1] = 1;
        len = 2 + tide__varint_put(c + 2, 1000 << 1 | 1);
        memset(c + len, 0, 3);
        len += 3;
        tide_alloc_fail_nth(1);
        CHECK_CORRUPT(tide__col_decode_str(c, len, 1, s, &arena));
        tide_alloc_fail_nth(0);
    }
    /* Pack width 65; divisor 0; non-zero padding bits. TS n = 3:
     * zigzag(ts0) = 0, zigzag(d1) = 0, d, then one block of one value. */
    {
        uint8_t c[] = {1, 3, 4 << 1, 0x00, 0x00, 0x01, 65, 0x00};

        CHECK_CORRUPT(tide__col_decode_ts(c, 7, 3, t));
        c[6] = 0;
        CHECK(tide__col_decode_ts(c, 7, 3, t)); /* width 0: fine */
        c[5] = 0;
        CHECK_CORRUPT(tide__col_decode_ts(c, 7, 3, t)); /* divisor 0 */
        c[5] = 1;
        c[2] = 5 << 1;
        c[6] = 1;
        c[7] = 0x03; /* value 1, padding bit 1 set */
        CHECK_CORRUPT(tide__col_decode_ts(c, 8, 3, t));
        c[7] = 0x01;
        CHECK(tide__col_decode_ts(c, 8, 3, t));
        cr_assert_eq(t[2], -1); /* dod = unzigzag(1) */
    }
    /* Decimal exponent 10. */
    {
        const uint8_t c[] = {2, 1, 2 << 1, 10, 0x00};

        CHECK_CORRUPT(tide__col_decode_f64(c, sizeof(c), 1, f));
    }
    /* XOR column whose raw size is not 8n. */
    {
        const uint8_t c[] = {3, 1, 7 << 1, 0, 0, 0, 0, 0, 0, 0};

        CHECK_CORRUPT(tide__col_decode_f64(c, sizeof(c), 1, f));
    }
    /* Bool padding bit set; bitmap of the wrong size. */
    {
        const uint8_t c1[] = {5, 3, 1 << 1, 0x0f};
        const uint8_t c2[] = {5, 3, 2 << 1, 0x07, 0x00};

        CHECK_CORRUPT(tide__col_decode_bool(c1, sizeof(c1), 3, b));
        CHECK_CORRUPT(tide__col_decode_bool(c2, sizeof(c2), 3, b));
    }
    /* Plain strings: lengths that do not add up; a length above 65535. */
    {
        const uint8_t c1[] = {6, 2, 5 << 1, 1, 1, 'a', 'b', 'c'};
        const uint8_t c2[] = {6, 1, 4 << 1, 0x80, 0x80, 0x04, 'x'};

        CHECK_CORRUPT(tide__col_decode_str(c1, sizeof(c1), 2, s, &arena));
        CHECK_CORRUPT(tide__col_decode_str(c2, sizeof(c2), 1, s, &arena));
    }
    /* Dictionary: index >= m; m > n; m = 0 with n > 0. */
    {
        uint8_t c[] = {7, 2, 5 << 1, 1, 1, 'a', 1, 0x02};

        CHECK_CORRUPT(tide__col_decode_str(c, sizeof(c), 2, s, &arena));
        c[7] = 0x00;
        CHECK(tide__col_decode_str(c, sizeof(c), 2, s, &arena));
        c[3] = 3;
        CHECK_CORRUPT(tide__col_decode_str(c, sizeof(c), 2, s, &arena));
        c[3] = 0;
        CHECK_CORRUPT(tide__col_decode_str(c, sizeof(c), 2, s, &arena));
    }
    /* A plain column of no values with a body; a dict of no values. */
    {
        const uint8_t c1[] = {6, 0, 1 << 1, 0};
        const uint8_t c2[] = {7, 0, 0};

        CHECK_CORRUPT(tide__col_decode_str(c1, sizeof(c1), 0, s, &arena));
        CHECK_CORRUPT(tide__col_decode_str(c2, sizeof(c2), 0, s, &arena));
    }
    cr_assert_eq(arena.len, 5, "only the good decode appended");
    tide__buf_fini(&arena);
    cr_assert_eq(tide_alloc_live_bytes(), 0);
}

/* ---- Allocation failures ------------------------------------------------ */

/* Run `call` with the 1st, 2nd, ... allocation failing until it succeeds.
 * Each failure must be -ENOMEM, leave `buf` as it was, and leak nothing. */
#define OOM_LOOP(buf, call)                                                    \
    do {                                                                       \
        size_t live_ = tide_alloc_live_bytes();                                \
        size_t len_ = (buf)->len;                                              \
        int fails_ = 0, rc_;                                                   \
                                                                               \
        for (unsigned long nth_ = 1;; nth_++) {                                \
            cr_assert_lt(nth_, 20, "%s never succeeded", #call);               \
            tide_alloc_fail_nth(nth_);                                         \
            rc_ = (call);                                                      \
            tide_alloc_fail_nth(0);                                            \
            if (rc_ == 0)                                                      \
                break;                                                         \
            cr_assert_eq(rc_, -ENOMEM, "%s, allocation %lu failing: %s",       \
                         #call, nth_, tide_strerror(rc_));                     \
            cr_assert_eq((buf)->len, len_, "%s changed the buffer", #call);    \
            cr_assert_geq(tide_alloc_live_bytes(), live_);                     \
            fails_++;                                                          \
        }                                                                      \
        cr_assert_geq(fails_, 1, "%s allocated nothing", #call);               \
    } while (0)

Test(column, alloc_failure_encode)
{
    struct sample s[MAX_SAMPLES];
    size_t k = make_samples(s);
    enum { N = 300 };
    static int64_t ts[N];
    static double fv[N];
    static uint8_t bv[N];
    static struct tide_str sv[N];
    size_t live;

    gen_ts(ts, N, TS_EXACT);
    gen_walk(fv, N, 100);
    gen_states(sv, N);
    for (uint32_t i = 0; i < N; i++)
        bv[i] = (uint8_t)(i & 1);
    free_samples(s, k);
    live = tide_alloc_live_bytes();
    cr_assert_eq(live, 0);
    /* Empty buffers: the output's first allocation fails too. */
    {
        struct tide_buf b[5] = {{0}};

        OOM_LOOP(&b[0], tide__col_encode_ts(ts, N, &b[0]));
        OOM_LOOP(&b[1], tide__col_encode_f64(fv, N, &b[1]));
        OOM_LOOP(&b[2], tide__col_encode_i64(ts, N, &b[2]));
        OOM_LOOP(&b[3], tide__col_encode_bool(bv, N, &b[3]));
        OOM_LOOP(&b[4], tide__col_encode_str(sv, N, &b[4]));
        for (int i = 0; i < 5; i++)
            tide__buf_fini(&b[i]);
    }
    cr_assert_eq(tide_alloc_live_bytes(), 0, "leaked %zu bytes",
                 tide_alloc_live_bytes());
    /* A full buffer: the failed append keeps what was there. */
    {
        struct tide_buf b = {0};

        CHECK(tide__buf_reserve(&b, 1));
        b.len = b.cap;
        memset(b.data, 0xab, b.len);
        OOM_LOOP(&b, tide__col_encode_f64(fv, N, &b));
        cr_assert_eq(b.data[0], 0xab);
        tide__buf_fini(&b);
    }
    cr_assert_eq(tide_alloc_live_bytes(), 0);
}

Test(column, alloc_failure_decode)
{
    struct sample s[MAX_SAMPLES];
    size_t k = make_samples(s);
    size_t tested = 0;

    for (size_t i = 0; i < k; i++) {
        struct tide_buf arena = {0};
        void *out = out_exact(s[i].n, s[i].kind->elem);
        const uint8_t *p = s[i].col.data;
        size_t len = s[i].col.len;
        uint32_t n = s[i].n;

        /* Only LZ4 columns, dictionaries and strings allocate. */
        if (!strstr(s[i].what, "lz4") && s[i].kind != &K_STR) {
            free(out);
            continue;
        }
        if (n == 0) {
            free(out);
            continue;
        }
        OOM_LOOP(&arena, s[i].kind->dec(p, len, n, out, &arena));
        tide__buf_fini(&arena);
        free(out);
        tested++;
    }
    cr_assert_geq(tested, 6);
    free_samples(s, k);
    cr_assert_eq(tide_alloc_live_bytes(), 0, "leaked %zu bytes",
                 tide_alloc_live_bytes());
}
