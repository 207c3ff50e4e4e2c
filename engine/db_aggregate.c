/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Bucketed aggregates (tide_db_aggregate). Points are gathered per series
 * as for a range read (shard_read.c), except that a chunk is answered from
 * its footer statistics when it lies wholly inside one bucket and no other
 * source overlaps it.
 */
#include "read.h"
#include "ts.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A partial bucket: from one chunk header, or from a run of raw points. */
struct partial {
    int64_t bucket; /* index from `base` */
    struct tide_bucket b;
};

struct agg_ctx {
    int64_t from;
    int64_t to;
    int64_t bucket_ns;
    /* Start of the bucket holding `from`: the largest origin + k *
     * bucket_ns <= from, so that buckets are aligned to the origin, not
     * to `from` (`from` when bucket_ns is 0). */
    int64_t base;
    int64_t head_min; /* time span of the series in the heads */
    int64_t head_max;
    /* Buckets the results may hold in all (tide_db_aggregate_max): checked
     * before they are built, so that a query too large for it fails
     * without taking the memory. */
    uint64_t max_buckets;
    uint64_t n_buckets; /* reserved so far, every result */
    /* Every result's buckets, back to back: one allocation per query. */
    struct tide_buf buckets;
    struct tide_agg_series *res;
    size_t *boff; /* boff[i]: res[i]'s first bucket in `buckets` */
};

static int64_t bucket_of(const struct agg_ctx *a, int64_t ts)
{
    return a->bucket_ns ? (int64_t)(((uint64_t)ts - (uint64_t)a->base) /
                                    (uint64_t)a->bucket_ns)
                        : 0;
}

/* May `e`, which no other chunk overlaps, be answered from its header?
 * Only when it lies inside [from, to) and one bucket, and the heads have
 * no points in its time span (else duplicates across sources could be
 * counted twice). */
static int header_usable(const struct agg_ctx *a, const struct chunk_ent *e)
{
    if (e->type == TIDE_TYPE_STR || e->min_ts < a->from || e->max_ts >= a->to ||
        bucket_of(a, e->min_ts) != bucket_of(a, e->max_ts))
        return 0;
    return !(a->head_min <= e->max_ts && a->head_max >= e->min_ts);
}

/* alone[i] = 1 when no other chunk of refs[] shares a timestamp with
 * refs[i]. Returns 1 when refs[] is ordered by min_ts, the usual case,
 * which one pass settles: an earlier chunk overlaps i iff the largest
 * earlier max_ts reaches min_ts[i], a later one iff min_ts[i+1] does not
 * pass max_ts[i]. Otherwise every pair is compared. */
static int mark_alone(const struct chunk_ref *refs, size_t n, uint8_t *alone)
{
    int64_t run_max = INT64_MIN;

    for (size_t i = 1; i < n; i++)
        if (refs[i].e->min_ts < refs[i - 1].e->min_ts)
            goto unordered;
    for (size_t i = 0; i < n; i++) {
        const struct chunk_ent *e = refs[i].e;

        alone[i] = (i == 0 || run_max < e->min_ts) &&
                   (i + 1 == n || refs[i + 1].e->min_ts > e->max_ts);
        if (e->max_ts > run_max)
            run_max = e->max_ts;
    }
    return 1;

unordered:
    for (size_t i = 0; i < n; i++) {
        const struct chunk_ent *e = refs[i].e;

        alone[i] = 1;
        for (size_t j = 0; j < n && alone[i]; j++) {
            const struct chunk_ent *o = refs[j].e;

            if (j != i && o->min_ts <= e->max_ts && o->max_ts >= e->min_ts)
                alone[i] = 0;
        }
    }
    return 0;
}

void tide_bucket_merge(struct tide_bucket *into, const struct tide_bucket *b)
{
    if (into->count == 0) {
        *into = *b;
        return;
    }
    into->count += b->count;
    into->sum += b->sum;
    if (b->min < into->min || into->min != into->min)
        into->min = b->min;
    if (b->max > into->max || into->max != into->max)
        into->max = b->max;
    if (b->first_ts < into->first_ts) {
        into->first_ts = b->first_ts;
        into->first = b->first;
    }
    if (b->last_ts >= into->last_ts) {
        into->last_ts = b->last_ts;
        into->last = b->last;
    }
}

static int cmp_partial(const void *x, const void *y)
{
    const struct partial *a = x, *b = y;

    if (a->bucket != b->bucket)
        return a->bucket < b->bucket ? -1 : 1;
    return a->b.first_ts < b->b.first_ts ? -1 : a->b.first_ts > b->b.first_ts;
}

