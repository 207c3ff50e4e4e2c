/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Segment files (segment.h). Written sequentially through an aligned
 * buffer in whole 4 KiB blocks (O_DIRECT where possible), then fsynced and
 * renamed into place. docs/file-format.md, "Segment files", is the
 * specification; all integers are little-endian:
 *
 * Header (64 bytes at offset 0):
 *   OFFSET  SIZE  DESCRIPTION
 *   0       8     magic "TIDESEG\0"
 *   8       4     format version (1)
 *   12      4     flags: bit 0 = encrypted (reserved, always 0 in v1)
 *   16      4     encryption key id (0 in v1)
 *   20      2     shard
 *   22      2     tier
 *   24      8     segment id
 *   32      24    zero
 *   56      8     XXH3-64 of bytes 0..56
 *
 * Chunk payloads follow from offset 64: the timestamp column, then the
 * value column, each as encoded by column.c.
 *
 * Footer (at the offset the trailer gives):
 *   OFFSET  SIZE  DESCRIPTION
 *   0       8     min timestamp (ns)
 *   8       8     max timestamp (ns)
 *   16      8     points
 *   24      2     tier
 *   26      2     zero
 *   28      4     number of accounts A
 *   32      4     number of chunks C
 *   36      4     zero
 *   40      8*A   account ids, ascending
 *   40+8A   112*C chunk entries, ordered by (series id, min timestamp)
 *
 * Chunk entry (112 bytes):
 *   OFFSET  SIZE  DESCRIPTION
 *   0       8     series id
 *   8       8     file offset of the payload
 *   16      4     points
 *   20      4     timestamp column bytes
 *   24      4     payload bytes (timestamp + value column)
 *   28      4     raw bytes (points before compression)
 *   32      1     value type (1 f64, 2 i64, 3 bool, 4 string)
 *   33      7     zero
 *   40      8     min timestamp
 *   48      8     max timestamp
 *   56      8     min value (f64; 0 for strings)
 *   64      8     max value (f64; 0 for strings)
 *   72      8     sum of values (f64; 0 for strings)
 *   80      8     first value, exact (f64 bits, i64, or 0/1)
 *   88      8     last value, exact
 *   96      8     account id
 *   104     8     XXH3-64 of the payload
 *
 * Trailer (the last 32 bytes of the file; zero padding before it makes
 * the file a whole number of 4 KiB blocks):
 *   OFFSET  SIZE  DESCRIPTION
 *   0       8     footer offset
 *   8       4     footer length
 *   12      4     format version (1)
 *   16      8     XXH3-64 of the footer
 *   24      8     magic "TIDEEND\0"
 */
#include "segment.h"
#include "ts.h"

#include "column.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define SEG_MAGIC "TIDESEG"
#define SEG_END_MAGIC "TIDEEND"
#define SEG_VERSION 1u     /* plaintext */
#define SEG_VERSION_ENC 2u /* encrypted: flag bit 0, salt, tags */
#define SEG_FLAG_ENCRYPTED 1u
#define SEG_DOMAIN_CHUNK 1u /* nonce domains (keys.h), frozen */
#define SEG_DOMAIN_FOOTER 2u
#define SEG_AAD_BYTES 56u
#define SEG_BLOCK 4096u
#define SEG_BUF_BYTES (1u << 20)
#define SEG_CHUNK_POINTS_MAX 65536u
#define SEG_FOOTER_FIXED 40u

void tide__seg_path(char *out, const char *dir, uint64_t id)
{
    snprintf(out, PATH_MAX, "%s/%016" PRIx64 ".tseg", dir, id);
}

/* ---- Writing ------------------------------------------------------------ */

struct seg_writer {
    char path[PATH_MAX];
    char tmp_path[PATH_MAX + 8];
    char *dir;
    int fd;
    struct tide_io *io;
    uint8_t *buf; /* SEG_BUF_BYTES, block-aligned */
    size_t buf_len;
    uint64_t buf_off; /* file offset of buf[0] */
    uint16_t shard;
    uint16_t tier;
    uint64_t id;
    int64_t min_ts;
    int64_t max_ts;
    uint64_t points;
    struct tide_buf ents;     /* struct chunk_ent[] */
    struct tide_buf accounts; /* uint64_t[] */
    struct tide_buf col;      /* encoded columns of one chunk */
    struct tide_buf scratch;  /* typed copies of values */
    /* Encryption (kr != NULL): the file's salt and the subkeys derived so
     * far, (account id, key) pairs; the last one used is tried first. */
    struct keys *kr;
    uint8_t salt[TIDE_SALT_BYTES];
    struct tide_buf subkeys; /* struct subkey[] */
    size_t last_key;
    struct tide_buf sealed; /* a payload's ciphertext and tag */
};

struct subkey {
    uint64_t account_id;
    uint8_t key[TIDE_KEY_BYTES];
};

