/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The database object and what the engine's files share about it. The
 * files follow the storage hierarchy, db → shard → window → segment →
 * chunk, with each level's read path beside it:
 *
 *   db.c          public entry points: open, append, flush, close, stats
 *   recover.c     MANIFEST and segments at open; WAL replay into heads
 *   inbox.c       requests, tickets, the shard inbox
 *   shard.c       a shard and its writer thread (group commit)
 *   dedup.c       the producer table (batch deduplication)
 *   wal_batch.c   the WAL batch record codec; wal.c frames the records
 *   flush.c       freezing heads, the flusher thread, publication
 *   window.c      time windows (tier, partition): one segment each
 *   head.c        a shard's in-memory columns; manifest.c the MANIFEST
 *   segment.c     segment files; column*.c the chunk codecs
 *
 * and the read path (read.h): db_read.c (range iterators, latest) and
 * db_aggregate.c, shard_read.c (one series from segments and heads),
 * segment_read.c (which chunks; reading them), chunk_read.c (decoding),
 * gather.c (a series' points being collected).
 *
 * Invariants:
 *   1. A shard's active head is mutated only by its writer thread, and only
 *      while holding the shard's `rw` lock for writing; readers hold it for
 *      reading while they copy points out. No disk I/O runs under `rw`:
 *      WAL commits and rotations happen with it released.
 *   2. A point is in exactly one of: the active head, the frozen head, or a
 *      segment of the current segment list `seg_cur`, except during
 *      publication. A flush publishes by swapping in a new list (seglist.h)
 *      and clearing `frozen` together, holding man_mu (publishers are
 *      serialised), the shard's `rw` for writing and, for the pointer swap
 *      only, seg_mu (lock order: man_mu, rw, seg_mu, fl_mu); it sets the
 *      shard's pub_gen to the new list's gen. A reader holds a list across
 *      its chunk I/O with no lock at all, so readers never block the
 *      writer. When it reads a shard's heads (under `rw`) it checks
 *      pub_gen <= its list's gen; otherwise points may have left the heads
 *      for segments its list lacks, and it reads again on the current list
 *      (TIDE__READ_STALE). A list, and every segment in it, stays valid
 *      until its last holder releases it.
 *   3. Every record in a shard's WAL files numbered >= replay_from is
 *      either in a head or in a segment listed in the MANIFEST.
 *   4. A batch's callback fires only after the commit group holding its
 *      records returned from fdatasync (sync=batch) or write (sync=none).
 *   5. A point is applied to a head only once its WAL record is durable,
 *      and, for a batch over several shards, once every part's record is
 *      durable (the batch's commit point; shard.c). A part that is durable
 *      while another part failed is never applied, and is voided on disk
 *      by an abort record in every shard before writes resume (or at the
 *      next open, by recovery's completeness rule; recover.c).
 *   6. Deduplication is decided once, by tide_db_append under prod_mu, in
 *      call order, against the database-wide producer table; the parts of
 *      batches over shards are queued under the same lock, so they reach
 *      every shard in batch id order, which is what makes the writers'
 *      waits for each other's parts free of cycles.
 *   7. The segment list (and the MANIFEST, in the same order) is oldest
 *      first; a read lets a newer source win a tie. A flush appends; a
 *      compaction puts its outputs in the place of its newest input, and
 *      none of the segments between its oldest and newest input can hold
 *      the same points (compact.c).
 */
#ifndef TIDE_ENGINE_DB_H
#define TIDE_ENGINE_DB_H

#include <pthread.h>
#include <stdatomic.h>

#include "dcache.h"
#include "dedup.h"
#include "head.h"
#include "inbox.h"
#include "internal.h"
#include "io.h"
#include "keys.h"
#include "manifest.h"
#include "seglist.h"
#include "segment.h"
#include "wal.h"

struct shard {
    struct tide_db *db;
    unsigned idx;
    pthread_t thread;
    int started;
    /* The writer thread once it runs (invariant 1): set by the thread
     * itself, so that it is valid before the thread touches the head. */
    pthread_t writer;
    atomic_int writer_running;
    int head_locked; /* the writer holds `rw` for writing (invariant 1) */
    char *wal_dir;

    struct inbox in;

    struct wal wal;
    struct tide_io *io;
    /* Highest batch id of the parts this shard has put in its WAL: the
     * mark record that opens each rotated file (wal.h, TIDE_WAL_MARK). */
    uint64_t parts_hw;
    int wal_full; /* the last rotation failed: resuming needs a new file */
    atomic_uint_fast64_t wal_bytes;

    pthread_rwlock_t rw; /* the heads, against readers (invariant 1) */
    struct head head;
    struct head *frozen;        /* being written to segments, or NULL */
    uint64_t frozen_replay;     /* WAL file to replay from once flushed */
    struct req *frozen_waiters; /* flush requests waiting for `frozen` */
    int flush_wanted;           /* flusher should take `frozen` */
    /* Generation of the first segment list holding this shard's latest
     * published flush; under `rw` (invariant 2). */
    uint64_t pub_gen;
};

struct tide_db {
    char *dir;
    char *seg_dir;
    struct tide_db_options o;
    int lock_fd;
    unsigned n_shards;
    struct shard *shards;
    uint64_t head_bytes_per_shard;

    /* The published segment list (seglist.h; invariant 2). seg_mu guards
     * only the pointer and is never held across I/O. */
    pthread_mutex_t seg_mu;
    struct seglist *seg_cur;

    pthread_mutex_t man_mu; /* `man`, owned by the flusher after open */
    struct manifest man;

    /* The flusher thread and its work signal; also guards shard->frozen
     * transitions and the writers' wait for a free frozen slot. */
    pthread_t flusher;
    int flusher_started;
    pthread_mutex_t fl_mu;
    pthread_cond_t fl_cv;   /* flusher: work arrived */
    pthread_cond_t done_cv; /* writers: a frozen head was published */
    int stopping;
    struct tide_io *flush_io;

    pthread_mutex_t io_mu; /* pool of reader I/O contexts */
    struct tide_io *io_pool[8];
    unsigned n_io_pool;

    /* Deduplication and the order of batches over shards (invariant 6):
     * the producer table, the answers to retries of batches still in
     * flight, and the next batch id. */
    pthread_mutex_t prod_mu;
    struct producers prod;
    struct dup_wait *dup_waiters;
    uint64_t next_batch_id;

    /* Commit points of batches over shards (tickets' durable/aborted;
     * shard.c), the ids of those that failed, to be voided in every
     * shard's WAL before writes resume, and the writers' stop flag. */
    pthread_mutex_t dec_mu;
    pthread_cond_t dec_cv;
    uint64_t *aborts;
    uint32_t n_aborts, cap_aborts;
    uint64_t abort_gen;        /* bumped by every addition */
    uint64_t abort_gen_resume; /* abort_gen when a resume was queued */
    int dec_stop;

    /* Recovery only: sorted ids of parts not to apply, and the ids of
     * incomplete batches recovery writes abort records for. */
    uint64_t *rec_drop;
    uint32_t n_rec_drop;
    uint64_t *rec_abort;
    uint32_t n_rec_abort;

    /* Storage health. 0; -ENOSPC: writes are refused until space returns,
     * then resume on their own (the flusher retries, db.c); TIDE_EIO:
     * sticky until reopened. */
    atomic_int failed;
    atomic_int closing;
    int resuming; /* a resume attempt is queued; under fl_mu */
    pthread_mutex_t err_mu;
    char err_msg[256]; /* the last failure; under err_mu */
    atomic_uint_fast64_t nospace_events;

    atomic_uint_fast64_t points_appended;
    atomic_uint_fast64_t batches_appended;
    atomic_uint_fast64_t batches_duplicate;
    atomic_uint_fast64_t wal_syncs;
    atomic_uint_fast64_t wal_sync_lat[TIDE_SYNC_LAT_BUCKETS];
    atomic_uint_fast64_t wal_sync_ns_total;
    atomic_uint_fast64_t flushes;
    const char *io_backend;

    struct compactor *comp; /* the compaction thread (compact.h) */

    /* Encryption at rest: the data-key cache and the decrypted-chunk
     * cache, NULL when off (keys.h, dcache.h). */
    struct keys *keys;
    struct dcache *dcache;
};

/* Log through the user's callback, formatted. Thread-safe. */
void tide__db_log(struct tide_db *db, enum tide_log_level level,
                  const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The shard that owns `series_id`. */
unsigned tide__db_shard_of(const struct tide_db *db, uint64_t series_id);

/* Borrow an I/O context for a read; return it with tide__db_io_put. */
int tide__db_io_get(struct tide_db *db, struct tide_io **out);
void tide__db_io_put(struct tide_db *db, struct tide_io *io);

/* Enter the error state after `what` on `path` (may be NULL) failed with
 * `rc`: later writes return -ENOSPC when rc is -ENOSPC or -EDQUOT, until
 * space returns and they resume on their own, else TIDE_EIO until the db
 * is reopened. Logs the cause (errno, file, free space) once per episode.
 * Returns the state entered. Thread-safe. */
int tide__db_set_failed(struct tide_db *db, int rc, const char *what,
                        const char *path);

/* The code a write refused in the current error state is answered with
 * (TIDE_EIO when there is none). */
int tide__db_fail_code(struct tide_db *db);

/* Flusher: queue an attempt to leave the no-space state (every shard
 * writes the abort list and syncs; tide__shard_resume). */
void tide__db_resume(struct tide_db *db);

/* ---- shard.c ------------------------------------------------------------ */

/* Invariant 1: only the shard's writer thread, or recovery before it
 * starts, may change the shard's active head and WAL. */
static inline int tide__shard_owned(const struct shard *s)
{
    return !atomic_load(&s->writer_running) ||
           pthread_equal(pthread_self(), s->writer);
}

/* Set up shard `idx` of `db`: locks, inbox, WAL directory and I/O context.
 * Recovery (tide__recover_shard) comes next; no thread runs yet. Returns
 * 0, -ENOMEM or -errno; tide__shard_fini() releases a partial setup. */
int tide__shard_init(struct tide_db *db, struct shard *s, unsigned idx);

/* Join the writer (after the db's stopping flag is set), complete what is
 * still queued with TIDE_ECLOSED and release the shard. */
void tide__shard_fini(struct shard *s);

/* Start the shard's writer thread. Returns 0 or -errno. */
int tide__shard_start(struct shard *s);

/* Start WAL file `seq` and open it with a snapshot of the producer table,
 * so that deduplication survives the deletion of older files, the mark
 * record (parts_hw) and, when n_aborts, an abort record. The file is
 * wal_file_bytes, or just big enough when the disk lacks room for that.
 * Writer thread (or recovery) only; the records are committed with the
 * next group. Returns 0, TIDE_EFULL or -errno. */
int tide__shard_rotate(struct shard *s, uint64_t seq, const uint64_t *aborts,
                       uint32_t n_aborts);

/* ---- flush.c ------------------------------------------------------------ */

/* Writer thread: hand the active head to the flusher (waiting while it is
 * still busy with the previous one) and attach the flush requests in
 * `waiters`, which complete once the head is published. Returns 0 or an
 * error (then the waiters are completed with it and the db may be
 * failed). */
int tide__flush_freeze(struct shard *s, struct req *waiters);

/* The flusher thread's body; `arg` is the db. */
void *tide__flush_main(void *arg);

/* ---- recover.c ---------------------------------------------------------- */

/* Load the MANIFEST (or create one for a new directory), open the segments
 * it lists and delete unlisted segment files. Returns 0, TIDE_ECORRUPT,
 * TIDE_EVERSION, -ENOMEM or -errno. */
int tide__recover_manifest(struct tide_db *db);

/* Read every shard's WAL once to decide which parts of batches over
 * shards are complete (rec_drop, rec_abort) and the next batch id; before
 * any tide__recover_shard. Returns 0, TIDE_ECORRUPT, TIDE_EVERSION,
 * -ENOMEM or -errno. */
int tide__recover_scan(struct tide_db *db);

/* Replay the shard's WAL from its replay point into its head, then start a
 * new WAL file and delete the files before the replay point. Returns 0,
 * TIDE_ECORRUPT, TIDE_EVERSION, -ENOMEM or -errno. */
int tide__recover_shard(struct tide_db *db, struct shard *s);

#endif /* TIDE_ENGINE_DB_H */
