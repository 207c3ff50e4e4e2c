/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sidecar's database: open and close, the numbered migrations that
 * build the schema (docs/accounts.md lists every table), the prepared
 * statement cache and the transaction helpers shared by the other files.
 */
#include "meta_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*
 * Migrations. Each runs in its own transaction together with the update of
 * schema_version, so a file is always at exactly one version. Numbers are
 * frozen: a released migration is never edited, only followed by a new
 * one. Ids of accounts, devices and keys use AUTOINCREMENT so an id is
 * never reused after a delete; series ids come from counters.next_series_id
 * for the same reason.
 */
static const char *const migrations[TIDE__META_SCHEMA_VERSION] = {
    /* 1: tiers, accounts, devices, series registry, keys, sessions. */
    "CREATE TABLE tiers("
    " id INTEGER PRIMARY KEY CHECK (id BETWEEN 1 AND 65535),"
    " name TEXT NOT NULL UNIQUE,"
    " ttl_s INTEGER NOT NULL,"
    " rate_points_s INTEGER NOT NULL DEFAULT 0,"
    " daily_points_max INTEGER NOT NULL DEFAULT 0,"
    " devices_max INTEGER NOT NULL DEFAULT 0,"
    " series_max INTEGER NOT NULL DEFAULT 0);"
    "INSERT INTO tiers VALUES(1, 'free', 604800, 1000, 10000000, 10, 10000);"
    "INSERT INTO tiers VALUES(2, 'paid', 7776000, 100000, 0, 0, 0);"
    "CREATE TABLE accounts("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " email TEXT NOT NULL UNIQUE,"
    " pw_hash TEXT NOT NULL,"
    " first_name TEXT NOT NULL DEFAULT '',"
    " surname TEXT NOT NULL DEFAULT '',"
    " organization TEXT NOT NULL DEFAULT '',"
    " timezone TEXT NOT NULL DEFAULT 'UTC',"
    " email_verified INTEGER NOT NULL DEFAULT 0,"
    " verify_hash BLOB,"
    " verify_expires_ns INTEGER,"
    " tier INTEGER NOT NULL REFERENCES tiers(id),"
    " plan_status TEXT NOT NULL DEFAULT 'active',"
    " billing_customer_id TEXT NOT NULL DEFAULT '',"
    " billing_period TEXT NOT NULL DEFAULT '',"
    " notify_device INTEGER NOT NULL DEFAULT 1,"
    " notify_usage INTEGER NOT NULL DEFAULT 1,"
    " notify_product INTEGER NOT NULL DEFAULT 0,"
    " paused INTEGER NOT NULL DEFAULT 0,"
    " created_ns INTEGER NOT NULL,"
    " updated_ns INTEGER NOT NULL,"
    " deleted_ns INTEGER);"
    "CREATE UNIQUE INDEX accounts_verify ON accounts(verify_hash)"
    " WHERE verify_hash IS NOT NULL;"
    "CREATE TABLE devices("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " account_id INTEGER NOT NULL REFERENCES accounts(id),"
    " thing_name TEXT NOT NULL,"
    " mac TEXT NOT NULL DEFAULT '',"
    " friendly_name TEXT NOT NULL DEFAULT '',"
    " firmware TEXT NOT NULL DEFAULT '',"
    " tags TEXT NOT NULL DEFAULT '',"
    " online INTEGER NOT NULL DEFAULT 0,"
    " paused INTEGER NOT NULL DEFAULT 0,"
    " last_connect_ns INTEGER NOT NULL DEFAULT 0,"
    " last_ip TEXT NOT NULL DEFAULT '',"
    " last_seen_ns INTEGER NOT NULL DEFAULT 0,"
    " created_ns INTEGER NOT NULL,"
    " updated_ns INTEGER NOT NULL,"
    " UNIQUE(account_id, thing_name));"
    "CREATE TABLE series("
    " id INTEGER PRIMARY KEY,"
    " account_id INTEGER NOT NULL,"
    " device_id INTEGER NOT NULL,"
    " field BLOB NOT NULL,"
    " type INTEGER NOT NULL CHECK (type BETWEEN 1 AND 4),"
    " created_ns INTEGER NOT NULL,"
    " deleted_ns INTEGER,"
    " UNIQUE(account_id, device_id, field));"
    "CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "INSERT INTO counters VALUES('next_series_id', 1);"
    "CREATE TABLE api_keys("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " account_id INTEGER,"
    " device_id INTEGER,"
    " role INTEGER NOT NULL,"
    " name TEXT NOT NULL DEFAULT '',"
    " prefix TEXT NOT NULL,"
    " hash BLOB NOT NULL UNIQUE,"
    " created_ns INTEGER NOT NULL,"
    " last_used_ns INTEGER NOT NULL DEFAULT 0,"
    " last_ip TEXT NOT NULL DEFAULT '',"
    " requests INTEGER NOT NULL DEFAULT 0,"
    " revoked INTEGER NOT NULL DEFAULT 0,"
    " revoked_ns INTEGER);"
    "CREATE INDEX api_keys_account ON api_keys(account_id);"
    "CREATE TABLE sessions("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " account_id INTEGER NOT NULL,"
    " hash BLOB NOT NULL UNIQUE,"
    " created_ns INTEGER NOT NULL,"
    " expires_ns INTEGER NOT NULL,"
    " ip TEXT NOT NULL DEFAULT '',"
    " ended INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX sessions_account ON sessions(account_id);",

    /* 2: usage, logs, notifications, tombstones. */
    "CREATE TABLE usage_daily("
    " account_id INTEGER NOT NULL,"
    " day INTEGER NOT NULL,"
    " messages INTEGER NOT NULL DEFAULT 0,"
    " points INTEGER NOT NULL DEFAULT 0,"
    " bytes_in INTEGER NOT NULL DEFAULT 0,"
    " bytes_out INTEGER NOT NULL DEFAULT 0,"
    " queries INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY(account_id, day)) WITHOUT ROWID;"
    "CREATE TABLE auth_log("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " ts_ns INTEGER NOT NULL,"
    " account_id INTEGER NOT NULL DEFAULT 0,"
    " key_id INTEGER NOT NULL DEFAULT 0,"
    " kind INTEGER NOT NULL,"
    " ok INTEGER NOT NULL,"
    " reason TEXT NOT NULL,"
    " ip TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX auth_log_account ON auth_log(account_id, ip);"
    "CREATE INDEX auth_log_ts ON auth_log(ts_ns);"
    "CREATE TABLE request_log("
    " id INTEGER PRIMARY KEY,"
    " ts_ns INTEGER NOT NULL,"
    " account_id INTEGER NOT NULL,"
    " key_id INTEGER NOT NULL DEFAULT 0,"
    " ip TEXT NOT NULL DEFAULT '',"
    " op TEXT NOT NULL,"
    " bytes_in INTEGER NOT NULL DEFAULT 0,"
    " bytes_out INTEGER NOT NULL DEFAULT 0,"
    " status INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX request_log_ts ON request_log(ts_ns);"
    "CREATE INDEX request_log_account ON request_log(account_id);"
    "CREATE TABLE request_daily("
    " account_id INTEGER NOT NULL,"
    " day INTEGER NOT NULL,"
    " op TEXT NOT NULL,"
    " requests INTEGER NOT NULL DEFAULT 0,"
    " errors INTEGER NOT NULL DEFAULT 0,"
    " bytes_in INTEGER NOT NULL DEFAULT 0,"
    " bytes_out INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY(account_id, day, op)) WITHOUT ROWID;"
    "CREATE TABLE notifications("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " account_id INTEGER NOT NULL,"
    " ts_ns INTEGER NOT NULL,"
    " kind INTEGER NOT NULL,"
    " text TEXT NOT NULL,"
    " read INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX notifications_account ON notifications(account_id, id);"
    "CREATE TABLE tombstones("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " kind TEXT NOT NULL CHECK (kind IN ('account', 'device')),"
    " object_id INTEGER NOT NULL,"
    " account_id INTEGER NOT NULL,"
    " deleted_ns INTEGER NOT NULL,"
    " purge_after_ns INTEGER NOT NULL,"
    " purged_ns INTEGER);",

    /* 3: per-key write and per-account query limits of the tiers. */
    "ALTER TABLE tiers ADD COLUMN key_rate_points_s INTEGER NOT NULL"
    " DEFAULT 0;"
    "ALTER TABLE tiers ADD COLUMN query_rate_s INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE tiers ADD COLUMN queries_max INTEGER NOT NULL DEFAULT 0;"
    "UPDATE tiers SET query_rate_s=20, queries_max=4 WHERE id=1;"
    "UPDATE tiers SET query_rate_s=200, queries_max=16 WHERE id=2;",

    /* 4: erased series are kept as numbers only. A deleted device's series
     * rows held its field names; they go, and erased_series tells the
     * compaction policy which series ids to drop. Series of devices
     * deleted before this migration move over too. */
    "CREATE TABLE erased_series("
    " series_id INTEGER PRIMARY KEY,"
    " account_id INTEGER NOT NULL,"
    " erased_ns INTEGER NOT NULL);"
    "INSERT INTO erased_series SELECT s.id, s.account_id, s.deleted_ns"
    " FROM series s WHERE s.deleted_ns IS NOT NULL AND NOT EXISTS"
    " (SELECT 1 FROM devices d WHERE d.id=s.device_id);"
    "DELETE FROM series WHERE deleted_ns IS NOT NULL AND NOT EXISTS"
    " (SELECT 1 FROM devices d WHERE d.id=series.device_id);",

    /* 5: live device and series counts per account, kept by triggers, so
     * the tier limit check of a registration is one row read: count(*)
     * over an account's series cost O(series) per registering batch, and
     * a fleet written device by device registered in O(n^2). */
    "CREATE TABLE account_counts("
    " account_id INTEGER PRIMARY KEY,"
    " devices INTEGER NOT NULL DEFAULT 0,"
    " series INTEGER NOT NULL DEFAULT 0);"
    "INSERT INTO account_counts(account_id, devices, series)"
    " SELECT a.id, (SELECT count(*) FROM devices d WHERE d.account_id=a.id),"
    " (SELECT count(*) FROM series s WHERE s.account_id=a.id"
    " AND s.deleted_ns IS NULL) FROM accounts a;"
    "CREATE TRIGGER account_counts_device_in AFTER INSERT ON devices BEGIN"
    " INSERT INTO account_counts(account_id, devices) VALUES(new.account_id, 1)"
    " ON CONFLICT(account_id) DO UPDATE SET devices=devices+1; END;"
    "CREATE TRIGGER account_counts_device_out AFTER DELETE ON devices BEGIN"
    " UPDATE account_counts SET devices=devices-1"
    " WHERE account_id=old.account_id; END;"
    "CREATE TRIGGER account_counts_series_in AFTER INSERT ON series"
    " WHEN new.deleted_ns IS NULL BEGIN"
    " INSERT INTO account_counts(account_id, series) VALUES(new.account_id, 1)"
    " ON CONFLICT(account_id) DO UPDATE SET series=series+1; END;"
    "CREATE TRIGGER account_counts_series_out AFTER DELETE ON series"
    " WHEN old.deleted_ns IS NULL BEGIN"
    " UPDATE account_counts SET series=series-1"
    " WHERE account_id=old.account_id; END;"
    "CREATE TRIGGER account_counts_series_live AFTER UPDATE OF deleted_ns"
    " ON series WHEN (old.deleted_ns IS NULL) <> (new.deleted_ns IS NULL)"
    " BEGIN UPDATE account_counts SET series=series+"
    " (CASE WHEN new.deleted_ns IS NULL THEN 1 ELSE -1 END)"
    " WHERE account_id=new.account_id; END;",

    /* 6: encryption at rest (crypt.c). data_keys holds each account's data
     * key wrapped by the master key (account 0: the system key);
     * encryption the id of the master key that wraps them. The *_hmac
     * columns are the keyed-hash lookup index of sealed values: while
     * encryption is off they stay NULL and the plaintext columns and their
     * unique constraints serve as before. */
    "CREATE TABLE data_keys("
    " account_id INTEGER PRIMARY KEY,"
    " wrapped BLOB NOT NULL,"
    " created_ns INTEGER NOT NULL);"
    "CREATE TABLE encryption("
    " id INTEGER PRIMARY KEY CHECK (id=1),"
    " master_key_id BLOB NOT NULL,"
    " enabled_ns INTEGER NOT NULL,"
    " rotated_ns INTEGER);"
    "ALTER TABLE accounts ADD COLUMN email_hmac BLOB;"
    "CREATE UNIQUE INDEX accounts_email_hmac ON accounts(email_hmac)"
    " WHERE email_hmac IS NOT NULL;"
    "ALTER TABLE devices ADD COLUMN thing_hmac BLOB;"
    "CREATE UNIQUE INDEX devices_thing_hmac ON devices(account_id, thing_hmac)"
    " WHERE thing_hmac IS NOT NULL;"
    "ALTER TABLE auth_log ADD COLUMN ip_hmac BLOB;"
    "CREATE INDEX auth_log_ip_hmac ON auth_log(account_id, ip_hmac)"
    " WHERE ip_hmac IS NOT NULL;"
    "ALTER TABLE tombstones ADD COLUMN key_destroyed_ns INTEGER;",

    /* 7: a device key may carry the SHA-256 fingerprint of a registered
     * client certificate (mutual TLS). */
    "ALTER TABLE api_keys ADD COLUMN cert_fp BLOB;"
    "CREATE UNIQUE INDEX api_keys_cert_fp ON api_keys(cert_fp)"
    " WHERE cert_fp IS NOT NULL;",
};

