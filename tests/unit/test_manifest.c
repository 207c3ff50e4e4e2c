/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of the MANIFEST (engine/manifest.c): round trip, generation,
 * a missing file, truncation and flipped bytes, and a failure injected at
 * each step of a store.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

#include "manifest.h"
#include "testutil.h"

static char dir[1024];
static struct tide_io *io;
static int installed;

static void setup(void)
{
    snprintf(dir, sizeof(dir), "%s", test_tmpdir());
    cr_assert_eq(tide__io_open(TIDE_IO_SYNC, 8, &io), 0);
}

static void teardown(void)
{
    tide__io_inject(TIDE_IO_WRITE, 0, 0, 0);
    tide__io_inject(TIDE_IO_FDATASYNC, 0, 0, 0);
    tide__manifest_inject(TIDE_MANIFEST_RENAME, 0, 0);
    tide__manifest_inject(TIDE_MANIFEST_DIRSYNC, 0, 0);
    tide__io_close(io);
    test_rmrf(dir);
}

TestSuite(manifest, .init = setup, .fini = teardown);

static void store_sample(void)
{
    struct man_seg segs[2] = {{5, 0, 1, 0}, {9, 1, 2, 1}};
    struct manifest m = {.n_shards = 2, .next_seg_id = 10, .n_segs = 2};

    m.segs = segs;
    m.replay_from[0] = 3;
    m.replay_from[1] = 4;
    cr_assert_eq(tide__manifest_store(dir, &m, io, NULL, &installed), 0);
    cr_assert_eq(m.generation, 1);
}

Test(manifest, roundtrip)
{
    struct manifest m;

    cr_assert_eq(tide__manifest_load(dir, NULL, &m), -ENOENT);
    store_sample();
    cr_assert_eq(tide__manifest_load(dir, NULL, &m), 0);
    cr_assert_eq(m.n_shards, 2);
    cr_assert_eq(m.generation, 1);
    cr_assert_eq(m.next_seg_id, 10);
    cr_assert_eq(m.replay_from[1], 4);
    cr_assert_eq(m.n_segs, 2);
    cr_assert_eq(m.segs[1].id, 9);
    cr_assert_eq(m.segs[1].tier, 2);
    cr_assert_eq(m.segs[1].level, 1);
    cr_assert_eq(tide__manifest_store(dir, &m, io, NULL, &installed), 0);
    tide__manifest_fini(&m);
    cr_assert_eq(tide__manifest_load(dir, NULL, &m), 0);
    cr_assert_eq(m.generation, 2);
    tide__manifest_fini(&m);
}

Test(manifest, damage_is_detected)
{
    char path[PATH_MAX];
    long long size;
    int fd;

    store_sample();
    snprintf(path, sizeof(path), "%s/MANIFEST", dir);
    size = test_file_size(path);
    fd = open(path, O_RDWR);
    for (long long k = 0; k < size; k++) {
        struct manifest m;
        uint8_t b, f;
        int rc;

        cr_assert_eq(pread(fd, &b, 1, k), 1);
        f = b ^ 0x01;
        cr_assert_eq(pwrite(fd, &f, 1, k), 1);
        rc = tide__manifest_load(dir, NULL, &m);
        cr_assert(rc == TIDE_ECORRUPT || rc == TIDE_EVERSION,
                  "flip at %lld: %d", k, rc);
        cr_assert_eq(pwrite(fd, &b, 1, k), 1);
    }
    cr_assert_eq(ftruncate(fd, size - 1), 0);
    {
        struct manifest m;

        cr_assert_eq(tide__manifest_load(dir, NULL, &m), TIDE_ECORRUPT);
    }
    close(fd);
}

/* Fail each step of a store in turn. Before the rename the old manifest
 * stays in force and `m` is unchanged; after it (a failed directory
 * fsync) the new one is installed and `m` follows it. */
Test(manifest, store_faults_report_what_is_installed)
{
    static const struct {
        int io_op; /* a tide_io_op, or 0 */
        int man_op;
        int installed;
    } steps[] = {
        {TIDE_IO_WRITE, 0, 0},
        {TIDE_IO_FDATASYNC, 0, 0},
        {0, TIDE_MANIFEST_RENAME, 0},
        {0, TIDE_MANIFEST_DIRSYNC, 1},
    };

    store_sample();
    for (unsigned k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
        char tmp[PATH_MAX];
        struct manifest m;
        uint64_t gen;
        int rc;

        cr_assert_eq(tide__manifest_load(dir, NULL, &m), 0);
        gen = m.generation;
        m.next_seg_id++;
        if (steps[k].io_op)
            tide__io_inject(steps[k].io_op, 1, EIO, 0);
        else
            tide__manifest_inject(steps[k].man_op, 1, EIO);
        rc = tide__manifest_store(dir, &m, io, NULL, &installed);
        cr_assert_eq(rc, -EIO, "step %u: %d", k, rc);
        cr_assert_eq(installed, steps[k].installed, "step %u", k);
        cr_assert_eq(m.generation, gen + (unsigned)installed, "step %u", k);
        tide__manifest_fini(&m);
        cr_assert_eq(tide__manifest_load(dir, NULL, &m), 0);
        cr_assert_eq(m.generation, gen + (unsigned)installed, "step %u", k);
        tide__manifest_fini(&m);
        snprintf(tmp, sizeof(tmp), "%s/MANIFEST.tmp", dir);
        cr_assert_neq(access(tmp, F_OK), 0, "step %u left MANIFEST.tmp", k);
    }
}
