/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration tests of aggregates against the real tided: several
 * aggregates in one query give the numbers of as many single-aggregate
 * queries, a malformed list is INVALID_ARGUMENT, buckets are aligned to
 * the epoch (plus bucket_offset_ns), and `tide query --agg avg,max`.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "testutil.h"
#include "tide/client.h"
#include "wire.h"

TestSuite(aggregate, .init = fixture_init, .fini = fixture_fini,
          .timeout = 120);

#define S_NS 1000000000ll
#define POINTS 600

static char device_key[128], analyst_key[128];
static uint64_t account;

/* One bucket of a result. */
struct bkt {
    char device[32];
    char field[32];
    int64_t ts_ns;
    uint64_t count;
    double v[8];
};

/* An account with device "dev1" and "dev2", keys for both roles, and
 * POINTS points a second apart of f64 "v" and i64 "n" on each device,
 * starting at the minute boundary `base` (returned). */
static int64_t make_data(void)
{
    int fd = wire_session(srv.port, srv.admin_key);
    int64_t base = T0 / (60 * S_NS) * (60 * S_NS);
    struct tide_client_options o;
    tide_client *w = NULL;
    uint64_t a;

    cr_assert_geq(fd, 0, "admin session");
    a = account = wire_make_account(fd, "agg@example.com");
    wire_device_register(fd, a, "dev1");
    wire_device_register(fd, a, "dev2");
    wire_key_create(fd, a, "device", TIDE__V1__ROLE__ROLE_DEVICE, "dev1",
                    device_key, sizeof(device_key));
    wire_key_create(fd, a, "analyst", TIDE__V1__ROLE__ROLE_ANALYST, NULL,
                    analyst_key, sizeof(analyst_key));
    close(fd);
    tide_client_options_init(&o);
    o.port = (uint16_t)srv.port;
    o.api_key = device_key;
    cr_assert_eq(tide_client_open(&o, &w), 0);
    for (int i = 0; i < POINTS; i++) {
        int64_t ts = base + i * S_NS;

        cr_assert_eq(tide_write_f64(w, "dev1", "v", ts, (i * 37) % 101 * 0.5),
                     0);
        cr_assert_eq(tide_write_i64(w, "dev1", "n", ts, (i * 13) % 29 - 9), 0);
    }
    cr_assert_eq(tide_flush(w), 0);
    tide_client_close(w);
    return base;
}

static tide_client *open_analyst(void)
{
    struct tide_client_options o;
    tide_client *c = NULL;

    tide_client_options_init(&o);
    o.port = (uint16_t)srv.port;
    o.api_key = analyst_key;
    cr_assert_eq(tide_client_open(&o, &c), 0);
    return c;
}

/* Run `q` into out[cap]; returns the number of buckets, or a negative
 * error (the query's). The values are agg_values, or the typed array's
 * value for one aggregate. */
static int run(tide_client *c, const struct tide_query_params *q,
               struct bkt *out, int cap)
{
    struct tide_series_block b;
    tide_query_iter *it;
    int rc, n = 0;

    rc = tide_query_open(c, q, &it);
    if (rc)
        return rc;
    while ((rc = tide_query_next(it, &b)) == 0) {
        cr_assert_not_null(b.counts);
        cr_assert_eq(b.n_aggs, q->n_aggs ? q->n_aggs : 1);
        for (size_t i = 0; i < b.n; i++) {
            struct bkt *k = &out[n++];

            cr_assert_leq(n, cap);
            snprintf(k->device, sizeof(k->device), "%s", b.device);
            snprintf(k->field, sizeof(k->field), "%s", b.field);
            k->ts_ns = b.ts_ns[i];
            k->count = b.counts[i];
            for (size_t a = 0; a < b.n_aggs; a++)
                k->v[a] = b.agg_values[i * b.n_aggs + a];
            /* The first aggregate is also where v1 puts it. */
            cr_assert_eq(k->v[0], b.f64   ? b.f64[i]
                                  : b.i64 ? (double)b.i64[i]
                                          : (double)b.counts[i]);
        }
    }
    tide_query_close(it);
    return rc == TIDE_CLIENT_DONE ? n : rc;
}

/* Several aggregates at once equal one query per aggregate, bucket by
 * bucket, per device and fleet-wide. */
