/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The read path of the segments: which chunks of which segments a series
 * needs (searched through each segment's footer index) and reading their
 * payloads in few, large requests through the I/O layer.
 */
#include "read.h"

#include <errno.h>
#include <string.h>

/* Does the chunk intersect [from, to)? */
static int chunk_in_range(const struct chunk_ent *e, int64_t from, int64_t to)
{
    return e->min_ts < to && e->max_ts >= from;
}

/* Read the payloads of refs[0..n) into `payload` (replacing its contents)
 * with one tide__io_run(), setting each ref's pos. The chunks are laid out
 * by segment (a stable counting sort on seg_idx, n_segs buckets), and
 * chunks that follow each other in a file become one request: an
 * ascending-id read of id-ordered segments turns hundreds of 1 KiB reads
 * into a few large ones. A short read is corruption. */
int tide__segment_read_chunks(struct tide_db *db, struct tide_io *io,
                              struct chunk_ref *refs, size_t n, uint32_t n_segs,
                              struct tide_buf *payload, struct tide_buf *reqbuf)
{
    struct tide_io_req *reqs;
    uint32_t *order, *first;
    uint8_t *hit; /* hit[i]: refs[i] came from the decrypted-chunk cache */
    size_t bytes = 0, pos = 0, n_reqs = 0;
    int rc;

    for (size_t i = 0; i < n; i++) {
        TIDE_DEBUG_ASSERT(refs[i].seg_idx < n_segs);
        bytes += tide__seg_disk_bytes(refs[i].seg, refs[i].e);
    }
    if (bytes > UINT32_MAX)
        return -ENOMEM; /* no payload buffer that large either */
    payload->len = reqbuf->len = 0;
    if ((rc = tide__buf_reserve(payload, bytes + 1)) ||
        (rc = tide__buf_reserve(reqbuf, n * sizeof(*reqs) +
                                            (n + n_segs + 2) * sizeof(*order) +
                                            n)))
        return rc;
    reqs = (struct tide_io_req *)(void *)reqbuf->data;
    order = (uint32_t *)(void *)(reqs + n);
    first = order + n;
    hit = (uint8_t *)(first + n_segs + 2);
    memset(first, 0, (n_segs + 1) * sizeof(*first));
    for (size_t i = 0; i < n; i++)
        first[refs[i].seg_idx + 1]++;
    for (uint32_t s = 0; s < n_segs; s++)
        first[s + 1] += first[s];
    for (size_t i = 0; i < n; i++)
        order[first[refs[i].seg_idx]++] = (uint32_t)i;
    for (size_t k = 0; k < n; k++) {
        struct chunk_ref *r = &refs[order[k]];
        struct tide_io_req *last = n_reqs ? &reqs[n_reqs - 1] : NULL;
        uint32_t disk = tide__seg_disk_bytes(r->seg, r->e);

        r->pos = (uint32_t)pos;
        hit[order[k]] =
            r->seg->encrypted && db->dcache &&
            tide__dcache_get(db->dcache, r->seg->id, r->e->offset,
                             r->e->stored_bytes, payload->data + pos);
        if (hit[order[k]]) {
            pos += disk;
            continue;
        }
        /* One request only for chunks adjacent in the file and in the
         * buffer (a cached chunk between them breaks the second). */
        if (last && last->fd == r->seg->fd &&
            last->off + last->len == r->e->offset &&
            last->buf + last->len == payload->data + pos)
            last->len += disk; /* bytes <= UINT32_MAX */
        else
            reqs[n_reqs++] = (struct tide_io_req){.op = TIDE_IO_READ,
                                                  .fd = r->seg->fd,
                                                  .buf = payload->data + pos,
                                                  .len = disk,
                                                  .off = r->e->offset};
        pos += disk;
    }
    rc = tide__io_run(io, reqs, (unsigned)n_reqs);
    for (size_t k = 0, j = 0; k < n_reqs && rc == 0; k++) {
        size_t got = 0;

        /* The refs of request k start at the next order[j] not cached. */
        while (hit[order[j]])
            j++;
        if ((uint64_t)reqs[k].res != reqs[k].len) {
            tide__chunk_read_log_corrupt(db, &refs[order[j]]);
            rc = TIDE_ECORRUPT;
        }
        while (got < reqs[k].len) {
            if (!hit[order[j]])
                got +=
                    tide__seg_disk_bytes(refs[order[j]].seg, refs[order[j]].e);
            j++;
        }
    }
    /* An encrypted chunk is decrypted in place (its tag stays behind the
     * payload, unused) and remembered for the next read. */
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!refs[i].seg->encrypted || hit[i])
            continue;
        rc = tide__seg_decrypt(refs[i].seg, refs[i].e,
                               payload->data + refs[i].pos);
        if (rc == 0 && db->dcache)
            tide__dcache_put(db->dcache, refs[i].seg->id, refs[i].e->offset,
                             payload->data + refs[i].pos,
                             refs[i].e->stored_bytes);
    }
    return rc;
}

