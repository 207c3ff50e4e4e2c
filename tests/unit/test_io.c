/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of the I/O layer (engine/io.c, io_sync.c, io_uring.c), each on
 * both backends: requests in several rounds, short writes and reads
 * completed by resubmission (and holding back what is linked to them),
 * end of file, and injected -EAGAIN and -EIO failing one request and
 * cancelling its chain without disturbing the others or the next run. The
 * io_uring backend alone: failed waits for completions in mid-round.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "io.h"
#include "io_int.h"
#include "testutil.h"

#define DEPTH 4
#define BLOCK 4096u
#define BLOCKS 10 /* more than DEPTH: several rounds */

static char dir[1024];
static struct tide_io *io;
static int fd = -1;
static uint8_t data[BLOCKS][BLOCK]; /* what the file should hold */
static uint8_t back[BLOCKS][BLOCK]; /* what was read back */

static void setup(void)
{
    char path[PATH_MAX];

    snprintf(dir, sizeof(dir), "%s", test_tmpdir());
    snprintf(path, sizeof(path), "%s/data", dir);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0);
    for (unsigned b = 0; b < BLOCKS; b++)
        for (unsigned i = 0; i < BLOCK; i++)
            data[b][i] = (uint8_t)(b * 31 + i * 7 + 1);
    memset(back, 0, sizeof(back));
    io = NULL; /* each test opens it on its backend */
}

static void teardown(void)
{
    tide__io_inject(TIDE_IO_READ, 0, 0, 0);
    tide__io_inject(TIDE_IO_WRITE, 0, 0, 0);
    tide__io_inject(TIDE_IO_FDATASYNC, 0, 0, 0);
    tide__io_inject_wait(0, 0, 0);
    tide__io_close(io);
    io = NULL;
    close(fd);
    test_rmrf(dir);
}

TestSuite(io, .init = setup, .fini = teardown, .timeout = 60);

static struct tide_io_req req(uint8_t op, unsigned block, void *buf)
{
    return (struct tide_io_req){.op = op,
                                .fd = fd,
                                .buf = op == TIDE_IO_FDATASYNC ? NULL : buf,
                                .len = op == TIDE_IO_FDATASYNC ? 0 : BLOCK,
                                .off = (uint64_t)block * BLOCK};
}

/* Run `n` requests, expecting `want` (0 or -errno) from the run. */
static void run(struct tide_io_req *r, unsigned n, int want)
{
    int rc = tide__io_run(io, r, n);

    cr_assert_eq(rc, want, "tide__io_run: %s, want %s", tide_strerror(rc),
                 tide_strerror(want));
}

/* Write blocks [0, n) with one request each, then a linked fdatasync. */
static void write_blocks(unsigned n)
{
    struct tide_io_req r[BLOCKS + 1];

    for (unsigned b = 0; b < n; b++)
        r[b] = req(TIDE_IO_WRITE, b, data[b]);
    r[n - 1].flags = TIDE_IO_LINK;
    r[n] = req(TIDE_IO_FDATASYNC, 0, NULL);
    run(r, n + 1, 0);
    for (unsigned b = 0; b < n; b++)
        cr_assert_eq(r[b].res, BLOCK, "write %u: res %lld", b,
                     (long long)r[b].res);
    cr_assert_eq(r[n].res, 0);
    cr_assert_eq(lseek(fd, 0, SEEK_END), (off_t)n * BLOCK);
}

/* Read blocks [0, n) back with one request each; all must be whole and
 * equal to what was written. */
static void check_blocks(unsigned n)
{
    struct tide_io_req r[BLOCKS];

    memset(back, 0, sizeof(back));
    for (unsigned b = 0; b < n; b++)
        r[b] = req(TIDE_IO_READ, b, back[b]);
    run(r, n, 0);
    for (unsigned b = 0; b < n; b++) {
        cr_assert_eq(r[b].res, BLOCK, "read %u: res %lld", b,
                     (long long)r[b].res);
        cr_assert(!memcmp(back[b], data[b], BLOCK), "block %u differs", b);
    }
}

TEST_IO(io, requests_beyond_depth_run_in_rounds)
{
    TEST_IO_OPEN(backend, DEPTH, &io);
    write_blocks(BLOCKS);
    check_blocks(BLOCKS);
}

/* The injected write moves 100 bytes in its first attempt; the front end
 * resubmits the rest until the block is whole. */
TEST_IO(io, short_write_is_completed)
{
    TEST_IO_OPEN(backend, DEPTH, &io);
    tide__io_inject(TIDE_IO_WRITE, 2, 0, 100);
    write_blocks(3);
    cr_assert_eq(tide__io_injected(), 1);
    check_blocks(3);
}

