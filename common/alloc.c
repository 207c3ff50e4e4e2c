/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tide's allocator: thin wrappers over malloc that count live bytes (a size
 * header before each block) and can fail on demand for tests, plus growable
 * byte buffers and the assertion handler. Declared in tide/common.h.
 */
#include "tide/common.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>

/* Header before every block: the user size, and the offset back to the
 * start of the malloc'd region (non-zero only for aligned blocks). Keeps
 * user pointers 16-byte aligned. */
struct hdr {
    size_t size;
    size_t back;
};

static atomic_size_t live_bytes;
static atomic_ulong fail_countdown;
static void *(*hook_malloc)(size_t) = malloc;
static void (*hook_free)(void *) = free;

void tide_alloc_set_hooks(void *(*malloc_fn)(size_t), void (*free_fn)(void *))
{
    hook_malloc = malloc_fn && free_fn ? malloc_fn : malloc;
    hook_free = malloc_fn && free_fn ? free_fn : free;
}

_Noreturn void tide__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "tide: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

size_t tide_alloc_live_bytes(void)
{
    return atomic_load(&live_bytes);
}

unsigned long tide_alloc_fail_nth(unsigned long nth)
{
    return atomic_exchange(&fail_countdown, nth);
}

/* True when this allocation is the one a test asked to fail. */
static int injected_failure(void)
{
    unsigned long n = atomic_load(&fail_countdown);

    while (n > 0) {
        if (atomic_compare_exchange_weak(&fail_countdown, &n, n - 1))
            return n == 1;
    }
    return 0;
}

void *tide_aligned_alloc(size_t align, size_t size)
{
    uint8_t *raw, *user;
    struct hdr *h;

    if (injected_failure() || size > SIZE_MAX - align - sizeof(*h))
        return NULL;
    if (align < sizeof(*h))
        align = sizeof(*h);
    raw = hook_malloc(size + align + sizeof(*h));
    if (!raw)
        return NULL;
    user = (uint8_t *)(((uintptr_t)raw + sizeof(*h) + align - 1) &
                       ~(uintptr_t)(align - 1));
    h = (struct hdr *)user - 1;
    h->size = size;
    h->back = (size_t)(user - raw);
    atomic_fetch_add(&live_bytes, size);
    return user;
}

void *tide_malloc(size_t size)
{
    return tide_aligned_alloc(sizeof(struct hdr), size);
}

void *tide_calloc(size_t n, size_t size)
{
    void *p;

    if (size && n > SIZE_MAX / size)
        return NULL;
    p = tide_malloc(n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

void tide_free(void *p)
{
    struct hdr *h;

    if (!p)
        return;
    h = (struct hdr *)p - 1;
    atomic_fetch_sub(&live_bytes, h->size);
    hook_free((uint8_t *)p - h->back);
}

void *tide_realloc(void *p, size_t size)
{
    void *q;
    size_t old;

    if (!p)
        return tide_malloc(size);
    old = ((struct hdr *)p - 1)->size;
    q = tide_malloc(size);
    if (!q)
        return NULL;
    memcpy(q, p, old < size ? old : size);
    tide_free(p);
    return q;
}

char *tide_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = tide_malloc(n);

    if (d)
        memcpy(d, s, n);
    return d;
}

char *tide_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = tide_malloc(len + 1);

    if (d) {
        memcpy(d, s, len);
        d[len] = 0;
    }
    return d;
}

int tide__buf_reserve(struct tide_buf *b, size_t extra)
{
    size_t cap = b->cap ? b->cap : 256;
    uint8_t *p;

    if (b->len + extra <= b->cap)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len)
        return -ENOMEM;
    while (cap < b->len + extra)
        cap *= 2;
    p = tide_realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int tide__buf_append(struct tide_buf *b, const void *p, size_t n)
{
    int rc = tide__buf_reserve(b, n);

    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void tide__buf_fini(struct tide_buf *b)
{
    tide_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
