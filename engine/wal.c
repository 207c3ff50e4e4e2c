/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-shard write-ahead log (wal.h). Files are named %016llx.wal after
 * their sequence number, preallocated, and written in whole 4 KiB blocks
 * from an aligned buffer so O_DIRECT works; the partial last block is
 * rewritten with the next group (identical old bytes, so a torn rewrite
 * cannot damage acknowledged records). docs/file-format.md, "WAL files",
 * is the specification:
 *
 * File header (32 bytes, little-endian):
 *   OFFSET  SIZE  DESCRIPTION
 *   0       8     magic "TIDEWAL\0"
 *   8       4     format version (2; 1 is still read)
 *   12      4     shard number
 *   16      8     file sequence number
 *   24      8     XXH3-64 of bytes 0..24
 *
 * Record (at 8-byte aligned offsets from 32):
 *   OFFSET  SIZE  DESCRIPTION
 *   0       4     payload length L
 *   4       1     type (1 batch, 2 producer table, 3 mark, 4 part,
 *                 5 abort)
 *   5       3     zero
 *   8       8     commit group number
 *   16      8     XXH3-64 of the payload, seeded with XXH3-64 of bytes 0..16
 *   24      L     payload, then zero padding to a multiple of 8
 *
 * A record is valid if and only if its type is known, the zero bytes are
 * zero, it lies inside the file and its checksum matches.
 *
 * Encrypted files (version 3; docs/file-format.md, "Encryption at rest")
 * have a 64-byte header:
 *   OFFSET  SIZE  DESCRIPTION
 *   0       8     magic "TIDEWAL\0"
 *   8       4     format version (3)
 *   12      4     shard number
 *   16      8     file sequence number
 *   24      4     engine key id
 *   28      4     zero
 *   32      16    salt, random per file
 *   48      8     zero
 *   56      8     XXH3-64 of bytes 0..56
 * and records whose bytes 16..24 hold the nonce counter of their first
 * part instead of the checksum, with the payload sealed in parts of one
 * account each:
 *   OFFSET  SIZE  DESCRIPTION
 *   0       4     parts N (>= 1)
 *   4       4     plaintext payload bytes P
 *   8       40*N  per part: account id (8), plaintext offset (4), length
 *                 (4), columns (4), zero (4), GCM tag (16)
 *   8+40N   P     the plaintext payload, each part encrypted under its
 *                 account's file subkey
 * A sealed record is valid if and only if the frame checks above hold,
 * the parts cover [0, P) in order, and every part whose key exists
 * authenticates.
 */
#include "wal.h"
#include "wal_batch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define WAL_MAGIC "TIDEWAL"
#define WAL_VERSION 2u
#define WAL_VERSION_MIN 1u /* version 1 files hold types 1 and 2 only */
#define WAL_VERSION_ENC 3u /* encrypted: 64-byte header, sealed records */
#define WAL_DOMAIN 4u      /* nonce domain (keys.h), frozen */
#define WAL_AAD_BYTES 88u

struct wal_part {
    uint64_t account_id;
    uint32_t off, len, columns;
};

struct subkey {
    uint64_t account_id;
    int destroyed;
    uint8_t key[TIDE_KEY_BYTES];
};

/* The subkey of `account_id` for the file of `salt`, from `cache` (a
 * struct subkey[]), derived and added when missing. 0, TIDE_EKEY
 * (destroyed) or -ENOMEM. */
static int file_key(struct keys *kr, const uint8_t *salt,
                    struct tide_buf *cache, uint64_t account_id,
                    const uint8_t **key)
{
    struct subkey *k = (struct subkey *)(void *)cache->data;
    size_t n = cache->len / sizeof(*k);
    struct subkey fresh = {.account_id = account_id};
    int rc;

    for (size_t i = 0; i < n; i++)
        if (k[i].account_id == account_id) {
            *key = k[i].key;
            return k[i].destroyed ? TIDE_EKEY : 0;
        }
    rc = tide__keys_file(kr, account_id, "wal", salt, fresh.key);
    if (rc && rc != TIDE_EKEY)
        return rc;
    fresh.destroyed = rc == TIDE_EKEY;
    rc = tide__buf_append(cache, &fresh, sizeof(fresh));
    tide_crypto_wipe(fresh.key, sizeof(fresh.key));
    if (rc)
        return rc;
    k = (struct subkey *)(void *)cache->data;
    *key = k[n].key;
    return k[n].destroyed ? TIDE_EKEY : 0;
}

static void wipe_keys(struct tide_buf *cache)
{
    if (cache->data)
        tide_crypto_wipe(cache->data, cache->len);
    cache->len = 0;
}

/* The additional data of part `k` of the sealed record at `rec_off`:
 * binds it to its file, place, frame and neighbours. */
