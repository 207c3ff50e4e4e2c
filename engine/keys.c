/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The data-key cache of encryption at rest (keys.h). Keys are fetched from
 * the embedder once per account and kept, destroyed ones as such (a
 * destroyed key cannot come back); per-file subkeys are HKDF-SHA256 of
 * the data key with "tide <kind> v1" || salt as info, so every file has
 * keys of its own and a nonce only has to be unique within its file.
 */
#include "keys.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct key_slot {
    uint64_t account_id;
    int state; /* 0 empty, 1 key, 2 destroyed */
    uint8_t key[TIDE_KEY_BYTES];
};

struct keys {
    tide_data_key_fn fn;
    void *ctx;
    tide_keys_log_fn log;
    void *log_ctx;
    pthread_mutex_t mu;
    struct key_slot *slots; /* open addressing, cap a power of two */
    size_t n, cap;
    uint32_t id0;
};

static size_t slot_of(uint64_t a, size_t cap)
{
    a ^= a >> 33;
    a *= 0xff51afd7ed558ccdull;
    a ^= a >> 33;
    return (size_t)a & (cap - 1);
}

static struct key_slot *find(struct keys *k, uint64_t account_id)
{
    size_t i = slot_of(account_id, k->cap);

    while (k->slots[i].state && k->slots[i].account_id != account_id)
        i = (i + 1) & (k->cap - 1);
    return &k->slots[i];
}

static int grow(struct keys *k)
{
    struct key_slot *old = k->slots;
    size_t cap = k->cap;

    k->cap = cap ? cap * 2 : 64;
    k->slots = tide_calloc(k->cap, sizeof(*k->slots));
    if (!k->slots) {
        k->slots = old;
        k->cap = cap;
        return -ENOMEM;
    }
    for (size_t i = 0; i < cap; i++)
        if (old[i].state)
            *find(k, old[i].account_id) = old[i];
    if (old)
        tide_crypto_wipe(old, cap * sizeof(*old));
    tide_free(old);
    return 0;
}

/* The data key of `account_id` into `key`, under k->mu. */
static int get_locked(struct keys *k, uint64_t account_id,
                      uint8_t key[TIDE_KEY_BYTES])
{
    struct key_slot *s;
    int rc;

    if ((k->n + 1) * 2 > k->cap && (rc = grow(k)))
        return rc;
    s = find(k, account_id);
    if (!s->state) {
        rc = k->fn(k->ctx, account_id, s->key);
        if (rc && rc != TIDE_EKEY)
            return rc;
        s->account_id = account_id;
        s->state = rc ? 2 : 1;
        k->n++;
    }
    if (s->state == 2)
        return TIDE_EKEY;
    memcpy(key, s->key, TIDE_KEY_BYTES);
    return 0;
}

int tide__keys_new(tide_data_key_fn fn, void *ctx, tide_keys_log_fn log,
                   void *log_ctx, struct keys **out)
{
    struct keys *k = tide_calloc(1, sizeof(*k));
    uint8_t key[TIDE_KEY_BYTES], id[TIDE_KEY_ID_BYTES];
    int rc;

    if (!k)
        return -ENOMEM;
    k->fn = fn;
    k->ctx = ctx;
    k->log = log;
    k->log_ctx = log_ctx;
    pthread_mutex_init(&k->mu, NULL);
    rc = get_locked(k, 0, key);
    if (rc == 0)
        rc = tide_crypto_key_id(key, id);
    tide_crypto_wipe(key, sizeof(key));
    if (rc) {
        tide__keys_free(k);
        return rc;
    }
    k->id0 = tide__get_le32(id);
    *out = k;
    return 0;
}

void tide__keys_free(struct keys *k)
{
    if (!k)
        return;
    if (k->slots)
        tide_crypto_wipe(k->slots, k->cap * sizeof(*k->slots));
    tide_free(k->slots);
    pthread_mutex_destroy(&k->mu);
    tide_free(k);
}

uint32_t tide__keys_id(const struct keys *k)
{
    return k->id0;
}

int tide__keys_file(struct keys *k, uint64_t account_id, const char *kind,
                    const uint8_t salt[TIDE_SALT_BYTES], uint8_t out[32])
{
    uint8_t key[TIDE_KEY_BYTES], info[64];
    int len, rc;

    pthread_mutex_lock(&k->mu);
    rc = get_locked(k, account_id, key);
    pthread_mutex_unlock(&k->mu);
    if (rc)
        return rc;
    len = snprintf((char *)info, sizeof(info) - TIDE_SALT_BYTES, "tide %s v1",
                   kind);
    memcpy(info + len, salt, TIDE_SALT_BYTES);
    rc = tide_crypto_derive(key, info, (size_t)len + TIDE_SALT_BYTES, out);
    tide_crypto_wipe(key, sizeof(key));
    return rc;
}

