/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of the engine through its public API (engine/db.c, read.c): round
 * trips of every type before and after flush and reopen, chunk
 * boundaries, out-of-order and duplicate points, aggregates against a
 * brute-force reference, latest values, batch deduplication, bad input,
 * injected ENOSPC, and concurrent appenders.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "internal.h"
#include "io.h"
#include "testutil.h"
#include "wal.h"
#include "tide/engine.h"

#define CHECK(call)                                                            \
    do {                                                                       \
        int rc_ = (call);                                                      \
        cr_assert_eq(rc_, 0, "%s: %s", #call, tide_strerror(rc_));             \
    } while (0)

static char dir[1024];
static tide_db *db;

static void open_db(unsigned chunk)
{
    struct tide_db_options o;

    tide_db_options_init(&o);
    o.shards = 2;
    o.chunk_points_max = chunk;
    o.log = test_log;
    o.wal_file_bytes = 1u << 20;
    o.nospace_retry_ms = 20;
    CHECK(tide_db_open(dir, &o, &db));
}

static void reopen(unsigned chunk)
{
    tide_db_close(db);
    db = NULL;
    open_db(chunk);
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "%s", test_tmpdir());
    open_db(64);
}

static void teardown(void)
{
    tide_db_close(db);
    db = NULL;
    tide__io_inject(TIDE_IO_WRITE, 0, 0, 0);
    tide__wal_inject_space(0);
    test_rmrf(dir);
}

TestSuite(db, .init = setup, .fini = teardown, .timeout = 60);

/* Append `n` points of one series and wait for durability. */
static int append1(uint64_t id, uint8_t type, uint32_t n, const int64_t *ts,
                   const void *vals)
{
    struct tide_column c = {
        .series_id = id, .account_id = 7, .type = type, .n = n, .ts_ns = ts};
    struct tide_batch b = {.n_columns = 1, .columns = &c};

    c.v.f64 = vals;
    return tide_db_append_wait(db, &b);
}

/* Read every point of `id` in [from, to) into caller arrays; returns n.
 * Values are copied as 8-byte slots (strings: pointer into *keep). */
static uint32_t read_all(uint64_t id, int64_t from, int64_t to, int64_t *ts,
                         uint64_t *vals, struct tide_str *strs, uint32_t cap)
{
    tide_iter *it;
    struct tide_block b;
    uint32_t n = 0;
    int rc;

    CHECK(tide_db_read_open(db, &id, 1, from, to, &it));
    while ((rc = tide_iter_next(it, &b)) == 1) {
        cr_assert_eq(b.series_id, id);
        cr_assert_leq(n + b.n, cap);
        memcpy(ts + n, b.ts_ns, b.n * sizeof(int64_t));
        for (uint32_t i = 0; i < b.n; i++) {
            if (b.type == TIDE_TYPE_STR) {
                char *copy = malloc(b.v.str[i].len + 1);

                memcpy(copy, b.v.str[i].ptr, b.v.str[i].len);
                strs[n + i].ptr = copy;
                strs[n + i].len = b.v.str[i].len;
            } else if (b.type == TIDE_TYPE_BOOL) {
                vals[n + i] = b.v.b[i];
            } else {
                memcpy(&vals[n + i], &b.v.i64[i], 8);
            }
        }
        n += b.n;
    }
    cr_assert_eq(rc, 0, "iter: %s", tide_strerror(rc));
    tide_iter_close(it);
    return n;
}

/* Values that stress the f64 encoders. */
static void special_doubles(double *v, uint32_t n)
{
    static const double specials[] = {0.0,       -0.0,    NAN,      INFINITY,
                                      -INFINITY, DBL_MIN, 4.9e-324, DBL_MAX,
                                      -DBL_MAX,  1.5,     100.25,   -3.75};

    for (uint32_t i = 0; i < n; i++)
        v[i] = i < 12 ? specials[i] : (double)(i % 1000) / 100.0;
}

static void check_f64(uint64_t id, uint32_t n, const int64_t *want_ts,
                      const double *want)
{
    int64_t *got_ts = calloc(n + 1, 8);
    uint64_t *got = calloc(n + 1, 8);
    uint32_t m = read_all(id, INT64_MIN, INT64_MAX, got_ts, got, NULL, n + 1);

    cr_assert_eq(m, n, "series %llu: %u points, want %u",
                 (unsigned long long)id, m, n);
    for (uint32_t i = 0; i < n; i++) {
        cr_assert_eq(got_ts[i], want_ts[i], "ts[%u]", i);
        cr_assert(!memcmp(&got[i], &want[i], 8), "value[%u] bits differ", i);
    }
    free(got_ts);
    free(got);
}

Test(db, roundtrip_every_type_flush_and_reopen)
{
    enum { N = 300 };
    int64_t ts[N], i64[N];
    double f64[N];
    uint8_t b[N];
    struct tide_str s[N];
    char *long_str = malloc(TIDE_STR_BYTES_MAX);

    memset(long_str, 'x', TIDE_STR_BYTES_MAX);
    special_doubles(f64, N);
    for (uint32_t i = 0; i < N; i++) {
        ts[i] = 1700000000000000000 + (int64_t)i * 10000000000;
        i64[i] = i == 0 ? INT64_MIN : i == 1 ? INT64_MAX : (int64_t)i * -7;
        b[i] = (uint8_t)(i % 3 == 0);
        s[i].ptr = i == 5 ? long_str : i % 2 ? "moving" : "";
        s[i].len = i == 5 ? TIDE_STR_BYTES_MAX : i % 2 ? 6 : 0;
    }
    CHECK(append1(1, TIDE_TYPE_F64, N, ts, f64));
    CHECK(append1(2, TIDE_TYPE_I64, N, ts, i64));
    CHECK(append1(3, TIDE_TYPE_BOOL, N, ts, b));
    CHECK(append1(4, TIDE_TYPE_STR, N, ts, s));
    for (int round = 0; round < 3; round++) {
        int64_t got_ts[N];
        uint64_t got[N];
        struct tide_str got_s[N];

        check_f64(1, N, ts, f64);
        cr_assert_eq(read_all(2, INT64_MIN, INT64_MAX, got_ts, got, NULL, N),
                     N);
        for (uint32_t i = 0; i < N; i++)
            cr_assert_eq((int64_t)got[i], i64[i]);
        cr_assert_eq(read_all(3, INT64_MIN, INT64_MAX, got_ts, got, NULL, N),
                     N);
        for (uint32_t i = 0; i < N; i++)
            cr_assert_eq(got[i], b[i]);
        cr_assert_eq(read_all(4, INT64_MIN, INT64_MAX, got_ts, got, got_s, N),
                     N);
        for (uint32_t i = 0; i < N; i++) {
            cr_assert_eq(got_s[i].len, s[i].len, "str[%u] length", i);
            cr_assert(!memcmp(got_s[i].ptr, s[i].ptr, s[i].len));
            free((void *)got_s[i].ptr);
        }
        if (round == 0)
            CHECK(tide_db_flush(db)); /* now from segments */
        else
            reopen(64); /* from segments + replayed WAL */
    }
    free(long_str);
}

Test(db, chunk_boundaries)
{
    static const uint32_t sizes[] = {1, 2, 63, 64, 65, 128, 129};
    int64_t ts[200];
    double v[200];

    for (uint32_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        for (uint32_t i = 0; i < sizes[k]; i++) {
            ts[i] = 1000 + i * 1000;
            v[i] = (double)i * 0.5;
        }
        CHECK(append1(100 + k, TIDE_TYPE_F64, sizes[k], ts, v));
    }
    CHECK(tide_db_flush(db));
    reopen(64);
    for (uint32_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        for (uint32_t i = 0; i < sizes[k]; i++) {
            ts[i] = 1000 + i * 1000;
            v[i] = (double)i * 0.5;
        }
        check_f64(100 + k, sizes[k], ts, v);
    }
}

Test(db, out_of_order_and_duplicates_last_write_wins)
{
    int64_t ts1[] = {50, 10, 30, 10, 20};
    double v1[] = {5, 1, 3, 1.5, 2};
    int64_t ts2[] = {30, 60};
    double v2[] = {33, 6};
    int64_t want_ts[] = {10, 20, 30, 50, 60};
    double want_v[] = {1.5, 2, 33, 5, 6};
    double want_mid[] = {1.5, 2, 3, 5};

    CHECK(append1(9, TIDE_TYPE_F64, 5, ts1, v1));
    check_f64(9, 4, want_ts, want_mid);
    CHECK(tide_db_flush(db));
    /* A late rewrite of ts 30 in the head beats the segment. */
    CHECK(append1(9, TIDE_TYPE_F64, 2, ts2, v2));
    check_f64(9, 5, want_ts, want_v);
    reopen(64);
    check_f64(9, 5, want_ts, want_v);
    CHECK(tide_db_flush(db));
    check_f64(9, 5, want_ts, want_v);
}

Test(db, range_bounds_are_half_open)
{
    int64_t ts[] = {100, 200, 300, 400};
    double v[] = {1, 2, 3, 4};
    int64_t got_ts[4];
    uint64_t got[4];

    CHECK(append1(5, TIDE_TYPE_F64, 4, ts, v));
    cr_assert_eq(read_all(5, 200, 400, got_ts, got, NULL, 4), 2);
    cr_assert_eq(got_ts[0], 200);
    cr_assert_eq(got_ts[1], 300);
    CHECK(tide_db_flush(db));
    cr_assert_eq(read_all(5, 200, 400, got_ts, got, NULL, 4), 2);
    cr_assert_eq(read_all(5, 401, 500, got_ts, got, NULL, 4), 0);
}

/* Brute-force bucket of points [a, b). */
static void reference_bucket(const double *v, uint32_t a, uint32_t b,
                             struct tide_bucket *out)
{
    memset(out, 0, sizeof(*out));
    out->min = INFINITY;
    out->max = -INFINITY;
    for (uint32_t i = a; i < b; i++) {
        out->count++;
        out->sum += v[i];
        out->min = fmin(out->min, v[i]);
        out->max = fmax(out->max, v[i]);
    }
    out->first = v[a];
    out->last = v[b - 1];
}

