/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of the accounts sidecar (meta/): schema and migrations,
 * credentials, every role boundary, accounts, devices, keys, the series
 * registry, counters, logs and their retention, export, bad input and
 * concurrent use. bcrypt runs at cost 4 except where the cost is the test.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tide/meta.h"
#include "meta_int.h"
#include "testutil.h"

#define DAY_NS 86400000000000ll
#define T0 1700000000000000000ll

static char dir[1024];
static _Atomic int64_t fake_now;
static tide_meta *m;
static struct tide_meta_principal admin;

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

/* TIDE_TEST_META_KEY=1 in the environment runs every test of this suite
 * on an encrypted sidecar (a fixed master key): what each one checks must
 * hold either way. */
static const uint8_t env_master[32] = {0x54, 0x69, 0x64, 0x65, 1, 2, 3, 4};

static void opts_fill(struct tide_meta_options *o)
{
    const char *e = getenv("TIDE_TEST_META_KEY");

    tide_meta_options_init(o);
    o->bcrypt_cost = 4;
    o->flush_interval_ms = 0;
    o->clock = test_clock;
    if (e && *e && strcmp(e, "0"))
        o->master_key = env_master;
}

/* The suite runs on an encrypted sidecar (TIDE_TEST_META_KEY). */
static int env_encrypted(void)
{
    const char *e = getenv("TIDE_TEST_META_KEY");

    return e && *e && strcmp(e, "0");
}

static void read_admin_key(char *out)
{
    char path[PATH_MAX];
    FILE *f;

    snprintf(path, sizeof(path), "%s/admin.key", dir);
    f = fopen(path, "r");
    cr_assert(f, "admin.key missing");
    cr_assert(fgets(out, TIDE_META_SECRET_MAX + 2, f));
    fclose(f);
    out[strcspn(out, "\n")] = '\0';
}

static void open_meta(void)
{
    struct tide_meta_options o;
    char key[TIDE_META_SECRET_MAX + 2];

    opts_fill(&o);
    CHECK(tide_meta_open(dir, &o, &m));
    read_admin_key(key);
    CHECK(tide_meta_key_auth(m, key, "127.0.0.1", &admin));
    cr_assert_eq(admin.role, TIDE_META_ROLE_ADMIN);
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "%s", test_tmpdir());
    atomic_store(&fake_now, T0);
    open_meta();
}

static void teardown(void)
{
    tide_meta_close(m);
    m = NULL;
    test_rmrf(dir);
}

TestSuite(meta, .init = setup, .fini = teardown, .timeout = 120);

static const struct tide_meta_principal anon = {0};

/* Create an account and log in; returns its id and owner principal. */
static uint64_t new_owner(const char *email, struct tide_meta_principal *p)
{
    struct tide_meta_account_new a = {.email = email,
                                      .password = "correct horse"};
    char token[TIDE_META_SECRET_MAX + 1];
    uint64_t id;

    CHECK(tide_meta_account_create(m, &anon, &a, &id, NULL));
    CHECK(tide_meta_login(m, email, "correct horse", "10.0.0.1", token, p));
    cr_assert_eq(p->account_id, id);
    return id;
}

static uint64_t new_device(const struct tide_meta_principal *p, uint64_t acct,
                           const char *name)
{
    struct tide_meta_device_new d = {.thing_name = name};
    uint64_t id;

    CHECK(tide_meta_device_register(m, p, acct, &d, &id));
    return id;
}

static struct tide_meta_principal
key_principal(const struct tide_meta_principal *owner, uint64_t acct,
              enum tide_meta_role role, uint64_t dev)
{
    char secret[TIDE_META_SECRET_MAX + 1];
    struct tide_meta_principal p;

    CHECK(tide_meta_key_create(m, owner, acct, role, dev, "k", secret, NULL));
    CHECK(tide_meta_key_auth(m, secret, "10.0.0.2", &p));
    return p;
}

/* ---- Schema and migrations ---------------------------------------------- */

Test(meta, fresh_file_schema_and_admin_key)
{
    char path[PATH_MAX], key[TIDE_META_SECRET_MAX + 2], again[80];
    struct stat st;

    cr_assert_eq(tide_meta_schema_version(m), TIDE__META_SCHEMA_VERSION);
    snprintf(path, sizeof(path), "%s/admin.key", dir);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    read_admin_key(key);
    cr_assert_eq(strncmp(key, "tide_admin_", 11), 0);
    cr_assert_eq(strlen(key), 11 + 48);
    /* Reopening keeps the same key: no second bootstrap. */
    tide_meta_close(m);
    open_meta();
    read_admin_key(again);
    cr_assert_str_eq(key, again);
}