static void check_against_singles(tide_client *c, struct tide_query_params q)
{
    static struct bkt all[2048], one[2048];
    int n = run(c, &q, all, 2048);

    cr_assert_gt(n, 0, "query: %s", tide_strerror(n));
    for (size_t a = 0; a < q.n_aggs; a++) {
        struct tide_query_params s = q;
        int m;

        s.aggs = NULL;
        s.n_aggs = 0;
        s.agg = q.aggs[a];
        m = run(c, &s, one, 2048);
        cr_assert_eq(m, n, "aggregate %zu: %d buckets, want %d", a, m, n);
        for (int i = 0; i < n; i++) {
            cr_assert_str_eq(all[i].device, one[i].device);
            cr_assert_str_eq(all[i].field, one[i].field);
            cr_assert_eq(all[i].ts_ns, one[i].ts_ns);
            cr_assert_eq(all[i].count, one[i].count);
            cr_assert_eq(all[i].v[a], one[i].v[0],
                         "aggregate %zu bucket %d: %.17g, want %.17g", a, i,
                         all[i].v[a], one[i].v[0]);
        }
    }
}

Test(aggregate, several_aggregates_match_single_queries)
{
    int64_t base = make_data();
    tide_client *c = open_analyst();
    enum tide_agg avg_max[] = {TIDE_AGG_AVG, TIDE_AGG_MAX};
    enum tide_agg every[] = {TIDE_AGG_LAST, TIDE_AGG_COUNT, TIDE_AGG_SUM,
                             TIDE_AGG_MIN,  TIDE_AGG_MAX,   TIDE_AGG_AVG,
                             TIDE_AGG_FIRST};
    struct tide_query_params q = {.from_ns = base + 7 * S_NS,
                                  .to_ns = base + POINTS * S_NS,
                                  .bucket_ns = 60 * S_NS,
                                  .group_by_device = 1,
                                  .aggs = avg_max,
                                  .n_aggs = 2};

    check_against_singles(c, q);
    q.aggs = every;
    q.n_aggs = sizeof(every) / sizeof(every[0]);
    check_against_singles(c, q);
    q.group_by_device = 0; /* fleet-wide */
    q.bucket_offset_ns = 25 * S_NS;
    check_against_singles(c, q);
    q.bucket_ns = 0; /* one bucket */
    check_against_singles(c, q);
    tide_client_close(c);
}

Test(aggregate, malformed_lists_are_invalid_argument)
{
    enum tide_agg dup[] = {TIDE_AGG_MAX, TIDE_AGG_AVG, TIDE_AGG_MAX};
    enum tide_agg none[] = {TIDE_AGG_MAX, TIDE_AGG_NONE};
    enum tide_agg bad[] = {TIDE_AGG_MAX, (enum tide_agg)99};
    enum tide_agg nine[9] = {1, 2, 3, 4, 5, 6, 7, 1, 2};
    enum tide_agg max_avg[] = {TIDE_AGG_MAX, TIDE_AGG_AVG};
    struct {
        const enum tide_agg *aggs;
        size_t n;
        enum tide_agg agg;
        int latest;
        const char *why;
    } cases[] = {
        {dup, 3, TIDE_AGG_NONE, 0, "twice"},
        {none, 2, TIDE_AGG_NONE, 0, "NONE"},
        {bad, 2, TIDE_AGG_NONE, 0, "unknown"},
        {nine, 9, TIDE_AGG_NONE, 0, "more than 8"},
        {max_avg, 2, TIDE_AGG_NONE, 1, "latest"},
    };
    static struct bkt out[64];
    tide_client *c;

    (void)make_data();
    c = open_analyst();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tide_query_params q = {.from_ns = T0,
                                      .to_ns = T0 + 3600 * S_NS,
                                      .group_by_device = 1,
                                      .agg = cases[i].agg,
                                      .aggs = cases[i].aggs,
                                      .n_aggs = cases[i].n,
                                      .latest = cases[i].latest};
        const char *msg = NULL;
        int code = 0;

        cr_assert_eq(run(c, &q, out, 64), TIDE_ESERVER, "case %zu", i);
        cr_assert_eq(tide_client_last_error(c, &code, &msg), 0);
        cr_assert_eq(code, TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                     "case %zu: code %d", i, code);
        cr_assert_not_null(strstr(msg, cases[i].why), "case %zu: %s", i, msg);
    }
    tide_client_close(c);
}

/* The last frame of a Query on `fd` that sets both `aggregation` and
 * aggregations {MAX, AVG}: an Error's code, or 0 after QueryEnd. */