void tide_meta_options_init(struct tide_meta_options *o)
{
    memset(o, 0, sizeof(*o));
    o->bcrypt_cost = 12;
    o->flush_interval_ms = 1000;
    o->seen_interval_ms = 10000;
    o->session_ttl_ns = 24 * 3600 * 1000000000ll;
    o->verify_ttl_ns = 48 * 3600 * 1000000000ll;
    o->delete_grace_ns = 30 * TIDE__META_DAY_NS;
}

int64_t tide__meta_now(tide_meta *m)
{
    struct timespec ts;

    if (m->o.clock)
        return m->o.clock(m->o.clock_ctx);
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

int tide__meta_sqlerr(int src)
{
    switch (src & 0xff) {
    case SQLITE_CONSTRAINT:
        return TIDE_EEXIST;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return TIDE_ECORRUPT;
    default:
        return TIDE_EIO;
    }
}

void tide__meta_lock(tide_meta *m)
{
    pthread_mutex_lock(&m->lock);
}

void tide__meta_unlock(tide_meta *m)
{
    pthread_mutex_unlock(&m->lock);
}

int tide__meta_stmt(tide_meta *m, const char *sql, sqlite3_stmt **out)
{
    sqlite3_stmt *st = NULL;
    int src;

    for (unsigned i = 0; i < m->n_stmts; i++) {
        if (m->stmts[i].sql == sql) {
            st = m->stmts[i].st;
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            *out = st;
            return 0;
        }
    }
    TIDE_ASSERT(m->n_stmts < TIDE__META_STMTS_MAX);
    src = sqlite3_prepare_v3(m->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st,
                             NULL);
    if (src != SQLITE_OK)
        return tide__meta_sqlerr(src);
    m->stmts[m->n_stmts].sql = sql;
    m->stmts[m->n_stmts].st = st;
    m->n_stmts++;
    *out = st;
    return 0;
}

int tide__meta_exec(tide_meta *m, const char *sql)
{
    sqlite3_stmt *st;
    int rc, src;

    rc = tide__meta_stmt(m, sql, &st);
    if (rc)
        return rc;
    src = sqlite3_step(st);
    sqlite3_reset(st);
    if (src != SQLITE_DONE && src != SQLITE_ROW)
        return tide__meta_sqlerr(src);
    return 0;
}

int tide__meta_begin(tide_meta *m)
{
    return tide__meta_exec(m, "BEGIN IMMEDIATE");
}

/* Take m->lock and authorise (action 0: nothing to authorise). */
static int lock_authorize(tide_meta *m, const struct tide_meta_principal *p,
                          enum tide_meta_action action, uint64_t account_id,
                          uint64_t device_id)
{
    tide__meta_lock(m);
    if (!action)
        return 0;
    return tide__meta_authorize_locked(m, p, action, account_id, device_id);
}

int tide__meta_authz_begin(tide_meta *m, const struct tide_meta_principal *p,
                           enum tide_meta_action action, uint64_t account_id,
                           uint64_t device_id)
{
    int rc = lock_authorize(m, p, action, account_id, device_id);

    return rc ? rc : tide__meta_begin(m);
}

int tide__meta_commit(tide_meta *m)
{
    int rc = tide__meta_exec(m, "COMMIT");

    if (rc)
        tide__meta_rollback(m);
    return rc;
}

void tide__meta_rollback(tide_meta *m)
{
    if (!sqlite3_get_autocommit(m->db))
        tide__meta_exec(m, "ROLLBACK");
}

int tide__meta_bind_text(sqlite3_stmt *st, int i, const char *s)
{
    return sqlite3_bind_text(st, i, s ? s : "", -1, SQLITE_STATIC) == SQLITE_OK
               ? 0
               : TIDE_EIO;
}

void tide__meta_col_text(sqlite3_stmt *st, int i, char *dst, size_t cap)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    size_t n = s ? (size_t)sqlite3_column_bytes(st, i) : 0;

    if (n >= cap)
        n = cap - 1;
    if (n)
        memcpy(dst, s, n);
    dst[n] = '\0';
}

