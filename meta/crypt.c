/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sidecar's half of encryption at rest: per-account data keys wrapped
 * by the operator's master key (table data_keys, migration 6), the
 * in-memory cache of unwrapped keys, the SQL functions that seal and open
 * the personal columns and compute their keyed-hash lookup index, turning
 * encryption on for an existing plaintext sidecar, master key rotation and
 * crypto-shredding. docs/accounts.md, "Encryption at rest", lists every
 * encrypted column; docs/file-format.md, "Sidecar encryption", the value
 * layout:
 *
 *   OFFSET  SIZE  DESCRIPTION
 *   0       1     version, 0x01 (frozen)
 *   1       12    random GCM nonce
 *   13      n     AES-256-GCM ciphertext of the n plaintext bytes
 *   13+n    16    GCM tag
 *
 * The additional data is "<table>.<column>" and the account id (8 bytes,
 * little-endian), so a value cannot move to another column or account.
 * Each value is sealed with the account's column key, HKDF(data key,
 * "tide sidecar columns"): the data key itself is the storage engine's
 * (tide_meta_data_key), whose nonces are its own construction. Lookups use
 * HMAC-SHA256 under the index key, HKDF(system key, "tide sidecar
 * index"): the system key (account 0) is rewrapped, never replaced, by a
 * rotation, so the index survives it.
 *
 * Invariants:
 *   1. Every data_keys row is in the cache from open (or its creation)
 *      until its account is purged or the sidecar closed; the SQL
 *      functions therefore never run SQL and never take m->lock.
 *   2. A key leaves the cache only wiped (tide_crypto_wipe).
 *   3. Neither the master key nor an unwrapped key is ever written to the
 *      database, a log or a message; only key ids are.
 */
#include "meta_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define VALUE_VERSION 0x01 /* frozen: first byte of a sealed value */
#define VALUE_OVERHEAD (1 + TIDE_NONCE_BYTES + TIDE_TAG_BYTES)
#define VALUE_PLAIN_MAX 4096 /* longer than any personal column */
#define COLUMN_INFO "tide sidecar columns"
#define INDEX_INFO "tide sidecar index"

/* ---- The key cache --------------------------------------------------------
 * Open addressing on the account id, linear probing; deleted slots are
 * marked and reused. Under kc->mu, which nests inside m->lock. */
enum { SLOT_EMPTY = 0, SLOT_USED = 1, SLOT_GONE = 2 };

static size_t slot_of(uint64_t id, size_t mask)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdull;
    id ^= id >> 33;
    return (size_t)id & mask;
}

/* The slot holding `id`, or NULL. kc->mu held. */
static struct keyslot *cache_find(struct keycache *kc, uint64_t id)
{
    if (!kc->cap)
        return NULL;
    for (size_t i = slot_of(id, kc->cap - 1), n = 0; n < kc->cap;
         i = (i + 1) & (kc->cap - 1), n++) {
        struct keyslot *s = &kc->slots[i];

        if (s->state == SLOT_EMPTY)
            return NULL;
        if (s->state == SLOT_USED && s->account_id == id)
            return s;
    }
    return NULL;
}

static int cache_grow(struct keycache *kc)
{
    size_t cap = kc->cap ? 2 * kc->cap : 64;
    struct keyslot *old = kc->slots, *slots;

    slots = tide_calloc(cap, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < kc->cap; i++) {
        if (old[i].state != SLOT_USED)
            continue;
        for (size_t j = slot_of(old[i].account_id, cap - 1);;
             j = (j + 1) & (cap - 1)) {
            if (slots[j].state == SLOT_EMPTY) {
                slots[j] = old[i];
                break;
            }
        }
    }
    if (old) {
        tide_crypto_wipe(old, kc->cap * sizeof(*old));
        tide_free(old);
    }
    kc->slots = slots;
    kc->cap = cap;
    kc->n_gone = 0;
    return 0;
}

