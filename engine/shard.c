/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A shard and its writer thread: take every queued request, drop
 * duplicates, append the records to the WAL buffer and apply them to the
 * active head, then commit the group (one write and one fdatasync) and
 * fire the callbacks. A head over its budget, or a flush request, hands
 * the head to the flusher (flush.c). Invariants in db.h.
 */
#include "db.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <time.h>

#include "dedup.h"
#include "wal_batch.h"

int tide__shard_init(struct tide_db *db, struct shard *s, unsigned idx)
{
    char path[PATH_MAX];
    int rc;

    s->db = db;
    s->idx = idx;
    tide__head_init(&s->head);
    tide__inbox_init(&s->in);
    {
        /* glibc's default rwlock prefers readers: a stream of queries
         * copying out of the head would starve the shard's writer. */
        pthread_rwlockattr_t attr;

        pthread_rwlockattr_init(&attr);
        pthread_rwlockattr_setkind_np(
            &attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        pthread_rwlock_init(&s->rw, &attr);
        pthread_rwlockattr_destroy(&attr);
    }
    snprintf(path, sizeof(path), "%s/wal/%03u", db->dir, idx);
    s->wal_dir = tide_strdup(path);
    if (!s->wal_dir)
        return -ENOMEM;
    rc = tide__wal_init(&s->wal, path, idx);
    if (rc)
        return rc;
    rc = tide__io_open(db->o.io_backend, 8, &s->io);
    if (rc)
        return rc;
    return 0;
}

void tide__shard_fini(struct shard *s)
{
    if (s->started)
        pthread_join(s->thread, NULL);
    tide__inbox_fini(&s->in);
    tide__head_fini(&s->head);
    if (s->frozen) {
        tide__head_fini(s->frozen);
        tide_free(s->frozen);
    }
    tide__inbox_complete(s->frozen_waiters, TIDE_ECLOSED);
    tide__wal_fini(&s->wal);
    tide__io_close(s->io);
    tide__dedup_fini(&s->prod);
    tide_free(s->wal_dir);
    pthread_rwlock_destroy(&s->rw);
}

/* Commit the pending WAL group and complete the requests waiting on it. */
static int commit_group(struct shard *s, struct req **done)
{
    struct tide_db *db = s->db;
    int sync = db->o.sync == TIDE_SYNC_BATCH;
    struct timespec t0, t1;
    int rc;

    TIDE_ASSERT(tide__shard_owned(s)); /* invariant 1 */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = tide__wal_commit(&s->wal, s->io, sync);
    clock_gettime(CLOCK_MONOTONIC, &t1);

    uint64_t points = 0, batches = 0, dups = 0;

    if (rc)
        tide__db_set_failed(db, rc, "WAL commit");
    else if (sync) {
        uint64_t ns = (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000ll +
                                 (t1.tv_nsec - t0.tv_nsec));
        unsigned b = 0;

        while (b + 1 < TIDE_SYNC_LAT_BUCKETS && ns > (50000ull << b))
            b++;
        atomic_fetch_add(&db->wal_syncs, 1);
        atomic_fetch_add(&db->wal_sync_lat[b], 1);
        atomic_fetch_add(&db->wal_sync_ns_total, ns);
    }
    /* Counted before any completion fires, so a caller that has its
     * acknowledgement also sees its points in tide_db_stats(). */
    for (const struct req *r = *done; r && rc == 0; r = r->next) {
        dups += r->dup;
        points += r->dup ? 0 : r->points;
        batches += !r->dup;
    }
    atomic_fetch_add(&db->points_appended, points);
    atomic_fetch_add(&db->batches_appended, batches);
    atomic_fetch_add(&db->batches_duplicate, dups);
    tide__inbox_complete(*done, rc ? TIDE_EIO : 0);
    *done = NULL;
    return rc;
}

int tide__shard_rotate(struct shard *s, uint64_t seq)
{
    struct tide_buf rec = {0};
    int rc;

    TIDE_ASSERT(tide__shard_owned(s)); /* invariant 1 */
    TIDE_ASSERT(seq > s->wal.seq);     /* WAL file numbers only grow */
    rc = tide__wal_start(&s->wal, s->io, seq, s->db->o.wal_file_bytes);
    if (rc == 0)
        atomic_fetch_add(&s->wal_bytes, s->wal.file_bytes);
    if (rc == 0)
        rc = tide__dedup_record(&s->prod, &rec);
    if (rc == 0 && !tide__wal_fits(&s->wal, (uint32_t)rec.len))
        rc = TIDE_EFULL;
    if (rc == 0)
        rc = tide__wal_append(&s->wal, TIDE_WAL_PRODUCERS, rec.data,
                              (uint32_t)rec.len);
    tide__buf_fini(&rec);
    return rc;
}

/* Make room for a record of `len` bytes: commit and rotate when the
 * current file is full. A record larger than a file gets a file its size. */
static int wal_make_room(struct shard *s, uint32_t len, struct req **done)
{
    uint64_t need = tide__wal_record_bytes(len) + (1u << 20);
    int rc;

    if (tide__wal_fits(&s->wal, len))
        return 0;
    rc = commit_group(s, done);
    if (rc)
        return rc;
    if (need < s->db->o.wal_file_bytes)
        need = s->db->o.wal_file_bytes;
    rc = tide__wal_start(&s->wal, s->io, s->wal.seq + 1, need);
    if (rc)
        return rc;
    atomic_fetch_add(&s->wal_bytes, s->wal.file_bytes);
    return 0;
}

static void *writer_main(void *arg)
{
    struct shard *s = arg;
    struct tide_db *db = s->db;
    struct tide_buf scratch = {0};
    struct req *list;

    s->writer = pthread_self();
    atomic_store(&s->writer_running, 1);
    while ((list = tide__inbox_take(&s->in, &db->stopping))) {
        struct req *done = NULL, *flushes = NULL;
        uint32_t skipped = 0;
        int rc = atomic_load(&db->failed);

        pthread_rwlock_wrlock(&s->rw);
        s->head_locked = 1;
        while (list) {
            struct req *r = list;

            list = r->next;
            if (r->kind == REQ_FLUSH) {
                r->next = flushes;
                flushes = r;
                continue;
            }
            if (!rc && r->sequence &&
                tide__dedup_get(&s->prod, r->producer_id) >= r->sequence)
                r->dup = 1;
            /* A rotation commits the group so far; r joins the list of
             * completions only once its own record is in the buffer. Its
             * write, fallocate and fsyncs run without the shard lock, so
             * readers of the head never wait for the disk (invariant 1);
             * the head holds whole batches at that point. */
            if (!rc && !r->dup && !tide__wal_fits(&s->wal, r->rec_len)) {
                s->head_locked = 0;
                pthread_rwlock_unlock(&s->rw);
                rc = wal_make_room(s, r->rec_len, &done);
                pthread_rwlock_wrlock(&s->rw);
                s->head_locked = 1;
            }
            r->next = done;
            done = r;
            if (rc || r->dup)
                continue;
            TIDE_ASSERT(s->head_locked); /* invariant 1 */
            rc = tide__wal_append(&s->wal, TIDE_WAL_BATCH, r->rec, r->rec_len);
            if (rc == 0)
                rc = tide__wal_batch_apply(&s->head, r->rec, r->rec_len,
                                           &scratch, &skipped);
            if (rc == 0 && r->sequence)
                rc = tide__dedup_set(&s->prod, r->producer_id, r->sequence);
            if (rc) {
                tide__db_set_failed(db, rc, "append");
                continue;
            }
        }
        s->head_locked = 0;
        pthread_rwlock_unlock(&s->rw);
        if (skipped)
            tide__db_log(db, TIDE_LOG_WARN,
                         "shard %u: %u column(s) skipped: value type differs "
                         "from the series' type",
                         s->idx, skipped);
        if (rc)
            tide__inbox_complete(done, TIDE_EIO);
        else
            commit_group(s, &done);
        if (atomic_load(&db->failed)) {
            tide__inbox_complete(flushes, TIDE_EIO);
            continue;
        }
        if (flushes || s->head.bytes >= db->head_bytes_per_shard)
            tide__flush_freeze(s, flushes);
    }
    tide__buf_fini(&scratch);
    return NULL;
}

int tide__shard_start(struct shard *s)
{
    int rc = -pthread_create(&s->thread, NULL, writer_main, s);

    if (rc == 0)
        s->started = 1;
    return rc;
}
