/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Opening a data directory's contents: the MANIFEST and the segments it
 * lists (unlisted segment files are leftovers of a crashed flush and are
 * deleted), then each shard's WAL from its replay point into its head.
 * docs/file-format.md, "Recovery", describes the procedure.
 */
#include "db.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "dedup.h"
#include "wal_batch.h"

static void wal_log(void *ctx, enum tide_log_level level, const char *fmt, ...)
{
    struct tide_db *db = ctx;
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    tide__db_log(db, level, "%s", msg);
}

/* ---- Batches over shards ---------------------------------------------
 *
 * A batch over several shards is applied at recovery when it was whole
 * before the crash: every shard in its mask either still has its part in
 * the WAL, or had written it in a file that is gone (flushed: its batch
 * id is at most the mark that opens the shard's first WAL file), and no
 * shard holds an abort record for it. A part written while another never
 * was is thereby not applied; its id is written in an abort record in
 * every shard's new WAL file, so the decision holds after later flushes
 * move the marks past it. */

struct part_seen {
    uint64_t id;
    uint64_t mask;
    unsigned shard;
};

struct scan {
    struct tide_db *db;
    unsigned shard;
    int marked; /* a mark was seen in this shard's files */
    uint64_t hw[TIDE_SHARDS_MAX];
    struct tide_buf parts;  /* struct part_seen */
    struct tide_buf aborts; /* uint64_t */
    uint64_t max_id;
};

static int scan_record(void *ctx, uint8_t type, const uint8_t *payload,
                       uint32_t len)
{
    struct scan *sc = ctx;
    uint64_t id;

    switch (type) {
    case TIDE_WAL_MARK:
        if (len != 8)
            return TIDE_ECORRUPT;
        id = tide__get_le64(payload);
        /* The first file's mark: what earlier, deleted files held. */
        if (!sc->marked)
            sc->hw[sc->shard] = id;
        sc->marked = 1;
        break;
    case TIDE_WAL_PART: {
        struct part_seen p;

        if (len < TIDE_WAL_PART_HEADER + TIDE_WAL_BATCH_HEADER)
            return TIDE_ECORRUPT;
        id = tide__get_le64(payload);
        p = (struct part_seen){id, tide__get_le64(payload + 8), sc->shard};
        if (!(p.mask & (1ull << sc->shard)))
            return TIDE_ECORRUPT;
        if (tide__buf_append(&sc->parts, &p, sizeof(p)))
            return -ENOMEM;
        sc->marked = 1;
        break;
    }
    case TIDE_WAL_ABORT: {
        uint32_t n;

        if (len < 8)
            return TIDE_ECORRUPT;
        n = tide__get_le32(payload);
        if ((uint64_t)n * 8 != len - 8)
            return TIDE_ECORRUPT;
        for (uint32_t i = 0; i < n; i++) {
            id = tide__get_le64(payload + 8 + 8 * (size_t)i);
            if (tide__buf_append(&sc->aborts, &id, sizeof(id)))
                return -ENOMEM;
            if (id > sc->max_id)
                sc->max_id = id;
        }
        return 0;
    }
    case TIDE_WAL_PRODUCERS:
        return 0;
    default:
        /* A file that opens with a batch (format version 1) has no
         * mark; a later file's mark says nothing about flushed files. */
        sc->marked = 1;
        return 0;
    }
    if (id > sc->max_id)
        sc->max_id = id;
    return 0;
}