Test(meta, migrate_from_every_earlier_version)
{
    for (int from = 0; from < TIDE__META_SCHEMA_VERSION; from++) {
        char sub[1200], path[PATH_MAX];
        struct tide_meta_options o;
        tide_meta *m2;
        sqlite3 *db;
        int v;

        snprintf(sub, sizeof(sub), "%s/v%d", dir, from);
        cr_assert_eq(mkdir(sub, 0700), 0);
        snprintf(path, sizeof(path), "%s/meta.db", sub);
        cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
        CHECK(tide__meta_migrate(db, from, &v));
        cr_assert_eq(v, from);
        if (from >= 1)
            cr_assert_eq(sqlite3_exec(db,
                                      "INSERT INTO accounts(email, pw_hash,"
                                      " tier, created_ns, updated_ns)"
                                      " VALUES('old@example.com', 'x', 1, 1,"
                                      " 1)",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
        sqlite3_close(db);
        opts_fill(&o);
        CHECK(tide_meta_open(sub, &o, &m2));
        cr_assert_eq(tide_meta_schema_version(m2), TIDE__META_SCHEMA_VERSION);
        if (from >= 1) {
            struct tide_meta_account a;

            CHECK(tide_meta_account_get(m2, &admin, 1, &a));
            cr_assert_str_eq(a.email, "old@example.com");
        }
        tide_meta_close(m2);
    }
}

Test(meta, newer_schema_refused)
{
    char path[PATH_MAX];
    struct tide_meta_options o;
    tide_meta *m2 = NULL;
    sqlite3 *db;

    tide_meta_close(m);
    m = NULL;
    snprintf(path, sizeof(path), "%s/meta.db", dir);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "UPDATE schema_version SET version=99", NULL,
                              NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(db);
    opts_fill(&o);
    CHECK_RC(tide_meta_open(dir, &o, &m2), TIDE_EVERSION);
    cr_assert_null(m2);
}

Test(meta, not_a_database_refused)
{
    char sub[1200], path[PATH_MAX];
    struct tide_meta_options o;
    tide_meta *m2 = NULL;
    int fd;

    snprintf(sub, sizeof(sub), "%s/junk", dir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    snprintf(path, sizeof(path), "%s/meta.db", sub);
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    for (int i = 0; i < 64; i++)
        cr_assert_eq(write(fd, "garbage garbage garbage garbage!", 32), 32);
    close(fd);
    opts_fill(&o);
    CHECK_RC(tide_meta_open(sub, &o, &m2), TIDE_ECORRUPT);
    o.bcrypt_cost = 3;
    CHECK_RC(tide_meta_open(dir, &o, &m2), TIDE_EINVAL);
}

/* ---- Accounts and credentials ------------------------------------------- */

Test(meta, account_lifecycle)
{
    struct tide_meta_account_new a = {.email = "Alice@Example.COM",
                                      .password = "s3cret-pass",
                                      .first_name = "Alice",
                                      .surname = "Liddell",
                                      .organization = "Wonder Ltd",
                                      .timezone = "Europe/Paris"};
    char vtok[TIDE_META_SECRET_MAX + 1], token[TIDE_META_SECRET_MAX + 1];
    struct tide_meta_principal p, s;
    struct tide_meta_account acc;
    struct tide_meta_profile pr = {.surname = "Pleasance",
                                   .timezone = "America/New_York"};
    uint64_t id;

    CHECK(tide_meta_account_create(m, &anon, &a, &id, vtok));
    cr_assert_eq(strncmp(vtok, "tide_vrfy_", 10), 0);
    CHECK(tide_meta_login(m, "alice@example.com", "s3cret-pass", "1.2.3.4",
                          token, &p));
    cr_assert_eq(strncmp(token, "tide_sess_", 10), 0);
    cr_assert_eq(p.role, TIDE_META_ROLE_OWNER);
    CHECK(tide_meta_session_auth(m, token, "1.2.3.4", &s));
    cr_assert_eq(s.account_id, id);
    CHECK(tide_meta_account_get(m, &s, id, &acc));
    cr_assert_str_eq(acc.email, "alice@example.com");
    cr_assert_str_eq(acc.timezone, "Europe/Paris");
    cr_assert_eq(acc.email_verified, 0);
    cr_assert_eq(acc.tier, 1);
    cr_assert_eq(acc.created_ns, T0);

    CHECK(tide_meta_account_verify_email(m, vtok));
    CHECK_RC(tide_meta_account_verify_email(m, vtok), TIDE_EAUTH);
    atomic_fetch_add(&fake_now, 1000);
    CHECK(tide_meta_account_update(m, &s, id, &pr));
    CHECK(tide_meta_account_get(m, &s, id, &acc));
    cr_assert_eq(acc.email_verified, 1);
    cr_assert_str_eq(acc.surname, "Pleasance");
    cr_assert_str_eq(acc.first_name, "Alice");
    cr_assert_str_eq(acc.timezone, "America/New_York");
    cr_assert_eq(acc.updated_ns, T0 + 1000);

    CHECK(tide_meta_account_set_tier(m, &admin, id, 2, "active", "cus_123",
                                     "2024-01"));
    CHECK_RC(tide_meta_account_set_tier(m, &s, id, 2, NULL, NULL, NULL),
             TIDE_EPERM);
    CHECK_RC(tide_meta_account_set_tier(m, &admin, id, 77, NULL, NULL, NULL),
             TIDE_ENOTFOUND);
    CHECK(tide_meta_account_get(m, &s, id, &acc));
    cr_assert_eq(acc.tier, 2);
    cr_assert_str_eq(acc.billing_customer_id, "cus_123");

    /* A password change ends the sessions. */
    CHECK(tide_meta_account_set_password(m, &s, id, "another-pass"));
    CHECK_RC(tide_meta_session_auth(m, token, NULL, &s), TIDE_EAUTH);
    CHECK_RC(
        tide_meta_login(m, "alice@example.com", "s3cret-pass", NULL, token, &p),
        TIDE_EAUTH);
    CHECK(tide_meta_login(m, "alice@example.com", "another-pass", NULL, token,
                          &p));
    CHECK(tide_meta_logout(m, &p));
    CHECK_RC(tide_meta_account_get(m, &p, id, &acc), TIDE_EAUTH);
}

Test(meta, duplicate_and_malformed_emails)
{
    static const char *bad[] = {
        "",
        "plain",
        "@example.com",
        "a@",
        "a@b",
        "a@@b.com",
        "a@b..com",
        ".a@b.com",
        "a.@b.com",
        "a..b@c.com",
        "a b@c.com",
        "a@-b.com",
        "a@b-.com",
        "a@b.c0m",
        "a@b.c",
        "\"q\"@b.com",
        "a@[1.2.3.4]",
        "a@b.com\n",
        "é@b.com",
        NULL,
    };
    struct tide_meta_account_new a = {.password = "password1"};
    char longer[300];
    uint64_t id;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        a.email = bad[i];
        CHECK_RC(tide_meta_account_create(m, &anon, &a, &id, NULL),
                 TIDE_EINVAL);
    }
    memset(longer, 'a', sizeof(longer));
    memcpy(longer + 250, "@b.com", 7);
    a.email = longer;
    CHECK_RC(tide_meta_account_create(m, &anon, &a, &id, NULL), TIDE_EINVAL);
    a.email = "bob@example.com";
    CHECK(tide_meta_account_create(m, &anon, &a, &id, NULL));
    CHECK_RC(tide_meta_account_create(m, &anon, &a, &id, NULL), TIDE_EEXIST);
    a.email = "BOB@Example.Com";
    CHECK_RC(tide_meta_account_create(m, &anon, &a, &id, NULL), TIDE_EEXIST);
    /* Other malformed fields. */
    a.email = "carol@example.com";
    a.password = "short";
    CHECK_RC(tide_meta_account_create(m, &anon, &a, &id, NULL), TIDE_EINVAL);
    a.password = "password1";
    a.timezone = "Mars/Olympus";
    CHECK_RC(tide_meta_account_create(m, &anon, &a, &id, NULL), TIDE_EINVAL);
    a.timezone = "../../../etc/passwd";
    CHECK_RC(tide_meta_account_create(m, &anon, &a, &id, NULL), TIDE_EINVAL);
    a.timezone = "/etc/passwd";
    CHECK_RC(tide_meta_account_create(m, &anon, &a, &id, NULL), TIDE_EINVAL);
    a.timezone = "Europe";
    CHECK_RC(tide_meta_account_create(m, &anon, &a, &id, NULL), TIDE_EINVAL);
    a.timezone = "Asia/Tokyo";
    a.first_name = "bad\x01name";
    CHECK_RC(tide_meta_account_create(m, &anon, &a, &id, NULL), TIDE_EINVAL);
    a.first_name = "bad\xc3name";
    CHECK_RC(tide_meta_account_create(m, &anon, &a, &id, NULL), TIDE_EINVAL);
    a.first_name = "Zoë";
    CHECK(tide_meta_account_create(m, &anon, &a, &id, NULL));
}

Test(meta, wrong_password_is_logged)
{
    struct tide_meta_principal p, q;
    struct tide_meta_auth_event ev[8];
    struct tide_meta_notification nt[8];
    char token[TIDE_META_SECRET_MAX + 1];
    size_t n;
    uint64_t id = new_owner("dave@example.com", &p);

    for (int i = 0; i < 5; i++)
        CHECK_RC(tide_meta_login(m, "dave@example.com", "wrong-password",
                                 "6.6.6.6", token, &q),
                 TIDE_EAUTH);
    CHECK_RC(tide_meta_login(m, "nobody@example.com", "whatever-pw", "6.6.6.6",
                             token, &q),
             TIDE_EAUTH);
    CHECK(tide_meta_authlog_read(m, &p, id, 0, ev, 8, &n));
    cr_assert_eq(n, 6);
    cr_assert_eq(ev[0].ok, 0);
    cr_assert_str_eq(ev[0].reason, "bad_password");
    cr_assert_str_eq(ev[0].ip, "6.6.6.6");
    cr_assert_eq(ev[0].kind, TIDE_META_AUTH_PASSWORD);
    cr_assert_eq(ev[5].ok, 1);
    cr_assert_str_eq(ev[5].ip, "10.0.0.1");
    /* Security notifications: first login from 10.0.0.1, then 5 fails. */
    CHECK(tide_meta_notify_list(m, &p, id, 0, nt, 8, &n));
    cr_assert_eq(n, 2);
    cr_assert_eq(nt[0].kind, TIDE_META_NOTIFY_SECURITY);
    cr_assert(strstr(nt[0].text, "failed"));
    cr_assert(strstr(nt[1].text, "10.0.0.1"));
    CHECK(tide_meta_notify_mark_read(m, &p, id, nt[0].id));
    CHECK(tide_meta_notify_list(m, &p, id, 0, nt, 8, &n));
    cr_assert_eq(nt[0].read, 1);
}

Test(meta, revoked_key_and_expired_session_refused)
{
    struct tide_meta_principal p, k, s;
    struct tide_meta_key keys[4];
    char secret[TIDE_META_SECRET_MAX + 1], token[TIDE_META_SECRET_MAX + 1];
    uint64_t kid, id = new_owner("erin@example.com", &p);
    size_t n;

    CHECK(tide_meta_key_create(m, &p, id, TIDE_META_ROLE_ANALYST, 0,
                               "dashboards", secret, &kid));
    cr_assert_eq(strncmp(secret, "tide_live_", 10), 0);
    CHECK(tide_meta_key_auth(m, secret, "9.9.9.9", &k));
    CHECK(tide_meta_key_auth(m, secret, "9.9.9.8", &k));
    cr_assert_eq(k.role, TIDE_META_ROLE_ANALYST);
    cr_assert_eq(k.key_id, kid);
    CHECK(tide_meta_key_list(m, &p, id, 0, keys, 4, &n));
    cr_assert_eq(n, 1);
    cr_assert_eq(keys[0].requests, 2);
    cr_assert_str_eq(keys[0].last_ip, "9.9.9.8");
    cr_assert_eq(keys[0].last_used_ns, T0);
    cr_assert_eq(strncmp(keys[0].prefix, secret, 18), 0);
    cr_assert_eq(strlen(keys[0].prefix), 18);
    CHECK(tide_meta_key_revoke(m, &p, id, kid));
    CHECK_RC(tide_meta_key_auth(m, secret, NULL, &k), TIDE_EAUTH);
    /* A principal from before the revocation is refused too. */
    CHECK_RC(tide_meta_authorize(m, &k, TIDE_META_ACT_TELEMETRY_READ, id, 0),
             TIDE_EAUTH);
    CHECK_RC(tide_meta_key_revoke(m, &p, id, kid), TIDE_ENOTFOUND);
    /* Malformed and unknown keys. */
    CHECK_RC(tide_meta_key_auth(m, "tide_live_zz", NULL, &k), TIDE_EAUTH);
    secret[20] = secret[20] == 'a' ? 'b' : 'a';
    CHECK_RC(tide_meta_key_auth(m, secret, NULL, &k), TIDE_EAUTH);

    CHECK(tide_meta_login(m, "erin@example.com", "correct horse", NULL, token,
                          &s));
    atomic_fetch_add(&fake_now, 24 * 3600 * 1000000000ll);
    CHECK_RC(tide_meta_session_auth(m, token, NULL, &k), TIDE_EAUTH);
    CHECK_RC(tide_meta_authorize(m, &s, TIDE_META_ACT_ACCOUNT_READ, id, 0),
             TIDE_EAUTH);
}

Test(meta, bcrypt_cost_is_honoured)
{
    struct tide_meta_options o;
    char path[PATH_MAX];
    tide_meta *m2;
    sqlite3 *db;
    sqlite3_stmt *st;
    uint64_t id;
    struct tide_meta_account_new a = {.email = "cost@example.com",
                                      .password = "password1"};

    tide_meta_options_init(&o);
    cr_assert_eq(o.bcrypt_cost, 12);
    tide_meta_close(m);
    m = NULL;
    opts_fill(&o);
    o.bcrypt_cost = 7;
    CHECK(tide_meta_open(dir, &o, &m2));
    CHECK(tide_meta_account_create(m2, &anon, &a, &id, NULL));
    tide_meta_close(m2);
    snprintf(path, sizeof(path), "%s/meta.db", dir);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(
        sqlite3_prepare_v2(db, "SELECT pw_hash FROM accounts", -1, &st, NULL),
        SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_eq(
        strncmp((const char *)sqlite3_column_text(st, 0), "$2b$07$", 7), 0,
        "%s", sqlite3_column_text(st, 0));
    cr_assert_eq(strlen((const char *)sqlite3_column_text(st, 0)), 60);
    sqlite3_finalize(st);
    sqlite3_close(db);
    open_meta();
}

/* ---- Roles -------------------------------------------------------------- */

Test(meta, no_role_crosses_accounts)
{
    struct tide_meta_principal pa, pb, an, dv, dv2;
    struct tide_meta_device_new dn = {.thing_name = "x"};
    struct tide_meta_account acc;
    struct tide_meta_device devs[4];
    struct tide_meta_key keys[4];
    struct tide_meta_usage us[4];
    struct tide_meta_auth_event ev[4];
    struct tide_meta_notification nt[4];
    struct tide_meta_profile pr = {.first_name = "Mallory"};
    char secret[TIDE_META_SECRET_MAX + 1];
    tide_meta_export *it = NULL;
    uint64_t a = new_owner("a@example.com", &pa);
    uint64_t b = new_owner("b@example.com", &pb);
    uint64_t da = new_device(&pa, a, "dev-a");
    uint64_t da2 = new_device(&pa, a, "dev-a2");
    uint64_t db = new_device(&pb, b, "dev-b");
    struct tide_meta_series_key k = {b, db, "temp", 4, TIDE_TYPE_F64};
    uint64_t sid, kid;
    size_t n;

    an = key_principal(&pa, a, TIDE_META_ROLE_ANALYST, 0);
    dv = key_principal(&pa, a, TIDE_META_ROLE_DEVICE, da);
    dv2 = key_principal(&pb, b, TIDE_META_ROLE_DEVICE, db);
    CHECK(tide_meta_key_create(m, &pb, b, TIDE_META_ROLE_ANALYST, 0, "b",
                               secret, &kid));

    const struct tide_meta_principal *as_a[] = {&pa, &an, &dv};
    for (size_t i = 0; i < 3; i++) {
        const struct tide_meta_principal *p = as_a[i];

        CHECK_RC(tide_meta_account_get(m, p, b, &acc), TIDE_EPERM);
        CHECK_RC(tide_meta_account_update(m, p, b, &pr), TIDE_EPERM);
        CHECK_RC(tide_meta_account_set_password(m, p, b, "password99"),
                 TIDE_EPERM);
        CHECK_RC(tide_meta_account_pause(m, p, b, 1), TIDE_EPERM);
        CHECK_RC(tide_meta_account_delete(m, p, b), TIDE_EPERM);
        CHECK_RC(tide_meta_device_register(m, p, b, &dn, &sid), TIDE_EPERM);
        CHECK_RC(tide_meta_device_update(m, p, b, db, &dn), TIDE_EPERM);
        CHECK_RC(tide_meta_device_get(m, p, b, db, &devs[0]), TIDE_EPERM);
        CHECK_RC(tide_meta_device_list(m, p, b, 0, devs, 4, &n), TIDE_EPERM);
        CHECK_RC(tide_meta_device_pause(m, p, b, db, 1), TIDE_EPERM);
        CHECK_RC(tide_meta_device_delete(m, p, b, db), TIDE_EPERM);
        CHECK_RC(tide_meta_device_connect(m, p, b, db, 1, NULL), TIDE_EPERM);
        CHECK_RC(tide_meta_key_create(m, p, b, TIDE_META_ROLE_ANALYST, 0, "x",
                                      secret, NULL),
                 TIDE_EPERM);
        CHECK_RC(tide_meta_key_list(m, p, b, 0, keys, 4, &n), TIDE_EPERM);
        CHECK_RC(tide_meta_key_revoke(m, p, b, kid), TIDE_EPERM);
        CHECK_RC(tide_meta_usage_read(m, p, b, 0, 1 << 30, us, 4, &n),
                 TIDE_EPERM);
        CHECK_RC(tide_meta_authlog_read(m, p, b, 0, ev, 4, &n), TIDE_EPERM);
        CHECK_RC(tide_meta_notify_list(m, p, b, 0, nt, 4, &n), TIDE_EPERM);
        CHECK_RC(tide_meta_notify_mark_read(m, p, b, 1), TIDE_EPERM);
        CHECK_RC(tide_meta_notify_prefs(m, p, b, 0, 0, 0), TIDE_EPERM);
        CHECK_RC(tide_meta_series_ensure(m, p, &k, 1, &sid, NULL), TIDE_EPERM);
        CHECK_RC(tide_meta_export_open(m, p, b, &it), TIDE_EPERM);
        CHECK_RC(tide_meta_prune(m, p, NULL), TIDE_EPERM);
        CHECK_RC(tide_meta_account_set_tier(m, p, a, 2, NULL, NULL, NULL),
                 TIDE_EPERM);
        /* Another account's device under one's own account id. */
        CHECK_RC(
            tide_meta_authorize(m, p, TIDE_META_ACT_TELEMETRY_WRITE, a, db),
            i == 0 ? TIDE_ENOTFOUND : TIDE_EPERM);
    }
    cr_assert_null(it);
    /* Analyst: read-only within its account. */
    CHECK(tide_meta_device_list(m, &an, a, 0, devs, 4, &n));
    cr_assert_eq(n, 2);
    CHECK(tide_meta_usage_read(m, &an, a, 0, 1 << 30, us, 4, &n));
    CHECK_RC(tide_meta_device_register(m, &an, a, &dn, &sid), TIDE_EPERM);
    CHECK_RC(tide_meta_key_list(m, &an, a, 0, keys, 4, &n), TIDE_EPERM);
    CHECK_RC(tide_meta_account_get(m, &an, a, &acc), TIDE_EPERM);
    CHECK_RC(tide_meta_authlog_read(m, &an, a, 0, ev, 4, &n), TIDE_EPERM);
    k.account_id = a;
    k.device_id = da;
    CHECK_RC(tide_meta_series_ensure(m, &an, &k, 1, &sid, NULL), TIDE_EPERM);
    /* Device key: only its own device, only writes. */
    CHECK(tide_meta_series_ensure(m, &dv, &k, 1, &sid, NULL));
    CHECK(tide_meta_device_connect(m, &dv, a, da, 1, "10.1.1.1"));
    k.device_id = da2;
    CHECK_RC(tide_meta_series_ensure(m, &dv, &k, 1, &sid, NULL), TIDE_EPERM);
    CHECK_RC(tide_meta_device_connect(m, &dv, a, da2, 1, NULL), TIDE_EPERM);
    CHECK_RC(tide_meta_device_list(m, &dv, a, 0, devs, 4, &n), TIDE_EPERM);
    CHECK_RC(tide_meta_usage_read(m, &dv, a, 0, 1, us, 4, &n), TIDE_EPERM);
    CHECK_RC(tide_meta_authorize(m, &dv2, TIDE_META_ACT_TELEMETRY_WRITE, a, da),
             TIDE_EPERM);
    /* Anonymous may only sign up. */
    CHECK_RC(tide_meta_account_get(m, &anon, a, &acc), TIDE_EPERM);
    CHECK_RC(tide_meta_device_list(m, &anon, a, 0, devs, 4, &n), TIDE_EPERM);
    /* A forged principal without a credential is refused. */
    struct tide_meta_principal forged = {.role = TIDE_META_ROLE_OWNER,
                                         .account_id = b};
    CHECK_RC(tide_meta_account_get(m, &forged, b, &acc), TIDE_EAUTH);
    /* Admin reaches every account. */
    CHECK(tide_meta_account_get(m, &admin, b, &acc));
    CHECK(tide_meta_device_list(m, &admin, b, 0, devs, 4, &n));
    cr_assert_eq(n, 1);
    /* Only the operator manages tiers. */
    struct tide_meta_tier t = {.id = 3, .name = "pro", .ttl_s = 365 * 86400};
    CHECK_RC(tide_meta_tier_set(m, &pa, &t), TIDE_EPERM);
    CHECK(tide_meta_tier_set(m, &admin, &t));
    CHECK(tide_meta_tier_get(m, 3, &t));
    cr_assert_str_eq(t.name, "pro");
    CHECK(tide_meta_tier_get(m, 1, &t));
    cr_assert_str_eq(t.name, "free");
    cr_assert_eq(t.ttl_s, 7 * 86400);
    CHECK(tide_meta_tier_get(m, 2, &t));
    cr_assert_eq(t.ttl_s, 90 * 86400);
}

/* ---- Devices ------------------------------------------------------------ */

Test(meta, devices_and_connections)
{
    struct tide_meta_principal p;
    struct tide_meta_device d;
    struct tide_meta_device_new dn = {.thing_name = "pump-1",
                                      .mac = "AA-BB-CC-00-11-22",
                                      .friendly_name = "Pump one",
                                      .firmware = "1.2.3",
                                      .tags = "site=north"};
    struct tide_meta_device_new upd = {.mac = "aabb.cc00.1133",
                                       .firmware = "1.2.4"};
    struct tide_meta_notification nt[4];
    static const char *bad_macs[] = {"aa:bb:cc:dd:ee",    "aa:bb:cc:dd:ee:fg",
                                     "aa:bb-cc:dd:ee:ff", "aabbccddeeff0",
                                     "aa::bb:cc:dd:ee:f", ":aa:bb:cc:dd:ee:f",
                                     "aabb.ccdd.ee.ff"};
    uint64_t id = new_owner("f@example.com", &p), dev, dev2;
    size_t n;

    CHECK(tide_meta_device_register(m, &p, id, &dn, &dev));
    CHECK_RC(tide_meta_device_register(m, &p, id, &dn, &dev2), TIDE_EEXIST);
    for (size_t i = 0; i < sizeof(bad_macs) / sizeof(bad_macs[0]); i++) {
        struct tide_meta_device_new b = {.thing_name = "other",
                                         .mac = bad_macs[i]};

        CHECK_RC(tide_meta_device_register(m, &p, id, &b, &dev2), TIDE_EINVAL);
    }
    dn.thing_name = "";
    CHECK_RC(tide_meta_device_register(m, &p, id, &dn, &dev2), TIDE_EINVAL);
    CHECK(tide_meta_device_get(m, &p, id, dev, &d));
    cr_assert_str_eq(d.mac, "aa:bb:cc:00:11:22");
    cr_assert_str_eq(d.tags, "site=north");
    atomic_fetch_add(&fake_now, 5);
    CHECK(tide_meta_device_update(m, &p, id, dev, &upd));
    CHECK(tide_meta_device_connect(m, &p, id, dev, 1, "192.168.1.7"));
    atomic_fetch_add(&fake_now, 5);
    tide_meta_device_seen(m, dev);
    CHECK(tide_meta_device_get(m, &p, id, dev, &d));
    cr_assert_str_eq(d.mac, "aa:bb:cc:00:11:33");
    cr_assert_str_eq(d.firmware, "1.2.4");
    cr_assert_str_eq(d.friendly_name, "Pump one");
    cr_assert_eq(d.online, 1);
    cr_assert_eq(d.last_connect_ns, T0 + 5);
    cr_assert_eq(d.last_seen_ns, T0 + 10);
    cr_assert_str_eq(d.last_ip, "192.168.1.7");
    CHECK(tide_meta_device_connect(m, &p, id, dev, 0, NULL));
    CHECK(tide_meta_device_get(m, &p, id, dev, &d));
    cr_assert_eq(d.online, 0);
    CHECK(tide_meta_notify_list(m, &p, id, 0, nt, 4, &n));
    cr_assert_eq(nt[0].kind, TIDE_META_NOTIFY_DEVICE);
    cr_assert(strstr(nt[0].text, "pump-1"));
    /* Opting out of device alerts. */
    CHECK(tide_meta_notify_prefs(m, &p, id, 0, 1, 0));
    CHECK(tide_meta_device_connect(m, &p, id, dev, 0, NULL));
    CHECK(tide_meta_notify_list(m, &p, id, 0, nt, 4, &n));
    cr_assert_eq(nt[0].id, nt[0].id);
    cr_assert_eq(n, 2); /* first-login IP alert + one device alert */

    /* Pause stops writes; delete removes the device and its keys. */
    struct tide_meta_series_key k = {id, dev, "rpm", 3, TIDE_TYPE_I64};
    struct tide_meta_principal dk =
        key_principal(&p, id, TIDE_META_ROLE_DEVICE, dev);
    uint64_t sid;

    CHECK(tide_meta_device_pause(m, &p, id, dev, 1));
    CHECK_RC(tide_meta_series_ensure(m, &dk, &k, 1, &sid, NULL), TIDE_EPAUSED);
    CHECK(tide_meta_device_pause(m, &p, id, dev, 0));
    CHECK(tide_meta_account_pause(m, &p, id, 1));
    CHECK_RC(tide_meta_series_ensure(m, &dk, &k, 1, &sid, NULL), TIDE_EPAUSED);
    CHECK(tide_meta_account_pause(m, &p, id, 0));
    CHECK(tide_meta_series_ensure(m, &dk, &k, 1, &sid, NULL));
    CHECK(tide_meta_device_delete(m, &p, id, dev));
    CHECK_RC(tide_meta_series_lookup(m, &k, &sid), TIDE_ENOTFOUND);
    CHECK_RC(tide_meta_device_get(m, &p, id, dev, &d), TIDE_ENOTFOUND);
    CHECK_RC(
        tide_meta_authorize(m, &dk, TIDE_META_ACT_TELEMETRY_WRITE, id, dev),
        TIDE_EAUTH);
    CHECK(tide_meta_device_list(m, &p, id, 0, &d, 1, &n));
    cr_assert_eq(n, 0);
}

Test(meta, register_many_devices_in_one_transaction)
{
    struct tide_meta_principal p, an;
    struct tide_meta_tier t;
    uint64_t id = new_owner("many@example.com", &p), ids[6];
    const char *names[6] = {"a", "b", "a", "", "c", "d"};
    struct tide_meta_device dv;
    int rcs[6];

    CHECK(tide_meta_tier_get(m, 1, &t));
    t.devices_max = 3;
    CHECK(tide_meta_tier_set(m, &admin, &t));
    CHECK(tide_meta_device_register_many(m, &p, id, names, 6, ids, rcs));
    cr_assert_eq(rcs[0], 0);
    cr_assert_eq(rcs[1], 0);
    cr_assert_eq(rcs[2], TIDE_EEXIST, "a name repeated in the batch");
    cr_assert_eq(rcs[3], TIDE_EINVAL);
    cr_assert_eq(rcs[4], 0);
    cr_assert_eq(rcs[5], TIDE_EFULL, "the tier allows three devices");
    CHECK(tide_meta_device_get(m, &p, id, ids[4], &dv));
    cr_assert_str_eq(dv.thing_name, "c");
    /* A real analyst key: a principal must match its credential. */
    an = key_principal(&p, id, TIDE_META_ROLE_ANALYST, 0);
    CHECK_RC(tide_meta_device_register_many(m, &an, id, names, 1, ids, rcs),
             TIDE_EPERM);
}

/* register_many used to run a count(*) of the account's devices before
 * each insert: quadratic, 20,000 names took seconds. Now the tier's limit
 * is checked once per transaction of a bounded chunk and counted along, so
 * 100,000 names take about as long as 100,000 inserts. A name that exists
 * comes back as TIDE_EEXIST with its id. */
Test(meta, register_many_devices_is_linear, .timeout = 60)
{
    enum { N = 100000, EXTRA = 5 };
    struct tide_meta_principal p;
    struct tide_meta_tier t;
    uint64_t id = new_owner("linear@example.com", &p);
    uint64_t *ids = tide_calloc(N + EXTRA, sizeof(*ids)), again;
    int *rcs = tide_calloc(N + EXTRA, sizeof(*rcs)), rc1;
    char(*names)[16] = tide_calloc(N + EXTRA, 16);
    const char **v = tide_calloc(N + EXTRA, sizeof(*v));
    struct tide_meta_device d;
    size_t n;

    cr_assert(ids && rcs && names && v);
    CHECK(tide_meta_tier_get(m, 1, &t));
    t.devices_max = N;
    CHECK(tide_meta_tier_set(m, &admin, &t));
    for (int i = 0; i < N + EXTRA; i++) {
        snprintf(names[i], 16, "dev%06d", i);
        v[i] = names[i];
    }
    CHECK(tide_meta_device_register_many(m, &p, id, v, N + EXTRA, ids, rcs));
    for (int i = 0; i < N; i++)
        cr_assert(rcs[i] == 0 && ids[i] != 0, "name %d: %s", i,
                  tide_strerror(rcs[i]));
    for (int i = N; i < N + EXTRA; i++)
        cr_assert_eq(rcs[i], TIDE_EFULL, "name %d past devices_max", i);
    CHECK(tide_meta_device_get(m, &p, id, ids[N - 1], &d));
    cr_assert_str_eq(d.thing_name, names[N - 1]);
    /* A name already there: TIDE_EEXIST, with the id it has. */
    CHECK(tide_meta_device_register_many(m, &p, id, &v[7], 1, &again, &rc1));
    cr_assert_eq(rc1, TIDE_EEXIST);
    cr_assert_eq(again, ids[7]);
    /* Room again after a delete: the limit is counted, not remembered. */
    CHECK(tide_meta_device_delete(m, &p, id, ids[0]));
    CHECK(tide_meta_device_register_many(m, &p, id, &v[N], 2, ids, rcs));
    cr_assert_eq(rcs[0], 0);
    cr_assert_eq(rcs[1], TIDE_EFULL);
    CHECK(tide_meta_device_list(m, &p, id, 0, &d, 1, &n));
    cr_assert_eq(n, 1);
    tide_free(ids);
    tide_free(rcs);
    tide_free(names);
    tide_free(v);
}

Test(meta, tier_limits)
{
    struct tide_meta_principal p;
    struct tide_meta_tier t;
    uint64_t id = new_owner("lim@example.com", &p), dev = 0;
    struct tide_meta_series_key k[3];
    uint64_t ids[3];
    int rcs[3];
    char name[16];

    CHECK(tide_meta_tier_get(m, 1, &t));
    t.devices_max = 2;
    t.series_max = 2;
    CHECK(tide_meta_tier_set(m, &admin, &t));
    for (int i = 0; i < 2; i++) {
        snprintf(name, sizeof(name), "d%d", i);
        dev = new_device(&p, id, name);
    }
    struct tide_meta_device_new dn = {.thing_name = "d3"};
    CHECK_RC(tide_meta_device_register(m, &p, id, &dn, &ids[0]), TIDE_EFULL);
    for (int i = 0; i < 3; i++) {
        k[i] =
            (struct tide_meta_series_key){id, dev, "abc" + i, 1, TIDE_TYPE_F64};
    }
    CHECK(tide_meta_series_ensure(m, &p, k, 3, ids, rcs));
    cr_assert_eq(rcs[0], 0);
    cr_assert_eq(rcs[1], 0);
    cr_assert_eq(rcs[2], TIDE_EFULL);
    cr_assert_eq(ids[2], 0);
}

/* ---- Series registry ---------------------------------------------------- */

Test(meta, series_registry_roundtrip)
{
    struct tide_meta_principal p;
    uint64_t id = new_owner("s@example.com", &p);
    uint64_t dev = new_device(&p, id, "d");
    struct tide_meta_series_key k[4] = {
        {id, dev, "temp", 4, TIDE_TYPE_F64},
        {id, dev, "on", 2, TIDE_TYPE_BOOL},
        {id, dev, "temp", 4, TIDE_TYPE_F64}, /* repeated in the batch */
        {id, dev, "", 0, TIDE_TYPE_F64},     /* bad field */
    };
    uint64_t ids[4], got;
    int rcs[4];

    CHECK_RC(tide_meta_series_lookup(m, &k[0], &got), TIDE_ENOTFOUND);
    CHECK(tide_meta_series_ensure(m, &p, k, 4, ids, rcs));
    cr_assert_eq(rcs[0], 0);
    cr_assert_eq(rcs[3], TIDE_EINVAL);
    cr_assert_eq(ids[0], 1);
    cr_assert_eq(ids[1], 2);
    cr_assert_eq(ids[2], 1);
    cr_assert_eq(tide_meta_series_count(m), 2);
    CHECK(tide_meta_series_lookup(m, &k[1], &got));
    cr_assert_eq(got, 2);
    k[0].type = TIDE_TYPE_I64;
    CHECK_RC(tide_meta_series_lookup(m, &k[0], &got), TIDE_ETYPE);
    CHECK(tide_meta_series_ensure(m, &p, k, 1, ids, rcs));
    cr_assert_eq(rcs[0], TIDE_ETYPE);
    k[0].type = TIDE_TYPE_F64;
    tide_meta_close(m);
    open_meta();
    cr_assert_eq(tide_meta_series_count(m), 2);
    CHECK(tide_meta_series_lookup(m, &k[0], &got));
    cr_assert_eq(got, 1);
    k[3].field = "new";
    k[3].field_len = 3;
    CHECK(tide_meta_series_ensure(m, &p, &k[3], 1, ids, NULL));
    cr_assert_eq(ids[0], 3);
}

struct listed {
    unsigned n;
    char fields[4][16];
    uint8_t types[4];
    uint64_t ids[4];
};

static void on_listed(void *ctx, const char *field, uint8_t type, uint64_t id)
{
    struct listed *l = ctx;

    cr_assert_lt(l->n, 4);
    snprintf(l->fields[l->n], sizeof(l->fields[0]), "%s", field);
    l->types[l->n] = type;
    l->ids[l->n++] = id;
}

Test(meta, series_list_of_a_device)
{
    struct tide_meta_principal p;
    uint64_t id = new_owner("list@example.com", &p);
    uint64_t d1 = new_device(&p, id, "d1"), d2 = new_device(&p, id, "d2");
    struct tide_meta_series_key k[3] = {
        {id, d1, "temp", 4, TIDE_TYPE_F64},
        {id, d1, "door", 4, TIDE_TYPE_BOOL},
        {id, d2, "temp", 4, TIDE_TYPE_F64},
    };
    uint64_t ids[3];
    struct listed l = {0};

    CHECK(tide_meta_series_ensure(m, &p, k, 3, ids, NULL));
    CHECK(tide_meta_series_list(m, id, d1, on_listed, &l));
    cr_assert_eq(l.n, 2);
    cr_assert_str_eq(l.fields[0], "door"); /* field order */
    cr_assert_eq(l.types[0], TIDE_TYPE_BOOL);
    cr_assert_eq(l.ids[0], ids[1]);
    cr_assert_str_eq(l.fields[1], "temp");
    cr_assert_eq(l.ids[1], ids[0]);
    memset(&l, 0, sizeof(l));
    CHECK(tide_meta_series_list(m, id + 1, d1, on_listed, &l));
    cr_assert_eq(l.n, 0, "another account sees nothing");
}

Test(meta, series_registry_million, .timeout = 300)
{
    enum { N = 1000000, BATCH = 50000 };
    struct tide_meta_principal p;
    uint64_t id = new_owner("big@example.com", &p);
    uint64_t dev = new_device(&p, id, "d");
    struct tide_meta_series_key *k = tide_calloc(BATCH, sizeof(*k));
    uint64_t *ids = tide_calloc(BATCH, sizeof(*ids));
    char(*names)[16] = tide_calloc(BATCH, 16);
    struct tide_meta_tier t;

    CHECK(tide_meta_account_set_tier(m, &admin, id, 2, NULL, NULL, NULL));
    CHECK(tide_meta_tier_get(m, 2, &t));
    cr_assert_eq(t.series_max, 0);
    for (int b = 0; b < N / BATCH; b++) {
        for (int i = 0; i < BATCH; i++) {
            k[i].account_id = id;
            k[i].device_id = dev;
            k[i].field_len =
                (uint32_t)snprintf(names[i], 16, "f%d", b * BATCH + i);
            k[i].field = names[i];
            k[i].type = TIDE_TYPE_F64;
        }
        CHECK(tide_meta_series_ensure(m, &p, k, BATCH, ids, NULL));
        cr_assert_eq(ids[BATCH - 1], (uint64_t)(b + 1) * BATCH);
    }
    tide_meta_close(m);
    open_meta();
    cr_assert_eq(tide_meta_series_count(m), N);
    for (int i = 0; i < N; i += 7) {
        struct tide_meta_series_key q = {id, dev, names[0], 0, TIDE_TYPE_F64};
        char f[16];
        uint64_t got;

        q.field_len = (uint32_t)snprintf(f, sizeof(f), "f%d", i);
        q.field = f;
        CHECK(tide_meta_series_lookup(m, &q, &got));
        cr_assert_eq(got, (uint64_t)i + 1);
    }
    tide_free(k);
    tide_free(ids);
    tide_free(names);
}

/* ---- Usage, logs, retention --------------------------------------------- */

Test(meta, usage_counters_and_warning)
{
    struct tide_meta_principal p;
    struct tide_meta_usage u = {.messages = 1,
                                .points = 10,
                                .bytes_in = 100,
                                .bytes_out = 5,
                                .queries = 0};
    struct tide_meta_usage out[4];
    struct tide_meta_notification nt[4];
    uint64_t id = new_owner("u@example.com", &p);
    int64_t day0 = T0 / DAY_NS;
    size_t n;

    for (int i = 0; i < 3; i++)
        CHECK(tide_meta_usage_add(m, id, &u));
    CHECK(tide_meta_flush(m));
    CHECK(tide_meta_usage_add(m, id, &u));
    atomic_fetch_add(&fake_now, DAY_NS);
    u.queries = 2;
    CHECK(tide_meta_usage_add(m, id, &u));
    /* Pending counters are written by close. */
    tide_meta_close(m);
    open_meta();
    /* The owner's 24 h session has expired by now: the operator reads. */
    CHECK(tide_meta_usage_read(m, &admin, id, day0, day0 + 1, out, 4, &n));
    cr_assert_eq(n, 2);
    cr_assert_eq(out[0].day, day0);
    cr_assert_eq(out[0].messages, 4);
    cr_assert_eq(out[0].points, 40);
    cr_assert_eq(out[0].bytes_in, 400);
    cr_assert_eq(out[0].bytes_out, 20);
    cr_assert_eq(out[1].day, day0 + 1);
    cr_assert_eq(out[1].queries, 2);
    /* Free tier: 10 M points a day; crossing 80 % warns once. */
    u.points = 7999990;
    CHECK(tide_meta_usage_add(m, id, &u));
    CHECK(tide_meta_flush(m));
    CHECK(tide_meta_notify_list(m, &admin, id, 0, nt, 4, &n));
    cr_assert_eq(nt[0].kind, TIDE_META_NOTIFY_USAGE);
    u.points = 1000;
    CHECK(tide_meta_usage_add(m, id, &u));
    CHECK(tide_meta_flush(m));
    CHECK(tide_meta_notify_list(m, &admin, id, 0, nt, 4, &n));
    cr_assert_eq(n, 2);
}

Test(meta, log_retention_by_moving_time)
{
    struct tide_meta_principal p, q;
    struct tide_meta_prune_stats ps;
    struct tide_meta_auth_event ev[16];
    char token[TIDE_META_SECRET_MAX + 1], path[PATH_MAX];
    struct tide_meta_request r = {
        .op = "write", .ip = "1.1.1.1", .bytes_in = 50, .status = 0};
    uint64_t id = new_owner("ret@example.com", &p);
    sqlite3 *db;
    sqlite3_stmt *st;
    size_t n;

    r.account_id = id;
    r.key_id = 7;
    CHECK_RC(tide_meta_login(m, "ret@example.com", "bad-password", "2.2.2.2",
                             token, &q),
             TIDE_EAUTH);
    for (int i = 0; i < 3; i++)
        CHECK(tide_meta_request_log(m, &r));
    r.status = TIDE_EPERM;
    CHECK(tide_meta_request_log(m, &r));
    r.op = "bad\nop";
    CHECK_RC(tide_meta_request_log(m, &r), TIDE_EINVAL);
    /* 89 days later: nothing is due. */
    atomic_fetch_add(&fake_now, 89 * DAY_NS);
    CHECK(tide_meta_prune(m, &admin, &ps));
    cr_assert_eq(ps.request_rows, 0);
    cr_assert_eq(ps.auth_rows, 0);
    cr_assert_eq(ps.sessions, 1); /* the 24 h login session */
    /* 91 days: request rows fold into daily aggregates. */
    atomic_fetch_add(&fake_now, 2 * DAY_NS);
    CHECK(tide_meta_prune(m, &admin, &ps));
    cr_assert_eq(ps.request_rows, 4);
    snprintf(path, sizeof(path), "%s/meta.db", dir);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT requests, errors, bytes_in, op,"
                                    " (SELECT count(*) FROM request_log)"
                                    " FROM request_daily",
                                    -1, &st, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(st, 0), 4);
    cr_assert_eq(sqlite3_column_int(st, 1), 1);
    cr_assert_eq(sqlite3_column_int(st, 2), 200);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 3), "write");
    cr_assert_eq(sqlite3_column_int(st, 4), 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    /* 364 days: the auth log is kept; 366: gone. */
    atomic_store(&fake_now, T0 + 364 * DAY_NS);
    CHECK(tide_meta_prune(m, &admin, &ps));
    cr_assert_eq(ps.auth_rows, 0);
    atomic_store(&fake_now, T0 + 366 * DAY_NS);
    CHECK(tide_meta_login(m, "ret@example.com", "correct horse", "2.2.2.2",
                          token, &p));
    CHECK(tide_meta_prune(m, &admin, &ps));
    /* The owner's login, the failed one, the admin key of setup. */
    cr_assert_eq(ps.auth_rows, 3, "%llu", (unsigned long long)ps.auth_rows);
    CHECK(tide_meta_authlog_read(m, &p, id, 0, ev, 16, &n));
    cr_assert_eq(n, 1);
    cr_assert_eq(ev[0].ts_ns, T0 + 366 * DAY_NS);
}

Test(meta, restore_within_grace_then_not_after_purge)
{
    struct tide_meta_principal p, k;
    struct tide_meta_account acc;
    struct tide_meta_prune_stats ps;
    char secret[TIDE_META_SECRET_MAX + 1];
    uint64_t id = new_owner("back@example.com", &p), dev, gone_dev, sid, got;
    struct tide_meta_series_key sk = {id, 0, "t", 1, TIDE_TYPE_F64};
    struct tide_meta_series_key gk = {id, 0, "g", 1, TIDE_TYPE_F64};

    dev = new_device(&p, id, "d");
    gone_dev = new_device(&p, id, "old");
    sk.device_id = dev;
    gk.device_id = gone_dev;
    CHECK(tide_meta_series_ensure(m, &p, &sk, 1, &sid, NULL));
    CHECK(tide_meta_series_ensure(m, &p, &gk, 1, &got, NULL));
    CHECK(tide_meta_key_create(m, &p, id, TIDE_META_ROLE_ANALYST, 0, "k",
                               secret, NULL));
    /* A device deleted before the account stays deleted after a restore. */
    CHECK(tide_meta_device_delete(m, &p, id, gone_dev));
    atomic_fetch_add(&fake_now, 1000);
    CHECK(tide_meta_account_delete(m, &p, id));
    /* The owner's own credentials died with the account: only the operator
     * restores. */
    CHECK_RC(tide_meta_account_restore(m, &p, id), TIDE_EAUTH);
    CHECK(tide_meta_account_restore(m, &admin, id));
    CHECK_RC(tide_meta_account_restore(m, &admin, id), TIDE_ENOTFOUND);
    CHECK(tide_meta_account_get(m, &admin, id, &acc));
    CHECK(tide_meta_key_auth(m, secret, NULL, &k));
    CHECK(tide_meta_series_lookup(m, &sk, &got));
    cr_assert_eq(got, sid);
    CHECK_RC(tide_meta_series_lookup(m, &gk, &got), TIDE_ENOTFOUND);
    /* Deleted again and purged after the grace period: gone for good. */
    CHECK(tide_meta_account_delete(m, &p, id));
    atomic_fetch_add(&fake_now, 31 * DAY_NS);
    CHECK(tide_meta_prune(m, &admin, &ps));
    cr_assert_eq(ps.accounts, 1);
    CHECK_RC(tide_meta_account_restore(m, &admin, id), TIDE_ENOTFOUND);
}

Test(meta, delete_account_then_purge)
{
    struct tide_meta_principal p, k, q;
    struct tide_meta_account acc;
    struct tide_meta_prune_stats ps;
    struct tide_meta_account_new a = {.email = "gone@example.com",
                                      .password = "password1"};
    char secret[TIDE_META_SECRET_MAX + 1], token[TIDE_META_SECRET_MAX + 1];
    char path[PATH_MAX];
    uint64_t id = new_owner("gone@example.com", &p), dev, sid;
    struct tide_meta_series_key sk = {id, 0, "t", 1, TIDE_TYPE_F64};
    sqlite3 *db;
    sqlite3_stmt *st;

    dev = new_device(&p, id, "d");
    sk.device_id = dev;
    CHECK(tide_meta_series_ensure(m, &p, &sk, 1, &sid, NULL));
    CHECK(tide_meta_key_create(m, &p, id, TIDE_META_ROLE_ANALYST, 0, "k",
                               secret, NULL));
    CHECK(tide_meta_account_delete(m, &p, id));
    CHECK_RC(tide_meta_key_auth(m, secret, NULL, &k), TIDE_EAUTH);
    CHECK_RC(tide_meta_login(m, "gone@example.com", "correct horse", NULL,
                             token, &q),
             TIDE_EAUTH);
    CHECK_RC(tide_meta_account_get(m, &admin, id, &acc), TIDE_ENOTFOUND);
    CHECK_RC(tide_meta_series_lookup(m, &sk, &sid), TIDE_ENOTFOUND);
    CHECK_RC(tide_meta_account_create(m, &anon, &a, &sid, NULL), TIDE_EEXIST);
    atomic_fetch_add(&fake_now, 29 * DAY_NS);
    CHECK(tide_meta_prune(m, &admin, &ps));
    cr_assert_eq(ps.accounts, 0);
    atomic_fetch_add(&fake_now, 2 * DAY_NS);
    CHECK(tide_meta_prune(m, &admin, &ps));
    cr_assert_eq(ps.accounts, 1);
    snprintf(path, sizeof(path), "%s/meta.db", dir);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(
                     db,
                     "SELECT (SELECT count(*) FROM accounts WHERE id=?1)"
                     "+(SELECT count(*) FROM devices WHERE account_id=?1)"
                     "+(SELECT count(*) FROM api_keys WHERE account_id=?1)"
                     "+(SELECT count(*) FROM series WHERE account_id=?1)"
                     "+(SELECT count(*) FROM auth_log WHERE account_id=?1)"
                     "+(SELECT count(*) FROM notifications"
                     " WHERE account_id=?1)",
                     -1, &st, NULL),
                 SQLITE_OK);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(st, 0), 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    /* The email is free again. */
    CHECK(tide_meta_account_create(m, &anon, &a, &sid, NULL));
    cr_assert_neq(sid, id);
}