/* Insert or replace the key of `id` (its column key derived here). */
static int cache_put(struct keycache *kc, uint64_t id,
                     const uint8_t key[TIDE_KEY_BYTES])
{
    uint8_t col[TIDE_KEY_BYTES];
    struct keyslot *s;
    int rc;

    rc = tide_crypto_derive(key, COLUMN_INFO, strlen(COLUMN_INFO), col);
    if (rc)
        return rc;
    pthread_mutex_lock(&kc->mu);
    s = cache_find(kc, id);
    if (!s && (kc->n + kc->n_gone + 1) * 2 > kc->cap) {
        rc = cache_grow(kc);
        if (rc)
            goto out;
    }
    if (!s) {
        size_t i = slot_of(id, kc->cap - 1);

        while (kc->slots[i].state == SLOT_USED)
            i = (i + 1) & (kc->cap - 1);
        s = &kc->slots[i];
        if (s->state == SLOT_GONE)
            kc->n_gone--;
        kc->n++;
    }
    s->state = SLOT_USED;
    s->account_id = id;
    memcpy(s->data, key, TIDE_KEY_BYTES);
    memcpy(s->col, col, TIDE_KEY_BYTES);
out:
    pthread_mutex_unlock(&kc->mu);
    tide_crypto_wipe(col, sizeof(col));
    return rc;
}

static void cache_drop(struct keycache *kc, uint64_t id)
{
    struct keyslot *s;

    pthread_mutex_lock(&kc->mu);
    s = cache_find(kc, id);
    if (s) {
        tide_crypto_wipe(s->data, sizeof(s->data));
        tide_crypto_wipe(s->col, sizeof(s->col));
        s->state = SLOT_GONE;
        kc->n--;
        kc->n_gone++;
    }
    pthread_mutex_unlock(&kc->mu);
}

/* Copy the data key (`col` 0) or the column key (1) of `id`. Returns 0 or
 * TIDE_EKEY. */
static int cache_get(struct keycache *kc, uint64_t id, int col,
                     uint8_t out[TIDE_KEY_BYTES])
{
    struct keyslot *s;
    int rc = TIDE_EKEY;

    pthread_mutex_lock(&kc->mu);
    s = cache_find(kc, id);
    if (s) {
        memcpy(out, col ? s->col : s->data, TIDE_KEY_BYTES);
        rc = 0;
    }
    pthread_mutex_unlock(&kc->mu);
    return rc;
}

void tide__meta_keys_init(tide_meta *m)
{
    pthread_mutex_init(&m->keys.mu, NULL);
}

void tide__meta_keys_fini(tide_meta *m)
{
    if (m->keys.slots) {
        tide_crypto_wipe(m->keys.slots, m->keys.cap * sizeof(*m->keys.slots));
        tide_free(m->keys.slots);
    }
    m->keys.slots = NULL;
    m->keys.cap = m->keys.n = m->keys.n_gone = 0;
    pthread_mutex_destroy(&m->keys.mu);
    tide_crypto_wipe(m->master, sizeof(m->master));
    tide_crypto_wipe(m->index_key, sizeof(m->index_key));
}

/* ---- Sealed values ------------------------------------------------------- */

/* "<table>.<column>" then the account id, little-endian. */
static size_t make_aad(uint8_t *aad, size_t cap, const char *col, size_t n,
                       uint64_t account_id)
{
    if (n + 8 > cap)
        return 0;
    memcpy(aad, col, n);
    for (int i = 0; i < 8; i++)
        aad[n + i] = (uint8_t)(account_id >> (8 * i));
    return n + 8;
}

/* tide_enc(value, 'table.column', account_id): the value sealed with the
 * account's column key. Unchanged when encryption is off, or when the
 * value is NULL, empty or sealed already. "" when the account has no key
 * (shredded: what would be written is dropped). */
