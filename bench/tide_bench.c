/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tide-bench: the benchmark harness (docs/bench.md). Generates a seeded
 * TSBS-like fleet before the timed phase, then drives a real tided through
 * libtide (or VictoriaMetrics / InfluxDB over their HTTP line protocol):
 * ingest, query, mixed, verify; `engine` runs engine_bench in-process.
 * Prints its configuration, a live progress line on a TTY, a final table
 * with percentiles from histograms, and optionally JSON and an SVG chart.
 * Talks to tided only through tide/client.h.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"
#include "json.h"
#include "peer.h"
#include "report.h"
#include "tide/client.h"
#include "workload.h"

#define TIDE_BENCH_VERSION "0.1.0"
#define NQ 5
#define SAMPLES_MAX 7200
#define CONNECTIONS_MAX 256
#define CODES_MAX 16
#define MARKS 1024
#define HOUR_NS 3600000000000ll
#define BENCH_EMAIL "bench@tide.example"
#define BENCH_PASSWORD "tide-bench-password"
#define CODE_ALREADY_EXISTS 10

enum mode {
    M_INGEST,
    M_QUERY,
    M_MIXED,
    M_VERIFY,
    M_ENGINE,
    M_COMPACT,
    M_CONNECT
};
static const char *const mode_names[] = {
    "ingest", "query", "mixed", "verify", "engine", "compact", "connect"};
#define N_MODES (sizeof(mode_names) / sizeof(mode_names[0]))
static const char *const wl_names[] = {"devops", "iot", "sparse"};
static const char *const order_names[] = {"time", "series"};
static const char *const q_names[NQ] = {
    "Q1 raw 1 device 1 h", "Q2 1 field 24 h 5-min avg", "Q3 fleet max 1 h",
    "Q4 per-device avg 24 h", "Q5 latest every device"};

struct opts {
    enum mode mode;
    int peer; /* 0 tide, else enum tide_peer */
    const char *host;
    unsigned port;
    const char *admin_key_file;
    long server_pid;
    struct tide_wl_config wl;
    unsigned connections;
    unsigned batch;
    double rate; /* points/s over all connections, 0 = unlimited */
    unsigned q_concurrency;
    double q_rate; /* queries/s over all query threads, 0 = closed loop */
    unsigned mix[NQ];
    double seconds; /* query: run time; mixed: 0 = until ingest ends */
    const char *json;
    const char *svg;
    const char *label;
    int progress;         /* -1 auto (TTY), 0 off, 1 on */
    int compact;          /* ingest: force a full compaction afterwards */
    const char *data_dir; /* tided's data directory: the segment layout */
    double window_days;   /* window width of that layout report */
    int tls;              /* --tls: connect with TLS, verified with --ca */
    const char *ca;
    unsigned count; /* connect: connections timed */
    int resume;     /* connect: reconnect, resuming the session */
};

struct code_count {
    int code;
    uint64_t n;
};

struct bench {
    struct opts o;
    struct tide_wl *wl;
    char (*names)[24]; /* device names */
    char token[256];
    size_t **conn_rows; /* row indices per connection */
    size_t *conn_n;
    _Atomic uint64_t points_acked;
    _Atomic uint64_t points_sent;
    _Atomic uint64_t q_done;
    _Atomic int stop;
    _Atomic unsigned writers_left;
    struct tide_hist ack;
    struct tide_hist q[NQ];
    struct tide_hist q_all;
    _Atomic uint64_t q_errors[NQ];
    _Atomic uint64_t q_points[NQ];
    double *conn_rate; /* points/s per connection */
    pthread_mutex_t lock;
    struct code_count codes[CODES_MAX];
    double t0;
    double writers_end; /* the last writer's flush returned, under lock */
    double ingest_s;
};

static double mono_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec t;

    if (s <= 0)
        return;
    t.tv_sec = (time_t)s;
    t.tv_nsec = (long)((s - (double)t.tv_sec) * 1e9);
    nanosleep(&t, NULL);
}

/* Count an error by code (libtide code, -errno, or an HTTP status). */
static void count_code(struct bench *b, int code)
{
    pthread_mutex_lock(&b->lock);
    for (int i = 0; i < CODES_MAX; i++) {
        if (b->codes[i].n == 0 || b->codes[i].code == code) {
            b->codes[i].code = code;
            b->codes[i].n++;
            break;
        }
    }
    pthread_mutex_unlock(&b->lock);
}

static const char *code_text(int code)
{
    static __thread char buf[32];

    if (code > 0) {
        snprintf(buf, sizeof(buf), "HTTP %d", code);
        return buf;
    }
    return tide_strerror(code);
}

