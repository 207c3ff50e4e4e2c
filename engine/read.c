/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The read path: range iterators, bucketed aggregates and latest values.
 * For each series the sources are the segments (oldest first), then the
 * frozen head, then the active head; points are gathered in that order,
 * ordered by time, and a repeated timestamp keeps the newest source's
 * value (last write wins). Aggregates answer a chunk from its header when
 * it lies wholly inside one bucket and no other source overlaps it.
 */
#include "db.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#define BLOCK_POINTS_MAX 65536u

/* A chunk of one series that a read needs. */
struct chunk_ref {
    const struct seg *seg;
    const struct chunk_ent *e;
    uint32_t seg_idx; /* seg's index in db->segs */
    uint32_t pos;     /* set by read_chunks(): its first payload byte */
};

/* Points of one series gathered from every source. For strings, `val`
 * holds offsets into `strbytes` and `len` the lengths. */
struct gather {
    uint8_t type;
    int ordered;      /* the points so far are strictly ascending in time */
    uint8_t seg_type; /* type in the newest segment holding the series */
    uint32_t n;
    struct tide_buf ts;
    struct tide_buf val;
    struct tide_buf len;
    struct tide_buf strbytes;
    struct tide_buf payload; /* chunk bytes read from disk */
    struct tide_buf tmp;     /* decode scratch */
    struct tide_buf arena;   /* decoded strings of one chunk */
    struct tide_buf refs;    /* struct chunk_ref[] */
    struct tide_buf reqs;    /* struct tide_io_req[] */
    struct tide_buf alone;   /* aggregates: per-ref exclusivity flags */
    struct tide_buf parts;   /* aggregates: struct partial[] */
};

static void gather_reset(struct gather *g)
{
    g->type = 0;
    g->n = 0;
    g->ordered = 1;
    g->ts.len = g->val.len = g->len.len = g->strbytes.len = 0;
}

static void gather_fini(struct gather *g)
{
    tide__buf_fini(&g->ts);
    tide__buf_fini(&g->val);
    tide__buf_fini(&g->len);
    tide__buf_fini(&g->strbytes);
    tide__buf_fini(&g->payload);
    tide__buf_fini(&g->tmp);
    tide__buf_fini(&g->arena);
    tide__buf_fini(&g->refs);
    tide__buf_fini(&g->reqs);
    tide__buf_fini(&g->alone);
    tide__buf_fini(&g->parts);
}

static int64_t *g_ts(const struct gather *g)
{
    return (int64_t *)(void *)g->ts.data;
}

static uint64_t *g_val(const struct gather *g)
{
    return (uint64_t *)(void *)g->val.data;
}

static uint32_t *g_len(const struct gather *g)
{
    return (uint32_t *)(void *)g->len.data;
}

static int g_reserve(struct gather *g, uint32_t n)
{
    int rc = tide__buf_reserve(&g->ts, (size_t)n * 8);

    if (rc == 0)
        rc = tide__buf_reserve(&g->val, (size_t)n * 8);
    if (rc == 0 && g->type == TIDE_TYPE_STR)
        rc = tide__buf_reserve(&g->len, (size_t)n * 4);
    return rc;
}

/* Append points [a, b) of arrays in arrival order. */
static int g_append(struct gather *g, const int64_t *ts, const uint64_t *val,
                    const struct tide_str *str, uint32_t a, uint32_t b)
{
    int rc = g_reserve(g, b - a);

    if (rc)
        return rc;
    for (uint32_t i = a; i < b; i++) {
        if (g->n && ts[i] <= g_ts(g)[g->n - 1])
            g->ordered = 0;
        g_ts(g)[g->n] = ts[i];
        if (g->type == TIDE_TYPE_STR) {
            g_val(g)[g->n] = g->strbytes.len;
            g_len(g)[g->n] = str[i].len;
            rc = tide__buf_append(&g->strbytes, str[i].ptr, str[i].len);
            if (rc)
                return rc;
        } else {
            g_val(g)[g->n] = val[i];
        }
        g->n++;
    }
    g->ts.len = g->val.len = (size_t)g->n * 8;
    if (g->type == TIDE_TYPE_STR)
        g->len.len = (size_t)g->n * 4;
    return 0;
}

static uint32_t lower_bound(const int64_t *ts, uint32_t n, int64_t bound)
{
    uint32_t a = 0, b = n;

    while (a < b) {
        uint32_t m = a + (b - a) / 2;

        if (ts[m] < bound)
            a = m + 1;
        else
            b = m;
    }
    return a;
}

/* Does the chunk intersect [from, to)? */
static int chunk_in_range(const struct chunk_ent *e, int64_t from, int64_t to)
{
    return e->min_ts < to && e->max_ts >= from;
}

/* Decode a numeric chunk straight into the gathered arrays and keep its
 * points within [from, to): no copy when the whole chunk is in range. */