/* ---- Injection and export ----------------------------------------------- */

static const char *const injections[] = {
    "'; DROP TABLE accounts; --",
    "Robert'); DELETE FROM api_keys WHERE ('1'='1",
    "\" OR \"\"=\"",
    "x' UNION SELECT pw_hash FROM accounts --",
    "%s%s%n%x",
    "1; ATTACH DATABASE '/tmp/pwn.db' AS pwn; --",
};

Test(meta, sql_injection_is_stored_verbatim)
{
    struct tide_meta_principal p;
    struct tide_meta_account acc;
    struct tide_meta_device d;
    struct tide_meta_key keys[8];
    char email[64], secret[TIDE_META_SECRET_MAX + 1];
    size_t n;

    for (size_t i = 0; i < sizeof(injections) / sizeof(injections[0]); i++) {
        const char *x = injections[i];
        struct tide_meta_account_new a = {.password = "password1",
                                          .first_name = x,
                                          .surname = x,
                                          .organization = x};
        struct tide_meta_device_new dn = {
            .thing_name = x, .friendly_name = x, .firmware = x, .tags = x};
        uint64_t id, dev;

        /* A quote is legal in an email's local part. */
        snprintf(email, sizeof(email), "o'brien%zu'--@example.com", i);
        a.email = email;
        CHECK(tide_meta_account_create(m, &anon, &a, &id, NULL));
        CHECK(tide_meta_login(m, email, "password1", NULL, secret, &p));
        CHECK(tide_meta_account_get(m, &p, id, &acc));
        cr_assert_str_eq(acc.first_name, x);
        cr_assert_str_eq(acc.surname, x);
        cr_assert_str_eq(acc.organization, x);
        cr_assert_str_eq(acc.email, email);
        CHECK(tide_meta_device_register(m, &p, id, &dn, &dev));
        CHECK(tide_meta_device_get(m, &p, id, dev, &d));
        cr_assert_str_eq(d.thing_name, x);
        cr_assert_str_eq(d.friendly_name, x);
        cr_assert_str_eq(d.firmware, x);
        cr_assert_str_eq(d.tags, x);
        CHECK(tide_meta_key_create(m, &p, id, TIDE_META_ROLE_ANALYST, 0, x,
                                   secret, NULL));
        CHECK(tide_meta_key_list(m, &p, id, 0, keys, 8, &n));
        cr_assert_str_eq(keys[0].name, x);
        struct tide_meta_series_key sk = {id, dev, x, (uint32_t)strlen(x),
                                          TIDE_TYPE_STR};
        uint64_t sid, got;
        CHECK(tide_meta_series_ensure(m, &p, &sk, 1, &sid, NULL));
        CHECK(tide_meta_series_lookup(m, &sk, &got));
        cr_assert_eq(sid, got);
        CHECK(tide_meta_account_set_tier(m, &admin, id, 1, "active", x, x));
        CHECK(tide_meta_account_get(m, &admin, id, &acc));
        cr_assert_str_eq(acc.billing_customer_id, x);
        CHECK_RC(tide_meta_login(m, x, x, NULL, secret, &p), TIDE_EAUTH);
        CHECK_RC(tide_meta_key_auth(m, x, NULL, &p), TIDE_EAUTH);
        CHECK_RC(tide_meta_account_verify_email(m, x), TIDE_EAUTH);
    }
    /* Every table is still there and whole. */
    CHECK(tide_meta_account_get(m, &admin, 1, &acc));
    cr_assert_eq(tide_meta_series_count(m),
                 sizeof(injections) / sizeof(injections[0]));
}

