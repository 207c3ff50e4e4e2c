/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration tests of tided's admin requests over raw frames and through
 * libtide and the tide CLI: device and key lists beyond one page, the
 * device selector, and account deletion with its grace period.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "proc.h"
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
        char key[128];

        wire_key_create(fd, account, "analyst", TIDE__V1__ROLE__ROLE_ANALYST,
                        NULL, key, sizeof(key));
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
    cr_assert_eq(fixture_cli(srv.admin_key, args_s, NULL, out, sizeof(out)), 0,
                 "%s", out);
    cr_assert_eq(count_lines(out, "d"), DEVICES, "CLI listed %d devices",
                 count_lines(out, "d"));
    snprintf(args_s, sizeof(args_s),
             "--output csv device list d0003 d0042 account_id=%llu",
             (unsigned long long)account);
    cr_assert_eq(fixture_cli(srv.admin_key, args_s, NULL, out, sizeof(out)), 0,
                 "%s", out);
    cr_assert_eq(count_lines(out, "d"), 2, "%s", out);
    snprintf(args_s, sizeof(args_s),
             "--output csv key list limit=2 account_id=%llu",
             (unsigned long long)account);
    cr_assert_eq(fixture_cli(srv.admin_key, args_s, NULL, out, sizeof(out)), 0,
                 "%s", out);
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

/* ---- Hardening (issue #10): bcrypt off the loop, authorization ---------- */

TestSuite(admin_hardening, .init = fixture_init, .fini = fixture_fini,
          .timeout = 60);

/* A connection from source address `ip` (any 127.x.y.z reaches the
 * server's 127.0.0.1), so that tests can play distinct clients; 10 s
 * receive timeout, as wire_connect(). */
