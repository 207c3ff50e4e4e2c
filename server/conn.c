/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Connections: accept, framing (docs/protocol.md, "Framing"), the
 * handshake state machine, dispatch of requests to their handlers, flow
 * control and timeouts. Framing is proto's one decoder (frame.h), fed
 * straight from the bufferevent's input chains: each byte is copied once,
 * into the decoder's buffer, which grows by doubling and is kept across
 * frames up to 256 KiB.
 *
 *   CONN_NEW --Hello--> CONN_HELLO --Auth ok--> CONN_AUTHED
 *      (handle_hello)      (handle_auth)      --Logout--> CONN_HELLO
 *
 * Invariants (each TIDE_ASSERTed where it could break, named there):
 *   1. A frame's length is checked before any byte of its payload is
 *      buffered for parsing, so what waits for more input is less than one
 *      frame of at most max_frame_bytes (max_unauth_frame_bytes until
 *      Auth); an oversized or undecodable frame is answered with an Error
 *      under request id 0 and the connection closes (on_read).
 *   2. While the output buffer is above cfg.out_high_bytes the connection
 *      is not read: a client that does not read its answers cannot make
 *      the server buffer without bound. Every addition to the output,
 *      conn_send's or a query's, is checked (on_output_added); reading
 *      resumes below half the watermark (on_write). A write that makes no
 *      progress for read_timeout_ms closes the connection.
 *   3. A connection with no request in flight is closed after
 *      idle_timeout_ms of silence; one that started a frame (`partial`:
 *      bytes in the input or the decoder) must finish it within
 *      read_timeout_ms of its first byte, however slowly the bytes come
 *      (set_timeouts).
 *   4. ids holds the ids of requests in flight, never id 0: an id joins in
 *      dispatch() when its handler leaves the request in flight and leaves
 *      when the request's last frame is sent (conn_send) or, for a query
 *      or an export, delivered (conn_request_done). At most max_inflight
 *      ids; when nothing is in flight the set is emptied, which drops the
 *      id of a request whose last frame could not be built.
 *   5. What a client makes the server hold is bounded before it is spent:
 *      a frame's kind is checked against the connection's state (and, for
 *      writes, its role) before its body is decoded (refuse_undecoded); a
 *      decode takes at most max_decode_ratio times its payload (frame.h);
 *      the bytes of partial frames across all connections, less the first
 *      max_unauth_frame_bytes of each, stay within
 *      partial_frame_budget_bytes (srv->partial_bytes, feed).
 *   6. A connection is freed only from a libevent callback's top level
 *      (on_write, on_event) or at shutdown, never inside a handler:
 *      conn_close() defers it, so that nothing touches a freed conn after
 *      dispatch().
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "server.h"

static void conn_free(struct conn *c);
static void on_read(struct bufferevent *bev, void *arg);

/* ---- Request ids in flight ---------------------------------------------- */

static uint32_t ids_home(const struct conn_ids *t, uint64_t id)
{
    return (uint32_t)((id * 0x9e3779b97f4a7c15ull) >> 32) & (t->cap - 1);
}

/* Is `id` in the table? When it is, *at gets its slot. */
static int ids_find(const struct conn_ids *t, uint64_t id, uint32_t *at)
{
    if (t->count == 0)
        return 0;
    for (uint32_t i = ids_home(t, id), n = 0; n < t->cap;
         i = (i + 1) & (t->cap - 1), n++) {
        if (t->slot[i] == id) {
            *at = i;
            return 1;
        }
        if (t->slot[i] == 0)
            return 0;
    }
    return 0;
}

static void ids_put(struct conn_ids *t, uint64_t id)
{
    uint32_t i = ids_home(t, id);

    while (t->slot[i])
        i = (i + 1) & (t->cap - 1);
    t->slot[i] = id;
    t->count++;
}

/* Add `id` (not 0, not present). The table stays at most half full, so
 * a probe always ends at a free slot. Returns 0, or -ENOMEM or TIDE_EFULL
 * (max_inflight ids): the id is then not tracked, and a duplicate of it
 * goes unnoticed. */
static int ids_add(struct conn *c, uint64_t id)
{
    struct conn_ids *t = &c->ids;

    uint32_t at;

    TIDE_ASSERT(id != 0 && !ids_find(t, id, &at));
    if (t->count >= c->srv->cfg.max_inflight)
        return TIDE_EFULL; /* stale ids (invariant 4) never grow it more */
    if ((t->count + 1) * 2 > t->cap) {
        struct conn_ids g = {NULL, t->cap ? 2 * t->cap : 16, 0};

        g.slot = tide_calloc(g.cap, sizeof(*g.slot));
        if (!g.slot)
            return -ENOMEM;
        for (uint32_t i = 0; i < t->cap; i++)
            if (t->slot[i])
                ids_put(&g, t->slot[i]);
        tide_free(t->slot);
        *t = g;
    }
    ids_put(t, id);
    TIDE_ASSERT(t->count <= c->srv->cfg.max_inflight && t->count * 2 <= t->cap);
    return 0;
}

/* Remove `id` if present, shifting back the entries of its probe run so
 * that no lookup stops early (no tombstones). */
