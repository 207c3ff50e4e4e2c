/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tide-bench latency histogram, HdrHistogram-style: values (nanoseconds)
 * land in log buckets of 64 linear sub-buckets each, so a recorded value is
 * known to within 1/64 (1.6 %) of itself; no raw sample is kept or sorted.
 * Recording is lock-free (relaxed atomics), so any number of threads may
 * record into one histogram while another takes snapshots.
 */
#ifndef TIDE_BENCH_HIST_H
#define TIDE_BENCH_HIST_H

#include <stdatomic.h>
#include <stdint.h>

#define TIDE_HIST_SUB 64 /* linear sub-buckets per power of two */
#define TIDE_HIST_BUCKETS (2 * TIDE_HIST_SUB + 57 * TIDE_HIST_SUB)

struct tide_hist {
    _Atomic uint64_t counts[TIDE_HIST_BUCKETS];
    _Atomic uint64_t total;
    _Atomic uint64_t min; /* UINT64_MAX while empty */
    _Atomic uint64_t max;
    _Atomic uint64_t sum; /* for the mean */
};

/* Reset `h` to empty (caller-allocated). */
void tide__hist_init(struct tide_hist *h);

/* Record one value. Thread-safe. */
void tide__hist_record(struct tide_hist *h, uint64_t v);

/* Bucket index of `v`, and the highest value that shares its bucket. */
uint32_t tide__hist_index(uint64_t v);
uint64_t tide__hist_bucket_high(uint32_t index);

/* Add every count of `src` to `dst` (e.g. snapshots). Not atomic as a whole:
 * call with no concurrent recording into `dst`. */
void tide__hist_add(struct tide_hist *dst, const struct tide_hist *src);

/* dst = a - b, bucket by bucket; `b` an older snapshot of `a` (min and max
 * then cover the newer interval only approximately: the bucket bounds). */
void tide__hist_sub(struct tide_hist *dst, const struct tide_hist *a,
                    const struct tide_hist *b);

/* The value at percentile p (0 < p <= 100): the smallest bucket bound such
 * that at least ceil(p/100 * total) values are at or below it, capped to the
 * exact max. 0 for an empty histogram. */
uint64_t tide__hist_percentile(const struct tide_hist *h, double p);

uint64_t tide__hist_count(const struct tide_hist *h);
uint64_t tide__hist_max(const struct tide_hist *h);
double tide__hist_mean(const struct tide_hist *h);

#endif /* TIDE_BENCH_HIST_H */
