/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libtide's query iterator: sends a Query and walks the QueryChunk frames
 * answering it, one SeriesResult at a time, until QueryEnd or Error
 * (docs/protocol.md, "Query model"). Frames of the query that arrive while
 * the caller writes or makes admin calls are queued on the iterator. An
 * export (ExportStart, ExportChunk*, ExportEnd) uses the same iterator.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void tide__query_deliver(tide_query_iter *it, Tide__V1__Envelope *env)
{
    struct envq *q = tide_malloc(sizeof(*q));

    if (!q) {
        /* Losing a frame would corrupt the result: fail the query. */
        tide_frame_free(env, NULL);
        if (!it->state)
            it->state = -ENOMEM;
        return;
    }
    q->env = env;
    q->next = NULL;
    if (it->tail)
        it->tail->next = q;
    else
        it->head = q;
    it->tail = q;
}

/* Send `env` as the request of a new iterator. */
static int iter_start(tide_client *c, Tide__V1__Envelope *env,
                      tide_query_iter **out)
{
    tide_query_iter *it;
    int rc;

    if (c->iter)
        return TIDE_EBUSY;
    rc = tide__client_ensure(c, 0);
    if (rc)
        return rc;
    it = tide_calloc(1, sizeof(*it));
    if (!it)
        return -ENOMEM;
    env->request_id = c->next_request_id++;
    it->c = c;
    it->request_id = env->request_id;
    c->iter = it;
    rc = tide__client_send_env(c, env);
    if (rc) {
        c->iter = NULL;
        tide_free(it);
        return rc;
    }
    *out = it;
    return 0;
}

int tide_export_open(tide_client *c, const struct tide_export_params *p,
                     tide_query_iter **out)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__ExportStart x = TIDE__V1__EXPORT_START__INIT;

    if (!c || !p || !out)
        return TIDE_EINVAL;
    x.account_id = p->account_id;
    x.include_telemetry = p->telemetry != 0;
    x.format = p->csv ? TIDE__V1__EXPORT_FORMAT__EXPORT_FORMAT_CSV
                      : TIDE__V1__EXPORT_FORMAT__EXPORT_FORMAT_JSONL;
    x.from_ns = p->from_ns;
    x.to_ns = p->to_ns;
    env.body_case = TIDE__V1__ENVELOPE__BODY_EXPORT_START;
    env.export_start = &x;
    return iter_start(c, &env, out);
}

/* The next frame of the iterator's request, waiting for it; NULL with
 * it->state set when the request ended or failed. */
static Tide__V1__Envelope *next_frame(tide_query_iter *it)
{
    for (;;) {
        struct envq *q;
        Tide__V1__Envelope *env;
        int rc;

        if (it->state)
            return NULL;
        if (!it->head) {
            if (!it->c->connected) {
                it->state = TIDE_EDISCONNECTED;
                continue;
            }
            rc = tide__client_read(it->c, it->c->o.io_timeout_ms);
            /* Without memory for a frame the connection is dropped: the
             * query fails with -ENOMEM, not a later "disconnected". */
            if (rc < 0 && (!it->head || rc == -ENOMEM))
                it->state = rc;
            continue;
        }
        q = it->head;
        it->head = q->next;
        if (!it->head)
            it->tail = NULL;
        env = q->env;
        tide_free(q);
        return env;
    }
}

int tide_export_next(tide_query_iter *it, const char **section,
                     const uint8_t **data, size_t *len)
{
    Tide__V1__Envelope *env;

    if (!it || !section || !data || !len)
        return TIDE_EINVAL;
    tide_frame_free(it->cur, NULL);
    it->cur = NULL;
    env = next_frame(it);
    if (!env)
        return it->state;
    if (env->body_case == TIDE__V1__ENVELOPE__BODY_EXPORT_CHUNK &&
        env->export_chunk) {
        it->cur = env;
        *section = env->export_chunk->section;
        *data = env->export_chunk->data.data;
        *len = env->export_chunk->data.len;
        return 0;
    }
    if (env->body_case == TIDE__V1__ENVELOPE__BODY_EXPORT_END &&
        env->export_end && env->export_end->sha256.len == 32) {
        it->export_stats.rows = env->export_end->rows;
        it->export_stats.bytes = env->export_end->bytes;
        memcpy(it->export_stats.sha256, env->export_end->sha256.data, 32);
        it->state = TIDE_CLIENT_DONE;
    } else if (env->body_case == TIDE__V1__ENVELOPE__BODY_ERROR && env->error) {
        tide__client_set_error(it->c, env->error);
        it->state = TIDE_ESERVER;
    } else {
        it->state = TIDE_EPROTO;
    }
    tide_frame_free(env, NULL);
    return it->state;
}

