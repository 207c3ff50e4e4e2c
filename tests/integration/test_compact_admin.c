/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration tests of the compaction control and the reports:
 * AdminCompact (and the counters ServerStatus shows after it),
 * RetentionGet for an owner and the operator, ErasureReport before and
 * after a purge and a compaction, who may send each, and the tide CLI's
 * `admin compact`, `retention` and `account erasure-report`.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "tide/client.h"
#include "wire.h"

/* Flushes every 200 ms so that writes reach segments within the test;
 * cheap bcrypt for the owner's logins. */
static void setup(void)
{
    static const char *const settings[] = {"flush_interval_ms=200",
                                           "bcrypt_cost=4", NULL};

    fixture_start(settings);
}

TestSuite(compact_admin, .init = setup, .fini = fixture_fini, .timeout = 120);

#define POINTS 500

/* An account with device "dev1" and a device key for it; the key's
 * secret into key[cap]. Returns the account id. */
static uint64_t make_writer(int op, const char *email, char *key, size_t cap)
{
    uint64_t account = wire_make_account(op, email);

    wire_device_register(op, account, "dev1");
    wire_key_create(op, account, "dev", TIDE__V1__ROLE__ROLE_DEVICE, "dev1",
                    key, cap);
    return account;
}

/* Write POINTS points of dev1/temp at T0 + first + i s through `fd` (a
 * device session), asserting they are acknowledged. */
static void write_points(int fd, int64_t first_s)
{
    static int64_t ts[POINTS];
    static double v[POINTS];
    struct wire_batch b;
    Tide__V1__Envelope *r;

    for (int i = 0; i < POINTS; i++) {
        /* Deltas: the first absolute, then 1 s steps. */
        ts[i] = i ? 1000000000 : T0 + first_s * 1000000000;
        v[i] = 20.0 + (double)(i % 17) / 8;
    }
    r = wire_next(fd, wire_batch_f64(&b, "dev1", "temp", ts, v, POINTS));
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK,
              "write: %s", wire_why(r));
    cr_assert_eq(r->write_ack->accepted_points, POINTS);
    tide_frame_free(r, NULL);
}

/* ServerStatus as the operator on `op` (caller frees). */
static Tide__V1__Envelope *server_status(int op)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__ServerStatus ss = TIDE__V1__SERVER_STATUS__INIT;

    e.body_case = TIDE__V1__ENVELOPE__BODY_SERVER_STATUS;
    e.server_status = &ss;
    r = wire_next(op, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_SERVER_STATUS_OK,
              "server status: %s", wire_why(r));
    return r;
}

static double status_stat(const Tide__V1__Envelope *r, const char *name)
{
    for (size_t i = 0; i < r->server_status_ok->n_stats; i++)
        if (!strcmp(r->server_status_ok->stats[i]->name, name))
            return r->server_status_ok->stats[i]->value;
    cr_assert_fail("no stat %s", name);
    return 0;
}

/* Wait (up to 10 s) until the head is empty and at least `segments`
 * segments exist: the flusher has written everything. */
static void wait_flushed(int op, double segments)
{
    for (int i = 0; i < 200; i++) {
        Tide__V1__Envelope *r = server_status(op);
        int done = status_stat(r, "head_points") == 0 &&
                   status_stat(r, "segments") >= segments;

        tide_frame_free(r, NULL);
        if (done)
            return;
        usleep(50000);
    }
    cr_assert_fail("the head was not flushed into %g segments", segments);
}

/* AdminCompact{wait} on `fd`; the response (caller frees). */
static Tide__V1__Envelope *admin_compact(int fd, int wait)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__AdminCompact ac = TIDE__V1__ADMIN_COMPACT__INIT;

    ac.wait = wait;
    e.body_case = TIDE__V1__ENVELOPE__BODY_ADMIN_COMPACT;
    e.admin_compact = &ac;
    return wire_next(fd, &e);
}

static Tide__V1__Envelope *retention_get(int fd, uint64_t account)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__RetentionGet rg = TIDE__V1__RETENTION_GET__INIT;

    rg.account_id = account;
    e.body_case = TIDE__V1__ENVELOPE__BODY_RETENTION_GET;
    e.retention_get = &rg;
    return wire_next(fd, &e);
}

static Tide__V1__Envelope *erasure_report(int fd, uint64_t account)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__ErasureReport er = TIDE__V1__ERASURE_REPORT__INIT;

    er.account_id = account;
    e.body_case = TIDE__V1__ENVELOPE__BODY_ERASURE_REPORT;
    e.erasure_report = &er;
    return wire_next(fd, &e);
}