int tide__meta_end(tide_meta *m, int rc)
{
    if (rc) {
        tide__meta_rollback(m);
        return rc;
    }
    return tide__meta_commit(m);
}

/* The cached statement for `sql` with args[0..n) bound to ?1..?n. */
static int stmt_bound(tide_meta *m, const char *sql,
                      const struct tide__meta_arg *args, size_t n,
                      sqlite3_stmt **out)
{
    sqlite3_stmt *st;
    int rc, src = SQLITE_OK;

    rc = tide__meta_stmt(m, sql, &st);
    if (rc)
        return rc;
    TIDE_ASSERT(n == (size_t)sqlite3_bind_parameter_count(st));
    for (int i = 1; !rc && src == SQLITE_OK && (size_t)i <= n; i++) {
        const struct tide__meta_arg *a = &args[i - 1];

        switch (a->type) {
        case TIDE__META_ARG_NULL:
            src = sqlite3_bind_null(st, i);
            break;
        case TIDE__META_ARG_INT:
            src = sqlite3_bind_int64(st, i, a->v.i);
            break;
        case TIDE__META_ARG_NOW:
            src = sqlite3_bind_int64(st, i, tide__meta_now(m));
            break;
        case TIDE__META_ARG_TEXT:
            rc = tide__meta_bind_text(st, i, a->v.s);
            break;
        case TIDE__META_ARG_OPT:
            src = a->v.s ? sqlite3_bind_text(st, i, a->v.s, -1, SQLITE_STATIC)
                         : sqlite3_bind_null(st, i);
            break;
        case TIDE__META_ARG_BLOB:
            src = sqlite3_bind_blob(st, i, a->v.p, a->len, SQLITE_STATIC);
            break;
        }
    }
    if (!rc && src != SQLITE_OK)
        rc = tide__meta_sqlerr(src);
    *out = st;
    return rc;
}