static void fn_enc(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    tide_meta *m = sqlite3_user_data(ctx);
    uint8_t key[TIDE_KEY_BYTES], aad[80], *out;
    const unsigned char *v;
    size_t aad_n;
    int n;

    (void)argc;
    if (!m->crypt || sqlite3_value_type(argv[0]) != SQLITE_TEXT ||
        sqlite3_value_bytes(argv[0]) == 0) {
        sqlite3_result_value(ctx, argv[0]);
        return;
    }
    v = sqlite3_value_text(argv[0]);
    n = sqlite3_value_bytes(argv[0]);
    aad_n =
        make_aad(aad, sizeof(aad), (const char *)sqlite3_value_text(argv[1]),
                 (size_t)sqlite3_value_bytes(argv[1]),
                 (uint64_t)sqlite3_value_int64(argv[2]));
    if (!v || n > VALUE_PLAIN_MAX || !aad_n) {
        sqlite3_result_error(ctx, "tide_enc: bad argument", -1);
        return;
    }
    if (cache_get(&m->keys, (uint64_t)sqlite3_value_int64(argv[2]), 1, key)) {
        sqlite3_result_text(ctx, "", 0, SQLITE_STATIC);
        return;
    }
    out = sqlite3_malloc(n + VALUE_OVERHEAD);
    if (!out) {
        tide_crypto_wipe(key, sizeof(key));
        sqlite3_result_error_nomem(ctx);
        return;
    }
    out[0] = VALUE_VERSION;
    if (tide_crypto_random(out + 1, TIDE_NONCE_BYTES) ||
        tide_crypto_seal(key, out + 1, aad, aad_n, v, (size_t)n,
                         out + 1 + TIDE_NONCE_BYTES,
                         out + 1 + TIDE_NONCE_BYTES + n)) {
        tide_crypto_wipe(key, sizeof(key));
        sqlite3_free(out);
        sqlite3_result_error(ctx, "tide_enc: OpenSSL failed", -1);
        return;
    }
    tide_crypto_wipe(key, sizeof(key));
    sqlite3_result_blob(ctx, out, n + VALUE_OVERHEAD, sqlite3_free);
}

/* tide_dec(value, 'table.column', account_id): the plaintext of a sealed
 * value; any other value unchanged; "" when the account's key is gone.
 * A value that fails authentication is an error (TIDE_EIO to the caller),
 * never wrong text. */
static void fn_dec(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    tide_meta *m = sqlite3_user_data(ctx);
    uint8_t key[TIDE_KEY_BYTES], aad[80], *out;
    const uint8_t *v;
    size_t aad_n;
    int n, rc;

    (void)argc;
    if (sqlite3_value_type(argv[0]) != SQLITE_BLOB) {
        sqlite3_result_value(ctx, argv[0]);
        return;
    }
    v = sqlite3_value_blob(argv[0]);
    n = sqlite3_value_bytes(argv[0]) - VALUE_OVERHEAD;
    aad_n =
        make_aad(aad, sizeof(aad), (const char *)sqlite3_value_text(argv[1]),
                 (size_t)sqlite3_value_bytes(argv[1]),
                 (uint64_t)sqlite3_value_int64(argv[2]));
    if (!v || n < 0 || v[0] != VALUE_VERSION || !aad_n) {
        sqlite3_result_error(ctx, "tide_dec: not a sealed value", -1);
        return;
    }
    if (cache_get(&m->keys, (uint64_t)sqlite3_value_int64(argv[2]), 1, key)) {
        sqlite3_result_text(ctx, "", 0, SQLITE_STATIC);
        return;
    }
    out = sqlite3_malloc(n + 1);
    if (!out) {
        tide_crypto_wipe(key, sizeof(key));
        sqlite3_result_error_nomem(ctx);
        return;
    }
    rc = tide_crypto_open(key, v + 1, aad, aad_n, v + 1 + TIDE_NONCE_BYTES,
                          (size_t)n, out, v + 1 + TIDE_NONCE_BYTES + n);
    tide_crypto_wipe(key, sizeof(key));
    if (rc) {
        sqlite3_free(out);
        sqlite3_result_error(ctx, "tide_dec: authentication failed", -1);
        return;
    }
    out[n] = '\0';
    sqlite3_result_text(ctx, (const char *)out, n, sqlite3_free);
}

/* tide_mac(kind, account_id, value): HMAC-SHA256 under the index key of
 * kind, NUL, the account id (8 bytes, little-endian) and the value; NULL
 * when encryption is off or the value is NULL. */
