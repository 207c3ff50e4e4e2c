/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration tests of tided's admin requests over raw frames and through
 * libtide and the tide CLI: device and key lists beyond one page, the
 * device selector, and account deletion with its grace period.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "testutil.h"
#include "tide/client.h"
#include "wire.h"

TestSuite(admin, .init = fixture_init, .fini = fixture_fini, .timeout = 120);

/* ---- Helpers ------------------------------------------------------------- */

/* Register devices "d0000".."d<n-1>" of `account`, pipelined; every
 * `tag_every`-th one (0 = none) gets tag fleet=north. */
static void register_devices(int fd, uint64_t account, int n, int tag_every)
{
    Tide__V1__Tag tag = TIDE__V1__TAG__INIT, *tp = &tag;
    uint64_t first = next_rid;

    tag.key = "fleet";
    tag.value = "north";
    for (int i = 0; i < n; i++) {
        Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT;
        Tide__V1__DeviceRegister dr = TIDE__V1__DEVICE_REGISTER__INIT;
        Tide__V1__Device d = TIDE__V1__DEVICE__INIT;
        char name[16];

        snprintf(name, sizeof(name), "d%04d", i);
        d.name = name;
        if (tag_every && i % tag_every == 0) {
            d.tags = &tp;
            d.n_tags = 1;
        }
        dr.device = &d;
        dr.account_id = account;
        e.body_case = TIDE__V1__ENVELOPE__BODY_DEVICE_REGISTER;
        e.device_register = &dr;
        e.request_id = next_rid++;
        cr_assert_eq(wire_send(fd, &e), 0);
    }
    for (int i = 0; i < n; i++) {
        Tide__V1__Envelope *r = wire_recv(fd);

        cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_DEVICE,
                  "register %d: %s", i, wire_why(r));
        cr_assert_eq(r->request_id, first + (uint64_t)i);
        tide_frame_free(r, NULL);
    }
}

/* One DeviceList page; the caller frees the response. */
static Tide__V1__Envelope *device_page(int fd, uint64_t account,
                                       Tide__V1__DeviceSelector *sel,
                                       uint64_t token, uint32_t limit)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__DeviceList dl = TIDE__V1__DEVICE_LIST__INIT;

    dl.account_id = account;
    dl.selector = sel;
    dl.page_token = token;
    dl.limit = limit;
    e.body_case = TIDE__V1__ENVELOPE__BODY_DEVICE_LIST;
    e.device_list = &dl;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_DEVICE_LIST_OK,
              "device list: %s", wire_why(r));
    return r;
}

/* Every page of a DeviceList: marks seen[i] for device d<i>, fails on a
 * device seen twice or named outside 0..n. Returns the device count and
 * the number of pages in *pages. */
static int device_walk(int fd, uint64_t account, Tide__V1__DeviceSelector *sel,
                       uint32_t limit, char *seen, int n, int *pages)
{
    uint64_t token = 0;
    int total = 0;

    *pages = 0;
    do {
        Tide__V1__Envelope *r = device_page(fd, account, sel, token, limit);
        Tide__V1__DeviceListOk *ok = r->device_list_ok;

        cr_assert_leq(ok->n_devices, limit ? limit : 1024);
        for (size_t i = 0; i < ok->n_devices; i++) {
            int k = atoi(ok->devices[i]->name + 1);

            cr_assert(k >= 0 && k < n, "device %s", ok->devices[i]->name);
            cr_assert_eq(seen[k], 0, "%s listed twice", ok->devices[i]->name);
            seen[k] = 1;
            total++;
        }
        cr_assert(ok->next_page_token == 0 || ok->next_page_token > token,
                  "page token %llu does not advance past %llu",
                  (unsigned long long)ok->next_page_token,
                  (unsigned long long)token);
        token = ok->next_page_token;
        tide_frame_free(r, NULL);
        cr_assert_lt(++*pages, 1000, "the pages never end");
    } while (token);
    return total;
}

/* Run the tide CLI with TIDE_KEY=key; returns its exit status and its
 * standard output in out (cap bytes). */
