/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of tide-bench's modules: workload generators, histogram and
 * JSON writer (bench/workload.c, hist.c, json.c). */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../bench/hist.h"
#include "../../bench/json.h"
#include "../../bench/workload.h"

static struct tide_wl *gen(const struct tide_wl_config *c)
{
    struct tide_wl *w = NULL;
    int rc = tide__wl_generate(c, &w);

    cr_assert_eq(rc, 0, "tide__wl_generate: %d", rc);
    return w;
}

static void same_bytes(enum tide_wl_kind kind)
{
    struct tide_wl_config c;
    struct tide_wl *a, *b;

    tide__wl_config_init(&c, kind);
    c.devices = 17;
    c.duration_ns = 2ll * 3600 * 1000000000;
    a = gen(&c);
    b = gen(&c);
    cr_assert_eq(a->n_rows, b->n_rows);
    cr_assert_eq(memcmp(a->rows, b->rows, a->n_rows * sizeof(a->rows[0])), 0);
    cr_assert_eq(memcmp(a->tags, b->tags, c.devices * sizeof(a->tags[0])), 0);
    tide__wl_free(b);
    c.seed = 2;
    b = gen(&c);
    cr_assert(a->n_rows != b->n_rows ||
                  memcmp(a->rows, b->rows, a->n_rows * sizeof(a->rows[0])),
              "another seed gave the same rows");
    tide__wl_free(a);
    tide__wl_free(b);
}

Test(bench, devops_same_seed_same_bytes)
{
    same_bytes(TIDE_WL_DEVOPS);
}

Test(bench, iot_same_seed_same_bytes)
{
    same_bytes(TIDE_WL_IOT);
}

Test(bench, devops_values_bounded_two_decimals)
{
    struct tide_wl_config c;
    struct tide_wl *w;

    tide__wl_config_init(&c, TIDE_WL_DEVOPS);
    c.devices = 10;
    w = gen(&c);
    cr_assert_eq(w->n_rows, 10u * 8640);
    cr_assert_eq(w->points, 10u * 8640 * 10);
    cr_assert_eq(w->series, 100);
    for (size_t i = 0; i < w->n_rows; i++) {
        const struct tide_wl_row *r = &w->rows[i];

        cr_assert_eq(r->ts_ns, c.start_ns + (int64_t)(i / 10) * c.interval_ns);
        for (int f = 0; f < r->n; f++) {
            double d;

            memcpy(&d, &r->v[f], sizeof(d));
            cr_assert(d >= 0 && d <= 100, "value %f out of 0..100", d);
            cr_assert(fabs(d * 100 - round(d * 100)) < 1e-6,
                      "value %f has more than 2 decimals", d);
        }
    }
    tide__wl_free(w);
}

/* Series-major order holds the same rows as time-major, each device's
 * rows together and in their send order. */
static void series_major_same_rows(enum tide_wl_kind kind)
{
    struct tide_wl_config c;
    struct tide_wl *t, *s;
    size_t i, j = 0;

    tide__wl_config_init(&c, kind);
    c.devices = 7;
    c.duration_ns = 2ll * 3600 * 1000000000;
    t = gen(&c);
    c.order = TIDE_WL_ORDER_SERIES;
    s = gen(&c);
    cr_assert_eq(s->n_rows, t->n_rows);
    cr_assert_eq(s->points, t->points);
    cr_assert_eq(s->series, t->series);
    for (uint32_t d = 0; d < c.devices; d++)
        for (i = 0; i < t->n_rows; i++)
            if (t->rows[i].device == d) {
                cr_assert_eq(
                    memcmp(&s->rows[j], &t->rows[i], sizeof(t->rows[0])), 0,
                    "row %zu of device %u", j, d);
                j++;
            }
    cr_assert_eq(j, s->n_rows);
    tide__wl_free(t);
    tide__wl_free(s);
}

Test(bench, devops_series_major_same_rows)
{
    series_major_same_rows(TIDE_WL_DEVOPS);
}

Test(bench, iot_series_major_same_rows)
{
    series_major_same_rows(TIDE_WL_IOT);
}

Test(bench, iot_out_of_order_share_and_bounds)
{
    struct tide_wl_config c;
    struct tide_wl *w;
    int64_t *last;
    uint64_t ooo = 0;

    tide__wl_config_init(&c, TIDE_WL_IOT);
    c.devices = 50;
    c.offline_share = 0;
    w = gen(&c);
    last = calloc(c.devices, sizeof(*last));
    cr_assert_not_null(last);
    for (size_t i = 0; i < w->n_rows; i++) {
        const struct tide_wl_row *r = &w->rows[i];
        double lat, lon;

        cr_assert(r->ts_ns >= c.start_ns &&
                  r->ts_ns < c.start_ns + c.duration_ns);
        if (r->shape == 0) {
            memcpy(&lat, &r->v[0], sizeof(lat));
            memcpy(&lon, &r->v[1], sizeof(lon));
            cr_assert(lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180);
            if (r->ts_ns < last[r->device])
                ooo++;
            else
                last[r->device] = r->ts_ns;
        } else {
            cr_assert(r->v[2] < 6, "status %llu", (unsigned long long)r->v[2]);
        }
    }
    /* Delayed rows (5 % + 1 %) arrive after a newer one of their device. */
    {
        double share = (double)ooo / (double)w->n_rows;

        cr_assert(share > 0.03 && share < 0.09, "out-of-order share %f", share);
    }
    free(last);
    tide__wl_free(w);
}

