/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-key write and per-account query limits (ratelimit.h). The state is a
 * token bucket (and, for accounts, a running count) per id, in an
 * open-addressing table that only grows: one entry per key or account
 * that wrote or queried since the start, 32 bytes each. Loop thread only,
 * so the tables take no lock; tided runs one server per process.
 */
#include "ratelimit.h"

#include <errno.h>
#include <string.h>

#include "tide/common.h"

struct limit_ent {
    uint64_t id; /* 0 = free slot */
    double tokens;
    int64_t refill_ns;
    uint32_t running; /* accounts: queries admitted and not ended */
};

struct limit_table {
    struct limit_ent *v;
    size_t cap, n; /* cap is 0 or a power of two */
};

static struct limit_table keys, accounts;

static size_t slot_of(uint64_t id, size_t cap)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdull;
    id ^= id >> 33;
    return (size_t)id & (cap - 1);
}

/* The entry of `id`, or NULL. */
static struct limit_ent *table_find(const struct limit_table *t, uint64_t id)
{
    for (size_t i = t->cap ? slot_of(id, t->cap) : 0; t->cap && t->v[i].id;
         i = (i + 1) & (t->cap - 1))
        if (t->v[i].id == id)
            return &t->v[i];
    return NULL;
}

/* The entry of `id` (not 0), created with a full bucket of `full` tokens
 * at `now_ns`; NULL without memory. */
static struct limit_ent *table_get(struct limit_table *t, uint64_t id,
                                   double full, int64_t now_ns)
{
    struct limit_ent *e = table_find(t, id);
    size_t i;

    if (e)
        return e;
    if (2 * (t->n + 1) > t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        struct limit_ent *v = tide_calloc(cap, sizeof(*v));

        if (!v)
            return NULL;
        for (size_t k = 0; k < t->cap; k++) {
            if (!t->v[k].id)
                continue;
            for (i = slot_of(t->v[k].id, cap); v[i].id; i = (i + 1) & (cap - 1))
                ;
            v[i] = t->v[k];
        }
        tide_free(t->v);
        t->v = v;
        t->cap = cap;
    }
    for (i = slot_of(id, t->cap); t->v[i].id; i = (i + 1) & (t->cap - 1))
        ;
    t->v[i] = (struct limit_ent){.id = id, .tokens = full, .refill_ns = now_ns};
    t->n++;
    return &t->v[i];
}

/* Refill `e` at `rate` per second up to one second's worth. */
static void refill(struct limit_ent *e, double rate, int64_t now_ns)
{
    if (now_ns > e->refill_ns)
        e->tokens += rate * (double)(now_ns - e->refill_ns) / 1e9;
    if (e->tokens > rate)
        e->tokens = rate;
    e->refill_ns = now_ns;
}

/* Milliseconds until `e` holds `need` tokens again at `rate`. */
static uint32_t wait_ms(const struct limit_ent *e, double need, double rate)
{
    double ms = (need - e->tokens) / rate * 1000;

    return ms > 3600e3 ? 3600000u : (uint32_t)ms + 1;
}

int ratelimit_key_write(const struct tide_meta_tier *tier, uint64_t key_id,
                        uint64_t points, int64_t now_ns, uint32_t *retry_ms)
{
    double rate = (double)tier->key_rate_points_s;
    struct limit_ent *e;

    if (!tier->key_rate_points_s || !key_id)
        return 0;
    e = table_get(&keys, key_id, rate, now_ns);
    if (!e)
        return 0; /* without memory the account's limits still hold */
    refill(e, rate, now_ns);
    if (e->tokens <= 0) {
        *retry_ms = wait_ms(e, 0, rate);
        return 1;
    }
    /* A batch may overdraw: the debt delays the next one (as the
     * account's bucket does, write.c). */
    e->tokens -= (double)points;
    return 0;
}

int ratelimit_query_begin(const struct tide_meta_tier *tier, uint64_t account,
                          int64_t now_ns, uint32_t *retry_ms, const char **why)
{
    double rate = (double)tier->query_rate_s;
    struct limit_ent *e = table_get(&accounts, account, rate, now_ns);

    if (!e)
        return -ENOMEM;
    if (tier->queries_max && e->running >= tier->queries_max) {
        /* No telling when a running query ends: a short wait. */
        *retry_ms = 100;
        *why = "queries running at once limit of the plan reached";
        return 1;
    }
    if (tier->query_rate_s) {
        refill(e, rate, now_ns);
        if (e->tokens < 1) {
            *retry_ms = wait_ms(e, 1, rate);
            *why = "queries/s rate limit of the plan reached";
            return 1;
        }
        e->tokens -= 1;
    }
    e->running++;
    return 0;
}

void ratelimit_query_end(uint64_t account)
{
    struct limit_ent *e = table_find(&accounts, account);

    if (e && e->running)
        e->running--;
}
