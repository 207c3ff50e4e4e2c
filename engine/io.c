/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The I/O front end (io.h): picks a backend at open, runs requests in
 * windows of at most `depth`, resubmits the rest of short transfers, keeps
 * TIDE_IO_LINK chains across rounds, and injects faults for tests.
 *
 * Invariants of tide__io_run():
 *   1. A request is attempted only after its linked predecessor completed in
 *      full; if the predecessor failed, the request ends with -ECANCELED.
 *   2. A short read or write is resubmitted for its remaining bytes, with
 *      its chain successors held back, until it completes, fails, or (reads)
 *      reaches end of file. A write that transfers 0 bytes fails with -EIO
 *      so that no loop can spin.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "io_int.h"

#define IO_DEPTH_MAX 4096

struct tide_io {
    const struct io_backend *ops;
    void *impl;
    unsigned depth;
    struct io_attempt *att; /* [depth] attempts of the current round */
    unsigned *att_req;      /* [depth] window index of each attempt */
    uint64_t *done;         /* [depth] bytes done per request of the window */
    uint8_t *pending;       /* [depth] 1 while the request is not final */
};

/* ---- Fault injection (tests) -------------------------------------------- */

static pthread_mutex_t inject_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int inject_armed;
static atomic_ulong inject_fired;
static struct {
    unsigned long left; /* fire on the request that brings this to 0 */
    int err;
    uint32_t short_len;
} inject[4];
static struct {
    unsigned long left; /* the wait that brings this to 0 fails */
    int err;
    unsigned times; /* failures in a row, from that one on */
} inject_wait;

/* Called with inject_lock held. */
static void rearm(void)
{
    int armed = inject_wait.left != 0;

    for (int i = 0; i < 4; i++)
        armed |= inject[i].left != 0;
    atomic_store(&inject_armed, armed);
}

void tide__io_inject(enum tide_io_op op, unsigned long nth, int err,
                     uint32_t short_len)
{
    TIDE_ASSERT(op >= TIDE_IO_READ && op <= TIDE_IO_FDATASYNC);
    pthread_mutex_lock(&inject_lock);
    inject[op].left = nth;
    inject[op].err = err;
    inject[op].short_len = short_len;
    rearm();
    pthread_mutex_unlock(&inject_lock);
}

/* A request's first attempt: returns -err to fail it without running it,
 * else 0 with *cap set to the most bytes this attempt may move. */
static int inject_check(uint8_t op, uint32_t len, uint32_t *cap)
{
    int rc = 0;

    *cap = len;
    if (!atomic_load_explicit(&inject_armed, memory_order_relaxed))
        return 0;
    pthread_mutex_lock(&inject_lock);
    if (op < 4 && inject[op].left > 0 && --inject[op].left == 0) {
        atomic_fetch_add(&inject_fired, 1);
        if (inject[op].err)
            rc = -inject[op].err;
        else if (inject[op].short_len && inject[op].short_len < len)
            *cap = inject[op].short_len;
    }
    pthread_mutex_unlock(&inject_lock);
    return rc;
}

void tide__io_inject_wait(unsigned long nth, int err, unsigned times)
{
    pthread_mutex_lock(&inject_lock);
    inject_wait.left = nth;
    inject_wait.err = err;
    inject_wait.times = times ? times : 1;
    rearm();
    pthread_mutex_unlock(&inject_lock);
}

int tide__io_wait_injected(void)
{
    int rc = 0;

    if (!atomic_load_explicit(&inject_armed, memory_order_relaxed))
        return 0;
    pthread_mutex_lock(&inject_lock);
    if (inject_wait.left > 0 && --inject_wait.left == 0) {
        rc = -inject_wait.err;
        atomic_fetch_add(&inject_fired, 1);
        if (--inject_wait.times > 0)
            inject_wait.left = 1; /* the next wait fails too */
        rearm();
    }
    pthread_mutex_unlock(&inject_lock);
    return rc;
}

unsigned long tide__io_injected(void)
{
    return atomic_load(&inject_fired);
}

/* ---- Contexts ----------------------------------------------------------- */

int tide__io_open(enum tide_io_backend backend, unsigned depth,
                  struct tide_io **out)
{
    struct tide_io *io = NULL;
    int rc;

    if (depth < 1 || depth > IO_DEPTH_MAX || backend > TIDE_IO_SYNC)
        return -EINVAL;
    io = tide_calloc(1, sizeof(*io));
    if (!io)
        return -ENOMEM;
    io->depth = depth;
    io->att = tide_calloc(depth, sizeof(*io->att));
    io->att_req = tide_calloc(depth, sizeof(*io->att_req));
    io->done = tide_calloc(depth, sizeof(*io->done));
    io->pending = tide_calloc(depth, sizeof(*io->pending));
    if (!io->att || !io->att_req || !io->done || !io->pending) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = -EINVAL;
    if (backend != TIDE_IO_SYNC) {
        rc = tide__io_uring_new(depth, &io->ops, &io->impl);
        if (rc && backend == TIDE_IO_URING)
            goto fail;
    }
    if (rc)
        tide__io_sync_new(&io->ops, &io->impl);
    *out = io;
    return 0;

fail:
    tide__io_close(io);
    return rc;
}

void tide__io_close(struct tide_io *io)
{
    if (!io)
        return;
    if (io->ops)
        io->ops->close(io->impl);
    tide_free(io->att);
    tide_free(io->att_req);
    tide_free(io->done);
    tide_free(io->pending);
    tide_free(io);
}

