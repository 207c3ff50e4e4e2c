/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A shard and its writer thread: take every queued request, append the
 * records to the WAL buffer, commit the group (one write and one
 * fdatasync), wait for the other parts of batches over several shards,
 * then apply the durable batches to the active head and fire the
 * callbacks (invariants 5 and 6 in db.h). A head over its budget, or a
 * flush request, hands the head to the flusher (flush.c).
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
    s->wal.kr = db->keys;
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
    tide_free(s->wal_dir);
    pthread_rwlock_destroy(&s->rw);
}

/* FIFO lists of requests. */
struct rlist {
    struct req *head;
    struct req **tail;
};

static void rl_init(struct rlist *l)
{
    l->head = NULL;
    l->tail = &l->head;
}

static void rl_push(struct rlist *l, struct req *r)
{
    r->next = NULL;
    *l->tail = r;
    l->tail = &r->next;
}

/* Append all of `from` to `to`; `from` becomes empty. */
static void rl_move(struct rlist *to, struct rlist *from)
{
    if (from->head) {
        *to->tail = from->head;
        to->tail = from->tail;
    }
    rl_init(from);
}

static void wal_file_path(const struct shard *s, char *out)
{
    snprintf(out, PATH_MAX, "%s/%016llx.wal", s->wal_dir,
             (unsigned long long)s->wal.seq);
}

/* Commit the pending WAL group (one write and, with sync=batch, one
 * fdatasync); a failure puts the db in its error state. */
static int commit_group(struct shard *s)
{
    struct tide_db *db = s->db;
    int sync = db->o.sync == TIDE_SYNC_BATCH;
    struct timespec t0, t1;
    int rc;

    TIDE_ASSERT(tide__shard_owned(s)); /* invariant 1 */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = tide__wal_commit(&s->wal, s->io, sync);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc) {
        char path[PATH_MAX];

        wal_file_path(s, path);
        tide__db_set_failed(db, rc, "WAL write", path);
    } else if (sync) {
        uint64_t ns = (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000ll +
                                 (t1.tv_nsec - t0.tv_nsec));
        unsigned b = 0;

        while (b + 1 < TIDE_SYNC_LAT_BUCKETS && ns > (50000ull << b))
            b++;
        atomic_fetch_add(&db->wal_syncs, 1);
        atomic_fetch_add(&db->wal_sync_lat[b], 1);
        atomic_fetch_add(&db->wal_sync_ns_total, ns);
    }
    return rc;
}

/* Start WAL file `seq`: wal_file_bytes, or `min_bytes` when the disk
 * lacks room for that, so that a nearly full disk still takes writes (and
 * a restart needs little room). Logs a failure with the free space. */
static int wal_new_file(struct shard *s, uint64_t seq, uint64_t min_bytes)
{
    struct tide_db *db = s->db;
    uint64_t want = db->o.wal_file_bytes;
    char path[PATH_MAX];
    int rc;

    if (want < min_bytes)
        want = min_bytes;
    rc = tide__wal_start(&s->wal, s->io, seq, want);
    if ((rc == -ENOSPC || rc == -EDQUOT) && min_bytes < want) {
        tide__db_log(db, TIDE_LOG_WARN,
                     "shard %u: no room for a %llu-byte WAL file; trying "
                     "%llu bytes",
                     s->idx, (unsigned long long)want,
                     (unsigned long long)min_bytes);
        rc = tide__wal_start(&s->wal, s->io, seq, min_bytes);
    }
    if (rc) {
        snprintf(path, sizeof(path), "%s/%016llx.wal", s->wal_dir,
                 (unsigned long long)seq);
        tide__db_set_failed(db, rc, "creating WAL file", path);
        return rc;
    }
    atomic_fetch_add(&s->wal_bytes, s->wal.file_bytes);
    return 0;
}

/* Smallest file for records of `len` payload bytes after a file header. */
static uint64_t min_file_bytes(uint64_t len)
{
    return TIDE_WAL_BLOCK + ((len + (256u << 10) + TIDE_WAL_BLOCK - 1) &
                             ~(uint64_t)(TIDE_WAL_BLOCK - 1));
}