static int connect_from(const char *ip)
{
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = src;
    struct timeval tv = {10, 0};
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    cr_assert_geq(fd, 0);
    inet_pton(AF_INET, ip, &src.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
    dst.sin_port = htons((uint16_t)srv.port);
    cr_assert_eq(bind(fd, (struct sockaddr *)&src, sizeof(src)), 0, "bind %s",
                 ip);
    cr_assert_eq(connect(fd, (struct sockaddr *)&dst, sizeof(dst)), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* The error code of `r`, 0 when it is not an Error, -1 without one. */
static int code_of(const Tide__V1__Envelope *r)
{
    return !r ? -1
           : r->body_case == TIDE__V1__ENVELOPE__BODY_ERROR
               ? (int)r->error->code
               : 0;
}

/* Auth with a session token or an API key on `fd`; the response code as
 * code_of(). */
static int auth_with(int fd, const char *token, int is_key)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Auth a = TIDE__V1__AUTH__INIT;
    int code;

    if (is_key) {
        a.credential_case = TIDE__V1__AUTH__CREDENTIAL_API_KEY;
        a.api_key = (char *)token;
    } else {
        a.credential_case = TIDE__V1__AUTH__CREDENTIAL_SESSION_TOKEN;
        a.session_token = (char *)token;
    }
    e.body_case = TIDE__V1__ENVELOPE__BODY_AUTH;
    e.auth = &a;
    r = wire_next(fd, &e);
    code = code_of(r);
    cr_assert(code == 0 ? r->body_case == TIDE__V1__ENVELOPE__BODY_AUTH_OK : 1);
    tide_frame_free(r, NULL);
    return code;
}

/* Log `email` in on a new connection; its session token into token[256]. */
static void login_token(const char *email, char *token)
{
    int fd = wire_hello_connect(srv.port);

    wire_login(fd, email, token, 256);
    close(fd);
}

/* An anonymous AccountCreate of `email` with request id `rid`. */
static void signup_env(Tide__V1__Envelope *e, Tide__V1__AccountCreate *ac,
                       const char *email, uint64_t rid)
{
    tide__v1__envelope__init(e);
    tide__v1__account_create__init(ac);
    ac->email = (char *)email;
    ac->password = "correct horse battery";
    e->body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_CREATE;
    e->account_create = ac;
    e->request_id = rid;
}

/* Send envs[0..n) as one write, so that the server finds them all in its
 * input at once. */
static void send_pipelined(int fd, Tide__V1__Envelope *envs, int n)
{
    size_t total = 0, at = 0;
    uint8_t *buf;

    for (int i = 0; i < n; i++)
        total += tide_frame_size(&envs[i]);
    buf = malloc(total);
    cr_assert_not_null(buf);
    for (int i = 0; i < n; i++)
        at += (size_t)tide_frame_encode(&envs[i], buf + at, total - at);
    cr_assert_eq(at, total);
    cr_assert_eq(wire_send_raw(fd, buf, total), 0);
    free(buf);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* The p-th percentile (0..100) of v[0..n), sorting v. */
static int64_t percentile(int64_t *v, size_t n, int p)
{
    size_t i;

    qsort(v, n, sizeof(*v), cmp_i64);
    i = (n * (size_t)p + 99) / 100;
    return v[i ? i - 1 : 0];
}

/* bcrypt cost 10 (~80 ms a hash here): on the loop, each sign-up would
 * stall every connection that long. */
static void setup_bcrypt(void)
{
    static const char *const settings[] = {"bcrypt_cost=10", NULL};

    fixture_start(settings);
}

/* A one-point write of dev1/temp at `ts`, request id `rid`, unanswered. */
static void send_point(int fd, uint64_t rid, int64_t ts)
{
    struct wire_batch b;
    Tide__V1__Envelope *e;
    double v = (double)ts;

    e = wire_batch_f64(&b, "dev1", "temp", &ts, &v, 1);
    e->request_id = rid;
    cr_assert_eq(wire_send(fd, e), 0);
}

enum { SIGNUPS = 50, PINGS = 150 };

/* The bound on a bystander's Ping p99 while sign-ups hash; the
 * sanitizers' build runs the loop about three times slower. */
#if defined(__SANITIZE_ADDRESS__)
#define PING_P99_MAX_US 60000
#else
#define PING_P99_MAX_US 20000
#endif

Test(admin_hardening, pipelined_signups_do_not_stall_a_bystander,
     .init = setup_bcrypt, .fini = fixture_fini, .timeout = 120)
{
    static Tide__V1__Envelope envs[SIGNUPS];
    static Tide__V1__AccountCreate acs[SIGNUPS];
    static char emails[SIGNUPS][64];
    int64_t ping_us[PINGS], ack_us[PINGS / 10];
    int op = wire_session(srv.port, srv.admin_key), dev, anon, n_ack = 0;
    int created = 0, limited = 0;
    char key[128];
    uint64_t account;

    cr_assert_geq(op, 0);
    account = wire_make_account(op, "bystander@example.com");
    wire_device_register(op, account, "dev1");
    wire_key_create(op, account, "dev", TIDE__V1__ROLE__ROLE_DEVICE, "dev1",
                    key, sizeof(key));
    dev = wire_session(srv.port, key);
    cr_assert_geq(dev, 0);
    anon = wire_hello_connect(srv.port);
    for (int i = 0; i < SIGNUPS; i++) {
        snprintf(emails[i], sizeof(emails[i]), "signup%02d@example.com", i);
        signup_env(&envs[i], &acs[i], emails[i], 1000 + (uint64_t)i);
    }
    send_pipelined(anon, envs, SIGNUPS);

    /* The bystander: a Ping every 10 ms on a fixed schedule, whatever the
     * answers do, and a one-point write with every tenth; each latency is
     * from its send to its answer, so a stall shows in every request sent
     * during it. */
    {
        int64_t ping_at[PINGS], ack_at[PINGS / 10], t0 = proc_now_us();
        int sent = 0, pongs = 0, acks = 0;

        while (pongs < PINGS || acks < n_ack) {
            int64_t now = proc_now_us(), next = t0 + (int64_t)sent * 10000;
            struct pollfd pfd = {.fd = dev, .events = POLLIN};
            Tide__V1__Envelope *r;

            cr_assert_lt(now - t0, 60000000, "bystander answers missing");
            if (sent < PINGS && now >= next) {
                Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT;
                Tide__V1__Ping p = TIDE__V1__PING__INIT;

                p.nonce = (uint64_t)sent;
                e.body_case = TIDE__V1__ENVELOPE__BODY_PING;
                e.ping = &p;
                e.request_id = 10000 + (uint64_t)sent;
                ping_at[sent] = now;
                cr_assert_eq(wire_send(dev, &e), 0);
                if (sent % 10 == 0) {
                    send_point(dev, 20000 + (uint64_t)n_ack, T0 + sent);
                    ack_at[n_ack++] = now;
                }
                sent++;
                continue;
            }
            if (poll(&pfd, 1,
                     sent < PINGS ? (int)((next - now) / 1000) + 1 : 1000) < 1)
                continue;
            r = wire_recv(dev);
            now = proc_now_us();
            cr_assert_not_null(r, "bystander connection lost");
            if (r->body_case == TIDE__V1__ENVELOPE__BODY_PONG) {
                ping_us[pongs++] = now - ping_at[r->pong->nonce];
            } else {
                cr_assert(r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK,
                          "write: %s", wire_why(r));
                ack_us[acks++] = now - ack_at[r->request_id - 20000];
            }
            tide_frame_free(r, NULL);
        }
    }
    /* Every sign-up is answered: created (Ok, the same for any email) or
     * refused for its address's rate. */
    for (int i = 0; i < SIGNUPS; i++) {
        Tide__V1__Envelope *r = wire_recv(anon);
        int code = code_of(r);

        cr_assert(r, "sign-up %d unanswered", i);
        if (code == 0)
            created++;
        else if (code == TIDE__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED ||
                 code == TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED)
            limited++;
        else
            cr_assert_fail("sign-up %d: %s", i, wire_why(r));
        tide_frame_free(r, NULL);
    }
    {
        int64_t p50 = percentile(ping_us, PINGS, 50);
        int64_t p99 = percentile(ping_us, PINGS, 99);
        int64_t max = ping_us[PINGS - 1];
        int64_t a50 = percentile(ack_us, (size_t)n_ack, 50);
        int64_t a99 = percentile(ack_us, (size_t)n_ack, 99);

        cr_log_info("bystander Ping p50 %lld us p99 %lld us max %lld us; "
                    "WriteAck p50 %lld us p99 %lld us; sign-ups %d created, "
                    "%d refused",
                    (long long)p50, (long long)p99, (long long)max,
                    (long long)a50, (long long)a99, created, limited);
        fprintf(stderr,
                "signup-stall: ping p50=%lldus p99=%lldus max=%lldus "
                "ack p50=%lldus p99=%lldus created=%d refused=%d\n",
                (long long)p50, (long long)p99, (long long)max, (long long)a50,
                (long long)a99, created, limited);
        cr_assert_lt(p99, PING_P99_MAX_US,
                     "bystander Ping p99 %lld us (max %lld us)", (long long)p99,
                     (long long)max);
    }
    cr_assert_gt(limited, 0, "50 sign-ups from one address, none throttled");
    close(anon);
    close(dev);
    close(op);
}

static void setup_inflight(void)
{
    static const char *const settings[] = {"bcrypt_cost=10", "max_inflight=2",
                                           NULL};

    fixture_start(settings);
}

Test(admin_hardening, admin_requests_count_toward_max_inflight,
     .init = setup_inflight, .fini = fixture_fini, .timeout = 60)
{
    Tide__V1__Envelope envs[4];
    Tide__V1__AccountCreate acs[4];
    char emails[4][64];
    int op = wire_session(srv.port, srv.admin_key), busy = 0, ok = 0;

    cr_assert_geq(op, 0);
    for (int i = 0; i < 4; i++) {
        snprintf(emails[i], sizeof(emails[i]), "inflight%d@example.com", i);
        signup_env(&envs[i], &acs[i], emails[i], 500 + (uint64_t)i);
    }
    send_pipelined(op, envs, 4);
    for (int i = 0; i < 4; i++) {
        Tide__V1__Envelope *r = wire_recv(op);
        int code = code_of(r);

        cr_assert(r, "request %d unanswered", i);
        if (code == TIDE__V1__ERROR_CODE__ERROR_CODE_TOO_MANY_REQUESTS)
            busy++;
        else if (code == 0)
            ok++;
        else
            cr_assert_fail("request %d: %s", i, wire_why(r));
        tide_frame_free(r, NULL);
    }
    cr_assert_eq(ok, 2, "%d of 4 accepted with max_inflight=2", ok);
    cr_assert_eq(busy, 2);
    close(op);
}

Test(admin_hardening, signups_are_throttled_per_address)
{
    int fd = connect_from("127.0.0.7"), other, limited = 0, created = 0;

    wire_hello(fd);
    for (int i = 0; i < 12; i++) {
        Tide__V1__Envelope e, *r;
        Tide__V1__AccountCreate ac;
        char email[64];

        snprintf(email, sizeof(email), "rate%02d@example.com", i);
        signup_env(&e, &ac, email, 0);
        r = wire_next(fd, &e);
        if (code_of(r) == TIDE__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED) {
            cr_assert_gt(r->error->retry_after_ms, 0);
            limited++;
        } else {
            cr_assert_eq(code_of(r), 0, "sign-up %d: %s", i, wire_why(r));
            created++;
        }
        tide_frame_free(r, NULL);
    }
    cr_assert_gt(limited, 0, "12 sign-ups in a row from one address");
    cr_assert_geq(created, 3, "the first sign-ups go through");
    /* Another address is not affected. */
    other = connect_from("127.0.0.8");
    wire_hello(other);
    {
        Tide__V1__Envelope e, *r;
        Tide__V1__AccountCreate ac;

        signup_env(&e, &ac, "rate-other@example.com", 0);
        r = wire_next(other, &e);
        cr_assert_eq(code_of(r), 0, "other address: %s", wire_why(r));
        tide_frame_free(r, NULL);
    }
    close(other);
    close(fd);
}

Test(admin_hardening, signup_answers_the_same_for_an_existing_email)
{
    int op = wire_session(srv.port, srv.admin_key), fd;
    Tide__V1__Envelope *fresh, *dup, e;
    Tide__V1__AccountCreate ac;
    size_t nf, nd;

    cr_assert_geq(op, 0);
    wire_make_account(op, "bob@example.com");
    fd = wire_hello_connect(srv.port);
    signup_env(&e, &ac, "new-person@example.com", 0);
    fresh = wire_next(fd, &e);
    signup_env(&e, &ac, "Bob@Example.com", 0);
    dup = wire_next(fd, &e);
    cr_assert(fresh && dup);
    cr_assert_eq(code_of(fresh), 0, "new email: %s", wire_why(fresh));
    cr_assert_eq(code_of(dup), 0, "existing email: %s", wire_why(dup));
    cr_assert_eq(fresh->body_case, dup->body_case);
    /* Same shape, same size: nothing that tells the two apart. */
    fresh->request_id = dup->request_id = 0;
    nf = tide_frame_size(fresh);
    nd = tide_frame_size(dup);
    cr_assert_eq(nf, nd, "answers of %zu and %zu bytes", nf, nd);
    cr_assert(fresh->body_case != TIDE__V1__ENVELOPE__BODY_ACCOUNT_CREATE_OK ||
                  !fresh->account_create_ok->account ||
                  fresh->account_create_ok->account->id == 0,
              "an anonymous sign-up discloses no account id");
    tide_frame_free(fresh, NULL);
    tide_frame_free(dup, NULL);
    /* The owner of the existing address hears of the attempt. */
    {
        Tide__V1__Envelope q = TIDE__V1__ENVELOPE__INIT, *r;
        Tide__V1__NotificationList nl = TIDE__V1__NOTIFICATION_LIST__INIT;
        int found = 0;

        nl.account_id = 0;
        close(fd);
        fd = wire_owner_session(srv.port, "bob@example.com");
        q.body_case = TIDE__V1__ENVELOPE__BODY_NOTIFICATION_LIST;
        q.notification_list = &nl;
        r = wire_next(fd, &q);
        cr_assert(r && r->body_case ==
                           TIDE__V1__ENVELOPE__BODY_NOTIFICATION_LIST_OK);
        for (size_t i = 0; i < r->notification_list_ok->n_notifications; i++)
            found |= strstr(r->notification_list_ok->notifications[i]->message,
                            "sign-up") != NULL;
        cr_assert(found, "no notice of the sign-up attempt");
        tide_frame_free(r, NULL);
    }
    close(fd);
    close(op);
}

/* wire_next() `e` on `fd` and expect the answer's code_of() to be `code`;
 * `what` names the request on failure. */
static void expect_code(int fd, Tide__V1__Envelope *e, int code,
                        const char *what)
{
    Tide__V1__Envelope *r = wire_next(fd, e);

    cr_assert_eq(code_of(r), code, "%s: %s", what, wire_why(r));
    tide_frame_free(r, NULL);
}

/* ServerStatus and TierList as `fd`'s principal: the two response codes. */
static void status_and_tiers(int fd, int *status, int *tiers)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__ServerStatus ss = TIDE__V1__SERVER_STATUS__INIT;
    Tide__V1__TierList tl = TIDE__V1__TIER_LIST__INIT;

    e.body_case = TIDE__V1__ENVELOPE__BODY_SERVER_STATUS;
    e.server_status = &ss;
    r = wire_next(fd, &e);
    *status = code_of(r);
    tide_frame_free(r, NULL);
    e.body_case = TIDE__V1__ENVELOPE__BODY_TIER_LIST;
    e.tier_list = &tl;
    r = wire_next(fd, &e);
    *tiers = code_of(r);
    tide_frame_free(r, NULL);
}

Test(admin_hardening, server_status_and_tier_list_are_authorized)
{
    const int denied = TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED;
    int op = wire_session(srv.port, srv.admin_key), fd, st, tl;
    char dkey[128], akey[128];
    uint64_t account;

    cr_assert_geq(op, 0);
    account = wire_make_account(op, "status@example.com");
    wire_device_register(op, account, "dev1");
    wire_key_create(op, account, "dev", TIDE__V1__ROLE__ROLE_DEVICE, "dev1",
                    dkey, sizeof(dkey));
    wire_key_create(op, account, "an", TIDE__V1__ROLE__ROLE_ANALYST, NULL, akey,
                    sizeof(akey));
    status_and_tiers(op, &st, &tl);
    cr_assert(st == 0 && tl == 0, "operator: %d %d", st, tl);
    fd = wire_owner_session(srv.port, "status@example.com");
    status_and_tiers(fd, &st, &tl);
    cr_assert(st == denied && tl == 0, "owner: %d %d", st, tl);
    close(fd);
    fd = wire_session(srv.port, akey);
    status_and_tiers(fd, &st, &tl);
    cr_assert(st == denied && tl == denied, "analyst: %d %d", st, tl);
    close(fd);
    fd = wire_session(srv.port, dkey);
    status_and_tiers(fd, &st, &tl);
    cr_assert(st == denied && tl == denied, "device: %d %d", st, tl);
    close(fd);
    close(op);
}

Test(admin_hardening, a_foreign_account_id_is_denied)
{
    const int denied = TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED;
    int op = wire_session(srv.port, srv.admin_key), fd;
    uint64_t a, b;
    char akey[128];

    cr_assert_geq(op, 0);
    a = wire_make_account(op, "alice@example.com");
    b = wire_make_account(op, "mallory@example.com");
    wire_key_create(op, b, "an", TIDE__V1__ROLE__ROLE_ANALYST, NULL, akey,
                    sizeof(akey));
    fd = wire_owner_session(srv.port, "alice@example.com");
    /* AccountDelete{b} with alice's right password: refused, nobody
     * deleted (it used to delete alice's own account). */
    {
        Tide__V1__Envelope *r =
            account_delete(fd, b, "correct horse battery", 0);

        cr_assert_eq(code_of(r), denied, "delete of another account: %s",
                     wire_why(r));
        tide_frame_free(r, NULL);
    }
    {
        Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
        Tide__V1__AccountGet ag = TIDE__V1__ACCOUNT_GET__INIT;
        Tide__V1__KeyList kl = TIDE__V1__KEY_LIST__INIT;

        ag.account_id = b;
        e.body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_GET;
        e.account_get = &ag;
        expect_code(fd, &e, denied, "get of another");
        /* Naming one's own account is fine. */
        ag.account_id = a;
        r = wire_next(fd, &e);
        cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_ACCOUNT &&
                      r->account->id == a,
                  "get of own: %s", wire_why(r));
        tide_frame_free(r, NULL);
        kl.account_id = b;
        e.body_case = TIDE__V1__ENVELOPE__BODY_KEY_LIST;
        e.key_list = &kl;
        expect_code(fd, &e, denied, "keys of another");
    }
    close(fd);
    /* An analyst of b naming a in a device list, a query and an export
     * (the last two used to read b's own). */
    fd = wire_session(srv.port, akey);
    {
        Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT;
        Tide__V1__DeviceList dl = TIDE__V1__DEVICE_LIST__INIT;
        Tide__V1__Query q = TIDE__V1__QUERY__INIT;
        Tide__V1__ExportStart x = TIDE__V1__EXPORT_START__INIT;

        dl.account_id = a;
        e.body_case = TIDE__V1__ENVELOPE__BODY_DEVICE_LIST;
        e.device_list = &dl;
        expect_code(fd, &e, denied, "analyst");
        q.account_id = a;
        q.to_ns = INT64_MAX;
        e.body_case = TIDE__V1__ENVELOPE__BODY_QUERY;
        e.query = &q;
        expect_code(fd, &e, denied, "query of another");
        x.account_id = a;
        x.to_ns = INT64_MAX;
        e.body_case = TIDE__V1__ENVELOPE__BODY_EXPORT_START;
        e.export_start = &x;
        expect_code(fd, &e, denied, "export of another");
    }
    close(fd);
    /* Both accounts are still there. */
    cr_assert_eq(restore(op, a), -TIDE__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND);
    cr_assert_eq(restore(op, b), -TIDE__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND);
    close(op);
}

/* PasswordChange{old} on `fd`; the response code. */
static int password_change(int fd, const char *old)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__PasswordChange pc = TIDE__V1__PASSWORD_CHANGE__INIT;
    int code;

    pc.old_password = (char *)old;
    pc.new_password = "a brand new password";
    e.body_case = TIDE__V1__ENVELOPE__BODY_PASSWORD_CHANGE;
    e.password_change = &pc;
    r = wire_next(fd, &e);
    code = code_of(r);
    tide_frame_free(r, NULL);
    return code;
}

