/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine's public entry points for writing and for the database's
 * life: open, append, flush, close, stats. The work is done elsewhere, one
 * file per level and subsystem (db.h lists them and the invariants).
 *
 * Life of an append:
 *
 *   tide_db_append ──► dedup against the db's producer table (dedup.c)
 *        ──► per-shard req (WAL batch record, wal_batch.c)
 *        ──► shard inbox (inbox.c)
 *        writer (shard.c): take all queued reqs ─► WAL buffer (wal.c)
 *                ─► write + fdatasync (one per group)
 *                ─► batch over shards: wait until every part is durable
 *                ─► head (head.c) ─► callbacks
 *        head over budget / flush asked ─► rotate WAL, freeze head
 *        flusher (flush.c): frozen head ─► segments ─► MANIFEST ─► publish
 *                 ─► delete WAL files before the rotation
 */
#include "db.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "compact.h"
#include "wal_batch.h"

void tide_db_options_init(struct tide_db_options *o)
{
    memset(o, 0, sizeof(*o));
    o->sync = TIDE_SYNC_BATCH;
    o->chunk_points_max = 8192;
    o->head_bytes_max = 256ull << 20;
    o->wal_file_bytes = 64ull << 20;
    o->partition_ns = 86400ll * 1000000000ll;
    o->compaction_mb_s = 64;
    o->compaction_interval_s = 600;
}

/* The key cache's log lines go to the db's sink. */
static void keys_log(void *ctx, enum tide_log_level level, const char *msg)
{
    tide__db_log(ctx, level, "%s", msg);
}

void tide__db_log(struct tide_db *db, enum tide_log_level level,
                  const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (!db->o.log)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    db->o.log(db->o.log_ctx, level, msg);
}

unsigned tide__db_shard_of(const struct tide_db *db, uint64_t series_id)
{
    return (unsigned)(((series_id * 0x9e3779b97f4a7c15ull) >> 32) %
                      db->n_shards);
}

int tide__db_io_get(struct tide_db *db, struct tide_io **out)
{
    pthread_mutex_lock(&db->io_mu);
    if (db->n_io_pool > 0) {
        *out = db->io_pool[--db->n_io_pool];
        pthread_mutex_unlock(&db->io_mu);
        return 0;
    }
    pthread_mutex_unlock(&db->io_mu);
    return tide__io_open(db->o.io_backend, 64, out);
}

void tide__db_io_put(struct tide_db *db, struct tide_io *io)
{
    pthread_mutex_lock(&db->io_mu);
    if (db->n_io_pool < sizeof(db->io_pool) / sizeof(db->io_pool[0])) {
        db->io_pool[db->n_io_pool++] = io;
        io = NULL;
    }
    pthread_mutex_unlock(&db->io_mu);
    tide__io_close(io);
}

/* ---- Appending ------------------------------------------------------- */

/* A retry of a batch still in flight: answered once that one is. */
struct dup_wait {
    struct dup_wait *next;
    uint64_t producer_id;
    uint64_t sequence;
    tide_append_cb cb;
    void *ctx;
    int rc;
};

/* Ticket hook (before the callback): the producer's batch is answered.
 * Engine thread. */
static void batch_done(struct ticket *t, int rc)
{
    struct tide_db *db = t->owner;
    struct dup_wait *ready = NULL, **pp;
    struct producer *e;

    pthread_mutex_lock(&db->prod_mu);
    e = tide__dedup_find(&db->prod, t->producer_id);
    if (e) {
        e->inflight--;
        /* A failed batch is not accepted any more, unless a later one
         * of the producer was accepted since. */
        if (rc && e->accepted == t->sequence)
            e->accepted =
                t->prev_accepted > e->applied ? t->prev_accepted : e->applied;
    }
    for (pp = &db->dup_waiters; *pp;) {
        struct dup_wait *w = *pp;

        if (w->producer_id == t->producer_id &&
            (!e || e->inflight == 0 || w->sequence <= e->applied)) {
            *pp = w->next;
            w->next = ready;
            ready = w;
            continue;
        }
        pp = &w->next;
    }
    for (struct dup_wait *w = ready; w; w = w->next) {
        int dup = e && w->sequence <= e->applied;

        if (dup)
            atomic_fetch_add(&db->batches_duplicate, 1);
        w->rc = dup ? TIDE_EDUPLICATE : rc ? rc : TIDE_EIO;
    }
    pthread_mutex_unlock(&db->prod_mu);
    while (ready) {
        struct dup_wait *w = ready;

        ready = w->next;
        w->cb(w->ctx, w->rc);
        tide_free(w);
    }
}