int tide_export_stats_get(const tide_query_iter *it,
                          struct tide_export_stats *st)
{
    if (!it || it->state != TIDE_CLIENT_DONE)
        return TIDE_EINVAL;
    *st = it->export_stats;
    return 0;
}

int tide_query_open(tide_client *c, const struct tide_query_params *p,
                    tide_query_iter **out)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__Query q = TIDE__V1__QUERY__INIT;
    Tide__V1__DeviceSelector sel = TIDE__V1__DEVICE_SELECTOR__INIT;

    if (!c || !p || !out || (p->n_aggs && !p->aggs))
        return TIDE_EINVAL;
    sel.n_names = p->n_devices;
    sel.names = (char **)p->devices;
    q.devices = &sel;
    q.n_fields = p->n_fields;
    q.fields = (char **)p->fields;
    q.from_ns = p->from_ns;
    q.to_ns = p->to_ns;
    if (p->n_aggs) {
        /* The enums share numbers (client.h), so the list goes as is. */
        q.n_aggregations = p->n_aggs;
        q.aggregations = (Tide__V1__Aggregation *)p->aggs;
    } else {
        q.aggregation = (Tide__V1__Aggregation)p->agg;
    }
    q.bucket_ns = p->bucket_ns;
    q.bucket_offset_ns = p->bucket_offset_ns;
    q.group_by_device = p->group_by_device != 0;
    q.latest = p->latest != 0;
    q.limit = p->limit;
    q.order = p->descending ? TIDE__V1__ORDER__ORDER_DESC
                            : TIDE__V1__ORDER__ORDER_ASC;
    q.account_id = p->account_id;
    env.body_case = TIDE__V1__ENVELOPE__BODY_QUERY;
    env.query = &q;
    return iter_start(c, &env, out);
}

static int grow_scratch(tide_query_iter *it, size_t n)
{
    int64_t *ts;
    uint8_t *b;

    if (n <= it->scratch_cap)
        return 0;
    ts = tide_realloc(it->ts, n * sizeof(*ts));
    if (!ts)
        return -ENOMEM;
    it->ts = ts;
    b = tide_realloc(it->bools, n);
    if (!b)
        return -ENOMEM;
    it->bools = b;
    it->scratch_cap = n;
    return 0;
}

/* Every aggregate's values of an aggregate block as doubles into
 * blk->agg_values: the first from the typed array, the others from
 * more_values (k-1 per bucket). Returns 0, -ENOMEM or TIDE_EPROTO. */
static int decode_aggs(tide_query_iter *it, const Tide__V1__SeriesResult *s,
                       struct tide_series_block *blk)
{
    size_t n = blk->n, k;

    if (n == 0 || s->n_more_values % n)
        return s->n_more_values ? TIDE_EPROTO : 0;
    k = s->n_more_values / n + 1;
    if (k > SIZE_MAX / sizeof(double) / n)
        return TIDE_EPROTO;
    if (n * k > it->aggv_cap) {
        double *v = tide_realloc(it->aggv, n * k * sizeof(*v));

        if (!v)
            return -ENOMEM;
        it->aggv = v;
        it->aggv_cap = n * k;
    }
    for (size_t i = 0; i < n; i++) {
        double *row = &it->aggv[i * k];

        row[0] = blk->f64     ? blk->f64[i]
                 : blk->i64   ? (double)blk->i64[i]
                 : blk->bools ? blk->bools[i]
                              : (double)blk->counts[i];
        if (k > 1) /* a single aggregate has no more_values (NULL) */
            memcpy(row + 1, &s->more_values[i * (k - 1)],
                   (k - 1) * sizeof(double));
    }
    blk->n_aggs = k;
    blk->agg_values = it->aggv;
    return 0;
}

/* Decode series `s` into `blk`. Returns 0, -ENOMEM or TIDE_EPROTO
 * (value arrays that do not match the timestamps). */
static int decode(tide_query_iter *it, const Tide__V1__SeriesResult *s,
                  struct tide_series_block *blk)
{
    size_t n = s->n_ts_delta_ns;
    uint64_t t = 0;
    int rc = grow_scratch(it, n ? n : 1);
    char *d, *f;

