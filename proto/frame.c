/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Frame codec: u32 little-endian length + one tide.v1.Envelope. The layout
 * and limits are specified in docs/protocol.md, "Framing".
 *
 *   OFFSET  SIZE  DESCRIPTION
 *   0       4     payload length N, unsigned little-endian, N <= max_bytes
 *   4       N     protobuf encoding of tide.v1.Envelope
 */
#include "frame.h"
#include "wire.h"
#include "tide/common.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* protobuf-c's allocator over Tide's (tide/common.h), so decoded messages
 * are counted and fail on demand like every other allocation. A decode that
 * fails for memory, not bad bytes, is told apart by `pb_oom`. */
static _Thread_local int pb_oom;

static void *pb_alloc(void *ctx, size_t size)
{
    void *p = tide_malloc(size);

    (void)ctx;
    if (!p)
        pb_oom = 1;
    return p;
}

static void pb_free(void *ctx, void *p)
{
    (void)ctx;
    tide_free(p);
}

ProtobufCAllocator tide_frame_allocator = {pb_alloc, pb_free, NULL};

#define ARENA_BLOCK_MIN (64u << 10)
#define ARENA_ALIGN 16u

struct arena_block {
    struct arena_block *next;
    size_t cap, used;
    _Alignas(ARENA_ALIGN) uint8_t data[];
};

struct tide_frame_arena {
    ProtobufCAllocator pb;
    atomic_uint refs;
    struct arena_block *blocks; /* the first is the one carved from */
    size_t next_cap;
};

/* Blocks of released arenas kept for the next decodes: a fresh block of a
 * megabyte is page faults and zeroing on every decode, and its munmap. */
#define ARENA_CACHE_BLOCKS 4
#define ARENA_CACHE_BLOCK_MAX (8u << 20)

static pthread_mutex_t arena_cache_mu = PTHREAD_MUTEX_INITIALIZER;
static struct arena_block *arena_cache[ARENA_CACHE_BLOCKS];

/* A cached block of at least `cap` bytes, or NULL. */
static struct arena_block *arena_cache_take(size_t cap)
{
    struct arena_block *b = NULL;

    pthread_mutex_lock(&arena_cache_mu);
    for (int i = 0; i < ARENA_CACHE_BLOCKS && !b; i++)
        if (arena_cache[i] && arena_cache[i]->cap >= cap) {
            b = arena_cache[i];
            arena_cache[i] = NULL;
        }
    pthread_mutex_unlock(&arena_cache_mu);
    return b;
}

/* Keep `b` in the cache: in an empty place, else in place of the smallest
 * block when that is smaller; what does not stay is freed. */
static void arena_cache_put(struct arena_block *b)
{
    if (b->cap <= ARENA_CACHE_BLOCK_MAX) {
        int at = 0;

        pthread_mutex_lock(&arena_cache_mu);
        for (int i = 0; i < ARENA_CACHE_BLOCKS && arena_cache[at]; i++)
            if (!arena_cache[i] || arena_cache[i]->cap < arena_cache[at]->cap)
                at = i;
        if (!arena_cache[at] || arena_cache[at]->cap < b->cap) {
            struct arena_block *out = arena_cache[at];

            arena_cache[at] = b;
            b = out;
        }
        pthread_mutex_unlock(&arena_cache_mu);
    }
    tide_free(b);
}

static struct arena_block *arena_block_new(size_t cap)
{
    struct arena_block *b = arena_cache_take(cap);

    if (b) {
        b->next = NULL;
        b->used = 0;
        return b;
    }
    b = tide_malloc(sizeof(*b) + cap);

    if (b) {
        b->next = NULL;
        b->cap = cap;
        b->used = 0;
    }
    return b;
}

static void *arena_alloc(void *ctx, size_t size)
{
    struct tide_frame_arena *a = ctx;
    struct arena_block *b = a->blocks;
    size_t n = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);

    if (n < size)
        return NULL;
    if (n > b->cap - b->used) {
        /* Blocks double, so a decode takes O(log n) of them. */
        size_t cap = n > a->next_cap ? n : a->next_cap;

        b = arena_block_new(cap);
        if (!b) {
            pb_oom = 1;
            return NULL;
        }
        b->next = a->blocks;
        a->blocks = b;
        a->next_cap = cap <= SIZE_MAX / 2 ? 2 * cap : cap;
    }
    b->used += n;
    return b->data + b->used - n;
}

