/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration tests of tided over raw protocol frames: the real server on
 * 127.0.0.1, port 0, a temporary data directory. Handshake, auth failures,
 * write/query round trip of every type, role boundaries, duplicate batches,
 * bad input of every kind, idle connections, a client that never reads,
 * kill -9 during ingest, /metrics and a clean SIGTERM.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "frame.h"
#include "testutil.h"
#include "wire.h"

static void start(const char *const *settings)
{
    cr_assert_eq(tided_start(&srv, dir, settings), 0, "tided did not start");
    cr_assert_neq(srv.admin_key[0], 0, "no admin.key written");
}

/* The fixture with `settings`: a fresh server that wrote its admin key. */
static void start_fresh(const char *const *settings)
{
    fixture_start(settings);
    cr_assert_neq(srv.admin_key[0], 0, "no admin.key written");
}

static void setup(void)
{
    start_fresh(NULL);
}

TestSuite(server, .init = setup, .fini = fixture_fini, .timeout = 120);

/* ---- Helpers ------------------------------------------------------------- */

static void expect_error(Tide__V1__Envelope *r, Tide__V1__ErrorCode code)
{
    cr_assert_not_null(r, "no response");
    cr_assert_eq(r->body_case, TIDE__V1__ENVELOPE__BODY_ERROR,
                 "body %d, expected an Error", r->body_case);
    cr_assert_eq(r->error->code, code, "error %d (%s), expected %d",
                 r->error->code, r->error->message, code);
    tide_frame_free(r, NULL);
}

/* As the operator: an account on tier `tier` with a device "dev1", a device
 * key for it and an analyst key. Returns the account id. */
static uint64_t make_account_on(const char *email, const char *tier,
                                char *device_key, char *analyst_key)
{
    int fd = wire_session(srv.port, srv.admin_key);
    uint64_t account;

    cr_assert_geq(fd, 0, "admin session");
    if (!strcmp(tier, "unlimited"))
        wire_tier_upsert(fd, tier, 0, 0);
    account = wire_account_create(fd, email, tier);
    wire_device_register(fd, account, "dev1");
    wire_key_create(fd, account, "device key", TIDE__V1__ROLE__ROLE_DEVICE,
                    "dev1", device_key, 128);
    wire_key_create(fd, account, "analyst key", TIDE__V1__ROLE__ROLE_ANALYST,
                    NULL, analyst_key, 128);
    close(fd);
    return account;
}

/* An account without rate limits (tier "unlimited"). */
static uint64_t make_account(const char *email, char *device_key,
                             char *analyst_key)
{
    return make_account_on(email, "unlimited", device_key, analyst_key);
}

/* A one-group batch of `n` f64 points of dev1/temp at ts base + i. */
static Tide__V1__Envelope *f64_batch(uint64_t producer, uint64_t seq,
                                     int64_t base, size_t n, double *vals,
                                     int64_t *deltas)
{
    static Tide__V1__Envelope e;
    static Tide__V1__WriteBatch wb;
    static Tide__V1__PointGroup g, *gp;
    static Tide__V1__Column c, *cp;

    tide__v1__envelope__init(&e);
    tide__v1__write_batch__init(&wb);
    tide__v1__point_group__init(&g);
    tide__v1__column__init(&c);
    for (size_t i = 0; i < n; i++) {
        deltas[i] = i ? 1 : T0 + base;
        vals[i] = (double)(base + (int64_t)i) / 100.0;
    }
    c.field = "temp";
    c.type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64;
    c.f64 = vals;
    c.n_f64 = n;
    cp = &c;
    g.device = "dev1";
    g.ts_delta_ns = deltas;
    g.n_ts_delta_ns = n;
    g.columns = &cp;
    g.n_columns = 1;
    gp = &g;
    wb.producer_id = producer;
    wb.sequence = seq;
    wb.groups = &gp;
    wb.n_groups = 1;
    e.body_case = TIDE__V1__ENVELOPE__BODY_WRITE_BATCH;
    e.write_batch = &wb;
    return &e;
}

/* Raw query of dev1/`field` over [from, to); returns the number of points
 * and fills ts/f64 (cap entries) when given. */
static size_t query_raw(int fd, const char *field, int64_t from, int64_t to,
                        int64_t *ts, double *f64, size_t cap,
                        Tide__V1__ValueType *type_out)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Query q = TIDE__V1__QUERY__INIT;
    char *fields[1] = {(char *)field};
    size_t n = 0;
    uint64_t rid;

    q.fields = fields;
    q.n_fields = 1;
    q.from_ns = T0 + from;
    q.to_ns = T0 + to;
    e.body_case = TIDE__V1__ENVELOPE__BODY_QUERY;
    e.query = &q;
    e.request_id = rid = next_rid++;
    cr_assert_eq(wire_send(fd, &e), 0);
    for (;;) {
        r = wire_recv(fd);
        cr_assert_not_null(r, "query: no response");
        cr_assert_eq(r->request_id, rid);
        if (r->body_case == TIDE__V1__ENVELOPE__BODY_QUERY_END) {
            cr_assert_eq(r->query_end->points, n);
            tide_frame_free(r, NULL);
            return n;
        }
        cr_assert_eq(r->body_case, TIDE__V1__ENVELOPE__BODY_QUERY_CHUNK,
                     "query: body %d (%s)", r->body_case,
                     r->body_case == TIDE__V1__ENVELOPE__BODY_ERROR
                         ? r->error->message
                         : "");
        for (size_t s = 0; s < r->query_chunk->n_series; s++) {
            Tide__V1__SeriesResult *sr = r->query_chunk->series[s];
            int64_t t = 0;

            if (type_out)
                *type_out = sr->type;
            for (size_t i = 0; i < sr->n_ts_delta_ns; i++, n++) {
                t = i ? t + sr->ts_delta_ns[i] : sr->ts_delta_ns[0];
                if (ts && n < cap)
                    ts[n] = t - T0;
                if (f64 && n < cap && sr->n_f64 > i)
                    f64[n] = sr->f64[i];
            }
        }
        tide_frame_free(r, NULL);
    }
}