static void fn_mac(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    tide_meta *m = sqlite3_user_data(ctx);
    uint8_t buf[16 + 8 + VALUE_PLAIN_MAX], mac[32];
    int kn = sqlite3_value_bytes(argv[0]);
    int vn;
    uint64_t id = (uint64_t)sqlite3_value_int64(argv[1]);

    (void)argc;
    if (!m->crypt || sqlite3_value_type(argv[2]) == SQLITE_NULL) {
        sqlite3_result_null(ctx);
        return;
    }
    vn = sqlite3_value_bytes(argv[2]);
    if (kn <= 0 || kn > 15 || vn > VALUE_PLAIN_MAX ||
        sqlite3_value_type(argv[2]) != SQLITE_TEXT) {
        sqlite3_result_error(ctx, "tide_mac: bad argument", -1);
        return;
    }
    memcpy(buf, sqlite3_value_text(argv[0]), (size_t)kn);
    buf[kn] = 0;
    for (int i = 0; i < 8; i++)
        buf[kn + 1 + i] = (uint8_t)(id >> (8 * i));
    if (vn)
        memcpy(buf + kn + 9, sqlite3_value_text(argv[2]), (size_t)vn);
    if (tide_crypto_hmac(m->index_key, buf, (size_t)(kn + 9 + vn), mac)) {
        tide_crypto_wipe(buf, sizeof(buf));
        sqlite3_result_error(ctx, "tide_mac: OpenSSL failed", -1);
        return;
    }
    tide_crypto_wipe(buf, (size_t)(kn + 9 + vn));
    sqlite3_result_blob(ctx, mac, sizeof(mac), SQLITE_TRANSIENT);
}

int tide__meta_crypt_functions(tide_meta *m, sqlite3 *db)
{
    static const struct {
        const char *name;
        int argc;
        void (*fn)(sqlite3_context *, int, sqlite3_value **);
        int flags;
    } fns[] = {
        {"tide_enc", 3, fn_enc, 0}, /* random nonce: not deterministic */
        {"tide_dec", 3, fn_dec, SQLITE_DETERMINISTIC},
        {"tide_mac", 3, fn_mac, SQLITE_DETERMINISTIC},
    };

    for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
        int src = sqlite3_create_function_v2(db, fns[i].name, fns[i].argc,
                                             SQLITE_UTF8 | SQLITE_DIRECTONLY |
                                                 fns[i].flags,
                                             m, fns[i].fn, NULL, NULL, NULL);

        if (src != SQLITE_OK)
            return tide__meta_sqlerr(src);
    }
    return 0;
}

/* ---- Data keys ----------------------------------------------------------- */

static const char SQL_KEY_INSERT[] =
    "INSERT OR REPLACE INTO data_keys(account_id, wrapped, created_ns)"
    " VALUES(?1, ?2, ?3)";
static const char SQL_KEY_ALL[] = "SELECT account_id, wrapped FROM data_keys";
static const char SQL_KEY_REWRAP[] =
    "UPDATE data_keys SET wrapped=?2 WHERE account_id=?1";
static const char SQL_STATE_GET[] =
    "SELECT master_key_id, enabled_ns, rotated_ns FROM encryption WHERE id=1";
static const char SQL_STATE_INSERT[] =
    "INSERT INTO encryption(id, master_key_id, enabled_ns) VALUES(1, ?1, ?2)";
static const char SQL_STATE_ROTATE[] =
    "UPDATE encryption SET master_key_id=?1, rotated_ns=?2 WHERE id=1";

/* The aad a data key is wrapped with: "tide data key" and the account. */
static size_t wrap_aad(uint8_t aad[32], uint64_t account_id)
{
    return make_aad(aad, 32, "tide data key", 13, account_id);
}

