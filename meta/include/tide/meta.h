/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The accounts sidecar's whole contract: accounts, tiers, credentials and
 * roles, devices, the series registry, usage counters, logs,
 * notifications and the per-account export iterator, kept in one SQLite
 * file (WAL mode) in the data directory. docs/accounts.md gives the schema,
 * the roles table and the retention rules; the server maps these calls
 * one-to-one onto the protocol.
 *
 * Conventions:
 *   1. Every function returns 0 or a negative code: TIDE_E* from
 *      tide/engine.h or -errno. tide_strerror() describes both.
 *   2. Times are int64 ns since the Unix epoch from the clock in the open
 *      options. A "day" is the UTC day number: floor(ns / 86400e9).
 *   3. Strings in are NUL-terminated UTF-8; control characters and invalid
 *      UTF-8 are TIDE_EINVAL. Each has a length limit (TIDE_META_*_MAX,
 *      bytes without the NUL); longer is TIDE_EINVAL. Strings are bound as
 *      SQL parameters and stored verbatim: no input is ever part of SQL
 *      text.
 *   4. Structs filled for the caller hold fixed-size arrays: the caller
 *      owns them, nothing returned points into the sidecar.
 *   5. Every operation but the hot-path calls (series lookup, usage and
 *      seen counters) takes a principal and asks tide_meta_authorize()
 *      first; a refusal is TIDE_EPERM and changes nothing.
 *
 * Thread-safety: every function may be called from any thread at once on
 * the same handle, except tide_meta_close(), which must not race with any
 * other call. SQL runs under one mutex around the connection; series
 * lookups take no lock at all; counters take a short mutex. An export
 * iterator belongs to one thread at a time.
 */
#ifndef TIDE_META_META_H
#define TIDE_META_META_H

#include <stddef.h>
#include <stdint.h>

#include "tide/error.h"
#include "tide/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tide_meta tide_meta;
typedef struct tide_meta_export tide_meta_export;

/* ---- Limits (bytes, without the NUL) ----------------------------------- */

#define TIDE_META_EMAIL_MAX 254
#define TIDE_META_NAME_MAX 128    /* first name, surname, key and thing names */
#define TIDE_META_ORG_MAX 256     /* organization */
#define TIDE_META_TZ_MAX 64       /* IANA timezone name */
#define TIDE_META_BILLING_MAX 128 /* billing customer id and period */
#define TIDE_META_PASSWORD_MAX 72 /* bcrypt reads at most 72 bytes */
#define TIDE_META_PASSWORD_MIN 8
#define TIDE_META_FIRMWARE_MAX 64
#define TIDE_META_TAGS_MAX 1024
#define TIDE_META_FIELD_MAX 255 /* series field name */
#define TIDE_META_IP_MAX 45     /* textual IPv6 */
#define TIDE_META_MAC_LEN 17    /* normalised "aa:bb:cc:dd:ee:ff" */
#define TIDE_META_STATUS_MAX 32 /* plan status */
/* Secrets handed out: "<prefix><48 hex digits>" (192 random bits). */
#define TIDE_META_SECRET_MAX 64
#define TIDE_META_KEY_PREFIX_MAX 24 /* prefix shown in key lists */

/* ---- Options and lifetime ---------------------------------------------- */

struct tide_meta_options {
    unsigned bcrypt_cost;       /* 4..31; default 12 */
    uint32_t flush_interval_ms; /* counters flush period; default 1000;
                                   0 = no flusher thread, only
                                   tide_meta_flush() and close */
    uint32_t seen_interval_ms;  /* device last-seen times are written by
                                   the flusher at most this often (readers
                                   flush them first); default 10000 */
    int64_t session_ttl_ns;     /* default 24 h */
    int64_t verify_ttl_ns;      /* email verification token; default 48 h */
    int64_t delete_grace_ns;    /* deleted account kept; default 30 days,
                                   0 = purged by the next prune */
    tide_clock_fn clock;        /* NULL = CLOCK_REALTIME */
    void *clock_ctx;
    /* Where IANA zone files live; NULL = "/usr/share/zoneinfo". */
    const char *zoneinfo_dir;
    /* Encryption at rest: the operator's master key (TIDE_KEY_BYTES = 32
     * bytes, tide_crypto_master_load()), read during tide_meta_open()
     * only: the sidecar keeps its own copy, wiped at close. NULL = no
     * encryption, and a sidecar that is encrypted is refused. */
    const uint8_t *master_key;
    /* When not NULL, a failed tide_meta_open() writes a sentence for the
     * operator here (why_len bytes with the NUL), e.g. which master key
     * id the sidecar wants. */
    char *why;
    size_t why_len;
};

/* Fill `o` with the defaults above. */
void tide_meta_options_init(struct tide_meta_options *o);

/*
 * Open (creating if needed) `<dir>/meta.db`, run every migration newer
 * than its schema_version (each in one transaction), load the series
 * registry into memory and start the counter flusher. On the very first
 * open a bootstrap operator admin key is created and written to
 * `<dir>/admin.key` (mode 0600, the secret and a newline); it is never
 * logged. `dir` must exist. `opts` may be NULL for defaults.
 * On success *out owns the database until tide_meta_close().
 * Errors: TIDE_EINVAL (bad option), TIDE_EVERSION (file from a newer
 * Tide), TIDE_ECORRUPT (not a database or a bad registry row), TIDE_EIO
 * (SQLite I/O error), -errno, -ENOMEM. On failure nothing is left open;
 * the file may exist with the migrations that committed.
 */
int tide_meta_open(const char *dir, const struct tide_meta_options *opts,
                   tide_meta **out);

/*
 * Stop the flusher, write pending counters and log rows in one last
 * transaction, close the database and free everything. Accepts NULL.
 */
void tide_meta_close(tide_meta *m);

/*
 * Write pending usage counters, key last-used data, device last-seen times
 * and buffered log rows now, in one transaction. The flusher calls this
 * every flush_interval_ms. Returns 0, TIDE_EIO or -ENOMEM; on failure the
 * counters stay pending and are retried by the next flush.
 */
