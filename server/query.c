/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The query path (docs/protocol.md, "Query model"): the selection is
 * resolved to series of the caller's account only, sorted by (device,
 * field); raw points stream from the engine's iterator, aggregates and
 * latest points come from tide_db_aggregate() / tide_db_latest(). Results
 * leave as QueryChunk frames of about max_chunk_bytes, then QueryEnd.
 * Exports (export.c) run on the same machinery (query_int.h).
 *
 * Threads: the selection is resolved on the loop thread (it uses the
 * server's device cache); the engine reads and the encoding of chunks run
 * on a small pool of query threads, so that a long query never stalls the
 * loop and with it every write acknowledgement.
 *
 *   loop: handle_query ──► job queue ──► query thread: produce, encode
 *   loop: deliver frames ◄── ready list ◄── frames queued on the query
 *
 * Flow control: a query thread stops producing while more than
 * QUERY_QUEUED_MAX encoded bytes wait for its connection; the loop moves
 * frames to the connection only while its output is below the high
 * watermark. A slow client thus holds back the engine reads too.
 *
 * Invariants:
 *   1. A query_state is freed by whichever of the loop, its query thread
 *      and the ready list lets go of it last (refs); the thread never
 *      touches the connection.
 *   2. Frames of one query reach the connection in the order produced, and
 *      its last frame is QueryEnd or Error.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query_int.h"

/* One SeriesResult under construction. */
struct result {
    Tide__V1__SeriesResult msg;
    uint64_t cap; /* allocated entries of each array */
    int64_t prev_ts;
};

/* An encoded frame waiting for its connection. */
struct qframe {
    struct qframe *next;
    size_t len;
    uint8_t data[];
};

/* Encoded bytes a query may have waiting before its thread pauses. */
#define QUERY_QUEUED_MAX (1u << 20)

/* ---- Result building ------------------------------------------------------
 */

static void result_free(struct result *r)
{
    tide_free(r->msg.ts_delta_ns);
    tide_free(r->msg.f64);
    tide_free(r->msg.i64);
    tide_free(r->msg.bool_bits.data);
    for (size_t i = 0; i < r->msg.n_str; i++)
        tide_free(r->msg.str[i]);
    tide_free(r->msg.str);
    tide_free(r->msg.counts);
}

static void chunk_reset(struct query_state *q)
{
    for (size_t i = 0; i < q->n_res; i++)
        result_free(&q->res[i]);
    q->n_res = 0;
    q->chunk_bytes = 0;
    q->emit_res = NULL;
}

/* Encode `env` and queue it for the connection (query thread). Waits while
 * too much is queued. Returns 0, -ECANCELED or -ENOMEM. */
int query_push(struct query_state *q, const Tide__V1__Envelope *env)
{
    struct server *s = q->srv;
    size_t len = tide_frame_size(env);
    struct qframe *f = tide_malloc(sizeof(*f) + len);
    int wake;

    if (!f)
        return -ENOMEM;
    f->next = NULL;
    f->len = (size_t)tide_frame_encode(env, f->data, len);
    pthread_mutex_lock(&q->lock);
    while (q->out_bytes > QUERY_QUEUED_MAX && !atomic_load(&q->cancelled))
        pthread_cond_wait(&q->cv, &q->lock);
    if (q->out_tail)
        q->out_tail->next = f;
    else
        q->out_head = f;
    q->out_tail = f;
    q->out_bytes += f->len;
    wake = !q->ready_queued;
    if (wake) {
        q->ready_queued = 1;
        atomic_fetch_add(&q->refs, 1); /* held by the ready list */
    }
    pthread_mutex_unlock(&q->lock);
    if (wake) {
        pthread_mutex_lock(&s->done_lock);
        q->ready_next = s->queries_ready;
        s->queries_ready = q;
        pthread_mutex_unlock(&s->done_lock);
        event_active(s->wake, EV_READ, 0);
    }
    return atomic_load(&q->cancelled) ? -ECANCELED : 0;
}

static int chunk_send(struct query_state *q)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__QueryChunk chunk = TIDE__V1__QUERY_CHUNK__INIT;
    Tide__V1__SeriesResult **v;
    int rc;

    if (q->n_res == 0)
        return 0;
    v = tide_malloc(q->n_res * sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < q->n_res; i++)
        v[i] = &q->res[i].msg;
    chunk.series = v;
    chunk.n_series = q->n_res;
    env.request_id = q->rid;
    env.body_case = TIDE__V1__ENVELOPE__BODY_QUERY_CHUNK;
    env.query_chunk = &chunk;
    rc = query_push(q, &env);
    tide_free(v);
    chunk_reset(q);
    return rc;
}

