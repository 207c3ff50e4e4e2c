/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The read path of a chunk: verify and decode chunk payloads read from a
 * segment into a series' gather buffer, keeping the points of the query's
 * range. The codecs are in column.c (through segment.h).
 */
#include "read.h"

#include <string.h>

#include "ts.h"

/* Decode a numeric chunk straight into the gathered arrays and keep its
 * points within [from, to): no copy when the whole chunk is in range. */
static int decode_chunk(struct gather *g, const struct chunk_ent *e,
                        const uint8_t *payload, int64_t from, int64_t to)
{
    uint32_t cnt = e->count, a, b;
    int64_t *ts;
    uint64_t *val;
    int rc = tide__gather_reserve(g, cnt);

    if (rc)
        return rc;
    ts = tide__gather_ts(g) + g->n;
    val = tide__gather_val(g) + g->n;
    rc = tide__chunk_decode_range(e, payload, e->stored_bytes, from, to, ts,
                                  val, &a, &b);
    if (rc)
        return rc;
    /* A chunk is strictly ascending (the writer's invariant, and the
     * checksum vouches for the bytes), so only the seam with the points
     * before it can break the order. */
    if (b > a && g->n && ts[a] <= tide__gather_ts(g)[g->n - 1])
        g->ordered = 0;
    if (a > 0 && b > a) {
        memmove(ts, ts + a, (size_t)(b - a) * sizeof(*ts));
        memmove(val, val + a, (size_t)(b - a) * sizeof(*val));
    }
    g->n += b > a ? b - a : 0;
    g->ts.len = g->val.len = (size_t)g->n * 8;
    return 0;
}

/* Decode a string chunk into scratch, then append its points in range. */
static int decode_str_chunk(struct gather *g, const struct chunk_ent *e,
                            const uint8_t *payload, int64_t from, int64_t to)
{
    uint32_t cnt = e->count, a, b;
    struct tide_str *str;
    int64_t *ts;
    int rc;

    g->tmp.len = 0;
    g->arena.len = 0;
    rc = tide__buf_reserve(&g->tmp, (size_t)cnt * (16 + sizeof(*str)));
    if (rc)
        return rc;
    ts = (int64_t *)(void *)g->tmp.data;
    str = (struct tide_str *)(void *)(g->tmp.data + 16 * (size_t)cnt);
    rc = tide__chunk_decode(e, payload, e->stored_bytes, ts,
                            (uint64_t *)(void *)(g->tmp.data + 8 * (size_t)cnt),
                            str, &g->arena);
    if (rc)
        return rc;
    a = tide__ts_lower_bound(ts, cnt, from);
    b = tide__ts_lower_bound(ts, cnt, to);
    return tide__gather_append(g, ts, NULL, str, a, b);
}

void tide__chunk_read_log_corrupt(struct tide_db *db, const struct chunk_ref *r)
{
    tide__db_log(db, TIDE_LOG_ERROR,
                 "corrupt chunk in %s at offset %llu (series %llu): checksum "
                 "or encoding mismatch",
                 r->seg->path, (unsigned long long)r->e->offset,
                 (unsigned long long)r->e->series_id);
}

/* Decode the chunks refs[0..n), whose payloads tide__segment_read_chunks()
 * placed at `payload` + pos, appending their points within [from, to). */
int tide__chunk_read_decode(struct tide_db *db, struct gather *g,
                            const struct chunk_ref *refs, size_t n,
                            const uint8_t *payload, int64_t from, int64_t to,
                            struct tide_agg_stats *st)
{
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct chunk_ent *e = refs[i].e;

        if (e->type != g->type)
            rc = 0; /* a series has one type; never mix */
        else if (e->type == TIDE_TYPE_STR)
            rc = decode_str_chunk(g, e, payload + refs[i].pos, from, to);
        else
            rc = decode_chunk(g, e, payload + refs[i].pos, from, to);
        if (rc == TIDE_ECORRUPT)
            tide__chunk_read_log_corrupt(db, &refs[i]);
        if (st) {
            st->chunks_decoded++;
            st->bytes_read += e->stored_bytes;
        }
    }
    return rc;
}
