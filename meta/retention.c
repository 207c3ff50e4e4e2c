/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the telemetry compaction policy needs from the sidecar, read in one
 * go (tide_meta_retention_load): every tier's TTL, every account's tier,
 * the accounts purged and the series erased with their devices; and the
 * SQLite WAL checkpoints that keep erased rows' old page images out of
 * meta.db-wal (docs/data-handling.md, "Erasure").
 */
#include "meta_int.h"

#include <errno.h>
#include <string.h>

/* A growable array of `size`-byte elements. */
struct vec {
    void *p;
    size_t n, cap, size;
};

static void *vec_push(struct vec *v)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 64;
        void *p = tide_realloc(v->p, cap * v->size);

        if (!p)
            return NULL;
        v->p = p;
        v->cap = cap;
    }
    return (char *)v->p + v->n++ * v->size;
}

static const char SQL_RET_TIERS[] = "SELECT id, ttl_s FROM tiers ORDER BY id";
static const char SQL_RET_ACCOUNTS[] =
    "SELECT a.id, a.tier, t.ttl_s, a.deleted_ns IS NOT NULL FROM accounts a"
    " JOIN tiers t ON t.id=a.tier ORDER BY a.id";
static const char SQL_RET_PURGED[] =
    "SELECT DISTINCT object_id FROM tombstones WHERE kind='account'"
    " AND purged_ns IS NOT NULL ORDER BY 1";
static const char SQL_RET_ERASED[] =
    "SELECT series_id, account_id FROM erased_series ORDER BY series_id";

enum { Q_TIERS, Q_ACCOUNTS, Q_PURGED, Q_ERASED };

/* Step `sql` and append each row to `v` as query `q` reads it. m->lock
 * held. Returns 0, -ENOMEM or tide__meta_sqlerr()'s codes. */
static int load_rows(tide_meta *m, const char *sql, int q, struct vec *v)
{
    sqlite3_stmt *st;
    int rc, src;

    rc = tide__meta_stmt(m, sql, &st);
    if (rc)
        return rc;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        void *e = vec_push(v);

        if (!e) {
            rc = -ENOMEM;
            break;
        }
        switch (q) {
        case Q_TIERS: {
            struct tide_meta_retention_tier *t = e;

            t->id = (uint16_t)sqlite3_column_int(st, 0);
            t->ttl_s = sqlite3_column_int64(st, 1);
            break;
        }
        case Q_ACCOUNTS: {
            struct tide_meta_retention_account *a = e;

            a->id = (uint64_t)sqlite3_column_int64(st, 0);
            a->tier = (uint16_t)sqlite3_column_int(st, 1);
            a->ttl_s = sqlite3_column_int64(st, 2);
            a->deleted = sqlite3_column_int(st, 3);
            break;
        }
        case Q_PURGED:
            *(uint64_t *)e = (uint64_t)sqlite3_column_int64(st, 0);
            break;
        default: {
            struct tide_meta_erased_series *s = e;

            s->series_id = (uint64_t)sqlite3_column_int64(st, 0);
            s->account_id = (uint64_t)sqlite3_column_int64(st, 1);
            break;
        }
        }
    }
    sqlite3_reset(st);
    if (!rc && src != SQLITE_DONE)
        rc = tide__meta_sqlerr(src);
    return rc;
}

int tide_meta_retention_load(tide_meta *m, struct tide_meta_retention **out)
{
    struct vec v[4] = {
        {.size = sizeof(struct tide_meta_retention_tier)},
        {.size = sizeof(struct tide_meta_retention_account)},
        {.size = sizeof(uint64_t)},
        {.size = sizeof(struct tide_meta_erased_series)},
    };
    static const char *const sql[4] = {SQL_RET_TIERS, SQL_RET_ACCOUNTS,
                                       SQL_RET_PURGED, SQL_RET_ERASED};
    struct tide_meta_retention *r;
    int rc;

    if (!out)
        return TIDE_EINVAL;
    *out = NULL;
    r = tide_calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    tide__meta_lock(m);
    /* Every change is made under m->lock, so the counter read here is at
     * most the one of the rows read below: a change after it makes the
     * caller load again. */
    r->generation = tide_meta_generation(m);
    /* One read transaction: a single snapshot of the four tables. */
    rc = tide__meta_exec(m, "BEGIN");
    for (int q = 0; !rc && q < 4; q++)
        rc = load_rows(m, sql[q], q, &v[q]);
    if (!sqlite3_get_autocommit(m->db))
        tide__meta_exec(m, "COMMIT");
    tide__meta_unlock(m);
    r->tiers = v[Q_TIERS].p;
    r->n_tiers = v[Q_TIERS].n;
    r->accounts = v[Q_ACCOUNTS].p;
    r->n_accounts = v[Q_ACCOUNTS].n;
    r->purged = v[Q_PURGED].p;
    r->n_purged = v[Q_PURGED].n;
    r->erased = v[Q_ERASED].p;
    r->n_erased = v[Q_ERASED].n;
    if (rc) {
        tide_meta_retention_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void tide_meta_retention_free(struct tide_meta_retention *r)
{
    if (!r)
        return;
    tide_free(r->tiers);
    tide_free(r->accounts);
    tide_free(r->purged);
    tide_free(r->erased);
    tide_free(r);
}

/* TRUNCATE checkpoint with m->lock held; `wait` keeps the connection's
 * busy timeout (readers may hold it up to 5 s), else none. */
static int checkpoint(tide_meta *m, int wait)
{
    int src, log = 0, done = 0;

    if (!wait)
        sqlite3_busy_timeout(m->db, 0);
    src = sqlite3_wal_checkpoint_v2(m->db, NULL, SQLITE_CHECKPOINT_TRUNCATE,
                                    &log, &done);
    if (!wait)
        sqlite3_busy_timeout(m->db, 5000);
    if ((src & 0xff) == SQLITE_BUSY ||
        (src == SQLITE_OK && log > 0 && done < log))
        return TIDE_EBUSY;
    return src == SQLITE_OK ? 0 : tide__meta_sqlerr(src);
}

void tide__meta_wal_scrub(tide_meta *m)
{
    (void)checkpoint(m, 0);
}

int tide_meta_checkpoint(tide_meta *m)
{
    int rc;

    tide__meta_lock(m);
    rc = checkpoint(m, 1);
    tide__meta_unlock(m);
    return rc;
}
