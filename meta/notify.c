/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Notifications: device alerts, usage warnings, security alerts and
 * product news per account, with the account's preferences deciding which
 * optional kinds are stored (security alerts are always on).
 */
#include "meta_int.h"

#include <string.h>

static const char SQL_PREFS[] =
    "SELECT notify_device, notify_usage, notify_product FROM accounts"
    " WHERE id=?1";
static const char SQL_INSERT[] =
    "INSERT INTO notifications(account_id, ts_ns, kind, text)"
    " VALUES(?1, ?2, ?3, ?4)";

int tide__meta_notify_add(tide_meta *m, uint64_t account_id,
                          enum tide_meta_notify_kind kind, const char *text)
{
    sqlite3_stmt *st;
    int rc, src, want = 1;

    if (kind != TIDE_META_NOTIFY_SECURITY) {
        rc = tide__meta_stmt(m, SQL_PREFS, &st);
        if (rc)
            return rc;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        src = sqlite3_step(st);
        if (src == SQLITE_ROW)
            want = sqlite3_column_int(st, kind == TIDE_META_NOTIFY_DEVICE  ? 0
                                          : kind == TIDE_META_NOTIFY_USAGE ? 1
                                                                           : 2);
        sqlite3_reset(st);
        if (src != SQLITE_ROW && src != SQLITE_DONE)
            return tide__meta_sqlerr(src);
        if (!want || src == SQLITE_DONE)
            return 0;
    }
    rc = tide__meta_stmt(m, SQL_INSERT, &st);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
    sqlite3_bind_int64(st, 2, tide__meta_now(m));
    sqlite3_bind_int(st, 3, kind);
    tide__meta_bind_text(st, 4, text);
    src = sqlite3_step(st);
    sqlite3_reset(st);
    return src == SQLITE_DONE ? 0 : tide__meta_sqlerr(src);
}

static const char SQL_LIST[] =
    "SELECT id, ts_ns, kind, text, read FROM notifications"
    " WHERE account_id=?1 AND id<?2 ORDER BY id DESC LIMIT ?3";

int tide_meta_notify_list(tide_meta *m, const struct tide_meta_principal *p,
                          uint64_t account_id, uint64_t before_id,
                          struct tide_meta_notification *out, size_t cap,
                          size_t *n_out)
{
    sqlite3_stmt *st;
    size_t n = 0;
    int rc, src = SQLITE_DONE;

    if (!n_out || (cap && !out))
        return TIDE_EINVAL;
    *n_out = 0;
    tide__meta_lock(m);
    rc = tide__meta_authorize_locked(m, p, TIDE_META_ACT_NOTIFY, account_id, 0);
    if (rc)
        goto out;
    rc = tide__meta_stmt(m, SQL_LIST, &st);
    if (rc)
        goto out;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
    sqlite3_bind_int64(st, 2, before_id ? (sqlite3_int64)before_id : INT64_MAX);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)cap);
    while (n < cap && (src = sqlite3_step(st)) == SQLITE_ROW) {
        struct tide_meta_notification *x = &out[n++];

        memset(x, 0, sizeof(*x));
        x->id = (uint64_t)sqlite3_column_int64(st, 0);
        x->ts_ns = sqlite3_column_int64(st, 1);
        x->kind = (enum tide_meta_notify_kind)sqlite3_column_int(st, 2);
        tide__meta_col_text(st, 3, x->text, sizeof(x->text));
        x->read = sqlite3_column_int(st, 4);
    }
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        rc = tide__meta_sqlerr(src);
    sqlite3_reset(st);
    *n_out = n;
out:
    tide__meta_unlock(m);
    return rc;
}

static const char SQL_MARK[] =
    "UPDATE notifications SET read=1 WHERE id=?1 AND account_id=?2";

int tide_meta_notify_mark_read(tide_meta *m,
                               const struct tide_meta_principal *p,
                               uint64_t account_id, uint64_t id)
{
    sqlite3_stmt *st;
    int rc, src;

    tide__meta_lock(m);
    rc = tide__meta_authorize_locked(m, p, TIDE_META_ACT_NOTIFY, account_id, 0);
    if (rc)
        goto out;
    rc = tide__meta_stmt(m, SQL_MARK, &st);
    if (rc)
        goto out;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
    src = sqlite3_step(st);
    sqlite3_reset(st);
    if (src != SQLITE_DONE)
        rc = tide__meta_sqlerr(src);
    else if (sqlite3_changes(m->db) == 0)
        rc = TIDE_ENOTFOUND;
out:
    tide__meta_unlock(m);
    return rc;
}

static const char SQL_SET_PREFS[] =
    "UPDATE accounts SET notify_device=?2, notify_usage=?3,"
    " notify_product=?4, updated_ns=?5 WHERE id=?1";

int tide_meta_notify_prefs(tide_meta *m, const struct tide_meta_principal *p,
                           uint64_t account_id, int device_alerts,
                           int usage_warnings, int product_news)
{
    sqlite3_stmt *st;
    int rc, src;

    tide__meta_lock(m);
    rc = tide__meta_authorize_locked(m, p, TIDE_META_ACT_NOTIFY, account_id, 0);
    if (rc)
        goto out;
    rc = tide__meta_stmt(m, SQL_SET_PREFS, &st);
    if (rc)
        goto out;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
    sqlite3_bind_int(st, 2, !!device_alerts);
    sqlite3_bind_int(st, 3, !!usage_warnings);
    sqlite3_bind_int(st, 4, !!product_news);
    sqlite3_bind_int64(st, 5, tide__meta_now(m));
    src = sqlite3_step(st);
    sqlite3_reset(st);
    if (src != SQLITE_DONE)
        rc = tide__meta_sqlerr(src);
out:
    tide__meta_unlock(m);
    return rc;
}
