/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Description: the retention and erasure promises of issue 11, against the
 * real tided. An account's points behind its current horizon are never
 * returned and are gone after compaction; a purged account's and a deleted
 * device's telemetry is physically erased: after the erasure that the
 * purge (or deletion) schedules, (a) the engine, opening the data
 * directory itself, decodes no point of theirs from any segment, head or
 * live WAL file; (b) no file of the data directory holds a byte of their
 * names or string values; (c) the control data is intact, point for point.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tide/client.h"
#include "tide/engine.h"
#include "wire.h"

#define NS 1000000000ll
#define POINTS 120      /* per series */
#define DEVICES 2       /* per data set */
#define STR_LEN 64      /* random string values */
#define SERIES_MAX 4096 /* ids the engine check reads: every one made here */

static tide_client *open_client(const char *key, const char *token)
{
    struct tide_client_options o;
    tide_client *c = NULL;
    int rc;

    tide_client_options_init(&o);
    o.port = (uint16_t)srv.port;
    o.api_key = key;
    o.session_token = token;
    rc = tide_client_open(&o, &c);
    cr_assert_eq(rc, 0, "tide_client_open: %s", tide_strerror(rc));
    return c;
}

/* tide_client_call() asserting success; the result is freed. */
static void call_ok(tide_client *c, const char *req, const char *const *args,
                    size_t n)
{
    int rc = tide_client_call(c, req, args, n, NULL);

    cr_assert_eq(rc, 0, "%s: %s", req, tide_strerror(rc));
}

/* As the operator: an account of `email` on tier "unlimited" (30 days).
 * Returns its id. */
static uint64_t make_account(tide_client *admin, const char *email)
{
    const char *args[3] = {"tier.name=unlimited",
                           "tier.telemetry_ttl_s=2592000"};
    char arg[160];
    tide_result *r = NULL;
    uint64_t id;
    int rc;

    call_ok(admin, "tier_upsert", args, 2);
    snprintf(arg, sizeof(arg), "email=%s", email);
    args[0] = arg;
    args[1] = "password=correct horse battery";
    args[2] = "tier=unlimited";
    rc = tide_client_call(admin, "account_create", args, 3, &r);
    cr_assert_eq(rc, 0, "account_create: %s", tide_strerror(rc));
    id = strtoull(tide_result_find(r, 0, "account.id"), NULL, 10);
    tide_result_free(r);
    return id;
}

/* A client of the owner of `email`, by password login. */
static tide_client *owner_client(const char *email)
{
    char arg[160], token[256];
    const char *args[2] = {arg, "password=correct horse battery"};
    tide_client *anon = open_client(NULL, NULL), *c;
    tide_result *r = NULL;

    snprintf(arg, sizeof(arg), "email=%s", email);
    cr_assert_eq(tide_client_call(anon, "login", args, 2, &r), 0);
    snprintf(token, sizeof(token), "%s",
             tide_result_find(r, 0, "session_token"));
    tide_result_free(r);
    tide_client_close(anon);
    c = open_client(NULL, token);
    return c;
}

/* ---- Data sets ------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng(void)
{
    uint64_t x = rng_state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* `len` random printable ASCII characters but '"' and '\\' (92 symbols,
 * 6.5 bits each): LZ4 finds next to no repeats to shorten them and
 * stores them verbatim. */
static void rand_text(char *out, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char ch;

        do
            ch = (char)(0x21 + rng() % 94);
        while (ch == '"' || ch == '\\');
        out[i] = ch;
    }
    out[len] = '\0';
}

/* What one party writes: DEVICES devices, each with a float field and a
 * string field of POINTS points, every name and value distinctive. */
struct dataset {
    char device[DEVICES][48];
    char f_field[DEVICES][48];
    char s_field[DEVICES][48];
    double f[DEVICES][POINTS];
    char s[DEVICES][POINTS][STR_LEN + 1];
};

static struct dataset *dataset_new(const char *tag)
{
    struct dataset *d = calloc(1, sizeof(*d));
    char r[13];

