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

static int replay_record(void *ctx, uint8_t type, const uint8_t *payload,
                         uint32_t len)
{
    struct shard *s = ctx;
    uint32_t skipped = 0;
    struct tide_buf scratch = {0};
    int rc;

    if (type == TIDE_WAL_PRODUCERS)
        return tide__dedup_load(&s->prod, payload, len);
    rc = tide__wal_batch_apply(&s->head, payload, len, &scratch, &skipped);
    tide__buf_fini(&scratch);
    if (rc == 0 && tide__wal_batch_sequence(payload))
        rc = tide__dedup_set(&s->prod, tide__wal_batch_producer(payload),
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
        rc = tide__seg_open(path, &segs[n]);
        if (rc) {
            tide__db_log(db, TIDE_LOG_ERROR, "opening segment %s: %s", path,
                         tide_strerror(rc));
            goto fail;
        }
    }
    rc = tide__seglist_edit(db, db->seg_cur, NULL, 0, segs, n, &l);
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
    int rc = tide__manifest_load(db->dir, &db->man);
    long cpus;

    if (rc == -ENOENT) {
        cpus = sysconf(_SC_NPROCESSORS_ONLN);
        db->man.n_shards = db->o.shards             ? db->o.shards
                           : cpus < 1               ? 1
                           : cpus > TIDE_SHARDS_MAX ? TIDE_SHARDS_MAX
                                                    : (unsigned)cpus;
        db->man.next_seg_id = 1;
        return tide__manifest_store(db->dir, &db->man, db->flush_io, &(int){0});
    }
    if (rc) {
        tide__db_log(db, TIDE_LOG_ERROR, "reading %s/MANIFEST: %s", db->dir,
                     tide_strerror(rc));
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

    rc = tide__wal_replay(path, idx, db->man.replay_from[idx], db->o.repair,
                          replay_record, s, wal_log, db, &last_seq, &group);
    if (rc) {
        tide__db_log(db, TIDE_LOG_ERROR, "recovering WAL of shard %u: %s", idx,
                     tide_strerror(rc));
        return rc;
    }
    s->wal.group = group;
    if (last_seq < db->man.replay_from[idx])
        last_seq = db->man.replay_from[idx];
    rc = tide__shard_rotate(s, last_seq + 1);
    if (rc == 0)
        rc = tide__wal_commit(&s->wal, s->io, 1);
    if (rc == 0)
        rc = tide__wal_remove_before(path, db->man.replay_from[idx],
                                     &(uint64_t){0});
    if (rc == 0)
        atomic_store(&s->wal_bytes, tide__wal_dir_bytes(path));
    return rc;
}
