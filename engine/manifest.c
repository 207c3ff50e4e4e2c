/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MANIFEST reading and atomic replacement (manifest.h). Little-endian:
 *
 *   OFFSET      SIZE  DESCRIPTION
 *   0           8     magic "TIDEMAN\0"
 *   8           4     format version (1)
 *   12          4     number of shards S (1..64)
 *   16          8     generation
 *   24          8     next segment id
 *   32          4     number of segments N
 *   36          4     zero
 *   40          8*S   per shard: first WAL file number to replay
 *   40+8S       16*N  per segment: id (8), shard (2), tier (2), zero (4)
 *   40+8S+16N   8     XXH3-64 of every byte before
 *
 * Valid if and only if the magic, version, sizes and checksum match.
 *
 * Encrypted (docs/file-format.md, "Encryption at rest"), the whole of the
 * above is sealed behind a 32-byte header:
 *
 *   OFFSET  SIZE  DESCRIPTION
 *   0       8     magic "TIDEMAN\0"
 *   8       4     format version (3: encrypted)
 *   12      4     engine key id
 *   16      16    salt, fresh for every replacement
 *   32      M     AES-256-GCM of the plaintext manifest (M bytes), with
 *                 bytes 0..32 as additional data
 *   32+M    16    GCM tag
 *
 * Its writes and its file's fdatasync go through the engine's I/O layer
 * (io.h); the rename and the directory fsync, which the layer has no
 * request for, through man_rename() and man_fsync_dir() with their own
 * fault injection.
 */
#include "manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define MAN_MAGIC "TIDEMAN"
#define MAN_VERSION 1u
#define MAN_FIXED 40u
#define MAN_SEG_BYTES 16u
#define MAN_SEGS_MAX (1u << 24)
#define MAN_VERSION_ENC 3u
#define MAN_ENC_HEADER 32u
#define MAN_DOMAIN 3u /* nonce domain (keys.h), frozen */

void tide__manifest_fini(struct manifest *m)
{
    tide_free(m->segs);
    memset(m, 0, sizeof(*m));
}

static size_t manifest_bytes(uint32_t shards, uint32_t segs)
{
    return MAN_FIXED + 8u * shards + (size_t)MAN_SEG_BYTES * segs + 8u;
}

/* Open an encrypted manifest of `size` bytes at `buf` in place: on
 * success *plain points at the plaintext manifest, *plain_len bytes. */
static int manifest_open_sealed(const char *path, struct keys *kr, uint8_t *buf,
                                size_t size, uint8_t **plain, size_t *plain_len)
{
    uint8_t key[TIDE_KEY_BYTES], nonce[TIDE_NONCE_BYTES];
    size_t len;
    int rc;

    if (size < MAN_ENC_HEADER + TIDE_TAG_BYTES)
        return TIDE_ECORRUPT;
    if (!kr)
        return TIDE_EKEY;
    if (tide__get_le32(buf + 12) != tide__keys_id(kr)) {
        tide__keys_log(kr, TIDE_LOG_ERROR,
                       "%s was encrypted under another engine key than the "
                       "one configured (wrong master key?)",
                       path);
        return TIDE_EKEY;
    }
    len = size - MAN_ENC_HEADER - TIDE_TAG_BYTES;
    rc = tide__keys_file(kr, 0, "manifest", buf + 16, key);
    if (rc)
        return rc;
    tide__keys_nonce(nonce, 0, MAN_DOMAIN);
    rc =
        tide_crypto_open(key, nonce, buf, MAN_ENC_HEADER, buf + MAN_ENC_HEADER,
                         len, buf + MAN_ENC_HEADER, buf + MAN_ENC_HEADER + len);
    tide_crypto_wipe(key, sizeof(key));
    if (rc)
        return tide__keys_log_cipher(kr, "manifest", path, MAN_ENC_HEADER);
    *plain = buf + MAN_ENC_HEADER;
    *plain_len = len;
    return 0;
}

