/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The series registry: (account, device, field) -> (dense id, type), kept
 * in the `series` table and, from open to close, in an in-memory XXH3
 * open-addressing table that the write path reads without SQL or locks.
 * New series are created in batches, one transaction each. The invariants
 * that make lock-free reads safe are listed in meta_int.h.
 */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "meta_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define CHUNK_BYTES (1u << 20)
#define TABLE_MIN 1024

static uint64_t key_hash(uint64_t account_id, uint64_t device_id,
                         const char *field, size_t len)
{
    uint64_t seed = account_id * 0x9e3779b97f4a7c15ull ^
                    (device_id + 0x632be59bd9b4e019ull) * 0xc2b2ae3d27d4eb4full;

    return XXH3_64bits_withSeed(field, len, seed);
}

static struct reg_table *table_new(size_t n_slots)
{
    struct reg_table *t;

    t = tide_calloc(1, sizeof(*t) + n_slots * sizeof(t->slots[0]));
    if (!t)
        return NULL;
    t->mask = n_slots - 1;
    return t;
}

static void slot_put(struct reg_table *t, struct reg_ent *e)
{
    size_t i = e->hash & t->mask;

    while (atomic_load_explicit(&t->slots[i], memory_order_relaxed))
        i = (i + 1) & t->mask;
    atomic_store_explicit(&t->slots[i], e, memory_order_release);
}

/* Make room for one more entry: double the table past half full. The old
 * table is retired, not freed (readers may still probe it). */
static int reserve_one(struct registry *r)
{
    struct reg_table *old = atomic_load_explicit(&r->tab, memory_order_relaxed);
    struct reg_table *t;
    size_t n = old ? old->mask + 1 : TABLE_MIN;

    if (old && (r->n_slots_used + 1) * 2 <= n)
        return 0;
    if (old)
        n *= 2;
    t = table_new(n);
    if (!t)
        return -ENOMEM;
    for (size_t i = 0; old && i <= old->mask; i++) {
        struct reg_ent *e =
            atomic_load_explicit(&old->slots[i], memory_order_relaxed);

        if (e)
            slot_put(t, e);
    }
    atomic_store_explicit(&r->tab, t, memory_order_release);
    if (old) {
        old->retired_next = r->retired;
        r->retired = old;
    }
    return 0;
}

static struct reg_ent *ent_alloc(struct registry *r, size_t field_len)
{
    size_t need = (sizeof(struct reg_ent) + field_len + 7) & ~(size_t)7;
    struct reg_chunk *c = r->chunks;

    if (!c || c->cap - c->used < need) {
        c = tide_malloc(sizeof(*c) + CHUNK_BYTES);
        if (!c)
            return NULL;
        c->next = r->chunks;
        c->used = 0;
        c->cap = CHUNK_BYTES;
        r->chunks = c;
    }
    c->used += need;
    return (struct reg_ent *)(c->data + c->used - need);
}

/* Insert a new entry (m->lock held). */
static int reg_insert(struct registry *r, uint64_t hash, uint64_t account_id,
                      uint64_t device_id, const char *field, size_t len,
                      uint8_t type, uint64_t id, uint8_t state,
                      struct reg_ent **out)
{
    struct reg_ent *e;
    int rc;

    rc = reserve_one(r);
    if (rc)
        return rc;
    e = ent_alloc(r, len);
    if (!e)
        return -ENOMEM;
    e->hash = hash;
    e->account_id = account_id;
    e->device_id = device_id;
    e->id = id;
    atomic_init(&e->state, state);
    e->type = type;
    e->field_len = (uint16_t)len;
    memcpy(e->field, field, len);
    slot_put(atomic_load_explicit(&r->tab, memory_order_relaxed), e);
    r->n_slots_used++;
    if (state == REG_LIVE)
        atomic_fetch_add_explicit(&r->live, 1, memory_order_relaxed);
    if (out)
        *out = e;
    return 0;
}

/* Find the entry for a key whose state is at most `max_state`. */
static struct reg_ent *reg_find(struct registry *r, uint64_t hash,
                                const struct tide_meta_series_key *k,
                                uint8_t max_state)
{
    struct reg_table *t = atomic_load_explicit(&r->tab, memory_order_acquire);
    size_t i;

    if (!t)
        return NULL;
    for (i = hash & t->mask;; i = (i + 1) & t->mask) {
        struct reg_ent *e =
            atomic_load_explicit(&t->slots[i], memory_order_acquire);

        if (!e)
            return NULL;
        if (e->hash == hash && e->account_id == k->account_id &&
            e->device_id == k->device_id && e->field_len == k->field_len &&
            memcmp(e->field, k->field, k->field_len) == 0 &&
            atomic_load_explicit(&e->state, memory_order_acquire) <= max_state)
            return e;
    }
}