int tide__meta_row(tide_meta *m, const char *sql, sqlite3_stmt **out,
                   const struct tide__meta_arg *args, size_t n)
{
    sqlite3_stmt *st;
    int rc, src;

    rc = stmt_bound(m, sql, args, n, &st);
    if (rc)
        return rc;
    src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        *out = st;
        return 0;
    }
    sqlite3_reset(st);
    return src == SQLITE_DONE ? TIDE_ENOTFOUND : tide__meta_sqlerr(src);
}

int tide__meta_run(tide_meta *m, const char *sql,
                   const struct tide__meta_arg *args, size_t n)
{
    sqlite3_stmt *st = NULL;
    int rc = tide__meta_row(m, sql, &st, args, n);

    if (rc == TIDE_ENOTFOUND)
        return 0; /* SQLITE_DONE */
    if (!rc) {
        /* A row where none was expected: SQLITE_ROW maps to TIDE_EIO. */
        sqlite3_reset(st);
        rc = tide__meta_sqlerr(SQLITE_ROW);
    }
    return rc;
}

int tide__meta_get(tide_meta *m, const char *sql, tide__meta_row_fn *fn,
                   void *out, const struct tide__meta_arg *args, size_t n)
{
    sqlite3_stmt *st;
    int rc;

    rc = tide__meta_row(m, sql, &st, args, n);
    if (rc)
        return rc;
    fn(st, out);
    sqlite3_reset(st);
    return 0;
}