    cr_assert(d);
    for (int k = 0; k < DEVICES; k++) {
        rand_text(r, 12);
        snprintf(d->device[k], sizeof(d->device[k]), "%s-dev-%s", tag, r);
        rand_text(r, 12);
        snprintf(d->f_field[k], sizeof(d->f_field[k]), "%s-flt-%s", tag, r);
        rand_text(r, 12);
        snprintf(d->s_field[k], sizeof(d->s_field[k]), "%s-str-%s", tag, r);
        for (int i = 0; i < POINTS; i++) {
            /* 53 random bits: no two values of the test are equal. */
            d->f[k][i] = (double)(rng() >> 11) / 9007199254740992.0 * 1e9;
            rand_text(d->s[k][i], STR_LEN);
        }
    }
    return d;
}

static int64_t wall_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

static int64_t ts_of(int i)
{
    return T0 + (int64_t)i * NS;
}

static void dataset_write(tide_client *c, const struct dataset *d)
{
    struct tide_client_stats st;

    for (int k = 0; k < DEVICES; k++) {
        for (int i = 0; i < POINTS; i++) {
            cr_assert_eq(tide_write_f64(c, d->device[k], d->f_field[k],
                                        ts_of(i), d->f[k][i]),
                         0);
            cr_assert_eq(tide_write_str(c, d->device[k], d->s_field[k],
                                        ts_of(i), d->s[k][i]),
                         0);
        }
    }
    cr_assert_eq(tide_flush(c), 0);
    tide_client_stats_get(c, &st);
    cr_assert_eq(st.points_rejected, 0);
}

/* (c): every point of device k of `d` (account `account`), exactly, by
 * the operator's query. */
static void expect_device_intact(tide_client *admin, uint64_t account,
                                 const struct dataset *d, int k)
{
    const char *devices[1] = {d->device[k]};
    const char *fields[2] = {d->f_field[k], d->s_field[k]};
    struct tide_query_params q = {.devices = devices,
                                  .n_devices = 1,
                                  .fields = fields,
                                  .n_fields = 2,
                                  .from_ns = T0,
                                  .to_ns = T0 + 3600 * NS,
                                  .account_id = account};
    struct tide_series_block b;
    tide_query_iter *it;
    size_t nf = 0, ns = 0;
    int rc;

    cr_assert_eq(tide_query_open(admin, &q, &it), 0);
    while ((rc = tide_query_next(it, &b)) == 0) {
        int is_f = !strcmp(b.field, d->f_field[k]);
        size_t *at = is_f ? &nf : &ns;

        cr_assert(is_f || !strcmp(b.field, d->s_field[k]), "field %s", b.field);
        for (size_t i = 0; i < b.n; i++, (*at)++) {
            cr_assert_lt(*at, POINTS);
            cr_assert_eq(b.ts_ns[i], ts_of((int)*at));
            if (is_f)
                cr_assert_eq(b.f64[i], d->f[k][*at], "%s point %zu", b.field,
                             *at);
            else
                cr_assert_str_eq(b.str[i], d->s[k][*at]);
        }
    }
    cr_assert_eq(rc, TIDE_CLIENT_DONE, "query: %s", tide_strerror(rc));
    tide_query_close(it);
    cr_assert_eq(nf, POINTS, "%s: %zu points", d->f_field[k], nf);
    cr_assert_eq(ns, POINTS, "%s: %zu points", d->s_field[k], ns);
}

/* ---- /metrics ----------------------------------------------------------- */

/* The value of metric `name` now (asserted present). */
static uint64_t metric(const char *name)
{
    int status = 0;
    char *body = http_get(srv.http_port, "/metrics", &status), key[128];
    const char *p;
    uint64_t v;

    cr_assert(body && status == 200, "GET /metrics: %d", status);
    snprintf(key, sizeof(key), "\n%s ", name);
    p = strstr(body, key);
    cr_assert(p, "/metrics has no %s", name);
    v = strtoull(p + strlen(key), NULL, 10);
    free(body);
    return v;
}

