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

#endif /* TIDE_TESTS_SUPPORT_TESTUTIL_H */
