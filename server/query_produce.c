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
    uint64_t cap;      /* allocated entries of each array */
    uint64_t cap_more; /* allocated entries of msg.more_values */
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
    tide_free(r->msg.more_values);
}

static void chunk_reset(struct query_state *q)
{
    for (size_t i = 0; i < q->n_res; i++)
        result_free(&q->res[i]);
    q->n_res = 0;
    q->chunk_bytes = 0;
    q->emit_res = NULL;
}

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
    /* Set with the frame, so that the loop, which delivers under this
     * lock, ends the query with the frame that ends it (invariant 2). */
    if (env->body_case == TIDE__V1__ENVELOPE__BODY_ERROR ||
        env->body_case == TIDE__V1__ENVELOPE__BODY_QUERY_END ||
        env->body_case == TIDE__V1__ENVELOPE__BODY_EXPORT_END)
        q->produced = 1;
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

/* Raw: the next blocks of the iterator, until the chunk is full. A
 * descending query's iterator returns each series' blocks newest first;
 * the points of a block are returned from its end. Returns 0 (call again
 * unless finished), or an error. */
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
            return 0;
        }
        if (q->cur < q->n_series && q->series[q->cur].id != blk.series_id) {
            while (q->cur < q->n_series &&
                   q->series[q->cur].id != blk.series_id)
                q->cur++;
            q->cur_points = 0;
        }
        if (q->cur == q->n_series)
            return TIDE_ECORRUPT; /* the iterator follows the id order */
        for (uint32_t k = 0; k < blk.n; k++) {
            uint32_t i = q->desc ? blk.n - 1 - k : k;
            uint8_t t = blk.type;

            rc =
                raw_emit(q, blk.ts_ns[i], t == TIDE_TYPE_F64 ? blk.v.f64[i] : 0,
                         t == TIDE_TYPE_I64 ? blk.v.i64[i] : 0,
                         t == TIDE_TYPE_BOOL ? blk.v.b[i] : 0,
                         t == TIDE_TYPE_STR ? &blk.v.str[i] : NULL);
            if (rc)
                return rc;
        }
        if (too_large(q))
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

/* Append the values of aggregates 2..k of bucket `b` to r's more_values
 * (doubles whatever the series' type: COUNT is exact below 2^53). */
static int more_add(struct query_state *q, struct result *r,
                    const struct tide_bucket *b)
{
    Tide__V1__SeriesResult *m = &r->msg;
    uint32_t k = q->n_aggs - 1;

    if (k == 0)
        return 0;
    if (m->n_more_values + k > r->cap_more) {
        uint64_t cap = r->cap_more ? 2 * r->cap_more : 64 * (uint64_t)k;

        while (cap < m->n_more_values + k)
            cap *= 2;
        if (grow((void **)&m->more_values, cap, sizeof(double)))
            return -ENOMEM;
        r->cap_more = cap;
    }
    for (uint32_t a = 1; a < q->n_aggs; a++)
        agg_value(q->aggs[a], b, &m->more_values[m->n_more_values++]);
    q->chunk_bytes += 8 * (size_t)k;
    return 0;
}

/* Return buckets b[q->agg_k..n) of one result until the chunk is full.
 * Returns 1 when the result is complete, 0 when the chunk is full (the
 * next step resumes at agg_k), or an error. */
