/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Credentials and roles: bcrypt passwords (libxcrypt), API keys and session
 * tokens (OpenSSL randomness, stored as SHA-256), the bootstrap admin key,
 * and tide_meta_authorize(), the one place that decides who may do what.
 * docs/accounts.md has the roles table this file implements.
 */
#include "meta_int.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PREFIX_LIVE "tide_live_"
#define PREFIX_ADMIN "tide_admin_"
#define PREFIX_SESS "tide_sess_"
#define SECRET_RAND_BYTES 24 /* 192 bits */
#define SECRET_HEX (2 * SECRET_RAND_BYTES)

/* ---- Roles table ----------------------------------------------------------
 * Bit (1 << action) set when the role may perform the action on its own
 * account (admin: on any). Device keys are further limited to their own
 * device below. Keep docs/accounts.md in step. */
#define A(x) (1u << TIDE_META_ACT_##x)
static const uint32_t role_allows[] = {
    [TIDE_META_ROLE_ANON] = A(ACCOUNT_CREATE),
    [TIDE_META_ROLE_ADMIN] = 0xffffffffu,
    [TIDE_META_ROLE_OWNER] =
        A(ACCOUNT_READ) | A(ACCOUNT_UPDATE) | A(ACCOUNT_DELETE) |
        A(ACCOUNT_PAUSE) | A(KEY_MANAGE) | A(DEVICE_READ) | A(DEVICE_MANAGE) |
        A(DEVICE_CONNECT) | A(TELEMETRY_WRITE) | A(TELEMETRY_READ) |
        A(USAGE_READ) | A(AUTHLOG_READ) | A(NOTIFY) | A(EXPORT),
    [TIDE_META_ROLE_ANALYST] =
        A(DEVICE_READ) | A(TELEMETRY_READ) | A(USAGE_READ),
    [TIDE_META_ROLE_DEVICE] = A(TELEMETRY_WRITE) | A(DEVICE_CONNECT),
};
#undef A

const struct tide_meta_principal tide_meta_system_principal = {
    .role = TIDE_META_ROLE_ADMIN};

static const char SQL_KEY_STATE[] =
    "SELECT revoked, role, coalesce(account_id, 0) FROM api_keys WHERE id=?1";
static const char SQL_SESSION_STATE[] =
    "SELECT ended, expires_ns, account_id FROM sessions WHERE id=?1";
static const char SQL_ACCOUNT_STATE[] =
    "SELECT deleted_ns IS NOT NULL, paused FROM accounts WHERE id=?1";
static const char SQL_DEVICE_STATE[] =
    "SELECT account_id, paused FROM devices WHERE id=?1";

/* The first `n_cols` columns of a one-row query on `id` into c[]; *found
 * is 0 when there is no row. */
static int row_by_id(tide_meta *m, const char *sql, uint64_t id, int64_t *c,
                     size_t n_cols, int *found)
{
    int rc = tide__meta_ints(m, sql, c, n_cols, META_ARGS(META_INT(id)));

    *found = rc != TIDE_ENOTFOUND;
    return rc == TIDE_ENOTFOUND ? 0 : rc;
}