static int decode_chunk(struct gather *g, const struct chunk_ent *e,
                        const uint8_t *payload, int64_t from, int64_t to)
{
    uint32_t cnt = e->count, a, b;
    int64_t *ts;
    uint64_t *val;
    int rc = g_reserve(g, cnt);

    if (rc)
        return rc;
    ts = g_ts(g) + g->n;
    val = g_val(g) + g->n;
    rc = tide__chunk_decode_range(e, payload, e->stored_bytes, from, to, ts,
                                  val, &a, &b);
    if (rc)
        return rc;
    /* A chunk is strictly ascending (the writer's invariant, and the
     * checksum vouches for the bytes), so only the seam with the points
     * before it can break the order. */
    if (b > a && g->n && ts[a] <= g_ts(g)[g->n - 1])
        g->ordered = 0;
    if (a > 0 && b > a) {
        memmove(ts, ts + a, (size_t)(b - a) * sizeof(*ts));
        memmove(val, val + a, (size_t)(b - a) * sizeof(*val));
    }
    g->n += b > a ? b - a : 0;
    g->ts.len = g->val.len = (size_t)g->n * 8;
    return 0;
}

/* Decode a string chunk into scratch, then append its points in range. */
static int decode_str_chunk(struct gather *g, const struct chunk_ent *e,
                            const uint8_t *payload, int64_t from, int64_t to)
{
    uint32_t cnt = e->count, a, b;
    struct tide_str *str;
    int64_t *ts;
    int rc;

    g->tmp.len = 0;
    g->arena.len = 0;
    rc = tide__buf_reserve(&g->tmp, (size_t)cnt * (16 + sizeof(*str)));
    if (rc)
        return rc;
    ts = (int64_t *)(void *)g->tmp.data;
    str = (struct tide_str *)(void *)(g->tmp.data + 16 * (size_t)cnt);
    rc = tide__chunk_decode(e, payload, e->stored_bytes, ts,
                            (uint64_t *)(void *)(g->tmp.data + 8 * (size_t)cnt),
                            str, &g->arena);
    if (rc)
        return rc;
    a = lower_bound(ts, cnt, from);
    b = lower_bound(ts, cnt, to);
    return g_append(g, ts, NULL, str, a, b);
}

static void log_corrupt(struct tide_db *db, const struct chunk_ref *r)
{
    tide__db_log(db, TIDE_LOG_ERROR,
                 "corrupt chunk in %s at offset %llu (series %llu): checksum "
                 "or encoding mismatch",
                 r->seg->path, (unsigned long long)r->e->offset,
                 (unsigned long long)r->e->series_id);
}

/* Read the payloads of refs[0..n) into `payload` (replacing its contents)
 * with one tide__io_run(), setting each ref's pos. The chunks are laid out
 * by segment (a stable counting sort on seg_idx, n_segs buckets), and
 * chunks that follow each other in a file become one request: an
 * ascending-id read of id-ordered segments turns hundreds of 1 KiB reads
 * into a few large ones. A short read is corruption. */
static int read_chunks(struct tide_db *db, struct tide_io *io,
                       struct chunk_ref *refs, size_t n, uint32_t n_segs,
                       struct tide_buf *payload, struct tide_buf *reqbuf)
{
    struct tide_io_req *reqs;
    uint32_t *order, *first;
    size_t bytes = 0, pos = 0, n_reqs = 0;
    int rc;

    for (size_t i = 0; i < n; i++)
        bytes += refs[i].e->stored_bytes;
    if (bytes > UINT32_MAX)
        return -ENOMEM; /* no payload buffer that large either */
    payload->len = reqbuf->len = 0;
    if ((rc = tide__buf_reserve(payload, bytes + 1)) ||
        (rc = tide__buf_reserve(reqbuf, n * sizeof(*reqs) +
                                            (n + n_segs + 2) * sizeof(*order))))
        return rc;
    reqs = (struct tide_io_req *)(void *)reqbuf->data;
    order = (uint32_t *)(void *)(reqs + n);
    first = order + n;
    memset(first, 0, (n_segs + 1) * sizeof(*first));
    for (size_t i = 0; i < n; i++)
        first[refs[i].seg_idx + 1]++;
    for (uint32_t s = 0; s < n_segs; s++)
        first[s + 1] += first[s];
    for (size_t i = 0; i < n; i++)
        order[first[refs[i].seg_idx]++] = (uint32_t)i;
    for (size_t k = 0; k < n; k++) {
        struct chunk_ref *r = &refs[order[k]];
        struct tide_io_req *last = n_reqs ? &reqs[n_reqs - 1] : NULL;

        r->pos = (uint32_t)pos;
        if (last && last->fd == r->seg->fd &&
            last->off + last->len == r->e->offset)
            last->len += r->e->stored_bytes; /* bytes <= UINT32_MAX */
        else
            reqs[n_reqs++] = (struct tide_io_req){.op = TIDE_IO_READ,
                                                  .fd = r->seg->fd,
                                                  .buf = payload->data + pos,
                                                  .len = r->e->stored_bytes,
                                                  .off = r->e->offset};
        pos += r->e->stored_bytes;
    }
    rc = tide__io_run(io, reqs, (unsigned)n_reqs);
    for (size_t k = 0, j = 0; k < n_reqs && rc == 0; k++) {
        /* The refs of request k start at order[j]. */
        if ((uint64_t)reqs[k].res != reqs[k].len) {
            log_corrupt(db, &refs[order[j]]);
            rc = TIDE_ECORRUPT;
        }
        for (size_t got = 0; got < reqs[k].len; j++)
            got += refs[order[j]].e->stored_bytes;
    }
    return rc;
}

/* Decode the chunks refs[0..n), whose payloads read_chunks() placed at
 * `payload` + pos, appending their points within [from, to). */
