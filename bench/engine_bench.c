/* SPDX-License-Identifier: Apache-2.0 */
/*
 * engine_bench: the storage engine in-process, without the network, on a
 * seeded TSBS-like fleet: D devices x 10 f64 fields at a 10 s interval,
 * each field a bounded random walk in 0..100 with 2 decimals. Measures
 * ingest for sync=none and sync=batch, ingest for sync=batch again while
 * a reader thread loops aggregates and range reads over the data being
 * written (readers must not slow the writer), bytes per point after flush,
 * raw decode speed, the four reference queries and the latest point of
 * every series (medians); then a full compaction (its speed, bytes per
 * point and the queries after it), and ingest for sync=batch while
 * compaction passes loop. With --encrypt, every file is written with
 * encryption at rest (AES-256-GCM, a fixed benchmark key per account), so
 * runs with and without it compare. Uses only the public engine.h.
 */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tide/engine.h"

#define FIELDS 10
#define INTERVAL_NS 10000000000ll
#define HOUR_NS 3600000000000ll
#define START_NS 1700000000000000000ll

struct config {
    unsigned devices;
    double hours;
    unsigned threads;
    unsigned reps;
    uint64_t seed;
    int json;
    int encrypt; /* --encrypt: encryption at rest on */
    const char *dir;
};

static int encrypt_on;

struct fleet {
    uint64_t producer; /* first producer id of its ingest threads */
    uint32_t steps;
    uint32_t series;
    int64_t *ts;  /* steps */
    double *vals; /* series x steps */
};

static double now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* CPU time of the whole process, every thread. */
static double cpu_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

/* Generate the whole fleet before anything is timed. */
static int fleet_make(const struct config *c, struct fleet *f)
{
    uint64_t seed = c->seed ? c->seed : 1;

    f->steps = (uint32_t)(c->hours * 3600e9 / INTERVAL_NS);
    f->series = c->devices * FIELDS;
    f->ts = malloc((size_t)f->steps * sizeof(*f->ts));
    f->vals = malloc((size_t)f->series * f->steps * sizeof(*f->vals));
    if (!f->ts || !f->vals)
        return -ENOMEM;
    for (uint32_t i = 0; i < f->steps; i++)
        f->ts[i] = START_NS + (int64_t)i * INTERVAL_NS;
    for (uint32_t s = 0; s < f->series; s++) {
        int64_t cents = (int64_t)(next_rand(&seed) % 10001);
        double *v = f->vals + (size_t)s * f->steps;

        for (uint32_t i = 0; i < f->steps; i++) {
            cents += (int64_t)(next_rand(&seed) % 201) - 100;
            if (cents < 0)
                cents = -cents;
            if (cents > 10000)
                cents = 20000 - cents;
            v[i] = (double)cents / 100.0;
        }
    }
    return 0;
}

/* ---- Ingest ------------------------------------------------------------- */

#define WINDOW_STEPS 60u  /* 10 minutes per batch */
#define BATCH_DEVICES 50u /* devices per batch */
#define INFLIGHT_MAX 32

/* Points queued by every ingest thread: what a concurrent measurement
 * reads (at most INFLIGHT_MAX batches per thread ahead of the acks). */
static atomic_uint_fast64_t points_sent;

struct ingester {
    tide_db *db;
    const struct fleet *f;
    unsigned idx;
    unsigned n;
    atomic_int inflight;
    atomic_int err;
};

static void on_ack(void *ctx, int rc)
{
    struct ingester *in = ctx;

    if (rc && rc != TIDE_EDUPLICATE)
        atomic_store(&in->err, rc);
    atomic_fetch_sub(&in->inflight, 1);
}