/* The result for series `s` (type `type`) to append to: the last one of
 * the chunk if it is the same series, else a new one. */
static struct result *result_for(struct query_state *q, const char *device,
                                 const char *field, uint8_t type)
{
    struct result *r;

    if (q->n_res && !strcmp(q->res[q->n_res - 1].msg.device, device) &&
        !strcmp(q->res[q->n_res - 1].msg.field, field))
        return &q->res[q->n_res - 1];
    if (q->n_res == q->cap_res) {
        size_t cap = q->cap_res ? 2 * q->cap_res : 16;
        struct result *v = tide_realloc(q->res, cap * sizeof(*v));

        if (!v)
            return NULL;
        q->res = v;
        q->cap_res = cap;
    }
    r = &q->res[q->n_res++];
    memset(r, 0, sizeof(*r));
    tide__v1__series_result__init(&r->msg);
    r->msg.device = (char *)device;
    r->msg.field = (char *)field;
    r->msg.type = type == TIDE_TYPE_F64   ? TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64
                  : type == TIDE_TYPE_I64 ? TIDE__V1__VALUE_TYPE__VALUE_TYPE_I64
                  : type == TIDE_TYPE_BOOL
                      ? TIDE__V1__VALUE_TYPE__VALUE_TYPE_BOOL
                      : TIDE__V1__VALUE_TYPE__VALUE_TYPE_STRING;
    q->chunk_bytes += strlen(device) + strlen(field) + 16;
    return r;
}

static int grow(void **p, uint64_t cap, size_t elem)
{
    void *v = tide_realloc(*p, cap * elem);

    if (!v)
        return -ENOMEM;
    *p = v;
    return 0;
}

/* Append one point (or bucket) to `r`. `count` is stored when with_count. */
static int result_add(struct query_state *q, struct result *r, int64_t ts,
                      uint8_t type, double f, int64_t i, uint8_t b,
                      const struct tide_str *s, int with_count, uint64_t count)
{
    Tide__V1__SeriesResult *m = &r->msg;
    size_t n = m->n_ts_delta_ns;

    if (n == r->cap) {
        uint64_t cap = r->cap ? 2 * r->cap : 64;

        if (grow((void **)&m->ts_delta_ns, cap, sizeof(int64_t)) ||
            (type == TIDE_TYPE_F64 &&
             grow((void **)&m->f64, cap, sizeof(double))) ||
            (type == TIDE_TYPE_I64 &&
             grow((void **)&m->i64, cap, sizeof(int64_t))) ||
            (type == TIDE_TYPE_BOOL &&
             grow((void **)&m->bool_bits.data, (cap + 7) / 8, 1)) ||
            (type == TIDE_TYPE_STR &&
             grow((void **)&m->str, cap, sizeof(char *))) ||
            (with_count && grow((void **)&m->counts, cap, sizeof(uint64_t))))
            return -ENOMEM;
        if (type == TIDE_TYPE_BOOL)
            memset(m->bool_bits.data + (r->cap + 7) / 8, 0,
                   (cap + 7) / 8 - (r->cap + 7) / 8);
        r->cap = cap;
    }
    m->ts_delta_ns[n] = n ? (int64_t)((uint64_t)ts - (uint64_t)r->prev_ts) : ts;
    r->prev_ts = ts;
    m->n_ts_delta_ns = n + 1;
    switch (type) {
    case TIDE_TYPE_F64:
        m->f64[m->n_f64++] = f;
        q->chunk_bytes += 8;
        break;
    case TIDE_TYPE_I64:
        m->i64[m->n_i64++] = i;
        q->chunk_bytes += 5;
        break;
    case TIDE_TYPE_BOOL:
        if (b)
            m->bool_bits.data[n / 8] |= (uint8_t)(1u << (n % 8));
        m->bool_bits.len = (n + 8) / 8;
        break;
    default: {
        char *copy = tide_malloc((size_t)s->len + 1);

        if (!copy)
            return -ENOMEM;
        memcpy(copy, s->ptr, s->len);
        copy[s->len] = 0;
        m->str[m->n_str++] = copy;
        q->chunk_bytes += s->len + 2;
        break;
    }
    }
    if (with_count) {
        m->counts[m->n_counts++] = count;
        q->chunk_bytes += 3;
    }
    q->chunk_bytes += 3;
    q->points++;
    return 0;
}

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