static int query_both(int fd, Tide__V1__Aggregation agg)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Query q = TIDE__V1__QUERY__INIT;
    Tide__V1__Aggregation aggs[] = {TIDE__V1__AGGREGATION__AGGREGATION_MAX,
                                    TIDE__V1__AGGREGATION__AGGREGATION_AVG};
    int code = -1;

    q.from_ns = T0;
    q.to_ns = T0 + 3600 * S_NS;
    q.aggregation = agg;
    q.aggregations = aggs;
    q.n_aggregations = 2;
    q.group_by_device = 1;
    e.request_id = next_rid++;
    e.body_case = TIDE__V1__ENVELOPE__BODY_QUERY;
    e.query = &q;
    cr_assert_eq(wire_send(fd, &e), 0);
    while (code < 0 && (r = wire_recv(fd))) {
        if (r->body_case == TIDE__V1__ENVELOPE__BODY_ERROR)
            code = (int)r->error->code;
        else if (r->body_case == TIDE__V1__ENVELOPE__BODY_QUERY_END)
            code = 0;
        tide_frame_free(r, NULL);
    }
    return code;
}

/* `aggregation` beside a list must be NONE or the list's first entry. */
Test(aggregate, aggregation_beside_aggregations)
{
    int fd;

    (void)make_data();
    fd = wire_session(srv.port, analyst_key);
    cr_assert_geq(fd, 0);
    cr_assert_eq(query_both(fd, TIDE__V1__AGGREGATION__AGGREGATION_AVG),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT);
    cr_assert_eq(query_both(fd, TIDE__V1__AGGREGATION__AGGREGATION_MAX), 0);
    cr_assert_eq(query_both(fd, TIDE__V1__AGGREGATION__AGGREGATION_NONE), 0);
    close(fd);
}

/* Buckets start at multiples of bucket_ns since the epoch (plus the
 * offset), not at from_ns; the first holds only the points >= from_ns. */
Test(aggregate, buckets_are_aligned_to_the_epoch)
{
    int64_t base = make_data(); /* a multiple of 60 s */
    tide_client *c = open_analyst();
    const char *fields[] = {"v"};
    struct tide_query_params q = {.fields = fields,
                                  .n_fields = 1,
                                  .from_ns = base + 7 * S_NS,
                                  .to_ns = base + POINTS * S_NS,
                                  .bucket_ns = 60 * S_NS,
                                  .group_by_device = 1,
                                  .agg = TIDE_AGG_COUNT};
    static struct bkt out[64];
    int n = run(c, &q, out, 64);

    cr_assert_eq(n, POINTS / 60, "%d buckets", n);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(out[i].ts_ns, base + i * 60 * S_NS, "bucket %d", i);
        cr_assert_eq(out[i].count, i ? 60 : 53, "bucket %d", i);
    }
    /* Offset 20 s: buckets at base + 20 s + k * 60 s; the first is
     * [base - 40 s, base + 20 s), which holds 7 s..19 s only. */
    q.bucket_offset_ns = 20 * S_NS;
    n = run(c, &q, out, 64);
    cr_assert_eq(n, POINTS / 60 + 1, "%d buckets", n);
    cr_assert_eq(out[0].ts_ns, base - 40 * S_NS);
    cr_assert_eq(out[0].count, 13);
    cr_assert_eq(out[1].ts_ns, base + 20 * S_NS);
    cr_assert_eq(out[1].count, 60);
    cr_assert_eq(out[n - 1].ts_ns, base + 560 * S_NS);
    cr_assert_eq(out[n - 1].count, 40);
    /* Only the offset modulo the bucket matters, negative ones too. */
    q.bucket_offset_ns = -40 * S_NS;
    cr_assert_eq(run(c, &q, out, 64), n);
    cr_assert_eq(out[0].ts_ns, base - 40 * S_NS);
    cr_assert_eq(out[0].count, 13);
    tide_client_close(c);
}

static int64_t wall_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * S_NS + t.tv_nsec;
}

/* Behind a retention horizon, an aggregate starts at the first bucket
 * boundary at or after it on the epoch-aligned grid: no bucket is partly
 * expired, and the first bucket's start is a multiple of bucket_ns. */
