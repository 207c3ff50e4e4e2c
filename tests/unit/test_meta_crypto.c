/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of the sidecar's encryption at rest (meta/crypt.c): no personal
 * value reaches meta.db or its -wal/-shm in plaintext, and every one reads
 * back; lookups by email through the keyed hash; a wrong or missing
 * master key refused; a plaintext sidecar encrypted at open; master key
 * rotation; crypto-shredding on purge; a tampered value refused. Also the
 * client-certificate authentication of device keys (mutual TLS).
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meta_int.h"
#include "testutil.h"
#include "tide/crypto.h"
#include "tide/meta.h"

#define DAY_NS 86400000000000ll
#define T0 1700000000000000000ll

static char dir[1024];
static _Atomic int64_t fake_now;
static tide_meta *m;
static struct tide_meta_principal admin;
static char why[256];

static const uint8_t key_a[32] = {0xa1, 0xa2, 0xa3, 0xa4, 5, 6, 7, 8};
static const uint8_t key_b[32] = {0xb1, 0xb2, 0xb3, 0xb4, 5, 6, 7, 8};

/* Personal values with shapes no other byte of the file has. */
#define EMAIL "crypto.owner-5a1f@example.com"
#define FIRST "Firstname7c2e"
#define SURNAME "Surname9d41"
#define ORG "Organisation-3b8a Ltd"
#define THING "thing-name-e6f0c2"
#define FRIENDLY "Friendly Pump 44d1"
#define MAC "0a:1b:2c:3d:4e:5f"
#define IP_LOGIN "203.0.113.77"
#define IP_DEVICE "198.51.100.23"
#define IP_KEY "192.0.2.201"
#define IP_REQ "192.0.2.177"

static const char *const secrets[] = {EMAIL,     FIRST,    SURNAME, ORG,
                                      THING,     FRIENDLY, MAC,     IP_LOGIN,
                                      IP_DEVICE, IP_KEY,   IP_REQ};
#define N_SECRETS (sizeof(secrets) / sizeof(secrets[0]))

#define CHECK(call)                                                            \
    do {                                                                       \
        int rc_ = (call);                                                      \
        cr_assert_eq(rc_, 0, "%s: %s", #call, tide_strerror(rc_));             \
    } while (0)
#define CHECK_RC(call, want)                                                   \
    do {                                                                       \
        int rc_ = (call);                                                      \
        cr_assert_eq(rc_, (want), "%s: got %s, want %s", #call,                \
                     tide_strerror(rc_), tide_strerror(want));                 \
    } while (0)

static int64_t test_clock(void *ctx)
{
    (void)ctx;
    return atomic_load(&fake_now);
}

/* Open with `key` (NULL: none); returns tide_meta_open's code. */
static int try_open(const uint8_t *key)
{
    struct tide_meta_options o;

    tide_meta_options_init(&o);
    o.bcrypt_cost = 4;
    o.flush_interval_ms = 0;
    o.clock = test_clock;
    o.master_key = key;
    o.why = why;
    o.why_len = sizeof(why);
    return tide_meta_open(dir, &o, &m);
}

static void reopen(const uint8_t *key)
{
    char path[PATH_MAX], secret[TIDE_META_SECRET_MAX + 2];
    FILE *f;

    tide_meta_close(m);
    m = NULL;
    CHECK(try_open(key));
    snprintf(path, sizeof(path), "%s/admin.key", dir);
    f = fopen(path, "r");
    cr_assert(f);
    cr_assert(fgets(secret, sizeof(secret), f));
    fclose(f);
    secret[strcspn(secret, "\n")] = '\0';
    CHECK(tide_meta_key_auth(m, secret, "127.0.0.1", &admin));
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "%s", test_tmpdir());
    atomic_store(&fake_now, T0);
    m = NULL;
    why[0] = '\0';
}

static void teardown(void)
{
    tide_meta_close(m);
    m = NULL;
    test_rmrf(dir);
}

TestSuite(meta_crypto, .init = setup, .fini = teardown, .timeout = 120);

