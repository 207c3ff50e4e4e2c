/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared by the sidecar's own files (the .c files in meta/) and its unit
 * tests only: the handle, the statement cache, transactions, validation
 * helpers, the series registry and the pending-counter tables. meta.h is the
 * contract; nothing here is.
 */
#ifndef TIDE_META_META_INT_H
#define TIDE_META_META_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>

#include "tide/common.h"
#include "tide/crypto.h"
#include "tide/meta.h"

#define TIDE__META_SCHEMA_VERSION 7 /* number of migrations in meta.c */
#define TIDE__META_STMTS_MAX 160
#define TIDE__META_HASH_LEN 32 /* SHA-256 */
#define TIDE__META_DAY_NS 86400000000000ll
#define TIDE__META_AUTHLOG_KEEP_NS (365 * TIDE__META_DAY_NS)
#define TIDE__META_REQLOG_KEEP_NS (90 * TIDE__META_DAY_NS)
#define TIDE__META_PENDING_MAX 65536 /* buffered log rows before drop */
#define TIDE__META_FLUSH_CHUNK 1024  /* rows per flush transaction */

/* ---- Series registry (registry.c) ----------------------------------------
 * Invariants:
 *   1. Entries are immutable once published except `state`; they live in
 *      arena chunks freed only at close, so a reader never sees freed
 *      memory.
 *   2. Slot tables only grow; a replaced table is kept on `retired` until
 *      close for readers still probing it.
 *   3. Writers (insert, state changes) hold the sidecar mutex `m->lock`.
 *      Readers take no lock: acquire loads of the table, slots and state.
 */
enum { REG_LIVE = 0, REG_PENDING = 1, REG_DEAD = 2 };

struct reg_ent {
    uint64_t hash;
    uint64_t account_id;
    uint64_t device_id;
    uint64_t id;
    _Atomic uint8_t state;
    uint8_t type;
    uint16_t field_len;
    char field[];
};

struct reg_table {
    struct reg_table *retired_next;
    size_t mask;
    _Atomic(struct reg_ent *) slots[];
};

struct reg_chunk {
    struct reg_chunk *next;
    size_t used;
    size_t cap;
    uint8_t data[];
};

struct registry {
    _Atomic(struct reg_table *) tab;
    struct reg_table *retired;
    struct reg_chunk *chunks;
    size_t n_slots_used; /* entries in the table, dead ones included */
    _Atomic uint64_t live;
    uint64_t next_id;
};

/* ---- Pending counters (usage.c) ------------------------------------------
 * A small open-addressing table of fixed-size values keyed by their first
 * two uint64 fields. */
struct ptab {
    uint8_t *vals;
    size_t vsize;
    uint32_t n;
    uint32_t cap;
    uint32_t *slots; /* index + 1; 0 = empty */
    uint32_t n_slots;
};

struct usage_ent {
    uint64_t account_id;
    int64_t day;
    struct tide_meta_usage u;
};

struct keyuse_ent {
    uint64_t key_id;
    uint64_t unused;
    int64_t last_ns;
    uint64_t requests;
    char ip[TIDE_META_IP_MAX + 1];
};

struct seen_ent {
    uint64_t device_id;
    uint64_t unused;
    int64_t last_ns;
};

struct authlog_ent {
    int64_t ts_ns;
    uint64_t account_id;
    uint64_t key_id;
    int kind;
    int ok;
    char reason[32];
    char ip[TIDE_META_IP_MAX + 1];
};

struct request_ent {
    int64_t ts_ns;
    uint64_t account_id;
    uint64_t key_id;
    uint64_t bytes_in;
    uint64_t bytes_out;
    int status;
    char op[32];
    char ip[TIDE_META_IP_MAX + 1];
};

struct pending {
    struct ptab usage;
    struct ptab keyuse;
    struct ptab seen;
    struct tide_buf authlog;  /* struct authlog_ent[] */
    struct tide_buf requests; /* struct request_ent[] */
};