Test(admin_hardening, password_guessing_per_account_ends_the_session)
{
    int op = wire_session(srv.port, srv.admin_key), fd, refused_at = -1;
    char token[256], ip[32];

    cr_assert_geq(op, 0);
    wire_make_account(op, "guess@example.com");
    login_token("guess@example.com", token);
    /* A guesser holding the session, from a new address each time so that
     * only the account's count can stop it. */
    for (int i = 0; i < 10 && refused_at < 0; i++) {
        int code;

        snprintf(ip, sizeof(ip), "127.0.1.%d", 10 + i);
        fd = connect_from(ip);
        wire_hello(fd);
        code = auth_with(fd, token, 0);
        /* Alternately through PasswordChange and AccountDelete. */
        if (code == 0 && i % 2) {
            Tide__V1__Envelope *r = account_delete(fd, 0, "guess-1234", 1);

            code = code_of(r);
            tide_frame_free(r, NULL);
        } else if (code == 0) {
            code = password_change(fd, "guess-1234");
        }
        if (code != TIDE__V1__ERROR_CODE__ERROR_CODE_AUTH_FAILED || i >= 5)
            refused_at = i;
        close(fd);
    }
    cr_assert(refused_at >= 0 && refused_at <= 5,
              "10 wrong passwords on one session, never stopped");
    /* The session is over: even the right password cannot use it. */
    fd = connect_from("127.0.1.99");
    wire_hello(fd);
    cr_assert_neq(auth_with(fd, token, 0), 0, "the guessed-on session lives");
    close(fd);
    close(op);
}

