/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The database's producer table: per producer, the highest batch sequence
 * applied (durable and visible) and the highest accepted (applied or in
 * flight), so that a retried batch is acknowledged without being applied
 * twice, whatever shards its series live on. One table for the whole
 * database, guarded by the db's prod_mu: appends decide "duplicate or not"
 * against it in call order (db.c), writers record what they applied
 * (shard.c), and every WAL file opens with a snapshot of the applied
 * sequences so that deduplication survives the deletion of older files.
 */
#ifndef TIDE_ENGINE_DEDUP_H
#define TIDE_ENGINE_DEDUP_H

#include "internal.h"

struct producer {
    uint64_t id;       /* 0: empty slot */
    uint64_t applied;  /* highest sequence durable and applied */
    uint64_t accepted; /* highest sequence accepted (>= applied) */
    uint32_t inflight; /* accepted batches not yet answered */
};

/* Producer id -> sequences; open addressing. */
struct producers {
    struct producer *e;
    uint32_t cap; /* power of two */
    uint32_t n;
};

/* The entry of `id` (not 0), created if missing; NULL on -ENOMEM. The
 * table is bounded: when full it forgets every producer with nothing in
 * flight, which only means that a retry of a forgotten producer's batch
 * is applied again. The pointer is valid until the next call. */
struct producer *tide__dedup_entry(struct producers *p, uint64_t id);

/* The entry of `id`, or NULL when unknown. */
struct producer *tide__dedup_find(const struct producers *p, uint64_t id);

/* Record `seq` as applied (and accepted) for `id`; 0 `id` or `seq` is
 * ignored. Returns 0 or -ENOMEM (the table is unchanged). */
int tide__dedup_set(struct producers *p, uint64_t id, uint64_t seq);

void tide__dedup_fini(struct producers *p);

/* Serialise the applied sequences as a WAL producer-table record payload
 * into `out` (replacing its contents). Returns 0 or -ENOMEM. */
int tide__dedup_record(const struct producers *p, struct tide_buf *out);

/* Merge a producer-table record payload read back from the WAL (the
 * highest sequence wins). Returns 0, TIDE_ECORRUPT or -ENOMEM. */
int tide__dedup_load(struct producers *p, const uint8_t *rec, uint32_t len);

#endif /* TIDE_ENGINE_DEDUP_H */
