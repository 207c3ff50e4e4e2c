/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The flusher: a shard's writer freezes its head (tide__flush_freeze),
 * and the flusher thread turns the frozen head into one segment per time
 * window, records them in the MANIFEST, publishes them in place of the
 * frozen head and deletes the WAL files the head came from. Invariants in
 * db.h.
 */
#include "db.h"

#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ts.h"
#include "window.h"

/* Hand the active head to the flusher (waiting while it is still busy with
 * the previous one) and attach the flush requests in `waiters`. */
int tide__flush_freeze(struct shard *s, struct req *waiters)
{
    struct tide_db *db = s->db;
    struct req **tail;
    struct head *frozen;
    int rc, busy;

    TIDE_ASSERT(tide__shard_owned(s)); /* invariant 1 */
    pthread_mutex_lock(&db->fl_mu);
    while (s->frozen && s->head.points > 0 && !db->stopping &&
           !atomic_load(&db->failed))
        pthread_cond_wait(&db->done_cv, &db->fl_mu);
    if (s->head.points == 0) {
        /* Nothing new: the flush is done once any frozen head is. */
        if (!s->frozen) {
            pthread_mutex_unlock(&db->fl_mu);
            tide__inbox_complete(waiters, 0);
            return 0;
        }
        for (tail = &s->frozen_waiters; *tail; tail = &(*tail)->next)
            ;
        *tail = waiters;
        pthread_mutex_unlock(&db->fl_mu);
        return 0;
    }
    busy = s->frozen != NULL;
    pthread_mutex_unlock(&db->fl_mu);
    if (busy) { /* stopping or failed while the flusher is busy */
        tide__inbox_complete(waiters, atomic_load(&db->failed) ? TIDE_EIO
                                                               : TIDE_ECLOSED);
        return 0;
    }
    frozen = tide_malloc(sizeof(*frozen));
    if (!frozen) {
        tide__inbox_complete(waiters, -ENOMEM);
        return -ENOMEM;
    }
    rc = tide__shard_rotate(s, s->wal.seq + 1, NULL, 0);
    if (rc == 0)
        rc = tide__wal_commit(&s->wal, s->io, 1);
    if (rc) {
        tide_free(frozen);
        tide__db_set_failed(db, rc, "WAL rotation", s->wal_dir);
        tide__inbox_complete(waiters, tide__db_fail_code(db));
        return rc;
    }
    /* Swap under the read lock's writer side so readers see the points
     * in the active head or the frozen one, never in neither. */
    pthread_rwlock_wrlock(&s->rw);
    *frozen = s->head;
    tide__head_init(&s->head);
    pthread_mutex_lock(&db->fl_mu);
    TIDE_ASSERT(!s->frozen); /* one frozen head at a time */
    s->frozen = frozen;
    s->frozen_replay = s->wal.seq;
    s->frozen_waiters = waiters;
    s->flush_wanted = 1;
    pthread_cond_signal(&db->fl_cv);
    pthread_mutex_unlock(&db->fl_mu);
    pthread_rwlock_unlock(&s->rw);
    return 0;
}

static int cmp_series_id(const void *a, const void *b)
{
    const struct hseries *x = *(const struct hseries *const *)a;
    const struct hseries *y = *(const struct hseries *const *)b;

    return x->id < y->id ? -1 : x->id > y->id;
}

/* The series of `h` ordered by id, into `out` (struct hseries *[]). */
static int series_by_id(const struct head *h, struct tide_buf *out)
{
    int rc = 0;

    for (uint32_t i = 0; i < h->n_slots && rc == 0; i++)
        if (h->slots[i].s)
            rc = tide__buf_append(out, &h->slots[i].s, sizeof(h->slots[i].s));
    if (rc == 0 && out->len)
        qsort(out->data, out->len / sizeof(struct hseries *),
              sizeof(struct hseries *), cmp_series_id);
    return rc;
}

/* Write one segment with the points of the series in `order` (ascending
 * ids) in tier/partition `k`. Chunks are laid out in the footer's order,
 * so a read of ascending ids walks each file forward and the kernel's
 * read-ahead serves it. */
static int write_segment(struct tide_db *db, struct shard *sh,
                         const struct tide_buf *order, struct window k,
                         struct seg **out)
{
    int64_t lo, hi;
    struct seg_writer *w = NULL;
    char *path = NULL;
    uint64_t id;
    int rc;

