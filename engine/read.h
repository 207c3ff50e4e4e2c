/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the read path's files share, level by level: db_read.c and
 * db_aggregate.c (the public reads) call shard_read.c (one series from a
 * shard's segments and heads), which calls segment_read.c (which chunks,
 * and reading them) and chunk_read.c (decoding them).
 */
#ifndef TIDE_ENGINE_READ_H
#define TIDE_ENGINE_READ_H

#include "db.h"
#include "gather.h"

/* A chunk of one series that a read needs. */
struct chunk_ref {
    const struct seg *seg;
    const struct chunk_ent *e;
    uint32_t seg_idx; /* seg's index in db->segs */
    uint32_t pos;     /* set by read_chunks(): its first payload byte */
};

/* Per-segment search hints of a query that visits ids in ascending order
 * (tide__seg_seek). Valid whatever db->segs holds: a hint that does not fit
 * is ignored, and the array grows with the segment list. */
struct cursors {
    uint32_t *hint;
    uint32_t *span; /* collect_refs() scratch: lo, hi per segment */
    uint32_t n;
};

/* ---- chunk_read.c -------------------------------------------------------- */

/* Decode the chunks refs[0..n), whose payloads tide__segment_read_chunks()
 * placed at `payload` + pos, appending their points within [from, to) to
 * `g` (chunks of another type than g->type are skipped). Counts into `st`
 * when not NULL. Returns 0, TIDE_ECORRUPT (logged) or -ENOMEM. */
int tide__chunk_read_decode(struct tide_db *db, struct gather *g,
                            const struct chunk_ref *refs, size_t n,
                            const uint8_t *payload, int64_t from, int64_t to,
                            struct tide_agg_stats *st);

/* Log that the chunk of `r` failed its checksum or decoding. */
void tide__chunk_read_log_corrupt(struct tide_db *db,
                                  const struct chunk_ref *r);

/* ---- segment_read.c ------------------------------------------------------ */

/* Grow the cursors to `n_segs` segments. Returns 0 or -ENOMEM. */
int tide__segment_read_cursors_fit(struct cursors *c, uint32_t n_segs);
void tide__segment_read_cursors_fini(struct cursors *c);

/* Collect the chunks of `id` intersecting [from, to) in the segments of
 * `sl` (held by the caller) into g->refs, oldest segment first, and set
 * g->seg_type from the newest segment holding the series. The cursors are
 * fitted to sl->n. Returns 0 or -ENOMEM. */
int tide__segment_read_collect(struct tide_db *db, const struct seglist *sl,
                               struct gather *g, uint64_t id, int64_t from,
                               int64_t to, struct cursors *cur);

/* Read the payloads of refs[0..n) into `payload` (replacing its contents)
 * with one tide__io_run(), setting each ref's pos. A short read is
 * corruption. Returns 0, TIDE_ECORRUPT, -ENOMEM or -errno. */
int tide__segment_read_chunks(struct tide_db *db, struct tide_io *io,
                              struct chunk_ref *refs, size_t n, uint32_t n_segs,
                              struct tide_buf *payload,
                              struct tide_buf *reqbuf);

/* ---- shard_read.c -------------------------------------------------------- */

/* Returned inside the read path, never by a public function: the heads
 * were read after a flush of their shard published segments that the
 * reader's segment list lacks, so points may be missing. The reader takes
 * the current list and reads the series again (invariant 2). */
#define TIDE__READ_STALE 1

/* Is a read of `sh`'s heads consistent with segment list `sl`? Caller
 * holds sh->rw for reading. */
static inline int tide__shard_read_fresh(const struct shard *sh,
                                         const struct seglist *sl)
{
    return sh->pub_gen <= sl->gen;
}

/* Gather every point of `id` in [from, to) ordered by time without
 * duplicates: the chunks refs[0..n) (oldest source first, payloads at
 * `payload` + pos, collected from `sl`), then the frozen and active heads
 * of its shard. Returns 0, TIDE__READ_STALE, TIDE_ECORRUPT or -ENOMEM. */
int tide__shard_read_series(struct tide_db *db, const struct seglist *sl,
                            struct gather *g, uint64_t id,
                            const struct chunk_ref *refs, size_t n_refs,
                            const uint8_t *payload, int64_t from, int64_t to,
                            struct tide_agg_stats *st);

/* Time span [*lo, *hi] of a series in its shard's heads (INT64_MAX and
 * INT64_MIN when none) and its type there (*type, 0 when none). Returns 0
 * or TIDE__READ_STALE (against `sl`). */
int tide__shard_read_span(struct tide_db *db, const struct seglist *sl,
                          uint64_t id, int64_t *lo, int64_t *hi, uint8_t *type);

/* A series whose sources in a read's range hold more points than this
 * (its chunks, and its head points) is read a time slice at a time,
 * [cuts[k], cuts[k + 1]) from tide__shard_read_slices(), so that a read
 * gathers (16 B a point, as much again while out-of-order sources are
 * merged) a few MiB whatever the series' length. A slice holds about
 * this many points, plus one chunk, the parts of chunks reaching into it
 * from before (one a segment at most) and of an uneven head. */
#define TIDE__SLICE_POINTS (1u << 18)

/* Points of `id` in its shard's heads, whatever their time: cheap, for
 * deciding whether a read is sliced. */
uint64_t tide__shard_read_head_points(struct tide_db *db, uint64_t id);

/* Cut [from, to) into slices for the chunks refs[0..n) of `id` and its
 * head points, setting `cuts` to int64_t[n_slices + 1] (cuts[0] = from,
 * the last = to; at least one slice). Slices end at chunk starts and at
 * the bins of a histogram of the head's timestamps, before the points
 * starting in them would pass TIDE__SLICE_POINTS. The cuts are time
 * boundaries, valid on any segment list (a plan: nothing is read under
 * it), and a repeated timestamp falls into one slice, so that each slice
 * merges its sources (last write wins) on its own. Returns 0 or -ENOMEM. */
int tide__shard_read_slices(struct tide_db *db, uint64_t id,
                            const struct chunk_ref *refs, size_t n,
                            int64_t from, int64_t to, struct tide_buf *cuts);

#endif /* TIDE_ENGINE_READ_H */
