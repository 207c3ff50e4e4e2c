/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration tests of libtide against the real tided: every value type
 * through the buffered writer and the query iterator, admin calls, and a
 * writer that keeps going while the server is killed and restarted on the
 * same port (nothing acknowledged lost, nothing applied twice).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "tide/client.h"
#include "tided.h"

static struct tided_proc srv;
static char dir[1024];
static int64_t T0;

static void setup(void)
{
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    T0 = ((int64_t)now.tv_sec - 3600) * 1000000000;
    snprintf(dir, sizeof(dir), "%s", test_tmpdir());
    cr_assert_eq(tided_start(&srv, dir, NULL), 0, "tided did not start");
}

static void teardown(void)
{
    tided_kill(&srv);
    test_rmrf(dir);
}

TestSuite(client, .init = setup, .fini = teardown, .timeout = 120);

static tide_client *open_client(const char *key)
{
    struct tide_client_options o;
    tide_client *c = NULL;
    int rc;

    tide_client_options_init(&o);
    o.port = (uint16_t)srv.port;
    o.api_key = key;
    o.backoff_base_ms = 20;
    o.backoff_max_ms = 200;
    rc = tide_client_open(&o, &c);
    cr_assert_eq(rc, 0, "tide_client_open: %s", tide_client_strerror(rc));
    return c;
}

/* As the operator: an account on a tier without rate limits, device
 * "dev1" and its device key, and an analyst key. */
static void make_account(const char *email, char *dkey, char *akey)
{
    tide_client *admin = open_client(srv.admin_key);
    tide_result *r = NULL;
    char arg[4][160];
    const char *args[4];
    const char *v;
    int rc;

    args[0] = "tier.name=unlimited";
    args[1] = "tier.telemetry_ttl_s=2592000";
    cr_assert_eq(tide_client_call(admin, "tier_upsert", args, 2, NULL), 0);
    snprintf(arg[0], sizeof(arg[0]), "email=%s", email);
    args[0] = arg[0];
    args[1] = "password=correct horse battery";
    args[2] = "tier=unlimited";
    rc = tide_client_call(admin, "account_create", args, 3, &r);
    cr_assert_eq(rc, 0, "account_create: %s", tide_client_strerror(rc));
    v = tide_result_find(r, 0, "account.id");
    cr_assert_not_null(v);
    snprintf(arg[0], sizeof(arg[0]), "account_id=%s", v);
    tide_result_free(r);
    args[0] = arg[0];
    args[1] = "device.name=dev1";
    cr_assert_eq(tide_client_call(admin, "device_register", args, 2, NULL), 0);
    args[1] = "name=dk";
    args[2] = "role=ROLE_DEVICE";
    args[3] = "device=dev1";
    cr_assert_eq(tide_client_call(admin, "key_create", args, 4, &r), 0);
    snprintf(dkey, 128, "%s", tide_result_find(r, 0, "secret"));
    tide_result_free(r);
    args[1] = "name=ak";
    args[2] = "role=ROLE_ANALYST";
    cr_assert_eq(tide_client_call(admin, "key_create", args, 3, &r), 0);
    snprintf(akey, 128, "%s", tide_result_find(r, 0, "secret"));
    tide_result_free(r);
    tide_client_close(admin);
}

/* Points of dev1/field in [T0, T0 + span) and the sum of their f64s. */
static size_t count_points(tide_client *c, const char *field, int64_t span,
                           double *sum, enum tide_value_type *type)
{
    const char *fields[1] = {field};
    struct tide_query_params q = {
        .fields = fields, .n_fields = 1, .from_ns = T0, .to_ns = T0 + span};
    struct tide_series_block b;
    tide_query_iter *it;
    size_t n = 0;
    int rc;

    if (sum)
        *sum = 0;
    cr_assert_eq(tide_query_open(c, &q, &it), 0);
    while ((rc = tide_query_next(it, &b)) == 0) {
        if (type)
            *type = b.type;
        for (size_t i = 0; sum && b.f64 && i < b.n; i++)
            *sum += b.f64[i];
        n += b.n;
    }
    cr_assert_eq(rc, TIDE_CLIENT_DONE, "query: %s", tide_client_strerror(rc));
    tide_query_close(it);
    return n;
}

Test(client, every_type_round_trips)
{
    char dkey[128], akey[128];
    tide_client *w, *r;
    struct tide_client_stats st;
    enum tide_value_type type;
    double sum;

    make_account("types@client.example", dkey, akey);
    w = open_client(dkey);
    for (int i = 0; i < 1000; i++) {
        int64_t ts = T0 + i * 1000000ll;

        cr_assert_eq(tide_write_f64(w, "dev1", "f", ts, i * 0.25), 0);
        cr_assert_eq(tide_write_i64(w, "dev1", "i", ts, -i), 0);
        cr_assert_eq(tide_write_bool(w, "dev1", "b", ts, i & 1), 0);
        cr_assert_eq(tide_write_str(w, "dev1", "s", ts, i % 2 ? "on" : "off"),
                     0);
    }
    cr_assert_eq(tide_flush(w), 0);
    tide_client_stats_get(w, &st);
    cr_assert_eq(st.points_acked, 4000);
    cr_assert_eq(st.points_rejected, 0);
    tide_client_close(w);

    r = open_client(akey);
    cr_assert_eq(count_points(r, "f", 3600000000000ll, &sum, &type), 1000);
    cr_assert_eq(type, TIDE_VALUE_F64);
    cr_assert_eq(sum, 0.25 * 999 * 1000 / 2);
    cr_assert_eq(count_points(r, "i", 3600000000000ll, NULL, &type), 1000);
    cr_assert_eq(type, TIDE_VALUE_I64);
    cr_assert_eq(count_points(r, "b", 3600000000000ll, NULL, &type), 1000);
    cr_assert_eq(count_points(r, "s", 3600000000000ll, NULL, &type), 1000);
    cr_assert_eq(type, TIDE_VALUE_STR);
    tide_client_close(r);
}

Test(client, writer_survives_a_server_restart)
{
    char dkey[128], akey[128], listen[64];
    const char *settings[2] = {listen, NULL};
    tide_client *w, *r;
    struct tide_client_stats st;
    enum { POINTS = 60000 };

    make_account("restart@client.example", dkey, akey);
    snprintf(listen, sizeof(listen), "listen=127.0.0.1:%d", srv.port);
    w = open_client(dkey);
    for (int i = 0; i < POINTS; i++) {
        if (i == POINTS / 3) {
            /* kill -9 mid-stream, then the same port again. */
            tided_kill(&srv);
        }
        if (i == POINTS / 2)
            cr_assert_eq(tided_start(&srv, dir, settings), 0);
        cr_assert_eq(tide_write_f64(w, "dev1", "v", T0 + i, 1.0), 0);
    }
    cr_assert_eq(tide_flush(w), 0);
    tide_client_stats_get(w, &st);
    cr_assert_eq(st.points_acked, POINTS, "acked %llu",
                 (unsigned long long)st.points_acked);
    cr_assert_geq(st.reconnects, 1);
    tide_client_close(w);
    r = open_client(akey);
    {
        double sum;

        /* Exactly once: every point present, none twice (sum of ones). */
        cr_assert_eq(count_points(r, "v", POINTS, &sum, NULL), POINTS);
        cr_assert_eq(sum, POINTS);
    }
    tide_client_close(r);
}