/* ---- Data keys (crypt.c) --------------------------------------------------
 * Unwrapped keys by account id: the data key (the storage engine's) and
 * the column key derived from it (the sidecar's). */
struct keyslot {
    uint64_t account_id;
    uint8_t state; /* crypt.c: empty, used, gone */
    uint8_t data[TIDE_KEY_BYTES];
    uint8_t col[TIDE_KEY_BYTES];
};

struct keycache {
    pthread_mutex_t mu; /* nests inside m->lock */
    struct keyslot *slots;
    size_t cap, n, n_gone;
};

struct stmt_slot {
    const char *sql; /* by address: every caller passes a static string */
    sqlite3_stmt *st;
};

struct tide_meta {
    char *dir;
    char *zoneinfo;
    struct tide_meta_options o;
    pthread_mutex_t lock; /* the connection, statements, registry writes */
    sqlite3 *db;
    struct stmt_slot stmts[TIDE__META_STMTS_MAX];
    unsigned n_stmts;
    int schema_version;
    char *dummy_hash; /* bcrypt hash for unknown-email logins */
    struct registry reg;

    pthread_mutex_t plock; /* `pend` */
    /* Held by tide_meta_flush() from its swap to its last commit, so that
     * a reader's flush returns only once rows swapped out by a flush
     * already running (the flusher thread's) are committed too. */
    pthread_mutex_t flush_mu;
    struct pending pend;

    pthread_mutex_t flock; /* flusher state below */
    pthread_cond_t fcond;
    pthread_t flusher;
    int flusher_running;
    int stopping;

    /* Encryption at rest (crypt.c): set at open, `master` and
     * `master_id` also by a rotation (under m->lock). */
    int crypt;
    uint8_t master[TIDE_KEY_BYTES];
    uint8_t master_id[TIDE_KEY_ID_BYTES];
    uint8_t index_key[TIDE_KEY_BYTES]; /* HKDF of the system key */
    struct keycache keys;

    tide_meta_invalidate_fn invalidate; /* cache.c; set before sharing */
    void *invalidate_ctx;
    _Atomic uint64_t generation; /* changes reported (cache.c) */
};

/* ---- meta.c: connection helpers (call with m->lock held) ---------------- */

int64_t tide__meta_now(tide_meta *m);
/* Map a SQLite result code to ours: CONSTRAINT -> TIDE_EEXIST, NOMEM ->
 * -ENOMEM, CORRUPT/NOTADB -> TIDE_ECORRUPT, others TIDE_EIO. */
int tide__meta_sqlerr(int src);
/* The cached, reset, unbound statement for `sql` (a static string). */
int tide__meta_stmt(tide_meta *m, const char *sql, sqlite3_stmt **out);
/* Execute `sql` (no result rows wanted) through the cache. */
int tide__meta_exec(tide_meta *m, const char *sql);
int tide__meta_begin(tide_meta *m);
int tide__meta_commit(tide_meta *m);
void tide__meta_rollback(tide_meta *m);
/* Bind helpers: text NULL binds "". */
int tide__meta_bind_text(sqlite3_stmt *st, int i, const char *s);
/* Copy column `i` as text into dst[0..cap). */
void tide__meta_col_text(sqlite3_stmt *st, int i, char *dst, size_t cap);
/* End the transaction of tide__meta_begin(): commit when `rc` is 0, else
 * roll back. Returns `rc`, or the commit's error (rolled back then). */
int tide__meta_end(tide_meta *m, int rc);
/* Apply migrations 1..target to an open connection (tests use target <
 * TIDE__META_SCHEMA_VERSION to build an older file). Returns the version
 * reached through *version. */
int tide__meta_migrate(sqlite3 *db, int target, int *version);
void tide__meta_lock(tide_meta *m);
void tide__meta_unlock(tide_meta *m);

