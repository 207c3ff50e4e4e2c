/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The query path (docs/protocol.md, "Query model"): the selection is
 * resolved to series of the caller's account only, sorted by (device,
 * field); raw points stream from the engine's iterator, aggregates and
 * latest points come from tide_db_aggregate() / tide_db_latest(). Results
 * leave as QueryChunk frames of about max_chunk_bytes, then QueryEnd.
 * Exports (export.c) run on the same machinery (query_int.h); the results
 * are produced in query_produce.c.
 *
 * Threads: the selection is resolved on the loop thread (it uses the
 * server's device cache); the engine reads and the encoding of chunks run
 * on a small pool of query threads, so that a long query never stalls the
 * loop and with it every write acknowledgement.
 *
 *   loop: handle_query ──► job queue ──► query thread: produce, encode
 *   loop: deliver frames ◄── ready list ◄── frames queued on the query
 *
 * Flow control: the loop moves frames to the connection only while its
 * output is below the high watermark. A query with more than
 * QUERY_QUEUED_MAX encoded bytes waiting parks between two steps: its
 * thread lets go of it and runs other queries, and the loop puts it back
 * on the job queue once its delivery drained to QUERY_RESUME_BYTES. A
 * client that reads slowly, or not at all, thus holds back its own engine
 * reads but never a query thread; a query's deadline timer on the loop
 * ends it with TIMEOUT after query_timeout_ms in total, parked or not.
 *
 * Invariants:
 *   1. A query_state is freed by whichever of the loop, its query thread
 *      (or its parked state, which holds the thread's reference) and the
 *      ready list lets go of it last (refs); the thread never touches the
 *      connection.
 *   2. Frames of one query reach the connection in the order produced, and
 *      its last frame is QueryEnd, ExportEnd or Error: exactly one of
 *      them.
 *   3. A parked query is on no job queue and no thread runs it; only the
 *      loop unparks it (resume, abandon, deadline), under q->lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ratelimit.h"
#include "query_int.h"

/* ---- Selection --------------------------------------------------------------
 */

static int qseries_cmp(const void *a, const void *b)
{
    const struct qseries *x = a, *y = b;
    int c = strcmp(x->device, y->device);

    return c ? c : strcmp(x->field, y->field);
}

static int add_series(struct query_state *q, uint32_t *cap,
                      const struct tide_meta_device *d, const char *field,
                      uint8_t type, uint64_t id)
{
    if (q->n_series == *cap) {
        uint32_t n = *cap ? 2 * *cap : 64;
        struct qseries *v = tide_realloc(q->series, n * sizeof(*v));

        if (!v)
            return -ENOMEM;
        q->series = v;
        *cap = n;
    }
    snprintf(q->series[q->n_series].device, sizeof(q->series[0].device), "%s",
             d->thing_name);
    snprintf(q->series[q->n_series].field, sizeof(q->series[0].field), "%s",
             field);
    q->series[q->n_series].type = type;
    q->series[q->n_series].id = id;
    q->n_series++;
    return 0;
}

struct select_ctx {
    struct query_state *q;
    uint32_t *cap;
    const struct tide_meta_device *dev;
    int rc;
};

static void on_series(void *ctx, const char *field, uint8_t type, uint64_t id)
{
    struct select_ctx *x = ctx;

    if (x->rc == 0)
        x->rc = add_series(x->q, x->cap, x->dev, field, type, id);
}

/* The series of one device: named fields, or every field. */
static int select_device(struct server *s, struct query_state *q, uint32_t *cap,
                         uint64_t account, const struct tide_meta_device *d,
                         const Tide__V1__Query *qp)
{
    static const uint8_t types[] = {TIDE_TYPE_F64, TIDE_TYPE_I64,
                                    TIDE_TYPE_BOOL, TIDE_TYPE_STR};
    struct select_ctx x = {q, cap, d, 0};
    int rc;

    if (qp->n_fields == 0) {
        rc = tide_meta_series_list(s->meta, account, d->id, on_series, &x);
        return rc ? rc : x.rc;
    }
    for (size_t f = 0; f < qp->n_fields; f++) {
        for (size_t t = 0; t < sizeof(types); t++) {
            struct tide_meta_series_key k = {
                .account_id = account,
                .device_id = d->id,
                .field = qp->fields[f],
                .field_len = (uint32_t)strlen(qp->fields[f]),
                .type = types[t]};
            uint64_t id;

            if (k.field_len == 0 || k.field_len > TIDE_META_FIELD_MAX)
                return TIDE_EINVAL;
            rc = tide_meta_series_lookup(s->meta, &k, &id);
            if (rc == TIDE_ETYPE)
                continue;
            if (rc == 0)
                rc = add_series(q, cap, d, qp->fields[f], types[t], id);
            if (rc && rc != TIDE_ENOTFOUND)
                return rc;
            break;
        }
    }
    return 0;
}

int query_select(struct server *s, struct query_state *q, uint64_t account,
                 const Tide__V1__Query *qp)
{
    const Tide__V1__DeviceSelector *sel = qp->devices;
    struct tide_meta_device *buf = tide_malloc(256 * sizeof(*buf));
    uint64_t after = 0;
    uint32_t cap = 0;
    size_t n;
    int rc = 0;

    if (!buf)
        return -ENOMEM;
    if (sel && sel->n_names && !sel->n_tags) {
        /* Named devices: the server's name cache, no SQL. */
        for (size_t k = 0; k < sel->n_names && rc == 0; k++) {
            struct tide_meta_device d = {.account_id = account};

            rc = tided_device_resolve(s, account, sel->names[k], 0, &d.id);
            if (rc == TIDE_ENOTFOUND) {
                rc = 0;
                continue;
            }
            snprintf(d.thing_name, sizeof(d.thing_name), "%s", sel->names[k]);
            if (rc == 0)
                rc = select_device(s, q, &cap, account, &d, qp);
        }
        goto out;
    }
    do {
        rc = tide_meta_device_list(s->meta, &tided_system_principal, account,
                                   after, buf, 256, &n);
        for (size_t i = 0; rc == 0 && i < n; i++) {
            after = buf[i].id;
            if (tided_device_selected(sel, &buf[i]))
                rc = select_device(s, q, &cap, account, &buf[i], qp);
        }
    } while (rc == 0 && n == 256);
out:
    tide_free(buf);
    if (rc == 0 && q->n_series > 1) {
        uint32_t out = 1;

        qsort(q->series, q->n_series, sizeof(*q->series), qseries_cmp);
        /* A device named twice selects its series once. */
        for (uint32_t i = 1; i < q->n_series; i++)
            if (q->series[i].id != q->series[out - 1].id)
                q->series[out++] = q->series[i];
        q->n_series = out;
    }
    return rc;
}

/* ---- Lifecycle -------------------------------------------------------- */

void query_free(struct query_state *q)
{
    while (q->out_head) {
        struct qframe *f = q->out_head;

        q->out_head = f->next;
        tide_free(f);
    }
    if (q->limited) /* refused before query_start (loop) */
        ratelimit_query_end(q->account_id);
    query_results_fini(q);
    export_state_free(q);
    if (q->deadline_ev) /* before query_start only (loop) */
        event_free(q->deadline_ev);
    tide_iter_close(q->it);
    tide_free(q->series);
    pthread_mutex_destroy(&q->lock);
    tide_free(q);
}

/* Let go of `q` (invariant 1). */
static void query_unref(struct query_state *q)
{
    if (atomic_fetch_sub(&q->refs, 1) == 1)
        query_free(q);
}

static void *query_thread(void *arg)
{
    struct server *s = arg;

    for (;;) {
        struct query_state *q;

        pthread_mutex_lock(&s->qjob_lock);
        while (!s->qjob_head && !s->qjob_stop)
            pthread_cond_wait(&s->qjob_cv, &s->qjob_lock);
        q = s->qjob_head;
        if (q) {
            s->qjob_head = q->job_next;
            if (!s->qjob_head)
                s->qjob_tail = NULL;
        }
        pthread_mutex_unlock(&s->qjob_lock);
        if (!q)
            return NULL; /* stopping and the queue is empty */
        if (query_execute(q) == QUERY_PARKED)
            continue; /* its reference stays with the parked query */
        pthread_mutex_lock(&q->lock);
        q->produced = 1;
        pthread_mutex_unlock(&q->lock);
        /* The loop must see the end even when nothing was queued. */
        pthread_mutex_lock(&s->done_lock);
        pthread_mutex_lock(&q->lock);
        if (!q->ready_queued) {
            q->ready_queued = 1;
            atomic_fetch_add(&q->refs, 1); /* held by the ready list */
            q->ready_next = s->queries_ready;
            s->queries_ready = q;
        }
        pthread_mutex_unlock(&q->lock);
        pthread_mutex_unlock(&s->done_lock);
        event_active(s->wake, EV_READ, 0);
        query_unref(q);
    }
}

int tided_query_threads_start(struct server *s)
{
    pthread_mutex_init(&s->qjob_lock, NULL);
    pthread_cond_init(&s->qjob_cv, NULL);
    for (unsigned i = 0; i < s->cfg.query_threads; i++) {
        if (pthread_create(&s->qthreads[i], NULL, query_thread, s))
            return -1;
        s->n_qthreads++;
    }
    return 0;
}

void tided_query_threads_stop(struct server *s)
{
    pthread_mutex_lock(&s->qjob_lock);
    s->qjob_stop = 1;
    pthread_cond_broadcast(&s->qjob_cv);
    pthread_mutex_unlock(&s->qjob_lock);
    for (unsigned i = 0; i < s->n_qthreads; i++)
        pthread_join(s->qthreads[i], NULL);
    s->n_qthreads = 0;
}

/* Append `q` to the job queue (loop). */
static void job_push(struct server *s, struct query_state *q)
{
    pthread_mutex_lock(&s->qjob_lock);
    q->job_next = NULL;
    if (s->qjob_tail)
        s->qjob_tail->job_next = q;
    else
        s->qjob_head = q;
    s->qjob_tail = q;
    pthread_cond_signal(&s->qjob_cv);
    pthread_mutex_unlock(&s->qjob_lock);
}

int query_park(struct query_state *q)
{
    int parked;

    pthread_mutex_lock(&q->lock);
    /* The loop drains under the same lock, so it either took the frames
     * first (no park) or finds the query parked (invariant 3). */
    q->parked = q->out_bytes > QUERY_QUEUED_MAX && !atomic_load(&q->cancelled);
    parked = q->parked;
    pthread_mutex_unlock(&q->lock);
    return parked;
}

/* Take a parked query's thread reference back (loop). Returns 1 when `q`
 * was parked: the caller then holds that reference. */
static int query_unpark(struct query_state *q)
{
    int was;

    pthread_mutex_lock(&q->lock);
    was = q->parked;
    q->parked = 0;
    pthread_mutex_unlock(&q->lock);
    return was;
}

/* Hand the oldest waiting queries of `c` to the job queue while fewer
 * than query_threads of them are started (loop). A connection that does
 * not read thus holds at most that many parked queries, each with the
 * series it is reading and up to QUERY_QUEUED_MAX of frames; the others
 * wait as their selection only. */
static void conn_start_queries(struct conn *c)
{
    unsigned started = 0;
    struct query_state *q;

    for (q = c->queries; q; q = q->next)
        started += (unsigned)q->started;
    for (q = c->queries; q && started < c->srv->cfg.query_threads;
         q = q->next) {
        if (q->started || atomic_load(&q->cancelled))
            continue;
        q->started = 1;
        started++;
        job_push(c->srv, q);
    }
}

/* Remove `q` from its connection's list (loop). */
static void query_unlink(struct query_state *q)
{
    struct conn *c = q->conn;
    struct query_state **pp = &c->queries;

    if (q->deadline_ev) {
        event_free(q->deadline_ev);
        q->deadline_ev = NULL;
    }
    if (q->limited)
        ratelimit_query_end(q->account_id);
    q->limited = 0;

    while (*pp && *pp != q)
        pp = &(*pp)->next;
    if (*pp)
        *pp = q->next;
    c->inflight--;
    q->conn = NULL;
    if (q->started)
        conn_start_queries(c);
}

/* Move the queued frames of `q` to its connection while the connection
 * keeps up; finish the query after its last frame (loop). */
static void query_deliver(struct query_state *q)
{
    struct conn *c = q->conn;
    struct evbuffer *out;
    struct tide_meta_usage u = {0};
    int produced, empty, resume = 0;

    if (!c)
        return;
    out = bufferevent_get_output(c->bev);
    pthread_mutex_lock(&q->lock);
    while (q->out_head && conn_out_pending(c) < c->srv->cfg.out_high_bytes) {
        struct qframe *f = q->out_head;

        q->out_head = f->next;
        if (!q->out_head)
            q->out_tail = NULL;
        q->out_bytes -= f->len;
        evbuffer_add(out, f->data, f->len);
        atomic_fetch_add(&c->srv->metrics.frames_out, 1);
        atomic_fetch_add(&c->srv->metrics.bytes_out, f->len);
        u.bytes_out += f->len;
        tide_free(f);
    }
    if (q->parked && q->out_bytes <= QUERY_RESUME_BYTES) {
        q->parked = 0;
        resume = 1;
    }
    produced = q->produced;
    empty = !q->out_head;
    pthread_mutex_unlock(&q->lock);
    if (resume)
        job_push(c->srv, q); /* with the thread's reference */
    if (u.bytes_out)
        tide_meta_usage_add(c->srv->meta, q->account_id, &u);
    if (produced && empty) {
        conn_request_done(c, q->rid); /* its last frame is out */
        tided_metrics_query_latency(
            c->srv, (uint64_t)(tided_now_ns() - q->started_ns) / 1000);
        query_unlink(q);
        query_unref(q);
    }
}

void tided_queries_drain(struct server *s)
{
    struct query_state *q;

    pthread_mutex_lock(&s->done_lock);
    q = s->queries_ready;
    s->queries_ready = NULL;
    pthread_mutex_unlock(&s->done_lock);
    while (q) {
        struct query_state *next;

        pthread_mutex_lock(&q->lock);
        next = q->ready_next;
        q->ready_queued = 0;
        pthread_mutex_unlock(&q->lock);
        query_deliver(q);
        query_unref(q); /* the ready list's */
        q = next;
    }
}

void query_resume(struct conn *c)
{
    struct query_state *q = c->queries;

    while (q && conn_out_pending(c) < c->srv->cfg.out_high_bytes) {
        struct query_state *next = q->next;

        query_deliver(q);
        q = next;
    }
}

/* Stop `q` for good (loop): its thread stops at the next frame, queued
 * frames are dropped, the connection no longer knows it. */
static void query_abandon(struct query_state *q)
{
    atomic_store(&q->cancelled, 1);
    if (query_unpark(q) || !q->started)
        query_unref(q); /* the parked thread's, or the never-run one's */
    query_unlink(q);
    query_unref(q);
}

/* The deadline of query `arg` passed (loop): whatever it still has queued
 * is dropped and it ends with TIMEOUT now, on a thread, parked, or waiting
 * for its client to read (invariant 2: its last frame has not gone out,
 * else delivery would have unlinked it and freed this timer). */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct query_state *q = arg;
    struct conn *c = q->conn;

    (void)fd;
    (void)what;
    atomic_store(&q->cancelled, 1);
    pthread_mutex_lock(&q->lock);
    while (q->out_head) {
        struct qframe *f = q->out_head;

        q->out_head = f->next;
        tide_free(f);
    }
    q->out_tail = NULL;
    q->out_bytes = 0;
    pthread_mutex_unlock(&q->lock);
    conn_send_error(c, q->rid, TIDE__V1__ERROR_CODE__ERROR_CODE_TIMEOUT,
                    "query ran past query_timeout_ms", 0);
    tided_metrics_query_latency(
        c->srv, (uint64_t)(tided_now_ns() - q->started_ns) / 1000);
    query_abandon(q);
}

void query_free_all(struct conn *c)
{
    /* Cancelled first, so that none is started as another ends. */
    for (struct query_state *q = c->queries; q; q = q->next)
        atomic_store(&q->cancelled, 1);
    while (c->queries)
        query_abandon(c->queries);
}

/* A query_state for request `rid` of `c` on `account`, or NULL after
 * answering OVERLOADED. */
struct query_state *query_new(struct conn *c, uint64_t rid, uint64_t account)
{
    struct query_state *q = tide_calloc(1, sizeof(*q));

    if (!q) {
        conn_send_error(c, rid, TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
                        "out of memory", 0);
        return NULL;
    }
    q->srv = c->srv;
    q->conn = c;
    q->rid = rid;
    q->account_id = account;
    q->deadline_ev = evtimer_new(c->srv->base, on_deadline, q);
    if (!q->deadline_ev) {
        tide_free(q);
        conn_send_error(c, rid, TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
                        "out of memory", 0);
        return NULL;
    }
    pthread_mutex_init(&q->lock, NULL);
    atomic_init(&q->refs, 2);
    q->started_ns = tided_now_ns();
    return q;
}

uint64_t *query_series_ids(const struct query_state *q)
{
    uint64_t *ids = tide_malloc((q->n_series ? q->n_series : 1) * sizeof(*ids));

    for (uint32_t i = 0; ids && i < q->n_series; i++)
        ids[i] = q->series[i].id;
    return ids;
}

/* Open the engine iterator over the selected series and [from, to). */
int query_open_iterator(struct query_state *q)
{
    uint64_t *ids = query_series_ids(q);
    int rc;

    if (!ids)
        return -ENOMEM;
    rc =
        tide_db_read_open_flags(q->srv->db, ids, q->n_series, q->from_ns,
                                q->to_ns, q->desc ? TIDE_READ_DESC : 0, &q->it);
    tide_free(ids);
    return rc;
}

/* Hand `q` to the query threads, now or once its connection's earlier
 * queries let it (conn_start_queries); the connection keeps it in
 * flight. */
void query_start(struct query_state *q)
{
    struct conn *c = q->conn;
    struct server *s = c->srv;
    struct query_state **tail;

    c->inflight++;
    for (tail = &c->queries; *tail; tail = &(*tail)->next)
        ;
    *tail = q;
    if (q->export) {
        /* An export may run longer than a query; it ends with its
         * connection, whose write timeout closes a client that stops
         * reading. */
        event_free(q->deadline_ev);
        q->deadline_ev = NULL;
    } else {
        uint32_t ms = s->cfg.query_timeout_ms;
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

        evtimer_add(q->deadline_ev, &tv);
    }
    conn_start_queries(c);
}

/* Refuse request `rid` with RATE_LIMITED and a retry-after (loop). */
static void refuse_rate(struct conn *c, uint64_t rid, const char *why,
                        uint32_t retry_ms)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__Error err = TIDE__V1__ERROR__INIT;

    err.code = TIDE__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED;
    err.message = (char *)why;
    err.retryable = 1;
    err.retry_after_ms = retry_ms;
    env.request_id = rid;
    env.body_case = TIDE__V1__ENVELOPE__BODY_ERROR;
    env.error = &err;
    conn_send(c, &env);
}

