/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The synchronous I/O backend: one pread/pwrite/fdatasync per attempt, in
 * order. Used where io_uring is unavailable (old kernels, seccomp sandboxes)
 * and by tests that want the second backend. Interface: io_int.h.
 */
#include <errno.h>
#include <unistd.h>

#include "io_int.h"

static int64_t attempt(const struct io_attempt *a)
{
    ssize_t r;

    do {
        switch (a->op) {
        case TIDE_IO_READ:
            r = pread(a->fd, a->buf, a->len, (off_t)a->off);
            break;
        case TIDE_IO_WRITE:
            r = pwrite(a->fd, a->buf, a->len, (off_t)a->off);
            break;
        case TIDE_IO_FDATASYNC:
            r = fdatasync(a->fd);
            break;
        default:
            return -EINVAL;
        }
    } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : (int64_t)r;
}

static int sync_run(void *impl, struct io_attempt *a, unsigned n)
{
    int broken = 0; /* the current chain failed or came up short */

    (void)impl;
    for (unsigned i = 0; i < n; i++) {
        if (broken) {
            a[i].res = -ECANCELED;
        } else {
            a[i].res = attempt(&a[i]);
            broken = a[i].res < 0 || (a[i].op != TIDE_IO_FDATASYNC &&
                                      (uint64_t)a[i].res < a[i].len);
        }
        if (!a[i].link)
            broken = 0;
    }
    return 0;
}

static void sync_close(void *impl)
{
    (void)impl;
}

static const struct io_backend sync_ops = {
    .name = "sync",
    .run = sync_run,
    .close = sync_close,
};

void tide__io_sync_new(const struct io_backend **ops, void **impl)
{
    *ops = &sync_ops;
    *impl = NULL;
}
