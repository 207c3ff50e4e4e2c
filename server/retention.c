/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The telemetry retention policy the engine's compaction applies
 * (engine.h, "Retention and compaction"; docs/data-handling.md,
 * "Retention"), the erasures it schedules after purges and device
 * deletions, and the read-side horizon that queries and exports clamp to.
 *
 * Invariants:
 *   1. The policy answers from a snapshot of the sidecar taken by
 *      tide_meta_retention_load(); it is rebuilt when
 *      tide_meta_generation() has moved past the snapshot's, or when an
 *      account unknown to it was asked about (a sign-up is not reported)
 *      and the last load is older than UNKNOWN_RELOAD_NS. The first load
 *      runs at init, before the loop starts; later ones on the thread
 *      asking, never on the loop thread (which answers from what it
 *      finds), under `lock`, which no sidecar caller waits on.
 *   2. Never erase on doubt: an account the snapshot does not know, or
 *      any account before a first successful load, keeps every point.
 *   3. An account deleted but not purged keeps its points by its tier's
 *      TTL: it may still be restored (tide_meta_account_restore). Only a
 *      purge, or a device's deletion for that device's series, erases.
 *   4. Each account a rebuild finds newly purged, or with newly erased
 *      series, is queued once in `erase`; the maintenance thread takes
 *      the queue and calls tide_db_shred() outside `lock`.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server.h"

#define DAY_NS 86400000000000ll
#define NS_PER_S 1000000000ll
/* How soon after a load an unknown account may cause another. */
#define UNKNOWN_RELOAD_NS (5 * NS_PER_S)
/* After a failed load, how long before the next try. */
#define RETRY_NS NS_PER_S

enum { ACCT_PURGED = 1, ACCT_DELETED = 2 };

struct acct_slot {
    uint64_t id; /* 0 = empty */
    int64_t ttl_s;
    int flags;
};

/* One snapshot of the policy. Open addressing, linear probing; the
 * tables are at most half full. */
struct snap {
    struct acct_slot *acct;
    size_t acct_mask;
    uint64_t *erased; /* series ids; 0 = empty */
    size_t erased_mask;
    struct tide_meta_retention_tier *tiers; /* sorted by id */
    size_t n_tiers;
    uint64_t generation;
};

struct tided_retention {
    struct server *srv;
    pthread_t loop; /* the thread that may not rebuild */
    pthread_mutex_t lock;
    struct snap *snap; /* NULL until the first load */
    int64_t loaded_ns; /* last load attempt */
    int load_failed;
    _Atomic int unknown_seen; /* an unknown account was asked about */
    uint64_t unknown_logged;  /* of this snapshot */
    /* Accounts to erase, for the maintenance thread. */
    uint64_t *erase;
    size_t n_erase, cap_erase;
};

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static size_t table_size(size_t n)
{
    size_t cap = 16;

    while (cap < 2 * n + 2)
        cap *= 2;
    return cap;
}

static struct acct_slot *acct_find(const struct snap *sn, uint64_t id)
{
    for (size_t i = mix(id) & sn->acct_mask;; i = (i + 1) & sn->acct_mask) {
        if (sn->acct[i].id == id || sn->acct[i].id == 0)
            return &sn->acct[i];
    }
}

static int erased_has(const struct snap *sn, uint64_t sid)
{
    for (size_t i = mix(sid) & sn->erased_mask;;
         i = (i + 1) & sn->erased_mask) {
        if (sn->erased[i] == sid)
            return 1;
        if (sn->erased[i] == 0)
            return 0;
    }
}

static void erased_put(struct snap *sn, uint64_t sid)
{
    size_t i = mix(sid) & sn->erased_mask;

    while (sn->erased[i] && sn->erased[i] != sid)
        i = (i + 1) & sn->erased_mask;
    sn->erased[i] = sid;
}

static void snap_free(struct snap *sn)
{
    if (!sn)
        return;
    tide_free(sn->acct);
    tide_free(sn->erased);
    tide_free(sn->tiers);
    tide_free(sn);
}

