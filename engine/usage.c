/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tide_db_account_usage(): where an account's points are. Segment footers
 * (in memory) give its chunks, their sizes and what the policy will drop;
 * the heads give what is not yet flushed; with TIDE_USAGE_WAL every live
 * WAL file is read and its batch records' columns are checked for the
 * account. The erasure report is built on it.
 */
#include "compact.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "wal_batch.h"

struct wal_hit {
    uint64_t account;
    int found; /* in the file being read */
    struct tide_account_usage *u;
};

static int column_hit(void *ctx, const struct wal_col *c)
{
    struct wal_hit *h = ctx;

    if (c->account_id == h->account)
        h->found = 1;
    return 0;
}

static int record_hit(void *ctx, uint8_t type, const uint8_t *payload,
                      uint32_t len)
{
    if (type == TIDE_WAL_PART) {
        if (len < TIDE_WAL_PART_HEADER)
            return TIDE_ECORRUPT;
        payload += TIDE_WAL_PART_HEADER;
        len -= TIDE_WAL_PART_HEADER;
    } else if (type != TIDE_WAL_BATCH) {
        return 0;
    }
    return tide__wal_batch_columns(payload, len, column_hit, ctx);
}

static void file_done(void *ctx, uint64_t bytes)
{
    struct wal_hit *h = ctx;

    h->u->files_scanned++;
    h->u->bytes_scanned += bytes;
    if (h->found) {
        h->u->wal_files++;
        h->u->wal_bytes += bytes;
    }
    h->found = 0;
}

/* Count the WAL files that hold a record of the account. */
static int scan_wal(struct tide_db *db, uint64_t account,
                    struct tide_account_usage *u)
{
    struct wal_hit h = {account, 0, u};
    int rc = 0;

    for (unsigned s = 0; s < db->n_shards && rc == 0; s++)
        rc = tide__wal_scan(db->shards[s].wal_dir, db->keys, record_hit,
                            file_done, &h);
    return rc;
}

int tide_db_account_usage(tide_db *db, uint64_t account_id, unsigned flags,
                          struct tide_account_usage *u)
{
    struct seglist *sl;
    int rc = 0;

    memset(u, 0, sizeof(*u));
    u->oldest_ts = INT64_MAX;
    if (!account_id || (flags & ~TIDE_USAGE_WAL))
        return TIDE_EINVAL;
    sl = tide__seglist_acquire(db);
    for (uint32_t i = 0; i < sl->n; i++) {
        const struct seg *seg = sl->segs[i];
        uint64_t id = 0;
        int64_t keep = TIDE_KEEP_ALL;
        int holds = 0;

        u->files_scanned++;
        u->bytes_scanned += seg->file_bytes;
        for (uint32_t a = 0; a < seg->n_accounts && !holds; a++)
            holds = seg->accounts[a] == account_id;
        for (uint32_t c = 0; holds && c < seg->n_chunks; c++) {
            const struct chunk_ent *e = &seg->chunks[c];

            if (e->account_id != account_id)
                continue;
            if (e->series_id != id || c == 0) {
                id = e->series_id;
                keep = tide__compact_keep_from(db, account_id, id);
            }
            u->points += e->count;
            u->bytes += e->stored_bytes;
            if (e->min_ts < u->oldest_ts)
                u->oldest_ts = e->min_ts;
            if (keep == TIDE_KEEP_NONE ||
                (keep != TIDE_KEEP_ALL && e->max_ts < keep)) {
                u->expiring_points += e->count;
                u->expiring_bytes += e->stored_bytes;
            } else if (keep != TIDE_KEEP_ALL && e->min_ts < keep) {
                /* Part of the chunk: estimated by its share of time. */
                double f = (double)(keep - e->min_ts) /
                           ((double)(e->max_ts - e->min_ts) + 1.0);

                u->expiring_points += (uint64_t)(f * e->count);
                u->expiring_bytes += (uint64_t)(f * e->stored_bytes);
            }
        }
        if (holds) {
            u->segments++;
            u->segment_file_bytes += seg->file_bytes;
        }
    }
    tide__seglist_release(sl);
    for (unsigned s = 0; s < db->n_shards; s++) {
        struct shard *sh = &db->shards[s];

        pthread_rwlock_rdlock(&sh->rw);
        for (int f = 0; f < 2; f++) {
            const struct head *h = f ? sh->frozen : &sh->head;

            for (uint32_t i = 0; h && i < h->n_slots; i++) {
                const struct hseries *x = h->slots[i].s;

                if (!x || x->account_id != account_id || !x->n)
                    continue;
                u->head_points += x->n;
                u->points += x->n;
                for (uint32_t k = 0; k < x->n; k++)
                    if (x->ts[k] < u->oldest_ts)
                        u->oldest_ts = x->ts[k];
            }
        }
        pthread_rwlock_unlock(&sh->rw);
    }
    if (flags & TIDE_USAGE_WAL)
        rc = scan_wal(db, account_id, u);
    return rc;
}