/* Payload of an abort record for `ids`: count (4), zero (4), ids (8 each). */
static int abort_record(struct tide_buf *out, const uint64_t *ids, uint32_t n)
{
    uint8_t e[8];
    int rc;

    out->len = 0;
    rc = tide__buf_reserve(out, 8 + (size_t)n * 8);
    if (rc)
        return rc;
    memset(e, 0, 8);
    tide__put_le32(e, n);
    tide__buf_append(out, e, 8);
    for (uint32_t i = 0; i < n; i++) {
        tide__put_le64(e, ids[i]);
        tide__buf_append(out, e, 8);
    }
    return 0;
}

int tide__shard_rotate(struct shard *s, uint64_t seq, const uint64_t *aborts,
                       uint32_t n_aborts)
{
    struct tide_db *db = s->db;
    struct tide_buf prod = {0}, ab = {0};
    uint8_t mark[8];
    int rc;

    TIDE_ASSERT(tide__shard_owned(s)); /* invariant 1 */
    TIDE_ASSERT(seq > s->wal.seq);     /* WAL file numbers only grow */
    pthread_mutex_lock(&db->prod_mu);
    rc = tide__dedup_record(&db->prod, &prod);
    pthread_mutex_unlock(&db->prod_mu);
    if (rc == 0 && n_aborts)
        rc = abort_record(&ab, aborts, n_aborts);
    if (rc == 0)
        rc = wal_new_file(
            s, seq,
            min_file_bytes(prod.len + ab.len + 3 * 32 + 8 +
                           3 * tide__wal_stored_len_plain(&s->wal, 0)));
    tide__put_le64(mark, s->parts_hw);
    if (rc == 0 &&
        !tide__wal_fits(&s->wal,
                        (uint32_t)(prod.len + ab.len + 8 +
                                   2 * TIDE_WAL_RECORD_HEADER + 16 +
                                   3 * tide__wal_stored_len_plain(&s->wal, 0))))
        rc = TIDE_EFULL; /* the three records, with their padding */
    if (rc == 0)
        rc = tide__wal_append(&s->wal, TIDE_WAL_PRODUCERS, prod.data,
                              (uint32_t)prod.len);
    if (rc == 0)
        rc = tide__wal_append(&s->wal, TIDE_WAL_MARK, mark, sizeof(mark));
    if (rc == 0 && n_aborts)
        rc = tide__wal_append(&s->wal, TIDE_WAL_ABORT, ab.data,
                              (uint32_t)ab.len);
    tide__buf_fini(&prod);
    tide__buf_fini(&ab);
    return rc;
}

/* REQ_RESUME: void the failed batches over shards in this shard's WAL
 * (an abort record) and sync, which also proves the disk takes writes
 * again; a full file gets a successor. */
static int shard_resume(struct shard *s)
{
    struct tide_db *db = s->db;
    struct tide_buf ab = {0};
    int rc;

    if (atomic_load(&db->failed) != -ENOSPC)
        return tide__db_fail_code(db);
    pthread_mutex_lock(&db->dec_mu);
    rc = abort_record(&ab, db->aborts, db->n_aborts);
    pthread_mutex_unlock(&db->dec_mu);
    /* After a failed rotation the probe is a new file: the next record
     * would need one. */
    if (rc == 0 && (s->wal_full ||
                    !tide__wal_fits(&s->wal, tide__wal_stored_len_plain(
                                                 &s->wal, (uint32_t)ab.len)))) {
        rc = tide__wal_commit(&s->wal, s->io, 1);
        if (rc == 0)
            rc = wal_new_file(s, s->wal.seq + 1,
                              min_file_bytes(tide__wal_stored_len_plain(
                                  &s->wal, (uint32_t)ab.len)));
        if (rc == 0)
            s->wal_full = 0;
    }
    if (rc == 0 && ab.len > 8)
        rc = tide__wal_append(&s->wal, TIDE_WAL_ABORT, ab.data,
                              (uint32_t)ab.len);
    if (rc == 0)
        rc = tide__wal_commit(&s->wal, s->io, 1);
    tide__buf_fini(&ab);
    return rc;
}

/* Is `r` a part of a batch over several shards? */
static int is_part(const struct req *r)
{
    return r->ticket->batch_id != 0;
}