static void wal_aad(uint8_t aad[WAL_AAD_BYTES], const uint8_t *salt,
                    unsigned shard, uint64_t seq, uint64_t rec_off,
                    const uint8_t *rec, const uint8_t *entry, uint32_t k)
{
    memcpy(aad, salt, TIDE_SALT_BYTES);
    tide__put_le32(aad + 16, shard);
    tide__put_le64(aad + 20, seq);
    tide__put_le64(aad + 28, rec_off);
    memcpy(aad + 36, rec, 16); /* length, type, zeros, group */
    memcpy(aad + 52, rec + TIDE_WAL_RECORD_HEADER, TIDE_WAL_SEAL_HEADER);
    memcpy(aad + 60, entry, 24);
    tide__put_le32(aad + 84, k);
}

static _Atomic uint64_t inject_space;

void tide__wal_inject_space(uint64_t bytes)
{
    atomic_store(&inject_space, bytes);
}

static int known_type(uint8_t type)
{
    return type >= TIDE_WAL_BATCH && type <= TIDE_WAL_ABORT;
}

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

static void file_name(char *out, const char *dir, uint64_t seq)
{
    snprintf(out, PATH_MAX, "%s/%016" PRIx64 ".wal", dir, seq);
}

int tide__wal_init(struct wal *w, const char *dir, unsigned shard)
{
    memset(w, 0, sizeof(*w));
    w->fd = -1;
    w->shard = shard;
    w->hdr_bytes = TIDE_WAL_FILE_HEADER;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -errno;
    w->dir = tide_strdup(dir);
    w->buf_cap = 1u << 20;
    w->buf = tide_aligned_alloc(TIDE_WAL_BLOCK, w->buf_cap);
    if (!w->dir || !w->buf) {
        tide__wal_fini(w);
        return -ENOMEM;
    }
    return 0;
}

void tide__wal_fini(struct wal *w)
{
    if (w->fd >= 0)
        close(w->fd);
    tide_free(w->dir);
    tide_free(w->buf);
    wipe_keys(&w->subkeys);
    tide__buf_fini(&w->subkeys);
    tide__buf_fini(&w->plan);
    memset(w, 0, sizeof(*w));
    w->fd = -1;
}

/* Column collection of plan(): where each column starts, and whose. */
struct plan_walk {
    struct tide_buf *parts;
    const uint8_t *payload;
    int rc;
};

static int plan_column(void *ctx, const struct wal_col *c)
{
    struct plan_walk *pw = ctx;
    struct wal_part *p = (struct wal_part *)(void *)pw->parts->data;
    size_t n = pw->parts->len / sizeof(*p);
    /* The column's header is 24 bytes before its timestamps. */
    uint32_t start = (uint32_t)(c->ts - 24 - pw->payload);
    struct wal_part fresh = {c->account_id, start, 0, 1};

    if (n > 1 && p[n - 1].account_id == c->account_id) {
        p[n - 1].columns++;
        return 0;
    }
    return tide__buf_append(pw->parts, &fresh, sizeof(fresh));
}

/* Split a record into parts of one account each: the headers go under
 * the engine key (account 0), each run of columns of one account under
 * that account's key. */
static int plan(struct wal *w, uint8_t type, const void *payload, uint32_t len)
{
    struct wal_part head = {0, 0, len, 0};
    struct plan_walk pw = {&w->plan, payload, 0};
    uint32_t base = type == TIDE_WAL_PART ? TIDE_WAL_PART_HEADER : 0;
    struct wal_part *p;
    size_t n;
    int rc;

    if (w->plan_for == payload && w->plan_len == len && w->plan.len)
        return 0;
    w->plan.len = 0;
    w->plan_for = NULL;
    rc = tide__buf_append(&w->plan, &head, sizeof(head));
    if (rc)
        return rc;
    if ((type == TIDE_WAL_BATCH || type == TIDE_WAL_PART) &&
        len >= base + TIDE_WAL_BATCH_HEADER) {
        rc = tide__wal_batch_columns((const uint8_t *)payload + base,
                                     len - base, plan_column, &pw);
        /* The payload is ours, built in memory: its columns parse. */
        if (rc == TIDE_ECORRUPT) {
            w->plan.len = sizeof(head);
            rc = 0;
        }
        if (rc)
            return rc;
    }
    /* Each part ends where the next begins. */
    p = (struct wal_part *)(void *)w->plan.data;
    n = w->plan.len / sizeof(*p);
    for (size_t i = 0; i < n; i++)
        p[i].len = (i + 1 < n ? p[i + 1].off : len) - p[i].off;
    w->plan_for = payload;
    w->plan_len = len;
    return 0;
}

uint32_t tide__wal_stored_len(struct wal *w, uint8_t type, const void *payload,
                              uint32_t len)
{
    size_t n;

    if (!w->kr)
        return len;
    if (plan(w, type, payload, len))
        return 0;
    n = w->plan.len / sizeof(struct wal_part);
    return TIDE_WAL_SEAL_HEADER + (uint32_t)n * TIDE_WAL_SEAL_PART + len;
}