int tide__meta_key_create(tide_meta *m, uint64_t account_id)
{
    uint8_t key[TIDE_KEY_BYTES], wrapped[TIDE_WRAPPED_KEY_BYTES], aad[32];
    size_t aad_n = wrap_aad(aad, account_id);
    int rc;

    if (!m->crypt)
        return 0;
    rc = tide_crypto_random(key, sizeof(key));
    if (!rc)
        rc = tide_crypto_wrap(m->master, key, aad, aad_n, wrapped);
    if (!rc)
        rc = tide__meta_run(m, SQL_KEY_INSERT,
                            META_ARGS(META_INT(account_id),
                                      META_BLOB(wrapped, sizeof(wrapped)),
                                      META_NOW));
    if (!rc)
        rc = cache_put(&m->keys, account_id, key);
    tide_crypto_wipe(key, sizeof(key));
    return rc;
}

void tide__meta_key_forget(tide_meta *m, uint64_t account_id)
{
    cache_drop(&m->keys, account_id);
}

/* Unwrap every data_keys row into the cache. m->lock held. Returns 0,
 * TIDE_EKEY (a key does not unwrap: the master key is wrong or the row
 * was tampered with), or an SQL error. */
static int keys_load(tide_meta *m)
{
    uint8_t key[TIDE_KEY_BYTES], aad[32];
    sqlite3_stmt *st;
    int rc, src;

    rc = tide__meta_stmt(m, SQL_KEY_ALL, &st);
    if (rc)
        return rc;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        uint64_t id = (uint64_t)sqlite3_column_int64(st, 0);

        if (sqlite3_column_bytes(st, 1) != TIDE_WRAPPED_KEY_BYTES) {
            rc = TIDE_ECORRUPT;
            break;
        }
        rc = tide_crypto_unwrap(m->master, sqlite3_column_blob(st, 1), aad,
                                wrap_aad(aad, id), key);
        if (rc) {
            rc = TIDE_EKEY;
            break;
        }
        rc = cache_put(&m->keys, id, key);
        tide_crypto_wipe(key, sizeof(key));
        if (rc)
            break;
    }
    sqlite3_reset(st);
    if (!rc && src != SQLITE_DONE && src != SQLITE_ROW)
        rc = tide__meta_sqlerr(src);
    return rc;
}

static int index_key_load(tide_meta *m)
{
    uint8_t sys[TIDE_KEY_BYTES];
    int rc = cache_get(&m->keys, 0, 0, sys);

    if (!rc)
        rc = tide_crypto_derive(sys, INDEX_INFO, strlen(INDEX_INFO),
                                m->index_key);
    tide_crypto_wipe(sys, sizeof(sys));
    return rc;
}

static void hex8(const uint8_t id[TIDE_KEY_ID_BYTES], char out[17])
{
    for (int i = 0; i < TIDE_KEY_ID_BYTES; i++)
        snprintf(out + 2 * i, 3, "%02x", id[i]);
}

static void say(tide_meta *m, const char *fmt, const char *a, const char *b)
{
    if (m->o.why && m->o.why_len)
        snprintf(m->o.why, m->o.why_len, fmt, a, b);
}

/* Turning encryption on: every personal value sealed, the lookup hashes
 * computed from the plaintext. SET expressions read the row as it was, so
 * each hash is of the plaintext. Rows sealed already are skipped, so the
 * step is idempotent; it runs in the one transaction that also records
 * the master key id, so a crash leaves it undone or done. */
static const char *const enable_sql[] = {
    "UPDATE accounts SET email_hmac=tide_mac('email', 0, email),"
    " email=tide_enc(email, 'accounts.email', id),"
    " first_name=tide_enc(first_name, 'accounts.first_name', id),"
    " surname=tide_enc(surname, 'accounts.surname', id),"
    " organization=tide_enc(organization, 'accounts.organization', id)"
    " WHERE typeof(email)='text'",
    "UPDATE devices SET"
    " thing_hmac=tide_mac('thing', account_id, thing_name),"
    " thing_name=tide_enc(thing_name, 'devices.thing_name', account_id),"
    " mac=tide_enc(mac, 'devices.mac', account_id),"
    " friendly_name=tide_enc(friendly_name, 'devices.friendly_name',"
    " account_id), last_ip=tide_enc(last_ip, 'devices.last_ip', account_id)"
    " WHERE typeof(thing_name)='text'",
    "UPDATE api_keys SET last_ip=tide_enc(last_ip, 'api_keys.last_ip',"
    " coalesce(account_id, 0)) WHERE typeof(last_ip)='text'",
    "UPDATE sessions SET ip=tide_enc(ip, 'sessions.ip', account_id)"
    " WHERE typeof(ip)='text'",
    "UPDATE auth_log SET ip_hmac=tide_mac('ip', account_id, ip),"
    " ip=tide_enc(ip, 'auth_log.ip', account_id) WHERE typeof(ip)='text'",
    "UPDATE request_log SET ip=tide_enc(ip, 'request_log.ip', account_id)"
    " WHERE typeof(ip)='text'",
    "UPDATE notifications SET text=tide_enc(text, 'notifications.text',"
    " account_id) WHERE typeof(text)='text'",
};

