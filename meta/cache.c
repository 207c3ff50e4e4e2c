/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The invalidation hook (meta.h, "Cache invalidation"): how a cache kept
 * outside the sidecar, such as the server's device cache and account
 * table, learns that rows it may hold have changed. The functions that
 * change such rows call tide__meta_changed() once, at their exit.
 */
#include "meta_int.h"

void tide_meta_set_invalidate(tide_meta *m, tide_meta_invalidate_fn fn,
                              void *ctx)
{
    tide__meta_lock(m);
    m->invalidate = fn;
    m->invalidate_ctx = ctx;
    tide__meta_unlock(m);
}

void tide__meta_changed(tide_meta *m, int rc, uint64_t account_id,
                        uint64_t device_id)
{
    if (rc != 0)
        return;
    atomic_fetch_add_explicit(&m->generation, 1, memory_order_release);
    if (m->invalidate)
        m->invalidate(m->invalidate_ctx, account_id, device_id);
}

uint64_t tide_meta_generation(tide_meta *m)
{
    return atomic_load_explicit(&m->generation, memory_order_acquire);
}