uint32_t tide__wal_stored_len_plain(const struct wal *w, uint32_t len)
{
    return w->kr ? TIDE_WAL_SEAL_HEADER + TIDE_WAL_SEAL_PART + len : len;
}

/* Seal the record planned for (`type`, `payload`, `len`) at `p`, the
 * stored payload of `stored` bytes after the record header already at
 * p - TIDE_WAL_RECORD_HEADER. */
static int seal_record(struct wal *w, uint8_t *rec, const uint8_t *payload,
                       uint32_t len)
{
    const struct wal_part *parts =
        (const struct wal_part *)(void *)w->plan.data;
    uint32_t n = (uint32_t)(w->plan.len / sizeof(*parts));
    uint8_t *sp = rec + TIDE_WAL_RECORD_HEADER;
    uint8_t *ct = sp + TIDE_WAL_SEAL_HEADER + TIDE_WAL_SEAL_PART * n;
    uint64_t rec_off = w->buf_off + w->buf_len;
    uint8_t aad[WAL_AAD_BYTES], nonce[TIDE_NONCE_BYTES];
    int rc = 0;

    tide__put_le32(sp, n);
    tide__put_le32(sp + 4, len);
    tide__put_le64(rec + 16, w->nonce_ctr);
    for (uint32_t k = 0; k < n; k++) {
        uint8_t *e = sp + TIDE_WAL_SEAL_HEADER + TIDE_WAL_SEAL_PART * k;

        tide__put_le64(e, parts[k].account_id);
        tide__put_le32(e + 8, parts[k].off);
        tide__put_le32(e + 12, parts[k].len);
        tide__put_le32(e + 16, parts[k].columns);
    }
    for (uint32_t k = 0; k < n && rc == 0; k++) {
        uint8_t *e = sp + TIDE_WAL_SEAL_HEADER + TIDE_WAL_SEAL_PART * k;
        const uint8_t *key;

        rc = file_key(w->kr, w->salt, &w->subkeys, parts[k].account_id, &key);
        if (rc == TIDE_EKEY) {
            /* Destroyed: nothing of it is written; replay skips it. */
            memset(ct + parts[k].off, 0, parts[k].len);
            rc = 0;
            continue;
        }
        if (rc)
            break;
        /* Counters only grow within a file whose salt, hence keys, are
         * its own: no (key, nonce) is ever used twice. */
        tide__keys_nonce(nonce, w->nonce_ctr + k, WAL_DOMAIN);
        wal_aad(aad, w->salt, w->shard, w->seq, rec_off, rec, e, k);
        rc = tide__keys_seal(key, nonce, aad, sizeof(aad),
                             payload + parts[k].off, parts[k].len,
                             ct + parts[k].off, e + 24);
    }
    w->nonce_ctr += n;
    return rc;
}

uint64_t tide__wal_record_bytes(uint32_t len)
{
    return TIDE_WAL_RECORD_HEADER + round_up(len, 8);
}

int tide__wal_fits(const struct wal *w, uint32_t len)
{
    return w->fd >= 0 &&
           w->buf_off + w->buf_len + tide__wal_record_bytes(len) <=
               w->file_bytes;
}

static int reserve(struct wal *w, size_t extra)
{
    size_t need = round_up(w->buf_len + extra, TIDE_WAL_BLOCK);
    size_t cap = w->buf_cap;
    uint8_t *buf;

    if (need <= w->buf_cap)
        return 0;
    while (cap < need)
        cap *= 2;
    buf = tide_aligned_alloc(TIDE_WAL_BLOCK, cap);
    if (!buf)
        return -ENOMEM;
    memcpy(buf, w->buf, w->buf_len);
    tide_free(w->buf);
    w->buf = buf;
    w->buf_cap = cap;
    return 0;
}

int tide__wal_append(struct wal *w, uint8_t type, const void *payload,
                     uint32_t len)
{
    uint32_t stored = tide__wal_stored_len(w, type, payload, len);
    size_t total = tide__wal_record_bytes(stored);
    uint8_t *p;
    int rc;

    if (w->kr && stored == 0)
        return -ENOMEM;
    TIDE_ASSERT(tide__wal_fits(w, stored)); /* the caller checked */
    TIDE_ASSERT(known_type(type));
    rc = reserve(w, total);

    if (rc)
        return rc;
    p = w->buf + w->buf_len;
    memset(p, 0, total);
    if (w->kr) {
        tide__put_le32(p, stored);
        p[4] = type;
        tide__put_le64(p + 8, w->group);
        rc = seal_record(w, p, payload, len);
        w->plan_for = NULL;
        if (rc)
            return rc;
        w->buf_len += total;
        return 0;
    }
    tide__put_le32(p, len);
    p[4] = type;
    tide__put_le64(p + 8, w->group);
    memcpy(p + TIDE_WAL_RECORD_HEADER, payload, len);
    tide__put_le64(p + 16,
                   XXH3_64bits_withSeed(payload, len, XXH3_64bits(p, 16)));
    w->buf_len += total;
    return 0;
}