static int key_ok(const struct tide_meta_series_key *k)
{
    if (!k || !k->field || k->field_len == 0 ||
        k->field_len > TIDE_META_FIELD_MAX || k->type < TIDE_TYPE_F64 ||
        k->type > TIDE_TYPE_STR || !k->account_id || !k->device_id)
        return 0;
    return 1;
}

int tide_meta_series_lookup(tide_meta *m, const struct tide_meta_series_key *k,
                            uint64_t *id_out)
{
    struct reg_ent *e;

    if (!key_ok(k))
        return TIDE_EINVAL;
    e = reg_find(&m->reg,
                 key_hash(k->account_id, k->device_id, k->field, k->field_len),
                 k, REG_LIVE);
    if (!e)
        return TIDE_ENOTFOUND;
    if (e->type != k->type)
        return TIDE_ETYPE;
    *id_out = e->id;
    return 0;
}

uint64_t tide_meta_series_count(tide_meta *m)
{
    return atomic_load_explicit(&m->reg.live, memory_order_relaxed);
}

static const char SQL_LOAD_COUNT[] =
    "SELECT count(*) FROM series WHERE deleted_ns IS NULL";
static const char SQL_LOAD[] =
    "SELECT id, account_id, device_id, field, type FROM series"
    " WHERE deleted_ns IS NULL";
static const char SQL_NEXT_ID[] =
    "SELECT value FROM counters WHERE name='next_series_id'";

int tide__meta_registry_load(tide_meta *m)
{
    struct registry *r = &m->reg;
    sqlite3_stmt *st;
    size_t n_slots = TABLE_MIN;
    int64_t next_id, count = 0;
    int rc, src;

    rc = tide__meta_ints(m, SQL_NEXT_ID, &next_id, 1, NULL, 0);
    if (rc)
        return rc == TIDE_ENOTFOUND ? TIDE_ECORRUPT : rc;
    r->next_id = (uint64_t)next_id;
    rc = tide__meta_stmt(m, SQL_LOAD_COUNT, &st);
    if (rc)
        return rc;
    if (sqlite3_step(st) == SQLITE_ROW)
        count = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    /* Size for the rows at hand at most half full: no growth while
     * loading. */
    while ((int64_t)n_slots < 2 * count + 2)
        n_slots *= 2;
    atomic_store(&r->tab, table_new(n_slots));
    if (!atomic_load(&r->tab))
        return -ENOMEM;
    rc = tide__meta_stmt(m, SQL_LOAD, &st);
    if (rc)
        return rc;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        uint64_t id = (uint64_t)sqlite3_column_int64(st, 0);
        uint64_t acct = (uint64_t)sqlite3_column_int64(st, 1);
        uint64_t dev = (uint64_t)sqlite3_column_int64(st, 2);
        const char *f = sqlite3_column_blob(st, 3);
        int len = sqlite3_column_bytes(st, 3);
        int type = sqlite3_column_int(st, 4);

        if (!f || len <= 0 || len > TIDE_META_FIELD_MAX || id == 0 ||
            id >= r->next_id || type < TIDE_TYPE_F64 || type > TIDE_TYPE_STR) {
            rc = TIDE_ECORRUPT;
            break;
        }
        rc = reg_insert(r, key_hash(acct, dev, f, (size_t)len), acct, dev, f,
                        (size_t)len, (uint8_t)type, id, REG_LIVE, NULL);
        if (rc)
            break;
    }
    sqlite3_reset(st);
    if (!rc && src != SQLITE_DONE)
        rc = tide__meta_sqlerr(src);
    return rc;
}

void tide__meta_registry_free(struct registry *r)
{
    struct reg_table *t = atomic_load(&r->tab);

    while (r->retired) {
        struct reg_table *next = r->retired->retired_next;

        tide_free(r->retired);
        r->retired = next;
    }
    tide_free(t);
    atomic_store(&r->tab, NULL);
    while (r->chunks) {
        struct reg_chunk *next = r->chunks->next;

        tide_free(r->chunks);
        r->chunks = next;
    }
}

void tide__meta_registry_kill(tide_meta *m, uint64_t account_id,
                              uint64_t device_id)
{
    struct registry *r = &m->reg;
    struct reg_table *t = atomic_load_explicit(&r->tab, memory_order_relaxed);

    for (size_t i = 0; t && i <= t->mask; i++) {
        struct reg_ent *e =
            atomic_load_explicit(&t->slots[i], memory_order_relaxed);

        if (!e || e->account_id != account_id ||
            (device_id && e->device_id != device_id))
            continue;
        if (atomic_load(&e->state) == REG_LIVE)
            atomic_fetch_sub_explicit(&r->live, 1, memory_order_relaxed);
        atomic_store_explicit(&e->state, REG_DEAD, memory_order_release);
    }
}

