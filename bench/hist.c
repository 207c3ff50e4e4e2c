/* SPDX-License-Identifier: Apache-2.0 */
/* tide-bench latency histogram (hist.h). */
#include "hist.h"

#include <math.h>

#define SUB_BITS 6 /* log2(TIDE_HIST_SUB) */

void tide__hist_init(struct tide_hist *h)
{
    for (uint32_t i = 0; i < TIDE_HIST_BUCKETS; i++)
        atomic_init(&h->counts[i], 0);
    atomic_init(&h->total, 0);
    atomic_init(&h->min, UINT64_MAX);
    atomic_init(&h->max, 0);
    atomic_init(&h->sum, 0);
}

/* Values below 2 * SUB have a bucket each; above, the exponent picks a group
 * of SUB buckets and the next SUB_BITS bits the bucket inside it. */
uint32_t tide__hist_index(uint64_t v)
{
    uint32_t e, shift;

    if (v < 2 * TIDE_HIST_SUB)
        return (uint32_t)v;
    e = 63u - (uint32_t)__builtin_clzll(v);
    shift = e - SUB_BITS;
    return 2 * TIDE_HIST_SUB + (shift - 1) * TIDE_HIST_SUB +
           (uint32_t)((v >> shift) - TIDE_HIST_SUB);
}

uint64_t tide__hist_bucket_high(uint32_t index)
{
    uint32_t shift, sub;

    if (index < 2 * TIDE_HIST_SUB)
        return index;
    shift = (index - 2 * TIDE_HIST_SUB) / TIDE_HIST_SUB + 1;
    sub = (index - 2 * TIDE_HIST_SUB) % TIDE_HIST_SUB + TIDE_HIST_SUB;
    if (shift == 57 && sub == 2 * TIDE_HIST_SUB - 1)
        return UINT64_MAX;
    return (((uint64_t)sub + 1) << shift) - 1;
}

void tide__hist_record(struct tide_hist *h, uint64_t v)
{
    uint64_t cur;

    atomic_fetch_add_explicit(&h->counts[tide__hist_index(v)], 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&h->total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
    cur = atomic_load_explicit(&h->max, memory_order_relaxed);
    while (v > cur &&
           !atomic_compare_exchange_weak_explicit(
               &h->max, &cur, v, memory_order_relaxed, memory_order_relaxed))
        ;
    cur = atomic_load_explicit(&h->min, memory_order_relaxed);
    while (v < cur &&
           !atomic_compare_exchange_weak_explicit(
               &h->min, &cur, v, memory_order_relaxed, memory_order_relaxed))
        ;
}

static uint64_t ld(const _Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

void tide__hist_add(struct tide_hist *dst, const struct tide_hist *src)
{
    for (uint32_t i = 0; i < TIDE_HIST_BUCKETS; i++)
        atomic_store(&dst->counts[i],
                     ld(&dst->counts[i]) + ld(&src->counts[i]));
    atomic_store(&dst->total, ld(&dst->total) + ld(&src->total));
    atomic_store(&dst->sum, ld(&dst->sum) + ld(&src->sum));
    if (ld(&src->min) < ld(&dst->min))
        atomic_store(&dst->min, ld(&src->min));
    if (ld(&src->max) > ld(&dst->max))
        atomic_store(&dst->max, ld(&src->max));
}

void tide__hist_sub(struct tide_hist *dst, const struct tide_hist *a,
                    const struct tide_hist *b)
{
    uint64_t lo = UINT64_MAX, hi = 0;

    for (uint32_t i = 0; i < TIDE_HIST_BUCKETS; i++) {
        uint64_t n = ld(&a->counts[i]) - ld(&b->counts[i]);

        atomic_store(&dst->counts[i], n);
        if (n && lo == UINT64_MAX)
            lo = i == 0 ? 0 : tide__hist_bucket_high(i - 1) + 1;
        if (n)
            hi = tide__hist_bucket_high(i);
    }
    atomic_store(&dst->total, ld(&a->total) - ld(&b->total));
    atomic_store(&dst->sum, ld(&a->sum) - ld(&b->sum));
    atomic_store(&dst->min, lo);
    atomic_store(&dst->max, hi < ld(&a->max) ? hi : ld(&a->max));
}

uint64_t tide__hist_percentile(const struct tide_hist *h, double p)
{
    uint64_t total = ld(&h->total), want, seen = 0, max = ld(&h->max);

    if (!total)
        return 0;
    want = (uint64_t)ceil(p / 100.0 * (double)total);
    if (want < 1)
        want = 1;
    if (want > total)
        want = total;
    for (uint32_t i = 0; i < TIDE_HIST_BUCKETS; i++) {
        seen += ld(&h->counts[i]);
        if (seen >= want) {
            uint64_t v = tide__hist_bucket_high(i);

            return v < max ? v : max;
        }
    }
    return max;
}

uint64_t tide__hist_count(const struct tide_hist *h)
{
    return ld(&h->total);
}

uint64_t tide__hist_max(const struct tide_hist *h)
{
    return ld(&h->max);
}

double tide__hist_mean(const struct tide_hist *h)
{
    uint64_t n = ld(&h->total);

    return n ? (double)ld(&h->sum) / (double)n : 0;
}