struct ints {
    int64_t *cols;
    size_t n;
};

static void ints_row(sqlite3_stmt *st, void *arg)
{
    struct ints *c = arg;

    TIDE_ASSERT(c->n <= (size_t)sqlite3_column_count(st));
    for (size_t i = 0; i < c->n; i++)
        c->cols[i] = sqlite3_column_int64(st, (int)i);
}

int tide__meta_ints(tide_meta *m, const char *sql, int64_t *cols, size_t n_cols,
                    const struct tide__meta_arg *args, size_t n)
{
    struct ints c = {cols, n_cols};

    return tide__meta_get(m, sql, ints_row, &c, args, n);
}

int tide__meta_list(tide_meta *m, const char *sql, tide__meta_row_fn *fn,
                    void *out, size_t size, size_t cap, size_t *n_out,
                    const struct tide__meta_arg *args, size_t n)
{
    sqlite3_stmt *st;
    size_t got = 0;
    int rc, src = SQLITE_DONE;

    *n_out = 0;
    rc = stmt_bound(m, sql, args, n, &st);
    if (rc)
        return rc;
    while (got < cap && (src = sqlite3_step(st)) == SQLITE_ROW)
        fn(st, (char *)out + got++ * size);
    sqlite3_reset(st);
    *n_out = got;
    return src == SQLITE_ROW || src == SQLITE_DONE ? 0 : tide__meta_sqlerr(src);
}