static int cmp_part(const void *a, const void *b)
{
    const struct part_seen *x = a, *y = b;

    return x->id < y->id ? -1 : x->id > y->id;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static int has_id(const uint64_t *ids, uint32_t n, uint64_t id)
{
    return n && bsearch(&id, ids, n, sizeof(id), cmp_u64) != NULL;
}

/* Add `id` to a growing array in `out`. */
static int push_id(struct tide_buf *out, uint64_t id)
{
    return tide__buf_append(out, &id, sizeof(id));
}

int tide__recover_scan(struct tide_db *db)
{
    struct scan sc = {.db = db};
    struct tide_buf drop = {0}, abort = {0};
    struct part_seen *p;
    uint64_t *ab;
    size_t n, n_ab;
    int rc = 0;

    for (unsigned i = 0; i < db->n_shards && rc == 0; i++) {
        uint64_t last = 0, group = 0;

        sc.shard = i;
        sc.marked = 0;
        rc = tide__wal_replay(db->shards[i].wal_dir, i, db->keys,
                              db->man.replay_from[i], db->o.repair, scan_record,
                              &sc, wal_log, db, &last, &group);
        if (sc.hw[i] > sc.max_id)
            sc.max_id = sc.hw[i];
    }
    if (rc) {
        tide__db_log(db, TIDE_LOG_ERROR, "reading WAL of shard %u: %s",
                     sc.shard, tide_strerror(rc));
        goto out;
    }
    p = (struct part_seen *)sc.parts.data;
    n = sc.parts.len / sizeof(*p);
    ab = (uint64_t *)sc.aborts.data;
    n_ab = sc.aborts.len / sizeof(*ab);
    if (n)
        qsort(p, n, sizeof(*p), cmp_part);
    if (n_ab)
        qsort(ab, n_ab, sizeof(*ab), cmp_u64);
    for (size_t i = 0; i < n && rc == 0;) {
        uint64_t id = p[i].id, mask = p[i].mask, seen = 0, need;
        size_t j = i;

        for (; j < n && p[j].id == id; j++)
            seen |= 1ull << p[j].shard;
        need = mask & ~seen;
        for (unsigned sh = 0; sh < TIDE_SHARDS_MAX && need; sh++)
            if ((need & (1ull << sh)) && sh < db->n_shards && id <= sc.hw[sh])
                need &= ~(1ull << sh); /* written in a flushed file */
        if (has_id(ab, (uint32_t)n_ab, id)) {
            rc = push_id(&drop, id);
        } else if (need) {
            tide__db_log(db, TIDE_LOG_WARN,
                         "batch %llu over shards is incomplete in the WAL "
                         "(it was never acknowledged): not applied",
                         (unsigned long long)id);
            rc = push_id(&drop, id);
            if (rc == 0)
                rc = push_id(&abort, id);
        }
        i = j;
    }
    if (rc)
        goto out;
    db->rec_drop = (uint64_t *)drop.data;
    db->n_rec_drop = (uint32_t)(drop.len / sizeof(uint64_t));
    db->rec_abort = (uint64_t *)abort.data;
    db->n_rec_abort = (uint32_t)(abort.len / sizeof(uint64_t));
    drop = (struct tide_buf){0};
    abort = (struct tide_buf){0};
    db->next_batch_id = sc.max_id + 1;
    for (unsigned i = 0; i < db->n_shards; i++)
        db->shards[i].parts_hw = sc.hw[i];
out:
    tide__buf_fini(&sc.parts);
    tide__buf_fini(&sc.aborts);
    tide__buf_fini(&drop);
    tide__buf_fini(&abort);
    return rc;
}

static int replay_record(void *ctx, uint8_t type, const uint8_t *payload,
                         uint32_t len)
{
    struct shard *s = ctx;
    struct tide_db *db = s->db;
    uint32_t skipped = 0, off = 0;
    struct tide_buf scratch = {0};
    int rc;

    switch (type) {
    case TIDE_WAL_PRODUCERS:
        return tide__dedup_load(&db->prod, payload, len);
    case TIDE_WAL_BATCH:
        break;
    case TIDE_WAL_PART:
        /* Checked by tide__recover_scan. */
        if (tide__get_le64(payload) > s->parts_hw)
            s->parts_hw = tide__get_le64(payload);
        if (has_id(db->rec_drop, db->n_rec_drop, tide__get_le64(payload)))
            return 0;
        off = TIDE_WAL_PART_HEADER;
        break;
    default: /* marks and aborts: read by tide__recover_scan */
        return 0;
    }
    payload += off;
    len -= off;
    rc = tide__wal_batch_apply(&s->head, payload, len, &scratch, &skipped);
    tide__buf_fini(&scratch);
    if (rc == 0 && len >= TIDE_WAL_BATCH_HEADER)
        rc = tide__dedup_set(&db->prod, tide__wal_batch_producer(payload),
                             tide__wal_batch_sequence(payload));
    return rc;
}

/* Delete segment files that no manifest lists: leftovers of a flush that
 * crashed before its manifest was stored. */
static void remove_strays(struct tide_db *db)
{
    DIR *d = opendir(db->seg_dir);
    struct dirent *e;

    if (!d)
        return;
    while ((e = readdir(d))) {
        char path[PATH_MAX];
        uint64_t id;
        char *end;
        int listed = 0;

        if (e->d_name[0] == '.')
            continue;
        id = strtoull(e->d_name, &end, 16);
        if (end != e->d_name + 16)
            continue;
        if (!strcmp(end, ".tseg"))
            for (uint32_t i = 0; i < db->man.n_segs && !listed; i++)
                listed = db->man.segs[i].id == id;
        else if (strcmp(end, ".tseg.tmp"))
            continue;
        if (listed)
            continue;
        snprintf(path, sizeof(path), "%s/%s", db->seg_dir, e->d_name);
        tide__db_log(db, TIDE_LOG_INFO, "removing unlisted segment file %s",
                     path);
        unlink(path);
    }
    closedir(d);
}

/* Open every segment the manifest lists and publish them as the first
 * segment list. */
static int open_segments(struct tide_db *db)
{
    struct seg **segs = tide_calloc((size_t)db->man.n_segs + 1, sizeof(*segs));
    struct seglist *l = NULL;
    uint32_t n = 0;
    int rc = 0;

    if (!segs)
        return -ENOMEM;
    for (; n < db->man.n_segs; n++) {
        char path[PATH_MAX];

        tide__seg_path(path, db->seg_dir, db->man.segs[n].id);
        rc = tide__seg_open(path, db->keys, &segs[n]);
        if (rc == TIDE_EKEY && !db->keys)
            tide__db_log(db, TIDE_LOG_ERROR,
                         "data directory is encrypted; configure "
                         "master_key_file (segment %s)",
                         path);
        if (rc) {
            tide__db_log(db, TIDE_LOG_ERROR, "opening segment %s: %s", path,
                         tide_strerror(rc));
            goto fail;
        }
        segs[n]->level = db->man.segs[n].level;
        if (segs[n]->id != db->man.segs[n].id) {
            /* A segment file copied or moved under another name: an
             * encrypted one is bound to its id, so this is tampering. */
            n++;
            rc =
                segs[n - 1]->encrypted
                    ? tide__keys_log_cipher(db->keys, "segment header", path, 0)
                    : TIDE_ECORRUPT;
            tide__db_log(db, TIDE_LOG_ERROR,
                         "segment %s holds segment %llu, not %llu", path,
                         (unsigned long long)segs[n - 1]->id,
                         (unsigned long long)db->man.segs[n - 1].id);
            goto fail;
        }
    }
    rc = tide__seglist_edit(db, db->seg_cur, NULL, 0, segs, n, NULL, &l);
    if (rc)
        goto fail;
    tide__seglist_publish(db, l);
    tide_free(segs);
    return 0;

fail:
    for (uint32_t i = 0; i < n; i++)
        tide__seg_close(segs[i]);
    tide_free(segs);
    return rc;
}

int tide__recover_manifest(struct tide_db *db)
{
    int rc = tide__manifest_load(db->dir, db->keys, &db->man);
    long cpus;

    if (rc == -ENOENT) {
        cpus = sysconf(_SC_NPROCESSORS_ONLN);
        db->man.n_shards = db->o.shards             ? db->o.shards
                           : cpus < 1               ? 1
                           : cpus > TIDE_SHARDS_MAX ? TIDE_SHARDS_MAX
                                                    : (unsigned)cpus;
        db->man.next_seg_id = 1;
        return tide__manifest_store(db->dir, &db->man, db->flush_io, db->keys,
                                    &(int){0});
    }
    if (rc == TIDE_EKEY && !db->keys)
        tide__db_log(db, TIDE_LOG_ERROR,
                     "data directory is encrypted; configure master_key_file "
                     "(%s/MANIFEST)",
                     db->dir);
    if (rc) {
        tide__db_log(db, TIDE_LOG_ERROR, "reading %s/MANIFEST: %s", db->dir,
                     tide_strerror(rc));
        return rc;
    }
    {
        char tmp[PATH_MAX];

        /* A replacement that crashed before its rename. */
        snprintf(tmp, sizeof(tmp), "%s/MANIFEST.tmp", db->dir);
        unlink(tmp);
    }
    if (db->keys && !db->man.encrypted) {
        /* Encryption was just turned on: the manifest is the first file
         * to be rewritten encrypted. */
        tide__db_log(db, TIDE_LOG_INFO,
                     "encryption at rest turned on for %s: new files are "
                     "encrypted, compaction rewrites the plaintext segments",
                     db->dir);
        rc = tide__manifest_store(db->dir, &db->man, db->flush_io, db->keys,
                                  &(int){0});
        if (rc)
            return rc;
    }
    if (db->o.shards && db->o.shards != db->man.n_shards)
        tide__db_log(db, TIDE_LOG_INFO,
                     "%s was created with %u shards; keeping them", db->dir,
                     db->man.n_shards);
    /* tide__seglist_edit() maps series to shards to tell which segments
     * hold only one shard's series. */
    db->n_shards = db->man.n_shards;
    rc = open_segments(db);
    if (rc)
        return rc;
    remove_strays(db);
    return 0;
}

int tide__recover_shard(struct tide_db *db, struct shard *s)
{
    unsigned idx = s->idx;
    const char *path = s->wal_dir;
    uint64_t last_seq = 0, group = 0;
    int rc;

    rc = tide__wal_replay(path, idx, db->keys, db->man.replay_from[idx],
                          db->o.repair, replay_record, s, wal_log, db,
                          &last_seq, &group);
    if (rc) {
        tide__db_log(db, TIDE_LOG_ERROR, "recovering WAL of shard %u: %s", idx,
                     tide_strerror(rc));
        return rc;
    }
    s->wal.group = group;
    if (last_seq < db->man.replay_from[idx])
        last_seq = db->man.replay_from[idx];
    /* The new file voids the incomplete batches over shards for good. */
    rc = tide__shard_rotate(s, last_seq + 1, db->rec_abort, db->n_rec_abort);
    if (rc == 0)
        rc = tide__wal_commit(&s->wal, s->io, 1);
    if (rc == -ENOSPC || rc == -EDQUOT) {
        struct statvfs v;

        tide__db_log(db, TIDE_LOG_ERROR,
                     "shard %u: no room for a new WAL file in %s (%llu bytes "
                     "free; it needs about 260 KiB, more with many "
                     "producers): free some space and open again",
                     idx, path,
                     statvfs(path, &v) == 0
                         ? (unsigned long long)v.f_bavail * v.f_frsize
                         : 0ull);
        return rc;
    }
    if (rc == 0)
        rc = tide__wal_remove_before(path, db->man.replay_from[idx],
                                     &(uint64_t){0});
    if (rc == 0)
        atomic_store(&s->wal_bytes, tide__wal_dir_bytes(path));
    return rc;
}