int tide__meta_authorize_locked(tide_meta *m,
                                const struct tide_meta_principal *p,
                                enum tide_meta_action action,
                                uint64_t account_id, uint64_t device_id)
{
    int rc, found, paused = 0;
    uint32_t allowed;
    int64_t c[3];

    if (!p || (unsigned)p->role > TIDE_META_ROLE_DEVICE || action < 1 ||
        action > TIDE_META_ACT_OPERATOR)
        return TIDE_EPERM;
    /* 0. The server's own principal is known by its address: a struct
     * that merely says ADMIN is not the operator. */
    if (p == &tide_meta_system_principal)
        return 0;
    /* 1. The credential behind the principal is still good, and is the
     * principal's: the key's role and account, the session's account (a
     * session is always an owner's). */
    if (p->key_id) {
        rc = row_by_id(m, SQL_KEY_STATE, p->key_id, c, 3, &found);
        if (rc)
            return rc;
        if (!found || c[0] || c[1] != (int64_t)p->role ||
            (uint64_t)c[2] != p->account_id)
            return TIDE_EAUTH;
    }
    if (p->session_id) {
        rc = row_by_id(m, SQL_SESSION_STATE, p->session_id, c, 3, &found);
        if (rc)
            return rc;
        if (!found || c[0] || c[1] <= tide__meta_now(m) ||
            p->role != TIDE_META_ROLE_OWNER || (uint64_t)c[2] != p->account_id)
            return TIDE_EAUTH;
    }
    /* Every role but anonymous needs one (docs/accounts.md, "Roles"). */
    if (p->role != TIDE_META_ROLE_ANON && !p->key_id && !p->session_id)
        return TIDE_EAUTH;
    if (p->role != TIDE_META_ROLE_ADMIN && p->account_id) {
        rc = row_by_id(m, SQL_ACCOUNT_STATE, p->account_id, c, 2, &found);
        if (rc)
            return rc;
        if (!found || c[0])
            return TIDE_EAUTH;
    }
    /* 2. The role allows the action, on this account, on this device. */
    allowed = role_allows[p->role];
    if (!(allowed & (1u << action)))
        return TIDE_EPERM;
    if (p->role != TIDE_META_ROLE_ADMIN) {
        if (p->role == TIDE_META_ROLE_ANON ? account_id != 0
                                           : account_id != p->account_id)
            return TIDE_EPERM;
        if (p->role == TIDE_META_ROLE_DEVICE &&
            (device_id == 0 || device_id != p->device_id))
            return TIDE_EPERM;
    }
    /* 3. The objects exist, belong together, and are not paused. */
    if (account_id) {
        rc = row_by_id(m, SQL_ACCOUNT_STATE, account_id, c, 2, &found);
        if (rc)
            return rc;
        if (!found || c[0])
            return TIDE_ENOTFOUND;
        paused = c[1] != 0;
    } else if (device_id) {
        return TIDE_EINVAL;
    }
    if (device_id) {
        rc = row_by_id(m, SQL_DEVICE_STATE, device_id, c, 2, &found);
        if (rc)
            return rc;
        if (!found || (uint64_t)c[0] != account_id)
            return TIDE_ENOTFOUND;
        paused |= c[1] != 0;
    }
    if (action == TIDE_META_ACT_TELEMETRY_WRITE && paused)
        return TIDE_EPAUSED;
    return 0;
}

int tide_meta_authorize(tide_meta *m, const struct tide_meta_principal *p,
                        enum tide_meta_action action, uint64_t account_id,
                        uint64_t device_id)
{
    int rc;

    tide__meta_lock(m);
    rc = tide__meta_authorize_locked(m, p, action, account_id, device_id);
    tide__meta_unlock(m);
    return rc;
}

/* ---- Hashing and secrets ------------------------------------------------ */

void tide__meta_sha256(const char *s, uint8_t hash[TIDE__META_HASH_LEN])
{
    SHA256((const unsigned char *)s, strlen(s), hash);
}

int tide__meta_secret_new(const char *prefix, char *out,
                          uint8_t hash[TIDE__META_HASH_LEN])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t r[SECRET_RAND_BYTES];
    size_t pl = strlen(prefix);

    TIDE_ASSERT(pl + SECRET_HEX <= TIDE_META_SECRET_MAX);
    if (RAND_bytes(r, sizeof(r)) != 1)
        return TIDE_EIO;
    memcpy(out, prefix, pl);
    for (size_t i = 0; i < sizeof(r); i++) {
        out[pl + 2 * i] = hex[r[i] >> 4];
        out[pl + 2 * i + 1] = hex[r[i] & 15];
    }
    out[pl + SECRET_HEX] = '\0';
    OPENSSL_cleanse(r, sizeof(r));
    tide__meta_sha256(out, hash);
    return 0;
}

/* True when `s` is "<prefix><48 lower-case hex digits>". */
static int secret_shape_ok(const char *s, const char *prefix)
{
    size_t pl = strlen(prefix);

    if (strncmp(s, prefix, pl) != 0 || strnlen(s, 128) != pl + SECRET_HEX)
        return 0;
    for (size_t i = pl; i < pl + SECRET_HEX; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    }
    return 1;
}

/* libxcrypt's crypt_gensalt_ra() would malloc the setting with the system
 * allocator; crypt_gensalt_rn() is the same generator writing into our
 * buffer, and we feed it OpenSSL randomness. */
static int make_setting(unsigned cost, char *setting, int size)
{
    uint8_t r[16];

    if (RAND_bytes(r, sizeof(r)) != 1)
        return TIDE_EIO;
    if (!crypt_gensalt_rn("$2b$", cost, (const char *)r, sizeof(r), setting,
                          size))
        return errno ? -errno : TIDE_EINVAL;
    return 0;
}