int tide_meta_flush(tide_meta *m);

/* Schema version of the open database (the number of the last migration
 * applied). */
int tide_meta_schema_version(tide_meta *m);

/* ---- Principals and authorisation -------------------------------------- */

enum tide_meta_role {
    TIDE_META_ROLE_ANON = 0,    /* nobody signed in: sign-up, verification */
    TIDE_META_ROLE_ADMIN = 1,   /* operator: everything, every account */
    TIDE_META_ROLE_OWNER = 2,   /* account owner, by password login */
    TIDE_META_ROLE_ANALYST = 3, /* read-only key of one account */
    TIDE_META_ROLE_DEVICE = 4,  /* key that writes one device only */
};

/* Who is calling. Filled by the authentication functions below; the
 * server keeps it per connection. Read-only for the caller. */
struct tide_meta_principal {
    enum tide_meta_role role;
    uint64_t account_id; /* 0 for admin and anonymous */
    uint64_t device_id;  /* device keys only */
    uint64_t key_id;     /* set when authenticated by an API key */
    uint64_t session_id; /* set when authenticated by a session token */
};

/* The server's own principal, for calls it makes on its own behalf
 * (device auto-registration, connection records, prune): the operator's
 * rights without a credential. tide_meta_authorize() knows it by its
 * address; any other ADMIN principal needs a live operator key. */
extern const struct tide_meta_principal tide_meta_system_principal;

/* What a principal asks to do. Values are stored in logs: frozen. */
enum tide_meta_action {
    TIDE_META_ACT_ACCOUNT_CREATE = 1,   /* sign up */
    TIDE_META_ACT_ACCOUNT_READ = 2,     /* profile */
    TIDE_META_ACT_ACCOUNT_UPDATE = 3,   /* rectification, password */
    TIDE_META_ACT_ACCOUNT_DELETE = 4,   /* erasure */
    TIDE_META_ACT_ACCOUNT_PAUSE = 5,    /* pause or resume ingestion */
    TIDE_META_ACT_TIER_SET = 6,         /* an account's plan and billing */
    TIDE_META_ACT_TIER_MANAGE = 7,      /* the tiers table */
    TIDE_META_ACT_KEY_MANAGE = 8,       /* create, list, revoke keys */
    TIDE_META_ACT_DEVICE_READ = 9,      /* list devices */
    TIDE_META_ACT_DEVICE_MANAGE = 10,   /* register, update, delete, pause */
    TIDE_META_ACT_DEVICE_CONNECT = 11,  /* record connect / disconnect */
    TIDE_META_ACT_TELEMETRY_WRITE = 12, /* write points, create series */
    TIDE_META_ACT_TELEMETRY_READ = 13,  /* query points, list series */
    TIDE_META_ACT_USAGE_READ = 14,
    TIDE_META_ACT_AUTHLOG_READ = 15,
    TIDE_META_ACT_NOTIFY = 16,   /* list, mark read, preferences */
    TIDE_META_ACT_EXPORT = 17,   /* every row of the account */
    TIDE_META_ACT_OPERATOR = 18, /* prune, purge, admin keys */
};

/*
 * The one place that decides whether `p` may perform `action` on
 * `account_id` (0 = no account, for ACCOUNT_CREATE, TIER_MANAGE,
 * OPERATOR) and, when non-zero, `device_id`. Besides the role table of
 * docs/accounts.md it checks live state: the principal's key is not
 * revoked and its session not expired; the account exists and is not
 * deleted; the device exists and belongs to the account; TELEMETRY_WRITE
 * is refused while the account or the device is paused.
 * Returns 0, TIDE_EPERM (role or ownership), TIDE_EAUTH (credential no
 * longer valid), TIDE_ENOTFOUND (no such account or device, for a
 * principal allowed to know), TIDE_EPAUSED, TIDE_EIO.
 */
int tide_meta_authorize(tide_meta *m, const struct tide_meta_principal *p,
                        enum tide_meta_action action, uint64_t account_id,
                        uint64_t device_id);

/* ---- Tiers ------------------------------------------------------------- */

#define TIDE_META_TIER_NAME_MAX 32

/* A row of the tiers table. Seeded: 1 = "free" (7 days), 2 = "paid"
 * (90 days). 0 in a limit means unlimited. */
struct tide_meta_tier {
    uint16_t id; /* the tier number segments partition by */
    char name[TIDE_META_TIER_NAME_MAX + 1];
    int64_t ttl_s;             /* telemetry retention */
    uint64_t rate_points_s;    /* points/s rate limit */
    uint64_t daily_points_max; /* daily points quota */
    uint32_t devices_max;
    uint64_t series_max;
    uint64_t key_rate_points_s; /* points/s rate limit of each API key */
    uint32_t query_rate_s;      /* queries/s rate limit of the account */
    uint32_t queries_max;       /* queries of the account running at once */
};

/* Insert or replace tier `t->id` (1..65535, unique name). Admin only
 * (TIER_MANAGE). Returns 0, TIDE_EPERM, TIDE_EINVAL, TIDE_EEXIST (name
 * used by another id), TIDE_EIO. */
int tide_meta_tier_set(tide_meta *m, const struct tide_meta_principal *p,
                       const struct tide_meta_tier *t);

/* Read tier `id` into *out. No principal: tiers are public. Returns 0,
 * TIDE_ENOTFOUND, TIDE_EIO. */
int tide_meta_tier_get(tide_meta *m, uint16_t id, struct tide_meta_tier *out);

/* ---- Accounts ---------------------------------------------------------- */

/* Fields of a new account; NULL optional fields are empty. */
struct tide_meta_account_new {
    const char *email;    /* required; validated, stored lower-case */
    const char *password; /* required; 8..72 bytes */
    const char *first_name;
    const char *surname;
    const char *organization;
    const char *timezone; /* IANA name; NULL = "UTC" */
    uint16_t tier;        /* 0 = free (1) */
};

