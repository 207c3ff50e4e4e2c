/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One compaction job (compact.h): the series of a set of segments, read a
 * batch at a time, merged oldest segment first with the last write of a
 * (series, ts) winning, cut by the policy's horizon and written again in
 * full chunks, one output segment per window (or more, past
 * TIDE__COMPACT_SEG_BYTES). A series the policy erases, and chunks wholly
 * behind its horizon, are never read.
 */
#include "compact.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "read.h"
#include <xxhash.h>
#include "ts.h"
#include "window.h"

/* Payload bytes read per batch of series. */
#define BATCH_BYTES (8u << 20)

/* A chunk of an input: which input, which chunk. */
struct src {
    uint64_t series_id;
    uint32_t inp;
    uint32_t chunk;
};

/* A series of the current batch: its refs in job->refs. */
struct ser {
    uint64_t id;
    uint64_t account_id;
    int64_t keep_from;
    size_t first, n;
};

struct out {
    int64_t win;          /* window index */
    struct seg_writer *w; /* open, or NULL once finished */
};

struct job {
    struct tide_db *db;
    struct seg *const *in;
    uint32_t n_in;
    int64_t win_ns;
    compact_pace_fn pace;
    struct compact_counts *cnt;
    struct tide_io *io;
    int hooked;              /* TIDE__COMPACT_AT_TMP was reported */
    struct tide_buf outs;    /* struct out[] */
    struct tide_buf done;    /* struct seg *[]: finished outputs */
    struct tide_buf refs;    /* struct chunk_ref[] of the batch */
    struct tide_buf sers;    /* struct ser[] of the batch */
    struct tide_buf payload; /* the batch's chunk payloads */
    struct tide_buf reqbuf;
    struct tide_buf ts, vals, strs, arena, idx, ts2, vals2, strs2, k, k2;
};

void (*tide__compact_hook)(enum tide_compact_step step);

void tide__compact_step(enum tide_compact_step step)
{
    if (tide__compact_hook)
        tide__compact_hook(step);
}

static int cmp_src(const void *a, const void *b)
{
    const struct src *x = a, *y = b;

    if (x->series_id != y->series_id)
        return x->series_id < y->series_id ? -1 : 1;
    if (x->inp != y->inp)
        return x->inp < y->inp ? -1 : 1;
    return x->chunk < y->chunk ? -1 : x->chunk > y->chunk;
}

/* The writer of window `win`, opened when there is none. */
static int writer_of(struct job *j, int64_t win, struct seg_writer **out)
{
    struct out *o = (struct out *)(void *)j->outs.data;
    size_t n = j->outs.len / sizeof(*o);
    struct out fresh = {win, NULL};
    uint64_t id;
    int rc;

    for (size_t i = 0; i < n; i++)
        if (o[i].win == win && o[i].w) {
            *out = o[i].w;
            return 0;
        }
    pthread_mutex_lock(&j->db->man_mu);
    id = j->db->man.next_seg_id++;
    pthread_mutex_unlock(&j->db->man_mu);
    rc = tide__segw_open(j->db->seg_dir, id, j->in[0]->shard, j->in[0]->tier,
                         j->io, j->db->keys, &fresh.w);
    if (rc)
        return rc;
    rc = tide__buf_append(&j->outs, &fresh, sizeof(fresh));
    if (rc) {
        tide__segw_abort(fresh.w);
        return rc;
    }
    *out = fresh.w;
    return 0;
}

/* Finish output `o`: durable, renamed, opened, in j->done. */
static int finish(struct job *j, struct out *o)
{
    struct seg_writer *w = o->w;
    struct seg *seg = NULL;
    char *path = NULL;
    int rc;

    o->w = NULL;
    if (!j->hooked) {
        j->hooked = 1;
        tide__compact_step(TIDE__COMPACT_AT_TMP);
    }
    j->cnt->bytes_written += tide__segw_bytes(w);
    rc = j->pace(j->db, tide__segw_bytes(w));
    if (rc) {
        tide__segw_abort(w);
        return rc;
    }
    rc = tide__segw_finish(w, &path);
    if (rc == 0)
        rc = tide__seg_open(path, j->db->keys, &seg);
    if (rc == 0) {
        seg->level = 1;
        rc = tide__buf_append(&j->done, &seg, sizeof(seg));
    }
    if (rc) {
        if (path)
            unlink(path);
        tide__seg_close(seg);
    }
    tide_free(path);
    return rc;
}