/* Write the batches of `list` to the WAL and commit: those durable go to
 * `ok` in WAL order, the others to `bad`. */
static void write_batches(struct shard *s, struct rlist *list, struct rlist *ok,
                          struct rlist *bad)
{
    struct tide_db *db = s->db;
    struct rlist wr;
    uint32_t stored;
    int rc = atomic_load(&db->failed);

    rl_init(&wr);
    while (list->head) {
        struct req *r = list->head;

        list->head = r->next;
        if (rc) {
            rl_push(bad, r);
            continue;
        }
        stored = tide__wal_stored_len(&s->wal, r->rec_type, r->rec, r->rec_len);
        if (stored == 0 && r->rec_len) {
            rc = -ENOMEM;
            tide__db_set_failed(db, rc, "WAL append", NULL);
            rl_push(bad, r);
            continue;
        }
        if (!tide__wal_fits(&s->wal, stored)) {
            /* Commit the group so far, then rotate. A record larger
             * than a file gets a file its size. */
            rc = commit_group(s);
            rl_move(rc ? bad : ok, &wr);
            if (rc == 0) {
                rc = wal_new_file(
                    s, s->wal.seq + 1,
                    min_file_bytes(tide__wal_record_bytes(stored)));
                s->wal_full = rc != 0;
            }
            if (rc) {
                rl_push(bad, r);
                continue;
            }
        }
        rc = tide__wal_append(&s->wal, r->rec_type, r->rec, r->rec_len);
        if (rc) {
            tide__db_set_failed(db, rc, "WAL append", NULL);
            rl_push(bad, r);
            continue;
        }
        if (is_part(r))
            s->parts_hw = r->ticket->batch_id;
        rl_push(&wr, r);
    }
    if (wr.head)
        rl_move(commit_group(s) ? bad : ok, &wr);
}

/* Announce which parts are durable and which failed, then wait until
 * every batch over shards among `ok` has its commit point: all parts
 * durable, or one failed (invariant 5). Waits only after announcing, and
 * parts arrive in batch id order (invariant 6), so writers never wait in a
 * cycle. */
static void decide_parts(struct shard *s, struct rlist *ok, struct rlist *bad)
{
    struct tide_db *db = s->db;
    int any = 0;

    for (struct req *r = ok->head; r && !any; r = r->next)
        any = is_part(r);
    for (struct req *r = bad->head; r && !any; r = r->next)
        any = is_part(r);
    if (!any)
        return;
    pthread_mutex_lock(&db->dec_mu);
    for (struct req *r = bad->head; r; r = r->next) {
        struct ticket *t = r->ticket;

        if (!is_part(r) || t->aborted)
            continue;
        t->aborted = 1;
        /* Other parts may be durable: void them before writes resume. */
        if (db->n_aborts == db->cap_aborts) {
            uint32_t cap = db->cap_aborts ? db->cap_aborts * 2 : 16;
            uint64_t *p = tide_realloc(db->aborts, cap * sizeof(*p));

            if (!p) {
                /* Cannot keep the list: make the failure sticky, so
                 * that recovery at the next open voids the parts. */
                tide__db_set_failed(db, -ENOMEM, "recording a failed batch",
                                    NULL);
                atomic_store(&db->failed, TIDE_EIO);
                continue;
            }
            db->aborts = p;
            db->cap_aborts = cap;
        }
        db->aborts[db->n_aborts++] = t->batch_id;
        db->abort_gen++;
    }
    for (struct req *r = ok->head; r; r = r->next)
        if (is_part(r))
            r->ticket->durable++;
    pthread_cond_broadcast(&db->dec_cv);
    for (struct req *r = ok->head; r; r = r->next) {
        struct ticket *t = r->ticket;

        while (is_part(r) && !t->aborted && t->durable < t->parts &&
               !db->dec_stop)
            pthread_cond_wait(&db->dec_cv, &db->dec_mu);
        if (is_part(r) && t->durable < t->parts)
            t->aborted = 1; /* closing: its missing part never comes */
    }
    pthread_mutex_unlock(&db->dec_mu);
}