struct tide_meta_account {
    uint64_t id;
    char email[TIDE_META_EMAIL_MAX + 1];
    char first_name[TIDE_META_NAME_MAX + 1];
    char surname[TIDE_META_NAME_MAX + 1];
    char organization[TIDE_META_ORG_MAX + 1];
    char timezone[TIDE_META_TZ_MAX + 1];
    int email_verified;
    uint16_t tier;
    char plan_status[TIDE_META_STATUS_MAX + 1]; /* e.g. "active" */
    char billing_customer_id[TIDE_META_BILLING_MAX + 1];
    char billing_period[TIDE_META_BILLING_MAX + 1];
    int notify_device;  /* device alerts wanted */
    int notify_usage;   /* usage warnings wanted */
    int notify_product; /* product news; non-essential, off by default */
    int paused;         /* ingestion paused */
    int64_t created_ns;
    int64_t updated_ns;
};

/*
 * Create an account (ACCOUNT_CREATE: anonymous sign-up or admin). The
 * password is hashed with bcrypt at the configured cost. On success
 * *id_out is the new id and `verify_token` (TIDE_META_SECRET_MAX + 1
 * bytes, may be NULL) receives the email verification token, shown once.
 * Returns 0, TIDE_EINVAL (malformed email, password, timezone or name),
 * TIDE_EEXIST (email taken, also by a deleted account in its grace
 * period), TIDE_ENOTFOUND (no such tier), TIDE_EPERM, TIDE_EIO, -ENOMEM.
 */
int tide_meta_account_create(tide_meta *m, const struct tide_meta_principal *p,
                             const struct tide_meta_account_new *a,
                             uint64_t *id_out, char *verify_token);

/* Read account `id` (ACCOUNT_READ) into *out. Returns 0, TIDE_EPERM,
 * TIDE_ENOTFOUND (also for a deleted account), TIDE_EIO. */
int tide_meta_account_get(tide_meta *m, const struct tide_meta_principal *p,
                          uint64_t id, struct tide_meta_account *out);

/*
 * Mark the email verified given the token from account_create. Anyone may
 * call it: the token is the credential. Returns 0, TIDE_EAUTH (unknown,
 * used or expired token), TIDE_EIO.
 */
int tide_meta_account_verify_email(tide_meta *m, const char *token);

/* Profile changes (rectification). NULL fields are left unchanged; "" clears
 * an optional one. A new email is validated, must be free, and clears the
 * verified flag (a new token is not issued here). */
struct tide_meta_profile {
    const char *email;
    const char *first_name;
    const char *surname;
    const char *organization;
    const char *timezone;
};

/* Apply `pr` to account `id` (ACCOUNT_UPDATE) in one transaction.
 * Returns 0, TIDE_EINVAL (nothing applied), TIDE_EEXIST, TIDE_EPERM,
 * TIDE_ENOTFOUND, TIDE_EIO. */
int tide_meta_account_update(tide_meta *m, const struct tide_meta_principal *p,
                             uint64_t id, const struct tide_meta_profile *pr);

/* Replace the password of account `id` (ACCOUNT_UPDATE) and end every
 * session of the account. Returns 0, TIDE_EINVAL, TIDE_EPERM,
 * TIDE_ENOTFOUND, TIDE_EIO, -ENOMEM. */
int tide_meta_account_set_password(tide_meta *m,
                                   const struct tide_meta_principal *p,
                                   uint64_t id, const char *password);

/* Set plan and billing data of account `id` (TIER_SET, admin only: the
 * billing processor's webhook runs as the operator). `plan_status`,
 * `customer_id`, `period` may be NULL (unchanged). Returns 0, TIDE_EPERM,
 * TIDE_ENOTFOUND (account or tier), TIDE_EINVAL, TIDE_EIO. */
int tide_meta_account_set_tier(tide_meta *m,
                               const struct tide_meta_principal *p, uint64_t id,
                               uint16_t tier, const char *plan_status,
                               const char *customer_id, const char *period);

/* Pause (paused = 1) or resume (0) ingestion for account `id`
 * (ACCOUNT_PAUSE). Returns 0, TIDE_EPERM, TIDE_ENOTFOUND, TIDE_EIO. */
int tide_meta_account_pause(tide_meta *m, const struct tide_meta_principal *p,
                            uint64_t id, int paused);

/*
 * Delete account `id` (ACCOUNT_DELETE): at once hidden and unusable (logins,
 * keys and sessions refused, email still reserved); a tombstone records it;
 * tide_meta_prune() removes every row of it after the grace period.
 * Returns 0, TIDE_EPERM, TIDE_ENOTFOUND, TIDE_EIO.
 */
int tide_meta_account_delete(tide_meta *m, const struct tide_meta_principal *p,
                             uint64_t id);

/*
 * Undo the deletion of account `id` within its grace period (OPERATOR: the
 * operator restores on the owner's request). The account, its keys, devices
 * and series are usable again; series of devices deleted before the
 * account stay deleted. Returns 0, TIDE_EPERM, TIDE_ENOTFOUND (not
 * deleted, unknown, or already purged), TIDE_EIO, -ENOMEM.
 */
int tide_meta_account_restore(tide_meta *m, const struct tide_meta_principal *p,
                              uint64_t id);

/* ---- Authentication ---------------------------------------------------- */

/*
 * Password login. On success fills *p as the account's OWNER and writes a
 * new session token ("tide_sess_...", TIDE_META_SECRET_MAX + 1 bytes) to
 * `token`, shown once. Every attempt, good or bad, goes to the auth log
 * with `ip` (may be NULL). Unknown emails cost the same bcrypt work as
 * known ones. Returns 0, TIDE_EAUTH (unknown email, wrong password,
 * deleted account), TIDE_EINVAL, TIDE_EIO, -ENOMEM.
 */
int tide_meta_login(tide_meta *m, const char *email, const char *password,
                    const char *ip, char *token, struct tide_meta_principal *p);

/* Authenticate a session token. Fills *p. Returns 0 or TIDE_EAUTH
 * (unknown, expired or ended session, deleted account), TIDE_EIO. */
