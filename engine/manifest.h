/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The MANIFEST: the set of live segments and, per shard, the first WAL
 * file recovery must replay. Replaced atomically (temp file, fsync, rename,
 * directory fsync). Layout: docs/file-format.md, "MANIFEST".
 */
#ifndef TIDE_ENGINE_MANIFEST_H
#define TIDE_ENGINE_MANIFEST_H

#include "internal.h"

struct man_seg {
    uint64_t id;
    uint16_t shard;
    uint16_t tier;
};

struct manifest {
    uint32_t n_shards;
    uint64_t generation;  /* incremented by every store */
    uint64_t next_seg_id; /* ids are never reused */
    uint64_t replay_from[TIDE_SHARDS_MAX];
    uint32_t n_segs;
    struct man_seg *segs; /* tide_malloc'd */
};

/* Load `dir`/MANIFEST into `m` (zeroed first). Returns 0, -ENOENT when
 * there is none (a new directory), TIDE_ECORRUPT, TIDE_EVERSION, -ENOMEM or
 * -errno. */
int tide__manifest_load(const char *dir, struct manifest *m);

/* Atomically replace `dir`/MANIFEST with `m` (generation is bumped).
 * Returns 0 or -errno; on failure the old manifest stays in force. */
int tide__manifest_store(const char *dir, struct manifest *m);

void tide__manifest_fini(struct manifest *m);

#endif /* TIDE_ENGINE_MANIFEST_H */