static const struct tide_meta_principal anon = {0};

/* Does any of meta.db, -wal, -shm, -journal hold `n` bytes at `needle`? */
static int sidecar_holds(const void *needle, size_t n)
{
    static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};
    int found = 0;

    for (size_t i = 0; !found && i < 4; i++) {
        char path[PATH_MAX];
        FILE *f;
        long len;
        char *buf;

        snprintf(path, sizeof(path), "%s/meta.db%s", dir, suffix[i]);
        f = fopen(path, "rb");
        if (!f)
            continue;
        fseek(f, 0, SEEK_END);
        len = ftell(f);
        fseek(f, 0, SEEK_SET);
        buf = malloc(len > 0 ? (size_t)len : 1);
        cr_assert(buf);
        cr_assert_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
        fclose(f);
        found = memmem(buf, (size_t)len, needle, n) != NULL;
        free(buf);
    }
    return found;
}

static int sidecar_holds_text(const char *s)
{
    return sidecar_holds(s, strlen(s));
}

/* Every personal value of the fixture, written through the API. */
struct fixture {
    uint64_t acct, dev, key_id;
    struct tide_meta_principal owner;
};

static void fixture_make(struct fixture *fx)
{
    struct tide_meta_account_new a = {.email = EMAIL,
                                      .password = "correct horse",
                                      .first_name = FIRST,
                                      .surname = SURNAME,
                                      .organization = ORG};
    struct tide_meta_device_new d = {
        .thing_name = THING, .mac = MAC, .friendly_name = FRIENDLY};
    struct tide_meta_request r = {.ip = IP_REQ, .op = "write"};
    char token[TIDE_META_SECRET_MAX + 1], secret[TIDE_META_SECRET_MAX + 1];
    struct tide_meta_principal kp;

    CHECK(tide_meta_account_create(m, &anon, &a, &fx->acct, NULL));
    CHECK(tide_meta_login(m, EMAIL, "correct horse", IP_LOGIN, token,
                          &fx->owner));
    CHECK(tide_meta_device_register(m, &fx->owner, fx->acct, &d, &fx->dev));
    CHECK(tide_meta_device_connect(m, &fx->owner, fx->acct, fx->dev, 1,
                                   IP_DEVICE));
    /* The device-offline notification names the thing. */
    CHECK(tide_meta_device_connect(m, &fx->owner, fx->acct, fx->dev, 0, NULL));
    CHECK(tide_meta_key_create(m, &fx->owner, fx->acct, TIDE_META_ROLE_DEVICE,
                               fx->dev, "k", secret, &fx->key_id));
    CHECK(tide_meta_key_auth(m, secret, IP_KEY, &kp));
    r.account_id = fx->acct;
    r.key_id = fx->key_id;
    CHECK(tide_meta_request_log(m, &r));
    CHECK(tide_meta_flush(m));
}

/* Read every value of the fixture back through the API. */
static void fixture_check(const struct fixture *fx)
{
    struct tide_meta_account acc;
    struct tide_meta_device dev;
    struct tide_meta_auth_event ev[8];
    struct tide_meta_notification nt[8];
    struct tide_meta_key keys[4];
    struct tide_meta_principal p;
    char token[TIDE_META_SECRET_MAX + 1], want[64];
    size_t n;
    int found_login = 0, found_key = 0, found_note = 0;

    /* Login by email goes through the keyed hash index. */
    CHECK(tide_meta_login(m, "Crypto.Owner-5A1F@example.com", "correct horse",
                          IP_LOGIN, token, &p));
    cr_assert_eq(p.account_id, fx->acct);
    CHECK(tide_meta_account_get(m, &p, fx->acct, &acc));
    cr_assert_str_eq(acc.email, EMAIL);
    cr_assert_str_eq(acc.first_name, FIRST);
    cr_assert_str_eq(acc.surname, SURNAME);
    cr_assert_str_eq(acc.organization, ORG);
    CHECK(tide_meta_device_get(m, &p, fx->acct, fx->dev, &dev));
    cr_assert_str_eq(dev.thing_name, THING);
    cr_assert_str_eq(dev.mac, MAC);
    cr_assert_str_eq(dev.friendly_name, FRIENDLY);
    cr_assert_str_eq(dev.last_ip, IP_DEVICE);
    CHECK(tide_meta_authlog_read(m, &p, fx->acct, 0, ev, 8, &n));
    for (size_t i = 0; i < n; i++) {
        found_login |= !strcmp(ev[i].ip, IP_LOGIN);
        found_key |= !strcmp(ev[i].ip, IP_KEY);
    }
    cr_assert(found_login && found_key, "auth log IPs read back");
    CHECK(tide_meta_key_list(m, &p, fx->acct, 0, keys, 4, &n));
    cr_assert_eq(n, 1);
    cr_assert_str_eq(keys[0].last_ip, IP_KEY);
    CHECK(tide_meta_notify_list(m, &p, fx->acct, 0, nt, 8, &n));
    snprintf(want, sizeof(want), "device %s went offline", THING);
    for (size_t i = 0; i < n; i++)
        found_note |= !strcmp(nt[i].text, want);
    cr_assert(found_note, "the offline notification reads back");
}

