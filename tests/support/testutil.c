/* SPDX-License-Identifier: Apache-2.0 */
/* Test support helpers (testutil.h). */
#include "testutil.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *test_tmpdir(void)
{
    static char path[PATH_MAX];
    const char *base = getenv("TMPDIR");

    snprintf(path, sizeof(path), "%s/tide-test-XXXXXX",
             base && *base ? base : "/tmp");
    if (!mkdtemp(path)) {
        perror("mkdtemp");
        abort();
    }
    return path;
}

void test_rmrf(const char *path)
{
    struct stat st;
    DIR *d;
    struct dirent *e;

    if (lstat(path, &st) != 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        unlink(path);
        return;
    }
    d = opendir(path);
    while (d && (e = readdir(d))) {
        char child[PATH_MAX];

        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
        test_rmrf(child);
    }
    if (d)
        closedir(d);
    rmdir(path);
}

void test_log(void *ctx, enum tide_log_level level, const char *msg)
{
    static const char *names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

    (void)ctx;
    if (level <= TIDE_LOG_WARN)
        fprintf(stderr, "[engine] %s %s\n", names[level], msg);
}

long long test_file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

unsigned test_seed(const char *test)
{
    const char *env = getenv("TIDE_TEST_SEED");
    unsigned seed;

    if (env && *env) {
        seed = (unsigned)strtoul(env, NULL, 0);
    } else {
        struct timespec now;

        clock_gettime(CLOCK_REALTIME, &now);
        seed =
            (unsigned)now.tv_sec ^ (unsigned)now.tv_nsec ^ (unsigned)getpid();
    }
    fprintf(stderr, "[seed] %s: TIDE_TEST_SEED=%u reproduces this run\n", test,
            seed);
    return seed;
}
