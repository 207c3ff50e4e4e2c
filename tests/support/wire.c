/* SPDX-License-Identifier: Apache-2.0 */
/* Integration-test support over raw frames (wire.h). */
#include "wire.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "proc.h"

struct tided_proc srv;
char dir[1024];
int64_t T0;
uint64_t next_rid = 100;

void fixture_start(const char *const *settings)
{
    struct timespec now;

    /* Criterion runs a suite's .init before a test's own: a test that
     * starts the server with other settings replaces the suite's. */
    if (srv.pid > 0)
        tided_kill_fresh(&srv, dir);
    clock_gettime(CLOCK_REALTIME, &now);
    T0 = ((int64_t)now.tv_sec - 3600) * 1000000000;
    cr_assert_eq(tided_start_fresh(&srv, dir, sizeof(dir), settings), 0,
                 "tided did not start");
}

void fixture_init(void)
{
    fixture_start(NULL);
}

void fixture_fini(void)
{
    tided_kill_fresh(&srv, dir);
}

Tide__V1__Envelope *wire_next(int fd, Tide__V1__Envelope *e)
{
    e->request_id = next_rid++;
    return wire_call(fd, e);
}

const char *wire_why(const Tide__V1__Envelope *r)
{
    return !r                                               ? "no response"
           : r->body_case == TIDE__V1__ENVELOPE__BODY_ERROR ? r->error->message
                                                            : "";
}

void wire_call_ok(int fd, Tide__V1__Envelope *e, const char *what)
{
    Tide__V1__Envelope *r = wire_next(fd, e);

    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_OK, "%s: %s", what,
              wire_why(r));
    tide_frame_free(r, NULL);
}

void wire_tier_upsert(int fd, const char *name, uint64_t points_per_s,
                      uint64_t daily_points)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__TierUpsert tu = TIDE__V1__TIER_UPSERT__INIT;
    Tide__V1__Tier t = TIDE__V1__TIER__INIT;

    t.name = (char *)name;
    t.telemetry_ttl_s = 30 * 86400;
    t.points_per_s = points_per_s;
    t.daily_points = daily_points;
    tu.tier = &t;
    e.body_case = TIDE__V1__ENVELOPE__BODY_TIER_UPSERT;
    e.tier_upsert = &tu;
    wire_call_ok(fd, &e, "tier upsert");
}

uint64_t wire_account_create(int fd, const char *email, const char *tier)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__AccountCreate ac = TIDE__V1__ACCOUNT_CREATE__INIT;
    uint64_t id;

    ac.email = (char *)email;
    ac.password = "correct horse battery";
    ac.tier = (char *)tier;
    e.body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_CREATE;
    e.account_create = &ac;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_ACCOUNT_CREATE_OK,
              "account create: %s", wire_why(r));
    id = r->account_create_ok->account->id;
    tide_frame_free(r, NULL);
    return id;
}

uint64_t wire_make_account(int fd, const char *email)
{
    wire_tier_upsert(fd, "unlimited", 0, 0);
    return wire_account_create(fd, email, "unlimited");
}

void wire_device_register(int fd, uint64_t account, const char *name)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__DeviceRegister dr = TIDE__V1__DEVICE_REGISTER__INIT;
    Tide__V1__Device d = TIDE__V1__DEVICE__INIT;

    d.name = (char *)name;
    dr.device = &d;
    dr.account_id = account;
    e.body_case = TIDE__V1__ENVELOPE__BODY_DEVICE_REGISTER;
    e.device_register = &dr;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_DEVICE,
              "device register: %s", wire_why(r));
    tide_frame_free(r, NULL);
}

void wire_key_create(int fd, uint64_t account, const char *name,
                     Tide__V1__Role role, const char *device, char *key,
                     size_t cap)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__KeyCreate kc = TIDE__V1__KEY_CREATE__INIT;

    kc.name = (char *)name;
    kc.role = role;
    kc.device = (char *)(device ? device : "");
    kc.account_id = account;
    e.body_case = TIDE__V1__ENVELOPE__BODY_KEY_CREATE;
    e.key_create = &kc;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_KEY_CREATE_OK,
              "key create: %s", wire_why(r));
    snprintf(key, cap, "%s", r->key_create_ok->secret);
    tide_frame_free(r, NULL);
}

