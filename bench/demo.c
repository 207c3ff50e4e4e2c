/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tide-demo: what `make demo` runs against a fresh tided. As the operator
 * (the bootstrap key in admin.key) it creates a "demo" tier without rate
 * limits and an account on it; then it signs in as that account's owner,
 * streams a simulated fleet (devices x 10 f64 fields, bounded
 * random walks with 2 decimals) through libtide for a few seconds with a
 * progress line, then runs the four reference queries and prints their
 * results and timings. Uses only tide/client.h.
 *
 * usage: tide-demo --port P --admin-key-file F [--devices N] [--seconds S]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tide/client.h"

#define FIELDS 10
#define INTERVAL_NS 10000000000ll /* one reading per device every 10 s */

static const char *const field_names[FIELDS] = {
    "usage_user",   "usage_system",    "usage_idle",    "usage_nice",
    "usage_iowait", "usage_irq",       "usage_softirq", "usage_steal",
    "usage_guest",  "usage_guest_nice"};

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double mono_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64*: deterministic, fast, good enough for a demo fleet. */
static uint64_t rng = 42;

static double uniform(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (double)((rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static int die(const char *what, int rc, tide_client *c)
{
    const char *msg = NULL;

    if (c)
        tide_client_last_error(c, NULL, &msg);
    fprintf(stderr, "tide-demo: %s: %s%s%s\n", what, tide_strerror(rc),
            msg ? ": " : "", msg ? msg : "");
    return 1;
}

/* Run one query, print up to `show` series, return its latency in ms. */
static int run_query(tide_client *c, const char *title,
                     const struct tide_query_params *q, int show)
{
    struct tide_series_block b;
    struct tide_query_stats st;
    tide_query_iter *it;
    double t0 = mono_s(), ms;
    int rc, shown = 0;
    size_t points = 0;

    rc = tide_query_open(c, q, &it);
    if (rc)
        return die(title, rc, c);
    while ((rc = tide_query_next(it, &b)) == 0) {
        points += b.n;
        if (shown < show && b.n && !b.continued) {
            double v = b.f64   ? b.f64[b.n - 1]
                       : b.i64 ? (double)b.i64[b.n - 1]
                               : 0;

            printf("    %-10s %-14s %6zu values, last %.2f\n",
                   b.device[0] ? b.device : "(fleet)", b.field, b.n, v);
            shown++;
        }
    }
    ms = (mono_s() - t0) * 1000;
    if (rc != TIDE_CLIENT_DONE) {
        tide_query_close(it);
        return die(title, rc, c);
    }
    tide_query_stats_get(it, &st);
    tide_query_close(it);
    printf("  %-52s %8.3f ms  (%" PRIu64 " series, %zu values)\n", title, ms,
           st.series, points);
    return 0;
}

#define DEMO_EMAIL "demo@tide.example"
#define DEMO_PASSWORD "tide-demo-password"

/* The operator's part: the tier and the account (both may exist from an
 * earlier run of the demo on the same data directory). */
static int provision(unsigned port, const char *key_file)
{
    static const char *const tier[] = {
        "tier.name=demo", "tier.telemetry_ttl_s=7776000", "tier.points_per_s=0",
        "tier.daily_points=0"};
    static const char *const account[] = {
        "email=" DEMO_EMAIL, "password=" DEMO_PASSWORD, "tier=demo"};
    struct tide_client_options o;
    tide_client *admin = NULL;
    char key[256] = "";
    FILE *f = fopen(key_file, "r");
    int rc, code;

    if (!f || !fgets(key, sizeof(key), f)) {
        fprintf(stderr, "tide-demo: cannot read %s\n", key_file);
        if (f)
            fclose(f);
        return 1;
    }
    fclose(f);
    key[strcspn(key, "\r\n")] = 0;
    tide_client_options_init(&o);
    o.port = (uint16_t)port;
    o.api_key = key;
    rc = tide_client_open(&o, &admin);
    if (rc)
        return die("operator connect", rc, NULL);
    rc = tide_client_call(admin, "tier_upsert", tier, 4, NULL);
    if (rc)
        return die("tier_upsert", rc, admin);
    rc = tide_client_call(admin, "account_create", account, 3, NULL);
    if (rc && !(rc == TIDE_ESERVER &&
                tide_client_last_error(admin, &code, NULL) == 0 &&
                code == 10 /* ALREADY_EXISTS */))
        return die("account_create", rc, admin);
    tide_client_close(admin);
    printf("operator: tier \"demo\" and account %s ready\n", DEMO_EMAIL);
    return 0;
}

int main(int argc, char **argv)
{
    const char *email = DEMO_EMAIL, *password = DEMO_PASSWORD;
    const char *key_file = NULL;
    unsigned port = 8433, devices = 100, seconds = 10;
    struct tide_client_options o;
    struct tide_client_stats st;
    tide_client *anon = NULL, *c = NULL;
    tide_result *r = NULL;
    char token[256], dev[64];
    double *walk, t0, last = 0;
    int64_t start_ns, ts;
    uint64_t written = 0;
    int tty = isatty(1), rc;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port"))
            port = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--admin-key-file"))
            key_file = argv[i + 1];
        else if (!strcmp(argv[i], "--devices"))
            devices = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds"))
            seconds = (unsigned)atoi(argv[i + 1]);
    }
    if (!key_file || !devices || devices > 100000) {
        fprintf(stderr, "usage: tide-demo --port P --admin-key-file F "
                        "[--devices N] [--seconds S]\n");
        return 2;
    }
    if (provision(port, key_file))
        return 1;

    /* Sign in: Login on an unauthenticated connection gives a session. */
    tide_client_options_init(&o);
    o.port = (uint16_t)port;
    rc = tide_client_open(&o, &anon);
    if (rc)
        return die("connect", rc, NULL);
    {
        char a0[300], a1[300];
        const char *args[2] = {a0, a1};

        snprintf(a0, sizeof(a0), "email=%s", email);
        snprintf(a1, sizeof(a1), "password=%s", password);
        rc = tide_client_call(anon, "login", args, 2, &r);
    }
    if (rc)
        return die("login", rc, anon);
    snprintf(token, sizeof(token), "%s",
             tide_result_find(r, 0, "session_token"));
    tide_result_free(r);
    tide_client_close(anon);
    o.session_token = token;
    o.batch_points = 20000;
    rc = tide_client_open(&o, &c);
    if (rc)
        return die("open session", rc, NULL);

    /* Stream the fleet: the simulated clock runs ahead of real time, one
     * reading per device and field every 10 s of simulated time, ending
     * now; the demo writes as fast as the server acknowledges. */
    walk = calloc((size_t)devices * FIELDS, sizeof(*walk));
    if (!walk)
        return die("memory", -12, NULL);
    for (size_t i = 0; i < (size_t)devices * FIELDS; i++)
        walk[i] = (double)(int)(uniform() * 10000) / 100;
    start_ns = now_ns() - 24ll * 3600 * 1000000000;
    ts = start_ns;
    printf("streaming %u devices x %d fields for %u s ...\n", devices, FIELDS,
           seconds);
    t0 = mono_s();
    while (mono_s() - t0 < seconds && ts < now_ns()) {
        for (unsigned d = 0; d < devices; d++) {
            snprintf(dev, sizeof(dev), "host_%u", d);
            for (int f = 0; f < FIELDS; f++) {
                double *v = &walk[(size_t)d * FIELDS + (size_t)f];

                *v += (double)((int)(uniform() * 201) - 100) / 100;
                if (*v < 0)
                    *v = -*v;
                if (*v > 100)
                    *v = 200 - *v;
                *v = (double)(int64_t)(*v * 100 + 0.5) / 100;
                rc = tide_write_f64(c, dev, field_names[f], ts, *v);
                if (rc)
                    return die("write", rc, c);
                written++;
            }
        }
        ts += INTERVAL_NS;
        if (mono_s() - last > 0.5) {
            last = mono_s();
            tide_client_stats_get(c, &st);
            /* One line redrawn on a terminal, a line per update in a log. */
            printf("%s  %10" PRIu64 " points written, %10" PRIu64
                   " acknowledged, %6.2f M points/s %s",
                   tty ? "\r" : "", written, st.points_acked,
                   (double)st.points_acked / (last - t0) / 1e6,
                   tty ? "" : "\n");
            fflush(stdout);
        }
    }
    rc = tide_flush(c);
    if (rc)
        return die("flush", rc, c);
    tide_client_stats_get(c, &st);
    printf("%s  %10" PRIu64 " points written, %10" PRIu64
           " acknowledged durable in %.2f s (%.2f M points/s)\n",
           tty ? "\r" : "", written, st.points_acked, mono_s() - t0,
           (double)st.points_acked / (mono_s() - t0) / 1e6);

    /* The four reference queries, over the simulated day. */
    {
        const char *one[1] = {"host_0"};
        const char *user[1] = {"usage_user"};
        int64_t end = ts, hour = 3600ll * 1000000000;
        struct tide_query_params q1 = {.devices = one,
                                       .n_devices = 1,
                                       .from_ns = end - hour,
                                       .to_ns = end};
        struct tide_query_params q2 = {.devices = one,
                                       .n_devices = 1,
                                       .fields = user,
                                       .n_fields = 1,
                                       .from_ns = start_ns,
                                       .to_ns = end,
                                       .agg = TIDE_AGG_AVG,
                                       .bucket_ns = 300ll * 1000000000,
                                       .group_by_device = 1};
        struct tide_query_params q3 = {.fields = user,
                                       .n_fields = 1,
                                       .from_ns = end - hour,
                                       .to_ns = end,
                                       .agg = TIDE_AGG_MAX,
                                       .group_by_device = 1};
        struct tide_query_params q4 = {.from_ns = start_ns,
                                       .to_ns = end,
                                       .agg = TIDE_AGG_AVG,
                                       .group_by_device = 1};

        printf("reference queries:\n");
        if (run_query(c, "Q1 raw, 1 device, all fields, last hour", &q1, 3) ||
            run_query(c, "Q2 5-min avg of 1 field of 1 device", &q2, 1) ||
            run_query(c, "Q3 max of 1 field per device, last hour", &q3, 3) ||
            run_query(c, "Q4 avg of every field per device, whole run", &q4, 3))
            return 1;
    }
    free(walk);
    tide_client_close(c);
    return 0;
}