TEST_IO(io, short_read_is_completed)
{
    TEST_IO_OPEN(backend, DEPTH, &io);
    write_blocks(3);
    tide__io_inject(TIDE_IO_READ, 3, 0, 1);
    check_blocks(3);
    cr_assert_eq(tide__io_injected(), 1);
}

/* A read linked after a write whose first attempt is short starts only
 * once the whole write is done (io.c invariant 1), so it sees every new
 * byte, not the old contents of the rest of the block. */
TEST_IO(io, request_linked_after_a_short_write_waits_for_all_of_it)
{
    struct tide_io_req r[2];

    TEST_IO_OPEN(backend, DEPTH, &io);
    write_blocks(1);
    memset(data[0], 0xee, BLOCK);
    r[0] = req(TIDE_IO_WRITE, 0, data[0]);
    r[0].flags = TIDE_IO_LINK;
    r[1] = req(TIDE_IO_READ, 0, back[0]);
    tide__io_inject(TIDE_IO_WRITE, 1, 0, 100);
    run(r, 2, 0);
    cr_assert_eq(tide__io_injected(), 1);
    cr_assert_eq(r[0].res, BLOCK);
    cr_assert_eq(r[1].res, BLOCK);
    cr_assert(!memcmp(back[0], data[0], BLOCK),
              "the read ran before the write was whole");
}

/* A read may be short only at end of file, and then it succeeds. */
TEST_IO(io, read_at_end_of_file_is_short)
{
    struct tide_io_req r[2];

    TEST_IO_OPEN(backend, DEPTH, &io);
    write_blocks(2);
    r[0] = req(TIDE_IO_READ, 1, back[0]);
    r[0].off += 1000;
    r[1] = req(TIDE_IO_READ, 2, back[1]);
    run(r, 2, 0);
    cr_assert_eq(r[0].res, BLOCK - 1000);
    cr_assert(!memcmp(back[0], data[1] + 1000, BLOCK - 1000));
    cr_assert_eq(r[1].res, 0);
}

/* Request 2 of 4 (a write linked to an fdatasync) fails with -err: the
 * run reports it, the fdatasync is cancelled, the others complete, and
 * the context works normally afterwards. */
static void injected_error(enum tide_io_backend backend, int err)
{
    struct tide_io_req r[4];

    TEST_IO_OPEN(backend, DEPTH, &io);
    r[0] = req(TIDE_IO_WRITE, 0, data[0]);
    r[1] = req(TIDE_IO_WRITE, 1, data[1]);
    r[1].flags = TIDE_IO_LINK;
    r[2] = req(TIDE_IO_FDATASYNC, 0, NULL);
    r[3] = req(TIDE_IO_WRITE, 2, data[2]);
    tide__io_inject(TIDE_IO_WRITE, 2, err, 0);
    run(r, 4, -err);
    cr_assert_eq(tide__io_injected(), 1);
    cr_assert_eq(r[0].res, BLOCK);
    cr_assert_eq(r[1].res, -err);
    cr_assert_eq(r[2].res, -ECANCELED);
    cr_assert_eq(r[3].res, BLOCK);
    write_blocks(3);
    check_blocks(3);
}

TEST_IO(io, eagain_fails_the_request_and_its_chain)
{
    injected_error(backend, EAGAIN);
}

TEST_IO(io, eio_fails_the_request_and_its_chain)
{
    injected_error(backend, EIO);
}

/*
 * io_uring.c reaps a round's completions one wait at a time. A wait that
 * fails once, after the first of four completions was reaped, must not end
 * the round: the other three writes are still in flight, own their
 * buffers, and their completions would be taken for the next round's.
 */
Test(io, uring_failed_wait_mid_round_reaps_every_completion)
{
    TEST_IO_OPEN(TIDE_IO_URING, DEPTH, &io);
    tide__io_inject_wait(2, EBUSY, 1);
    write_blocks(DEPTH - 1); /* DEPTH requests with the fdatasync */
    cr_assert_eq(tide__io_injected(), 1);
    check_blocks(DEPTH - 1);
}

/* Waits that keep failing end the round with the error; the next run on
 * the same context sees only its own completions. */
Test(io, uring_broken_wait_leaves_no_stale_completion)
{
    struct tide_io_req r[DEPTH];

    TEST_IO_OPEN(TIDE_IO_URING, DEPTH, &io);
    for (unsigned b = 0; b < DEPTH; b++)
        r[b] = req(TIDE_IO_WRITE, b, data[b]);
    tide__io_inject_wait(2, EBUSY, 1000);
    run(r, DEPTH, -EBUSY);
    cr_assert_eq(tide__io_injected(), IO_URING_WAIT_FAILS_MAX);
    for (unsigned b = 0; b < DEPTH; b++)
        cr_assert_eq(r[b].res, -EBUSY);
    tide__io_inject_wait(0, 0, 0);
    write_blocks(DEPTH);
    check_blocks(DEPTH);
}
