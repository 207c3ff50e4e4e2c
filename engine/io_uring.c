/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The io_uring I/O backend: a round of attempts is queued as SQEs (chains
 * with IOSQE_IO_LINK), submitted with one io_uring_submit_and_wait() call,
 * and reaped in full before the round returns, each completion tagged
 * with its round and attempt. Interface: io_int.h.
 *
 * Why links: the WAL writes its group and then fdatasyncs it; linking the
 * two makes one submission carry the whole commit, and the kernel cancels
 * the fdatasync (-ECANCELED) if the write fails or is short, which is the
 * contract io_sync.c mirrors.
 */
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>

#include "internal.h"
#include "io_int.h"

struct uring {
    struct io_uring ring;
    unsigned depth;
    uint32_t round; /* tags user_data, so each completion names its round */
    int ring_ok;    /* 0 after a failed re-initialisation: every run fails */
};

/* Drop the ring with whatever it still holds and set up a fresh one.
 * Closing a ring makes the kernel cancel what it still runs, and the
 * completions of the old ring can never reach the new one. */
static void ring_reset(struct uring *u)
{
    io_uring_queue_exit(&u->ring);
    u->ring_ok = io_uring_queue_init(u->depth, &u->ring, 0) == 0;
}

/* Submit the `n` queued SQEs. Returns how many the kernel took; *err is
 * set when it took fewer (it stops at an SQE it cannot allocate or set
 * up, and the rest stay queued). */
static unsigned submit(struct uring *u, unsigned n, int *err)
{
    unsigned submitted = 0;

    *err = 0;
    while (submitted < n) {
        /* The first call also waits for the whole round. */
        int rc = submitted ? io_uring_submit(&u->ring)
                           : io_uring_submit_and_wait(&u->ring, n);

        if (rc == -EINTR)
            continue;
        if (rc <= 0) {
            *err = rc < 0 ? rc : -EAGAIN;
            break;
        }
        submitted += (unsigned)rc;
    }
    return submitted;
}

/*
 * Reap until each of the `n` submitted attempts has completed. Returning
 * earlier would leave attempts in flight that still own the caller's
 * buffers, and their completions for the next round to take as its own;
 * so a failed wait is retried, and only IO_URING_WAIT_FAILS_MAX failures in
 * a row give up (the caller then resets the ring). Returns 0 or the last
 * wait's -errno.
 */
static int reap(struct uring *u, struct io_attempt *a, unsigned n)
{
    unsigned reaped = 0, fails = 0;

    while (reaped < n) {
        struct io_uring_cqe *cqe;
        uint64_t tag;
        int rc = tide__io_wait_injected();

        if (rc == 0)
            rc = io_uring_wait_cqe(&u->ring, &cqe);
        if (rc == -EINTR)
            continue;
        if (rc < 0) {
            if (++fails == IO_URING_WAIT_FAILS_MAX)
                return rc;
            continue;
        }
        fails = 0;
        tag = io_uring_cqe_get_data64(cqe);
        /* Every earlier round was reaped in full or its ring reset. */
        TIDE_ASSERT(tag >> 32 == u->round && (uint32_t)tag < n);
        a[(uint32_t)tag].res = cqe->res;
        io_uring_cqe_seen(&u->ring, cqe);
        reaped++;
    }
    return 0;
}

static int uring_run(void *impl, struct io_attempt *a, unsigned n)
{
    struct uring *u = impl;
    unsigned submitted;
    int rc, err;

    if (!u->ring_ok)
        return -EIO;
    TIDE_ASSERT(n <= u->depth);
    u->round++;
    for (unsigned i = 0; i < n; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);

        /* The ring has `depth` entries and nothing else is queued. */
        TIDE_ASSERT(sqe != NULL);
        switch (a[i].op) {
        case TIDE_IO_READ:
            io_uring_prep_read(sqe, a[i].fd, a[i].buf, a[i].len, a[i].off);
            break;
        case TIDE_IO_WRITE:
            io_uring_prep_write(sqe, a[i].fd, a[i].buf, a[i].len, a[i].off);
            break;
        default:
            io_uring_prep_fsync(sqe, a[i].fd, IORING_FSYNC_DATASYNC);
            break;
        }
        if (a[i].link)
            sqe->flags |= IOSQE_IO_LINK;
        io_uring_sqe_set_data64(sqe, (uint64_t)u->round << 32 | i);
        a[i].res = -ECANCELED;
    }
    submitted = submit(u, n, &err);
    rc = reap(u, a, submitted);
    if (rc == 0)
        rc = err;
    /* After a failure the ring may still hold SQEs the kernel did not
     * take, or attempts whose waits failed: start the next round on an
     * empty ring. */
    if (rc)
        ring_reset(u);
    return rc;
}

static void uring_close(void *impl)
{
    struct uring *u = impl;

    if (!u)
        return;
    if (u->ring_ok)
        io_uring_queue_exit(&u->ring);
    tide_free(u);
}

static const struct io_backend uring_ops = {
    .name = "io_uring",
    .run = uring_run,
    .close = uring_close,
};

int tide__io_uring_new(unsigned depth, const struct io_backend **ops,
                       void **impl)
{
    struct uring *u = tide_calloc(1, sizeof(*u));
    int rc;

    if (!u)
        return -ENOMEM;
    rc = io_uring_queue_init(depth, &u->ring, 0);
    if (rc < 0) {
        tide_free(u);
        return rc;
    }
    u->depth = depth;
    u->ring_ok = 1;
    *ops = &uring_ops;
    *impl = u;
    return 0;
}