/* bcrypt(password, setting) into *out (tide_strdup'd). */
static int bcrypt_run(const char *password, const char *setting, char **out)
{
    struct crypt_data *cd;
    const char *h;
    int rc = 0;

    cd = tide_calloc(1, sizeof(*cd));
    if (!cd)
        return -ENOMEM;
    h = crypt_rn(password, setting, cd, sizeof(*cd));
    if (!h || h[0] == '*') {
        rc = TIDE_EINVAL;
        goto done;
    }
    *out = tide_strdup(h);
    if (!*out)
        rc = -ENOMEM;
done:
    OPENSSL_cleanse(cd, sizeof(*cd));
    tide_free(cd);
    return rc;
}

int tide__meta_pw_hash(tide_meta *m, const char *password, char **out)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    size_t n;
    int rc;

    if (!password)
        return TIDE_EINVAL;
    n = strnlen(password, TIDE_META_PASSWORD_MAX + 1);
    if (n < TIDE_META_PASSWORD_MIN || n > TIDE_META_PASSWORD_MAX)
        return TIDE_EINVAL;
    rc = make_setting(m->o.bcrypt_cost, setting, sizeof(setting));
    if (rc)
        return rc;
    return bcrypt_run(password, setting, out);
}

/* Constant-time check of `password` against a stored bcrypt hash. */
static int pw_verify(const char *password, const char *stored)
{
    char *h = NULL;
    size_t n = strlen(stored);
    int ok;

    if (bcrypt_run(password, stored, &h))
        return 0;
    ok = strlen(h) == n && CRYPTO_memcmp(h, stored, n) == 0;
    tide_free(h);
    return ok;
}

/* ---- Bootstrap admin ---------------------------------------------------- */

static const char SQL_ADMIN_EXISTS[] =
    "SELECT 1 FROM api_keys WHERE role=1 AND revoked=0 LIMIT 1";
static const char SQL_KEY_INSERT[] =
    "INSERT INTO api_keys(account_id, device_id, role, name, prefix, hash,"
    " created_ns) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/* Write `secret` to <dir>/admin.key: a 0600 temp file, fsync, rename,
 * fsync the directory, so the file is whole or absent. */
static int write_admin_file(const char *dir, const char *secret)
{
    char tmp[PATH_MAX], path[PATH_MAX];
    size_t n = strlen(secret);
    int fd = -1, dfd = -1, rc = 0;

    snprintf(tmp, sizeof(tmp), "%s/admin.key.tmp", dir);
    snprintf(path, sizeof(path), "%s/admin.key", dir);
    unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || fchmod(fd, 0600) != 0 || write(fd, secret, n) != (ssize_t)n ||
        write(fd, "\n", 1) != 1 || fsync(fd) != 0) {
        rc = -errno;
        goto fail;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = -errno;
        goto fail;
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;

fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return rc ? rc : TIDE_EIO;
}

int tide__meta_bootstrap_admin(tide_meta *m)
{
    char secret[TIDE_META_SECRET_MAX + 1], prefix[TIDE_META_KEY_PREFIX_MAX + 1];
    uint8_t hash[TIDE__META_HASH_LEN];
    int rc;

    rc = tide__meta_begin(m);
    if (rc)
        return rc;
    rc = tide__meta_ints(m, SQL_ADMIN_EXISTS, NULL, 0, NULL, 0);
    if (!rc) {
        tide__meta_rollback(m);
        return 0;
    }
    if (rc != TIDE_ENOTFOUND)
        goto fail;
    rc = tide__meta_secret_new(PREFIX_ADMIN, secret, hash);
    if (rc)
        goto fail;
    snprintf(prefix, sizeof(prefix), "%.*s", (int)strlen(PREFIX_ADMIN) + 8,
             secret);
    rc = tide__meta_run(m, SQL_KEY_INSERT,
                        META_ARGS(META_NULL, META_NULL,
                                  META_INT(TIDE_META_ROLE_ADMIN),
                                  META_TEXT("bootstrap"), META_TEXT(prefix),
                                  META_BLOB(hash, sizeof(hash)), META_NOW));
    if (rc)
        goto fail;
    /* The file is written before the commit: if it cannot be, there is no
     * admin key nobody knows. */
    rc = write_admin_file(m->dir, secret);
    OPENSSL_cleanse(secret, sizeof(secret));
    if (rc)
        goto fail;
    return tide__meta_commit(m);

fail:
    OPENSSL_cleanse(secret, sizeof(secret));
    tide__meta_rollback(m);
    return rc;
}

/* ---- Login and sessions ------------------------------------------------- */

/* With encryption on, lookups by a sealed value go through its keyed
 * hash (crypt.c); the _HMAC statement is the one used then. */