int tide__wal_commit(struct wal *w, struct tide_io *io, int sync)
{
    struct tide_io_req req[2];
    size_t len = round_up(w->buf_len, TIDE_WAL_BLOCK);
    size_t keep;
    unsigned n = 0;
    int rc;

    if (w->fd < 0)
        return -EBADF;
    /* Clear what a failed group may have left in the file. */
    if (w->dirty_end > w->buf_off + len)
        len = round_up(w->dirty_end - w->buf_off, TIDE_WAL_BLOCK);
    TIDE_ASSERT(w->buf_off % TIDE_WAL_BLOCK == 0 && len <= w->buf_cap);
    TIDE_ASSERT(w->buf_off + len <= w->file_bytes);
    /* The padding up to the block boundary must read as "end of log". */
    memset(w->buf + w->buf_len, 0, len - w->buf_len);
    if (len > 0) {
        req[n++] = (struct tide_io_req){.op = TIDE_IO_WRITE,
                                        .flags = sync ? TIDE_IO_LINK : 0,
                                        .fd = w->fd,
                                        .buf = w->buf,
                                        .len = (uint32_t)len,
                                        .off = w->buf_off};
    }
    if (sync)
        req[n++] = (struct tide_io_req){.op = TIDE_IO_FDATASYNC, .fd = w->fd};
    rc = tide__io_run(io, req, n);
    if (rc) {
        /* The group is not acknowledged: drop it, and remember how far
         * it may have reached the file. */
        if (w->buf_off + len > w->dirty_end)
            w->dirty_end = w->buf_off + len;
        w->buf_len = w->committed_len;
        return rc;
    }
    w->group++;
    w->dirty_end = 0;
    /* Keep the partial last block: the next group rewrites it. */
    keep = w->buf_len % TIDE_WAL_BLOCK;
    if (w->buf_len - keep > 0) {
        memmove(w->buf, w->buf + (w->buf_len - keep), keep);
        w->buf_off += w->buf_len - keep;
        w->buf_len = keep;
    }
    w->committed_len = w->buf_len;
    return 0;
}

/* Preallocate so that group commits do not extend the file: an fdatasync
 * then has no size change to journal. */
static int preallocate(int fd, uint64_t bytes)
{
    uint64_t room = atomic_load(&inject_space);
    int rc;

    if (room && bytes > room)
        return ENOSPC;
    rc = posix_fallocate(fd, 0, (off_t)bytes);
    if (rc == EOPNOTSUPP || rc == EINVAL)
        rc = ftruncate(fd, (off_t)bytes) ? errno : 0;
    return rc;
}

int tide__wal_start(struct wal *w, struct tide_io *io, uint64_t seq,
                    uint64_t file_bytes)
{
    char path[PATH_MAX];
    uint8_t *hdr;
    int fd, rc, direct = 1;

    /* File numbers only grow: replay and deletion go by them. */
    TIDE_ASSERT(w->fd < 0 || seq > w->seq);
    /* The current file holds no trace of a failed group. */
    TIDE_ASSERT(w->dirty_end == 0);
    file_bytes = round_up(file_bytes, TIDE_WAL_BLOCK);
    file_name(path, w->dir, seq);
    hdr = tide_aligned_alloc(TIDE_WAL_BLOCK, TIDE_WAL_BLOCK);
    if (!hdr)
        return -ENOMEM;
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_DIRECT, 0600);
    if (fd < 0 && errno == EINVAL) {
        /* tmpfs and some others refuse O_DIRECT; buffered writes plus
         * fdatasync are just as durable, only cost more CPU. */
        direct = 0;
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }
    if (fd < 0) {
        tide_free(hdr);
        return -errno;
    }
    /* The new file is made whole (preallocated, header written, durable
     * with its directory entry) before it replaces the current one, so
     * that a failure, ENOSPC above all, leaves the WAL as it was. */
    memset(hdr, 0, TIDE_WAL_BLOCK);
    memcpy(hdr, WAL_MAGIC, 8);
    tide__put_le32(hdr + 8, WAL_VERSION);
    tide__put_le32(hdr + 12, w->shard);
    tide__put_le64(hdr + 16, seq);
    tide__put_le64(hdr + 24, XXH3_64bits(hdr, 24));
    if (w->kr) {
        tide__put_le32(hdr + 8, WAL_VERSION_ENC);
        tide__put_le32(hdr + 24, tide__keys_id(w->kr));
        tide__put_le32(hdr + 28, 0);
        if (tide_crypto_random(hdr + 32, TIDE_SALT_BYTES)) {
            close(fd);
            unlink(path);
            tide_free(hdr);
            return TIDE_EKEY;
        }
        tide__put_le64(hdr + 56, XXH3_64bits(hdr, 56));
    }
    rc = -preallocate(fd, file_bytes);
    if (rc == 0) {
        struct tide_io_req req = {.op = TIDE_IO_WRITE,
                                  .fd = fd,
                                  .buf = hdr,
                                  .len = TIDE_WAL_BLOCK,
                                  .off = 0};

        rc = tide__io_run(io, &req, 1);
    }
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (rc == 0)
        rc = tide__io_fsync_dir(w->dir);
    if (rc) {
        close(fd);
        unlink(path);
        tide_free(hdr);
        return rc;
    }
    if (w->fd >= 0)
        close(w->fd);
    w->fd = fd;
    w->direct = direct;
    w->seq = seq;
    w->file_bytes = file_bytes;
    w->buf_off = 0;
    w->hdr_bytes = w->kr ? TIDE_WAL_FILE_HEADER_ENC : TIDE_WAL_FILE_HEADER;
    if (w->kr) {
        /* A new file: a new salt, new subkeys, counters from 0. */
        memcpy(w->salt, hdr + 32, TIDE_SALT_BYTES);
        wipe_keys(&w->subkeys);
        w->nonce_ctr = 0;
    }
    memcpy(w->buf, hdr, w->hdr_bytes);
    w->buf_len = w->hdr_bytes;
    w->committed_len = w->buf_len;
    w->dirty_end = 0;
    w->group++;
    tide_free(hdr);
    return 0;
}