Test(meta, export_every_row_without_secrets)
{
    struct tide_meta_principal p, other;
    struct tide_meta_export_row row;
    struct tide_meta_usage u = {.messages = 1, .points = 2};
    char secret[TIDE_META_SECRET_MAX + 1];
    tide_meta_export *it;
    uint64_t id = new_owner("exp@example.com", &p);
    uint64_t dev = new_device(&p, id, "thing \"one\" \\");
    struct tide_meta_series_key sk = {id, dev, "t\xff", 2, TIDE_TYPE_F64};
    uint64_t sid;
    int counts[16] = {0}, rows = 0, rc;

    (void)new_owner("other@example.com", &other);
    CHECK(tide_meta_series_ensure(m, &p, &sk, 1, &sid, NULL));
    CHECK(tide_meta_key_create(m, &p, id, TIDE_META_ROLE_DEVICE, dev, "dk",
                               secret, NULL));
    CHECK(tide_meta_usage_add(m, id, &u));
    CHECK(tide_meta_export_open(m, &p, id, &it));
    /* Writes after the snapshot are not part of this export. */
    CHECK(tide_meta_device_register(
        m, &p, id, &(struct tide_meta_device_new){.thing_name = "late"}, &sid));
    while ((rc = tide_meta_export_next(it, &row)) == 0) {
        static const char *tables[] = {"account",      "device", "key",
                                       "series",       "usage",  "auth_log",
                                       "notification", "session"};

        rows++;
        cr_assert_eq(strlen(row.json), row.json_len);
        cr_assert(row.json[0] == '{' && row.json[row.json_len - 1] == '}');
        cr_assert_null(strchr(row.json, '\n'));
        cr_assert_null(strstr(row.json, "$2b$"));
        cr_assert_null(strstr(row.json, "hash"));
        cr_assert_null(strstr(row.json, secret + 10));
        cr_assert_null(strstr(row.json, "other@example.com"));
        cr_assert_null(strstr(row.json, "late"));
        for (int t = 0; t < 8; t++)
            counts[t] += !strcmp(row.table, tables[t]);
    }
    cr_assert_eq(rc, 1);
    tide_meta_export_close(it);
    cr_assert_eq(counts[0], 1);
    cr_assert_eq(counts[1], 1);
    cr_assert_eq(counts[2], 1);
    cr_assert_eq(counts[3], 1);
    cr_assert_eq(counts[4], 1);
    cr_assert_eq(counts[5], 1); /* the login */
    cr_assert_eq(counts[6], 2); /* new IP, new key */
    cr_assert_eq(counts[7], 1);
    cr_assert_geq(rows, 9);
}