Test(admin_hardening, password_guessing_counts_per_address)
{
    int op = wire_session(srv.port, srv.admin_key), fd, code;
    char token[256];

    cr_assert_geq(op, 0);
    wire_make_account(op, "victim1@example.com");
    wire_make_account(op, "victim2@example.com");
    login_token("victim1@example.com", token);
    /* Four wrong confirmations from one address, each on a new connection
     * of the same session. */
    for (int i = 0; i < 4; i++) {
        fd = connect_from("127.0.2.1");
        wire_hello(fd);
        cr_assert_eq(auth_with(fd, token, 0), 0, "attempt %d", i);
        code = password_change(fd, "not the password");
        cr_assert_eq(code, TIDE__V1__ERROR_CODE__ERROR_CODE_AUTH_FAILED,
                     "attempt %d: %d", i, code);
        close(fd);
    }
    /* One more failure of any kind from there makes five: the address is
     * throttled, for a login of another account too. */
    fd = connect_from("127.0.2.1");
    wire_hello(fd);
    cr_assert_eq(auth_with(fd,
                           "tide_live_"
                           "00000000000000000000000000000000"
                           "0000000000000000",
                           1),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_AUTH_FAILED);
    close(fd);
    fd = connect_from("127.0.2.1");
    wire_hello(fd);
    {
        Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT;
        Tide__V1__Login l = TIDE__V1__LOGIN__INIT;

        l.email = "victim2@example.com";
        l.password = "correct horse battery";
        e.body_case = TIDE__V1__ENVELOPE__BODY_LOGIN;
        e.login = &l;
        expect_code(fd, &e, TIDE__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED,
                    "login after five failures");
    }
    close(fd);
    close(op);
}