Test(bench, bad_config_rejected)
{
    struct tide_wl_config c;
    struct tide_wl *w = NULL;

    tide__wl_config_init(&c, TIDE_WL_DEVOPS);
    c.devices = 0;
    cr_assert_eq(tide__wl_generate(&c, &w), -EINVAL);
    tide__wl_config_init(&c, TIDE_WL_DEVOPS);
    c.fields = 11;
    cr_assert_eq(tide__wl_generate(&c, &w), -EINVAL);
    cr_assert_null(w);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

Test(bench, hist_percentiles_match_sorted_reference)
{
    static struct tide_hist h;
    enum { N = 100000 };
    uint64_t *v = malloc(N * sizeof(*v)), s = 12345;
    const double ps[] = {1, 50, 90, 99, 99.9, 100};

    cr_assert_not_null(v);
    tide__hist_init(&h);
    for (int i = 0; i < N; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        /* log-uniform over 1 us .. 1 s */
        v[i] = (uint64_t)(1000.0 * pow(1e6, (double)(s % 1000000) / 1e6));
        tide__hist_record(&h, v[i]);
    }
    qsort(v, N, sizeof(*v), cmp_u64);
    cr_assert_eq(tide__hist_count(&h), N);
    cr_assert_eq(tide__hist_max(&h), v[N - 1]);
    for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
        size_t rank = (size_t)ceil(ps[k] / 100 * N);
        uint64_t ref = v[rank - 1], got = tide__hist_percentile(&h, ps[k]);

        cr_assert(got >= ref && (double)got <= (double)ref * (1 + 1.0 / 64),
                  "p%g: histogram %llu, sorted %llu", ps[k],
                  (unsigned long long)got, (unsigned long long)ref);
    }
    free(v);
}

Test(bench, hist_index_roundtrip_small_and_empty)
{
    static struct tide_hist h;

    tide__hist_init(&h);
    cr_assert_eq(tide__hist_percentile(&h, 99), 0);
    for (uint64_t v = 0; v < 128; v++)
        cr_assert_eq(tide__hist_bucket_high(tide__hist_index(v)), v);
    for (uint64_t v = 128; v < 1000000; v = v * 3 + 1) {
        uint32_t i = tide__hist_index(v);

        cr_assert(tide__hist_bucket_high(i) >= v);
        cr_assert(tide__hist_bucket_high(i - 1) < v);
    }
    cr_assert_eq(tide__hist_index(UINT64_MAX), TIDE_HIST_BUCKETS - 1);
    tide__hist_record(&h, 7);
    cr_assert_eq(tide__hist_percentile(&h, 50), 7);
}

Test(bench, json_writer_exact_text)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    struct tide_json j;

    cr_assert_not_null(f);
    tide__json_init(&j, f);
    tide__json_object_begin(&j, NULL);
    tide__json_str(&j, "s", "a\"b\\c\n\x01");
    tide__json_u64(&j, "u", 18446744073709551615ull);
    tide__json_i64(&j, "i", -5);
    tide__json_f64(&j, "f", 0.25);
    tide__json_f64(&j, "nan", NAN);
    tide__json_bool(&j, "b", 1);
    tide__json_array_begin(&j, "a");
    tide__json_u64(&j, NULL, 1);
    tide__json_object_begin(&j, NULL);
    tide__json_object_end(&j);
    tide__json_array_end(&j);
    tide__json_object_end(&j);
    cr_assert_eq(tide__json_fini(&j), 0);
    fclose(f);
    cr_assert_str_eq(buf, "{\"s\":\"a\\\"b\\\\c\\n\\u0001\","
                          "\"u\":18446744073709551615,\"i\":-5,\"f\":0.25,"
                          "\"nan\":null,\"b\":true,\"a\":[1,{}]}\n");
    free(buf);
}

Test(bench, json_writer_unbalanced_is_einval)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    struct tide_json j;

    tide__json_init(&j, f);
    tide__json_object_begin(&j, NULL);
    cr_assert_eq(tide__json_fini(&j), -EINVAL);
    tide__json_init(&j, f);
    tide__json_array_end(&j);
    cr_assert_eq(tide__json_fini(&j), -EINVAL);
    fclose(f);
    free(buf);
}

Test(bench, checksum_order_independent)
{
    uint64_t a = tide__wl_point_hash("host_1", "usage_user", 5, TIDE_VALUE_F64,
                                     42, NULL);
    uint64_t b = tide__wl_point_hash("host_1", "usage_user", 6, TIDE_VALUE_F64,
                                     42, NULL);

    cr_assert_neq(a, b);
    cr_assert_eq(a + b, b + a);
    cr_assert_eq(tide__wl_point_hash("d", "f", 1, TIDE_VALUE_STR, 0, "ok"),
                 tide__wl_point_hash("d", "f", 1, TIDE_VALUE_STR, 9, "ok"));
}