static void arena_free(void *ctx, void *p)
{
    (void)ctx;
    (void)p; /* the blocks go with the arena */
}

struct tide_frame_arena *tide_frame_arena_new(size_t first_bytes)
{
    struct tide_frame_arena *a = tide_malloc(sizeof(*a));
    size_t cap = first_bytes > ARENA_BLOCK_MIN ? first_bytes : ARENA_BLOCK_MIN;

    if (!a)
        return NULL;
    a->blocks = arena_block_new(cap);
    if (!a->blocks) {
        tide_free(a);
        return NULL;
    }
    a->pb = (ProtobufCAllocator){arena_alloc, arena_free, a};
    atomic_init(&a->refs, 1);
    a->next_cap = 2 * cap;
    return a;
}

ProtobufCAllocator *tide_frame_arena_allocator(struct tide_frame_arena *a)
{
    return &a->pb;
}

struct tide_frame_arena *tide_frame_arena_ref(struct tide_frame_arena *a)
{
    atomic_fetch_add(&a->refs, 1);
    return a;
}

void tide_frame_arena_release(struct tide_frame_arena *a)
{
    struct arena_block *b;

    if (!a || atomic_fetch_sub(&a->refs, 1) != 1)
        return;
    b = a->blocks;
    while (b) {
        struct arena_block *next = b->next;

        arena_cache_put(b);
        b = next;
    }
    tide_free(a);
}

static void store_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

size_t tide_frame_size(const Tide__V1__Envelope *env)
{
    return TIDE_FRAME_HEADER_BYTES +
           protobuf_c_message_get_packed_size(&env->base);
}

int64_t tide_frame_encode(const Tide__V1__Envelope *env, uint8_t *out,
                          size_t cap)
{
    size_t payload = protobuf_c_message_get_packed_size(&env->base);

    if (payload > TIDE_FRAME_MAX_BYTES_LIMIT ||
        cap < TIDE_FRAME_HEADER_BYTES + payload)
        return TIDE_ENOSPACE;
    store_le32(out, (uint32_t)payload);
    protobuf_c_message_pack(&env->base, out + TIDE_FRAME_HEADER_BYTES);
    return (int64_t)(TIDE_FRAME_HEADER_BYTES + payload);
}

/* The allocator of a bounded decode: counts what the decode asks for and
 * refuses the allocation that would pass the bound, which fails the
 * unpack (protobuf-c then frees what it had). Frees go straight through,
 * so a message decoded with it is freed with the inner allocator. */
struct budget {
    ProtobufCAllocator *inner;
    size_t left;
    int over;
};

static void *budget_alloc(void *ctx, size_t size)
{
    struct budget *b = ctx;
    size_t cost = size + TIDE_FRAME_ALLOC_OVERHEAD;

    if (cost < size || cost > b->left) {
        b->over = 1;
        return NULL;
    }
    b->left -= cost;
    return b->inner->alloc(b->inner->allocator_data, size);
}

static void budget_free(void *ctx, void *p)
{
    struct budget *b = ctx;

    b->inner->free(b->inner->allocator_data, p);
}

int tide_frame_parse(const uint8_t *buf, size_t len, uint32_t max_bytes,
                     ProtobufCAllocator *alloc, Tide__V1__Envelope **env,
                     size_t *consumed)
{
    int over;

    return tide_frame_parse_bounded(buf, len, max_bytes, alloc, 0, env,
                                    consumed, &over);
}

