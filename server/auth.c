/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Authentication requests (Auth, Login, Logout), the password jobs that
 * keep bcrypt off the loop, and the throttling of repeated failures. The
 * credentials themselves are checked by the sidecar (meta/), which also
 * writes the auth log.
 *
 * Throttling: each IP has a failure count that decays by one every
 * THROTTLE_DECAY_S seconds. From THROTTLE_FREE failures on, attempts from
 * that IP are refused without checking them, with RATE_LIMITED and a
 * retry-after that doubles with each further failure up to
 * THROTTLE_DELAY_MAX_MS. A guessing client thus gets a handful of tries
 * and then one try every few seconds at best. Wrong passwords given to
 * confirm PasswordChange or AccountDelete count for the IP and for the
 * account (admin.c); sign-ups count per IP on their own scale.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <xxhash.h>

#include "admin_int.h"

#define THROTTLE_SLOTS 4096
#define THROTTLE_FREE 5
#define THROTTLE_DECAY_S 10
#define THROTTLE_DELAY_MAX_MS 30000

struct throttle_slot {
    char ip[64]; /* the key: an IP, "acct:<id>" or "signup:<ip>" */
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

/* The slot of key `ip`; a colliding key takes the slot over, which can
 * only forget failures, never invent them for an innocent address. */
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

/* 0 when key `k` may try again, else the retry-after in ms. */
static uint32_t throttled_key(struct server *s, const char *k)
{
    struct throttle_slot *t = slot_of(s, k);
    uint32_t f = current_fails(t, tided_now_ns()), ms;

    if (f < THROTTLE_FREE)
        return 0;
    ms = 1000u << (f - THROTTLE_FREE < 5 ? f - THROTTLE_FREE : 5);
    return ms > THROTTLE_DELAY_MAX_MS ? THROTTLE_DELAY_MAX_MS : ms;
}

/* Count a failure for key `k`; returns the count it reached. */
static uint32_t note_key(struct server *s, const char *k)
{
    struct throttle_slot *t = slot_of(s, k);
    int64_t now = tided_now_ns();

    current_fails(t, now);
    t->fails++;
    t->last_ns = now;
    return t->fails;
}

static void account_key(uint64_t account, char *k, size_t cap)
{
    snprintf(k, cap, "acct:%llu", (unsigned long long)account);
}

static void note_failure(struct conn *c)
{
    note_key(c->srv, c->ip);
    atomic_fetch_add(&c->srv->metrics.auth_failures, 1);
}

/* Answer `rid` with RATE_LIMITED after `ms`, `why`; `close_after` ends the
 * connection once the answer is out. */
static void send_limited(struct conn *c, uint64_t rid, uint32_t ms,
                         const char *why, int close_after)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__Error err = TIDE__V1__ERROR__INIT;

    err.code = TIDE__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED;
    err.message = (char *)why;
    err.retryable = 1;
    err.retry_after_ms = ms;
    env.request_id = rid;
    env.body_case = TIDE__V1__ENVELOPE__BODY_ERROR;
    env.error = &err;
    conn_send(c, &env);
    if (close_after) {
        c->closing = 1;
        bufferevent_disable(c->bev, EV_READ);
    }
}

/* Refuse a throttled attempt; returns 1 when it did. */
static int refuse_throttled(struct conn *c, uint64_t rid)
{
    uint32_t ms = throttled_key(c->srv, c->ip);

    if (!ms)
        return 0;
    tide_log(LOG_WARN, "auth attempt from %s throttled (retry in %u ms)", c->ip,
             ms);
    send_limited(c, rid, ms,
                 "too many failed authentications from this address", 1);
    return 1;
}

int tided_confirm_throttled(struct conn *c, uint64_t rid, uint64_t account)
{
    char k[32];
    uint32_t ms;

    if (refuse_throttled(c, rid))
        return 1;
    account_key(account, k, sizeof(k));
    ms = throttled_key(c->srv, k);
    if (!ms)
        return 0;
    tide_log(LOG_WARN,
             "password confirmation for account %llu from %s throttled",
             (unsigned long long)account, c->ip);
    send_limited(c, rid, ms, "too many wrong passwords for this account", 1);
    return 1;
}

int tided_confirm_failed(struct conn *c, uint64_t account)
{
    char k[32];

    note_failure(c);
    account_key(account, k, sizeof(k));
    return note_key(c->srv, k) >= THROTTLE_FREE;
}

/* Sign-ups per IP: SIGNUP_FREE at once, then one per SIGNUP_DECAY_S. Each
 * admitted attempt counts, refused ones do not (a client retrying early
 * does not push its own turn back). */
#define SIGNUP_FREE 5
#define SIGNUP_DECAY_S 60

int tided_signup_throttled(struct conn *c, uint64_t rid)
{
    char k[80];
    struct throttle_slot *t;
    int64_t now = tided_now_ns(), decay_ns = SIGNUP_DECAY_S * 1000000000ll;
    int64_t wait_ns;

    snprintf(k, sizeof(k), "signup:%s", c->ip);
    t = slot_of(c->srv, k);
    if (t->fails && now - t->last_ns >= decay_ns) {
        int64_t d = (now - t->last_ns) / decay_ns;

        t->fails = d >= t->fails ? 0 : t->fails - (uint32_t)d;
        t->last_ns += d * decay_ns;
    }
    if (t->fails < SIGNUP_FREE) {
        if (t->fails++ == 0)
            t->last_ns = now;
        return 0;
    }
    wait_ns = decay_ns - (now - t->last_ns);
    tide_log(LOG_INFO, "sign-up from %s throttled", c->ip);
    send_limited(c, rid, (uint32_t)(wait_ns / 1000000) + 1,
                 "too many sign-ups from this address", 0);
    return 1;
}