/* Build a snapshot from a load. Returns it or NULL (no memory). */
static struct snap *snap_build(struct tide_meta_retention *r)
{
    struct snap *sn = tide_calloc(1, sizeof(*sn));
    size_t na, ne;

    if (!sn)
        return NULL;
    na = table_size(r->n_accounts + r->n_purged);
    ne = table_size(r->n_erased);
    sn->acct = tide_calloc(na, sizeof(*sn->acct));
    sn->erased = tide_calloc(ne, sizeof(*sn->erased));
    if (!sn->acct || !sn->erased) {
        snap_free(sn);
        return NULL;
    }
    sn->acct_mask = na - 1;
    sn->erased_mask = ne - 1;
    for (size_t i = 0; i < r->n_accounts; i++) {
        struct acct_slot *a = acct_find(sn, r->accounts[i].id);

        if (!r->accounts[i].id)
            continue;
        a->id = r->accounts[i].id;
        a->ttl_s = r->accounts[i].ttl_s;
        a->flags = r->accounts[i].deleted ? ACCT_DELETED : 0;
    }
    for (size_t i = 0; i < r->n_purged; i++) {
        struct acct_slot *a = acct_find(sn, r->purged[i]);

        if (!r->purged[i])
            continue;
        a->id = r->purged[i];
        a->flags = ACCT_PURGED;
    }
    for (size_t i = 0; i < r->n_erased; i++)
        if (r->erased[i].series_id)
            erased_put(sn, r->erased[i].series_id);
    /* The load's arrays move into the snapshot. */
    sn->tiers = r->tiers;
    sn->n_tiers = r->n_tiers;
    r->tiers = NULL;
    sn->generation = r->generation;
    return sn;
}

/* Queue `account` for erasure unless it is queued. r->lock held. */
static void erase_queue(struct tided_retention *r, uint64_t account)
{
    for (size_t i = 0; i < r->n_erase; i++)
        if (r->erase[i] == account)
            return;
    if (r->n_erase == r->cap_erase) {
        size_t cap = r->cap_erase ? 2 * r->cap_erase : 16;
        uint64_t *v = tide_realloc(r->erase, cap * sizeof(*v));

        if (!v) {
            /* The routine pass erases it all the same (keep_from). */
            tide_log(LOG_WARN,
                     "erasure of account %llu left to the "
                     "routine compaction: out of memory",
                     (unsigned long long)account);
            return;
        }
        r->erase = v;
        r->cap_erase = cap;
    }
    r->erase[r->n_erase++] = account;
}

/* Queue what `load` erases that `old` did not (invariant 4). r->lock
 * held. Returns how many accounts were queued. */
static size_t erase_diff(struct tided_retention *r, const struct snap *old,
                         const struct tide_meta_retention *load)
{
    size_t before = r->n_erase;

    if (!old)
        return 0; /* the first load: the routine pass has the backlog */
    for (size_t i = 0; i < load->n_purged; i++) {
        const struct acct_slot *a = acct_find(old, load->purged[i]);

        if (!(a->id && (a->flags & ACCT_PURGED)))
            erase_queue(r, load->purged[i]);
    }
    for (size_t i = 0; i < load->n_erased; i++)
        if (!erased_has(old, load->erased[i].series_id))
            erase_queue(r, load->erased[i].account_id);
    return r->n_erase - before;
}

/* Load a new snapshot. r->lock held. */
static void rebuild(struct tided_retention *r, int64_t now)
{
    tide_meta *meta = r->srv->meta;
    struct tide_meta_retention *load = NULL;
    struct snap *sn;
    size_t queued;
    int rc;

    r->loaded_ns = now;
    atomic_store(&r->unknown_seen, 0);
    rc = tide_meta_retention_load(meta, &load);
    sn = rc ? NULL : snap_build(load);
    if (!sn) {
        if (!r->load_failed)
            tide_log(LOG_ERROR,
                     "compaction policy: cannot read the sidecar (%s); "
                     "the last policy read stays in force",
                     tide_strerror(rc ? rc : -ENOMEM));
        r->load_failed = 1;
        tide_meta_retention_free(load);
        return;
    }
    r->load_failed = 0;
    queued = erase_diff(r, r->snap, load);
    tide_meta_retention_free(load);
    snap_free(r->snap);
    r->snap = sn;
    r->unknown_logged = 0;
    if (queued)
        tided_retention_poke(r->srv);
}