int tide_frame_parse_bounded(const uint8_t *buf, size_t len, uint32_t max_bytes,
                             ProtobufCAllocator *alloc, size_t mem_max,
                             Tide__V1__Envelope **env, size_t *consumed,
                             int *mem_over)
{
    struct budget b = {NULL, mem_max, 0};
    ProtobufCAllocator bounded = {budget_alloc, budget_free, &b};
    uint32_t payload;

    *mem_over = 0;

    if (max_bytes == 0 || max_bytes > TIDE_FRAME_MAX_BYTES_LIMIT)
        max_bytes = TIDE_FRAME_MAX_BYTES_DEFAULT;
    if (len < TIDE_FRAME_HEADER_BYTES)
        return TIDE_FRAME_NEED_MORE;
    payload = tide__wire_le32(buf);
    if (payload > max_bytes)
        return TIDE_ETOOLARGE;
    if (len - TIDE_FRAME_HEADER_BYTES < payload)
        return TIDE_FRAME_NEED_MORE;
    if (!alloc)
        alloc = &tide_frame_allocator;
    b.inner = alloc;
    pb_oom = 0;
    *env = tide__v1__envelope__unpack(mem_max ? &bounded : alloc, payload,
                                      buf + TIDE_FRAME_HEADER_BYTES);
    if (!*env && b.over) {
        *mem_over = 1;
        return TIDE_ETOOLARGE;
    }
    if (!*env)
        return pb_oom ? -ENOMEM : TIDE_EMALFORMED;
    *consumed = TIDE_FRAME_HEADER_BYTES + payload;
    return 0;
}

int tide_frame_scan(const uint8_t *payload, size_t n, struct tide_frame_head *h)
{
    struct tide__wire_field f;
    size_t at = 0;
    int rc;

    h->request_id = 0;
    h->body = 0;
    h->bytes = TIDE_FRAME_HEADER_BYTES + n;
    while ((rc = tide__wire_next(payload, n, &at, TIDE__WIRE_ANY, &f)) == 0) {
        if (f.type == 0 && f.number == 1)
            h->request_id = f.varint;
        /* A body is a message: a length-delimited field the Envelope has. */
        if (f.type == 2 && f.number != 1 &&
            protobuf_c_message_descriptor_get_field(
                &tide__v1__envelope__descriptor, f.number))
            h->body = f.number;
    }
    return rc < 0 ? TIDE_EMALFORMED : 0;
}

int tide_frame_batch_groups(const uint8_t *payload, size_t n, uint64_t *groups)
{
    const uint32_t groups_field =
        protobuf_c_message_descriptor_get_field_by_name(
            &tide__v1__write_batch__descriptor, "groups")
            ->id;
    struct tide__wire_field f, g;
    size_t at = 0;
    int rc;

    *groups = 0;
    /* Every WriteBatch body counts: protobuf merges repeated ones. */
    while ((rc = tide__wire_next(payload, n, &at, TIDE__WIRE_ANY, &f)) == 0) {
        size_t in = 0;
        int rc2;

        if (f.type != 2 || f.number != TIDE__V1__ENVELOPE__BODY_WRITE_BATCH)
            continue;
        while ((rc2 = tide__wire_next(f.data, f.len, &in, TIDE__WIRE_ANY,
                                      &g)) == 0)
            *groups += g.type == 2 && g.number == groups_field;
        if (rc2 < 0)
            return TIDE_EMALFORMED;
    }
    return rc < 0 ? TIDE_EMALFORMED : 0;
}

void tide_frame_free(Tide__V1__Envelope *env, ProtobufCAllocator *alloc)
{
    if (env)
        tide__v1__envelope__free_unpacked(env, alloc ? alloc
                                                     : &tide_frame_allocator);
}

/* The first string field of message `d` encoded in p[0..n) whose bytes
 * hold a NUL, or NULL; walks sub-messages up to `depth` levels down. A
 * malformed message is left to the decoder. */
static const char *nul_field(const ProtobufCMessageDescriptor *d,
                             const uint8_t *p, size_t n, int depth)
{
    struct tide__wire_field w;
    size_t i = 0;

    while (tide__wire_next(p, n, &i, TIDE__WIRE_ANY, &w) == 0) {
        const ProtobufCFieldDescriptor *f;

        if (w.type != 2)
            continue;
        f = protobuf_c_message_descriptor_get_field(d, w.number);
        if (f && f->type == PROTOBUF_C_TYPE_STRING && memchr(w.data, 0, w.len))
            return f->name;
        if (f && f->type == PROTOBUF_C_TYPE_MESSAGE && depth > 0) {
            const char *name =
                nul_field(f->descriptor, w.data, w.len, depth - 1);

            if (name)
                return name;
        }
    }
    return NULL;
}

const char *tide_frame_nul_field(const uint8_t *payload, size_t len)
{
    return nul_field(&tide__v1__envelope__descriptor, payload, len, 32);
}