void wire_hello(int fd)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Hello h = TIDE__V1__HELLO__INIT;

    h.protocol_version = 1;
    e.body_case = TIDE__V1__ENVELOPE__BODY_HELLO;
    e.hello = &h;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_HELLO_OK,
              "hello: %s", wire_why(r));
    tide_frame_free(r, NULL);
}

int wire_hello_connect(int port)
{
    int fd = wire_connect(port);

    cr_assert_geq(fd, 0, "connect");
    wire_hello(fd);
    return fd;
}

void wire_login(int fd, const char *email, char *token, size_t cap)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Login l = TIDE__V1__LOGIN__INIT;

    l.email = (char *)email;
    l.password = "correct horse battery";
    e.body_case = TIDE__V1__ENVELOPE__BODY_LOGIN;
    e.login = &l;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_LOGIN_OK,
              "login: %s", wire_why(r));
    snprintf(token, cap, "%s", r->login_ok->session_token);
    tide_frame_free(r, NULL);
}

void wire_auth_token(int fd, const char *token)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Auth a = TIDE__V1__AUTH__INIT;

    a.credential_case = TIDE__V1__AUTH__CREDENTIAL_SESSION_TOKEN;
    a.session_token = (char *)token;
    e.body_case = TIDE__V1__ENVELOPE__BODY_AUTH;
    e.auth = &a;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_AUTH_OK,
              "session auth: %s", wire_why(r));
    tide_frame_free(r, NULL);
}

void wire_owner_login(int fd, const char *email)
{
    char token[256];

    wire_hello(fd);
    wire_login(fd, email, token, sizeof(token));
    wire_auth_token(fd, token);
}

int wire_owner_session(int port, const char *email)
{
    int fd = wire_connect(port);

    cr_assert_geq(fd, 0);
    wire_owner_login(fd, email);
    return fd;
}

Tide__V1__Envelope *wire_batch_f64(struct wire_batch *b, const char *device,
                                   const char *field, int64_t *ts_delta_ns,
                                   double *v, size_t n)
{
    tide__v1__envelope__init(&b->env);
    tide__v1__write_batch__init(&b->wb);
    tide__v1__point_group__init(&b->g);
    tide__v1__column__init(&b->c);
    b->gp = &b->g;
    b->cp = &b->c;
    b->c.field = (char *)field;
    b->c.type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64;
    b->c.f64 = v;
    b->c.n_f64 = n;
    b->g.device = (char *)device;
    b->g.ts_delta_ns = ts_delta_ns;
    b->g.n_ts_delta_ns = n;
    b->g.columns = &b->cp;
    b->g.n_columns = 1;
    b->wb.groups = &b->gp;
    b->wb.n_groups = 1;
    b->env.body_case = TIDE__V1__ENVELOPE__BODY_WRITE_BATCH;
    b->env.write_batch = &b->wb;
    return &b->env;
}

uint8_t *wire_encode(const Tide__V1__Envelope *env, size_t *n)
{
    uint8_t *buf;

    *n = tide_frame_size(env);
    buf = malloc(*n);
    cr_assert_not_null(buf);
    cr_assert_eq(tide_frame_encode(env, buf, *n), (int64_t)*n);
    return buf;
}

int64_t wire_ping_us(int fd)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Ping p = TIDE__V1__PING__INIT;
    int64_t t0 = proc_now_us();

    e.body_case = TIDE__V1__ENVELOPE__BODY_PING;
    e.ping = &p;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_PONG,
              "Ping got no Pong within 10 s: %s", wire_why(r));
    tide_frame_free(r, NULL);
    return proc_now_us() - t0;
}

int fixture_cli(const char *key, const char *args, const char *input, char *out,
                size_t cap)
{
    char cmd[4096], path[1100];
    const char *bin = getenv("TIDE_BIN");
    FILE *p;
    size_t n;
    int status;

    snprintf(path, sizeof(path), "%s/cli-input", dir);
    if (input) {
        FILE *f = fopen(path, "w");

        cr_assert_not_null(f);
        fputs(input, f);
        fclose(f);
    }
    snprintf(cmd, sizeof(cmd), "TIDE_KEY='%s' %s --port %d %s %s%s", key,
             bin && *bin ? bin : "build/release/tide", srv.port, args,
             input ? "< " : "", input ? path : "");
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

long wire_proc_kb(pid_t pid, const char *field)
{
    return proc_status_kib(pid, field);
}