/* Rebuild the snapshot when invariant 1 says so. r->lock held. */
static void maybe_rebuild(struct tided_retention *r)
{
    tide_meta *meta = r->srv->meta;
    int64_t now = tided_now_ns();

    if (pthread_equal(pthread_self(), r->loop))
        return;
    if (r->snap && r->snap->generation == tide_meta_generation(meta) &&
        !(atomic_load(&r->unknown_seen) &&
          now - r->loaded_ns >= UNKNOWN_RELOAD_NS))
        return;
    if (r->load_failed && now - r->loaded_ns < RETRY_NS)
        return;
    rebuild(r, now);
}

int64_t tided_retention_window_ns(int64_t ttl_s)
{
    int64_t days = ttl_s > 0 ? ttl_s / 8 / 86400 : 0;

    if (days < 1)
        days = 1;
    if (days > 365)
        days = 365;
    return days * DAY_NS;
}

static int tier_cmp(const void *key, const void *elem)
{
    uint16_t id = *(const uint16_t *)key;
    const struct tide_meta_retention_tier *t = elem;

    return id < t->id ? -1 : id > t->id;
}

/* struct tide_retention.window_ns. */
static int64_t policy_window_ns(void *ctx, uint16_t tier)
{
    struct tided_retention *r = ctx;
    const struct tide_meta_retention_tier *t = NULL;
    int64_t ttl_s = 0;

    pthread_mutex_lock(&r->lock);
    maybe_rebuild(r);
    if (r->snap)
        t = bsearch(&tier, r->snap->tiers, r->snap->n_tiers,
                    sizeof(*r->snap->tiers), tier_cmp);
    if (t)
        ttl_s = t->ttl_s;
    pthread_mutex_unlock(&r->lock);
    return tided_retention_window_ns(ttl_s); /* unknown tier: 1 day */
}

/* now - ttl_s seconds, saturating. */
static int64_t horizon_of(int64_t now_ns, int64_t ttl_s)
{
    if (ttl_s <= 0)
        return TIDE_KEEP_ALL;
    if (ttl_s > INT64_MAX / NS_PER_S || now_ns < INT64_MIN + ttl_s * NS_PER_S)
        return TIDE_KEEP_ALL;
    return now_ns - ttl_s * NS_PER_S;
}

/* struct tide_retention.keep_from. */
static int64_t policy_keep_from(void *ctx, uint64_t account_id,
                                uint64_t series_id)
{
    struct tided_retention *r = ctx;
    const struct acct_slot *a;
    int64_t keep = TIDE_KEEP_ALL;

    pthread_mutex_lock(&r->lock);
    maybe_rebuild(r);
    if (!r->snap)
        goto out; /* invariant 2 */
    if (series_id && erased_has(r->snap, series_id)) {
        keep = TIDE_KEEP_NONE;
        goto out;
    }
    a = acct_find(r->snap, account_id);
    if (!a->id) {
        atomic_store(&r->unknown_seen, 1);
        if (r->unknown_logged++ == 0)
            tide_log(LOG_WARN,
                     "compaction policy: account %llu is unknown to the "
                     "sidecar; its points are kept",
                     (unsigned long long)account_id);
        goto out;
    }
    keep = a->flags & ACCT_PURGED ? TIDE_KEEP_NONE
                                  : horizon_of(tided_now_ns(), a->ttl_s);
out:
    pthread_mutex_unlock(&r->lock);
    return keep;
}