void tide_frame_decoder_init(struct tide_frame_decoder *d, uint32_t max_bytes,
                             ProtobufCAllocator *alloc)
{
    memset(d, 0, sizeof(*d));
    if (max_bytes == 0 || max_bytes > TIDE_FRAME_MAX_BYTES_LIMIT)
        max_bytes = TIDE_FRAME_MAX_BYTES_DEFAULT;
    d->max_bytes = max_bytes;
    d->alloc = alloc;
}

void tide_frame_decoder_set_max(struct tide_frame_decoder *d,
                                uint32_t max_bytes)
{
    if (max_bytes == 0 || max_bytes > TIDE_FRAME_MAX_BYTES_LIMIT)
        max_bytes = TIDE_FRAME_MAX_BYTES_DEFAULT;
    d->max_bytes = max_bytes;
}

void tide_frame_decoder_set_decode_ratio(struct tide_frame_decoder *d,
                                         uint32_t ratio)
{
    d->decode_ratio = ratio;
}

/* The decoder's buffer comes from the caller's allocator when one is given,
 * so that the server's allocation accounting sees it. */
static void *buf_alloc(struct tide_frame_decoder *d, size_t n)
{
    return d->alloc ? d->alloc->alloc(d->alloc->allocator_data, n) : malloc(n);
}

static void buf_free(struct tide_frame_decoder *d, void *p)
{
    if (!p)
        return;
    if (d->alloc)
        d->alloc->free(d->alloc->allocator_data, p);
    else
        free(p);
}

void tide_frame_decoder_fini(struct tide_frame_decoder *d)
{
    buf_free(d, d->buf);
    memset(d, 0, sizeof(*d));
}

size_t tide_frame_decoder_pending(const struct tide_frame_decoder *d)
{
    return d->len - d->head;
}

/* Fail when the buffered bytes begin with a header that announces an
 * oversized frame: checked on every feed so that no memory is ever reserved
 * for such a frame. */
static int check_header(struct tide_frame_decoder *d)
{
    if (d->len - d->head >= TIDE_FRAME_HEADER_BYTES &&
        tide__wire_le32(d->buf + d->head) > d->max_bytes)
        d->err = TIDE_ETOOLARGE;
    return d->err;
}

/* The end of the frame at the front of the buffer (head 0) followed by
 * `data`: header plus payload bytes; 0 while its header is incomplete or
 * announces an oversized frame (which check_header refuses). */
static size_t frame_end(const struct tide_frame_decoder *d, const void *data,
                        size_t n)
{
    uint8_t hdr[TIDE_FRAME_HEADER_BYTES];
    size_t live = d->len;
    uint32_t payload;

    if (live + n < TIDE_FRAME_HEADER_BYTES)
        return 0;
    if (live >= TIDE_FRAME_HEADER_BYTES) {
        payload = tide__wire_le32(d->buf);
    } else {
        if (live)
            memcpy(hdr, d->buf, live);
        memcpy(hdr + live, data, TIDE_FRAME_HEADER_BYTES - live);
        payload = tide__wire_le32(hdr);
    }
    return payload > d->max_bytes ? 0 : TIDE_FRAME_HEADER_BYTES + payload;
}

int tide_frame_decoder_feed(struct tide_frame_decoder *d, const void *data,
                            size_t n)
{
    size_t live;

    if (d->err)
        return d->err;
    if (n == 0)
        return 0;
    live = d->len - d->head;
    if (d->head > 0) {
        memmove(d->buf, d->buf + d->head, live);
        d->head = 0;
        d->len = live;
    }
    /* A header split across feeds: complete it first, check it, then take
     * the rest, so that an oversized length never reaches the allocator. */
    if (live < TIDE_FRAME_HEADER_BYTES && live + n >= TIDE_FRAME_HEADER_BYTES) {
        uint8_t hdr[TIDE_FRAME_HEADER_BYTES];
        size_t need = TIDE_FRAME_HEADER_BYTES - live;

        if (live)
            memcpy(hdr, d->buf, live);
        memcpy(hdr + live, data, need);
        if (tide__wire_le32(hdr) > d->max_bytes) {
            d->err = TIDE_ETOOLARGE;
            return d->err;
        }
    }
    if (d->len + n > d->cap) {
        size_t cap = d->cap, end = frame_end(d, data, n);

        if (cap == 0)
            cap = d->max_bytes + TIDE_FRAME_HEADER_BYTES < 4096
                      ? d->max_bytes + TIDE_FRAME_HEADER_BYTES
                      : 4096;
        uint8_t *buf;

        while (cap < d->len + n)
            cap *= 2;
        /* A large frame gets its whole buffer at once, so that it is never
         * copied while it arrives (a 16 MiB frame read 4 KiB at a time
         * would be copied at each doubling, milliseconds on the loop); the
         * pages are touched only as its bytes come. */
        if (cap < end)
            cap = end;
        buf = buf_alloc(d, cap);
        if (!buf) {
            d->err = -ENOMEM;
            return d->err;
        }
        if (d->len)
            memcpy(buf, d->buf, d->len);
        buf_free(d, d->buf);
        d->buf = buf;
        d->cap = cap;
    }
    memcpy(d->buf + d->len, data, n);
    d->len += n;
    return 0;
}