int tide_meta_session_auth(tide_meta *m, const char *token, const char *ip,
                           struct tide_meta_principal *p);

/* End the session that authenticated `p`. Returns 0, TIDE_EINVAL (not a
 * session principal), TIDE_EIO. */
int tide_meta_logout(tide_meta *m, const struct tide_meta_principal *p);

/*
 * Authenticate an API key: SHA-256 of the secret, one indexed lookup,
 * constant-time comparison of the stored hash. Fills *p with the key's
 * role, account and device. The attempt is logged in the auth log and the
 * key's last-used time, IP and request count are updated in memory (written
 * by the next flush). Returns 0, TIDE_EAUTH (malformed, unknown or revoked
 * key, deleted account), TIDE_EIO.
 */
int tide_meta_key_auth(tide_meta *m, const char *secret, const char *ip,
                       struct tide_meta_principal *p);

/* ---- API keys ---------------------------------------------------------- */

struct tide_meta_key {
    uint64_t id;
    uint64_t account_id; /* 0 for admin keys */
    uint64_t device_id;  /* device keys only */
    enum tide_meta_role role;
    char name[TIDE_META_NAME_MAX + 1];
    char prefix[TIDE_META_KEY_PREFIX_MAX + 1]; /* shown to users */
    int64_t created_ns;
    int64_t last_used_ns; /* 0 = never */
    char last_ip[TIDE_META_IP_MAX + 1];
    uint64_t requests;
    int revoked;
    int has_cert; /* a client certificate is registered (device keys) */
};

/*
 * Create a key (KEY_MANAGE on `account_id`). `role` is ANALYST, DEVICE
 * (then `device_id` must be a device of the account) or ADMIN (admin only,
 * account_id 0). The secret is written to `secret` (TIDE_META_SECRET_MAX +
 * 1 bytes), shown once, and only its SHA-256 is stored; *id_out may be
 * NULL. A security notification tells the owner. Returns 0, TIDE_EINVAL,
 * TIDE_EPERM, TIDE_ENOTFOUND, TIDE_EIO, -ENOMEM.
 */
int tide_meta_key_create(tide_meta *m, const struct tide_meta_principal *p,
                         uint64_t account_id, enum tide_meta_role role,
                         uint64_t device_id, const char *name, char *secret,
                         uint64_t *id_out);

/* List keys of `account_id` (KEY_MANAGE) with id > `after_id`, in id
 * order, into out[0..cap); *n_out is the count. Pending in-memory usage is
 * included. Returns 0, TIDE_EPERM, TIDE_ENOTFOUND, TIDE_EIO. */
int tide_meta_key_list(tide_meta *m, const struct tide_meta_principal *p,
                       uint64_t account_id, uint64_t after_id,
                       struct tide_meta_key *out, size_t cap, size_t *n_out);

/* Revoke key `key_id` of `account_id` (KEY_MANAGE). Later authentications
 * and authorisations with it fail. Returns 0, TIDE_EPERM, TIDE_ENOTFOUND,
 * TIDE_EIO. */
int tide_meta_key_revoke(tide_meta *m, const struct tide_meta_principal *p,
                         uint64_t account_id, uint64_t key_id);

/* ---- Client certificates (mutual TLS) ---------------------------------- */

#define TIDE_META_CERT_FP_BYTES 32 /* SHA-256 of the certificate's DER */

/*
 * Register the client certificate whose SHA-256 fingerprint (of its DER
 * encoding) is fp[32] for device key `key_id` of `account_id`
 * (KEY_MANAGE), or remove it (fp NULL). A device presenting that
 * certificate over mutual TLS then authenticates as the key
 * (tide_meta_cert_auth). A fingerprint names one key at most. A security
 * notification tells the owner. A revoked key may lose its certificate
 * (which frees it for another key), not gain one. Returns 0, TIDE_EINVAL
 * (not a device key), TIDE_ENOTFOUND (no such key in the account, or
 * revoked), TIDE_EEXIST (the
 * certificate is registered for another key), TIDE_EPERM, TIDE_EIO.
 */
int tide_meta_key_set_cert(tide_meta *m, const struct tide_meta_principal *p,
                           uint64_t account_id, uint64_t key_id,
                           const uint8_t fp[TIDE_META_CERT_FP_BYTES]);

/*
 * Authenticate by a client certificate the TLS layer has verified against
 * tls_client_ca: fp[32] is the SHA-256 of its DER. The key it is
 * registered for is then authenticated exactly as tide_meta_key_auth()
 * does with its secret (one indexed lookup, constant-time comparison, the
 * same revocation and deleted-account rules, the auth log with kind
 * TIDE_META_AUTH_CERT, last-used time, IP and request count in memory).
 * Fills *p with the key's DEVICE role, account and device. Returns 0,
 * TIDE_EAUTH (unregistered certificate, revoked key, deleted account),
 * TIDE_EINVAL, TIDE_EIO.
 */
int tide_meta_cert_auth(tide_meta *m, const uint8_t fp[TIDE_META_CERT_FP_BYTES],
                        const char *ip, struct tide_meta_principal *p);

/* ---- Devices ----------------------------------------------------------- */

struct tide_meta_device_new {
    const char *thing_name; /* required, unique per account */
    const char *mac;        /* optional; any common notation */
    const char *friendly_name;
    const char *firmware;
    const char *tags; /* opaque "k=v,k=v" text */
};

struct tide_meta_device {
    uint64_t id;
    uint64_t account_id;
    char thing_name[TIDE_META_NAME_MAX + 1];
    char mac[TIDE_META_MAC_LEN + 1]; /* "" when unknown */
    char friendly_name[TIDE_META_NAME_MAX + 1];
    char firmware[TIDE_META_FIRMWARE_MAX + 1];
    char tags[TIDE_META_TAGS_MAX + 1];
    int online;
    int paused;
    int64_t last_connect_ns; /* 0 = never */
    char last_ip[TIDE_META_IP_MAX + 1];
    int64_t last_seen_ns; /* includes pending in-memory updates */
    int64_t created_ns;
    int64_t updated_ns;
};

