/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The read path of a shard: the points of one series from the chunks of
 * its segments and from the shard's frozen and active heads, read under
 * the shard's lock, merged in time order with the newest source winning.
 */
#include "read.h"

#include <errno.h>
#include <stdlib.h>

#include "ts.h"

/* Append the points of `s` (a head series) within [from, to). */
static int gather_head(struct gather *g, const struct hseries *s, int64_t from,
                       int64_t to)
{
    int rc = 0;

    if (!s || s->type != g->type)
        return 0;
    if (s->sorted) {
        /* Strictly ascending: the range is one run, found by search (a
         * series read in slices visits its head once a slice). */
        uint32_t a = tide__ts_lower_bound(s->ts, s->n, from);
        uint32_t b = tide__ts_lower_bound(s->ts, s->n, to);

        return b > a ? tide__gather_append(g, s->ts, s->val, s->str, a, b) : 0;
    }
    for (uint32_t i = 0; i < s->n && rc == 0; i++) {
        uint32_t j = i;

        /* Runs of in-range points are appended together. */
        while (j < s->n && s->ts[j] >= from && s->ts[j] < to)
            j++;
        if (j > i)
            rc = tide__gather_append(g, s->ts, s->val, s->str, i, j);
        i = j;
    }
    return rc;
}

/* The type of a series: from its newest source, the head, else the
 * newest segment that tide__segment_read_collect() found it in (*type 0
 * when it has none). Returns 0 or TIDE__READ_STALE. */
static int series_type(struct tide_db *db, const struct seglist *sl,
                       const struct gather *g, uint64_t id, uint8_t *out)
{
    struct shard *sh = &db->shards[tide__db_shard_of(db, id)];
    const struct hseries *s;
    uint8_t type = 0;
    int fresh;

    pthread_rwlock_rdlock(&sh->rw);
    fresh = tide__shard_read_fresh(sh, sl);
    s = tide__head_find(&sh->head, id);
    if (!s && sh->frozen)
        s = tide__head_find(sh->frozen, id);
    if (s)
        type = s->type;
    pthread_rwlock_unlock(&sh->rw);
    *out = type ? type : g->seg_type;
    return fresh ? 0 : TIDE__READ_STALE;
}

int tide__shard_read_series(struct tide_db *db, const struct seglist *sl,
                            struct gather *g, uint64_t id,
                            const struct chunk_ref *refs, size_t n_refs,
                            const uint8_t *payload, int64_t from, int64_t to,
                            struct tide_agg_stats *st)
{
    struct shard *sh = &db->shards[tide__db_shard_of(db, id)];
    uint32_t *idx, n_out;
    int rc;

    tide__gather_reset(g);
    rc = series_type(db, sl, g, id, &g->type);
    if (rc || g->type == 0)
        return rc;
    rc = tide__chunk_read_decode(db, g, refs, n_refs, payload, from, to, st);
    if (rc)
        return rc;
    pthread_rwlock_rdlock(&sh->rw);
    if (!tide__shard_read_fresh(sh, sl))
        rc = TIDE__READ_STALE;
    if (rc == 0 && sh->frozen)
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
    rc = tide__ts_order(tide__gather_ts(g), g->n, idx, &n_out);
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
            tide__gather_ts(g)[i] = ((int64_t *)(void *)ts.data)[idx[i]];
            tide__gather_val(g)[i] = ((uint64_t *)(void *)val.data)[idx[i]];
            if (g->type == TIDE_TYPE_STR)
                tide__gather_len(g)[i] = ((uint32_t *)(void *)len.data)[idx[i]];
        }
        tide__buf_fini(&ts);
        tide__buf_fini(&val);
        tide__buf_fini(&len);
    }
    g->n = n_out;
    return 0;
}

int tide__shard_read_span(struct tide_db *db, const struct seglist *sl,
                          uint64_t id, int64_t *lo, int64_t *hi,
                          uint8_t *type_out)
{
    struct shard *sh = &db->shards[tide__db_shard_of(db, id)];
    const struct hseries *hs[2];
    uint8_t type;
    int fresh;

    *lo = INT64_MAX;
    *hi = INT64_MIN;
    pthread_rwlock_rdlock(&sh->rw);
    fresh = tide__shard_read_fresh(sh, sl);
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
    *type_out = type;
    return fresh ? 0 : TIDE__READ_STALE;
}

