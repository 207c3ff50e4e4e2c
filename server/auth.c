/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Authentication requests (Auth, Login, Logout) and the throttling of
 * repeated failures per IP address. The credentials themselves are checked
 * by the sidecar (meta/), which also writes the auth log.
 *
 * Throttling: each IP has a failure count that decays by one every
 * THROTTLE_DECAY_S seconds. From THROTTLE_FREE failures on, attempts from
 * that IP are refused without checking them, with RATE_LIMITED and a
 * retry-after that doubles with each further failure up to
 * THROTTLE_DELAY_MAX_MS. A guessing client thus gets a handful of tries
 * and then one try every few seconds at best.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "server.h"

#define THROTTLE_SLOTS 4096
#define THROTTLE_FREE 5
#define THROTTLE_DECAY_S 10
#define THROTTLE_DELAY_MAX_MS 30000

struct throttle_slot {
    char ip[64];
    uint32_t fails;
    int64_t last_ns; /* time of the last failure */
};

struct auth_throttle {
    struct throttle_slot slot[THROTTLE_SLOTS];
};

int tided_throttle_init(struct server *s)
{
    s->throttle = tide_calloc(1, sizeof(*s->throttle));
    return s->throttle ? 0 : -ENOMEM;
}

void tided_throttle_fini(struct server *s)
{
    tide_free(s->throttle);
    s->throttle = NULL;
}

/* The slot of `ip`; a colliding IP takes the slot over, which can only
 * forget failures, never invent them for an innocent address. */
static struct throttle_slot *slot_of(struct server *s, const char *ip)
{
    struct throttle_slot *t =
        &s->throttle->slot[XXH3_64bits(ip, strlen(ip)) % THROTTLE_SLOTS];

    if (strcmp(t->ip, ip)) {
        memset(t, 0, sizeof(*t));
        snprintf(t->ip, sizeof(t->ip), "%s", ip);
    }
    return t;
}

static uint32_t current_fails(struct throttle_slot *t, int64_t now)
{
    int64_t decay = (now - t->last_ns) / (THROTTLE_DECAY_S * 1000000000ll);

    if (t->fails && decay > 0)
        t->fails = decay >= t->fails ? 0 : t->fails - (uint32_t)decay;
    return t->fails;
}

/* 0 when `c` may try to authenticate, else the retry-after in ms. */
static uint32_t throttled(struct conn *c)
{
    struct throttle_slot *t = slot_of(c->srv, c->ip);
    uint32_t f = current_fails(t, tided_now_ns()), ms;

    if (f < THROTTLE_FREE)
        return 0;
    ms = 1000u << (f - THROTTLE_FREE < 5 ? f - THROTTLE_FREE : 5);
    return ms > THROTTLE_DELAY_MAX_MS ? THROTTLE_DELAY_MAX_MS : ms;
}

static void note_failure(struct conn *c)
{
    struct throttle_slot *t = slot_of(c->srv, c->ip);
    int64_t now = tided_now_ns();

    current_fails(t, now);
    t->fails++;
    t->last_ns = now;
    atomic_fetch_add(&c->srv->metrics.auth_failures, 1);
}

/* Refuse a throttled attempt; returns 1 when it did. */
static int refuse_throttled(struct conn *c, uint64_t rid)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__Error err = TIDE__V1__ERROR__INIT;
    uint32_t ms = throttled(c);

    if (!ms)
        return 0;
    tide_log(LOG_WARN, "auth attempt from %s throttled (retry in %u ms)", c->ip,
             ms);
    err.code = TIDE__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED;
    err.message = "too many failed authentications from this address";
    err.retryable = 1;
    err.retry_after_ms = ms;
    env.request_id = rid;
    env.body_case = TIDE__V1__ENVELOPE__BODY_ERROR;
    env.error = &err;
    conn_send(c, &env);
    c->closing = 1;
    bufferevent_disable(c->bev, EV_READ);
    return 1;
}

void handle_auth(struct conn *c, const Tide__V1__Envelope *env)
{
    const Tide__V1__Auth *a = env->auth;
    struct server *s = c->srv;
    Tide__V1__Envelope out = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__AuthOk ok = TIDE__V1__AUTH_OK__INIT;
    struct tide_meta_principal p;
    struct tide_meta_account acct;
    struct tide_meta_tier tier;
    struct tide_meta_device dev;
    int rc;

    if (c->state == CONN_AUTHED) {
        conn_send_error(c, env->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                        "already authenticated; open a new connection", 0);
        return;
    }
    if (refuse_throttled(c, env->request_id))
        return;
    if (a->credential_case == TIDE__V1__AUTH__CREDENTIAL_API_KEY)
        rc = tide_meta_key_auth(s->meta, a->api_key, c->ip, &p);
    else if (a->credential_case == TIDE__V1__AUTH__CREDENTIAL_SESSION_TOKEN)
        rc = tide_meta_session_auth(s->meta, a->session_token, c->ip, &p);
    else
        rc = TIDE_EAUTH;
    if (rc) {
        note_failure(c);
        tide_log(LOG_INFO, "auth failed from %s: %s", c->ip, tide_strerror(rc));
        conn_send_error(c, env->request_id,
                        rc == TIDE_EAUTH
                            ? TIDE__V1__ERROR_CODE__ERROR_CODE_AUTH_FAILED
                            : tide_wire_error(rc),
                        "authentication failed", 1);
        return;
    }
    c->who = p;
    c->state = CONN_AUTHED;
    ok.account_id = p.account_id;
    ok.role = (Tide__V1__Role)p.role;
    ok.key_id = p.key_id;
    ok.tier = "";
    ok.device = "";
    if (p.account_id && tide_meta_account_get(s->meta, &tided_system_principal,
                                              p.account_id, &acct) == 0) {
        c->tier = acct.tier;
        if (tide_meta_tier_get(s->meta, acct.tier, &tier) == 0)
            ok.tier = tier.name;
    }
    if (p.role == TIDE_META_ROLE_DEVICE &&
        tide_meta_device_get(s->meta, &tided_system_principal, p.account_id,
                             p.device_id, &dev) == 0) {
        ok.device = dev.thing_name;
        if (tide_meta_device_connect(s->meta, &tided_system_principal,
                                     p.account_id, p.device_id, 1, c->ip) == 0)
            c->connected_device = p.device_id;
    }
    out.request_id = env->request_id;
    out.body_case = TIDE__V1__ENVELOPE__BODY_AUTH_OK;
    out.auth_ok = &ok;
    conn_send(c, &out);
}