static void ids_del(struct conn_ids *t, uint64_t id)
{
    uint32_t hole, i;

    if (!ids_find(t, id, &hole))
        return;
    t->slot[hole] = 0;
    t->count--;
    for (i = (hole + 1) & (t->cap - 1); t->slot[i];
         i = (i + 1) & (t->cap - 1)) {
        uint32_t home = ids_home(t, t->slot[i]);

        /* Move the entry into the hole unless its home lies cyclically
         * in (hole, i]: then it is already as close as it may be. */
        if (((i - home) & (t->cap - 1)) >= ((i - hole) & (t->cap - 1))) {
            t->slot[hole] = t->slot[i];
            t->slot[i] = 0;
            hole = i;
        }
    }
}

/* A frame for request `rid` with `body` goes out: unless it is one chunk
 * of a stream, it is the request's last, and the id is free again. */
static void note_answer(struct conn *c, uint64_t rid,
                        Tide__V1__Envelope__BodyCase body)
{
    if (c->keep_id || body == TIDE__V1__ENVELOPE__BODY_QUERY_CHUNK ||
        body == TIDE__V1__ENVELOPE__BODY_EXPORT_CHUNK)
        return;
    ids_del(&c->ids, rid);
}

void conn_request_done(struct conn *c, uint64_t rid)
{
    if (!c->keep_id)
        ids_del(&c->ids, rid);
}

/* Called after every change to the output buffer, conn_send's or a query
 * thread's frames moved by query_deliver(): pauses reading when the output
 * passes the high watermark (invariant 2). */
static void on_output_added(struct evbuffer *buf,
                            const struct evbuffer_cb_info *info, void *arg)
{
    struct conn *c = arg;

    (void)info;
    if (!c->read_paused && !c->closing &&
        evbuffer_get_length(buf) > c->srv->cfg.out_high_bytes) {
        c->read_paused = 1;
        atomic_fetch_add(&c->srv->metrics.connections_read_paused, 1);
        bufferevent_disable(c->bev, EV_READ);
    }
}

size_t conn_out_pending(const struct conn *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

static uint64_t mono_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000 + 1;
}

static void set_timeouts(struct conn *c)
{
    const struct tided_config *cfg = &c->srv->cfg;
    uint32_t ms = c->inflight ? 0 : cfg->idle_timeout_ms;
    struct timeval rt, wt = {cfg->read_timeout_ms / 1000,
                             (cfg->read_timeout_ms % 1000) * 1000};

    /* Invariant 3: the timer follows the bytes of a started frame. */
    TIDE_ASSERT(c->partial ==
                (tide_frame_decoder_pending(&c->dec) > 0 ||
                 evbuffer_get_length(bufferevent_get_input(c->bev)) > 0));
    if (c->handshaking) {
        /* A TLS handshake is bounded like a frame: a client that stalls
         * in it holds a descriptor and OpenSSL's state, not for idle
         * minutes. */
        uint64_t spent = mono_ms() - c->handshake_start_ms;

        ms = spent < cfg->read_timeout_ms
                 ? cfg->read_timeout_ms - (uint32_t)spent
                 : 1;
    } else if (c->partial) {
        /* libevent restarts its timer with every read: what is left of
         * the frame's deadline is set again each time, so that a byte
         * now and then does not keep the frame alive. */
        uint64_t now = mono_ms(), spent;

        if (!c->frame_start_ms)
            c->frame_start_ms = now;
        spent = now - c->frame_start_ms;
        ms = spent < cfg->read_timeout_ms
                 ? cfg->read_timeout_ms - (uint32_t)spent
                 : 1;
    } else {
        c->frame_start_ms = 0;
    }
    rt.tv_sec = ms / 1000;
    rt.tv_usec = (ms % 1000) * 1000;
    bufferevent_set_timeouts(c->bev, ms ? &rt : NULL, &wt);
}

/* What a decoder holding `pending` bytes is charged against the budget:
 * the first max_unauth_frame_bytes of each connection are free, so that a
 * bystander's small request (a Ping, a device's write) is never refused
 * because other connections' large frames filled the budget. */
static size_t partial_cost(const struct conn *c, size_t pending)
{
    size_t free_bytes = c->srv->cfg.max_unauth_frame_bytes;

    return pending > free_bytes ? pending - free_bytes : 0;
}

/* Keep srv->partial_bytes equal to the sum of what the connections'
 * decoders are charged (invariant 5); a closing connection holds nothing. */
static void partial_charge(struct conn *c)
{
    size_t now =
        c->closing ? 0 : partial_cost(c, tide_frame_decoder_pending(&c->dec));

    c->srv->partial_bytes = c->srv->partial_bytes - c->partial_charged + now;
    c->partial_charged = now;
}

static void decoder_init(struct conn *c)
{
    tide_frame_decoder_init(&c->dec, c->srv->cfg.max_frame_bytes,
                            &tide_frame_allocator);
    tide_frame_decoder_set_decode_ratio(&c->dec, c->srv->cfg.max_decode_ratio);
}

/* A decoder that held a large frame gives its buffer back once empty, so
 * that an idle connection keeps no more than this. */
