/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The query path's producing half, run on a query thread (query.c has the
 * selection, the threads and delivery): raw points from the engine's
 * iterator, aggregates from tide_db_aggregate() (fleet-wide buckets merged
 * with tide_bucket_merge), latest points from tide_db_latest(), each added
 * to SeriesResults and sent as QueryChunk frames of about max_chunk_bytes,
 * then QueryEnd or Error (query_execute).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
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
    uint64_t *ids = query_series_ids(q);
    int rc;

    if (!ids)
        return -ENOMEM;
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

void query_results_fini(struct query_state *q)
{
    held_clear(q);
    tide_free(q->held);
    chunk_reset(q);
    tide_free(q->res);
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
void query_execute(struct query_state *q)
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
