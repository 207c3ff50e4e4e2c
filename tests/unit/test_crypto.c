/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of common/crypto.c: AES-256-GCM, HKDF, HMAC, key wrapping and the
 * master key file. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tide/crypto.h"
#include "tide/error.h"

static const uint8_t key[TIDE_KEY_BYTES] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
static const uint8_t nonce[TIDE_NONCE_BYTES] = {9, 8, 7};

Test(crypto, seal_then_open_round_trips_and_hides_the_text)
{
    const char text[] = "device-berlin-01 temperature 21.5";
    uint8_t ct[sizeof(text)], pt[sizeof(text)], tag[TIDE_TAG_BYTES];

    cr_assert_eq(
        tide_crypto_seal(key, nonce, "aad", 3, text, sizeof(text), ct, tag), 0);
    cr_assert_neq(memcmp(ct, text, sizeof(text)), 0);
    cr_assert_eq(
        tide_crypto_open(key, nonce, "aad", 3, ct, sizeof(ct), pt, tag), 0);
    cr_assert_str_eq((char *)pt, text);
}

Test(crypto, any_change_fails_authentication)
{
    uint8_t in[64], ct[64], pt[64], tag[TIDE_TAG_BYTES], bad[TIDE_KEY_BYTES];

    memset(in, 0x5a, sizeof(in));
    cr_assert_eq(tide_crypto_seal(key, nonce, "f1@0", 4, in, 64, ct, tag), 0);
    for (int bit = 0; bit < 64 * 8; bit += 37) {
        ct[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        cr_assert_eq(tide_crypto_open(key, nonce, "f1@0", 4, ct, 64, pt, tag),
                     TIDE_ECIPHER, "bit %d", bit);
        ct[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    /* Another position (aad), nonce, key, tag or length: refused. */
    cr_assert_eq(tide_crypto_open(key, nonce, "f1@1", 4, ct, 64, pt, tag),
                 TIDE_ECIPHER);
    cr_assert_eq(tide_crypto_open(key, key, "f1@0", 4, ct, 64, pt, tag),
                 TIDE_ECIPHER);
    memcpy(bad, key, sizeof(bad));
    bad[31] ^= 1;
    cr_assert_eq(tide_crypto_open(bad, nonce, "f1@0", 4, ct, 64, pt, tag),
                 TIDE_ECIPHER);
    cr_assert_eq(tide_crypto_open(key, nonce, "f1@0", 4, ct, 63, pt, tag),
                 TIDE_ECIPHER);
    tag[0] ^= 1;
    cr_assert_eq(tide_crypto_open(key, nonce, "f1@0", 4, ct, 64, pt, tag),
                 TIDE_ECIPHER);
    for (int i = 0; i < 63; i++)
        cr_assert_eq(pt[i], 0, "a refused block leaves no plaintext");
}

Test(crypto, derive_and_hmac_are_stable_and_distinct)
{
    uint8_t a[TIDE_KEY_BYTES], b[TIDE_KEY_BYTES], c[TIDE_KEY_BYTES];
    uint8_t m1[32], m2[32], id[TIDE_KEY_ID_BYTES];

    cr_assert_eq(tide_crypto_derive(key, "wal", 3, a), 0);
    cr_assert_eq(tide_crypto_derive(key, "wal", 3, b), 0);
    cr_assert_eq(tide_crypto_derive(key, "seg", 3, c), 0);
    cr_assert_eq(memcmp(a, b, sizeof(a)), 0);
    cr_assert_neq(memcmp(a, c, sizeof(a)), 0);
    cr_assert_eq(tide_crypto_hmac(key, "a@b.c", 5, m1), 0);
    cr_assert_eq(tide_crypto_hmac(a, "a@b.c", 5, m2), 0);
    cr_assert_neq(memcmp(m1, m2, 32), 0);
    cr_assert_eq(tide_crypto_key_id(key, id), 0);
    cr_assert_neq(memcmp(id, m1, sizeof(id)), 0);
}

Test(crypto, wrap_binds_master_key_and_owner)
{
    uint8_t dk[TIDE_KEY_BYTES], out[TIDE_KEY_BYTES], w1[TIDE_WRAPPED_KEY_BYTES],
        w2[TIDE_WRAPPED_KEY_BYTES], other[TIDE_KEY_BYTES] = {7};

    cr_assert_eq(tide_crypto_random(dk, sizeof(dk)), 0);
    cr_assert_eq(tide_crypto_wrap(key, dk, "acct 1", 6, w1), 0);
    cr_assert_eq(tide_crypto_wrap(key, dk, "acct 1", 6, w2), 0);
    cr_assert_neq(memcmp(w1, w2, sizeof(w1)), 0, "a fresh nonce each wrap");
    cr_assert_eq(tide_crypto_unwrap(key, w1, "acct 1", 6, out), 0);
    cr_assert_eq(memcmp(out, dk, sizeof(dk)), 0);
    cr_assert_eq(tide_crypto_unwrap(other, w1, "acct 1", 6, out), TIDE_ECIPHER);
    cr_assert_eq(tide_crypto_unwrap(key, w1, "acct 2", 6, out), TIDE_ECIPHER);
}

Test(crypto, master_key_file_is_private_and_checked)
{
    char dir[] = "/tmp/tide-crypto-XXXXXX", path[256], why[256];
    uint8_t k1[TIDE_KEY_BYTES], k2[TIDE_KEY_BYTES];
    struct stat st;
    FILE *f;

    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/master.key", dir);
    cr_assert_eq(tide_crypto_master_create(path, why, sizeof(why)), 0);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    cr_assert_eq(tide_crypto_master_create(path, why, sizeof(why)), TIDE_EEXIST,
                 "never overwrites a key");
    cr_assert_eq(tide_crypto_master_load(path, k1, why, sizeof(why)), 0);
    cr_assert_eq(tide_crypto_master_load(path, k2, why, sizeof(why)), 0);
    cr_assert_eq(memcmp(k1, k2, sizeof(k1)), 0);

    chmod(path, 0640);
    cr_assert_eq(tide_crypto_master_load(path, k2, why, sizeof(why)),
                 TIDE_EPERM);
    cr_assert(strstr(why, "chmod 600"), "%s", why);
    chmod(path, 0600);

    f = fopen(path, "r+");
    cr_assert(f);
    fseek(f, 30, SEEK_SET);
    fputc('z', f); /* not hex */
    fclose(f);
    cr_assert_eq(tide_crypto_master_load(path, k2, why, sizeof(why)),
                 TIDE_EKEY);
    unlink(path);
    cr_assert_eq(tide_crypto_master_load(path, k2, why, sizeof(why)), -ENOENT);
    cr_assert(strstr(why, path), "%s", why);
    rmdir(dir);
}