#define DECODER_KEEP_BYTES (256u << 10)

/* Empty the decoder of `c`: a large buffer is freed by the write worker,
 * as unmapping megabytes (the 16 MiB frames of many connections closing
 * at once) would stall the loop. */
static void decoder_fini(struct conn *c)
{
    if (c->dec.cap > DECODER_KEEP_BYTES) {
        tided_write_free_later(c->srv, c->dec.buf);
        c->dec.buf = NULL;
    }
    tide_frame_decoder_fini(&c->dec);
}

/* Stop reading and free the connection once its output is flushed. Never
 * frees it here (invariant 6): with nothing left to send, the write
 * callback is scheduled to run from the loop. */
static void conn_close(struct conn *c)
{
    c->closing = 1;
    bufferevent_disable(c->bev, EV_READ);
    /* Nothing more is read: the decoder's bytes are released now, not
     * when the output has drained. on_read returns without touching the
     * decoder once closing is set. */
    decoder_fini(c);
    decoder_init(c);
    partial_charge(c);
    if (conn_out_pending(c) == 0)
        bufferevent_trigger(c->bev, EV_WRITE,
                            BEV_TRIG_IGNORE_WATERMARKS |
                                BEV_TRIG_DEFER_CALLBACKS);
}

int conn_send(struct conn *c, const Tide__V1__Envelope *env)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t size = tide_frame_size(env);
    struct evbuffer_iovec vec;
    int64_t n;
    int rc;

    /* Answered even if the frame cannot go out: the request is over. */
    note_answer(c, env->request_id, env->body_case);
    if (c->closing)
        return TIDE_ECLOSED;
    if (evbuffer_reserve_space(out, (ev_ssize_t)size, &vec, 1) < 1)
        return -ENOMEM;
    n = tide_frame_encode(env, vec.iov_base, vec.iov_len);
    if (n < 0)
        return (int)n; /* TIDE_ENOSPACE: the reservation is dropped */
    vec.iov_len = (size_t)n;
    rc = evbuffer_commit_space(out, &vec, 1);
    if (rc)
        return -ENOMEM;
    atomic_fetch_add(&c->srv->metrics.frames_out, 1);
    atomic_fetch_add(&c->srv->metrics.bytes_out, (uint64_t)n);
    /* on_output_added paused reading if this crossed the watermark. */
    TIDE_ASSERT(c->read_paused ||
                conn_out_pending(c) <= c->srv->cfg.out_high_bytes);
    return 0;
}

void conn_send_error(struct conn *c, uint64_t rid, Tide__V1__ErrorCode code,
                     const char *message, int close_after)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__Error err = TIDE__V1__ERROR__INIT;

    err.code = code;
    err.message = (char *)message;
    err.retryable = tide_wire_retryable(code);
    env.request_id = rid;
    env.body_case = TIDE__V1__ENVELOPE__BODY_ERROR;
    env.error = &err;
    conn_send(c, &env);
    if (close_after)
        conn_close(c);
}

/* ---- Session requests --------------------------------------------------- */

static void handle_hello(struct conn *c, const Tide__V1__Envelope *env)
{
    const struct tided_config *cfg = &c->srv->cfg;
    Tide__V1__Envelope out = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__HelloOk ok = TIDE__V1__HELLO_OK__INIT;
    Tide__V1__Limits lim = TIDE__V1__LIMITS__INIT;

    if (env->hello->protocol_version != 1) {
        conn_send_error(c, env->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_UNSUPPORTED_VERSION,
                        "this server speaks protocol version 1", 1);
        return;
    }
    lim.max_frame_bytes = cfg->max_frame_bytes;
    lim.max_batch_points = cfg->max_batch_points;
    lim.max_batch_groups = cfg->max_batch_groups;
    lim.max_string_bytes = TIDE_STR_BYTES_MAX; /* names: docs/accounts.md */
    lim.max_query_points = cfg->max_query_points;
    lim.query_timeout_ms = cfg->query_timeout_ms;
    lim.max_inflight_requests = cfg->max_inflight;
    lim.max_chunk_bytes = cfg->max_chunk_bytes;
    lim.idle_timeout_ms = cfg->idle_timeout_ms;
    ok.protocol_version = 1;
    ok.server_version = TIDED_VERSION;
    ok.limits = &lim;
    ok.server_time_ns = tided_now_ns();
    out.request_id = env->request_id;
    out.body_case = TIDE__V1__ENVELOPE__BODY_HELLO_OK;
    out.hello_ok = &ok;
    if (c->state == CONN_NEW)
        c->state = CONN_HELLO;
    conn_send(c, &out);
}

static void handle_ping(struct conn *c, const Tide__V1__Envelope *env)
{
    Tide__V1__Envelope out = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__Pong pong = TIDE__V1__PONG__INIT;

    pong.nonce = env->ping->nonce;
    pong.server_time_ns = tided_now_ns();
    out.request_id = env->request_id;
    out.body_case = TIDE__V1__ENVELOPE__BODY_PONG;
    out.pong = &pong;
    conn_send(c, &out);
}

