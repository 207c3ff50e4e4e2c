/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libtide's connection: options, TCP connect with timeouts, the Hello/Auth
 * handshake (docs/protocol.md, "Handshake"), frame I/O on a non-blocking
 * socket driven by poll(), dispatch of response frames by request id,
 * reconnection with exponential backoff and jitter, and error reporting.
 *
 * Connection states and the functions that move between them:
 *
 *   closed --tide__client_ensure (connect_once: TCP, Hello, Auth)--> open
 *   open --tide__client_lost (EOF, I/O error, silence)--> closed
 *   closed --tide__client_ensure refused by AUTH_FAILED--> failed (sticky)
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define CLIENT_NAME "libtide"
#define CLIENT_VERSION "1.0.0"
#define PROTOCOL_VERSION 1u
#define READ_CHUNK_BYTES 65536

void tide_client_options_init(struct tide_client_options *o)
{
    memset(o, 0, sizeof(*o));
    o->host = "127.0.0.1";
    o->port = 8433;
    o->connect_timeout_ms = 5000;
    o->io_timeout_ms = 10000;
    o->batch_points = 10000;
    o->batch_interval_ms = 100;
    o->ack_window = 8;
    o->buffer_points_max = 1000000;
    o->overflow = TIDE_OVERFLOW_BLOCK;
    o->backoff_base_ms = 100;
    o->backoff_max_ms = 10000;
}

int64_t tide__client_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *dup_or_null(const char *s)
{
    return s ? tide_strdup(s) : NULL;
}

static uint64_t random_u64(void)
{
    uint64_t v = 0;

    /* getrandom on a 8-byte request never returns short once the pool is
     * initialised; fall back to the clock only if the call fails. */
    if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v))
        v = (uint64_t)tide__client_now_ms() * 0x9e3779b97f4a7c15ull;
    return v ? v : 1;
}

/* xorshift64*: jitter needs no cryptographic quality. */
uint64_t tide__client_rand(tide_client *c)
{
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * 0x2545f4914f6cdd1dull;
}

/*
 * Delay before reconnect attempt `attempt` (0-based): d = min(max_ms,
 * base_ms * 2^attempt), then "equal jitter", a uniform value in [d/2, d],
 * so that a fleet reconnecting after a server restart spreads out.
 */
uint32_t tide__client_backoff_ms(uint32_t base_ms, uint32_t max_ms,
                                 uint32_t attempt, uint64_t rand)
{
    uint64_t d = base_ms;
    uint64_t half;

    for (uint32_t i = 0; i < attempt && d < max_ms; i++)
        d *= 2;
    if (d > max_ms)
        d = max_ms;
    half = d / 2;
    return (uint32_t)(half + rand % (d - half + 1));
}

int tide__client_new(const struct tide_client_options *opts, tide_client **out)
{
    tide_client *c = NULL;
    int rc = -ENOMEM;

    if (!opts || !opts->host || !*opts->host)
        return TIDE_EINVAL;
    if (opts->overflow < TIDE_OVERFLOW_BLOCK ||
        opts->overflow > TIDE_OVERFLOW_ERROR)
        return TIDE_EINVAL;
    c = tide_calloc(1, sizeof(*c));
    if (!c)
        goto fail;
    c->fd = -1;
    c->o = *opts;
    c->o.host = tide_strdup(opts->host);
    c->o.api_key = dup_or_null(opts->api_key);
    c->o.session_token = dup_or_null(opts->session_token);
    c->o.tls_ca_file = dup_or_null(opts->tls_ca_file);
    c->o.tls_ca_dir = dup_or_null(opts->tls_ca_dir);
    c->o.tls_server_name = dup_or_null(opts->tls_server_name);
    c->o.tls_cert_file = dup_or_null(opts->tls_cert_file);
    c->o.tls_key_file = dup_or_null(opts->tls_key_file);
    c->o.open_error = NULL; /* tide_client_open's, borrowed */
    if (!c->o.host || (opts->api_key && !c->o.api_key) ||
        (opts->session_token && !c->o.session_token) ||
        (opts->tls_ca_file && !c->o.tls_ca_file) ||
        (opts->tls_ca_dir && !c->o.tls_ca_dir) ||
        (opts->tls_server_name && !c->o.tls_server_name) ||
        (opts->tls_cert_file && !c->o.tls_cert_file) ||
        (opts->tls_key_file && !c->o.tls_key_file))
        goto fail;
    rc = tide__tls_init(c, &c->o);
    if (rc) {
        *out = c; /* the caller reports the reason, then closes */
        return rc;
    }
    if (!c->o.port)
        c->o.port = 8433;
    if (!c->o.connect_timeout_ms)
        c->o.connect_timeout_ms = 5000;
    if (!c->o.io_timeout_ms)
        c->o.io_timeout_ms = 10000;
    if (!c->o.batch_points)
        c->o.batch_points = 10000;
    if (!c->o.batch_interval_ms)
        c->o.batch_interval_ms = 100;
    if (!c->o.ack_window)
        c->o.ack_window = 8;
    if (!c->o.buffer_points_max)
        c->o.buffer_points_max = 1000000;
    if (!c->o.backoff_base_ms)
        c->o.backoff_base_ms = 100;
    if (!c->o.backoff_max_ms)
        c->o.backoff_max_ms = 10000;
    c->max_frame_bytes = TIDE_FRAME_MAX_BYTES_DEFAULT;
    c->max_batch_points = c->o.batch_points;
    c->window = c->o.ack_window;
    c->producer_id = opts->producer_id ? opts->producer_id : random_u64();
    c->rng = random_u64();
    c->next_request_id = 1;
    c->next_sequence = 1;
    *out = c;
    return 0;

fail:
    tide_client_close(c);
    return rc;
}

