/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The head: per-series in-memory column buffers that hold every point not
 * yet in a segment. One head per shard is active (written by the shard's
 * writer thread); one more may be frozen while the flusher turns it into
 * segments. Readers copy out of both under the shard's read lock.
 *
 * Invariants of a head series:
 *   1. n <= cap, and ts[0..n) and val (or str) [0..n) are allocated.
 *   2. sorted == 1 only if ts[0..n) is strictly ascending; after
 *      tide__hseries_normalize() it is, and sorted is 1.
 */
#ifndef TIDE_ENGINE_HEAD_H
#define TIDE_ENGINE_HEAD_H

#include "internal.h"

/* One series in the head. Points are kept in arrival order; `sorted` says
 * whether that order is strictly ascending in time (no duplicates), which
 * lets readers and the flusher skip sorting. */
struct hseries {
    uint64_t id;
    uint64_t account_id;
    uint16_t tier;
    uint8_t type;
    uint8_t sorted;
    uint32_t n;
    uint32_t cap;
    int64_t *ts;
    uint64_t *val;        /* f64 bits, i64, or bool 0/1; NULL for strings */
    struct tide_str *str; /* strings, pointing into the head's arena */
};

/* A block of the string arena; strings never move once copied in. */
struct arena_block {
    struct arena_block *next;
    size_t used;
    size_t cap;
    char data[];
};

/* A slot keeps the id beside the series, so that a probe touches only the
 * table, not each series it passes (a cache miss each at fleet width). */
struct head_slot {
    uint64_t id;
    struct hseries *s; /* NULL: empty */
};

struct head {
    struct head_slot *slots; /* open addressing by id; power-of-two size */
    uint32_t n_slots;
    uint32_t n_series;
    uint64_t points;
    uint64_t bytes; /* heap bytes held, for the memory budget */
    int64_t min_ts;
    int64_t max_ts;
    struct arena_block *arena;
};

void tide__head_init(struct head *h);
void tide__head_fini(struct head *h);

/* Find a series; NULL when the head has none of its points. */
struct hseries *tide__head_find(const struct head *h, uint64_t id);

/* Prefetch for an append to series `id` a few columns from now, in three
 * stages issued in turn as the append comes nearer: 0 its slot, 1 its
 * series (its slot in cache by then), 2 the tails the points go to. Only
 * a hint: no effect on the head. */
void tide__head_prefetch(const struct head *h, uint64_t id, int stage);

/*
 * Append `n` points of one series. `vals` holds 8-byte values for f64, i64
 * and bool; `strs` the strings (copied into the arena). Returns 0, -ENOMEM
 * (nothing appended), or TIDE_ETYPE when the series already has another
 * type (nothing appended).
 */
int tide__head_append(struct head *h, uint64_t id, uint64_t account_id,
                      uint16_t tier, uint8_t type, uint32_t n,
                      const int64_t *ts, const uint64_t *vals,
                      const struct tide_str *strs);

/* Sort a series by time and drop duplicates, the later arrival winning.
 * Only for heads no reader can see (the frozen head during flush takes the
 * shard's write lock around it). Returns 0 or -ENOMEM. */
int tide__hseries_normalize(struct hseries *s);

/*
 * Order points by time, duplicates resolved last-arrival-wins: fills
 * idx[0..*n_out) with the indices (into ts[0..n)) of the surviving points in
 * ascending time. `idx` has room for n entries. Returns 0 or -ENOMEM.
 */
int tide__ts_order(const int64_t *ts, uint32_t n, uint32_t *idx,
                   uint32_t *n_out);

#endif /* TIDE_ENGINE_HEAD_H */
