/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The storage engine's whole contract: open a data directory, append
 * batches of typed points durably, read ranges, aggregates and latest
 * values. No networking. docs/file-format.md specifies every file the
 * engine writes; docs/architecture.md the write and read paths.
 *
 * Thread-safety:
 *   1. tide_db_append() may be called from any number of threads at once.
 *      Each shard has one writer thread; callers only enqueue.
 *   2. Reads (tide_db_read_open, tide_db_aggregate, tide_db_latest) may run
 *      concurrently with each other and with appends. A read sees every
 *      batch whose completion has fired before the read started.
 *   3. An iterator belongs to one thread at a time.
 *   4. tide_db_close() must not race with any other call on the same db.
 */
#ifndef TIDE_ENGINE_H
#define TIDE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "tide/error.h"
#include "tide/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Return codes and values -------------------------------------------
 * 0 is success; system errors are -errno; the engine's own conditions are
 * the storage codes of tide/error.h (TIDE_ECORRUPT ... TIDE_EDUPLICATE),
 * described by tide_strerror(). Value types (enum tide_type) are in
 * tide/types.h. */

/* A string value: `len` bytes at `ptr`, not NUL-terminated. */
struct tide_str {
    const char *ptr;
    uint32_t len;
};

/* ---- Opening a data directory ------------------------------------------ */

typedef struct tide_db tide_db;
typedef struct tide_iter tide_iter;

enum tide_log_level {
    TIDE_LOG_ERROR = 0,
    TIDE_LOG_WARN = 1,
    TIDE_LOG_INFO = 2,
    TIDE_LOG_DEBUG = 3,
};

/* Log sink: one complete line without a newline. Called from any engine
 * thread; must be thread-safe. */
typedef void (*tide_log_fn)(void *ctx, enum tide_log_level level,
                            const char *msg);

enum tide_sync_mode {
    TIDE_SYNC_BATCH = 0, /* ack after the fdatasync covering the batch */
    TIDE_SYNC_NONE = 1,  /* ack after the WAL write; benchmarks only */
};

struct tide_db_options {
    unsigned shards;           /* 0 = one per online core; max 64 */
    enum tide_sync_mode sync;  /* default TIDE_SYNC_BATCH */
    uint32_t chunk_points_max; /* points per chunk; default 8192 */
    /* Head bytes at which a flush starts; default 256 MiB. While a flush
     * is still running the active head may grow to twice that, so heads
     * hold at most 3x this (the frozen one and the active one). */
    uint64_t head_bytes_max;
    uint64_t wal_file_bytes; /* WAL file size before rotation; 64 MiB */
    int64_t partition_ns;    /* segment time partition; default 1 day */
    int io_backend;          /* 0 auto, 1 io_uring, 2 sync */
    int repair;              /* truncate a corrupt WAL instead of
                                refusing to open; loses its tail */
    tide_clock_fn clock;     /* NULL = CLOCK_REALTIME */
    void *clock_ctx;
    tide_log_fn log; /* NULL = silent */
    void *log_ctx;
    /* While writes are refused for lack of space, how often the engine
     * tries to resume them; 0 = 1000 ms. */
    uint32_t nospace_retry_ms;
    /* Compaction (see "Retention and compaction" below): the policy it
     * applies, its I/O budget in MiB/s of segment bytes read plus written
     * (0 = unthrottled) and how often a routine pass runs (0 = only when
     * asked: tide_db_compact, tide_db_erase). Defaults: no policy (keep
     * everything, windows of partition_ns), 64 MiB/s, 600 s. */
    struct tide_retention {
        /* Width of the windows of `tier`'s segments in ns: a whole
         * multiple of partition_ns; 0 (or a bad value) = partition_ns. */
        int64_t (*window_ns)(void *ctx, uint16_t tier);
        /* The oldest timestamp to keep of `series_id` of `account_id`:
         * TIDE_KEEP_ALL, a horizon, or TIDE_KEEP_NONE (erased). */
        int64_t (*keep_from)(void *ctx, uint64_t account_id,
                             uint64_t series_id);
        void *ctx;
    } retention;
    uint32_t compaction_mb_s;
    uint32_t compaction_interval_s;
    /* Encryption at rest (docs/file-format.md, "Encryption at rest"). NULL =
     * new files are written in plaintext. data_key(key_ctx, account_id, key)
     * writes the 32-byte data key of `account_id` (0 = the engine's own key:
     * footers, manifests, and anything not owned by one account) and returns
     * 0, or TIDE_EKEY when that account's key was destroyed (crypto-shredded):
     * its blocks then count as erased: skipped on WAL replay and by reads,
     * dropped by compaction, never reported as corruption. Called from engine
     * threads, must be thread-safe; the engine caches what it derives. */
    int (*data_key)(void *key_ctx, uint64_t account_id, uint8_t key[32]);
    void *key_ctx;
};