/* Write points [0, n) of one series, sorted and unique, in full chunks
 * cut at window boundaries. */
static int emit(struct job *j, const struct ser *s, uint8_t type, uint32_t n,
                const int64_t *ts, const uint64_t *vals,
                const struct tide_str *strs, const int64_t *k, int exp)
{
    uint32_t a = 0, max = j->db->o.chunk_points_max;
    int rc = 0;

    while (a < n && rc == 0) {
        int64_t win = tide__floor_div(ts[a], j->win_ns), start, end;
        struct seg_writer *w;
        uint32_t b;

        tide__window_bounds((struct window){j->in[0]->tier, win}, j->win_ns,
                            &start, &end);
        b = end == INT64_MAX ? n : a + tide__ts_lower_bound(ts + a, n - a, end);
        rc = writer_of(j, win, &w);
        while (rc == 0 && a < b) {
            uint32_t m = b - a < max ? b - a : max;

            rc = k ? tide__segw_add_dec(w, s->id, s->account_id, m, ts + a,
                                        vals + a, k + a, (unsigned)exp)
                   : tide__segw_add(w, s->id, s->account_id, type, m, ts + a,
                                    vals ? vals + a : NULL,
                                    strs ? strs + a : NULL);
            a += m;
        }
    }
    return rc;
}

/* Outputs past the size bound are finished between series. */
static int finish_full(struct job *j)
{
    struct out *o = (struct out *)(void *)j->outs.data;
    size_t n = j->outs.len / sizeof(*o);
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i++)
        if (o[i].w && tide__segw_bytes(o[i].w) >= TIDE__COMPACT_SEG_BYTES)
            rc = finish(j, &o[i]);
    return rc;
}

/* Can the chunks of `s` be copied as they are? When they follow each
 * other in time (no merge), the horizon cuts none, each lies in one
 * window, and each is full, or the series' only one: re-cutting would
 * gain nothing. Erasure and expiry passes mostly copy. */
static int copyable(const struct job *j, const struct ser *s,
                    const struct chunk_ref *refs)
{
    uint32_t half = j->db->o.chunk_points_max / 2;

    for (size_t i = 0; i < s->n; i++) {
        const struct chunk_ent *e = refs[i].e;

        if ((s->keep_from != TIDE_KEEP_ALL && e->min_ts < s->keep_from) ||
            tide__floor_div(e->min_ts, j->win_ns) !=
                tide__floor_div(e->max_ts, j->win_ns) ||
            (s->n > 1 && e->count < half) || e->type != refs[0].e->type ||
            (i > 0 && e->min_ts <= refs[i - 1].e->max_ts))
            return 0;
    }
    return 1;
}

/* Copy the chunks of `s` after checking their checksums. */
static int copy_series(struct job *j, const struct ser *s,
                       const struct chunk_ref *refs)
{
    int rc = 0;

    for (size_t i = 0; i < s->n && rc == 0; i++) {
        const struct chunk_ent *e = refs[i].e;
        const uint8_t *p = j->payload.data + refs[i].pos;
        struct seg_writer *w;

        if (XXH3_64bits(p, e->stored_bytes) != e->hash) {
            tide__chunk_read_log_corrupt(j->db, &refs[i]);
            return TIDE_ECORRUPT;
        }
        rc = writer_of(j, tide__floor_div(e->min_ts, j->win_ns), &w);
        if (rc == 0)
            rc = tide__segw_add_raw(w, e, p);
    }
    return rc;
}

/* Bring the integers of a chunk just decoded, k[n, n + m) at exponent e_i,
 * and those before it, k[0, n) at *exp, to one exponent: the larger, by
 * exact multiplication. Returns 0 when there is none (an XOR column, or an
 * integer past 2^53), else 1 with *exp set. */
