/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the file-reading fuzz harnesses (fuzz_segment.c, fuzz_wal.c) share:
 * little-endian field access for their checksum fix-ups, their temporary
 * directory, and the input written out as the file under test. Static
 * inline: each harness is one object linked with the engine (Makefile).
 */
#ifndef TIDE_TESTS_FUZZ_FUZZ_UTIL_H
#define TIDE_TESTS_FUZZ_FUZZ_UTIL_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline uint64_t fuzz_get64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return v;
}

static inline uint32_t fuzz_get32(const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return v;
}

static inline void fuzz_put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

/* On the first call, a fresh directory /tmp/tide-fuzz-<name>-XXXXXX into
 * dir[cap]; later calls keep it. */
static inline void fuzz_tmpdir(char *dir, size_t cap, const char *name)
{
    char tmpl[256];

    if (dir[0])
        return;
    snprintf(tmpl, sizeof(tmpl), "/tmp/tide-fuzz-%s-XXXXXX", name);
    if (!mkdtemp(tmpl))
        abort();
    snprintf(dir, cap, "%s", tmpl);
}

/* Write data[1..size) to `path` (created or truncated); when data[0] is
 * odd, through fix() first, which makes its checksums match. Aborts when
 * the file cannot be written; -1 when out of memory (skip the input). */
static inline int fuzz_write_input(const char *path, const uint8_t *data,
                                   size_t size,
                                   void (*fix)(uint8_t *f, size_t n))
{
    uint8_t *f = malloc(size);
    int fd;

    if (!f)
        return -1;
    memcpy(f, data + 1, size - 1);
    if (data[0] & 1)
        fix(f, size - 1);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, f, size - 1) != (ssize_t)(size - 1))
        abort();
    close(fd);
    free(f);
    return 0;
}

#endif /* TIDE_TESTS_FUZZ_FUZZ_UTIL_H */
