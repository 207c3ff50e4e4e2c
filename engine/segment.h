/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Immutable segment files: per-series chunks of compressed columns, a
 * footer indexing them with their statistics, and a trailer that locates
 * the footer. Written once by the flusher (tide__segw_*), then only read
 * (tide__seg_*). Byte layout: docs/file-format.md, "Segment files".
 */
#ifndef TIDE_ENGINE_SEGMENT_H
#define TIDE_ENGINE_SEGMENT_H

#include "internal.h"
#include "io.h"
#include "keys.h"

#define TIDE_SEG_HEADER_BYTES 64u
#define TIDE_SEG_CHUNK_ENTRY_BYTES 112u
#define TIDE_SEG_TRAILER_BYTES 32u

/* A chunk's index entry, as decoded from the footer. Statistics are over
 * the chunk's values: bool as 0/1, i64 converted to double; strings have
 * none. first and last keep the exact 8-byte value (f64 bits, i64, 0/1). */
struct chunk_ent {
    uint64_t series_id;
    uint64_t account_id;
    uint64_t offset; /* file offset of the payload */
    uint32_t count;
    uint32_t ts_bytes;     /* payload = ts column, then value column */
    uint32_t stored_bytes; /* whole payload */
    uint32_t raw_bytes;    /* the points before compression */
    uint8_t type;
    int64_t min_ts;
    int64_t max_ts;
    double min;
    double max;
    double sum;
    uint64_t first;
    uint64_t last;
    uint64_t hash; /* XXH3-64 of the payload */
};

struct seg {
    uint64_t id;
    uint16_t shard;
    uint16_t tier;
    int fd;
    char *path;
    int64_t min_ts;
    int64_t max_ts;
    uint64_t points;
    uint64_t file_bytes;
    uint32_t n_accounts;
    uint64_t *accounts; /* sorted */
    uint32_t n_chunks;
    struct chunk_ent *chunks; /* sorted by (series_id, min_ts) */
    /* Set by the db when it adopts the segment: 1 when every series in it
     * maps to `shard` under the db's shard count, so a read of a series of
     * another shard can pass it by. 0 after a change of shard count. */
    uint8_t shard_only;
    uint8_t level; /* the manifest's: 0 flushed, 1 compacted */
    /* Set once a compaction's manifest no longer lists the segment: the
     * file is deleted when the last list holding it lets go. */
    uint8_t unlink_on_close;
    /* Encryption at rest (docs/file-format.md, "Encryption at rest"):
     * every chunk payload is followed on disk by its GCM tag; keys[i] is
     * the file's subkey of accounts[i]. Chunks of an account whose key
     * was destroyed are left out of `chunks` at open. */
    uint8_t encrypted;
    uint8_t shredded; /* chunks were left out: compaction rewrites it */
    uint8_t salt[TIDE_SALT_BYTES];
    uint8_t (*keys)[TIDE_KEY_BYTES];
    struct keys *kr; /* the db's, for logging; outlives the segment */
};

/* Bytes a chunk's payload takes in the file: its tag follows it when the
 * segment is encrypted. */
static inline uint32_t tide__seg_disk_bytes(const struct seg *seg,
                                            const struct chunk_ent *e)
{
    return e->stored_bytes + (seg->encrypted ? TIDE_TAG_BYTES : 0);
}

/* Decrypt in place the chunk `e` of `seg` whose disk bytes are at `p`
 * (tag after the payload). 0, or TIDE_ECIPHER (logged with the file and
 * offset). A no-op on a plaintext segment. */
int tide__seg_decrypt(const struct seg *seg, const struct chunk_ent *e,
                      uint8_t *p);

/*
 * Open the segment at `path`: validate header, trailer and footer
 * checksums and load the chunk index. `kr` is the db's key cache (NULL:
 * encryption off). Returns 0, TIDE_ECORRUPT, TIDE_EVERSION, TIDE_EKEY (an
 * encrypted segment without a key, or with the wrong engine key),
 * TIDE_ECIPHER (the footer failed authentication; logged with file and
 * offset), -ENOMEM or -errno. On success *out owns the fd.
 */
int tide__seg_open(const char *path, struct keys *kr, struct seg **out);
void tide__seg_close(struct seg *seg);

/* Chunks of `series_id`: indices [*lo, *hi) into seg->chunks. */
void tide__seg_find(const struct seg *seg, uint64_t series_id, uint32_t *lo,
                    uint32_t *hi);

/* The binary search behind tide__seg_find() and tide__seg_seek(): chunks
 * of `series_id` as above, given that the first index holding an id not
 * below it lies in [a, b]. */
static inline void tide__seg_search(const struct seg *seg, uint64_t series_id,
                                    uint32_t a, uint32_t b, uint32_t *lo,
                                    uint32_t *hi)
{
    while (a < b) {
        uint32_t m = a + (b - a) / 2;

        if (seg->chunks[m].series_id < series_id)
            a = m + 1;
        else
            b = m;
    }
    *lo = a;
    while (a < seg->n_chunks && seg->chunks[a].series_id == series_id)
        a++;
    *hi = a;
}