static const char SQL_LOGIN_LOOKUP[] =
    "SELECT id, pw_hash, deleted_ns IS NOT NULL FROM accounts WHERE email=?1";
static const char SQL_LOGIN_LOOKUP_HMAC[] =
    "SELECT id, pw_hash, deleted_ns IS NOT NULL FROM accounts"
    " WHERE email_hmac=tide_mac('email', 0, ?1)";
static const char SQL_SESSION_INSERT[] =
    "INSERT INTO sessions(account_id, hash, created_ns, expires_ns, ip)"
    " VALUES(?1, ?2, ?3, ?4, tide_enc(?5, 'sessions.ip', ?1))";
static const char SQL_SEEN_IP[] =
    "SELECT 1 FROM auth_log WHERE account_id=?1 AND ip=?2 AND ok=1 LIMIT 1";
static const char SQL_SEEN_IP_HMAC[] =
    "SELECT 1 FROM auth_log WHERE account_id=?1"
    " AND ip_hmac=tide_mac('ip', ?1, ?2) AND ok=1 LIMIT 1";
static const char SQL_RECENT_FAILS[] =
    "SELECT count(*) FROM auth_log WHERE account_id=?1 AND ok=0"
    " AND kind=1 AND ts_ns>?2";

static void log_fill(struct authlog_ent *e, int64_t now, uint64_t account_id,
                     uint64_t key_id, int kind, int ok, const char *reason,
                     const char *ip)
{
    memset(e, 0, sizeof(*e));
    e->ts_ns = now;
    e->account_id = account_id;
    e->key_id = key_id;
    e->kind = kind;
    e->ok = ok;
    snprintf(e->reason, sizeof(e->reason), "%s", reason);
    if (ip && !tide__meta_ip_ok(ip))
        snprintf(e->ip, sizeof(e->ip), "%s", ip);
}

/* After a password attempt on a known account: security notifications
 * for a first login from an IP and for repeated failures. */
static int login_alerts(tide_meta *m, uint64_t account_id, int ok,
                        const char *ip, int64_t now)
{
    char text[160];
    int64_t fails;
    int rc;

    if (ok) {
        rc = tide__meta_ints(m, m->crypt ? SQL_SEEN_IP_HMAC : SQL_SEEN_IP, NULL,
                             0, META_ARGS(META_INT(account_id), META_TEXT(ip)));
        if (rc != TIDE_ENOTFOUND)
            return rc; /* 0: an IP seen before */
        snprintf(text, sizeof(text), "login from a new IP address: %s",
                 ip ? ip : "unknown");
        return tide__meta_notify_add(m, account_id, TIDE_META_NOTIFY_SECURITY,
                                     text);
    }
    rc = tide__meta_ints(
        m, SQL_RECENT_FAILS, &fails, 1,
        META_ARGS(META_INT(account_id), META_INT(now - 3600 * 1000000000ll)));
    if (rc)
        return rc == TIDE_ENOTFOUND ? TIDE_EIO : rc; /* count(*) has a row */
    /* Once at the 5th failure within an hour, not at every one after. */
    if (fails != 4)
        return 0;
    return tide__meta_notify_add(m, account_id, TIDE_META_NOTIFY_SECURITY,
                                 "5 failed logins within an hour");
}