static void expect_denied(Tide__V1__Envelope *r, const char *what)
{
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_ERROR &&
                  r->error->code ==
                      TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED,
              "%s: want PERMISSION_DENIED, got %s", what, wire_why(r));
    tide_frame_free(r, NULL);
}

static uint64_t sidecar_rows(const Tide__V1__ErasureReportOk *ok,
                             const char *table)
{
    for (size_t i = 0; i < ok->n_sidecar; i++)
        if (!strcmp(ok->sidecar[i]->table, table))
            return ok->sidecar[i]->rows;
    cr_assert_fail("no sidecar table %s in the report", table);
    return 0;
}

/* ---- AdminCompact ------------------------------------------------------ */

Test(compact_admin, compact_wait_counts_runs_in_server_status)
{
    int op = wire_session(srv.port, srv.admin_key), dev;
    Tide__V1__Envelope *r;
    char key[128];

    cr_assert_geq(op, 0);
    make_writer(op, "compact@example.com", key, sizeof(key));
    dev = wire_session(srv.port, key);
    cr_assert_geq(dev, 0);
    /* Two flushes of the same window: two segments to merge. */
    write_points(dev, 0);
    wait_flushed(op, 1);
    write_points(dev, POINTS);
    wait_flushed(op, 2);

    r = admin_compact(op, 1);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_ADMIN_COMPACT_OK,
              "admin compact: %s", wire_why(r));
    cr_assert(r->admin_compact_ok->compaction);
    cr_assert_gt(r->admin_compact_ok->compaction->runs, 0);
    cr_assert_gt(r->admin_compact_ok->compaction->bytes_written, 0);
    cr_assert_eq(r->admin_compact_ok->compaction->errors, 0);
    tide_frame_free(r, NULL);

    r = server_status(op);
    cr_assert(r->server_status_ok->compaction,
              "ServerStatusOk has no compaction counters");
    cr_assert_gt(r->server_status_ok->compaction->runs, 0);
    cr_assert_gt(r->server_status_ok->compaction->bytes_read, 0);
    cr_assert_gt(r->server_status_ok->compaction->files_deleted, 0);
    cr_assert_eq(r->server_status_ok->compaction->running, 0);
    /* The window was merged into one segment. */
    cr_assert_eq(status_stat(r, "segments"), 1);
    tide_frame_free(r, NULL);

    /* Without wait it is queued and answered at once. */
    r = admin_compact(op, 0);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_ADMIN_COMPACT_OK,
              "admin compact (no wait): %s", wire_why(r));
    tide_frame_free(r, NULL);
    close(dev);
    close(op);
}

/* ---- RetentionGet ------------------------------------------------------ */

Test(compact_admin, retention_for_the_owner_and_the_operator)
{
    int op = wire_session(srv.port, srv.admin_key), dev, own, an;
    uint64_t account, other;
    Tide__V1__Envelope *r;
    const Tide__V1__RetentionRow *row;
    char key[128], akey[128];

    cr_assert_geq(op, 0);
    account = make_writer(op, "owner@example.com", key, sizeof(key));
    other = wire_make_account(op, "other@example.com");
    dev = wire_session(srv.port, key);
    cr_assert_geq(dev, 0);
    write_points(dev, 0);
    wait_flushed(op, 1);

    own = wire_owner_session(srv.port, "owner@example.com");
    r = retention_get(own, 0);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_RETENTION_OK,
              "retention: %s", wire_why(r));
    cr_assert_eq(r->retention_ok->n_rows, 1);
    row = r->retention_ok->rows[0];
    cr_assert_eq(row->account_id, account);
    cr_assert_str_eq(row->tier, "unlimited");
    cr_assert_eq(row->ttl_s, 30 * 86400);
    cr_assert_eq(row->points, POINTS);
    cr_assert_gt(row->bytes, 0);
    cr_assert_eq(row->oldest_ts_ns, T0);
    /* Everything is inside the 30-day TTL. */
    cr_assert_eq(row->expiring_points, 0);
    cr_assert_eq(row->expiring_bytes, 0);
    cr_assert_eq(row->deleted, 0);
    tide_frame_free(r, NULL);

    /* The owner names their own account: the same row. */
    r = retention_get(own, account);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_RETENTION_OK,
              "retention (own id): %s", wire_why(r));
    cr_assert_eq(r->retention_ok->n_rows, 1);
    tide_frame_free(r, NULL);
    /* Another account is not theirs to see. */
    expect_denied(retention_get(own, other), "owner's RetentionGet of other");

    /* Analyst and device keys get no retention report. */
    wire_key_create(op, account, "an", TIDE__V1__ROLE__ROLE_ANALYST, NULL, akey,
                    sizeof(akey));
    an = wire_session(srv.port, akey);
    cr_assert_geq(an, 0);
    expect_denied(retention_get(an, 0), "analyst's RetentionGet");
    expect_denied(retention_get(dev, 0), "device's RetentionGet");

    /* The operator: every account, or one by id. */
    r = retention_get(op, 0);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_RETENTION_OK,
              "operator retention: %s", wire_why(r));
    cr_assert_eq(r->retention_ok->n_rows, 2);
    cr_assert_eq(r->retention_ok->rows[0]->account_id, account);
    cr_assert_eq(r->retention_ok->rows[0]->points, POINTS);
    cr_assert_eq(r->retention_ok->rows[1]->account_id, other);
    cr_assert_eq(r->retention_ok->rows[1]->points, 0);
    cr_assert_eq(r->retention_ok->rows[1]->oldest_ts_ns, 0);
    cr_assert_eq(r->retention_ok->next_page_token, 0);
    tide_frame_free(r, NULL);
    r = retention_get(op, other);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_RETENTION_OK,
              "operator retention of one: %s", wire_why(r));
    cr_assert_eq(r->retention_ok->n_rows, 1);
    cr_assert_eq(r->retention_ok->rows[0]->account_id, other);
    tide_frame_free(r, NULL);
    r = retention_get(op, other + 1000);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_ERROR &&
                  r->error->code == TIDE__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND,
              "unknown account: %s", wire_why(r));
    tide_frame_free(r, NULL);
    close(an);
    close(own);
    close(dev);
    close(op);
}

