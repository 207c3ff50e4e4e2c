/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tide/crypto.h over OpenSSL 3 EVP. The cipher and the MAC are fetched
 * once (pthread_once): an implicit fetch per call costs more than sealing
 * a small block.
 */
#include "tide/crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tide/error.h"

#define MASTER_MAGIC "tide-master-key-v1 "

static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *gcm;
static EVP_MAC *hmac;
static EVP_KDF *hkdf;

static void fetch(void)
{
    gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
}

static int fetched(void)
{
    pthread_once(&fetch_once, fetch);
    return gcm && hmac && hkdf;
}

int tide_crypto_random(void *p, size_t n)
{
    return RAND_bytes(p, (int)n) == 1 ? 0 : TIDE_EKEY;
}

void tide_crypto_wipe(void *p, size_t n)
{
    OPENSSL_cleanse(p, n);
}

/* One GCM pass under `key` through a context of its own (below). */
static int gcm_run(int seal, const uint8_t *key, const uint8_t *nonce,
                   const void *aad, size_t aad_len, const void *in, size_t n,
                   void *out, uint8_t *tag);

int tide_crypto_seal(const uint8_t key[TIDE_KEY_BYTES],
                     const uint8_t nonce[TIDE_NONCE_BYTES], const void *aad,
                     size_t aad_len, const void *in, size_t n, void *out,
                     uint8_t tag[TIDE_TAG_BYTES])
{
    return gcm_run(1, key, nonce, aad, aad_len, in, n, out, tag);
}

int tide_crypto_open(const uint8_t key[TIDE_KEY_BYTES],
                     const uint8_t nonce[TIDE_NONCE_BYTES], const void *aad,
                     size_t aad_len, const void *in, size_t n, void *out,
                     const uint8_t tag[TIDE_TAG_BYTES])
{
    return gcm_run(0, key, nonce, aad, aad_len, in, n, out, (uint8_t *)tag);
}

int tide_crypto_derive(const uint8_t key[TIDE_KEY_BYTES], const void *info,
                       size_t info_len, uint8_t out[TIDE_KEY_BYTES])
{
    EVP_KDF_CTX *ctx;
    OSSL_PARAM params[4];
    int ok;

    if (!fetched() || !(ctx = EVP_KDF_CTX_new(hkdf)))
        return TIDE_EKEY;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                                 (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                                  (void *)key, TIDE_KEY_BYTES);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
                                                  (void *)info, info_len);
    params[3] = OSSL_PARAM_construct_end();
    ok = EVP_KDF_derive(ctx, out, TIDE_KEY_BYTES, params) == 1;
    EVP_KDF_CTX_free(ctx);
    return ok ? 0 : TIDE_EKEY;
}

int tide_crypto_hmac(const uint8_t key[TIDE_KEY_BYTES], const void *p, size_t n,
                     uint8_t out[32])
{
    EVP_MAC_CTX *ctx;
    OSSL_PARAM params[2];
    size_t len = 0;
    int ok;

    if (!fetched() || !(ctx = EVP_MAC_CTX_new(hmac)))
        return TIDE_EKEY;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    ok = EVP_MAC_init(ctx, key, TIDE_KEY_BYTES, params) == 1 &&
         EVP_MAC_update(ctx, p, n) == 1 &&
         EVP_MAC_final(ctx, out, &len, 32) == 1 && len == 32;
    EVP_MAC_CTX_free(ctx);
    return ok ? 0 : TIDE_EKEY;
}

int tide_crypto_key_id(const uint8_t key[TIDE_KEY_BYTES],
                       uint8_t id[TIDE_KEY_ID_BYTES])
{
    uint8_t mac[32];
    int rc = tide_crypto_hmac(key, "tide key id", 11, mac);

    if (!rc)
        memcpy(id, mac, TIDE_KEY_ID_BYTES);
    return rc;
}

static void say(char *why, size_t cap, const char *fmt, const char *path,
                const char *detail)
{
    if (why && cap)
        snprintf(why, cap, fmt, path, detail);
}

/* fsync the directory holding `path`, so that a new file's name is as
 * durable as its bytes. */
static int sync_parent(const char *path)
{
    char copy[4096];
    int fd, rc = 0;

    if (strlen(path) >= sizeof(copy))
        return -ENAMETOOLONG;
    strcpy(copy, path);
    fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fsync(fd))
        rc = -errno;
    close(fd);
    return rc;
}

