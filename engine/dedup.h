/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A shard's producer table: the highest batch sequence applied per
 * producer, so that a retried batch is acknowledged without being applied
 * twice. Owned by the shard's writer thread (and by recovery before it
 * starts); snapshotted at the head of every WAL file.
 */
#ifndef TIDE_ENGINE_DEDUP_H
#define TIDE_ENGINE_DEDUP_H

#include "internal.h"

/* Producer id -> highest applied sequence; open addressing. */
struct producers {
    uint64_t *ids;
    uint64_t *seqs;
    uint32_t cap; /* power of two */
    uint32_t n;
};

/* Highest sequence applied for producer `id`, 0 when unknown. */
uint64_t tide__dedup_get(const struct producers *p, uint64_t id);

/* Record `seq` for `id` (0 is "no producer": ignored). Returns 0 or
 * -ENOMEM (the table is unchanged). */
int tide__dedup_set(struct producers *p, uint64_t id, uint64_t seq);

void tide__dedup_fini(struct producers *p);

/* Serialise the table as a WAL producer-table record payload into `out`
 * (replacing its contents). Returns 0 or -ENOMEM. */
int tide__dedup_record(const struct producers *p, struct tide_buf *out);

/* Merge a producer-table record payload read back from the WAL. Returns
 * 0, TIDE_ECORRUPT or -ENOMEM. */
int tide__dedup_load(struct producers *p, const uint8_t *rec, uint32_t len);

#endif /* TIDE_ENGINE_DEDUP_H */