/* Responses a client must never send. */
static int is_response(Tide__V1__Envelope__BodyCase b)
{
    switch (b) {
    case TIDE__V1__ENVELOPE__BODY_HELLO_OK:
    case TIDE__V1__ENVELOPE__BODY_AUTH_OK:
    case TIDE__V1__ENVELOPE__BODY_ERROR:
    case TIDE__V1__ENVELOPE__BODY_PONG:
    case TIDE__V1__ENVELOPE__BODY_OK:
    case TIDE__V1__ENVELOPE__BODY_WRITE_ACK:
    case TIDE__V1__ENVELOPE__BODY_QUERY_CHUNK:
    case TIDE__V1__ENVELOPE__BODY_QUERY_END:
    case TIDE__V1__ENVELOPE__BODY_ACCOUNT_CREATE_OK:
    case TIDE__V1__ENVELOPE__BODY_LOGIN_OK:
    case TIDE__V1__ENVELOPE__BODY_ACCOUNT:
    case TIDE__V1__ENVELOPE__BODY_ACCOUNT_DELETE_OK:
    case TIDE__V1__ENVELOPE__BODY_ACCOUNT_LIST_OK:
    case TIDE__V1__ENVELOPE__BODY_TIER_LIST_OK:
    case TIDE__V1__ENVELOPE__BODY_KEY_CREATE_OK:
    case TIDE__V1__ENVELOPE__BODY_KEY_LIST_OK:
    case TIDE__V1__ENVELOPE__BODY_DEVICE:
    case TIDE__V1__ENVELOPE__BODY_DEVICE_LIST_OK:
    case TIDE__V1__ENVELOPE__BODY_USAGE_OK:
    case TIDE__V1__ENVELOPE__BODY_AUTH_LOG_OK:
    case TIDE__V1__ENVELOPE__BODY_NOTIFICATION_LIST_OK:
    case TIDE__V1__ENVELOPE__BODY_EXPORT_CHUNK:
    case TIDE__V1__ENVELOPE__BODY_EXPORT_END:
    case TIDE__V1__ENVELOPE__BODY_SERVER_STATUS_OK:
    case TIDE__V1__ENVELOPE__BODY_ADMIN_COMPACT_OK:
    case TIDE__V1__ENVELOPE__BODY_RETENTION_OK:
    case TIDE__V1__ENVELOPE__BODY_ERASURE_REPORT_OK:
    case TIDE__V1__ENVELOPE__BODY_MASTER_KEY_ROTATE_OK:
        return 1;
    default:
        return 0;
    }
}

static void route(struct conn *c, const Tide__V1__Envelope *env)
{
    Tide__V1__Envelope__BodyCase b = env->body_case;

    if (c->srv->stopping) {
        conn_send_error(c, env->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_SHUTTING_DOWN,
                        "server is shutting down; reconnect later", 1);
        return;
    }
    /* A NUL inside a string would be cut off by protobuf-c: refuse the
     * request rather than act on a truncated name, key or value
     * (docs/protocol.md, "Framing"). A batch's answer keeps its place
     * among the connection's write responses. */
    if (c->dec.nul_field) {
        char msg[128];

        snprintf(msg, sizeof(msg),
                 "string field '%s' holds a NUL byte, which no name, key or "
                 "value may",
                 c->dec.nul_field);
        if (b == TIDE__V1__ENVELOPE__BODY_WRITE_BATCH)
            ack_refuse(c, env->request_id,
                       TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, msg,
                       0);
        else
            conn_send_error(c, env->request_id,
                            TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                            msg, 0);
        return;
    }
    if (b == TIDE__V1__ENVELOPE__BODY__NOT_SET || is_response(b)) {
        conn_send_error(c, env->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_UNKNOWN_MESSAGE,
                        "not a request message", 0);
        return;
    }
    if (b == TIDE__V1__ENVELOPE__BODY_HELLO) {
        handle_hello(c, env);
        return;
    }
    if (b == TIDE__V1__ENVELOPE__BODY_PING) {
        handle_ping(c, env);
        return;
    }
    if (c->state == CONN_NEW) {
        conn_send_error(c, env->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_NOT_AUTHENTICATED,
                        "send Hello first", 0);
        return;
    }
    if (c->inflight >= c->srv->cfg.max_inflight) {
        conn_send_error(c, env->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_TOO_MANY_REQUESTS,
                        "too many requests in flight on this connection", 0);
        return;
    }
    switch (b) {
    case TIDE__V1__ENVELOPE__BODY_AUTH:
        handle_auth(c, env);
        return;
    case TIDE__V1__ENVELOPE__BODY_LOGIN:
        handle_login(c, env);
        return;
    case TIDE__V1__ENVELOPE__BODY_ACCOUNT_CREATE:
    case TIDE__V1__ENVELOPE__BODY_VERIFY_EMAIL:
        handle_admin(c, env);
        return;
    default:
        break;
    }
    if (c->state != CONN_AUTHED) {
        conn_send_error(c, env->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_NOT_AUTHENTICATED,
                        "authenticate first", 0);
        return;
    }
    switch (b) {
    case TIDE__V1__ENVELOPE__BODY_WRITE_BATCH:
        handle_write(c, env);
        break;
    case TIDE__V1__ENVELOPE__BODY_QUERY:
        handle_query(c, env);
        break;
    case TIDE__V1__ENVELOPE__BODY_QUERY_CANCEL:
        handle_query_cancel(c, env);
        break;
    case TIDE__V1__ENVELOPE__BODY_EXPORT_START:
        handle_export(c, env);
        break;
    case TIDE__V1__ENVELOPE__BODY_LOGOUT:
        handle_logout(c, env);
        break;
    case TIDE__V1__ENVELOPE__BODY_ADMIN_COMPACT:
    case TIDE__V1__ENVELOPE__BODY_RETENTION_GET:
    case TIDE__V1__ENVELOPE__BODY_ERASURE_REPORT:
        handle_compact_admin(c, env);
        break;
    case TIDE__V1__ENVELOPE__BODY_MASTER_KEY_ROTATE:
        handle_master_key_rotate(c, env);
        break;
    default:
        if (!handle_admin(c, env))
            conn_send_error(c, env->request_id,
                            TIDE__V1__ERROR_CODE__ERROR_CODE_UNKNOWN_MESSAGE,
                            "request not supported by this server", 0);
        break;
    }
}