/* Auth with `key` followed by a NUL and `tail` (a raw frame: protobuf-c
 * would stop the string at the NUL); the response code. */
static int auth_key_with_nul(int fd, const char *key, const char *tail)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Auth a = TIDE__V1__AUTH__INIT;
    char with[256];
    uint8_t buf[512];
    int64_t n;
    int code;

    /* Encode "<key>\x01<tail>" and turn the marker into the NUL. */
    snprintf(with, sizeof(with), "%s\x01%s", key, tail);
    a.credential_case = TIDE__V1__AUTH__CREDENTIAL_API_KEY;
    a.api_key = with;
    e.body_case = TIDE__V1__ENVELOPE__BODY_AUTH;
    e.auth = &a;
    e.request_id = next_rid++;
    n = tide_frame_encode(&e, buf, sizeof(buf));
    cr_assert_gt(n, 0);
    for (int64_t i = 0; i < n; i++)
        if (buf[i] == 0x01 && i > 4 &&
            buf[i - 1] == (uint8_t)key[strlen(key) - 1])
            buf[i] = 0;
    cr_assert_eq(wire_send_raw(fd, buf, (size_t)n), 0);
    r = wire_recv(fd);
    code = code_of(r);
    tide_frame_free(r, NULL);
    return code;
}

Test(admin_hardening, an_api_key_with_nul_does_not_authenticate)
{
    int fd = wire_connect(srv.port), code;

    wire_hello(fd);
    code = auth_key_with_nul(fd, srv.admin_key, "junk");
    cr_assert(code == TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT ||
                  code == TIDE__V1__ERROR_CODE__ERROR_CODE_AUTH_FAILED,
              "key followed by NUL: code %d", code);
    close(fd);
    fd = wire_hello_connect(srv.port);
    code = auth_key_with_nul(fd, srv.admin_key, "");
    cr_assert(code == TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT ||
                  code == TIDE__V1__ERROR_CODE__ERROR_CODE_AUTH_FAILED,
              "key followed by one NUL: code %d", code);
    close(fd);
    /* The key itself still works. */
    fd = wire_session(srv.port, srv.admin_key);
    cr_assert_geq(fd, 0);
    close(fd);
}

