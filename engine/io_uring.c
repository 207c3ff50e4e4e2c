/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The io_uring I/O backend: a round of attempts is queued as SQEs (chains
 * with IOSQE_IO_LINK), submitted with one io_uring_submit_and_wait() call,
 * and reaped. Interface: io_int.h.
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
    int ring_ok; /* 0 after a failed re-initialisation: every run fails */
};

static int uring_run(void *impl, struct io_attempt *a, unsigned n)
{
    struct uring *u = impl;
    unsigned reaped = 0;
    int rc;

    if (!u->ring_ok)
        return -EIO;
    TIDE_ASSERT(n <= u->depth);
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
        io_uring_sqe_set_data64(sqe, i);
        a[i].res = -ECANCELED;
    }
    do {
        rc = io_uring_submit_and_wait(&u->ring, n);
    } while (rc == -EINTR);
    if (rc < 0) {
        /* Nothing could be submitted; drop what is queued so the ring is
         * empty for the next round. */
        io_uring_queue_exit(&u->ring);
        u->ring_ok = io_uring_queue_init(u->depth, &u->ring, 0) == 0;
        return rc;
    }
    while (reaped < n) {
        struct io_uring_cqe *cqe;
        uint64_t i;

        rc = io_uring_wait_cqe(&u->ring, &cqe);
        if (rc == -EINTR)
            continue;
        if (rc < 0)
            return rc;
        i = io_uring_cqe_get_data64(cqe);
        if (i < n)
            a[i].res = cqe->res;
        io_uring_cqe_seen(&u->ring, cqe);
        reaped++;
    }
    return 0;
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