/* ---- Tests --------------------------------------------------------------- */

Test(server, handshake_ping_and_order)
{
    int fd = wire_connect(srv.port);
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Hello h = TIDE__V1__HELLO__INIT;
    Tide__V1__Ping p = TIDE__V1__PING__INIT;
    Tide__V1__KeyList kl = TIDE__V1__KEY_LIST__INIT;

    cr_assert_geq(fd, 0);
    e.body_case = TIDE__V1__ENVELOPE__BODY_KEY_LIST;
    e.key_list = &kl;
    expect_error(wire_next(fd, &e),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_NOT_AUTHENTICATED);
    h.protocol_version = 2;
    e.body_case = TIDE__V1__ENVELOPE__BODY_HELLO;
    e.hello = &h;
    expect_error(wire_next(fd, &e),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_UNSUPPORTED_VERSION);
    cr_assert(wire_closed(fd));
    close(fd);

    fd = wire_connect(srv.port);
    h.protocol_version = 1;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_HELLO_OK);
    cr_assert_eq(r->hello_ok->protocol_version, 1);
    cr_assert_gt(r->hello_ok->limits->max_frame_bytes, 0);
    cr_assert_gt(r->hello_ok->server_time_ns, 0);
    tide_frame_free(r, NULL);
    p.nonce = 77;
    e.body_case = TIDE__V1__ENVELOPE__BODY_PING;
    e.ping = &p;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_PONG);
    cr_assert_eq(r->pong->nonce, 77);
    cr_assert_eq(r->request_id, next_rid - 1);
    tide_frame_free(r, NULL);
    /* Before Auth, telemetry is refused but the connection stays. */
    e.body_case = TIDE__V1__ENVELOPE__BODY_KEY_LIST;
    expect_error(wire_next(fd, &e),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_NOT_AUTHENTICATED);
    e.body_case = TIDE__V1__ENVELOPE__BODY_PING;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_PONG);
    tide_frame_free(r, NULL);
    close(fd);
}

Test(server, bad_key_is_refused_and_closes)
{
    int fd = wire_connect(srv.port);
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Hello h = TIDE__V1__HELLO__INIT;
    Tide__V1__Auth a = TIDE__V1__AUTH__INIT;

    h.protocol_version = 1;
    e.body_case = TIDE__V1__ENVELOPE__BODY_HELLO;
    e.hello = &h;
    r = wire_next(fd, &e);
    tide_frame_free(r, NULL);
    a.credential_case = TIDE__V1__AUTH__CREDENTIAL_API_KEY;
    a.api_key = "tide_live_000000000000000000000000000000000000000000000000";
    e.body_case = TIDE__V1__ENVELOPE__BODY_AUTH;
    e.auth = &a;
    expect_error(wire_next(fd, &e),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_AUTH_FAILED);
    cr_assert(wire_closed(fd));
    close(fd);
    /* Repeated failures from one address are throttled. */
    for (int i = 0; i < 6; i++)
        cr_assert_lt(wire_session(srv.port, "tide_live_bogus"), 0);
    fd = wire_connect(srv.port);
    e.body_case = TIDE__V1__ENVELOPE__BODY_HELLO;
    e.hello = &h;
    r = wire_next(fd, &e);
    tide_frame_free(r, NULL);
    e.body_case = TIDE__V1__ENVELOPE__BODY_AUTH;
    e.auth = &a;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_ERROR);
    cr_assert_eq(r->error->code, TIDE__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED);
    cr_assert_gt(r->error->retry_after_ms, 0);
    tide_frame_free(r, NULL);
    close(fd);
}