int tide__manifest_load(const char *dir, struct keys *kr, struct manifest *m)
{
    char path[PATH_MAX];
    uint8_t *buf = NULL, *file = NULL;
    uint64_t file_bytes;
    size_t size;
    int fd, rc;

    memset(m, 0, sizeof(*m));
    snprintf(path, sizeof(path), "%s/MANIFEST", dir);
    rc = tide__io_open_read(path, &fd, &file_bytes);
    if (rc)
        return rc;
    size = (size_t)file_bytes;
    rc = TIDE_ECORRUPT;
    if (size < manifest_bytes(1, 0) || size > manifest_bytes(64, MAN_SEGS_MAX) +
                                                  MAN_ENC_HEADER +
                                                  TIDE_TAG_BYTES)
        goto out;
    file = buf = tide_malloc(size);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    rc = tide__io_pread_full(fd, buf, size, 0);
    if (rc)
        goto out;
    rc = TIDE_ECORRUPT;
    if (memcmp(buf, MAN_MAGIC, 8))
        goto out;
    if (tide__get_le32(buf + 8) == MAN_VERSION_ENC) {
        rc = manifest_open_sealed(path, kr, file, size, &buf, &size);
        if (rc)
            goto out;
        rc = TIDE_ECORRUPT;
        if (size < manifest_bytes(1, 0) || memcmp(buf, MAN_MAGIC, 8))
            goto out;
    }
    m->encrypted = buf != file;
    if (tide__get_le32(buf + 8) != MAN_VERSION) {
        rc = TIDE_EVERSION;
        goto out;
    }
    m->n_shards = tide__get_le32(buf + 12);
    m->generation = tide__get_le64(buf + 16);
    m->next_seg_id = tide__get_le64(buf + 24);
    m->n_segs = tide__get_le32(buf + 32);
    if (m->n_shards == 0 || m->n_shards > TIDE_SHARDS_MAX ||
        m->n_segs > MAN_SEGS_MAX ||
        size != manifest_bytes(m->n_shards, m->n_segs) ||
        XXH3_64bits(buf, size - 8) != tide__get_le64(buf + size - 8))
        goto out;
    for (uint32_t i = 0; i < m->n_shards; i++)
        m->replay_from[i] = tide__get_le64(buf + MAN_FIXED + 8 * i);
    m->segs = tide_calloc(m->n_segs + 1, sizeof(*m->segs));
    if (!m->segs) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < m->n_segs; i++) {
        const uint8_t *p =
            buf + MAN_FIXED + 8 * m->n_shards + (size_t)MAN_SEG_BYTES * i;

        m->segs[i].id = tide__get_le64(p);
        m->segs[i].shard = (uint16_t)(p[8] | p[9] << 8);
        m->segs[i].tier = (uint16_t)(p[10] | p[11] << 8);
        m->segs[i].level = p[12];
        if (m->segs[i].shard >= m->n_shards || p[12] > 1)
            goto out;
    }
    rc = 0;
out:
    if (rc)
        tide__manifest_fini(m);
    tide_free(file);
    close(fd);
    return rc;
}

/* ---- Steps the I/O layer has no request for ---------------------------- */

static pthread_mutex_t inject_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    unsigned long left; /* fire on the call that brings this to 0 */
    int err;
} inject[3];

void tide__manifest_inject(enum tide_manifest_op op, unsigned long nth, int err)
{
    TIDE_ASSERT(op == TIDE_MANIFEST_RENAME || op == TIDE_MANIFEST_DIRSYNC);
    pthread_mutex_lock(&inject_lock);
    inject[op].left = nth;
    inject[op].err = err;
    pthread_mutex_unlock(&inject_lock);
}

/* -err when the injected failure of `op` fires now, else 0. */
static int inject_check(enum tide_manifest_op op)
{
    int rc = 0;

    pthread_mutex_lock(&inject_lock);
    if (inject[op].left > 0 && --inject[op].left == 0)
        rc = -inject[op].err;
    pthread_mutex_unlock(&inject_lock);
    return rc;
}

static int man_rename(const char *from, const char *to)
{
    int rc = inject_check(TIDE_MANIFEST_RENAME);

    if (rc == 0 && rename(from, to) != 0)
        rc = -errno;
    return rc;
}

static int man_fsync_dir(const char *dir)
{
    int rc = inject_check(TIDE_MANIFEST_DIRSYNC);

    return rc ? rc : tide__io_fsync_dir(dir);
}

/* Seal the plaintext manifest of `size` bytes at buf + MAN_ENC_HEADER in
 * place, behind its header. */
