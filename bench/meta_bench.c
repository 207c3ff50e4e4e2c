/* SPDX-License-Identifier: Apache-2.0 */
/*
 * meta_bench: the accounts sidecar in-process. Measures the three targets
 * of issue 4: resolving existing series keys (lock-free registry lookups
 * on one core), creating new series in batches, and authenticating an API
 * key (SHA-256 + indexed lookup). Prints its configuration and p50/p99/max
 * from a log-linear histogram. Uses only meta.h.
 *
 * Usage: meta_bench [-s series] [-b batch] [-l lookups] [-a auths] [-d dir]
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tide/crypto.h"
#include "tide/meta.h"

struct config {
    uint32_t series;
    uint32_t batch;
    uint64_t lookups;
    uint32_t auths;
    const char *dir;
};

/* Latency histogram: buckets of 1/16 of a power of two, in ns. */
#define HBUCKETS (64 * 16)
struct hist {
    uint64_t n;
    uint64_t max;
    uint64_t b[HBUCKETS];
};

static unsigned hbucket(uint64_t v)
{
    unsigned e, m;

    if (v < 16)
        return (unsigned)v;
    e = 63u - (unsigned)__builtin_clzll(v);
    m = (unsigned)(v >> (e - 4)) & 15u;
    return (e - 3) * 16 + m;
}

static uint64_t hvalue(unsigned b)
{
    unsigned e = b / 16 + 3, m = b % 16;

    if (b < 16)
        return b;
    return ((uint64_t)(16 + m)) << (e - 4);
}

static void hadd(struct hist *h, uint64_t v)
{
    h->b[hbucket(v)]++;
    h->n++;
    if (v > h->max)
        h->max = v;
}

static uint64_t hpct(const struct hist *h, double p)
{
    uint64_t want = (uint64_t)((double)h->n * p), seen = 0;

    for (unsigned i = 0; i < HBUCKETS; i++) {
        seen += h->b[i];
        if (seen > want)
            return hvalue(i);
    }
    return h->max;
}

static uint64_t now_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "meta_bench: %s: %s\n", what, tide_strerror(rc));
    exit(1);
}

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