Test(server, write_and_read_every_type)
{
    char dkey[128], akey[128];
    int64_t ts[3] = {1000, 1, 1}; /* deltas: 1000, 1001, 1002 */
    double f[3] = {1.5, -0.0, INFINITY};
    int64_t i64[3] = {INT64_MIN, 0, INT64_MAX};
    uint8_t bits[1] = {0x05}; /* true, false, true */
    char *strs[3] = {"", "héllo", "three"};
    Tide__V1__Column cf = TIDE__V1__COLUMN__INIT, ci = TIDE__V1__COLUMN__INIT,
                     cb = TIDE__V1__COLUMN__INIT, cs = TIDE__V1__COLUMN__INIT;
    Tide__V1__Column *cols[4] = {&cf, &ci, &cb, &cs};
    Tide__V1__PointGroup g = TIDE__V1__POINT_GROUP__INIT, *gp = &g;
    Tide__V1__WriteBatch wb = TIDE__V1__WRITE_BATCH__INIT;
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    int64_t got_ts[8];
    double got_f[8];
    Tide__V1__ValueType type;
    int dfd, afd;

    ts[0] += T0;
    make_account("every@type.example", dkey, akey);
    dfd = wire_session(srv.port, dkey);
    afd = wire_session(srv.port, akey);
    cr_assert_geq(dfd, 0);
    cr_assert_geq(afd, 0);
    cf.field = "f";
    cf.type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64;
    cf.f64 = f;
    cf.n_f64 = 3;
    ci.field = "i";
    ci.type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_I64;
    ci.i64 = i64;
    ci.n_i64 = 3;
    cb.field = "b";
    cb.type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_BOOL;
    cb.bool_bits.data = bits;
    cb.bool_bits.len = 1;
    cs.field = "s";
    cs.type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_STRING;
    cs.str = strs;
    cs.n_str = 3;
    g.device = "dev1";
    g.ts_delta_ns = ts;
    g.n_ts_delta_ns = 3;
    g.columns = cols;
    g.n_columns = 4;
    wb.groups = &gp;
    wb.n_groups = 1;
    e.body_case = TIDE__V1__ENVELOPE__BODY_WRITE_BATCH;
    e.write_batch = &wb;
    r = wire_next(dfd, &e);
    cr_assert(
        r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK, "write: %s",
        r && r->body_case == TIDE__V1__ENVELOPE__BODY_ERROR ? r->error->message
                                                            : "no ack");
    cr_assert_eq(r->write_ack->accepted_points, 12);
    cr_assert_eq(r->write_ack->rejected_points, 0);
    tide_frame_free(r, NULL);

    cr_assert_eq(query_raw(afd, "f", 0, 2000, got_ts, got_f, 8, &type), 3);
    cr_assert_eq(type, TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64);
    cr_assert_eq(got_ts[0], 1000);
    cr_assert_eq(got_ts[2], 1002);
    cr_assert_eq(got_f[0], 1.5);
    cr_assert(got_f[1] == 0 && signbit(got_f[1]));
    cr_assert(isinf(got_f[2]));
    cr_assert_eq(query_raw(afd, "i", 0, 2000, NULL, NULL, 0, &type), 3);
    cr_assert_eq(type, TIDE__V1__VALUE_TYPE__VALUE_TYPE_I64);
    cr_assert_eq(query_raw(afd, "b", 0, 2000, NULL, NULL, 0, &type), 3);
    cr_assert_eq(type, TIDE__V1__VALUE_TYPE__VALUE_TYPE_BOOL);
    cr_assert_eq(query_raw(afd, "s", 1001, 2000, NULL, NULL, 0, &type), 2);
    cr_assert_eq(type, TIDE__V1__VALUE_TYPE__VALUE_TYPE_STRING);

    /* A later write of another type to "f" is rejected per column. */
    cf.type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_I64;
    cf.i64 = i64;
    cf.n_i64 = 3;
    g.n_columns = 1;
    r = wire_next(dfd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK);
    cr_assert_eq(r->write_ack->accepted_points, 0);
    cr_assert_eq(r->write_ack->rejected_points, 3);
    cr_assert_eq(r->write_ack->n_rejections, 1);
    cr_assert_eq(r->write_ack->rejections[0]->code,
                 TIDE__V1__ERROR_CODE__ERROR_CODE_TYPE_MISMATCH);
    tide_frame_free(r, NULL);
    close(dfd);
    close(afd);
}

Test(server, roles_and_accounts_are_separated)
{
    char dkey[128], akey[128], dkey_b[128], akey_b[128];
    double vals[4];
    int64_t deltas[4];
    Tide__V1__Envelope *r;
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__Query q = TIDE__V1__QUERY__INIT;
    int dfd, afd, bfd;

    make_account("a@roles.example", dkey, akey);
    make_account("b@roles.example", dkey_b, akey_b);
    dfd = wire_session(srv.port, dkey);
    afd = wire_session(srv.port, akey);
    bfd = wire_session(srv.port, akey_b);
    r = wire_next(dfd, f64_batch(1, 1, 5000, 4, vals, deltas));
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK);
    tide_frame_free(r, NULL);
    /* A device key may not query. */
    q.from_ns = T0;
    q.to_ns = T0 + 10000;
    e.body_case = TIDE__V1__ENVELOPE__BODY_QUERY;
    e.query = &q;
    expect_error(wire_next(dfd, &e),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED);
    /* An analyst key may not write. */
    expect_error(wire_next(afd, f64_batch(2, 1, 6000, 4, vals, deltas)),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED);
    /* A device key writes only its own device. */
    {
        Tide__V1__Envelope *w = f64_batch(1, 2, 6000, 4, vals, deltas);

        w->write_batch->groups[0]->device = "other";
        r = wire_next(dfd, w);
        cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK);
        cr_assert_eq(r->write_ack->accepted_points, 0);
        cr_assert_eq(r->write_ack->rejections[0]->code,
                     TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED);
        tide_frame_free(r, NULL);
    }
    /* Account A sees its points; B, asking for the same names, sees none. */
    cr_assert_eq(query_raw(afd, "temp", 0, 10000, NULL, NULL, 0, NULL), 4);
    cr_assert_eq(query_raw(bfd, "temp", 0, 10000, NULL, NULL, 0, NULL), 0);
    close(dfd);
    close(afd);
    close(bfd);
}

Test(server, duplicate_batch_is_applied_once)
{
    char dkey[128], akey[128];
    double vals[10];
    int64_t deltas[10];
    Tide__V1__Envelope *r;
    int dfd, afd;

    make_account("dup@example.com", dkey, akey);
    dfd = wire_session(srv.port, dkey);
    afd = wire_session(srv.port, akey);
    r = wire_next(dfd, f64_batch(42, 7, 100, 10, vals, deltas));
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK);
    cr_assert_eq(r->write_ack->accepted_points, 10);
    cr_assert(!r->write_ack->duplicate);
    tide_frame_free(r, NULL);
    r = wire_next(dfd, f64_batch(42, 7, 100, 10, vals, deltas));
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK);
    cr_assert(r->write_ack->duplicate);
    cr_assert_eq(r->write_ack->accepted_points, 0);
    tide_frame_free(r, NULL);
    cr_assert_eq(query_raw(afd, "temp", 0, 1000, NULL, NULL, 0, NULL), 10);
    close(dfd);
    close(afd);
}