/* ---- Recovery ----------------------------------------------------------- */

static int cmp_seq(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* List the sequence numbers of the WAL files in `dir`, ascending. */
static int list_files(const char *dir, uint64_t **out, size_t *n_out)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    uint64_t *seqs = NULL;
    size_t n = 0, cap = 0;

    if (!d)
        return errno == ENOENT ? 0 : -errno;
    while ((e = readdir(d))) {
        char *end;
        uint64_t seq;

        if (strlen(e->d_name) != 20 || strcmp(e->d_name + 16, ".wal"))
            continue;
        seq = strtoull(e->d_name, &end, 16);
        if (end != e->d_name + 16)
            continue;
        if (n == cap) {
            uint64_t *p;

            cap = cap ? cap * 2 : 16;
            p = tide_realloc(seqs, cap * sizeof(*p));
            if (!p) {
                tide_free(seqs);
                closedir(d);
                return -ENOMEM;
            }
            seqs = p;
        }
        seqs[n++] = seq;
    }
    closedir(d);
    if (n)
        qsort(seqs, n, sizeof(*seqs), cmp_seq);
    *out = seqs;
    *n_out = n;
    return 0;
}

static int read_file(const char *path, uint8_t **out, size_t *len)
{
    struct stat st;
    uint8_t *buf = NULL;
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto fail;
    }
    buf = tide_malloc((size_t)st.st_size + 1);
    if (!buf) {
        rc = -ENOMEM;
        goto fail;
    }
    while (got < (size_t)st.st_size) {
        ssize_t r = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? -errno : -EIO;
            goto fail;
        }
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    *len = got;
    return 0;
fail:
    tide_free(buf);
    close(fd);
    return rc;
}

/* What reading one WAL file needs: its identity and, encrypted, its salt,
 * subkeys and a buffer for the plaintext of the record last opened. */
struct wal_rd {
    struct keys *kr;
    unsigned shard;
    uint64_t seq;
    int enc;
    uint32_t hdr_bytes;
    uint8_t salt[TIDE_SALT_BYTES];
    struct tide_buf subkeys;
    struct tide_buf out;
    int auth_failed; /* the last invalid record was well framed but
                        failed authentication */
};

static void rd_fini(struct wal_rd *rd)
{
    wipe_keys(&rd->subkeys);
    tide__buf_fini(&rd->subkeys);
    if (rd->out.data)
        tide_crypto_wipe(rd->out.data, rd->out.cap);
    tide__buf_fini(&rd->out);
}

/* Open the sealed record at `off` (frame already checked, stored payload
 * of `l` bytes) into rd->out. 1 when valid, with *plain and *plen set. */