static int decode_chunks(struct tide_db *db, struct gather *g,
                         const struct chunk_ref *refs, size_t n,
                         const uint8_t *payload, int64_t from, int64_t to,
                         struct tide_agg_stats *st)
{
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct chunk_ent *e = refs[i].e;

        if (e->type != g->type)
            rc = 0; /* a series has one type; never mix */
        else if (e->type == TIDE_TYPE_STR)
            rc = decode_str_chunk(g, e, payload + refs[i].pos, from, to);
        else
            rc = decode_chunk(g, e, payload + refs[i].pos, from, to);
        if (rc == TIDE_ECORRUPT)
            log_corrupt(db, &refs[i]);
        if (st) {
            st->chunks_decoded++;
            st->bytes_read += e->stored_bytes;
        }
    }
    return rc;
}

/* Append the points of `s` (a head series) within [from, to). */
static int gather_head(struct gather *g, const struct hseries *s, int64_t from,
                       int64_t to)
{
    int rc = 0;

    if (!s || s->type != g->type)
        return 0;
    for (uint32_t i = 0; i < s->n && rc == 0; i++) {
        uint32_t j = i;

        /* Runs of in-range points are appended together. */
        while (j < s->n && s->ts[j] >= from && s->ts[j] < to)
            j++;
        if (j > i)
            rc = g_append(g, s->ts, s->val, s->str, i, j);
        i = j;
    }
    return rc;
}

/* The type of a series: from its newest source, the head, else the
 * newest segment that collect_refs() found it in. 0 when it has none. */
static uint8_t series_type(struct tide_db *db, const struct gather *g,
                           uint64_t id)
{
    struct shard *sh = &db->shards[tide__db_shard_of(db, id)];
    const struct hseries *s;
    uint8_t type = 0;

    pthread_rwlock_rdlock(&sh->rw);
    s = tide__head_find(&sh->head, id);
    if (!s && sh->frozen)
        s = tide__head_find(sh->frozen, id);
    if (s)
        type = s->type;
    pthread_rwlock_unlock(&sh->rw);
    return type ? type : g->seg_type;
}

/* Per-segment search hints of a query that visits ids in ascending order
 * (tide__seg_seek). Valid whatever db->segs holds: a hint that does not fit
 * is ignored, and the array grows with the segment list. */
struct cursors {
    uint32_t *hint;
    uint32_t *span; /* collect_refs() scratch: lo, hi per segment */
    uint32_t n;
};

static int cursors_fit(struct cursors *c, uint32_t n_segs)
{
    uint32_t *p, *q;

    if (c->n >= n_segs)
        return 0;
    p = tide_realloc(c->hint, ((size_t)n_segs + 1) * sizeof(*p));
    if (!p)
        return -ENOMEM;
    memset(p + c->n, 0, (size_t)(n_segs - c->n) * sizeof(*p));
    c->hint = p;
    q = tide_realloc(c->span, (2 * (size_t)n_segs + 1) * sizeof(*q));
    if (!q)
        return -ENOMEM;
    c->span = q;
    c->n = n_segs;
    return 0;
}

static void cursors_fini(struct cursors *c)
{
    tide_free(c->hint);
    tide_free(c->span);
}

/* Collect the chunks of `id` intersecting [from, to) into g->refs, oldest
 * segment first, and set g->seg_type from the newest segment holding the
 * series. Segments are searched newest first: once the type is known,
 * those out of range need no search at all (a read of the last hour
 * touches one or two of them). Caller holds db->seg_lock for reading and
 * has fitted the cursors to db->n_segs. */
static int collect_refs(struct tide_db *db, struct gather *g, uint64_t id,
                        int64_t from, int64_t to, struct cursors *cur)
{
    unsigned shard = tide__db_shard_of(db, id);
    size_t n_refs = 0;
    struct chunk_ref *r;
    int rc;

    g->refs.len = 0;
    g->seg_type = 0;
    for (uint32_t i = db->n_segs; i-- > 0;) {
        const struct seg *seg = db->segs[i];
        int in_range = seg->min_ts < to && seg->max_ts >= from;
        uint32_t *lo = &cur->span[2 * i], *hi = lo + 1;

        *lo = *hi = 0;
        if ((seg->shard_only && seg->shard != shard) ||
            (!in_range && g->seg_type))
            continue; /* cannot hold the series, or not needed */
        tide__seg_seek(seg, id, &cur->hint[i], lo, hi);
        if (*lo == *hi)
            continue;
        if (!g->seg_type)
            g->seg_type = seg->chunks[*lo].type;
        if (!in_range)
            *lo = *hi = 0;
        n_refs += *hi - *lo;
    }
    rc = tide__buf_reserve(&g->refs, n_refs * sizeof(*r));
    if (rc)
        return rc;
    r = (struct chunk_ref *)(void *)g->refs.data;
    for (uint32_t i = 0; i < db->n_segs; i++) {
        const struct seg *seg = db->segs[i];

        for (uint32_t c = cur->span[2 * i]; c < cur->span[2 * i + 1]; c++)
            if (chunk_in_range(&seg->chunks[c], from, to))
                *r++ = (struct chunk_ref){seg, &seg->chunks[c], i, 0};
    }
    g->refs.len = (size_t)((uint8_t *)r - g->refs.data);
    return 0;
}

/* Gather every point of `id` in [from, to) ordered by time without
 * duplicates: the chunks refs[0..n) (oldest source first, payloads at
 * `payload` + pos), then the frozen and active heads. Caller holds
 * db->seg_lock for reading, since collect_refs(). */