    tide__window_bounds(k, db->o.partition_ns, &lo, &hi);
    pthread_mutex_lock(&db->man_mu);
    id = db->man.next_seg_id++;
    pthread_mutex_unlock(&db->man_mu);
    rc = tide__segw_open(db->seg_dir, id, (uint16_t)sh->idx, k.tier,
                         db->flush_io, db->keys, &w);
    if (rc)
        return rc;
    for (size_t i = 0; i < order->len / sizeof(struct hseries *) && rc == 0;
         i++) {
        const struct hseries *s = ((struct hseries *const *)order->data)[i];
        uint32_t a, b;

        if (s->tier != k.tier)
            continue;
        a = tide__ts_lower_bound(s->ts, s->n, lo);
        b = hi == INT64_MAX ? s->n : tide__ts_lower_bound(s->ts, s->n, hi);
        while (a < b && rc == 0) {
            uint32_t n =
                b - a < db->o.chunk_points_max ? b - a : db->o.chunk_points_max;

            rc = tide__segw_add(w, s->id, s->account_id, s->type, n, s->ts + a,
                                s->val ? s->val + a : NULL,
                                s->str ? s->str + a : NULL);
            a += n;
        }
    }
    if (rc) {
        tide__segw_abort(w);
        return rc;
    }
    rc = tide__segw_finish(w, &path);
    if (rc == 0)
        rc = tide__seg_open(path, db->keys, out);
    tide_free(path);
    return rc;
}

/* Record new segments and the shard's new replay point in the MANIFEST.
 * On failure *installed says whether the new manifest replaced the old
 * one anyway (tide__manifest_store); if it did not, `m` is as before. */
static int manifest_add(struct tide_db *db, struct shard *sh, struct seg **segs,
                        uint32_t n, int *installed)
{
    struct manifest *m = &db->man;
    uint64_t replay_was = m->replay_from[sh->idx];
    struct man_seg *p;
    int rc;

    *installed = 0;
    pthread_mutex_lock(&db->man_mu);
    p = tide_realloc(m->segs, (m->n_segs + n + 1) * sizeof(*p));
    if (!p) {
        pthread_mutex_unlock(&db->man_mu);
        return -ENOMEM;
    }
    m->segs = p;
    for (uint32_t i = 0; i < n; i++) {
        TIDE_ASSERT(segs[i]->id < m->next_seg_id);
        m->segs[m->n_segs + i] =
            (struct man_seg){segs[i]->id, segs[i]->shard, segs[i]->tier, 0};
    }
    /* Invariant 3: the replay point only moves forward. */
    TIDE_ASSERT(sh->frozen_replay >= replay_was);
    m->n_segs += n;
    m->replay_from[sh->idx] = sh->frozen_replay;
    rc = tide__manifest_store(db->dir, m, db->flush_io, db->keys, installed);
    if (rc && !*installed) { /* the old manifest stays in force */
        m->n_segs -= n;
        m->replay_from[sh->idx] = replay_was;
    }
    pthread_mutex_unlock(&db->man_mu);
    return rc;
}