void tide__client_set_error(tide_client *c, const Tide__V1__Error *e)
{
    char *msg = tide_strdup(e->message ? e->message : "");

    c->have_error = 1;
    c->err_code = (int)e->code;
    /* Without memory the previous text stays; the code is still right. */
    if (msg) {
        tide_free(c->err_msg);
        c->err_msg = msg;
    }
}

void tide__client_lost(tide_client *c)
{
    int saved = errno;

    tide__tls_close(c);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->connected)
        tide_frame_decoder_fini(&c->dec);
    c->connected = 0;
    tide__writer_lost(c);
    errno = saved;
}

/* Dispatch one response frame to the writer, the open query or the
 * waiting call; anything else (answers to abandoned requests) is freed. */
static void dispatch(tide_client *c, Tide__V1__Envelope *env)
{
    if (tide__writer_dispatch(c, env))
        return;
    if (c->iter && env->request_id == c->iter->request_id) {
        tide__query_deliver(c->iter, env);
        return;
    }
    if (c->wait_id && env->request_id == c->wait_id && !c->wait_env) {
        c->wait_env = env;
        return;
    }
    if (env->request_id == 0 &&
        env->body_case == TIDE__V1__ENVELOPE__BODY_ERROR && env->error)
        tide__client_set_error(c, env->error);
    tide_frame_free(env, NULL);
}

/* Dispatch every complete frame buffered. Returns how many, or an error
 * (the connection is then lost). */
static int process(tide_client *c)
{
    int n = 0;

    while (c->connected) {
        Tide__V1__Envelope *env = NULL;
        int rc = tide_frame_decoder_next(&c->dec, &env);

        if (rc == TIDE_FRAME_NEED_MORE)
            break;
        if (rc) {
            tide__client_lost(c);
            return rc == -ENOMEM ? rc : TIDE_EPROTO;
        }
        dispatch(c, env);
        n++;
    }
    return n;
}

/* One recv into the decoder. Returns 0, or an error with the connection
 * lost. */
static int recv_some(tide_client *c)
{
    uint8_t buf[READ_CHUNK_BYTES];
    ssize_t n;
    int rc;

    if (c->ssl) {
        /* What one record held; the next poll (or tide__tls_pending)
         * finds the rest. */
        rc = tide__tls_read(c, buf, sizeof(buf));
        if (rc < 0) {
            tide__client_lost(c);
            return rc;
        }
        if (rc > 0 &&
            (rc = tide_frame_decoder_feed(&c->dec, buf, (size_t)rc)) != 0) {
            tide__client_lost(c);
            return rc == -ENOMEM ? rc : TIDE_EPROTO;
        }
        return 0;
    }
    n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    if (n <= 0) {
        tide__client_lost(c);
        return TIDE_EDISCONNECTED;
    }
    rc = tide_frame_decoder_feed(&c->dec, buf, (size_t)n);
    if (rc) {
        tide__client_lost(c);
        return rc == -ENOMEM ? rc : TIDE_EPROTO;
    }
    return 0;
}

int tide__client_read(tide_client *c, uint32_t timeout_ms)
{
    struct pollfd p;
    int rc;

    if (!c->connected)
        return TIDE_EDISCONNECTED;
    rc = process(c);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    p.fd = c->fd;
    p.events = POLLIN;
    p.revents = 0;
    rc = tide__tls_pending(c) ? 1 : poll(&p, 1, (int)timeout_ms);
    if (rc < 0)
        return errno == EINTR ? 0 : -errno;
    if (rc == 0)
        return TIDE_ETIMEDOUT;
    rc = recv_some(c);
    if (rc)
        return rc;
    rc = process(c);
    return rc < 0 ? rc : 0;
}

