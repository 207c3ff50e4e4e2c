/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tier limits that are not the account's write rate and quota
 * (write.c): the write rate of each API key, and the query rate and the
 * queries running at once of each account (docs/operations.md, "Rate
 * limits"). Loop thread only.
 */
#ifndef TIDE_SERVER_RATELIMIT_H
#define TIDE_SERVER_RATELIMIT_H

#include <stdint.h>

#include "tide/meta.h"

/* Charge `points` to API key `key_id` under the tier's key_rate_points_s
 * (a token bucket of one second's points, which may go into debt).
 * Returns 0, or 1 when the key is over its rate: *retry_ms is when its
 * debt is paid. Returns 0 without a limit or a key (key_id 0). */
int ratelimit_key_write(const struct tide_meta_tier *tier, uint64_t key_id,
                        uint64_t points, int64_t now_ns, uint32_t *retry_ms);

/* A query of `account` starts: within the tier's query_rate_s (a bucket
 * of one second's queries) and queries_max running at once. Returns 0
 * (the caller calls ratelimit_query_end() when it ends), or 1 when refused:
 * *why says which limit, *retry_ms when to try again. Returns -ENOMEM
 * without memory (refuse OVERLOADED). */
int ratelimit_query_begin(const struct tide_meta_tier *tier, uint64_t account,
                          int64_t now_ns, uint32_t *retry_ms, const char **why);

/* A query that ratelimit_query_begin() admitted has ended. */
void ratelimit_query_end(uint64_t account);

#endif /* TIDE_SERVER_RATELIMIT_H */
