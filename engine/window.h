/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Time windows: a tier and one partition of time (partition_ns, a day by
 * default). The flusher writes one segment per window a frozen head
 * touches, so every segment lies inside one window; a compaction merges
 * the segments of one window.
 */
#ifndef TIDE_ENGINE_WINDOW_H
#define TIDE_ENGINE_WINDOW_H

#include "head.h"
#include "internal.h"

struct window {
    uint16_t tier;
    int64_t part; /* floor(ts / partition_ns) */
};

/* The time span [*lo, *hi) of `w`, clamped to the int64 range. */
void tide__window_bounds(struct window w, int64_t part_ns, int64_t *lo,
                         int64_t *hi);

/* Append to `out` (struct window[]) the distinct windows of the points of
 * `h`, whose series must be normalised (sorted). Returns 0 or -ENOMEM. */
int tide__window_collect(const struct head *h, int64_t part_ns,
                         struct tide_buf *out);

#endif /* TIDE_ENGINE_WINDOW_H */
