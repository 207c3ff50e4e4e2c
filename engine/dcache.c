/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The decrypted-chunk cache (dcache.h): 16 shards by hash of the key, each
 * a chained hash table and an LRU list under its own mutex, each holding
 * at most a sixteenth of the budget. A hit copies the plaintext out under
 * the shard lock, so an entry is never freed while it is read.
 */
#include "dcache.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "tide/crypto.h"

#define DC_SHARDS 16
#define DC_BUCKETS 4096 /* per shard; chains stay short at 64 MiB */

struct dc_ent {
    uint64_t seg_id;
    uint64_t off;
    uint32_t len;
    struct dc_ent *hnext;       /* bucket chain */
    struct dc_ent *prev, *next; /* LRU: prev is more recent */
    uint8_t data[];
};

struct dc_shard {
    pthread_mutex_t mu;
    struct dc_ent *bucket[DC_BUCKETS];
    struct dc_ent *mru, *lru;
    uint64_t bytes, bytes_max;
};

struct dcache {
    struct dc_shard shard[DC_SHARDS];
};

static uint64_t mix(uint64_t seg_id, uint64_t off)
{
    uint64_t h = seg_id * 0x9e3779b97f4a7c15ull ^ off;

    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 29);
}

int tide__dcache_new(uint64_t bytes_max, struct dcache **out)
{
    struct dcache *c = tide_calloc(1, sizeof(*c));

    if (!c)
        return -ENOMEM;
    for (unsigned i = 0; i < DC_SHARDS; i++) {
        pthread_mutex_init(&c->shard[i].mu, NULL);
        c->shard[i].bytes_max = bytes_max / DC_SHARDS;
    }
    *out = c;
    return 0;
}

static void ent_free(struct dc_ent *e)
{
    tide_crypto_wipe(e->data, e->len);
    tide_free(e);
}

void tide__dcache_free(struct dcache *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < DC_SHARDS; i++) {
        struct dc_ent *e = c->shard[i].mru;

        while (e) {
            struct dc_ent *next = e->next;

            ent_free(e);
            e = next;
        }
        pthread_mutex_destroy(&c->shard[i].mu);
    }
    tide_free(c);
}

static void lru_unlink(struct dc_shard *s, struct dc_ent *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        s->mru = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        s->lru = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(struct dc_shard *s, struct dc_ent *e)
{
    e->prev = NULL;
    e->next = s->mru;
    if (s->mru)
        s->mru->prev = e;
    s->mru = e;
    if (!s->lru)
        s->lru = e;
}

/* The entry of (seg_id, off) in `s` and the link that points at it. */
static struct dc_ent **find(struct dc_shard *s, uint64_t h, uint64_t seg_id,
                            uint64_t off)
{
    struct dc_ent **p = &s->bucket[(h >> 4) % DC_BUCKETS];

    while (*p && ((*p)->seg_id != seg_id || (*p)->off != off))
        p = &(*p)->hnext;
    return p;
}

int tide__dcache_get(struct dcache *c, uint64_t seg_id, uint64_t off,
                     uint32_t len, uint8_t *out)
{
    uint64_t h = mix(seg_id, off);
    struct dc_shard *s = &c->shard[h % DC_SHARDS];
    struct dc_ent *e;
    int hit = 0;

    pthread_mutex_lock(&s->mu);
    e = *find(s, h, seg_id, off);
    if (e && e->len == len) {
        memcpy(out, e->data, len);
        lru_unlink(s, e);
        lru_push(s, e);
        hit = 1;
    }
    pthread_mutex_unlock(&s->mu);
    return hit;
}

void tide__dcache_put(struct dcache *c, uint64_t seg_id, uint64_t off,
                      const uint8_t *p, uint32_t len)
{
    uint64_t h = mix(seg_id, off);
    struct dc_shard *s = &c->shard[h % DC_SHARDS];
    struct dc_ent *e, **link;

    if ((uint64_t)len > s->bytes_max / 8)
        return;
    e = tide_malloc(sizeof(*e) + len);
    if (!e)
        return;
    e->seg_id = seg_id;
    e->off = off;
    e->len = len;
    memcpy(e->data, p, len);
    pthread_mutex_lock(&s->mu);
    link = find(s, h, seg_id, off);
    if (*link) { /* another reader was first */
        pthread_mutex_unlock(&s->mu);
        ent_free(e);
        return;
    }
    e->hnext = NULL;
    *link = e;
    lru_push(s, e);
    s->bytes += len;
    while (s->bytes > s->bytes_max && s->lru) {
        struct dc_ent *old = s->lru, **ol;

        lru_unlink(s, old);
        ol = find(s, mix(old->seg_id, old->off), old->seg_id, old->off);
        *ol = old->hnext;
        s->bytes -= old->len;
        ent_free(old);
    }
    pthread_mutex_unlock(&s->mu);
}