/* ---- Concurrency -------------------------------------------------------- */

struct worker {
    struct tide_meta_principal owner;
    uint64_t account_id;
    uint64_t device_id;
    char key[TIDE_META_SECRET_MAX + 1];
    int index;
    int failures;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char names[50][16];
    struct tide_meta_series_key k[50];
    uint64_t ids[50], got;
    struct tide_meta_usage u = {.messages = 1, .points = 3};
    struct tide_meta_principal kp;

    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 50; i++) {
            k[i].account_id = w->account_id;
            k[i].device_id = w->device_id;
            k[i].field_len =
                (uint32_t)snprintf(names[i], 16, "f%d", round * 50 + i);
            k[i].field = names[i];
            k[i].type = TIDE_TYPE_F64;
        }
        if (tide_meta_series_ensure(m, &w->owner, k, 50, ids, NULL))
            w->failures++;
        for (int i = 0; i < 50; i++) {
            if (tide_meta_series_lookup(m, &k[i], &got) || got != ids[i])
                w->failures++;
        }
        if (tide_meta_key_auth(m, w->key, "10.9.9.9", &kp) ||
            tide_meta_authorize(m, &kp, TIDE_META_ACT_TELEMETRY_WRITE,
                                w->account_id, w->device_id))
            w->failures++;
        if (tide_meta_usage_add(m, w->account_id, &u))
            w->failures++;
        tide_meta_device_seen(m, w->device_id);
        if (round % 5 == 0 && tide_meta_flush(m))
            w->failures++;
    }
    return NULL;
}

