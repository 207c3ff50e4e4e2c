/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The database object shared by db.c (open, recovery, shards, writer and
 * flusher threads) and read.c (range reads, aggregates, latest).
 *
 * Invariants:
 *   1. A shard's active head is mutated only by its writer thread, and only
 *      while holding the shard's `rw` lock for writing; readers hold it for
 *      reading while they copy points out.
 *   2. A point is in exactly one of: the active head, the frozen head, or a
 *      published segment, except during publication, which happens under
 *      the db's `seg_lock` and the shard's `rw` lock both held for writing
 *      (lock order: seg_lock, then rw).
 *   3. Every record in a shard's WAL files numbered >= replay_from is
 *      either in a head or in a segment listed in the MANIFEST.
 *   4. A batch's callback fires only after the commit group holding its
 *      records returned from fdatasync (sync=batch) or write (sync=none).
 */
#ifndef TIDE_ENGINE_DB_H
#define TIDE_ENGINE_DB_H

#include <pthread.h>
#include <stdatomic.h>

#include "head.h"
#include "internal.h"
#include "io.h"
#include "manifest.h"
#include "segment.h"
#include "wal.h"

enum req_kind {
    REQ_BATCH = 1,
    REQ_FLUSH = 2,
};

/* Completion shared by the per-shard parts of one append or flush. */
struct ticket {
    atomic_uint pending; /* parts not yet complete */
    atomic_uint dups;    /* parts that were duplicates */
    atomic_int err;      /* first error of any part */
    unsigned parts;
    tide_append_cb cb;
    void *ctx;
};

/* A shard's part of an append (its WAL record), or a flush request. */
struct req {
    struct req *next;
    enum req_kind kind;
    struct ticket *ticket;
    uint64_t producer_id;
    uint64_t sequence;
    uint32_t points;
    uint32_t rec_len;
    int dup;
    _Alignas(8) uint8_t rec[]; /* WAL batch record payload */
};

/* Producer id -> highest applied sequence; open addressing. */
struct producers {
    uint64_t *ids;
    uint64_t *seqs;
    uint32_t cap; /* power of two */
    uint32_t n;
};

struct shard {
    struct tide_db *db;
    unsigned idx;
    pthread_t thread;
    int started;
    char *wal_dir;

    _Atomic(struct req *) inbox; /* LIFO stack pushed by appenders */
    atomic_uint depth;
    atomic_int sleeping;
    pthread_mutex_t wake_mu;
    pthread_cond_t wake_cv;

    struct wal wal;
    struct tide_io *io;
    struct producers prod;
    atomic_uint_fast64_t wal_bytes;

    pthread_rwlock_t rw; /* the heads, against readers (invariant 1) */
    struct head head;
    struct head *frozen;        /* being written to segments, or NULL */
    uint64_t frozen_replay;     /* WAL file to replay from once flushed */
    struct req *frozen_waiters; /* flush requests waiting for `frozen` */
    int flush_wanted;           /* flusher should take `frozen` */
};

struct tide_db {
    char *dir;
    char *seg_dir;
    struct tide_db_options o;
    int lock_fd;
    unsigned n_shards;
    struct shard *shards;
    uint64_t head_bytes_per_shard;

    pthread_rwlock_t seg_lock; /* the segment list (invariant 2) */
    struct seg **segs;
    uint32_t n_segs;
    uint32_t cap_segs;
    /* Bumped whenever segs[] changes (under seg_lock held for writing), so
     * a reader that planned chunk reads under an earlier read hold can
     * tell whether the plan still covers every segment. */
    uint64_t seg_gen;

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

    atomic_int failed; /* sticky: TIDE_EIO after a failed write or sync */
    atomic_int closing;

    atomic_uint_fast64_t points_appended;
    atomic_uint_fast64_t batches_appended;
    atomic_uint_fast64_t batches_duplicate;
    atomic_uint_fast64_t wal_syncs;
    atomic_uint_fast64_t wal_sync_lat[TIDE_SYNC_LAT_BUCKETS];
    atomic_uint_fast64_t wal_sync_ns_total;
    atomic_uint_fast64_t flushes;
    const char *io_backend;
};

/* Log through the user's callback, formatted. Thread-safe. */
void tide__db_log(struct tide_db *db, enum tide_log_level level,
                  const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The shard that owns `series_id`. */
unsigned tide__db_shard_of(const struct tide_db *db, uint64_t series_id);

/* Borrow an I/O context for a read; return it with tide__db_io_put. */
int tide__db_io_get(struct tide_db *db, struct tide_io **out);
void tide__db_io_put(struct tide_db *db, struct tide_io *io);

#endif /* TIDE_ENGINE_DB_H */