int tide_crypto_master_create(const char *path, char *why, size_t why_len)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t key[TIDE_KEY_BYTES];
    char line[sizeof(MASTER_MAGIC) + 2 * TIDE_KEY_BYTES + 1];
    size_t at = strlen(MASTER_MAGIC);
    int fd, rc;

    if (tide_crypto_random(key, sizeof(key))) {
        say(why, why_len, "%s: %s", path, "no random bytes from OpenSSL");
        return TIDE_EKEY;
    }
    memcpy(line, MASTER_MAGIC, at);
    for (size_t i = 0; i < TIDE_KEY_BYTES; i++) {
        line[at++] = hex[key[i] >> 4];
        line[at++] = hex[key[i] & 15];
    }
    line[at++] = '\n';
    tide_crypto_wipe(key, sizeof(key));
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = errno == EEXIST ? TIDE_EEXIST : -errno;
        say(why, why_len, "%s: %s", path,
            rc == TIDE_EEXIST ? "exists; a key file is never overwritten"
                              : strerror(errno));
        tide_crypto_wipe(line, sizeof(line));
        return rc;
    }
    rc = write(fd, line, at) == (ssize_t)at ? 0 : -(errno ? errno : EIO);
    tide_crypto_wipe(line, sizeof(line));
    if (!rc && fsync(fd))
        rc = -errno;
    if (close(fd) && !rc)
        rc = -errno;
    if (!rc)
        rc = sync_parent(path);
    if (rc) {
        unlink(path);
        say(why, why_len, "%s: %s", path, strerror(-rc));
    }
    return rc;
}

static int unhex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int tide_crypto_master_load(const char *path, uint8_t key[TIDE_KEY_BYTES],
                            char *why, size_t why_len)
{
    char buf[sizeof(MASTER_MAGIC) + 2 * TIDE_KEY_BYTES + 8];
    size_t magic = strlen(MASTER_MAGIC);
    struct stat st;
    ssize_t n;
    int fd, rc = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        rc = -errno;
        say(why, why_len, "cannot open master key %s: %s", path,
            strerror(errno));
        return rc;
    }
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        say(why, why_len, "master key %s: %s", path, "not a regular file");
        return TIDE_EKEY;
    }
    if (st.st_mode & 077) {
        close(fd);
        say(why, why_len, "master key %s: %s", path,
            "group or others may access it; run chmod 600 on it");
        return TIDE_EPERM;
    }
    n = read(fd, buf, sizeof(buf));
    close(fd);
    if (n < (ssize_t)(magic + 2 * TIDE_KEY_BYTES) ||
        memcmp(buf, MASTER_MAGIC, magic) ||
        (n > (ssize_t)(magic + 2 * TIDE_KEY_BYTES) &&
         buf[magic + 2 * TIDE_KEY_BYTES] != '\n'))
        rc = TIDE_EKEY;
    for (size_t i = 0; !rc && i < TIDE_KEY_BYTES; i++) {
        int hi = unhex(buf[magic + 2 * i]), lo = unhex(buf[magic + 2 * i + 1]);

        if (hi < 0 || lo < 0)
            rc = TIDE_EKEY;
        else
            key[i] = (uint8_t)(hi << 4 | lo);
    }
    tide_crypto_wipe(buf, sizeof(buf));
    if (rc) {
        tide_crypto_wipe(key, TIDE_KEY_BYTES);
        say(why, why_len, "master key %s: %s", path,
            "not a Tide master key file (make one with tide admin keygen)");
    }
    return rc;
}

int tide_crypto_wrap(const uint8_t master[TIDE_KEY_BYTES],
                     const uint8_t key[TIDE_KEY_BYTES], const void *aad,
                     size_t aad_len, uint8_t out[TIDE_WRAPPED_KEY_BYTES])
{
    int rc = tide_crypto_random(out, TIDE_NONCE_BYTES);

    if (!rc)
        rc = tide_crypto_seal(master, out, aad, aad_len, key, TIDE_KEY_BYTES,
                              out + TIDE_NONCE_BYTES,
                              out + TIDE_NONCE_BYTES + TIDE_KEY_BYTES);
    return rc;
}