int main(int argc, char **argv)
{
    struct config c = {1000000, 100000, 20000000, 20000, NULL};
    struct tide_meta_options o;
    struct tide_meta_principal anon = {0}, owner, dk, kp;
    struct tide_meta_account_new a = {.email = "bench@example.com",
                                      .password = "bench-password"};
    struct tide_meta_device_new dn = {.thing_name = "bench-device"};
    struct tide_meta_series_key *keys;
    struct hist h;
    char tmpl[] = "/tmp/tide-meta-bench-XXXXXX";
    char token[TIDE_META_SECRET_MAX + 1], secret[TIDE_META_SECRET_MAX + 1];
    char(*names)[24];
    uint64_t *ids, acct, dev, t0, t1, sink = 0, seed = 42;
    double create_first_s = 0, create_total_s;
    tide_meta *m;
    uint8_t master[TIDE_KEY_BYTES];
    int opt, rc, own_dir = 0, encrypt = 0;

    while ((opt = getopt(argc, argv, "s:b:l:a:d:k")) != -1) {
        switch (opt) {
        case 's':
            c.series = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'b':
            c.batch = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'l':
            c.lookups = strtoull(optarg, NULL, 10);
            break;
        case 'a':
            c.auths = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'd':
            c.dir = optarg;
            break;
        case 'k':
            encrypt = 1;
            break;
        default:
            fprintf(stderr, "usage: meta_bench [-s series] [-b batch]"
                            " [-l lookups] [-a auths] [-d dir] [-k]\n");
            return 2;
        }
    }
    if (c.series == 0 || c.batch == 0 || c.batch > c.series)
        c.batch = c.series ? c.series : 1;
    if (!c.dir) {
        c.dir = mkdtemp(tmpl);
        if (!c.dir)
            die("mkdtemp", -errno);
        own_dir = 1;
    }
    printf("meta_bench: dir=%s series=%" PRIu32 " batch=%" PRIu32
           " lookups=%" PRIu64 " auths=%" PRIu32
           " bcrypt_cost=12 flush_interval_ms=1000 encrypt=%d\n",
           c.dir, c.series, c.batch, c.lookups, c.auths, encrypt);

    tide_meta_options_init(&o);
    if (encrypt) {
        /* -k: encryption at rest under a random master key. */
        if (tide_crypto_random(master, sizeof(master)))
            die("random", TIDE_EKEY);
        o.master_key = master;
    }
    rc = tide_meta_open(c.dir, &o, &m);
    if (rc)
        die("open", rc);
    rc = tide_meta_account_create(m, &anon, &a, &acct, NULL);
    if (!rc)
        rc =
            tide_meta_login(m, a.email, a.password, "127.0.0.1", token, &owner);
    if (rc)
        die("account", rc);
    {
        /* An unlimited tier for the series count. */
        char adm[TIDE_META_SECRET_MAX + 2], path[PATH_MAX];
        struct tide_meta_principal ap;
        FILE *f;

        snprintf(path, sizeof(path), "%s/admin.key", c.dir);
        f = fopen(path, "r");
        if (!f || !fgets(adm, sizeof(adm), f))
            die("admin.key", -EIO);
        fclose(f);
        adm[strcspn(adm, "\n")] = '\0';
        rc = tide_meta_key_auth(m, adm, NULL, &ap);
        if (!rc)
            rc = tide_meta_account_set_tier(m, &ap, acct, 2, NULL, NULL, NULL);
        if (rc)
            die("set tier", rc);
    }
    rc = tide_meta_device_register(m, &owner, acct, &dn, &dev);
    if (rc)
        die("device", rc);
    rc = tide_meta_key_create(m, &owner, acct, TIDE_META_ROLE_DEVICE, dev,
                              "bench", secret, NULL);
    if (rc)
        die("key", rc);

    keys = calloc(c.series, sizeof(*keys));
    ids = calloc(c.series, sizeof(*ids));
    names = calloc(c.series, sizeof(*names));
    if (!keys || !ids || !names)
        die("calloc", -ENOMEM);
    for (uint32_t i = 0; i < c.series; i++) {
        keys[i].account_id = acct;
        keys[i].device_id = dev;
        keys[i].field_len =
            (uint32_t)snprintf(names[i], sizeof(names[i]), "cpu.usage_%u", i);
        keys[i].field = names[i];
        keys[i].type = 1;
    }

    /* 1. Create the series in batches. */
    t0 = now_ns();
    for (uint32_t i = 0; i < c.series; i += c.batch) {
        uint32_t n = c.series - i < c.batch ? c.series - i : c.batch;
        uint64_t b0 = now_ns();

        rc = tide_meta_series_ensure(m, &owner, keys + i, n, ids + i, NULL);
        if (rc)
            die("series_ensure", rc);
        if (i == 0)
            create_first_s = (double)(now_ns() - b0) / 1e9;
    }
    create_total_s = (double)(now_ns() - t0) / 1e9;
    printf("create: first batch of %" PRIu32 " new series %.3f s;"
           " all %" PRIu32 " in %.3f s (%.0f series/s)\n",
           c.batch, create_first_s, c.series, create_total_s,
           c.series / create_total_s);

    /* 2. Resolve existing keys, random order, one thread. */
    {
        uint32_t *order = malloc(sizeof(*order) * 1048576);

        if (!order)
            die("malloc", -ENOMEM);
        for (uint32_t i = 0; i < 1048576; i++)
            order[i] = (uint32_t)(next_rand(&seed) % c.series);
        for (int pass = 0; pass < 2; pass++) {
            uint32_t span =
                pass == 0 ? (c.series < 10000 ? c.series : 10000) : c.series;

            t0 = now_ns();
            for (uint64_t i = 0; i < c.lookups; i++) {
                uint32_t k = order[i & 1048575] % span;
                uint64_t id;

                if (tide_meta_series_lookup(m, &keys[k], &id))
                    die("lookup", TIDE_ENOTFOUND);
                sink += id;
            }
            t1 = now_ns();
            printf("resolve: %" PRIu64 " lookups over %" PRIu32
                   " hot series: %.1f M lookups/s (%.1f ns each)\n",
                   c.lookups, span, (double)c.lookups / ((t1 - t0) / 1e9) / 1e6,
                   (double)(t1 - t0) / (double)c.lookups);
        }
        free(order);
    }

    /* 3. API key authentication. */
    memset(&h, 0, sizeof(h));
    for (uint32_t i = 0; i < c.auths; i++) {
        t0 = now_ns();
        rc = tide_meta_key_auth(m, secret, "10.0.0.1", &kp);
        t1 = now_ns();
        if (rc)
            die("key_auth", rc);
        hadd(&h, t1 - t0);
    }
    dk = kp;
    printf("key_auth: n=%" PRIu64 " p50=%.2f us p99=%.2f us max=%.2f us\n", h.n,
           hpct(&h, 0.50) / 1e3, hpct(&h, 0.99) / 1e3, h.max / 1e3);

    /* 4. The data keys the storage engine asks for, and the write path's
     * registration of a new fleet's devices (sealed thing names and their
     * lookup hashes when encrypted). */
    if (encrypt) {
        uint8_t k[TIDE_KEY_BYTES];
        uint64_t n = 1000000;

        t0 = now_ns();
        for (uint64_t i = 0; i < n; i++)
            sink += tide_meta_data_key(m, i & 1 ? acct : 0, k) == 0 ? k[0] : 0;
        t1 = now_ns();
        tide_crypto_wipe(k, sizeof(k));
        printf("data_key: n=%" PRIu64 " %.1f ns each\n", n,
               (double)(t1 - t0) / (double)n);
    }
    {
        enum { FLEET = 10000 };
        static char fleet[FLEET][24];
        const char **fn = calloc(FLEET, sizeof(*fn));
        uint64_t *fid = calloc(FLEET, sizeof(*fid));
        int *frc = calloc(FLEET, sizeof(*frc));

        if (!fn || !fid || !frc)
            die("calloc", -ENOMEM);
        for (int i = 0; i < FLEET; i++) {
            snprintf(fleet[i], sizeof(fleet[i]), "fleet-device-%d", i);
            fn[i] = fleet[i];
        }
        t0 = now_ns();
        rc = tide_meta_device_register_many(m, &owner, acct, fn, FLEET, fid,
                                            frc);
        t1 = now_ns();
        if (rc)
            die("register_many", rc);
        printf("register_many: %d devices %.3f s (%.1f us each)\n", FLEET,
               (t1 - t0) / 1e9, (t1 - t0) / 1e3 / FLEET);
        free(fn);
        free(fid);
        free(frc);
    }

    /* 5. One password login at the default cost, for scale. */
    t0 = now_ns();
    rc = tide_meta_login(m, a.email, a.password, "127.0.0.1", token, &kp);
    t1 = now_ns();
    if (rc)
        die("login", rc);
    printf("login: bcrypt cost 12: %.1f ms\n", (t1 - t0) / 1e6);

    (void)dk;
    tide_meta_close(m);
    free(keys);
    free(ids);
    free(names);
    printf("(checksum %" PRIu64 ")\n", sink);
    if (own_dir) {
        static const char *files[] = {"meta.db", "meta.db-wal", "meta.db-shm",
                                      "admin.key"};
        char path[PATH_MAX];

        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
            snprintf(path, sizeof(path), "%s/%s", c.dir, files[i]);
            unlink(path);
        }
        rmdir(c.dir);
    }
    return 0;
}
