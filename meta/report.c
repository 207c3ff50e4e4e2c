/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reports for the operator: how many rows of one account every table
 * still holds (the sidecar's part of the erasure report, docs/protocol.md
 * "ErasureReport"), and the list of accounts a retention report walks.
 */
#include "meta_int.h"

/* The tables holding account rows: the ones purge_one() empties
 * (usage.c), plus the tombstones that record a deletion. */
static const char *const tables[TIDE_META_REPORT_TABLES] = {
    "accounts",      "api_keys",      "sessions",  "devices",
    "series",        "usage_daily",   "auth_log",  "request_log",
    "request_daily", "notifications", "tombstones"};

/* One statement, so every count comes from one snapshot; in the order of
 * tables[]. */
static const char SQL_COUNTS[] =
    "SELECT (SELECT count(*) FROM accounts WHERE id=?1),"
    " (SELECT count(*) FROM api_keys WHERE account_id=?1),"
    " (SELECT count(*) FROM sessions WHERE account_id=?1),"
    " (SELECT count(*) FROM devices WHERE account_id=?1),"
    " (SELECT count(*) FROM series WHERE account_id=?1),"
    " (SELECT count(*) FROM usage_daily WHERE account_id=?1),"
    " (SELECT count(*) FROM auth_log WHERE account_id=?1),"
    " (SELECT count(*) FROM request_log WHERE account_id=?1),"
    " (SELECT count(*) FROM request_daily WHERE account_id=?1),"
    " (SELECT count(*) FROM notifications WHERE account_id=?1),"
    " (SELECT count(*) FROM tombstones WHERE account_id=?1)";

int tide_meta_report_rows(tide_meta *m, const struct tide_meta_principal *p,
                          uint64_t account_id, struct tide_meta_table_rows *out)
{
    int64_t n[TIDE_META_REPORT_TABLES] = {0};
    int rc;

    if (!out)
        return TIDE_EINVAL;
    rc = tide__meta_authorize_flush(m, p, TIDE_META_ACT_OPERATOR, 0, 0);
    if (rc)
        return rc;
    tide__meta_lock(m);
    rc = tide__meta_ints(m, SQL_COUNTS, n, TIDE_META_REPORT_TABLES,
                         META_ARGS(META_INT(account_id)));
    tide__meta_unlock(m);
    for (size_t i = 0; i < TIDE_META_REPORT_TABLES; i++) {
        out[i].table = tables[i];
        out[i].rows = rc == 0 && n[i] > 0 ? (uint64_t)n[i] : 0;
    }
    return rc;
}

static const char SQL_ACCOUNTS[] =
    "SELECT id, tier, deleted_ns IS NOT NULL FROM accounts WHERE id>?1"
    " ORDER BY id LIMIT ?2";

static void brief_row(sqlite3_stmt *st, void *arg)
{
    struct tide_meta_account_brief *b = arg;

    b->id = (uint64_t)sqlite3_column_int64(st, 0);
    b->tier = (uint16_t)sqlite3_column_int(st, 1);
    b->deleted = sqlite3_column_int(st, 2);
}

int tide_meta_report_accounts(tide_meta *m, const struct tide_meta_principal *p,
                              uint64_t after_id,
                              struct tide_meta_account_brief *out, size_t cap,
                              size_t *n_out)
{
    return tide__meta_read(m, p, TIDE_META_ACT_OPERATOR, 0, SQL_ACCOUNTS,
                           brief_row, out, sizeof(*out), cap, n_out,
                           META_ARGS(META_INT(after_id), META_INT(cap)));
}