static void assert_no_secret(void)
{
    for (size_t i = 0; i < N_SECRETS; i++)
        cr_assert(!sidecar_holds_text(secrets[i]), "%s found in meta.db*",
                  secrets[i]);
}

Test(meta_crypto, no_personal_value_in_plaintext_and_all_read_back)
{
    struct fixture fx;
    struct tide_meta_crypt_state cs;
    struct tide_meta_export *it;
    struct tide_meta_export_row row;
    int saw_email = 0, rc;

    CHECK(try_open(key_a));
    reopen(key_a);
    fixture_make(&fx);
    fixture_check(&fx);
    /* The export opens the sealed columns too. */
    CHECK(tide_meta_export_open(m, &admin, fx.acct, &it));
    while ((rc = tide_meta_export_next(it, &row)) == 0)
        saw_email |= strstr(row.json, "\"email\":\"" EMAIL "\"") != NULL;
    cr_assert_eq(rc, 1);
    tide_meta_export_close(it);
    cr_assert(saw_email, "export has the plaintext email");
    CHECK(tide_meta_crypt_state(m, 1, &cs));
    cr_assert(cs.enabled);
    cr_assert_eq(cs.data_keys, 2, "the system key and the account's");
    cr_assert_eq(cs.plaintext_rows, 0);
    tide_meta_close(m);
    m = NULL;
    assert_no_secret();
    reopen(key_a);
    fixture_check(&fx);
}

Test(meta_crypto, wrong_or_missing_master_key_is_refused)
{
    uint8_t id_a[8], id_b[8];
    char hex_a[17], hex_b[17];

    CHECK(try_open(key_a));
    tide_meta_close(m);
    m = NULL;
    CHECK_RC(try_open(key_b), TIDE_EKEY);
    cr_assert_null(m);
    CHECK(tide_crypto_key_id(key_a, id_a));
    CHECK(tide_crypto_key_id(key_b, id_b));
    for (int i = 0; i < 8; i++) {
        snprintf(hex_a + 2 * i, 3, "%02x", id_a[i]);
        snprintf(hex_b + 2 * i, 3, "%02x", id_b[i]);
    }
    cr_assert(strstr(why, hex_a) && strstr(why, hex_b),
              "names both key ids: %s", why);
    CHECK_RC(try_open(NULL), TIDE_EKEY);
    cr_assert(strstr(why, "encrypted") && strstr(why, "master_key_file"), "%s",
              why);
    CHECK(try_open(key_a));
}

