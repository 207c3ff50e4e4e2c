/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The in-memory head (head.h): an open-addressing table of series, each
 * with growable timestamp and value arrays, and an append-only arena for
 * string values. Only the shard's writer thread mutates a head.
 */
#include "head.h"

#include <errno.h>
#include <string.h>

#define HEAD_SLOTS_MIN 256u
#define ARENA_BLOCK_BYTES (1u << 20)

static uint32_t slot_of(uint64_t id, uint32_t n_slots)
{
    /* Series ids are dense; multiply to spread neighbours over slots. */
    return (uint32_t)((id * 0x9e3779b97f4a7c15ull) >> 32) & (n_slots - 1);
}

void tide__head_init(struct head *h)
{
    memset(h, 0, sizeof(*h));
    h->min_ts = INT64_MAX;
    h->max_ts = INT64_MIN;
}

static void series_free(struct hseries *s)
{
    tide_free(s->ts);
    tide_free(s->val);
    tide_free(s->str);
    tide_free(s);
}

void tide__head_fini(struct head *h)
{
    struct arena_block *b = h->arena;

    for (uint32_t i = 0; i < h->n_slots; i++)
        if (h->slots[i].s)
            series_free(h->slots[i].s);
    tide_free(h->slots);
    while (b) {
        struct arena_block *next = b->next;

        tide_free(b);
        b = next;
    }
    tide__head_init(h);
}

struct hseries *tide__head_find(const struct head *h, uint64_t id)
{
    if (h->n_slots == 0)
        return NULL;
    for (uint32_t i = slot_of(id, h->n_slots);;
         i = (i + 1) & (h->n_slots - 1)) {
        const struct head_slot *e = &h->slots[i];

        if (!e->s || e->id == id)
            return e->s;
    }
}

void tide__head_prefetch(const struct head *h, uint64_t id, int stage)
{
    const struct hseries *s;

    if (h->n_slots == 0)
        return;
    if (stage == 0) {
        __builtin_prefetch(&h->slots[slot_of(id, h->n_slots)]);
        return;
    }
    s = tide__head_find(h, id);
    if (!s)
        return;
    if (stage == 1) {
        __builtin_prefetch(s);
        return;
    }
    if (s->n < s->cap) {
        __builtin_prefetch(s->ts + s->n, 1);
        if (s->val)
            __builtin_prefetch(s->val + s->n, 1);
    }
}

/* Double the table (or create it); keeps the load factor under 1/2. */
static int grow_slots(struct head *h)
{
    uint32_t n = h->n_slots ? h->n_slots * 2 : HEAD_SLOTS_MIN;
    struct head_slot *slots = tide_calloc(n, sizeof(*slots));

    if (!slots)
        return -ENOMEM;
    for (uint32_t i = 0; i < h->n_slots; i++) {
        const struct head_slot *e = &h->slots[i];
        uint32_t j;

        if (!e->s)
            continue;
        for (j = slot_of(e->id, n); slots[j].s; j = (j + 1) & (n - 1))
            ;
        slots[j] = *e;
    }
    h->bytes += (uint64_t)(n - h->n_slots) * sizeof(*slots);
    tide_free(h->slots);
    h->slots = slots;
    h->n_slots = n;
    return 0;
}

static int insert_series(struct head *h, uint64_t id, uint64_t account_id,
                         uint16_t tier, uint8_t type, struct hseries **out)
{
    struct hseries *s;
    uint32_t i;
    int rc;

    if ((h->n_series + 1) * 2 > h->n_slots) {
        rc = grow_slots(h);
        if (rc)
            return rc;
    }
    s = tide_calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->id = id;
    s->account_id = account_id;
    s->tier = tier;
    s->type = type;
    s->sorted = 1;
    for (i = slot_of(id, h->n_slots); h->slots[i].s;
         i = (i + 1) & (h->n_slots - 1))
        ;
    h->slots[i].id = id;
    h->slots[i].s = s;
    h->n_series++;
    h->bytes += sizeof(*s);
    *out = s;
    return 0;
}

static int reserve_points(struct head *h, struct hseries *s, uint32_t extra)
{
    /* A wide fleet's head holds a million series of a few points each:
     * starting at 64 points (1 KiB a series) filled the head's budget
     * with empty capacity and flushed it every few points. */
    uint32_t cap = s->cap ? s->cap : 8;
    int64_t *ts;
    size_t vsize =
        s->type == TIDE_TYPE_STR ? sizeof(struct tide_str) : sizeof(uint64_t);
    void *val;

    if (s->n + extra <= s->cap)
        return 0;
    if (extra > UINT32_MAX / 2 - s->n)
        return -ENOMEM;
    while (cap < s->n + extra)
        cap *= 2;
    ts = tide_realloc(s->ts, (size_t)cap * sizeof(*ts));
    if (!ts)
        return -ENOMEM;
    s->ts = ts;
    if (s->type == TIDE_TYPE_STR) {
        val = tide_realloc(s->str, (size_t)cap * vsize);
        if (!val)
            return -ENOMEM;
        s->str = val;
    } else {
        val = tide_realloc(s->val, (size_t)cap * vsize);
        if (!val)
            return -ENOMEM;
        s->val = val;
    }
    h->bytes += (uint64_t)(cap - s->cap) * (sizeof(*ts) + vsize);
    s->cap = cap;
    return 0;
}

/* Copy a string into the arena; returns NULL on -ENOMEM. */
static const char *arena_copy(struct head *h, const char *p, uint32_t len)
{
    struct arena_block *b = h->arena;
    char *dst;

    if (!b || b->cap - b->used < len) {
        size_t cap = len > ARENA_BLOCK_BYTES ? len : ARENA_BLOCK_BYTES;

        b = tide_malloc(sizeof(*b) + cap);
        if (!b)
            return NULL;
        b->next = h->arena;
        b->used = 0;
        b->cap = cap;
        h->arena = b;
        h->bytes += sizeof(*b) + cap;
    }
    dst = b->data + b->used;
    if (len)
        memcpy(dst, p, len);
    b->used += len;
    return dst;
}