int tide_meta_login(tide_meta *m, const char *email, const char *password,
                    const char *ip, char *token, struct tide_meta_principal *p)
{
    char norm[TIDE_META_EMAIL_MAX + 1];
    uint8_t hash[TIDE__META_HASH_LEN];
    char *stored = NULL;
    const char *dummy, *reason = "ok";
    uint64_t account_id = 0;
    sqlite3_stmt *st;
    struct authlog_ent e;
    int rc, deleted = 0, ok, n;
    int64_t now;

    if (!email || !password || !token || !p || tide__meta_ip_ok(ip))
        return TIDE_EINVAL;
    n = (int)strnlen(password, TIDE_META_PASSWORD_MAX + 1);
    if (tide__meta_email_norm(email, norm))
        norm[0] = '\0';
    tide__meta_lock(m);
    rc = tide__meta_row(m, m->crypt ? SQL_LOGIN_LOOKUP_HMAC : SQL_LOGIN_LOOKUP,
                        &st, META_ARGS(META_TEXT(norm)));
    if (!rc) {
        account_id = (uint64_t)sqlite3_column_int64(st, 0);
        stored = tide_strdup((const char *)sqlite3_column_text(st, 1));
        deleted = sqlite3_column_int(st, 2);
        sqlite3_reset(st);
        if (!stored)
            rc = -ENOMEM;
    } else if (rc == TIDE_ENOTFOUND) {
        rc = 0;
    }
    if (!rc && !stored && !m->dummy_hash) {
        /* Unknown email: the same bcrypt work as a known one, so timing
         * does not tell which emails have accounts. */
        tide__meta_unlock(m);
        rc = tide__meta_pw_hash(m, "tide-dummy-password", &stored);
        tide__meta_lock(m);
        if (!rc && !m->dummy_hash) {
            m->dummy_hash = stored;
            stored = NULL;
        }
        rc = 0;
    }
    dummy = m->dummy_hash; /* set once, freed only at close */
    tide__meta_unlock(m);
    if (rc)
        goto fail;

    /* bcrypt runs without the lock: it takes ~0.25 s at cost 12. */
    ok = (stored || dummy) && pw_verify(password, stored ? stored : dummy);
    if (n > TIDE_META_PASSWORD_MAX || n < 1)
        ok = 0;
    if (!account_id)
        ok = 0, reason = "no_account";
    else if (deleted)
        ok = 0, reason = "deleted";
    else if (!ok)
        reason = "bad_password";

    tide__meta_lock(m);
    now = tide__meta_now(m);
    rc = tide__meta_begin(m);
    if (rc)
        goto fail_locked;
    if (account_id && !deleted) {
        rc = login_alerts(m, account_id, ok, ip, now);
        if (rc)
            goto fail_tx;
    }
    log_fill(&e, now, account_id, 0, TIDE_META_AUTH_PASSWORD, ok, reason, ip);
    rc = tide__meta_authlog_write(m, &e);
    if (rc)
        goto fail_tx;
    if (ok) {
        rc = tide__meta_secret_new(PREFIX_SESS, token, hash);
        if (rc)
            goto fail_tx;
        rc = tide__meta_run(
            m, SQL_SESSION_INSERT,
            META_ARGS(META_INT(account_id), META_BLOB(hash, sizeof(hash)),
                      META_INT(now), META_INT(now + m->o.session_ttl_ns),
                      META_TEXT(ip)));
        if (rc)
            goto fail_tx;
        memset(p, 0, sizeof(*p));
        p->role = TIDE_META_ROLE_OWNER;
        p->account_id = account_id;
        p->session_id = (uint64_t)sqlite3_last_insert_rowid(m->db);
    }
    rc = tide__meta_commit(m);
    tide__meta_unlock(m);
    tide_free(stored);
    if (rc)
        return rc;
    return ok ? 0 : TIDE_EAUTH;

fail_tx:
    tide__meta_rollback(m);
fail_locked:
    tide__meta_unlock(m);
fail:
    tide_free(stored);
    return rc;
}

static const char SQL_SESSION_LOOKUP[] =
    "SELECT s.id, s.account_id, s.hash, s.ended, s.expires_ns,"
    " a.deleted_ns IS NOT NULL FROM sessions s JOIN accounts a"
    " ON a.id=s.account_id WHERE s.hash=?1";

int tide_meta_session_auth(tide_meta *m, const char *token, const char *ip,
                           struct tide_meta_principal *p)
{
    uint8_t hash[TIDE__META_HASH_LEN];
    struct authlog_ent e;
    sqlite3_stmt *st;
    const char *reason = "unknown";
    uint64_t sid = 0, account_id = 0;
    int rc, ok = 0;
    int64_t now;

    if (!token || !p || tide__meta_ip_ok(ip))
        return TIDE_EINVAL;
    tide__meta_lock(m);
    now = tide__meta_now(m);
    if (!secret_shape_ok(token, PREFIX_SESS)) {
        reason = "malformed";
        goto log;
    }
    tide__meta_sha256(token, hash);
    rc = tide__meta_row(m, SQL_SESSION_LOOKUP, &st,
                        META_ARGS(META_BLOB(hash, sizeof(hash))));
    if (rc && rc != TIDE_ENOTFOUND) {
        tide__meta_unlock(m);
        return rc;
    }
    if (!rc && sqlite3_column_bytes(st, 2) == sizeof(hash) &&
        CRYPTO_memcmp(sqlite3_column_blob(st, 2), hash, sizeof(hash)) == 0) {
        sid = (uint64_t)sqlite3_column_int64(st, 0);
        account_id = (uint64_t)sqlite3_column_int64(st, 1);
        if (sqlite3_column_int(st, 3))
            reason = "ended";
        else if (sqlite3_column_int64(st, 4) <= now)
            reason = "expired";
        else if (sqlite3_column_int(st, 5))
            reason = "deleted";
        else
            ok = 1, reason = "ok";
    }
    if (!rc)
        sqlite3_reset(st);
log:
    tide__meta_unlock(m);
    log_fill(&e, now, account_id, 0, TIDE_META_AUTH_SESSION, ok, reason, ip);
    tide__meta_authlog_buffer(m, &e);
    if (!ok)
        return TIDE_EAUTH;
    memset(p, 0, sizeof(*p));
    p->role = TIDE_META_ROLE_OWNER;
    p->account_id = account_id;
    p->session_id = sid;
    return 0;
}