int tide_frame_decoder_peek(struct tide_frame_decoder *d,
                            struct tide_frame_head *h)
{
    size_t live = d->len - d->head;
    uint32_t payload;

    if (d->err)
        return d->err;
    if (check_header(d))
        return d->err;
    if (live < TIDE_FRAME_HEADER_BYTES)
        return TIDE_FRAME_NEED_MORE;
    payload = tide__wire_le32(d->buf + d->head);
    if (live - TIDE_FRAME_HEADER_BYTES < payload)
        return TIDE_FRAME_NEED_MORE;
    d->err =
        tide_frame_scan(d->buf + d->head + TIDE_FRAME_HEADER_BYTES, payload, h);
    return d->err;
}

void tide_frame_decoder_skip(struct tide_frame_decoder *d)
{
    size_t live = d->len - d->head;
    uint32_t payload;

    if (d->err || live < TIDE_FRAME_HEADER_BYTES)
        return;
    payload = tide__wire_le32(d->buf + d->head);
    if (live - TIDE_FRAME_HEADER_BYTES < payload)
        return;
    d->head += TIDE_FRAME_HEADER_BYTES + payload;
    if (d->head == d->len)
        d->head = d->len = 0;
}

uint8_t *tide_frame_decoder_take(struct tide_frame_decoder *d, size_t *off,
                                 size_t *len)
{
    size_t live = d->len - d->head, rest;
    uint32_t payload;
    uint8_t *buf, *left = NULL;

    if (d->err || live < TIDE_FRAME_HEADER_BYTES)
        return NULL;
    payload = tide__wire_le32(d->buf + d->head);
    if (live - TIDE_FRAME_HEADER_BYTES < payload)
        return NULL;
    rest = live - TIDE_FRAME_HEADER_BYTES - payload;
    if (rest) {
        left = buf_alloc(d, rest);
        if (!left)
            return NULL;
        memcpy(left, d->buf + d->len - rest, rest);
    }
    buf = d->buf;
    *off = d->head;
    *len = TIDE_FRAME_HEADER_BYTES + payload;
    d->buf = left;
    d->cap = d->len = rest;
    d->head = 0;
    return buf;
}

int tide_frame_decoder_next(struct tide_frame_decoder *d,
                            Tide__V1__Envelope **env)
{
    size_t consumed = 0, live = d->len - d->head, mem_max = 0;
    int rc;

    if (d->err)
        return d->err;
    if (check_header(d))
        return d->err;
    /* Invariant 4: the bound follows the payload the header announces. */
    if (d->decode_ratio && live >= TIDE_FRAME_HEADER_BYTES)
        mem_max = (size_t)d->decode_ratio * tide__wire_le32(d->buf + d->head) +
                  TIDE_FRAME_DECODE_SLACK;
    rc =
        tide_frame_parse_bounded(d->buf + d->head, live, d->max_bytes, d->alloc,
                                 mem_max, env, &consumed, &d->mem_over);
    if (rc == TIDE_FRAME_NEED_MORE)
        return rc;
    if (rc) {
        d->err = rc;
        return rc;
    }
    d->nul_field =
        tide_frame_nul_field(d->buf + d->head + TIDE_FRAME_HEADER_BYTES,
                             consumed - TIDE_FRAME_HEADER_BYTES);
    d->head += consumed;
    if (d->head == d->len)
        d->head = d->len = 0;
    return 0;
}