int tide__segment_read_cursors_fit(struct cursors *c, uint32_t n_segs)
{
    uint32_t *p, *q;

    if (c->n >= n_segs)
        return 0;
    p = tide_realloc(c->hint, ((size_t)n_segs + 1) * sizeof(*p));
    if (!p)
        return -ENOMEM;
    memset(p + c->n, 0, (size_t)(n_segs - c->n) * sizeof(*p));
    c->hint = p;
    q = tide_realloc(c->span, (2 * (size_t)n_segs + 1) * sizeof(*q));
    if (!q)
        return -ENOMEM;
    c->span = q;
    c->n = n_segs;
    return 0;
}

void tide__segment_read_cursors_fini(struct cursors *c)
{
    tide_free(c->hint);
    tide_free(c->span);
}

/* Collect the chunks of `id` intersecting [from, to) into g->refs, oldest
 * segment first, and set g->seg_type from the newest segment holding the
 * series. Segments are searched newest first: once the type is known,
 * those out of range need no search at all (a read of the last hour
 * touches one or two of them). */
int tide__segment_read_collect(struct tide_db *db, const struct seglist *sl,
                               struct gather *g, uint64_t id, int64_t from,
                               int64_t to, struct cursors *cur)
{
    unsigned shard = tide__db_shard_of(db, id);
    size_t n_refs = 0;
    struct chunk_ref *r;
    int rc;

    g->refs.len = 0;
    g->seg_type = 0;
    for (uint32_t i = sl->n; i-- > 0;) {
        const struct seg *seg = sl->segs[i];
        int in_range = seg->min_ts < to && seg->max_ts >= from;
        uint32_t *lo = &cur->span[2 * i], *hi = lo + 1;

        *lo = *hi = 0;
        if ((seg->shard_only && seg->shard != shard) ||
            (!in_range && g->seg_type))
            continue; /* cannot hold the series, or not needed */
        tide__seg_seek(seg, id, &cur->hint[i], lo, hi);
        if (*lo == *hi)
            continue;
        if (!g->seg_type)
            g->seg_type = seg->chunks[*lo].type;
        if (!in_range)
            *lo = *hi = 0;
        n_refs += *hi - *lo;
    }
    rc = tide__buf_reserve(&g->refs, n_refs * sizeof(*r));
    if (rc)
        return rc;
    r = (struct chunk_ref *)(void *)g->refs.data;
    for (uint32_t i = 0; i < sl->n; i++) {
        const struct seg *seg = sl->segs[i];

        for (uint32_t c = cur->span[2 * i]; c < cur->span[2 * i + 1]; c++)
            if (chunk_in_range(&seg->chunks[c], from, to))
                *r++ = (struct chunk_ref){seg, &seg->chunks[c], i, 0};
    }
    g->refs.len = (size_t)((uint8_t *)r - g->refs.data);
    return 0;
}
