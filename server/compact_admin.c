/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Compaction control and the retention and erasure reports:
 * AdminCompact, RetentionGet and ErasureReport (docs/protocol.md,
 * "Compaction and reports"). Each may take far more than a millisecond (a
 * forced pass waited for, WAL files read, the sidecar walked account by
 * account), so each runs as a job on a thread of its own, the mechanism
 * of the password jobs (admin_int.h), and is answered on the loop.
 * AdminCompact and ErasureReport are the operator's; RetentionGet also an
 * account owner's, for their own account.
 */
#include <errno.h>
#include <string.h>

#include "admin_int.h"

#define RETENTION_PAGE_MAX 1024
#define TIER_CACHE 8 /* tiers remembered while walking accounts */

/* One row of a retention report. */
struct retention_row {
    uint64_t account_id;
    int deleted;
    int64_t ttl_s;
    char tier[TIDE_META_TIER_NAME_MAX + 1];
    struct tide_account_usage u;
};

struct report_job {
    struct login_job job; /* first: the job hooks cast back to this */
    int wait;             /* AdminCompact */
    uint64_t account_id;  /* RetentionGet (0 = all), ErasureReport */
    uint64_t page_token;  /* RetentionGet */
    size_t limit;
    struct tide_db_stats st; /* after the work */
    struct retention_row *rows;
    size_t n_rows;
    uint64_t next_page_token;
    struct tide_account_usage usage; /* ErasureReport */
    struct tide_meta_table_rows tables[TIDE_META_REPORT_TABLES];
    struct tide_meta_key_report keys; /* ErasureReport: its data key */
};

void admin_compaction_fill(Tide__V1__CompactionStats *out,
                           const struct tide_db_stats *st)
{
    tide__v1__compaction_stats__init(out);
    out->runs = st->compactions;
    out->bytes_read = st->compact_bytes_read;
    out->bytes_written = st->compact_bytes_written;
    out->points_expired = st->points_expired;
    out->points_erased = st->points_erased;
    out->points_deduplicated = st->points_deduplicated;
    out->files_deleted = st->segment_files_deleted;
    out->errors = st->compaction_errors;
    out->running = st->compaction_running != 0;
    /* The engine says "none" with INT64_MAX; the wire with 0. */
    out->oldest_uncompacted_ns =
        st->oldest_uncompacted_ns == INT64_MAX ? 0 : st->oldest_uncompacted_ns;
    out->next_compaction_ns = st->next_compaction_ns;
}

static void job_free(struct login_job *j)
{
    struct report_job *r = (struct report_job *)j;

    tide_free(r->rows);
    tide_free(r);
}

/* ---- AdminCompact ------------------------------------------------------ */

static void compact_work(struct login_job *j)
{
    struct report_job *r = (struct report_job *)j;
    struct server *s = j->srv;

    j->rc = tide_meta_authorize(s->meta, &j->who, TIDE_META_ACT_OPERATOR, 0, 0);
    if (j->rc == 0) {
        j->rc = tide_db_compact(s->db, r->wait);
        if (j->rc)
            tide_log(LOG_WARN, "forced compaction (wait=%d) failed: %s",
                     r->wait, tide_strerror(j->rc));
    }
    tide_db_stats(s->db, &r->st);
}

static void compact_answer(struct conn *c, struct login_job *j)
{
    struct report_job *r = (struct report_job *)j;
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__AdminCompactOk ok = TIDE__V1__ADMIN_COMPACT_OK__INIT;
    Tide__V1__CompactionStats cs;

    if (j->rc) {
        admin_reply_rc(c, j->rid, j->rc);
        return;
    }
    admin_compaction_fill(&cs, &r->st);
    ok.compaction = &cs;
    env.body_case = TIDE__V1__ENVELOPE__BODY_ADMIN_COMPACT_OK;
    env.admin_compact_ok = &ok;
    admin_reply(c, j->rid, &env);
}

/* ---- RetentionGet ------------------------------------------------------ */

/* The name and TTL of tier `id`, through a small cache: accounts share a
 * handful of tiers. */
struct tier_cache {
    struct tide_meta_tier t[TIER_CACHE];
    size_t n;
};

static void tier_lookup(tide_meta *m, struct tier_cache *tc, uint16_t id,
                        struct retention_row *row)
{
    struct tide_meta_tier t;

    for (size_t i = 0; i < tc->n; i++)
        if (tc->t[i].id == id) {
            t = tc->t[i];
            goto found;
        }
    if (tide_meta_tier_get(m, id, &t)) {
        snprintf(row->tier, sizeof(row->tier), "#%u", (unsigned)id);
        row->ttl_s = 0;
        return;
    }
    if (tc->n < TIER_CACHE)
        tc->t[tc->n++] = t;
found:
    snprintf(row->tier, sizeof(row->tier), "%s", t.name);
    row->ttl_s = t.ttl_s;
}