/* Wait until compaction ran more than `runs_before` jobs, `counter`
 * moved past `counter_before`, and it stayed idle with the same number of
 * runs for three polls 250 ms apart; asserts within `timeout_s`. */
static void wait_compaction(uint64_t runs_before, const char *counter,
                            uint64_t counter_before, int timeout_s)
{
    uint64_t last = UINT64_MAX;
    int stable = 0;

    for (int i = 0; i < timeout_s * 4; i++) {
        uint64_t runs = metric("tide_compaction_runs_total");
        int ok = runs > runs_before && metric("tide_compaction_running") == 0 &&
                 metric(counter) > counter_before;

        stable = ok && runs == last ? stable + 1 : 0;
        last = ok ? runs : UINT64_MAX;
        if (stable == 2)
            return;
        usleep(250 * 1000);
    }
    cr_assert_fail("no compaction within %d s (runs %llu -> %llu)", timeout_s,
                   (unsigned long long)runs_before,
                   (unsigned long long)metric("tide_compaction_runs_total"));
}

/* ---- (b): raw bytes of every file ------------------------------------- */

struct needles {
    const char **s;
    size_t n;
    size_t *hits; /* per needle */
    uint64_t files, bytes;
};

static void needles_add(struct needles *nd, const char *s)
{
    nd->s = realloc(nd->s, (nd->n + 1) * sizeof(*nd->s));
    cr_assert(nd->s);
    nd->s[nd->n++] = s;
}

static void needles_dataset(struct needles *nd, const struct dataset *d,
                            int k_from, int k_to)
{
    for (int k = k_from; k < k_to; k++) {
        needles_add(nd, d->device[k]);
        needles_add(nd, d->f_field[k]);
        needles_add(nd, d->s_field[k]);
        for (int i = 0; i < POINTS; i++)
            needles_add(nd, d->s[k][i]);
    }
}

static void scan_file(struct needles *nd, const char *path)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    char *buf;
    size_t got = 0;

    cr_assert_geq(fd, 0, "open %s", path);
    cr_assert_eq(fstat(fd, &st), 0);
    buf = malloc((size_t)st.st_size + 1);
    cr_assert(buf);
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);

        cr_assert_gt(r, 0, "read %s", path);
        got += (size_t)r;
    }
    close(fd);
    nd->files++;
    nd->bytes += got;
    for (size_t i = 0; i < nd->n; i++)
        if (memmem(buf, got, nd->s[i], strlen(nd->s[i])))
            nd->hits[i]++;
    free(buf);
}

/* Every regular file under `path`, recursively (depth-bounded), but the
 * test harness's own log of tided's stderr. */
static void scan_tree(struct needles *nd, const char *path, int depth)
{
    DIR *d = opendir(path);
    struct dirent *e;

    cr_assert(d, "opendir %s", path);
    cr_assert_lt(depth, 8);
    while ((e = readdir(d))) {
        char sub[PATH_MAX];
        struct stat st;

        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
            (depth == 0 && !strcmp(e->d_name, "tided.log")))
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
        cr_assert_eq(lstat(sub, &st), 0);
        if (S_ISDIR(st.st_mode))
            scan_tree(nd, sub, depth + 1);
        else if (S_ISREG(st.st_mode))
            scan_file(nd, sub);
    }
    closedir(d);
}

static void scan_dir(struct needles *nd)
{
    free(nd->hits);
    nd->hits = calloc(nd->n ? nd->n : 1, sizeof(*nd->hits));
    cr_assert(nd->hits);
    nd->files = nd->bytes = 0;
    scan_tree(nd, dir, 0);
}

static size_t needles_found(const struct needles *nd)
{
    size_t n = 0;

    for (size_t i = 0; i < nd->n; i++)
        n += nd->hits[i] != 0;
    return n;
}

/* The scan sees verbatim strings: at least 98 % of `nd` found. A chance
 * 4-byte repeat between two random strings may let LZ4 encode a match
 * inside one, and a WAL block header may split one; the erased strings,
 * though, must be found nowhere at all. */
static int needles_mostly_found(const struct needles *nd)
{
    return needles_found(nd) * 100 >= nd->n * 98;
}