Test(server, pipelined_writes_are_acked_in_order)
{
    char dkey[128], akey[128];
    double vals[50];
    int64_t deltas[50];
    int dfd;

    make_account("pipe@example.com", dkey, akey);
    dfd = wire_session(srv.port, dkey);
    for (int k = 0; k < 50; k++) {
        Tide__V1__Envelope *w =
            f64_batch(9, (uint64_t)k + 1, k * 100, 50, vals, deltas);

        w->request_id = 1000 + (uint64_t)k;
        cr_assert_eq(wire_send(dfd, w), 0);
    }
    for (int k = 0; k < 50; k++) {
        Tide__V1__Envelope *r = wire_recv(dfd);

        cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK,
                  "batch %d: %s", k, wire_why(r));
        cr_assert_eq(r->request_id, 1000 + (uint64_t)k, "ack order");
        cr_assert_eq(r->write_ack->sequence, (uint64_t)k + 1);
        tide_frame_free(r, NULL);
    }
    close(dfd);
}

Test(server, points_behind_the_retention_horizon_are_refused)
{
    char dkey[128], akey[128];
    static double vals[4];
    static int64_t deltas[4];
    Tide__V1__Envelope *r;
    int dfd;

    make_account("old@example.com", dkey, akey); /* tier TTL: 30 days */
    dfd = wire_session(srv.port, dkey);
    /* 40 days back: older than the plan keeps telemetry. */
    r = wire_next(dfd,
                  f64_batch(7, 1, -40ll * 86400 * 1000000000, 4, vals, deltas));
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK);
    cr_assert_eq(r->write_ack->accepted_points, 0);
    cr_assert_eq(r->write_ack->rejected_points, 4);
    cr_assert_eq(r->write_ack->rejections[0]->code,
                 TIDE__V1__ERROR_CODE__ERROR_CODE_TOO_OLD);
    tide_frame_free(r, NULL);
    close(dfd);
}

Test(server, rate_limit_refuses_with_retry_after)
{
    char dkey[128], akey[128];
    static double vals[500];
    static int64_t deltas[500];
    Tide__V1__Envelope *r;
    int fd = wire_session(srv.port, srv.admin_key), dfd;

    wire_tier_upsert(fd, "slow", 100, 0);
    close(fd);
    make_account_on("slow@example.com", "slow", dkey, akey);
    dfd = wire_session(srv.port, dkey);
    /* The bucket holds one second of the rate; a batch may overdraw it
     * once, then the account waits until the debt is paid. */
    r = wire_next(dfd, f64_batch(3, 1, 0, 500, vals, deltas));
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK, "%s",
              wire_why(r));
    tide_frame_free(r, NULL);
    r = wire_next(dfd, f64_batch(3, 2, 1000, 500, vals, deltas));
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_ERROR);
    cr_assert_eq(r->error->code, TIDE__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED);
    cr_assert(r->error->retryable);
    cr_assert_gt(r->error->retry_after_ms, 1000);
    tide_frame_free(r, NULL);
    close(dfd);
}