/* Partial buckets of the gathered points, appended to `parts`. Each is a
 * distinct bucket of the series' result: they are counted first, and
 * TIDE_EFULL when they would take the results past max_buckets, before
 * any is built. *n_raw counts the series' raw partials so far, the last
 * of them at the end of `parts`: a series read in slices continues it
 * when its bucket goes on in the next slice, so that every bucket is
 * summed point by point in time order, as when read whole. */
/* One past the last point of ts[i..n) (ascending) in the bucket of ts[i]:
 * a search for the bucket's end, not a division per point. */
static uint32_t run_end(const struct agg_ctx *a, const int64_t *ts, uint32_t i,
                        uint32_t n)
{
    uint64_t span = (uint64_t)a->to - (uint64_t)a->base, start;

    if (!a->bucket_ns)
        return n;
    start = (uint64_t)bucket_of(a, ts[i]) * (uint64_t)a->bucket_ns;
    if (span - start <= (uint64_t)a->bucket_ns)
        return n; /* the last bucket: every point left is in it */
    return i + tide__ts_lower_bound(ts + i, n - i,
                                    (int64_t)((uint64_t)a->base + start +
                                              (uint64_t)a->bucket_ns));
}

/* Fold the numeric points [i, j) of one bucket into q. */
static void fold_run(struct partial *q, uint8_t type, const int64_t *ts,
                     const uint64_t *val, uint32_t i, uint32_t j)
{
    double sum = q->b.sum, mn = q->b.min, mx = q->b.max, d = 0;

    for (uint32_t k = i; k < j; k++) {
        d = tide__value_double(type, val[k]);
        sum += d;
        if (d < mn || mn != mn)
            mn = d;
        if (d > mx || mx != mx)
            mx = d;
    }
    q->b.count += j - i;
    q->b.sum = sum;
    q->b.min = mn;
    q->b.max = mx;
    q->b.last = d;
    q->b.last_ts = ts[j - 1];
}

static int raw_partials(const struct gather *g, const struct agg_ctx *a,
                        struct tide_buf *parts, uint64_t *n_raw)
{
    const struct partial *prev =
        *n_raw ? (const struct partial *)(void *)(parts->data + parts->len) - 1
               : NULL;
    int cont =
        prev && g->n && bucket_of(a, tide__gather_ts(g)[0]) == prev->bucket;
    uint64_t n_runs = !cont && g->n;
    int rc = 0;

    for (uint32_t i = g->n ? run_end(a, tide__gather_ts(g), 0, g->n) : 0;
         i < g->n; i = run_end(a, tide__gather_ts(g), i, g->n))
        n_runs++;
    if (*n_raw + n_runs > a->max_buckets - a->n_buckets)
        return TIDE_EFULL;
    *n_raw += n_runs;
    rc = tide__buf_reserve(parts, n_runs * sizeof(struct partial));
    for (uint32_t i = 0; i < g->n && rc == 0;) {
        int64_t bk = bucket_of(a, tide__gather_ts(g)[i]);
        struct partial q = {.bucket = bk};

        if (i == 0 && cont) {
            /* Continued below, then appended again. */
            parts->len -= sizeof(q);
            memcpy(&q, parts->data + parts->len, sizeof(q));
        } else {
            q.b.first_ts = tide__gather_ts(g)[i];
            q.b.first = tide__value_double(g->type, tide__gather_val(g)[i]);
            q.b.min = q.b.max = q.b.first;
        }
        {
            uint32_t j = run_end(a, tide__gather_ts(g), i, g->n);

            if (g->type == TIDE_TYPE_STR) {
                q.b.count += j - i;
                q.b.last_ts = tide__gather_ts(g)[j - 1];
            } else {
                fold_run(&q, g->type, tide__gather_ts(g), tide__gather_val(g),
                         i, j);
            }
            i = j;
        }
        if (g->type == TIDE_TYPE_STR)
            q.b.sum = q.b.min = q.b.max = q.b.first = q.b.last = 0;
        rc = tide__buf_append(parts, &q, sizeof(q));
    }
    return rc;
}

/* The bucket of a chunk's header statistics, its start left 0. */
static struct tide_bucket header_bucket(const struct chunk_ent *e)
{
    return (struct tide_bucket){.count = e->count,
                                .sum = e->sum,
                                .min = e->min,
                                .max = e->max,
                                .first = tide__value_double(e->type, e->first),
                                .last = tide__value_double(e->type, e->last),
                                .first_ts = e->min_ts,
                                .last_ts = e->max_ts};
}

/* Room for n_buckets zeroed buckets at the end of the query's bucket arena,
 * recorded as out's first: *bk. */