const char *tide__io_backend_name(const struct tide_io *io)
{
    return io->ops->name;
}

/* ---- Running requests --------------------------------------------------- */

/* Record the outcome of one attempt for window request `j`. */
static void settle(struct tide_io *io, struct tide_io_req *r, unsigned j,
                   const struct io_attempt *a, int pred_pending)
{
    if (a->res == -ECANCELED && pred_pending)
        return; /* held back behind a short predecessor: try again */
    if (a->res < 0) {
        r->res = a->res;
    } else if (r->op == TIDE_IO_FDATASYNC) {
        r->res = 0;
    } else if (a->res == 0) {
        /* End of file for a read; a write that moves nothing would loop. */
        r->res = r->op == TIDE_IO_READ ? (int64_t)io->done[j] : -EIO;
    } else {
        io->done[j] += (uint64_t)a->res;
        if (io->done[j] < r->len)
            return;
        r->res = (int64_t)io->done[j];
    }
    io->pending[j] = 0;
}

/* Run reqs[base..base+m) to completion, m <= depth. */
static int run_window(struct tide_io *io, struct tide_io_req *reqs,
                      unsigned base, unsigned m)
{
    unsigned left = m;

    for (unsigned j = 0; j < m; j++) {
        io->done[j] = 0;
        io->pending[j] = 2; /* 2: not attempted yet */
    }
    while (left > 0) {
        unsigned k = 0;
        int capped = 0; /* attempt k-1 is an injected short transfer */
        int rc;

        for (unsigned j = 0; j < m; j++) {
            struct tide_io_req *r = &reqs[base + j];
            const struct tide_io_req *pred =
                base + j > 0 ? &reqs[base + j - 1] : NULL;
            int linked = pred && (pred->flags & TIDE_IO_LINK);
            uint32_t cap = r->len - (uint32_t)io->done[j];

            if (!io->pending[j])
                continue;
            if (linked && (j == 0 || !io->pending[j - 1]) && pred->res < 0) {
                r->res = -ECANCELED; /* invariant 1 */
                io->pending[j] = 0;
                left--;
                continue;
            }
            if (io->pending[j] == 2) {
                rc = inject_check(r->op, r->len, &cap);
                io->pending[j] = 1;
                if (rc) {
                    r->res = rc;
                    io->pending[j] = 0;
                    left--;
                    continue;
                }
            }
            if (linked && j > 0 && io->pending[j - 1]) {
                /* Chain behind the predecessor's attempt of this round,
                 * unless there is none or it is capped: a capped attempt
                 * completes in full for the backend, which would then
                 * start this one before the predecessor is whole. Wait
                 * for the next round instead (invariant 1). */
                if (k == 0 || io->att_req[k - 1] != j - 1 || capped)
                    continue;
                io->att[k - 1].link = 1;
            }
            capped = cap < r->len - (uint32_t)io->done[j];
            io->att[k] = (struct io_attempt){
                .op = r->op,
                .fd = r->fd,
                .buf = r->buf ? (uint8_t *)r->buf + io->done[j] : NULL,
                .len = r->op == TIDE_IO_FDATASYNC ? 0 : cap,
                .off = r->off + io->done[j],
            };
            io->att_req[k++] = j;
        }
        if (k == 0)
            break;
        rc = io->ops->run(io->impl, io->att, k);
        if (rc < 0) {
            for (unsigned i = 0; i < k; i++) {
                reqs[base + io->att_req[i]].res = rc;
                io->pending[io->att_req[i]] = 0;
            }
            return rc;
        }
        for (unsigned i = 0; i < k; i++) {
            unsigned j = io->att_req[i];
            int pred_pending =
                i > 0 && io->att[i - 1].link && io->pending[io->att_req[i - 1]];

            settle(io, &reqs[base + j], j, &io->att[i], pred_pending);
            if (!io->pending[j])
                left--;
        }
    }
    return 0;
}

int tide__io_run(struct tide_io *io, struct tide_io_req *reqs, unsigned n)
{
    int rc;

    for (unsigned i = 0; i < n; i++)
        reqs[i].res = -ECANCELED;
    for (unsigned base = 0; base < n; base += io->depth) {
        unsigned m = n - base < io->depth ? n - base : io->depth;

        rc = run_window(io, reqs, base, m);
        if (rc)
            return rc;
    }
    for (unsigned i = 0; i < n; i++) {
        if (reqs[i].res < 0)
            return (int)reqs[i].res;
        if (reqs[i].op == TIDE_IO_WRITE && (uint64_t)reqs[i].res < reqs[i].len)
            return -EIO;
    }
    return 0;
}

int tide__io_open_read(const char *path, int *fd, uint64_t *size)
{
    struct stat st;
    int rc;

    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return -errno;
    if (fstat(*fd, &st) != 0) {
        rc = -errno;
        close(*fd);
        *fd = -1;
        return rc;
    }
    *size = (uint64_t)st.st_size;
    return 0;
}

int tide__io_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    size_t got = 0;

    while (got < len) {
        ssize_t r =
            pread(fd, (uint8_t *)buf + got, len - got, (off_t)(off + got));

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return TIDE_ECORRUPT;
        got += (size_t)r;
    }
    return 0;
}

int tide__io_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;

    if (fd < 0)
        return -errno;
    if (fsync(fd) != 0)
        rc = -errno;
    close(fd);
    return rc;
}