static int cli(const char *key, const char *args, char *out, size_t cap)
{
    char cmd[4096];
    const char *bin = getenv("TIDE_BIN");
    FILE *p;
    size_t n;
    int status;

    snprintf(cmd, sizeof(cmd), "TIDE_KEY='%s' %s --port %d %s", key,
             bin && *bin ? bin : "build/release/tide", srv.port, args);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int count_lines(const char *s, const char *prefix)
{
    int n = 0;

    for (const char *p = s; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p)
        n += !strncmp(p, prefix, strlen(prefix));
    return n;
}

static int count_substr(const char *s, const char *needle)
{
    int n = 0;

    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* ---- Lists --------------------------------------------------------------- */

enum { DEVICES = 1100 };

Test(admin, device_list_pages_past_1024_and_honours_the_selector)
{
    static char seen[DEVICES];
    int fd = wire_session(srv.port, srv.admin_key), pages, n;
    Tide__V1__DeviceSelector sel = TIDE__V1__DEVICE_SELECTOR__INIT;
    Tide__V1__TagMatch tm = TIDE__V1__TAG_MATCH__INIT, *tmp = &tm;
    char *names[3] = {"d0005", "d1099", "nope"};
    Tide__V1__Envelope *r;
    uint64_t account;

    cr_assert_geq(fd, 0);
    account = wire_make_account(fd, "lists@example.com");
    register_devices(fd, account, DEVICES, 10);

    /* No selector: every device once, over two pages of at most 1024. */
    memset(seen, 0, sizeof(seen));
    n = device_walk(fd, account, NULL, 0, seen, DEVICES, &pages);
    cr_assert_eq(n, DEVICES, "listed %d of %d devices", n, DEVICES);
    cr_assert_eq(pages, 2);
    r = device_page(fd, account, NULL, 0, 0);
    cr_assert_eq(r->device_list_ok->n_devices, 1024);
    cr_assert_neq(r->device_list_ok->next_page_token, 0);
    tide_frame_free(r, NULL);

    /* Small pages: the same devices, 7 at most per page. */
    memset(seen, 0, sizeof(seen));
    n = device_walk(fd, account, NULL, 7, seen, DEVICES, &pages);
    cr_assert_eq(n, DEVICES);
    cr_assert_eq(pages, (DEVICES + 6) / 7);

    /* Names: only those, an unknown one ignored. */
    sel.names = names;
    sel.n_names = 3;
    memset(seen, 0, sizeof(seen));
    n = device_walk(fd, account, &sel, 0, seen, DEVICES, &pages);
    cr_assert_eq(n, 2, "names selected %d devices", n);
    cr_assert(seen[5] && seen[1099]);

    /* A tag: every tenth device, also when paged by 3. */
    tm.key = "fleet";
    tm.value = "north";
    sel.n_names = 0;
    sel.tags = &tmp;
    sel.n_tags = 1;
    memset(seen, 0, sizeof(seen));
    n = device_walk(fd, account, &sel, 3, seen, DEVICES, &pages);
    cr_assert_eq(n, DEVICES / 10, "tag selected %d devices", n);
    for (int i = 0; i < DEVICES; i++)
        cr_assert_eq(seen[i], i % 10 == 0, "device d%04d", i);
    /* Names and tags are ANDed: d1099 has no tag. */
    sel.names = names;
    sel.n_names = 2;
    memset(seen, 0, sizeof(seen));
    n = device_walk(fd, account, &sel, 0, seen, DEVICES, &pages);
    cr_assert_eq(n, 0, "names and tag selected %d devices", n);
    close(fd);
}

Test(admin, clients_follow_device_and_key_pages)
{
    static char out[1 << 20];
    int fd = wire_session(srv.port, srv.admin_key);
    struct tide_client_options o;
    tide_client *c = NULL;
    tide_result *res = NULL;
    char arg[1][64], args_s[128];
    const char *args[2];
    uint64_t account;
    int rc;

    cr_assert_geq(fd, 0);
    account = wire_make_account(fd, "pages@example.com");
    register_devices(fd, account, DEVICES, 0);
    /* Five analyst keys. */
    for (int i = 0; i < 5; i++) {
        Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
        Tide__V1__KeyCreate kc = TIDE__V1__KEY_CREATE__INIT;

        kc.name = "analyst";
        kc.role = TIDE__V1__ROLE__ROLE_ANALYST;
        kc.account_id = account;
        e.body_case = TIDE__V1__ENVELOPE__BODY_KEY_CREATE;
        e.key_create = &kc;
        r = wire_next(fd, &e);
        cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_KEY_CREATE_OK,
                  "key create: %s", wire_why(r));
        tide_frame_free(r, NULL);
    }
    close(fd);

    /* libtide: one call, every page. */
    tide_client_options_init(&o);
    o.port = (uint16_t)srv.port;
    o.api_key = srv.admin_key;
    cr_assert_eq(tide_client_open(&o, &c), 0);
    snprintf(arg[0], sizeof(arg[0]), "account_id=%llu",
             (unsigned long long)account);
    args[0] = arg[0];
    rc = tide_client_call(c, "device_list", args, 1, &res);
    cr_assert_eq(rc, 0, "device_list: %s", tide_strerror(rc));
    cr_assert_eq(tide_result_rows(res), DEVICES);
    cr_assert_str_eq(tide_result_find(res, DEVICES - 1, "name"), "d1099");
    tide_result_free(res);
    args[1] = "limit=2";
    rc = tide_client_call(c, "key_list", args, 2, &res);
    cr_assert_eq(rc, 0, "key_list: %s", tide_strerror(rc));
    cr_assert_eq(tide_result_rows(res), 5, "%zu keys", tide_result_rows(res));
    tide_result_free(res);
    /* A page the caller picks is that page alone. */
    {
        const char *a3[3] = {args[0], "limit=3", "page_token=1"};

        rc = tide_client_call(c, "key_list", a3, 3, &res);
        cr_assert_eq(rc, 0, "key_list: %s", tide_strerror(rc));
        cr_assert_eq(tide_result_rows(res), 3);
        tide_result_free(res);
    }
    tide_client_close(c);

    /* The CLI. */
    snprintf(args_s, sizeof(args_s), "--output csv device list account_id=%llu",
             (unsigned long long)account);
    cr_assert_eq(cli(srv.admin_key, args_s, out, sizeof(out)), 0, "%s", out);
    cr_assert_eq(count_lines(out, "d"), DEVICES, "CLI listed %d devices",
                 count_lines(out, "d"));
    snprintf(args_s, sizeof(args_s),
             "--output csv device list d0003 d0042 account_id=%llu",
             (unsigned long long)account);
    cr_assert_eq(cli(srv.admin_key, args_s, out, sizeof(out)), 0, "%s", out);
    cr_assert_eq(count_lines(out, "d"), 2, "%s", out);
    snprintf(args_s, sizeof(args_s),
             "--output csv key list limit=2 account_id=%llu",
             (unsigned long long)account);
    cr_assert_eq(cli(srv.admin_key, args_s, out, sizeof(out)), 0, "%s", out);
    cr_assert_eq(count_substr(out, ",analyst,"), 5, "%s", out);
}

/* ---- Account deletion ---------------------------------------------------- */

static void setup_grace(void)
{
    static const char *const settings[] = {"delete_grace_s=3600", NULL};

    fixture_start(settings);
}

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* AccountDelete on `fd`; returns the response (caller frees). */
static Tide__V1__Envelope *account_delete(int fd, uint64_t account,
                                          const char *password, int immediate)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__AccountDelete ad = TIDE__V1__ACCOUNT_DELETE__INIT;

    ad.account_id = account;
    ad.password = (char *)password;
    ad.immediate = immediate;
    e.body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_DELETE;
    e.account_delete = &ad;
    return wire_next(fd, &e);
}