/* Decide whether (producer, sequence) of `t` is a duplicate (invariant 6).
 * prod_mu is held. Returns 0 (accepted, counted in flight), 1 (parked
 * behind the same sequence in flight), 2 (a duplicate: answer it) or
 * -ENOMEM. */
static int dedup_accept(struct tide_db *db, struct ticket *t, tide_append_cb cb,
                        void *ctx)
{
    struct producer *e = tide__dedup_entry(&db->prod, t->producer_id);
    struct dup_wait *w;

    if (!e)
        return -ENOMEM;
    if (t->sequence <= e->applied) {
        atomic_fetch_add(&db->batches_duplicate, 1);
        return 2;
    }
    if (t->sequence <= e->accepted) {
        /* The same or a later sequence is in flight: its outcome decides
         * (a duplicate once applied, its error if it fails). */
        w = tide_calloc(1, sizeof(*w));
        if (!w)
            return -ENOMEM;
        *w = (struct dup_wait){
            db->dup_waiters, t->producer_id, t->sequence, cb, ctx, 0};
        db->dup_waiters = w;
        return 1;
    }
    t->prev_accepted = e->accepted;
    e->accepted = t->sequence;
    e->inflight++;
    t->on_done = batch_done;
    t->owner = db;
    return 0;
}

int tide__db_fail_code(struct tide_db *db)
{
    int rc = atomic_load(&db->failed);

    return rc ? rc : TIDE_EIO;
}