/* The tier's query limits of `account` (the operator has none). Returns 1
 * when the query may start (*limited: ratelimit_query_end() is owed), 0 when
 * it was refused. */
static int query_admit(struct conn *c, uint64_t rid, uint64_t account,
                       int *limited)
{
    struct account_state *acct;
    const char *why = "";
    uint32_t retry_ms = 0;
    int rc;

    *limited = 0;
    if (c->who.role == TIDE_META_ROLE_ADMIN)
        return 1;
    acct = devices_account(c->srv, account);
    rc = acct ? ratelimit_query_begin(&acct->tier, account, tided_now_ns(),
                                      &retry_ms, &why)
              : -ENOMEM;
    if (rc < 0) {
        conn_send_error(c, rid, TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
                        "out of memory", 0);
        return 0;
    }
    if (rc) {
        refuse_rate(c, rid, why, retry_ms);
        return 0;
    }
    *limited = 1;
    return 1;
}

/* The aggregates `qp` asks for into aggs[0..*n) (QUERY_AGGS_MAX room):
 * `aggregations` when it is not empty (then `aggregation` must be NONE or
 * its first entry), else `aggregation` alone (none for a raw query).
 * Returns NULL, or why the query is INVALID_ARGUMENT. */
static const char *query_aggs(const Tide__V1__Query *qp,
                              Tide__V1__Aggregation *aggs, uint32_t *n)
{
    *n = 0;
    if (qp->n_aggregations == 0) {
        if (qp->aggregation != TIDE__V1__AGGREGATION__AGGREGATION_NONE)
            aggs[(*n)++] = qp->aggregation;
        return NULL;
    }
    if (qp->n_aggregations > QUERY_AGGS_MAX)
        return "more than 8 aggregations";
    if (qp->aggregation != TIDE__V1__AGGREGATION__AGGREGATION_NONE &&
        qp->aggregation != qp->aggregations[0])
        return "aggregation differs from aggregations[0]";
    for (size_t i = 0; i < qp->n_aggregations; i++) {
        Tide__V1__Aggregation a = qp->aggregations[i];

        if (a == TIDE__V1__AGGREGATION__AGGREGATION_NONE ||
            a > TIDE__V1__AGGREGATION__AGGREGATION_LAST)
            return "aggregations holds NONE or an unknown aggregation";
        for (uint32_t j = 0; j < *n; j++)
            if (aggs[j] == a)
                return "aggregations holds an aggregation twice";
        aggs[(*n)++] = a;
    }
    return NULL;
}