/* Assert an AccountDeleteOk whose purge time is `after_s` from now. */
static void expect_purge_after(Tide__V1__Envelope *r, int64_t after_s)
{
    int64_t want = now_ns() + after_s * 1000000000, got;

    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_ACCOUNT_DELETE_OK,
              "account delete: %s", wire_why(r));
    got = r->account_delete_ok->purge_after_ns;
    cr_assert(got > want - 60 * 1000000000ll && got <= want,
              "purge_after_ns %lld, expected about %lld", (long long)got,
              (long long)want);
    tide_frame_free(r, NULL);
}

/* AccountRestore as the operator; returns the response's body case, or
 * the error code negated. */
static int restore(int fd, uint64_t account)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__AccountRestore ar = TIDE__V1__ACCOUNT_RESTORE__INIT;
    int got;

    ar.account_id = account;
    e.body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_RESTORE;
    e.account_restore = &ar;
    r = wire_next(fd, &e);
    cr_assert_not_null(r, "restore: no response");
    got = r->body_case == TIDE__V1__ENVELOPE__BODY_ERROR ? -(int)r->error->code
                                                         : (int)r->body_case;
    tide_frame_free(r, NULL);
    return got;
}

Test(admin_grace, delete_uses_the_configured_grace, .init = setup_grace,
     .fini = fixture_fini, .timeout = 60)
{
    int fd = wire_session(srv.port, srv.admin_key);
    uint64_t account;

    cr_assert_geq(fd, 0);
    account = wire_make_account(fd, "grace@example.com");
    expect_purge_after(account_delete(fd, account, "", 0), 3600);
    /* Within the grace period: restorable. */
    cr_assert_eq(restore(fd, account), TIDE__V1__ENVELOPE__BODY_OK);
    close(fd);
}

Test(admin_grace, immediate_delete_purges_now, .init = setup_grace,
     .fini = fixture_fini, .timeout = 60)
{
    int fd = wire_session(srv.port, srv.admin_key), ofd;
    uint64_t a, b;

    cr_assert_geq(fd, 0);
    /* The operator. */
    a = wire_make_account(fd, "now-op@example.com");
    expect_purge_after(account_delete(fd, a, "", 1), 0);
    cr_assert_eq(restore(fd, a), -TIDE__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND,
                 "a purged account cannot be restored");
    /* Its email is free again. */
    cr_assert_neq(wire_make_account(fd, "now-op@example.com"), a);

    /* The owner, with the password; a wrong one deletes nothing. */
    b = wire_make_account(fd, "now-owner@example.com");
    ofd = wire_owner_session(srv.port, "now-owner@example.com");
    {
        Tide__V1__Envelope *r = account_delete(ofd, 0, "wrong", 1);

        cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_ERROR &&
                      r->error->code ==
                          TIDE__V1__ERROR_CODE__ERROR_CODE_AUTH_FAILED,
                  "wrong password: %s", wire_why(r));
        tide_frame_free(r, NULL);
    }
    close(ofd);
    cr_assert_eq(restore(fd, b), -TIDE__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND,
                 "nothing was deleted");
    ofd = wire_owner_session(srv.port, "now-owner@example.com");
    expect_purge_after(account_delete(ofd, 0, "correct horse battery", 1), 0);
    close(ofd);
    cr_assert_eq(restore(fd, b), -TIDE__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND,
                 "a purged account cannot be restored");
    close(fd);
}