static const char SQL_ACCOUNT_IDS[] = "SELECT id FROM accounts ORDER BY id";

/* The ids (column 0) of every row of `sql` appended to `ids`. m->lock
 * held. Returns 0 or a sidecar error. */
static int collect_ids(tide_meta *m, const char *sql, struct tide_buf *ids)
{
    sqlite3_stmt *st = NULL;
    int rc = tide__meta_stmt(m, sql, &st), src = SQLITE_DONE;

    while (!rc && (src = sqlite3_step(st)) == SQLITE_ROW) {
        uint64_t id = (uint64_t)sqlite3_column_int64(st, 0);

        rc = tide__buf_append(ids, &id, sizeof(id));
    }
    if (st)
        sqlite3_reset(st);
    if (!rc && src != SQLITE_DONE && src != SQLITE_ROW)
        rc = tide__meta_sqlerr(src);
    return rc;
}

/* Make a key for account 0 and for every account, record the master key
 * id, seal every personal value. m->lock held, inside a transaction. */
static int enable(tide_meta *m)
{
    struct tide_buf ids = {0};
    int rc;

    rc = tide__meta_key_create(m, 0);
    if (!rc)
        rc = index_key_load(m);
    if (!rc)
        rc = collect_ids(m, SQL_ACCOUNT_IDS, &ids);
    if (rc)
        goto out;
    for (size_t i = 0; !rc && i < ids.len / sizeof(uint64_t); i++)
        rc = tide__meta_key_create(m, ((const uint64_t *)ids.data)[i]);
    for (size_t i = 0; !rc && i < sizeof(enable_sql) / sizeof(enable_sql[0]);
         i++)
        rc = tide__meta_exec(m, enable_sql[i]);
    if (!rc)
        rc = tide__meta_run(
            m, SQL_STATE_INSERT,
            META_ARGS(META_BLOB(m->master_id, sizeof(m->master_id)), META_NOW));
out:
    tide__buf_fini(&ids);
    return rc;
}

int tide__meta_crypt_open(tide_meta *m)
{
    char want[17], got[17];
    sqlite3_stmt *st;
    int rc, have_state, id_ok = 0;

    rc = tide__meta_row(m, SQL_STATE_GET, &st, NULL, 0);
    have_state = rc == 0;
    if (have_state) {
        id_ok = sqlite3_column_bytes(st, 0) == TIDE_KEY_ID_BYTES &&
                m->o.master_key &&
                memcmp(sqlite3_column_blob(st, 0), m->master_id,
                       TIDE_KEY_ID_BYTES) == 0;
        if (sqlite3_column_bytes(st, 0) == TIDE_KEY_ID_BYTES)
            hex8(sqlite3_column_blob(st, 0), want);
        else
            snprintf(want, sizeof(want), "?");
        sqlite3_reset(st);
    } else if (rc != TIDE_ENOTFOUND) {
        return rc;
    }
    if (!m->o.master_key) {
        if (!have_state)
            return 0;
        say(m, "the sidecar is encrypted (master key id %s); %s", want,
            "configure master_key_file");
        return TIDE_EKEY;
    }
    hex8(m->master_id, got);
    if (have_state && !id_ok) {
        say(m,
            "wrong master key: the sidecar's data keys are wrapped by the "
            "master key with id %s, the one given has id %s",
            want, got);
        return TIDE_EKEY;
    }
    m->crypt = 1;
    if (have_state) {
        rc = keys_load(m);
        if (!rc)
            rc = index_key_load(m);
        if (rc == TIDE_EKEY)
            say(m, "master key %s: a data key does not unwrap (%s)", got,
                "the data_keys table was altered or the key is wrong");
        return rc;
    }
    rc = tide__meta_begin(m);
    if (rc)
        return rc;
    rc = tide__meta_end(m, enable(m));
    if (rc) {
        m->crypt = 0;
        return rc;
    }
    /* The plaintext that the step replaced is in old page images of
     * meta.db-wal until a checkpoint; secure_delete zeroed the cells. */
    tide__meta_wal_scrub(m);
    return 0;
}