/* Register a device of `account_id` (DEVICE_MANAGE). Returns 0, TIDE_EINVAL
 * (bad MAC or string), TIDE_EEXIST (thing name taken in the account),
 * TIDE_EFULL (tier's devices_max), TIDE_EPERM, TIDE_ENOTFOUND, TIDE_EIO. */
int tide_meta_device_register(tide_meta *m, const struct tide_meta_principal *p,
                              uint64_t account_id,
                              const struct tide_meta_device_new *d,
                              uint64_t *id_out);

/*
 * Register the devices named names[0..n) of `account_id` with no other
 * metadata (DEVICE_MANAGE): how the write path creates the devices of a
 * new fleet. Linear in n: one transaction, and one check of the tier's
 * devices_max, per 1024 names; the lock is released between them, so
 * other callers wait for one such chunk at most. ids[i] receives the id of
 * names[i] and rcs[i] 0 or that name's error: TIDE_EINVAL, TIDE_EEXIST
 * (already registered; ids[i] is that device), TIDE_EFULL (tier's
 * devices_max). Returns 0 when every chunk was applied (check rcs), or
 * TIDE_EPERM, TIDE_ENOTFOUND, TIDE_EIO, -ENOMEM: then the chunks before
 * the failing one are registered (their rcs say so) and nothing after.
 */
int tide_meta_device_register_many(tide_meta *m,
                                   const struct tide_meta_principal *p,
                                   uint64_t account_id,
                                   const char *const *names, size_t n,
                                   uint64_t *ids, int *rcs);

/* Update metadata (rectification, DEVICE_MANAGE): NULL fields unchanged,
 * "" clears optional ones. Errors as for register. */
int tide_meta_device_update(tide_meta *m, const struct tide_meta_principal *p,
                            uint64_t account_id, uint64_t device_id,
                            const struct tide_meta_device_new *d);

/*
 * Replace the tags of devices device_ids[0..n) of `account_id` by
 * tags[i] ("k=v,k=v" text, at most TIDE_META_TAGS_MAX bytes) in one
 * transaction (DEVICE_MANAGE): how the write path stores the tags a batch
 * upserts. rcs[i] receives 0 or that device's error: TIDE_EINVAL (bad
 * text), TIDE_ENOTFOUND (no such device in the account). Returns 0 when
 * the batch was applied (check rcs), or TIDE_EPERM, TIDE_ENOTFOUND,
 * TIDE_EIO, -ENOMEM with nothing changed.
 */
int tide_meta_device_tags_set(tide_meta *m, const struct tide_meta_principal *p,
                              uint64_t account_id, const uint64_t *device_ids,
                              const char *const *tags, size_t n, int *rcs);

/* Read one device (DEVICE_READ). Returns 0, TIDE_EPERM, TIDE_ENOTFOUND,
 * TIDE_EIO. */
int tide_meta_device_get(tide_meta *m, const struct tide_meta_principal *p,
                         uint64_t account_id, uint64_t device_id,
                         struct tide_meta_device *out);

/* List devices of `account_id` (DEVICE_READ) with id > after_id into
 * out[0..cap); *n_out is the count. */
int tide_meta_device_list(tide_meta *m, const struct tide_meta_principal *p,
                          uint64_t account_id, uint64_t after_id,
                          struct tide_meta_device *out, size_t cap,
                          size_t *n_out);

/* Pause (1) or resume (0) ingestion for one device (DEVICE_MANAGE). */
int tide_meta_device_pause(tide_meta *m, const struct tide_meta_principal *p,
                           uint64_t account_id, uint64_t device_id, int paused);

/*
 * Delete a device (DEVICE_MANAGE): the row, its keys, its series rows
 * and its offline notifications (its names gone from the file: their
 * ids move to the erased series that tide_meta_retention_load() reports,
 * so compaction drops their telemetry), plus a tombstone; then the
 * SQLite WAL is checkpointed as tide_meta_checkpoint() does, without
 * waiting for readers. Returns 0, TIDE_EPERM, TIDE_ENOTFOUND,
 * TIDE_EIO.
 */
int tide_meta_device_delete(tide_meta *m, const struct tide_meta_principal *p,
                            uint64_t account_id, uint64_t device_id);

/* Record a connection (connected = 1: online, time and `ip`) or a
 * disconnection (0: offline, and a device-offline notification if the
 * owner wants them). DEVICE_CONNECT. Returns 0, TIDE_EINVAL, TIDE_EPERM,
 * TIDE_ENOTFOUND, TIDE_EIO. */
int tide_meta_device_connect(tide_meta *m, const struct tide_meta_principal *p,
                             uint64_t account_id, uint64_t device_id,
                             int connected, const char *ip);

/* Hot path: note that the device sent data now. In memory; written by the
 * next flush. No authorisation (the caller authorised the write). */
void tide_meta_device_seen(tide_meta *m, uint64_t device_id);

/* ---- Series registry --------------------------------------------------- */

/* A series key. `field` need not be NUL-terminated. */
struct tide_meta_series_key {
    uint64_t account_id;
    uint64_t device_id;
    const char *field;
    uint32_t field_len; /* 1..TIDE_META_FIELD_MAX */
    uint8_t type;       /* enum tide_type */
};

/*
 * Hot path: resolve an existing series to its id without SQL or locks.
 * The caller has already authorised TELEMETRY_WRITE or TELEMETRY_READ for
 * the account and device. Returns 0 (*id_out set), TIDE_ENOTFOUND (not
 * yet created, or deleted), TIDE_ETYPE (exists with another type).
 */
int tide_meta_series_lookup(tide_meta *m, const struct tide_meta_series_key *k,
                            uint64_t *id_out);

/*
 * Resolve or create n series in one transaction (TELEMETRY_WRITE on each
 * key's account and device). ids[i] receives the id of keys[i]; rcs[i] (may
 * be NULL) 0 or that key's error: TIDE_ETYPE, TIDE_EINVAL (bad field),
 * TIDE_EFULL (tier's series_max). Keys repeated in the batch get one id.
 * Returns 0 when the batch was applied (check rcs), or TIDE_EPERM,
 * TIDE_EPAUSED, TIDE_ENOTFOUND, TIDE_EIO, -ENOMEM with nothing created.
 */