static int reserve_buckets(struct agg_ctx *a, size_t n_buckets,
                           struct tide_agg_series *out, struct tide_bucket **bk)
{
    size_t off = a->buckets.len / sizeof(struct tide_bucket);
    int rc;

    if (n_buckets > a->max_buckets - a->n_buckets)
        return TIDE_EFULL;
    a->n_buckets += n_buckets;
    rc = tide__buf_reserve(&a->buckets, n_buckets * sizeof(**bk));
    if (rc)
        return rc;
    *bk = (struct tide_bucket *)(void *)(a->buckets.data + a->buckets.len);
    memset(*bk, 0, n_buckets * sizeof(**bk));
    a->buckets.len += n_buckets * sizeof(**bk);
    a->boff[out - a->res] = off;
    return 0;
}

/* Merge `q`, of bucket number `bucket`, into out's last bucket in bk[], or
 * into a new one starting where `bucket` does when `fresh`. The bucket
 * keeps its start. */
static void fold_bucket(const struct agg_ctx *a, struct tide_bucket *bk,
                        struct tide_agg_series *out, int64_t bucket, int fresh,
                        const struct tide_bucket *q)
{
    struct tide_bucket *b;
    int64_t start;

    if (fresh) {
        b = &bk[out->n_buckets++];
        b->start_ns = a->bucket_ns
                          ? (int64_t)((uint64_t)a->base +
                                      (uint64_t)bucket * (uint64_t)a->bucket_ns)
                          : a->from;
    } else {
        b = &bk[out->n_buckets - 1];
    }
    start = b->start_ns;
    tide_bucket_merge(b, q);
    b->start_ns = start;
}

/* Merge partials ordered by bucket into the query's bucket arena; the
 * result's pointer is set once the arena stops growing (see
 * tide_db_aggregate). */
static int emit_buckets(struct agg_ctx *a, const struct partial *p,
                        size_t n_parts, struct tide_agg_series *out)
{
    size_t n_buckets = 0;
    struct tide_bucket *bk;
    int rc;

    for (size_t i = 0; i < n_parts; i++)
        n_buckets += i == 0 || p[i].bucket != p[i - 1].bucket;
    rc = reserve_buckets(a, n_buckets, out, &bk);
    if (rc)
        return rc;
    for (size_t i = 0; i < n_parts; i++)
        fold_bucket(a, bk, out, p[i].bucket,
                    i == 0 || p[i].bucket != p[i - 1].bucket, &p[i].b);
    return 0;
}

/* The result of a series whose chunks are all answered from headers, in
 * time order with no overlap: chunk statistics fold straight into the
 * bucket arena, with no partials to build or sort. */
static int emit_headers(struct agg_ctx *a, const struct chunk_ref *refs,
                        size_t n_refs, struct tide_agg_series *out)
{
    size_t n_buckets = 0;
    struct tide_bucket *bk;
    int64_t prev = 0;
    int rc;

    for (size_t i = 0; i < n_refs; i++) {
        int64_t bucket = bucket_of(a, refs[i].e->min_ts);

        n_buckets += i == 0 || bucket != prev;
        prev = bucket;
    }
    rc = reserve_buckets(a, n_buckets, out, &bk);
    if (rc)
        return rc;
    for (size_t i = 0; i < n_refs; i++) {
        const struct chunk_ent *e = refs[i].e;
        int64_t bucket = bucket_of(a, e->min_ts);
        struct tide_bucket q = header_bucket(e);

        fold_bucket(a, bk, out, bucket, i == 0 || bucket != prev, &q);
        prev = bucket;
    }
    return 0;
}

/* Can every chunk of refs[] be answered from its header, with the heads
 * known not to overlap the range? One pass: in min_ts order, a chunk
 * that starts after the previous one ends overlaps none before it, since
 * the ends then ascend too. */
static int headers_only(const struct agg_ctx *a, const struct chunk_ref *refs,
                        size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct chunk_ent *e = refs[i].e;

        if ((i && e->min_ts <= refs[i - 1].e->max_ts) || !header_usable(a, e))
            return 0;
    }
    return 1;
}

/* Limits of one batch of an aggregate: series whose chunks are read
 * point by point are planned first, then all their chunks are fetched in
 * one tide__io_run() and decoded series by series. */
#define AGG_BATCH_REFS 512u
#define AGG_BATCH_BYTES (8u << 20)

/* A planned series still to be read point by point. */
struct agg_pending {
    uint32_t idx;  /* into ids[] and the results */
    uint32_t ref0; /* its chunks: batch refs [ref0, ref0 + n_refs) */
    uint32_t n_refs;
    uint32_t part0; /* its header partials: [part0, part0 + n_parts) */
    uint32_t n_parts;
    int ordered; /* its header partials are in bucket order */
};