/* Fill `o` with the defaults above. */
void tide_db_options_init(struct tide_db_options *o);

/*
 * Open (creating if needed) the data directory `dir` and recover it: load
 * the manifest, replay each shard's WAL after its checkpoint, start the
 * writer threads. `opts` may be NULL for defaults. On success *out owns the
 * directory lock until tide_db_close().
 * Errors: -errno (e.g. -EACCES), TIDE_ELOCKED, TIDE_ECORRUPT (a bad record
 * followed by good ones in a WAL, a bad manifest; the log names file and
 * offset), TIDE_EVERSION, TIDE_EINVAL (bad option), -ENOMEM; with
 * encryption at rest TIDE_EKEY (encrypted files but no data_key, another
 * engine key, or data_key failed for account 0; logged) and TIDE_ECIPHER
 * (a manifest, segment footer or WAL record followed by valid ones failed
 * authentication; the log names file and offset).
 */
int tide_db_open(const char *dir, const struct tide_db_options *opts,
                 tide_db **out);

/*
 * Stop accepting appends, complete every queued append (their callbacks
 * fire), flush the head into segments, and release everything. Accepts
 * NULL. Data already acknowledged is durable whether or not this runs.
 */
void tide_db_close(tide_db *db);

/* ---- Appending --------------------------------------------------------- */

/* One series' points within a batch. The caller owns every array; they are
 * copied before tide_db_append() returns. Timestamps may be in any order;
 * a repeated (series, ts) keeps the value written last. */
struct tide_column {
    uint64_t series_id;  /* dense id from the account sidecar, not 0 */
    uint64_t account_id; /* owner, recorded in segment footers */
    uint16_t tier;       /* retention tier id: segments partition by it */
    uint8_t type;        /* enum tide_type; fixed per series */
    uint32_t n;          /* points */
    const int64_t *ts_ns;
    union {
        const double *f64;
        const int64_t *i64;
        const uint8_t *b; /* one byte per point, 0 or 1 */
        const struct tide_str *str;
    } v;
};

struct tide_batch {
    /* A retried batch with the same non-zero (producer_id, sequence) is not
     * applied twice, across restarts too. Sequences must increase per
     * producer. sequence 0 disables the check. */
    uint64_t producer_id;
    uint64_t sequence;
    uint32_t n_columns;
    const struct tide_column *columns;
};

#define TIDE_STR_BYTES_MAX 65535u      /* one string value */
#define TIDE_BATCH_POINTS_MAX 4000000u /* one batch */

/*
 * Completion of an append: `rc` is 0 once every point of the batch is
 * durable (per the sync mode), TIDE_EDUPLICATE when the batch's (producer,
 * sequence) is not above the producer's last applied one, in any shard
 * (nothing redone; a retry of a batch still in flight is answered once
 * that one is), -ENOSPC when the disk is full (nothing of the batch is
 * applied; writes resume on their own once space returns), or TIDE_EIO
 * when a write or sync failed (nothing of the batch is applied; the db
 * stays failed until reopened). A batch is applied whole or not at all,
 * over all its shards, also across a crash. Runs on an engine thread (or
 * inside tide_db_append, for duplicates and empty batches): it must not
 * block, must not call tide_db_close() and must not append.
 */
typedef void (*tide_append_cb)(void *ctx, int rc);

/*
 * Queue `batch` for the shards of its series. Returns 0 when queued: `cb`
 * then fires exactly once (the batch's ticket). Returns an error at once,
 * with `cb` never called, for TIDE_EINVAL (type, counts, string length,
 * series id 0), TIDE_EFULL (batch above TIDE_BATCH_POINTS_MAX),
 * TIDE_ECLOSED, TIDE_EIO (db failed), -ENOSPC (out of space, see above)
 * or -ENOMEM. `cb` may run before this returns (duplicates, empty
 * batches).
 */