int tide__head_append(struct head *h, uint64_t id, uint64_t account_id,
                      uint16_t tier, uint8_t type, uint32_t n,
                      const int64_t *ts, const uint64_t *vals,
                      const struct tide_str *strs)
{
    struct hseries *s = tide__head_find(h, id);
    int64_t prev;
    int rc, sorted;

    if (n == 0)
        return 0;
    if (s && s->type != type)
        return TIDE_ETYPE;
    if (!s) {
        rc = insert_series(h, id, account_id, tier, type, &s);
        if (rc)
            return rc;
    }
    rc = reserve_points(h, s, n);
    if (rc)
        return rc;
    TIDE_ASSERT(s->n + n <= s->cap); /* invariant 1 */
    if (type == TIDE_TYPE_STR) {
        for (uint32_t i = 0; i < n; i++) {
            const char *p = arena_copy(h, strs[i].ptr, strs[i].len);

            if (!p)
                return -ENOMEM; /* points before i stay unpublished */
            s->str[s->n + i].ptr = p;
            s->str[s->n + i].len = strs[i].len;
        }
    } else {
        memcpy(s->val + s->n, vals, (size_t)n * sizeof(*vals));
    }
    memcpy(s->ts + s->n, ts, (size_t)n * sizeof(*ts));
    sorted = s->sorted;
    prev = s->n ? s->ts[s->n - 1] : 0;
    for (uint32_t i = 0; i < n; i++) {
        if (i > 0 || s->n > 0)
            sorted &= ts[i] > prev;
        prev = ts[i];
        if (ts[i] < h->min_ts)
            h->min_ts = ts[i];
        if (ts[i] > h->max_ts)
            h->max_ts = ts[i];
    }
    s->sorted = (uint8_t)sorted;
    /* The latest tier and account win: a plan change applies from now. */
    s->tier = tier;
    s->account_id = account_id;
    s->n += n;
    h->points += n;
    return 0;
}

/* Stable merge sort of idx[] by ts[idx]: equal timestamps keep arrival
 * order, so the last of a run of duplicates is the latest write. */
static void merge_sort(const int64_t *ts, uint32_t *idx, uint32_t *tmp,
                       uint32_t n)
{
    for (uint32_t width = 1; width < n; width *= 2) {
        for (uint32_t lo = 0; lo < n; lo += 2 * width) {
            uint32_t mid = lo + width < n ? lo + width : n;
            uint32_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            uint32_t a = lo, b = mid, k = lo;

            while (a < mid && b < hi)
                tmp[k++] = ts[idx[b]] < ts[idx[a]] ? idx[b++] : idx[a++];
            while (a < mid)
                tmp[k++] = idx[a++];
            while (b < hi)
                tmp[k++] = idx[b++];
        }
        memcpy(idx, tmp, (size_t)n * sizeof(*idx));
    }
}

int tide__ts_order(const int64_t *ts, uint32_t n, uint32_t *idx,
                   uint32_t *n_out)
{
    uint32_t *tmp, out = 0;
    int sorted = 1;

    for (uint32_t i = 0; i < n; i++) {
        idx[i] = i;
        if (i && ts[i] <= ts[i - 1])
            sorted = 0;
    }
    if (sorted) {
        *n_out = n;
        return 0;
    }
    tmp = tide_malloc((size_t)n * sizeof(*tmp));
    if (!tmp)
        return -ENOMEM;
    merge_sort(ts, idx, tmp, n);
    tide_free(tmp);
    for (uint32_t i = 0; i < n; i++) {
        /* Keep the last of each run of equal timestamps. */
        if (i + 1 < n && ts[idx[i + 1]] == ts[idx[i]])
            continue;
        idx[out++] = idx[i];
    }
    *n_out = out;
    return 0;
}

int tide__hseries_normalize(struct hseries *s)
{
    uint32_t *idx, n_out, i;
    int64_t *ts = NULL;
    void *val = NULL;
    int rc;

    if (s->sorted)
        return 0;
    idx = tide_malloc((size_t)s->n * sizeof(*idx));
    if (!idx)
        return -ENOMEM;
    rc = tide__ts_order(s->ts, s->n, idx, &n_out);
    if (rc)
        goto out;
    rc = -ENOMEM;
    ts = tide_malloc((size_t)s->cap * sizeof(*ts));
    val = tide_malloc((size_t)s->cap * (s->type == TIDE_TYPE_STR
                                            ? sizeof(struct tide_str)
                                            : sizeof(uint64_t)));
    if (!ts || !val)
        goto out;
    for (i = 0; i < n_out; i++) {
        ts[i] = s->ts[idx[i]];
        if (s->type == TIDE_TYPE_STR)
            ((struct tide_str *)val)[i] = s->str[idx[i]];
        else
            ((uint64_t *)val)[i] = s->val[idx[i]];
    }
    tide_free(s->ts);
    s->ts = ts;
    ts = NULL;
    if (s->type == TIDE_TYPE_STR) {
        tide_free(s->str);
        s->str = val;
    } else {
        tide_free(s->val);
        s->val = val;
    }
    val = NULL;
    s->n = n_out;
    s->sorted = 1;
    for (i = 1; i < n_out; i++) /* invariant 2 */
        TIDE_DEBUG_ASSERT(s->ts[i - 1] < s->ts[i]);
    rc = 0;
out:
    tide_free(ts);
    tide_free(val);
    tide_free(idx);
    return rc;
}
