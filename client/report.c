/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libtide's typed calls for compaction and the retention and erasure
 * reports (AdminCompact, RetentionGet, ErasureReport; docs/protocol.md,
 * "Compaction and reports"): one request each, answered by one frame,
 * except the operator's full retention report, which follows the pages.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Bound on the pages of one retention report: 1024 rows each. */
#define RETENTION_PAGES_MAX (1u << 20)

/* Connect if needed, then send `env` and wait for `want_case`. */
static int call(tide_client *c, Tide__V1__Envelope *env, int want_case,
                Tide__V1__Envelope **resp)
{
    int rc = tide__client_ensure(c, 0);

    return rc ? rc : tide__client_request(c, env, want_case, resp);
}

int tide_client_compact(tide_client *c, int wait, uint32_t timeout_ms,
                        struct tide_compaction_stats *out)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT, *resp = NULL;
    Tide__V1__AdminCompact req = TIDE__V1__ADMIN_COMPACT__INIT;
    const Tide__V1__CompactionStats *cs;
    uint32_t io_timeout;
    int rc;

    if (!c)
        return TIDE_EINVAL;
    req.wait = wait != 0;
    env.body_case = TIDE__V1__ENVELOPE__BODY_ADMIN_COMPACT;
    env.admin_compact = &req;
    /* A waited-for pass may take far longer than the usual silence. */
    io_timeout = c->o.io_timeout_ms;
    if (wait)
        c->o.io_timeout_ms = timeout_ms ? timeout_ms : INT_MAX;
    rc = call(c, &env, TIDE__V1__ENVELOPE__BODY_ADMIN_COMPACT_OK, &resp);
    c->o.io_timeout_ms = io_timeout;
    if (rc)
        return rc;
    cs = resp->admin_compact_ok ? resp->admin_compact_ok->compaction : NULL;
    if (out) {
        memset(out, 0, sizeof(*out));
        if (cs) {
            out->runs = cs->runs;
            out->bytes_read = cs->bytes_read;
            out->bytes_written = cs->bytes_written;
            out->points_expired = cs->points_expired;
            out->points_erased = cs->points_erased;
            out->points_deduplicated = cs->points_deduplicated;
            out->files_deleted = cs->files_deleted;
            out->errors = cs->errors;
            out->running = cs->running;
            out->oldest_uncompacted_ns = cs->oldest_uncompacted_ns;
            out->next_compaction_ns = cs->next_compaction_ns;
        }
    }
    tide_frame_free(resp, NULL);
    return 0;
}

void tide_client_retention_free(struct tide_retention_row *rows)
{
    tide_free(rows);
}

/* Append the rows of one RetentionOk to *rows. */
static int retention_add(const Tide__V1__RetentionOk *ok,
                         struct tide_retention_row **rows, size_t *n)
{
    struct tide_retention_row *v;

    if (!ok->n_rows)
        return 0;
    v = tide_realloc(*rows, (*n + ok->n_rows) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    *rows = v;
    for (size_t i = 0; i < ok->n_rows; i++) {
        const Tide__V1__RetentionRow *r = ok->rows[i];
        struct tide_retention_row *o = &v[(*n)++];

        memset(o, 0, sizeof(*o));
        o->account_id = r->account_id;
        snprintf(o->tier, sizeof(o->tier), "%s", r->tier ? r->tier : "");
        o->ttl_s = r->ttl_s;
        o->oldest_ts_ns = r->oldest_ts_ns;
        o->points = r->points;
        o->bytes = r->bytes;
        o->expiring_points = r->expiring_points;
        o->expiring_bytes = r->expiring_bytes;
        o->next_compaction_ns = r->next_compaction_ns;
        o->deleted = r->deleted;
    }
    return 0;
}

int tide_client_retention(tide_client *c, uint64_t account_id,
                          struct tide_retention_row **rows, size_t *n_rows)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT, *resp = NULL;
    Tide__V1__RetentionGet req = TIDE__V1__RETENTION_GET__INIT;
    struct tide_retention_row *v = NULL;
    size_t n = 0;
    int rc = 0;

    if (!c || !rows || !n_rows)
        return TIDE_EINVAL;
    req.account_id = account_id;
    env.body_case = TIDE__V1__ENVELOPE__BODY_RETENTION_GET;
    env.retention_get = &req;
    for (unsigned page = 0; page < RETENTION_PAGES_MAX; page++) {
        const Tide__V1__RetentionOk *ok;
        uint64_t next;

        rc = call(c, &env, TIDE__V1__ENVELOPE__BODY_RETENTION_OK, &resp);
        if (rc)
            break;
        ok = resp->retention_ok;
        rc = ok ? retention_add(ok, &v, &n) : TIDE_EPROTO;
        next = ok ? ok->next_page_token : 0;
        tide_frame_free(resp, NULL);
        resp = NULL;
        if (rc || next == 0)
            break;
        /* Tokens are account ids and increase: anything else would loop. */
        if (next <= req.page_token) {
            rc = TIDE_EPROTO;
            break;
        }
        req.page_token = next;
    }
    if (rc) {
        tide_free(v);
        return rc;
    }
    *rows = v;
    *n_rows = n;
    return 0;
}

int tide_client_erasure_report(tide_client *c, uint64_t account_id,
                               struct tide_erasure_report *out)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT, *resp = NULL;
    Tide__V1__ErasureReport req = TIDE__V1__ERASURE_REPORT__INIT;
    const Tide__V1__ErasureReportOk *ok;
    int rc;

    if (!c || !out || !account_id)
        return TIDE_EINVAL;
    req.account_id = account_id;
    env.body_case = TIDE__V1__ENVELOPE__BODY_ERASURE_REPORT;
    env.erasure_report = &req;
    rc = call(c, &env, TIDE__V1__ENVELOPE__BODY_ERASURE_REPORT_OK, &resp);
    if (rc)
        return rc;
    ok = resp->erasure_report_ok;
    if (!ok) {
        tide_frame_free(resp, NULL);
        return TIDE_EPROTO;
    }
    memset(out, 0, sizeof(*out));
    out->account_id = ok->account_id;
    out->segment_files = ok->segment_files;
    out->segment_bytes = ok->segment_bytes;
    out->points = ok->points;
    out->wal_files = ok->wal_files;
    out->wal_bytes = ok->wal_bytes;
    out->head_points = ok->head_points;
    for (size_t i = 0; i < ok->n_sidecar && i < TIDE_SIDECAR_TABLES_MAX; i++) {
        snprintf(out->tables[i].table, sizeof(out->tables[i].table), "%s",
                 ok->sidecar[i]->table ? ok->sidecar[i]->table : "");
        out->tables[i].rows = ok->sidecar[i]->rows;
        out->n_tables++;
    }
    out->files_scanned = ok->files_scanned;
    out->bytes_scanned = ok->bytes_scanned;
    out->next_compaction_ns = ok->next_compaction_ns;
    out->nothing_found = ok->nothing_found;
    out->data_key_destroyed_ns = ok->data_key_destroyed_ns;
    out->ciphertext_bytes = ok->ciphertext_bytes;
    tide_frame_free(resp, NULL);
    return 0;
}
