/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Write acknowledgements (docs/protocol.md, "Write model",
 * "Acknowledgement"): each connection keeps its WriteBatches in a FIFO of
 * pending_write, answered strictly in arrival order; the engine's writer
 * threads report durability through a completion queue the loop drains;
 * the engine's verdict turns into the WriteAck or an Error. write.c builds
 * the batches and queues them here.
 *
 * Invariants:
 *   1. A response leaves a connection only when every earlier write of
 *      that connection has left (conn_flush_writes()).
 *   2. A pending_write whose connection closed (conn NULL) is freed when
 *      its completion is drained, never before: the engine still holds it.
 */
#include <stdlib.h>
#include <string.h>

#include "server.h"

void ack_rejections_free(Tide__V1__Rejection **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        tide_free(v[i]->device);
        tide_free(v[i]->field);
        tide_free(v[i]->message);
        tide_free(v[i]);
    }
    tide_free(v);
}

static void pending_free(struct pending_write *w)
{
    if (w->reply) {
        if (w->reply->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK) {
            ack_rejections_free(w->reply->write_ack->rejections,
                                w->reply->write_ack->n_rejections);
            tide_free(w->reply->write_ack);
        } else if (w->reply->body_case == TIDE__V1__ENVELOPE__BODY_ERROR) {
            tide_free(w->reply->error->message);
            tide_free(w->reply->error);
        }
        tide_free(w->reply);
    }
    tide_free(w);
}

/* A heap Error (freed by pending_free), or NULL without memory. Retryable
 * codes are marked as conn_send_error() marks them. */
static Tide__V1__Error *error_new(Tide__V1__ErrorCode code, const char *msg,
                                  uint32_t retry_after_ms)
{
    Tide__V1__Error *err = tide_calloc(1, sizeof(*err));

    if (!err)
        return NULL;
    tide__v1__error__init(err);
    err->message = tide_strdup(msg);
    if (!err->message) {
        tide_free(err);
        return NULL;
    }
    err->code = code;
    err->retryable = tide_wire_retryable(code);
    err->retry_after_ms = retry_after_ms;
    return err;
}

/* Replace the WriteAck of `w` by Error{code, msg}. Without memory the
 * reply is dropped, and conn_flush_writes() answers INTERNAL instead. */
void ack_enqueue(struct conn *c, struct pending_write *w)
{
    if (c->writes_tail)
        c->writes_tail->next = w;
    else
        c->writes_head = w;
    c->writes_tail = w;
    c->inflight++;
}

void ack_to_error(struct pending_write *w, Tide__V1__ErrorCode code,
                  const char *msg)
{
    Tide__V1__WriteAck *ack = w->reply->write_ack;
    Tide__V1__Error *err = error_new(code, msg, 0);

    ack_rejections_free(ack->rejections, ack->n_rejections);
    tide_free(ack);
    if (!err) {
        tide_free(w->reply);
        w->reply = NULL;
        return;
    }
    w->reply->body_case = TIDE__V1__ENVELOPE__BODY_ERROR;
    w->reply->error = err;
}

/* Engine thread: queue the completion for the loop. */
void ack_on_durable(void *ctx, int rc)
{
    struct pending_write *w = ctx;
    struct server *s = w->srv;

    w->engine_rc = rc;
    pthread_mutex_lock(&s->done_lock);
    w->done_next = NULL;
    if (s->done_tail)
        s->done_tail->done_next = w;
    else
        s->done_head = w;
    s->done_tail = w;
    pthread_mutex_unlock(&s->done_lock);
    event_active(s->wake, EV_READ, 0);
}

/* Turn the engine's verdict into the response of `w`. */
static void settle(struct server *s, struct pending_write *w)
{
    Tide__V1__WriteAck *ack = w->reply->write_ack;

    w->done = 1;
    if (w->engine_rc == TIDE_EDUPLICATE) {
        atomic_fetch_add(&s->metrics.write_duplicates, 1);
        ack_rejections_free(ack->rejections, ack->n_rejections);
        ack->rejections = NULL;
        ack->n_rejections = 0;
        ack->accepted_points = ack->rejected_points = 0;
        ack->duplicate = 1;
    } else if (w->engine_rc) {
        tide_log(LOG_ERROR, "write failed in the engine: %s",
                 tide_strerror(w->engine_rc));
        ack_to_error(w, TIDE__V1__ERROR_CODE__ERROR_CODE_STORAGE,
                     tide_strerror(w->engine_rc));
    } else {
        atomic_fetch_add(&s->metrics.points_accepted, w->accepted);
    }
}

void conn_flush_writes(struct conn *c)
{
    while (c->writes_head && c->writes_head->done) {
        struct pending_write *w = c->writes_head;

        c->writes_head = w->next;
        if (!c->writes_head)
            c->writes_tail = NULL;
        if (w->reply) {
            if (w->reply->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK)
                atomic_fetch_add(&c->srv->metrics.write_acks, 1);
            conn_send(c, w->reply);
        } else {
            conn_send_error(c, w->request_id,
                            TIDE__V1__ERROR_CODE__ERROR_CODE_INTERNAL,
                            "out of memory building the response", 0);
        }
        c->inflight--;
        pending_free(w);
    }
}

void tided_writes_drain(struct server *s)
{
    struct pending_write *w;

    pthread_mutex_lock(&s->done_lock);
    w = s->done_head;
    s->done_head = s->done_tail = NULL;
    pthread_mutex_unlock(&s->done_lock);
    while (w) {
        struct pending_write *next = w->done_next;

        s->inflight_writes--;
        if (w->reply)
            settle(s, w);
        if (!w->conn)
            pending_free(w);
        else
            conn_flush_writes(w->conn);
        w = next;
    }
}

/* Refuse a batch whole. The Error joins the connection's write FIFO so
 * that write responses keep the order of the batches. */
void ack_refuse(struct conn *c, uint64_t rid, Tide__V1__ErrorCode code,
                const char *msg, uint32_t retry_after_ms)
{
    struct pending_write *w = tide_calloc(1, sizeof(*w));
    Tide__V1__Envelope *env = tide_calloc(1, sizeof(*env));
    Tide__V1__Error *err = error_new(code, msg, retry_after_ms);

    if (!w || !env || !err) {
        tide_free(w);
        tide_free(env);
        if (err)
            tide_free(err->message);
        tide_free(err);
        conn_send_error(c, rid, TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
                        "out of memory", 1);
        return;
    }
    tide__v1__envelope__init(env);
    env->request_id = rid;
    env->body_case = TIDE__V1__ENVELOPE__BODY_ERROR;
    env->error = err;
    w->srv = c->srv;
    w->conn = c;
    w->request_id = rid;
    w->reply = env;
    w->done = 1;
    ack_enqueue(c, w);
    conn_flush_writes(c);
}

void ack_conn_closed(struct conn *c)
{
    struct pending_write *w = c->writes_head, *next;

    for (; w; w = next) {
        next = w->next;
        if (w->done)
            pending_free(w); /* answered: the engine has let go of it */
        else
            w->conn = NULL; /* freed when its completion is drained */
    }
    c->writes_head = c->writes_tail = NULL;
}