int tide_crypto_unwrap(const uint8_t master[TIDE_KEY_BYTES],
                       const uint8_t in[TIDE_WRAPPED_KEY_BYTES],
                       const void *aad, size_t aad_len,
                       uint8_t key[TIDE_KEY_BYTES])
{
    return tide_crypto_open(master, in, aad, aad_len, in + TIDE_NONCE_BYTES,
                            TIDE_KEY_BYTES, key,
                            in + TIDE_NONCE_BYTES + TIDE_KEY_BYTES);
}

/* ---- Reusable GCM contexts ----------------------------------------------- */

struct tide_gcm {
    EVP_CIPHER_CTX *ctx;
};

int tide_crypto_gcm_new(const uint8_t key[TIDE_KEY_BYTES], tide_gcm **out)
{
    tide_gcm *g;

    if (!fetched())
        return TIDE_EKEY;
    g = OPENSSL_zalloc(sizeof(*g));
    if (!g)
        return -ENOMEM;
    g->ctx = EVP_CIPHER_CTX_new();
    /* The key schedule (and GHASH tables) are made once, here; each block
     * then only sets its nonce. */
    if (!g->ctx || EVP_CipherInit_ex2(g->ctx, gcm, key, NULL, 1, NULL) != 1) {
        tide_crypto_gcm_free(g);
        return TIDE_EKEY;
    }
    *out = g;
    return 0;
}

void tide_crypto_gcm_free(tide_gcm *g)
{
    if (!g)
        return;
    EVP_CIPHER_CTX_free(g->ctx); /* clears the key schedule */
    OPENSSL_free(g);
}

/* One GCM pass on `g`'s key; `seal` picks the direction. */
static int gcm_ctx_run(tide_gcm *g, int seal, const uint8_t *nonce,
                       const void *aad, size_t aad_len, const void *in,
                       size_t n, void *out, uint8_t *tag)
{
    int len, ok;

    if (n > INT32_MAX || aad_len > INT32_MAX)
        return TIDE_EKEY;
    ok = EVP_CipherInit_ex2(g->ctx, NULL, NULL, nonce, seal, NULL) == 1 &&
         (!aad_len ||
          EVP_CipherUpdate(g->ctx, NULL, &len, aad, (int)aad_len) == 1) &&
         (!n || EVP_CipherUpdate(g->ctx, out, &len, in, (int)n) == 1);
    if (ok && !seal)
        ok = EVP_CIPHER_CTX_ctrl(g->ctx, EVP_CTRL_GCM_SET_TAG, TIDE_TAG_BYTES,
                                 tag) == 1;
    if (ok)
        ok = EVP_CipherFinal_ex(g->ctx, (uint8_t *)out + n, &len) == 1;
    if (ok && seal)
        ok = EVP_CIPHER_CTX_ctrl(g->ctx, EVP_CTRL_GCM_GET_TAG, TIDE_TAG_BYTES,
                                 tag) == 1;
    if (ok)
        return 0;
    if (seal)
        return TIDE_EKEY;
    OPENSSL_cleanse(out, n);
    return TIDE_ECIPHER;
}

static int gcm_run(int seal, const uint8_t *key, const uint8_t *nonce,
                   const void *aad, size_t aad_len, const void *in, size_t n,
                   void *out, uint8_t *tag)
{
    tide_gcm *g;
    int rc = tide_crypto_gcm_new(key, &g);

    if (rc)
        return TIDE_EKEY;
    rc = gcm_ctx_run(g, seal, nonce, aad, aad_len, in, n, out, tag);
    tide_crypto_gcm_free(g);
    return rc;
}

int tide_crypto_gcm_seal(tide_gcm *g, const uint8_t nonce[TIDE_NONCE_BYTES],
                         const void *aad, size_t aad_len, const void *in,
                         size_t n, void *out, uint8_t tag[TIDE_TAG_BYTES])
{
    return gcm_ctx_run(g, 1, nonce, aad, aad_len, in, n, out, tag);
}

int tide_crypto_gcm_open(tide_gcm *g, const uint8_t nonce[TIDE_NONCE_BYTES],
                         const void *aad, size_t aad_len, const void *in,
                         size_t n, void *out, const uint8_t tag[TIDE_TAG_BYTES])
{
    return gcm_ctx_run(g, 0, nonce, aad, aad_len, in, n, out, (uint8_t *)tag);
}