int tide_db_append(tide_db *db, const struct tide_batch *batch,
                   tide_append_cb cb, void *ctx)
{
    size_t bytes[TIDE_SHARDS_MAX] = {0};
    uint32_t points[TIDE_SHARDS_MAX] = {0};
    struct req *reqs[TIDE_SHARDS_MAX] = {0};
    uint8_t *pos[TIDE_SHARDS_MAX];
    struct ticket *t;
    uint64_t total = 0, mask = 0;
    unsigned parts = 0;
    uint32_t prefix;
    int rc;

    if (atomic_load(&db->closing))
        return TIDE_ECLOSED;
    if (atomic_load(&db->failed))
        return tide__db_fail_code(db);
    if (!cb || (batch->n_columns && !batch->columns))
        return TIDE_EINVAL;
    for (uint32_t i = 0; i < batch->n_columns; i++) {
        const struct tide_column *c = &batch->columns[i];
        unsigned sh;

        if (!tide__wal_batch_column_valid(c))
            return TIDE_EINVAL;
        total += c->n;
        if (total > TIDE_BATCH_POINTS_MAX)
            return TIDE_EFULL;
        if (c->n == 0)
            continue;
        sh = tide__db_shard_of(db, c->series_id);
        if (!bytes[sh])
            parts++;
        mask |= 1ull << sh;
        bytes[sh] += tide__wal_batch_column_bytes(c);
        points[sh] += c->n;
    }
    if (parts == 0) {
        /* Nothing to store: durable by definition. */
        cb(ctx, 0);
        return 0;
    }
    t = tide_calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    /* A batch over several shards is a part record per shard, each with
     * the batch id and the set of shards (docs/file-format.md). */
    prefix = parts > 1 ? TIDE_WAL_PART_HEADER : 0;
    for (unsigned sh = 0; sh < db->n_shards; sh++) {
        struct req *r;
        size_t len = prefix + TIDE_WAL_BATCH_HEADER + bytes[sh];

        if (!bytes[sh])
            continue;
        r = tide_malloc(sizeof(*r) + len);
        if (!r) {
            rc = -ENOMEM;
            goto fail;
        }
        memset(r, 0, sizeof(*r));
        r->kind = REQ_BATCH;
        r->ticket = t;
        r->points = points[sh];
        r->rec_type = parts > 1 ? TIDE_WAL_PART : TIDE_WAL_BATCH;
        r->rec_len = (uint32_t)len;
        memset(r->rec, 0, prefix);
        tide__put_le64(r->rec + 8, mask);
        tide__wal_batch_start(r->rec + prefix, batch->producer_id,
                              batch->sequence);
        pos[sh] = r->rec + prefix + TIDE_WAL_BATCH_HEADER;
        reqs[sh] = r;
    }
    for (uint32_t i = 0; i < batch->n_columns; i++) {
        const struct tide_column *c = &batch->columns[i];
        unsigned sh;

        if (c->n == 0)
            continue;
        sh = tide__db_shard_of(db, c->series_id);
        pos[sh] =
            tide__wal_batch_put_column(reqs[sh]->rec + prefix, pos[sh], c);
    }
    t->parts = parts;
    t->cb = cb;
    t->ctx = ctx;
    t->producer_id = batch->producer_id;
    t->sequence = batch->sequence;
    atomic_store(&t->pending, parts);
    pthread_mutex_lock(&db->prod_mu);
    if (batch->producer_id && batch->sequence) {
        rc = dedup_accept(db, t, cb, ctx);
        if (rc) {
            pthread_mutex_unlock(&db->prod_mu);
            for (unsigned sh = 0; sh < db->n_shards; sh++)
                tide_free(reqs[sh]);
            tide_free(t);
            if (rc == 2)
                cb(ctx, TIDE_EDUPLICATE);
            return rc < 0 ? rc : 0;
        }
    }
    if (parts > 1) {
        t->batch_id = db->next_batch_id++;
        for (unsigned sh = 0; sh < db->n_shards; sh++)
            if (reqs[sh])
                tide__put_le64(reqs[sh]->rec, t->batch_id);
    }
    /* Under prod_mu: parts reach every inbox in batch id order. */
    for (unsigned sh = 0; sh < db->n_shards; sh++)
        if (reqs[sh])
            tide__inbox_push(&db->shards[sh].in, reqs[sh]);
    pthread_mutex_unlock(&db->prod_mu);
    return 0;
fail:
    for (unsigned sh = 0; sh < db->n_shards; sh++)
        tide_free(reqs[sh]);
    tide_free(t);
    return rc;
}

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int rc;
};

