/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test support: temporary directories, recursive removal, and a log sink
 * that keeps engine messages visible in failing tests' output.
 */
#ifndef TIDE_TESTS_SUPPORT_TESTUTIL_H
#define TIDE_TESTS_SUPPORT_TESTUTIL_H

#include <stddef.h>

#include "tide/engine.h"

/* Create a fresh directory under $TMPDIR (or /tmp); returns a static path
 * valid until the next call. Aborts the test on failure. */
const char *test_tmpdir(void);

/* Remove `path` and everything below it. */
void test_rmrf(const char *path);

/* Engine log callback writing "[engine] LEVEL msg" to stderr. */
void test_log(void *ctx, enum tide_log_level level, const char *msg);

/* Size of a file, or -1. */
long long test_file_size(const char *path);

/* The seed of a randomised test: $TIDE_TEST_SEED when set (decimal or
 * 0x hex), else one drawn from the clock. Prints it to stderr, named by
 * `test`, so that a failing run can be repeated exactly. */
unsigned test_seed(const char *test);

/*
 * I/O tests run once per backend, the way libuv's TEST_FS_IMPL runs each
 * fs test a second time with io_uring. For unit tests only: the macros
 * expand to code that needs criterion.h, io.h, <stdio.h> and <string.h>.
 *
 * TEST_IO(suite, name) { ... } defines suite::name_sync and
 * suite::name_uring, each running the body with `backend` set to
 * TIDE_IO_SYNC or TIDE_IO_URING.
 *
 * TEST_IO_OPEN(backend, depth, &io) opens a context on exactly that
 * backend; where io_uring cannot be set up (old kernel, seccomp sandbox)
 * the io_uring variant is skipped with the reason, not failed.
 *
 * TEST_IO_SUITE(suite, timeout_s) declares the suite of such tests with
 * its fixture: `dir`, a fresh directory for each test, and `io`, NULL
 * until the test opens it with TEST_IO_OPEN; after each test the context
 * is closed and the directory removed.
 */
#define TEST_IO(suite, name)                                                   \
    static void suite##_##name(enum tide_io_backend backend);                  \
    Test(suite, name##_sync)                                                   \
    {                                                                          \
        suite##_##name(TIDE_IO_SYNC);                                          \
    }                                                                          \
    Test(suite, name##_uring)                                                  \
    {                                                                          \
        suite##_##name(TIDE_IO_URING);                                         \
    }                                                                          \
    static void suite##_##name(enum tide_io_backend backend)

#define TEST_IO_OPEN(backend, depth, iop)                                      \
    do {                                                                       \
        enum tide_io_backend be_ = (backend);                                  \
        int rc_ = tide__io_open(be_, (depth), (iop));                          \
                                                                               \
        if (rc_ && be_ == TIDE_IO_URING)                                       \
            cr_skip_test("io_uring unavailable: %s", tide_strerror(rc_));      \
        cr_assert_eq(rc_, 0, "tide__io_open: %s", tide_strerror(rc_));         \
        cr_assert_str_eq(tide__io_backend_name(*(iop)),                        \
                         be_ == TIDE_IO_URING ? "io_uring" : "sync");          \
    } while (0)

#define TEST_IO_SUITE(suite, timeout_s)                                        \
    static char dir[1024];                                                     \
    static struct tide_io *io;                                                 \
    static void suite##_setup(void)                                            \
    {                                                                          \
        snprintf(dir, sizeof(dir), "%s", test_tmpdir());                       \
        io = NULL;                                                             \
    }                                                                          \
    static void suite##_teardown(void)                                         \
    {                                                                          \
        tide__io_close(io);                                                    \
        io = NULL;                                                             \
        test_rmrf(dir);                                                        \
    }                                                                          \
    TestSuite(suite, .init = suite##_setup, .fini = suite##_teardown,          \
              .timeout = (timeout_s))

#endif /* TIDE_TESTS_SUPPORT_TESTUTIL_H */