Test(aggregate, horizon_clamps_to_an_aligned_boundary)
{
    struct tide_client_options o;
    tide_client *admin = NULL, *w = NULL, *c;
    const char *fields[] = {"r"};
    static struct bkt out[64];
    int64_t now = wall_ns(), before, after, first;
    char arg[64];
    const char *args[2];
    uint64_t total = 0, want = 0;
    int n;

    (void)make_data();
    /* Start 5 s to 45 s into a minute, so that the boundary after the
     * horizon has points after it whatever the test's pace. */
    while (now % (60 * S_NS) < 5 * S_NS || now % (60 * S_NS) >= 45 * S_NS) {
        usleep(500 * 1000);
        now = wall_ns();
    }
    tide_client_options_init(&o);
    o.port = (uint16_t)srv.port;
    o.api_key = device_key;
    cr_assert_eq(tide_client_open(&o, &w), 0);
    for (int i = 1; i <= 100; i++)
        cr_assert_eq(tide_write_f64(w, "dev1", "r", now - i * S_NS, i), 0);
    cr_assert_eq(tide_flush(w), 0);
    tide_client_close(w);
    /* A 60-second retention: the horizon is a minute ago. */
    o.api_key = srv.admin_key;
    cr_assert_eq(tide_client_open(&o, &admin), 0);
    args[0] = "tier.name=minute";
    args[1] = "tier.telemetry_ttl_s=60";
    cr_assert_eq(tide_client_call(admin, "tier_upsert", args, 2, NULL), 0);
    snprintf(arg, sizeof(arg), "account_id=%llu", (unsigned long long)account);
    args[0] = arg;
    args[1] = "tier=minute";
    cr_assert_eq(tide_client_call(admin, "tier_set", args, 2, NULL), 0);
    tide_client_close(admin);
    c = open_analyst();
    {
        struct tide_query_params q = {.fields = fields,
                                      .n_fields = 1,
                                      .from_ns = now - 117 * S_NS,
                                      .to_ns = now + S_NS,
                                      .bucket_ns = 60 * S_NS,
                                      .group_by_device = 1,
                                      .agg = TIDE_AGG_COUNT};

        before = wall_ns();
        n = run(c, &q, out, 64);
        after = wall_ns();
    }
    tide_client_close(c);
    cr_assert_gt(n, 0, "query: %s", tide_strerror(n));
    first = out[0].ts_ns;
    cr_assert_eq(first % (60 * S_NS), 0, "first bucket at %lld",
                 (long long)first);
    cr_assert_geq(first, before - 60 * S_NS);
    cr_assert_lt(first, after);
    for (int i = 0; i < n; i++)
        total += out[i].count;
    for (int i = 1; i <= 100; i++)
        want += now - i * S_NS >= first;
    cr_assert_eq(total, want, "%llu points from %lld, want %llu",
                 (unsigned long long)total, (long long)first,
                 (unsigned long long)want);
}

Test(aggregate, cli_query_with_several_aggregates)
{
    int64_t base = make_data();
    char args[512], out[16384];
    static struct bkt want[64];
    tide_client *c = open_analyst();
    enum tide_agg avg_max[] = {TIDE_AGG_AVG, TIDE_AGG_MAX};
    const char *fields[] = {"v"};
    struct tide_query_params q = {.fields = fields,
                                  .n_fields = 1,
                                  .from_ns = base,
                                  .to_ns = base + POINTS * S_NS,
                                  .bucket_ns = 60 * S_NS,
                                  .group_by_device = 1,
                                  .aggs = avg_max,
                                  .n_aggs = 2};
    int n = run(c, &q, want, 64);
    char *line;

    tide_client_close(c);
    cr_assert_eq(n, POINTS / 60);
    snprintf(args, sizeof(args),
             "--output csv query --field v --from %lld --to %lld --agg "
             "avg,max --bucket 1m --by-device",
             (long long)base, (long long)(base + POINTS * S_NS));
    cr_assert_eq(fixture_cli(analyst_key, args, NULL, out, sizeof(out)), 0,
                 "query: %s", out);
    cr_assert_eq(strncmp(out, "device,field,ts_ns,avg,max\n", 27), 0, "%s",
                 out);
    line = out + 27;
    for (int i = 0; i < n; i++) {
        char expect[256];

        snprintf(expect, sizeof(expect), "dev1,v,%lld,%.17g,%.17g\n",
                 (long long)want[i].ts_ns, want[i].v[0], want[i].v[1]);
        cr_assert_eq(strncmp(line, expect, strlen(expect)), 0,
                     "line %d: %s, want %s", i, line, expect);
        line += strlen(expect);
    }
    cr_assert_eq(*line, 0, "extra output: %s", line);
    /* An unknown aggregate is a usage error; a duplicate the server's. */
    cr_assert_eq(fixture_cli(analyst_key, "query --agg avg,median --bucket 1m",
                             NULL, out, sizeof(out)),
                 2);
    cr_assert_eq(fixture_cli(analyst_key, "query --agg avg,avg --bucket 1m",
                             NULL, out, sizeof(out)),
                 1);
    snprintf(args, sizeof(args),
             "--output json query --field v --from %lld --to %lld --agg "
             "count,max --bucket 1m --bucket-offset -40s --by-device",
             (long long)(base + 7 * S_NS), (long long)(base + POINTS * S_NS));
    cr_assert_eq(fixture_cli(analyst_key, args, NULL, out, sizeof(out)), 0,
                 "query: %s", out);
    snprintf(args, sizeof(args), "\"ts_ns\":%lld,\"count\":13,\"max\":",
             (long long)(base - 40 * S_NS));
    cr_assert_not_null(strstr(out, args), "json output: %s", out);
}