/* ---- Permissions ------------------------------------------------------- */

Test(compact_admin, only_the_operator_compacts_and_reports_erasure)
{
    int op = wire_session(srv.port, srv.admin_key), dev, own;
    uint64_t account;
    char key[128];

    cr_assert_geq(op, 0);
    account = make_writer(op, "perm@example.com", key, sizeof(key));
    own = wire_owner_session(srv.port, "perm@example.com");
    dev = wire_session(srv.port, key);
    cr_assert_geq(dev, 0);
    expect_denied(erasure_report(own, account), "owner's ErasureReport");
    expect_denied(erasure_report(dev, account), "device's ErasureReport");
    expect_denied(admin_compact(own, 1), "owner's AdminCompact");
    expect_denied(admin_compact(dev, 0), "device's AdminCompact");
    close(dev);
    close(own);
    close(op);
}

/* ---- ErasureReport ----------------------------------------------------- */

Test(compact_admin, erasure_report_before_and_after_purge_and_compaction)
{
    int op = wire_session(srv.port, srv.admin_key), dev;
    uint64_t account, control;
    Tide__V1__Envelope *r;
    const Tide__V1__ErasureReportOk *ok;
    char key[128], ckey[128];
    int gone = 0;

    cr_assert_geq(op, 0);
    account = make_writer(op, "erase@example.com", key, sizeof(key));
    control = make_writer(op, "keep@example.com", ckey, sizeof(ckey));
    dev = wire_session(srv.port, key);
    cr_assert_geq(dev, 0);
    write_points(dev, 0);
    close(dev);
    dev = wire_session(srv.port, ckey);
    cr_assert_geq(dev, 0);
    write_points(dev, 0);
    close(dev);
    wait_flushed(op, 1);

    r = erasure_report(op, account);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_ERASURE_REPORT_OK,
              "erasure report: %s", wire_why(r));
    ok = r->erasure_report_ok;
    cr_assert_eq(ok->account_id, account);
    cr_assert_gt(ok->segment_files, 0);
    cr_assert_gt(ok->segment_bytes, 0);
    cr_assert_eq(ok->points, POINTS);
    cr_assert_eq(sidecar_rows(ok, "accounts"), 1);
    cr_assert_eq(sidecar_rows(ok, "devices"), 1);
    cr_assert_eq(sidecar_rows(ok, "series"), 1);
    cr_assert_eq(sidecar_rows(ok, "api_keys"), 1);
    cr_assert_gt(ok->files_scanned, 0);
    cr_assert_gt(ok->bytes_scanned, 0);
    cr_assert_eq(ok->nothing_found, 0);
    tide_frame_free(r, NULL);

    /* Purge now, then compact: nothing of it may be left. */
    {
        Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT;
        Tide__V1__AccountDelete ad = TIDE__V1__ACCOUNT_DELETE__INIT;

        ad.account_id = account;
        ad.immediate = 1;
        e.body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_DELETE;
        e.account_delete = &ad;
        r = wire_next(op, &e);
        cr_assert(r && r->body_case ==
                           TIDE__V1__ENVELOPE__BODY_ACCOUNT_DELETE_OK,
                  "purge: %s", wire_why(r));
        tide_frame_free(r, NULL);
    }
    r = admin_compact(op, 1);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_ADMIN_COMPACT_OK,
              "admin compact: %s", wire_why(r));
    tide_frame_free(r, NULL);
    /* WAL files holding its records go once checkpointed: allow the
     * flusher a few rounds. */
    for (int i = 0; i < 100; i++) {
        r = erasure_report(op, account);
        cr_assert(r && r->body_case ==
                           TIDE__V1__ENVELOPE__BODY_ERASURE_REPORT_OK,
                  "erasure report after purge: %s", wire_why(r));
        gone = r->erasure_report_ok->nothing_found;
        if (gone || i == 99)
            break;
        tide_frame_free(r, NULL);
        usleep(100000);
    }
    ok = r->erasure_report_ok;
    cr_assert(gone,
              "the purged account's data is still somewhere: %llu segment "
              "files, %llu points, %llu WAL files, %llu head points, %llu "
              "series rows",
              (unsigned long long)ok->segment_files,
              (unsigned long long)ok->points, (unsigned long long)ok->wal_files,
              (unsigned long long)ok->head_points,
              (unsigned long long)sidecar_rows(ok, "series"));
    ok = r->erasure_report_ok;
    cr_assert_eq(ok->segment_files, 0);
    cr_assert_eq(ok->segment_bytes, 0);
    cr_assert_eq(ok->points, 0);
    cr_assert_eq(ok->wal_files, 0);
    cr_assert_eq(ok->head_points, 0);
    cr_assert_eq(sidecar_rows(ok, "accounts"), 0);
    cr_assert_eq(sidecar_rows(ok, "series"), 0);
    cr_assert_eq(sidecar_rows(ok, "devices"), 0);
    cr_assert_eq(sidecar_rows(ok, "tombstones"), 1);
    /* The evidence: the control account's segment at least was read. */
    cr_assert_gt(ok->files_scanned, 0);
    cr_assert_gt(ok->bytes_scanned, 0);
    tide_frame_free(r, NULL);

    /* The control account keeps every point. */
    r = retention_get(op, control);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_RETENTION_OK,
              "control retention: %s", wire_why(r));
    cr_assert_eq(r->retention_ok->rows[0]->points, POINTS);
    tide_frame_free(r, NULL);
    close(op);
}