static void *ingest_main(void *arg)
{
    struct ingester *in = arg;
    const struct fleet *f = in->f;
    uint32_t devices = f->series / FIELDS;
    struct tide_column cols[BATCH_DEVICES * FIELDS];
    uint64_t seq = 0;

    for (uint32_t w = 0; w < f->steps; w += WINDOW_STEPS) {
        uint32_t steps =
            f->steps - w < WINDOW_STEPS ? f->steps - w : WINDOW_STEPS;

        for (uint32_t d0 = in->idx * BATCH_DEVICES; d0 < devices;
             d0 += in->n * BATCH_DEVICES) {
            uint32_t nd =
                devices - d0 < BATCH_DEVICES ? devices - d0 : BATCH_DEVICES;
            struct tide_batch b = {.producer_id = f->producer + in->idx + 1,
                                   .sequence = ++seq,
                                   .n_columns = nd * FIELDS,
                                   .columns = cols};
            int rc;

            for (uint32_t k = 0; k < nd * FIELDS; k++) {
                uint32_t s = d0 * FIELDS + k;

                cols[k] = (struct tide_column){
                    .series_id = s + 1,
                    .account_id = 1,
                    .type = TIDE_TYPE_F64,
                    .n = steps,
                    .ts_ns = f->ts + w,
                    .v.f64 = f->vals + (size_t)s * f->steps + w};
            }
            while (atomic_load(&in->inflight) >= INFLIGHT_MAX)
                sched_yield();
            atomic_fetch_add(&in->inflight, 1);
            atomic_fetch_add(&points_sent, (uint64_t)nd * FIELDS * steps);
            rc = tide_db_append(in->db, &b, on_ack, in);
            if (rc) {
                atomic_fetch_sub(&in->inflight, 1);
                atomic_store(&in->err, rc);
                return NULL;
            }
        }
    }
    while (atomic_load(&in->inflight) > 0)
        sched_yield();
    return NULL;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP || flag == FTW_DNR)
        rmdir(path);
    else
        unlink(path);
    return 0; /* remove what can be removed, as rm -rf does */
}

/* Remove `path` and everything below it, children first; nftw(3) walks
 * the tree without recursion here and does not follow links. */
static void rmrf(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void log_cb(void *ctx, enum tide_log_level level, const char *msg)
{
    (void)ctx;
    if (level <= TIDE_LOG_WARN)
        fprintf(stderr, "engine: %s\n", msg);
}

/* The data key of `account`: fixed bytes, a benchmark needs no secret. */
static int bench_key(void *ctx, uint64_t account, uint8_t key[32])
{
    (void)ctx;
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)(account * 131 + (uint64_t)i * 17 + 1);
    return 0;
}

static int open_db(const char *dir, enum tide_sync_mode sync, tide_db **db)
{
    struct tide_db_options o;

    tide_db_options_init(&o);
    if (encrypt_on)
        o.data_key = bench_key;
    o.sync = sync;
    o.log = log_cb;
    o.compaction_interval_s = 0; /* passes only when measured */
    return tide_db_open(dir, &o, db);
}

struct compaction_run {
    tide_db *db;
    double t0, t1;         /* start and end of the pass */
    uint64_t sent0, sent1; /* points_sent at both */
    int rc;
};

static void *compaction_run_main(void *arg)
{
    struct compaction_run *r = arg;

    r->t0 = now_s();
    r->sent0 = atomic_load(&points_sent);
    r->rc = tide_db_compact(r->db, 1);
    r->t1 = now_s();
    r->sent1 = atomic_load(&points_sent);
    return NULL;
}

/* Ingest the fleet again, `shift` later, while one full compaction (at
 * the default budget) rewrites what the first ingest left; the rate is
 * the ingest's while the compaction ran. */
static double ingest_compacting(const struct config *c, const struct fleet *f,
                                tide_db *db, int64_t shift);

