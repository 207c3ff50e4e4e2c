/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The decrypted-chunk cache of encryption at rest: the plaintext of
 * recently read encrypted chunks, by (segment id, file offset), so that a
 * query repeated over the same chunks pays AES-GCM once, as a plaintext
 * read pays the page cache's copy. Segments are immutable and their ids
 * never reused, so entries never go stale; those of deleted segments age
 * out. Bounded in bytes, least recently used first out; thread-safe.
 */
#ifndef TIDE_ENGINE_DCACHE_H
#define TIDE_ENGINE_DCACHE_H

#include "internal.h"

struct dcache;

/* A cache of at most `bytes_max` bytes of plaintext. 0 or -ENOMEM. */
int tide__dcache_new(uint64_t bytes_max, struct dcache **out);

/* Free the cache and every entry (their bytes wiped). Accepts NULL. */
void tide__dcache_free(struct dcache *c);

/* Copy the plaintext of the chunk at `off` of segment `seg_id`, `len`
 * bytes, into `out`: 1 when cached, else 0 (`out` untouched). */
int tide__dcache_get(struct dcache *c, uint64_t seg_id, uint64_t off,
                     uint32_t len, uint8_t *out);

/* Remember `len` bytes of plaintext at `p` for (seg_id, off), evicting
 * the least recently used entries beyond the budget. Best effort: out of
 * memory, or a chunk above an eighth of a shard's budget, is not cached. */
void tide__dcache_put(struct dcache *c, uint64_t seg_id, uint64_t off,
                      const uint8_t *p, uint32_t len);

#endif /* TIDE_ENGINE_DCACHE_H */