/*
 * Send all of buf. While the socket is not writable, incoming bytes are fed
 * to the decoder (not dispatched) so that a server blocked on writing acks
 * to us cannot deadlock with us. Returns 0, or an error with the
 * connection lost.
 */
int tide__client_send(tide_client *c, const uint8_t *buf, size_t len)
{
    size_t off = 0;

    short want = POLLOUT;

    if (!c->connected)
        return TIDE_EDISCONNECTED;
    while (off < len) {
        struct pollfd p = {.fd = c->fd, .events = want | POLLIN};
        ssize_t n;
        int rc = poll(&p, 1, (int)c->o.io_timeout_ms);

        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0) {
            rc = rc < 0 ? -errno : TIDE_ETIMEDOUT;
            tide__client_lost(c);
            return rc;
        }
        if (p.revents & POLLIN) {
            rc = recv_some(c);
            if (rc)
                return rc;
        }
        if (c->ssl) {
            /* TLS may need the socket readable to write (a key update):
             * it says which way to wait. */
            if (!(p.revents & (want | POLLERR | POLLHUP)))
                continue;
            want = POLLOUT;
            rc = tide__tls_write(c, buf + off, len - off, &want);
            if (rc < 0) {
                tide__client_lost(c);
                return rc;
            }
            off += (size_t)rc;
            continue;
        }
        if (!(p.revents & (POLLOUT | POLLERR | POLLHUP)))
            continue;
        n = send(c->fd, buf + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n < 0) {
            tide__client_lost(c);
            return TIDE_EDISCONNECTED;
        }
        off += (size_t)n;
    }
    return 0;
}

int tide__client_send_env(tide_client *c, Tide__V1__Envelope *env)
{
    size_t size = tide_frame_size(env);
    uint8_t *buf = tide_malloc(size);
    int rc;

    if (!buf)
        return -ENOMEM;
    if (tide_frame_encode(env, buf, size) != (int64_t)size) {
        tide_free(buf);
        return TIDE_EPROTO;
    }
    rc = tide__client_send(c, buf, size);
    tide_free(buf);
    return rc;
}

int tide__client_wait(tide_client *c, uint64_t id, Tide__V1__Envelope **env)
{
    int rc = 0;

    c->wait_id = id;
    c->wait_env = NULL;
    while (!c->wait_env) {
        rc = tide__client_read(c, c->o.io_timeout_ms);
        if (rc < 0)
            break;
    }
    c->wait_id = 0;
    if (!c->wait_env)
        return rc;
    *env = c->wait_env;
    c->wait_env = NULL;
    return 0;
}

/* Send `env` under a fresh id and wait for its response. On a server
 * Error returns TIDE_ESERVER after recording it. */
static int request(tide_client *c, Tide__V1__Envelope *env, int want_case,
                   Tide__V1__Envelope **resp)
{
    Tide__V1__Envelope *r = NULL;
    int rc;

    env->request_id = c->next_request_id++;
    rc = tide__client_send_env(c, env);
    if (rc)
        return rc;
    rc = tide__client_wait(c, env->request_id, &r);
    if (rc)
        return rc;
    if (r->body_case == TIDE__V1__ENVELOPE__BODY_ERROR && r->error) {
        tide__client_set_error(c, r->error);
        tide_frame_free(r, NULL);
        return TIDE_ESERVER;
    }
    if ((int)r->body_case != want_case) {
        tide_frame_free(r, NULL);
        return TIDE_EPROTO;
    }
    *resp = r;
    return 0;
}

int tide__client_request(tide_client *c, Tide__V1__Envelope *env, int want_case,
                         Tide__V1__Envelope **resp)
{
    return request(c, env, want_case, resp);
}