Test(meta, concurrent_threads)
{
    enum { T = 4 };
    struct tide_meta_options o;
    struct worker w[T];
    pthread_t th[T];
    struct tide_meta_usage out[2];
    struct tide_meta_key keys[2];
    char email[32];
    size_t n;

    /* A real flusher thread this time. */
    tide_meta_close(m);
    opts_fill(&o);
    o.flush_interval_ms = 5;
    CHECK(tide_meta_open(dir, &o, &m));
    for (int i = 0; i < T; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        snprintf(email, sizeof(email), "t%d@example.com", i);
        w[i].account_id = new_owner(email, &w[i].owner);
        w[i].device_id = new_device(&w[i].owner, w[i].account_id, "d");
        CHECK(tide_meta_key_create(m, &w[i].owner, w[i].account_id,
                                   TIDE_META_ROLE_DEVICE, w[i].device_id, "k",
                                   w[i].key, NULL));
        w[i].index = i;
    }
    for (int i = 0; i < T; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(tide_meta_series_count(m), T * 1000);
    for (int i = 0; i < T; i++) {
        int64_t day = T0 / DAY_NS;

        cr_assert_eq(w[i].failures, 0);
        CHECK(tide_meta_usage_read(m, &w[i].owner, w[i].account_id, day, day,
                                   out, 2, &n));
        cr_assert_eq(n, 1);
        cr_assert_eq(out[0].messages, 20);
        cr_assert_eq(out[0].points, 60);
        CHECK(tide_meta_key_list(m, &w[i].owner, w[i].account_id, 0, keys, 2,
                                 &n));
        cr_assert_eq(keys[0].requests, 20);
    }
}

/* ---- Cache invalidation ------------------------------------------------- */

/* What the invalidation hook was told, in order. */
struct inval_log {
    unsigned n;
    uint64_t account[32];
    uint64_t device[32];
};

static void on_invalidate(void *ctx, uint64_t account_id, uint64_t device_id)
{
    struct inval_log *l = ctx;

    cr_assert_lt(l->n, 32);
    l->account[l->n] = account_id;
    l->device[l->n] = device_id;
    l->n++;
}

/* The hook was called exactly once since the last check, with (a, d). */
static void expect_inval(struct inval_log *l, uint64_t a, uint64_t d)
{
    cr_assert_eq(l->n, 1, "%u calls, want 1", l->n);
    cr_assert_eq(l->account[0], a, "account %llu, want %llu",
                 (unsigned long long)l->account[0], (unsigned long long)a);
    cr_assert_eq(l->device[0], d, "device %llu, want %llu",
                 (unsigned long long)l->device[0], (unsigned long long)d);
    l->n = 0;
}

Test(meta, invalidation_hook_names_what_changed)
{
    struct inval_log l = {0};
    struct tide_meta_principal p;
    struct tide_meta_tier t;
    struct tide_meta_device_new up = {.tags = "site=b"};
    uint64_t id = new_owner("hook@example.com", &p), dev, other;

    dev = new_device(&p, id, "d");
    tide_meta_set_invalidate(m, on_invalidate, &l);
    /* A registration makes no cached row wrong: not reported. */
    other = new_device(&p, id, "e");
    cr_assert_eq(l.n, 0);
    CHECK(tide_meta_device_pause(m, &p, id, dev, 1));
    expect_inval(&l, id, dev);
    CHECK(tide_meta_device_pause(m, &p, id, dev, 0));
    expect_inval(&l, id, dev);
    CHECK(tide_meta_device_update(m, &p, id, dev, &up));
    expect_inval(&l, id, dev);
    CHECK(tide_meta_device_delete(m, &p, id, other));
    expect_inval(&l, id, other);
    CHECK(tide_meta_account_pause(m, &p, id, 1));
    expect_inval(&l, id, 0);
    CHECK(tide_meta_account_pause(m, &p, id, 0));
    expect_inval(&l, id, 0);
    CHECK(tide_meta_account_set_tier(m, &admin, id, 2, NULL, NULL, NULL));
    expect_inval(&l, id, 0);
    CHECK(tide_meta_tier_get(m, 2, &t));
    t.rate_points_s = 7;
    CHECK(tide_meta_tier_set(m, &admin, &t));
    expect_inval(&l, 0, 0);
    /* A refused change is not reported. */
    CHECK_RC(tide_meta_device_pause(m, &p, id, other, 1), TIDE_ENOTFOUND);
    cr_assert_eq(l.n, 0);
    CHECK(tide_meta_account_delete(m, &p, id));
    expect_inval(&l, id, 0);
    CHECK(tide_meta_account_restore(m, &admin, id));
    expect_inval(&l, id, 0);
    tide_meta_set_invalidate(m, NULL, NULL);
    CHECK(tide_meta_account_pause(m, &admin, id, 1));
    cr_assert_eq(l.n, 0);
}

Test(meta, invalidation_hook_hears_each_purge)
{
    struct inval_log l = {0};
    struct tide_meta_principal p, q;
    struct tide_meta_prune_stats ps;
    uint64_t a = new_owner("purge-a@example.com", &p);
    uint64_t b = new_owner("purge-b@example.com", &q);

    new_device(&p, a, "d");
    CHECK(tide_meta_account_delete(m, &p, a));
    CHECK(tide_meta_account_delete(m, &q, b));
    tide_meta_set_invalidate(m, on_invalidate, &l);
    /* Inside the grace period nothing is purged, nothing reported. */
    CHECK(tide_meta_prune(m, &admin, &ps));
    cr_assert_eq(ps.accounts, 0);
    cr_assert_eq(l.n, 0);
    atomic_fetch_add(&fake_now, 31 * DAY_NS);
    CHECK(tide_meta_prune(m, &admin, &ps));
    cr_assert_eq(ps.accounts, 2);
    cr_assert_eq(l.n, 2, "%u calls, want one per purged account", l.n);
    cr_assert(l.account[0] == a || l.account[1] == a);
    cr_assert(l.account[0] == b || l.account[1] == b);
    cr_assert_eq(l.device[0], 0);
    cr_assert_eq(l.device[1], 0);
    l.n = 0;
    CHECK(tide_meta_prune(m, &admin, &ps));
    cr_assert_eq(l.n, 0);
}

Test(meta, device_tags_set_in_one_transaction)
{
    struct inval_log l = {0};
    struct tide_meta_principal p, q, dk;
    struct tide_meta_device d;
    uint64_t id = new_owner("tags@example.com", &p);
    uint64_t other = new_owner("tags2@example.com", &q);
    uint64_t ids[3], foreign = new_device(&q, other, "x");
    const char *tags[3] = {"site=a,rack=1", "site=b", "bad\x01"};
    int rcs[3];

    ids[0] = new_device(&p, id, "d0");
    ids[1] = new_device(&p, id, "d1");
    ids[2] = new_device(&p, id, "d2");
    tide_meta_set_invalidate(m, on_invalidate, &l);
    CHECK(tide_meta_device_tags_set(m, &p, id, ids, tags, 3, rcs));
    cr_assert_eq(rcs[0], 0);
    cr_assert_eq(rcs[1], 0);
    cr_assert_eq(rcs[2], TIDE_EINVAL);
    cr_assert_eq(l.n, 2, "one report per device changed, got %u", l.n);
    cr_assert_eq(l.device[0], ids[0]);
    cr_assert_eq(l.device[1], ids[1]);
    CHECK(tide_meta_device_get(m, &p, id, ids[0], &d));
    cr_assert_str_eq(d.tags, "site=a,rack=1");
    CHECK(tide_meta_device_get(m, &p, id, ids[1], &d));
    cr_assert_str_eq(d.tags, "site=b");
    CHECK(tide_meta_device_get(m, &p, id, ids[2], &d));
    cr_assert_str_eq(d.tags, "");
    /* Another account's device is not found through this account. */
    CHECK(tide_meta_device_tags_set(m, &p, id, &foreign, tags, 1, rcs));
    cr_assert_eq(rcs[0], TIDE_ENOTFOUND);
    /* A device key may not manage devices. */
    dk = key_principal(&p, id, TIDE_META_ROLE_DEVICE, ids[0]);
    CHECK_RC(tide_meta_device_tags_set(m, &dk, id, ids, tags, 1, rcs),
             TIDE_EPERM);
    tide_meta_set_invalidate(m, NULL, NULL);
}

Test(meta, purge_a_deleted_account_now)
{
    struct tide_meta_principal p, q;
    struct tide_meta_prune_stats ps;
    struct tide_meta_account_new a = {.email = "now@example.com",
                                      .password = "correct horse"};
    uint64_t id = new_owner("now@example.com", &p), dev, again;
    size_t n;
    struct tide_meta_device d[1];

    dev = new_device(&p, id, "d");
    cr_assert_neq(dev, 0);
    /* Only a deleted account is purged, and only by the operator. */
    CHECK_RC(tide_meta_account_purge(m, &admin, id), TIDE_ENOTFOUND);
    CHECK(tide_meta_account_delete(m, &p, id));
    CHECK_RC(tide_meta_account_purge(m, &p, id), TIDE_EAUTH);
    CHECK(tide_meta_account_purge(m, &admin, id));
    /* Gone for good, before any grace period: no restore, no rows, the
     * email free, nothing left for prune. */
    CHECK_RC(tide_meta_account_purge(m, &admin, id), TIDE_ENOTFOUND);
    CHECK_RC(tide_meta_account_restore(m, &admin, id), TIDE_ENOTFOUND);
    CHECK_RC(tide_meta_device_list(m, &admin, id, 0, d, 1, &n), TIDE_ENOTFOUND);
    CHECK(tide_meta_account_create(m, &anon, &a, &again, NULL));
    cr_assert_neq(again, id);
    CHECK(tide_meta_login(m, "now@example.com", "correct horse", NULL,
                          (char[TIDE_META_SECRET_MAX + 1]){0}, &q));
    atomic_fetch_add(&fake_now, 31 * DAY_NS);
    CHECK(tide_meta_prune(m, &admin, &ps));
    cr_assert_eq(ps.accounts, 0);
}

/* ---- Hardening (issue #10): principals and the bootstrap key ------------ */

Test(meta, admin_principal_without_credential_refused)
{
    const struct tide_meta_principal bare = {.role = TIDE_META_ROLE_ADMIN};
    struct tide_meta_account acc;
    struct tide_meta_principal p;
    uint64_t id = new_owner("bare@example.com", &p);

    /* A struct that merely says ADMIN is no operator. */
    CHECK_RC(tide_meta_authorize(m, &bare, TIDE_META_ACT_OPERATOR, 0, 0),
             TIDE_EAUTH);
    CHECK_RC(tide_meta_account_get(m, &bare, id, &acc), TIDE_EAUTH);
    /* The operator by key, and the in-process system principal, are. */
    CHECK(tide_meta_authorize(m, &admin, TIDE_META_ACT_OPERATOR, 0, 0));
    CHECK(tide_meta_account_get(m, &tide_meta_system_principal, id, &acc));
}

Test(meta, principal_must_match_its_credential)
{
    struct tide_meta_principal p, an, forged;
    uint64_t id = new_owner("match@example.com", &p);
    struct tide_meta_account acc;

    an = key_principal(&p, id, TIDE_META_ROLE_ANALYST, 0);
    /* An analyst key's id under the operator's role. */
    forged = an;
    forged.role = TIDE_META_ROLE_ADMIN;
    forged.account_id = 0;
    CHECK_RC(tide_meta_authorize(m, &forged, TIDE_META_ACT_OPERATOR, 0, 0),
             TIDE_EAUTH);
    /* The owner's session under the operator's role. */
    forged = p;
    forged.role = TIDE_META_ROLE_ADMIN;
    CHECK_RC(tide_meta_account_get(m, &forged, id, &acc), TIDE_EAUTH);
    /* The operator's key id under an owner of some account. */
    forged = admin;
    forged.role = TIDE_META_ROLE_OWNER;
    forged.account_id = id;
    CHECK_RC(tide_meta_account_get(m, &forged, id, &acc), TIDE_EAUTH);
    CHECK(tide_meta_account_get(m, &p, id, &acc));
}

Test(meta, bootstrap_admin_key_revoked_and_rotated)
{
    char key[TIDE_META_SECRET_MAX + 2], secret[TIDE_META_SECRET_MAX + 1];
    struct tide_meta_principal op2, q;
    struct tide_meta_key keys[4];
    struct tide_meta_options o;
    uint64_t id2;
    size_t n;

    read_admin_key(key);
    /* A second operator key, listed with the bootstrap one. */
    CHECK(tide_meta_key_create(m, &admin, 0, TIDE_META_ROLE_ADMIN, 0, "ops",
                               secret, &id2));
    CHECK(tide_meta_key_auth(m, secret, "127.0.0.1", &op2));
    CHECK(tide_meta_key_list(m, &op2, 0, 0, keys, 4, &n));
    cr_assert_eq(n, 2, "%zu operator keys listed", n);
    cr_assert_eq(keys[0].id, admin.key_id);
    /* Revoke the bootstrap key: it fails from then on, also a principal
     * that had it. */
    CHECK(tide_meta_key_revoke(m, &op2, 0, admin.key_id));
    CHECK_RC(tide_meta_key_auth(m, key, "127.0.0.1", &q), TIDE_EAUTH);
    CHECK_RC(tide_meta_authorize(m, &admin, TIDE_META_ACT_OPERATOR, 0, 0),
             TIDE_EAUTH);
    /* An owner cannot revoke an operator key. */
    {
        struct tide_meta_principal p;

        new_owner("revoker@example.com", &p);
        CHECK_RC(tide_meta_key_revoke(m, &p, 0, id2), TIDE_EPERM);
    }
    /* With every operator key revoked, the next open writes a new
     * admin.key. */
    CHECK(tide_meta_key_revoke(m, &op2, 0, id2));
    tide_meta_close(m);
    opts_fill(&o);
    CHECK(tide_meta_open(dir, &o, &m));
    {
        char fresh[TIDE_META_SECRET_MAX + 2];

        read_admin_key(fresh);
        cr_assert_str_neq(fresh, key, "admin.key was not replaced");
        CHECK(tide_meta_key_auth(m, fresh, "127.0.0.1", &admin));
        cr_assert_eq(admin.role, TIDE_META_ROLE_ADMIN);
    }
}

Test(meta, signup_of_a_taken_email_tells_its_owner)
{
    struct tide_meta_account_new a = {.email = "Taken@Example.com",
                                      .password = "another password"};
    struct tide_meta_notification nt[8];
    struct tide_meta_principal p;
    uint64_t id = new_owner("taken@example.com", &p), other = 0;
    size_t n;
    int found = 0;

    CHECK_RC(tide_meta_account_create(m, &anon, &a, &other, NULL), TIDE_EEXIST);
    cr_assert_eq(other, 0);
    CHECK(tide_meta_notify_list(m, &p, id, 0, nt, 8, &n));
    for (size_t i = 0; i < n; i++)
        found |= nt[i].kind == TIDE_META_NOTIFY_SECURITY &&
                 strstr(nt[i].text, "sign-up") != NULL;
    cr_assert(found, "no notice of the sign-up attempt");
}

/* ---- Chunked flush --------------------------------------------------------
 */

static int64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* N devices of one new account, registered in one call. */
static uint64_t *many_devices(const char *email, int n, uint64_t *acct)
{
    struct tide_meta_principal p;
    struct tide_meta_tier t;
    uint64_t *ids = tide_calloc((size_t)n, sizeof(*ids));
    int *rcs = tide_calloc((size_t)n, sizeof(*rcs));
    char(*names)[16] = tide_calloc((size_t)n, 16);
    const char **v = tide_calloc((size_t)n, sizeof(*v));

    cr_assert(ids && rcs && names && v);
    *acct = new_owner(email, &p);
    CHECK(tide_meta_tier_get(m, 1, &t));
    t.devices_max = (uint32_t)n;
    CHECK(tide_meta_tier_set(m, &admin, &t));
    for (int i = 0; i < n; i++) {
        snprintf(names[i], 16, "dev%06d", i);
        v[i] = names[i];
    }
    CHECK(tide_meta_device_register_many(m, &p, *acct, v, (size_t)n, ids, rcs));
    for (int i = 0; i < n; i++)
        cr_assert_eq(rcs[i], 0);
    tide_free(rcs);
    tide_free(names);
    tide_free(v);
    return ids;
}

/* A second connection to meta.db, to check rows and inject faults. */
static sqlite3 *side_db(void)
{
    char path[PATH_MAX];
    sqlite3 *db;

    snprintf(path, sizeof(path), "%s/meta.db", dir);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    return db;
}

static int64_t side_int(sqlite3 *db, const char *sql, int64_t a, int64_t b)
{
    sqlite3_stmt *st;
    int64_t v;

    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(db));
    sqlite3_bind_int64(st, 1, a);
    sqlite3_bind_int64(st, 2, b);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s", sqlite3_errmsg(db));
    v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

struct bystander {
    uint64_t account_id;
    const uint64_t *ids;
    int n_ids;
    _Atomic int started;
    _Atomic int stop;
    int64_t max_wait_ns;
    int calls; /* also the devices seen again, ids[0 .. calls-1] */
    int failures;
};

/* What the event loop does while a flush runs: sidecar calls that take
 * the sidecar lock (tier_get), usage adds and device-seen notes. Each
 * lock-taking call is timed. */
static void *bystander_main(void *arg)
{
    struct bystander *b = arg;
    struct tide_meta_usage u = {.messages = 1, .points = 1};
    struct tide_meta_tier t;

    atomic_store(&b->started, 1);
    while (!atomic_load(&b->stop) && b->calls < b->n_ids) {
        int64_t t0 = mono_ns(), d;

        if (tide_meta_tier_get(m, 1, &t))
            b->failures++;
        d = mono_ns() - t0;
        if (d > b->max_wait_ns)
            b->max_wait_ns = d;
        if (tide_meta_usage_add(m, b->account_id, &u))
            b->failures++;
        tide_meta_device_seen(m, b->ids[b->calls]);
        b->calls++;
    }
    return NULL;
}

struct flush_run {
    int rc;
    int64_t ns;
};

static void *flush_main(void *arg)
{
    struct flush_run *f = arg;
    int64_t t0 = mono_ns();

    f->rc = tide_meta_flush(m);
    f->ns = mono_ns() - t0;
    return NULL;
}

/* The flush of 100,000 "last seen" rows used to hold the sidecar lock for
 * the whole transaction (~300 ms), so every event-loop call into the
 * sidecar waited that long. Now it writes bounded chunks and lets others
 * in between: the longest single wait of a bystander is a small part of
 * the flush, and every row, swapped out or arriving meanwhile, lands
 * exactly once. */
Test(meta, flush_in_chunks_does_not_hold_the_lock, .timeout = 120)
{
    enum { N = 100000, BASE = 1000000 };
    uint64_t acct;
    uint64_t *ids = many_devices("chunk@example.com", N, &acct);
    struct tide_meta_usage u = {.messages = 1, .points = BASE};
    struct bystander b = {.account_id = acct, .ids = ids, .n_ids = N};
    struct flush_run f = {0};
    pthread_t bt, ft;
    sqlite3 *db;

    atomic_store(&fake_now, T0 + 1000);
    for (int i = 0; i < N; i++)
        tide_meta_device_seen(m, ids[i]);
    CHECK(tide_meta_usage_add(m, acct, &u));
    atomic_store(&fake_now, T0 + 2000);
    cr_assert_eq(pthread_create(&bt, NULL, bystander_main, &b), 0);
    while (!atomic_load(&b.started))
        sched_yield();
    cr_assert_eq(pthread_create(&ft, NULL, flush_main, &f), 0);
    pthread_join(ft, NULL);
    atomic_store(&b.stop, 1);
    pthread_join(bt, NULL);
    CHECK(f.rc);
    cr_assert_eq(b.failures, 0);
    cr_log_info("flush %.1f ms, longest wait %.2f ms, %d bystander calls",
                f.ns / 1e6, b.max_wait_ns / 1e6, b.calls);
    cr_assert_lt(b.max_wait_ns, f.ns / 4,
                 "a bystander waited %.1f ms of a %.1f ms flush",
                 b.max_wait_ns / 1e6, f.ns / 1e6);
    /* What arrived meanwhile is written by the next flush. */
    CHECK(tide_meta_flush(m));
    db = side_db();
    cr_assert_eq(side_int(db,
                          "SELECT count(*) FROM devices WHERE account_id=?1"
                          " AND last_seen_ns=?2",
                          (int64_t)acct, T0 + 2000),
                 b.calls);
    cr_assert_eq(side_int(db,
                          "SELECT count(*) FROM devices WHERE account_id=?1"
                          " AND last_seen_ns=?2",
                          (int64_t)acct, T0 + 1000),
                 N - b.calls);
    cr_assert_eq(side_int(db,
                          "SELECT sum(points) FROM usage_daily"
                          " WHERE account_id=?1 AND ?2=?2",
                          (int64_t)acct, 0),
                 BASE + b.calls);
    sqlite3_close(db);
    tide_free(ids);
}

/* A chunk that fails keeps its rows and those after it for the next
 * flush; the chunks committed before it are not written twice. */
Test(meta, failed_flush_chunk_keeps_its_rows_once)
{
    enum { N = 5000 };
    uint64_t acct;
    uint64_t *ids = many_devices("chunkfail@example.com", N, &acct);
    struct tide_meta_usage u = {.messages = 1, .points = 7};
    char sql[256];
    sqlite3 *db = side_db();

    atomic_store(&fake_now, T0 + 1000);
    CHECK(tide_meta_usage_add(m, acct, &u));
    for (int i = 0; i < N; i++)
        tide_meta_device_seen(m, ids[i]);
    /* The update of one device past the first chunk fails. */
    snprintf(sql, sizeof(sql),
             "CREATE TRIGGER fail_one BEFORE UPDATE OF last_seen_ns ON devices"
             " WHEN new.id=%llu BEGIN SELECT RAISE(ABORT, 'injected'); END",
             (unsigned long long)ids[N - 10]);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(db));
    cr_assert_neq(tide_meta_flush(m), 0, "the injected failure is reported");
    cr_assert_eq(sqlite3_exec(db, "DROP TRIGGER fail_one", NULL, NULL, NULL),
                 SQLITE_OK);
    CHECK(tide_meta_flush(m));
    cr_assert_eq(side_int(db,
                          "SELECT count(*) FROM devices WHERE account_id=?1"
                          " AND last_seen_ns=?2",
                          (int64_t)acct, T0 + 1000),
                 N);
    cr_assert_eq(side_int(db,
                          "SELECT sum(points) FROM usage_daily"
                          " WHERE account_id=?1 AND ?2=?2",
                          (int64_t)acct, 0),
                 7, "usage written once, not again after the retry");
    sqlite3_close(db);
    tide_free(ids);
}