/* A password login runs bcrypt (~0.25 s at cost 12) on a thread of its
 * own so that the loop keeps serving; the result comes back through the
 * server's wake event. */
struct login_job {
    struct login_job *next;
    struct server *srv;
    uint64_t conn_id;
    uint64_t rid;
    char *email;
    char *password;
    char ip[64];
    int rc;
    char token[TIDE_META_SECRET_MAX + 1];
    struct tide_meta_principal p;
};

#define LOGINS_RUNNING_MAX 8

static void login_job_free(struct login_job *j)
{
    if (j->password)
        explicit_bzero(j->password, strlen(j->password));
    explicit_bzero(j->token, sizeof(j->token));
    tide_free(j->email);
    tide_free(j->password);
    tide_free(j);
}

static void *login_thread(void *arg)
{
    struct login_job *j = arg;
    struct server *s = j->srv;

    j->rc =
        tide_meta_login(s->meta, j->email, j->password, j->ip, j->token, &j->p);
    pthread_mutex_lock(&s->done_lock);
    j->next = s->logins_done;
    s->logins_done = j;
    pthread_mutex_unlock(&s->done_lock);
    event_active(s->wake, EV_READ, 0);
    return NULL;
}

void handle_login(struct conn *c, const Tide__V1__Envelope *env)
{
    const Tide__V1__Login *l = env->login;
    struct server *s = c->srv;
    struct login_job *j;
    pthread_attr_t attr;
    pthread_t th;
    int rc;

    if (refuse_throttled(c, env->request_id))
        return;
    if (s->logins_running >= LOGINS_RUNNING_MAX) {
        conn_send_error(c, env->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
                        "too many logins in progress; retry shortly", 0);
        return;
    }
    j = tide_calloc(1, sizeof(*j));
    if (!j || !(j->email = tide_strdup(l->email)) ||
        !(j->password = tide_strdup(l->password))) {
        if (j)
            login_job_free(j);
        conn_send_error(c, env->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
                        "out of memory", 0);
        return;
    }
    j->srv = s;
    j->conn_id = c->id;
    j->rid = env->request_id;
    snprintf(j->ip, sizeof(j->ip), "%s", c->ip);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&th, &attr, login_thread, j);
    pthread_attr_destroy(&attr);
    if (rc) {
        login_job_free(j);
        conn_send_error(c, env->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
                        "cannot start the login; retry shortly", 0);
        return;
    }
    s->logins_running++;
    c->inflight++;
}

/* Answer a finished login on its connection, if that is still open. */
static void login_answer(struct login_job *j)
{
    struct server *s = j->srv;
    Tide__V1__Envelope out = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__LoginOk ok = TIDE__V1__LOGIN_OK__INIT;
    struct conn *c = s->conns;

    while (c && c->id != j->conn_id)
        c = c->next;
    if (!c)
        return;
    c->inflight--;
    if (j->rc) {
        if (j->rc == TIDE_EAUTH)
            note_failure(c);
        conn_send_error(c, j->rid,
                        j->rc == TIDE_EAUTH
                            ? TIDE__V1__ERROR_CODE__ERROR_CODE_AUTH_FAILED
                            : tide_wire_error(j->rc),
                        j->rc == TIDE_EAUTH ? "wrong email or password"
                                            : tide_strerror(j->rc),
                        j->rc == TIDE_EAUTH);
        return;
    }
    ok.session_token = j->token;
    ok.account_id = j->p.account_id;
    ok.expires_ns = tided_now_ns() + 24ll * 3600 * 1000000000;
    out.request_id = j->rid;
    out.body_case = TIDE__V1__ENVELOPE__BODY_LOGIN_OK;
    out.login_ok = &ok;
    conn_send(c, &out);
}

void tided_logins_drain(struct server *s)
{
    struct login_job *j;

    pthread_mutex_lock(&s->done_lock);
    j = s->logins_done;
    s->logins_done = NULL;
    pthread_mutex_unlock(&s->done_lock);
    while (j) {
        struct login_job *next = j->next;

        s->logins_running--;
        login_answer(j);
        login_job_free(j);
        j = next;
    }
}

void handle_logout(struct conn *c, const Tide__V1__Envelope *env)
{
    Tide__V1__Envelope out = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__Ok ok = TIDE__V1__OK__INIT;

    if (c->who.session_id)
        tide_meta_logout(c->srv->meta, &c->who);
    memset(&c->who, 0, sizeof(c->who));
    c->state = CONN_HELLO;
    out.request_id = env->request_id;
    out.body_case = TIDE__V1__ENVELOPE__BODY_OK;
    out.ok = &ok;
    conn_send(c, &out);
}