/* Invariant 5: before its body is decoded, a frame the connection may not
 * send in its state is answered under its request id, as route() would
 * answer it, and dropped: until Auth only the handshake's few small
 * requests are decoded at all. Writes from a credential that may not
 * write (analyst keys, the operator) are refused undecoded too, through
 * the write FIFO as handle_write() refuses them. Returns 1 when it
 * answered. */
static int refuse_undecoded(struct conn *c, const struct tide_frame_head *h)
{
    Tide__V1__Envelope__BodyCase b = (Tide__V1__Envelope__BodyCase)h->body;

    if (c->srv->stopping)
        return 0; /* route() answers SHUTTING_DOWN */
    if (c->state == CONN_AUTHED) {
        if (b != TIDE__V1__ENVELOPE__BODY_WRITE_BATCH ||
            (c->who.account_id && c->who.role != TIDE_META_ROLE_ANALYST))
            return 0;
        ack_refuse(c, h->request_id,
                   TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED,
                   "this credential may not write", 0);
        return 1;
    }
    switch (b) {
    case TIDE__V1__ENVELOPE__BODY_HELLO:
    case TIDE__V1__ENVELOPE__BODY_PING:
        return 0;
    case TIDE__V1__ENVELOPE__BODY_AUTH:
    case TIDE__V1__ENVELOPE__BODY_LOGIN:
    case TIDE__V1__ENVELOPE__BODY_ACCOUNT_CREATE:
    case TIDE__V1__ENVELOPE__BODY_VERIFY_EMAIL:
        if (c->state != CONN_NEW)
            return 0;
        break;
    default:
        if (b == TIDE__V1__ENVELOPE__BODY__NOT_SET || is_response(b)) {
            conn_send_error(c, h->request_id,
                            TIDE__V1__ERROR_CODE__ERROR_CODE_UNKNOWN_MESSAGE,
                            "not a request message", 0);
            return 1;
        }
        break;
    }
    conn_send_error(
        c, h->request_id, TIDE__V1__ERROR_CODE__ERROR_CODE_NOT_AUTHENTICATED,
        c->state == CONN_NEW ? "send Hello first" : "authenticate first", 0);
    return 1;
}

/* Route one request and remember its id while it stays in flight: ids are
 * unique among a connection's requests in flight (docs/protocol.md), and a
 * duplicate is refused without touching the earlier request. */
static void dispatch(struct conn *c, const Tide__V1__Envelope *env)
{
    uint64_t rid = env->request_id;
    uint32_t before = c->inflight, at;
    int pending;

    /* An id whose last frame could not be built has no request left. */
    if (c->inflight == 0 && c->ids.count) {
        memset(c->ids.slot, 0, c->ids.cap * sizeof(*c->ids.slot));
        c->ids.count = 0;
    }
    if (rid && ids_find(&c->ids, rid, &at)) {
        c->keep_id = 1;
        conn_send_error(c, rid,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                        "request id already in flight on this connection", 0);
        c->keep_id = 0;
        return;
    }
    route(c, env);
    if (c->closing || rid == 0)
        return;
    /* A write joins the FIFO at its tail and stays there until answered
     * (answering it may also flush earlier ones, so the count alone does
     * not tell); other requests left in flight raised the count. */
    if (env->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_BATCH)
        pending = c->writes_tail && c->writes_tail->request_id == rid;
    else
        pending = c->inflight > before;
    if (pending && !ids_find(&c->ids, rid, &at))
        ids_add(c, rid);
    /* Invariant 4: an id is tracked only while its request is in flight. */
    TIDE_ASSERT(!pending || c->inflight > 0);
}

/* Log a short sample of offending bytes, non-printables as '.'. */
static void log_sample(struct conn *c, const char *what)
{
    char txt[sizeof(c->sample) + 1];

    for (size_t i = 0; i < c->sample_len; i++)
        txt[i] = c->sample[i] >= 0x20 && c->sample[i] < 0x7f
                     ? (char)c->sample[i]
                     : '.';
    txt[c->sample_len] = 0;
    tide_log(LOG_WARN, "protocol error from %s: %s; bytes '%s'", c->ip, what,
             txt);
    atomic_fetch_add(&c->srv->metrics.protocol_errors, 1);
}