/* The same as tide__seg_find() for a caller that visits ids in ascending
 * order: the search gallops forward from *hint (0 at first, then the
 * value left by the previous call), so each id costs O(1) probes when the
 * next id's chunks follow. Any hint is safe: one that does not fit is
 * ignored. Inline: called once per segment and series of every
 * multi-series read. */
static inline void tide__seg_seek(const struct seg *seg, uint64_t series_id,
                                  uint32_t *hint, uint32_t *lo, uint32_t *hi)
{
    uint32_t a = *hint, b, step = 1;

    /* Every index below `a` must hold a smaller id; a hint that does not
     * prove it is dropped, so any hint gives the right answer. */
    if (a > seg->n_chunks ||
        (a > 0 && seg->chunks[a - 1].series_id >= series_id))
        a = 0;
    /* Gallop forward, then search the bracket [a, b). */
    b = a;
    while (b < seg->n_chunks && seg->chunks[b].series_id < series_id) {
        a = b + 1;
        b = step > seg->n_chunks - b ? seg->n_chunks : b + step;
        step *= 2;
    }
    tide__seg_search(seg, series_id, a, b, lo, hi);
    *hint = *hi;
    /* A read over many series visits every segment's index in step, one
     * series at a time: too many streams, each advancing by a few 112-byte
     * entries, for the hardware prefetcher, so each call would otherwise
     * wait on memory for the next series' first entry. */
    if (*hi + 16 < seg->n_chunks)
        __builtin_prefetch(&seg->chunks[*hi + 16]);
}

/*
 * Decode one chunk's payload (`len` == e->stored_bytes bytes) after
 * verifying its checksum: fills ts[0..count) and either vals[0..count)
 * (8-byte values) or strs[0..count) (pointing into `arena`, which must not
 * be grown by the caller while they are used). Returns 0, TIDE_ECORRUPT or
 * -ENOMEM.
 */
int tide__chunk_decode(const struct chunk_ent *e, const uint8_t *payload,
                       size_t len, int64_t *ts, uint64_t *vals,
                       struct tide_str *strs, struct tide_buf *arena);

/*
 * Decode the points of a numeric chunk within [from, to): the same checks,
 * then ts[0..count) whole, and *lo, *hi the indices of the first point in
 * range and one past the last; vals[] is valid only on [*lo, *hi) (f64
 * values outside it are not converted). Returns as tide__chunk_decode().
 */
int tide__chunk_decode_range(const struct chunk_ent *e, const uint8_t *payload,
                             size_t len, int64_t from, int64_t to, int64_t *ts,
                             uint64_t *vals, uint32_t *lo, uint32_t *hi);

/* tide__chunk_decode() of an f64 chunk that also gives, when its column is
 * decimal, the integers k[0..count) and *exp (values k / 10^exp); *exp is
 * -1 for an XOR column. */
int tide__chunk_decode_f64_k(const struct chunk_ent *e, const uint8_t *payload,
                             size_t len, int64_t *ts, uint64_t *vals,
                             int64_t *k, int *exp);

/* Writer of one new segment file. */
struct seg_writer;

/* Start segment `id` as a temporary file in `dir`; encrypted when `kr`
 * (the db's key cache) is not NULL. */
int tide__segw_open(const char *dir, uint64_t id, uint16_t shard, uint16_t tier,
                    struct tide_io *io, struct keys *kr,
                    struct seg_writer **out);

/* Add one chunk: `n` points (1..65536) of one series, sorted, without
 * duplicates. Returns 0, -ENOMEM or -errno. */
int tide__segw_add(struct seg_writer *w, uint64_t series_id,
                   uint64_t account_id, uint8_t type, uint32_t n,
                   const int64_t *ts, const uint64_t *vals,
                   const struct tide_str *strs);

/* Write footer and trailer, fdatasync, rename into place and fsync the
 * directory. The writer is freed whatever the result; on failure the
 * temporary file is removed. *path_out (tide_malloc'd) names the file. */
int tide__segw_finish(struct seg_writer *w, char **path_out);

/* tide__segw_add() of an f64 series whose values are k[i] / 10^exp
 * exactly (vals[i] their bits, for the statistics): encoded from the
 * integers without testing each value. */
int tide__segw_add_dec(struct seg_writer *w, uint64_t series_id,
                       uint64_t account_id, uint32_t n, const int64_t *ts,
                       const uint64_t *vals, const int64_t *k, unsigned exp);

/* Add a chunk of another segment as it is: entry `src` (its statistics
 * and checksum) and its stored payload, verified by the caller. */
int tide__segw_add_raw(struct seg_writer *w, const struct chunk_ent *src,
                       const uint8_t *payload);

/* Bytes written to the segment so far (payloads and header). */
uint64_t tide__segw_bytes(const struct seg_writer *w);

/* Abandon the segment: remove the temporary file and free the writer. */
void tide__segw_abort(struct seg_writer *w);

/* File name of segment `id` in `dir` (PATH_MAX buffer). */
void tide__seg_path(char *out, const char *dir, uint64_t id);

#endif /* TIDE_ENGINE_SEGMENT_H */