int tide_meta_series_ensure(tide_meta *m, const struct tide_meta_principal *p,
                            const struct tide_meta_series_key *keys, size_t n,
                            uint64_t *ids, int *rcs);

/* Called once per series by tide_meta_series_list(). */
typedef void (*tide_meta_series_fn)(void *ctx, const char *field, uint8_t type,
                                    uint64_t id);

/*
 * Every live series of one device, in field order: fn(ctx, field, type,
 * id) for each. The caller has authorised TELEMETRY_READ for the account;
 * `fn` runs without the sidecar's lock and may call it. Returns 0, TIDE_EIO
 * or -ENOMEM (then `fn` was not called).
 */
int tide_meta_series_list(tide_meta *m, uint64_t account_id, uint64_t device_id,
                          tide_meta_series_fn fn, void *ctx);

/* Number of live series in the registry. */
uint64_t tide_meta_series_count(tide_meta *m);

/* ---- Usage and request log --------------------------------------------- */

struct tide_meta_usage {
    int64_t day; /* UTC day number */
    uint64_t messages;
    uint64_t points;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t queries;
};

/* Hot path: add to today's counters of `account_id` (the `day` field of
 * `u` is ignored). In memory; written by the next flush. Returns 0 or
 * -ENOMEM (counters dropped). */
int tide_meta_usage_add(tide_meta *m, uint64_t account_id,
                        const struct tide_meta_usage *u);

/* Read days [day_from, day_to] of `account_id` (USAGE_READ) in day order
 * into out[0..cap), pending counters included; days without usage are
 * skipped. Returns 0, TIDE_EPERM, TIDE_ENOTFOUND, TIDE_EINVAL, TIDE_EIO. */
int tide_meta_usage_read(tide_meta *m, const struct tide_meta_principal *p,
                         uint64_t account_id, int64_t day_from, int64_t day_to,
                         struct tide_meta_usage *out, size_t cap,
                         size_t *n_out);

/* One API request, as the server saw it. */
struct tide_meta_request {
    uint64_t account_id;
    uint64_t key_id; /* 0 for sessions */
    const char *ip;  /* may be NULL */
    const char *op;  /* short operation name, e.g. "write" */
    uint64_t bytes_in;
    uint64_t bytes_out;
    int status; /* 0 or the error code returned */
};

/* Hot path: append to the request log (buffered, written by the next
 * flush). Returns 0, TIDE_EINVAL or -ENOMEM. */
int tide_meta_request_log(tide_meta *m, const struct tide_meta_request *r);

/* ---- Auth log ---------------------------------------------------------- */

enum tide_meta_auth_kind {
    TIDE_META_AUTH_PASSWORD = 1, /* frozen: stored */
    TIDE_META_AUTH_KEY = 2,
    TIDE_META_AUTH_SESSION = 3,
    TIDE_META_AUTH_CERT = 4, /* a registered client certificate */
};

struct tide_meta_auth_event {
    uint64_t id;
    int64_t ts_ns;
    uint64_t account_id; /* 0 when unknown */
    uint64_t key_id;
    enum tide_meta_auth_kind kind;
    int ok;
    char reason[32]; /* "ok", "bad_password", "no_account", "revoked"... */
    char ip[TIDE_META_IP_MAX + 1];
};

/* Auth log of `account_id` (AUTHLOG_READ), newest first, events with id <
 * before_id (0 = from the newest), into out[0..cap). Pending buffered
 * events are flushed first. */
int tide_meta_authlog_read(tide_meta *m, const struct tide_meta_principal *p,
                           uint64_t account_id, uint64_t before_id,
                           struct tide_meta_auth_event *out, size_t cap,
                           size_t *n_out);

/* ---- Notifications ----------------------------------------------------- */

enum tide_meta_notify_kind {
    TIDE_META_NOTIFY_DEVICE = 1,   /* device offline; optional */
    TIDE_META_NOTIFY_USAGE = 2,    /* approaching plan limits; optional */
    TIDE_META_NOTIFY_SECURITY = 3, /* new key, new IP, failed logins;
                                      essential, always on */
    TIDE_META_NOTIFY_PRODUCT = 4,  /* product news; non-essential */
};

struct tide_meta_notification {
    uint64_t id;
    int64_t ts_ns;
    enum tide_meta_notify_kind kind;
    char text[256];
    int read;
};

/* Notifications of `account_id` (NOTIFY), newest first, id < before_id (0
 * = newest), into out[0..cap). */
int tide_meta_notify_list(tide_meta *m, const struct tide_meta_principal *p,
                          uint64_t account_id, uint64_t before_id,
                          struct tide_meta_notification *out, size_t cap,
                          size_t *n_out);

/* Mark notification `id` of the account read (NOTIFY). Returns 0,
 * TIDE_EPERM, TIDE_ENOTFOUND, TIDE_EIO. */
int tide_meta_notify_mark_read(tide_meta *m,
                               const struct tide_meta_principal *p,
                               uint64_t account_id, uint64_t id);

/* Set which optional notifications the account wants (NOTIFY). Security
 * alerts cannot be turned off. */
int tide_meta_notify_prefs(tide_meta *m, const struct tide_meta_principal *p,
                           uint64_t account_id, int device_alerts,
                           int usage_warnings, int product_news);

/* ---- Retention --------------------------------------------------------- */

struct tide_meta_prune_stats {
    uint64_t auth_rows;    /* auth log rows older than 12 months */
    uint64_t request_rows; /* request rows folded into daily aggregates */
    uint64_t sessions;     /* expired sessions removed */
    uint64_t accounts;     /* deleted accounts purged after grace */
};