int tide_db_append(tide_db *db, const struct tide_batch *batch,
                   tide_append_cb cb, void *ctx);

/* tide_db_append() and wait for its completion; returns its rc. */
int tide_db_append_wait(tide_db *db, const struct tide_batch *batch);

/*
 * Write every shard's head into segments and checkpoint the WAL (old WAL
 * files are deleted). Blocks until done. Returns 0, TIDE_EIO or -errno.
 */
int tide_db_flush(tide_db *db);

/* ---- Reading ----------------------------------------------------------- */

/* A run of points of one series, in ascending time order, without
 * duplicates. Borrowed: valid until the next tide_iter_next() or
 * tide_iter_close() on the same iterator. */
struct tide_block {
    uint64_t series_id;
    uint8_t type;
    uint32_t n;
    const int64_t *ts_ns;
    union {
        const double *f64;
        const int64_t *i64;
        const uint8_t *b;
        const struct tide_str *str;
    } v;
};

/*
 * Open a range read of the `n` series in `ids` over [from_ns, to_ns). The
 * iterator returns each series' points in the order of `ids`, one or more
 * blocks per series; series without points are skipped. `ids` is copied.
 * Errors: TIDE_EINVAL, -ENOMEM, TIDE_ECLOSED.
 */
int tide_db_read_open(tide_db *db, const uint64_t *ids, uint32_t n,
                      int64_t from_ns, int64_t to_ns, tide_iter **out);

/*
 * Next block. Returns 1 with *blk set, 0 at the end, or an error:
 * TIDE_ECORRUPT (a chunk failed its checksum; the log names the file and
 * offset; no data of that chunk is returned), TIDE_ECIPHER (an encrypted
 * chunk failed authentication; logged the same way), -errno, -ENOMEM.
 * After an error the iterator returns it again.
 */
int tide_iter_next(tide_iter *it, struct tide_block *blk);

/* Close an iterator. Accepts NULL. */
void tide_iter_close(tide_iter *it);

/* ---- Reading newest first ----------------------------------------------- */

/* tide_db_read_open_flags(): return each series' blocks newest first. The
 * points within a block still ascend; the series keep the order of ids. */
#define TIDE_READ_DESC 1u

/*
 * tide_db_read_open() with `flags` (TIDE_READ_DESC or 0), so that a
 * descending read streams like an ascending one instead of its caller
 * holding a whole series to reverse it. Errors as tide_db_read_open();
 * an unknown flag is TIDE_EINVAL.
 */
int tide_db_read_open_flags(tide_db *db, const uint64_t *ids, uint32_t n,
                            int64_t from_ns, int64_t to_ns, unsigned flags,
                            tide_iter **out);

/* One time bucket of one series. Bool values count as 0/1, i64 as double.
 * String series have only count, first_ts and last_ts. */
struct tide_bucket {
    int64_t start_ns; /* origin_ns + k * bucket_ns (from_ns: one bucket) */
    uint64_t count;
    double sum;
    double min;
    double max;
    double first; /* value at the earliest timestamp in the bucket */
    double last;  /* value at the latest timestamp in the bucket */
    int64_t first_ts;
    int64_t last_ts;
};

/* Fold bucket `b` into `into` (same start_ns), as the engine does when it
 * merges sources: counts and sums add, first/last follow the timestamps,
 * and a NaN min or max gives way to any number, so the answer does not
 * depend on the order buckets are merged in. */
void tide_bucket_merge(struct tide_bucket *into, const struct tide_bucket *b);

struct tide_agg_series {
    uint64_t series_id;
    uint8_t type;
    uint32_t n_buckets; /* non-empty buckets only, ascending */
    struct tide_bucket *buckets;
};

struct tide_agg_stats {
    uint64_t chunks_decoded;
    uint64_t chunks_from_header; /* answered without decompression */
    uint64_t bytes_read;
};

