/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tide-bench's comparison targets: the same rows as InfluxDB line protocol
 * over HTTP, and the five query shapes in MetricsQL (VictoriaMetrics) or
 * InfluxQL (InfluxDB 1.x). Plain blocking HTTP/1.0 on 127.0.0.1, one
 * connection per request.
 */
#ifndef TIDE_BENCH_PEER_H
#define TIDE_BENCH_PEER_H

#include <stddef.h>
#include <stdint.h>

#include "workload.h"

enum tide_peer {
    TIDE_PEER_VICTORIA = 1,
    TIDE_PEER_INFLUX = 2,
};

#define TIDE_PEER_DB "bench" /* InfluxDB database */

/*
 * Append row `r` of `w` as one line-protocol line (measurement, tags
 * device and the workload's tags, fields, ns timestamp) at buf + *len.
 * Returns 0, or -ENOSPC when it does not fit (nothing appended).
 */
int tide__peer_line(const struct tide_wl *w, const struct tide_wl_row *r,
                    char *buf, size_t size, size_t *len);

/*
 * One HTTP request to 127.0.0.1:port; the response body is read and
 * discarded. *status gets the HTTP status, *bytes the response size.
 * Returns 0 or -errno (-EPROTO for an unparsable status line).
 */
int tide__peer_http(uint16_t port, const char *method, const char *path,
                    const char *body, size_t len, int *status, uint64_t *bytes);

/* The write path of a peer ("/write" or "/write?db=bench&precision=ns"). */
const char *tide__peer_write_path(enum tide_peer p);

/*
 * The request path of query shape q (0..4 for Q1..Q5) against `device`,
 * URL-encoded, into buf. Returns 0 or -ENOSPC.
 */
int tide__peer_query_path(enum tide_peer p, int q, const struct tide_wl *w,
                          uint32_t device, char *buf, size_t size);

#endif /* TIDE_BENCH_PEER_H */
