/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine's disk I/O interface, with two backends behind it: io_uring.c
 * (batched submission through liburing) and io_sync.c (pread/pwrite/
 * fdatasync, for kernels or sandboxes without io_uring). The backend is
 * chosen at open time; io.c holds the shared front end and the fault
 * injection used by tests.
 *
 * A tide_io belongs to one thread at a time (each shard writer owns one;
 * readers take one from a small pool).
 */
#ifndef TIDE_ENGINE_IO_H
#define TIDE_ENGINE_IO_H

#include <stdint.h>

enum tide_io_backend {
    TIDE_IO_AUTO = 0, /* io_uring when the kernel allows it, else sync */
    TIDE_IO_URING = 1,
    TIDE_IO_SYNC = 2,
};

enum tide_io_op {
    TIDE_IO_READ = 1,
    TIDE_IO_WRITE = 2,
    TIDE_IO_FDATASYNC = 3, /* buf, len and off are ignored */
};

/* Request flags. */
#define TIDE_IO_LINK                                                           \
    1u /* the next request starts only after this one                          \
          completed in full; if this one fails, the rest                       \
          of the chain fails with -ECANCELED */

/* One I/O request. The caller owns it and `buf`, which must stay valid
 * until tide__io_run() returns. */
struct tide_io_req {
    uint8_t op;    /* enum tide_io_op */
    uint8_t flags; /* TIDE_IO_* flags */
    int fd;
    void *buf;
    uint32_t len;
    uint64_t off;
    int64_t res; /* out: bytes transferred, or -errno */
};

struct tide_io;

/*
 * Open an I/O context for up to `depth` requests in flight (1..4096).
 * TIDE_IO_AUTO falls back to the sync backend when io_uring setup fails
 * (ENOSYS, EPERM under seccomp, ENOMEM for locked memory). Returns 0, -EINVAL,
 * -ENOMEM, or the -errno of io_uring setup for TIDE_IO_URING.
 */
int tide__io_open(enum tide_io_backend backend, unsigned depth,
                  struct tide_io **out);

/* Close the context. Accepts NULL. No request may be in flight. */
void tide__io_close(struct tide_io *io);

/* "io_uring" or "sync": logged by the db at open. */
const char *tide__io_backend_name(const struct tide_io *io);

/*
 * Run `n` requests and wait until every one has completed. Short reads and
 * writes are resubmitted for the rest until complete, an error, or (reads
 * only) end of file. Each request's `res` is set. Requests may complete in
 * any order unless chained with TIDE_IO_LINK; more than `depth` requests
 * are run in several rounds. Returns 0 when every request succeeded in full
 * (a read may be short only at end of file), else the first failing
 * request's -errno (its `res` and the others' are still set).
 */
int tide__io_run(struct tide_io *io, struct tide_io_req *reqs, unsigned n);

/* Open `path` read-only and find its size: plain synchronous calls, for
 * the files read once at open (segment index, manifest). Returns 0 with
 * *fd open, or -errno with nothing left open. */
int tide__io_open_read(const char *path, int *fd, uint64_t *size);

/* pread(2) exactly `len` bytes at `off`, going on after EINTR and short
 * reads. Returns 0, -errno, or TIDE_ECORRUPT when the file ends first
 * (shorter than its own header or index says). */
int tide__io_pread_full(int fd, void *buf, size_t len, uint64_t off);

/* fsync the directory `dir`, so that the files created or renamed in it
 * stay after a crash. A plain synchronous call: no request of the layer
 * does it. Returns 0 or -errno. */
int tide__io_fsync_dir(const char *dir);

/*
 * Tests: make the `nth` next request of type `op` (counted from 1 across
 * all contexts of this process) fail with `-err` (e.g. ENOSPC, EIO), or,
 * when `short_len` is non-zero, transfer at most `short_len` bytes in its
 * first attempt. 0 for `nth` disables. Process-wide, thread-safe.
 */
void tide__io_inject(enum tide_io_op op, unsigned long nth, int err,
                     uint32_t short_len);

#endif /* TIDE_ENGINE_IO_H */