/* The start of the bucket holding `ts`, buckets starting at origin + k *
 * bucket_ns (remainders non-negative, so negative times floor); `ts`
 * itself when no such start is an int64. */
static int64_t bucket_floor(int64_t ts, int64_t bucket_ns, int64_t origin)
{
    int64_t t = ts % bucket_ns, o = origin % bucket_ns, r;

    t += t < 0 ? bucket_ns : 0;
    o += o < 0 ? bucket_ns : 0;
    r = t >= o ? t - o : t - o + bucket_ns;
    return (uint64_t)ts - (uint64_t)INT64_MIN < (uint64_t)r ? ts : ts - r;
}

/* Points behind the account's retention horizon are never returned,
 * compacted away or not yet: an aggregate starts at the first bucket
 * boundary at or after the horizon, on the query's own grid, so that no
 * bucket is returned partly expired. */
static int query_clamp(struct server *s, struct query_state *q,
                       uint64_t account)
{
    int64_t horizon, from;
    int rc = tided_retention_horizon(s, account, tided_now_ns(), &horizon);

    if (rc || horizon <= q->from_ns)
        return rc;
    if (q->n_aggs == 0 || q->bucket_ns <= 0) {
        tided_retention_clamp(horizon, 0, &q->from_ns, q->to_ns);
        return 0;
    }
    from = bucket_floor(q->from_ns, q->bucket_ns, q->origin_ns);
    tided_retention_clamp(horizon, q->bucket_ns, &from, q->to_ns);
    q->from_ns = from > q->from_ns ? from : q->from_ns;
    return 0;
}