/* Move the first contiguous extent of the input into the decoder, without
 * an intermediate copy. Returns 0, TIDE_FRAME_NEED_MORE when the input is
 * empty, TIDE_EFULL when the bytes would take the partial frames of all
 * connections above partial_frame_budget_bytes (invariant 5; nothing is
 * fed), or the decoder's error (TIDE_ETOOLARGE as soon as a header
 * announces an oversized frame, -ENOMEM). Over the budget, only what is
 * still free for this connection (partial_cost) is fed, so the small
 * frames at the front of its input still go through. */
static int feed(struct conn *c, struct evbuffer *in)
{
    struct evbuffer_iovec v;
    size_t pending = tide_frame_decoder_pending(&c->dec), n;
    int rc;

    if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
        return TIDE_FRAME_NEED_MORE;
    c->sample_len =
        v.iov_len < sizeof(c->sample) ? v.iov_len : sizeof(c->sample);
    memcpy(c->sample, v.iov_base, c->sample_len);
    n = v.iov_len;
    if (c->srv->partial_bytes - c->partial_charged +
            partial_cost(c, pending + n) >
        c->srv->cfg.partial_frame_budget_bytes) {
        size_t free_n = c->srv->cfg.max_unauth_frame_bytes;

        if (pending >= free_n)
            return TIDE_EFULL;
        n = free_n - pending;
    }
    rc = tide_frame_decoder_feed(&c->dec, v.iov_base, n);
    evbuffer_drain(in, n);
    partial_charge(c);
    return rc;
}

/* The frame limit of the connection's state (invariant 1). */
static uint32_t frame_limit(const struct conn *c)
{
    const struct tided_config *cfg = &c->srv->cfg;

    return c->state == CONN_AUTHED ||
                   cfg->max_unauth_frame_bytes > cfg->max_frame_bytes
               ? cfg->max_frame_bytes
               : cfg->max_unauth_frame_bytes;
}

/* Answer a framing failure of on_read() under request id 0 and close:
 * no frame boundary is left to resume at (invariant 1). */
static void frame_error(struct conn *c, int rc)
{
    char msg[160];
    Tide__V1__ErrorCode code = tide_wire_error(rc);

    if (rc == TIDE_ETOOLARGE && c->dec.mem_over)
        snprintf(msg, sizeof(msg),
                 "frame payload decodes to more than max_decode_ratio (%u) "
                 "times its size: over the decode memory bound",
                 c->srv->cfg.max_decode_ratio);
    else if (rc == TIDE_ETOOLARGE && c->state != CONN_AUTHED)
        snprintf(msg, sizeof(msg),
                 "frame length above max_unauth_frame_bytes (%u), the limit "
                 "before authentication",
                 frame_limit(c));
    else if (rc == TIDE_ETOOLARGE)
        snprintf(msg, sizeof(msg), "frame length above max_frame_bytes (%u)",
                 frame_limit(c));
    else if (rc == TIDE_EFULL) {
        snprintf(msg, sizeof(msg),
                 "server busy: partial frames of all connections at "
                 "partial_frame_budget_bytes; retry later");
        code = TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED;
    } else
        snprintf(msg, sizeof(msg), "%s",
                 rc == TIDE_EMALFORMED ? "frame payload is not a valid Envelope"
                                       : "out of memory reading the frame");
    log_sample(c, msg);
    conn_send_error(c, 0, code, msg, 1);
}

/* A large WriteBatch frame of an authenticated connection is decoded by
 * the write worker, off the loop (tided_write_decode): it leaves the
 * decoder with the decoder's buffer, and the connection is not read until
 * conn_decoded() has dispatched it, so that its requests keep their
 * order. Everything route() checks still happens, on the decoded
 * envelope. Returns 1 when the frame was taken (handed off, or refused
 * for want of room). */
static int decode_offloop(struct conn *c, const struct tide_frame_head *h)
{
    int rc;

    if (h->body != TIDE__V1__ENVELOPE__BODY_WRITE_BATCH ||
        c->state != CONN_AUTHED || c->srv->stopping ||
        h->bytes < TIDED_OFFLOOP_DECODE_BYTES)
        return 0;
    rc = tided_write_decode(c, h->bytes);
    if (rc == -ENOMEM)
        return 0; /* decoded here, as a small frame is */
    if (rc == TIDE_EFULL) {
        tide_frame_decoder_skip(&c->dec);
        ack_refuse(c, h->request_id,
                   TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
                   "too many batches wait for the write worker; retry "
                   "shortly",
                   100);
        return 1;
    }
    bufferevent_disable(c->bev, EV_READ);
    return 1;
}

/* After the write worker's answer on a frame of `c`: read again, the
 * frames that arrived meanwhile first. */
static void decoded_resume(struct conn *c)
{
    if (c->closing)
        return;
    if (!c->read_paused)
        bufferevent_enable(c->bev, EV_READ);
    on_read(c->bev, c);
}