static void waiter_cb(void *ctx, int rc)
{
    struct waiter *w = ctx;

    pthread_mutex_lock(&w->mu);
    w->rc = rc;
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int waiter_wait(struct waiter *w)
{
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    return w->rc;
}

#define WAITER_INIT                                                            \
    {                                                                          \
        PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0              \
    }

int tide_db_append_wait(tide_db *db, const struct tide_batch *batch)
{
    struct waiter w = WAITER_INIT;
    int rc = tide_db_append(db, batch, waiter_cb, &w);

    return rc ? rc : waiter_wait(&w);
}

/* Free bytes on the file system of `path` (for unprivileged users), or 0. */
static uint64_t free_bytes(const char *path)
{
    struct statvfs v;

    if (statvfs(path, &v) != 0)
        return 0;
    return (uint64_t)v.f_bavail * v.f_frsize;
}

int tide__db_set_failed(struct tide_db *db, int rc, const char *what,
                        const char *path)
{
    int state = rc == -ENOSPC || rc == -EDQUOT ? -ENOSPC : TIDE_EIO;
    int expected = 0;
    uint64_t avail;
    char msg[sizeof(db->err_msg)];

    if (!atomic_compare_exchange_strong(&db->failed, &expected, state)) {
        /* Already failed: only a hard error makes it worse. */
        if (state != TIDE_EIO || expected != -ENOSPC ||
            !atomic_compare_exchange_strong(&db->failed, &expected, state))
            return atomic_load(&db->failed);
    }
    avail = free_bytes(db->dir);
    snprintf(msg, sizeof(msg),
             "%s failed on %s: %s (errno %d); %llu bytes free", what,
             path ? path : db->dir, tide_strerror(rc),
             rc < 0 && rc > -4096 ? -rc : 0, (unsigned long long)avail);
    pthread_mutex_lock(&db->err_mu);
    memcpy(db->err_msg, msg, sizeof(msg));
    pthread_mutex_unlock(&db->err_mu);
    if (state == -ENOSPC) {
        atomic_fetch_add(&db->nospace_events, 1);
        tide__db_log(db, TIDE_LOG_ERROR,
                     "%s; writes are refused until space returns (retried "
                     "every %u ms)",
                     msg, db->o.nospace_retry_ms);
        /* The flusher retries: wake it to start its timer. */
        pthread_mutex_lock(&db->fl_mu);
        pthread_cond_signal(&db->fl_cv);
        pthread_mutex_unlock(&db->fl_mu);
    } else {
        tide__db_log(db, TIDE_LOG_ERROR,
                     "%s; the database refuses writes until it is reopened",
                     msg);
    }
    return state;
}

/* A resume attempt completed (every shard wrote the abort list, or one
 * failed). Engine thread. */
static void resume_done(void *ctx, int rc)
{
    struct tide_db *db = ctx;
    uint64_t gen = db->abort_gen_resume;
    int expected = -ENOSPC;

    pthread_mutex_lock(&db->dec_mu);
    /* Aborts added meanwhile may be missing from some shard: retry. */
    if (rc == 0 && db->abort_gen != gen)
        rc = -EAGAIN;
    if (rc == 0)
        db->n_aborts = 0;
    pthread_mutex_unlock(&db->dec_mu);
    pthread_mutex_lock(&db->fl_mu);
    if (rc == 0 && atomic_compare_exchange_strong(&db->failed, &expected, 0)) {
        tide__db_log(db, TIDE_LOG_INFO,
                     "space is back (%llu bytes free): writes resumed",
                     (unsigned long long)free_bytes(db->dir));
        /* Frozen heads whose flush failed for lack of space. */
        for (unsigned i = 0; i < db->n_shards; i++)
            if (db->shards[i].frozen)
                db->shards[i].flush_wanted = 1;
    }
    db->resuming = 0;
    pthread_cond_signal(&db->fl_cv);
    pthread_mutex_unlock(&db->fl_mu);
}

/* Queue one request of `kind` to every shard under one ticket, whose
 * cb(ctx, rc) runs once all of them are done. -ENOMEM, with nothing
 * queued, when the requests cannot be allocated. */
static int to_every_shard(struct tide_db *db, enum req_kind kind,
                          tide_append_cb cb, void *ctx)
{
    struct ticket *t = tide_calloc(1, sizeof(*t));
    struct req *reqs[TIDE_SHARDS_MAX];

    if (!t)
        return -ENOMEM;
    for (unsigned i = 0; i < db->n_shards; i++) {
        reqs[i] = tide_calloc(1, sizeof(struct req));
        if (!reqs[i]) {
            while (i-- > 0)
                tide_free(reqs[i]);
            tide_free(t);
            return -ENOMEM;
        }
        reqs[i]->kind = kind;
        reqs[i]->ticket = t;
    }
    t->parts = db->n_shards;
    t->cb = cb;
    t->ctx = ctx;
    atomic_store(&t->pending, db->n_shards);
    for (unsigned i = 0; i < db->n_shards; i++)
        tide__inbox_push(&db->shards[i].in, reqs[i]);
    return 0;
}

void tide__db_resume(struct tide_db *db)
{
    /* Before the requests are queued: resume_done() compares it with the
     * abort generation once they are done. */
    pthread_mutex_lock(&db->dec_mu);
    db->abort_gen_resume = db->abort_gen;
    pthread_mutex_unlock(&db->dec_mu);
    if (to_every_shard(db, REQ_RESUME, resume_done, db))
        resume_done(db, -ENOMEM);
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static int validate_options(const struct tide_db_options *o)
{
    if (o->shards > TIDE_SHARDS_MAX || o->chunk_points_max < 16 ||
        o->chunk_points_max > 65536 || o->head_bytes_max < (1u << 20) ||
        o->wal_file_bytes < (1u << 20) || o->partition_ns <= 0 ||
        o->sync > TIDE_SYNC_NONE || o->io_backend < 0 || o->io_backend > 2)
        return TIDE_EINVAL;
    return 0;
}

static void db_free(struct tide_db *db)
{
    for (unsigned i = 0; db->shards && i < db->n_shards; i++)
        tide__shard_fini(&db->shards[i]);
    tide_free(db->shards);
    tide__seglist_release(db->seg_cur);
    for (unsigned i = 0; i < db->n_io_pool; i++)
        tide__io_close(db->io_pool[i]);
    tide__io_close(db->flush_io);
    tide__manifest_fini(&db->man);
    tide__keys_free(db->keys); /* after every segment let go of it */
    tide__dcache_free(db->dcache);
    if (db->lock_fd >= 0)
        close(db->lock_fd);
    /* Every ticket completed (the inboxes' fini), so no retry waits. */
    TIDE_ASSERT(!db->dup_waiters);
    tide__dedup_fini(&db->prod);
    tide_free(db->aborts);
    tide_free(db->rec_drop);
    tide_free(db->rec_abort);
    pthread_mutex_destroy(&db->prod_mu);
    pthread_mutex_destroy(&db->dec_mu);
    pthread_cond_destroy(&db->dec_cv);
    pthread_mutex_destroy(&db->err_mu);
    pthread_mutex_destroy(&db->seg_mu);
    pthread_mutex_destroy(&db->man_mu);
    pthread_mutex_destroy(&db->fl_mu);
    pthread_mutex_destroy(&db->io_mu);
    pthread_cond_destroy(&db->fl_cv);
    pthread_cond_destroy(&db->done_cv);
    tide_free(db->dir);
    tide_free(db->seg_dir);
    tide_free(db);
}

/* Wake every thread and wait for them to finish. */
static void stop_threads(struct tide_db *db)
{
    tide__compact_stop(db); /* it flushes through the writers */
    pthread_mutex_lock(&db->fl_mu);
    db->stopping = 1;
    pthread_cond_broadcast(&db->fl_cv);
    pthread_cond_broadcast(&db->done_cv);
    pthread_mutex_unlock(&db->fl_mu);
    /* A writer waiting for a part that will never come (an append that
     * raced the close) gives up. */
    pthread_mutex_lock(&db->dec_mu);
    db->dec_stop = 1;
    pthread_cond_broadcast(&db->dec_cv);
    pthread_mutex_unlock(&db->dec_mu);
    for (unsigned i = 0; db->shards && i < db->n_shards; i++) {
        struct shard *s = &db->shards[i];

        tide__inbox_wake(&s->in);
        if (s->started)
            pthread_join(s->thread, NULL);
        s->started = 0;
    }
    if (db->flusher_started)
        pthread_join(db->flusher, NULL);
    db->flusher_started = 0;
}

int tide_db_open(const char *dir, const struct tide_db_options *opts,
                 tide_db **out)
{
    struct tide_db *db;
    char path[PATH_MAX];
    int rc;

    db = tide_calloc(1, sizeof(*db));
    if (!db)
        return -ENOMEM;
    db->lock_fd = -1;
    pthread_mutex_init(&db->seg_mu, NULL);
    pthread_mutex_init(&db->man_mu, NULL);
    pthread_mutex_init(&db->fl_mu, NULL);
    pthread_mutex_init(&db->io_mu, NULL);
    pthread_mutex_init(&db->prod_mu, NULL);
    pthread_mutex_init(&db->dec_mu, NULL);
    pthread_mutex_init(&db->err_mu, NULL);
    pthread_cond_init(&db->fl_cv, NULL);
    pthread_cond_init(&db->dec_cv, NULL);
    pthread_cond_init(&db->done_cv, NULL);
    db->next_batch_id = 1;
    if (opts)
        db->o = *opts;
    else
        tide_db_options_init(&db->o);
    rc = validate_options(&db->o);
    if (rc)
        goto fail;
    if (db->o.nospace_retry_ms == 0)
        db->o.nospace_retry_ms = 1000;
    snprintf(path, sizeof(path), "%s/seg", dir);
    db->dir = tide_strdup(dir);
    db->seg_dir = tide_strdup(path);
    if (!db->dir || !db->seg_dir) {
        rc = -ENOMEM;
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/wal", dir);
    if ((rc = make_dir(dir)) || (rc = make_dir(db->seg_dir)) ||
        (rc = make_dir(path)))
        goto fail;
    snprintf(path, sizeof(path), "%s/LOCK", dir);
    db->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (db->lock_fd < 0) {
        rc = -errno;
        goto fail;
    }
    if (flock(db->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        rc = errno == EWOULDBLOCK ? TIDE_ELOCKED : -errno;
        goto fail;
    }
    /* The flusher's I/O context also writes the MANIFEST at open. */
    rc = tide__io_open(db->o.io_backend, 8, &db->flush_io);
    if (rc)
        goto fail;
    db->io_backend = tide__io_backend_name(db->flush_io);
    if (db->o.data_key) {
        rc = tide__keys_new(db->o.data_key, db->o.key_ctx, keys_log, db,
                            &db->keys);
        /* A quarter of the head budget of decrypted chunks (64 MiB by
         * default): repeated reads then cost what plaintext ones do. */
        if (rc == 0)
            rc = tide__dcache_new(db->o.head_bytes_max / 4, &db->dcache);
        if (rc) {
            tide__db_log(db, TIDE_LOG_ERROR,
                         "encryption at rest: no engine data key (account "
                         "0): %s",
                         tide_strerror(rc));
            goto fail;
        }
    }
    rc = tide__seglist_new(&db->seg_cur);
    if (rc == 0)
        rc = tide__recover_manifest(db);
    if (rc)
        goto fail;
    db->n_shards = db->man.n_shards;
    db->head_bytes_per_shard = db->o.head_bytes_max / db->n_shards;
    db->shards = tide_calloc(db->n_shards, sizeof(*db->shards));
    if (!db->shards) {
        rc = -ENOMEM;
        goto fail;
    }
    for (unsigned i = 0; i < db->n_shards; i++) {
        rc = tide__shard_init(db, &db->shards[i], i);
        if (rc)
            goto fail;
    }
    rc = tide__recover_scan(db);
    for (unsigned i = 0; i < db->n_shards && rc == 0; i++)
        rc = tide__recover_shard(db, &db->shards[i]);
    if (rc)
        goto fail;
    for (unsigned i = 0; i < db->n_shards; i++) {
        rc = tide__shard_start(&db->shards[i]);
        if (rc)
            goto fail;
    }
    rc = -pthread_create(&db->flusher, NULL, tide__flush_main, db);
    if (rc)
        goto fail;
    db->flusher_started = 1;
    rc = tide__compact_start(db);
    if (rc)
        goto fail;
    tide__db_log(db, TIDE_LOG_INFO,
                 "opened %s: %u shards, %s I/O, sync=%s, encryption %s", dir,
                 db->n_shards, db->io_backend,
                 db->o.sync == TIDE_SYNC_NONE ? "none" : "batch",
                 db->keys ? "on (AES-256-GCM)" : "off");
    if (db->o.sync == TIDE_SYNC_NONE)
        tide__db_log(db, TIDE_LOG_WARN,
                     "sync=none: acknowledged writes can be lost on power "
                     "failure or kernel crash; for benchmarks only");
    *out = db;
    return 0;
fail:
    stop_threads(db);
    db_free(db);
    return rc;
}

/* Send a flush request to every shard and wait for all of them. */
static int flush_all(struct tide_db *db)
{
    struct waiter w = WAITER_INIT;
    int rc = to_every_shard(db, REQ_FLUSH, waiter_cb, &w);

    return rc ? rc : waiter_wait(&w);
}

int tide_db_flush(tide_db *db)
{
    if (atomic_load(&db->closing))
        return TIDE_ECLOSED;
    if (atomic_load(&db->failed))
        return tide__db_fail_code(db);
    return flush_all(db);
}

void tide_db_close(tide_db *db)
{
    int rc;

    if (!db)
        return;
    atomic_store(&db->closing, 1);
    tide__compact_stop(db); /* a job in progress is abandoned */
    if (!atomic_load(&db->failed)) {
        rc = flush_all(db);
        if (rc)
            tide__db_log(db, TIDE_LOG_WARN,
                         "flush at close failed: %s; the WAL keeps the data",
                         tide_strerror(rc));
    }
    stop_threads(db);
    db_free(db);
}

void tide_db_stats(tide_db *db, struct tide_db_stats *st)
{
    struct seglist *sl;

    memset(st, 0, sizeof(*st));
    st->points_appended = atomic_load(&db->points_appended);
    st->batches_appended = atomic_load(&db->batches_appended);
    st->batches_duplicate = atomic_load(&db->batches_duplicate);
    st->wal_syncs = atomic_load(&db->wal_syncs);
    for (unsigned b = 0; b < TIDE_SYNC_LAT_BUCKETS; b++)
        st->wal_sync_lat[b] = atomic_load(&db->wal_sync_lat[b]);
    st->wal_sync_ns_total = atomic_load(&db->wal_sync_ns_total);
    st->flushes = atomic_load(&db->flushes);
    st->shards = db->n_shards;
    st->io_backend = db->io_backend;
    sl = tide__seglist_acquire(db);
    st->segments = sl->n;
    for (uint32_t i = 0; i < sl->n; i++) {
        st->segment_bytes += sl->segs[i]->file_bytes;
        st->segment_points += sl->segs[i]->points;
        st->chunks += sl->segs[i]->n_chunks;
        if (sl->segs[i]->encrypted) {
            st->segments_encrypted++;
            st->segment_bytes_encrypted += sl->segs[i]->file_bytes;
        } else {
            st->segments_plaintext++;
            st->segment_bytes_plaintext += sl->segs[i]->file_bytes;
        }
    }
    st->encryption = db->keys != NULL;
    tide__seglist_release(sl);
    for (unsigned i = 0; i < db->n_shards; i++) {
        struct shard *s = &db->shards[i];

        pthread_rwlock_rdlock(&s->rw);
        st->head_points += s->head.points;
        st->head_bytes += s->head.bytes;
        if (s->frozen) {
            st->head_points += s->frozen->points;
            st->head_bytes += s->frozen->bytes;
        }
        pthread_rwlock_unlock(&s->rw);
        st->wal_bytes += atomic_load(&s->wal_bytes);
        st->queue_depth[i] = tide__inbox_depth(&s->in);
    }
    st->storage_error = atomic_load(&db->failed);
    st->nospace_events = atomic_load(&db->nospace_events);
    st->disk_free_bytes = free_bytes(db->dir);
    tide__compact_stats(db, st);
    pthread_mutex_lock(&db->err_mu);
    memcpy(st->storage_error_msg, db->err_msg, sizeof(st->storage_error_msg));
    pthread_mutex_unlock(&db->err_mu);
}