static const char SQL_LIVE_OF_ACCOUNT[] =
    "SELECT id FROM series WHERE account_id=?1 AND deleted_ns IS NULL"
    " ORDER BY id";

static int id_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

int tide__meta_registry_revive(tide_meta *m, uint64_t account_id)
{
    struct registry *r = &m->reg;
    struct reg_table *t = atomic_load_explicit(&r->tab, memory_order_relaxed);
    uint64_t *ids = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *st;
    int rc = tide__meta_stmt(m, SQL_LIVE_OF_ACCOUNT, &st), src;

    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            size_t c = cap ? 2 * cap : 64;
            uint64_t *v = tide_realloc(ids, c * sizeof(*v));

            if (!v) {
                rc = -ENOMEM;
                break;
            }
            ids = v;
            cap = c;
        }
        ids[n++] = (uint64_t)sqlite3_column_int64(st, 0);
    }
    sqlite3_reset(st);
    if (!rc && src != SQLITE_DONE)
        rc = tide__meta_sqlerr(src);
    /* The entries are still in the table, marked dead by the deletion. */
    for (size_t i = 0; !rc && t && i <= t->mask; i++) {
        struct reg_ent *e =
            atomic_load_explicit(&t->slots[i], memory_order_relaxed);

        if (!e || e->account_id != account_id ||
            atomic_load(&e->state) != REG_DEAD ||
            !bsearch(&e->id, ids, n, sizeof(*ids), id_cmp))
            continue;
        atomic_fetch_add_explicit(&r->live, 1, memory_order_relaxed);
        atomic_store_explicit(&e->state, REG_LIVE, memory_order_release);
    }
    tide_free(ids);
    return rc;
}

/* ---- Batched creation --------------------------------------------------- */

static const char SQL_INSERT[] =
    "INSERT INTO series(id, account_id, device_id, field, type, created_ns)"
    " VALUES(?1, ?2, ?3, ?4, ?5, ?6)";
static const char SQL_SET_NEXT[] =
    "UPDATE counters SET value=?1 WHERE name='next_series_id'";
/* The live count is account_counts' (migration 5), not a count(*) over
 * the account's series per registering batch. */
static const char SQL_SERIES_LIMIT[] =
    "SELECT t.series_max, coalesce((SELECT c.series FROM account_counts c"
    " WHERE c.account_id=a.id), 0)"
    " FROM accounts a JOIN tiers t ON t.id=a.tier WHERE a.id=?1";

/* Room for `*left` more series in the account's tier (UINT64_MAX =
 * unlimited). */
static int series_room(tide_meta *m, uint64_t account_id, uint64_t *left)
{
    int64_t c[2]; /* series_max, live series */
    int rc;

    rc = tide__meta_ints(m, SQL_SERIES_LIMIT, c, 2,
                         META_ARGS(META_INT(account_id)));
    if (rc)
        return rc;
    *left = c[0] <= 0 ? UINT64_MAX : c[1] >= c[0] ? 0 : (uint64_t)(c[0] - c[1]);
    return 0;
}

