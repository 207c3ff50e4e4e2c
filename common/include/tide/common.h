/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What every room of Tide shares and nothing of its contract: assertions,
 * the counting allocator and growable byte buffers (common/alloc.c). The
 * engine, meta, proto, server and client all allocate through it; libtide
 * exports none of it (the client's hook is tide_client_set_allocator).
 */
#ifndef TIDE_COMMON_H
#define TIDE_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "tide/error.h"

/* ---- Assertions: programmer errors only, never bad input ---------------- */

#define TIDE_ASSERT(cond)                                                      \
    do {                                                                       \
        if (!(cond))                                                           \
            tide__assert_fail(#cond, __FILE__, __LINE__);                      \
    } while (0)

#ifdef NDEBUG
#define TIDE_DEBUG_ASSERT(cond) ((void)0)
#else
#define TIDE_DEBUG_ASSERT(cond) TIDE_ASSERT(cond)
#endif

_Noreturn void tide__assert_fail(const char *expr, const char *file, int line);

/* ---- Allocation (alloc.c) ------------------------------------------------
 * Every heap allocation of Tide goes through these. They count live
 * bytes and let tests make the Nth allocation fail. They never abort:
 * callers return -ENOMEM. */
void *tide_malloc(size_t size);
void *tide_calloc(size_t n, size_t size);
void *tide_realloc(void *p, size_t size);
void tide_free(void *p);
/* `align` is a power of two >= sizeof(void *); free with tide_free. */
void *tide_aligned_alloc(size_t align, size_t size);
char *tide_strdup(const char *s);
/* At most `n` bytes of `s`, NUL-terminated. */
char *tide_strndup(const char *s, size_t n);
/* Bytes currently allocated through the functions above. */
size_t tide_alloc_live_bytes(void);
/* Tests: make the `nth` next allocation (1 = the very next) fail, once.
 * 0 disables. Returns the countdown it replaces: 0 when the failure armed
 * before has happened (or none was armed), else how many allocations were
 * still to go before it. */
unsigned long tide_alloc_fail_nth(unsigned long nth);

/* ---- Growable byte buffer (alloc.c) ------------------------------------ */

struct tide_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* Make room for `extra` more bytes. Returns 0 or -ENOMEM (buf unchanged). */
int tide__buf_reserve(struct tide_buf *b, size_t extra);
/* Append `n` bytes. Returns 0 or -ENOMEM (buf unchanged). */
int tide__buf_append(struct tide_buf *b, const void *p, size_t n);
void tide__buf_fini(struct tide_buf *b);

/* Take the allocator's blocks from `malloc_fn` and give them back to
 * `free_fn` (both, or both NULL for the C library's). Call before anything
 * is allocated: a block must be freed by the hooks that allocated it. */
void tide_alloc_set_hooks(void *(*malloc_fn)(size_t), void (*free_fn)(void *));

#endif /* TIDE_COMMON_H */
