/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine's public reads of points: range iterators and latest values.
 * For each series the sources are the segments (oldest first), then the
 * frozen head, then the active head; points are gathered in that order,
 * ordered by time, and a repeated timestamp keeps the newest source's
 * value (last write wins). Aggregates are in db_aggregate.c.
 */
#include "read.h"

#include <errno.h>
#include <string.h>

#define BLOCK_POINTS_MAX 65536u

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
    uint8_t sliced;   /* too large: read in slices, no refs planned */
};

/* Chunk reads of ids[first .. first + n), planned on segment list `sl`,
 * which the read-ahead holds so that its chunk references stay valid. They
 * are used while reading the heads finds `sl` fresh (invariant 2): then no
 * point of the series has left the heads for a segment `sl` lacks. */
struct readahead {
    struct seglist *sl; /* held, or NULL */
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
    int desc; /* TIDE_READ_DESC */
    int err;
    uint64_t cur_id;
    uint32_t off; /* points of the current series returned */
    struct gather g;
    struct cursors cur;
    struct readahead ra;
    struct tide_buf strs; /* struct tide_str[] of the current block */
    /* A series read in slices: slice k is [cuts[k], cuts[k + 1]), read
     * in order (descending: from the last) on the read-ahead's list. */
    struct tide_buf cuts; /* int64_t[n_slices + 1] */
    uint32_t n_slices;    /* of the current series; 0: read whole */
    uint32_t slices_done;
};

/* Read the next slice of the current series (see struct tide_iter) into
 * it->g, on the read-ahead's list, taking the current list and reading
 * the slice again when that one turned stale. */
static int slice_read(struct tide_iter *it)
{
    struct readahead *ra = &it->ra;
    uint32_t k =
        it->desc ? it->n_slices - 1 - it->slices_done : it->slices_done;
    const int64_t *cuts = (const int64_t *)(void *)it->cuts.data;
    int64_t lo = cuts[k], hi = cuts[k + 1];
    int rc;

    it->slices_done++;
    do {
        struct chunk_ref *refs;
        size_t n;

        rc = tide__segment_read_cursors_fit(&it->cur, ra->sl->n);
        if (rc == 0)
            rc = tide__segment_read_collect(it->db, ra->sl, &it->g, it->cur_id,
                                            lo, hi, &it->cur);
        if (rc)
            break;
        refs = (struct chunk_ref *)(void *)it->g.refs.data;
        n = it->g.refs.len / sizeof(*refs);
        rc = tide__segment_read_chunks(it->db, it->io, refs, n, ra->sl->n,
                                       &it->g.payload, &it->g.reqs);
        if (rc == 0)
            rc = tide__shard_read_series(it->db, ra->sl, &it->g, it->cur_id,
                                         refs, n, it->g.payload.data, lo, hi,
                                         NULL);
        if (rc == TIDE__READ_STALE) {
            /* The read-ahead's chunks were planned on the old list. */
            ra->n = 0;
            tide__seglist_release(ra->sl);
            ra->sl = tide__seglist_acquire(it->db);
        }
    } while (rc == TIDE__READ_STALE);
    TIDE_ASSERT(rc <= 0);
    return rc;
}

/* Plan and read the chunks of ids[first..] (see struct readahead) on the
 * current segment list. */
