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
    " VALUES(?1, ?2, ?3, tide_enc(?4, 'notifications.text', ?1))";

int tide__meta_notify_add(tide_meta *m, uint64_t account_id,
                          enum tide_meta_notify_kind kind, const char *text)
{
    int64_t want[3]; /* notify_device, notify_usage, notify_product */
    int rc;

    if (kind != TIDE_META_NOTIFY_SECURITY) {
        rc = tide__meta_ints(m, SQL_PREFS, want, 3,
                             META_ARGS(META_INT(account_id)));
        if (rc)
            return rc == TIDE_ENOTFOUND ? 0 : rc;
        if (!want[kind == TIDE_META_NOTIFY_DEVICE  ? 0
                  : kind == TIDE_META_NOTIFY_USAGE ? 1
                                                   : 2])
            return 0;
    }
    return tide__meta_run(m, SQL_INSERT,
                          META_ARGS(META_INT(account_id), META_NOW,
                                    META_INT(kind), META_TEXT(text)));
}

static const char SQL_LIST[] =
    "SELECT id, ts_ns, kind,"
    " tide_dec(text, 'notifications.text', account_id), read FROM notifications"
    " WHERE account_id=?1 AND id<?2 ORDER BY id DESC LIMIT ?3";

static void notification_row(sqlite3_stmt *st, void *arg)
{
    struct tide_meta_notification *x = arg;

    memset(x, 0, sizeof(*x));
    x->id = (uint64_t)sqlite3_column_int64(st, 0);
    x->ts_ns = sqlite3_column_int64(st, 1);
    x->kind = (enum tide_meta_notify_kind)sqlite3_column_int(st, 2);
    tide__meta_col_text(st, 3, x->text, sizeof(x->text));
    x->read = sqlite3_column_int(st, 4);
}

int tide_meta_notify_list(tide_meta *m, const struct tide_meta_principal *p,
                          uint64_t account_id, uint64_t before_id,
                          struct tide_meta_notification *out, size_t cap,
                          size_t *n_out)
{
    int rc;

    if (!n_out || (cap && !out))
        return TIDE_EINVAL;
    *n_out = 0;
    tide__meta_lock(m);
    rc = tide__meta_authorize_locked(m, p, TIDE_META_ACT_NOTIFY, account_id, 0);
    if (!rc)
        rc = tide__meta_list(
            m, SQL_LIST, notification_row, out, sizeof(*out), cap, n_out,
            META_ARGS(META_INT(account_id),
                      META_INT(before_id ? (int64_t)before_id : INT64_MAX),
                      META_INT(cap)));
    tide__meta_unlock(m);
    return rc;
}

static const char SQL_MARK[] =
    "UPDATE notifications SET read=1 WHERE id=?1 AND account_id=?2";

int tide_meta_notify_mark_read(tide_meta *m,
                               const struct tide_meta_principal *p,
                               uint64_t account_id, uint64_t id)
{
    return tide__meta_authz_run(m, p, TIDE_META_ACT_NOTIFY, account_id, 0,
                                SQL_MARK, TIDE_ENOTFOUND,
                                META_ARGS(META_INT(id), META_INT(account_id)));
}

static const char SQL_SET_PREFS[] =
    "UPDATE accounts SET notify_device=?2, notify_usage=?3,"
    " notify_product=?4, updated_ns=?5 WHERE id=?1";

int tide_meta_notify_prefs(tide_meta *m, const struct tide_meta_principal *p,
                           uint64_t account_id, int device_alerts,
                           int usage_warnings, int product_news)
{
    return tide__meta_authz_run(
        m, p, TIDE_META_ACT_NOTIFY, account_id, 0, SQL_SET_PREFS, 0,
        META_ARGS(META_INT(account_id), META_INT(!!device_alerts),
                  META_INT(!!usage_warnings), META_INT(!!product_news),
                  META_NOW));
}