/* ---- The CLI ----------------------------------------------------------- */

Test(compact_admin, cli_compact_retention_and_erasure_report)
{
    int op = wire_session(srv.port, srv.admin_key), dev;
    uint64_t account;
    char key[128], args[128], out[16384];

    cr_assert_geq(op, 0);
    account = make_writer(op, "cli@example.com", key, sizeof(key));
    dev = wire_session(srv.port, key);
    cr_assert_geq(dev, 0);
    write_points(dev, 0);
    wait_flushed(op, 1);

    cr_assert_eq(fixture_cli(srv.admin_key, "admin compact --wait", NULL, out,
                             sizeof(out)),
                 0, "%s", out);
    cr_assert(strstr(out, "done"), "%s", out);
    cr_assert(strstr(out, "runs"), "%s", out);

    cr_assert_eq(
        fixture_cli(srv.admin_key, "retention", NULL, out, sizeof(out)), 0,
        "%s", out);
    cr_assert(strstr(out, "unlimited"), "%s", out);
    cr_assert(strstr(out, "30d"), "%s", out);
    cr_assert(strstr(out, " 500 "), "%s", out);

    snprintf(args, sizeof(args), "--output csv retention --account %llu",
             (unsigned long long)account);
    cr_assert_eq(fixture_cli(srv.admin_key, args, NULL, out, sizeof(out)), 0,
                 "%s", out);
    cr_assert(strstr(out, "account,tier,ttl,oldest_point,points,bytes,"), "%s",
              out);

    snprintf(args, sizeof(args), "account erasure-report %llu",
             (unsigned long long)account);
    cr_assert_eq(fixture_cli(srv.admin_key, args, NULL, out, sizeof(out)), 0,
                 "%s", out);
    cr_assert(strstr(out, "segments"), "%s", out);
    cr_assert(strstr(out, "evidence:"), "%s", out);
    cr_assert_null(strstr(out, "nothing found"), "%s", out);

    /* Not the operator: the CLI reports the server's refusal, exit 1. */
    cr_assert_eq(fixture_cli(key, args, NULL, out, sizeof(out)), 1, "%s", out);
    /* A missing id is a usage error. */
    cr_assert_eq(fixture_cli(srv.admin_key, "account erasure-report", NULL, out,
                             sizeof(out)),
                 2, "%s", out);
    close(dev);
    close(op);
}