/*
 * Apply log retention at the clock's now (OPERATOR): drop auth log rows
 * older than 365 days; fold request log rows older than 90 days into
 * per-account, per-day, per-operation aggregates (no IP, no key id) and
 * drop them; drop expired sessions; purge every row of accounts deleted
 * longer than the grace period ago. One transaction, preceded, with
 * encryption at rest, by one committed transaction per account due that
 * destroys its data key (tide_meta_account_purge). `st` may be NULL.
 * Returns 0, TIDE_EPERM, TIDE_EIO.
 */
int tide_meta_prune(tide_meta *m, const struct tide_meta_principal *p,
                    struct tide_meta_prune_stats *st);

/*
 * Purge deleted account `id` now instead of after its grace period
 * (OPERATOR: the caller has checked that the owner asked for it): every
 * row of it goes, as tide_meta_prune() would remove them, in one
 * transaction, and it can no longer be restored; its email is free again.
 * Then the SQLite WAL is checkpointed as tide_meta_checkpoint() does,
 * without waiting for readers (tide_meta_prune() does the same after it
 * purges).
 * With encryption at rest, the account's data key is destroyed first, in
 * a transaction of its own that commits before the rows go
 * (crypto-shredding); tide_meta_data_key() answers TIDE_EKEY for it from
 * then on.
 * Returns 0, TIDE_EPERM, TIDE_ENOTFOUND (not deleted, unknown, or purged
 * already), TIDE_EIO. On failure no row is removed, but the data key may
 * be destroyed already (the next prune removes the rows).
 */
int tide_meta_account_purge(tide_meta *m, const struct tide_meta_principal *p,
                            uint64_t id);

/* ---- Compaction policy ------------------------------------------------- */

/* What the telemetry compaction policy needs, as numbers only. */
struct tide_meta_retention_tier {
    uint16_t id;
    int64_t ttl_s; /* telemetry retention */
};

struct tide_meta_retention_account {
    uint64_t id;
    uint16_t tier;
    int64_t ttl_s; /* its tier's telemetry retention */
    int deleted;   /* deleted and not yet purged: restorable, so its
                      telemetry is kept (by its tier's TTL) until purged */
};

struct tide_meta_erased_series {
    uint64_t series_id; /* a series of a deleted device: its points go */
    uint64_t account_id;
};

/* One consistent read of the policy's inputs, owned by the caller. Each
 * array is sorted by id; accounts purged have no row in `accounts`. */
struct tide_meta_retention {
    struct tide_meta_retention_tier *tiers;
    size_t n_tiers;
    struct tide_meta_retention_account *accounts; /* live and deleted */
    size_t n_accounts;
    uint64_t *purged; /* ids of purged accounts (their tombstones) */
    size_t n_purged;
    struct tide_meta_erased_series *erased;
    size_t n_erased;
    /* tide_meta_generation() before the read: when it has moved on,
     * something changed since and a new load is due. */
    uint64_t generation;
};

/*
 * Load every tier, account, purged account and erased series in one read
 * transaction. No principal: the server's compaction thread calls it. On
 * success *out is the caller's, freed with tide_meta_retention_free().
 * Returns 0, TIDE_EINVAL, TIDE_EIO, -ENOMEM (then *out is NULL).
 */
int tide_meta_retention_load(tide_meta *m, struct tide_meta_retention **out);

/* Free a load. Accepts NULL. */
void tide_meta_retention_free(struct tide_meta_retention *r);

/* A counter that moves each time the sidecar reports a change through the
 * invalidation hook (see tide_meta_set_invalidate; it moves whether or not
 * a hook is installed). Lock-free: callable on any thread, also from the
 * hook. */
uint64_t tide_meta_generation(tide_meta *m);

/*
 * Checkpoint the SQLite WAL into meta.db and truncate meta.db-wal to zero
 * bytes (PRAGMA wal_checkpoint(TRUNCATE)), waiting up to 5 s for readers
 * (an export) to move on. The purges and tide_meta_device_delete() try
 * this without waiting; call it after them, off any latency-sensitive
 * thread, so that no old page image of erased rows lingers in -wal.
 * Returns 0, TIDE_EBUSY (readers still hold old pages; try again later),
 * TIDE_EIO.
 */
int tide_meta_checkpoint(tide_meta *m);

/* ---- Reports (report.c) ------------------------------------------------ */

/* Tables holding rows of an account, in the order
 * tide_meta_report_rows() reports them. */
#define TIDE_META_REPORT_TABLES 11

struct tide_meta_table_rows {
    const char *table; /* a static name, e.g. "series" */
    uint64_t rows;
};

/*
 * Count the rows of `account_id` in every table that holds account rows
 * (OPERATOR): accounts, api_keys, sessions, devices, series (the series
 * registry, deleted series included), usage_daily, auth_log, request_log,
 * request_daily, notifications and tombstones, into
 * out[0..TIDE_META_REPORT_TABLES) in that order. Buffered counters are
 * flushed first. Works for any id: deleted, purged or unknown accounts
 * alike. Returns 0, TIDE_EPERM, TIDE_EIO.
 */
int tide_meta_report_rows(tide_meta *m, const struct tide_meta_principal *p,
                          uint64_t account_id,
                          struct tide_meta_table_rows *out);

/* One account row, as listed by tide_meta_report_accounts(). */
struct tide_meta_account_brief {
    uint64_t id;
    uint16_t tier;
    int deleted; /* in its deletion grace period */
};

/* Accounts with id > after_id, deleted ones included, in id order, into
 * out[0..cap) (OPERATOR); *n_out is the count. Returns 0, TIDE_EPERM,
 * TIDE_EINVAL, TIDE_EIO. */
int tide_meta_report_accounts(tide_meta *m, const struct tide_meta_principal *p,
                              uint64_t after_id,
                              struct tide_meta_account_brief *out, size_t cap,
                              size_t *n_out);

/* ---- Export ------------------------------------------------------------ */

/* One exported row: `table` names the kind ("account", "device", "key",
 * "series", "usage", "auth_log", "request_log", "request_daily",
 * "notification", "session"), `json` is one JSON object on one line. Both
 * are valid until the next tide_meta_export_next() or close. */
struct tide_meta_export_row {
    const char *table;
    const char *json;
    size_t json_len;
};