    if (rc)
        return rc;
    memset(blk, 0, sizeof(*blk));
    for (size_t i = 0; i < n; i++) {
        t += (uint64_t)s->ts_delta_ns[i];
        it->ts[i] = (int64_t)t;
    }
    blk->device = s->device ? s->device : "";
    blk->field = s->field ? s->field : "";
    blk->type = (enum tide_value_type)s->type;
    blk->n = n;
    blk->ts_ns = it->ts;
    switch (s->type) {
    case TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64:
        if (s->n_f64 != n)
            return TIDE_EPROTO;
        blk->f64 = s->f64;
        break;
    case TIDE__V1__VALUE_TYPE__VALUE_TYPE_I64:
        if (s->n_i64 != n)
            return TIDE_EPROTO;
        blk->i64 = s->i64;
        break;
    case TIDE__V1__VALUE_TYPE__VALUE_TYPE_BOOL:
        if (s->bool_bits.len < (n + 7) / 8)
            return TIDE_EPROTO;
        for (size_t i = 0; i < n; i++)
            it->bools[i] = (s->bool_bits.data[i / 8] >> (i % 8)) & 1u;
        blk->bools = it->bools;
        break;
    case TIDE__V1__VALUE_TYPE__VALUE_TYPE_STRING:
        if (s->n_str != n)
            return TIDE_EPROTO;
        blk->str = (const char *const *)s->str;
        break;
    default:
        return TIDE_EPROTO;
    }
    if (s->n_counts == n && n) {
        blk->counts = s->counts;
        rc = decode_aggs(it, s, blk);
        if (rc)
            return rc;
    } else if (s->n_more_values) {
        return TIDE_EPROTO;
    }
    blk->continued = it->prev_device && it->prev_field &&
                     !strcmp(it->prev_device, blk->device) &&
                     !strcmp(it->prev_field, blk->field);
    d = tide_strdup(blk->device);
    f = tide_strdup(blk->field);
    if (!d || !f) {
        tide_free(d);
        tide_free(f);
        return -ENOMEM;
    }
    tide_free(it->prev_device);
    tide_free(it->prev_field);
    it->prev_device = d;
    it->prev_field = f;
    return 0;
}

int tide_query_next(tide_query_iter *it, struct tide_series_block *block)
{
    if (!it || !block)
        return TIDE_EINVAL;
    for (;;) {
        Tide__V1__Envelope *env;
        int rc;

        if (it->cur && it->cur_index < it->cur->query_chunk->n_series) {
            rc = decode(it, it->cur->query_chunk->series[it->cur_index++],
                        block);
            if (rc)
                it->state = rc;
            return rc;
        }
        tide_frame_free(it->cur, NULL);
        it->cur = NULL;
        env = next_frame(it);
        if (!env)
            return it->state;
        if (env->body_case == TIDE__V1__ENVELOPE__BODY_QUERY_CHUNK &&
            env->query_chunk) {
            it->cur = env;
            it->cur_index = 0;
            continue;
        }
        if (env->body_case == TIDE__V1__ENVELOPE__BODY_QUERY_END &&
            env->query_end) {
            const Tide__V1__QueryEnd *e = env->query_end;

            it->stats.points = e->points;
            it->stats.series = e->series;
            it->stats.chunks_scanned = e->chunks_scanned;
            it->stats.chunks_from_header = e->chunks_from_header;
            it->stats.bytes_read = e->bytes_read;
            it->stats.elapsed_us = e->elapsed_us;
            it->stats.truncated = e->truncated;
            it->state = TIDE_CLIENT_DONE;
        } else if (env->body_case == TIDE__V1__ENVELOPE__BODY_ERROR &&
                   env->error) {
            tide__client_set_error(it->c, env->error);
            it->state = TIDE_ESERVER;
        } else {
            it->state = TIDE_EPROTO;
        }
        tide_frame_free(env, NULL);
    }
}

int tide_query_stats_get(const tide_query_iter *it, struct tide_query_stats *st)
{
    if (!it || it->state != TIDE_CLIENT_DONE)
        return TIDE_EINVAL;
    *st = it->stats;
    return 0;
}

void tide_query_close(tide_query_iter *it)
{
    tide_client *c;

    if (!it)
        return;
    c = it->c;
    if (!it->state && c->connected) {
        Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
        Tide__V1__QueryCancel qc = TIDE__V1__QUERY_CANCEL__INIT;

        /* Its Ok and the query's last frames are dropped on arrival:
         * nobody waits for their ids any more. */
        qc.query_request_id = it->request_id;
        env.request_id = c->next_request_id++;
        env.body_case = TIDE__V1__ENVELOPE__BODY_QUERY_CANCEL;
        env.query_cancel = &qc;
        tide__client_send_env(c, &env);
    }
    while (it->head) {
        struct envq *q = it->head;

        it->head = q->next;
        tide_frame_free(q->env, NULL);
        tide_free(q);
    }
    tide_frame_free(it->cur, NULL);
    tide_free(it->prev_device);
    tide_free(it->prev_field);
    tide_free(it->ts);
    tide_free(it->bools);
    tide_free(it->aggv);
    c->iter = NULL;
    tide_free(it);
}
