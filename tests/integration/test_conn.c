/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration tests of tided's connections over a raw socket: request ids
 * in flight, pipelined frames sent in one piece.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "testutil.h"
#include "wire.h"

TestSuite(conn, .init = fixture_init, .fini = fixture_fini, .timeout = 60);

/* As the operator: an account with device "dev1" and its key in `key`.
 * Returns the account id. */
static uint64_t make_device_key(char *key, size_t cap)
{
    int fd = wire_session(srv.port, srv.admin_key);
    uint64_t account;

    cr_assert_geq(fd, 0);
    account = wire_make_account(fd, "conn@example.com");
    wire_device_register(fd, account, "dev1");
    wire_key_create(fd, account, "device key", TIDE__V1__ROLE__ROLE_DEVICE,
                    "dev1", key, cap);
    close(fd);
    return account;
}

/* Append the frame of `env` to buf[*len..cap). */
static void frame_append(uint8_t *buf, size_t *len, size_t cap,
                         const Tide__V1__Envelope *env)
{
    int64_t n = tide_frame_encode(env, buf + *len, cap - *len);

    cr_assert_gt(n, 0, "frame does not fit");
    *len += (size_t)n;
}

/* Read `n` responses; count[i] gets how many had body_case want[i] and
 * request id rid[i]. Fails on any other frame. */
static void recv_expect(int fd, int n, const uint64_t *rid,
                        const Tide__V1__Envelope__BodyCase *want,
                        const Tide__V1__ErrorCode *code, int *count, int kinds)
{
    for (int k = 0; k < n; k++) {
        Tide__V1__Envelope *r = wire_recv(fd);
        int hit = 0;

        cr_assert_not_null(r, "response %d of %d missing", k + 1, n);
        for (int i = 0; i < kinds && !hit; i++) {
            if (r->request_id != rid[i] || r->body_case != want[i])
                continue;
            if (want[i] == TIDE__V1__ENVELOPE__BODY_ERROR &&
                r->error->code != code[i])
                continue;
            count[i]++;
            hit = 1;
        }
        cr_assert(hit, "unexpected frame: id %llu body %d (%s)",
                  (unsigned long long)r->request_id, r->body_case, wire_why(r));
        tide_frame_free(r, NULL);
    }
}

