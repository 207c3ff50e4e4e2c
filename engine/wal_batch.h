/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The payload of a WAL batch record (type TIDE_WAL_BATCH): a shard's part
 * of one append. Built by tide_db_append, applied to a head by the shard's
 * writer and by recovery. Layout in wal_batch.c and docs/file-format.md.
 */
#ifndef TIDE_ENGINE_WAL_BATCH_H
#define TIDE_ENGINE_WAL_BATCH_H

#include "head.h"
#include "internal.h"

#define TIDE_WAL_BATCH_HEADER 24u /* frozen: on disk */

/* Is `c` a column an append may carry? (ids, types, pointers, lengths) */
int tide__wal_batch_column_valid(const struct tide_column *c);

/* Bytes `c` takes in a batch record. */
size_t tide__wal_batch_column_bytes(const struct tide_column *c);

/* Write the record header at `rec` (TIDE_WAL_BATCH_HEADER bytes) with no
 * columns yet. */
void tide__wal_batch_start(uint8_t *rec, uint64_t producer_id,
                           uint64_t sequence);

/* Write column `c` at `p`, inside the record starting at `rec`, and count
 * it in the header. `p` has room for tide__wal_batch_column_bytes(c).
 * Returns the position after it. */
uint8_t *tide__wal_batch_put_column(uint8_t *rec, uint8_t *p,
                                    const struct tide_column *c);

/* Producer id and sequence of a record of at least
 * TIDE_WAL_BATCH_HEADER bytes. */
uint64_t tide__wal_batch_producer(const uint8_t *rec);
uint64_t tide__wal_batch_sequence(const uint8_t *rec);

/* Apply a batch record to a head. The record may come from disk (replay),
 * so every length is checked against the record. Returns 0, TIDE_ECORRUPT
 * or -ENOMEM; TIDE_ETYPE columns are skipped and counted in *skipped.
 * `scratch` is the caller's reusable buffer. */
int tide__wal_batch_apply(struct head *h, const uint8_t *rec, uint32_t len,
                          struct tide_buf *scratch, uint32_t *skipped);

/* One column of a batch record, its lengths checked against the record:
 * 8n bytes of timestamps at `ts`, the values as laid out at `v` (strings:
 * n lengths, then the bytes at v + pad8(4n)). */
struct wal_col {
    uint64_t series_id;
    uint64_t account_id;
    uint16_t tier;
    uint8_t type;
    uint32_t n;
    const uint8_t *ts;
    const uint8_t *v;
};

/* Called for each column in turn; a non-zero return stops the walk. */
typedef int (*tide_wal_column_fn)(void *ctx, const struct wal_col *c);

/* Walk the columns of a batch record, checking each one's lengths against
 * the record before `fn` sees it (tide__wal_batch_apply is this walk).
 * Returns 0, TIDE_ECORRUPT or fn's error. */
int tide__wal_batch_columns(const uint8_t *rec, uint32_t len,
                            tide_wal_column_fn fn, void *ctx);

#endif /* TIDE_ENGINE_WAL_BATCH_H */