struct agg_batch {
    struct tide_buf pending; /* struct agg_pending[] */
    struct tide_buf refs;    /* struct chunk_ref[] */
    struct tide_buf hparts;  /* struct partial[] from chunk headers */
    struct tide_buf payload; /* the chunks of refs, back to back */
    struct tide_buf reqs;
    size_t bytes;
};

static void agg_batch_fini(struct agg_batch *b)
{
    tide__buf_fini(&b->pending);
    tide__buf_fini(&b->refs);
    tide__buf_fini(&b->hparts);
    tide__buf_fini(&b->payload);
    tide__buf_fini(&b->reqs);
}

/* Read slice [lo, hi) of a series: its chunks among refs[0..n_refs)
 * (their order kept, newest source last) with `scratch` and `payload`,
 * and its head points, gathered into `g`. */
static int slice_gather(struct tide_db *db, const struct seglist *sl,
                        struct tide_io *io, struct gather *g, uint64_t id,
                        const struct chunk_ref *refs, size_t n_refs, int64_t lo,
                        int64_t hi, struct tide_buf *scratch,
                        struct tide_buf *payload, struct tide_agg_stats *st)
{
    struct chunk_ref *r;
    size_t n = 0;
    int rc;

    scratch->len = 0;
    rc = tide__buf_reserve(scratch, n_refs * sizeof(*refs));
    if (rc)
        return rc;
    r = (struct chunk_ref *)(void *)scratch->data;
    for (size_t i = 0; i < n_refs; i++)
        if (refs[i].e->min_ts < hi && refs[i].e->max_ts >= lo)
            r[n++] = refs[i];
    rc = tide__segment_read_chunks(db, io, r, n, sl->n, payload, &g->reqs);
    if (rc == 0)
        rc = tide__shard_read_series(db, sl, g, id, r, n, payload->data, lo, hi,
                                     st);
    return rc;
}

/* Finish a series whose chunks left to decode, refs[0..n_refs), and head
 * points hold more than TIDE__SLICE_POINTS: they are read a time slice
 * at a time (tide__shard_read_slices), so that its raw points are never
 * gathered whole. A chunk reaching over a cut is decoded in both slices,
 * each keeping its own points. Its header partials are in g->parts
 * already. When its raw buckets might pass max_buckets, a first pass
 * only counts them, so that a query too large fails before its partial
 * buckets are built. Returns 0, TIDE__READ_STALE (the query starts
 * over), TIDE_EFULL, TIDE_ECORRUPT, -ENOMEM or -errno. */
static int aggregate_sliced(struct tide_db *db, const struct seglist *sl,
                            struct tide_io *io, struct gather *g, uint64_t id,
                            struct agg_ctx *a, const struct chunk_ref *refs,
                            size_t n_refs, uint64_t points, int ordered,
                            struct tide_agg_series *out,
                            struct tide_agg_stats *st)
{
    struct tide_buf cuts = {0}, scratch = {0}, payload = {0};
    uint64_t n_raw = 0, room = a->max_buckets - a->n_buckets;
    uint64_t span = (uint64_t)bucket_of(a, a->to - (a->to > a->from)) + 1;
    size_t n_slices = 0, n_parts;
    int rc, count_first = (points < span ? points : span) > room;

    rc = tide__shard_read_slices(db, id, refs, n_refs, a->from, a->to, &cuts);
    if (rc == 0)
        n_slices = cuts.len / sizeof(int64_t) - 1;
    for (int pass = !count_first; pass < 2 && rc == 0; pass++) {
        int64_t last = 0;

        n_raw = 0;
        for (size_t k = 0; k < n_slices && rc == 0; k++) {
            const int64_t *c = (const int64_t *)(void *)cuts.data;

            rc = slice_gather(db, sl, io, g, id, refs, n_refs, c[k], c[k + 1],
                              &scratch, &payload, pass ? st : NULL);
            if (rc == 0 && pass)
                rc = raw_partials(g, a, &g->parts, &n_raw);
            for (uint32_t i = 0; rc == 0 && !pass && i < g->n; i++) {
                int64_t bk = bucket_of(a, tide__gather_ts(g)[i]);

                n_raw += !n_raw || bk != last;
                last = bk;
                if (n_raw > room)
                    rc = TIDE_EFULL;
            }
        }
    }
    tide__buf_fini(&cuts);
    tide__buf_fini(&scratch);
    tide__buf_fini(&payload);
    n_parts = g->parts.len / sizeof(struct partial);
    if (rc || n_parts == 0)
        return rc;
    if (!ordered || n_raw)
        qsort(g->parts.data, n_parts, sizeof(struct partial), cmp_partial);
    return emit_buckets(a, (const struct partial *)(void *)g->parts.data,
                        n_parts, out);
}