uint64_t tide__shard_read_head_points(struct tide_db *db, uint64_t id)
{
    struct shard *sh = &db->shards[tide__db_shard_of(db, id)];
    const struct hseries *s;
    uint64_t n = 0;

    pthread_rwlock_rdlock(&sh->rw);
    if ((s = tide__head_find(&sh->head, id)))
        n += s->n;
    if (sh->frozen && (s = tide__head_find(sh->frozen, id)))
        n += s->n;
    pthread_rwlock_unlock(&sh->rw);
    return n;
}

/* A time and the points starting there, for cutting a series into
 * slices: a chunk's start and count, or a bin of the head's points. */
struct slice_ent {
    int64_t ts;
    uint64_t count;
};

static int cmp_slice_ent(const void *x, const void *y)
{
    const struct slice_ent *a = x, *b = y;

    return a->ts < b->ts ? -1 : a->ts > b->ts;
}

/* Bins of the head points of `id` in [from, to): the heads are in arrival
 * order, so their times are counted in even bins over their span, 16 a
 * slice's worth of points (at most 65536), appended to `ents`. */
static int head_bins(struct tide_db *db, uint64_t id, int64_t from, int64_t to,
                     struct tide_buf *ents)
{
    struct shard *sh = &db->shards[tide__db_shard_of(db, id)];
    const struct hseries *hs[2];
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    uint64_t n = 0, n_bins, width, *bins = NULL;
    int rc = 0;

    pthread_rwlock_rdlock(&sh->rw);
    hs[0] = tide__head_find(&sh->head, id);
    hs[1] = sh->frozen ? tide__head_find(sh->frozen, id) : NULL;
    for (int k = 0; k < 2; k++)
        for (uint32_t i = 0; hs[k] && i < hs[k]->n; i++) {
            int64_t t = hs[k]->ts[i];

            if (t < from || t >= to)
                continue;
            n++;
            lo = t < lo ? t : lo;
            hi = t > hi ? t : hi;
        }
    n_bins = 16 * n / TIDE__SLICE_POINTS + 1;
    if (n_bins > 65536)
        n_bins = 65536;
    width = ((uint64_t)hi - (uint64_t)lo) / n_bins + 1;
    if (n)
        bins = tide_calloc(n_bins, sizeof(*bins));
    if (n && !bins)
        rc = -ENOMEM;
    for (int k = 0; k < 2 && bins; k++)
        for (uint32_t i = 0; hs[k] && i < hs[k]->n; i++) {
            int64_t t = hs[k]->ts[i];

            if (t >= from && t < to)
                bins[((uint64_t)t - (uint64_t)lo) / width]++;
        }
    pthread_rwlock_unlock(&sh->rw);
    for (uint64_t k = 0; bins && k < n_bins && rc == 0; k++) {
        struct slice_ent e = {(int64_t)((uint64_t)lo + k * width), bins[k]};

        if (e.count)
            rc = tide__buf_append(ents, &e, sizeof(e));
    }
    tide_free(bins);
    return rc;
}

int tide__shard_read_slices(struct tide_db *db, uint64_t id,
                            const struct chunk_ref *refs, size_t n,
                            int64_t from, int64_t to, struct tide_buf *cuts)
{
    struct tide_buf ents = {0};
    const struct slice_ent *e;
    size_t n_ents;
    int64_t cut = from;
    uint64_t acc = 0;
    int rc = tide__buf_reserve(&ents, n * sizeof(*e));

    for (size_t i = 0; i < n && rc == 0; i++) {
        struct slice_ent x = {refs[i].e->min_ts, refs[i].e->count};

        rc = tide__buf_append(&ents, &x, sizeof(x));
    }
    if (rc == 0)
        rc = head_bins(db, id, from, to, &ents);
    e = (const struct slice_ent *)(void *)ents.data;
    n_ents = ents.len / sizeof(*e);
    if (rc == 0)
        qsort(ents.data, n_ents, sizeof(*e), cmp_slice_ent);
    cuts->len = 0;
    if (rc == 0)
        rc = tide__buf_append(cuts, &cut, sizeof(cut));
    for (size_t i = 0; i < n_ents && rc == 0; i++) {
        if (acc && acc + e[i].count > TIDE__SLICE_POINTS && e[i].ts > cut &&
            e[i].ts < to) {
            cut = e[i].ts;
            acc = 0;
            rc = tide__buf_append(cuts, &cut, sizeof(cut));
        }
        acc += e[i].count;
    }
    if (rc == 0)
        rc = tide__buf_append(cuts, &to, sizeof(to));
    tide__buf_fini(&ents);
    return rc;
}