void conn_decoded(struct conn *c, Tide__V1__Envelope *env,
                  struct tide_frame_arena *arena, int rc, int mem_over,
                  const char *nul_field, size_t frame_bytes)
{
    c->decoding = NULL;
    if (c->closing) {
        tide_frame_arena_release(arena);
        return;
    }
    if (rc) {
        /* As on_read answers a decode failure: id 0, then close. */
        tide_frame_arena_release(arena);
        c->dec.mem_over = mem_over;
        frame_error(c, rc);
        return;
    }
    c->frame_bytes = frame_bytes;
    c->dec.nul_field = nul_field; /* route() refuses a NUL in a string */
    tided_test_alloc_arm((unsigned long)(env->request_id >> 32));
    c->env_arena = arena;
    dispatch(c, env);
    c->env_arena = NULL;
    tide_frame_arena_release(arena); /* env with it */
    tided_test_alloc_arm(0);
    decoded_resume(c);
}

void conn_refused_undecoded(struct conn *c, uint64_t rid,
                            Tide__V1__ErrorCode code, const char *msg)
{
    c->decoding = NULL;
    if (c->closing)
        return;
    ack_refuse(c, rid, code, msg, 0);
    decoded_resume(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    /* Bytes are fed only when the decoder needs them, so that while reading
     * is paused they wait in the kernel's socket buffer (invariant 2). */
    while (!c->closing && !c->read_paused && !c->decoding) {
        size_t before = tide_frame_decoder_pending(&c->dec);
        Tide__V1__Envelope *env = NULL;
        struct tide_frame_head h;
        int rc;

        /* Invariant 2: reading only below the high watermark. */
        TIDE_ASSERT(conn_out_pending(c) <= c->srv->cfg.out_high_bytes);
        tided_test_alloc_arm(0); /* a test's failure belongs to one request */
        tide_frame_decoder_set_max(&c->dec, frame_limit(c));
        rc = tide_frame_decoder_peek(&c->dec, &h);
        if (rc == TIDE_FRAME_NEED_MORE) {
            /* Invariant 1: what waits for more is less than one frame of
             * at most max_frame_bytes, its length already checked. */
            TIDE_ASSERT(before <
                        TIDE_FRAME_HEADER_BYTES + c->srv->cfg.max_frame_bytes);
            rc = feed(c, in);
            if (rc == TIDE_FRAME_NEED_MORE)
                break;
            if (rc == 0)
                continue;
        }
        if (rc == 0 && refuse_undecoded(c, &h)) {
            tide_frame_decoder_skip(&c->dec);
        } else if (rc == 0 && !decode_offloop(c, &h)) {
            rc = tide_frame_decoder_next(&c->dec, &env);
        }
        if (rc) {
            frame_error(c, rc);
            TIDE_ASSERT(c->closing); /* invariant 1: nothing more is read */
            return;
        }
        atomic_fetch_add(&c->srv->metrics.frames_in, 1);
        atomic_fetch_add(&c->srv->metrics.bytes_in, h.bytes);
        c->frame_bytes = h.bytes;
        c->frame_start_ms = 0; /* the next frame's clock starts anew */
        c->dec_large |= h.bytes > DECODER_KEEP_BYTES;
        if (c->dec_large && tide_frame_decoder_pending(&c->dec) == 0) {
            decoder_fini(c);
            decoder_init(c);
            c->dec_large = 0;
        }
        partial_charge(c);
        c->partial = tide_frame_decoder_pending(&c->dec) > 0 ||
                     evbuffer_get_length(in) > 0;
        if (env) {
            tided_test_alloc_arm((unsigned long)(env->request_id >> 32));
            dispatch(c, env);
            tide_frame_free(env, NULL);
        }
        if (c->closing)
            return; /* freed later, from the loop (invariant 6) */
    }
    c->partial =
        tide_frame_decoder_pending(&c->dec) > 0 || evbuffer_get_length(in) > 0;
    set_timeouts(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    (void)bev;
    if (c->closing) {
        if (conn_out_pending(c) == 0)
            conn_free(c);
        return;
    }
    if (c->read_paused &&
        conn_out_pending(c) < c->srv->cfg.out_high_bytes / 2) {
        c->read_paused = 0;
        /* The pause was the server's: a frame cut by it gets a new
         * deadline (invariant 3). */
        c->frame_start_ms = 0;
        atomic_fetch_sub(&c->srv->metrics.connections_read_paused, 1);
        if (!c->decoding) /* conn_decoded() resumes it */
            bufferevent_enable(c->bev, EV_READ);
        on_read(c->bev, c);
        if (c->closing)
            return;
    }
    if (c->queries)
        query_resume(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;

    if (what & BEV_EVENT_CONNECTED) { /* the TLS handshake is done */
        c->handshaking = 0;
        tided_tls_handshake_done(c->srv, bev);
        set_timeouts(c);
        return;
    }
    if (c->handshaking) {
        char why[256];

        atomic_fetch_add(&c->srv->metrics.tls_handshake_failures, 1);
        tide_log(LOG_INFO, "closing %s: TLS handshake %s", c->ip,
                 what & BEV_EVENT_TIMEOUT
                     ? "not completed within read_timeout_ms"
                     : tided_tls_error(bev, why, sizeof(why)));
        conn_free(c);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT)
        tide_log(LOG_INFO, "closing %s: %s timeout%s", c->ip,
                 what & BEV_EVENT_READING ? "read" : "write",
                 what & BEV_EVENT_READING && c->partial ? " in a frame" : "");
    /* A frame not completed in time is told why (invariant 3); the
     * error is flushed, or the write timeout ends it. */
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) &&
        c->partial && !c->closing) {
        conn_send_error(c, 0, TIDE__V1__ERROR_CODE__ERROR_CODE_TIMEOUT,
                        "frame not completed within read_timeout_ms", 1);
        return;
    }
    conn_free(c);
}

static void conn_free(struct conn *c)
{
    struct server *s = c->srv;

    ack_conn_closed(c);
    if (c->decoding)
        tided_write_decode_forget(c);
    query_free_all(c);
    if (c->connected_device)
        tide_meta_device_connect(s->meta, &tided_system_principal,
                                 c->who.account_id, c->connected_device, 0,
                                 c->ip);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    bufferevent_free(c->bev);
    atomic_fetch_sub(&s->metrics.connections_open, 1);
    if (c->read_paused)
        atomic_fetch_sub(&s->metrics.connections_read_paused, 1);
    tide_free(c->ids.slot);
    decoder_fini(c);
    c->closing = 1;
    partial_charge(c);
    tide_free(c);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *addr, int socklen, void *arg)
{
    struct server *s = arg;
    struct conn *c;
    int one = 1;

    (void)l;
    (void)socklen;
    if (s->stopping ||
        atomic_load(&s->metrics.connections_open) >= s->cfg.max_connections) {
        tide_log(LOG_WARN, "refusing connection: %s",
                 s->stopping ? "shutting down" : "max_connections reached");
        evutil_closesocket(fd);
        return;
    }
    c = tide_calloc(1, sizeof(*c));
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->srv = s;
    c->id = ++s->next_conn_id;
    decoder_init(c);
    if (addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)addr)->sin_addr,
                  c->ip, sizeof(c->ip));
    else if (addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)addr)->sin6_addr,
                  c->ip, sizeof(c->ip));
    if (s->tls) {
        c->handshaking = 1;
        c->handshake_start_ms = mono_ms();
        c->bev = tided_tls_bev(s, fd);
    } else {
        c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!c->bev) {
        evutil_closesocket(fd);
        tide_free(c);
        return;
    }
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    if (!evbuffer_add_cb(bufferevent_get_output(c->bev), on_output_added, c)) {
        bufferevent_free(c->bev);
        tide_free(c);
        return;
    }
    /* Wake the write callback when the output drains below half the high
     * watermark, to resume reading and paused queries. */
    bufferevent_setwatermark(c->bev, EV_WRITE, s->cfg.out_high_bytes / 2, 0);
    set_timeouts(c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    atomic_fetch_add(&s->metrics.connections_total, 1);
    atomic_fetch_add(&s->metrics.connections_open, 1);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();

    (void)l;
    (void)arg;
    /* EMFILE and friends: the listener keeps running; log and go on. */
    tide_log(LOG_WARN, "accept failed: %s", evutil_socket_error_to_string(err));
}