/* ---- Producing results ------------------------------------------------------
 */

static int budget_full(const struct query_state *q)
{
    return q->chunk_bytes >= q->srv->cfg.max_chunk_bytes;
}

static int too_large(const struct query_state *q)
{
    return q->points > q->srv->cfg.max_query_points;
}

/* Append the point to the current series' result, honouring the limit. */
static int raw_emit(struct query_state *q, int64_t ts, double f, int64_t i,
                    uint8_t b, const struct tide_str *str)
{
    const struct qseries *s = &q->series[q->cur];
    struct result *r;

    if (q->limit && q->cur_points >= q->limit) {
        q->truncated = 1;
        return 0;
    }
    if (q->emit_res && q->emit_series == q->cur) {
        r = q->emit_res;
    } else {
        r = result_for(q, s->device, s->field, s->type);
        if (!r)
            return -ENOMEM;
        q->emit_res = r;
        q->emit_series = q->cur;
    }
    if (q->cur_points == 0)
        q->series_out++;
    q->cur_points++;
    return result_add(q, r, ts, s->type, f, i, b, str, 0, 0);
}

/* Hold one point of a descending series; strings are copied. With a
 * limit only the newest `limit` points are kept, in a ring. */
static int hold(struct query_state *q, const struct tide_block *blk, uint32_t i)
{
    struct tide_point *p;
    uint64_t at;

    if (q->limit && q->seen_held >= q->limit) {
        at = q->seen_held % q->limit; /* overwrite the oldest */
        if (q->held[at].type == TIDE_TYPE_STR)
            tide_free((char *)q->held[at].v.str.ptr);
    } else {
        if (q->n_held == q->cap_held) {
            uint64_t cap = q->cap_held ? 2 * q->cap_held : 1024;
            struct tide_point *v;

            if (q->limit && cap > q->limit)
                cap = q->limit;
            v = tide_realloc(q->held, cap * sizeof(*v));
            if (!v)
                return -ENOMEM;
            q->held = v;
            q->cap_held = cap;
        }
        at = q->n_held++;
    }
    q->seen_held++;
    p = &q->held[at];
    memset(p, 0, sizeof(*p));
    p->type = blk->type;
    p->ts_ns = blk->ts_ns[i];
    switch (blk->type) {
    case TIDE_TYPE_F64:
        p->v.f64 = blk->v.f64[i];
        break;
    case TIDE_TYPE_I64:
        p->v.i64 = blk->v.i64[i];
        break;
    case TIDE_TYPE_BOOL:
        p->v.b = blk->v.b[i];
        break;
    default: {
        char *copy = tide_malloc((size_t)blk->v.str[i].len + 1);

        if (!copy) {
            p->type = 0;
            return -ENOMEM;
        }
        memcpy(copy, blk->v.str[i].ptr, blk->v.str[i].len);
        p->v.str.ptr = copy;
        p->v.str.len = blk->v.str[i].len;
        break;
    }
    }
    return 0;
}

static void held_clear(struct query_state *q)
{
    for (uint64_t i = 0; i < q->n_held; i++)
        if (q->held[i].type == TIDE_TYPE_STR) /* v is a union */
            tide_free((char *)q->held[i].v.str.ptr);
    q->n_held = 0;
    q->seen_held = 0;
}

/* Return the held points of the current series, newest first. */
static int release_held(struct query_state *q)
{
    int rc = 0;

    if (q->limit && q->seen_held > q->limit)
        q->truncated = 1;
    for (uint64_t k = 0; k < q->n_held && rc == 0; k++) {
        /* The newest point is the last one written into the ring. */
        uint64_t at = (q->seen_held - 1 - k) % q->n_held;
        const struct tide_point *p = &q->held[at];

        rc = raw_emit(q, p->ts_ns, p->v.f64, p->v.i64, p->v.b, &p->v.str);
        if (rc == 0 && budget_full(q))
            rc = chunk_send(q);
    }
    held_clear(q);
    return rc;
}