/* ---- meta.c: running statements (m->lock held unless said) ---------------
 * A statement's parameters are a typed list bound in order to ?1, ?2, ...;
 * the list has exactly as many entries as the statement has parameters.
 * The constructors are short because every call site spells out a list:
 *
 *     rc = tide__meta_run(m, SQL_PAUSE,
 *                         META_ARGS(META_INT(id), META_INT(!!paused),
 *                                   META_NOW));
 *
 * Every statement comes from the cache (tide__meta_stmt()), so `sql` is a
 * static string, and is reset before the helper returns unless it hands
 * the statement out. Errors are tide__meta_sqlerr()'s: TIDE_EEXIST,
 * -ENOMEM, TIDE_ECORRUPT or TIDE_EIO. */
enum tide__meta_arg_type {
    TIDE__META_ARG_NULL, /* SQL NULL */
    TIDE__META_ARG_INT,  /* v.i */
    TIDE__META_ARG_NOW,  /* tide__meta_now() when bound */
    TIDE__META_ARG_TEXT, /* v.s; NULL binds "" */
    TIDE__META_ARG_OPT,  /* v.s; NULL binds SQL NULL */
    TIDE__META_ARG_BLOB, /* len bytes at v.p */
};

struct tide__meta_arg {
    enum tide__meta_arg_type type;
    int len;
    union {
        int64_t i;
        const char *s;
        const void *p;
    } v;
};