static int same_exponent(int64_t *k, uint32_t n, uint32_t m, int *exp, int e_i)
{
    static const int64_t p10[] = {1,         10,        100,     1000,
                                  10000,     100000,    1000000, 10000000,
                                  100000000, 1000000000};
    const int64_t lim = 9007199254740992ll; /* 2^53 */
    int64_t *from = k + n, mul;
    uint32_t cnt = m;

    if (e_i < 0)
        return 0;
    if (n == 0 || e_i == *exp) {
        *exp = n == 0 ? e_i : *exp;
        return 1;
    }
    if (e_i > *exp) { /* scale what came before */
        mul = p10[e_i - *exp];
        from = k;
        cnt = n;
        *exp = e_i;
    } else {
        mul = p10[*exp - e_i];
    }
    for (uint32_t x = 0; x < cnt; x++) {
        if (from[x] > lim / mul || from[x] < -lim / mul)
            return 0;
        from[x] *= mul;
    }
    return 1;
}

/* Merge, de-duplicate, cut by the horizon and write series `s`. */
static int rewrite_series(struct job *j, const struct ser *s)
{
    struct chunk_ref *refs =
        (struct chunk_ref *)(void *)j->refs.data + s->first;
    uint8_t type = refs[s->n - 1].e->type; /* the newest chunk's */
    uint64_t total = 0;
    uint32_t n = 0, kept, lo;
    int sorted = 1, rc, exp = type == TIDE_TYPE_F64 ? 0 : -1;
    int64_t *ts, *k = NULL;
    uint64_t *vals = NULL;
    struct tide_str *strs = NULL;

    if (copyable(j, s, refs))
        return copy_series(j, s, refs);
    for (size_t i = 0; i < s->n; i++)
        if (refs[i].e->type == type)
            total += refs[i].e->count;
    if (total > UINT32_MAX / 8)
        return -ENOMEM;
    j->ts.len = j->vals.len = j->strs.len = j->arena.len = 0;
    if ((rc = tide__buf_reserve(&j->ts, total * 8 + 8)) ||
        (rc = tide__buf_reserve(&j->vals, total * 8 + 8)) ||
        (type == TIDE_TYPE_STR &&
         (rc = tide__buf_reserve(&j->strs,
                                 (total + 1) * sizeof(struct tide_str)))) ||
        (exp >= 0 && (rc = tide__buf_reserve(&j->k, total * 8 + 8))))
        return rc;
    if (exp >= 0)
        k = (int64_t *)(void *)j->k.data;
    ts = (int64_t *)(void *)j->ts.data;
    vals = (uint64_t *)(void *)j->vals.data;
    strs = (struct tide_str *)(void *)j->strs.data;
    for (size_t i = 0; i < s->n; i++) {
        const struct chunk_ent *e = refs[i].e;

        if (e->type != type) {
            tide__db_log(j->db, TIDE_LOG_WARN,
                         "compaction: series %llu has a %u chunk in %s where "
                         "its type is %u; the chunk is dropped",
                         (unsigned long long)s->id, e->type, refs[i].seg->path,
                         type);
            continue;
        }
        if (k) {
            int e_i;

            rc = tide__chunk_decode_f64_k(e, j->payload.data + refs[i].pos,
                                          e->stored_bytes, ts + n, vals + n,
                                          k + n, &e_i);
            if (rc == 0 && !same_exponent(k, n, e->count, &exp, e_i))
                k = NULL; /* XOR, or integers too large at one exponent */
        } else {
            rc = tide__chunk_decode(e, j->payload.data + refs[i].pos,
                                    e->stored_bytes, ts + n, vals + n,
                                    strs ? strs + n : NULL, &j->arena);
        }
        if (rc) {
            tide__chunk_read_log_corrupt(j->db, &refs[i]);
            return rc;
        }
        /* Strings point into the arena, which later chunks may move:
         * keep offsets until every chunk is decoded. */
        for (uint32_t x = 0; strs && x < e->count; x++)
            strs[n + x].ptr =
                (const char *)(uintptr_t)(strs[n + x].ptr -
                                          (const char *)j->arena.data);
        if (n && ts[n] <= ts[n - 1])
            sorted = 0;
        n += e->count;
    }
    for (uint32_t x = 0; strs && x < n; x++)
        strs[x].ptr = (const char *)j->arena.data + (uintptr_t)strs[x].ptr;
    if (!sorted) {
        uint32_t *idx;
        int64_t *t2, *k2 = NULL;
        uint64_t *v2;
        struct tide_str *s2 = NULL;

        j->idx.len = j->ts2.len = j->vals2.len = j->strs2.len = 0;
        if ((rc = tide__buf_reserve(&j->idx, (size_t)n * 4 + 4)) ||
            (rc = tide__buf_reserve(&j->ts2, (size_t)n * 8 + 8)) ||
            (rc = tide__buf_reserve(&j->vals2, (size_t)n * 8 + 8)) ||
            (strs && (rc = tide__buf_reserve(&j->strs2,
                                             ((size_t)n + 1) * sizeof(*s2)))))
            return rc;
        idx = (uint32_t *)(void *)j->idx.data;
        t2 = (int64_t *)(void *)j->ts2.data;
        v2 = (uint64_t *)(void *)j->vals2.data;
        if (strs)
            s2 = (struct tide_str *)(void *)j->strs2.data;
        if (k) {
            j->k2.len = 0;
            rc = tide__buf_reserve(&j->k2, (size_t)n * 8 + 8);
            if (rc)
                return rc;
            k2 = (int64_t *)(void *)j->k2.data;
        }
        /* Sources oldest first: the newest write of a timestamp wins. */
        rc = tide__ts_order(ts, n, idx, &kept);
        if (rc)
            return rc;
        for (uint32_t x = 0; x < kept; x++) {
            t2[x] = ts[idx[x]];
            v2[x] = vals[idx[x]];
            if (s2)
                s2[x] = strs[idx[x]];
            if (k2)
                k2[x] = k[idx[x]];
        }
        j->cnt->points_deduplicated += n - kept;
        ts = t2;
        vals = v2;
        strs = s2;
        k = k2;
        n = kept;
    }
    lo = s->keep_from == TIDE_KEEP_ALL
             ? 0
             : tide__ts_lower_bound(ts, n, s->keep_from);
    j->cnt->points_expired += lo;
    if (lo == n)
        return 0;
    return emit(
        j, s, type, n - lo, ts + lo, type == TIDE_TYPE_STR ? NULL : vals + lo,
        type == TIDE_TYPE_STR ? strs + lo : NULL, k ? k + lo : NULL, exp);
}