static int manifest_seal(struct keys *kr, uint8_t *buf, size_t size)
{
    uint8_t key[TIDE_KEY_BYTES], nonce[TIDE_NONCE_BYTES];
    int rc;

    memcpy(buf, MAN_MAGIC, 8);
    tide__put_le32(buf + 8, MAN_VERSION_ENC);
    tide__put_le32(buf + 12, tide__keys_id(kr));
    /* A fresh salt, hence a fresh key, for every replacement: the one
     * nonce each key seals with never repeats. */
    rc = tide_crypto_random(buf + 16, TIDE_SALT_BYTES);
    if (rc == 0)
        rc = tide__keys_file(kr, 0, "manifest", buf + 16, key);
    if (rc)
        return rc;
    tide__keys_nonce(nonce, 0, MAN_DOMAIN);
    rc = tide_crypto_seal(key, nonce, buf, MAN_ENC_HEADER, buf + MAN_ENC_HEADER,
                          size, buf + MAN_ENC_HEADER,
                          buf + MAN_ENC_HEADER + size);
    tide_crypto_wipe(key, sizeof(key));
    return rc;
}

int tide__manifest_store(const char *dir, struct manifest *m,
                         struct tide_io *io, struct keys *kr, int *installed)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    size_t size = manifest_bytes(m->n_shards, m->n_segs);
    size_t pre = kr ? MAN_ENC_HEADER : 0, post = kr ? TIDE_TAG_BYTES : 0;
    uint8_t *buf, *file;
    int sealed = 0;
    struct tide_io_req req[2];
    int fd = -1, rc;

    *installed = 0;
    TIDE_ASSERT(m->n_shards >= 1 && m->n_shards <= TIDE_SHARDS_MAX);
    for (uint32_t i = 0; i < m->n_segs; i++) /* ids are never reused */
        TIDE_DEBUG_ASSERT(m->segs[i].id < m->next_seg_id &&
                          m->segs[i].shard < m->n_shards);
    if (size > UINT32_MAX)
        return -EFBIG; /* beyond MAN_SEGS_MAX: load would refuse it */
    file = tide_calloc(1, pre + size + post);
    if (!file)
        return -ENOMEM;
    buf = file + pre;
    memcpy(buf, MAN_MAGIC, 8);
    tide__put_le32(buf + 8, MAN_VERSION);
    tide__put_le32(buf + 12, m->n_shards);
    tide__put_le64(buf + 16, m->generation + 1);
    tide__put_le64(buf + 24, m->next_seg_id);
    tide__put_le32(buf + 32, m->n_segs);
    for (uint32_t i = 0; i < m->n_shards; i++)
        tide__put_le64(buf + MAN_FIXED + 8 * i, m->replay_from[i]);
    for (uint32_t i = 0; i < m->n_segs; i++) {
        uint8_t *p =
            buf + MAN_FIXED + 8 * m->n_shards + (size_t)MAN_SEG_BYTES * i;

        tide__put_le64(p, m->segs[i].id);
        p[8] = (uint8_t)m->segs[i].shard;
        p[9] = (uint8_t)(m->segs[i].shard >> 8);
        p[10] = (uint8_t)m->segs[i].tier;
        p[11] = (uint8_t)(m->segs[i].tier >> 8);
        p[12] = m->segs[i].level;
    }
    tide__put_le64(buf + size - 8, XXH3_64bits(buf, size - 8));
    if (kr) {
        rc = manifest_seal(kr, file, size);
        if (rc)
            goto out;
        sealed = 1;
    }
    snprintf(path, sizeof(path), "%s/MANIFEST", dir);
    snprintf(tmp, sizeof(tmp), "%s/MANIFEST.tmp", dir);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    /* fdatasync suffices for a new file: it covers the size too. */
    req[0] = (struct tide_io_req){.op = TIDE_IO_WRITE,
                                  .flags = TIDE_IO_LINK,
                                  .fd = fd,
                                  .buf = file,
                                  .len = (uint32_t)(pre + size + post),
                                  .off = 0};
    req[1] = (struct tide_io_req){.op = TIDE_IO_FDATASYNC, .fd = fd};
    rc = tide__io_run(io, req, 2);
    if (rc == 0)
        rc = man_rename(tmp, path);
    if (rc)
        goto out;
    /* From here on the new manifest is the one in the directory. */
    *installed = 1;
    m->generation++;
    m->encrypted = sealed;
    rc = man_fsync_dir(dir);
out:
    if (rc && fd >= 0 && !*installed)
        unlink(tmp);
    if (fd >= 0)
        close(fd);
    tide_free(file);
    return rc;
}
