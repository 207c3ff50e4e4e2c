/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device tags set in bulk: how the write path stores the tags a batch's
 * PointGroups upsert (docs/protocol.md, "Write model"), one transaction
 * for every device of the batch whose tags changed.
 */
#include <string.h>

#include "meta_int.h"

static const char SQL_TAGS_SET[] =
    "UPDATE devices SET tags=?3, updated_ns=?4 WHERE id=?1 AND account_id=?2";

int tide_meta_device_tags_set(tide_meta *m, const struct tide_meta_principal *p,
                              uint64_t account_id, const uint64_t *device_ids,
                              const char *const *tags, size_t n, int *rcs)
{
    sqlite3_stmt *st;
    int64_t now;
    int rc, src;

    if (n && (!device_ids || !tags || !rcs))
        return TIDE_EINVAL;
    tide__meta_lock(m);
    rc = tide__meta_authorize_locked(m, p, TIDE_META_ACT_DEVICE_MANAGE,
                                     account_id, 0);
    if (!rc)
        rc = tide__meta_begin(m);
    if (rc)
        goto out;
    now = tide__meta_now(m);
    for (size_t i = 0; i < n && rc == 0; i++) {
        rcs[i] = tide__meta_text_ok(tags[i], TIDE_META_TAGS_MAX, 1);
        if (rcs[i])
            continue;
        rc = tide__meta_stmt(m, SQL_TAGS_SET, &st);
        if (rc)
            break;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)device_ids[i]);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
        sqlite3_bind_text(st, 3, tags[i], -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, now);
        src = sqlite3_step(st);
        sqlite3_reset(st);
        if (src != SQLITE_DONE)
            rc = tide__meta_sqlerr(src);
        else if (sqlite3_changes(m->db) == 0)
            rcs[i] = TIDE_ENOTFOUND;
        else
            tide__meta_changed(m, 0, account_id, device_ids[i]);
    }
    if (rc) {
        tide__meta_rollback(m);
        goto out;
    }
    rc = tide__meta_commit(m);
out:
    tide__meta_unlock(m);
    return rc;
}