/* Open a TCP connection with a connect timeout. Returns an fd or -errno. */
static int tcp_connect(const char *host, uint16_t port, uint32_t timeout_ms)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL, *ai;
    char portstr[8];
    int fd = -1, rc = -EHOSTUNREACH, one = 1;

    snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
    if (getaddrinfo(host, portstr, &hints, &res) != 0)
        return -EHOSTUNREACH;
    for (ai = res; ai; ai = ai->ai_next) {
        struct pollfd p;
        int err = 0;
        socklen_t elen = sizeof(err);

        fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        if (errno != EINPROGRESS) {
            rc = -errno;
            goto next;
        }
        p.fd = fd;
        p.events = POLLOUT;
        p.revents = 0;
        err = poll(&p, 1, (int)timeout_ms);
        if (err <= 0) {
            rc = err == 0 ? TIDE_ETIMEDOUT : -errno;
            goto next;
        }
        err = 0;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0)
            break;
        rc = err ? -err : -errno;
    next:
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return rc;
    /* Small frames (acks, admin requests) must not wait for Nagle. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void free_str(char **p)
{
    tide_free(*p);
    *p = NULL;
}

/* TCP connect, Hello, Auth. Returns 0 with the connection open, or an
 * error with it closed. */
static int connect_once(tide_client *c)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__Hello hello = TIDE__V1__HELLO__INIT;
    Tide__V1__Auth auth = TIDE__V1__AUTH__INIT;
    Tide__V1__Envelope *r = NULL;
    int fd, rc;

    int64_t deadline = tide__client_now_ms() + c->o.connect_timeout_ms;

    fd = tcp_connect(c->o.host, c->o.port, c->o.connect_timeout_ms);
    if (fd < 0)
        return fd;
    c->fd = fd;
    c->tls_resumed = 0;
    if (c->tls_ctx && (rc = tide__tls_connect(c, deadline)) != 0) {
        tide__tls_close(c);
        close(fd);
        c->fd = -1;
        return rc;
    }
    tide_frame_decoder_init(&c->dec, 0, NULL);
    c->connected = 1;

    hello.protocol_version = PROTOCOL_VERSION;
    hello.client_name = CLIENT_NAME;
    hello.client_version = CLIENT_VERSION;
    env.body_case = TIDE__V1__ENVELOPE__BODY_HELLO;
    env.hello = &hello;
    rc = request(c, &env, TIDE__V1__ENVELOPE__BODY_HELLO_OK, &r);
    if ((rc == TIDE_EDISCONNECTED || rc == TIDE_EPROTO) && !c->tls_ctx)
        tide__client_reason(c,
                            "%s:%u ended the connection before answering "
                            "Hello: if it serves TLS, connect with TLS "
                            "(tide --tls)",
                            c->o.host, (unsigned)c->o.port);
    if (rc)
        goto fail;
    if (r->hello_ok->limits) {
        const Tide__V1__Limits *l = r->hello_ok->limits;

        if (l->max_frame_bytes)
            c->max_frame_bytes = l->max_frame_bytes;
        if (l->max_batch_points && l->max_batch_points < c->o.batch_points)
            c->max_batch_points = l->max_batch_points;
        c->max_string_bytes = l->max_string_bytes;
        /* Leave two requests of room for a query and an admin call. */
        if (l->max_inflight_requests > 2 &&
            l->max_inflight_requests - 2 < c->o.ack_window)
            c->window = l->max_inflight_requests - 2;
    }
    tide_frame_free(r, NULL);
    r = NULL;

    if (c->o.api_key || c->o.session_token || c->o.auth_client_certificate) {
        env.body_case = TIDE__V1__ENVELOPE__BODY_AUTH;
        env.auth = &auth;
        if (c->o.auth_client_certificate) {
            auth.credential_case =
                TIDE__V1__AUTH__CREDENTIAL_CLIENT_CERTIFICATE;
            auth.client_certificate = 1;
        } else if (c->o.api_key) {
            auth.credential_case = TIDE__V1__AUTH__CREDENTIAL_API_KEY;
            auth.api_key = (char *)c->o.api_key;
        } else {
            auth.credential_case = TIDE__V1__AUTH__CREDENTIAL_SESSION_TOKEN;
            auth.session_token = (char *)c->o.session_token;
        }
        rc = request(c, &env, TIDE__V1__ENVELOPE__BODY_AUTH_OK, &r);
        if (rc == TIDE_ESERVER &&
            (c->err_code == TIDE__V1__ERROR_CODE__ERROR_CODE_AUTH_FAILED ||
             c->err_code == TIDE__V1__ERROR_CODE__ERROR_CODE_ACCOUNT_DELETED))
            rc = TIDE_EAUTH;
        if (rc)
            goto fail;
        c->account_id = r->auth_ok->account_id;
        c->role = (int)r->auth_ok->role;
        free_str(&c->device);
        c->device = tide_strdup(r->auth_ok->device ? r->auth_ok->device : "");
        tide_frame_free(r, NULL);
        if (!c->device) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    return 0;

fail:
    if (c->connected)
        tide__client_lost(c);
    return rc;
}