Test(meta_crypto, plaintext_sidecar_is_encrypted_at_open)
{
    struct fixture fx;
    struct tide_meta_crypt_state cs;
    uint8_t k[32];

    CHECK(try_open(NULL));
    reopen(NULL);
    CHECK_RC(tide_meta_data_key(m, 0, k), TIDE_EKEY);
    fixture_make(&fx);
    CHECK(tide_meta_crypt_state(m, 1, &cs));
    cr_assert(!cs.enabled);
    cr_assert_eq(cs.data_keys, 0);
    cr_assert_gt(cs.plaintext_rows, 0);
    tide_meta_close(m);
    m = NULL;
    for (size_t i = 0; i < N_SECRETS; i++)
        cr_assert(sidecar_holds_text(secrets[i]), "%s in plaintext before",
                  secrets[i]);
    reopen(key_a);
    CHECK(tide_meta_crypt_state(m, 1, &cs));
    cr_assert(cs.enabled);
    cr_assert_eq(cs.plaintext_rows, 0);
    cr_assert_eq(cs.data_keys, 2);
    cr_assert_eq(cs.enabled_ns, T0);
    fixture_check(&fx);
    /* A second open with the key changes nothing. */
    reopen(key_a);
    fixture_check(&fx);
    tide_meta_close(m);
    m = NULL;
    assert_no_secret();
    reopen(key_a);
    /* New rows after the switch: sealed, unique by the hash. */
    {
        struct tide_meta_account_new a = {.email = EMAIL,
                                          .password = "correct horse"};
        uint64_t id;

        CHECK_RC(tide_meta_account_create(m, &admin, &a, &id, NULL),
                 TIDE_EEXIST);
    }
}

static void wrapped_key(uint64_t acct, uint8_t out[TIDE_WRAPPED_KEY_BYTES]);

Test(meta_crypto, rotation_rewraps_every_key)
{
    struct fixture fx;
    struct tide_meta_crypt_state cs;
    uint8_t before[32], after[32], sys_before[32], sys_after[32];
    uint8_t id_b[8], old_wrap[TIDE_WRAPPED_KEY_BYTES];

    CHECK(try_open(key_a));
    reopen(key_a);
    fixture_make(&fx);
    CHECK(tide_meta_data_key(m, fx.acct, before));
    CHECK(tide_meta_data_key(m, 0, sys_before));
    wrapped_key(fx.acct, old_wrap);
    CHECK_RC(tide_meta_rotate_master(m, &fx.owner, key_b), TIDE_EPERM);
    atomic_fetch_add(&fake_now, 1000);
    CHECK(tide_meta_rotate_master(m, &admin, key_b));
    CHECK(tide_meta_crypt_state(m, 0, &cs));
    CHECK(tide_crypto_key_id(key_b, id_b));
    cr_assert_arr_eq(cs.master_key_id, id_b, 8);
    cr_assert_eq(cs.rotated_ns, T0 + 1000);
    /* Keys made after the rotation are wrapped by the new master key. */
    {
        struct tide_meta_account_new a = {.email = "late@example.com",
                                          .password = "correct horse"};
        uint64_t id;

        CHECK(tide_meta_account_create(m, &admin, &a, &id, NULL));
    }
    tide_meta_close(m);
    m = NULL;
    cr_assert(!sidecar_holds(old_wrap, sizeof(old_wrap)),
              "the key wrapped by the old master key is gone");
    CHECK_RC(try_open(key_a), TIDE_EKEY);
    reopen(key_b);
    CHECK(tide_meta_data_key(m, fx.acct, after));
    CHECK(tide_meta_data_key(m, 0, sys_after));
    cr_assert_arr_eq(before, after, 32, "the data key itself is unchanged");
    cr_assert_arr_eq(sys_before, sys_after, 32);
    fixture_check(&fx);
    assert_no_secret();
}

/* The wrapped key of `acct` as stored, read under the sidecar's lock. */
static void wrapped_key(uint64_t acct, uint8_t out[TIDE_WRAPPED_KEY_BYTES])
{
    sqlite3_stmt *st;

    tide__meta_lock(m);
    cr_assert_eq(sqlite3_prepare_v2(m->db,
                                    "SELECT wrapped FROM data_keys"
                                    " WHERE account_id=?1",
                                    -1, &st, NULL),
                 SQLITE_OK);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)acct);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_bytes(st, 0), TIDE_WRAPPED_KEY_BYTES);
    memcpy(out, sqlite3_column_blob(st, 0), TIDE_WRAPPED_KEY_BYTES);
    sqlite3_finalize(st);
    tide__meta_unlock(m);
}