static int gather_series(struct tide_db *db, struct gather *g, uint64_t id,
                         const struct chunk_ref *refs, size_t n_refs,
                         const uint8_t *payload, int64_t from, int64_t to,
                         struct tide_agg_stats *st)
{
    struct shard *sh = &db->shards[tide__db_shard_of(db, id)];
    uint32_t *idx, n_out;
    int rc;

    gather_reset(g);
    g->type = series_type(db, g, id);
    if (g->type == 0)
        return 0;
    rc = decode_chunks(db, g, refs, n_refs, payload, from, to, st);
    if (rc)
        return rc;
    pthread_rwlock_rdlock(&sh->rw);
    if (sh->frozen)
        rc = gather_head(g, tide__head_find(sh->frozen, id), from, to);
    if (rc == 0)
        rc = gather_head(g, tide__head_find(&sh->head, id), from, to);
    pthread_rwlock_unlock(&sh->rw);
    if (rc || g->n == 0)
        return rc;
    /* Strictly ascending already (the usual case: sources do not overlap)
     * needs no reordering. */
    if (g->ordered)
        return 0;
    /* Order by time, last source winning; a no-op when already ordered. */
    g->tmp.len = 0;
    rc = tide__buf_reserve(&g->tmp, (size_t)g->n * 4);
    if (rc)
        return rc;
    idx = (uint32_t *)(void *)g->tmp.data;
    rc = tide__ts_order(g_ts(g), g->n, idx, &n_out);
    if (rc)
        return rc;
    if (n_out == g->n && (n_out == 0 || idx[n_out - 1] == n_out - 1)) {
        int identity = 1;

        for (uint32_t i = 0; i < n_out && identity; i++)
            identity = idx[i] == i;
        if (identity)
            return 0;
    }
    /* Permute in place through a copy of the gathered arrays. */
    {
        struct tide_buf ts = {0}, val = {0}, len = {0};

        if ((rc = tide__buf_append(&ts, g->ts.data, g->ts.len)) ||
            (rc = tide__buf_append(&val, g->val.data, g->val.len)) ||
            (rc = tide__buf_append(&len, g->len.data, g->len.len))) {
            tide__buf_fini(&ts);
            tide__buf_fini(&val);
            tide__buf_fini(&len);
            return rc;
        }
        for (uint32_t i = 0; i < n_out; i++) {
            g_ts(g)[i] = ((int64_t *)(void *)ts.data)[idx[i]];
            g_val(g)[i] = ((uint64_t *)(void *)val.data)[idx[i]];
            if (g->type == TIDE_TYPE_STR)
                g_len(g)[i] = ((uint32_t *)(void *)len.data)[idx[i]];
        }
        tide__buf_fini(&ts);
        tide__buf_fini(&val);
        tide__buf_fini(&len);
    }
    g->n = n_out;
    return 0;
}

/* ---- Range iterator ------------------------------------------------------ */

/* Limits of an iterator's read-ahead: the chunks of the next series are
 * read together, up to this many series, chunks or bytes at once. */
#define RA_SERIES_MAX 1024u
#define RA_REFS_MAX 512u
#define RA_BYTES_MAX (8u << 20)

/* The chunks of one planned series within the read-ahead. */
struct ra_span {
    uint32_t ref0; /* refs [ref0, ref0 + n_refs) */
    uint32_t n_refs;
    uint8_t seg_type; /* see struct gather */
};

/* Chunk reads of ids[first .. first + n), made under one seg_lock read
 * hold. They are used under a later hold only if seg_gen is unchanged:
 * then the segment list is the same, the chunk references are valid, and
 * reading the heads at that later time gives what one hold would have. */
struct readahead {
    uint64_t gen;
    uint32_t first;
    uint32_t n;
    struct tide_buf spans; /* struct ra_span[] */
    struct tide_buf refs;  /* struct chunk_ref[] */
    struct tide_buf payload;
    struct tide_buf reqs;
};

struct tide_iter {
    struct tide_db *db;
    struct tide_io *io;
    uint64_t *ids;
    uint32_t n_ids;
    uint32_t next_id; /* next series to gather */
    int64_t from;
    int64_t to;
    int err;
    uint64_t cur_id;
    uint32_t off; /* next point of the current series to return */
    struct gather g;
    struct cursors cur;
    struct readahead ra;
    struct tide_buf strs; /* struct tide_str[] of the current block */
};

/* Plan and read the chunks of ids[first..] (see struct readahead).
 * Caller holds db->seg_lock for reading. */
