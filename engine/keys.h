/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Encryption at rest: the engine's cache of the data keys its embedder's
 * data_key() callback hands out, the per-file subkeys derived from them,
 * and the one place that logs an authentication failure with its file and
 * offset. docs/file-format.md, "Encryption at rest", is the specification.
 */
#ifndef TIDE_ENGINE_KEYS_H
#define TIDE_ENGINE_KEYS_H

#include "internal.h"

#include "tide/crypto.h"

#define TIDE_SALT_BYTES 16u /* per file, random */

/* Callback of tide_db_options.data_key. */
typedef int (*tide_data_key_fn)(void *ctx, uint64_t account_id,
                                uint8_t key[32]);
typedef void (*tide_keys_log_fn)(void *ctx, enum tide_log_level level,
                                 const char *msg);

struct keys;

/* A cache over `fn`. Fetches key 0 at once: 0, TIDE_EKEY (no engine key)
 * or -ENOMEM. `log` may be NULL. */
int tide__keys_new(tide_data_key_fn fn, void *ctx, tide_keys_log_fn log,
                   void *log_ctx, struct keys **out);
void tide__keys_free(struct keys *k);

/* The 4-byte id of the engine key (key 0) stored in file headers, so that
 * a wrong key is named as such instead of failing as corruption. */
uint32_t tide__keys_id(const struct keys *k);

/* The subkey of `account_id` for one file: HKDF(data key, "tide <kind>
 * v1" || salt). 0, or TIDE_EKEY when the account's key was destroyed. */
int tide__keys_file(struct keys *k, uint64_t account_id, const char *kind,
                    const uint8_t salt[TIDE_SALT_BYTES], uint8_t out[32]);

/* 1 when the key of `account_id` was destroyed (data_key() answers
 * TIDE_EKEY), else 0; any other failure counts as 0. */
int tide__keys_destroyed(struct keys *k, uint64_t account_id);

/* Forget the cached key of `account_id`, so the next use asks again. */
void tide__keys_forget(struct keys *k, uint64_t account_id);

/* A 12-byte GCM nonce from a 64-bit counter and a 32-bit domain. */
static inline void tide__keys_nonce(uint8_t nonce[TIDE_NONCE_BYTES],
                                    uint64_t ctr, uint32_t domain)
{
    tide__put_le64(nonce, ctr);
    tide__put_le32(nonce + 8, domain);
}

/* tide_crypto_seal() and tide_crypto_open() through a per-thread cache of
 * GCM contexts by key, so that the blocks of one file, which share a
 * subkey, pay the key setup once per thread. The contexts are OpenSSL's
 * (not counted by tide_alloc_live_bytes) and live until the thread
 * exits, or until 16 other keys have displaced them. */
int tide__keys_seal(const uint8_t key[TIDE_KEY_BYTES],
                    const uint8_t nonce[TIDE_NONCE_BYTES], const void *aad,
                    size_t aad_len, const void *in, size_t n, void *out,
                    uint8_t tag[TIDE_TAG_BYTES]);
int tide__keys_open(const uint8_t key[TIDE_KEY_BYTES],
                    const uint8_t nonce[TIDE_NONCE_BYTES], const void *aad,
                    size_t aad_len, const void *in, size_t n, void *out,
                    const uint8_t tag[TIDE_TAG_BYTES]);

/* Log (at ERROR) that the block at `off` of `path` failed authentication;
 * returns TIDE_ECIPHER. `k` may be NULL (silent). */
int tide__keys_log_cipher(struct keys *k, const char *what, const char *path,
                          uint64_t off);

/* Log a line through the db's sink (at `level`). */
void tide__keys_log(struct keys *k, enum tide_log_level level, const char *fmt,
                    ...) __attribute__((format(printf, 3, 4)));

#endif /* TIDE_ENGINE_KEYS_H */