/* No byte of `gone` in any file of the data directory; most of `kept`
 * found there (so the scan would have seen the erased ones). */
static void check_raw_scans(struct needles *gone, struct needles *kept)
{
    scan_dir(gone);
    for (size_t i = 0; i < gone->n; i++)
        cr_expect_eq(gone->hits[i], 0, "'%s' survives in the data directory",
                     gone->s[i]);
    cr_assert_eq(needles_found(gone), 0);
    scan_dir(kept);
    cr_assert(needles_mostly_found(kept),
              "only %zu of %zu kept strings are found", needles_found(kept),
              kept->n);
}

/* Wait until the head is flushed into segments (flush_interval_ms). */
static void wait_flushed(void)
{
    for (int i = 0; i < 120 && metric("tide_engine_head_points") > 0; i++)
        usleep(250 * 1000);
    cr_assert_eq(metric("tide_engine_head_points"), 0, "head not flushed");
    cr_assert_gt(metric("tide_engine_segments"), 0);
}

static void needles_free(struct needles *nd)
{
    free(nd->s);
    free(nd->hits);
}

/* ---- (a): the engine's own decoding of the directory -------------------- */

/* Whether `v` is one of the floats or strings of devices [k_from, k_to)
 * of `d`. */
static int holds_f64(const struct dataset *d, int k_from, int k_to, double v)
{
    for (int k = k_from; k < k_to; k++)
        for (int i = 0; i < POINTS; i++)
            if (d->f[k][i] == v)
                return 1;
    return 0;
}

static int holds_str(const struct dataset *d, int k_from, int k_to,
                     const struct tide_str *s)
{
    for (int k = k_from; k < k_to; k++)
        for (int i = 0; i < POINTS; i++)
            if (s->len == STR_LEN && !memcmp(d->s[k][i], s->ptr, STR_LEN))
                return 1;
    return 0;
}

/*
 * With tided stopped: open the data directory with the engine and decode
 * every point of every series id it could hold (segments, and the WAL
 * replayed into the heads). None may be one of devices [k_from, k_to) of
 * `gone`; `kept_points` of the others must be there. When `account` is
 * not 0, the engine's account report (segment footers, heads and every
 * live WAL file) must find nothing of it.
 */
static void engine_check(const struct dataset *gone, int k_from, int k_to,
                         uint64_t account, uint64_t kept_points)
{
    tide_db *db = NULL;
    tide_iter *it = NULL;
    struct tide_block b;
    uint64_t *ids = malloc(SERIES_MAX * sizeof(*ids)), total = 0, bad = 0;
    int rc;

    cr_assert(ids);
    for (uint32_t i = 0; i < SERIES_MAX; i++)
        ids[i] = i + 1;
    rc = tide_db_open(dir, NULL, &db);
    cr_assert_eq(rc, 0, "tide_db_open: %s", tide_strerror(rc));
    cr_assert_eq(
        tide_db_read_open(db, ids, SERIES_MAX, INT64_MIN, INT64_MAX, &it), 0);
    while ((rc = tide_iter_next(it, &b)) == 1) {
        for (uint32_t i = 0; i < b.n; i++) {
            total++;
            if ((b.type == TIDE_TYPE_F64 &&
                 holds_f64(gone, k_from, k_to, b.v.f64[i])) ||
                (b.type == TIDE_TYPE_STR &&
                 holds_str(gone, k_from, k_to, &b.v.str[i])))
                bad++;
        }
    }
    cr_assert_eq(rc, 0, "tide_iter_next: %s", tide_strerror(rc));
    tide_iter_close(it);
    cr_assert_eq(bad, 0, "%llu erased points decoded from the data directory",
                 (unsigned long long)bad);
    cr_assert_eq(total, kept_points, "%llu points decoded, %llu expected",
                 (unsigned long long)total, (unsigned long long)kept_points);
    if (account) {
        struct tide_account_usage u;

        rc = tide_db_account_usage(db, account, TIDE_USAGE_WAL, &u);
        cr_assert_eq(rc, 0, "tide_db_account_usage: %s", tide_strerror(rc));
        cr_assert_eq(u.points + u.head_points + u.segments + u.wal_files, 0,
                     "the erased account still has %llu points, %llu "
                     "segments, %llu WAL files",
                     (unsigned long long)u.points,
                     (unsigned long long)u.segments,
                     (unsigned long long)u.wal_files);
        cr_assert_gt(u.files_scanned, 0, "evidence: files examined");
        cr_log_info("engine report: %llu files, %llu bytes examined",
                    (unsigned long long)u.files_scanned,
                    (unsigned long long)u.bytes_scanned);
    }
    tide_db_close(db);
    free(ids);
}