Test(server, bad_frames_get_errors_and_others_are_served)
{
    static const uint8_t huge[4] = {0xff, 0xff, 0xff, 0x7f};
    static const uint8_t garbage[8] = {4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Pong pong = TIDE__V1__PONG__INIT;
    int fd, ok;

    fd = wire_connect(srv.port);
    cr_assert_eq(wire_send_raw(fd, huge, sizeof(huge)), 0);
    expect_error(wire_recv(fd),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_FRAME_TOO_LARGE);
    cr_assert(wire_closed(fd));
    close(fd);

    fd = wire_connect(srv.port);
    cr_assert_eq(wire_send_raw(fd, garbage, sizeof(garbage)), 0);
    expect_error(wire_recv(fd), TIDE__V1__ERROR_CODE__ERROR_CODE_BAD_FRAME);
    cr_assert(wire_closed(fd));
    close(fd);

    /* A response message or an empty envelope: an error, the connection
     * stays. */
    fd = wire_connect(srv.port);
    e.body_case = TIDE__V1__ENVELOPE__BODY_PONG;
    e.pong = &pong;
    expect_error(wire_next(fd, &e),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_UNKNOWN_MESSAGE);
    e.body_case = TIDE__V1__ENVELOPE__BODY__NOT_SET;
    expect_error(wire_next(fd, &e),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_UNKNOWN_MESSAGE);
    close(fd);

    /* Another client is served throughout. */
    fd = wire_session(srv.port, srv.admin_key);
    cr_assert_geq(fd, 0);
    {
        Tide__V1__ServerStatus st = TIDE__V1__SERVER_STATUS__INIT;

        e.body_case = TIDE__V1__ENVELOPE__BODY_SERVER_STATUS;
        e.server_status = &st;
        r = wire_next(fd, &e);
        ok = r && r->body_case == TIDE__V1__ENVELOPE__BODY_SERVER_STATUS_OK;
        tide_frame_free(r, NULL);
        cr_assert(ok);
    }
    close(fd);
}

Test(server, bad_columns_are_rejected_per_column)
{
    char dkey[128], akey[128];
    int64_t ts[2] = {10, 1};
    double f[1] = {1};
    char *bad_utf8[2] = {"ok", "\xc3\x28"};
    Tide__V1__Column c1 = TIDE__V1__COLUMN__INIT, c2 = TIDE__V1__COLUMN__INIT,
                     c3 = TIDE__V1__COLUMN__INIT;
    Tide__V1__Column *cols[3] = {&c1, &c2, &c3};
    Tide__V1__PointGroup g = TIDE__V1__POINT_GROUP__INIT, *gp = &g;
    Tide__V1__WriteBatch wb = TIDE__V1__WRITE_BATCH__INIT;
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    int dfd;

    ts[0] += T0;
    make_account("cols@example.com", dkey, akey);
    dfd = wire_session(srv.port, dkey);
    c1.field = "short"; /* one value for two timestamps */
    c1.type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64;
    c1.f64 = f;
    c1.n_f64 = 1;
    c2.field = "text"; /* invalid UTF-8 */
    c2.type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_STRING;
    c2.str = bad_utf8;
    c2.n_str = 2;
    c3.field = "untyped";
    g.device = "dev1";
    g.ts_delta_ns = ts;
    g.n_ts_delta_ns = 2;
    g.columns = cols;
    g.n_columns = 3;
    wb.groups = &gp;
    wb.n_groups = 1;
    e.body_case = TIDE__V1__ENVELOPE__BODY_WRITE_BATCH;
    e.write_batch = &wb;
    r = wire_next(dfd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK);
    cr_assert_eq(r->write_ack->accepted_points, 0);
    cr_assert_eq(r->write_ack->rejected_points, 6);
    cr_assert_eq(r->write_ack->n_rejections, 3);
    cr_assert_eq(r->write_ack->rejections[0]->code,
                 TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT);
    cr_assert_eq(r->write_ack->rejections[1]->code,
                 TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_UTF8);
    cr_assert_eq(r->write_ack->rejections[2]->code,
                 TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT);
    tide_frame_free(r, NULL);
    close(dfd);
}

static void setup_short_timeouts(void)
{
    static const char *const settings[] = {"read_timeout_ms=300", NULL};

    start_fresh(settings);
}

Test(server_timeouts, stalled_half_frame_is_closed,
     .init = setup_short_timeouts, .fini = fixture_fini, .timeout = 60)
{
    static const uint8_t half[6] = {100, 0, 0, 0, 0x08, 0x01};
    int fd;

    fd = wire_connect(srv.port);
    cr_assert_eq(wire_send_raw(fd, half, sizeof(half)), 0);
    cr_assert(wire_closed(fd), "a stalled frame must be closed");
    close(fd);
}

Test(server, many_idle_connections_and_a_reader_that_never_reads)
{
    enum { IDLE = 10000 };
    static int fds[IDLE];
    struct rlimit rl;
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Ping p = TIDE__V1__PING__INIT;
    int n = 0, slow, fd;

    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    /* The server raises its own limit the same way; both need a hard limit
     * above the connection count, which CI machines have. */
    for (n = 0; n < IDLE && (rlim_t)n + 64 < rl.rlim_cur; n++) {
        fds[n] = wire_connect(srv.port);
        if (fds[n] < 0)
            break;
    }
    cr_assert_geq(n, IDLE < rl.rlim_cur - 64 ? IDLE : (int)rl.rlim_cur - 64,
                  "could open only %d connections", n);
    /* A client that floods pings and never reads its answers: once its
     * unread pongs pass out_high_bytes the server stops reading it, so the
     * kernel buffers fill and its sends block, and /metrics says so. */
    slow = wire_connect(srv.port);
    e.body_case = TIDE__V1__ENVELOPE__BODY_PING;
    e.ping = &p;
    {
        int one = 4096;

        setsockopt(slow, SOL_SOCKET, SO_RCVBUF, &one, sizeof(one));
    }
    {
        enum { PINGS = 1024 };
        static uint8_t pings[PINGS * 32];
        size_t len = 0, off = 0;
        long long sent = 0;
        int stalled = 0, status;
        char *body;

        for (int i = 0; i < PINGS; i++) {
            e.request_id = (uint64_t)i + 1;
            len +=
                (size_t)tide_frame_encode(&e, pings + len, sizeof(pings) - len);
        }
        /* 256 MiB of pings is far more than any socket buffers hold. */
        while (sent < 256ll << 20) {
            struct pollfd pfd = {slow, POLLOUT, 0};
            ssize_t w;

            if (poll(&pfd, 1, 1000) <= 0) {
                stalled = 1; /* no room for a second: nobody reads us */
                break;
            }
            w = send(slow, pings + off, len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
            cr_assert(w > 0 || errno == EAGAIN, "send: %s", strerror(errno));
            if (w > 0) {
                sent += w;
                off = (off + (size_t)w) % len;
            }
        }
        cr_assert(stalled,
                  "the server read %lld bytes from a client that "
                  "never reads its answers",
                  sent);
        body = http_get(srv.http_port, "/metrics", &status);
        cr_assert_eq(status, 200);
        cr_assert_not_null(strstr(body, "\ntide_connections_read_paused 1\n"),
                           "the server does not report the paused reader");
        free(body);
    }
    /* Everyone else is still served. */
    fd = wire_session(srv.port, srv.admin_key);
    cr_assert_geq(fd, 0);
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_PONG);
    tide_frame_free(r, NULL);
    close(fd);
    close(slow);
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

Test(server, kill9_during_ingest_keeps_acknowledged_points)
{
    char dkey[128], akey[128];
    enum { BATCHES = 2000, POINTS = 200, KILL_AT = 20, WINDOW = 256 };
    static double vals[POINTS];
    static int64_t deltas[POINTS];
    int acked = 0, sent = 0, dfd, afd;

    make_account("crash@example.com", dkey, akey);
    dfd = wire_session(srv.port, dkey);
    /* Pipeline batches, at most WINDOW in flight (the server's limit is
     * max_inflight_requests); once KILL_AT are acknowledged, kill -9 the
     * server while the rest are being written. */
    for (;;) {
        Tide__V1__Envelope *r;

        if (sent < BATCHES && sent - acked < WINDOW) {
            Tide__V1__Envelope *w =
                f64_batch(5, (uint64_t)sent + 1, (int64_t)sent * POINTS, POINTS,
                          vals, deltas);

            w->request_id = (uint64_t)sent + 1;
            if (wire_send(dfd, w) == 0) {
                sent++;
                continue;
            }
        }
        r = wire_recv(dfd);
        if (!r)
            break;
        cr_assert_eq(r->body_case, TIDE__V1__ENVELOPE__BODY_WRITE_ACK, "%s",
                     wire_why(r));
        cr_assert_eq(r->request_id, (uint64_t)acked + 1);
        acked++;
        tide_frame_free(r, NULL);
        if (acked == KILL_AT)
            kill(srv.pid, SIGKILL);
    }
    waitpid(srv.pid, NULL, 0);
    srv.pid = 0;
    close(dfd);
    cr_assert_geq(acked, KILL_AT);
    cr_log_info("kill -9 after %d of %d batches were acknowledged", acked,
                sent);
    start(NULL);
    afd = wire_session(srv.port, akey);
    cr_assert_geq(afd, 0);
    {
        size_t got = query_raw(afd, "temp", 0, (int64_t)BATCHES * POINTS, NULL,
                               NULL, 0, NULL);

        cr_assert_geq(got, (size_t)acked * POINTS,
                      "%zu points after restart, %d batches were acked", got,
                      acked);
        cr_assert_leq(got, (size_t)sent * POINTS);
    }
    close(afd);
}

static void setup_small_queries(void)
{
    static const char *const settings[] = {"max_query_points=100", NULL};

    start_fresh(settings);
}

Test(server_limits, query_limits_and_bad_arguments, .init = setup_small_queries,
     .fini = fixture_fini, .timeout = 60)
{
    char dkey[128], akey[128];
    static double vals[500];
    static int64_t deltas[500];
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Query q = TIDE__V1__QUERY__INIT;
    char *fields[1] = {"temp"};
    int dfd, afd;

    make_account("limits@example.com", dkey, akey);
    dfd = wire_session(srv.port, dkey);
    afd = wire_session(srv.port, akey);
    r = wire_next(dfd, f64_batch(8, 1, 0, 500, vals, deltas));
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK);
    tide_frame_free(r, NULL);
    q.fields = fields;
    q.n_fields = 1;
    q.from_ns = T0;
    q.to_ns = T0 + 1000;
    e.body_case = TIDE__V1__ENVELOPE__BODY_QUERY;
    e.query = &q;
    /* 500 points with a limit of 100: chunks may come first, then the
     * error. */
    e.request_id = next_rid++;
    cr_assert_eq(wire_send(afd, &e), 0);
    for (;;) {
        r = wire_recv(afd);
        cr_assert_not_null(r);
        if (r->body_case != TIDE__V1__ENVELOPE__BODY_QUERY_CHUNK)
            break;
        tide_frame_free(r, NULL);
    }
    expect_error(r, TIDE__V1__ERROR_CODE__ERROR_CODE_QUERY_TOO_LARGE);
    /* A limit keeps it small enough, and QueryEnd says it truncated. */
    q.limit = 10;
    q.order = TIDE__V1__ORDER__ORDER_DESC;
    e.request_id = next_rid++;
    cr_assert_eq(wire_send(afd, &e), 0);
    {
        size_t n = 0;
        int64_t newest = 0;

        for (;;) {
            r = wire_recv(afd);
            cr_assert_not_null(r);
            if (r->body_case != TIDE__V1__ENVELOPE__BODY_QUERY_CHUNK)
                break;
            for (size_t k = 0; k < r->query_chunk->n_series; k++) {
                if (n == 0)
                    newest = r->query_chunk->series[k]->ts_delta_ns[0];
                n += r->query_chunk->series[k]->n_ts_delta_ns;
            }
            tide_frame_free(r, NULL);
        }
        cr_assert_eq(r->body_case, TIDE__V1__ENVELOPE__BODY_QUERY_END, "%s",
                     wire_why(r));
        cr_assert_eq(n, 10);
        cr_assert(r->query_end->truncated);
        cr_assert_eq(newest, T0 + 499, "descending: the newest first");
        tide_frame_free(r, NULL);
    }
    q.limit = 0;
    q.order = TIDE__V1__ORDER__ORDER_ASC;
    q.from_ns = T0 + 10;
    q.to_ns = T0;
    expect_error(wire_next(afd, &e),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT);
    q.from_ns = T0;
    q.latest = 1;
    q.aggregation = TIDE__V1__AGGREGATION__AGGREGATION_MAX;
    expect_error(wire_next(afd, &e),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT);
    close(dfd);
    close(afd);
}

static void setup_fast_flush(void)
{
    static const char *const settings[] = {"flush_interval_ms=200", NULL};

    start_fresh(settings);
}

/* The value of stat `name` in ServerStatusOk, or -1. */
static double server_stat(int fd, const char *name)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__ServerStatus st = TIDE__V1__SERVER_STATUS__INIT;
    double v = -1;

    e.body_case = TIDE__V1__ENVELOPE__BODY_SERVER_STATUS;
    e.server_status = &st;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_SERVER_STATUS_OK);
    for (size_t i = 0; i < r->server_status_ok->n_stats; i++)
        if (!strcmp(r->server_status_ok->stats[i]->name, name))
            v = r->server_status_ok->stats[i]->value;
    tide_frame_free(r, NULL);
    return v;
}