void handle_query(struct conn *c, const Tide__V1__Envelope *env)
{
    const Tide__V1__Query *qp = env->query;
    struct server *s = c->srv;
    uint64_t account = c->who.account_id;
    Tide__V1__Aggregation aggs[QUERY_AGGS_MAX];
    struct query_state *q;
    const char *why;
    uint32_t n_aggs;
    int limited, rc;

    if (c->who.role == TIDE_META_ROLE_ADMIN)
        account = qp->account_id;
    else if (qp->account_id && qp->account_id != account)
        account = 0; /* another account: refused below, never replaced */
    rc = tide_meta_authorize(s->meta, &c->who, TIDE_META_ACT_TELEMETRY_READ,
                             account, 0);
    if (rc || !account) {
        conn_send_error(c, env->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED,
                        account || c->who.role != TIDE_META_ROLE_ADMIN
                            ? "this credential may not query the account"
                            : "the operator names the account",
                        0);
        return;
    }
    if (qp->from_ns > qp->to_ns || qp->bucket_ns < 0 ||
        (qp->latest &&
         (qp->aggregation != TIDE__V1__AGGREGATION__AGGREGATION_NONE ||
          qp->n_aggregations)) ||
        qp->aggregation > TIDE__V1__AGGREGATION__AGGREGATION_LAST) {
        conn_send_error(c, env->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                        "from_ns > to_ns, negative bucket, or latest with an "
                        "aggregation",
                        0);
        return;
    }
    why = query_aggs(qp, aggs, &n_aggs);
    if (why) {
        conn_send_error(c, env->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, why,
                        0);
        return;
    }
    if (!query_admit(c, env->request_id, account, &limited))
        return;
    q = query_new(c, env->request_id, account);
    if (!q) {
        if (limited)
            ratelimit_query_end(account);
        return;
    }
    q->limited = limited; /* ended by query_unlink() or query_free() */
    q->from_ns = qp->from_ns;
    q->to_ns = qp->to_ns;
    q->bucket_ns = qp->bucket_ns;
    q->origin_ns = qp->bucket_offset_ns;
    memcpy(q->aggs, aggs, n_aggs * sizeof(*aggs));
    q->n_aggs = n_aggs;
    q->agg = n_aggs ? aggs[0] : TIDE__V1__AGGREGATION__AGGREGATION_NONE;
    q->group_by_device = qp->group_by_device;
    q->latest = qp->latest;
    q->desc = qp->order == TIDE__V1__ORDER__ORDER_DESC;
    q->limit = qp->limit;
    rc = query_clamp(s, q, account);
    if (rc == 0)
        rc = query_select(s, q, account, qp);
    if (rc == 0 && q->agg == TIDE__V1__AGGREGATION__AGGREGATION_NONE &&
        !q->latest)
        rc = query_open_iterator(q);
    if (rc) {
        conn_send_error(c, env->request_id,
                        rc == TIDE_EINVAL
                            ? TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT
                            : tide_wire_error(rc),
                        tide_strerror(rc), 0);
        query_free(q);
        return;
    }
    atomic_fetch_add(&s->metrics.queries, 1);
    {
        struct tide_meta_usage u = {.queries = 1};

        tide_meta_usage_add(s->meta, account, &u);
    }
    query_start(q);
}

void handle_query_cancel(struct conn *c, const Tide__V1__Envelope *env)
{
    Tide__V1__Envelope out = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__Ok ok = TIDE__V1__OK__INIT;
    uint64_t target = env->query_cancel->query_request_id;

    out.request_id = env->request_id;
    out.body_case = TIDE__V1__ENVELOPE__BODY_OK;
    out.ok = &ok;
    conn_send(c, &out);
    for (struct query_state *q = c->queries; q; q = q->next) {
        if (q->rid == target) {
            query_abandon(q);
            conn_send_error(c, target,
                            TIDE__V1__ERROR_CODE__ERROR_CODE_CANCELLED,
                            "query cancelled", 0);
            break;
        }
    }
}