static int record_open(struct wal_rd *rd, const uint8_t *buf, size_t off,
                       uint32_t l, const uint8_t **plain, uint32_t *plen)
{
    const uint8_t *p = buf + off, *sp = p + TIDE_WAL_RECORD_HEADER;
    uint32_t n, total, at = 0, dropped = 0, base;
    uint64_t ctr = tide__get_le64(p + 16);
    const uint8_t *ct;
    uint8_t aad[WAL_AAD_BYTES], nonce[TIDE_NONCE_BYTES];

    if (l < TIDE_WAL_SEAL_HEADER)
        return 0;
    n = tide__get_le32(sp);
    total = tide__get_le32(sp + 4);
    if (n == 0 || n > (l - TIDE_WAL_SEAL_HEADER) / TIDE_WAL_SEAL_PART ||
        (uint64_t)TIDE_WAL_SEAL_HEADER + (uint64_t)TIDE_WAL_SEAL_PART * n +
                total !=
            l)
        return 0;
    ct = sp + TIDE_WAL_SEAL_HEADER + TIDE_WAL_SEAL_PART * n;
    /* The parts must tile [0, total) in order. */
    for (uint32_t k = 0, end = 0; k < n; k++) {
        const uint8_t *e = sp + TIDE_WAL_SEAL_HEADER + TIDE_WAL_SEAL_PART * k;

        if (tide__get_le32(e + 8) != end || tide__get_le32(e + 20) ||
            tide__get_le32(e + 12) > total - end)
            return 0;
        end += tide__get_le32(e + 12);
        if (k + 1 == n && end != total)
            return 0;
    }
    if (tide__buf_reserve(&rd->out, (size_t)total + 8))
        return 0;
    rd->out.len = 0;
    for (uint32_t k = 0; k < n; k++) {
        const uint8_t *e = sp + TIDE_WAL_SEAL_HEADER + TIDE_WAL_SEAL_PART * k;
        uint32_t poff = tide__get_le32(e + 8), plen_k = tide__get_le32(e + 12);
        const uint8_t *key;
        int rc =
            file_key(rd->kr, rd->salt, &rd->subkeys, tide__get_le64(e), &key);

        if (rc == TIDE_EKEY && k > 0) { /* destroyed: erased */
            dropped += tide__get_le32(e + 16);
            continue;
        }
        if (rc)
            return 0;
        tide__keys_nonce(nonce, ctr + k, WAL_DOMAIN);
        wal_aad(aad, rd->salt, rd->shard, rd->seq, off, p, e, k);
        if (tide__keys_open(key, nonce, aad, sizeof(aad), ct + poff, plen_k,
                            rd->out.data + at, e + 24)) {
            rd->auth_failed = 1;
            return 0;
        }
        at += plen_k;
    }
    /* The columns of destroyed keys are gone: the batch header (under the
     * engine key, part 0) counts only those left. */
    base = p[4] == TIDE_WAL_PART ? TIDE_WAL_PART_HEADER : 0;
    if (dropped && (p[4] == TIDE_WAL_BATCH || p[4] == TIDE_WAL_PART) &&
        at >= base + TIDE_WAL_BATCH_HEADER)
        tide__put_le32(rd->out.data + base + 16,
                       tide__get_le32(rd->out.data + base + 16) - dropped);
    *plain = rd->out.data;
    *plen = at;
    return 1;
}

/* Is there a valid record at `off`? Sets its stored length (*len, what
 * the file holds), group, and the payload to apply (*plain, *plen bytes;
 * valid until the next call). */
static int record_valid(struct wal_rd *rd, const uint8_t *buf, size_t size,
                        size_t off, uint32_t *len, uint64_t *group,
                        const uint8_t **plain, uint32_t *plen)
{
    const uint8_t *p = buf + off;
    uint32_t l;

    if (size - off < TIDE_WAL_RECORD_HEADER)
        return 0;
    l = tide__get_le32(p);
    if (!known_type(p[4]) || p[5] || p[6] || p[7])
        return 0;
    if (l > size - off - TIDE_WAL_RECORD_HEADER)
        return 0;
    if (rd->enc) {
        if (!record_open(rd, buf, off, l, plain, plen))
            return 0;
    } else {
        if (XXH3_64bits_withSeed(p + TIDE_WAL_RECORD_HEADER, l,
                                 XXH3_64bits(p, 16)) != tide__get_le64(p + 16))
            return 0;
        *plain = p + TIDE_WAL_RECORD_HEADER;
        *plen = l;
    }
    *len = l;
    *group = tide__get_le64(p + 8);
    return 1;
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* What follows a bad record at `off`: the number of valid records after it
 * and whether they all belong to one group, returned in *group. */
static unsigned scan_after(struct wal_rd *rd, const uint8_t *buf, size_t size,
                           size_t off, uint64_t *group, int *one_group)
{
    unsigned found = 0;
    int auth_failed = rd->auth_failed;

    *one_group = 1;
    for (size_t p = off + 8; p + TIDE_WAL_RECORD_HEADER <= size; p += 8) {
        const uint8_t *plain;
        uint32_t len, plen;
        uint64_t g;

        if (!record_valid(rd, buf, size, p, &len, &g, &plain, &plen))
            continue;
        if (found && g != *group)
            *one_group = 0;
        *group = g;
        found++;
    }
    rd->auth_failed = auth_failed; /* the first bad record's */
    return found;
}

static int truncate_file(const char *path, uint64_t off)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC), rc = 0;

    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)off) != 0 || fsync(fd) != 0)
        rc = -errno;
    close(fd);
    return rc;
}