int tide__meta_authorize_flush(tide_meta *m,
                               const struct tide_meta_principal *p,
                               enum tide_meta_action action,
                               uint64_t account_id, uint64_t device_id)
{
    int rc = tide_meta_authorize(m, p, action, account_id, device_id);

    return rc ? rc : tide_meta_flush(m);
}

int tide__meta_read(tide_meta *m, const struct tide_meta_principal *p,
                    enum tide_meta_action action, uint64_t account_id,
                    const char *sql, tide__meta_row_fn *fn, void *out,
                    size_t size, size_t cap, size_t *n_out,
                    const struct tide__meta_arg *args, size_t n)
{
    int rc;

    if (!n_out || (cap && !out))
        return TIDE_EINVAL;
    *n_out = 0;
    rc = tide__meta_authorize_flush(m, p, action, account_id, 0);
    if (rc)
        return rc;
    tide__meta_lock(m);
    rc = tide__meta_list(m, sql, fn, out, size, cap, n_out, args, n);
    tide__meta_unlock(m);
    return rc;
}

int tide__meta_authz_run(tide_meta *m, const struct tide_meta_principal *p,
                         enum tide_meta_action action, uint64_t account_id,
                         uint64_t device_id, const char *sql, int unchanged_rc,
                         const struct tide__meta_arg *args, size_t n)
{
    int rc = lock_authorize(m, p, action, account_id, device_id);

    if (!rc)
        rc = tide__meta_run(m, sql, args, n);
    if (!rc && unchanged_rc && sqlite3_changes(m->db) == 0)
        rc = unchanged_rc;
    tide__meta_unlock(m);
    return rc;
}