/* Ingest the whole fleet; returns points/s or a negative error. */
static double ingest(const struct config *c, const struct fleet *f, tide_db *db)
{
    struct ingester in[16];
    pthread_t th[16];
    unsigned n = c->threads < 16 ? c->threads : 16;
    double t0 = now_s(), dt;
    int rc;

    for (unsigned i = 0; i < n; i++) {
        in[i] = (struct ingester){.db = db, .f = f, .idx = i, .n = n};
        pthread_create(&th[i], NULL, ingest_main, &in[i]);
    }
    for (unsigned i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    dt = now_s() - t0;
    for (unsigned i = 0; i < n; i++)
        if ((rc = atomic_load(&in[i].err)) != 0) {
            fprintf(stderr, "ingest failed: %s\n", tide_strerror(rc));
            return -1;
        }
    return (double)f->series * f->steps / dt;
}

static double ingest_compacting(const struct config *c, const struct fleet *f,
                                tide_db *db, int64_t shift)
{
    struct fleet later = *f;
    struct compaction_run run = {.db = db};
    pthread_t th;
    double rate;

    later.ts = malloc((size_t)f->steps * sizeof(*later.ts));
    if (!later.ts)
        return -1;
    for (uint32_t i = 0; i < f->steps; i++)
        later.ts[i] = f->ts[i] + shift;
    later.producer = f->producer + 1000; /* not duplicates of the first */
    atomic_store(&points_sent, 0);
    pthread_create(&th, NULL, compaction_run_main, &run);
    rate = ingest(c, &later, db);
    pthread_join(th, NULL);
    free(later.ts);
    if (run.rc || rate < 0)
        return -1;
    fprintf(stderr, "engine_bench: the compaction took %.2f s\n",
            run.t1 - run.t0);
    /* Compaction outlasting the ingest: the whole ingest ran beside it. */
    if (run.sent1 == (uint64_t)f->series * f->steps)
        return rate;
    return (double)(run.sent1 - run.sent0) / (run.t1 - run.t0);
}

/* ---- Queries ------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return v[n / 2];
}

static uint64_t read_points(tide_db *db, const uint64_t *ids, uint32_t n,
                            int64_t from, int64_t to)
{
    tide_iter *it;
    struct tide_block b;
    uint64_t points = 0;
    double sink = 0;
    int rc;

    if (tide_db_read_open(db, ids, n, from, to, &it))
        return 0;
    while ((rc = tide_iter_next(it, &b)) == 1) {
        points += b.n;
        sink += b.v.f64[b.n - 1];
    }
    tide_iter_close(it);
    if (rc || sink < 0)
        fprintf(stderr, "read failed: %s\n", tide_strerror(rc));
    return points;
}

static double agg_ms(tide_db *db, const uint64_t *ids, uint32_t n, int64_t from,
                     int64_t to, int64_t bucket)
{
    struct tide_agg_series *res;
    double t0 = now_s(), dt;
    int rc = tide_db_aggregate(db, ids, n, from, to, bucket, 0, &res, NULL);

    dt = (now_s() - t0) * 1e3;
    if (rc) {
        fprintf(stderr, "aggregate failed: %s\n", tide_strerror(rc));
        return -1;
    }
    tide_agg_free(res, n);
    return dt;
}

/* The latest point of every series (every field of every device). */
static double latest_ms(tide_db *db, const uint64_t *ids, uint32_t n)
{
    struct tide_point *pts;
    double t0 = now_s(), dt;
    int rc = tide_db_latest(db, ids, n, &pts);

    dt = (now_s() - t0) * 1e3;
    if (rc) {
        fprintf(stderr, "latest failed: %s\n", tide_strerror(rc));
        return -1;
    }
    tide_latest_free(pts, n);
    return dt;
}

/* A query load during ingest: aggregates of field 0 of the first devices
 * over the whole fleet's time span, 1 h buckets, alternating with a raw
 * read of one series, until `stop`. */
struct reader {
    tide_db *db;
    const struct fleet *f;
    atomic_int stop;
    uint64_t queries;
    int err;
};

#define READER_SERIES 100u

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    const struct fleet *f = r->f;
    int64_t from = f->ts[0], to = f->ts[f->steps - 1] + INTERVAL_NS;
    uint64_t ids[READER_SERIES];
    uint32_t n = 0;

    for (uint32_t d = 0; d < f->series / FIELDS && n < READER_SERIES; d++)
        ids[n++] = (uint64_t)d * FIELDS + 1;
    while (!atomic_load(&r->stop)) {
        struct tide_agg_series *res;
        int rc =
            tide_db_aggregate(r->db, ids, n, from, to, HOUR_NS, 0, &res, NULL);

        if (rc) {
            r->err = rc;
            break;
        }
        tide_agg_free(res, n);
        read_points(r->db, &ids[r->queries % n], 1, from, to);
        r->queries += 2;
    }
    return NULL;
}