Test(server_flush, head_is_flushed_periodically, .init = setup_fast_flush,
     .fini = fixture_fini, .timeout = 60)
{
    char dkey[128], akey[128];
    static double vals[300];
    static int64_t deltas[300];
    Tide__V1__Envelope *r;
    int dfd, afd, ofd;

    make_account("flush@example.com", dkey, akey);
    dfd = wire_session(srv.port, dkey);
    afd = wire_session(srv.port, akey);
    ofd = wire_session(srv.port, srv.admin_key);
    r = wire_next(dfd, f64_batch(4, 1, 0, 300, vals, deltas));
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK);
    tide_frame_free(r, NULL);
    for (int i = 0; i < 100 && server_stat(ofd, "segments") < 1; i++)
        usleep(50000);
    cr_assert_geq(server_stat(ofd, "segments"), 1, "no periodic flush");
    cr_assert_eq(server_stat(ofd, "head_points"), 0);
    cr_assert_eq(query_raw(afd, "temp", 0, 1000, NULL, NULL, 0, NULL), 300);
    close(dfd);
    close(afd);
    close(ofd);
}

/* Run an export as the operator; returns the concatenated data and checks
 * the ExportEnd totals and digest. `sections` receives the section names
 * in order of first appearance, comma-separated. */
static char *export_all(int fd, uint64_t account, int csv, char *sections,
                        size_t cap)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__ExportStart xs = TIDE__V1__EXPORT_START__INIT;
    EVP_MD_CTX *sha = EVP_MD_CTX_new();
    uint8_t digest[32];
    unsigned dlen;
    char *all = NULL, last[64] = "";
    size_t len = 0;

    xs.account_id = account;
    xs.include_telemetry = 1;
    xs.format = csv ? TIDE__V1__EXPORT_FORMAT__EXPORT_FORMAT_CSV
                    : TIDE__V1__EXPORT_FORMAT__EXPORT_FORMAT_JSONL;
    e.body_case = TIDE__V1__ENVELOPE__BODY_EXPORT_START;
    e.export_start = &xs;
    e.request_id = next_rid++;
    sections[0] = 0;
    EVP_DigestInit_ex(sha, EVP_sha256(), NULL);
    cr_assert_eq(wire_send(fd, &e), 0);
    for (;;) {
        r = wire_recv(fd);
        cr_assert_not_null(r);
        cr_assert_eq(r->request_id, e.request_id);
        if (r->body_case != TIDE__V1__ENVELOPE__BODY_EXPORT_CHUNK)
            break;
        if (strcmp(last, r->export_chunk->section)) {
            snprintf(last, sizeof(last), "%s", r->export_chunk->section);
            snprintf(sections + strlen(sections), cap - strlen(sections),
                     "%s%s", sections[0] ? "," : "", last);
        }
        EVP_DigestUpdate(sha, r->export_chunk->data.data,
                         r->export_chunk->data.len);
        all = realloc(all, len + r->export_chunk->data.len + 1);
        memcpy(all + len, r->export_chunk->data.data,
               r->export_chunk->data.len);
        len += r->export_chunk->data.len;
        all[len] = 0;
        tide_frame_free(r, NULL);
    }
    cr_assert_eq(r->body_case, TIDE__V1__ENVELOPE__BODY_EXPORT_END, "%s",
                 wire_why(r));
    cr_assert_eq(r->export_end->bytes, len);
    EVP_DigestFinal_ex(sha, digest, &dlen);
    cr_assert_eq(r->export_end->sha256.len, 32);
    cr_assert(!memcmp(r->export_end->sha256.data, digest, 32),
              "ExportEnd.sha256 is the digest of every chunk's data");
    tide_frame_free(r, NULL);
    EVP_MD_CTX_free(sha);
    return all;
}