static int ra_fill(struct tide_iter *it, uint32_t first)
{
    struct readahead *ra = &it->ra;
    size_t bytes = 0;
    int rc = cursors_fit(&it->cur, it->db->n_segs);

    ra->first = first;
    ra->n = 0;
    ra->spans.len = ra->refs.len = 0;
    ra->gen = it->db->seg_gen;
    for (uint32_t j = first; j < it->n_ids && rc == 0; j++) {
        const struct chunk_ref *refs;
        struct ra_span sp;

        rc = collect_refs(it->db, &it->g, it->ids[j], it->from, it->to,
                          &it->cur);
        if (rc)
            break;
        refs = (const struct chunk_ref *)(void *)it->g.refs.data;
        sp = (struct ra_span){.ref0 = (uint32_t)(ra->refs.len / sizeof(*refs)),
                              .n_refs =
                                  (uint32_t)(it->g.refs.len / sizeof(*refs)),
                              .seg_type = it->g.seg_type};
        for (uint32_t k = 0; k < sp.n_refs; k++)
            bytes += refs[k].e->stored_bytes;
        if ((rc = tide__buf_append(&ra->spans, &sp, sizeof(sp))) ||
            (rc = tide__buf_append(&ra->refs, it->g.refs.data, it->g.refs.len)))
            break;
        ra->n++;
        if (ra->n >= RA_SERIES_MAX ||
            ra->refs.len / sizeof(*refs) >= RA_REFS_MAX ||
            bytes >= RA_BYTES_MAX)
            break;
    }
    if (rc == 0)
        rc = read_chunks(it->db, it->io,
                         (struct chunk_ref *)(void *)ra->refs.data,
                         ra->refs.len / sizeof(struct chunk_ref),
                         it->db->n_segs, &ra->payload, &ra->reqs);
    if (rc)
        ra->n = 0;
    return rc;
}

/* Gather series ids[idx] from the read-ahead, refilled when it does not
 * hold that series or the segment list changed since. */
static int iter_gather(struct tide_iter *it, uint32_t idx)
{
    struct readahead *ra = &it->ra;
    const struct ra_span *sp;
    int rc = 0;

    pthread_rwlock_rdlock(&it->db->seg_lock);
    if (idx < ra->first || idx - ra->first >= ra->n ||
        ra->gen != it->db->seg_gen)
        rc = ra_fill(it, idx);
    if (rc == 0) {
        sp = (const struct ra_span *)(void *)ra->spans.data + (idx - ra->first);
        it->g.seg_type = sp->seg_type;
        rc = gather_series(
            it->db, &it->g, it->ids[idx],
            (const struct chunk_ref *)(void *)ra->refs.data + sp->ref0,
            sp->n_refs, ra->payload.data, it->from, it->to, NULL);
    }
    pthread_rwlock_unlock(&it->db->seg_lock);
    return rc;
}

int tide_db_read_open(tide_db *db, const uint64_t *ids, uint32_t n,
                      int64_t from_ns, int64_t to_ns, tide_iter **out)
{
    struct tide_iter *it;
    int rc;

    if (atomic_load(&db->closing))
        return TIDE_ECLOSED;
    if ((n && !ids) || from_ns > to_ns)
        return TIDE_EINVAL;
    it = tide_calloc(1, sizeof(*it));
    if (!it)
        return -ENOMEM;
    it->ids = tide_malloc((size_t)n * sizeof(*ids) + 1);
    if (!it->ids) {
        tide_free(it);
        return -ENOMEM;
    }
    rc = tide__db_io_get(db, &it->io);
    if (rc) {
        tide_free(it->ids);
        tide_free(it);
        return rc;
    }
    if (n)
        memcpy(it->ids, ids, (size_t)n * sizeof(*ids));
    it->db = db;
    it->n_ids = n;
    it->from = from_ns;
    it->to = to_ns;
    *out = it;
    return 0;
}

int tide_iter_next(tide_iter *it, struct tide_block *blk)
{
    uint32_t n;

    if (it->err)
        return it->err;
    while (it->off >= it->g.n) {
        int rc;

        if (it->next_id >= it->n_ids)
            return 0;
        it->cur_id = it->ids[it->next_id];
        it->off = 0;
        rc = iter_gather(it, it->next_id++);
        if (rc) {
            it->err = rc;
            return rc;
        }
    }
    n = it->g.n - it->off < BLOCK_POINTS_MAX ? it->g.n - it->off
                                             : BLOCK_POINTS_MAX;
    blk->series_id = it->cur_id;
    blk->type = it->g.type;
    blk->n = n;
    blk->ts_ns = g_ts(&it->g) + it->off;
    if (it->g.type == TIDE_TYPE_STR) {
        struct tide_str *s;

        it->strs.len = 0;
        it->err = tide__buf_reserve(&it->strs, (size_t)n * sizeof(*s));
        if (it->err)
            return it->err;
        s = (struct tide_str *)(void *)it->strs.data;
        for (uint32_t i = 0; i < n; i++) {
            s[i].ptr =
                (const char *)it->g.strbytes.data + g_val(&it->g)[it->off + i];
            s[i].len = g_len(&it->g)[it->off + i];
        }
        blk->v.str = s;
    } else if (it->g.type == TIDE_TYPE_BOOL) {
        /* Narrow the 8-byte slots to the one byte per point promised. */
        uint8_t *b;

        it->strs.len = 0;
        it->err = tide__buf_reserve(&it->strs, n);
        if (it->err)
            return it->err;
        b = it->strs.data;
        for (uint32_t i = 0; i < n; i++)
            b[i] = (uint8_t)g_val(&it->g)[it->off + i];
        blk->v.b = b;
    } else {
        blk->v.i64 = (const int64_t *)(g_val(&it->g) + it->off);
    }
    it->off += n;
    return 1;
}

void tide_iter_close(tide_iter *it)
{
    if (!it)
        return;
    tide__db_io_put(it->db, it->io);
    gather_fini(&it->g);
    cursors_fini(&it->cur);
    tide__buf_fini(&it->ra.spans);
    tide__buf_fini(&it->ra.refs);
    tide__buf_fini(&it->ra.payload);
    tide__buf_fini(&it->ra.reqs);
    tide__buf_fini(&it->strs);
    tide_free(it->ids);
    tide_free(it);
}

