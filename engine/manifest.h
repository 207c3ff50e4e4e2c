/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The MANIFEST: the set of live segments and, per shard, the first WAL
 * file recovery must replay. Replaced atomically (temp file, fsync, rename,
 * directory fsync). Layout: docs/file-format.md, "MANIFEST".
 */
#ifndef TIDE_ENGINE_MANIFEST_H
#define TIDE_ENGINE_MANIFEST_H

#include "internal.h"
#include "io.h"
#include "keys.h"

struct man_seg {
    uint64_t id;
    uint16_t shard;
    uint16_t tier;
    uint8_t level; /* 0 written by a flush, 1 by compaction */
};

struct manifest {
    uint32_t n_shards;
    uint64_t generation;  /* incremented by every store */
    uint64_t next_seg_id; /* ids are never reused */
    uint64_t replay_from[TIDE_SHARDS_MAX];
    uint32_t n_segs;
    struct man_seg *segs; /* tide_malloc'd */
    int encrypted;        /* as loaded or last stored */
};

/* Load `dir`/MANIFEST into `m` (zeroed first). `kr` is the db's key cache
 * (NULL: encryption off). Returns 0, -ENOENT when there is none (a new
 * directory), TIDE_ECORRUPT, TIDE_EVERSION, TIDE_EKEY (encrypted, and no
 * key or another engine key), TIDE_ECIPHER (failed authentication;
 * logged with file and offset), -ENOMEM or -errno. */
int tide__manifest_load(const char *dir, struct keys *kr, struct manifest *m);

/*
 * Atomically replace `dir`/MANIFEST with `m`, encrypted when `kr` is not
 * NULL: write MANIFEST.tmp and
 * fdatasync it through `io` (the I/O layer, so tests can fail either),
 * rename it over MANIFEST, fsync the directory. Returns 0 once the new
 * manifest is installed and durable, with m->generation bumped.
 *
 * On failure *installed (never NULL) says which manifest is in force:
 *   0  the rename did not happen: the old manifest is on disk, MANIFEST.tmp
 *      is removed and `m` is unchanged.
 *   1  the rename happened but the directory fsync failed: the new manifest
 *      is what the directory holds now, so m->generation is bumped (memory
 *      follows disk), but a crash may still bring the old one back. The
 *      caller must keep everything either manifest needs and stop writing
 *      (the db's sticky TIDE_EIO state).
 * Returns 0, -ENOMEM or -errno.
 */
int tide__manifest_store(const char *dir, struct manifest *m,
                         struct tide_io *io, struct keys *kr, int *installed);

/* The steps of tide__manifest_store() that have no request type in the I/O
 * layer. The write and the file's fdatasync are TIDE_IO_WRITE and
 * TIDE_IO_FDATASYNC requests and fail through tide__io_inject(). */
enum tide_manifest_op {
    TIDE_MANIFEST_RENAME = 1,
    TIDE_MANIFEST_DIRSYNC = 2,
};

/* Tests: make the `nth` next `op` (counted from 1, process-wide) fail with
 * `-err` without performing it. 0 for `nth` disables. Thread-safe; the
 * same switch as tide__io_inject() for the two steps it cannot see. */
void tide__manifest_inject(enum tide_manifest_op op, unsigned long nth,
                           int err);

void tide__manifest_fini(struct manifest *m);

#endif /* TIDE_ENGINE_MANIFEST_H */