Test(server, export_every_row_and_the_telemetry)
{
    char dkey[128], akey[128], sections[512];
    static double vals[5];
    static int64_t deltas[5];
    uint64_t account = make_account("export@example.com", dkey, akey);
    int dfd = wire_session(srv.port, dkey);
    int ofd = wire_session(srv.port, srv.admin_key);
    int afd = wire_session(srv.port, akey);
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__ExportStart xs = TIDE__V1__EXPORT_START__INIT;
    Tide__V1__Envelope *r = wire_next(dfd, f64_batch(6, 1, 0, 5, vals, deltas));
    char *json, *csv, line[128];

    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK);
    tide_frame_free(r, NULL);
    json = export_all(ofd, account, 0, sections, sizeof(sections));
    cr_assert(!strncmp(sections, "account,device,key", 18), "sections: %s",
              sections);
    cr_assert_not_null(strstr(sections, "telemetry"), "sections: %s", sections);
    cr_assert_not_null(strstr(json, "export@example.com"));
    snprintf(line, sizeof(line),
             "{\"device\":\"dev1\",\"field\":\"temp\",\"ts_ns\":%lld,"
             "\"value\":",
             (long long)(T0 + 4));
    cr_assert_not_null(strstr(json, line), "no telemetry row %s", line);
    /* Never a secret or a password hash. */
    cr_assert_null(strstr(json, dkey));
    cr_assert_null(strstr(json, "$2b$"));
    free(json);
    csv = export_all(ofd, account, 1, sections, sizeof(sections));
    cr_assert_not_null(strstr(csv, "device,field,ts_ns,value\n"));
    snprintf(line, sizeof(line), "dev1,temp,%lld,", (long long)(T0 + 4));
    cr_assert_not_null(strstr(csv, line));
    free(csv);
    /* An analyst key may not export. */
    xs.include_telemetry = 1;
    e.body_case = TIDE__V1__ENVELOPE__BODY_EXPORT_START;
    e.export_start = &xs;
    expect_error(wire_next(afd, &e),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED);
    close(dfd);
    close(ofd);
    close(afd);
}

