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

#include "tide/client.h"
#include "wire.h"

TestSuite(client, .init = fixture_init, .fini = fixture_fini, .timeout = 120);

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
    cr_assert_eq(rc, 0, "tide_client_open: %s", tide_strerror(rc));
    return c;
}

/* A client with no key, from default options with the server's port left
 * in *o for the caller to open more. */
static tide_client *open_anonymous(struct tide_client_options *o)
{
    tide_client *c = NULL;

    tide_client_options_init(o);
    o->port = (uint16_t)srv.port;
    cr_assert_eq(tide_client_open(o, &c), 0);
    return c;
}

/* The "login" call with `creds` (email and password arguments) on `c`;
 * the session token it returns into token[256]. */
static void login(tide_client *c, const char *const creds[2], char *token)
{
    tide_result *r = NULL;

    cr_assert_eq(tide_client_call(c, "login", creds, 2, &r), 0);
    snprintf(token, 256, "%s", tide_result_find(r, 0, "session_token"));
    tide_result_free(r);
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
    cr_assert_eq(rc, 0, "account_create: %s", tide_strerror(rc));
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
    cr_assert_eq(rc, TIDE_CLIENT_DONE, "query: %s", tide_strerror(rc));
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

Test(client, admin_requests_over_the_wire)
{
    char dkey[128], akey[128];
    tide_client *admin = open_client(srv.admin_key), *bad;
    struct tide_client_options o;
    tide_result *r = NULL;
    const char *args[4];
    char acc[64];
    int rc;

    make_account("admin@client.example", dkey, akey);
    /* The analyst key's account id, from its AuthOk. */
    {
        tide_client *a = open_client(akey);
        uint64_t id;

        tide_client_identity(a, &id, NULL, NULL);
        snprintf(acc, sizeof(acc), "account_id=%llu", (unsigned long long)id);
        tide_client_close(a);
    }
    /* Rectification of the profile and of device metadata. */
    args[0] = acc;
    args[1] = "set=timezone";
    args[2] = "timezone=Europe/Berlin";
    cr_assert_eq(tide_client_call(admin, "account_update", args, 3, &r), 0);
    cr_assert_str_eq(tide_result_find(r, 0, "timezone"), "Europe/Berlin");
    tide_result_free(r);
    args[2] = "timezone=Not/AZone";
    cr_assert_eq(tide_client_call(admin, "account_update", args, 3, NULL),
                 TIDE_ESERVER);
    args[1] = "name=dev1";
    args[2] = "set=firmware_version";
    args[3] = "device.firmware_version=2.1.0";
    cr_assert_eq(tide_client_call(admin, "device_update", args, 4, &r), 0);
    cr_assert_str_eq(tide_result_find(r, 0, "firmware_version"), "2.1.0");
    tide_result_free(r);
    /* A failed key authentication shows in the account's auth log. */
    tide_client_options_init(&o);
    o.port = (uint16_t)srv.port;
    o.api_key = "tide_live_0000000000000000000000000000000000000000000000";
    cr_assert_neq(tide_client_open(&o, &bad), 0);
    cr_assert_eq(tide_client_call(admin, "auth_log_get", args, 1, &r), 0);
    cr_assert_geq(tide_result_rows(r), 1, "the key authentications");
    tide_result_free(r);
    /* Creating keys notified the owner. */
    rc = tide_client_call(admin, "notification_list", args, 1, &r);
    cr_assert_eq(rc, 0);
    cr_assert_geq(tide_result_rows(r), 1);
    tide_result_free(r);
    /* Erasure: the account's keys stop working at once. */
    cr_assert_eq(tide_client_call(admin, "account_delete", args, 1, &r), 0);
    tide_result_free(r);
    o.api_key = akey;
    cr_assert_eq(tide_client_open(&o, &bad), TIDE_EAUTH);
    tide_client_close(admin);
}

Test(client, cli_write_query_and_status)
{
    char dkey[128], akey[128], out[8192], csv[512];

    make_account("cli@client.example", dkey, akey);
    snprintf(csv, sizeof(csv),
             "dev1,temp,%lld,21.5\ndev1,temp,%lld,22\ndev1,state,%lld,ok\n"
             "dev1,note,%lld,\"a,\"\"b\"\"\"\n",
             (long long)T0, (long long)T0 + 1000000000,
             (long long)T0 + 1000000000, (long long)T0);
    cr_assert_eq(fixture_cli(dkey, "write", csv, out, sizeof(out)), 0,
                 "write: %s", out);
    cr_assert_eq(fixture_cli(akey, "--output csv query --field temp --from -2h",
                             NULL, out, sizeof(out)),
                 0, "query: %s", out);
    cr_assert_not_null(strstr(out, "21.5"), "query output: %s", out);
    cr_assert_not_null(strstr(out, "22"), "query output: %s", out);
    cr_assert_eq(fixture_cli(srv.admin_key, "status", NULL, out, sizeof(out)),
                 0);
    cr_assert_not_null(strstr(out, "server_version"));
    cr_assert_eq(fixture_cli(akey, "write", csv, out, sizeof(out)), 1,
                 "an analyst key may not write");
    cr_assert_eq(fixture_cli(akey, "no-such-command", NULL, out, sizeof(out)),
                 2);
    /* The operator exports the account: its records, then its points. */
    {
        tide_client *a = open_client(akey);
        uint64_t id;
        char args[128];

        tide_client_identity(a, &id, NULL, NULL);
        tide_client_close(a);
        snprintf(args, sizeof(args), "export --telemetry --csv --account %llu",
                 (unsigned long long)id);
        cr_assert_eq(fixture_cli(srv.admin_key, args, NULL, out, sizeof(out)),
                     0, "export: %s", out);
        cr_assert_not_null(strstr(out, "cli@client.example"), "%s", out);
        cr_assert_not_null(strstr(out, "device,field,ts_ns,value\n"));
        cr_assert_not_null(strstr(out, "dev1,temp,"), "%s", out);
        cr_assert_not_null(strstr(out, "dev1,state,"), "%s", out);
        /* A string with a comma and quotes comes back as one CSV field. */
        cr_assert_not_null(strstr(out, ",\"a,\"\"b\"\"\"\n"), "%s", out);
        cr_assert_eq(fixture_cli(akey, "export", NULL, out, sizeof(out)), 1,
                     "an analyst key may not export");
    }
}

Test(client, password_login_gives_a_session)
{
    char dkey[128], akey[128], token[256];
    struct tide_client_options o;
    tide_client *anon, *owner;
    const char *good[2] = {"email=login@client.example",
                           "password=correct horse battery"};
    const char *bad[2] = {"email=login@client.example",
                          "password=wrong horse battery"};
    double sum;

    make_account("login@client.example", dkey, akey);
    anon = open_anonymous(&o);
    login(anon, good, token);
    cr_assert_eq(tide_client_call(anon, "login", bad, 2, NULL), TIDE_ESERVER,
                 "a wrong password is refused");
    tide_client_close(anon);
    /* The owner's session writes any device of the account. */
    o.session_token = token;
    cr_assert_eq(tide_client_open(&o, &owner), 0);
    cr_assert_eq(tide_write_f64(owner, "new-device", "x", T0, 2.5), 0);
    cr_assert_eq(tide_flush(owner), 0);
    {
        const char *devices[1] = {"new-device"};
        const char *fields[1] = {"x"};
        struct tide_query_params q = {.devices = devices,
                                      .n_devices = 1,
                                      .fields = fields,
                                      .n_fields = 1,
                                      .from_ns = T0,
                                      .to_ns = T0 + 1};
        struct tide_series_block b;
        tide_query_iter *it;

        cr_assert_eq(tide_query_open(owner, &q, &it), 0);
        cr_assert_eq(tide_query_next(it, &b), 0);
        sum = b.f64[0];
        cr_assert_eq(tide_query_next(it, &b), TIDE_CLIENT_DONE);
        tide_query_close(it);
    }
    cr_assert_eq(sum, 2.5);
    tide_client_close(owner);
}

Test(client, fleet_wide_aggregates_merge_devices)
{
    char dkey[128], akey[128];
    tide_client *owner, *r;
    const char *fields[1] = {"v"};
    struct tide_query_params q = {.fields = fields,
                                  .n_fields = 1,
                                  .agg = TIDE_AGG_COUNT,
                                  .bucket_ns = 10000000000ll};
    struct tide_series_block b;
    tide_query_iter *it;
    const int64_t s = 1000000000ll;

    make_account("fleet@client.example", dkey, akey);
    /* Two devices: the points go through the owner's login. */
    {
        struct tide_client_options o;
        tide_client *anon;
        const char *creds[2] = {"email=fleet@client.example",
                                "password=correct horse battery"};
        char token[256];

        anon = open_anonymous(&o);
        login(anon, creds, token);
        tide_client_close(anon);
        o.session_token = token;
        cr_assert_eq(tide_client_open(&o, &owner), 0);
    }
    /* Device a: 1, 2 in [0, 10 s) and 7 in [10 s, 20 s); device b: 5 in
     * the first bucket, 9 and 3 in the second. */
    cr_assert_eq(tide_write_f64(owner, "a", "v", T0, 1), 0);
    cr_assert_eq(tide_write_f64(owner, "a", "v", T0 + s, 2), 0);
    cr_assert_eq(tide_write_f64(owner, "a", "v", T0 + 12 * s, 7), 0);
    cr_assert_eq(tide_write_f64(owner, "b", "v", T0 + 5 * s, 5), 0);
    cr_assert_eq(tide_write_f64(owner, "b", "v", T0 + 11 * s, 9), 0);
    cr_assert_eq(tide_write_f64(owner, "b", "v", T0 + 13 * s, 3), 0);
    cr_assert_eq(tide_flush(owner), 0);
    tide_client_close(owner);
    r = open_client(akey);
    q.from_ns = T0;
    q.to_ns = T0 + 20 * s;
    q.bucket_offset_ns = T0; /* buckets from T0, not from the epoch */
    for (int agg = 0; agg < 2; agg++) {
        q.agg = agg ? TIDE_AGG_MAX : TIDE_AGG_COUNT;
        cr_assert_eq(tide_query_open(r, &q, &it), 0);
        cr_assert_eq(tide_query_next(it, &b), 0);
        cr_assert_str_eq(b.device, "", "one fleet-wide series");
        cr_assert_eq(b.n, 2);
        cr_assert_eq(b.ts_ns[0], T0);
        cr_assert_eq(b.ts_ns[1], T0 + 10 * s);
        cr_assert_eq(b.counts[0], 3);
        cr_assert_eq(b.counts[1], 3);
        if (agg) {
            cr_assert_eq(b.f64[0], 5);
            cr_assert_eq(b.f64[1], 9);
        }
        cr_assert_eq(tide_query_next(it, &b), TIDE_CLIENT_DONE);
        tide_query_close(it);
    }
    tide_client_close(r);
}
