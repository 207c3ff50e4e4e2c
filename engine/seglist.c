/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The refcounted segment list (seglist.h). The db holds `seg_cur`, the
 * current list, under `seg_mu`; that mutex only ever guards a pointer copy
 * and a reference count, so neither readers nor the flusher wait on I/O
 * for it.
 */
#include "db.h"

#include <errno.h>
#include <string.h>

int tide__seglist_new(struct seglist **out)
{
    struct seglist *l = tide_calloc(1, sizeof(*l));

    if (!l)
        return -ENOMEM;
    atomic_init(&l->refs, 1);
    *out = l;
    return 0;
}

static int dropped(struct seg *const *drop, uint32_t n_drop,
                   const struct seg *seg)
{
    for (uint32_t i = 0; i < n_drop; i++)
        if (drop[i] == seg)
            return 1;
    return 0;
}

int tide__seglist_edit(struct tide_db *db, const struct seglist *base,
                       struct seg *const *drop, uint32_t n_drop,
                       struct seg **add, uint32_t n_add, const struct seg *at,
                       struct seglist **out)
{
    struct segref **fresh = NULL;
    struct seglist *l = NULL;
    uint32_t cap = base->n + n_add, n = 0;
    int rc = -ENOMEM;

    l = tide_calloc(1, sizeof(*l));
    fresh = tide_calloc((size_t)n_add + 1, sizeof(*fresh));
    if (!l || !fresh)
        goto fail;
    l->segs = tide_malloc(((size_t)cap + 1) * sizeof(*l->segs));
    l->own = tide_malloc(((size_t)cap + 1) * sizeof(*l->own));
    if (!l->segs || !l->own)
        goto fail;
    for (uint32_t i = 0; i < n_add; i++) {
        fresh[i] = tide_malloc(sizeof(**fresh));
        if (!fresh[i])
            goto fail;
    }
    /* Nothing can fail from here on. */
    for (uint32_t i = 0; i <= base->n; i++) {
        int here = at ? i < base->n && base->segs[i] == at : i == base->n;

        for (uint32_t j = 0; here && j < n_add; j++) {
            struct seg *seg = add[j];

            seg->shard_only = 1;
            for (uint32_t c = 0; c < seg->n_chunks && seg->shard_only; c++)
                seg->shard_only =
                    tide__db_shard_of(db, seg->chunks[c].series_id) ==
                    seg->shard;
            atomic_init(&fresh[j]->refs, 1);
            fresh[j]->seg = seg;
            l->own[n] = fresh[j];
            l->segs[n++] = seg;
        }
        if (i == base->n || dropped(drop, n_drop, base->segs[i]))
            continue;
        atomic_fetch_add(&base->own[i]->refs, 1);
        l->own[n] = base->own[i];
        l->segs[n++] = base->segs[i];
    }
    TIDE_ASSERT(n == base->n - n_drop + n_add); /* `at` was in `base` */
    l->n = n;
    l->gen = base->gen + 1;
    atomic_init(&l->refs, 1);
    tide_free(fresh);
    *out = l;
    return 0;

fail:
    for (uint32_t i = 0; fresh && i < n_add; i++)
        tide_free(fresh[i]);
    tide_free(fresh);
    if (l) {
        tide_free(l->segs);
        tide_free(l->own);
    }
    tide_free(l);
    return rc;
}

struct seglist *tide__seglist_acquire(struct tide_db *db)
{
    struct seglist *l;

    pthread_mutex_lock(&db->seg_mu);
    l = db->seg_cur;
    TIDE_ASSERT(atomic_load(&l->refs) > 0); /* the db's own reference */
    atomic_fetch_add(&l->refs, 1);
    pthread_mutex_unlock(&db->seg_mu);
    return l;
}

void tide__seglist_release(struct seglist *l)
{
    unsigned prev;

    if (!l)
        return;
    prev = atomic_fetch_sub(&l->refs, 1);
    TIDE_ASSERT(prev > 0); /* more releases than holds */
    if (prev != 1)
        return;
    for (uint32_t i = 0; i < l->n; i++) {
        prev = atomic_fetch_sub(&l->own[i]->refs, 1);
        TIDE_ASSERT(prev > 0);
        if (prev != 1)
            continue;
        tide__seg_close(l->own[i]->seg);
        tide_free(l->own[i]);
    }
    tide_free(l->segs);
    tide_free(l->own);
    tide_free(l);
}

void tide__seglist_publish(struct tide_db *db, struct seglist *l)
{
    struct seglist *old;

    pthread_mutex_lock(&db->seg_mu);
    old = db->seg_cur;
    TIDE_ASSERT(l->gen > old->gen); /* invariant 2: readers compare gens */
    db->seg_cur = l;
    pthread_mutex_unlock(&db->seg_mu);
    tide__seglist_release(old);
}