Test(server, metrics_health_and_clean_shutdown)
{
    int status, fd = wire_connect(srv.port);
    char *body = http_get(srv.http_port, "/health", &status);
    unsigned long long v = 0;
    char *line;

    cr_assert_geq(fd, 0);

    cr_assert_not_null(body);
    cr_assert_eq(status, 200);
    cr_assert_str_eq(body, "ok\n");
    free(body);
    body = http_get(srv.http_port, "/metrics", &status);
    cr_assert_not_null(body);
    cr_assert_eq(status, 200);
    /* Every sample line is "name[{labels}] value". */
    for (line = strtok(body, "\n"); line; line = strtok(NULL, "\n")) {
        char name[128];
        double value;

        if (line[0] == '#')
            continue;
        cr_assert_eq(sscanf(line, "%127s %lf", name, &value), 2, "line '%s'",
                     line);
        if (!strcmp(name, "tide_connections_total"))
            v = (unsigned long long)value;
    }
    cr_assert_geq(v, 1, "connections counted");
    free(body);
    body = http_get(srv.http_port, "/metrics", &status);
    cr_assert_not_null(strstr(body, "tide_engine_wal_sync_seconds_count"));
    cr_assert_not_null(strstr(body, "tide_query_duration_seconds_bucket"));
    free(body);
    body = http_get(srv.http_port, "/nope", &status);
    cr_assert_eq(status, 404);
    free(body);
    close(fd);
    cr_assert_eq(tided_stop(&srv), 0, "SIGTERM exits 0");
}

/* ---- Data directory permissions ------------------------------------------ */

static void dir_fini(void)
{
    tided_kill(&srv); /* a failed assertion left it running */
}

TestSuite(server_dir, .fini = dir_fini, .timeout = 60);

static const char *mode_top; /* the data directory, skipped by mode_check */
static int mode_files, mode_dirs;

static int mode_check(const char *path, const struct stat *st, int type,
                      struct FTW *ftw)
{
    mode_t m = st->st_mode & 07777;

    (void)ftw;
    if (!strcmp(path, mode_top))
        return 0;
    /* The test harness writes the server's stderr to tided.log. */
    if (strstr(path, "/tided.log"))
        return 0;
    if (type == FTW_D) {
        cr_expect_eq(m, 0700, "directory %s has mode %o", path, m);
        mode_dirs++;
    } else if (type == FTW_F) {
        cr_expect_eq(m, 0600, "file %s has mode %o", path, m);
        mode_files++;
    }
    return 0;
}

static void expect_private(const char *d, const char *when)
{
    mode_top = d;
    mode_files = mode_dirs = 0;
    cr_assert_eq(nftw(d, mode_check, 16, FTW_PHYS), 0);
    cr_log_info("%s: %d files, %d directories checked", when, mode_files,
                mode_dirs);
    cr_assert_geq(mode_files, 3, "%s: only %d files", when, mode_files);
}

/* A data directory of mode 0755 left meta.db, its -wal/-shm (emails,
 * bcrypt hashes, IPs) and the WAL files readable by everyone. tided now
 * refuses such a directory unless --allow-open-data-dir is given, and
 * creates every file 0600 and every directory 0700 whatever the umask. */
Test(server_dir, open_data_dir_is_refused_unless_allowed)
{
    const char *const allow[] = {"--allow-open-data-dir", NULL};
    struct tided_proc p;
    char d[1024], path[1100], log[4096] = "";
    char dk[128], ak[128];
    mode_t old;
    FILE *f;
    size_t n;
    int fd;

    snprintf(d, sizeof(d), "%s", test_tmpdir());
    cr_assert_eq(chmod(d, 0755), 0);
    old = umask(022);
    cr_assert_neq(tided_start(&p, d, NULL), 0,
                  "tided started on a data directory of mode 0755");
    snprintf(path, sizeof(path), "%s/tided.log", d);
    f = fopen(path, "r");
    cr_assert_not_null(f);
    n = fread(log, 1, sizeof(log) - 1, f);
    log[n] = 0;
    fclose(f);
    cr_assert_not_null(strstr(log, "--allow-open-data-dir"),
                       "the refusal does not name the flag: '%s'", log);
    snprintf(path, sizeof(path), "%s/meta.db", d);
    cr_assert_neq(access(path, F_OK), 0, "meta.db created before refusing");
    /* With the flag: served, and what it creates is private. */
    cr_assert_eq(tided_start(&p, d, allow), 0, "tided refused the flag");
    srv = p;
    snprintf(dir, sizeof(dir), "%s", d);
    make_account("modes@example.com", dk, ak);
    fd = wire_session(srv.port, dk);
    {
        double vals[10];
        int64_t deltas[10];
        Tide__V1__Envelope *r =
            wire_next(fd, f64_batch(1, 1, 0, 10, vals, deltas));

        cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK, "%s",
                  wire_why(r));
        tide_frame_free(r, NULL);
    }
    close(fd);
    expect_private(d, "running");
    snprintf(path, sizeof(path), "%s/meta.db-wal", d);
    cr_assert_eq(access(path, F_OK), 0, "no meta.db-wal to check");
    cr_assert_eq(tided_stop(&srv), 0);
    /* The clean stop wrote segments and the manifest. */
    expect_private(d, "stopped");
    umask(old);
    test_rmrf(d);
}