/* Ingest the whole fleet with a reader thread querying it meanwhile;
 * returns points/s and the reader's queries/s in *qps. */
static double ingest_with_reader(const struct config *c, const struct fleet *f,
                                 tide_db *db, double *qps)
{
    struct reader r = {.db = db, .f = f};
    pthread_t th;
    double t0 = now_s(), pts;

    pthread_create(&th, NULL, reader_main, &r);
    pts = ingest(c, f, db);
    atomic_store(&r.stop, 1);
    pthread_join(th, NULL);
    *qps = (double)r.queries / (now_s() - t0);
    if (r.err) {
        fprintf(stderr, "reader failed: %s\n", tide_strerror(r.err));
        return -1;
    }
    return pts;
}

struct results {
    double ingest_none;
    double ingest_batch;
    double ingest_readers; /* sync=batch, one reader thread querying */
    double reader_qps;
    double bytes_per_point;
    double decode_pts;
    double q[5]; /* Q1..Q4, then latest of every series */
    /* After a full compaction (tide_db_compact, unthrottled). */
    double compact_pts;     /* points/s of the whole pass, wall clock */
    double compact_pts_cpu; /* points per CPU second, every thread */
    double bytes_per_point_compacted;
    double qc[5];
    double ingest_compacting; /* sync=batch while compaction loops */
};

static void run_queries(const struct config *c, const struct fleet *f,
                        tide_db *db, struct results *r)
{
    int64_t end = f->ts[f->steps - 1] + INTERVAL_NS;
    int64_t day = end - 24 * HOUR_NS;
    uint32_t devices = f->series / FIELDS;
    uint64_t *ids = malloc(f->series * sizeof(*ids));
    double *t = malloc(c->reps * sizeof(*t));
    uint64_t seed = 7;
    double t0, dt;
    uint64_t points;

    for (uint32_t s = 0; s < f->series; s++)
        ids[s] = s + 1;
    /* Raw decode: every point once. */
    t0 = now_s();
    points = read_points(db, ids, f->series, INT64_MIN, INT64_MAX);
    dt = now_s() - t0;
    r->decode_pts = (double)points / dt;
    for (unsigned k = 0; k < c->reps; k++) { /* Q1 */
        uint32_t d = (uint32_t)(next_rand(&seed) % devices);

        t0 = now_s();
        read_points(db, ids + (size_t)d * FIELDS, FIELDS, end - HOUR_NS, end);
        t[k] = (now_s() - t0) * 1e3;
    }
    r->q[0] = median(t, c->reps);
    for (unsigned k = 0; k < c->reps; k++) { /* Q2 */
        uint32_t s = (uint32_t)(next_rand(&seed) % f->series);

        t[k] = agg_ms(db, ids + s, 1, day, end, 300 * 1000000000ll);
    }
    r->q[1] = median(t, c->reps);
    for (unsigned k = 0; k < c->reps; k++) { /* Q3 */
        uint32_t field = (uint32_t)(next_rand(&seed) % FIELDS);
        uint64_t *sel = malloc(devices * sizeof(*sel));

        for (uint32_t d = 0; d < devices; d++)
            sel[d] = ids[(size_t)d * FIELDS + field];
        t[k] = agg_ms(db, sel, devices, end - HOUR_NS, end, 0);
        free(sel);
    }
    r->q[2] = median(t, c->reps);
    for (unsigned k = 0; k < c->reps; k++) /* Q4 */
        t[k] = agg_ms(db, ids, f->series, day, end, 0);
    r->q[3] = median(t, c->reps);
    for (unsigned k = 0; k < c->reps; k++) /* latest of every device */
        t[k] = latest_ms(db, ids, f->series);
    r->q[4] = median(t, c->reps);
    free(ids);
    free(t);
}