Test(meta_crypto, purge_destroys_the_data_key_first)
{
    struct fixture fx;
    struct tide_meta_key_report kr;
    struct tide_meta_prune_stats ps;
    struct tide_meta_account_new other = {.email = "kept@example.com",
                                          .password = "correct horse"};
    uint8_t wrapped[TIDE_WRAPPED_KEY_BYTES], k[32], sys[32];
    uint64_t kept;

    CHECK(try_open(key_a));
    reopen(key_a);
    fixture_make(&fx);
    CHECK(tide_meta_account_create(m, &anon, &other, &kept, NULL));
    wrapped_key(fx.acct, wrapped);
    CHECK(tide_meta_checkpoint(m));
    cr_assert(sidecar_holds(wrapped, sizeof(wrapped)));
    CHECK(tide_meta_key_report(m, &admin, fx.acct, &kr));
    cr_assert(kr.encrypted && kr.has_key && kr.key_destroyed_ns == 0);
    CHECK(tide_meta_account_delete(m, &fx.owner, fx.acct));
    /* Deleted but restorable: the key stays. */
    CHECK(tide_meta_data_key(m, fx.acct, k));
    atomic_fetch_add(&fake_now, 31 * DAY_NS);
    CHECK(tide_meta_prune(m, &admin, &ps));
    cr_assert_eq(ps.accounts, 1);
    CHECK_RC(tide_meta_data_key(m, fx.acct, k), TIDE_EKEY);
    CHECK(tide_meta_data_key(m, kept, k));
    CHECK(tide_meta_data_key(m, 0, sys));
    CHECK(tide_meta_key_report(m, &admin, fx.acct, &kr));
    cr_assert(!kr.has_key);
    cr_assert_eq(kr.key_destroyed_ns, T0 + 31 * DAY_NS);
    tide_meta_close(m);
    m = NULL;
    cr_assert(!sidecar_holds(wrapped, sizeof(wrapped)),
              "the wrapped key left a byte image");
    assert_no_secret();
    reopen(key_a);
    CHECK_RC(tide_meta_data_key(m, fx.acct, k), TIDE_EKEY);
    CHECK(tide_meta_data_key(m, kept, k));
}

Test(meta_crypto, immediate_purge_shreds_too)
{
    struct fixture fx;
    struct tide_meta_key_report kr;
    uint8_t wrapped[TIDE_WRAPPED_KEY_BYTES], k[32];

    CHECK(try_open(key_a));
    reopen(key_a);
    fixture_make(&fx);
    wrapped_key(fx.acct, wrapped);
    CHECK(tide_meta_account_delete(m, &fx.owner, fx.acct));
    CHECK(tide_meta_account_purge(m, &admin, fx.acct));
    CHECK_RC(tide_meta_data_key(m, fx.acct, k), TIDE_EKEY);
    CHECK(tide_meta_key_report(m, &admin, fx.acct, &kr));
    cr_assert(!kr.has_key && kr.key_destroyed_ns == T0);
    CHECK(tide_meta_checkpoint(m));
    cr_assert(!sidecar_holds(wrapped, sizeof(wrapped)));
    assert_no_secret();
}

