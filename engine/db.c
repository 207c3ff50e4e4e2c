/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine's public entry points for writing and for the database's
 * life: open, append, flush, close, stats. The work is done elsewhere, one
 * file per level and subsystem (db.h lists them and the invariants).
 *
 * Life of an append:
 *
 *   tide_db_append ──► per-shard req (WAL batch record, wal_batch.c)
 *        ──► shard inbox (inbox.c)
 *        writer (shard.c): take all queued reqs ─► dedup (dedup.c)
 *                ─► WAL buffer (wal.c) + head (head.c)
 *                ─► write + fdatasync (one per group) ─► callbacks
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
#include <unistd.h>

#include "wal_batch.h"

void tide_db_options_init(struct tide_db_options *o)
{
    memset(o, 0, sizeof(*o));
    o->sync = TIDE_SYNC_BATCH;
    o->chunk_points_max = 8192;
    o->head_bytes_max = 256ull << 20;
    o->wal_file_bytes = 64ull << 20;
    o->partition_ns = 86400ll * 1000000000ll;
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

int tide_db_append(tide_db *db, const struct tide_batch *batch,
                   tide_append_cb cb, void *ctx)
{
    size_t bytes[TIDE_SHARDS_MAX] = {0};
    uint32_t points[TIDE_SHARDS_MAX] = {0};
    struct req *reqs[TIDE_SHARDS_MAX] = {0};
    uint8_t *pos[TIDE_SHARDS_MAX];
    struct ticket *t;
    uint64_t total = 0;
    unsigned parts = 0;
    int rc;

    if (atomic_load(&db->closing))
        return TIDE_ECLOSED;
    if (atomic_load(&db->failed))
        return TIDE_EIO;
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
        bytes[sh] += tide__wal_batch_column_bytes(c);
        points[sh] += c->n;
    }
    t = tide_calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    for (unsigned sh = 0; sh < db->n_shards; sh++) {
        struct req *r;

        if (!bytes[sh])
            continue;
        r = tide_malloc(sizeof(*r) + TIDE_WAL_BATCH_HEADER + bytes[sh]);
        if (!r) {
            rc = -ENOMEM;
            goto fail;
        }
        memset(r, 0, sizeof(*r));
        r->kind = REQ_BATCH;
        r->ticket = t;
        r->producer_id = batch->producer_id;
        r->sequence = batch->sequence;
        r->points = points[sh];
        r->rec_len = (uint32_t)(TIDE_WAL_BATCH_HEADER + bytes[sh]);
        tide__wal_batch_start(r->rec, batch->producer_id, batch->sequence);
        pos[sh] = r->rec + TIDE_WAL_BATCH_HEADER;
        reqs[sh] = r;
        parts++;
    }
    for (uint32_t i = 0; i < batch->n_columns; i++) {
        const struct tide_column *c = &batch->columns[i];
        unsigned sh;

        if (c->n == 0)
            continue;
        sh = tide__db_shard_of(db, c->series_id);
        pos[sh] = tide__wal_batch_put_column(reqs[sh]->rec, pos[sh], c);
    }
    if (parts == 0) {
        /* Nothing to store: durable by definition. */
        tide_free(t);
        cb(ctx, 0);
        return 0;
    }
    t->parts = parts;
    t->cb = cb;
    t->ctx = ctx;
    atomic_store(&t->pending, parts);
    for (unsigned sh = 0; sh < db->n_shards; sh++)
        if (reqs[sh])
            tide__inbox_push(&db->shards[sh].in, reqs[sh]);
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

void tide__db_set_failed(struct tide_db *db, int rc, const char *what)
{
    int expected = 0;

    if (atomic_compare_exchange_strong(&db->failed, &expected, TIDE_EIO))
        tide__db_log(db, TIDE_LOG_ERROR,
                     "%s failed: %s; the database refuses writes until it "
                     "is reopened",
                     what, tide_strerror(rc));
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
    if (db->lock_fd >= 0)
        close(db->lock_fd);
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
    pthread_mutex_lock(&db->fl_mu);
    db->stopping = 1;
    pthread_cond_broadcast(&db->fl_cv);
    pthread_cond_broadcast(&db->done_cv);
    pthread_mutex_unlock(&db->fl_mu);
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
    pthread_cond_init(&db->fl_cv, NULL);
    pthread_cond_init(&db->done_cv, NULL);
    if (opts)
        db->o = *opts;
    else
        tide_db_options_init(&db->o);
    rc = validate_options(&db->o);
    if (rc)
        goto fail;
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
        if (rc == 0)
            rc = tide__recover_shard(db, &db->shards[i]);
        if (rc)
            goto fail;
    }
    for (unsigned i = 0; i < db->n_shards; i++) {
        rc = tide__shard_start(&db->shards[i]);
        if (rc)
            goto fail;
    }
    rc = -pthread_create(&db->flusher, NULL, tide__flush_main, db);
    if (rc)
        goto fail;
    db->flusher_started = 1;
    tide__db_log(db, TIDE_LOG_INFO, "opened %s: %u shards, %s I/O, sync=%s",
                 dir, db->n_shards, db->io_backend,
                 db->o.sync == TIDE_SYNC_NONE ? "none" : "batch");
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
        reqs[i]->kind = REQ_FLUSH;
        reqs[i]->ticket = t;
    }
    t->parts = db->n_shards;
    t->cb = waiter_cb;
    t->ctx = &w;
    atomic_store(&t->pending, db->n_shards);
    for (unsigned i = 0; i < db->n_shards; i++)
        tide__inbox_push(&db->shards[i].in, reqs[i]);
    return waiter_wait(&w);
}

int tide_db_flush(tide_db *db)
{
    if (atomic_load(&db->closing))
        return TIDE_ECLOSED;
    if (atomic_load(&db->failed))
        return TIDE_EIO;
    return flush_all(db);
}

void tide_db_close(tide_db *db)
{
    int rc;

    if (!db)
        return;
    atomic_store(&db->closing, 1);
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
    }
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
}
