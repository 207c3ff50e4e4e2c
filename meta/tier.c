/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tiers: the plans accounts are on, each a retention and a set of limits
 * (docs/accounts.md, docs/operations.md "Rate limits"). Read by the
 * server's account cache; changed by the operator only.
 */
#include "meta_int.h"

#include <string.h>

/* ---- Tiers -------------------------------------------------------------- */

static const char SQL_TIER_SET[] =
    "INSERT INTO tiers(id, name, ttl_s, rate_points_s, daily_points_max,"
    " devices_max, series_max, key_rate_points_s, query_rate_s, queries_max)"
    " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    " ON CONFLICT(id) DO UPDATE SET name=excluded.name,"
    " ttl_s=excluded.ttl_s, rate_points_s=excluded.rate_points_s,"
    " daily_points_max=excluded.daily_points_max,"
    " devices_max=excluded.devices_max, series_max=excluded.series_max,"
    " key_rate_points_s=excluded.key_rate_points_s,"
    " query_rate_s=excluded.query_rate_s, queries_max=excluded.queries_max";

int tide_meta_tier_set(tide_meta *m, const struct tide_meta_principal *p,
                       const struct tide_meta_tier *t)
{
    int rc;

    if (!t || t->id == 0 || t->ttl_s <= 0 || t->rate_points_s > INT64_MAX ||
        t->daily_points_max > INT64_MAX || t->series_max > INT64_MAX ||
        t->key_rate_points_s > INT64_MAX ||
        memchr(t->name, '\0', sizeof(t->name)) == NULL ||
        tide__meta_text_ok(t->name, TIDE_META_TIER_NAME_MAX, 0))
        return TIDE_EINVAL;
    rc = tide__meta_authz_run(
        m, p, TIDE_META_ACT_TIER_MANAGE, 0, 0, SQL_TIER_SET, 0,
        META_ARGS(META_INT(t->id), META_TEXT(t->name), META_INT(t->ttl_s),
                  META_INT(t->rate_points_s), META_INT(t->daily_points_max),
                  META_INT(t->devices_max), META_INT(t->series_max),
                  META_INT(t->key_rate_points_s), META_INT(t->query_rate_s),
                  META_INT(t->queries_max)));
    tide__meta_changed(m, rc, 0, 0);
    return rc;
}

static const char SQL_TIER_GET[] =
    "SELECT id, name, ttl_s, rate_points_s, daily_points_max, devices_max,"
    " series_max, key_rate_points_s, query_rate_s, queries_max FROM tiers"
    " WHERE id=?1";

static void tier_row(sqlite3_stmt *st, void *arg)
{
    struct tide_meta_tier *out = arg;

    memset(out, 0, sizeof(*out));
    out->id = (uint16_t)sqlite3_column_int(st, 0);
    tide__meta_col_text(st, 1, out->name, sizeof(out->name));
    out->ttl_s = sqlite3_column_int64(st, 2);
    out->rate_points_s = (uint64_t)sqlite3_column_int64(st, 3);
    out->daily_points_max = (uint64_t)sqlite3_column_int64(st, 4);
    out->devices_max = (uint32_t)sqlite3_column_int64(st, 5);
    out->series_max = (uint64_t)sqlite3_column_int64(st, 6);
    out->key_rate_points_s = (uint64_t)sqlite3_column_int64(st, 7);
    out->query_rate_s = (uint32_t)sqlite3_column_int64(st, 8);
    out->queries_max = (uint32_t)sqlite3_column_int64(st, 9);
}

int tide_meta_tier_get(tide_meta *m, uint16_t id, struct tide_meta_tier *out)
{
    int rc;

    if (!out)
        return TIDE_EINVAL;
    tide__meta_lock(m);
    rc =
        tide__meta_get(m, SQL_TIER_GET, tier_row, out, META_ARGS(META_INT(id)));
    tide__meta_unlock(m);
    return rc;
}