/* Mutual TLS: the device key registered for the verified certificate the
 * connection presented. TIDE_EAUTH without one (plaintext, no
 * tls_client_ca, none presented). */
static int cert_auth(struct conn *c, struct tide_meta_principal *p)
{
    uint8_t fp[TIDE_META_CERT_FP_BYTES];
    int rc = c->srv->tls ? tided_tls_peer_fingerprint(c->bev, fp) : TIDE_EAUTH;

    if (rc)
        tide_log(LOG_INFO,
                 "certificate auth from %s: no verified client certificate",
                 c->ip);
    return rc ? rc : tide_meta_cert_auth(c->srv->meta, fp, c->ip, p);
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
    else if (a->credential_case ==
             TIDE__V1__AUTH__CREDENTIAL_CLIENT_CERTIFICATE)
        rc = cert_auth(c, &p);
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

/* ---- Password jobs ------------------------------------------------------
 * bcrypt takes ~0.25 s at cost 12: every hash and check runs on a thread
 * of its own (admin_int.h), never on the loop, at a lower CPU priority so
 * that the loop keeps its core. At most PASSWORD_JOBS_MAX run at once
 * server-wide; each counts as a request in flight on its connection
 * (max_inflight). The result comes back through the server's wake event.
 */
#define PASSWORD_JOBS_MAX 8
#define PASSWORD_JOB_NICE 10

static void *password_thread(void *arg)
{
    struct login_job *j = arg;
    struct server *s = j->srv;

    /* Linux: a thread's nice value is its own (setpriority on its tid). */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), PASSWORD_JOB_NICE);
    j->work(j);
    pthread_mutex_lock(&s->done_lock);
    j->next = s->logins_done;
    s->logins_done = j;
    pthread_mutex_unlock(&s->done_lock);
    event_active(s->wake, EV_READ, 0);
    return NULL;
}

int tided_password_job(struct conn *c, uint64_t rid, struct login_job *j)
{
    struct server *s = c->srv;
    pthread_attr_t attr;
    pthread_t th;
    int rc;

    if (s->logins_running >= PASSWORD_JOBS_MAX) {
        j->done(j);
        conn_send_error(c, rid, TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
                        "too many background jobs (password checks, reports) "
                        "in progress; retry shortly",
                        0);
        return -1;
    }
    j->srv = s;
    j->conn_id = c->id;
    j->rid = rid;
    if (c->state == CONN_AUTHED)
        j->who = c->who; /* else anonymous: zero */
    snprintf(j->ip, sizeof(j->ip), "%s", c->ip);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&th, &attr, password_thread, j);
    pthread_attr_destroy(&attr);
    if (rc) {
        j->done(j);
        conn_send_error(c, rid, TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
                        "cannot start the password check; retry shortly", 0);
        return -1;
    }
    s->logins_running++;
    c->inflight++;
    return 0;
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
        struct conn *c = s->conns;

        s->logins_running--;
        /* Answered on its connection, if that is still open. */
        while (c && c->id != j->conn_id)
            c = c->next;
        if (c) {
            c->inflight--;
            j->answer(c, j);
        }
        j->done(j);
        j = next;
    }
}

/* ---- Login ----------------------------------------------------------------
 */

struct login_args {
    struct login_job job; /* first: the job is the whole */
    char *email;
    char *password;
    char token[TIDE_META_SECRET_MAX + 1];
    struct tide_meta_principal p;
};

static void login_free(struct login_job *j)
{
    struct login_args *l = (struct login_args *)j;

    if (l->password)
        explicit_bzero(l->password, strlen(l->password));
    explicit_bzero(l->token, sizeof(l->token));
    tide_free(l->email);
    tide_free(l->password);
    tide_free(l);
}

static void login_work(struct login_job *j)
{
    struct login_args *l = (struct login_args *)j;

    j->rc = tide_meta_login(j->srv->meta, l->email, l->password, j->ip,
                            l->token, &l->p);
}

static void login_answer(struct conn *c, struct login_job *j)
{
    struct login_args *l = (struct login_args *)j;
    Tide__V1__Envelope out = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__LoginOk ok = TIDE__V1__LOGIN_OK__INIT;

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
    ok.session_token = l->token;
    ok.account_id = l->p.account_id;
    ok.expires_ns = tided_now_ns() + 24ll * 3600 * 1000000000;
    out.request_id = j->rid;
    out.body_case = TIDE__V1__ENVELOPE__BODY_LOGIN_OK;
    out.login_ok = &ok;
    conn_send(c, &out);
}

void handle_login(struct conn *c, const Tide__V1__Envelope *env)
{
    const Tide__V1__Login *l = env->login;
    struct login_args *a;

    if (refuse_throttled(c, env->request_id))
        return;
    a = tide_calloc(1, sizeof(*a));
    if (!a || !(a->email = tide_strdup(l->email)) ||
        !(a->password = tide_strdup(l->password))) {
        if (a)
            login_free(&a->job);
        conn_send_error(c, env->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
                        "out of memory", 0);
        return;
    }
    a->job.work = login_work;
    a->job.answer = login_answer;
    a->job.done = login_free;
    tided_password_job(c, env->request_id, &a->job);
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