int tide__keys_destroyed(struct keys *k, uint64_t account_id)
{
    uint8_t key[TIDE_KEY_BYTES];
    int rc;

    pthread_mutex_lock(&k->mu);
    rc = get_locked(k, account_id, key);
    pthread_mutex_unlock(&k->mu);
    tide_crypto_wipe(key, sizeof(key));
    return rc == TIDE_EKEY;
}

void tide__keys_forget(struct keys *k, uint64_t account_id)
{
    struct key_slot *old;
    size_t cap;

    pthread_mutex_lock(&k->mu);
    /* Rebuild without the slot: open addressing has no cheap delete. */
    old = k->slots;
    cap = k->cap;
    k->slots = tide_calloc(cap, sizeof(*k->slots));
    if (k->slots) {
        k->n = 0;
        for (size_t i = 0; i < cap; i++)
            if (old[i].state && old[i].account_id != account_id) {
                *find(k, old[i].account_id) = old[i];
                k->n++;
            }
        tide_crypto_wipe(old, cap * sizeof(*old));
        tide_free(old);
    } else {
        k->slots = old; /* out of memory: keep the cache as it is */
    }
    pthread_mutex_unlock(&k->mu);
}

/* ---- Per-thread GCM contexts --------------------------------------------- */

#define GCM_CACHE 16

struct gcm_cache {
    unsigned next; /* slot replaced on the next miss */
    struct {
        uint8_t key[TIDE_KEY_BYTES];
        tide_gcm *g;
    } slot[GCM_CACHE];
};

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static int cache_ok;

static void cache_free(void *p)
{
    struct gcm_cache *c = p;

    for (unsigned i = 0; i < GCM_CACHE; i++)
        tide_crypto_gcm_free(c->slot[i].g);
    OPENSSL_clear_free(c, sizeof(*c));
}

static void cache_init(void)
{
    cache_ok = pthread_key_create(&cache_key, cache_free) == 0;
}

/* This thread's context for `key`, or NULL (then the caller goes the
 * slow way). */
static tide_gcm *gcm_for(const uint8_t key[TIDE_KEY_BYTES])
{
    struct gcm_cache *c;
    unsigned i;

    pthread_once(&cache_once, cache_init);
    if (!cache_ok)
        return NULL;
    c = pthread_getspecific(cache_key);
    if (!c) {
        c = OPENSSL_zalloc(sizeof(*c));
        if (!c || pthread_setspecific(cache_key, c)) {
            OPENSSL_free(c);
            return NULL;
        }
    }
    for (i = 0; i < GCM_CACHE; i++)
        if (c->slot[i].g && !memcmp(c->slot[i].key, key, TIDE_KEY_BYTES))
            return c->slot[i].g;
    i = c->next++ % GCM_CACHE;
    tide_crypto_gcm_free(c->slot[i].g);
    c->slot[i].g = NULL;
    if (tide_crypto_gcm_new(key, &c->slot[i].g))
        return NULL;
    memcpy(c->slot[i].key, key, TIDE_KEY_BYTES);
    return c->slot[i].g;
}

int tide__keys_seal(const uint8_t key[TIDE_KEY_BYTES],
                    const uint8_t nonce[TIDE_NONCE_BYTES], const void *aad,
                    size_t aad_len, const void *in, size_t n, void *out,
                    uint8_t tag[TIDE_TAG_BYTES])
{
    tide_gcm *g = gcm_for(key);

    return g ? tide_crypto_gcm_seal(g, nonce, aad, aad_len, in, n, out, tag)
             : tide_crypto_seal(key, nonce, aad, aad_len, in, n, out, tag);
}

int tide__keys_open(const uint8_t key[TIDE_KEY_BYTES],
                    const uint8_t nonce[TIDE_NONCE_BYTES], const void *aad,
                    size_t aad_len, const void *in, size_t n, void *out,
                    const uint8_t tag[TIDE_TAG_BYTES])
{
    tide_gcm *g = gcm_for(key);

    return g ? tide_crypto_gcm_open(g, nonce, aad, aad_len, in, n, out, tag)
             : tide_crypto_open(key, nonce, aad, aad_len, in, n, out, tag);
}

void tide__keys_log(struct keys *k, enum tide_log_level level, const char *fmt,
                    ...)
{
    char msg[512];
    va_list ap;

    if (!k || !k->log)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    k->log(k->log_ctx, level, msg);
}

int tide__keys_log_cipher(struct keys *k, const char *what, const char *path,
                          uint64_t off)
{
    tide__keys_log(k, TIDE_LOG_ERROR,
                   "%s in %s at offset %llu failed authentication (AES-GCM "
                   "tag mismatch: corrupted, tampered with, or a wrong key)",
                   what, path, (unsigned long long)off);
    return TIDE_ECIPHER;
}