/*
 * Aggregate each series in `ids` over [from_ns, to_ns) into buckets of
 * `bucket_ns` (0 = one bucket for the whole range). Buckets are aligned to
 * `origin_ns`: bucket k holds [origin_ns + k * bucket_ns, + bucket_ns) for
 * any integer k, so 0 aligns them to the epoch and the first and last
 * buckets may be partial (they hold only points in [from_ns, to_ns), but
 * start_ns is still the aligned start, which may be before from_ns). Only
 * origin_ns modulo bucket_ns matters; with bucket_ns 0 it is ignored and
 * the one bucket starts at from_ns. On success *out is an
 * array of `n` results in the order of `ids` (a series without points has
 * n_buckets 0), freed with tide_agg_free(*out, n). `stats` may be NULL.
 * Errors as tide_iter_next().
 */
int tide_db_aggregate(tide_db *db, const uint64_t *ids, uint32_t n,
                      int64_t from_ns, int64_t to_ns, int64_t bucket_ns,
                      int64_t origin_ns, struct tide_agg_series **out,
                      struct tide_agg_stats *stats);

void tide_agg_free(struct tide_agg_series *res, uint32_t n);

/* ---- Bounded aggregates ------------------------------------------------- */

/*
 * tide_db_aggregate() whose results may hold at most `max_buckets` buckets
 * in all: TIDE_EFULL as soon as they would hold more, before those buckets
 * (or the partial buckets of a series' raw points) are built, so that a
 * query too large for its limit costs neither the memory nor the time of
 * building its answer. Other errors as tide_db_aggregate().
 */
int tide_db_aggregate_max(tide_db *db, const uint64_t *ids, uint32_t n,
                          int64_t from_ns, int64_t to_ns, int64_t bucket_ns,
                          int64_t origin_ns, uint64_t max_buckets,
                          struct tide_agg_series **out,
                          struct tide_agg_stats *stats);

/* The newest point of a series. */
struct tide_point {
    uint64_t series_id;
    int found; /* 0 when the series has no point */
    uint8_t type;
    int64_t ts_ns;
    union {
        double f64;
        int64_t i64;
        uint8_t b;
        struct tide_str str; /* owned by the result array */
    } v;
};

/*
 * Newest point of each series in `ids`. On success *out is an array of `n`
 * points in the order of `ids`, freed with tide_latest_free(*out, n).
 */
int tide_db_latest(tide_db *db, const uint64_t *ids, uint32_t n,
                   struct tide_point **out);

void tide_latest_free(struct tide_point *pts, uint32_t n);

/* ---- Retention and compaction ------------------------------------------
 *
 * A background thread rewrites each (shard, tier, window)'s segments into
 * one (or a few, of at most 256 MiB) with full chunks, the last write of a
 * (series, ts) winning, and drops what the retention policy no longer
 * keeps. A window wholly behind every account's horizon is deleted without
 * being read. The policy's callbacks run on the compaction thread and in
 * tide_db_account_usage(), never under an engine lock: they must be
 * thread-safe, and may block only briefly (a reload of the caller's own
 * tables), since a pass calls keep_from() for every series it visits. */

#define TIDE_KEEP_ALL INT64_MIN  /* keep_from: keep every point */
#define TIDE_KEEP_NONE INT64_MAX /* keep_from: erase the series */

/*
 * Compact every window that needs it now: windows with more than one
 * segment, chunks not full, or points the policy drops. With `wait`,
 * return once that pass is done (0, or the first error: TIDE_EIO,
 * -ENOSPC, -errno); without, return 0 once it is queued. TIDE_ECLOSED
 * when the db is closing.
 */
int tide_db_compact(tide_db *db, int wait);

/*
 * Physically erase what keep_from() now answers TIDE_KEEP_NONE for, in
 * segments of `account_id`: flush the heads (so the WAL files holding its
 * records are checkpointed and deleted), then rewrite every segment that
 * lists the account, at once, ahead of routine work. With `wait`, return
 * once done; else once queued. Errors as tide_db_compact().
 */
int tide_db_erase(tide_db *db, uint64_t account_id, int wait);

/*
 * Crypto-shredding: drop the engine's cached data key of `account_id`, so
 * that the next use asks data_key() again (which now answers TIDE_EKEY),
 * then tide_db_erase(db, account_id, wait): the account's chunks are
 * dropped from the segments and its WAL records flushed away. Segments
 * already open keep their derived subkeys until that rewrite (or the next
 * open) drops the account's chunks. Without encryption it is
 * tide_db_erase(). Errors as tide_db_erase().
 */
int tide_db_shred(tide_db *db, uint64_t account_id, int wait);

/* Where an account's points are now, as tide_db_account_usage() finds
 * them from segment footers, the heads and the live WAL files. */