/* account_counts (migration 5) against count(*) over the rows it counts. */
static void counts_match(sqlite3 *db, uint64_t acct, int64_t devices,
                         int64_t series)
{
    cr_assert_eq(side_int(db,
                          "SELECT devices FROM account_counts WHERE"
                          " account_id=?1 AND ?2=?2",
                          (int64_t)acct, 0),
                 devices);
    cr_assert_eq(side_int(db,
                          "SELECT series FROM account_counts WHERE"
                          " account_id=?1 AND ?2=?2",
                          (int64_t)acct, 0),
                 series);
    cr_assert_eq(side_int(db,
                          "SELECT count(*) FROM devices WHERE account_id=?1"
                          " AND ?2=?2",
                          (int64_t)acct, 0),
                 devices);
    cr_assert_eq(side_int(db,
                          "SELECT count(*) FROM series WHERE account_id=?1"
                          " AND deleted_ns IS NULL AND ?2=?2",
                          (int64_t)acct, 0),
                 series);
}

/* The live counts the tier limits read follow registration, device
 * deletion, account deletion and restore; the limit holds on them. */
Test(meta, account_counts_follow_every_change)
{
    static const char *const fields[] = {"a", "b", "c"};
    struct tide_meta_series_key k[6];
    struct tide_meta_tier t;
    uint64_t acct, sid[6], *ids = many_devices("counts@example.com", 5, &acct);
    int rcs[6];
    sqlite3 *db = side_db();

    counts_match(db, acct, 5, 0);
    for (int i = 0; i < 6; i++)
        k[i] = (struct tide_meta_series_key){.account_id = acct,
                                             .device_id = ids[i / 3],
                                             .field = fields[i % 3],
                                             .field_len = 1,
                                             .type = TIDE_TYPE_F64};
    CHECK(tide_meta_series_ensure(m, &admin, k, 6, sid, rcs));
    counts_match(db, acct, 5, 6);
    CHECK(tide_meta_device_delete(m, &admin, acct, ids[0]));
    counts_match(db, acct, 4, 3);
    CHECK(tide_meta_account_delete(m, &admin, acct));
    counts_match(db, acct, 4, 0);
    CHECK(tide_meta_account_restore(m, &admin, acct));
    counts_match(db, acct, 4, 3);
    /* Series limit 4: of two new series one fits. */
    CHECK(tide_meta_tier_get(m, 1, &t));
    t.series_max = 4;
    CHECK(tide_meta_tier_set(m, &admin, &t));
    k[0].device_id = k[1].device_id = ids[2];
    CHECK(tide_meta_series_ensure(m, &admin, k, 2, sid, rcs));
    cr_assert_eq(rcs[0], 0);
    cr_assert_eq(rcs[1], TIDE_EFULL);
    counts_match(db, acct, 4, 4);
    sqlite3_close(db);
    tide_free(ids);
}

/* The flusher writes counters every flush interval but last-seen times
 * only every seen_interval_ms; a reader still sees the exact time, because
 * it flushes first. */