/* Run one statement list outside the cache (migrations, pragmas). */
static int exec_raw(sqlite3 *db, const char *sql)
{
    int src = sqlite3_exec(db, sql, NULL, NULL, NULL);

    return src == SQLITE_OK ? 0 : tide__meta_sqlerr(src);
}

static int read_version(sqlite3 *db, int *version)
{
    sqlite3_stmt *st = NULL;
    int src, rc = 0;

    src = sqlite3_prepare_v2(db, "SELECT version FROM schema_version", -1, &st,
                             NULL);
    if (src != SQLITE_OK)
        return tide__meta_sqlerr(src);
    src = sqlite3_step(st);
    if (src == SQLITE_ROW)
        *version = sqlite3_column_int(st, 0);
    else if (src == SQLITE_DONE)
        *version = 0;
    else
        rc = tide__meta_sqlerr(src);
    sqlite3_finalize(st);
    return rc;
}

int tide__meta_migrate(sqlite3 *db, int target, int *version)
{
    char sql[96];
    int v = 0;
    int rc;

    TIDE_ASSERT(target >= 0 && target <= TIDE__META_SCHEMA_VERSION);
    rc = exec_raw(db, "BEGIN IMMEDIATE;"
                      "CREATE TABLE IF NOT EXISTS schema_version("
                      " version INTEGER NOT NULL);"
                      "INSERT INTO schema_version SELECT 0"
                      " WHERE NOT EXISTS (SELECT 1 FROM schema_version);"
                      "COMMIT");
    if (rc)
        goto fail;
    rc = read_version(db, &v);
    if (rc)
        goto fail;
    if (v < 0 || v > TIDE__META_SCHEMA_VERSION) {
        rc = v < 0 ? TIDE_ECORRUPT : TIDE_EVERSION;
        goto fail;
    }
    while (v < target) {
        rc = exec_raw(db, "BEGIN IMMEDIATE");
        if (rc)
            goto fail;
        rc = exec_raw(db, migrations[v]);
        if (!rc) {
            snprintf(sql, sizeof(sql), "UPDATE schema_version SET version=%d",
                     v + 1);
            rc = exec_raw(db, sql);
        }
        if (!rc)
            rc = exec_raw(db, "COMMIT");
        if (rc) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            goto fail;
        }
        v++;
    }
    *version = v;
    return 0;

fail:
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    *version = v;
    return rc;
}

static int check_options(const struct tide_meta_options *o)
{
    if (o->bcrypt_cost < 4 || o->bcrypt_cost > 31)
        return TIDE_EINVAL;
    if (o->session_ttl_ns <= 0 || o->verify_ttl_ns <= 0 ||
        o->delete_grace_ns < 0)
        return TIDE_EINVAL;
    if (o->zoneinfo_dir && strlen(o->zoneinfo_dir) > PATH_MAX / 2)
        return TIDE_EINVAL;
    return 0;
}

static void free_handle(tide_meta *m)
{
    for (unsigned i = 0; i < m->n_stmts; i++)
        sqlite3_finalize(m->stmts[i].st);
    if (m->db)
        sqlite3_close(m->db);
    tide__meta_registry_free(&m->reg);
    tide__meta_pending_fini(&m->pend);
    tide__meta_keys_fini(m);
    pthread_cond_destroy(&m->fcond);
    pthread_mutex_destroy(&m->flock);
    pthread_mutex_destroy(&m->plock);
    pthread_mutex_destroy(&m->flush_mu);
    pthread_mutex_destroy(&m->lock);
    tide_free(m->dummy_hash);
    tide_free(m->zoneinfo);
    tide_free(m->dir);
    tide_free(m);
}

/* meta.db and its -wal and -shm hold emails, password hashes and IPs:
 * owner only, whatever the umask. SQLite creates -wal and -shm with the
 * mode of the database file, so creating that one 0600 before SQLite
 * opens it is enough; files left more open by an older version are
 * narrowed. Returns 0 or -errno. */