static int header_valid(const uint8_t *buf, size_t size, unsigned shard,
                        uint64_t seq)
{
    uint32_t version = size >= 12 ? tide__get_le32(buf + 8) : 0;

    if (version == WAL_VERSION_ENC)
        return size >= TIDE_WAL_FILE_HEADER_ENC && !memcmp(buf, WAL_MAGIC, 8) &&
               tide__get_le32(buf + 12) == shard &&
               tide__get_le64(buf + 16) == seq && !tide__get_le32(buf + 28) &&
               tide__get_le64(buf + 56) == XXH3_64bits(buf, 56);
    return size >= TIDE_WAL_FILE_HEADER && !memcmp(buf, WAL_MAGIC, 8) &&
           version >= WAL_VERSION_MIN && version <= WAL_VERSION &&
           tide__get_le32(buf + 12) == shard &&
           tide__get_le64(buf + 16) == seq &&
           tide__get_le64(buf + 24) == XXH3_64bits(buf, 24);
}

/* Set up `rd` for the file whose valid header is at `buf`: 0, or
 * TIDE_EKEY (encrypted, and no key or another engine key; logged). */
static int rd_start(struct wal_rd *rd, const uint8_t *buf, const char *path,
                    tide_wal_log_fn log, void *log_ctx)
{
    wipe_keys(&rd->subkeys);
    rd->seq = tide__get_le64(buf + 16);
    rd->enc = tide__get_le32(buf + 8) == WAL_VERSION_ENC;
    rd->hdr_bytes = rd->enc ? TIDE_WAL_FILE_HEADER_ENC : TIDE_WAL_FILE_HEADER;
    rd->auth_failed = 0;
    if (!rd->enc)
        return 0;
    if (!rd->kr) {
        if (log)
            log(log_ctx, TIDE_LOG_ERROR,
                "data directory is encrypted; configure master_key_file "
                "(WAL file %s)",
                path);
        return TIDE_EKEY;
    }
    if (tide__get_le32(buf + 24) != tide__keys_id(rd->kr)) {
        if (log)
            log(log_ctx, TIDE_LOG_ERROR,
                "WAL file %s was encrypted under another engine key than "
                "the one configured (wrong master key?)",
                path);
        return TIDE_EKEY;
    }
    memcpy(rd->salt, buf + 32, TIDE_SALT_BYTES);
    return 0;
}

int tide__wal_replay(const char *dir, unsigned shard, struct keys *kr,
                     uint64_t from_seq, int repair, tide_wal_record_fn fn,
                     void *ctx, tide_wal_log_fn log, void *log_ctx,
                     uint64_t *last_seq, uint64_t *next_group)
{
    uint64_t *seqs = NULL, max_group = 0;
    struct wal_rd rd = {.kr = kr, .shard = shard};
    size_t n = 0;
    int rc = list_files(dir, &seqs, &n);

    *last_seq = 0;
    *next_group = 0;
    if (rc)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char path[PATH_MAX];
        uint8_t *buf = NULL;
        size_t size = 0, off;
        int last = i + 1 == n;
        uint64_t last_good_group = 0, g = 0;
        int one_group;
        unsigned after;

        *last_seq = seqs[i];
        if (seqs[i] < from_seq)
            continue;
        file_name(path, dir, seqs[i]);
        rc = read_file(path, &buf, &size);
        if (rc)
            break;
        if (!header_valid(buf, size, shard, seqs[i])) {
            /* A file whose creation never became durable is all zeros:
             * remove it, or it would look corrupt behind the next file. */
            if (last && all_zero(buf, size)) {
                tide_free(buf);
                if (unlink(path) != 0)
                    rc = -errno;
                break;
            }
            if (size >= 12 && !memcmp(buf, WAL_MAGIC, 8) &&
                (tide__get_le32(buf + 8) < WAL_VERSION_MIN ||
                 tide__get_le32(buf + 8) > WAL_VERSION_ENC))
                rc = TIDE_EVERSION;
            else
                rc = TIDE_ECORRUPT;
            log(log_ctx, TIDE_LOG_ERROR, "wal: bad file header in %s", path);
            tide_free(buf);
            break;
        }
        rc = rd_start(&rd, buf, path, log, log_ctx);
        if (rc) {
            tide_free(buf);
            break;
        }
        off = rd.hdr_bytes;
        for (;;) {
            const uint8_t *plain;
            uint32_t len, plen;

            if (!record_valid(&rd, buf, size, off, &len, &g, &plain, &plen))
                break;
            last_good_group = g;
            if (g + 1 > max_group)
                max_group = g + 1;
            rc = fn(ctx, buf[off + 4], plain, plen);
            if (rc)
                break;
            off += tide__wal_record_bytes(len);
        }
        if (rc || off >= size ||
            all_zero(buf + off, size - off)) { /* clean end of this file */
            tide_free(buf);
            continue;
        }
        after = scan_after(&rd, buf, size, off, &g, &one_group);
        if (last && (after == 0 || (one_group && g > last_good_group))) {
            /* The final commit group was cut by the crash; none of it was
             * acknowledged. */
            log(log_ctx, TIDE_LOG_WARN,
                "wal: truncating torn tail of %s at offset %zu", path, off);
            rc = truncate_file(path, off);
        } else if (repair) {
            log(log_ctx, TIDE_LOG_WARN,
                "wal: repair: truncating %s at corrupt record at offset %zu "
                "and dropping %zu later file(s)",
                path, off, n - i - 1);
            rc = truncate_file(path, off);
            for (size_t j = i + 1; j < n && rc == 0; j++) {
                file_name(path, dir, seqs[j]);
                if (unlink(path) != 0)
                    rc = -errno;
            }
            n = i + 1;
        } else if (rd.auth_failed) {
            log(log_ctx, TIDE_LOG_ERROR,
                "wal: record in %s at offset %zu failed authentication "
                "(AES-GCM tag mismatch) and valid records follow; refusing "
                "to open (repair option truncates there)",
                path, off);
            rc = TIDE_ECIPHER;
        } else {
            log(log_ctx, TIDE_LOG_ERROR,
                "wal: corrupt record in %s at offset %zu followed by valid "
                "records; refusing to open (repair option truncates there)",
                path, off);
            rc = TIDE_ECORRUPT;
        }
        tide_free(buf);
    }
    tide_free(seqs);
    rd_fini(&rd);
    *next_group = max_group;
    return rc;
}