/* Apply the durable batches of `ok` to the head, in WAL order, record
 * their sequences in the producer table and complete them. */
static void apply_batches(struct shard *s, struct rlist *ok,
                          struct tide_buf *scratch)
{
    struct tide_db *db = s->db;
    uint64_t points = 0, batches = 0;
    uint32_t skipped = 0;
    int failed = 0;

    pthread_rwlock_wrlock(&s->rw);
    s->head_locked = 1;
    for (struct req *r = ok->head; r; r = r->next) {
        uint32_t off = r->rec_type == TIDE_WAL_PART ? TIDE_WAL_PART_HEADER : 0;
        int rc;

        if (is_part(r) && r->ticket->aborted)
            continue;
        TIDE_ASSERT(s->head_locked); /* invariant 1 */
        rc = failed
                 ? TIDE_EIO
                 : tide__wal_batch_apply(&s->head, r->rec + off,
                                         r->rec_len - off, scratch, &skipped);
        if (rc) {
            /* Durable but not in the head: only a reopen can serve it. */
            if (!failed)
                tide__db_set_failed(db, rc, "applying a batch", NULL);
            atomic_store(&db->failed, TIDE_EIO);
            failed = 1;
            r->rc = TIDE_EIO;
            continue;
        }
        points += r->points;
        batches++;
        if (r->ticket->on_done) {
            pthread_mutex_lock(&db->prod_mu);
            if (tide__dedup_set(&db->prod, r->ticket->producer_id,
                                r->ticket->sequence))
                tide__db_log(db, TIDE_LOG_WARN,
                             "producer table full of memory: a retry of "
                             "this batch would be applied again");
            pthread_mutex_unlock(&db->prod_mu);
        }
    }
    s->head_locked = 0;
    pthread_rwlock_unlock(&s->rw);
    if (skipped)
        tide__db_log(db, TIDE_LOG_WARN,
                     "shard %u: %u column(s) skipped: value type differs "
                     "from the series' type",
                     s->idx, skipped);
    /* Counted before any completion fires, so a caller that has its
     * acknowledgement also sees its points in tide_db_stats(). */
    atomic_fetch_add(&db->points_appended, points);
    atomic_fetch_add(&db->batches_appended, batches);
    while (ok->head) {
        struct req *r = ok->head;
        int aborted = is_part(r) && r->ticket->aborted;

        ok->head = r->next;
        tide__inbox_done(r, aborted ? tide__db_fail_code(db) : r->rc);
    }
    rl_init(ok);
}

/* Whether the head should be frozen for a flush: at its share of the
 * budget, or, while the flusher still writes the previous one, at twice
 * that, so that writes go on beside a slow flush (a wide fleet's head
 * holds many short series) rather than wait for it. */
static int head_full(struct shard *s)
{
    struct tide_db *db = s->db;
    int busy;

    if (s->head.bytes < db->head_bytes_per_shard)
        return 0;
    pthread_mutex_lock(&db->fl_mu);
    busy = s->frozen != NULL;
    pthread_mutex_unlock(&db->fl_mu);
    return !busy || s->head.bytes >= 2 * db->head_bytes_per_shard;
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
        struct rlist batches, ok, bad, flushes, resumes;

        rl_init(&batches);
        rl_init(&ok);
        rl_init(&bad);
        rl_init(&flushes);
        rl_init(&resumes);
        while (list) {
            struct req *r = list;

            list = r->next;
            rl_push(r->kind == REQ_FLUSH    ? &flushes
                    : r->kind == REQ_RESUME ? &resumes
                                            : &batches,
                    r);
        }
        /* Invariant 5: WAL first, with no lock (invariant 1), then the
         * head. */
        write_batches(s, &batches, &ok, &bad);
        decide_parts(s, &ok, &bad);
        apply_batches(s, &ok, &scratch);
        tide__inbox_complete(bad.head, tide__db_fail_code(db));
        if (resumes.head)
            tide__inbox_complete(resumes.head, shard_resume(s));
        if (atomic_load(&db->failed)) {
            tide__inbox_complete(flushes.head, tide__db_fail_code(db));
            continue;
        }
        if (flushes.head || head_full(s))
            tide__flush_freeze(s, flushes.head);
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