int tided_retention_init(struct server *s, struct tide_db_options *o)
{
    struct tided_retention *r = tide_calloc(1, sizeof(*r));

    if (!r)
        return -ENOMEM;
    r->srv = s;
    r->loop = pthread_self();
    pthread_mutex_init(&r->lock, NULL);
    atomic_init(&r->unknown_seen, 0);
    s->retention = r;
    /* The first snapshot now, before the loop runs (the loop thread never
     * loads one later): the erasures of later purges are found against
     * it. A failure is logged; the next caller off the loop tries again. */
    pthread_mutex_lock(&r->lock);
    rebuild(r, tided_now_ns());
    pthread_mutex_unlock(&r->lock);
    o->retention.window_ns = policy_window_ns;
    o->retention.keep_from = policy_keep_from;
    o->retention.ctx = r;
    return 0;
}

void tided_retention_fini(struct server *s)
{
    struct tided_retention *r = s->retention;

    if (!r)
        return;
    snap_free(r->snap);
    tide_free(r->erase);
    pthread_mutex_destroy(&r->lock);
    tide_free(r);
    s->retention = NULL;
}

void tided_retention_poke(struct server *s)
{
    pthread_mutex_lock(&s->flush_lock);
    s->maint_poke = 1;
    pthread_cond_signal(&s->flush_cv);
    pthread_mutex_unlock(&s->flush_lock);
}

void tided_retention_maintain(struct server *s)
{
    struct tided_retention *r = s->retention;
    uint64_t *todo;
    size_t n;
    int rc;

    pthread_mutex_lock(&r->lock);
    maybe_rebuild(r);
    todo = r->erase;
    n = r->n_erase;
    r->erase = NULL;
    r->n_erase = r->cap_erase = 0;
    pthread_mutex_unlock(&r->lock);
    if (!n)
        return;
    /* The purge and the deletion tried this without waiting for readers;
     * here waiting is fine. */
    rc = tide_meta_checkpoint(s->meta);
    if (rc)
        tide_log(LOG_WARN,
                 "sidecar WAL checkpoint after an erasure: %s; the next "
                 "one finishes it",
                 tide_strerror(rc));
    for (size_t i = 0; i < n; i++) {
        /* Shred: the engine forgets the account's cached key first (a
         * purge destroyed it in the sidecar), then rewrites. For a
         * deleted device the key still exists and is simply read again. */
        rc = tide_db_shred(s->db, todo[i], 0);
        if (rc)
            tide_log(LOG_ERROR,
                     "cannot schedule the erasure of account %llu: %s; the "
                     "routine compaction drops its points",
                     (unsigned long long)todo[i], tide_strerror(rc));
        else
            tide_log(LOG_INFO, "erasure of account %llu scheduled",
                     (unsigned long long)todo[i]);
    }
    tide_free(todo);
}

int tided_retention_horizon(struct server *s, uint64_t account_id,
                            int64_t now_ns, int64_t *horizon_ns)
{
    struct account_state *a;

    *horizon_ns = INT64_MIN;
    if (!account_id)
        return 0;
    a = devices_account(s, account_id);
    if (!a)
        return -ENOMEM;
    *horizon_ns = horizon_of(now_ns, a->tier.ttl_s);
    return 0;
}

void tided_retention_clamp(int64_t horizon_ns, int64_t bucket_ns,
                           int64_t *from_ns, int64_t to_ns)
{
    int64_t from = *from_ns;

    if (horizon_ns <= from)
        return;
    if (bucket_ns > 0) {
        /* The first bucket start from + k * bucket_ns >= horizon: the
         * grid the client asked for stays, the partly expired bucket
         * goes. */
        uint64_t gap = (uint64_t)horizon_ns - (uint64_t)from;
        uint64_t k =
            gap / (uint64_t)bucket_ns + (gap % (uint64_t)bucket_ns != 0);

        if (k > ((uint64_t)to_ns - (uint64_t)from) / (uint64_t)bucket_ns + 1)
            from = to_ns;
        else
            from = (int64_t)((uint64_t)from + k * (uint64_t)bucket_ns);
    } else {
        from = horizon_ns;
    }
    *from_ns = from < to_ns ? from : to_ns;
}