/* The accounts of the report in r->rows (tier and deletion filled). */
static int retention_accounts(struct report_job *r, struct tier_cache *tc)
{
    struct login_job *j = &r->job;
    tide_meta *m = j->srv->meta;
    struct tide_meta_account_brief *b = NULL;
    size_t n = 0, want;
    int rc;

    if (j->who.role != TIDE_META_ROLE_ADMIN) {
        struct tide_meta_account a;

        /* An owner: their own account, checked as for reading it. */
        rc = tide_meta_account_get(m, &j->who, j->who.account_id, &a);
        if (rc)
            return rc;
        r->rows = tide_calloc(1, sizeof(*r->rows));
        if (!r->rows)
            return -ENOMEM;
        r->rows[0].account_id = a.id;
        tier_lookup(m, tc, a.tier, &r->rows[0]);
        r->n_rows = 1;
        return 0;
    }
    /* The operator: one account (deleted ones too), or a page of all. */
    want = r->account_id ? 1 : r->limit;
    b = tide_calloc(want, sizeof(*b));
    r->rows = tide_calloc(want, sizeof(*r->rows));
    rc = b && r->rows ? 0 : -ENOMEM;
    if (rc == 0)
        rc = tide_meta_report_accounts(
            m, &j->who, r->account_id ? r->account_id - 1 : r->page_token, b,
            want, &n);
    if (rc == 0 && r->account_id && (n == 0 || b[0].id != r->account_id))
        rc = TIDE_ENOTFOUND;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        r->rows[i].account_id = b[i].id;
        r->rows[i].deleted = b[i].deleted;
        tier_lookup(m, tc, b[i].tier, &r->rows[i]);
    }
    if (rc == 0) {
        r->n_rows = n;
        /* A full page may have more behind it; a short one is the end. */
        r->next_page_token = !r->account_id && n == want ? b[n - 1].id : 0;
    }
    tide_free(b);
    return rc;
}

static void retention_work(struct login_job *j)
{
    struct report_job *r = (struct report_job *)j;
    struct tier_cache tc = {.n = 0};

    j->rc = retention_accounts(r, &tc);
    /* From segment footers and the heads, in memory: no WAL reads. */
    for (size_t i = 0; j->rc == 0 && i < r->n_rows; i++)
        j->rc = tide_db_account_usage(j->srv->db, r->rows[i].account_id, 0,
                                      &r->rows[i].u);
    tide_db_stats(j->srv->db, &r->st);
}

static void retention_answer(struct conn *c, struct login_job *j)
{
    struct report_job *r = (struct report_job *)j;
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__RetentionOk ok = TIDE__V1__RETENTION_OK__INIT;
    Tide__V1__RetentionRow *v = NULL;
    Tide__V1__RetentionRow **pv = NULL;

    if (j->rc) {
        admin_reply_rc(c, j->rid, j->rc);
        return;
    }
    if (r->n_rows) {
        v = tide_calloc(r->n_rows, sizeof(*v));
        pv = tide_calloc(r->n_rows, sizeof(*pv));
        if (!v || !pv) {
            tide_free(v);
            tide_free(pv);
            admin_reply_rc(c, j->rid, -ENOMEM);
            return;
        }
    }
    for (size_t i = 0; i < r->n_rows; i++) {
        const struct retention_row *row = &r->rows[i];

        tide__v1__retention_row__init(&v[i]);
        v[i].account_id = row->account_id;
        v[i].tier = (char *)row->tier;
        v[i].ttl_s = row->ttl_s;
        v[i].oldest_ts_ns =
            row->u.oldest_ts == INT64_MAX ? 0 : row->u.oldest_ts;
        v[i].points = row->u.points;
        v[i].bytes = row->u.bytes;
        v[i].expiring_points = row->u.expiring_points;
        v[i].expiring_bytes = row->u.expiring_bytes;
        v[i].next_compaction_ns = r->st.next_compaction_ns;
        v[i].deleted = row->deleted;
        pv[i] = &v[i];
    }
    ok.rows = pv;
    ok.n_rows = r->n_rows;
    ok.next_page_token = r->next_page_token;
    env.body_case = TIDE__V1__ENVELOPE__BODY_RETENTION_OK;
    env.retention_ok = &ok;
    admin_reply(c, j->rid, &env);
    tide_free(v);
    tide_free(pv);
}

/* ---- ErasureReport ----------------------------------------------------- */

static void erasure_work(struct login_job *j)
{
    struct report_job *r = (struct report_job *)j;
    struct server *s = j->srv;

    /* The sidecar's rows first: it authorises the operator. */
    j->rc = tide_meta_report_rows(s->meta, &j->who, r->account_id, r->tables);
    /* Segment footers, the heads and every live WAL file (I/O). */
    if (j->rc == 0)
        j->rc = tide_meta_key_report(s->meta, &j->who, r->account_id, &r->keys);
    if (j->rc == 0)
        j->rc = tide_db_account_usage(s->db, r->account_id, TIDE_USAGE_WAL,
                                      &r->usage);
    tide_db_stats(s->db, &r->st);
}