/* 127.0.0.1 or ::1 style literal plus port into `ss`. Returns 0 or
 * TIDE_EINVAL (not an IP literal). */
static int make_addr(const char *host, int port, struct sockaddr_storage *ss,
                     socklen_t *len)
{
    struct sockaddr_in *in4 = (struct sockaddr_in *)(void *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)(void *)ss;

    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof(*in4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*in6);
        return 0;
    }
    return TIDE_EINVAL;
}

int tided_listen(struct server *s, int *port_out)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int rc = make_addr(s->cfg.listen_host, s->cfg.listen_port, &ss, &len);

    if (rc) {
        tide_log(LOG_ERROR, "bad listen address %s (an IP literal is needed)",
                 s->cfg.listen_host);
        return rc;
    }
    s->listener = evconnlistener_new_bind(
        s->base, on_accept, s,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 4096,
        (struct sockaddr *)&ss, (int)len);
    if (!s->listener) {
        rc = errno ? -errno : -EADDRNOTAVAIL;
        tide_log(LOG_ERROR, "cannot listen on %s:%d: %s", s->cfg.listen_host,
                 s->cfg.listen_port, strerror(-rc));
        return rc;
    }
    evconnlistener_set_error_cb(s->listener, on_accept_error);
    len = sizeof(ss);
    if (getsockname(evconnlistener_get_fd(s->listener), (struct sockaddr *)&ss,
                    &len) == 0)
        *port_out =
            ntohs(ss.ss_family == AF_INET
                      ? ((struct sockaddr_in *)(void *)&ss)->sin_port
                      : ((struct sockaddr_in6 *)(void *)&ss)->sin6_port);
    else
        *port_out = s->cfg.listen_port;
    return 0;
}

void tided_close_all(struct server *s)
{
    while (s->conns)
        conn_free(s->conns);
}