static int emit_buckets(struct query_state *q, const char *device,
                        const char *field, uint8_t type,
                        const struct tide_bucket *b, uint32_t n)
{
    Tide__V1__Aggregation agg = q->agg;
    uint8_t out_type =
        agg == TIDE__V1__AGGREGATION__AGGREGATION_COUNT ? TIDE_TYPE_I64
        : agg == TIDE__V1__AGGREGATION__AGGREGATION_AVG ? TIDE_TYPE_F64
                                                        : type;

    for (; q->agg_k < n; q->agg_k++) {
        uint32_t i = q->desc ? n - 1 - (uint32_t)q->agg_k : (uint32_t)q->agg_k;
        struct result *r;
        double v;
        int rc;

        if (budget_full(q))
            return 0;
        if (q->limit && q->agg_k >= q->limit) {
            q->truncated = 1;
            break;
        }
        if (q->agg_k == 0)
            q->series_out++;
        agg_value(agg, &b[i], &v);
        r = result_for(q, device, field, out_type);
        if (!r)
            return -ENOMEM;
        rc = result_add(q, r, b[i].start_ns, out_type, v, (int64_t)v, v != 0,
                        NULL, 1, b[i].count);
        if (rc == 0)
            rc = more_add(q, r, &b[i]);
        if (rc)
            return rc;
        if (too_large(q))
            return TIDE_EFULL;
    }
    return 1;
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

/* Series an aggregate leaves out: strings and bools unless every
 * aggregate is COUNT, and fleet-wide strings always. */
static int agg_skips(const struct query_state *q, uint8_t type)
{
    if (type != TIDE_TYPE_STR && type != TIDE_TYPE_BOOL)
        return 0;
    for (uint32_t a = 0; a < q->n_aggs; a++)
        if (q->aggs[a] != TIDE__V1__AGGREGATION__AGGREGATION_COUNT)
            return 1;
    return type == TIDE_TYPE_STR && !q->group_by_device;
}

/* The engine's aggregates of every selected series, at most
 * max_query_points buckets (else TIDE_EFULL before they are built), and
 * fleet-wide the distinct fields. */
static int agg_compute(struct query_state *q)
{
    uint64_t *ids = query_series_ids(q);
    int rc;

    if (!ids)
        return -ENOMEM;
    rc = tide_db_aggregate_max(
        q->srv->db, ids, q->n_series, q->from_ns, q->to_ns, q->bucket_ns,
        q->origin_ns, q->srv->cfg.max_query_points, &q->agg_res, &q->st);
    tide_free(ids);
    if (rc || q->group_by_device)
        return rc;
    q->agg_fields =
        tide_calloc(q->n_series ? q->n_series : 1, sizeof(*q->agg_fields));
    if (!q->agg_fields)
        return -ENOMEM;
    for (uint32_t i = 0; i < q->n_series; i++) {
        int seen = 0;

        for (uint32_t f = 0; f < q->n_agg_fields && !seen; f++)
            seen = !strcmp(q->agg_fields[f], q->series[i].field);
        if (!seen)
            q->agg_fields[q->n_agg_fields++] = q->series[i].field;
    }
    return 0;
}

/* Fleet-wide: merge the buckets of every series of field agg_i into
 * q->fleet, one type per fleet result. */
static int fleet_field(struct query_state *q)
{
    const char *field = q->agg_fields[q->agg_i];
    int rc = 0;

    q->n_fleet = 0;
    q->fleet_type = 0;
    for (uint32_t i = 0; i < q->n_series && rc == 0; i++) {
        if (strcmp(q->series[i].field, field) ||
            agg_skips(q, q->series[i].type))
            continue;
        if (q->fleet_type && q->fleet_type != q->series[i].type)
            continue; /* one type per fleet result */
        q->fleet_type = q->series[i].type;
        rc = fleet_merge(&q->fleet, &q->cap_fleet, &q->n_fleet, &q->spare,
                         &q->cap_spare, q->agg_res[i].buckets,
                         q->agg_res[i].n_buckets);
    }
    q->fleet_ready = 1;
    return rc;
}

/* Aggregates: computed by the first step, then returned a chunk at a time
 * (so that a slow client parks the query between chunks). */
static int produce_agg(struct query_state *q)
{
    int rc;

    if (!q->agg_res && (rc = agg_compute(q)))
        return rc;
    while (q->group_by_device ? q->agg_i < q->n_series
                              : q->agg_i < q->n_agg_fields) {
        if (q->group_by_device) {
            const struct qseries *x = &q->series[q->agg_i];
            const struct tide_agg_series *r = &q->agg_res[q->agg_i];

            rc = agg_skips(q, x->type)
                     ? 1
                     : emit_buckets(q, x->device, x->field, x->type, r->buckets,
                                    r->n_buckets);
        } else {
            if (!q->fleet_ready && (rc = fleet_field(q)))
                return rc;
            rc = q->n_fleet ? emit_buckets(q, "", q->agg_fields[q->agg_i],
                                           q->fleet_type, q->fleet, q->n_fleet)
                            : 1;
        }
        if (rc <= 0)
            return rc; /* an error, or the chunk is full */
        q->agg_i++;
        q->agg_k = 0;
        q->fleet_ready = 0;
    }
    q->finished = 1;
    return 0;
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
    chunk_reset(q);
    tide_free(q->res);
    tide_agg_free(q->agg_res, q->n_series);
    tide_free(q->agg_fields);
    tide_free(q->fleet);
    tide_free(q->spare);
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

int query_execute(struct query_state *q)
{
    int rc = 0;

    if (q->export)
        return export_execute(q);
    /* The deadline is the loop's timer (query.c): it cancels the query. */
    while (!q->finished) {
        if (atomic_load(&q->cancelled))
            return QUERY_DONE;
        if (query_park(q))
            return QUERY_PARKED;
        if (q->it)
            rc = produce_raw(q);
        else if (q->latest)
            rc = produce_latest(q);
        else
            rc = produce_agg(q);
        if (rc == 0 && (budget_full(q) || q->finished))
            rc = chunk_send(q);
        if (rc == -ECANCELED)
            return QUERY_DONE;
        if (rc) {
            query_fail(q, rc);
            return QUERY_DONE;
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
    return QUERY_DONE;
}