static void flush_frozen(struct tide_db *db, struct shard *sh)
{
    struct head *h = sh->frozen;
    struct tide_buf keys = {0}, segs = {0}, order = {0};
    struct seglist *base, *next = NULL;
    struct req *waiters;
    uint64_t removed = 0;
    uint32_t n_segs = 0;
    int rc = 0, installed = 0, unsynced = 0;

    pthread_rwlock_wrlock(&sh->rw);
    for (uint32_t i = 0; i < h->n_slots && rc == 0; i++)
        if (h->slots[i].s)
            rc = tide__hseries_normalize(h->slots[i].s);
    pthread_rwlock_unlock(&sh->rw);
    if (rc == 0)
        rc = tide__window_collect(h, db->o.partition_ns, &keys);
    if (rc == 0)
        rc = series_by_id(h, &order);
    for (size_t i = 0; rc == 0 && i < keys.len / sizeof(struct window); i++) {
        struct seg *seg = NULL;

        rc = write_segment(db, sh, &order, ((struct window *)keys.data)[i],
                           &seg);
        if (rc == 0) {
            rc = tide__buf_append(&segs, &seg, sizeof(seg));
            if (rc)
                tide__seg_close(seg);
        }
    }
    n_segs = (uint32_t)(segs.len / sizeof(struct seg *));
    if (rc == 0)
        rc = manifest_add(db, sh, (struct seg **)segs.data, n_segs, &installed);
    if (rc && installed) {
        /* The new MANIFEST is in place but maybe not durable: memory
         * follows the disk (publish its segments), nothing either
         * manifest lists is deleted (the segments, the WAL files before
         * the new replay point), and writes stop. */
        tide__db_set_failed(db, rc, "MANIFEST directory sync", db->dir);
        atomic_store(&db->failed, TIDE_EIO); /* only a reopen settles it */
        unsynced = 1;
        rc = 0;
    }
    if (rc) {
        for (uint32_t i = 0; i < n_segs; i++) {
            struct seg *seg = ((struct seg **)segs.data)[i];

            unlink(seg->path);
            tide__seg_close(seg);
        }
        /* The frozen head stays; after ENOSPC, resuming retries it. */
        tide__db_set_failed(db, rc, "flush", db->seg_dir);
        pthread_mutex_lock(&db->fl_mu);
        waiters = sh->frozen_waiters;
        sh->frozen_waiters = NULL;
        pthread_cond_broadcast(&db->done_cv);
        pthread_mutex_unlock(&db->fl_mu);
        tide__inbox_complete(waiters, tide__db_fail_code(db));
        goto out;
    }
    /* Publish: the segments appear as the frozen head disappears. */
    pthread_mutex_lock(&db->man_mu); /* publications are serialised */
    base = tide__seglist_acquire(db);
    rc = tide__seglist_edit(db, base, NULL, 0, (struct seg **)segs.data, n_segs,
                            NULL, &next);
    tide__seglist_release(base);
    pthread_rwlock_wrlock(&sh->rw);
    TIDE_ASSERT(sh->frozen == h); /* invariant 2 */
    if (rc == 0) {
        TIDE_ASSERT(next->gen > sh->pub_gen);
        sh->pub_gen = next->gen;
        tide__seglist_publish(db, next);
    }
    pthread_mutex_lock(&db->fl_mu);
    if (rc == 0)
        sh->frozen = NULL;
    waiters = sh->frozen_waiters;
    sh->frozen_waiters = NULL;
    pthread_cond_broadcast(&db->done_cv);
    pthread_mutex_unlock(&db->fl_mu);
    pthread_rwlock_unlock(&sh->rw);
    pthread_mutex_unlock(&db->man_mu);
    if (rc) {
        /* The segments are in the MANIFEST, so a reopen finds them; here
         * the frozen head keeps serving reads. */
        for (uint32_t i = 0; i < n_segs; i++)
            tide__seg_close(((struct seg **)segs.data)[i]);
        tide__db_set_failed(db, rc, "publishing segments", NULL);
        atomic_store(&db->failed, TIDE_EIO); /* only a reopen settles it */
        tide__inbox_complete(waiters, TIDE_EIO);
        goto out;
    }
    tide__head_fini(h);
    tide_free(h);
    if (unsynced) {
        tide__inbox_complete(waiters, TIDE_EIO);
        goto out;
    }
    rc = tide__wal_remove_before(sh->wal_dir, sh->frozen_replay, &removed);
    atomic_fetch_sub(&sh->wal_bytes, removed);
    if (rc)
        tide__db_log(db, TIDE_LOG_WARN, "removing old WAL files in %s: %s",
                     sh->wal_dir, tide_strerror(rc));
    atomic_fetch_add(&db->flushes, 1);
    tide__inbox_complete(waiters, 0);
out:
    tide__buf_fini(&keys);
    tide__buf_fini(&order);
    tide__buf_fini(&segs);
}

/* Wait on fl_cv for at most `ms` (fl_mu held). */
static void wait_ms(struct tide_db *db, uint32_t ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&db->fl_cv, &db->fl_mu, &ts);
}

void *tide__flush_main(void *arg)
{
    struct tide_db *db = arg;

    pthread_mutex_lock(&db->fl_mu);
    for (;;) {
        struct shard *sh = NULL;

        for (unsigned i = 0; i < db->n_shards && !sh; i++)
            if (db->shards[i].flush_wanted)
                sh = &db->shards[i];
        if (sh) {
            sh->flush_wanted = 0;
            pthread_mutex_unlock(&db->fl_mu);
            flush_frozen(db, sh);
            pthread_mutex_lock(&db->fl_mu);
            continue;
        }
        if (db->stopping)
            break;
        if (atomic_load(&db->failed) == -ENOSPC && !db->resuming) {
            /* Out of space: try again now and then; the writers test
             * the disk with the abort list (tide__db_resume). */
            wait_ms(db, db->o.nospace_retry_ms);
            if (db->stopping || db->resuming ||
                atomic_load(&db->failed) != -ENOSPC)
                continue;
            db->resuming = 1;
            pthread_mutex_unlock(&db->fl_mu);
            tide__db_resume(db);
            pthread_mutex_lock(&db->fl_mu);
            continue;
        }
        pthread_cond_wait(&db->fl_cv, &db->fl_mu);
    }
    pthread_mutex_unlock(&db->fl_mu);
    return NULL;
}