/* ---- Public -------------------------------------------------------------- */

int tide_meta_data_key(tide_meta *m, uint64_t account_id,
                       uint8_t key[TIDE_KEY_BYTES])
{
    if (!m || !key)
        return TIDE_EINVAL;
    if (!m->crypt)
        return TIDE_EKEY;
    return cache_get(&m->keys, account_id, 0, key);
}

int tide_meta_rotate_master(tide_meta *m, const struct tide_meta_principal *p,
                            const uint8_t new_master[TIDE_KEY_BYTES])
{
    uint8_t new_id[TIDE_KEY_ID_BYTES], key[TIDE_KEY_BYTES], aad[32];
    uint8_t wrapped[TIDE_WRAPPED_KEY_BYTES];
    struct tide_buf ids = {0};
    int rc;

    if (!new_master)
        return TIDE_EINVAL;
    rc = tide__meta_authz_begin(m, p, TIDE_META_ACT_OPERATOR, 0, 0);
    if (rc)
        goto out;
    if (!m->crypt) {
        rc = TIDE_EKEY;
        goto end;
    }
    rc = tide_crypto_key_id(new_master, new_id);
    if (!rc)
        rc = collect_ids(m, SQL_KEY_ALL, &ids);
    if (rc)
        goto end;
    /* Rewrapped from the cache, which holds every row (invariant 1). */
    for (size_t i = 0; !rc && i < ids.len / sizeof(uint64_t); i++) {
        uint64_t id = ((const uint64_t *)ids.data)[i];

        rc = cache_get(&m->keys, id, 0, key);
        if (!rc)
            rc = tide_crypto_wrap(new_master, key, aad, wrap_aad(aad, id),
                                  wrapped);
        tide_crypto_wipe(key, sizeof(key));
        if (!rc)
            rc = tide__meta_run(
                m, SQL_KEY_REWRAP,
                META_ARGS(META_INT(id), META_BLOB(wrapped, sizeof(wrapped))));
    }
    if (!rc)
        rc = tide__meta_run(
            m, SQL_STATE_ROTATE,
            META_ARGS(META_BLOB(new_id, sizeof(new_id)), META_NOW));
end:
    rc = tide__meta_end(m, rc);
    if (!rc) {
        memcpy(m->master, new_master, TIDE_KEY_BYTES);
        memcpy(m->master_id, new_id, sizeof(new_id));
        /* The old wrapped keys are in meta.db-wal's old pages. */
        tide__meta_wal_scrub(m);
    }
out:
    tide__meta_unlock(m);
    tide__buf_fini(&ids);
    return rc;
}

/* Personal values still stored as plaintext (non-empty text). */
static const char SQL_PLAINTEXT[] =
    "SELECT (SELECT count(*) FROM accounts WHERE typeof(email)='text'"
    "  OR typeof(first_name)='text' AND first_name<>''"
    "  OR typeof(surname)='text' AND surname<>''"
    "  OR typeof(organization)='text' AND organization<>'')"
    " + (SELECT count(*) FROM devices WHERE typeof(thing_name)='text'"
    "  OR typeof(mac)='text' AND mac<>''"
    "  OR typeof(friendly_name)='text' AND friendly_name<>''"
    "  OR typeof(last_ip)='text' AND last_ip<>'')"
    " + (SELECT count(*) FROM api_keys WHERE typeof(last_ip)='text'"
    "  AND last_ip<>'')"
    " + (SELECT count(*) FROM sessions WHERE typeof(ip)='text' AND ip<>'')"
    " + (SELECT count(*) FROM auth_log WHERE typeof(ip)='text' AND ip<>'')"
    " + (SELECT count(*) FROM request_log WHERE typeof(ip)='text'"
    "  AND ip<>'')"
    " + (SELECT count(*) FROM notifications WHERE typeof(text)='text'"
    "  AND text<>'')";