Test(meta_crypto, tampered_value_is_an_error_never_wrong_text)
{
    struct fixture fx;
    struct tide_meta_account acc;

    CHECK(try_open(key_a));
    reopen(key_a);
    fixture_make(&fx);
    /* Move the owner's sealed first name into the surname: the aad names
     * the column, so it no longer opens. */
    tide__meta_lock(m);
    cr_assert_eq(sqlite3_exec(m->db, "UPDATE accounts SET surname=first_name",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    tide__meta_unlock(m);
    CHECK_RC(tide_meta_account_get(m, &fx.owner, fx.acct, &acc), TIDE_EIO);
}

struct reader {
    uint64_t acct;
    int fails;
};

static void *read_keys(void *arg)
{
    struct reader *r = arg;
    uint8_t k[32];

    for (int i = 0; i < 20000; i++)
        r->fails += tide_meta_data_key(m, i & 1 ? r->acct : 0, k) != 0;
    return NULL;
}

Test(meta_crypto, data_key_from_many_threads)
{
    struct fixture fx;
    struct reader r[4];
    pthread_t t[4];

    CHECK(try_open(key_a));
    reopen(key_a);
    fixture_make(&fx);
    for (int i = 0; i < 4; i++) {
        r[i].acct = fx.acct;
        r[i].fails = 0;
        cr_assert_eq(pthread_create(&t[i], NULL, read_keys, &r[i]), 0);
    }
    /* Accounts made meanwhile grow the cache under the readers. */
    for (int i = 0; i < 100; i++) {
        char email[64];
        struct tide_meta_account_new a = {.email = email,
                                          .password = "correct horse"};
        uint64_t id;

        snprintf(email, sizeof(email), "many-%d@example.com", i);
        CHECK(tide_meta_account_create(m, &admin, &a, &id, NULL));
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(r[i].fails, 0);
    }
}

Test(meta_crypto, client_certificate_authenticates_a_device_key)
{
    struct fixture fx;
    struct tide_meta_principal p;
    struct tide_meta_key keys[4];
    struct tide_meta_auth_event ev[16];
    uint8_t fp[32], fp2[32];
    char secret[TIDE_META_SECRET_MAX + 1];
    uint64_t analyst, dev_key2;
    size_t n;
    int logged = 0;

    memset(fp, 0x5c, sizeof(fp));
    memset(fp2, 0x3a, sizeof(fp2));
    CHECK(try_open(key_a));
    reopen(key_a);
    fixture_make(&fx);
    CHECK_RC(tide_meta_cert_auth(m, fp, "10.9.9.9", &p), TIDE_EAUTH);
    CHECK(tide_meta_key_set_cert(m, &fx.owner, fx.acct, fx.key_id, fp));
    CHECK(tide_meta_cert_auth(m, fp, "10.9.9.9", &p));
    cr_assert_eq(p.role, TIDE_META_ROLE_DEVICE);
    cr_assert_eq(p.account_id, fx.acct);
    cr_assert_eq(p.device_id, fx.dev);
    cr_assert_eq(p.key_id, fx.key_id);
    CHECK(tide_meta_authorize(m, &p, TIDE_META_ACT_TELEMETRY_WRITE, fx.acct,
                              fx.dev));
    CHECK_RC(tide_meta_cert_auth(m, fp2, "10.9.9.9", &p), TIDE_EAUTH);
    CHECK(tide_meta_key_list(m, &fx.owner, fx.acct, 0, keys, 4, &n));
    cr_assert(n == 1 && keys[0].has_cert);
    /* Only device keys; one key per certificate; the owner's only. */
    CHECK(tide_meta_key_create(m, &fx.owner, fx.acct, TIDE_META_ROLE_ANALYST, 0,
                               "a", secret, &analyst));
    CHECK_RC(tide_meta_key_set_cert(m, &fx.owner, fx.acct, analyst, fp2),
             TIDE_EINVAL);
    CHECK(tide_meta_key_create(m, &fx.owner, fx.acct, TIDE_META_ROLE_DEVICE,
                               fx.dev, "d2", secret, &dev_key2));
    CHECK_RC(tide_meta_key_set_cert(m, &fx.owner, fx.acct, dev_key2, fp),
             TIDE_EEXIST);
    CHECK_RC(tide_meta_key_set_cert(m, &anon, fx.acct, dev_key2, fp2),
             TIDE_EPERM);
    CHECK_RC(tide_meta_key_set_cert(m, &fx.owner, fx.acct, 999, fp2),
             TIDE_ENOTFOUND);
    /* Paused device: authenticates, but may not write. */
    CHECK(tide_meta_device_pause(m, &fx.owner, fx.acct, fx.dev, 1));
    CHECK(tide_meta_cert_auth(m, fp, "10.9.9.9", &p));
    CHECK_RC(tide_meta_authorize(m, &p, TIDE_META_ACT_TELEMETRY_WRITE, fx.acct,
                                 fx.dev),
             TIDE_EPAUSED);
    /* Revoked: refused, and the principal from before stops working. */
    CHECK(tide_meta_key_revoke(m, &fx.owner, fx.acct, fx.key_id));
    CHECK_RC(tide_meta_cert_auth(m, fp, "10.9.9.9", &p), TIDE_EAUTH);
    CHECK_RC(tide_meta_authorize(m, &p, TIDE_META_ACT_TELEMETRY_WRITE, fx.acct,
                                 fx.dev),
             TIDE_EAUTH);
    CHECK(tide_meta_authlog_read(m, &fx.owner, fx.acct, 0, ev, 16, &n));
    for (size_t i = 0; i < n; i++)
        logged |= ev[i].kind == TIDE_META_AUTH_CERT && !ev[i].ok &&
                  !strcmp(ev[i].reason, "revoked") &&
                  !strcmp(ev[i].ip, "10.9.9.9");
    cr_assert(logged, "the refused certificate is in the auth log");
    /* Removing it: the other key may take the certificate. */
    CHECK(tide_meta_key_set_cert(m, &fx.owner, fx.acct, fx.key_id, NULL));
    CHECK(tide_meta_key_set_cert(m, &fx.owner, fx.acct, dev_key2, fp));
    CHECK(tide_meta_cert_auth(m, fp, NULL, &p));
    cr_assert_eq(p.key_id, dev_key2);
}

Test(meta_crypto, cert_auth_without_encryption)
{
    struct fixture fx;
    struct tide_meta_principal p;
    uint8_t fp[32];

    memset(fp, 0x77, sizeof(fp));
    CHECK(try_open(NULL));
    reopen(NULL);
    fixture_make(&fx);
    CHECK(tide_meta_key_set_cert(m, &fx.owner, fx.acct, fx.key_id, fp));
    CHECK(tide_meta_cert_auth(m, fp, "10.0.0.9", &p));
    cr_assert_eq(p.key_id, fx.key_id);
    CHECK(tide_meta_account_delete(m, &fx.owner, fx.acct));
    CHECK_RC(tide_meta_cert_auth(m, fp, "10.0.0.9", &p), TIDE_EAUTH);
}

/* Run `sql` on meta.db directly, the sidecar closed. */
static void raw_sql(const char *sql)
{
    char path[PATH_MAX];
    sqlite3 *db;

    snprintf(path, sizeof(path), "%s/meta.db", dir);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s: %s",
                 sql, sqlite3_errmsg(db));
    sqlite3_close(db);
}

Test(meta_crypto, turning_encryption_on_is_all_or_nothing)
{
    struct fixture fx;
    struct tide_meta_crypt_state cs;

    CHECK(try_open(NULL));
    reopen(NULL);
    fixture_make(&fx);
    tide_meta_close(m);
    m = NULL;
    /* A value too long to seal, in the last table the step visits: the
     * step fails after sealing every other table. */
    raw_sql("INSERT INTO notifications(account_id, ts_ns, kind, text)"
            " VALUES(1, 1, 3, printf('%.5000c', 'x'))");
    cr_assert_neq(try_open(key_a), 0);
    cr_assert_null(m);
    for (size_t i = 0; i < N_SECRETS; i++)
        cr_assert(sidecar_holds_text(secrets[i]),
                  "%s: rolled back, still in plaintext", secrets[i]);
    /* Still a plaintext sidecar: it opens without a key, as before. */
    reopen(NULL);
    CHECK(tide_meta_crypt_state(m, 1, &cs));
    cr_assert(!cs.enabled && cs.data_keys == 0 && cs.enabled_ns == 0);
    fixture_check(&fx);
    tide_meta_close(m);
    m = NULL;
    raw_sql("DELETE FROM notifications WHERE length(text)>4096");
    reopen(key_a);
    fixture_check(&fx);
    tide_meta_close(m);
    m = NULL;
    assert_no_secret();
}