static int usage(void)
{
    fprintf(stderr,
            "usage: engine_bench [--devices N] [--hours H] [--threads T]\n"
            "                    [--reps R] [--seed S] [--dir DIR] [--json]\n"
            "                    [--encrypt]\n"
            "Defaults: 1000 devices x 10 fields, 24 h at 10 s, 2 threads,\n"
            "21 repetitions per query, a temporary directory under /tmp.\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct config c = {
        .devices = 1000, .hours = 24, .threads = 2, .reps = 21, .seed = 42};
    struct fleet f = {0};
    struct results r = {0};
    struct tide_db_stats st;
    char tmpl[] = "/tmp/tide-engine-bench-XXXXXX";
    char path[PATH_MAX];
    const char *base;
    tide_db *db;
    int rc;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (!strcmp(a, "--json")) {
            c.json = 1;
            continue;
        }
        if (!strcmp(a, "--encrypt")) {
            c.encrypt = encrypt_on = 1;
            continue;
        }
        if (!v)
            return usage();
        if (!strcmp(a, "--devices"))
            c.devices = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--hours"))
            c.hours = strtod(v, NULL);
        else if (!strcmp(a, "--threads"))
            c.threads = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--reps"))
            c.reps = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--seed"))
            c.seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--dir"))
            c.dir = v;
        else
            return usage();
        i++;
    }
    if (!c.devices || !(c.hours > 0) || !c.threads || !c.reps)
        return usage();
    base = c.dir ? c.dir : mkdtemp(tmpl);
    if (!base || fleet_make(&c, &f)) {
        fprintf(stderr, "engine_bench: setup failed: %s\n", strerror(errno));
        return 1;
    }
    fprintf(stderr,
            "engine_bench: %u devices x %d fields x %u steps = %.1f M points"
            ", %u threads, seed %" PRIu64 ", encryption %s\n",
            c.devices, FIELDS, f.steps, (double)f.series * f.steps / 1e6,
            c.threads, c.seed, c.encrypt ? "on (AES-256-GCM)" : "off");
    for (int mode = 0; mode < 4; mode++) {
        static const char *const names[] = {"none", "batch", "readers",
                                            "compacting"};

        snprintf(path, sizeof(path), "%s/%s", base, names[mode]);
        rmrf(path);
        rc = open_db(path, mode ? TIDE_SYNC_BATCH : TIDE_SYNC_NONE, &db);
        if (rc) {
            fprintf(stderr, "open %s: %s\n", path, tide_strerror(rc));
            return 1;
        }
        if (mode == 2) {
            r.ingest_readers = ingest_with_reader(&c, &f, db, &r.reader_qps);
        } else if (mode == 3) {
            if (ingest(&c, &f, db) < 0 || tide_db_flush(db))
                return 1;
            r.ingest_compacting =
                ingest_compacting(&c, &f, db, (int64_t)(c.hours * HOUR_NS));
        } else
            *(mode ? &r.ingest_batch : &r.ingest_none) = ingest(&c, &f, db);
        if (mode == 1) {
            rc = tide_db_flush(db);
            tide_db_stats(db, &st);
            r.bytes_per_point =
                (double)st.segment_bytes / (double)st.segment_points;
            run_queries(&c, &f, db, &r);
            {
                struct results after = r;
                double t0 = now_s(), c0 = cpu_s();

                rc = tide_db_compact(db, 1);
                r.compact_pts = (double)st.segment_points / (now_s() - t0);
                /* Only the compaction thread runs meanwhile. */
                r.compact_pts_cpu = (double)st.segment_points / (cpu_s() - c0);
                tide_db_stats(db, &st);
                r.bytes_per_point_compacted =
                    (double)st.segment_bytes / (double)st.segment_points;
                run_queries(&c, &f, db, &after);
                memcpy(r.qc, after.q, sizeof(r.qc));
            }
        }
        tide_db_close(db);
        rmrf(path);
    }
    if (!c.dir)
        rmdir(base);
    if (c.json) {
        printf(
            "{\"devices\": %u, \"fields\": %d, \"hours\": %g, "
            "\"encrypt\": %d, "
            "\"points\": %" PRIu64 ", \"threads\": %u, \"seed\": %" PRIu64
            ", \"ingest_pts_per_s_sync_none\": %.0f, "
            "\"ingest_pts_per_s_sync_batch\": %.0f, "
            "\"ingest_pts_per_s_sync_batch_with_reader\": %.0f, "
            "\"reader_queries_per_s\": %.1f, "
            "\"bytes_per_point\": %.4f, \"decode_pts_per_s\": %.0f, "
            "\"q1_ms\": %.4f, \"q2_ms\": %.4f, \"q3_ms\": %.4f, "
            "\"q4_ms\": %.4f, \"compact_pts_per_s\": %.0f, "
            "\"compact_pts_per_cpu_s\": %.0f, "
            "\"bytes_per_point_compacted\": %.4f, \"q1_ms_compacted\": %.4f, "
            "\"q2_ms_compacted\": %.4f, \"q3_ms_compacted\": %.4f, "
            "\"q4_ms_compacted\": %.4f, \"latest_ms\": %.4f, "
            "\"latest_ms_compacted\": %.4f, "
            "\"ingest_pts_per_s_sync_batch_compacting\": %.0f}\n",
            c.devices, FIELDS, c.hours, c.encrypt, (uint64_t)f.series * f.steps,
            c.threads, c.seed, r.ingest_none, r.ingest_batch, r.ingest_readers,
            r.reader_qps, r.bytes_per_point, r.decode_pts, r.q[0], r.q[1],
            r.q[2], r.q[3], r.compact_pts, r.compact_pts_cpu,
            r.bytes_per_point_compacted, r.qc[0], r.qc[1], r.qc[2], r.qc[3],
            r.q[4], r.qc[4], r.ingest_compacting);
    } else {
        printf("%-34s %14s\n", "measure", "value");
        printf("%-34s %14.2f M/s\n", "ingest, sync=none", r.ingest_none / 1e6);
        printf("%-34s %14.2f M/s\n", "ingest, sync=batch",
               r.ingest_batch / 1e6);
        printf("%-34s %14.2f M/s\n", "ingest, sync=batch, 1 reader",
               r.ingest_readers / 1e6);
        printf("%-34s %14.1f /s\n", "  reader queries meanwhile", r.reader_qps);
        printf("%-34s %14.3f B\n", "bytes per point on disk",
               r.bytes_per_point);
        printf("%-34s %14.2f M/s\n", "raw decode (range read)",
               r.decode_pts / 1e6);
        printf("%-34s %14.3f ms\n", "Q1 1 device, 10 fields, 1 h raw", r.q[0]);
        printf("%-34s %14.3f ms\n", "Q2 1 series 24 h, 5 min avg+max", r.q[1]);
        printf("%-34s %14.3f ms\n", "Q3 max of 1 field/device, 1 h", r.q[2]);
        printf("%-34s %14.3f ms\n", "Q4 avg of all fields/device, 24 h",
               r.q[3]);
        printf("%-34s %14.3f ms\n", "latest of every device, 10 fields",
               r.q[4]);
        printf("%-34s %14.2f M/s\n", "full compaction", r.compact_pts / 1e6);
        printf("%-34s %14.2f M/s\n", "  per CPU second",
               r.compact_pts_cpu / 1e6);
        printf("%-34s %14.3f B\n", "bytes per point, compacted",
               r.bytes_per_point_compacted);
        for (int q = 0; q < 4; q++)
            printf("Q%d compacted %21s %14.3f ms\n", q + 1, "", r.qc[q]);
        printf("%-34s %14.3f ms\n", "latest compacted", r.qc[4]);
        printf("%-34s %14.2f M/s\n", "ingest, sync=batch, compacting",
               r.ingest_compacting / 1e6);
    }
    free(f.ts);
    free(f.vals);
    return rc ? 1 : 0;
}