/* ---- The tests ---------------------------------------------------------- */

static void setup(void)
{
    /* Segments soon after the writes, so that the erasure has segments to
     * rewrite; no routine pass: only the erasure the purge schedules. */
    static const char *const settings[] = {"flush_interval_ms=200",
                                           "compaction_interval_s=0", NULL};
    char seed[32];

    rng_state = (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid();
    if (!rng_state)
        rng_state = 1;
    snprintf(seed, sizeof(seed), "%llu", (unsigned long long)rng_state);
    cr_log_info("random seed %s", seed);
    fixture_start(settings);
}

TestSuite(erasure, .init = setup, .fini = fixture_fini, .timeout = 180);

Test(erasure, purged_account_leaves_no_byte)
{
    tide_client *admin = open_client(srv.admin_key, NULL), *w;
    struct dataset *victim = dataset_new("victim"),
                   *control = dataset_new("control");
    struct needles gone = {0}, kept = {0};
    uint64_t va, ca, runs;
    char arg[64];
    const char *args[2] = {arg, "immediate=true"};

    va = make_account(admin, "victim@erasure.example");
    ca = make_account(admin, "control@erasure.example");
    w = owner_client("victim@erasure.example");
    dataset_write(w, victim);
    tide_client_close(w);
    w = owner_client("control@erasure.example");
    dataset_write(w, control);
    tide_client_close(w);
    wait_flushed(); /* the points are in segments */

    /* The scan sees what is there: every name and string, before. */
    needles_dataset(&gone, victim, 0, DEVICES);
    needles_add(&gone, "victim@erasure.example");
    needles_dataset(&kept, control, 0, DEVICES);
    scan_dir(&gone);
    cr_assert(needles_mostly_found(&gone),
              "before the purge only %zu of %zu victim strings are found",
              needles_found(&gone), gone.n);

    runs = metric("tide_compaction_runs_total");
    snprintf(arg, sizeof(arg), "account_id=%llu", (unsigned long long)va);
    call_ok(admin, "account_delete", args, 2);
    wait_compaction(runs, "tide_compaction_points_erased_total", 0, 60);

    /* (c) The control account, point for point. */
    for (int k = 0; k < DEVICES; k++)
        expect_device_intact(admin, ca, control, k);
    tide_client_close(admin);
    cr_assert_eq(tided_stop(&srv), 0, "clean shutdown");

    /* (b) No byte of the victim's names or strings in any file; the
     * control's strings are all there (the scan would see them). */
    check_raw_scans(&gone, &kept);
    cr_log_info("raw scan: %llu files, %llu bytes",
                (unsigned long long)gone.files, (unsigned long long)gone.bytes);

    /* (a) The engine decodes nothing of it. */
    engine_check(victim, 0, DEVICES, va, 2ull * DEVICES * POINTS);
    needles_free(&gone);
    needles_free(&kept);
    free(victim);
    free(control);
}

Test(erasure, deleted_device_leaves_no_byte)
{
    tide_client *admin = open_client(srv.admin_key, NULL), *w;
    /* Device 0 of `d` is deleted; device 1 of the same account and the
     * control account stay. */
    struct dataset *d = dataset_new("owner"), *control = dataset_new("other");
    struct needles gone = {0}, kept = {0};
    uint64_t a, ca, runs;
    char arg[2][96];
    const char *args[2] = {arg[0], arg[1]};

    a = make_account(admin, "devices@erasure.example");
    ca = make_account(admin, "other@erasure.example");
    w = owner_client("devices@erasure.example");
    dataset_write(w, d);
    tide_client_close(w);
    w = owner_client("other@erasure.example");
    dataset_write(w, control);
    tide_client_close(w);
    wait_flushed();

    needles_dataset(&gone, d, 0, 1);
    needles_dataset(&kept, d, 1, DEVICES);
    needles_dataset(&kept, control, 0, DEVICES);
    scan_dir(&gone);
    cr_assert(needles_mostly_found(&gone),
              "before the deletion only %zu of %zu strings are found",
              needles_found(&gone), gone.n);

    runs = metric("tide_compaction_runs_total");
    snprintf(arg[0], sizeof(arg[0]), "name=%s", d->device[0]);
    snprintf(arg[1], sizeof(arg[1]), "account_id=%llu", (unsigned long long)a);
    call_ok(admin, "device_delete", args, 2);
    wait_compaction(runs, "tide_compaction_points_erased_total", 0, 60);

    for (int k = 1; k < DEVICES; k++)
        expect_device_intact(admin, a, d, k);
    for (int k = 0; k < DEVICES; k++)
        expect_device_intact(admin, ca, control, k);
    tide_client_close(admin);
    cr_assert_eq(tided_stop(&srv), 0, "clean shutdown");

    check_raw_scans(&gone, &kept);

    engine_check(d, 0, 1, 0, 2ull * (2 * DEVICES - 1) * POINTS);
    needles_free(&gone);
    needles_free(&kept);
    free(d);
    free(control);
}

/* ---- Retention: reads filter by the current horizon --------------------- */

static void retention_setup(void)
{
    /* A routine compaction pass every second. */
    static const char *const settings[] = {"flush_interval_ms=200",
                                           "compaction_interval_s=1", NULL};

    rng_state = (uint64_t)time(NULL) | 1;
    fixture_start(settings);
}

TestSuite(retention, .init = retention_setup, .fini = fixture_fini,
          .timeout = 120);

/* Points of `account` in [from, to) by the operator's query of every
 * series: raw points, or the counts of aggregate buckets. */
static size_t count_points(tide_client *admin, uint64_t account, int64_t from,
                           int64_t to, enum tide_agg agg, int64_t bucket_ns)
{
    struct tide_query_params q = {.from_ns = from,
                                  .to_ns = to,
                                  .account_id = account,
                                  .agg = agg,
                                  .bucket_ns = bucket_ns,
                                  .bucket_offset_ns = from}; /* from `from` */
    struct tide_series_block b;
    tide_query_iter *it;
    size_t n = 0;
    int rc;

    cr_assert_eq(tide_query_open(admin, &q, &it), 0);
    while ((rc = tide_query_next(it, &b)) == 0) {
        if (b.counts)
            for (size_t i = 0; i < b.n; i++)
                n += b.counts[i];
        else
            n += b.n;
    }
    cr_assert_eq(rc, TIDE_CLIENT_DONE, "query: %s", tide_strerror(rc));
    tide_query_close(it);
    return n;
}

/* The body of both retention tests: with `forced`, the operator's
 * AdminCompact (wait) removes the points, else the routine pass. */
static void shortened_ttl(int forced)
{
    tide_client *admin = open_client(srv.admin_key, NULL), *w;
    struct dataset *d = dataset_new("ttl");
    uint64_t a, expired;
    char arg[64];
    const char *args[2];
    int64_t now;

    a = make_account(admin, "ttl@retention.example");
    w = owner_client("ttl@retention.example");
    dataset_write(w, d); /* an hour old: inside the 30 days */
    cr_assert_eq(count_points(admin, a, INT64_MIN, INT64_MAX, TIDE_AGG_NONE, 0),
                 2 * DEVICES * POINTS);

    /* The plan changes to an 8-second retention: the hour-old points are
     * behind it at once, a point written now for 8 s more (room for a
     * slow sanitizer build). */
    args[0] = "tier.name=brief";
    args[1] = "tier.telemetry_ttl_s=8";
    call_ok(admin, "tier_upsert", args, 2);
    snprintf(arg, sizeof(arg), "account_id=%llu", (unsigned long long)a);
    args[0] = arg;
    args[1] = "tier=brief";
    call_ok(admin, "tier_set", args, 2);
    expired = metric("tide_compaction_points_expired_total");

    /* Nothing of the old points is returned, however asked; a point
     * written now is. */
    now = wall_ns();
    cr_assert_eq(tide_write_f64(w, d->device[0], d->f_field[0], now, 1.5), 0);
    cr_assert_eq(tide_flush(w), 0);
    {
        struct tide_client_stats st;

        tide_client_stats_get(w, &st);
        cr_assert_eq(st.points_rejected, 0);
    }
    tide_client_close(w);
    cr_assert_eq(count_points(admin, a, now - NS, now + NS, TIDE_AGG_NONE, 0),
                 1, "the new point");
    {
        size_t n =
            count_points(admin, a, INT64_MIN, INT64_MAX, TIDE_AGG_NONE, 0);

        cr_assert_eq(n, 1, "%zu points of every time", n);
    }
    cr_assert_eq(count_points(admin, a, T0, now, TIDE_AGG_NONE, 0), 0);
    cr_assert_eq(count_points(admin, a, T0, now + NS, TIDE_AGG_COUNT, 0), 1);
    /* Two-hour buckets from T0, an hour ago: the one holding the
     * horizon (and the new point) is left out, not partly counted. */
    cr_assert_eq(
        count_points(admin, a, T0, now + NS, TIDE_AGG_COUNT, 7200 * NS), 0,
        "the bucket holding the horizon is left out");
    usleep(8500 * 1000);
    cr_assert_eq(count_points(admin, a, INT64_MIN, INT64_MAX, TIDE_AGG_NONE, 0),
                 0, "the new point expired too");

    /* Compaction drops them from disk: whole windows behind the horizon
     * are deleted, mixed ones rewritten. */
    if (forced) {
        const char *wait[1] = {"wait=true"};

        cr_assert_eq(metric("tide_engine_head_points"), 0);
        call_ok(admin, "admin_compact", wait, 1);
    }
    for (int i = 0; !forced && i < 240 &&
                    (metric("tide_engine_segments") > 0 ||
                     metric("tide_engine_head_points") > 0 ||
                     metric("tide_compaction_running") > 0);
         i++)
        usleep(250 * 1000);
    cr_assert_eq(metric("tide_engine_segments"), 0, "expired segments stay");
    cr_assert_eq(metric("tide_engine_head_points"), 0);
    cr_assert_gt(metric("tide_compaction_files_deleted_total"), 0);
    cr_assert_eq(metric("tide_compaction_oldest_uncompacted_window_seconds"), 0,
                 "nothing is left to compact");
    cr_assert_eq(metric("tide_compaction_errors_total"), 0);
    /* Present, whatever their values. */
    metric("tide_compaction_bytes_read_total");
    metric("tide_compaction_bytes_written_total");
    metric("tide_compaction_points_erased_total");
    cr_log_info(
        "points expired by compaction: %llu",
        (unsigned long long)(metric("tide_compaction_points_expired_total") -
                             expired));
    tide_client_close(admin);
    cr_assert_eq(tided_stop(&srv), 0, "clean shutdown");
    engine_check(d, 0, DEVICES, 0, 0);
    free(d);
}

Test(retention, points_behind_a_shortened_ttl_are_not_read_then_gone)
{
    shortened_ttl(0);
}

static void forced_setup(void)
{
    /* No routine pass: only the operator's AdminCompact. */
    static const char *const settings[] = {"flush_interval_ms=200",
                                           "compaction_interval_s=0", NULL};

    rng_state = (uint64_t)time(NULL) | 1;
    fixture_start(settings);
}

TestSuite(retention_forced, .init = forced_setup, .fini = fixture_fini,
          .timeout = 120);

Test(retention_forced, admin_compact_removes_what_a_shortened_ttl_expired)
{
    shortened_ttl(1);
}
