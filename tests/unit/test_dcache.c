/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of the decrypted-chunk cache (engine/dcache.c): hits copy exactly
 * what was put, a length or key that differs misses, the budget holds by
 * evicting the least recently used, and freeing returns every byte.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "dcache.h"
#include "internal.h"

Test(dcache, put_get_miss)
{
    struct dcache *c;
    uint8_t in[100], out[100];

    for (int i = 0; i < 100; i++)
        in[i] = (uint8_t)i;
    cr_assert_eq(tide__dcache_new(1u << 20, &c), 0);
    cr_assert_eq(tide__dcache_get(c, 1, 64, 100, out), 0);
    tide__dcache_put(c, 1, 64, in, 100);
    memset(out, 0, sizeof(out));
    cr_assert_eq(tide__dcache_get(c, 1, 64, 100, out), 1);
    cr_assert_arr_eq(out, in, 100);
    cr_assert_eq(tide__dcache_get(c, 1, 64, 99, out), 0);  /* length */
    cr_assert_eq(tide__dcache_get(c, 2, 64, 100, out), 0); /* segment */
    cr_assert_eq(tide__dcache_get(c, 1, 65, 100, out), 0); /* offset */
    tide__dcache_put(c, 1, 64, in, 100);                   /* a repeat */
    tide__dcache_free(c);
    tide__dcache_free(NULL);
}

/* 16 shards of 1/16 of the budget each: filling far past the budget keeps
 * the live bytes under it, keeps the newest entries and loses the oldest. */
Test(dcache, budget_evicts_least_recent)
{
    size_t base = tide_alloc_live_bytes();
    struct dcache *c;
    uint8_t buf[1000], out[1000];
    unsigned newest_hits = 0;

    memset(buf, 7, sizeof(buf));
    cr_assert_eq(tide__dcache_new(16u * 64 * 1024, &c), 0);
    for (uint64_t i = 0; i < 4000; i++)
        tide__dcache_put(c, 9, i * 1000, buf, sizeof(buf));
    cr_assert_lt(tide_alloc_live_bytes() - base,
                 16u * 64 * 1024 + sizeof(buf) * 64 + 16 * 4096 * 8 + 4096);
    cr_assert_eq(tide__dcache_get(c, 9, 0, sizeof(buf), out), 0);
    for (uint64_t i = 3990; i < 4000; i++)
        newest_hits +=
            (unsigned)tide__dcache_get(c, 9, i * 1000, sizeof(buf), out);
    cr_assert_eq(newest_hits, 10);
    /* Too large for a shard's eighth: not cached. */
    {
        static uint8_t big[16384];

        tide__dcache_put(c, 9, 1, big, sizeof(big));
        cr_assert_eq(tide__dcache_get(c, 9, 1, sizeof(big), big), 0);
    }
    tide__dcache_free(c);
    cr_assert_eq(tide_alloc_live_bytes(), base);
}