static const char SQL_SESSION_END[] = "UPDATE sessions SET ended=1 WHERE id=?1";

int tide_meta_logout(tide_meta *m, const struct tide_meta_principal *p)
{
    if (!p || !p->session_id)
        return TIDE_EINVAL;
    return tide__meta_authz_run(m, NULL, 0, 0, 0, SQL_SESSION_END, 0,
                                META_ARGS(META_INT(p->session_id)));
}

/* ---- API keys ----------------------------------------------------------- */

static const char SQL_KEY_LOOKUP[] =
    "SELECT k.id, k.account_id, k.device_id, k.role, k.revoked, k.hash,"
    " a.deleted_ns IS NOT NULL FROM api_keys k LEFT JOIN accounts a"
    " ON a.id=k.account_id WHERE k.hash=?1";

/* The key whose column 5 of `sql` (the SELECT shape of SQL_KEY_LOOKUP)
 * equals blob[len], compared in constant time; NULL `blob`: refused as
 * `reason`. The attempt goes to the auth log as `kind`; on success the use
 * is noted and *p filled. `device_only`: only device keys qualify (client
 * certificates). Returns 0, TIDE_EAUTH or a sidecar error. */
static int key_row_auth(tide_meta *m, const char *sql, const uint8_t *blob,
                        size_t len, enum tide_meta_auth_kind kind,
                        int device_only, const char *reason, const char *ip,
                        struct tide_meta_principal *p)
{
    struct tide_meta_principal q;
    struct authlog_ent e;
    sqlite3_stmt *st;
    int64_t now = tide__meta_now(m);
    int rc = 0, ok = 0;

    memset(&q, 0, sizeof(q));
    if (blob) {
        tide__meta_lock(m);
        rc = tide__meta_row(m, sql, &st, META_ARGS(META_BLOB(blob, len)));
        if (!rc && sqlite3_column_bytes(st, 5) == (int)len &&
            CRYPTO_memcmp(sqlite3_column_blob(st, 5), blob, len) == 0) {
            q.key_id = (uint64_t)sqlite3_column_int64(st, 0);
            q.account_id = (uint64_t)sqlite3_column_int64(st, 1);
            q.device_id = (uint64_t)sqlite3_column_int64(st, 2);
            q.role = (enum tide_meta_role)sqlite3_column_int(st, 3);
            if (sqlite3_column_int(st, 4))
                reason = "revoked";
            else if (sqlite3_column_int(st, 6))
                reason = "deleted";
            else if (device_only && q.role != TIDE_META_ROLE_DEVICE)
                reason = "malformed";
            else
                ok = 1, reason = "ok";
        }
        if (!rc)
            sqlite3_reset(st);
        tide__meta_unlock(m);
        if (rc && rc != TIDE_ENOTFOUND)
            return rc;
    }
    log_fill(&e, now, q.account_id, q.key_id, kind, ok, reason, ip);
    tide__meta_authlog_buffer(m, &e);
    if (!ok)
        return TIDE_EAUTH;
    tide__meta_keyuse_note(m, q.key_id, now, ip);
    *p = q;
    return 0;
}

int tide_meta_key_auth(tide_meta *m, const char *secret, const char *ip,
                       struct tide_meta_principal *p)
{
    uint8_t hash[TIDE__META_HASH_LEN];
    int shaped;

    if (!secret || !p || tide__meta_ip_ok(ip))
        return TIDE_EINVAL;
    shaped = secret_shape_ok(secret, PREFIX_LIVE) ||
             secret_shape_ok(secret, PREFIX_ADMIN);
    /* The lookup is by the hash of a 192-bit secret, so its timing tells
     * nothing useful; the stored hash is still compared in constant time. */
    if (shaped)
        tide__meta_sha256(secret, hash);
    return key_row_auth(m, SQL_KEY_LOOKUP, shaped ? hash : NULL, sizeof(hash),
                        TIDE_META_AUTH_KEY, 0, shaped ? "unknown" : "malformed",
                        ip, p);
}

/* ---- Client certificates ------------------------------------------------ */

