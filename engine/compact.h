/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Compaction: the background thread that rewrites each (shard, tier,
 * window)'s segments into few large ones with full chunks, applying the
 * retention policy (tide_db_options.retention) as it goes. compact.c is
 * the thread, its queue and publication; compact_job.c rewrites one set of
 * segments. docs/architecture.md, "Compaction", gives the rules.
 */
#ifndef TIDE_ENGINE_COMPACT_H
#define TIDE_ENGINE_COMPACT_H

#include "db.h"

/* Largest segment compaction writes before it starts another. */
#define TIDE__COMPACT_SEG_BYTES (256ull << 20)

/* Steps of a job at which tests may crash the process (tide__compact_hook):
 * a temporary output file is partly written; the outputs are renamed into
 * place; the new MANIFEST is stored; the new list is published, the old
 * files not yet deleted. */
enum tide_compact_step {
    TIDE__COMPACT_AT_TMP = 1,
    TIDE__COMPACT_AT_RENAMED = 2,
    TIDE__COMPACT_AT_MANIFEST = 3,
    TIDE__COMPACT_AT_PUBLISHED = 4,
};

/* Tests: called at each step of every job (NULL: nothing). */
extern void (*tide__compact_hook)(enum tide_compact_step step);

/* Report `step` to tide__compact_hook. */
void tide__compact_step(enum tide_compact_step step);

/* Start the compaction thread (at open, once recovery is done). */
int tide__compact_start(struct tide_db *db);

/* Stop it: a job in progress is abandoned at its next step (its
 * temporary files removed); queued requests complete with TIDE_ECLOSED. */
void tide__compact_stop(struct tide_db *db);

/* Add the compaction counters to `st`. */
void tide__compact_stats(struct tide_db *db, struct tide_db_stats *st);

/* The window width of `tier` (a multiple of partition_ns). */
int64_t tide__compact_window_ns(struct tide_db *db, uint16_t tier);

/* keep_from() of the policy, TIDE_KEEP_ALL without one. */
int64_t tide__compact_keep_from(struct tide_db *db, uint64_t account_id,
                                uint64_t series_id);

/* ---- compact_job.c ------------------------------------------------------ */

struct compact_counts {
    uint64_t bytes_read;
    uint64_t bytes_written;
    uint64_t points_expired;
    uint64_t points_erased;
    uint64_t points_deduplicated;
};

/* Throttle callback of a job: `bytes` more were read or written. Returns
 * 0, or TIDE_ECLOSED when the job must stop. */
typedef int (*compact_pace_fn)(struct tide_db *db, uint64_t bytes);

/*
 * Rewrite in[0..n) (one shard and tier, oldest first) into new segments,
 * one or more per window of `win_ns`, with the policy applied. On success
 * *out (tide_malloc'd, *n_out entries, possibly 0) holds the new segments,
 * durable and opened, not yet in the MANIFEST. On failure no new file is
 * left. Returns 0, TIDE_ECLOSED, TIDE_ECORRUPT, -ENOMEM or -errno.
 */
int tide__compact_rewrite(struct tide_db *db, struct seg *const *in, uint32_t n,
                          int64_t win_ns, compact_pace_fn pace,
                          struct compact_counts *cnt, struct seg ***out,
                          uint32_t *n_out);

#endif /* TIDE_ENGINE_COMPACT_H */