static int ra_fill(struct tide_iter *it, uint32_t first)
{
    struct readahead *ra = &it->ra;
    size_t bytes = 0;
    uint64_t points;
    int rc;

    tide__seglist_release(ra->sl);
    ra->sl = tide__seglist_acquire(it->db);
    rc = tide__segment_read_cursors_fit(&it->cur, ra->sl->n);
    ra->first = first;
    ra->n = 0;
    ra->spans.len = ra->refs.len = 0;
    for (uint32_t j = first; j < it->n_ids && rc == 0; j++) {
        const struct chunk_ref *refs;
        struct ra_span sp;

        rc = tide__segment_read_collect(it->db, ra->sl, &it->g, it->ids[j],
                                        it->from, it->to, &it->cur);
        if (rc)
            break;
        refs = (const struct chunk_ref *)(void *)it->g.refs.data;
        sp = (struct ra_span){.ref0 = (uint32_t)(ra->refs.len / sizeof(*refs)),
                              .n_refs =
                                  (uint32_t)(it->g.refs.len / sizeof(*refs)),
                              .seg_type = it->g.seg_type};
        points = 0;
        for (uint32_t k = 0; k < sp.n_refs; k++)
            points += refs[k].e->count;
        if (points <= TIDE__SLICE_POINTS)
            points += tide__shard_read_head_points(it->db, it->ids[j]);
        if (points > TIDE__SLICE_POINTS) {
            /* A large series is read alone, in slices: it ends the
             * read-ahead before it, or is its only series. */
            if (ra->n)
                break;
            /* Read in slices (TIDE__SLICE_POINTS), from none yet. */
            rc = tide__shard_read_slices(it->db, it->ids[j], refs, sp.n_refs,
                                         it->from, it->to, &it->cuts);
            it->n_slices =
                rc ? 0 : (uint32_t)(it->cuts.len / sizeof(int64_t) - 1);
            it->slices_done = 0;
            sp.n_refs = 0;
            sp.sliced = 1;
            if (rc == 0)
                rc = tide__buf_append(&ra->spans, &sp, sizeof(sp));
            ra->n = rc ? 0 : 1;
            return rc;
        }
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
        rc = tide__segment_read_chunks(
            it->db, it->io, (struct chunk_ref *)(void *)ra->refs.data,
            ra->refs.len / sizeof(struct chunk_ref), ra->sl->n, &ra->payload,
            &ra->reqs);
    if (rc)
        ra->n = 0;
    return rc;
}

/* Gather series ids[idx] from the read-ahead, refilled when it does not
 * hold that series or its segment list turned stale. No lock is held
 * across the chunk I/O. */
static int iter_gather(struct tide_iter *it, uint32_t idx)
{
    struct readahead *ra = &it->ra;
    const struct ra_span *sp;
    int rc;

    do {
        rc = 0;
        if (!ra->sl || idx < ra->first || idx - ra->first >= ra->n)
            rc = ra_fill(it, idx);
        if (rc)
            break;
        sp = (const struct ra_span *)(void *)ra->spans.data + (idx - ra->first);
        if (sp->sliced) {
            /* Its slices are read by tide_iter_next(), from none yet. */
            tide__gather_reset(&it->g);
            break;
        }
        it->g.seg_type = sp->seg_type;
        rc = tide__shard_read_series(
            it->db, ra->sl, &it->g, it->ids[idx],
            (const struct chunk_ref *)(void *)ra->refs.data + sp->ref0,
            sp->n_refs, ra->payload.data, it->from, it->to, NULL);
        if (rc == TIDE__READ_STALE)
            ra->n = 0; /* plan again on the list now published */
    } while (rc == TIDE__READ_STALE);
    TIDE_ASSERT(rc <= 0); /* TIDE__READ_STALE never leaves the engine */
    return rc;
}

int tide_db_read_open(tide_db *db, const uint64_t *ids, uint32_t n,
                      int64_t from_ns, int64_t to_ns, tide_iter **out)
{
    return tide_db_read_open_flags(db, ids, n, from_ns, to_ns, 0, out);
}

int tide_db_read_open_flags(tide_db *db, const uint64_t *ids, uint32_t n,
                            int64_t from_ns, int64_t to_ns, unsigned flags,
                            tide_iter **out)
{
    struct tide_iter *it;
    int rc;

    if (atomic_load(&db->closing))
        return TIDE_ECLOSED;
    if ((n && !ids) || from_ns > to_ns || (flags & ~TIDE_READ_DESC))
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
    it->desc = (flags & TIDE_READ_DESC) != 0;
    *out = it;
    return 0;
}

int tide_iter_next(tide_iter *it, struct tide_block *blk)
{
    uint32_t n, at;

    if (it->err)
        return it->err;
    while (it->off >= it->g.n) {
        int rc;

        it->off = 0;
        if (it->slices_done < it->n_slices) {
            rc = slice_read(it);
        } else {
            if (it->next_id >= it->n_ids)
                return 0;
            it->cur_id = it->ids[it->next_id];
            it->n_slices = it->slices_done = 0;
            rc = iter_gather(it, it->next_id++);
        }
        if (rc) {
            it->err = rc;
            return rc;
        }
    }
    n = it->g.n - it->off < BLOCK_POINTS_MAX ? it->g.n - it->off
                                             : BLOCK_POINTS_MAX;
    /* The block's first point: descending, blocks are taken from the end
     * of the gathered series. */
    at = it->desc ? it->g.n - it->off - n : it->off;
    blk->series_id = it->cur_id;
    blk->type = it->g.type;
    blk->n = n;
    blk->ts_ns = tide__gather_ts(&it->g) + at;
    if (it->g.type == TIDE_TYPE_STR) {
        struct tide_str *s;

        it->strs.len = 0;
        it->err = tide__buf_reserve(&it->strs, (size_t)n * sizeof(*s));
        if (it->err)
            return it->err;
        s = (struct tide_str *)(void *)it->strs.data;
        for (uint32_t i = 0; i < n; i++) {
            s[i].ptr = (const char *)it->g.strbytes.data +
                       tide__gather_val(&it->g)[at + i];
            s[i].len = tide__gather_len(&it->g)[at + i];
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
            b[i] = (uint8_t)tide__gather_val(&it->g)[at + i];
        blk->v.b = b;
    } else {
        blk->v.i64 = (const int64_t *)(tide__gather_val(&it->g) + at);
    }
    it->off += n;
    return 1;
}

void tide_iter_close(tide_iter *it)
{
    if (!it)
        return;
    tide__db_io_put(it->db, it->io);
    tide__seglist_release(it->ra.sl);
    tide__gather_fini(&it->g);
    tide__segment_read_cursors_fini(&it->cur);
    tide__buf_fini(&it->ra.spans);
    tide__buf_fini(&it->ra.refs);
    tide__buf_fini(&it->ra.payload);
    tide__buf_fini(&it->ra.reqs);
    tide__buf_fini(&it->strs);
    tide__buf_fini(&it->cuts);
    tide_free(it->ids);
    tide_free(it);
}

/* ---- Latest ------------------------------------------------------------- */

/* Newest point of a head series: the last arrival at its maximum time.
 * A series written in time order (sorted: strictly ascending) has it
 * last, which answers the usual case without a scan. */
static int head_latest(const struct hseries *s, int64_t *ts, uint32_t *at)
{
    int found = 0;

    if (s && s->sorted && s->n) {
        *ts = s->ts[s->n - 1];
        *at = s->n - 1;
        return 1;
    }

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

/* The newest point of `id` from the segments of `sl` and the heads.
 * Returns 0, TIDE__READ_STALE (p is unchanged), TIDE_ECORRUPT, -ENOMEM or
 * -errno. */
static int latest_one(struct tide_db *db, const struct seglist *sl,
                      struct tide_io *io, struct gather *g, uint64_t id,
                      struct cursors *cur, struct tide_point *p)
{
    struct shard *sh = &db->shards[tide__db_shard_of(db, id)];
    const struct chunk_ent *best = NULL;
    uint32_t best_seg = 0;
    const struct hseries *hs;
    int64_t ts;
    uint32_t at;
    int rc = 0;

    p->series_id = id;
    /* Newest segment first: one whose points all end before the best
     * chunk so far cannot hold a newer one, and is not searched. Of chunks
     * ending at the same time the one in the newer segment, then the later
     * one of a segment, wins. */
    for (uint32_t i = sl->n; i-- > 0;) {
        const struct seg *seg = sl->segs[i];
        const struct chunk_ent *in = NULL;
        uint32_t lo, hi;

        if ((seg->shard_only && seg->shard != sh - db->shards) ||
            (best && seg->max_ts <= best->max_ts))
            continue;
        tide__seg_seek(seg, id, &cur->hint[i], &lo, &hi);
        for (uint32_t c = lo; c < hi; c++)
            if (!in || seg->chunks[c].max_ts >= in->max_ts)
                in = &seg->chunks[c];
        if (in && (!best || in->max_ts > best->max_ts)) {
            best = in;
            best_seg = i;
        }
    }
    pthread_rwlock_rdlock(&sh->rw);
    if (!tide__shard_read_fresh(sh, sl)) {
        pthread_rwlock_unlock(&sh->rw);
        return TIDE__READ_STALE;
    }
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
        struct chunk_ref r = {sl->segs[best_seg], best, best_seg, 0};

        tide__gather_reset(g);
        g->type = TIDE_TYPE_STR;
        rc = tide__segment_read_chunks(db, io, &r, 1, sl->n, &g->payload,
                                       &g->reqs);
        if (rc == 0)
            rc = tide__chunk_read_decode(db, g, &r, 1, g->payload.data,
                                         best->max_ts, best->max_ts + 1, NULL);
        if (rc == 0 && g->n)
            rc = set_str(
                p, (const char *)g->strbytes.data + tide__gather_val(g)[0],
                tide__gather_len(g)[0]);
    }
    return rc;
}

int tide_db_latest(tide_db *db, const uint64_t *ids, uint32_t n,
                   struct tide_point **out)
{
    struct tide_point *pts;
    struct seglist *sl;
    struct cursors cur = {0};
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
    sl = tide__seglist_acquire(db);
    rc = tide__segment_read_cursors_fit(&cur, sl->n);
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        while ((rc = latest_one(db, sl, io, &g, ids[i], &cur, &pts[i])) ==
               TIDE__READ_STALE) {
            tide__seglist_release(sl);
            sl = tide__seglist_acquire(db);
            rc = tide__segment_read_cursors_fit(&cur, sl->n);
            if (rc)
                break;
        }
    }
    tide__seglist_release(sl);
    tide__segment_read_cursors_fini(&cur);
    TIDE_ASSERT(rc <= 0);
    tide__db_io_put(db, io);
    tide__gather_fini(&g);
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