/* Plan series ids[idx]: chunks that overlap nothing else and fit one
 * bucket are answered from their headers. When nothing else is left the
 * result is made now; otherwise the series joins the batch. */
static int aggregate_plan(struct tide_db *db, const struct seglist *sl,
                          struct tide_io *io, struct gather *g, uint64_t id,
                          uint32_t idx, struct agg_ctx *a, struct cursors *cur,
                          struct tide_agg_series *out, struct agg_batch *batch,
                          struct tide_agg_stats *st)
{
    struct chunk_ref *refs;
    size_t n_refs, n_rest = 0, n_parts;
    uint64_t rest_points = 0;
    struct agg_pending pend;
    uint8_t head_type;
    int ordered, head_overlap, rc;

    out->series_id = id;
    rc = tide__segment_read_collect(db, sl, g, id, a->from, a->to, cur);
    if (rc)
        return rc;
    refs = (struct chunk_ref *)(void *)g->refs.data;
    n_refs = g->refs.len / sizeof(*refs);
    rc = tide__shard_read_span(db, sl, id, &a->head_min, &a->head_max,
                               &head_type);
    if (rc)
        return rc;
    out->type = head_type ? head_type : g->seg_type;
    head_overlap = a->head_min < a->to && a->head_max >= a->from;
    if (!head_overlap && headers_only(a, refs, n_refs)) {
        if (st)
            st->chunks_from_header += n_refs;
        return n_refs ? emit_headers(a, refs, n_refs, out) : 0;
    }
    g->alone.len = 0;
    g->parts.len = 0;
    rc = tide__buf_reserve(&g->alone, n_refs + 1);
    if (rc == 0)
        rc = tide__buf_reserve(&g->parts, n_refs * sizeof(struct partial));
    if (rc)
        return rc;
    ordered = mark_alone(refs, n_refs, g->alone.data);
    for (size_t i = 0; i < n_refs; i++) {
        const struct chunk_ent *e = refs[i].e;
        struct partial q;

        if (!g->alone.data[i] || !header_usable(a, e)) {
            refs[n_rest++] = refs[i]; /* order kept: newest source last */
            rest_points += e->count;
            continue;
        }
        q.bucket = bucket_of(a, e->min_ts);
        q.b = header_bucket(e);
        rc = tide__buf_append(&g->parts, &q, sizeof(q));
        if (rc)
            return rc;
        if (st)
            st->chunks_from_header++;
    }
    n_parts = g->parts.len / sizeof(struct partial);
    if (n_rest == 0 && !head_overlap) {
        /* Header partials of chunks ordered by min_ts are ordered by
         * bucket and first_ts already. */
        if (n_parts == 0)
            return 0;
        if (!ordered)
            qsort(g->parts.data, n_parts, sizeof(struct partial), cmp_partial);
        return emit_buckets(a, (const struct partial *)(void *)g->parts.data,
                            n_parts, out);
    }
    if (head_overlap)
        rest_points += tide__shard_read_head_points(db, id);
    if (rest_points > TIDE__SLICE_POINTS)
        return aggregate_sliced(db, sl, io, g, id, a, refs, n_rest, rest_points,
                                ordered, out, st);
    pend = (struct agg_pending){
        .idx = idx,
        .ref0 = (uint32_t)(batch->refs.len / sizeof(*refs)),
        .n_refs = (uint32_t)n_rest,
        .part0 = (uint32_t)(batch->hparts.len / sizeof(struct partial)),
        .n_parts = (uint32_t)n_parts,
        .ordered = ordered};
    for (size_t i = 0; i < n_rest; i++)
        batch->bytes += refs[i].e->stored_bytes;
    if ((rc = tide__buf_append(&batch->pending, &pend, sizeof(pend))) ||
        (rc = tide__buf_append(&batch->refs, refs, n_rest * sizeof(*refs))))
        return rc;
    return tide__buf_append(&batch->hparts, g->parts.data, g->parts.len);
}