static const char SQL_CERT_LOOKUP[] =
    "SELECT k.id, k.account_id, k.device_id, k.role, k.revoked, k.cert_fp,"
    " a.deleted_ns IS NOT NULL FROM api_keys k LEFT JOIN accounts a"
    " ON a.id=k.account_id WHERE k.cert_fp=?1";

int tide_meta_cert_auth(tide_meta *m, const uint8_t fp[TIDE_META_CERT_FP_BYTES],
                        const char *ip, struct tide_meta_principal *p)
{
    if (!fp || !p || tide__meta_ip_ok(ip))
        return TIDE_EINVAL;
    /* As for a key: the lookup is by a hash of a certificate the TLS
     * layer verified; only device keys carry certificates. */
    return key_row_auth(m, SQL_CERT_LOOKUP, fp, TIDE_META_CERT_FP_BYTES,
                        TIDE_META_AUTH_CERT, 1, "unknown", ip, p);
}

static const char SQL_CERT_KEY[] =
    "SELECT role, prefix, revoked FROM api_keys WHERE id=?1"
    " AND account_id=?2";
static const char SQL_CERT_SET[] =
    "UPDATE api_keys SET cert_fp=?3 WHERE id=?1 AND account_id=?2";

struct cert_key {
    int role;
    int revoked;
    char prefix[TIDE_META_KEY_PREFIX_MAX + 1];
};

static void cert_key_row(sqlite3_stmt *st, void *arg)
{
    struct cert_key *k = arg;

    k->role = sqlite3_column_int(st, 0);
    tide__meta_col_text(st, 1, k->prefix, sizeof(k->prefix));
    k->revoked = sqlite3_column_int(st, 2);
}

int tide_meta_key_set_cert(tide_meta *m, const struct tide_meta_principal *p,
                           uint64_t account_id, uint64_t key_id,
                           const uint8_t fp[TIDE_META_CERT_FP_BYTES])
{
    struct cert_key k = {0};
    char text[160];
    int rc;

    if (!account_id || !key_id)
        return TIDE_EINVAL;
    rc = tide__meta_authz_begin(m, p, TIDE_META_ACT_KEY_MANAGE, account_id, 0);
    if (rc)
        goto out;
    rc = tide__meta_get(m, SQL_CERT_KEY, cert_key_row, &k,
                        META_ARGS(META_INT(key_id), META_INT(account_id)));
    /* A revoked key may lose its certificate, not gain one. */
    if (!rc && fp && k.revoked)
        rc = TIDE_ENOTFOUND;
    if (!rc && k.role != TIDE_META_ROLE_DEVICE)
        rc = TIDE_EINVAL;
    if (!rc)
        rc = tide__meta_run(
            m, SQL_CERT_SET,
            META_ARGS(META_INT(key_id), META_INT(account_id),
                      fp ? META_BLOB(fp, TIDE_META_CERT_FP_BYTES) : META_NULL));
    if (!rc) {
        snprintf(text, sizeof(text), "client certificate %s for API key %s",
                 fp ? "registered" : "removed", k.prefix);
        rc = tide__meta_notify_add(m, account_id, TIDE_META_NOTIFY_SECURITY,
                                   text);
    }
    rc = tide__meta_end(m, rc);
out:
    tide__meta_unlock(m);
    return rc;
}