Test(db, aggregates_match_reference_and_use_headers)
{
    enum { N = 1000 };
    int64_t ts[N];
    double v[N];
    struct tide_agg_series *res;
    struct tide_agg_stats st;
    uint64_t id = 77;
    int64_t bucket = 64 * 1000; /* one chunk of 64 points per bucket */

    for (uint32_t i = 0; i < N; i++) {
        ts[i] = (int64_t)i * 1000;
        v[i] = (double)((i * 37) % 101) / 4.0;
    }
    CHECK(append1(id, TIDE_TYPE_F64, N, ts, v));
    for (int round = 0; round < 2; round++) {
        CHECK(tide_db_aggregate(db, &id, 1, 0, N * 1000, bucket, 0, &res, &st));
        cr_assert_eq(res[0].n_buckets, (N + 63) / 64);
        for (uint32_t k = 0; k < res[0].n_buckets; k++) {
            struct tide_bucket want;
            uint32_t a = k * 64, b = a + 64 < N ? a + 64 : N;

            reference_bucket(v, a, b, &want);
            cr_assert_eq(res[0].buckets[k].start_ns, (int64_t)k * bucket);
            cr_assert_eq(res[0].buckets[k].count, want.count, "bucket %u", k);
            cr_assert_float_eq(res[0].buckets[k].sum, want.sum, 1e-9);
            cr_assert_eq(res[0].buckets[k].min, want.min);
            cr_assert_eq(res[0].buckets[k].max, want.max);
            cr_assert_eq(res[0].buckets[k].first, want.first);
            cr_assert_eq(res[0].buckets[k].last, want.last);
        }
        if (round == 1)
            cr_assert_geq(st.chunks_from_header, 15,
                          "only %llu chunks answered from headers",
                          (unsigned long long)st.chunks_from_header);
        tide_agg_free(res, 1);
        CHECK(tide_db_flush(db));
    }
    /* A window that cuts chunks: decoded, still exact. */
    CHECK(tide_db_aggregate(db, &id, 1, 10500, 20500, 0, 0, &res, &st));
    {
        struct tide_bucket want;

        reference_bucket(v, 11, 21, &want);
        cr_assert_eq(res[0].n_buckets, 1);
        cr_assert_eq(res[0].buckets[0].count, want.count);
        cr_assert_float_eq(res[0].buckets[0].sum, want.sum, 1e-9);
        cr_assert_eq(res[0].buckets[0].first, want.first);
        cr_assert_eq(res[0].buckets[0].last, want.last);
    }
    tide_agg_free(res, 1);
}

/* Buckets start at origin + k * bucket_ns, not at from: the first one is
 * partial (only points >= from), an origin shifts the grid by its value
 * modulo the bucket, and negative times floor to the bucket below. */