/* One connection attempt unless the backoff delay is still running.
 * Returns 0 when connected, TIDE_EAUTH (sticky), or the error of the
 * last attempt. */
int tide__client_step(tide_client *c)
{
    int64_t now = tide__client_now_ms();
    int rc;

    if (c->connected)
        return 0;
    if (c->failed)
        return c->failed;
    if (now < c->next_connect_ms)
        return c->connect_rc ? c->connect_rc : TIDE_EDISCONNECTED;
    rc = connect_once(c);
    if (rc == 0) {
        if (c->ever_connected)
            c->st.reconnects++;
        c->ever_connected = 1;
        c->attempt = 0;
        c->connect_rc = 0;
        return 0;
    }
    if (rc == TIDE_EAUTH) {
        c->failed = rc;
        return rc;
    }
    c->connect_rc = rc;
    c->next_connect_ms =
        now + tide__client_backoff_ms(c->o.backoff_base_ms, c->o.backoff_max_ms,
                                      c->attempt, tide__client_rand(c));
    c->attempt++;
    return rc;
}

/* Reconnect, sleeping through the backoff, until connected, refused,
 * reconnect_attempts_max failed attempts, or deadline_ms (0 = none). */
int tide__client_ensure(tide_client *c, int64_t deadline_ms)
{
    for (;;) {
        int64_t now, wait;
        int rc = tide__client_step(c);

        if (rc == 0 || rc == TIDE_EAUTH)
            return rc;
        if (c->o.reconnect_attempts_max &&
            c->attempt >= c->o.reconnect_attempts_max)
            return rc;
        now = tide__client_now_ms();
        if (deadline_ms && now >= deadline_ms)
            return TIDE_ETIMEDOUT;
        wait = c->next_connect_ms - now;
        if (deadline_ms && now + wait > deadline_ms)
            wait = deadline_ms - now;
        if (wait > 0)
            poll(NULL, 0, (int)wait);
    }
}

int tide_client_open(const struct tide_client_options *opts, tide_client **out)
{
    tide_client *c = NULL;
    int rc;

    if (!out)
        return TIDE_EINVAL;
    rc = tide__client_new(opts, &c);
    if (rc == 0)
        rc = connect_once(c);
    if (rc == 0) {
        c->ever_connected = 1;
        *out = c;
        return 0;
    }
    if (opts && opts->open_error && opts->open_error_len)
        snprintf(opts->open_error, opts->open_error_len, "%s",
                 c && c->have_error && c->err_msg ? c->err_msg : "");
    tide_client_close(c);
    return rc;
}

int tide_client_reconnect(tide_client *c)
{
    if (!c)
        return TIDE_EINVAL;
    if (c->failed)
        return c->failed;
    if (c->connected)
        tide__client_lost(c);
    c->next_connect_ms = 0;
    return tide__client_ensure(c,
                               tide__client_now_ms() + c->o.connect_timeout_ms);
}

void tide_client_close(tide_client *c)
{
    if (!c)
        return;
    tide_query_close(c->iter);
    if (c->connected)
        tide__client_lost(c);
    tide__writer_fini(c);
    tide_frame_free(c->wait_env, NULL);
    tide_free((char *)c->o.host);
    tide_free((char *)c->o.api_key);
    tide_free((char *)c->o.session_token);
    tide__tls_fini(c);
    tide_free((char *)c->o.tls_ca_file);
    tide_free((char *)c->o.tls_ca_dir);
    tide_free((char *)c->o.tls_server_name);
    tide_free((char *)c->o.tls_cert_file);
    tide_free((char *)c->o.tls_key_file);
    tide_free(c->device);
    tide_free(c->err_msg);
    tide_free(c);
}

void tide_client_set_allocator(void *(*malloc_fn)(size_t),
                               void (*free_fn)(void *))
{
    tide_alloc_set_hooks(malloc_fn, free_fn);
}

int tide_client_last_error(const tide_client *c, int *code, const char **msg)
{
    if (!c || !c->have_error)
        return TIDE_EINVAL;
    if (code)
        *code = c->err_code;
    if (msg)
        *msg = c->err_msg ? c->err_msg : "";
    return 0;
}

void tide_client_stats_get(const tide_client *c, struct tide_client_stats *st)
{
    *st = c->st;
    st->points_buffered = c->n_open_points + c->sealed_points;
}

void tide_client_identity(const tide_client *c, uint64_t *account_id, int *role,
                          const char **device)
{
    if (account_id)
        *account_id = c->account_id;
    if (role)
        *role = c->role;
    if (device)
        *device = c->device ? c->device : "";
}
