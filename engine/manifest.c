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
 */
#include "manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define MAN_MAGIC "TIDEMAN"
#define MAN_VERSION 1u
#define MAN_FIXED 40u
#define MAN_SEG_BYTES 16u
#define MAN_SEGS_MAX (1u << 24)

void tide__manifest_fini(struct manifest *m)
{
    tide_free(m->segs);
    memset(m, 0, sizeof(*m));
}

static size_t manifest_bytes(uint32_t shards, uint32_t segs)
{
    return MAN_FIXED + 8u * shards + (size_t)MAN_SEG_BYTES * segs + 8u;
}

int tide__manifest_load(const char *dir, struct manifest *m)
{
    char path[PATH_MAX];
    uint8_t *buf = NULL;
    struct stat st;
    size_t size, got = 0;
    int fd, rc;

    memset(m, 0, sizeof(*m));
    snprintf(path, sizeof(path), "%s/MANIFEST", dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    size = (size_t)st.st_size;
    rc = TIDE_ECORRUPT;
    if (size < manifest_bytes(1, 0) || size > manifest_bytes(64, MAN_SEGS_MAX))
        goto out;
    buf = tide_malloc(size);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? -errno : TIDE_ECORRUPT;
            goto out;
        }
        got += (size_t)r;
    }
    if (memcmp(buf, MAN_MAGIC, 8))
        goto out;
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
        if (m->segs[i].shard >= m->n_shards)
            goto out;
    }
    rc = 0;
out:
    if (rc)
        tide__manifest_fini(m);
    tide_free(buf);
    close(fd);
    return rc;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int tide__manifest_store(const char *dir, struct manifest *m)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    size_t size = manifest_bytes(m->n_shards, m->n_segs);
    uint8_t *buf = tide_calloc(1, size);
    int fd = -1, dfd = -1, rc;

    if (!buf)
        return -ENOMEM;
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
    }
    tide__put_le64(buf + size - 8, XXH3_64bits(buf, size - 8));
    snprintf(path, sizeof(path), "%s/MANIFEST", dir);
    snprintf(tmp, sizeof(tmp), "%s/MANIFEST.tmp", dir);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    rc = write_all(fd, buf, size);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc)
        goto out;
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        rc = -errno;
        goto out;
    }
    m->generation++;
out:
    if (rc && fd >= 0)
        unlink(tmp);
    if (fd >= 0)
        close(fd);
    if (dfd >= 0)
        close(dfd);
    tide_free(buf);
    return rc;
}