#define META_ARG_(t, ...)                                                      \
    ((struct tide__meta_arg){.type = TIDE__META_ARG_##t, __VA_ARGS__})
#define META_NULL META_ARG_(NULL, .len = 0)
#define META_INT(x) META_ARG_(INT, .v.i = (int64_t)(x))
#define META_NOW META_ARG_(NOW, .len = 0)
#define META_TEXT(x) META_ARG_(TEXT, .v.s = (x))
#define META_OPT(x) META_ARG_(OPT, .v.s = (x))
#define META_BLOB(x, n) META_ARG_(BLOB, .len = (int)(n), .v.p = (x))
/* The list as the two arguments (args, n) of the helpers below. The second
 * expansion is under sizeof, so the arguments are evaluated once. */
#define META_ARGS(...)                                                         \
    (const struct tide__meta_arg[]){__VA_ARGS__},                              \
        sizeof((struct tide__meta_arg[]){__VA_ARGS__}) /                       \
            sizeof(struct tide__meta_arg)

/* Run `sql`, which returns no rows. Returns 0 or an error. */
int tide__meta_run(tide_meta *m, const char *sql,
                   const struct tide__meta_arg *args, size_t n);
/* Step `sql` to its first row. Returns 0 with *out on the row (read its
 * columns, then sqlite3_reset(*out)), TIDE_ENOTFOUND when there is no row
 * (the statement is reset), or an error. */
int tide__meta_row(tide_meta *m, const char *sql, sqlite3_stmt **out,
                   const struct tide__meta_arg *args, size_t n);
/* Reads the current result row into `out`. */
typedef void tide__meta_row_fn(sqlite3_stmt *st, void *out);
/* Read the first row of `sql` with `fn` into `out`. Returns 0,
 * TIDE_ENOTFOUND (no row, `out` untouched) or an error. */
int tide__meta_get(tide_meta *m, const char *sql, tide__meta_row_fn *fn,
                   void *out, const struct tide__meta_arg *args, size_t n);
/* The first `n_cols` columns of the first row of `sql` as integers into
 * cols[]. Returns 0, TIDE_ENOTFOUND (no row, cols[] untouched) or an error.
 */
int tide__meta_ints(tide_meta *m, const char *sql, int64_t *cols, size_t n_cols,
                    const struct tide__meta_arg *args, size_t n);
/* Fill out[0..cap), elements of `size` bytes, with `fn` from the rows of
 * `sql`. *n_out is the number of elements filled, also on error. Returns 0
 * or an error. */
int tide__meta_list(tide_meta *m, const char *sql, tide__meta_row_fn *fn,
                    void *out, size_t size, size_t cap, size_t *n_out,
                    const struct tide__meta_arg *args, size_t n);
/* Authorise `p` for `action` on (account_id, device_id) with
 * tide_meta_authorize(), then write the pending counters (tide_meta_flush())
 * so that a read sees them. Call without m->lock. Returns 0 or their
 * errors. */
int tide__meta_authorize_flush(tide_meta *m,
                               const struct tide_meta_principal *p,
                               enum tide_meta_action action,
                               uint64_t account_id, uint64_t device_id);
/* A public paged read of `account_id`'s rows, taking m->lock itself: check
 * the output arguments (TIDE_EINVAL), tide__meta_authorize_flush(), then
 * tide__meta_list(). Returns 0, TIDE_EINVAL or their errors. */
int tide__meta_read(tide_meta *m, const struct tide_meta_principal *p,
                    enum tide_meta_action action, uint64_t account_id,
                    const char *sql, tide__meta_row_fn *fn, void *out,
                    size_t size, size_t cap, size_t *n_out,
                    const struct tide__meta_arg *args, size_t n);
/* Take m->lock, authorise `p` for `action` on (account_id, device_id) with
 * tide__meta_authorize_locked() (action 0: no authorisation, `p` unused),
 * run `sql`, release the lock. When the statement changes no row and
 * `unchanged_rc` is not 0, returns `unchanged_rc`. Otherwise returns 0,
 * authorisation's errors or tide__meta_run()'s. */
int tide__meta_authz_run(tide_meta *m, const struct tide_meta_principal *p,
                         enum tide_meta_action action, uint64_t account_id,
                         uint64_t device_id, const char *sql, int unchanged_rc,
                         const struct tide__meta_arg *args, size_t n);
/* Take m->lock, authorise with tide__meta_authorize_locked() (action 0:
 * no authorisation), then tide__meta_begin(). m->lock is held on return,
 * also on failure (then without a transaction). Returns 0 or their
 * errors. */
int tide__meta_authz_begin(tide_meta *m, const struct tide_meta_principal *p,
                           enum tide_meta_action action, uint64_t account_id,
                           uint64_t device_id);

/* ---- validate.c -------------------------------------------------------- */

/* Validate and normalise (lower-case) an email into out[EMAIL_MAX + 1]. */
int tide__meta_email_norm(const char *in, char *out);
/* Valid UTF-8 without control characters, at most `max` bytes; `empty_ok`
 * says whether "" is allowed. Returns 0 or TIDE_EINVAL. */
int tide__meta_text_ok(const char *s, size_t max, int empty_ok);
/* Normalise a MAC in any common notation to "aa:bb:cc:dd:ee:ff". "" is
 * allowed and stays "". */
int tide__meta_mac_norm(const char *in, char out[TIDE_META_MAC_LEN + 1]);
/* A safe IANA zone name whose TZif file exists under `zoneinfo_dir`. */
int tide__meta_tz_ok(const char *zoneinfo_dir, const char *name);
/* An IP text (or NULL) short enough, printable. */
int tide__meta_ip_ok(const char *ip);

/* ---- auth.c ------------------------------------------------------------ */

/* authorize() with m->lock held. */
int tide__meta_authorize_locked(tide_meta *m,
                                const struct tide_meta_principal *p,
                                enum tide_meta_action action,
                                uint64_t account_id, uint64_t device_id);
/* bcrypt `password` at the configured cost into a new tide_strdup'd
 * string *out. Runs without locks. */
int tide__meta_pw_hash(tide_meta *m, const char *password, char **out);
/* A new secret "<prefix><48 hex>" into out, its SHA-256 into hash. */
int tide__meta_secret_new(const char *prefix, char *out,
                          uint8_t hash[TIDE__META_HASH_LEN]);
void tide__meta_sha256(const char *s, uint8_t hash[TIDE__META_HASH_LEN]);
/* Create the bootstrap admin key and `<dir>/admin.key` if no admin key
 * exists. m->lock held. */
int tide__meta_bootstrap_admin(tide_meta *m);
/* Insert a tombstone row (m->lock held, inside the caller's transaction).
 * account.c. */
int tide__meta_tombstone(tide_meta *m, const char *kind, uint64_t object_id,
                         uint64_t account_id, int64_t now, int64_t grace_ns);
/* Insert a notification row if the account wants this kind (m->lock held,
 * inside the caller's work). notify.c. */
int tide__meta_notify_add(tide_meta *m, uint64_t account_id,
                          enum tide_meta_notify_kind kind, const char *text);

/* ---- registry.c -------------------------------------------------------- */

int tide__meta_registry_load(tide_meta *m);
void tide__meta_registry_free(struct registry *r);
/* Mark every entry of the device (or of the account, device_id 0) dead. */
/* Make the registry entries of `account_id` whose series rows are live
 * again (after a restore) resolvable. m->lock held. Returns 0, TIDE_EIO or
 * -ENOMEM. */
int tide__meta_registry_revive(tide_meta *m, uint64_t account_id);
void tide__meta_registry_kill(tide_meta *m, uint64_t account_id,
                              uint64_t device_id);

/* ---- usage.c ----------------------------------------------------------- */

int tide__meta_pending_init(struct pending *p);
void tide__meta_pending_fini(struct pending *p);
/* Buffer an auth-log row (no lock needed). */
void tide__meta_authlog_buffer(tide_meta *m, const struct authlog_ent *e);
/* Buffer a key use (last-used time, ip, +1 request). */
void tide__meta_keyuse_note(tide_meta *m, uint64_t key_id, int64_t now_ns,
                            const char *ip);
/* Write an auth-log row now (m->lock held). */
int tide__meta_authlog_write(tide_meta *m, const struct authlog_ent *e);
int tide__meta_flusher_start(tide_meta *m);
void tide__meta_flusher_stop(tide_meta *m);

/* ---- retention.c ------------------------------------------------------- */

/* After a commit that removed rows of an erased account or device:
 * checkpoint the SQLite WAL with TRUNCATE so that the old page images
 * leave meta.db-wal, without waiting for readers (an export's snapshot
 * makes it partial; tide_meta_checkpoint() finishes it). m->lock held. */
void tide__meta_wal_scrub(tide_meta *m);

/* ---- crypt.c ----------------------------------------------------------- */

void tide__meta_keys_init(tide_meta *m);
/* Wipe and free every cached key and the master and index keys. */
void tide__meta_keys_fini(tide_meta *m);
/* Register tide_enc, tide_dec and tide_mac on `db` (the sidecar's
 * connection or an export's). */
int tide__meta_crypt_functions(tide_meta *m, sqlite3 *db);
/* At open, after the migrations (m->lock held): check the master key
 * against the stored id and load the data keys, or turn encryption on
 * for a plaintext sidecar. Returns 0 or TIDE_EKEY (m->o.why says why),
 * or an SQL error. */
int tide__meta_crypt_open(tide_meta *m);
/* Make, wrap and store the data key of `account_id` and cache it (m->lock
 * held, inside the caller's transaction). Nothing when encryption is off.
 */
int tide__meta_key_create(tide_meta *m, uint64_t account_id);
/* Wipe the cached key of `account_id` (after a rolled-back creation). */
void tide__meta_key_forget(tide_meta *m, uint64_t account_id);
/* Crypto-shredding: delete the data key row of `account_id` and record
 * the time in its tombstone, in a transaction of its own (m->lock held,
 * no transaction open), then wipe the cached key. */
int tide__meta_key_destroy(tide_meta *m, uint64_t account_id);

/* ---- cache.c ----------------------------------------------------------- */

/* When `rc` is 0, tell the invalidation hook that rows of the device (or
 * of the account, device_id 0; of everything, both 0) changed. Called
 * with or without m->lock; the hook is set once, before the sidecar is
 * shared between threads. */
void tide__meta_changed(tide_meta *m, int rc, uint64_t account_id,
                        uint64_t device_id);

#endif /* TIDE_META_META_INT_H */