/* Read the batch's chunks and rewrite its series. */
static int run_batch(struct job *j)
{
    struct ser *s = (struct ser *)(void *)j->sers.data;
    size_t n_sers = j->sers.len / sizeof(*s), n_refs;
    int rc = 0;

    n_refs = j->refs.len / sizeof(struct chunk_ref);
    if (n_refs) {
        rc = tide__segment_read_chunks(
            j->db, j->io, (struct chunk_ref *)(void *)j->refs.data, n_refs,
            j->n_in, &j->payload, &j->reqbuf);
        if (rc == 0) {
            uint64_t bytes = 0;

            for (size_t i = 0; i < n_refs; i++)
                bytes += ((struct chunk_ref *)(void *)j->refs.data)[i]
                             .e->stored_bytes;
            j->cnt->bytes_read += bytes;
            rc = j->pace(j->db, bytes);
        }
    }
    for (size_t i = 0; i < n_sers && rc == 0; i++) {
        rc = rewrite_series(j, &s[i]);
        if (rc == 0)
            rc = finish_full(j);
    }
    j->refs.len = j->sers.len = 0;
    return rc;
}

/* Queue series srcs[a, b) (one id) into the batch, without the chunks the
 * policy drops. Returns the payload bytes it adds through *bytes. */
static int add_series(struct job *j, const struct src *srcs, size_t a, size_t b,
                      size_t *bytes)
{
    const struct chunk_ent *e0 = &j->in[srcs[a].inp]->chunks[srcs[a].chunk];
    struct ser s = {e0->series_id, e0->account_id, 0,
                    j->refs.len / sizeof(struct chunk_ref), 0};
    int rc;

    s.keep_from = tide__compact_keep_from(j->db, s.account_id, s.id);
    for (size_t i = a; i < b; i++) {
        struct seg *seg = j->in[srcs[i].inp];
        const struct chunk_ent *e = &seg->chunks[srcs[i].chunk];
        struct chunk_ref r = {seg, e, srcs[i].inp, 0};

        if (s.keep_from == TIDE_KEEP_NONE) {
            j->cnt->points_erased += e->count;
            continue;
        }
        if (s.keep_from != TIDE_KEEP_ALL && e->max_ts < s.keep_from) {
            j->cnt->points_expired += e->count;
            continue;
        }
        rc = tide__buf_append(&j->refs, &r, sizeof(r));
        if (rc)
            return rc;
        s.n++;
        *bytes += e->stored_bytes;
    }
    return s.n ? tide__buf_append(&j->sers, &s, sizeof(s)) : 0;
}