/* The additional data of a chunk (or of the footer: series and account 0,
 * count 0): binds the block to its file and place, so it cannot be moved,
 * swapped or cut unnoticed. */
static void seg_aad(uint8_t aad[SEG_AAD_BYTES], const uint8_t *salt,
                    uint64_t seg_id, uint64_t off, uint32_t len, uint32_t count,
                    uint64_t account_id, uint64_t series_id)
{
    memcpy(aad, salt, TIDE_SALT_BYTES);
    tide__put_le64(aad + 16, seg_id);
    tide__put_le64(aad + 24, off);
    tide__put_le32(aad + 32, len);
    tide__put_le32(aad + 36, count);
    tide__put_le64(aad + 40, account_id);
    tide__put_le64(aad + 48, series_id);
}

/* The writer's subkey of `account_id`. */
static int writer_key(struct seg_writer *w, uint64_t account_id,
                      const uint8_t **key)
{
    struct subkey *k = (struct subkey *)(void *)w->subkeys.data;
    size_t n = w->subkeys.len / sizeof(*k);
    struct subkey fresh = {.account_id = account_id};
    int rc;

    if (w->last_key < n && k[w->last_key].account_id == account_id) {
        *key = k[w->last_key].key;
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        if (k[i].account_id == account_id) {
            w->last_key = i;
            *key = k[i].key;
            return 0;
        }
    rc = tide__keys_file(w->kr, account_id, "seg", w->salt, fresh.key);
    if (rc == 0)
        rc = tide__buf_append(&w->subkeys, &fresh, sizeof(fresh));
    tide_crypto_wipe(fresh.key, sizeof(fresh.key));
    if (rc)
        return rc;
    w->last_key = n;
    *key = ((struct subkey *)(void *)w->subkeys.data)[n].key;
    return 0;
}

/* Seal `len` bytes at `p`, to be written at `off` of the file, into
 * w->sealed (ciphertext, then the tag). */
static int writer_seal(struct seg_writer *w, uint64_t account_id,
                       uint64_t series_id, uint32_t count, uint32_t domain,
                       uint64_t off, const uint8_t *p, uint32_t len)
{
    uint8_t aad[SEG_AAD_BYTES], nonce[TIDE_NONCE_BYTES];
    const uint8_t *key;
    int rc = writer_key(w, account_id, &key);

    if (rc)
        return rc;
    w->sealed.len = 0;
    rc = tide__buf_reserve(&w->sealed, (size_t)len + TIDE_TAG_BYTES);
    if (rc)
        return rc;
    /* Each offset of a file holds one block: with the file's own subkey
     * the nonce never repeats. */
    tide__keys_nonce(nonce, off, domain);
    seg_aad(aad, w->salt, w->id, off, len, count, account_id, series_id);
    rc = tide__keys_seal(key, nonce, aad, sizeof(aad), p, len, w->sealed.data,
                         w->sealed.data + len);
    if (rc == 0)
        w->sealed.len = (size_t)len + TIDE_TAG_BYTES;
    return rc;
}

static int flush_buf(struct seg_writer *w)
{
    struct tide_io_req req = {.op = TIDE_IO_WRITE,
                              .fd = w->fd,
                              .buf = w->buf,
                              .len = (uint32_t)w->buf_len,
                              .off = w->buf_off};
    int rc;

    TIDE_ASSERT(w->buf_len % SEG_BLOCK == 0);
    if (w->buf_len == 0)
        return 0;
    rc = tide__io_run(w->io, &req, 1);
    if (rc)
        return rc;
    w->buf_off += w->buf_len;
    w->buf_len = 0;
    return 0;
}

static int put(struct seg_writer *w, const void *data, size_t len)
{
    const uint8_t *p = data;

    while (len > 0) {
        size_t n = SEG_BUF_BYTES - w->buf_len;
        int rc;

        if (n > len)
            n = len;
        memcpy(w->buf + w->buf_len, p, n);
        w->buf_len += n;
        p += n;
        len -= n;
        if (w->buf_len == SEG_BUF_BYTES) {
            rc = flush_buf(w);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static uint64_t write_pos(const struct seg_writer *w)
{
    return w->buf_off + w->buf_len;
}

uint64_t tide__segw_bytes(const struct seg_writer *w)
{
    return write_pos(w);
}

int tide__segw_open(const char *dir, uint64_t id, uint16_t shard, uint16_t tier,
                    struct tide_io *io, struct keys *kr,
                    struct seg_writer **out)
{
    struct seg_writer *w = tide_calloc(1, sizeof(*w));
    uint8_t hdr[TIDE_SEG_HEADER_BYTES] = {0};
    int rc;

    if (!w)
        return -ENOMEM;
    w->fd = -1;
    w->io = io;
    w->id = id;
    w->shard = shard;
    w->tier = tier;
    w->min_ts = INT64_MAX;
    w->max_ts = INT64_MIN;
    w->dir = tide_strdup(dir);
    w->buf = tide_aligned_alloc(SEG_BLOCK, SEG_BUF_BYTES);
    if (!w->dir || !w->buf) {
        rc = -ENOMEM;
        goto fail;
    }
    tide__seg_path(w->path, dir, id);
    snprintf(w->tmp_path, sizeof(w->tmp_path), "%s.tmp", w->path);
    w->fd = open(w->tmp_path,
                 O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0600);
    if (w->fd < 0 && errno == EINVAL)
        w->fd =
            open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (w->fd < 0) {
        rc = -errno;
        goto fail;
    }
    memcpy(hdr, SEG_MAGIC, 8);
    tide__put_le32(hdr + 8, SEG_VERSION);
    w->kr = kr;
    if (kr) {
        /* A fresh salt per file: its subkeys are its own. */
        rc = tide_crypto_random(w->salt, sizeof(w->salt));
        if (rc)
            goto fail;
        tide__put_le32(hdr + 8, SEG_VERSION_ENC);
        tide__put_le32(hdr + 12, SEG_FLAG_ENCRYPTED);
        tide__put_le32(hdr + 16, tide__keys_id(kr));
        memcpy(hdr + 32, w->salt, TIDE_SALT_BYTES);
    }
    hdr[20] = (uint8_t)shard;
    hdr[21] = (uint8_t)(shard >> 8);
    hdr[22] = (uint8_t)tier;
    hdr[23] = (uint8_t)(tier >> 8);
    tide__put_le64(hdr + 24, id);
    tide__put_le64(hdr + 56, XXH3_64bits(hdr, 56));
    rc = put(w, hdr, sizeof(hdr));
    if (rc)
        goto fail;
    *out = w;
    return 0;
fail:
    tide__segw_abort(w);
    return rc;
}

/* Statistics of a chunk's values into `e`. NaN values are skipped for
 * min/max (they compare false) but poison the sum, as in SQL. */
static void chunk_stats(struct chunk_ent *e, const uint64_t *vals)
{
    e->min = e->max = e->sum = 0;
    e->first = e->last = 0;
    if (e->type == TIDE_TYPE_STR)
        return;
    e->first = vals[0];
    e->last = vals[e->count - 1];
    e->min = e->max = tide__value_double(e->type, vals[0]);
    for (uint32_t i = 0; i < e->count; i++) {
        double d = tide__value_double(e->type, vals[i]);

        if (d < e->min || e->min != e->min)
            e->min = d;
        if (d > e->max || e->max != e->max)
            e->max = d;
        e->sum += d;
    }
}

static int encode_values(struct seg_writer *w, uint8_t type, uint32_t n,
                         const uint64_t *vals, const struct tide_str *strs)
{
    int rc;

    switch (type) {
    case TIDE_TYPE_F64:
        w->scratch.len = 0;
        rc = tide__buf_append(&w->scratch, vals, (size_t)n * 8);
        return rc ? rc
                  : tide__col_encode_f64((const double *)w->scratch.data, n,
                                         &w->col);
    case TIDE_TYPE_I64:
        return tide__col_encode_i64((const int64_t *)vals, n, &w->col);
    case TIDE_TYPE_BOOL:
        w->scratch.len = 0;
        rc = tide__buf_reserve(&w->scratch, n);
        if (rc)
            return rc;
        for (uint32_t i = 0; i < n; i++)
            w->scratch.data[i] = vals[i] != 0;
        return tide__col_encode_bool(w->scratch.data, n, &w->col);
    case TIDE_TYPE_STR:
        return tide__col_encode_str(strs, n, &w->col);
    }
    return TIDE_EINVAL;
}

static void put_entry(uint8_t *p, const struct chunk_ent *e)
{
    memset(p, 0, TIDE_SEG_CHUNK_ENTRY_BYTES);
    tide__put_le64(p, e->series_id);
    tide__put_le64(p + 8, e->offset);
    tide__put_le32(p + 16, e->count);
    tide__put_le32(p + 20, e->ts_bytes);
    tide__put_le32(p + 24, e->stored_bytes);
    tide__put_le32(p + 28, e->raw_bytes);
    p[32] = e->type;
    tide__put_le64(p + 40, (uint64_t)e->min_ts);
    tide__put_le64(p + 48, (uint64_t)e->max_ts);
    memcpy(p + 56, &e->min, 8);
    memcpy(p + 64, &e->max, 8);
    memcpy(p + 72, &e->sum, 8);
    tide__put_le64(p + 80, e->first);
    tide__put_le64(p + 88, e->last);
    tide__put_le64(p + 96, e->account_id);
    tide__put_le64(p + 104, e->hash);
}

/* tide__segw_add(), and tide__segw_add_dec() when `k` is not NULL. */
static int add_chunk(struct seg_writer *w, uint64_t series_id,
                     uint64_t account_id, uint8_t type, uint32_t n,
                     const int64_t *ts, const uint64_t *vals,
                     const struct tide_str *strs, const int64_t *k,
                     unsigned exp)
{
    struct chunk_ent e = {0};
    size_t ts_bytes;
    int rc;

    if (n == 0 || n > SEG_CHUNK_POINTS_MAX)
        return TIDE_EINVAL;
    /* Readers rely on it: a chunk's times are strictly ascending. */
    for (uint32_t i = 1; i < n; i++)
        TIDE_DEBUG_ASSERT(ts[i] > ts[i - 1]);
    w->col.len = 0;
    rc = tide__col_encode_ts(ts, n, &w->col);
    if (rc)
        return rc;
    ts_bytes = w->col.len;
    rc = k ? tide__col_encode_f64_k(k, n, exp, &w->col)
           : encode_values(w, type, n, vals, strs);
    if (rc)
        return rc;
    e.series_id = series_id;
    e.account_id = account_id;
    e.count = n;
    e.type = type;
    e.ts_bytes = (uint32_t)ts_bytes;
    e.stored_bytes = (uint32_t)w->col.len;
    e.raw_bytes = n * 16u;
    if (type == TIDE_TYPE_STR) {
        e.raw_bytes = n * 8u;
        for (uint32_t i = 0; i < n; i++)
            e.raw_bytes += strs[i].len;
    }
    e.min_ts = ts[0];
    e.max_ts = ts[n - 1];
    chunk_stats(&e, vals);
    e.hash = XXH3_64bits(w->col.data, w->col.len);
    return tide__segw_add_raw(w, &e, w->col.data);
}

int tide__segw_add(struct seg_writer *w, uint64_t series_id,
                   uint64_t account_id, uint8_t type, uint32_t n,
                   const int64_t *ts, const uint64_t *vals,
                   const struct tide_str *strs)
{
    return add_chunk(w, series_id, account_id, type, n, ts, vals, strs, NULL,
                     0);
}

int tide__segw_add_dec(struct seg_writer *w, uint64_t series_id,
                       uint64_t account_id, uint32_t n, const int64_t *ts,
                       const uint64_t *vals, const int64_t *k, unsigned exp)
{
    return add_chunk(w, series_id, account_id, TIDE_TYPE_F64, n, ts, vals, NULL,
                     k, exp);
}

int tide__segw_add_raw(struct seg_writer *w, const struct chunk_ent *src,
                       const uint8_t *payload)
{
    struct chunk_ent e = *src;
    const uint8_t *key;
    int rc;

    /* A chunk of an account whose key was destroyed is erased: it is
     * left out, never written. */
    if (w->kr && writer_key(w, e.account_id, &key) == TIDE_EKEY)
        return 0;
    e.offset = write_pos(w);
    rc = tide__buf_append(&w->ents, &e, sizeof(e));
    if (rc == 0)
        rc =
            tide__buf_append(&w->accounts, &e.account_id, sizeof(e.account_id));
    if (rc == 0 && w->kr) {
        rc = writer_seal(w, e.account_id, e.series_id, e.count,
                         SEG_DOMAIN_CHUNK, e.offset, payload, e.stored_bytes);
        if (rc == 0)
            rc = put(w, w->sealed.data, w->sealed.len);
    } else if (rc == 0) {
        rc = put(w, payload, e.stored_bytes);
    }
    if (rc)
        return rc;
    if (e.min_ts < w->min_ts)
        w->min_ts = e.min_ts;
    if (e.max_ts > w->max_ts)
        w->max_ts = e.max_ts;
    w->points += e.count;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static int cmp_ent(const void *a, const void *b)
{
    const struct chunk_ent *x = a, *y = b;

    if (x->series_id != y->series_id)
        return x->series_id < y->series_id ? -1 : 1;
    return x->min_ts < y->min_ts ? -1 : x->min_ts > y->min_ts;
}

/* Sort the account list and drop repeats; returns the new count. */
static size_t unique_accounts(uint64_t *a, size_t n)
{
    size_t out = 0;

    if (n)
        qsort(a, n, sizeof(*a), cmp_u64);
    for (size_t i = 0; i < n; i++)
        if (out == 0 || a[out - 1] != a[i])
            a[out++] = a[i];
    return out;
}

static int write_footer(struct seg_writer *w)
{
    size_t n_chunks = w->ents.len / sizeof(struct chunk_ent);
    size_t n_acc = unique_accounts((uint64_t *)w->accounts.data,
                                   w->accounts.len / sizeof(uint64_t));
    struct chunk_ent *ents = (struct chunk_ent *)w->ents.data;
    size_t len =
        SEG_FOOTER_FIXED + 8 * n_acc + TIDE_SEG_CHUNK_ENTRY_BYTES * n_chunks;
    uint64_t footer_off = write_pos(w), end;
    uint8_t trailer[TIDE_SEG_TRAILER_BYTES] = {0};
    uint8_t *f;
    int rc;

    if (n_chunks)
        qsort(ents, n_chunks, sizeof(*ents), cmp_ent);
    w->col.len = 0;
    rc = tide__buf_reserve(&w->col, len);
    if (rc)
        return rc;
    f = w->col.data;
    memset(f, 0, SEG_FOOTER_FIXED);
    tide__put_le64(f, (uint64_t)w->min_ts);
    tide__put_le64(f + 8, (uint64_t)w->max_ts);
    tide__put_le64(f + 16, w->points);
    f[24] = (uint8_t)w->tier;
    f[25] = (uint8_t)(w->tier >> 8);
    tide__put_le32(f + 28, (uint32_t)n_acc);
    tide__put_le32(f + 32, (uint32_t)n_chunks);
    for (size_t i = 0; i < n_acc; i++)
        tide__put_le64(f + SEG_FOOTER_FIXED + 8 * i,
                       ((uint64_t *)w->accounts.data)[i]);
    for (size_t i = 0; i < n_chunks; i++)
        put_entry(f + SEG_FOOTER_FIXED + 8 * n_acc +
                      TIDE_SEG_CHUNK_ENTRY_BYTES * i,
                  &ents[i]);
    if (w->kr) {
        /* The footer (statistics hold values too) under the engine key;
         * its checksum in the trailer is left 0: the tag vouches for it. */
        rc = writer_seal(w, 0, 0, 0, SEG_DOMAIN_FOOTER, footer_off, f,
                         (uint32_t)len);
        if (rc == 0)
            rc = put(w, w->sealed.data, w->sealed.len);
    } else {
        rc = put(w, f, len);
    }
    if (rc)
        return rc;
    /* Zero padding so the trailer ends on a block boundary. */
    end = write_pos(w) + TIDE_SEG_TRAILER_BYTES;
    end = (end + SEG_BLOCK - 1) / SEG_BLOCK * SEG_BLOCK;
    while (write_pos(w) < end - TIDE_SEG_TRAILER_BYTES) {
        static const uint8_t zeros[512];
        uint64_t gap = end - TIDE_SEG_TRAILER_BYTES - write_pos(w);

        rc = put(w, zeros, gap < sizeof(zeros) ? gap : sizeof(zeros));
        if (rc)
            return rc;
    }
    tide__put_le64(trailer, footer_off);
    tide__put_le32(trailer + 8, (uint32_t)len);
    tide__put_le32(trailer + 12, w->kr ? SEG_VERSION_ENC : SEG_VERSION);
    tide__put_le64(trailer + 16, w->kr ? 0 : XXH3_64bits(f, len));
    memcpy(trailer + 24, SEG_END_MAGIC, 8);
    rc = put(w, trailer, sizeof(trailer));
    return rc ? rc : flush_buf(w);
}

static void writer_free(struct seg_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    tide_free(w->dir);
    tide_free(w->buf);
    tide__buf_fini(&w->ents);
    tide__buf_fini(&w->accounts);
    tide__buf_fini(&w->col);
    tide__buf_fini(&w->scratch);
    if (w->subkeys.data)
        tide_crypto_wipe(w->subkeys.data, w->subkeys.len);
    tide__buf_fini(&w->subkeys);
    tide__buf_fini(&w->sealed);
    tide_free(w);
}

void tide__segw_abort(struct seg_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        unlink(w->tmp_path);
    writer_free(w);
}

int tide__segw_finish(struct seg_writer *w, char **path_out)
{
    struct tide_io_req req = {.op = TIDE_IO_FDATASYNC, .fd = w->fd};
    int rc;

    rc = write_footer(w);
    if (rc == 0)
        rc = tide__io_run(w->io, &req, 1);
    if (rc == 0 && rename(w->tmp_path, w->path) != 0)
        rc = -errno;
    if (rc) {
        tide__segw_abort(w);
        return rc;
    }
    /* The rename is durable only once the directory is synced. */
    rc = tide__io_fsync_dir(w->dir);
    if (rc == 0) {
        *path_out = tide_strdup(w->path);
        if (!*path_out)
            rc = -ENOMEM;
    }
    writer_free(w);
    return rc;
}

/* ---- Reading ------------------------------------------------------------ */

static void get_entry(const uint8_t *p, struct chunk_ent *e)
{
    e->series_id = tide__get_le64(p);
    e->offset = tide__get_le64(p + 8);
    e->count = tide__get_le32(p + 16);
    e->ts_bytes = tide__get_le32(p + 20);
    e->stored_bytes = tide__get_le32(p + 24);
    e->raw_bytes = tide__get_le32(p + 28);
    e->type = p[32];
    e->min_ts = (int64_t)tide__get_le64(p + 40);
    e->max_ts = (int64_t)tide__get_le64(p + 48);
    memcpy(&e->min, p + 56, 8);
    memcpy(&e->max, p + 64, 8);
    memcpy(&e->sum, p + 72, 8);
    e->first = tide__get_le64(p + 80);
    e->last = tide__get_le64(p + 88);
    e->account_id = tide__get_le64(p + 96);
    e->hash = tide__get_le64(p + 104);
}

/* An entry is usable only if it points inside the data area. */
static int entry_sane(const struct chunk_ent *e, uint64_t footer_off)
{
    return e->count > 0 && e->count <= SEG_CHUNK_POINTS_MAX &&
           e->type >= TIDE_TYPE_F64 && e->type <= TIDE_TYPE_STR &&
           e->ts_bytes <= e->stored_bytes &&
           e->offset >= TIDE_SEG_HEADER_BYTES && e->offset <= footer_off &&
           e->stored_bytes <= footer_off - e->offset && e->min_ts <= e->max_ts;
}

/* Derive the subkeys of an encrypted segment's accounts, leaving out the
 * chunks of those whose key was destroyed (they read as erased). */
static int open_keys(struct seg *seg, struct keys *kr)
{
    uint32_t kept = 0;
    int rc;

    seg->keys = tide_malloc((size_t)seg->n_accounts * TIDE_KEY_BYTES + 1);
    if (!seg->keys)
        return -ENOMEM;
    for (uint32_t i = 0; i < seg->n_accounts; i++) {
        rc = tide__keys_file(kr, seg->accounts[i], "seg", seg->salt,
                             seg->keys[i]);
        if (rc == TIDE_EKEY) {
            seg->shredded = 1;
            memset(seg->keys[i], 0, TIDE_KEY_BYTES);
            for (uint32_t c = 0; c < seg->n_chunks; c++)
                if (seg->chunks[c].account_id == seg->accounts[i])
                    seg->chunks[c].count = 0; /* marked; dropped below */
        } else if (rc) {
            return rc;
        }
    }
    for (uint32_t c = 0; c < seg->n_chunks; c++)
        if (seg->chunks[c].count)
            seg->chunks[kept++] = seg->chunks[c];
    seg->n_chunks = kept;
    return 0;
}

/* The subkey of `account_id` in `seg`, or NULL. */
static const uint8_t *seg_key(const struct seg *seg, uint64_t account_id)
{
    uint32_t a = 0, b = seg->n_accounts;

    while (a < b) {
        uint32_t m = a + (b - a) / 2;

        if (seg->accounts[m] < account_id)
            a = m + 1;
        else
            b = m;
    }
    return a < seg->n_accounts && seg->accounts[a] == account_id ? seg->keys[a]
                                                                 : NULL;
}

int tide__seg_decrypt(const struct seg *seg, const struct chunk_ent *e,
                      uint8_t *p)
{
    uint8_t aad[SEG_AAD_BYTES], nonce[TIDE_NONCE_BYTES];
    const uint8_t *key;

    if (!seg->encrypted)
        return 0;
    key = seg_key(seg, e->account_id);
    if (!key)
        return tide__keys_log_cipher(seg->kr, "chunk", seg->path, e->offset);
    tide__keys_nonce(nonce, e->offset, SEG_DOMAIN_CHUNK);
    seg_aad(aad, seg->salt, seg->id, e->offset, e->stored_bytes, e->count,
            e->account_id, e->series_id);
    if (tide__keys_open(key, nonce, aad, sizeof(aad), p, e->stored_bytes, p,
                        p + e->stored_bytes))
        return tide__keys_log_cipher(seg->kr, "chunk", seg->path, e->offset);
    return 0;
}

int tide__seg_open(const char *path, struct keys *kr, struct seg **out)
{
    uint8_t key0[TIDE_KEY_BYTES];
    uint32_t version, tag_bytes = 0;
    uint8_t hdr[TIDE_SEG_HEADER_BYTES], tr[TIDE_SEG_TRAILER_BYTES];
    uint8_t *f = NULL;
    struct seg *seg = NULL;
    uint64_t size, footer_off;
    uint32_t footer_len, n_acc, n_chunks;
    int fd, rc;

    rc = tide__io_open_read(path, &fd, &size);
    if (rc)
        return rc;
    rc = TIDE_ECORRUPT;
    if (size < TIDE_SEG_HEADER_BYTES + TIDE_SEG_TRAILER_BYTES)
        goto fail;
    rc = tide__io_pread_full(fd, hdr, sizeof(hdr), 0);
    if (rc == 0)
        rc = tide__io_pread_full(fd, tr, sizeof(tr),
                                 size - TIDE_SEG_TRAILER_BYTES);
    if (rc)
        goto fail;
    rc = TIDE_ECORRUPT;
    if (memcmp(hdr, SEG_MAGIC, 8) || memcmp(tr + 24, SEG_END_MAGIC, 8))
        goto fail;
    version = tide__get_le32(hdr + 8);
    if ((version != SEG_VERSION && version != SEG_VERSION_ENC) ||
        tide__get_le32(tr + 12) != version) {
        rc = TIDE_EVERSION;
        goto fail;
    }
    if (tide__get_le64(hdr + 56) != XXH3_64bits(hdr, 56) ||
        (tide__get_le32(hdr + 12) != 0) != (version == SEG_VERSION_ENC) ||
        tide__get_le32(hdr + 12) > SEG_FLAG_ENCRYPTED)
        goto fail;
    if (version == SEG_VERSION_ENC) {
        if (!kr) {
            rc = TIDE_EKEY;
            goto fail;
        }
        if (tide__get_le32(hdr + 16) != tide__keys_id(kr)) {
            tide__keys_log(kr, TIDE_LOG_ERROR,
                           "segment %s was encrypted under another engine "
                           "key than the one configured",
                           path);
            rc = TIDE_EKEY;
            goto fail;
        }
        tag_bytes = TIDE_TAG_BYTES;
    }
    footer_off = tide__get_le64(tr);
    footer_len = tide__get_le32(tr + 8);
    if (footer_len < SEG_FOOTER_FIXED || footer_off < TIDE_SEG_HEADER_BYTES ||
        footer_off > size - TIDE_SEG_TRAILER_BYTES ||
        (uint64_t)footer_len + tag_bytes >
            size - TIDE_SEG_TRAILER_BYTES - footer_off)
        goto fail;
    f = tide_malloc((size_t)footer_len + tag_bytes);
    seg = tide_calloc(1, sizeof(*seg));
    if (!f || !seg) {
        rc = -ENOMEM;
        goto fail;
    }
    seg->fd = -1;
    seg->kr = kr;
    rc = tide__io_pread_full(fd, f, (size_t)footer_len + tag_bytes, footer_off);
    if (rc)
        goto fail;
    rc = TIDE_ECORRUPT;
    if (tag_bytes) {
        uint8_t aad[SEG_AAD_BYTES], nonce[TIDE_NONCE_BYTES];

        seg->encrypted = 1;
        memcpy(seg->salt, hdr + 32, TIDE_SALT_BYTES);
        rc = tide__keys_file(kr, 0, "seg", seg->salt, key0);
        if (rc)
            goto fail;
        tide__keys_nonce(nonce, footer_off, SEG_DOMAIN_FOOTER);
        seg_aad(aad, seg->salt, tide__get_le64(hdr + 24), footer_off,
                footer_len, 0, 0, 0);
        rc = tide_crypto_open(key0, nonce, aad, sizeof(aad), f, footer_len, f,
                              f + footer_len);
        tide_crypto_wipe(key0, sizeof(key0));
        if (rc) {
            rc = tide__keys_log_cipher(kr, "segment footer", path, footer_off);
            goto fail;
        }
        rc = TIDE_ECORRUPT;
    } else if (XXH3_64bits(f, footer_len) != tide__get_le64(tr + 16)) {
        goto fail;
    }
    n_acc = tide__get_le32(f + 28);
    n_chunks = tide__get_le32(f + 32);
    if ((uint64_t)SEG_FOOTER_FIXED + 8ull * n_acc +
            (uint64_t)TIDE_SEG_CHUNK_ENTRY_BYTES * n_chunks !=
        footer_len)
        goto fail;
    seg->min_ts = (int64_t)tide__get_le64(f);
    seg->max_ts = (int64_t)tide__get_le64(f + 8);
    seg->points = tide__get_le64(f + 16);
    seg->tier = (uint16_t)(f[24] | f[25] << 8);
    seg->shard = (uint16_t)(hdr[20] | hdr[21] << 8);
    seg->id = tide__get_le64(hdr + 24);
    seg->file_bytes = size;
    seg->n_accounts = n_acc;
    seg->n_chunks = n_chunks;
    seg->accounts = tide_malloc((size_t)n_acc * 8 + 1);
    seg->chunks = tide_malloc((size_t)n_chunks * sizeof(*seg->chunks) + 1);
    seg->path = tide_strdup(path);
    if (!seg->accounts || !seg->chunks || !seg->path) {
        rc = -ENOMEM;
        goto fail;
    }
    for (uint32_t i = 0; i < n_acc; i++)
        seg->accounts[i] = tide__get_le64(f + SEG_FOOTER_FIXED + 8 * i);
    for (uint32_t i = 0; i < n_chunks; i++) {
        get_entry(f + SEG_FOOTER_FIXED + 8 * (size_t)n_acc +
                      TIDE_SEG_CHUNK_ENTRY_BYTES * (size_t)i,
                  &seg->chunks[i]);
        if (!entry_sane(&seg->chunks[i], footer_off) ||
            (i && cmp_ent(&seg->chunks[i - 1], &seg->chunks[i]) > 0) ||
            (uint64_t)seg->chunks[i].stored_bytes + tag_bytes >
                footer_off - seg->chunks[i].offset)
            goto fail;
    }
    if (seg->encrypted) {
        rc = open_keys(seg, kr);
        if (rc)
            goto fail;
    }
    tide_free(f);
    seg->fd = fd;
    *out = seg;
    return 0;
fail:
    tide_free(f);
    tide__seg_close(seg);
    close(fd);
    return rc;
}

void tide__seg_close(struct seg *seg)
{
    if (!seg)
        return;
    if (seg->fd >= 0)
        close(seg->fd);
    if (seg->unlink_on_close && seg->path)
        unlink(seg->path);
    if (seg->keys)
        tide_crypto_wipe(seg->keys, (size_t)seg->n_accounts * TIDE_KEY_BYTES);
    tide_free(seg->keys);
    tide_free(seg->accounts);
    tide_free(seg->chunks);
    tide_free(seg->path);
    tide_free(seg);
}

void tide__seg_find(const struct seg *seg, uint64_t series_id, uint32_t *lo,
                    uint32_t *hi)
{
    tide__seg_search(seg, series_id, 0, seg->n_chunks, lo, hi);
}

/* Verify a chunk's checksum over its whole payload, then decode its
 * timestamps into ts[0..count). */
static int chunk_decode_ts(const struct chunk_ent *e, const uint8_t *payload,
                           size_t len, int64_t *ts)
{
    if (len != e->stored_bytes || XXH3_64bits(payload, len) != e->hash)
        return TIDE_ECORRUPT;
    return tide__col_decode_ts(payload, e->ts_bytes, e->count, ts);
}

int tide__chunk_decode_f64_k(const struct chunk_ent *e, const uint8_t *payload,
                             size_t len, int64_t *ts, uint64_t *vals,
                             int64_t *k, int *exp)
{
    int rc = chunk_decode_ts(e, payload, len, ts);

    if (rc)
        return rc;
    return tide__col_decode_f64_k(payload + e->ts_bytes, len - e->ts_bytes,
                                  e->count, (double *)(void *)vals, k, exp);
}

int tide__chunk_decode_range(const struct chunk_ent *e, const uint8_t *payload,
                             size_t len, int64_t from, int64_t to, int64_t *ts,
                             uint64_t *vals, uint32_t *lo, uint32_t *hi)
{
    int rc;

    if (e->type != TIDE_TYPE_F64) {
        rc = tide__chunk_decode(e, payload, len, ts, vals, NULL, NULL);
        *lo = rc ? 0 : tide__ts_lower_bound(ts, e->count, from);
        *hi = rc ? 0 : tide__ts_lower_bound(ts, e->count, to);
        return rc;
    }
    rc = chunk_decode_ts(e, payload, len, ts);
    if (rc)
        return rc;
    *lo = e->min_ts >= from ? 0 : tide__ts_lower_bound(ts, e->count, from);
    *hi = e->max_ts < to ? e->count : tide__ts_lower_bound(ts, e->count, to);
    /* The checksum vouches for the bytes the range decoder does not
     * reach. */
    return tide__col_decode_f64_range(payload + e->ts_bytes, len - e->ts_bytes,
                                      e->count, *lo, *hi,
                                      (double *)(void *)vals);
}

int tide__chunk_decode(const struct chunk_ent *e, const uint8_t *payload,
                       size_t len, int64_t *ts, uint64_t *vals,
                       struct tide_str *strs, struct tide_buf *arena)
{
    const uint8_t *v = payload + e->ts_bytes;
    size_t vlen = len - e->ts_bytes;
    int rc;

    rc = chunk_decode_ts(e, payload, len, ts);
    if (rc)
        return rc;
    switch (e->type) {
    case TIDE_TYPE_F64:
        /* Decoded in place as doubles, then viewed as their bit patterns:
         * the caller keeps 8-byte values untyped. */
        return tide__col_decode_f64(v, vlen, e->count, (double *)(void *)vals);
    case TIDE_TYPE_I64:
        return tide__col_decode_i64(v, vlen, e->count, (int64_t *)vals);
    case TIDE_TYPE_BOOL: {
        uint8_t *b = (uint8_t *)vals;

        rc = tide__col_decode_bool(v, vlen, e->count, b);
        /* Widen in place from the back so no byte is overwritten early. */
        for (uint32_t i = e->count; rc == 0 && i-- > 0;)
            vals[i] = b[i];
        return rc;
    }
    case TIDE_TYPE_STR:
        return tide__col_decode_str(v, vlen, e->count, strs, arena);
    }
    return TIDE_ECORRUPT;
}