static void erasure_answer(struct conn *c, struct login_job *j)
{
    struct report_job *r = (struct report_job *)j;
    const struct tide_account_usage *u = &r->usage;
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__ErasureReportOk ok = TIDE__V1__ERASURE_REPORT_OK__INIT;
    Tide__V1__SidecarRows v[TIDE_META_REPORT_TABLES];
    Tide__V1__SidecarRows *pv[TIDE_META_REPORT_TABLES];
    int found = u->segments || u->wal_files || u->head_points || u->points;

    if (j->rc) {
        admin_reply_rc(c, j->rid, j->rc);
        return;
    }
    for (size_t i = 0; i < TIDE_META_REPORT_TABLES; i++) {
        tide__v1__sidecar_rows__init(&v[i]);
        v[i].table = (char *)r->tables[i].table;
        v[i].rows = r->tables[i].rows;
        pv[i] = &v[i];
        /* Tombstones stay: they are the record of the erasure itself. */
        if (strcmp(r->tables[i].table, "tombstones") && r->tables[i].rows)
            found = 1;
    }
    ok.account_id = r->account_id;
    ok.segment_files = u->segments;
    ok.segment_bytes = u->segment_file_bytes;
    ok.points = u->points;
    ok.wal_files = u->wal_files;
    ok.wal_bytes = u->wal_bytes;
    ok.head_points = u->head_points;
    ok.sidecar = pv;
    ok.n_sidecar = TIDE_META_REPORT_TABLES;
    ok.files_scanned = u->files_scanned;
    ok.bytes_scanned = u->bytes_scanned;
    ok.next_compaction_ns = r->st.next_compaction_ns;
    ok.nothing_found = !found;
    /* Crypto-shredding: with the key gone, whatever is still on disk is
     * ciphertext nobody can read; compaction removes it. */
    ok.data_key_destroyed_ns = r->keys.key_destroyed_ns;
    if (r->keys.encrypted && !r->keys.has_key)
        ok.ciphertext_bytes = u->bytes;
    env.body_case = TIDE__V1__ENVELOPE__BODY_ERASURE_REPORT_OK;
    env.erasure_report_ok = &ok;
    admin_reply(c, j->rid, &env);
}

/* ---- Dispatch ---------------------------------------------------------- */

void handle_compact_admin(struct conn *c, const Tide__V1__Envelope *e)
{
    int admin = c->who.role == TIDE_META_ROLE_ADMIN;
    struct report_job *r;

    /* Refused on the loop when the role alone decides; the job checks
     * the credential itself (a revoked key, an ended session). */
    switch (e->body_case) {
    case TIDE__V1__ENVELOPE__BODY_ADMIN_COMPACT:
    case TIDE__V1__ENVELOPE__BODY_ERASURE_REPORT:
        if (!admin) {
            conn_send_error(c, e->request_id,
                            TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED,
                            "only the operator may do this", 0);
            return;
        }
        break;
    case TIDE__V1__ENVELOPE__BODY_RETENTION_GET:
        if (!admin && c->who.role != TIDE_META_ROLE_OWNER) {
            conn_send_error(c, e->request_id,
                            TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED,
                            "retention reports are for the account owner "
                            "and the operator",
                            0);
            return;
        }
        if (!admin && e->retention_get->account_id &&
            e->retention_get->account_id != c->who.account_id) {
            conn_send_error(c, e->request_id,
                            TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED,
                            "account_id names another account", 0);
            return;
        }
        break;
    default:
        return;
    }
    r = tide_calloc(1, sizeof(*r));
    if (!r) {
        admin_reply_rc(c, e->request_id, -ENOMEM);
        return;
    }
    r->job.done = job_free;
    switch (e->body_case) {
    case TIDE__V1__ENVELOPE__BODY_ADMIN_COMPACT:
        r->wait = e->admin_compact->wait;
        r->job.work = compact_work;
        r->job.answer = compact_answer;
        break;
    case TIDE__V1__ENVELOPE__BODY_ERASURE_REPORT:
        r->account_id = e->erasure_report->account_id;
        if (!r->account_id) {
            job_free(&r->job);
            conn_send_error(c, e->request_id,
                            TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                            "name the account: account_id is required", 0);
            return;
        }
        r->job.work = erasure_work;
        r->job.answer = erasure_answer;
        break;
    default:
        r->account_id = admin ? e->retention_get->account_id : 0;
        r->page_token = e->retention_get->page_token;
        r->limit = e->retention_get->limit &&
                           e->retention_get->limit < RETENTION_PAGE_MAX
                       ? e->retention_get->limit
                       : RETENTION_PAGE_MAX;
        r->job.work = retention_work;
        r->job.answer = retention_answer;
        break;
    }
    tided_password_job(c, e->request_id, &r->job);
}