static void job_fini(struct job *j, int failed)
{
    struct out *o = (struct out *)(void *)j->outs.data;
    struct seg **d = (struct seg **)(void *)j->done.data;

    for (size_t i = 0; i < j->outs.len / sizeof(*o); i++)
        if (o[i].w)
            tide__segw_abort(o[i].w);
    for (size_t i = 0; failed && i < j->done.len / sizeof(*d); i++) {
        unlink(d[i]->path);
        tide__seg_close(d[i]);
    }
    if (failed)
        tide__buf_fini(&j->done);
    tide__buf_fini(&j->outs);
    tide__buf_fini(&j->refs);
    tide__buf_fini(&j->sers);
    tide__buf_fini(&j->payload);
    tide__buf_fini(&j->reqbuf);
    tide__buf_fini(&j->ts);
    tide__buf_fini(&j->vals);
    tide__buf_fini(&j->strs);
    tide__buf_fini(&j->arena);
    tide__buf_fini(&j->idx);
    tide__buf_fini(&j->ts2);
    tide__buf_fini(&j->vals2);
    tide__buf_fini(&j->strs2);
    tide__buf_fini(&j->k);
    tide__buf_fini(&j->k2);
    if (j->io)
        tide__db_io_put(j->db, j->io);
}

int tide__compact_rewrite(struct tide_db *db, struct seg *const *in, uint32_t n,
                          int64_t win_ns, compact_pace_fn pace,
                          struct compact_counts *cnt, struct seg ***out,
                          uint32_t *n_out)
{
    struct job j = {.db = db,
                    .in = in,
                    .n_in = n,
                    .win_ns = win_ns,
                    .pace = pace,
                    .cnt = cnt};
    struct tide_buf srcs = {0};
    struct src *sv;
    size_t n_src = 0, bytes = 0;
    int rc;

    *out = NULL;
    *n_out = 0;
    rc = tide__db_io_get(db, &j.io);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < n; i++)
        n_src += in[i]->n_chunks;
    rc = tide__buf_reserve(&srcs, (n_src + 1) * sizeof(*sv));
    if (rc)
        goto out;
    sv = (struct src *)(void *)srcs.data;
    n_src = 0;
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t c = 0; c < in[i]->n_chunks; c++)
            sv[n_src++] = (struct src){in[i]->chunks[c].series_id, i, c};
    qsort(sv, n_src, sizeof(*sv), cmp_src);
    for (size_t a = 0, b; a < n_src && rc == 0; a = b) {
        for (b = a + 1; b < n_src && sv[b].series_id == sv[a].series_id; b++)
            ;
        rc = add_series(&j, sv, a, b, &bytes);
        if (rc == 0 && bytes >= BATCH_BYTES) {
            rc = run_batch(&j);
            bytes = 0;
        }
    }
    if (rc == 0)
        rc = run_batch(&j);
    for (size_t i = 0; rc == 0 && i < j.outs.len / sizeof(struct out); i++) {
        struct out *o = (struct out *)(void *)j.outs.data + i;

        if (o->w)
            rc = finish(&j, o);
    }
    if (rc == 0) {
        tide__compact_step(TIDE__COMPACT_AT_RENAMED);
        *n_out = (uint32_t)(j.done.len / sizeof(struct seg *));
        *out = (struct seg **)(void *)j.done.data;
        j.done = (struct tide_buf){0};
    }
out:
    job_fini(&j, rc != 0);
    tide__buf_fini(&srcs);
    return rc;
}