static int fail(const char *what, int rc, tide_client *c)
{
    const char *msg = NULL;

    if (c)
        tide_client_last_error(c, NULL, &msg);
    fprintf(stderr, "tide-bench: %s: %s%s%s\n", what, code_text(rc),
            msg ? ": " : "", msg ? msg : "");
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Provisioning and connections (tide target) */

static int read_key(const char *path, char *key, size_t size)
{
    FILE *f = fopen(path, "r");

    if (!f)
        return -errno;
    if (!fgets(key, (int)size, f)) {
        fclose(f);
        return -EINVAL;
    }
    fclose(f);
    key[strcspn(key, "\r\n")] = 0;
    return 0;
}

static int open_client(const struct bench *b, const char *key,
                       const char *token, unsigned batch, tide_client **out)
{
    struct tide_client_options o;

    tide_client_options_init(&o);
    o.host = b->o.host;
    o.port = (uint16_t)b->o.port;
    o.api_key = key;
    o.session_token = token;
    if (batch)
        o.batch_points = batch;
    o.io_timeout_ms = 60000;
    o.tls = b->o.tls;
    o.tls_ca_file = b->o.ca;
    return tide_client_open(&o, out);
}

/* As the operator: an unlimited "bench" tier with a long TTL (fixed-date
 * workloads must not be TOO_OLD) and the bench account; then a session. */
static int provision(struct bench *b)
{
    static const char *const tier[] = {
        "tier.name=bench", "tier.telemetry_ttl_s=3153600000",
        "tier.points_per_s=0", "tier.daily_points=0"};
    static const char *const account[] = {
        "email=" BENCH_EMAIL, "password=" BENCH_PASSWORD, "tier=bench"};
    static const char *const login[] = {"email=" BENCH_EMAIL,
                                        "password=" BENCH_PASSWORD};
    tide_client *admin = NULL, *anon = NULL;
    tide_result *r = NULL;
    char key[256];
    const char *tok;
    int rc, code;

    rc = read_key(b->o.admin_key_file, key, sizeof(key));
    if (rc)
        return fail(b->o.admin_key_file, rc, NULL);
    rc = open_client(b, key, NULL, 0, &admin);
    if (rc)
        return fail("operator connect", rc, NULL);
    rc = tide_client_call(admin, "tier_upsert", tier, 4, NULL);
    if (rc) {
        fail("tier_upsert", rc, admin);
        goto out;
    }
    rc = tide_client_call(admin, "account_create", account, 3, NULL);
    if (rc && rc == TIDE_ESERVER &&
        tide_client_last_error(admin, &code, NULL) == 0 &&
        code == CODE_ALREADY_EXISTS)
        rc = 0;
    if (rc) {
        fail("account_create", rc, admin);
        goto out;
    }
    rc = open_client(b, NULL, NULL, 0, &anon);
    if (!rc)
        rc = tide_client_call(anon, "login", login, 2, &r);
    if (rc) {
        fail("login", rc, anon);
        goto out;
    }
    tok = tide_result_find(r, 0, "session_token");
    snprintf(b->token, sizeof(b->token), "%s", tok ? tok : "");
out:
    tide_result_free(r);
    tide_client_close(anon);
    tide_client_close(admin);
    return rc ? 1 : 0;
}

/* Server statistics through ServerStatus: *out[i] for each name. */
static int server_stats(struct bench *b, const char *const *names, size_t n,
                        double *out)
{
    tide_client *admin = NULL;
    tide_result *r = NULL;
    char key[256];
    int rc;

    rc = read_key(b->o.admin_key_file, key, sizeof(key));
    if (!rc)
        rc = open_client(b, key, NULL, 0, &admin);
    if (!rc)
        rc = tide_client_call(admin, "server_status", NULL, 0, &r);
    /* One row; its "stats" column reads "name=value,name=value,...". */
    for (const char *p = rc ? NULL : tide_result_find(r, 0, "stats"); p && *p;
         p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        for (size_t i = 0; i < n; i++) {
            size_t len = strlen(names[i]);

            if (!strncmp(p, names[i], len) && p[len] == '=')
                out[i] = strtod(p + len + 1, NULL);
        }
    }
    tide_result_free(r);
    tide_client_close(admin);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Compaction: a forced full pass (tide admin compact --wait), and the
 * segment layout it leaves (docs/benchmarks.md, "Compacted"). */

struct compact_figs {
    int done;
    double s; /* wall time of the waited-for pass */
    struct tide_compaction_stats cs;
    double segments_before, segments_after;
    double bytes_before, bytes_after; /* segment bytes */
    double head_points;               /* after: points not in segments */
    double bytes_per_point;           /* segment bytes / points in them */
    double points;                    /* the workload's points in segments */
};

static int compact_now(struct bench *b, struct compact_figs *cf)
{
    static const char *const names[3] = {"segments", "segment_bytes",
                                         "head_points"};
    double before[3] = {0, 0, 0}, after[3] = {0, 0, 0};
    tide_client *admin = NULL;
    char key[256];
    double t0, in_segments;
    int rc;

    rc = server_stats(b, names, 3, before);
    if (rc)
        return fail("server status", rc, NULL);
    rc = read_key(b->o.admin_key_file, key, sizeof(key));
    if (!rc)
        rc = open_client(b, key, NULL, 0, &admin);
    if (rc)
        return fail("operator connect", rc, NULL);
    t0 = mono_s();
    rc = tide_client_compact(admin, 1, 0, &cf->cs);
    cf->s = mono_s() - t0;
    if (rc) {
        fail("admin compact", rc, admin);
        tide_client_close(admin);
        return rc;
    }
    tide_client_close(admin);
    rc = server_stats(b, names, 3, after);
    if (rc)
        return fail("server status", rc, NULL);
    cf->segments_before = before[0];
    cf->bytes_before = before[1];
    cf->segments_after = after[0];
    cf->bytes_after = after[1];
    cf->head_points = after[2];
    /* The head is not compacted: count only the points in segments. */
    in_segments = (double)b->wl->points - after[2];
    cf->points = in_segments > 0 ? in_segments : 0;
    cf->bytes_per_point = in_segments > 0 ? after[1] / in_segments : 0;
    cf->done = 1;
    return 0;
}

static void print_compact(const struct compact_figs *cf)
{
    const struct tide_compaction_stats *c = &cf->cs;

    printf("\n%-30s %s\n", "compaction (forced, waited)", "value");
    printf("%-30s %.2f s\n", "elapsed", cf->s);
    printf("%-30s %.0f -> %.0f\n", "segments", cf->segments_before,
           cf->segments_after);
    printf("%-30s %.0f -> %.0f\n", "segment bytes", cf->bytes_before,
           cf->bytes_after);
    printf("%-30s %.3f (%.0f points in head)\n", "bytes/point compacted",
           cf->bytes_per_point, cf->head_points);
    printf("%-30s %.1f MiB/s read, %.0f points/s\n", "compaction rate",
           cf->s > 0 ? (double)c->bytes_read / 1048576.0 / cf->s : 0,
           cf->s > 0 ? (cf->points) / cf->s : 0);
    printf("%-30s %" PRIu64 " runs, %" PRIu64 " B read, %" PRIu64
           " B written, %" PRIu64 " files deleted, %" PRIu64 " errors\n",
           "server counters", c->runs, c->bytes_read, c->bytes_written,
           c->files_deleted, c->errors);
}

/* The segment layout of a stopped or running tided's data directory, from
 * the MANIFEST (shard and tier of each live segment) and each segment's
 * footer (its time range), as docs/file-format.md lays them out: files
 * per (shard, tier, window) for windows of `window_days`. */
struct layout {
    int ok;
    uint32_t shards;
    uint32_t files;
    uint64_t file_bytes;
    uint32_t groups;        /* distinct (shard, tier, window) */
    uint32_t max_per_group; /* files in the fullest one */
    uint32_t spanning;      /* files reaching past their first window */
    double window_days;
};

struct seg_key {
    uint64_t key; /* shard << 48 | tier << 32 | window */
};

static int key_cmp(const void *a, const void *b)
{
    const struct seg_key *x = a, *y = b;

    return x->key < y->key ? -1 : x->key > y->key;
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

#define LAYOUT_SEGMENTS_MAX 10000000u

/* Read the time range of segment `id` (min, max); its size in *bytes. */
static int seg_range(const char *dir, uint64_t id, int64_t *min_ts,
                     int64_t *max_ts, uint64_t *bytes)
{
    char path[4096];
    uint8_t tr[32], ft[16];
    FILE *f;
    long size;
    int rc = -EINVAL;

    snprintf(path, sizeof(path), "%s/seg/%016" PRIx64 ".tseg", dir, id);
    f = fopen(path, "rb");
    if (!f)
        return -errno;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 64 + 32 &&
        fseek(f, size - 32, SEEK_SET) == 0 && fread(tr, 1, 32, f) == 32 &&
        !memcmp(tr + 24, "TIDEEND", 8) && le64(tr) < (uint64_t)size &&
        fseek(f, (long)le64(tr), SEEK_SET) == 0 && fread(ft, 1, 16, f) == 16) {
        *min_ts = (int64_t)le64(ft);
        *max_ts = (int64_t)le64(ft + 8);
        *bytes = (uint64_t)size;
        rc = 0;
    }
    fclose(f);
    return rc;
}

static int layout_read(const char *dir, double window_days, struct layout *l)
{
    char path[4096];
    uint8_t hdr[40], ent[16];
    struct seg_key *keys = NULL;
    int64_t window_ns = (int64_t)(window_days * 86400e9);
    uint32_t n;
    FILE *f;
    int rc = 0;

    memset(l, 0, sizeof(*l));
    l->window_days = window_days;
    if (window_ns <= 0)
        return -EINVAL;
    snprintf(path, sizeof(path), "%s/MANIFEST", dir);
    f = fopen(path, "rb");
    if (!f)
        return -errno;
    if (fread(hdr, 1, 40, f) != 40 || memcmp(hdr, "TIDEMAN", 8) ||
        le32(hdr + 12) == 0 || le32(hdr + 12) > 64 ||
        (n = le32(hdr + 32)) > LAYOUT_SEGMENTS_MAX) {
        fclose(f);
        return -EINVAL;
    }
    l->shards = le32(hdr + 12);
    keys = calloc(n ? n : 1, sizeof(*keys));
    if (!keys || fseek(f, 40 + 8 * (long)l->shards, SEEK_SET)) {
        fclose(f);
        free(keys);
        return keys ? -EINVAL : -ENOMEM;
    }
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        int64_t lo = 0, hi = 0;
        uint64_t id, bytes = 0, w;

        if (fread(ent, 1, 16, f) != 16) {
            rc = -EINVAL;
            break;
        }
        id = le64(ent);
        rc = seg_range(dir, id, &lo, &hi, &bytes);
        if (rc)
            break;
        /* Windows are aligned on the epoch; times before it are rare. */
        w = (uint64_t)(lo >= 0 ? lo / window_ns : 0);
        keys[i].key = (uint64_t)(ent[8] | ent[9] << 8) << 48 |
                      (uint64_t)(ent[10] | ent[11] << 8) << 32 |
                      (w & 0xffffffffu);
        if (hi >= 0 && (uint64_t)(hi / window_ns) != w)
            l->spanning++;
        l->files++;
        l->file_bytes += bytes;
    }
    fclose(f);
    if (rc == 0) {
        qsort(keys, l->files, sizeof(*keys), key_cmp);
        for (uint32_t i = 0, run = 0; i < l->files; i++) {
            run = i && keys[i].key == keys[i - 1].key ? run + 1 : 1;
            if (run == 1)
                l->groups++;
            if (run > l->max_per_group)
                l->max_per_group = run;
        }
        l->ok = 1;
    }
    free(keys);
    return rc;
}

static void print_layout(const struct layout *l)
{
    printf("\n%-30s %s\n", "segment layout", "value");
    printf("%-30s %u files, %" PRIu64 " B, %u shards\n", "segments", l->files,
           l->file_bytes, l->shards);
    printf("%-30s %u (windows of %g days)\n", "(shard, tier, window)s",
           l->groups, l->window_days);
    printf("%-30s %.2f mean, %u max\n", "files per shard per window",
           l->groups ? (double)l->files / l->groups : 0, l->max_per_group);
    printf("%-30s %u\n", "files spanning windows", l->spanning);
}

/* ------------------------------------------------------------------------ */
/* Ingest */

struct writer {
    struct bench *b;
    unsigned id;
};

static int write_row(tide_client *c, const struct bench *b,
                     const struct tide_wl_row *r)
{
    uint16_t n;
    const struct tide_wl_field *f =
        tide__wl_fields(b->wl->cfg.kind, r->shape, &n);
    const char *dev = b->names[r->device];
    int rc = 0;

    for (uint16_t i = 0; i < r->n && !rc; i++) {
        double d;

        switch (f[i].type) {
        case TIDE_VALUE_I64:
            rc = tide_write_i64(c, dev, f[i].name, r->ts_ns, (int64_t)r->v[i]);
            break;
        case TIDE_VALUE_STR:
            rc = tide_write_str(c, dev, f[i].name, r->ts_ns,
                                tide__wl_status_name(r->v[i]));
            break;
        default:
            memcpy(&d, &r->v[i], sizeof(d));
            rc = tide_write_f64(c, dev, f[i].name, r->ts_ns, d);
            break;
        }
    }
    return rc;
}

/* Ack latency of a batch: from the moment its last point was handed to the
 * writer until the client has seen the ack covering it. */
struct marks {
    uint64_t at[MARKS];
    double t[MARKS];
    unsigned head, tail;
};

static void marks_reap(struct marks *m, struct tide_hist *h, uint64_t acked,
                       double now)
{
    while (m->tail != m->head && m->at[m->tail % MARKS] <= acked) {
        tide__hist_record(h, (uint64_t)((now - m->t[m->tail % MARKS]) * 1e9));
        m->tail++;
    }
}

static void pace(const struct bench *b, double t0, uint64_t sent, double rate,
                 tide_client *c)
{
    double due = t0 + (double)sent / rate, now = mono_s();

    while (now < due) {
        if (c)
            tide_client_poll(c, (uint32_t)((due - now) * 1000) + 1);
        else
            sleep_s(due - now);
        now = mono_s();
    }
    (void)b;
}

static void writer_done(struct bench *b)
{
    double now = mono_s();

    pthread_mutex_lock(&b->lock);
    if (now > b->writers_end)
        b->writers_end = now;
    pthread_mutex_unlock(&b->lock);
    atomic_fetch_sub(&b->writers_left, 1);
}

static void *writer_tide(void *arg)
{
    struct writer *w = arg;
    struct bench *b = w->b;
    struct marks *m = calloc(1, sizeof(*m));
    struct tide_client_stats st;
    tide_client *c = NULL;
    uint64_t sent = 0, next_mark = b->o.batch, done_prev = 0;
    double rate = b->o.rate / b->o.connections, t0;
    int rc;

    if (!m) {
        count_code(b, -ENOMEM);
        goto out;
    }
    rc = open_client(b, NULL, b->token, b->o.batch, &c);
    if (rc) {
        count_code(b, rc);
        goto out;
    }
    t0 = mono_s();
    for (size_t i = 0; i < b->conn_n[w->id] && !atomic_load(&b->stop); i++) {
        const struct tide_wl_row *r = &b->wl->rows[b->conn_rows[w->id][i]];

        if (rate > 0)
            pace(b, t0, sent, rate, c);
        rc = write_row(c, b, r);
        if (rc) {
            count_code(b, rc);
            break;
        }
        sent += r->n;
        atomic_fetch_add_explicit(&b->points_sent, r->n, memory_order_relaxed);
        if (sent >= next_mark && m->head - m->tail < MARKS) {
            m->at[m->head % MARKS] = sent;
            m->t[m->head % MARKS] = mono_s();
            m->head++;
            next_mark = sent + b->o.batch;
        }
        tide_client_stats_get(c, &st);
        if (st.points_acked + st.points_rejected != done_prev) {
            atomic_fetch_add_explicit(&b->points_acked,
                                      st.points_acked + st.points_rejected -
                                          done_prev,
                                      memory_order_relaxed);
            done_prev = st.points_acked + st.points_rejected;
            marks_reap(m, &b->ack, done_prev, mono_s());
        }
    }
    rc = tide_flush(c);
    if (rc)
        count_code(b, rc);
    tide_client_stats_get(c, &st);
    marks_reap(m, &b->ack, UINT64_MAX, mono_s());
    atomic_fetch_add(&b->points_acked,
                     st.points_acked + st.points_rejected - done_prev);
    if (st.points_rejected)
        count_code(b, TIDE_EREJECTED);
    b->conn_rate[w->id] = (double)st.points_acked / (mono_s() - t0);
out:
    tide_client_close(c);
    free(m);
    writer_done(b);
    return NULL;
}

/* Peers: one synchronous POST of line protocol per batch. */
static void *writer_peer(void *arg)
{
    struct writer *w = arg;
    struct bench *b = w->b;
    size_t size = (size_t)b->o.batch * 64 + 4096, len = 0;
    char *buf = malloc(size);
    uint64_t in_buf = 0, sent = 0, ok_points = 0;
    double rate = b->o.rate / b->o.connections, t0 = mono_s();

    if (!buf) {
        count_code(b, -ENOMEM);
        goto out;
    }
    for (size_t i = 0; i <= b->conn_n[w->id]; i++) {
        const struct tide_wl_row *r =
            i < b->conn_n[w->id] ? &b->wl->rows[b->conn_rows[w->id][i]] : NULL;
        int status, rc;
        uint64_t bytes;
        double t;

        if (r && !atomic_load(&b->stop) &&
            tide__peer_line(b->wl, r, buf, size, &len) == 0) {
            in_buf += r->n;
            sent += r->n;
            atomic_fetch_add(&b->points_sent, r->n);
            if (in_buf < b->o.batch)
                continue;
        } else if (r && !atomic_load(&b->stop)) {
            i--; /* buffer full: send, then this row again */
        }
        if (!len)
            break;
        if (rate > 0)
            pace(b, t0, sent, rate, NULL);
        t = mono_s();
        rc = tide__peer_http((uint16_t)b->o.port, "POST",
                             tide__peer_write_path(b->o.peer), buf, len,
                             &status, &bytes);
        tide__hist_record(&b->ack, (uint64_t)((mono_s() - t) * 1e9));
        if (rc || status / 100 != 2) {
            count_code(b, rc ? rc : status);
        } else {
            ok_points += in_buf;
            atomic_fetch_add(&b->points_acked, in_buf);
        }
        len = 0;
        in_buf = 0;
        if (atomic_load(&b->stop))
            break;
    }
    b->conn_rate[w->id] = (double)ok_points / (mono_s() - t0);
out:
    free(buf);
    writer_done(b);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Queries */

struct reader {
    struct bench *b;
    unsigned id;
};

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static int pick_query(const struct bench *b, uint64_t *s)
{
    unsigned total = 0, x;

    for (int i = 0; i < NQ; i++)
        total += b->o.mix[i];
    x = (unsigned)(rnd(s) % total);
    for (int i = 0; i < NQ; i++) {
        if (x < b->o.mix[i])
            return i;
        x -= b->o.mix[i];
    }
    return NQ - 1;
}

/* The query shapes against the workload's last day (docs/bench.md). */
static void query_params(const struct bench *b, int q, uint32_t dev,
                         const char **one, const char **field,
                         struct tide_query_params *p)
{
    int64_t end = b->wl->end_ns, from_day = end - 24 * HOUR_NS;
    uint16_t n;

    if (from_day < b->wl->cfg.start_ns)
        from_day = b->wl->cfg.start_ns;
    *one = b->names[dev];
    *field = tide__wl_fields(b->wl->cfg.kind, 0, &n)[0].name;
    memset(p, 0, sizeof(*p));
    p->to_ns = end;
    switch (q) {
    case 0:
        p->devices = one;
        p->n_devices = 1;
        p->from_ns = end - HOUR_NS;
        break;
    case 1:
        p->devices = one;
        p->n_devices = 1;
        p->fields = field;
        p->n_fields = 1;
        p->from_ns = from_day;
        p->agg = TIDE_AGG_AVG;
        p->bucket_ns = 300ll * 1000000000;
        p->group_by_device = 1;
        break;
    case 2:
        p->fields = field;
        p->n_fields = 1;
        p->from_ns = end - HOUR_NS;
        p->agg = TIDE_AGG_MAX;
        break;
    case 3:
        p->from_ns = from_day;
        p->agg = TIDE_AGG_AVG;
        p->group_by_device = 1;
        break;
    default:
        p->from_ns = b->wl->cfg.start_ns;
        p->latest = 1;
        break;
    }
}

static int run_tide_query(tide_client *c, const struct tide_query_params *p,
                          uint64_t *points)
{
    struct tide_series_block blk;
    tide_query_iter *it = NULL;
    int rc;

    *points = 0;
    rc = tide_query_open(c, p, &it);
    if (rc)
        return rc;
    while ((rc = tide_query_next(it, &blk)) == 0)
        *points += blk.n;
    tide_query_close(it);
    return rc == TIDE_CLIENT_DONE ? 0 : rc;
}

static void *reader_main(void *arg)
{
    struct reader *rd = arg;
    struct bench *b = rd->b;
    uint64_t s = b->wl->cfg.seed * 7919 + rd->id + 1, k = 0;
    double rate = b->o.q_rate / b->o.q_concurrency, t0 = mono_s();
    tide_client *c = NULL;
    char path[2048];
    int rc;

    if (!b->o.peer) {
        rc = open_client(b, NULL, b->token, 0, &c);
        if (rc) {
            count_code(b, rc);
            return NULL;
        }
    }
    while (!atomic_load(&b->stop)) {
        int q = pick_query(b, &s);
        uint32_t dev = (uint32_t)(rnd(&s) % b->wl->cfg.devices);
        double start = mono_s();
        uint64_t points = 0;

        /* With a rate, latency counts from the scheduled start, so a slow
         * server cannot hide its queueing (coordinated omission). */
        if (rate > 0) {
            start = t0 + (double)k++ / rate;
            sleep_s(start - mono_s());
            if (atomic_load(&b->stop))
                break;
        }
        if (b->o.peer) {
            int status;

            rc = tide__peer_query_path(b->o.peer, q, b->wl, dev, path,
                                       sizeof(path));
            if (!rc)
                rc = tide__peer_http((uint16_t)b->o.port, "GET", path, NULL, 0,
                                     &status, &points);
            if (!rc && status != 200)
                rc = status;
        } else {
            struct tide_query_params p;
            const char *one, *field;

            query_params(b, q, dev, &one, &field, &p);
            rc = run_tide_query(c, &p, &points);
        }
        if (rc) {
            count_code(b, rc);
            atomic_fetch_add(&b->q_errors[q], 1);
            continue;
        }
        tide__hist_record(&b->q[q], (uint64_t)((mono_s() - start) * 1e9));
        tide__hist_record(&b->q_all, (uint64_t)((mono_s() - start) * 1e9));
        atomic_fetch_add(&b->q_points[q], points);
        atomic_fetch_add(&b->q_done, 1);
    }
    tide_client_close(c);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Verify: count and checksum what the server holds. */

static int verify(struct bench *b, uint64_t *got_points, uint64_t *got_sum)
{
    tide_client *c = NULL;
    const char *devs[64];
    char dev[24] = "", field[64] = "";
    uint64_t n = 0, sum = 0;
    int rc;

    rc = open_client(b, NULL, b->token, 0, &c);
    if (rc)
        return fail("verify connect", rc, NULL);
    for (uint32_t d0 = 0; d0 < b->wl->cfg.devices && !rc; d0 += 64) {
        struct tide_query_params p = {0};
        struct tide_series_block blk;
        tide_query_iter *it = NULL;
        size_t nd = 0;

        for (uint32_t d = d0; d < b->wl->cfg.devices && nd < 64; d++)
            devs[nd++] = b->names[d];
        p.devices = devs;
        p.n_devices = nd;
        p.from_ns = b->wl->cfg.start_ns;
        p.to_ns = b->wl->end_ns;
        rc = tide_query_open(c, &p, &it);
        while (!rc && (rc = tide_query_next(it, &blk)) == 0) {
            if (blk.device && blk.device[0])
                snprintf(dev, sizeof(dev), "%s", blk.device);
            if (blk.field && blk.field[0])
                snprintf(field, sizeof(field), "%s", blk.field);
            for (size_t i = 0; i < blk.n; i++) {
                uint64_t bits = 0;

                if (blk.type == TIDE_VALUE_F64)
                    memcpy(&bits, &blk.f64[i], sizeof(bits));
                else if (blk.type == TIDE_VALUE_I64)
                    bits = (uint64_t)blk.i64[i];
                else if (blk.type == TIDE_VALUE_BOOL)
                    bits = blk.bools[i];
                sum += tide__wl_point_hash(
                    dev, field, blk.ts_ns[i], blk.type, bits,
                    blk.type == TIDE_VALUE_STR ? blk.str[i] : NULL);
                n++;
            }
        }
        tide_query_close(it);
        if (rc == TIDE_CLIENT_DONE)
            rc = 0;
    }
    if (rc)
        fail("verify query", rc, c);
    tide_client_close(c);
    *got_points = n;
    *got_sum = sum;
    return rc ? 1 : 0;
}

/* ------------------------------------------------------------------------ */
/* Server process figures from /proc (the server runs on this machine). */

static int proc_cpu_rss(long pid, double *cpu_s, double *rss_peak_mib)
{
    char path[64], buf[4096], *p;
    unsigned long ut, stt;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    f = fopen(path, "r");
    if (!f)
        return -errno;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    p = strrchr(buf, ')');
    if (!p ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &ut, &stt) != 2)
        return -EPROTO;
    *cpu_s = (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    f = fopen(path, "r");
    if (!f)
        return -errno;
    while (fgets(buf, sizeof(buf), f))
        if (!strncmp(buf, "VmHWM:", 6))
            *rss_peak_mib = strtod(buf + 6, NULL) / 1024;
    fclose(f);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* connect: the cost of a new connection to a device, as the time from
 * connect() to the WriteAck of its first point: TCP, the TLS handshake
 * (resumed with --resume), Hello, Auth, one write. */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static int run_connect(struct bench *b)
{
    unsigned n = b->o.count ? b->o.count : 1, resumed = 0;
    double *ms = calloc(n, sizeof(double)), sum = 0;
    tide_client *c = NULL;
    int rc = 0;

    if (!ms)
        return fail("connect", -ENOMEM, NULL);
    for (unsigned i = 0; i < n && !rc; i++) {
        double t0 = mono_s();

        if (b->o.resume && c)
            rc = tide_client_reconnect(c);
        else
            rc = open_client(b, NULL, b->token, 0, &c);
        if (!rc)
            rc = tide_write_f64(c, b->names[0], "connect_ms",
                                b->wl->cfg.start_ns + (int64_t)i * 1000000,
                                (double)i);
        if (!rc)
            rc = tide_flush(c);
        ms[i] = (mono_s() - t0) * 1e3;
        sum += ms[i];
        if (!rc && tide_client_tls_resumed(c))
            resumed++;
        if (rc)
            fail("connect", rc, c);
        if (!b->o.resume || rc) {
            tide_client_close(c);
            c = NULL;
        }
    }
    tide_client_close(c);
    if (!rc) {
        qsort(ms, n, sizeof(double), cmp_double);
        printf("connect%s%s: %u connections, %u resumed; connect + Auth + "
               "first acked write: p50 %.3f ms, p99 %.3f ms, mean %.3f ms\n",
               b->o.tls ? " over TLS" : "",
               b->o.resume ? " (reconnecting one client)" : "", n, resumed,
               ms[n / 2], ms[(size_t)(n * 0.99)], sum / n);
    }
    free(ms);
    return rc ? 1 : 0;
}

/* ------------------------------------------------------------------------ */
/* Options */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: tide-bench MODE [options]   (docs/bench.md)\n"
            "modes: ingest, query, mixed, verify, engine, compact, connect\n"
            "target:   --target tide|victoria|influx  --host H  --port P\n"
            "          --admin-key-file F  --server-pid PID\n"
            "workload: --workload devops|iot|sparse  --devices N  --fields N\n"
            "          --interval-s S  --hours H  --start UNIX_S  --seed N\n"
            "          --ooo-share X  --late-share X  --offline-share X\n"
            "          --order time|series\n"
            "ingest:   --connections N  --batch N  --rate POINTS_PER_S\n"
            "          --compact (then a forced full compaction)\n"
            "layout:   --data-dir DIR  --window-days D (segments per\n"
            "          shard per window, after ingest or compact)\n"
            "query:    --query-concurrency N  --query-rate Q_PER_S\n"
            "          --query-mix W1,W2,W3,W4,W5  --seconds S\n"
            "tls:      --tls  --ca FILE (verify the server against it)\n"
            "connect:  --count N  --resume (time connect + Auth + first\n"
            "          acknowledged write; --resume reconnects one client)\n"
            "output:   --json FILE  --svg FILE  --label TEXT\n"
            "          --progress | --no-progress\n");
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {{"target", 1, 0, 't'},
                                       {"host", 1, 0, 'H'},
                                       {"port", 1, 0, 'p'},
                                       {"admin-key-file", 1, 0, 'k'},
                                       {"server-pid", 1, 0, 'P'},
                                       {"workload", 1, 0, 'w'},
                                       {"devices", 1, 0, 'd'},
                                       {"fields", 1, 0, 'f'},
                                       {"interval-s", 1, 0, 'i'},
                                       {"hours", 1, 0, 'h'},
                                       {"start", 1, 0, 'S'},
                                       {"seed", 1, 0, 's'},
                                       {"ooo-share", 1, 0, 'o'},
                                       {"late-share", 1, 0, 'l'},
                                       {"offline-share", 1, 0, 'O'},
                                       {"order", 1, 0, 'X'},
                                       {"connections", 1, 0, 'c'},
                                       {"batch", 1, 0, 'b'},
                                       {"rate", 1, 0, 'r'},
                                       {"query-concurrency", 1, 0, 'C'},
                                       {"query-rate", 1, 0, 'R'},
                                       {"query-mix", 1, 0, 'm'},
                                       {"seconds", 1, 0, 'T'},
                                       {"json", 1, 0, 'j'},
                                       {"svg", 1, 0, 'g'},
                                       {"label", 1, 0, 'L'},
                                       {"progress", 0, 0, '1'},
                                       {"no-progress", 0, 0, '0'},
                                       {"compact", 0, 0, 'K'},
                                       {"data-dir", 1, 0, 'D'},
                                       {"window-days", 1, 0, 'W'},
                                       {"tls", 0, 0, 'Y'},
                                       {"ca", 1, 0, 'A'},
                                       {"count", 1, 0, 'N'},
                                       {"resume", 0, 0, 'U'},
                                       {"help", 0, 0, '?'},
                                       {0, 0, 0, 0}};
    struct tide_wl_config dflt;
    double hours = -1, interval_s = -1;
    long long start = -1;
    int ch, i;

    memset(o, 0, sizeof(*o));
    if (argc < 2)
        return -EINVAL;
    for (i = 0; i < (int)N_MODES && strcmp(argv[1], mode_names[i]); i++)
        ;
    if (i == (int)N_MODES)
        return -EINVAL;
    o->mode = (enum mode)i;
    o->host = "127.0.0.1";
    o->port = 8433;
    o->connections = 2;
    o->batch = 10000;
    o->q_concurrency = 2;
    o->seconds = 10;
    o->progress = -1;
    o->window_days = 1;
    o->count = 200;
    for (i = 0; i < NQ; i++)
        o->mix[i] = 1;
    tide__wl_config_init(&o->wl, TIDE_WL_DEVOPS);
    optind = 2;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 't':
            if (!strcmp(optarg, "tide"))
                o->peer = 0;
            else if (!strcmp(optarg, "victoria"))
                o->peer = TIDE_PEER_VICTORIA;
            else if (!strcmp(optarg, "influx"))
                o->peer = TIDE_PEER_INFLUX;
            else
                return -EINVAL;
            break;
        case 'H':
            o->host = optarg;
            break;
        case 'p':
            o->port = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'k':
            o->admin_key_file = optarg;
            break;
        case 'P':
            o->server_pid = strtol(optarg, NULL, 10);
            break;
        case 'w':
            if (!strcmp(optarg, "iot")) {
                tide__wl_config_init(&dflt, TIDE_WL_IOT);
                o->wl.kind = TIDE_WL_IOT;
                o->wl.ooo_share = dflt.ooo_share;
                o->wl.late_share = dflt.late_share;
                o->wl.offline_share = dflt.offline_share;
            } else if (!strcmp(optarg, "sparse")) {
                tide__wl_config_init(&dflt, TIDE_WL_SPARSE);
                o->wl.kind = TIDE_WL_SPARSE;
                o->wl.start_ns = dflt.start_ns;
            } else if (strcmp(optarg, "devops")) {
                return -EINVAL;
            }
            break;
        case 'X':
            if (!strcmp(optarg, "time"))
                o->wl.order = TIDE_WL_ORDER_TIME;
            else if (!strcmp(optarg, "series"))
                o->wl.order = TIDE_WL_ORDER_SERIES;
            else
                return -EINVAL;
            break;
        case 'd':
            o->wl.devices = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'f':
            o->wl.fields = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'i':
            interval_s = strtod(optarg, NULL);
            break;
        case 'h':
            hours = strtod(optarg, NULL);
            break;
        case 'S':
            start = strtoll(optarg, NULL, 10);
            break;
        case 's':
            o->wl.seed = strtoull(optarg, NULL, 10);
            break;
        case 'o':
            o->wl.ooo_share = strtod(optarg, NULL);
            break;
        case 'l':
            o->wl.late_share = strtod(optarg, NULL);
            break;
        case 'O':
            o->wl.offline_share = strtod(optarg, NULL);
            break;
        case 'c':
            o->connections = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'b':
            o->batch = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'r':
            o->rate = strtod(optarg, NULL);
            break;
        case 'C':
            o->q_concurrency = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'R':
            o->q_rate = strtod(optarg, NULL);
            break;
        case 'm':
            if (sscanf(optarg, "%u,%u,%u,%u,%u", &o->mix[0], &o->mix[1],
                       &o->mix[2], &o->mix[3], &o->mix[4]) != NQ ||
                !(o->mix[0] + o->mix[1] + o->mix[2] + o->mix[3] + o->mix[4]))
                return -EINVAL;
            break;
        case 'T':
            o->seconds = strtod(optarg, NULL);
            break;
        case 'j':
            o->json = optarg;
            break;
        case 'g':
            o->svg = optarg;
            break;
        case 'L':
            o->label = optarg;
            break;
        case '1':
            o->progress = 1;
            break;
        case '0':
            o->progress = 0;
            break;
        case 'K':
            o->compact = 1;
            break;
        case 'D':
            o->data_dir = optarg;
            break;
        case 'Y':
            o->tls = 1;
            break;
        case 'A':
            o->ca = optarg;
            o->tls = 1;
            break;
        case 'N':
            o->count = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'U':
            o->resume = 1;
            break;
        case 'W':
            o->window_days = strtod(optarg, NULL);
            if (!(o->window_days > 0))
                return -EINVAL;
            break;
        default:
            return -EINVAL;
        }
    }
    /* The workload's own interval and span unless given. */
    tide__wl_config_init(&dflt, o->wl.kind);
    o->wl.interval_ns =
        interval_s > 0 ? (int64_t)(interval_s * 1e9) : dflt.interval_ns;
    o->wl.duration_ns =
        hours > 0 ? (int64_t)(hours * 3600 * 1e9) : dflt.duration_ns;
    if (start >= 0)
        o->wl.start_ns = (int64_t)start * 1000000000;
    if (!o->connections || o->connections > CONNECTIONS_MAX || !o->batch ||
        !o->q_concurrency || o->q_concurrency > CONNECTIONS_MAX ||
        o->seconds < 0 || o->port == 0 || o->port > 65535)
        return -EINVAL;
    if (!o->peer && o->mode != M_ENGINE && !o->admin_key_file)
        return -EINVAL;
    if (o->peer && (o->mode == M_VERIFY || o->mode == M_COMPACT || o->compact))
        return -EINVAL;
    if (!o->label)
        o->label = o->peer == TIDE_PEER_VICTORIA ? "victoria"
                   : o->peer == TIDE_PEER_INFLUX ? "influx"
                                                 : "tide";
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Engine mode: engine_bench, next to this binary, measures in-process. */

static int run_engine(const struct opts *o, const char *argv0)
{
    char path[4096], dev[16], hours[32], seed[32];
    const char *slash = strrchr(argv0, '/');
    int n = slash ? (int)(slash - argv0) + 1 : 0;

    snprintf(path, sizeof(path), "%.*sengine_bench", n, argv0);
    snprintf(dev, sizeof(dev), "%u", o->wl.devices);
    /* Fractional spans too: "%.0f" made half an hour 0. */
    snprintf(hours, sizeof(hours), "%.9g", (double)o->wl.duration_ns / 3.6e12);
    snprintf(seed, sizeof(seed), "%" PRIu64, o->wl.seed);
    fflush(stdout);
    if (o->json) {
        if (!freopen(o->json, "w", stdout))
            return fail(o->json, -errno, NULL);
        execl(path, path, "--devices", dev, "--hours", hours, "--seed", seed,
              "--json", (char *)NULL);
    } else {
        execl(path, path, "--devices", dev, "--hours", hours, "--seed", seed,
              (char *)NULL);
    }
    return fail(path, -errno, NULL);
}

/* ------------------------------------------------------------------------ */
/* Report */

struct figures {
    double elapsed_s;
    uint64_t sent, acked, queries;
    double cpu_s, rss_mib;                     /* server, -1 unknown */
    double disk_bytes, wal_bytes, head_points; /* segments, live WAL */
    uint64_t verify_points, verify_sum, expect_points, expect_sum;
    int verified;
    struct compact_figs compact; /* --compact, compact mode */
    struct layout layout;        /* --data-dir */
};

static void print_config(const struct bench *b)
{
    const struct opts *o = &b->o;
    const struct tide_wl_config *w = &b->wl->cfg;

    printf("tide-bench %s: mode %s, target %s on %s:%u\n", TIDE_BENCH_VERSION,
           mode_names[o->mode], o->label, o->host, o->port);
    printf("  workload %s: %u devices, %u fields, interval %.3f s, %.2f h "
           "from %" PRId64 " s, seed %" PRIu64 ", %s-major\n",
           wl_names[w->kind], w->devices, w->fields,
           (double)w->interval_ns / 1e9, (double)w->duration_ns / 3.6e12,
           w->start_ns / 1000000000, w->seed, order_names[w->order]);
    if (w->kind == TIDE_WL_IOT)
        printf("  out-of-order %.3f, late %.3f, offline devices %.3f\n",
               w->ooo_share, w->late_share, w->offline_share);
    printf("  %zu rows, %" PRIu64 " points, %" PRIu64
           " series, generated in %.2f s before the timed phase\n",
           b->wl->n_rows, b->wl->points, b->wl->series, b->wl->generate_s);
    printf("  connections %u, batch %u, rate %s; query concurrency %u, "
           "rate %s, mix %u:%u:%u:%u:%u, seconds %.1f\n",
           o->connections, o->batch, o->rate > 0 ? "capped" : "unlimited",
           o->q_concurrency, o->q_rate > 0 ? "capped" : "closed loop",
           o->mix[0], o->mix[1], o->mix[2], o->mix[3], o->mix[4], o->seconds);
}

static void print_hist_row(const char *name, const struct tide_hist *h)
{
    printf("  %-28s %9" PRIu64 " %9.3f %9.3f %9.3f %9.3f %9.3f\n", name,
           tide__hist_count(h), tide__hist_percentile(h, 50) / 1e6,
           tide__hist_percentile(h, 90) / 1e6,
           tide__hist_percentile(h, 99) / 1e6,
           tide__hist_percentile(h, 99.9) / 1e6, tide__hist_max(h) / 1e6);
}

static void print_table(const struct bench *b, const struct figures *f)
{
    int writes = b->o.mode == M_INGEST || b->o.mode == M_MIXED;
    int reads = b->o.mode == M_QUERY || b->o.mode == M_MIXED;

    printf("\n%-30s %s\n", "figure", "value");
    printf("%-30s %.2f s\n", "elapsed", f->elapsed_s);
    if (writes) {
        printf("%-30s %" PRIu64 " / %" PRIu64 "\n", "points acked / sent",
               f->acked, f->sent);
        printf("%-30s %.0f\n", "points/s (total)",
               (double)f->acked / b->ingest_s);
        for (unsigned i = 0; i < b->o.connections; i++)
            printf("%-26s %3u %.0f\n", "points/s connection", i,
                   b->conn_rate[i]);
    }
    if (reads)
        printf("%-30s %.1f\n", "queries/s (total)",
               (double)f->queries / f->elapsed_s);
    if (f->cpu_s >= 0)
        printf("%-30s %.2f s (%.2f cores)\n", "server CPU", f->cpu_s,
               f->cpu_s / f->elapsed_s);
    if (f->rss_mib >= 0)
        printf("%-30s %.1f MiB\n", "server peak RSS", f->rss_mib);
    if (f->disk_bytes >= 0 && writes)
        printf("%-30s %.0f B segments, %.0f B WAL, %.0f points in head\n",
               "bytes on disk", f->disk_bytes, f->wal_bytes, f->head_points);
    printf("\n  %-28s %9s %9s %9s %9s %9s %9s\n", "latency (ms)", "count",
           "p50", "p90", "p99", "p99.9", "max");
    if (writes)
        print_hist_row("write ack (per batch)", &b->ack);
    for (int q = 0; reads && q < NQ; q++)
        if (b->o.mix[q])
            print_hist_row(q_names[q], &b->q[q]);
    for (int i = 0; i < CODES_MAX && b->codes[i].n; i++)
        printf("error %-24s %" PRIu64 "\n", code_text(b->codes[i].code),
               b->codes[i].n);
    if (f->verified)
        printf("verify: server %" PRIu64 " points sum %016" PRIx64
               ", sent %" PRIu64 " points sum %016" PRIx64 ": %s\n",
               f->verify_points, f->verify_sum, f->expect_points, f->expect_sum,
               f->verify_points == f->expect_points &&
                       f->verify_sum == f->expect_sum
                   ? "MATCH"
                   : "MISMATCH");
}

static void json_hist(struct tide_json *j, const char *key,
                      const struct tide_hist *h)
{
    tide__json_object_begin(j, key);
    tide__json_u64(j, "count", tide__hist_count(h));
    tide__json_f64(j, "mean_ms", tide__hist_mean(h) / 1e6);
    tide__json_f64(j, "p50_ms", tide__hist_percentile(h, 50) / 1e6);
    tide__json_f64(j, "p90_ms", tide__hist_percentile(h, 90) / 1e6);
    tide__json_f64(j, "p99_ms", tide__hist_percentile(h, 99) / 1e6);
    tide__json_f64(j, "p999_ms", tide__hist_percentile(h, 99.9) / 1e6);
    tide__json_f64(j, "max_ms", tide__hist_max(h) / 1e6);
    tide__json_object_end(j);
}

static void git_commit(char *buf, size_t size)
{
    FILE *p = popen("git rev-parse --short HEAD 2>/dev/null", "r");

    snprintf(buf, size, "unknown");
    if (p) {
        if (fgets(buf, (int)size, p))
            buf[strcspn(buf, "\n")] = 0;
        pclose(p);
    }
}

static int write_json(const struct bench *b, const struct figures *f,
                      const struct tide_sample *s, size_t ns)
{
    const struct opts *o = &b->o;
    const struct tide_wl_config *w = &b->wl->cfg;
    struct tide_json j;
    struct utsname u;
    char commit[64];
    FILE *fp = fopen(o->json, "w");
    int rc;

    if (!fp)
        return -errno;
    uname(&u);
    git_commit(commit, sizeof(commit));
    tide__json_init(&j, fp);
    tide__json_object_begin(&j, NULL);
    tide__json_str(&j, "version", TIDE_BENCH_VERSION);
    tide__json_str(&j, "commit", commit);
    tide__json_object_begin(&j, "machine");
    tide__json_i64(&j, "cores", sysconf(_SC_NPROCESSORS_ONLN));
    tide__json_f64(&j, "memory_mib",
                   (double)sysconf(_SC_PHYS_PAGES) *
                       (double)sysconf(_SC_PAGESIZE) / 1048576.0);
    tide__json_str(&j, "kernel", u.release);
    tide__json_object_end(&j);
    tide__json_object_begin(&j, "config");
    tide__json_str(&j, "mode", mode_names[o->mode]);
    tide__json_str(&j, "target", o->label);
    tide__json_str(&j, "host", o->host);
    tide__json_u64(&j, "port", o->port);
    tide__json_str(&j, "workload", wl_names[w->kind]);
    tide__json_str(&j, "order", order_names[w->order]);
    tide__json_u64(&j, "devices", w->devices);
    tide__json_u64(&j, "fields", w->fields);
    tide__json_f64(&j, "interval_s", (double)w->interval_ns / 1e9);
    tide__json_f64(&j, "hours", (double)w->duration_ns / 3.6e12);
    tide__json_i64(&j, "start_s", w->start_ns / 1000000000);
    tide__json_u64(&j, "seed", w->seed);
    tide__json_f64(&j, "ooo_share", w->ooo_share);
    tide__json_f64(&j, "late_share", w->late_share);
    tide__json_f64(&j, "offline_share", w->offline_share);
    tide__json_u64(&j, "connections", o->connections);
    tide__json_u64(&j, "batch", o->batch);
    tide__json_f64(&j, "rate", o->rate);
    tide__json_u64(&j, "query_concurrency", o->q_concurrency);
    tide__json_f64(&j, "query_rate", o->q_rate);
    tide__json_array_begin(&j, "query_mix");
    for (int q = 0; q < NQ; q++)
        tide__json_u64(&j, NULL, o->mix[q]);
    tide__json_array_end(&j);
    tide__json_f64(&j, "seconds", o->seconds);
    tide__json_u64(&j, "rows", b->wl->n_rows);
    tide__json_u64(&j, "points", b->wl->points);
    tide__json_u64(&j, "series", b->wl->series);
    tide__json_f64(&j, "generate_s", b->wl->generate_s);
    tide__json_object_end(&j);
    tide__json_object_begin(&j, "results");
    tide__json_f64(&j, "elapsed_s", f->elapsed_s);
    tide__json_u64(&j, "points_sent", f->sent);
    tide__json_u64(&j, "points_acked", f->acked);
    tide__json_f64(&j, "points_per_s",
                   b->ingest_s > 0 ? (double)f->acked / b->ingest_s : 0);
    tide__json_array_begin(&j, "points_per_s_per_connection");
    for (unsigned i = 0; i < o->connections; i++)
        tide__json_f64(&j, NULL, b->conn_rate[i]);
    tide__json_array_end(&j);
    tide__json_u64(&j, "queries", f->queries);
    tide__json_f64(&j, "queries_per_s", (double)f->queries / f->elapsed_s);
    tide__json_f64(&j, "server_cpu_s", f->cpu_s);
    tide__json_f64(&j, "server_rss_peak_mib", f->rss_mib);
    tide__json_f64(&j, "segment_bytes", f->disk_bytes);
    tide__json_f64(&j, "wal_bytes", f->wal_bytes);
    tide__json_f64(&j, "head_points", f->head_points);
    json_hist(&j, "write_ack", &b->ack);
    tide__json_array_begin(&j, "queries_by_type");
    for (int q = 0; q < NQ; q++) {
        tide__json_object_begin(&j, NULL);
        tide__json_str(&j, "name", q_names[q]);
        tide__json_u64(&j, "errors", b->q_errors[q]);
        tide__json_u64(&j, "points", b->q_points[q]);
        json_hist(&j, "latency", &b->q[q]);
        tide__json_object_end(&j);
    }
    tide__json_array_end(&j);
    tide__json_array_begin(&j, "errors");
    for (int i = 0; i < CODES_MAX && b->codes[i].n; i++) {
        tide__json_object_begin(&j, NULL);
        tide__json_i64(&j, "code", b->codes[i].code);
        tide__json_str(&j, "text", code_text(b->codes[i].code));
        tide__json_u64(&j, "count", b->codes[i].n);
        tide__json_object_end(&j);
    }
    tide__json_array_end(&j);
    if (f->verified) {
        tide__json_object_begin(&j, "verify");
        tide__json_u64(&j, "server_points", f->verify_points);
        tide__json_u64(&j, "server_checksum", f->verify_sum);
        tide__json_u64(&j, "sent_points", f->expect_points);
        tide__json_u64(&j, "sent_checksum", f->expect_sum);
        tide__json_bool(&j, "match",
                        f->verify_points == f->expect_points &&
                            f->verify_sum == f->expect_sum);
        tide__json_object_end(&j);
    }
    if (f->compact.done) {
        const struct tide_compaction_stats *c = &f->compact.cs;

        tide__json_object_begin(&j, "compaction");
        tide__json_f64(&j, "elapsed_s", f->compact.s);
        tide__json_f64(&j, "segments_before", f->compact.segments_before);
        tide__json_f64(&j, "segments_after", f->compact.segments_after);
        tide__json_f64(&j, "segment_bytes_before", f->compact.bytes_before);
        tide__json_f64(&j, "segment_bytes_after", f->compact.bytes_after);
        tide__json_f64(&j, "head_points", f->compact.head_points);
        tide__json_f64(&j, "bytes_per_point", f->compact.bytes_per_point);
        tide__json_f64(&j, "points_per_s",
                       f->compact.s > 0 ? f->compact.points / f->compact.s : 0);
        tide__json_u64(&j, "runs", c->runs);
        tide__json_u64(&j, "bytes_read", c->bytes_read);
        tide__json_u64(&j, "bytes_written", c->bytes_written);
        tide__json_u64(&j, "points_expired", c->points_expired);
        tide__json_u64(&j, "points_deduplicated", c->points_deduplicated);
        tide__json_u64(&j, "files_deleted", c->files_deleted);
        tide__json_u64(&j, "errors", c->errors);
        tide__json_object_end(&j);
    }
    if (f->layout.ok) {
        tide__json_object_begin(&j, "layout");
        tide__json_u64(&j, "shards", f->layout.shards);
        tide__json_u64(&j, "segment_files", f->layout.files);
        tide__json_u64(&j, "segment_file_bytes", f->layout.file_bytes);
        tide__json_f64(&j, "window_days", f->layout.window_days);
        tide__json_u64(&j, "windows", f->layout.groups);
        tide__json_f64(
            &j, "files_per_shard_window_mean",
            f->layout.groups ? (double)f->layout.files / f->layout.groups : 0);
        tide__json_u64(&j, "files_per_shard_window_max",
                       f->layout.max_per_group);
        tide__json_u64(&j, "files_spanning_windows", f->layout.spanning);
        tide__json_f64(&j, "bytes_per_point",
                       b->wl->points ? (double)f->layout.file_bytes /
                                           (double)b->wl->points
                                     : 0);
        tide__json_object_end(&j);
    }
    tide__json_array_begin(&j, "timeline");
    for (size_t i = 0; i < ns; i++) {
        tide__json_object_begin(&j, NULL);
        tide__json_f64(&j, "t_s", s[i].t_s);
        tide__json_f64(&j, "points_per_s", s[i].points_per_s);
        tide__json_f64(&j, "ack_p99_ms", s[i].ack_p99_ms);
        tide__json_f64(&j, "queries_per_s", s[i].queries_per_s);
        tide__json_f64(&j, "query_p99_ms", s[i].query_p99_ms);
        tide__json_object_end(&j);
    }
    tide__json_array_end(&j);
    tide__json_object_end(&j);
    tide__json_object_end(&j);
    rc = tide__json_fini(&j);
    if (fclose(fp) && !rc)
        rc = -errno;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The timed phase */

static int partition(struct bench *b)
{
    unsigned n = b->o.connections;

    b->conn_rows = calloc(n, sizeof(*b->conn_rows));
    b->conn_n = calloc(n, sizeof(*b->conn_n));
    b->conn_rate = calloc(n, sizeof(*b->conn_rate));
    if (!b->conn_rows || !b->conn_n || !b->conn_rate)
        return -ENOMEM;
    for (size_t i = 0; i < b->wl->n_rows; i++)
        b->conn_n[b->wl->rows[i].device % n]++;
    for (unsigned c = 0; c < n; c++) {
        b->conn_rows[c] =
            malloc((b->conn_n[c] ? b->conn_n[c] : 1) * sizeof(size_t));
        if (!b->conn_rows[c])
            return -ENOMEM;
        b->conn_n[c] = 0;
    }
    for (size_t i = 0; i < b->wl->n_rows; i++) {
        unsigned c = b->wl->rows[i].device % n;

        b->conn_rows[c][b->conn_n[c]++] = i;
    }
    return 0;
}

/* Start writers and readers as the mode says, sample every second until
 * done, then join. */
static int timed_phase(struct bench *b, struct tide_sample *s, size_t *ns,
                       struct figures *f)
{
    int writes = b->o.mode == M_INGEST || b->o.mode == M_MIXED;
    int reads = b->o.mode == M_QUERY || b->o.mode == M_MIXED;
    unsigned nw = writes ? b->o.connections : 0;
    unsigned nr = reads ? b->o.q_concurrency : 0;
    pthread_t th[2 * CONNECTIONS_MAX];
    struct writer wr[CONNECTIONS_MAX];
    struct reader rd[CONNECTIONS_MAX];
    struct tide_hist *prev = malloc(2 * sizeof(*prev));
    struct tide_hist *diff = malloc(sizeof(*diff));
    int tty = b->o.progress < 0 ? isatty(1) : b->o.progress;
    uint64_t prev_acked = 0, prev_q = 0;
    double last, t_end = 0;

    if (!prev || !diff) {
        free(prev);
        free(diff);
        return -ENOMEM;
    }
    tide__hist_init(&prev[0]);
    tide__hist_init(&prev[1]);
    atomic_store(&b->writers_left, nw);
    b->t0 = mono_s();
    last = b->t0;
    for (unsigned i = 0; i < nw; i++) {
        wr[i] = (struct writer){b, i};
        pthread_create(&th[i], NULL, b->o.peer ? writer_peer : writer_tide,
                       &wr[i]);
    }
    for (unsigned i = 0; i < nr; i++) {
        rd[i] = (struct reader){b, i};
        pthread_create(&th[nw + i], NULL, reader_main, &rd[i]);
    }
    for (;;) {
        double now = mono_s(), el = now - b->t0;
        int writers_done = writes && atomic_load(&b->writers_left) == 0;

        if (writers_done && !t_end)
            t_end = now;
        if ((writes && writers_done) || (!writes && el >= b->o.seconds))
            break;
        sleep_s(0.1);
        now = mono_s();
        if (now - last >= 1.0 && *ns < SAMPLES_MAX) {
            uint64_t acked = atomic_load(&b->points_acked);
            uint64_t q = atomic_load(&b->q_done);
            struct tide_sample *x = &s[(*ns)++];

            x->t_s = now - b->t0;
            x->points_per_s = (double)(acked - prev_acked) / (now - last);
            x->queries_per_s = (double)(q - prev_q) / (now - last);
            tide__hist_sub(diff, &b->ack, &prev[0]);
            x->ack_p99_ms = tide__hist_percentile(diff, 99) / 1e6;
            tide__hist_sub(diff, &b->q_all, &prev[1]);
            x->query_p99_ms = tide__hist_percentile(diff, 99) / 1e6;
            tide__hist_init(&prev[0]);
            tide__hist_add(&prev[0], &b->ack);
            tide__hist_init(&prev[1]);
            tide__hist_add(&prev[1], &b->q_all);
            prev_acked = acked;
            prev_q = q;
            last = now;
            if (tty) {
                uint64_t sent = atomic_load(&b->points_sent);
                double eta =
                    writes && sent
                        ? x->t_s * (double)(b->wl->points - sent) / (double)sent
                        : b->o.seconds - x->t_s;

                fprintf(stderr,
                        "\r  %6.1f s  %10.0f points/s  %7.1f queries/s  "
                        "ETA %5.0f s ",
                        x->t_s, x->points_per_s, x->queries_per_s,
                        eta > 0 ? eta : 0);
            }
        }
    }
    atomic_store(&b->stop, 1);
    for (unsigned i = 0; i < nw + nr; i++)
        pthread_join(th[i], NULL);
    if (tty)
        fputs("\n", stderr);
    f->elapsed_s = mono_s() - b->t0;
    b->ingest_s = t_end ? b->writers_end - b->t0 : f->elapsed_s;
    f->sent = atomic_load(&b->points_sent);
    f->acked = atomic_load(&b->points_acked);
    f->queries = atomic_load(&b->q_done);
    free(prev);
    free(diff);
    return 0;
}

static void bench_free(struct bench *b)
{
    for (unsigned c = 0; b->conn_rows && c < b->o.connections; c++)
        free(b->conn_rows[c]);
    free(b->conn_rows);
    free(b->conn_n);
    free(b->conn_rate);
    free(b->names);
    tide__wl_free(b->wl);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

int main(int argc, char **argv)
{
    static const char *const stat_names[3] = {"segment_bytes", "wal_bytes",
                                              "head_points"};
    struct bench *b = calloc(1, sizeof(*b));
    struct tide_sample *samples = calloc(SAMPLES_MAX, sizeof(*samples));
    struct figures f = {.cpu_s = -1, .rss_mib = -1, .disk_bytes = -1};
    double cpu0 = 0, rss = 0, st[3] = {0, 0, 0};
    size_t ns = 0;
    int rc, ret = 1;

    if (!b || !samples) {
        fprintf(stderr, "tide-bench: out of memory\n");
        return 1;
    }
    pthread_mutex_init(&b->lock, NULL);
    tide__hist_init(&b->ack);
    tide__hist_init(&b->q_all);
    for (int q = 0; q < NQ; q++)
        tide__hist_init(&b->q[q]);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        ret = 0;
        goto out;
    }
    if (parse_opts(argc, argv, &b->o)) {
        usage(stderr);
        ret = 2;
        goto out;
    }
    if (b->o.mode == M_ENGINE) {
        ret = run_engine(&b->o, argv[0]);
        goto out;
    }
    rc = tide__wl_generate(&b->o.wl, &b->wl);
    if (rc) {
        fail("generate workload", rc, NULL);
        goto out;
    }
    b->names = calloc(b->wl->cfg.devices, sizeof(*b->names));
    if (!b->names || partition(b)) {
        fail("setup", -ENOMEM, NULL);
        goto out;
    }
    for (uint32_t d = 0; d < b->wl->cfg.devices; d++)
        tide__wl_device_name(b->wl->cfg.kind, d, b->names[d],
                             sizeof(b->names[d]));
    print_config(b);
    fflush(stdout);
    if (!b->o.peer && b->o.mode != M_COMPACT && provision(b))
        goto out;
    if (b->o.mode == M_CONNECT) {
        ret = run_connect(b);
        goto out;
    }
    if (b->o.server_pid > 0 && proc_cpu_rss(b->o.server_pid, &cpu0, &rss))
        b->o.server_pid = 0;
    if (b->o.mode == M_VERIFY) {
        double t0 = mono_s();

        tide__wl_expect(b->wl, &f.expect_points, &f.expect_sum);
        if (verify(b, &f.verify_points, &f.verify_sum))
            goto out;
        f.verified = 1;
        f.elapsed_s = mono_s() - t0;
    } else if (b->o.mode != M_COMPACT && timed_phase(b, samples, &ns, &f)) {
        fail("timed phase", -ENOMEM, NULL);
        goto out;
    }
    if (b->o.mode == M_COMPACT || (b->o.compact && b->o.mode == M_INGEST)) {
        if (compact_now(b, &f.compact))
            goto out;
        if (b->o.mode == M_COMPACT)
            f.elapsed_s = f.compact.s;
    }
    if (b->o.data_dir) {
        rc = layout_read(b->o.data_dir, b->o.window_days, &f.layout);
        if (rc) {
            fail("segment layout", rc, NULL);
            goto out;
        }
    }
    if (b->o.server_pid > 0 &&
        proc_cpu_rss(b->o.server_pid, &f.cpu_s, &f.rss_mib) == 0)
        f.cpu_s -= cpu0;
    if (!b->o.peer && server_stats(b, stat_names, 3, st) == 0) {
        f.disk_bytes = st[0];
        f.wal_bytes = st[1];
        f.head_points = st[2];
    }
    print_table(b, &f);
    if (f.compact.done)
        print_compact(&f.compact);
    if (f.layout.ok)
        print_layout(&f.layout);
    if (b->o.json) {
        rc = write_json(b, &f, samples, ns);
        if (rc)
            fail(b->o.json, rc, NULL);
    }
    if (b->o.svg && ns) {
        char title[128];

        snprintf(title, sizeof(title), "tide-bench %s, %s",
                 mode_names[b->o.mode], b->o.label);
        rc = tide__report_svg(b->o.svg, title, samples, ns);
        if (rc)
            fail(b->o.svg, rc, NULL);
    }
    ret = 0;
    if (f.verified &&
        (f.verify_points != f.expect_points || f.verify_sum != f.expect_sum))
        ret = 1;
    /* A write error makes the run's figures meaningless; query errors are
     * counted and reported, not fatal. */
    if (b->o.mode == M_INGEST && b->codes[0].n)
        ret = 1;
out:
    bench_free(b);
    free(samples);
    return ret;
}