/* Raw: the next blocks of the iterator, until the chunk is full. Returns 0
 * (call again unless finished), or an error. */
static int produce_raw(struct query_state *q)
{
    struct tide_block blk;
    int rc;

    while (!budget_full(q)) {
        rc = tide_iter_next(q->it, &blk);
        if (rc < 0)
            return rc;
        if (rc == 0) {
            q->finished = 1;
            return q->desc ? release_held(q) : 0;
        }
        if (q->cur < q->n_series && q->series[q->cur].id != blk.series_id) {
            if (q->desc && (rc = release_held(q)))
                return rc;
            while (q->cur < q->n_series &&
                   q->series[q->cur].id != blk.series_id)
                q->cur++;
            q->cur_points = 0;
        }
        if (q->cur == q->n_series)
            return TIDE_ECORRUPT; /* the iterator follows the id order */
        for (uint32_t i = 0; i < blk.n; i++) {
            uint8_t t = blk.type;

            rc = q->desc ? hold(q, &blk, i)
                         : raw_emit(q, blk.ts_ns[i],
                                    t == TIDE_TYPE_F64 ? blk.v.f64[i] : 0,
                                    t == TIDE_TYPE_I64 ? blk.v.i64[i] : 0,
                                    t == TIDE_TYPE_BOOL ? blk.v.b[i] : 0,
                                    t == TIDE_TYPE_STR ? &blk.v.str[i] : NULL);
            if (rc)
                return rc;
        }
        if (too_large(q) || q->n_held > q->srv->cfg.max_query_points)
            return TIDE_EFULL;
    }
    return 0;
}

/* The value of bucket `b` under the aggregation, for a series of `type`. */
static void agg_value(Tide__V1__Aggregation agg, const struct tide_bucket *b,
                      double *out)
{
    switch (agg) {
    case TIDE__V1__AGGREGATION__AGGREGATION_COUNT:
        *out = (double)b->count;
        break;
    case TIDE__V1__AGGREGATION__AGGREGATION_SUM:
        *out = b->sum;
        break;
    case TIDE__V1__AGGREGATION__AGGREGATION_MIN:
        *out = b->min;
        break;
    case TIDE__V1__AGGREGATION__AGGREGATION_MAX:
        *out = b->max;
        break;
    case TIDE__V1__AGGREGATION__AGGREGATION_AVG:
        *out = b->count ? b->sum / (double)b->count : 0;
        break;
    case TIDE__V1__AGGREGATION__AGGREGATION_FIRST:
        *out = b->first;
        break;
    default:
        *out = b->last;
        break;
    }
}

static int emit_buckets(struct query_state *q, const char *device,
                        const char *field, uint8_t type,
                        const struct tide_bucket *b, uint32_t n)
{
    Tide__V1__Aggregation agg = q->agg;
    uint8_t out_type =
        agg == TIDE__V1__AGGREGATION__AGGREGATION_COUNT ? TIDE_TYPE_I64
        : agg == TIDE__V1__AGGREGATION__AGGREGATION_AVG ? TIDE_TYPE_F64
                                                        : type;
    uint64_t emitted = 0;

    if (n)
        q->series_out++;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = q->desc ? n - 1 - k : k;
        struct result *r;
        double v;
        int rc;

        if (q->limit && emitted >= q->limit) {
            q->truncated = 1;
            break;
        }
        agg_value(agg, &b[i], &v);
        r = result_for(q, device, field, out_type);
        if (!r)
            return -ENOMEM;
        rc = result_add(q, r, b[i].start_ns, out_type, v, (int64_t)v, v != 0,
                        NULL, 1, b[i].count);
        if (rc)
            return rc;
        emitted++;
        if (budget_full(q) && (rc = chunk_send(q)))
            return rc;
    }
    return too_large(q) ? TIDE_EFULL : 0;
}

static int numeric_agg(Tide__V1__Aggregation a)
{
    return a == TIDE__V1__AGGREGATION__AGGREGATION_SUM ||
           a == TIDE__V1__AGGREGATION__AGGREGATION_AVG ||
           a == TIDE__V1__AGGREGATION__AGGREGATION_MIN ||
           a == TIDE__V1__AGGREGATION__AGGREGATION_MAX;
}