static int private_files(const char *db_path)
{
    static const char *const suffix[] = {"", "-wal", "-shm"};
    char path[PATH_MAX];
    int fd;

    fd = open(db_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    close(fd);
    for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
        struct stat st;

        snprintf(path, sizeof(path), "%s%s", db_path, suffix[i]);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) &&
            chmod(path, st.st_mode & 0700) != 0)
            return -errno;
    }
    return 0;
}

int tide_meta_open(const char *dir, const struct tide_meta_options *opts,
                   tide_meta **out)
{
    char path[PATH_MAX];
    tide_meta *m = NULL;
    struct stat st;
    int rc, src;

    if (!dir || !out)
        return TIDE_EINVAL;
    if (stat(dir, &st) != 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    if ((size_t)snprintf(path, sizeof(path), "%s/meta.db", dir) >=
        sizeof(path) - 16)
        return -ENAMETOOLONG;
    m = tide_calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_init(&m->plock, NULL);
    pthread_mutex_init(&m->flush_mu, NULL);
    pthread_mutex_init(&m->flock, NULL);
    pthread_cond_init(&m->fcond, NULL);
    tide__meta_keys_init(m);
    if (opts)
        m->o = *opts;
    else
        tide_meta_options_init(&m->o);
    if (m->o.why && m->o.why_len)
        m->o.why[0] = '\0';
    rc = check_options(&m->o);
    if (rc)
        goto fail;
    if (m->o.master_key) {
        /* The caller's key is read here only (docs in meta.h). */
        memcpy(m->master, m->o.master_key, TIDE_KEY_BYTES);
        m->o.master_key = m->master;
        rc = tide_crypto_key_id(m->master, m->master_id);
        if (rc)
            goto fail;
    }
    m->dir = tide_strdup(dir);
    m->zoneinfo = tide_strdup(m->o.zoneinfo_dir ? m->o.zoneinfo_dir
                                                : "/usr/share/zoneinfo");
    m->o.zoneinfo_dir = m->zoneinfo; /* the caller's string is not kept */
    rc = tide__meta_pending_init(&m->pend);
    if ((!m->dir || !m->zoneinfo) && !rc)
        rc = -ENOMEM;
    if (rc)
        goto fail;

    rc = private_files(path);
    if (rc)
        goto fail;
    /* One connection, serialised by m->lock: SQLite's own mutexes are not
     * needed. */
    src = sqlite3_open_v2(
        path, &m->db,
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (src != SQLITE_OK) {
        rc = tide__meta_sqlerr(src);
        goto fail;
    }
    sqlite3_extended_result_codes(m->db, 1);
    sqlite3_busy_timeout(m->db, 5000);
    /* WAL: readers (exports) never block the writer. synchronous=FULL:
     * an acknowledged account, key or device survives power loss, not only
     * a process crash. */
    rc = exec_raw(m->db, "PRAGMA journal_mode=WAL;"
                         "PRAGMA synchronous=FULL;"
                         "PRAGMA foreign_keys=ON;"
                         "PRAGMA secure_delete=ON");
    if (!rc)
        rc = tide__meta_crypt_functions(m, m->db);
    if (rc)
        goto fail;
    rc = tide__meta_migrate(m->db, TIDE__META_SCHEMA_VERSION,
                            &m->schema_version);
    if (rc)
        goto fail;
    tide__meta_lock(m);
    rc = tide__meta_crypt_open(m);
    if (!rc)
        rc = tide__meta_bootstrap_admin(m);
    if (!rc)
        rc = tide__meta_registry_load(m);
    tide__meta_unlock(m);
    if (rc)
        goto fail;
    rc = tide__meta_flusher_start(m);
    if (rc)
        goto fail;
    *out = m;
    return 0;

fail:
    free_handle(m);
    return rc;
}

void tide_meta_close(tide_meta *m)
{
    if (!m)
        return;
    tide__meta_flusher_stop(m);
    tide_meta_flush(m);
    free_handle(m);
}

int tide_meta_schema_version(tide_meta *m)
{
    return m->schema_version;
}