Test(conn, duplicate_request_ids_in_flight_are_refused)
{
    static uint8_t buf[1 << 16];
    char key[160];
    uint64_t account = make_device_key(key, sizeof(key));
    Tide__V1__Envelope q = TIDE__V1__ENVELOPE__INIT, p = q, w = q, *r;
    Tide__V1__Query qb = TIDE__V1__QUERY__INIT;
    Tide__V1__Ping pb = TIDE__V1__PING__INIT;
    Tide__V1__WriteBatch wb = TIDE__V1__WRITE_BATCH__INIT;
    Tide__V1__PointGroup g = TIDE__V1__POINT_GROUP__INIT, *gp = &g;
    Tide__V1__Column col = TIDE__V1__COLUMN__INIT, *cp = &col;
    struct timespec now;
    int64_t ts[1];
    double v[1] = {1.5};
    size_t len = 0;
    int fd;

    /* The operator: a query in flight, then a ping and a second query
     * under the same id, all in one piece; then the id is free again. */
    fd = wire_session(srv.port, srv.admin_key);
    cr_assert_geq(fd, 0);
    qb.account_id = account;
    qb.from_ns = 0;
    qb.to_ns = INT64_MAX;
    q.body_case = TIDE__V1__ENVELOPE__BODY_QUERY;
    q.query = &qb;
    q.request_id = 7;
    p.body_case = TIDE__V1__ENVELOPE__BODY_PING;
    p.ping = &pb;
    p.request_id = 7;
    frame_append(buf, &len, sizeof(buf), &q);
    frame_append(buf, &len, sizeof(buf), &p);
    frame_append(buf, &len, sizeof(buf), &q);
    cr_assert_eq(wire_send_raw(fd, buf, len), 0);
    {
        const uint64_t rid[2] = {7, 7};
        const Tide__V1__Envelope__BodyCase want[2] = {
            TIDE__V1__ENVELOPE__BODY_QUERY_END, TIDE__V1__ENVELOPE__BODY_ERROR};
        const Tide__V1__ErrorCode code[2] = {
            0, TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT};
        int count[2] = {0, 0};

        recv_expect(fd, 3, rid, want, code, count, 2);
        cr_assert_eq(count[0], 1, "%d QueryEnd, expected 1", count[0]);
        cr_assert_eq(count[1], 2, "%d INVALID_ARGUMENT, expected 2", count[1]);
    }
    r = wire_call(fd, &p);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_PONG &&
                  r->request_id == 7,
              "the id of a finished query is free: %s", wire_why(r));
    tide_frame_free(r, NULL);
    close(fd);

    /* A device: two batches under one id, pipelined; the first is
     * applied and acknowledged, the second refused. */
    fd = wire_session(srv.port, key);
    cr_assert_geq(fd, 0);
    clock_gettime(CLOCK_REALTIME, &now);
    ts[0] = (int64_t)now.tv_sec * 1000000000;
    col.field = "temp";
    col.type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64;
    col.f64 = v;
    col.n_f64 = 1;
    g.device = "dev1";
    g.ts_delta_ns = ts;
    g.n_ts_delta_ns = 1;
    g.columns = &cp;
    g.n_columns = 1;
    wb.groups = &gp;
    wb.n_groups = 1;
    w.body_case = TIDE__V1__ENVELOPE__BODY_WRITE_BATCH;
    w.write_batch = &wb;
    w.request_id = 9;
    len = 0;
    frame_append(buf, &len, sizeof(buf), &w);
    ts[0] += 1000;
    frame_append(buf, &len, sizeof(buf), &w);
    cr_assert_eq(wire_send_raw(fd, buf, len), 0);
    {
        const uint64_t rid[2] = {9, 9};
        const Tide__V1__Envelope__BodyCase want[2] = {
            TIDE__V1__ENVELOPE__BODY_WRITE_ACK, TIDE__V1__ENVELOPE__BODY_ERROR};
        const Tide__V1__ErrorCode code[2] = {
            0, TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT};
        int count[2] = {0, 0};

        recv_expect(fd, 2, rid, want, code, count, 2);
        cr_assert_eq(count[0], 1, "%d WriteAck, expected 1", count[0]);
        cr_assert_eq(count[1], 1, "%d INVALID_ARGUMENT, expected 1", count[1]);
    }
    /* Acknowledged: the id may be used again. */
    r = wire_call(fd, &w);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK &&
                  r->request_id == 9,
              "the id of an acknowledged batch is free: %s", wire_why(r));
    cr_assert_eq(r->write_ack->accepted_points, 1);
    tide_frame_free(r, NULL);
    close(fd);
}

/* Frames cut at arbitrary points, a large one among small ones, go through
 * the one frame decoder: every request is answered in order; then a
 * header split in two that announces an oversized frame is refused. */