/* Merge the ascending buckets b[0..nb) into the ascending fleet result
 * (*fleet, *n), folding buckets with the same start; *spare is the other
 * buffer of the pair, swapped in. Returns 0 or -ENOMEM. */
static int fleet_merge(struct tide_bucket **fleet, uint32_t *cap_fleet,
                       uint32_t *n, struct tide_bucket **spare,
                       uint32_t *cap_spare, const struct tide_bucket *b,
                       uint32_t nb)
{
    const struct tide_bucket *f = *fleet;
    struct tide_bucket *t;
    uint32_t i = 0, j = 0, k = 0, cap;

    if (*n + nb > *cap_spare) {
        t = tide_realloc(*spare, (*n + nb) * sizeof(*t));
        if (!t)
            return -ENOMEM;
        *spare = t;
        *cap_spare = *n + nb;
    }
    t = *spare;
    while (i < *n || j < nb) {
        if (j == nb || (i < *n && f[i].start_ns < b[j].start_ns)) {
            t[k++] = f[i++];
            continue;
        }
        if (i < *n && f[i].start_ns == b[j].start_ns)
            t[k] = f[i++];
        else
            memset(&t[k], 0, sizeof(t[k]));
        tide_bucket_merge(&t[k++], &b[j++]);
    }
    *spare = *fleet;
    *fleet = t;
    cap = *cap_spare;
    *cap_spare = *cap_fleet;
    *cap_fleet = cap;
    *n = k;
    return 0;
}

/* Aggregates of every selected series, at once. */
static int produce_agg(struct query_state *q)
{
    struct server *s = q->srv;
    struct tide_agg_series *res = NULL;
    uint64_t *ids = tide_malloc((q->n_series ? q->n_series : 1) * sizeof(*ids));
    struct tide_bucket *fleet = NULL, *spare = NULL;
    uint32_t cap_fleet = 0, cap_spare = 0;
    int rc;

    if (!ids)
        return -ENOMEM;
    for (uint32_t i = 0; i < q->n_series; i++)
        ids[i] = q->series[i].id;
    rc = tide_db_aggregate(s->db, ids, q->n_series, q->from_ns, q->to_ns,
                           q->bucket_ns, &res, &q->st);
    tide_free(ids);
    if (rc)
        return rc;
    if (q->group_by_device) {
        for (uint32_t i = 0; i < q->n_series && rc == 0; i++) {
            const struct qseries *x = &q->series[i];

            if ((x->type == TIDE_TYPE_STR || x->type == TIDE_TYPE_BOOL) &&
                (numeric_agg(q->agg) ||
                 q->agg != TIDE__V1__AGGREGATION__AGGREGATION_COUNT))
                continue;
            rc = emit_buckets(q, x->device, x->field, x->type, res[i].buckets,
                              res[i].n_buckets);
        }
    } else {
        /* Fleet-wide: one result per field, buckets merged by start. */
        char **fields =
            tide_calloc(q->n_series ? q->n_series : 1, sizeof(*fields));
        uint32_t n_fields = 0;

        rc = fields ? 0 : -ENOMEM;
        for (uint32_t i = 0; i < q->n_series && rc == 0; i++) {
            int seen = 0;

            for (uint32_t f = 0; f < n_fields && !seen; f++)
                seen = !strcmp(fields[f], q->series[i].field);
            if (!seen)
                fields[n_fields++] = q->series[i].field;
        }
        for (uint32_t f = 0; f < n_fields && rc == 0; f++) {
            uint32_t n_b = 0;
            uint8_t type = 0;

            for (uint32_t i = 0; i < q->n_series && rc == 0; i++) {
                if (strcmp(q->series[i].field, fields[f]))
                    continue;
                if (q->series[i].type == TIDE_TYPE_STR ||
                    (q->series[i].type == TIDE_TYPE_BOOL &&
                     q->agg != TIDE__V1__AGGREGATION__AGGREGATION_COUNT))
                    continue;
                if (type && type != q->series[i].type)
                    continue; /* one type per fleet result */
                type = q->series[i].type;
                rc = fleet_merge(&fleet, &cap_fleet, &n_b, &spare, &cap_spare,
                                 res[i].buckets, res[i].n_buckets);
            }
            if (rc == 0 && n_b)
                rc = emit_buckets(q, "", fields[f], type, fleet, n_b);
        }
        tide_free(fields);
    }
    tide_free(fleet);
    tide_free(spare);
    tide_agg_free(res, q->n_series);
    q->finished = 1;
    return rc;
}

