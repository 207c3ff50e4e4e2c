/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What io.c (the front end) and the two backends, io_uring.c and io_sync.c,
 * share. The front end splits a tide__io_run() call into rounds of at most
 * `depth` attempts, applies fault injection, and resubmits the rest of short
 * transfers; a backend only performs one round of attempts.
 */
#ifndef TIDE_ENGINE_IO_INT_H
#define TIDE_ENGINE_IO_INT_H

#include "io.h"

/* One attempt at (part of) a request, as handed to a backend. */
struct io_attempt {
    uint8_t op;   /* enum tide_io_op */
    uint8_t link; /* the next attempt of this round depends on this one */
    int fd;
    void *buf;
    uint32_t len;
    uint64_t off;
    int64_t res; /* out: bytes transferred, or -errno; -ECANCELED when a
                    linked predecessor failed or was short */
};

struct io_backend {
    const char *name;
    /* Run `n` attempts (n <= depth) and wait for all of them. Honours
     * `link`: after a failed or short attempt, the rest of its chain is
     * not performed and reports -ECANCELED. Returns 0 or -errno when the
     * round itself could not be run (then no `res` is meaningful). Either
     * way, no completion of this round is left for a later one to see. */
    int (*run)(void *impl, struct io_attempt *a, unsigned n);
    void (*close)(void *impl);
};

/* Tests: how many faults set with tide__io_inject() or
 * tide__io_inject_wait() have fired so far in this process, so that a test
 * knows its fault was really injected. */
unsigned long tide__io_injected(void);

/* Tests: make `times` waits for a completion in io_uring.c in a row, from
 * the `nth` next one on (counted across contexts), fail with -err instead
 * of waiting, as a failing io_uring_enter() would (`times` 0 means 1).
 * 0 for `nth` disables. Each failed wait counts for tide__io_injected(). */
void tide__io_inject_wait(unsigned long nth, int err, unsigned times);

/* io_uring.c, before each wait: 0, or the -errno to take as its result. */
int tide__io_wait_injected(void);

/* io_uring.c: failed waits for a completion in a row after which the ring
 * is taken as broken, its round fails and the ring is set up anew. */
#define IO_URING_WAIT_FAILS_MAX 8

/* io_uring.c: a ring for `depth` entries. Returns 0 or -errno. */
int tide__io_uring_new(unsigned depth, const struct io_backend **ops,
                       void **impl);

/* io_sync.c: pread/pwrite/fdatasync. Never fails. */
void tide__io_sync_new(const struct io_backend **ops, void **impl);

#endif /* TIDE_ENGINE_IO_INT_H */
