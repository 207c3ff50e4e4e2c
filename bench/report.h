/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tide-bench's chart: throughput and p99 latency per second of a run as a
 * self-contained SVG (no plotting dependency).
 */
#ifndef TIDE_BENCH_REPORT_H
#define TIDE_BENCH_REPORT_H

#include <stddef.h>

/* One second of a run. */
struct tide_sample {
    double t_s;           /* seconds since the timed phase began */
    double points_per_s;  /* acknowledged points in this second */
    double ack_p99_ms;    /* p99 write ack latency in this second */
    double queries_per_s; /* completed queries in this second */
    double query_p99_ms;  /* p99 over every query type in this second */
};

/*
 * Write an SVG of `n` samples to `path`: throughput (left axis) and p99
 * latencies (right axis) against time. `title` is escaped. Returns 0,
 * -EINVAL (n == 0) or -errno; a failed write leaves a partial file.
 */
int tide__report_svg(const char *path, const char *title,
                     const struct tide_sample *s, size_t n);

#endif /* TIDE_BENCH_REPORT_H */
