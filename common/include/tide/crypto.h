/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cryptography every room shares, all of it OpenSSL 3 EVP: random
 * bytes, AES-256-GCM with additional data, HKDF-SHA256, HMAC-SHA256, the
 * operator's master key file, and data keys wrapped by it. Nothing here is
 * written by hand but the framing of the key file and of a wrapped key.
 * docs/file-format.md, "Encryption at rest", states how the rooms use them.
 *
 * Secrets are plain byte arrays of TIDE_KEY_BYTES: callers keep them in
 * memory they own and clear them with tide_crypto_wipe() when done.
 */
#ifndef TIDE_CRYPTO_H
#define TIDE_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define TIDE_KEY_BYTES 32   /* AES-256, HMAC and HKDF keys */
#define TIDE_NONCE_BYTES 12 /* GCM's 96-bit nonce */
#define TIDE_TAG_BYTES 16   /* GCM's full 128-bit tag */
#define TIDE_KEY_ID_BYTES 8 /* names a key without revealing it */
/* A wrapped data key: random nonce, ciphertext, tag. */
#define TIDE_WRAPPED_KEY_BYTES                                                 \
    (TIDE_NONCE_BYTES + TIDE_KEY_BYTES + TIDE_TAG_BYTES)

/* Fill `p` with `n` bytes from the OS-seeded CSPRNG. 0 or TIDE_EKEY. */
int tide_crypto_random(void *p, size_t n);

/* Zero `n` bytes at `p` in a way the compiler keeps (OPENSSL_cleanse). */
void tide_crypto_wipe(void *p, size_t n);

/* AES-256-GCM. Seal `n` bytes of `in` into `out` (the same `n` bytes; may
 * be `in` itself) and write the tag; `aad` (may be NULL when `aad_len` is
 * 0) is authenticated, not encrypted. Never call twice with one (key,
 * nonce). Returns 0, or TIDE_EKEY when OpenSSL fails. */
int tide_crypto_seal(const uint8_t key[TIDE_KEY_BYTES],
                     const uint8_t nonce[TIDE_NONCE_BYTES], const void *aad,
                     size_t aad_len, const void *in, size_t n, void *out,
                     uint8_t tag[TIDE_TAG_BYTES]);

/* The inverse: 0, or TIDE_ECIPHER when the tag does not verify (the block,
 * its additional data, nonce or key differ from the seal's); `out` holds
 * nothing usable then, and is zeroed. */
int tide_crypto_open(const uint8_t key[TIDE_KEY_BYTES],
                     const uint8_t nonce[TIDE_NONCE_BYTES], const void *aad,
                     size_t aad_len, const void *in, size_t n, void *out,
                     const uint8_t tag[TIDE_TAG_BYTES]);

/* HKDF-SHA256 (RFC 5869) with no salt: a key for one purpose, named by
 * `info`, from `key`. 0 or TIDE_EKEY. */
int tide_crypto_derive(const uint8_t key[TIDE_KEY_BYTES], const void *info,
                       size_t info_len, uint8_t out[TIDE_KEY_BYTES]);

/* HMAC-SHA256 of `n` bytes. 0 or TIDE_EKEY. */
int tide_crypto_hmac(const uint8_t key[TIDE_KEY_BYTES], const void *p, size_t n,
                     uint8_t out[32]);

/* The id of a key: the first 8 bytes of HMAC-SHA256(key, "tide key id").
 * Stored next to what a key protects, so that a wrong key is named at once
 * instead of failing as corruption. */
int tide_crypto_key_id(const uint8_t key[TIDE_KEY_BYTES],
                       uint8_t id[TIDE_KEY_ID_BYTES]);

/* The master key file: one line "tide-master-key-v1 " followed by 64 hex
 * digits and a newline. tide_crypto_master_create() makes a new random
 * one at `path` with mode 0600 (O_EXCL: never over an existing file) and
 * fsyncs it and its directory; 0, TIDE_EEXIST or -errno.
 * tide_crypto_master_load() reads one; 0, -errno (cannot open), TIDE_EPERM
 * (group or others may read or write it), or TIDE_EKEY (not a key file).
 * Either way `why` (when not NULL) gets a sentence for the operator. */
int tide_crypto_master_create(const char *path, char *why, size_t why_len);
int tide_crypto_master_load(const char *path, uint8_t key[TIDE_KEY_BYTES],
                            char *why, size_t why_len);

/* Wrap a data key under the master key: a fresh random nonce (wraps are
 * few — one per account and rotation — so random 96-bit nonces do not
 * collide), AES-256-GCM, and `aad` (what the key belongs to, e.g. the
 * account id) bound in. Unwrap returns 0, or TIDE_ECIPHER when the master
 * key or the aad is not the one it was wrapped with. */
int tide_crypto_wrap(const uint8_t master[TIDE_KEY_BYTES],
                     const uint8_t key[TIDE_KEY_BYTES], const void *aad,
                     size_t aad_len, uint8_t out[TIDE_WRAPPED_KEY_BYTES]);
int tide_crypto_unwrap(const uint8_t master[TIDE_KEY_BYTES],
                       const uint8_t in[TIDE_WRAPPED_KEY_BYTES],
                       const void *aad, size_t aad_len,
                       uint8_t key[TIDE_KEY_BYTES]);

/* A reusable AES-256-GCM context holding one key's schedule, for many
 * blocks under that key (the per-call setup of tide_crypto_seal costs
 * more than sealing a small block). One thread at a time. new: 0,
 * TIDE_EKEY or -ENOMEM; free accepts NULL. seal and open behave exactly
 * as tide_crypto_seal() and tide_crypto_open() with the context's key. */
typedef struct tide_gcm tide_gcm;
int tide_crypto_gcm_new(const uint8_t key[TIDE_KEY_BYTES], tide_gcm **out);
void tide_crypto_gcm_free(tide_gcm *g);
int tide_crypto_gcm_seal(tide_gcm *g, const uint8_t nonce[TIDE_NONCE_BYTES],
                         const void *aad, size_t aad_len, const void *in,
                         size_t n, void *out, uint8_t tag[TIDE_TAG_BYTES]);
int tide_crypto_gcm_open(tide_gcm *g, const uint8_t nonce[TIDE_NONCE_BYTES],
                         const void *aad, size_t aad_len, const void *in,
                         size_t n, void *out,
                         const uint8_t tag[TIDE_TAG_BYTES]);

#endif /* TIDE_CRYPTO_H */