static const char SQL_KEY_COUNT[] = "SELECT count(*) FROM data_keys";

int tide_meta_crypt_state(tide_meta *m, int scan,
                          struct tide_meta_crypt_state *out)
{
    sqlite3_stmt *st;
    int64_t n = 0;
    int rc;

    if (!m || !out)
        return TIDE_EINVAL;
    memset(out, 0, sizeof(*out));
    tide__meta_lock(m);
    out->enabled = m->crypt;
    if (m->crypt)
        memcpy(out->master_key_id, m->master_id, TIDE_KEY_ID_BYTES);
    rc = tide__meta_row(m, SQL_STATE_GET, &st, NULL, 0);
    if (!rc) {
        out->enabled_ns = sqlite3_column_int64(st, 1);
        out->rotated_ns = sqlite3_column_int64(st, 2);
        sqlite3_reset(st);
    } else if (rc == TIDE_ENOTFOUND) {
        rc = 0;
    }
    if (!rc)
        rc = tide__meta_ints(m, SQL_KEY_COUNT, &n, 1, NULL, 0);
    out->data_keys = n > 0 ? (uint64_t)n : 0;
    if (!rc && scan) {
        n = 0;
        rc = tide__meta_ints(m, SQL_PLAINTEXT, &n, 1, NULL, 0);
        out->plaintext_rows = n > 0 ? (uint64_t)n : 0;
    }
    tide__meta_unlock(m);
    return rc;
}

/* ---- Crypto-shredding ---------------------------------------------------- */

static const char SQL_KEY_DESTROY[] =
    "DELETE FROM data_keys WHERE account_id=?1";
static const char SQL_KEY_DESTROYED[] =
    "UPDATE tombstones SET key_destroyed_ns=?2 WHERE kind='account'"
    " AND object_id=?1 AND key_destroyed_ns IS NULL";

int tide__meta_key_destroy(tide_meta *m, uint64_t account_id)
{
    int rc;

    if (!account_id)
        return TIDE_EINVAL; /* the system key is never shredded */
    rc = tide__meta_begin(m);
    if (rc)
        return rc;
    rc = tide__meta_run(m, SQL_KEY_DESTROY, META_ARGS(META_INT(account_id)));
    if (!rc)
        rc = tide__meta_run(m, SQL_KEY_DESTROYED,
                            META_ARGS(META_INT(account_id), META_NOW));
    rc = tide__meta_end(m, rc);
    if (!rc)
        cache_drop(&m->keys, account_id);
    return rc;
}

static const char SQL_KEY_REPORT[] =
    "SELECT (SELECT count(*) FROM data_keys WHERE account_id=?1),"
    " coalesce((SELECT max(key_destroyed_ns) FROM tombstones"
    " WHERE kind='account' AND object_id=?1), 0)";

int tide_meta_key_report(tide_meta *m, const struct tide_meta_principal *p,
                         uint64_t account_id, struct tide_meta_key_report *out)
{
    int64_t c[2] = {0, 0};
    int rc;

    if (!out || !account_id)
        return TIDE_EINVAL;
    memset(out, 0, sizeof(*out));
    tide__meta_lock(m);
    rc = tide__meta_authorize_locked(m, p, TIDE_META_ACT_OPERATOR, 0, 0);
    if (!rc)
        rc = tide__meta_ints(m, SQL_KEY_REPORT, c, 2,
                             META_ARGS(META_INT(account_id)));
    tide__meta_unlock(m);
    out->encrypted = m->crypt;
    out->has_key = c[0] > 0;
    out->key_destroyed_ns = c[1];
    return rc;
}