Test(conn, frames_cut_anywhere_are_decoded_in_order)
{
    enum { POINTS = 200000, PINGS = 50 };
    static uint8_t buf[8 << 20];
    static int64_t ts[POINTS];
    static double v[POINTS];
    char key[160];
    Tide__V1__Envelope p = TIDE__V1__ENVELOPE__INIT, w = p, *r;
    Tide__V1__Ping pb = TIDE__V1__PING__INIT;
    Tide__V1__WriteBatch wb = TIDE__V1__WRITE_BATCH__INIT;
    Tide__V1__PointGroup g = TIDE__V1__POINT_GROUP__INIT, *gp = &g;
    Tide__V1__Column col = TIDE__V1__COLUMN__INIT, *cp = &col;
    static const uint8_t too_large[4] = {0xff, 0xff, 0xff, 0x7f};
    struct timespec now;
    size_t len = 0, off = 0, write_bytes;
    unsigned seed = 42;
    int fd;

    make_device_key(key, sizeof(key));
    fd = wire_session(srv.port, key);
    cr_assert_geq(fd, 0);
    clock_gettime(CLOCK_REALTIME, &now);
    for (int i = 0; i < POINTS; i++) {
        ts[i] = i ? 1000 : ((int64_t)now.tv_sec - 600) * 1000000000;
        v[i] = i * 0.5;
    }
    col.field = "temp";
    col.type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64;
    col.f64 = v;
    col.n_f64 = POINTS;
    g.device = "dev1";
    g.ts_delta_ns = ts;
    g.n_ts_delta_ns = POINTS;
    g.columns = &cp;
    g.n_columns = 1;
    wb.groups = &gp;
    wb.n_groups = 1;
    w.body_case = TIDE__V1__ENVELOPE__BODY_WRITE_BATCH;
    w.write_batch = &wb;
    p.body_case = TIDE__V1__ENVELOPE__BODY_PING;
    p.ping = &pb;
    for (int i = 0; i < PINGS; i++) {
        p.request_id = 1000 + (uint64_t)i;
        pb.nonce = (uint64_t)i;
        frame_append(buf, &len, sizeof(buf), &p);
        if (i == PINGS / 2) {
            w.request_id = 999;
            write_bytes = len;
            frame_append(buf, &len, sizeof(buf), &w);
            write_bytes = len - write_bytes;
        }
    }
    cr_assert_gt(write_bytes, 1u << 20, "the batch is %zu bytes", write_bytes);
    while (off < len) {
        size_t n = 1 + (size_t)rand_r(&seed) % (rand_r(&seed) % 2 ? 7 : 65536);

        if (n > len - off)
            n = len - off;
        cr_assert_eq(wire_send_raw(fd, buf + off, n), 0);
        off += n;
    }
    /* Pongs in order; the WriteAck may come after later pongs. */
    for (int i = 0, acked = 0; i < PINGS || !acked;) {
        r = wire_recv(fd);
        cr_assert_not_null(r, "answer missing after %d pongs", i);
        if (r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK) {
            cr_assert_eq(r->request_id, 999);
            cr_assert_eq(r->write_ack->accepted_points, POINTS, "%s",
                         wire_why(r));
            acked = 1;
        } else {
            cr_assert_eq(r->body_case, TIDE__V1__ENVELOPE__BODY_PONG, "%s",
                         wire_why(r));
            cr_assert_eq(r->request_id, 1000 + (uint64_t)i);
            cr_assert_eq(r->pong->nonce, (uint64_t)i);
            i++;
        }
        tide_frame_free(r, NULL);
    }
    cr_assert_eq(wire_send_raw(fd, too_large, 2), 0);
    cr_assert_eq(wire_send_raw(fd, too_large + 2, 2), 0);
    r = wire_recv(fd);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_ERROR &&
                  r->request_id == 0 &&
                  r->error->code ==
                      TIDE__V1__ERROR_CODE__ERROR_CODE_FRAME_TOO_LARGE,
              "oversized header: %s", wire_why(r));
    tide_frame_free(r, NULL);
    cr_assert(wire_closed(fd));
    close(fd);
}

/* The contents of `path` (malloc'd), or NULL. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t n;

    if (!f)
        return NULL;
    buf = calloc(1, 1 << 16);
    n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
    if (buf)
        buf[n] = 0;
    fclose(f);
    return buf;
}

/* Startup failures name their cause: a port in use (-errno of bind), a bad
 * value and an unknown key (TIDE_EINVAL from the config). */
Test(conn, startup_failures_name_their_cause)
{
    struct tided_proc other;
    char dir2[1024], set[64], log[1100], *text;
    static const char *const bad_value[] = {"max_inflight=0", NULL};
    static const char *const bad_key[] = {"no_such_key=1", NULL};
    const char *in_use[] = {set, NULL};

    snprintf(dir2, sizeof(dir2), "%s", test_tmpdir());
    snprintf(log, sizeof(log), "%s/tided.log", dir2);
    snprintf(set, sizeof(set), "listen=127.0.0.1:%d", srv.port);
    cr_assert_neq(tided_start(&other, dir2, in_use), 0);
    text = slurp(log);
    cr_assert(text && strstr(text, "Address already in use"), "log: %s",
              text ? text : "(none)");
    free(text);
    cr_assert_neq(tided_start(&other, dir2, bad_value), 0);
    cr_assert_neq(tided_start(&other, dir2, bad_key), 0);
    text = slurp(log);
    cr_assert(text && strstr(text, "bad value '0' for 'max_inflight'") &&
                  strstr(text, "unknown configuration key 'no_such_key'"),
              "log: %s", text ? text : "(none)");
    free(text);
    test_rmrf(dir2);
}