static int produce_latest(struct query_state *q)
{
    struct tide_point *pts = NULL;
    uint64_t *ids = tide_malloc((q->n_series ? q->n_series : 1) * sizeof(*ids));
    int rc;

    if (!ids)
        return -ENOMEM;
    for (uint32_t i = 0; i < q->n_series; i++)
        ids[i] = q->series[i].id;
    rc = tide_db_latest(q->srv->db, ids, q->n_series, &pts);
    tide_free(ids);
    for (uint32_t i = 0; rc == 0 && i < q->n_series; i++) {
        const struct qseries *x = &q->series[i];
        struct result *r;

        if (!pts[i].found || pts[i].ts_ns < q->from_ns ||
            pts[i].ts_ns >= q->to_ns)
            continue;
        r = result_for(q, x->device, x->field, x->type);
        if (!r) {
            rc = -ENOMEM;
            break;
        }
        q->series_out++;
        rc = result_add(q, r, pts[i].ts_ns, x->type, pts[i].v.f64, pts[i].v.i64,
                        pts[i].v.b, &pts[i].v.str, 0, 0);
        if (rc == 0 && budget_full(q))
            rc = chunk_send(q);
    }
    if (pts)
        tide_latest_free(pts, q->n_series);
    q->finished = 1;
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
    held_clear(q);
    tide_free(q->held);
    chunk_reset(q);
    tide_free(q->res);
    tide_iter_close(q->it);
    tide_free(q->series);
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cv);
    tide_free(q);
}

/* Let go of `q` (invariant 1). */
static void query_unref(struct query_state *q)
{
    if (atomic_fetch_sub(&q->refs, 1) == 1)
        query_free(q);
}

/* Queue the Error that ends the query (query thread). */
void query_fail(struct query_state *q, int rc)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__Error err = TIDE__V1__ERROR__INIT;

    err.code = rc == TIDE_EFULL
                   ? TIDE__V1__ERROR_CODE__ERROR_CODE_QUERY_TOO_LARGE
               : rc == -ETIMEDOUT ? TIDE__V1__ERROR_CODE__ERROR_CODE_TIMEOUT
                                  : tide_wire_error(rc);
    err.message = rc == TIDE_EFULL   ? "result above max_query_points"
                  : rc == -ETIMEDOUT ? "query ran past query_timeout_ms"
                                     : (char *)tide_strerror(rc);
    env.request_id = q->rid;
    env.body_case = TIDE__V1__ENVELOPE__BODY_ERROR;
    env.error = &err;
    chunk_reset(q);
    query_push(q, &env);
}

/* Produce every frame of `q` (query thread). */
static void query_execute(struct query_state *q)
{
    int rc = 0;

    if (q->export) {
        export_execute(q);
        return;
    }
    while (!q->finished) {
        if (atomic_load(&q->cancelled))
            return;
        if (tided_now_ns() > q->deadline_ns) {
            query_fail(q, -ETIMEDOUT);
            return;
        }
        if (q->it)
            rc = produce_raw(q);
        else if (q->latest)
            rc = produce_latest(q);
        else
            rc = produce_agg(q);
        if (rc == 0 && (budget_full(q) || q->finished))
            rc = chunk_send(q);
        if (rc == -ECANCELED)
            return;
        if (rc) {
            query_fail(q, rc);
            return;
        }
    }
    {
        Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
        Tide__V1__QueryEnd end = TIDE__V1__QUERY_END__INIT;

        end.points = q->points;
        end.series = q->series_out;
        end.chunks_scanned = q->st.chunks_decoded;
        end.chunks_from_header = q->st.chunks_from_header;
        end.bytes_read = q->st.bytes_read;
        end.elapsed_us = (uint64_t)(tided_now_ns() - q->started_ns) / 1000;
        end.truncated = q->truncated;
        env.request_id = q->rid;
        env.body_case = TIDE__V1__ENVELOPE__BODY_QUERY_END;
        env.query_end = &end;
        if (query_push(q, &env) == -ENOMEM)
            query_fail(q, -ENOMEM);
    }
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
        query_execute(q);
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

/* Remove `q` from its connection's list (loop). */
static void query_unlink(struct query_state *q)
{
    struct conn *c = q->conn;
    struct query_state **pp = &c->queries;

    while (*pp && *pp != q)
        pp = &(*pp)->next;
    if (*pp)
        *pp = q->next;
    c->inflight--;
    q->conn = NULL;
}

/* Move the queued frames of `q` to its connection while the connection
 * keeps up; finish the query after its last frame (loop). */
static void query_deliver(struct query_state *q)
{
    struct conn *c = q->conn;
    struct evbuffer *out;
    struct tide_meta_usage u = {0};
    int produced, empty;

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
    pthread_cond_signal(&q->cv);
    produced = q->produced;
    empty = !q->out_head;
    pthread_mutex_unlock(&q->lock);
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
    pthread_mutex_lock(&q->lock);
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->lock);
    query_unlink(q);
    query_unref(q);
}