static int cmp_span(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;

    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Drop the gathered points that fall in the span of a chunk answered from
 * its header. Only a head point written after the series was planned can
 * (planning checked the heads and the other chunks): the read then counts
 * the chunk as it was, once, as if the write came after the read. */
static int drop_late_points(struct gather *g, const struct partial *hp,
                            size_t n_parts)
{
    int64_t *ts = tide__gather_ts(g), *span;
    uint64_t *val = tide__gather_val(g);
    uint32_t kept = 0;
    int rc;

    if (n_parts == 0 || g->n == 0 || g->type == TIDE_TYPE_STR)
        return 0;
    g->tmp.len = 0;
    rc = tide__buf_reserve(&g->tmp, n_parts * 2 * sizeof(int64_t));
    if (rc)
        return rc;
    span = (int64_t *)(void *)g->tmp.data;
    for (size_t k = 0; k < n_parts; k++) {
        span[2 * k] = hp[k].b.first_ts;
        span[2 * k + 1] = hp[k].b.last_ts;
    }
    qsort(span, n_parts, 2 * sizeof(int64_t), cmp_span);
    for (uint32_t i = 0; i < g->n; i++) {
        size_t lo = 0, hi = n_parts;

        /* The last span starting at or before ts[i]. */
        while (lo < hi) {
            size_t m = lo + (hi - lo) / 2;

            if (span[2 * m] <= ts[i])
                lo = m + 1;
            else
                hi = m;
        }
        if (lo > 0 && ts[i] <= span[2 * (lo - 1) + 1])
            continue;
        ts[kept] = ts[i];
        val[kept++] = val[i];
    }
    g->n = kept;
    g->ts.len = (size_t)kept * sizeof(*ts);
    g->val.len = (size_t)kept * sizeof(*val);
    return 0;
}

/* Fetch every chunk of the batch at once, then finish each of its series
 * from its header partials, its decoded chunks and its head points. The
 * batch is empty afterwards. */
static int aggregate_batch(struct tide_db *db, const struct seglist *sl,
                           struct tide_io *io, struct gather *g,
                           const uint64_t *ids, struct agg_ctx *a,
                           struct agg_batch *batch, struct tide_agg_series *res,
                           struct tide_agg_stats *st)
{
    const struct agg_pending *pend =
        (const struct agg_pending *)(void *)batch->pending.data;
    size_t n_pend = batch->pending.len / sizeof(*pend);
    struct chunk_ref *refs = (struct chunk_ref *)(void *)batch->refs.data;
    const struct partial *hparts =
        (const struct partial *)(void *)batch->hparts.data;
    const uint8_t *payload;
    int rc;

    rc =
        tide__segment_read_chunks(db, io, refs, batch->refs.len / sizeof(*refs),
                                  sl->n, &batch->payload, &batch->reqs);
    payload = batch->payload.data;
    for (size_t k = 0; k < n_pend && rc == 0; k++) {
        const struct agg_pending *p = &pend[k];
        int ordered = p->ordered;
        uint64_t n_raw = 0;
        size_t n_parts;

        g->parts.len = 0;
        rc = tide__buf_append(&g->parts, hparts + p->part0,
                              p->n_parts * sizeof(*hparts));
        if (rc == 0)
            rc =
                tide__shard_read_series(db, sl, g, ids[p->idx], refs + p->ref0,
                                        p->n_refs, payload, a->from, a->to, st);
        if (rc == 0)
            rc = drop_late_points(g, hparts + p->part0, p->n_parts);
        if (rc == 0)
            rc = raw_partials(g, a, &g->parts, &n_raw);
        if (rc)
            break;
        ordered = ordered && g->n == 0;
        n_parts = g->parts.len / sizeof(struct partial);
        if (n_parts == 0)
            continue;
        if (!ordered)
            qsort(g->parts.data, n_parts, sizeof(struct partial), cmp_partial);
        rc = emit_buckets(a, (const struct partial *)(void *)g->parts.data,
                          n_parts, &res[p->idx]);
    }
    batch->pending.len = batch->refs.len = batch->hparts.len = 0;
    batch->bytes = 0;
    return rc;
}

int tide_db_aggregate(tide_db *db, const uint64_t *ids, uint32_t n,
                      int64_t from_ns, int64_t to_ns, int64_t bucket_ns,
                      int64_t origin_ns, struct tide_agg_series **out,
                      struct tide_agg_stats *stats)
{
    return tide_db_aggregate_max(db, ids, n, from_ns, to_ns, bucket_ns,
                                 origin_ns, UINT64_MAX, out, stats);
}

/* The start of the bucket holding `from`: from less its distance past the
 * last origin + k * bucket_ns, remainders taken non-negative so that
 * negative times floor. A range starting within a bucket of INT64_MIN
 * keeps `from` (its aligned start is not an int64). */
static int64_t bucket_base(int64_t from, int64_t bucket_ns, int64_t origin)
{
    int64_t f, o, r;

    if (bucket_ns <= 0)
        return from;
    f = from % bucket_ns;
    o = origin % bucket_ns;
    f += f < 0 ? bucket_ns : 0;
    o += o < 0 ? bucket_ns : 0;
    r = f >= o ? f - o : f - o + bucket_ns;
    if ((uint64_t)from - (uint64_t)INT64_MIN < (uint64_t)r)
        return from;
    return from - r;
}

/* The aggregate of ids[0..n) on the calling thread: tide_db_aggregate_max()
 * but for the split. */
static int aggregate_run(tide_db *db, const uint64_t *ids, uint32_t n,
                         int64_t from_ns, int64_t to_ns, int64_t bucket_ns,
                         int64_t origin_ns, uint64_t max_buckets,
                         struct tide_agg_series **out,
                         struct tide_agg_stats *stats)
{
    struct agg_ctx a = {.from = from_ns,
                        .to = to_ns,
                        .bucket_ns = bucket_ns,
                        .base = bucket_base(from_ns, bucket_ns, origin_ns),
                        .max_buckets = max_buckets};
    struct tide_agg_series *res;
    struct agg_batch batch = {0};
    struct cursors cur = {0};
    struct gather g = {0};
    struct seglist *sl;
    struct tide_io *io;
    int rc;

    if (atomic_load(&db->closing))
        return TIDE_ECLOSED;
    if ((n && !ids) || from_ns > to_ns || bucket_ns < 0)
        return TIDE_EINVAL;
    if (stats)
        memset(stats, 0, sizeof(*stats));
    /* res[n], past the results, owns the bucket arena. */
    res = tide_calloc((size_t)n + 1, sizeof(*res));
    a.boff = tide_malloc(((size_t)n + 1) * sizeof(*a.boff));
    if (!res || !a.boff) {
        tide_free(res);
        tide_free(a.boff);
        return -ENOMEM;
    }
    a.res = res;
    rc = tide__db_io_get(db, &io);
    if (rc) {
        tide_free(res);
        tide_free(a.boff);
        return rc;
    }
    sl = tide__seglist_acquire(db);
    for (;;) {
        rc = tide__segment_read_cursors_fit(&cur, sl->n);
        for (uint32_t i = 0; i < n && rc == 0; i++) {
            rc = aggregate_plan(db, sl, io, &g, ids[i], i, &a, &cur, &res[i],
                                &batch, stats);
            if (rc == 0 &&
                (i + 1 == n ||
                 batch.refs.len / sizeof(struct chunk_ref) >= AGG_BATCH_REFS ||
                 batch.bytes >= AGG_BATCH_BYTES))
                rc = aggregate_batch(db, sl, io, &g, ids, &a, &batch, res,
                                     stats);
        }
        if (rc != TIDE__READ_STALE)
            break;
        /* A flush published segments this list lacks while the heads were
         * read: start over on the current list. */
        tide__seglist_release(sl);
        sl = tide__seglist_acquire(db);
        memset(res, 0, (size_t)n * sizeof(*res));
        a.buckets.len = 0;
        a.n_buckets = 0;
        batch.pending.len = batch.refs.len = batch.hparts.len = 0;
        batch.bytes = 0;
        if (stats)
            memset(stats, 0, sizeof(*stats));
    }
    tide__seglist_release(sl);
    TIDE_ASSERT(rc <= 0); /* TIDE__READ_STALE never leaves the engine */
    tide__db_io_put(db, io);
    tide__gather_fini(&g);
    agg_batch_fini(&batch);
    tide__segment_read_cursors_fini(&cur);
    if (rc) {
        tide__buf_fini(&a.buckets);
        tide_free(a.boff);
        tide_agg_free(res, n);
        return rc;
    }
    res[n].buckets = (struct tide_bucket *)(void *)a.buckets.data;
    for (uint32_t i = 0; i < n; i++)
        res[i].buckets = res[i].n_buckets ? res[n].buckets + a.boff[i] : NULL;
    tide_free(a.boff);
    *out = res;
    return 0;
}

/* A query over at least this many series is split in two halves by
 * series, one on a helper thread, when the machine has two cores: below
 * it, starting the thread costs more than the half saves. */
#define AGG_SPLIT_SERIES 256u

/* One half of a split aggregate: its own result, arena and stats. */
struct agg_half {
    tide_db *db;
    const uint64_t *ids;
    uint32_t n;
    int64_t from_ns, to_ns, bucket_ns, origin_ns;
    uint64_t max_buckets;
    struct tide_agg_series *res;
    struct tide_agg_stats st;
    int rc;
};

static void *agg_half_main(void *arg)
{
    struct agg_half *h = arg;

    h->rc =
        aggregate_run(h->db, h->ids, h->n, h->from_ns, h->to_ns, h->bucket_ns,
                      h->origin_ns, h->max_buckets, &h->res, &h->st);
    return NULL;
}

/* Join the two halves' results into one, in the order of ids: each series
 * was read whole by one half, so its buckets are those of the serial path
 * bit for bit. The halves' limits were checked each against max_buckets;
 * the whole is checked here. Frees the halves. */
static int agg_join(struct agg_half *h, uint64_t max_buckets,
                    struct tide_agg_series **out, struct tide_agg_stats *stats)
{
    uint32_t n = h[0].n + h[1].n;
    uint64_t nb[2] = {0, 0};
    struct tide_agg_series *res = NULL;
    struct tide_bucket *arena = NULL;
    int rc = h[0].rc ? h[0].rc : h[1].rc;

    for (int k = 0; k < 2 && rc == 0; k++)
        for (uint32_t i = 0; i < h[k].n; i++)
            nb[k] += h[k].res[i].n_buckets;
    if (rc == 0 && nb[0] + nb[1] > max_buckets)
        rc = TIDE_EFULL;
    if (rc == 0) {
        res = tide_calloc((size_t)n + 1, sizeof(*res));
        arena = nb[0] + nb[1]
                    ? tide_malloc((size_t)(nb[0] + nb[1]) * sizeof(*arena))
                    : NULL;
        if (!res || (nb[0] + nb[1] && !arena))
            rc = -ENOMEM;
    }
    for (int k = 0; k < 2 && rc == 0; k++) {
        struct tide_bucket *b = arena + (k ? nb[0] : 0);

        if (nb[k])
            memcpy(b, h[k].res[h[k].n].buckets, nb[k] * sizeof(*b));
        for (uint32_t i = 0; i < h[k].n; i++) {
            struct tide_agg_series *r = &res[(k ? h[0].n : 0) + i];

            *r = h[k].res[i];
            r->buckets = r->n_buckets ? b : NULL;
            b += r->n_buckets;
        }
    }
    for (int k = 0; k < 2; k++) {
        if (h[k].rc == 0)
            tide_agg_free(h[k].res, h[k].n);
        if (stats) {
            stats->chunks_decoded += h[k].st.chunks_decoded;
            stats->chunks_from_header += h[k].st.chunks_from_header;
            stats->bytes_read += h[k].st.bytes_read;
        }
    }
    if (rc) {
        tide_free(res);
        tide_free(arena);
        return rc;
    }
    res[n].buckets = arena;
    *out = res;
    return 0;
}

/* How many threads an aggregate may use: never more than the cores. */
static unsigned agg_threads(void)
{
    static atomic_int cores;
    int c = atomic_load(&cores);

    if (c == 0) {
        long v = sysconf(_SC_NPROCESSORS_ONLN);

        c = v < 1 ? 1 : v > 2 ? 2 : (int)v;
        atomic_store(&cores, c);
    }
    return (unsigned)c;
}

int tide_db_aggregate_max(tide_db *db, const uint64_t *ids, uint32_t n,
                          int64_t from_ns, int64_t to_ns, int64_t bucket_ns,
                          int64_t origin_ns, uint64_t max_buckets,
                          struct tide_agg_series **out,
                          struct tide_agg_stats *stats)
{
    struct agg_half h[2];
    pthread_t th;
    int joined;

    if (n < AGG_SPLIT_SERIES || agg_threads() < 2 ||
        atomic_load(&db->closing) || !ids || from_ns > to_ns || bucket_ns < 0)
        return aggregate_run(db, ids, n, from_ns, to_ns, bucket_ns, origin_ns,
                             max_buckets, out, stats);
    if (stats)
        memset(stats, 0, sizeof(*stats));
    for (int k = 0; k < 2; k++)
        h[k] = (struct agg_half){.db = db,
                                 .ids = ids + (k ? n / 2 : 0),
                                 .n = k ? n - n / 2 : n / 2,
                                 .from_ns = from_ns,
                                 .to_ns = to_ns,
                                 .bucket_ns = bucket_ns,
                                 .origin_ns = origin_ns,
                                 .max_buckets = max_buckets};
    /* The second half on a helper thread, or here when none starts. */
    joined = pthread_create(&th, NULL, agg_half_main, &h[1]) == 0;
    agg_half_main(&h[0]);
    if (joined)
        pthread_join(th, NULL);
    else
        agg_half_main(&h[1]);
    return agg_join(h, max_buckets, out, stats);
}

void tide_agg_free(struct tide_agg_series *res, uint32_t n)
{
    if (!res)
        return;
    tide_free(res[n].buckets); /* the arena holding every result's */
    tide_free(res);
}