/*
 * Start an export of every row that belongs to `account_id` (EXPORT):
 * profile, devices, keys' metadata (never hashes), series, usage, auth
 * log, request logs, notifications, sessions (no token hashes). The
 * iterator reads one consistent snapshot on its own read-only connection,
 * so other calls proceed meanwhile. Buffered counters are flushed first.
 * Returns 0, TIDE_EPERM, TIDE_ENOTFOUND, TIDE_EIO, -ENOMEM.
 */
int tide_meta_export_open(tide_meta *m, const struct tide_meta_principal *p,
                          uint64_t account_id, tide_meta_export **out);

/* Next row into *row. Returns 0, 1 at the end, TIDE_EIO, -ENOMEM. */
int tide_meta_export_next(tide_meta_export *it,
                          struct tide_meta_export_row *row);

/* End the export and free it. Accepts NULL. */
void tide_meta_export_close(tide_meta_export *it);

/* ---- Encryption at rest (crypt.c) -------------------------------------- */

/*
 * With a master key in the open options, every account has a random
 * 32-byte data key, wrapped by the master key (AES-256-GCM, the account id
 * bound in) in the sidecar, made with the account and destroyed first when
 * it is purged; account 0 is the system key (the storage engine's own
 * blocks, and the root of the sidecar's lookup index). The personal
 * columns listed in docs/accounts.md are sealed with a key derived from
 * the account's data key; lookups by email, thing name and IP go through
 * HMAC-SHA256 under a key derived from the system key.
 *
 * Opening: a plaintext sidecar opened with a master key is encrypted in
 * one transaction at open (idempotent, crash-safe); an encrypted one
 * opened without it, or with another master key, is refused with
 * TIDE_EKEY and the options' `why` names the key ids.
 */

/*
 * Copy the data key of `account_id` (0: the system key) into key[32]; the
 * caller wipes it (tide_crypto_wipe) when done. Lock-free of the SQL
 * connection: a short mutex around an in-memory table, so the storage
 * engine may call it from any thread, at any time, also while the sidecar
 * is busy. Returns 0, TIDE_EKEY (encryption is off, or the account has no
 * key: never had one, or purged, so its data is shredded), TIDE_EINVAL.
 */
int tide_meta_data_key(tide_meta *m, uint64_t account_id, uint8_t key[32]);

/*
 * Rewrap every data key under `new_master` (32 bytes, the caller's) and
 * record its id, in one transaction (OPERATOR): a crash leaves every key
 * wrapped by the old master key or every one by the new. No data key
 * changes, so no telemetry and no sealed value is rewritten. From then on
 * only `new_master` opens the sidecar. Returns 0, TIDE_EPERM, TIDE_EKEY
 * (encryption is off), TIDE_EIO; on failure nothing changed.
 */
int tide_meta_rotate_master(tide_meta *m, const struct tide_meta_principal *p,
                            const uint8_t new_master[32]);

/* What ServerStatus and /metrics show. */
struct tide_meta_crypt_state {
    int enabled;              /* a master key is in use */
    uint8_t master_key_id[8]; /* tide_crypto_key_id() of it; 0 when off */
    uint64_t data_keys;       /* wrapped keys stored, the system key too */
    uint64_t plaintext_rows;  /* rows with a personal value not sealed;
                                 counted only when `scan` is set */
    int64_t enabled_ns;       /* when encryption was turned on; 0 = never */
    int64_t rotated_ns;       /* last master key rotation; 0 = never */
};

/*
 * Fill *out. No principal: numbers and a key id only (ServerStatus is the
 * operator's; the server checks that). `scan` counts plaintext_rows,
 * which reads every row of the personal tables: for ServerStatus, not for
 * every /metrics scrape. Returns 0, TIDE_EINVAL, TIDE_EIO.
 */
int tide_meta_crypt_state(tide_meta *m, int scan,
                          struct tide_meta_crypt_state *out);

/* The sidecar's part of `tide account erasure-report` about keys. */
struct tide_meta_key_report {
    int encrypted;            /* the sidecar encrypts at rest */
    int has_key;              /* the account's data key still exists */
    int64_t key_destroyed_ns; /* when the purge destroyed it; 0 = not */
};

/* Report on the data key of `account_id` (OPERATOR). Works for purged
 * and unknown accounts alike. Returns 0, TIDE_EPERM, TIDE_EINVAL,
 * TIDE_EIO. */
int tide_meta_key_report(tide_meta *m, const struct tide_meta_principal *p,
                         uint64_t account_id, struct tide_meta_key_report *out);

/* ---- Cache invalidation ------------------------------------------------ */

/* Told that rows a cache may hold changed; see tide_meta_set_invalidate. */
typedef void (*tide_meta_invalidate_fn)(void *ctx, uint64_t account_id,
                                        uint64_t device_id);

/*
 * Install `fn` (NULL removes it), called with `ctx` each time the sidecar
 * changes a row that a cache outside it may hold:
 *   (account, device)  the device was deleted, paused or resumed, or its
 *                      thing name or tags changed: tide_meta_device_delete,
 *                      _pause, _update, _tags_set;
 *   (account, 0)       the account was paused, resumed, deleted, restored
 *                      or purged, or its tier changed:
 *                      tide_meta_account_pause, _delete, _restore,
 *                      _set_tier, and tide_meta_prune for each account it
 *                      purges;
 *   (0, 0)             anything may have changed: tide_meta_tier_set (the
 *                      limits of every account on the tier).
 * Registrations are not reported: a new row makes no cached row wrong.
 * `fn` runs on the thread that made the change (for purges, the one
 * calling tide_meta_prune) with the sidecar's lock held: it must be quick
 * and must not call the sidecar. It may be called for a change that is
 * then rolled back: it means "read it again", not "this happened".
 * Changes made to meta.db by another process are not seen.
 */
void tide_meta_set_invalidate(tide_meta *m, tide_meta_invalidate_fn fn,
                              void *ctx);

#ifdef __cplusplus
}
#endif

#endif /* TIDE_META_META_H */