void query_free_all(struct conn *c)
{
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
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cv, NULL);
    atomic_init(&q->refs, 2);
    q->started_ns = tided_now_ns();
    q->deadline_ns =
        q->started_ns + (int64_t)c->srv->cfg.query_timeout_ms * 1000000;
    return q;
}

/* Open the engine iterator over the selected series and [from, to). */
int query_open_iterator(struct query_state *q)
{
    uint64_t *ids = tide_malloc((q->n_series ? q->n_series : 1) * sizeof(*ids));
    int rc;

    if (!ids)
        return -ENOMEM;
    for (uint32_t i = 0; i < q->n_series; i++)
        ids[i] = q->series[i].id;
    rc = tide_db_read_open(q->srv->db, ids, q->n_series, q->from_ns, q->to_ns,
                           &q->it);
    tide_free(ids);
    return rc;
}

/* Hand `q` to the query threads; the connection keeps it in flight. */
void query_start(struct query_state *q)
{
    struct conn *c = q->conn;
    struct server *s = c->srv;
    struct query_state **tail;

    c->inflight++;
    for (tail = &c->queries; *tail; tail = &(*tail)->next)
        ;
    *tail = q;
    pthread_mutex_lock(&s->qjob_lock);
    if (s->qjob_tail)
        s->qjob_tail->job_next = q;
    else
        s->qjob_head = q;
    s->qjob_tail = q;
    pthread_cond_signal(&s->qjob_cv);
    pthread_mutex_unlock(&s->qjob_lock);
}

void handle_query(struct conn *c, const Tide__V1__Envelope *env)
{
    const Tide__V1__Query *qp = env->query;
    struct server *s = c->srv;
    uint64_t account = c->who.account_id;
    struct query_state *q;
    int rc;

    if (c->who.role == TIDE_META_ROLE_ADMIN)
        account = qp->account_id;
    rc = tide_meta_authorize(s->meta, &c->who, TIDE_META_ACT_TELEMETRY_READ,
                             account, 0);
    if (rc || !account) {
        conn_send_error(c, env->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED,
                        account ? "this credential may not query"
                                : "the operator names the account",
                        0);
        return;
    }
    if (qp->from_ns > qp->to_ns || qp->bucket_ns < 0 ||
        (qp->latest &&
         qp->aggregation != TIDE__V1__AGGREGATION__AGGREGATION_NONE) ||
        qp->aggregation > TIDE__V1__AGGREGATION__AGGREGATION_LAST) {
        conn_send_error(c, env->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                        "from_ns > to_ns, negative bucket, or latest with an "
                        "aggregation",
                        0);
        return;
    }
    q = query_new(c, env->request_id, account);
    if (!q)
        return;
    q->from_ns = qp->from_ns;
    q->to_ns = qp->to_ns;
    q->bucket_ns = qp->bucket_ns;
    q->agg = qp->aggregation;
    q->group_by_device = qp->group_by_device;
    q->latest = qp->latest;
    q->desc = qp->order == TIDE__V1__ORDER__ORDER_DESC;
    q->limit = qp->limit;
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