int tide_meta_series_ensure(tide_meta *m, const struct tide_meta_principal *p,
                            const struct tide_meta_series_key *keys, size_t n,
                            uint64_t *ids, int *rcs)
{
    struct registry *r = &m->reg;
    struct reg_ent **made = NULL;
    uint64_t last_acct = 0, last_dev = 0, room_acct = 0, room = 0;
    uint64_t first_id = 0;
    size_t n_made = 0;
    int64_t now;
    int rc = 0, in_tx = 0;

    if (!keys || !ids || n == 0)
        return n == 0 ? 0 : TIDE_EINVAL;
    made = tide_malloc(n * sizeof(*made));
    if (!made)
        return -ENOMEM;
    tide__meta_lock(m);
    first_id = r->next_id;
    /* 1. Authorise every distinct (account, device) before any change. */
    for (size_t i = 0; i < n; i++) {
        if (!key_ok(&keys[i]))
            continue;
        if (keys[i].account_id == last_acct && keys[i].device_id == last_dev)
            continue;
        rc = tide__meta_authorize_locked(m, p, TIDE_META_ACT_TELEMETRY_WRITE,
                                         keys[i].account_id, keys[i].device_id);
        if (rc)
            goto fail;
        last_acct = keys[i].account_id;
        last_dev = keys[i].device_id;
    }
    now = tide__meta_now(m);
    /* 2. Resolve or create each key; new entries are PENDING (invisible
     * to lock-free readers) until the commit. */
    for (size_t i = 0; i < n; i++) {
        const struct tide_meta_series_key *k = &keys[i];
        struct reg_ent *e;
        uint64_t h;
        int krc = 0;

        ids[i] = 0;
        if (!key_ok(k)) {
            krc = TIDE_EINVAL;
            goto next;
        }
        h = key_hash(k->account_id, k->device_id, k->field, k->field_len);
        e = reg_find(r, h, k, REG_PENDING);
        if (e) {
            if (e->type != k->type)
                krc = TIDE_ETYPE;
            else
                ids[i] = e->id;
            goto next;
        }
        if (k->account_id != room_acct) {
            rc = series_room(m, k->account_id, &room);
            if (rc)
                goto fail;
            room_acct = k->account_id;
        }
        if (room == 0) {
            krc = TIDE_EFULL;
            goto next;
        }
        if (!in_tx) {
            rc = tide__meta_begin(m);
            if (rc)
                goto fail;
            in_tx = 1;
        }
        rc = tide__meta_run(
            m, SQL_INSERT,
            META_ARGS(META_INT(r->next_id), META_INT(k->account_id),
                      META_INT(k->device_id), META_BLOB(k->field, k->field_len),
                      META_INT(k->type), META_INT(now)));
        if (rc)
            goto fail;
        rc = reg_insert(r, h, k->account_id, k->device_id, k->field,
                        k->field_len, k->type, r->next_id, REG_PENDING, &e);
        if (rc)
            goto fail;
        made[n_made++] = e;
        ids[i] = r->next_id++;
        if (room != UINT64_MAX)
            room--;
    next:
        if (rcs)
            rcs[i] = krc;
    }
    if (in_tx) {
        rc = tide__meta_run(m, SQL_SET_NEXT, META_ARGS(META_INT(r->next_id)));
        if (rc)
            goto fail;
        in_tx = 0;
        rc = tide__meta_commit(m);
        if (rc)
            goto fail;
    }
    /* 3. Committed: publish. */
    for (size_t i = 0; i < n_made; i++)
        atomic_store_explicit(&made[i]->state, REG_LIVE, memory_order_release);
    atomic_fetch_add_explicit(&r->live, n_made, memory_order_relaxed);
    tide__meta_unlock(m);
    tide_free(made);
    return 0;

fail:
    if (in_tx)
        tide__meta_rollback(m);
    for (size_t i = 0; i < n_made; i++)
        atomic_store_explicit(&made[i]->state, REG_DEAD, memory_order_release);
    r->next_id = first_id;
    tide__meta_unlock(m);
    tide_free(made);
    for (size_t i = 0; i < n; i++) {
        ids[i] = 0;
        if (rcs)
            rcs[i] = rc;
    }
    return rc;
}

static const char SQL_LIST[] =
    "SELECT id, field, type FROM series WHERE account_id = ?1"
    " AND device_id = ?2 AND deleted_ns IS NULL ORDER BY field";

int tide_meta_series_list(tide_meta *m, uint64_t account_id, uint64_t device_id,
                          tide_meta_series_fn fn, void *ctx)
{
    struct listed {
        uint64_t id;
        uint8_t type;
        char field[TIDE_META_FIELD_MAX + 1];
    } *v = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *st;
    int rc, src;

    pthread_mutex_lock(&m->lock);
    rc = tide__meta_stmt(m, SQL_LIST, &st);
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)device_id);
        while ((src = sqlite3_step(st)) == SQLITE_ROW) {
            const unsigned char *f = sqlite3_column_text(st, 1);

            if (n == cap) {
                size_t c = cap ? 2 * cap : 16;
                struct listed *nv = tide_realloc(v, c * sizeof(*nv));

                if (!nv) {
                    rc = -ENOMEM;
                    break;
                }
                v = nv;
                cap = c;
            }
            v[n].id = (uint64_t)sqlite3_column_int64(st, 0);
            v[n].type = (uint8_t)sqlite3_column_int(st, 2);
            snprintf(v[n].field, sizeof(v[n].field), "%s",
                     f ? (const char *)f : "");
            n++;
        }
        if (rc == 0 && src != SQLITE_DONE)
            rc = tide__meta_sqlerr(src);
        sqlite3_reset(st);
    }
    pthread_mutex_unlock(&m->lock);
    /* The callback runs without the lock: it may call the sidecar. */
    for (size_t i = 0; rc == 0 && i < n; i++)
        fn(ctx, v[i].field, v[i].type, v[i].id);
    tide_free(v);
    return rc;
}
