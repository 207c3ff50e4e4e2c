/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The server-wide device cache (thing name -> device id and paused flag,
 * per account) and account table (tier, paused flag, rate-limit bucket and
 * today's points), both owned here and used by the loop thread only. The
 * write path resolves every group's device through this cache, so a
 * known device costs no SQL; queries and admin requests resolve names
 * through it too.
 *
 * The sidecar itself says when cached rows change: its invalidation hook
 * (tide_meta_set_invalidate) calls on_invalidate(), on whichever thread
 * made the change (the loop for admin requests, the maintenance thread
 * for purges), which queues (account, device) under `stale_lock`. The loop
 * applies the queue (stale_apply) when a batch starts (devices_account)
 * and when a query or admin request resolves a name
 * (tided_device_resolve), never in the middle of a batch, so that the
 * entries a batch holds stay valid until it is built:
 *
 *   any thread: meta change ─► on_invalidate ─► stale[] + stale_pending
 *   loop: devices_account / tided_device_resolve ─► stale_apply
 *
 * Invariants:
 *   1. An entry with the empty name (never a valid thing name) marks an
 *      account whose devices are all in the cache: every registration
 *      made through this server is put into it, and a registration made
 *      behind its back shows up as TIDE_EEXIST, which reloads the account.
 *   2. Every change the sidecar reports is applied before the next batch
 *      or name lookup: the devices of the account are forgotten and its tier is
 *      read again; an account that no longer exists (deleted, purged) is
 *      dropped.
 *   3. Tags set through devices_set_tags() are in the cache at once and
 *      in the sidecar after devices_tags_flush(), which stores them with
 *      the hook muted (they are no news to the cache); a failed store
 *      forgets the account's devices. Tags the registration worker
 *      stored (write.c, its echoes muted) enter the cache through
 *      devices_tags_cached() when the batch resumes; a batch that cannot
 *      put them there forgets the account's devices.
 *   4. An entry is re-read from the sidecar when older than
 *      DEVICE_RECHECK_NS, an account's tier when older than
 *      TIER_RECHECK_NS: this bounds how long a change made to meta.db by
 *      another process, which the hook cannot see, goes unnoticed.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "server.h"

#define DEVICE_SLOTS 65536
#define DEVICE_RECHECK_NS (60ll * 1000000000)
#define ACCOUNT_SLOTS 4096
#define TIER_RECHECK_NS (5ll * 1000000000)
#define DAY_NS (86400ll * 1000000000)
/* Series cached per device: beyond this a device's fields are looked up
 * in the registry (a device with thousands of fields is not a fleet). */
#define DEVICE_SERIES_MAX 256
/* Changes queued between two uses of the cache; more drop everything. */
#define STALE_MAX 256

struct stale {
    uint64_t account_id;
    uint64_t device_id;
};

struct devices {
    struct device_entry *slot[DEVICE_SLOTS];
    struct account_state *acct[ACCOUNT_SLOTS];
    /* Changes reported by the sidecar, not yet applied. */
    pthread_mutex_t stale_lock;
    atomic_int stale_pending; /* stale[] or stale_all has something */
    int stale_all;            /* (0, 0) or stale[] overflowed */
    unsigned n_stale;
    struct stale stale[STALE_MAX];
    /* The loop thread, and whether a sidecar call it makes to store what
     * the cache already holds is in progress: its reports are echoes. */
    pthread_t owner;
    int muted;
    /* Tags changed in the cache, not yet stored (devices_tags_flush). */
    struct tags_pending *pend;
    size_t n_pend, cap_pend;
};

struct tags_pending {
    uint64_t account_id;
    uint64_t device_id;
    char *tags; /* owned */
};

static void stale_apply(struct server *s);

/* ---- Device name -> id cache -------------------------------------------- */

static uint32_t device_hash(uint64_t account_id, const char *name)
{
    return (uint32_t)(XXH3_64bits_withSeed(name, strlen(name), account_id) %
                      DEVICE_SLOTS);
}

static struct device_entry *device_find(struct server *s, uint64_t account_id,
                                        const char *name)
{
    for (struct device_entry *e =
             s->devices->slot[device_hash(account_id, name)];
         e; e = e->next)
        if (e->account_id == account_id && !strcmp(e->name, name))
            return e;
    return NULL;
}

static void entry_free(struct device_entry *e)
{
    tide_free(e->tags);
    tide_free(e->series);
    tide_free(e);
}

uint64_t devices_series_find(const struct device_entry *e, const char *field,
                             size_t len, uint8_t type, uint32_t hint)
{
    /* From `hint` on: a device sends its fields in the same order batch
     * after batch, so the first compare is usually the one. */
    for (uint32_t j = 0; j < e->n_series; j++) {
        const struct device_series *d = &e->series[(hint + j) % e->n_series];

        if (d->len == len && d->type == type && !memcmp(d->field, field, len))
            return d->id;
    }
    return 0;
}

void devices_series_put(struct device_entry *e, const char *field, size_t len,
                        uint8_t type, uint64_t id)
{
    struct device_series *d;

    if (len > DEVICE_SERIES_FIELD_MAX || e->n_series >= DEVICE_SERIES_MAX)
        return;
    if (e->n_series == e->cap_series) {
        uint32_t cap = e->cap_series ? 2 * e->cap_series : 4;

        d = tide_realloc(e->series, cap * sizeof(*d));
        if (!d)
            return;
        e->series = d;
        e->cap_series = cap;
    }
    d = &e->series[e->n_series++];
    d->id = id;
    d->type = type;
    d->len = (uint8_t)len;
    memcpy(d->field, field, len);
}

/* Set the cached tags of `e` to `tags` ("" = none). Returns 0 or -ENOMEM
 * (unchanged). */
static int entry_tags(struct device_entry *e, const char *tags)
{
    char *t = NULL;

    if (!strcmp(e->tags ? e->tags : "", tags))
        return 0;
    if (*tags && !(t = tide_strdup(tags)))
        return -ENOMEM;
    tide_free(e->tags);
    e->tags = t;
    return 0;
}

/* Unlink and free entry `e`. */
static void device_drop(struct server *s, struct device_entry *e)
{
    struct device_entry **pp =
        &s->devices->slot[device_hash(e->account_id, e->name)];

    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    entry_free(e);
}

/* Cache device `d`. NULL without memory; then nothing of `d` is cached. */
static struct device_entry *device_put(struct server *s,
                                       const struct tide_meta_device *d)
{
    struct device_entry *e = device_find(s, d->account_id, d->thing_name);
    uint32_t h;

    if (!e) {
        e = tide_calloc(1, sizeof(*e));
        if (!e)
            return NULL;
        h = device_hash(d->account_id, d->thing_name);
        e->next = s->devices->slot[h];
        s->devices->slot[h] = e;
        e->account_id = d->account_id;
        snprintf(e->name, sizeof(e->name), "%s", d->thing_name);
    }
    e->n_series = 0; /* read again: so are its series, when next used */
    e->id = d->id;
    e->paused = d->paused;
    e->checked_ns = tided_now_ns();
    if (entry_tags(e, d->tags)) {
        device_drop(s, e);
        return NULL;
    }
    return e;
}

void tided_device_forget(struct server *s, uint64_t account_id)
{
    for (uint32_t i = 0; i < DEVICE_SLOTS; i++) {
        struct device_entry **pp = &s->devices->slot[i];

        while (*pp) {
            struct device_entry *e = *pp;

            if (e->account_id == account_id) {
                *pp = e->next;
                entry_free(e);
            } else {
                pp = &e->next;
            }
        }
    }
}

/* Load every device of the account into the cache. */
static int device_load_account(struct server *s, uint64_t account_id)
{
    struct tide_meta_device *buf = tide_malloc(256 * sizeof(*buf));
    uint64_t after = 0;
    size_t n;
    int rc;

    if (!buf)
        return -ENOMEM;
    do {
        rc = tide_meta_device_list(s->meta, &tided_system_principal, account_id,
                                   after, buf, 256, &n);
        for (size_t i = 0; rc == 0 && i < n; i++) {
            if (!device_put(s, &buf[i]))
                rc = -ENOMEM; /* an incomplete account is not marked */
            after = buf[i].id;
        }
    } while (rc == 0 && n == 256);
    tide_free(buf);
    return rc;
}

int devices_load(struct server *s, uint64_t account_id)
{
    struct tide_meta_device mark = {.account_id = account_id};
    int rc;

    if (device_find(s, account_id, ""))
        return 0;
    rc = device_load_account(s, account_id);
    if (rc == 0 && !device_put(s, &mark))
        rc = -ENOMEM;
    return rc;
}

struct device_entry *devices_peek(struct server *s, uint64_t account_id,
                                  const char *name)
{
    return device_find(s, account_id, name);
}

int devices_get(struct server *s, uint64_t account_id, const char *name,
                int create, struct device_entry **out)
{
    struct device_entry *e;
    struct tide_meta_device d;
    int rc;

    e = device_find(s, account_id, name);
    if (!e) {
        rc = devices_load(s, account_id);
        if (rc)
            return rc;
        e = device_find(s, account_id, name);
    }
    if (!e && create) {
        struct tide_meta_device_new nd = {.thing_name = name};
        uint64_t id;

        rc = tide_meta_device_register(s->meta, &tided_system_principal,
                                       account_id, &nd, &id);
        if (rc == TIDE_EEXIST) {
            /* Registered behind the cache's back: read the account again. */
            tided_device_forget(s, account_id);
            rc = devices_load(s, account_id);
            e = rc ? NULL : device_find(s, account_id, name);
        } else if (rc == 0) {
            memset(&d, 0, sizeof(d));
            d.id = id;
            d.account_id = account_id;
            snprintf(d.thing_name, sizeof(d.thing_name), "%s", name);
            e = device_put(s, &d);
            rc = e ? 0 : -ENOMEM;
        }
        if (rc)
            return rc;
    }
    if (!e)
        return TIDE_ENOTFOUND;
    if (tided_now_ns() - e->checked_ns > DEVICE_RECHECK_NS) {
        rc = tide_meta_device_get(s->meta, &tided_system_principal, account_id,
                                  e->id, &d);
        if (rc == TIDE_ENOTFOUND) {
            tided_device_forget(s, account_id);
            return rc;
        }
        if (rc == 0 && !(e = device_put(s, &d)))
            return -ENOMEM;
    }
    *out = e;
    return 0;
}

struct device_entry *devices_entry_new(uint64_t account_id, const char *name,
                                       uint64_t id)
{
    struct device_entry *e = tide_calloc(1, sizeof(*e));

    if (!e)
        return NULL;
    e->account_id = account_id;
    e->id = id;
    snprintf(e->name, sizeof(e->name), "%s", name);
    return e;
}

void devices_entry_link(struct server *s, struct device_entry *e)
{
    uint32_t h = device_hash(e->account_id, e->name);

    if (device_find(s, e->account_id, e->name)) {
        entry_free(e); /* cached meanwhile: that entry stays */
        return;
    }
    e->checked_ns = tided_now_ns();
    e->next = s->devices->slot[h];
    s->devices->slot[h] = e;
}

void devices_entry_free(struct device_entry *e)
{
    if (e)
        entry_free(e);
}

int tided_device_resolve(struct server *s, uint64_t account_id,
                         const char *name, int create, uint64_t *id_out)
{
    struct device_entry *e;
    int rc;

    stale_apply(s);
    rc = devices_get(s, account_id, name, create, &e);
    if (rc == 0)
        *id_out = e->id;
    return rc;
}

/* ---- Tags ------------------------------------------------------------------
 */

int devices_set_tags(struct server *s, struct device_entry *e, const char *tags)
{
    struct devices *d = s->devices;
    struct tags_pending *p;
    char *copy = tide_strdup(tags);

    if (!copy)
        return -ENOMEM;
    /* A device named twice in a batch is queued twice, not looked for
     * (a search per group was quadratic: 100,000 groups took seconds):
     * stored in queue order, its last tags win. */
    if (d->n_pend == d->cap_pend) {
        size_t cap = d->cap_pend ? 2 * d->cap_pend : 16;
        struct tags_pending *v = tide_realloc(d->pend, cap * sizeof(*v));

        if (!v) {
            tide_free(copy);
            return -ENOMEM;
        }
        d->pend = v;
        d->cap_pend = cap;
    }
    if (entry_tags(e, tags)) {
        tide_free(copy);
        return -ENOMEM;
    }
    p = &d->pend[d->n_pend++];
    *p = (struct tags_pending){e->account_id, e->id, copy};
    return 0;
}

int devices_tags_cached(struct device_entry *e, const char *tags)
{
    return entry_tags(e, tags);
}

/* Set by a thread whose sidecar calls store what the loop will put into
 * the cache itself (devices_mute_echoes). */
static _Thread_local int echoes_muted;

void devices_mute_echoes(int on)
{
    echoes_muted = on;
}

/* Store the pending tags of the account of d->pend[0] in one sidecar
 * transaction. On failure the account's devices are forgotten. */
static void tags_store_account(struct server *s)
{
    struct devices *d = s->devices;
    uint64_t account = d->pend[0].account_id;
    size_t n = 0;
    uint64_t *ids = tide_malloc(d->n_pend * sizeof(*ids));
    const char **tags = tide_malloc(d->n_pend * sizeof(*tags));
    int *rcs = tide_malloc(d->n_pend * sizeof(*rcs));
    int rc = ids && tags && rcs ? 0 : -ENOMEM;

    for (size_t i = 0; i < d->n_pend; i++) {
        if (d->pend[i].account_id != account)
            continue;
        if (ids && tags) {
            ids[n] = d->pend[i].device_id;
            tags[n] = d->pend[i].tags;
        }
        n++;
    }
    if (rc == 0) {
        d->muted = 1;
        rc = tide_meta_device_tags_set(s->meta, &tided_system_principal,
                                       account, ids, tags, n, rcs);
        d->muted = 0;
    }
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = rcs[i];
    if (rc) {
        /* The cache holds tags the sidecar does not: read them again. */
        tide_log(LOG_WARN, "storing device tags of account %llu failed: %s",
                 (unsigned long long)account, tide_strerror(rc));
        tided_device_forget(s, account);
    }
    tide_free(ids);
    tide_free(tags);
    tide_free(rcs);
}

void devices_tags_flush(struct server *s)
{
    struct devices *d = s->devices;

    while (d->n_pend) {
        uint64_t account = d->pend[0].account_id;
        size_t out = 0;

        tags_store_account(s);
        for (size_t i = 0; i < d->n_pend; i++) {
            if (d->pend[i].account_id == account)
                tide_free(d->pend[i].tags);
            else
                d->pend[out++] = d->pend[i];
        }
        d->n_pend = out;
    }
}

void devices_tags_drop(struct server *s)
{
    struct devices *d = s->devices;

    for (size_t i = 0; i < d->n_pend; i++) {
        /* A batch is of one account: forget it once. */
        if (i == 0 || d->pend[i].account_id != d->pend[i - 1].account_id)
            tided_device_forget(s, d->pend[i].account_id);
        tide_free(d->pend[i].tags);
    }
    d->n_pend = 0;
}

/* ---- Per-account limits -------------------------------------------------- */

struct account_state *devices_account(struct server *s, uint64_t id)
{
    struct account_state **pp, *a;
    int64_t now = tided_now_ns();
    struct tide_meta_account acct;

    stale_apply(s);
    pp = &s->devices->acct[id % ACCOUNT_SLOTS];
    for (a = *pp; a && a->account_id != id; a = a->next)
        ;
    if (!a) {
        struct tide_meta_usage u[1];
        size_t n = 0;

        a = tide_calloc(1, sizeof(*a));
        if (!a)
            return NULL;
        a->account_id = id;
        a->next = *pp;
        *pp = a;
        a->day = now / DAY_NS;
        /* The quota survives restarts: start from what is recorded. */
        if (tide_meta_usage_read(s->meta, &tided_system_principal, id, a->day,
                                 a->day, u, 1, &n) == 0 &&
            n == 1)
            a->day_points = u[0].points;
    }
    if (a->stale || now - a->checked_ns > TIER_RECHECK_NS) {
        a->stale = 0;
        if (tide_meta_account_get(s->meta, &tided_system_principal, id,
                                  &acct) == 0) {
            a->paused = acct.paused;
            if (tide_meta_tier_get(s->meta, acct.tier, &a->tier))
                memset(&a->tier, 0, sizeof(a->tier));
        }
        if (!a->checked_ns) {
            a->tokens = (double)a->tier.rate_points_s;
            a->refill_ns = now;
        }
        a->checked_ns = now;
    }
    if (now / DAY_NS != a->day) {
        a->day = now / DAY_NS;
        a->day_points = 0;
    }
    return a;
}

/* ---- Invalidation ---------------------------------------------------------
 */

/* The sidecar's hook: any thread, the sidecar's lock held. Queue only. */
static void on_invalidate(void *ctx, uint64_t account_id, uint64_t device_id)
{
    struct devices *d = ctx;

    /* `muted` is the loop's own: read only on the loop thread. */
    if (echoes_muted || (pthread_equal(pthread_self(), d->owner) && d->muted))
        return;
    pthread_mutex_lock(&d->stale_lock);
    if (account_id == 0 || d->n_stale == STALE_MAX)
        d->stale_all = 1;
    else
        d->stale[d->n_stale++] = (struct stale){account_id, device_id};
    atomic_store_explicit(&d->stale_pending, 1, memory_order_release);
    pthread_mutex_unlock(&d->stale_lock);
}

static void forget_all(struct devices *d)
{
    for (uint32_t i = 0; i < DEVICE_SLOTS; i++) {
        while (d->slot[i]) {
            struct device_entry *e = d->slot[i];

            d->slot[i] = e->next;
            entry_free(e);
        }
    }
}

/* Read account `id` again at its next use, or drop it when it is gone. */
static void account_stale(struct server *s, uint64_t id)
{
    struct account_state **pp = &s->devices->acct[id % ACCOUNT_SLOTS], *a;
    struct tide_meta_account acct;

    while (*pp && (*pp)->account_id != id)
        pp = &(*pp)->next;
    a = *pp;
    if (!a)
        return;
    if (tide_meta_account_get(s->meta, &tided_system_principal, id, &acct) ==
        TIDE_ENOTFOUND) {
        *pp = a->next;
        tide_free(a);
    } else {
        a->stale = 1;
    }
}

/* Apply the changes the sidecar reported since the last call. Loop
 * thread. One atomic load when there are none. */
static void stale_apply(struct server *s)
{
    struct devices *d = s->devices;
    struct stale v[STALE_MAX];
    unsigned n;
    int all;

    if (!atomic_load_explicit(&d->stale_pending, memory_order_acquire))
        return;
    pthread_mutex_lock(&d->stale_lock);
    n = d->n_stale;
    memcpy(v, d->stale, n * sizeof(v[0]));
    all = d->stale_all;
    d->n_stale = 0;
    d->stale_all = 0;
    atomic_store_explicit(&d->stale_pending, 0, memory_order_relaxed);
    pthread_mutex_unlock(&d->stale_lock);
    if (all) {
        forget_all(d);
        for (uint32_t i = 0; i < ACCOUNT_SLOTS; i++)
            for (struct account_state *a = d->acct[i]; a; a = a->next)
                a->stale = 1;
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        unsigned k = 0;

        /* Each account once, however many of its devices changed. */
        while (k < i && v[k].account_id != v[i].account_id)
            k++;
        if (k < i)
            continue;
        tided_device_forget(s, v[i].account_id);
        if (v[i].device_id == 0)
            account_stale(s, v[i].account_id);
    }
}

/* ---- Lifetime ------------------------------------------------------------ */

int devices_init(struct server *s)
{
    struct devices *d = tide_calloc(1, sizeof(*d));

    if (!d)
        return -1;
    pthread_mutex_init(&d->stale_lock, NULL);
    atomic_init(&d->stale_pending, 0);
    d->owner = pthread_self();
    s->devices = d;
    tide_meta_set_invalidate(s->meta, on_invalidate, d);
    return 0;
}

void devices_fini(struct server *s)
{
    struct devices *d = s->devices;

    if (!d)
        return;
    forget_all(d);
    for (uint32_t i = 0; i < ACCOUNT_SLOTS; i++) {
        while (d->acct[i]) {
            struct account_state *a = d->acct[i];

            d->acct[i] = a->next;
            tide_free(a);
        }
    }
    for (size_t i = 0; i < d->n_pend; i++)
        tide_free(d->pend[i].tags);
    tide_free(d->pend);
    pthread_mutex_destroy(&d->stale_lock);
    tide_free(d);
    s->devices = NULL;
}

/* Does tag text "k=v,k=v" satisfy the match? */
static int tag_matches(const char *tags, const Tide__V1__TagMatch *m)
{
    size_t klen = strlen(m->key), want = strlen(m->value);
    const char *val = NULL;
    size_t vlen = 0;

    for (const char *p = tags; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);

        if (len > klen && !strncmp(p, m->key, klen) && p[klen] == '=') {
            val = p + klen + 1;
            vlen = len - klen - 1;
            break;
        }
        p = end ? end + 1 : NULL;
    }
    switch (m->op) {
    case TIDE__V1__TAG_OP__TAG_OP_EQ:
        return val && vlen == want && !strncmp(val, m->value, vlen);
    case TIDE__V1__TAG_OP__TAG_OP_NEQ:
        return !(val && vlen == want && !strncmp(val, m->value, vlen));
    default: /* TAG_OP_PREFIX */
        return val && vlen >= want && !strncmp(val, m->value, want);
    }
}

int tided_device_selected(const Tide__V1__DeviceSelector *sel,
                          const struct tide_meta_device *d)
{
    int named;

    if (!sel)
        return 1;
    named = sel->n_names == 0;
    for (size_t i = 0; i < sel->n_names && !named; i++)
        named = !strcmp(sel->names[i], d->thing_name);
    for (size_t i = 0; i < sel->n_tags && named; i++)
        named = tag_matches(d->tags, sel->tags[i]);
    return named;
}