Test(meta, flusher_writes_last_seen_every_seen_interval)
{
    struct tide_meta_options o;
    struct tide_meta_device d;
    struct tide_meta_usage u = {.messages = 1, .points = 3};
    uint64_t acct, *ids = many_devices("seen@example.com", 2, &acct);
    sqlite3 *db = side_db();
    int i;

    tide_meta_close(m);
    opts_fill(&o);
    o.flush_interval_ms = 10;
    o.seen_interval_ms = 3600 * 1000;
    CHECK(tide_meta_open(dir, &o, &m));
    atomic_store(&fake_now, T0 + 1000);
    tide_meta_device_seen(m, ids[0]);
    CHECK(tide_meta_usage_add(m, acct, &u));
    for (i = 0; i < 500; i++) {
        if (side_int(db,
                     "SELECT count(*) FROM usage_daily WHERE account_id=?1"
                     " AND points=?2",
                     (int64_t)acct, 3))
            break;
        usleep(10000);
    }
    cr_assert_lt(i, 500, "the flusher wrote the usage row");
    cr_assert_eq(side_int(db,
                          "SELECT last_seen_ns FROM devices WHERE id=?1"
                          " AND ?2=?2",
                          (int64_t)ids[0], 0),
                 0, "last-seen waits for its own interval");
    CHECK(tide_meta_device_get(m, &admin, acct, ids[0], &d));
    cr_assert_eq(d.last_seen_ns, T0 + 1000);
    cr_assert_eq(side_int(db,
                          "SELECT last_seen_ns FROM devices WHERE id=?1"
                          " AND ?2=?2",
                          (int64_t)ids[0], 0),
                 T0 + 1000, "the reader's flush wrote it");
    sqlite3_close(db);
    tide_free(ids);
}

/* ---- Compaction policy and erasure (issue 11) --------------------------- */

/* True when `needle` occurs in the file `dir`/`name` (absent: false). */
static int file_holds(const char *name, const char *needle)
{
    char path[PATH_MAX];
    FILE *f;
    char *buf;
    long n;
    int found;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "rb");
    if (!f)
        return 0;
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    rewind(f);
    buf = malloc((size_t)n + 1);
    cr_assert(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    found = memmem(buf, (size_t)n, needle, strlen(needle)) != NULL;
    free(buf);
    return found;
}

static int sidecar_holds(const char *needle)
{
    return file_holds("meta.db", needle) || file_holds("meta.db-wal", needle) ||
           file_holds("meta.db-shm", needle);
}

Test(meta, device_delete_keeps_only_the_numbers)
{
    static const char dev_name[] = "erasable-pump-7f3a9c";
    static const char field[] = "erasable-pressure-c81d2e";
    struct tide_meta_principal p;
    struct tide_meta_retention *r;
    struct tide_meta_series_key sk = {0, 0, field, sizeof(field) - 1,
                                      TIDE_TYPE_F64};
    struct tide_meta_series_key other = {0, 0, "kept", 4, TIDE_TYPE_F64};
    uint64_t id = new_owner("erase-dev@example.com", &p), dev, keep, sid, kid;
    uint64_t again, sid2;

    dev = new_device(&p, id, dev_name);
    keep = new_device(&p, id, "kept-device");
    sk.account_id = other.account_id = id;
    sk.device_id = dev;
    other.device_id = keep;
    CHECK(tide_meta_series_ensure(m, &p, &sk, 1, &sid, NULL));
    CHECK(tide_meta_series_ensure(m, &p, &other, 1, &kid, NULL));
    /* A device-offline notification names the device. */
    CHECK(tide_meta_device_connect(m, &p, id, dev, 1, "10.1.1.1"));
    CHECK(tide_meta_device_connect(m, &p, id, dev, 0, NULL));
    CHECK(tide_meta_flush(m));
    /* In plaintext before; sealed from the start when encrypted. */
    cr_assert(env_encrypted() != sidecar_holds(dev_name),
              "the name is there before (in plaintext)");
    cr_assert(sidecar_holds(field));

    /* The delete checkpoints the WAL itself. */
    CHECK(tide_meta_device_delete(m, &p, id, dev));
    cr_assert(!sidecar_holds(dev_name), "device name left in meta.db*");
    cr_assert(!sidecar_holds(field), "field name left in meta.db*");
    cr_assert(env_encrypted() != sidecar_holds("kept-device"),
              "the other device stays");

    /* The policy still knows the erased series, by number. */
    CHECK(tide_meta_retention_load(m, &r));
    cr_assert_eq(r->n_erased, 1);
    cr_assert_eq(r->erased[0].series_id, sid);
    cr_assert_eq(r->erased[0].account_id, id);
    tide_meta_retention_free(r);
    CHECK_RC(tide_meta_series_lookup(m, &sk, &sid2), TIDE_ENOTFOUND);
    CHECK(tide_meta_series_lookup(m, &other, &sid2));
    cr_assert_eq(sid2, kid);

    /* The name can be registered again: a new device, a new series id. */
    again = new_device(&p, id, dev_name);
    cr_assert_neq(again, dev);
    sk.device_id = again;
    CHECK(tide_meta_series_ensure(m, &p, &sk, 1, &sid2, NULL));
    cr_assert_gt(sid2, kid, "series ids are never reused");

    /* After a reopen the erased ids are still there and not reused. */
    tide_meta_close(m);
    open_meta();
    CHECK(tide_meta_retention_load(m, &r));
    cr_assert_eq(r->n_erased, 1);
    cr_assert_eq(r->erased[0].series_id, sid);
    tide_meta_retention_free(r);
    other.field = "fresh";
    other.field_len = 5;
    CHECK(tide_meta_series_ensure(m, &p, &other, 1, &sid, NULL));
    cr_assert_gt(sid, sid2);
}

Test(meta, retention_load_reads_the_policy)
{
    struct tide_meta_principal p1, p2, p3;
    struct tide_meta_retention *r;
    struct tide_meta_tier t = {.id = 7, .name = "brief", .ttl_s = 3};
    uint64_t a1 = new_owner("r1@example.com", &p1);
    uint64_t a2 = new_owner("r2@example.com", &p2);
    uint64_t a3 = new_owner("r3@example.com", &p3);
    uint64_t gen = tide_meta_generation(m);
    int seen = 0;

    CHECK(tide_meta_tier_set(m, &admin, &t));
    cr_assert_gt(tide_meta_generation(m), gen, "a tier change moves it");
    CHECK(tide_meta_account_set_tier(m, &admin, a1, 7, NULL, NULL, NULL));
    CHECK(tide_meta_account_delete(m, &p2, a2));
    CHECK(tide_meta_account_delete(m, &p3, a3));
    gen = tide_meta_generation(m);
    CHECK(tide_meta_account_purge(m, &admin, a3));
    cr_assert_gt(tide_meta_generation(m), gen, "a purge moves it");

    CHECK(tide_meta_retention_load(m, &r));
    cr_assert_eq(r->generation, tide_meta_generation(m));
    cr_assert_eq(r->n_tiers, 3);
    cr_assert_eq(r->tiers[0].id, 1);
    cr_assert_eq(r->tiers[0].ttl_s, 7 * 86400);
    cr_assert_eq(r->tiers[1].id, 2);
    cr_assert_eq(r->tiers[1].ttl_s, 90 * 86400);
    cr_assert_eq(r->tiers[2].id, 7);
    cr_assert_eq(r->tiers[2].ttl_s, 3);
    for (size_t i = 0; i < r->n_accounts; i++) {
        const struct tide_meta_retention_account *a = &r->accounts[i];

        cr_assert_neq(a->id, a3, "a purged account has no row");
        if (a->id == a1) {
            cr_assert_eq(a->tier, 7);
            cr_assert_eq(a->ttl_s, 3);
            cr_assert_eq(a->deleted, 0);
            seen |= 1;
        } else if (a->id == a2) {
            cr_assert_eq(a->tier, 1);
            cr_assert_eq(a->ttl_s, 7 * 86400);
            cr_assert_eq(a->deleted, 1);
            seen |= 2;
        }
    }
    cr_assert_eq(seen, 3);
    cr_assert_eq(r->n_purged, 1);
    cr_assert_eq(r->purged[0], a3);
    cr_assert_eq(r->n_erased, 0);
    tide_meta_retention_free(r);
}

Test(meta, purge_checkpoints_the_sidecar_wal)
{
    static const char email[] = "purged-9b2f41@example.com";
    static const char dev_name[] = "purged-thing-55e0aa";
    struct tide_meta_principal p;
    struct tide_meta_series_key sk = {0, 0, "purged-field-1d77", 17,
                                      TIDE_TYPE_F64};
    struct tide_meta_prune_stats ps;
    struct tide_meta_retention *r;
    char path[PATH_MAX];
    uint64_t id = new_owner(email, &p), sid;

    sk.account_id = id;
    sk.device_id = new_device(&p, id, dev_name);
    CHECK(tide_meta_series_ensure(m, &p, &sk, 1, &sid, NULL));
    CHECK(tide_meta_flush(m));
    cr_assert(env_encrypted() != sidecar_holds(email));
    CHECK(tide_meta_account_delete(m, &p, id));
    /* The grace period ends; the prune purges, then checkpoints. */
    atomic_fetch_add(&fake_now, 31 * DAY_NS);
    CHECK(tide_meta_prune(m, &admin, &ps));
    cr_assert_eq(ps.accounts, 1);
    snprintf(path, sizeof(path), "%s/meta.db-wal", dir);
    cr_assert_eq(test_file_size(path), 0, "meta.db-wal truncated");
    cr_assert(!sidecar_holds(email), "email left in meta.db*");
    cr_assert(!sidecar_holds(dev_name), "device name left in meta.db*");
    cr_assert(!sidecar_holds("purged-field-1d77"), "field left in meta.db*");
    CHECK(tide_meta_retention_load(m, &r));
    cr_assert_eq(r->n_purged, 1);
    cr_assert_eq(r->purged[0], id);
    tide_meta_retention_free(r);
}

Test(meta, migration_4_moves_deleted_device_series)
{
    char sub[1200], path[PATH_MAX];
    struct tide_meta_options o;
    struct tide_meta_retention *r;
    tide_meta *m2;
    sqlite3 *db;
    sqlite3_stmt *st;
    int v;

    snprintf(sub, sizeof(sub), "%s/v3", dir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    snprintf(path, sizeof(path), "%s/meta.db", sub);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    CHECK(tide__meta_migrate(db, 3, &v));
    /* Account 1 with device 1 alive (series 1) and device 2 deleted the
     * old way (series 2 marked deleted, its device row gone); account 2
     * deleted within its grace period (series 3 marked with it). */
    cr_assert_eq(
        sqlite3_exec(db,
                     "INSERT INTO accounts(email, pw_hash, tier, created_ns,"
                     " updated_ns) VALUES('a@x.io', 'x', 1, 1, 1);"
                     "INSERT INTO accounts(email, pw_hash, tier, created_ns,"
                     " updated_ns, deleted_ns) VALUES('b@x.io', 'x', 1, 1, 1,"
                     " 9);"
                     "INSERT INTO devices(account_id, thing_name, created_ns,"
                     " updated_ns) VALUES(1, 'alive', 1, 1);"
                     "INSERT INTO devices(account_id, thing_name, created_ns,"
                     " updated_ns) VALUES(2, 'in-grace', 1, 1);"
                     "INSERT INTO series VALUES(1, 1, 1, 'f', 1, 1, NULL);"
                     "INSERT INTO series VALUES(2, 1, 5, 'old-gone', 1, 1, 5);"
                     "INSERT INTO series VALUES(3, 2, 2, 'g', 1, 1, 9);"
                     "UPDATE counters SET value=4;",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    opts_fill(&o);
    CHECK(tide_meta_open(sub, &o, &m2));
    CHECK(tide_meta_retention_load(m2, &r));
    cr_assert_eq(r->n_erased, 1);
    cr_assert_eq(r->erased[0].series_id, 2);
    cr_assert_eq(r->erased[0].account_id, 1);
    tide_meta_retention_free(r);
    tide_meta_close(m2);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT group_concat(id) FROM series",
                                    -1, &st, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "1,3");
    sqlite3_finalize(st);
    /* Migration 5 counted what was there: live series only. */
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT group_concat(account_id || ':' ||"
                                    " devices || ':' || series) FROM"
                                    " (SELECT * FROM account_counts"
                                    " ORDER BY account_id)",
                                    -1, &st, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "1:1:1,2:1:0");
    sqlite3_finalize(st);
    sqlite3_close(db);
}