Test(admin_hardening, the_bootstrap_key_can_be_rotated)
{
    int op = wire_session(srv.port, srv.admin_key), fd;
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__KeyRevoke kr = TIDE__V1__KEY_REVOKE__INIT;
    char fresh[128];
    uint64_t old_id;

    cr_assert_geq(op, 0);
    /* A second operator key, then the bootstrap one revoked. */
    wire_key_create(op, 0, "ops-2026", TIDE__V1__ROLE__ROLE_OPERATOR, NULL,
                    fresh, sizeof(fresh));
    close(op);
    op = wire_session(srv.port, fresh);
    cr_assert_geq(op, 0, "the new operator key authenticates");
    old_id = 1; /* the bootstrap key is the first key row */
    kr.key_id = old_id;
    e.body_case = TIDE__V1__ENVELOPE__BODY_KEY_REVOKE;
    e.key_revoke = &kr;
    r = wire_next(op, &e);
    cr_assert_eq(code_of(r), 0, "revoke the bootstrap key: %s", wire_why(r));
    cr_assert(r->body_case == TIDE__V1__ENVELOPE__BODY_OK);
    tide_frame_free(r, NULL);
    fd = wire_hello_connect(srv.port);
    cr_assert_eq(auth_with(fd, srv.admin_key, 1),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_AUTH_FAILED,
                 "the revoked bootstrap key still authenticates");
    close(fd);
    /* The new key keeps working. */
    status_and_tiers(op, &(int){0}, &(int){0});
    close(op);
}