Test(db, aggregate_buckets_align_to_origin)
{
    int64_t ts[] = {-2500, -1000, -1, 0, 999, 1000, 1500, 2500, 3999};
    double v[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    struct tide_agg_series *res;
    uint64_t id = 9;

    CHECK(append1(id, TIDE_TYPE_F64, 9, ts, v));
    /* Epoch-aligned: buckets start at multiples of 1000; -2500 is before
     * from. */
    CHECK(tide_db_aggregate(db, &id, 1, -1500, 3000, 1000, 0, &res, NULL));
    cr_assert_eq(res[0].n_buckets, 4);
    cr_assert_eq(res[0].buckets[0].start_ns, -1000); /* floors, not -1500 */
    cr_assert_eq(res[0].buckets[0].count, 2);        /* -1000, -1 */
    cr_assert_eq(res[0].buckets[0].sum, 5);
    cr_assert_eq(res[0].buckets[1].start_ns, 0);
    cr_assert_eq(res[0].buckets[1].count, 2); /* 0, 999 */
    cr_assert_eq(res[0].buckets[2].start_ns, 1000);
    cr_assert_eq(res[0].buckets[2].count, 2); /* 1000, 1500 */
    cr_assert_eq(res[0].buckets[3].start_ns, 2000);
    cr_assert_eq(res[0].buckets[3].count, 1); /* 2500; 3999 is past to */
    tide_agg_free(res, 1);
    /* A partial first bucket: from inside [0, 1000) keeps its start 0. */
    CHECK(tide_db_aggregate(db, &id, 1, 500, 3000, 1000, 0, &res, NULL));
    cr_assert_eq(res[0].n_buckets, 3);
    cr_assert_eq(res[0].buckets[0].start_ns, 0);
    cr_assert_eq(res[0].buckets[0].count, 1); /* 999 only */
    cr_assert_eq(res[0].buckets[0].first, 5);
    tide_agg_free(res, 1);
    /* Origin 250 (same as 1250 or -750): buckets at 250 + k * 1000. */
    for (int64_t origin = -750; origin <= 1250; origin += 1000) {
        CHECK(tide_db_aggregate(db, &id, 1, -3000, 4000, 1000, origin, &res,
                                NULL));
        cr_assert_eq(res[0].n_buckets, 7, "origin %lld", (long long)origin);
        cr_assert_eq(res[0].buckets[0].start_ns, -2750); /* -2500 */
        cr_assert_eq(res[0].buckets[1].start_ns, -1750); /* -1000 */
        cr_assert_eq(res[0].buckets[2].start_ns, -750);  /* -1, 0 */
        cr_assert_eq(res[0].buckets[2].count, 2);
        cr_assert_eq(res[0].buckets[3].start_ns, 250); /* 999, 1000 */
        cr_assert_eq(res[0].buckets[3].count, 2);
        cr_assert_eq(res[0].buckets[4].start_ns, 1250); /* 1500 */
        cr_assert_eq(res[0].buckets[6].start_ns, 3250); /* 3999 */
        cr_assert_eq(res[0].buckets[6].count, 1);
        tide_agg_free(res, 1);
    }
    /* The same after a flush: chunks answered from headers align too. */
    CHECK(tide_db_flush(db));
    CHECK(tide_db_aggregate(db, &id, 1, -1500, 3000, 1000, 0, &res, NULL));
    cr_assert_eq(res[0].n_buckets, 4);
    cr_assert_eq(res[0].buckets[0].start_ns, -1000);
    cr_assert_eq(res[0].buckets[0].count, 2);
    cr_assert_eq(res[0].buckets[3].count, 1);
    tide_agg_free(res, 1);
    /* bucket_ns 0: one bucket starting at from whatever the origin. */
    CHECK(tide_db_aggregate(db, &id, 1, -1500, 3000, 0, 77, &res, NULL));
    cr_assert_eq(res[0].n_buckets, 1);
    cr_assert_eq(res[0].buckets[0].start_ns, -1500);
    cr_assert_eq(res[0].buckets[0].count, 7);
    tide_agg_free(res, 1);
}

Test(db, aggregate_counts_duplicates_across_sources_once)
{
    int64_t ts[] = {0, 1000, 2000};
    double v[] = {1, 2, 3};
    double v2[] = {10};
    struct tide_agg_series *res;
    uint64_t id = 3;

    CHECK(append1(id, TIDE_TYPE_F64, 3, ts, v));
    CHECK(tide_db_flush(db));
    CHECK(append1(id, TIDE_TYPE_F64, 1, ts + 1, v2)); /* rewrite ts 1000 */
    CHECK(tide_db_aggregate(db, &id, 1, 0, 3000, 0, 0, &res, NULL));
    cr_assert_eq(res[0].buckets[0].count, 3);
    cr_assert_eq(res[0].buckets[0].sum, 14);
    cr_assert_eq(res[0].buckets[0].max, 10);
    tide_agg_free(res, 1);
}

/* Many series in one call, ids ascending, descending and repeated, over
 * three segments and the head: the later segment rewrites an old range of
 * the even series (chunks that overlap, out of time order across
 * segments), so those go point by point while the odd ones come from
 * headers. Each result must equal a one-series call and the model. */
Test(db, aggregate_many_series_any_order)
{
    enum { S = 12, N = 640, R = 100 };
    static int64_t ts[N];
    static double v[S][N], w[R];
    uint64_t ids[3 * S];
    struct tide_agg_series *res, *one;
    struct tide_agg_stats st;

    for (uint32_t i = 0; i < N; i++)
        ts[i] = (int64_t)i * 1000;
    for (uint32_t s = 0; s < S; s++)
        for (uint32_t i = 0; i < N; i++)
            v[s][i] = (double)((i * 37 + s * 11) % 1001) / 100.0;
    for (uint32_t s = 0; s < S; s++)
        CHECK(append1(s + 1, TIDE_TYPE_F64, N / 2, ts, v[s]));
    CHECK(tide_db_flush(db));
    for (uint32_t s = 0; s < S; s++)
        CHECK(append1(s + 1, TIDE_TYPE_F64, N / 2, ts + N / 2, v[s] + N / 2));
    CHECK(tide_db_flush(db));
    for (uint32_t s = 0; s < S; s += 2) {
        for (uint32_t i = 0; i < R; i++)
            w[i] = v[s][200 + i] = -(double)i;
        CHECK(append1(s + 1, TIDE_TYPE_F64, R, ts + 200, w));
    }
    CHECK(tide_db_flush(db));
    for (uint32_t s = 1; s < S; s += 2) { /* and the head */
        v[s][N - 1] = 1e6;
        CHECK(append1(s + 1, TIDE_TYPE_F64, 1, ts + N - 1, &v[s][N - 1]));
    }
    for (uint32_t k = 0; k < S; k++) {
        ids[k] = k + 1;
        ids[S + k] = S - k;
        ids[2 * S + k] = (k * 5) % S + 1;
    }
    for (int b = 0; b < 2; b++) {
        int64_t bucket = b ? 64 * 1000 : 0;

        CHECK(tide_db_aggregate(db, ids, 3 * S, 0, N * 1000, bucket, 0, &res,
                                &st));
        cr_assert_gt(st.chunks_from_header, 0);
        for (uint32_t k = 0; k < 3 * S; k++) {
            uint32_t s = (uint32_t)ids[k] - 1;
            uint32_t per = b ? 64 : N;

            CHECK(tide_db_aggregate(db, &ids[k], 1, 0, N * 1000, bucket, 0,
                                    &one, NULL));
            cr_assert_eq(res[k].series_id, ids[k]);
            cr_assert_eq(res[k].type, TIDE_TYPE_F64);
            cr_assert_eq(res[k].n_buckets, (N + per - 1) / per);
            cr_assert_eq(one[0].n_buckets, res[k].n_buckets);
            for (uint32_t j = 0; j < res[k].n_buckets; j++) {
                const struct tide_bucket *got = &res[k].buckets[j];
                struct tide_bucket want;
                uint32_t lo = j * per, hi = lo + per < N ? lo + per : N;

                reference_bucket(v[s], lo, hi, &want);
                cr_assert_eq(got->count, want.count, "id %u bucket %u", s + 1,
                             j);
                cr_assert_float_eq(got->sum, want.sum, 1e-6);
                cr_assert_eq(got->min, want.min);
                cr_assert_eq(got->max, want.max);
                cr_assert_eq(got->first, want.first);
                cr_assert_eq(got->last, want.last);
                cr_assert_eq(got->first_ts, ts[lo]);
                cr_assert_eq(got->last_ts, ts[hi - 1]);
                cr_assert(!memcmp(got, &one[0].buckets[j], sizeof(*got)));
            }
            tide_agg_free(one, 1);
        }
        tide_agg_free(res, 3 * S);
    }
}

/* More series than one read batch of an aggregate holds (512 chunks):
 * every chunk is cut by the range, so each is decoded, and every series
 * must still get its own points. */
Test(db, aggregate_spans_read_batches)
{
    enum { S = 1100, N = 10 };
    static uint64_t ids[S];
    int64_t ts[N];
    double v[N];
    struct tide_agg_series *res;
    struct tide_agg_stats st;

    for (uint32_t i = 0; i < N; i++)
        ts[i] = (int64_t)i * 1000;
    for (uint32_t s = 0; s < S; s++) {
        for (uint32_t i = 0; i < N; i++)
            v[i] = (double)(s * N + i);
        CHECK(append1(s + 1, TIDE_TYPE_F64, N, ts, v));
        ids[s] = s + 1;
    }
    CHECK(tide_db_flush(db));
    CHECK(tide_db_aggregate(db, ids, S, 2000, 7000, 0, 0, &res, &st));
    cr_assert_eq(st.chunks_decoded, S);
    for (uint32_t s = 0; s < S; s++) {
        cr_assert_eq(res[s].n_buckets, 1);
        cr_assert_eq(res[s].buckets[0].count, 5);
        cr_assert_eq(res[s].buckets[0].first, (double)(s * N + 2));
        cr_assert_eq(res[s].buckets[0].last, (double)(s * N + 6));
        cr_assert_eq(res[s].buckets[0].sum, (double)(5 * (s * N + 4)));
    }
    tide_agg_free(res, S);
}

/* The iterator reads chunks ahead for later series; a flush between two
 * calls moves head points into a new segment, and no point may be lost or
 * repeated because of it. */
Test(db, iterator_sees_flush_between_series)
{
    enum { S = 40, N = 100 };
    uint64_t ids[S];
    int64_t ts[N];
    double v[N];
    uint32_t got[S] = {0};
    struct tide_block b;
    tide_iter *it;
    int rc, flushed = 0;

    for (uint32_t i = 0; i < N; i++) {
        ts[i] = (int64_t)i * 1000;
        v[i] = i;
    }
    for (uint32_t s = 0; s < S; s++) {
        ids[s] = s + 1;
        /* Half of each series on disk, half in the head. */
        CHECK(append1(s + 1, TIDE_TYPE_F64, N / 2, ts, v));
    }
    CHECK(tide_db_flush(db));
    for (uint32_t s = 0; s < S; s++)
        CHECK(append1(s + 1, TIDE_TYPE_F64, N / 2, ts + N / 2, v + N / 2));
    CHECK(tide_db_read_open(db, ids, S, INT64_MIN, INT64_MAX, &it));
    while ((rc = tide_iter_next(it, &b)) == 1) {
        cr_assert_geq(b.series_id, 1);
        cr_assert_leq(b.series_id, S);
        for (uint32_t i = 0; i < b.n; i++) {
            uint32_t k = got[b.series_id - 1] + i;

            cr_assert_eq(b.ts_ns[i], ts[k]);
            cr_assert_eq(b.v.f64[i], v[k]);
        }
        got[b.series_id - 1] += b.n;
        if (!flushed++)
            CHECK(tide_db_flush(db));
    }
    cr_assert_eq(rc, 0, "iter: %s", tide_strerror(rc));
    tide_iter_close(it);
    for (uint32_t s = 0; s < S; s++)
        cr_assert_eq(got[s], N, "series %u: %u points", s + 1, got[s]);
}

/* A flush lays chunks out in series-id order, the footer's order, so a
 * read of ascending ids walks each file forward. */
Test(db, flush_writes_chunks_in_id_order)
{
    int64_t ts[3] = {1000, 2000, 3000};
    double v[3] = {1, 2, 3};

    /* Ids whose hash order differs from their numeric order. */
    for (uint64_t id = 301; id > 7; id -= 7)
        CHECK(append1(id, TIDE_TYPE_F64, 3, ts, v));
    CHECK(tide_db_flush(db));
    cr_assert_gt(db->seg_cur->n, 0);
    for (uint32_t k = 0; k < db->seg_cur->n; k++) {
        const struct seg *seg = db->seg_cur->segs[k];

        for (uint32_t c = 1; c < seg->n_chunks; c++)
            cr_assert_gt(seg->chunks[c].offset, seg->chunks[c - 1].offset,
                         "segment %u chunk %u", k, c);
    }
}

/* A damaged chunk in the middle of a coalesced multi-series read fails
 * the read with TIDE_ECORRUPT (never wrong data); series whose chunks are
 * intact still read on their own. */
Test(db, damaged_chunk_fails_batched_reads)
{
    enum { S = 50, N = 100 };
    uint64_t ids[S], bad = 0;
    int64_t ts[N];
    double v[N];
    struct tide_agg_series *res;
    struct tide_block b;
    tide_iter *it;
    int rc, fd;
    uint8_t byte;

    for (uint32_t i = 0; i < N; i++) {
        ts[i] = (int64_t)i * 1000;
        v[i] = (double)i / 4;
    }
    for (uint32_t s = 0; s < S; s++) {
        ids[s] = s + 1;
        CHECK(append1(s + 1, TIDE_TYPE_F64, N, ts, v));
    }
    CHECK(tide_db_flush(db));
    cr_assert_gt(db->seg_cur->n, 0);
    {
        const struct seg *seg = db->seg_cur->segs[0];
        uint32_t c = seg->n_chunks / 2;
        const struct chunk_ent *e;

        /* The series' first chunk: it starts before the aggregate's range
         * below, so it is decoded, never answered from its header. */
        while (c > 0 &&
               seg->chunks[c - 1].series_id == seg->chunks[c].series_id)
            c--;
        e = &seg->chunks[c];

        bad = e->series_id;
        fd = open(seg->path, O_RDWR);
        cr_assert_geq(fd, 0);
        cr_assert_eq(pread(fd, &byte, 1, (off_t)e->offset + 3), 1);
        byte ^= 0x10;
        cr_assert_eq(pwrite(fd, &byte, 1, (off_t)e->offset + 3), 1);
        close(fd);
    }
    CHECK(tide_db_read_open(db, ids, S, INT64_MIN, INT64_MAX, &it));
    while ((rc = tide_iter_next(it, &b)) == 1)
        cr_assert_neq(b.series_id, bad, "damaged series returned data");
    cr_assert_eq(rc, TIDE_ECORRUPT, "iter: %s", tide_strerror(rc));
    tide_iter_close(it);
    cr_assert_eq(tide_db_aggregate(db, ids, S, 500, 99500, 0, 0, &res, NULL),
                 TIDE_ECORRUPT);
    for (uint32_t s = 0; s < S; s++) {
        int64_t got_ts[N + 1];
        uint64_t got[N + 1];

        if (ids[s] != bad)
            cr_assert_eq(read_all(ids[s], INT64_MIN, INT64_MAX, got_ts, got,
                                  NULL, N + 1),
                         N);
    }
}

Test(db, latest_point_per_series)
{
    int64_t ts[] = {100, 300, 200};
    double v[] = {1, 3, 2};
    int64_t i64 = 42;
    struct tide_str s = {"parked", 6};
    uint64_t ids[] = {1, 2, 3, 999};
    struct tide_point *p;

    CHECK(append1(1, TIDE_TYPE_F64, 3, ts, v));
    CHECK(append1(2, TIDE_TYPE_I64, 1, ts, &i64));
    CHECK(append1(3, TIDE_TYPE_STR, 1, ts, &s));
    for (int round = 0; round < 2; round++) {
        CHECK(tide_db_latest(db, ids, 4, &p));
        cr_assert(p[0].found);
        cr_assert_eq(p[0].ts_ns, 300);
        cr_assert_eq(p[0].v.f64, 3);
        cr_assert_eq(p[1].v.i64, 42);
        cr_assert_eq(p[2].v.str.len, 6);
        cr_assert(!memcmp(p[2].v.str.ptr, "parked", 6));
        cr_assert(!p[3].found);
        tide_latest_free(p, 4);
        CHECK(tide_db_flush(db));
    }
}

Test(db, duplicate_batch_applied_once_across_restart)
{
    int64_t ts[] = {1, 2};
    double v[] = {1, 2};
    struct tide_column c = {.series_id = 11,
                            .type = TIDE_TYPE_F64,
                            .n = 2,
                            .ts_ns = ts,
                            .v.f64 = v};
    struct tide_batch b = {
        .producer_id = 0xabc, .sequence = 5, .n_columns = 1, .columns = &c};
    struct tide_db_stats st;

    CHECK(tide_db_append_wait(db, &b));
    cr_assert_eq(tide_db_append_wait(db, &b), TIDE_EDUPLICATE);
    reopen(64);
    cr_assert_eq(tide_db_append_wait(db, &b), TIDE_EDUPLICATE);
    CHECK(tide_db_flush(db)); /* the WAL files with the batch are gone */
    reopen(64);
    cr_assert_eq(tide_db_append_wait(db, &b), TIDE_EDUPLICATE);
    b.sequence = 4; /* older than the last applied: also a duplicate */
    cr_assert_eq(tide_db_append_wait(db, &b), TIDE_EDUPLICATE);
    b.sequence = 6;
    CHECK(tide_db_append_wait(db, &b));
    tide_db_stats(db, &st);
    cr_assert_eq(st.batches_duplicate, 2, "seq 5 and 4 since the reopen");
}

Test(db, bad_input_is_rejected)
{
    int64_t ts[] = {1};
    double v[] = {1};
    struct tide_str big = {"x", TIDE_STR_BYTES_MAX + 1};
    struct tide_column c = {
        .series_id = 0, .type = TIDE_TYPE_F64, .n = 1, .ts_ns = ts, .v.f64 = v};
    struct tide_batch b = {.n_columns = 1, .columns = &c};
    tide_db *other;

    cr_assert_eq(tide_db_append_wait(db, &b), TIDE_EINVAL);
    c.series_id = 1;
    c.type = 9;
    cr_assert_eq(tide_db_append_wait(db, &b), TIDE_EINVAL);
    c.type = TIDE_TYPE_STR;
    c.v.str = &big;
    cr_assert_eq(tide_db_append_wait(db, &b), TIDE_EINVAL);
    c.type = TIDE_TYPE_F64;
    c.v.f64 = NULL;
    cr_assert_eq(tide_db_append_wait(db, &b), TIDE_EINVAL);
    cr_assert_eq(tide_db_open(dir, NULL, &other), TIDE_ELOCKED);
}

static int append_seq(uint64_t producer, uint64_t seq, uint64_t id, int64_t ts,
                      double v);

/* ENOSPC is not sticky: the failed batch is answered -ENOSPC and not
 * applied, and writes resume on their own once the disk takes them again,
 * without a reopen. */
Test(db, enospc_fails_writes_then_they_resume)
{
    int64_t ts[] = {1, 2, 3, 200};
    double v[] = {1, 2, 3, 4};
    int rc;

    CHECK(append1(21, TIDE_TYPE_F64, 3, ts, v));
    tide__io_inject(TIDE_IO_WRITE, 1, ENOSPC, 0);
    rc = append_seq(0, 0, 21, 100, 9.0);
    cr_assert_eq(rc, -ENOSPC, "append under ENOSPC: %s", tide_strerror(rc));
    /* The injection fired once: space is back. Bounded wait: the engine
     * retries every nospace_retry_ms. */
    for (int i = 0; i < 1000; i++) {
        rc = append_seq(0, 0, 21, 200, 4.0);
        if (rc != -ENOSPC)
            break;
        usleep(10000);
    }
    cr_assert_eq(rc, 0, "writes resume: %s", tide_strerror(rc));
    check_f64(21, 4, ts, v);
    reopen(64);
    check_f64(21, 4, ts, v);
}

struct writer_arg {
    uint64_t id;
    uint32_t batches;
};

static void *concurrent_writer(void *p)
{
    struct writer_arg *a = p;

    for (uint32_t k = 0; k < a->batches; k++) {
        int64_t ts[10];
        double v[10];

        for (int i = 0; i < 10; i++) {
            ts[i] = (int64_t)(k * 10 + i);
            v[i] = (double)(k * 10 + i);
        }
        if (append1(a->id, TIDE_TYPE_F64, 10, ts, v))
            return (void *)1;
    }
    return NULL;
}

Test(db, concurrent_appenders)
{
    pthread_t th[4];
    struct writer_arg args[4];
    struct tide_db_stats st;

    for (int i = 0; i < 4; i++) {
        args[i] = (struct writer_arg){.id = 1000 + i, .batches = 200};
        pthread_create(&th[i], NULL, concurrent_writer, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        void *ret;

        pthread_join(th[i], &ret);
        cr_assert_null(ret);
    }
    tide_db_stats(db, &st);
    cr_assert_eq(st.points_appended, 4 * 200 * 10);
    cr_assert_eq(st.shards, 2);
    for (int i = 0; i < 4; i++) {
        int64_t ts[2000];
        uint64_t v[2000];

        cr_assert_eq(read_all(1000 + i, 0, INT64_MAX, ts, v, NULL, 2000), 2000);
    }
}

Test(db, head_budget_forces_flush)
{
    struct tide_db_options o;
    struct tide_db_stats st;
    enum { N = 20000 };
    static int64_t ts[N];
    static double v[N];

    tide_db_close(db);
    tide_db_options_init(&o);
    o.shards = 1;
    o.head_bytes_max = 1u << 20;
    o.wal_file_bytes = 1u << 20;
    o.log = test_log;
    CHECK(tide_db_open(dir, &o, &db));
    for (int k = 0; k < 20; k++) {
        for (int i = 0; i < N; i++) {
            ts[i] = (int64_t)k * N + i;
            v[i] = i;
        }
        CHECK(append1(1, TIDE_TYPE_F64, N, ts, v));
    }
    CHECK(tide_db_flush(db));
    tide_db_stats(db, &st);
    cr_assert_geq(st.flushes, 3, "only %llu flushes",
                  (unsigned long long)st.flushes);
    cr_assert_eq(st.segment_points, 20 * N);
    cr_assert_eq(st.head_points, 0);
}

/* ---- Readers never block the writer ------------------------------------- */

struct query_load {
    atomic_int stop;
    atomic_uint_fast64_t acked; /* points of series 1 acknowledged */
    uint64_t queries;
    int err; /* 0, or the first wrong result or error, as a line number */
};

/* Loop reads, aggregates and latest values of series 1, whose points are
 * ts = 0, 1, 2 ... appended in order: every answer must be a gap-free
 * prefix at least as long as what was acknowledged before it began. */
static void *query_main(void *p)
{
    struct query_load *q = p;
    enum { CAP = 1 << 16 };
    int64_t *ts = malloc(CAP * sizeof(*ts));
    uint64_t id = 1;

    while (!atomic_load(&q->stop) && !q->err) {
        uint64_t before = atomic_load(&q->acked), n = 0;
        struct tide_agg_series *res;
        struct tide_point *pt;
        struct tide_block b;
        tide_iter *it;
        int rc;

        if (tide_db_read_open(db, &id, 1, 0, INT64_MAX, &it)) {
            q->err = __LINE__;
            break;
        }
        while ((rc = tide_iter_next(it, &b)) == 1)
            for (uint32_t i = 0; i < b.n; i++, n++)
                if (b.ts_ns[i] != (int64_t)n || b.v.f64[i] != (double)n)
                    q->err = __LINE__;
        tide_iter_close(it);
        if (rc || n < before)
            q->err = __LINE__;
        if (tide_db_aggregate(db, &id, 1, 0, INT64_MAX, 0, 0, &res, NULL)) {
            q->err = __LINE__;
            break;
        }
        if (res[0].n_buckets != (before ? 1u : 0u) && res[0].n_buckets != 1)
            q->err = __LINE__;
        if (res[0].n_buckets &&
            (res[0].buckets[0].count < before ||
             res[0].buckets[0].first_ts != 0 ||
             res[0].buckets[0].last_ts + 1 != (int64_t)res[0].buckets[0].count))
            q->err = __LINE__;
        tide_agg_free(res, 1);
        if (tide_db_latest(db, &id, 1, &pt)) {
            q->err = __LINE__;
            break;
        }
        if (before && (!pt[0].found || pt[0].ts_ns + 1 < (int64_t)before))
            q->err = __LINE__;
        tide_latest_free(pt, 1);
        q->queries += 3;
    }
    free(ts);
    return NULL;
}

/* Three threads query continuously while batches are appended and
 * flushed: every answer is complete and exact, nothing deadlocks, and
 * once the readers are gone every segment list they held is freed. */
Test(db, readers_during_ingest_and_flushes)
{
    enum { BATCHES = 300, PER = 100, READERS = 3 };
    struct query_load q = {0};
    pthread_t th[READERS];
    struct tide_db_stats st;
    size_t base;
    int64_t ts[PER];
    double v[PER];

    tide_db_close(db);
    db = NULL;
    base = tide_alloc_live_bytes();
    open_db(64);
    for (int i = 0; i < READERS; i++)
        pthread_create(&th[i], NULL, query_main, &q);
    for (uint32_t k = 0; k < BATCHES; k++) {
        for (uint32_t i = 0; i < PER; i++) {
            ts[i] = (int64_t)(k * PER + i);
            v[i] = (double)ts[i];
        }
        CHECK(append1(1, TIDE_TYPE_F64, PER, ts, v));
        /* Other series keep the second shard and its flushes busy. */
        CHECK(append1(2 + k % 5, TIDE_TYPE_F64, PER, ts, v));
        atomic_store(&q.acked, (uint64_t)(k + 1) * PER);
        if (k % 20 == 19)
            CHECK(tide_db_flush(db));
    }
    atomic_store(&q.stop, 1);
    for (int i = 0; i < READERS; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(q.err, 0, "wrong answer at test_db.c:%d", q.err);
    cr_assert_gt(q.queries, 0);
    tide_db_stats(db, &st);
    cr_assert_geq(st.flushes, BATCHES / 20);
    {
        static int64_t got_ts[BATCHES * PER + 1];
        static uint64_t got[BATCHES * PER + 1];

        cr_assert_eq(
            read_all(1, 0, INT64_MAX, got_ts, got, NULL, BATCHES * PER + 1),
            BATCHES * PER);
    }
    /* Only the db's own reference to the current list is left. */
    cr_assert_eq(atomic_load(&db->seg_cur->refs), 1);
    tide_db_close(db);
    db = NULL;
    cr_assert_eq(tide_alloc_live_bytes(), base, "%zu bytes left",
                 tide_alloc_live_bytes() - base);
}

/* A segment dropped from the published list (as a compaction will) stays
 * open while a reader holds a list that has it, and is closed when the
 * last such reader lets go. */
Test(db, held_list_keeps_dropped_segment)
{
    int64_t ts[3] = {1, 2, 3};
    double v[3] = {1, 2, 3};
    struct seglist *held, *next;
    struct seg *victim;
    int fd;

    CHECK(append1(5, TIDE_TYPE_F64, 3, ts, v));
    CHECK(tide_db_flush(db));
    held = tide__seglist_acquire(db);
    cr_assert_geq(held->n, 1);
    victim = held->segs[0];
    fd = victim->fd;
    pthread_mutex_lock(&db->man_mu);
    CHECK(
        tide__seglist_edit(db, db->seg_cur, &victim, 1, NULL, 0, NULL, &next));
    tide__seglist_publish(db, next);
    pthread_mutex_unlock(&db->man_mu);
    cr_assert_eq(db->seg_cur->n, held->n - 1);
    cr_assert_eq(db->seg_cur->gen, held->gen + 1);
    cr_assert_neq(fcntl(fd, F_GETFD), -1, "closed while a reader holds it");
    tide__seglist_release(held);
    cr_assert_eq(fcntl(fd, F_GETFD), -1, "still open after the last reader");
    cr_assert_eq(errno, EBADF);
}

/* ---- Faults during a flush's MANIFEST update ---------------------------- */

/* Fail each write, each fdatasync, the MANIFEST rename and its directory
 * fsync of a flush in turn. Each time the flush reports TIDE_EIO, the db
 * refuses writes, and after close and reopen it opens and holds every
 * acknowledged point, exactly. A failed directory fsync after the rename
 * used to unlink the segments the new MANIFEST lists, so the reopen
 * failed. */
Test(db, flush_faults_keep_acknowledged_points, .timeout = 120)
{
    static const struct {
        int io_op; /* a tide_io_op, or 0 */
        int man_op;
        const char *name;
    } ops[] = {
        {TIDE_IO_WRITE, 0, "write"},
        {TIDE_IO_FDATASYNC, 0, "fdatasync"},
        {0, TIDE_MANIFEST_RENAME, "rename"},
        {0, TIDE_MANIFEST_DIRSYNC, "directory fsync"},
    };
    enum { PER = 10, MAX = 4096 };
    static int64_t want_ts[MAX];
    static double want[MAX];
    uint32_t total = 0;

    for (uint32_t i = 0; i < MAX; i++) {
        want_ts[i] = i;
        want[i] = (double)i / 2;
    }
    for (unsigned k = 0; k < sizeof(ops) / sizeof(ops[0]); k++) {
        unsigned long nth;

        for (nth = 1; nth < 100; nth++) {
            int rc;

            cr_assert_leq(total + PER, MAX);
            CHECK(
                append1(1, TIDE_TYPE_F64, PER, want_ts + total, want + total));
            CHECK(
                append1(2, TIDE_TYPE_F64, PER, want_ts + total, want + total));
            total += PER;
            if (ops[k].io_op)
                tide__io_inject(ops[k].io_op, nth, EIO, 0);
            else
                tide__manifest_inject(ops[k].man_op, nth, EIO);
            rc = tide_db_flush(db);
            if (ops[k].io_op)
                tide__io_inject(ops[k].io_op, 0, 0, 0);
            else
                tide__manifest_inject(ops[k].man_op, 0, 0);
            if (rc == 0)
                break; /* this flush has fewer than nth such steps */
            cr_assert_eq(rc, TIDE_EIO, "%s %lu: %s", ops[k].name, nth,
                         tide_strerror(rc));
            cr_assert_eq(append1(3, TIDE_TYPE_F64, 1, want_ts, want), TIDE_EIO,
                         "%s %lu: the error state is sticky", ops[k].name, nth);
            reopen(64);
            check_f64(1, total, want_ts, want);
            check_f64(2, total, want_ts, want);
        }
        cr_assert_gt(nth, 1, "no %s failed", ops[k].name);
        cr_assert_lt(nth, 100);
    }
    reopen(64);
    check_f64(1, total, want_ts, want);
    check_f64(2, total, want_ts, want);
}

/* A fleet-wide MIN/MAX merges the devices' buckets; a device whose bucket
 * holds only NaN must not hide the others' numbers, in either order. (The
 * server's own copy of the merge kept NaN when it came first.) */
Test(db, bucket_merge_lets_nan_give_way)
{
    const struct tide_bucket nan_only = {.count = 1,
                                         .sum = NAN,
                                         .min = NAN,
                                         .max = NAN,
                                         .first = NAN,
                                         .last = NAN,
                                         .first_ts = 10,
                                         .last_ts = 10};
    const struct tide_bucket nums = {.count = 2,
                                     .sum = 3,
                                     .min = 1,
                                     .max = 2,
                                     .first = 1,
                                     .last = 2,
                                     .first_ts = 5,
                                     .last_ts = 20};
    struct tide_bucket a = {0}, b = {0};

    tide_bucket_merge(&a, &nan_only);
    tide_bucket_merge(&a, &nums);
    tide_bucket_merge(&b, &nums);
    tide_bucket_merge(&b, &nan_only);
    cr_assert_eq(a.count, 3);
    cr_assert_eq(b.count, 3);
    cr_assert_eq(a.min, 1.0, "NaN first: min %g", a.min);
    cr_assert_eq(a.max, 2.0, "NaN first: max %g", a.max);
    cr_assert_eq(b.min, 1.0, "NaN last: min %g", b.min);
    cr_assert_eq(b.max, 2.0, "NaN last: max %g", b.max);
    cr_assert_eq(a.first_ts, 5);
    cr_assert_eq(a.last_ts, 20);
    cr_assert_eq(b.last, 2.0);
}

/* ---- Issue 10: dedup, all-or-nothing batches, durability before
 * visibility, ENOSPC ---------------------------------------------------- */

/* Two series ids that live on different shards. */
static void ids_on_two_shards(uint64_t *a, uint64_t *b)
{
    *a = 1;
    for (*b = 2; tide__db_shard_of(db, *b) == tide__db_shard_of(db, *a); (*b)++)
        ;
}

/* Append one f64 point to `id` as batch (`producer`, `seq`). */
static int append_seq(uint64_t producer, uint64_t seq, uint64_t id, int64_t ts,
                      double v)
{
    struct tide_column c = {.series_id = id,
                            .account_id = 7,
                            .type = TIDE_TYPE_F64,
                            .n = 1,
                            .ts_ns = &ts,
                            .v.f64 = &v};
    struct tide_batch b = {.producer_id = producer,
                           .sequence = seq,
                           .n_columns = 1,
                           .columns = &c};

    return tide_db_append_wait(db, &b);
}

/* The one point of `id`, which must exist, as a double. */
static double only_value(uint64_t id)
{
    int64_t ts[4];
    uint64_t v[4];
    double d;

    cr_assert_eq(read_all(id, INT64_MIN, INT64_MAX, ts, v, NULL, 4), 1,
                 "series %llu", (unsigned long long)id);
    memcpy(&d, &v[0], 8);
    return d;
}

/* The last applied (producer, sequence) is one fact for the whole
 * database: a lower sequence is a duplicate whatever shard its series
 * live on, and stays one after a reopen and after a flush. */
Test(db, dedup_is_one_fact_across_shards)
{
    uint64_t a, b;

    ids_on_two_shards(&a, &b);
    CHECK(append_seq(0x77, 40, b, 10, 0.0));
    CHECK(append_seq(0x77, 100, a, 10, 1.0));
    cr_assert_eq(append_seq(0x77, 50, b, 10, 50.0), TIDE_EDUPLICATE,
                 "seq 50 after seq 100 (other shard) is a duplicate");
    cr_assert_eq(only_value(b), 0.0, "the acknowledged value is kept");
    reopen(64);
    cr_assert_eq(append_seq(0x77, 50, b, 10, 50.0), TIDE_EDUPLICATE);
    CHECK(tide_db_flush(db));
    reopen(64);
    cr_assert_eq(append_seq(0x77, 99, b, 10, 50.0), TIDE_EDUPLICATE);
    cr_assert_eq(only_value(b), 0.0);
    CHECK(append_seq(0x77, 101, b, 10, 101.0));
    cr_assert_eq(only_value(b), 101.0);
}

/* Build a batch of one point on each of `a` and `b`. */
struct two_cols {
    int64_t ts[2];
    double v[2];
    struct tide_column c[2];
    struct tide_batch b;
};

static void two_cols_init(struct two_cols *t, uint64_t a, uint64_t b,
                          uint64_t seq)
{
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < 2; i++) {
        t->ts[i] = 5;
        t->v[i] = 5.5;
        t->c[i] = (struct tide_column){.series_id = i ? b : a,
                                       .account_id = 7,
                                       .type = TIDE_TYPE_F64,
                                       .n = 1,
                                       .ts_ns = &t->ts[i],
                                       .v.f64 = &t->v[i]};
    }
    t->b = (struct tide_batch){
        .producer_id = 0x78, .sequence = seq, .n_columns = 2, .columns = t->c};
}

static uint32_t count_points(uint64_t id)
{
    int64_t ts[16];
    uint64_t v[16];

    return read_all(id, INT64_MIN, INT64_MAX, ts, v, NULL, 16);
}

/* A batch over two shards whose WAL write fails on one of them: one
 * answer (an error), no point visible, none applied after a reopen, and
 * the same batch is applied when sent again. */
Test(db, batch_across_shards_is_all_or_nothing)
{
    struct two_cols t;
    uint64_t a, b;
    int rc;

    ids_on_two_shards(&a, &b);
    two_cols_init(&t, a, b, 1);
    tide__io_inject(TIDE_IO_WRITE, 1, EIO, 0);
    rc = tide_db_append_wait(db, &t.b);
    tide__io_inject(TIDE_IO_WRITE, 0, 0, 0);
    cr_assert_eq(rc, TIDE_EIO, "%s", tide_strerror(rc));
    cr_assert_eq(count_points(a), 0, "no point of a failed batch is visible");
    cr_assert_eq(count_points(b), 0, "no point of a failed batch is visible");
    reopen(64);
    cr_assert_eq(count_points(a), 0, "none applied after reopen");
    cr_assert_eq(count_points(b), 0, "none applied after reopen");
    CHECK(tide_db_append_wait(db, &t.b));
    cr_assert_eq(count_points(a), 1);
    cr_assert_eq(count_points(b), 1);
    reopen(64);
    cr_assert_eq(count_points(a), 1);
    cr_assert_eq(count_points(b), 1);
    cr_assert_eq(tide_db_append_wait(db, &t.b), TIDE_EDUPLICATE);
}

/* A point is visible only once durable: a failed WAL commit leaves
 * nothing of its batch in the head. */
Test(db, failed_commit_leaves_no_point_visible)
{
    int rc;

    CHECK(append_seq(0, 0, 31, 1, 1.0));
    tide__io_inject(TIDE_IO_WRITE, 1, EIO, 0);
    rc = append_seq(0, 0, 31, 2, 2.0);
    tide__io_inject(TIDE_IO_WRITE, 0, 0, 0);
    cr_assert_eq(rc, TIDE_EIO, "%s", tide_strerror(rc));
    cr_assert_eq(count_points(31), 1, "the failed point is not visible");
    reopen(64);
    cr_assert_eq(count_points(31), 1);
}

/* The same with ENOSPC: the batch is answered -ENOSPC, nothing of it is
 * visible, writes resume on their own, and the part that did reach one
 * shard's WAL is never applied, also after a reopen. */
Test(db, batch_across_shards_enospc_then_resume)
{
    struct two_cols t;
    uint64_t a, b;
    int rc;

    ids_on_two_shards(&a, &b);
    two_cols_init(&t, a, b, 1);
    tide__io_inject(TIDE_IO_WRITE, 1, ENOSPC, 0);
    rc = tide_db_append_wait(db, &t.b);
    tide__io_inject(TIDE_IO_WRITE, 0, 0, 0);
    cr_assert_eq(rc, -ENOSPC, "%s", tide_strerror(rc));
    cr_assert_eq(count_points(a) + count_points(b), 0);
    for (int i = 0; i < 1000; i++) {
        rc = append_seq(0, 0, 40, 1, 1.0);
        if (rc != -ENOSPC)
            break;
        usleep(10000);
    }
    cr_assert_eq(rc, 0, "writes resume: %s", tide_strerror(rc));
    cr_assert_eq(count_points(a) + count_points(b), 0);
    reopen(64);
    cr_assert_eq(count_points(a) + count_points(b), 0, "none applied");
    CHECK(tide_db_append_wait(db, &t.b));
    reopen(64);
    cr_assert_eq(count_points(a), 1);
    cr_assert_eq(count_points(b), 1);
}

/* A batch over shards whose part on one shard went to a segment (that
 * shard flushed on its own, its WAL file is gone) while the other part is
 * still only in the WAL is whole at recovery. */
Test(db, batch_across_shards_survives_one_shard_flushing)
{
    struct tide_db_stats st;
    struct two_cols t;
    uint64_t a, b;
    enum { N = 8192 };
    static int64_t ts[N];
    static double v[N];

    tide_db_close(db);
    {
        struct tide_db_options o;

        tide_db_options_init(&o);
        o.shards = 2;
        o.log = test_log;
        o.wal_file_bytes = 1u << 20;
        o.head_bytes_max = 1u << 20; /* 512 KiB a shard */
        CHECK(tide_db_open(dir, &o, &db));
    }
    ids_on_two_shards(&a, &b);
    two_cols_init(&t, a, b, 1);
    CHECK(tide_db_append_wait(db, &t.b));
    /* Fill a's shard until it flushes by itself; b's shard keeps its
     * head and its WAL. */
    for (uint32_t k = 0; k < 64; k++) {
        tide_db_stats(db, &st);
        if (st.flushes)
            break;
        for (uint32_t i = 0; i < N; i++) {
            ts[i] = 1000 + (int64_t)k * N + i;
            v[i] = (double)i;
        }
        CHECK(append1(a, TIDE_TYPE_F64, N, ts, v));
    }
    tide_db_stats(db, &st);
    cr_assert_gt(st.flushes, 0, "a's shard flushed");
    /* a's writer does not wait for the first flush before freezing again
     * (head_full): let a second flush, if one started, end before the
     * injected failure, which must hit b's WAL and nothing else. */
    for (uint64_t seen = 0; seen != st.flushes;) {
        seen = st.flushes;
        usleep(300000);
        tide_db_stats(db, &st);
    }
    /* Close without the final flush: drop the db as a crash would. */
    tide__io_inject(TIDE_IO_WRITE, 1, EIO, 0);
    cr_assert_neq(append_seq(0, 0, b, 2, 2.0), 0);
    tide__io_inject(TIDE_IO_WRITE, 0, 0, 0);
    reopen(64);
    cr_assert_eq(count_points(b), 1, "b's part is applied");
    {
        int64_t got_ts[4];
        uint64_t got[4];

        cr_assert_eq(read_all(a, 0, 6, got_ts, got, NULL, 4), 1,
                     "a's part is in a segment");
    }
}

/* Restart on a nearly full disk: WAL files are smaller when a full-size
 * one does not fit; with no room at all, the open fails with -ENOSPC and
 * says so. */
Test(db, open_with_little_space)
{
    struct tide_db_options o;
    int rc;

    CHECK(append_seq(0, 0, 50, 1, 1.0));
    tide_db_close(db);
    db = NULL;
    tide_db_options_init(&o);
    o.shards = 2;
    o.log = test_log;
    o.wal_file_bytes = 64u << 20;
    tide__wal_inject_space(2u << 20); /* room for 2 MiB, not 64 */
    rc = tide_db_open(dir, &o, &db);
    cr_assert_eq(rc, 0, "%s", tide_strerror(rc));
    CHECK(append_seq(0, 0, 50, 2, 2.0));
    cr_assert_eq(count_points(50), 2);
    tide_db_close(db);
    db = NULL;
    tide__wal_inject_space(4096); /* not even a header and a block */
    rc = tide_db_open(dir, &o, &db);
    tide__wal_inject_space(0);
    cr_assert_eq(rc, -ENOSPC, "%s", tide_strerror(rc));
    db = NULL;
    open_db(64);
    cr_assert_eq(count_points(50), 2);
}

/* ENOSPC at a WAL rotation: refused writes name the cause in the stats,
 * and resume once the disk has room again. */
Test(db, enospc_at_rotation_is_named_and_resumes)
{
    enum { N = 8192 };
    static int64_t ts[N];
    static double v[N];
    struct tide_db_stats st;
    int rc = 0;

    for (uint32_t i = 0; i < N; i++) {
        ts[i] = i;
        v[i] = i;
    }
    tide__wal_inject_space(1); /* no new WAL file fits */
    /* 1 MiB files: a few of these batches need a rotation. */
    for (int k = 0; k < 64 && rc == 0; k++)
        rc = append1(60, TIDE_TYPE_F64, N, ts, v);
    cr_assert_eq(rc, -ENOSPC, "%s", tide_strerror(rc));
    tide_db_stats(db, &st);
    cr_assert_eq(st.storage_error, -ENOSPC);
    cr_assert_eq(st.nospace_events, 1);
    cr_assert(strstr(st.storage_error_msg, ".wal") &&
                  strstr(st.storage_error_msg, "bytes free"),
              "%s", st.storage_error_msg);
    cr_assert_eq(append_seq(0, 0, 61, 1, 1.0), -ENOSPC, "still refused");
    tide__wal_inject_space(0);
    for (int i = 0; i < 1000; i++) {
        rc = append_seq(0, 0, 61, 1, 1.0);
        if (rc != -ENOSPC)
            break;
        usleep(10000);
    }
    cr_assert_eq(rc, 0, "writes resume: %s", tide_strerror(rc));
    tide_db_stats(db, &st);
    cr_assert_eq(st.storage_error, 0);
    cr_assert_eq(count_points(61), 1);
    CHECK(append1(60, TIDE_TYPE_F64, N, ts, v));
}

struct answer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    int rc[2];
};

static void answer_cb(void *ctx, int rc)
{
    struct answer *a = ctx;

    pthread_mutex_lock(&a->mu);
    a->rc[a->n++] = rc;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* Send the same (producer, sequence) twice back to back: the second is a
 * retry of a batch most likely still in flight, answered by its outcome.
 * `fail` makes the first one's WAL write fail. Returns the answers in
 * call order in rc[0], rc[1] (a refusal by tide_db_append counts). */
static void twice(int fail, int rc[2])
{
    static struct answer a[2];
    int64_t ts = 7;
    double v = 7.5;
    struct tide_column c = {.series_id = 70,
                            .account_id = 7,
                            .type = TIDE_TYPE_F64,
                            .n = 1,
                            .ts_ns = &ts,
                            .v.f64 = &v};
    struct tide_batch b = {
        .producer_id = 0x79, .sequence = 3, .n_columns = 1, .columns = &c};

    for (int i = 0; i < 2; i++) {
        pthread_mutex_init(&a[i].mu, NULL);
        pthread_cond_init(&a[i].cv, NULL);
        a[i].n = 0;
    }
    if (fail)
        tide__io_inject(TIDE_IO_WRITE, 1, EIO, 0);
    for (int i = 0; i < 2; i++) {
        int r = tide_db_append(db, &b, answer_cb, &a[i]);

        if (r)
            answer_cb(&a[i], r);
    }
    for (int i = 0; i < 2; i++) {
        pthread_mutex_lock(&a[i].mu);
        while (!a[i].n)
            pthread_cond_wait(&a[i].cv, &a[i].mu);
        pthread_mutex_unlock(&a[i].mu);
        rc[i] = a[i].rc[0];
    }
    tide__io_inject(TIDE_IO_WRITE, 0, 0, 0);
}

/* A retry of a batch in flight is a duplicate once that batch is applied,
 * and not one when it fails: it is never answered "duplicate" for points
 * that are not durable. */
Test(db, retry_of_a_batch_in_flight_gets_its_outcome)
{
    int rc[2];

    twice(0, rc);
    cr_assert_eq(rc[0], 0, "%s", tide_strerror(rc[0]));
    cr_assert_eq(rc[1], TIDE_EDUPLICATE, "%s", tide_strerror(rc[1]));
    cr_assert_eq(count_points(70), 1);
    reopen(64);
    cr_assert_eq(append_seq(0x79, 3, 70, 8, 1.0), TIDE_EDUPLICATE);
    twice(1, rc); /* seq 3 again: a duplicate, nothing is written */
    cr_assert_eq(rc[0], TIDE_EDUPLICATE);
    cr_assert_eq(rc[1], TIDE_EDUPLICATE);
}

Test(db, retry_of_a_failing_batch_in_flight_is_not_a_duplicate)
{
    int rc[2];

    twice(1, rc);
    cr_assert_eq(rc[0], TIDE_EIO, "%s", tide_strerror(rc[0]));
    cr_assert_eq(rc[1], TIDE_EIO, "not a duplicate: %s", tide_strerror(rc[1]));
    cr_assert_eq(count_points(70), 0);
    reopen(64);
    cr_assert_eq(count_points(70), 0);
    CHECK(append_seq(0x79, 3, 70, 7, 7.5));
}

/* ---- Read side: descending reads and bounded aggregates (issue 10) ------ */

/* TIDE_READ_DESC returns a series' blocks newest first, each ascending,
 * over segments and heads; the series keep the order of ids. Blocks are
 * 65536 points at most, so 150000 points take three. */
Test(db, descending_read_returns_blocks_newest_first)
{
    enum { N = 150000 };
    int64_t *ts = malloc(N * sizeof(*ts));
    double *v = malloc(N * sizeof(*v));
    uint64_t ids[2] = {301, 302};
    int64_t prev = INT64_MAX;
    struct tide_block b;
    uint32_t got[2] = {0, 0};
    tide_iter *it;
    int rc;

    cr_assert(ts && v);
    for (uint32_t i = 0; i < N; i++) {
        ts[i] = 1000 + (int64_t)i;
        v[i] = (double)i;
    }
    CHECK(append1(301, TIDE_TYPE_F64, N / 2, ts, v)); /* flushed below */
    CHECK(append1(302, TIDE_TYPE_F64, 10, ts, v));
    CHECK(tide_db_flush(db));
    CHECK(append1(301, TIDE_TYPE_F64, N / 2, ts + N / 2, v + N / 2));
    cr_assert_eq(tide_db_read_open_flags(db, ids, 2, 0, INT64_MAX, 2, &it),
                 TIDE_EINVAL, "an unknown flag");
    CHECK(
        tide_db_read_open_flags(db, ids, 2, 0, INT64_MAX, TIDE_READ_DESC, &it));
    while ((rc = tide_iter_next(it, &b)) == 1) {
        uint32_t k = b.series_id == 302;

        cr_assert(k || got[1] == 0, "series in the order of ids");
        if (k && got[1] == 0)
            prev = INT64_MAX;
        cr_assert_lt(b.ts_ns[b.n - 1], prev, "blocks newest first");
        for (uint32_t i = 0; i < b.n; i++) {
            cr_assert(i == 0 || b.ts_ns[i] > b.ts_ns[i - 1], "block ascends");
            cr_assert_eq(b.v.f64[i], (double)(b.ts_ns[i] - 1000));
        }
        prev = b.ts_ns[0];
        got[k] += b.n;
    }
    cr_assert_eq(rc, 0);
    cr_assert_eq(got[0], N);
    cr_assert_eq(got[1], 10);
    tide_iter_close(it);
    free(ts);
    free(v);
}

/* tide_db_aggregate_max answers TIDE_EFULL once the results would pass
 * max_buckets, from raw points and from chunk headers alike, and the
 * same answer as tide_db_aggregate under it. */
Test(db, aggregate_max_stops_at_the_bucket_budget)
{
    enum { N = 5000 };
    int64_t ts[N];
    double v[N];
    uint64_t ids[2] = {401, 402};
    struct tide_agg_series *res, *ref;

    for (uint32_t i = 0; i < N; i++) {
        ts[i] = 1000 + (int64_t)i * 10;
        v[i] = (double)i;
    }
    CHECK(append1(401, TIDE_TYPE_F64, N, ts, v));
    CHECK(append1(402, TIDE_TYPE_F64, N, ts, v));
    /* In the heads: raw partials, 1 ns buckets. */
    cr_assert_eq(tide_db_aggregate_max(db, ids, 2, 0, INT64_MAX, 1, 0, N + 1,
                                       &res, NULL),
                 TIDE_EFULL);
    CHECK(tide_db_aggregate_max(db, ids, 2, 0, INT64_MAX, 1, 0, 2 * N, &res,
                                NULL));
    cr_assert_eq(res[0].n_buckets + res[1].n_buckets, 2 * N);
    tide_agg_free(res, 2);
    CHECK(tide_db_flush(db));
    /* In segments, chunks of 64 points answered from headers: 100 ns
     * buckets hold 10 points, a chunk spans several. */
    cr_assert_eq(tide_db_aggregate_max(db, ids, 2, 0, INT64_MAX, 640, 0, 100,
                                       &res, NULL),
                 TIDE_EFULL);
    CHECK(tide_db_aggregate_max(db, ids, 2, 0, INT64_MAX, 640, 0, 1000, &res,
                                NULL));
    CHECK(tide_db_aggregate(db, ids, 2, 0, INT64_MAX, 640, 0, &ref, NULL));
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(res[k].n_buckets, ref[k].n_buckets);
        cr_assert_eq(memcmp(res[k].buckets, ref[k].buckets,
                            res[k].n_buckets * sizeof(*res[k].buckets)),
                     0);
    }
    tide_agg_free(res, 2);
    tide_agg_free(ref, 2);
}

/* ---- Large series are read in time slices ---------------------------------
 */

/* The most bytes live through tide_malloc at any allocation since the
 * counter was reset: the hook sees each request before it is counted. */
static atomic_size_t peak_live;

/* check_read(): flush the database after the read's first block. */
static int flush_mid_read;

static void *peak_malloc(size_t size)
{
    size_t now = tide_alloc_live_bytes() + size;
    size_t p = atomic_load(&peak_live);

    while (now > p && !atomic_compare_exchange_weak(&peak_live, &p, now))
        ;
    return malloc(size);
}

/* The points a read of one series must return, ascending in time, as
 * 8-byte slots (bool: 0/1; strings: index into `str`). */
struct want {
    uint64_t id;
    uint8_t type;
    uint32_t n;
    int64_t *ts;
    uint64_t *val;
    char (*str)[24];
};

/* Points of `w` in [from, to): [*a, *b). */
static void want_range(const struct want *w, int64_t from, int64_t to,
                       uint32_t *a, uint32_t *b)
{
    *a = *b = 0;
    while (*a < w->n && w->ts[*a] < from)
        (*a)++;
    for (*b = *a; *b < w->n && w->ts[*b] < to; (*b)++)
        ;
}

/* Read ws[0..n) over [from, to), ascending or newest first, and compare
 * every point with the expectation. Returns the most bytes the engine held
 * through tide_malloc during the read, above what it held before. */
static size_t check_read(const struct want *ws, uint32_t n, int64_t from,
                         int64_t to, int desc)
{
    uint64_t ids[4];
    uint32_t lo[4], hi[4], k = 0;
    struct tide_block b;
    size_t base;
    tide_iter *it;
    int rc;

    cr_assert_leq(n, 4);
    for (uint32_t s = 0; s < n; s++) {
        ids[s] = ws[s].id;
        want_range(&ws[s], from, to, &lo[s], &hi[s]);
    }
    base = tide_alloc_live_bytes();
    atomic_store(&peak_live, base);
    tide_alloc_set_hooks(peak_malloc, free);
    CHECK(tide_db_read_open_flags(db, ids, n, from, to,
                                  desc ? TIDE_READ_DESC : 0, &it));
    while ((rc = tide_iter_next(it, &b)) == 1) {
        const struct want *w;
        uint32_t at;

        while (k < n && b.series_id != ws[k].id)
            k++;
        cr_assert_lt(k, n, "series %llu out of order",
                     (unsigned long long)b.series_id);
        w = &ws[k];
        cr_assert_eq(b.type, w->type);
        cr_assert_leq(b.n, hi[k] - lo[k], "series %llu: too many points",
                      (unsigned long long)w->id);
        at = desc ? hi[k] - b.n : lo[k];
        for (uint32_t i = 0; i < b.n; i++) {
            uint64_t v = 0;

            cr_assert_eq(b.ts_ns[i], w->ts[at + i], "series %llu point %u",
                         (unsigned long long)w->id, at + i);
            if (w->type == TIDE_TYPE_STR) {
                const char *s = w->str[w->val[at + i]];

                cr_assert_eq(b.v.str[i].len, strlen(s));
                cr_assert_eq(memcmp(b.v.str[i].ptr, s, b.v.str[i].len), 0,
                             "series %llu point %u", (unsigned long long)w->id,
                             at + i);
                continue;
            }
            if (w->type == TIDE_TYPE_BOOL)
                v = b.v.b[i];
            else
                memcpy(&v, &b.v.i64[i], 8);
            cr_assert_eq(v, w->val[at + i], "series %llu point %u",
                         (unsigned long long)w->id, at + i);
        }
        if (desc)
            hi[k] -= b.n;
        else
            lo[k] += b.n;
        if (flush_mid_read) {
            CHECK(tide_db_flush(db));
            flush_mid_read = 0;
        }
    }
    tide_alloc_set_hooks(NULL, NULL);
    cr_assert_eq(rc, 0, "iter: %s", tide_strerror(rc));
    tide_iter_close(it);
    for (uint32_t s = 0; s < n; s++)
        cr_assert_eq(lo[s], hi[s], "series %llu: %u points missing",
                     (unsigned long long)ws[s].id, hi[s] - lo[s]);
    return atomic_load(&peak_live) - base;
}

/* Append points [a, b) of `w` whose index passes keep(i, arg) with the
 * expected value set to val(i), in batches of at most 100,000, then flush
 * when `flush`. The expectation is updated: the last write wins. */
static void write_some(struct want *w, uint32_t a, uint32_t b, uint32_t every,
                       uint64_t (*val)(uint32_t i, uint32_t round),
                       uint32_t round, int flush)
{
    enum { BATCH = 100000 };
    int64_t *ts = malloc(BATCH * sizeof(*ts));
    uint64_t *v = malloc(BATCH * sizeof(*v));
    uint8_t *bv = malloc(BATCH);
    struct tide_str *sv = malloc(BATCH * sizeof(*sv));
    uint32_t n = 0;

    cr_assert(ts && v && bv && sv);
    for (uint32_t i = a; i < b; i++) {
        if (i % every)
            continue;
        ts[n] = w->ts[i];
        w->val[i] = val(i, round);
        v[n] = w->val[i];
        bv[n] = (uint8_t)w->val[i];
        if (w->type == TIDE_TYPE_STR) {
            w->val[i] = i;
            snprintf(w->str[i], sizeof(w->str[i]), "s%u.%u%.*s", i, round,
                     (int)(i % 7), "xxxxxxx");
            sv[n] = (struct tide_str){w->str[i], (uint32_t)strlen(w->str[i])};
        }
        if (++n == BATCH || i + 1 == b) {
            CHECK(append1(w->id, w->type, n, ts,
                          w->type == TIDE_TYPE_STR    ? (void *)sv
                          : w->type == TIDE_TYPE_BOOL ? (void *)bv
                                                      : (void *)v));
            n = 0;
        }
    }
    if (n)
        CHECK(append1(w->id, w->type, n, ts,
                      w->type == TIDE_TYPE_STR    ? (void *)sv
                      : w->type == TIDE_TYPE_BOOL ? (void *)bv
                                                  : (void *)v));
    if (flush)
        CHECK(tide_db_flush(db));
    free(ts);
    free(v);
    free(bv);
    free(sv);
}

static void want_init(struct want *w, uint64_t id, uint8_t type, uint32_t n)
{
    *w = (struct want){.id = id, .type = type, .n = n};
    w->ts = malloc(n * sizeof(*w->ts));
    w->val = calloc(n, sizeof(*w->val));
    if (type == TIDE_TYPE_STR)
        w->str = calloc(n, sizeof(*w->str));
    cr_assert(w->ts && w->val && (type != TIDE_TYPE_STR || w->str));
    for (uint32_t i = 0; i < n; i++)
        w->ts[i] = 1000 + (int64_t)i * 10;
}

static void want_fini(struct want *w)
{
    free(w->ts);
    free(w->val);
    free(w->str);
}

static uint64_t f64_val(uint32_t i, uint32_t round)
{
    double d = (double)i + (double)round * 0.25;
    uint64_t v;

    memcpy(&v, &d, 8);
    return v;
}

static uint64_t bool_val(uint32_t i, uint32_t round)
{
    return (i % 3 == 0) ^ (round & 1);
}

/* A series of 2 M points in four segments, rewritten in part by a later
 * segment and by the head (same timestamps, new values), plus new points
 * only in the head. */
static void big_series(struct want *w, uint64_t id)
{
    const uint32_t n = 2000000, old = n - 1000;

    want_init(w, id, TIDE_TYPE_F64, n);
    for (uint32_t q = 0; q < 4; q++)
        write_some(w, q * (old / 4), (q + 1) * (old / 4), 1, f64_val, 0, 1);
    write_some(w, old / 4, 3 * (old / 4), 7, f64_val, 1, 1);
    write_some(w, old / 3, n, 11, f64_val, 2, 0); /* and the head */
    write_some(w, old, n, 1, f64_val, 3, 0);
}

/* Reading a 2 M-point series, ascending or newest first, returns every
 * point with the last write winning, while the engine holds a bounded
 * amount of memory: the series is read a time slice at a time, never
 * gathered whole (40 MB of points here; 800 MB for 50 M). */
Test(db, large_series_read_in_slices_with_bounded_memory, .timeout = 120)
{
    struct want w;
    size_t peak[2];

    reopen(8192);
    big_series(&w, 501);
    for (int desc = 0; desc < 2; desc++) {
        peak[desc] = check_read(&w, 1, 0, INT64_MAX, desc);
        cr_log_info("peak %s: %zu bytes", desc ? "desc" : "asc", peak[desc]);
    }
    for (int desc = 0; desc < 2; desc++)
        cr_assert_lt(peak[desc], 24u << 20,
                     "%s read of 2 M points held %zu bytes",
                     desc ? "a descending" : "an ascending", peak[desc]);
    want_fini(&w);
}

/* Strings and bools cut into slices keep every value, with the series
 * returned in the order of ids, ascending and newest first. */
Test(db, large_strings_and_bools_read_in_slices, .timeout = 120)
{
    const uint32_t n = 700000;
    struct want w[3];

    reopen(8192);
    want_init(&w[0], 511, TIDE_TYPE_STR, n);
    want_init(&w[1], 512, TIDE_TYPE_BOOL, n);
    want_init(&w[2], 513, TIDE_TYPE_F64, 100); /* a small one after */
    for (int k = 0; k < 2; k++) {
        uint64_t (*val)(uint32_t, uint32_t) = k ? bool_val : f64_val;

        write_some(&w[k], 0, n / 2, 1, val, 0, 1);
        write_some(&w[k], n / 2, n, 1, val, 0, 1);
        write_some(&w[k], n / 4, n, 5, val, 1, 1);
        write_some(&w[k], n / 3, n, 13, val, 2, 0);
    }
    write_some(&w[2], 0, 100, 1, f64_val, 0, 0);
    for (int desc = 0; desc < 2; desc++)
        check_read(w, 3, 0, INT64_MAX, desc);
    for (int k = 0; k < 3; k++)
        want_fini(&w[k]);
}

/* A range that starts and ends inside chunks, and a range inside one
 * slice, return exactly their points. */
Test(db, large_series_range_starts_and_ends_mid_chunk, .timeout = 120)
{
    struct want w;

    reopen(8192);
    big_series(&w, 521);
    for (int desc = 0; desc < 2; desc++) {
        check_read(&w, 1, w.ts[123457], w.ts[1876543] + 5, desc);
        check_read(&w, 1, w.ts[500001], w.ts[500100], desc);
        check_read(&w, 1, w.ts[1999990], INT64_MAX, desc);
    }
    want_fini(&w);
}

/* A flush between two slices moves the heads' points into a segment the
 * iterator's list lacks: the next slice is read again on the new list,
 * and no point is lost or returned twice. */
Test(db, large_series_read_survives_a_flush_between_slices, .timeout = 120)
{
    struct want w;

    reopen(8192);
    big_series(&w, 531);
    for (int desc = 0; desc < 2; desc++) {
        write_some(&w, w.n / 2, w.n, 17, f64_val, 4 + desc, 0);
        flush_mid_read = 1;
        check_read(&w, 1, 0, INT64_MAX, desc);
        cr_assert_eq(flush_mid_read, 0);
    }
    want_fini(&w);
}

/* Aggregates of `w` over [from, to) in buckets of `bucket_ns`, by brute
 * force over the expectation, into `out` (at most `cap`). */
static uint32_t want_buckets(const struct want *w, int64_t from, int64_t to,
                             int64_t bucket_ns, struct tide_bucket *out,
                             uint32_t cap)
{
    uint32_t a, b, n = 0;

    want_range(w, from, to, &a, &b);
    for (uint32_t i = a; i < b; i++) {
        /* Buckets are aligned to the epoch (timestamps here are >= 0). */
        int64_t start = w->ts[i] / bucket_ns * bucket_ns;
        struct tide_bucket *k = n ? &out[n - 1] : NULL;
        double d;

        memcpy(&d, &w->val[i], 8);
        if (!k || k->start_ns != start) {
            cr_assert_lt(n, cap);
            k = &out[n++];
            *k = (struct tide_bucket){.start_ns = start,
                                      .min = d,
                                      .max = d,
                                      .first = d,
                                      .first_ts = w->ts[i]};
        }
        k->count++;
        k->sum += d;
        k->min = d < k->min ? d : k->min;
        k->max = d > k->max ? d : k->max;
        k->last = d;
        k->last_ts = w->ts[i];
    }
    return n;
}

/* An aggregate over a 2 M-point series in buckets smaller than its chunks
 * (so that every point is decoded) gives the exact brute-force buckets,
 * stops at max_buckets exactly, and reads the series in slices: it holds
 * a bounded amount of memory besides its results. */
Test(db, large_series_aggregate_reads_slices_with_bounded_memory,
     .timeout = 120)
{
    const int64_t bucket_ns = 7770; /* 777 points, not a chunk multiple */
    struct tide_agg_series *res;
    struct tide_bucket *ref;
    uint32_t n_ref;
    uint64_t id = 541;
    struct want w;
    size_t base, peak;

    reopen(8192);
    big_series(&w, id);
    ref = malloc(4000 * sizeof(*ref));
    cr_assert(ref);
    n_ref = want_buckets(&w, 0, INT64_MAX, bucket_ns, ref, 4000);
    base = tide_alloc_live_bytes();
    atomic_store(&peak_live, base);
    tide_alloc_set_hooks(peak_malloc, free);
    CHECK(tide_db_aggregate_max(db, &id, 1, 0, INT64_MAX, bucket_ns, 0, n_ref,
                                &res, NULL));
    tide_alloc_set_hooks(NULL, NULL);
    peak = atomic_load(&peak_live) - base;
    cr_log_info("aggregate peak: %zu bytes", peak);
    cr_assert_eq(res[0].n_buckets, n_ref);
    for (uint32_t i = 0; i < n_ref; i++) {
        const struct tide_bucket *g = &res[0].buckets[i], *r = &ref[i];

        cr_assert(g->start_ns == r->start_ns && g->count == r->count &&
                      g->sum == r->sum && g->min == r->min &&
                      g->max == r->max && g->first == r->first &&
                      g->last == r->last && g->first_ts == r->first_ts &&
                      g->last_ts == r->last_ts,
                  "bucket %u differs", i);
    }
    tide_agg_free(res, 1);
    cr_assert_lt(peak, 24u << 20, "aggregate of 2 M points held %zu bytes",
                 peak);
    cr_assert_eq(tide_db_aggregate_max(db, &id, 1, 0, INT64_MAX, bucket_ns, 0,
                                       n_ref - 1, &res, NULL),
                 TIDE_EFULL);
    /* A range starting and ending inside chunks. */
    n_ref =
        want_buckets(&w, w.ts[123457], w.ts[1876543] + 5, bucket_ns, ref, 4000);
    CHECK(tide_db_aggregate(db, &id, 1, w.ts[123457], w.ts[1876543] + 5,
                            bucket_ns, 0, &res, NULL));
    cr_assert_eq(res[0].n_buckets, n_ref);
    cr_assert_eq(memcmp(res[0].buckets, ref, n_ref * sizeof(*ref)), 0);
    tide_agg_free(res, 1);
    free(ref);
    want_fini(&w);
}

/* A large series still all in the head, rewritten there in part, is read
 * in slices too (the head's points are binned by time to cut them), and
 * an aggregate too large for max_buckets over it, or over the same points
 * in segments, fails before it takes the memory of its points or of its
 * partial buckets. */
Test(db, large_head_series_read_in_slices_and_refused_early, .timeout = 120)
{
    const uint32_t n = 1200000;
    struct tide_agg_series *res;
    uint64_t id = 551;
    struct want w;
    size_t base, peak[3];

    reopen(8192);
    want_init(&w, id, TIDE_TYPE_F64, n);
    write_some(&w, 0, n, 1, f64_val, 0, 0);
    write_some(&w, n / 5, n, 9, f64_val, 1, 0);
    for (int desc = 0; desc < 2; desc++) {
        peak[desc] = check_read(&w, 1, 0, INT64_MAX, desc);
        cr_log_info("head read peak %s: %zu bytes", desc ? "desc" : "asc",
                    peak[desc]);
        cr_assert_lt(peak[desc], 24u << 20,
                     "reading 1.2 M head points held %zu bytes", peak[desc]);
    }
    check_read(&w, 1, w.ts[300001], w.ts[900001], 1);
    for (int flushed = 0; flushed < 2; flushed++) {
        if (flushed)
            CHECK(tide_db_flush(db));
        base = tide_alloc_live_bytes();
        atomic_store(&peak_live, base);
        tide_alloc_set_hooks(peak_malloc, free);
        cr_assert_eq(tide_db_aggregate_max(db, &id, 1, 0, INT64_MAX, 1, 0,
                                           1000000, &res, NULL),
                     TIDE_EFULL);
        tide_alloc_set_hooks(NULL, NULL);
        peak[2] = atomic_load(&peak_live) - base;
        cr_log_info("refused aggregate peak (%s): %zu bytes",
                    flushed ? "segments" : "head", peak[2]);
        cr_assert_lt(peak[2], 24u << 20,
                     "a refused aggregate over 1.2 M points (%s) held %zu "
                     "bytes",
                     flushed ? "in segments" : "in the head", peak[2]);
    }
    want_fini(&w);
}

/* Latest values of many series on both shards, asked in any order, with
 * an older point written after a newer one was flushed: the newest point
 * wins in the heads, after a flush and after a reopen. */
Test(db, latest_out_of_order_flush_and_reopen)
{
    enum { S = 40 };
    uint64_t ids[2 * S];
    struct tide_point *p;

    for (uint32_t s = 0; s < S; s++) {
        int64_t ts[] = {1000 + s, 5000 + s};
        double v[] = {1, 2 + s};

        CHECK(append1(s + 1, TIDE_TYPE_F64, 2, ts, v));
        ids[s] = s + 1;
        ids[S + s] = S - s;
    }
    CHECK(tide_db_flush(db));
    for (uint32_t s = 0; s < S; s += 2) { /* older, out of order */
        int64_t ts = 3000;
        double v = -1;

        CHECK(append1(s + 1, TIDE_TYPE_F64, 1, &ts, &v));
    }
    for (int round = 0; round < 3; round++) {
        CHECK(tide_db_latest(db, ids, 2 * S, &p));
        for (uint32_t k = 0; k < 2 * S; k++) {
            uint32_t s = (uint32_t)ids[k] - 1;

            cr_assert(p[k].found);
            cr_assert_eq(p[k].ts_ns, 5000 + s, "round %d id %u", round, s + 1);
            cr_assert_eq(p[k].v.f64, 2 + s);
        }
        tide_latest_free(p, 2 * S);
        if (round == 0)
            CHECK(tide_db_flush(db));
        else
            reopen(64);
    }
}

/* A query over enough series to be split across two threads answers
 * exactly what each series' own (single-thread) query does, on random
 * data in several segments and the heads, for several bucket sizes. */
Test(db, split_aggregate_equals_serial)
{
    enum { S = 600, N = 300 };
    static int64_t ts[N];
    static double v[N];
    static uint64_t ids[S];
    uint64_t seed = 12345;
    struct tide_agg_series *res, *one;
    struct tide_agg_stats st, st1, sum;

    for (uint32_t s = 0; s < S; s++) {
        for (uint32_t i = 0; i < N; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            ts[i] = (int64_t)i * 1000 + (int64_t)(seed >> 60);
            v[i] = (double)(seed >> 40) / 1e3;
        }
        CHECK(append1(s + 1, TIDE_TYPE_F64, N / 3, ts, v));
        ids[S - 1 - s] = s + 1; /* descending: any order is allowed */
    }
    CHECK(tide_db_flush(db));
    for (uint32_t s = 0; s < S; s++)
        CHECK(append1(s + 1, TIDE_TYPE_F64, N / 3, ts + N / 3, v + N / 3));
    CHECK(tide_db_flush(db));
    for (uint32_t s = 0; s < S; s += 3)
        CHECK(append1(s + 1, TIDE_TYPE_F64, N - 2 * (N / 3), ts + 2 * (N / 3),
                      v + 2 * (N / 3)));
    for (int b = 0; b < 3; b++) {
        static const int64_t bucket[] = {0, 7000, 64000};

        memset(&sum, 0, sizeof(sum));
        CHECK(tide_db_aggregate(db, ids, S, 5000, N * 1000 - 3000, bucket[b], 0,
                                &res, &st));
        for (uint32_t k = 0; k < S; k++) {
            CHECK(tide_db_aggregate(db, &ids[k], 1, 5000, N * 1000 - 3000,
                                    bucket[b], 0, &one, &st1));
            sum.chunks_decoded += st1.chunks_decoded;
            sum.chunks_from_header += st1.chunks_from_header;
            cr_assert_eq(res[k].series_id, ids[k]);
            cr_assert_eq(res[k].type, one[0].type);
            cr_assert_eq(res[k].n_buckets, one[0].n_buckets, "id %" PRIu64,
                         ids[k]);
            cr_assert(res[k].n_buckets > 0);
            cr_assert(!memcmp(res[k].buckets, one[0].buckets,
                              res[k].n_buckets * sizeof(*one[0].buckets)));
            tide_agg_free(one, 1);
        }
        cr_assert_eq(st.chunks_decoded, sum.chunks_decoded);
        cr_assert_eq(st.chunks_from_header, sum.chunks_from_header);
        tide_agg_free(res, S);
        /* Too many buckets for the limit: refused whole, as when serial. */
        cr_assert_eq(tide_db_aggregate_max(db, ids, S, 0, N * 1000, 1000, 0, S,
                                           &res, NULL),
                     TIDE_EFULL);
    }
}