struct tide_account_usage {
    uint64_t points;             /* in segments and heads */
    uint64_t bytes;              /* stored bytes of its chunks */
    uint64_t segments;           /* segment files holding its chunks */
    uint64_t segment_file_bytes; /* those files' sizes */
    uint64_t head_points;        /* not yet in segments */
    uint64_t wal_files;          /* live WAL files holding records of it */
    uint64_t wal_bytes;          /* their sizes */
    int64_t oldest_ts;           /* oldest point kept; INT64_MAX when none */
    uint64_t expiring_points;    /* behind keep_from(): gone at the next pass */
    uint64_t expiring_bytes;
    uint64_t files_scanned; /* evidence: segment and WAL files examined */
    uint64_t bytes_scanned;
};

/* tide_db_account_usage(): also read every live WAL file (wal_files,
 * wal_bytes); without it those stay 0 and only memory is read. */
#define TIDE_USAGE_WAL 1u

/*
 * Report on `account_id` into *out from segment footers (in memory), the
 * heads and, with TIDE_USAGE_WAL, the WAL files (I/O: call it off any
 * event loop). Returns 0, TIDE_EINVAL, -ENOMEM, -errno, TIDE_ECORRUPT.
 */
int tide_db_account_usage(tide_db *db, uint64_t account_id, unsigned flags,
                          struct tide_account_usage *out);

/* ---- Statistics -------------------------------------------------------- */

#define TIDE_SHARDS_MAX 64
#define TIDE_SYNC_LAT_BUCKETS 16

struct tide_db_stats {
    uint64_t points_appended;  /* since open */
    uint64_t batches_appended; /* since open */
    uint64_t batches_duplicate;
    uint64_t head_points;
    uint64_t head_bytes;
    uint64_t segments;
    uint64_t segment_bytes;
    uint64_t segment_points;
    uint64_t chunks;
    uint64_t wal_bytes; /* live WAL bytes on disk, all shards */
    uint64_t wal_syncs; /* fdatasync calls since open */
    /* Group commits (write + fdatasync) by duration: bucket i counts those
     * that took at most 50 us * 2^i; the last one the rest. */
    uint64_t wal_sync_lat[TIDE_SYNC_LAT_BUCKETS];
    uint64_t wal_sync_ns_total; /* their summed duration */
    uint64_t flushes;
    uint32_t shards;
    uint32_t queue_depth[TIDE_SHARDS_MAX]; /* appends waiting, per shard */
    const char *io_backend;                /* "io_uring" or "sync" */
    /* Storage health: 0, -ENOSPC (writes refused until space returns,
     * then they resume on their own) or TIDE_EIO (until reopened). */
    int storage_error;
    uint64_t nospace_events;     /* times writes stopped for lack of space */
    uint64_t disk_free_bytes;    /* free on the data directory's file system */
    char storage_error_msg[256]; /* the last failure's cause, or "" */
    /* Compaction since open. */
    uint64_t compactions; /* jobs done (window rewrites) */
    uint64_t compact_bytes_read;
    uint64_t compact_bytes_written;
    uint64_t points_expired;      /* dropped behind a horizon */
    uint64_t points_erased;       /* dropped as TIDE_KEEP_NONE */
    uint64_t points_deduplicated; /* older duplicates dropped */
    uint64_t segment_files_deleted;
    uint64_t compaction_errors;
    int compaction_running; /* a job is in progress */
    /* Start of the oldest window that needs compaction, or INT64_MAX
     * when none does; and the wall-clock time of the next routine pass
     * (ns since the epoch, 0 = none scheduled). */
    int64_t oldest_uncompacted_ns;
    int64_t next_compaction_ns;
    /* Encryption at rest: 1 when data_key is set (new files encrypted);
     * the live segment files by kind (a plaintext one is rewritten
     * encrypted by compaction once encryption is on). */
    int encryption;
    uint64_t segments_encrypted;
    uint64_t segment_bytes_encrypted;
    uint64_t segments_plaintext;
    uint64_t segment_bytes_plaintext;
};

/* Snapshot of the counters; cheap, lock-free where possible. */
void tide_db_stats(tide_db *db, struct tide_db_stats *st);

#ifdef __cplusplus
}
#endif

#endif /* TIDE_ENGINE_H */