/* ---- Aggregates --------------------------------------------------------- */

/* A partial bucket: from one chunk header, or from a run of raw points. */
struct partial {
    int64_t bucket; /* index from `from` */
    struct tide_bucket b;
};

struct agg_ctx {
    int64_t from;
    int64_t to;
    int64_t bucket_ns;
    int64_t head_min; /* time span of the series in the heads */
    int64_t head_max;
    /* Every result's buckets, back to back: one allocation per query. */
    struct tide_buf buckets;
    struct tide_agg_series *res;
    size_t *boff; /* boff[i]: res[i]'s first bucket in `buckets` */
};

static int64_t bucket_of(const struct agg_ctx *a, int64_t ts)
{
    return a->bucket_ns ? (int64_t)(((uint64_t)ts - (uint64_t)a->from) /
                                    (uint64_t)a->bucket_ns)
                        : 0;
}

static double value_double(uint8_t type, uint64_t v)
{
    double d;

    if (type == TIDE_TYPE_F64) {
        memcpy(&d, &v, sizeof(d));
        return d;
    }
    return type == TIDE_TYPE_I64 ? (double)(int64_t)v : (double)v;
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

static void merge_bucket(struct tide_bucket *into, const struct tide_bucket *b)
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

/* Head time span of a series (INT64_MAX/MIN when none) and its type
 * there (0 when none). */
static uint8_t head_span(struct tide_db *db, uint64_t id, int64_t *lo,
                         int64_t *hi)
{
    struct shard *sh = &db->shards[tide__db_shard_of(db, id)];
    const struct hseries *hs[2];
    uint8_t type;

    *lo = INT64_MAX;
    *hi = INT64_MIN;
    pthread_rwlock_rdlock(&sh->rw);
    hs[0] = tide__head_find(&sh->head, id);
    hs[1] = sh->frozen ? tide__head_find(sh->frozen, id) : NULL;
    type = hs[0] ? hs[0]->type : hs[1] ? hs[1]->type : 0;
    for (int k = 0; k < 2; k++)
        for (uint32_t i = 0; hs[k] && i < hs[k]->n; i++) {
            if (hs[k]->ts[i] < *lo)
                *lo = hs[k]->ts[i];
            if (hs[k]->ts[i] > *hi)
                *hi = hs[k]->ts[i];
        }
    pthread_rwlock_unlock(&sh->rw);
    return type;
}

/* Partial buckets of the gathered points, appended to `parts`. */
static int raw_partials(const struct gather *g, const struct agg_ctx *a,
                        struct tide_buf *parts)
{
    int rc = 0;

    for (uint32_t i = 0; i < g->n && rc == 0;) {
        int64_t bk = bucket_of(a, g_ts(g)[i]);
        struct partial q = {.bucket = bk};

        q.b.first_ts = g_ts(g)[i];
        q.b.first = value_double(g->type, g_val(g)[i]);
        q.b.min = q.b.max = q.b.first;
        for (; i < g->n && bucket_of(a, g_ts(g)[i]) == bk; i++) {
            double d = g->type == TIDE_TYPE_STR
                           ? 0
                           : value_double(g->type, g_val(g)[i]);

            q.b.count++;
            q.b.sum += d;
            if (d < q.b.min || q.b.min != q.b.min)
                q.b.min = d;
            if (d > q.b.max || q.b.max != q.b.max)
                q.b.max = d;
            q.b.last = d;
            q.b.last_ts = g_ts(g)[i];
        }
        if (g->type == TIDE_TYPE_STR)
            q.b.sum = q.b.min = q.b.max = q.b.first = q.b.last = 0;
        rc = tide__buf_append(parts, &q, sizeof(q));
    }
    return rc;
}

/* Merge partials ordered by bucket into the query's bucket arena; the
 * result's pointer is set once the arena stops growing (see
 * tide_db_aggregate). */
static int emit_buckets(struct agg_ctx *a, const struct partial *p,
                        size_t n_parts, struct tide_agg_series *out)
{
    size_t n_buckets = 0, off = a->buckets.len / sizeof(struct tide_bucket);
    struct tide_bucket *bk;
    int rc;

    for (size_t i = 0; i < n_parts; i++)
        n_buckets += i == 0 || p[i].bucket != p[i - 1].bucket;
    rc = tide__buf_reserve(&a->buckets, n_buckets * sizeof(*bk));
    if (rc)
        return rc;
    bk = (struct tide_bucket *)(void *)(a->buckets.data + a->buckets.len);
    memset(bk, 0, n_buckets * sizeof(*bk));
    a->buckets.len += n_buckets * sizeof(*bk);
    a->boff[out - a->res] = off;
    for (size_t i = 0; i < n_parts; i++) {
        struct tide_bucket *b;
        int64_t start;

        if (i == 0 || p[i].bucket != p[i - 1].bucket) {
            b = &bk[out->n_buckets++];
            b->start_ns =
                a->bucket_ns
                    ? (int64_t)((uint64_t)a->from +
                                (uint64_t)p[i].bucket * (uint64_t)a->bucket_ns)
                    : a->from;
        } else {
            b = &bk[out->n_buckets - 1];
        }
        start = b->start_ns;
        merge_bucket(b, &p[i].b);
        b->start_ns = start;
    }
    return 0;
}

/* The result of a series whose chunks are all answered from headers, in
 * time order with no overlap: chunk statistics fold straight into the
 * bucket arena, with no partials to build or sort. */
static int emit_headers(struct agg_ctx *a, const struct chunk_ref *refs,
                        size_t n_refs, struct tide_agg_series *out)
{
    size_t n_buckets = 0, off = a->buckets.len / sizeof(struct tide_bucket);
    struct tide_bucket *bk;
    int64_t prev = 0;
    int rc;

    for (size_t i = 0; i < n_refs; i++) {
        int64_t bucket = bucket_of(a, refs[i].e->min_ts);

        n_buckets += i == 0 || bucket != prev;
        prev = bucket;
    }
    rc = tide__buf_reserve(&a->buckets, n_buckets * sizeof(*bk));
    if (rc)
        return rc;
    bk = (struct tide_bucket *)(void *)(a->buckets.data + a->buckets.len);
    memset(bk, 0, n_buckets * sizeof(*bk));
    a->buckets.len += n_buckets * sizeof(*bk);
    a->boff[out - a->res] = off;
    for (size_t i = 0; i < n_refs; i++) {
        const struct chunk_ent *e = refs[i].e;
        int64_t bucket = bucket_of(a, e->min_ts);
        struct tide_bucket q = {.count = e->count,
                                .sum = e->sum,
                                .min = e->min,
                                .max = e->max,
                                .first = value_double(e->type, e->first),
                                .last = value_double(e->type, e->last),
                                .first_ts = e->min_ts,
                                .last_ts = e->max_ts};
        struct tide_bucket *b;

        if (i == 0 || bucket != prev) {
            b = &bk[out->n_buckets++];
            b->start_ns =
                a->bucket_ns
                    ? (int64_t)((uint64_t)a->from +
                                (uint64_t)bucket * (uint64_t)a->bucket_ns)
                    : a->from;
        } else {
            b = &bk[out->n_buckets - 1];
        }
        prev = bucket;
        q.start_ns = b->start_ns;
        merge_bucket(b, &q);
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

/* Plan series ids[idx]: chunks that overlap nothing else and fit one
 * bucket are answered from their headers. When nothing else is left the
 * result is made now; otherwise the series joins the batch. */
static int aggregate_plan(struct tide_db *db, struct gather *g, uint64_t id,
                          uint32_t idx, struct agg_ctx *a, struct cursors *cur,
                          struct tide_agg_series *out, struct agg_batch *batch,
                          struct tide_agg_stats *st)
{
    struct chunk_ref *refs;
    size_t n_refs, n_rest = 0, n_parts;
    struct agg_pending pend;
    uint8_t head_type;
    int ordered, head_overlap, rc;

    out->series_id = id;
    rc = collect_refs(db, g, id, a->from, a->to, cur);
    if (rc)
        return rc;
    refs = (struct chunk_ref *)(void *)g->refs.data;
    n_refs = g->refs.len / sizeof(*refs);
    head_type = head_span(db, id, &a->head_min, &a->head_max);
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
            continue;
        }
        q.bucket = bucket_of(a, e->min_ts);
        q.b = (struct tide_bucket){.count = e->count,
                                   .sum = e->sum,
                                   .min = e->min,
                                   .max = e->max,
                                   .first = value_double(e->type, e->first),
                                   .last = value_double(e->type, e->last),
                                   .first_ts = e->min_ts,
                                   .last_ts = e->max_ts};
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

/* Fetch every chunk of the batch at once, then finish each of its series
 * from its header partials, its decoded chunks and its head points. The
 * batch is empty afterwards. */
static int aggregate_batch(struct tide_db *db, struct tide_io *io,
                           struct gather *g, const uint64_t *ids,
                           struct agg_ctx *a, struct agg_batch *batch,
                           struct tide_agg_series *res,
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

    rc = read_chunks(db, io, refs, batch->refs.len / sizeof(*refs), db->n_segs,
                     &batch->payload, &batch->reqs);
    payload = batch->payload.data;
    for (size_t k = 0; k < n_pend && rc == 0; k++) {
        const struct agg_pending *p = &pend[k];
        int ordered = p->ordered;
        size_t n_parts;

        g->parts.len = 0;
        rc = tide__buf_append(&g->parts, hparts + p->part0,
                              p->n_parts * sizeof(*hparts));
        if (rc == 0)
            rc = gather_series(db, g, ids[p->idx], refs + p->ref0, p->n_refs,
                               payload, a->from, a->to, st);
        if (rc == 0)
            rc = raw_partials(g, a, &g->parts);
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
                      struct tide_agg_series **out,
                      struct tide_agg_stats *stats)
{
    struct agg_ctx a = {.from = from_ns, .to = to_ns, .bucket_ns = bucket_ns};
    struct tide_agg_series *res;
    struct agg_batch batch = {0};
    struct cursors cur = {0};
    struct gather g = {0};
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
    pthread_rwlock_rdlock(&db->seg_lock);
    rc = cursors_fit(&cur, db->n_segs);
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        rc =
            aggregate_plan(db, &g, ids[i], i, &a, &cur, &res[i], &batch, stats);
        if (rc == 0 &&
            (i + 1 == n ||
             batch.refs.len / sizeof(struct chunk_ref) >= AGG_BATCH_REFS ||
             batch.bytes >= AGG_BATCH_BYTES))
            rc = aggregate_batch(db, io, &g, ids, &a, &batch, res, stats);
    }
    pthread_rwlock_unlock(&db->seg_lock);
    tide__db_io_put(db, io);
    gather_fini(&g);
    agg_batch_fini(&batch);
    cursors_fini(&cur);
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

void tide_agg_free(struct tide_agg_series *res, uint32_t n)
{
    if (!res)
        return;
    tide_free(res[n].buckets); /* the arena holding every result's */
    tide_free(res);
}

/* ---- Latest ------------------------------------------------------------- */

/* Newest point of a head series: the last arrival at its maximum time. */
static int head_latest(const struct hseries *s, int64_t *ts, uint32_t *at)
{
    int found = 0;

    for (uint32_t i = 0; s && i < s->n; i++) {
        if (!found || s->ts[i] >= *ts) {
            *ts = s->ts[i];
            *at = i;
            found = 1;
        }
    }
    return found;
}

static int set_str(struct tide_point *p, const char *s, uint32_t len)
{
    char *copy = tide_malloc(len + 1);

    if (!copy)
        return -ENOMEM;
    if (len)
        memcpy(copy, s, len);
    copy[len] = 0;
    p->v.str.ptr = copy;
    p->v.str.len = len;
    return 0;
}

static int latest_one(struct tide_db *db, struct tide_io *io, struct gather *g,
                      uint64_t id, struct tide_point *p)
{
    struct shard *sh = &db->shards[tide__db_shard_of(db, id)];
    const struct chunk_ent *best = NULL;
    uint32_t best_seg = 0;
    const struct hseries *hs;
    int64_t ts;
    uint32_t at;
    int rc = 0;

    p->series_id = id;
    for (uint32_t i = 0; i < db->n_segs; i++) {
        uint32_t lo, hi;

        tide__seg_find(db->segs[i], id, &lo, &hi);
        for (uint32_t c = lo; c < hi; c++)
            if (!best || db->segs[i]->chunks[c].max_ts >= best->max_ts) {
                best = &db->segs[i]->chunks[c];
                best_seg = i;
            }
    }
    pthread_rwlock_rdlock(&sh->rw);
    for (int k = 0; k < 2; k++) {
        hs = tide__head_find(k            ? &sh->head
                             : sh->frozen ? sh->frozen
                                          : &sh->head,
                             id);
        if (!head_latest(hs, &ts, &at) || (p->found && ts < p->ts_ns) ||
            (best && ts < best->max_ts))
            continue;
        if (p->found && p->type == TIDE_TYPE_STR) {
            tide_free((void *)p->v.str.ptr);
            p->v.str.ptr = NULL; /* set_str may fail below */
        }
        p->found = 1;
        p->type = hs->type;
        p->ts_ns = ts;
        if (hs->type == TIDE_TYPE_STR)
            rc = set_str(p, hs->str[at].ptr, hs->str[at].len);
        else
            memcpy(&p->v, &hs->val[at], 8);
    }
    pthread_rwlock_unlock(&sh->rw);
    if (rc || p->found || !best)
        return rc;
    p->found = 1;
    p->type = best->type;
    p->ts_ns = best->max_ts;
    if (best->type == TIDE_TYPE_BOOL)
        p->v.b = (uint8_t)best->last;
    else if (best->type != TIDE_TYPE_STR)
        memcpy(&p->v, &best->last, 8);
    else {
        /* Strings are not in the header: decode the chunk. */
        struct chunk_ref r = {db->segs[best_seg], best, best_seg, 0};

        gather_reset(g);
        g->type = TIDE_TYPE_STR;
        rc = read_chunks(db, io, &r, 1, db->n_segs, &g->payload, &g->reqs);
        if (rc == 0)
            rc = decode_chunks(db, g, &r, 1, g->payload.data, best->max_ts,
                               best->max_ts + 1, NULL);
        if (rc == 0 && g->n)
            rc = set_str(p, (const char *)g->strbytes.data + g_val(g)[0],
                         g_len(g)[0]);
    }
    return rc;
}

int tide_db_latest(tide_db *db, const uint64_t *ids, uint32_t n,
                   struct tide_point **out)
{
    struct tide_point *pts;
    struct gather g = {0};
    struct tide_io *io;
    int rc;

    if (atomic_load(&db->closing))
        return TIDE_ECLOSED;
    if (n && !ids)
        return TIDE_EINVAL;
    pts = tide_calloc((size_t)n + 1, sizeof(*pts));
    if (!pts)
        return -ENOMEM;
    rc = tide__db_io_get(db, &io);
    if (rc) {
        tide_free(pts);
        return rc;
    }
    pthread_rwlock_rdlock(&db->seg_lock);
    for (uint32_t i = 0; i < n && rc == 0; i++)
        rc = latest_one(db, io, &g, ids[i], &pts[i]);
    pthread_rwlock_unlock(&db->seg_lock);
    tide__db_io_put(db, io);
    gather_fini(&g);
    if (rc) {
        tide_latest_free(pts, n);
        return rc;
    }
    *out = pts;
    return 0;
}

void tide_latest_free(struct tide_point *pts, uint32_t n)
{
    if (!pts)
        return;
    for (uint32_t i = 0; i < n; i++)
        if (pts[i].found && pts[i].type == TIDE_TYPE_STR)
            tide_free((void *)pts[i].v.str.ptr);
    tide_free(pts);
}