int tide__wal_remove_before(const char *dir, uint64_t seq, uint64_t *removed)
{
    uint64_t *seqs = NULL;
    size_t n = 0;
    int rc = list_files(dir, &seqs, &n);

    if (rc)
        return rc;
    for (size_t i = 0; i < n && seqs[i] < seq; i++) {
        char path[PATH_MAX];
        struct stat st;

        file_name(path, dir, seqs[i]);
        if (stat(path, &st) == 0)
            *removed += (uint64_t)st.st_size;
        if (unlink(path) != 0 && errno != ENOENT && rc == 0)
            rc = -errno;
    }
    tide_free(seqs);
    return rc ? rc : tide__io_fsync_dir(dir);
}

uint64_t tide__wal_dir_bytes(const char *dir)
{
    uint64_t *seqs = NULL, bytes = 0;
    size_t n = 0;

    if (list_files(dir, &seqs, &n))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX];
        struct stat st;

        file_name(path, dir, seqs[i]);
        if (stat(path, &st) == 0)
            bytes += (uint64_t)st.st_size;
    }
    tide_free(seqs);
    return bytes;
}

int tide__wal_scan(const char *dir, struct keys *kr, tide_wal_record_fn fn,
                   void (*file_done)(void *ctx, uint64_t bytes), void *ctx)
{
    uint64_t *seqs = NULL;
    struct wal_rd rd = {.kr = kr};
    size_t n = 0;
    int rc = list_files(dir, &seqs, &n);

    for (size_t i = 0; i < n && rc == 0; i++) {
        char path[PATH_MAX];
        uint8_t *buf = NULL;
        size_t size = 0, off;
        const uint8_t *plain;
        uint32_t len, plen;
        uint64_t group;
        int readable;

        snprintf(path, sizeof(path), "%s/%016llx.wal", dir,
                 (unsigned long long)seqs[i]);
        rc = read_file(path, &buf, &size);
        if (rc == -ENOENT) { /* deleted by a flush meanwhile */
            rc = 0;
            continue;
        }
        if (rc)
            break;
        /* Read-only: the log ends at the first invalid record; a file
         * whose header is not (yet) valid holds no records. */
        rd.shard = size >= 16 ? tide__get_le32(buf + 12) : 0;
        readable = header_valid(buf, size, rd.shard, seqs[i]) &&
                   rd_start(&rd, buf, path, NULL, NULL) == 0;
        off = rd.hdr_bytes;
        while (rc == 0 && readable &&
               record_valid(&rd, buf, size, off, &len, &group, &plain, &plen)) {
            rc = fn(ctx, buf[off + 4], plain, plen);
            off += tide__wal_record_bytes(len);
        }
        if (rc == 0)
            file_done(ctx, size);
        tide_free(buf);
    }
    tide_free(seqs);
    rd_fini(&rd);
    return rc;
}