int tide_meta_key_create(tide_meta *m, const struct tide_meta_principal *p,
                         uint64_t account_id, enum tide_meta_role role,
                         uint64_t device_id, const char *name, char *secret,
                         uint64_t *id_out)
{
    char prefix[TIDE_META_KEY_PREFIX_MAX + 1], text[200];
    uint8_t hash[TIDE__META_HASH_LEN];
    const char *pfx;
    int rc;

    if (!secret || tide__meta_text_ok(name ? name : "", TIDE_META_NAME_MAX, 1))
        return TIDE_EINVAL;
    if (role == TIDE_META_ROLE_ADMIN) {
        if (account_id || device_id)
            return TIDE_EINVAL;
        pfx = PREFIX_ADMIN;
    } else if (role == TIDE_META_ROLE_ANALYST) {
        if (!account_id || device_id)
            return TIDE_EINVAL;
        pfx = PREFIX_LIVE;
    } else if (role == TIDE_META_ROLE_DEVICE) {
        if (!account_id || !device_id)
            return TIDE_EINVAL;
        pfx = PREFIX_LIVE;
    } else {
        return TIDE_EINVAL;
    }
    tide__meta_lock(m);
    rc = tide__meta_authorize_locked(m, p,
                                     role == TIDE_META_ROLE_ADMIN
                                         ? TIDE_META_ACT_OPERATOR
                                         : TIDE_META_ACT_KEY_MANAGE,
                                     account_id, device_id);
    if (rc)
        goto out;
    rc = tide__meta_secret_new(pfx, secret, hash);
    if (rc)
        goto out;
    snprintf(prefix, sizeof(prefix), "%.*s", (int)strlen(pfx) + 8, secret);
    rc = tide__meta_begin(m);
    if (rc)
        goto out;
    rc = tide__meta_run(m, SQL_KEY_INSERT,
                        META_ARGS(account_id ? META_INT(account_id) : META_NULL,
                                  device_id ? META_INT(device_id) : META_NULL,
                                  META_INT(role), META_TEXT(name),
                                  META_TEXT(prefix),
                                  META_BLOB(hash, sizeof(hash)), META_NOW));
    if (!rc && id_out)
        *id_out = (uint64_t)sqlite3_last_insert_rowid(m->db);
    if (!rc && account_id) {
        snprintf(text, sizeof(text), "new API key %s (%s)", prefix,
                 role == TIDE_META_ROLE_DEVICE ? "device" : "analyst");
        rc = tide__meta_notify_add(m, account_id, TIDE_META_NOTIFY_SECURITY,
                                   text);
    }
    rc = tide__meta_end(m, rc);
out:
    tide__meta_unlock(m);
    if (rc)
        OPENSSL_cleanse(secret, TIDE_META_SECRET_MAX + 1);
    return rc;
}

/* Account 0 names the operator keys, whose account_id is NULL. */
static const char SQL_KEY_LIST[] =
    "SELECT id, account_id, device_id, role, name, prefix, created_ns,"
    " last_used_ns, tide_dec(last_ip, 'api_keys.last_ip',"
    " coalesce(account_id, 0)), requests, revoked, cert_fp IS NOT NULL"
    " FROM api_keys"
    " WHERE account_id IS ?1 AND id>?2 ORDER BY id LIMIT ?3";

static void key_row(sqlite3_stmt *st, void *arg)
{
    struct tide_meta_key *k = arg;

    memset(k, 0, sizeof(*k));
    k->id = (uint64_t)sqlite3_column_int64(st, 0);
    k->account_id = (uint64_t)sqlite3_column_int64(st, 1);
    k->device_id = (uint64_t)sqlite3_column_int64(st, 2);
    k->role = (enum tide_meta_role)sqlite3_column_int(st, 3);
    tide__meta_col_text(st, 4, k->name, sizeof(k->name));
    tide__meta_col_text(st, 5, k->prefix, sizeof(k->prefix));
    k->created_ns = sqlite3_column_int64(st, 6);
    k->last_used_ns = sqlite3_column_int64(st, 7);
    tide__meta_col_text(st, 8, k->last_ip, sizeof(k->last_ip));
    k->requests = (uint64_t)sqlite3_column_int64(st, 9);
    k->revoked = sqlite3_column_int(st, 10);
    k->has_cert = sqlite3_column_int(st, 11);
}

int tide_meta_key_list(tide_meta *m, const struct tide_meta_principal *p,
                       uint64_t account_id, uint64_t after_id,
                       struct tide_meta_key *out, size_t cap, size_t *n_out)
{
    return tide__meta_read(
        m, p, account_id ? TIDE_META_ACT_KEY_MANAGE : TIDE_META_ACT_OPERATOR,
        account_id, SQL_KEY_LIST, key_row, out, sizeof(*out), cap, n_out,
        META_ARGS(account_id ? META_INT(account_id) : META_NULL,
                  META_INT(after_id), META_INT(cap)));
}

static const char SQL_KEY_REVOKE[] =
    "UPDATE api_keys SET revoked=1, revoked_ns=?3"
    " WHERE id=?1 AND account_id IS ?2 AND revoked=0";

/* Account 0: an operator key, the bootstrap one included (operator only).
 * Revoking every operator key locks the operator out until the next
 * start, which writes a new admin.key (tide__meta_bootstrap_admin). */
int tide_meta_key_revoke(tide_meta *m, const struct tide_meta_principal *p,
                         uint64_t account_id, uint64_t key_id)
{
    return tide__meta_authz_run(
        m, p, account_id ? TIDE_META_ACT_KEY_MANAGE : TIDE_META_ACT_OPERATOR,
        account_id, 0, SQL_KEY_REVOKE, TIDE_ENOTFOUND,
        META_ARGS(META_INT(key_id),
                  account_id ? META_INT(account_id) : META_NULL, META_NOW));
}
