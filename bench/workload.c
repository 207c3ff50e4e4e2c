/* SPDX-License-Identifier: Apache-2.0 */
/* tide-bench workloads (workload.h). */
#include "workload.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct tide_wl_field cpu_fields[TIDE_WL_FIELDS_MAX] = {
    {"usage_user", TIDE_VALUE_F64},    {"usage_system", TIDE_VALUE_F64},
    {"usage_idle", TIDE_VALUE_F64},    {"usage_nice", TIDE_VALUE_F64},
    {"usage_iowait", TIDE_VALUE_F64},  {"usage_irq", TIDE_VALUE_F64},
    {"usage_softirq", TIDE_VALUE_F64}, {"usage_steal", TIDE_VALUE_F64},
    {"usage_guest", TIDE_VALUE_F64},   {"usage_guest_nice", TIDE_VALUE_F64}};

static const struct tide_wl_field readings_fields[] = {
    {"latitude", TIDE_VALUE_F64},        {"longitude", TIDE_VALUE_F64},
    {"elevation", TIDE_VALUE_F64},       {"velocity", TIDE_VALUE_F64},
    {"heading", TIDE_VALUE_F64},         {"grade", TIDE_VALUE_F64},
    {"fuel_consumption", TIDE_VALUE_F64}};

static const struct tide_wl_field diag_fields[] = {
    {"load", TIDE_VALUE_F64},
    {"fuel_state", TIDE_VALUE_F64},
    {"status", TIDE_VALUE_I64},
    {"status_text", TIDE_VALUE_STR}};

static const struct tide_wl_field sensor_fields[] = {
    {"reading", TIDE_VALUE_F64}};

#define N_READINGS 7
#define N_DIAG 4
#define DIAG_EVERY 6 /* one diagnostics row per 6 readings */

/* Bounds and decimals of each iot reading's random walk. */
static const struct {
    double lo, hi, step, scale;
} reading_walk[N_READINGS] = {{-90, 90, 0.001, 1e5}, {-180, 180, 0.001, 1e5},
                              {0, 5000, 5, 100},     {0, 120, 3, 100},
                              {0, 360, 10, 100},     {0, 10, 0.5, 100},
                              {0, 50, 1, 100}};

static const char *const status_names[] = {"ok",        "idle",  "loading",
                                           "unloading", "fault", "service"};
#define N_STATUS 6

static const char *const regions[] = {
    "us-east-1",  "us-west-1",    "us-west-2",
    "eu-west-1",  "eu-central-1", "ap-southeast-1",
    "ap-south-1", "sa-east-1",    "ap-northeast-1"};
static const char *const fleets[] = {"East", "West", "North", "South"};
static const char *const drivers[] = {"Albert", "Derek", "Etta",  "Nadia",
                                      "Rodney", "Seth",  "Trish", "Zoe"};
static const char *const models[] = {"F-150", "G-2000", "H-2"};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* xorshift64*: fast, and its stream depends on the seed only. */
static uint64_t next_u64(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static double uniform(uint64_t *s)
{
    return (double)(next_u64(s) >> 11) / 9007199254740992.0;
}

static uint64_t seed_state(uint64_t seed, uint64_t stream)
{
    uint64_t z = seed * 0x9e3779b97f4a7c15ull + stream + 1;

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return z ? z : 1;
}

static uint64_t f64_bits(double d)
{
    uint64_t b;

    memcpy(&b, &d, sizeof(b));
    return b;
}

void tide__wl_config_init(struct tide_wl_config *c, enum tide_wl_kind kind)
{
    memset(c, 0, sizeof(*c));
    c->kind = kind;
    c->devices = 100;
    c->fields = TIDE_WL_FIELDS_MAX;
    c->start_ns = 1704067200ll * 1000000000; /* 2024-01-01T00:00:00Z */
    c->interval_ns = 10ll * 1000000000;
    c->duration_ns = 24ll * 3600 * 1000000000;
    c->seed = 1;
    if (kind == TIDE_WL_SPARSE) {
        c->fields = 1;
        c->start_ns = 1325376000ll * 1000000000; /* 2012-01-01T00:00:00Z */
        c->interval_ns = 86400ll * 1000000000;
        c->duration_ns = 4383ll * 86400 * 1000000000; /* 12 years */
    }
    if (kind == TIDE_WL_IOT) {
        c->ooo_share = 0.05;
        c->late_share = 0.01;
        c->offline_share = 0.10;
    }
}

const struct tide_wl_field *tide__wl_fields(enum tide_wl_kind kind,
                                            uint16_t shape, uint16_t *n)
{
    if (kind == TIDE_WL_DEVOPS) {
        *n = TIDE_WL_FIELDS_MAX;
        return cpu_fields;
    }
    if (kind == TIDE_WL_SPARSE) {
        *n = 1;
        return sensor_fields;
    }
    *n = shape ? N_DIAG : N_READINGS;
    return shape ? diag_fields : readings_fields;
}

void tide__wl_device_name(enum tide_wl_kind kind, uint32_t device, char *buf,
                          size_t size)
{
    snprintf(buf, size, "%s_%u",
             kind == TIDE_WL_DEVOPS   ? "host"
             : kind == TIDE_WL_SPARSE ? "sensor"
                                      : "truck",
             device);
}

const char *tide__wl_measurement(enum tide_wl_kind kind, uint16_t shape)
{
    if (kind == TIDE_WL_DEVOPS)
        return "cpu";
    if (kind == TIDE_WL_SPARSE)
        return "sensor";
    return shape ? "diagnostics" : "readings";
}

const char *tide__wl_status_name(uint64_t index)
{
    return status_names[index % N_STATUS];
}

struct rows {
    struct tide_wl_row *v;
    size_t n, cap;
};

static struct tide_wl_row *row_push(struct rows *r)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 4096;
        struct tide_wl_row *v;

        if (cap > TIDE_WL_ROWS_MAX)
            return NULL;
        v = realloc(r->v, cap * sizeof(*v));
        if (!v)
            return NULL;
        r->v = v;
        r->cap = cap;
    }
    memset(&r->v[r->n], 0, sizeof(r->v[0]));
    return &r->v[r->n++];
}

/* devops: every host reports every interval; values are bounded random
 * walks in 0..100 kept in hundredths, so each has exactly 2 decimals. */
static int gen_devops(const struct tide_wl_config *c, struct rows *r)
{
    uint64_t s = seed_state(c->seed, 0);
    uint64_t steps = (uint64_t)(c->duration_ns / c->interval_ns);
    int32_t *walk;

    if (steps * c->devices > TIDE_WL_ROWS_MAX)
        return -EINVAL;
    walk = calloc((size_t)c->devices * c->fields, sizeof(*walk));
    if (!walk)
        return -ENOMEM;
    for (size_t i = 0; i < (size_t)c->devices * c->fields; i++)
        walk[i] = (int32_t)(next_u64(&s) % 10001);
    for (uint64_t t = 0; t < steps; t++) {
        for (uint32_t d = 0; d < c->devices; d++) {
            struct tide_wl_row *row = row_push(r);

            if (!row) {
                free(walk);
                return -ENOMEM;
            }
            row->ts_ns = c->start_ns + (int64_t)t * c->interval_ns;
            row->device = d;
            row->n = (uint16_t)c->fields;
            for (uint32_t f = 0; f < c->fields; f++) {
                int32_t *v = &walk[(size_t)d * c->fields + f];

                *v += (int32_t)(next_u64(&s) % 201) - 100;
                if (*v < 0)
                    *v = -*v;
                if (*v > 10000)
                    *v = 20000 - *v;
                row->v[f] = f64_bits((double)*v / 100);
            }
        }
    }
    free(walk);
    return 0;
}

/* sparse: every sensor reports once per interval, time-major; readings
 * are bounded random walks in -40..60 kept in thousandths, so each has
 * exactly 3 decimals. */
static int gen_sparse(const struct tide_wl_config *c, struct rows *r)
{
    uint64_t s = seed_state(c->seed, 3);
    uint64_t steps = (uint64_t)(c->duration_ns / c->interval_ns);
    int32_t *walk;

    if (steps * c->devices > TIDE_WL_ROWS_MAX)
        return -EINVAL;
    walk = calloc(c->devices, sizeof(*walk));
    if (!walk)
        return -ENOMEM;
    for (uint32_t d = 0; d < c->devices; d++)
        walk[d] = (int32_t)(next_u64(&s) % 100001) - 40000;
    for (uint64_t t = 0; t < steps; t++) {
        for (uint32_t d = 0; d < c->devices; d++) {
            struct tide_wl_row *row = row_push(r);
            int32_t *v = &walk[d];

            if (!row) {
                free(walk);
                return -ENOMEM;
            }
            row->ts_ns = c->start_ns + (int64_t)t * c->interval_ns;
            row->device = d;
            row->n = 1;
            /* A day's change of up to 2.5 degrees, reflected at the bounds. */
            *v += (int32_t)(next_u64(&s) % 5001) - 2500;
            if (*v < -40000)
                *v = -80000 - *v;
            if (*v > 60000)
                *v = 120000 - *v;
            row->v[0] = f64_bits((double)*v / 1000);
        }
    }
    free(walk);
    return 0;
}

static double walk_step(double v, double lo, double hi, double step,
                        double scale, uint64_t *s)
{
    v += (uniform(s) * 2 - 1) * step;
    if (v < lo)
        v = 2 * lo - v;
    if (v > hi)
        v = 2 * hi - v;
    return round(v * scale) / scale;
}

struct send_key {
    int64_t send_ns;
    size_t row;
};

static int key_cmp(const void *a, const void *b)
{
    const struct send_key *x = a, *y = b;

    if (x->send_ns != y->send_ns)
        return x->send_ns < y->send_ns ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

/* iot: every truck reports at irregular intervals (0.5..1.5 x the mean, ms
 * resolution); a row's send time is its timestamp, pushed back for
 * out-of-order, late and offline points; rows are sent by send time. */
static int gen_iot(const struct tide_wl_config *c, struct rows *r)
{
    uint64_t s = seed_state(c->seed, 1);
    int64_t end = c->start_ns + c->duration_ns;
    struct send_key *keys = NULL;
    struct tide_wl_row *sorted = NULL;
    int64_t *send = NULL;
    size_t cap_send = 0;

    for (uint32_t d = 0; d < c->devices; d++) {
        double w[N_READINGS];
        int64_t ts = c->start_ns + (int64_t)(uniform(&s) * c->interval_ns);
        int64_t off_from = 0, off_to = 0;
        uint32_t k = 0;

        for (int i = 0; i < N_READINGS; i++)
            w[i] = round((reading_walk[i].lo +
                          uniform(&s) *
                              (reading_walk[i].hi - reading_walk[i].lo)) *
                         reading_walk[i].scale) /
                   reading_walk[i].scale;
        if (uniform(&s) < c->offline_share) {
            off_from = c->start_ns + (int64_t)(uniform(&s) * c->duration_ns);
            off_to = off_from + (int64_t)((0.05 + uniform(&s) * 0.15) *
                                          (double)c->duration_ns);
        }
        for (; ts < end; k++) {
            for (uint16_t shape = 0; shape < (k % DIAG_EVERY ? 1 : 2);
                 shape++) {
                struct tide_wl_row *row = row_push(r);
                double u = uniform(&s);
                int64_t at = ts;

                if (!row)
                    goto nomem;
                row->ts_ns = ts;
                row->device = d;
                row->shape = shape;
                if (shape == 0) {
                    row->n = N_READINGS;
                    for (int i = 0; i < N_READINGS; i++) {
                        w[i] = walk_step(
                            w[i], reading_walk[i].lo, reading_walk[i].hi,
                            reading_walk[i].step, reading_walk[i].scale, &s);
                        row->v[i] = f64_bits(w[i]);
                    }
                } else {
                    uint64_t st = next_u64(&s) % N_STATUS;

                    row->n = N_DIAG;
                    row->v[0] = f64_bits(round(uniform(&s) * 500000) / 100);
                    row->v[1] = f64_bits(round(uniform(&s) * 100) / 100);
                    row->v[2] = st;
                    row->v[3] = st;
                }
                if (u < c->ooo_share)
                    at += (int64_t)((1 + uniform(&s) * 4) * c->interval_ns);
                else if (u < c->ooo_share + c->late_share)
                    at += (int64_t)((10 + uniform(&s) * 50) * c->interval_ns);
                if (ts >= off_from && ts < off_to && at < off_to)
                    at = off_to;
                if (r->n > cap_send) {
                    int64_t *v;

                    cap_send = r->cap;
                    v = realloc(send, cap_send * sizeof(*v));
                    if (!v)
                        goto nomem;
                    send = v;
                }
                send[r->n - 1] = at;
            }
            ts += (int64_t)((0.5 + uniform(&s)) * c->interval_ns) / 1000000 *
                  1000000;
            if (ts <= r->v[r->n - 1].ts_ns)
                ts = r->v[r->n - 1].ts_ns + 1000000;
        }
    }
    keys = malloc((r->n ? r->n : 1) * sizeof(*keys));
    sorted = malloc((r->n ? r->n : 1) * sizeof(*sorted));
    if (!keys || !sorted)
        goto nomem;
    for (size_t i = 0; i < r->n; i++) {
        keys[i].send_ns = send[i];
        keys[i].row = i;
    }
    qsort(keys, r->n, sizeof(*keys), key_cmp);
    for (size_t i = 0; i < r->n; i++)
        sorted[i] = r->v[keys[i].row];
    free(r->v);
    r->v = sorted;
    r->cap = r->n ? r->n : 1;
    free(keys);
    free(send);
    return 0;

nomem:
    free(keys);
    free(sorted);
    free(send);
    return -ENOMEM;
}

static void gen_tags(const struct tide_wl_config *c, struct tide_wl_tags *t)
{
    uint64_t s = seed_state(c->seed, 2);

    for (uint32_t d = 0; d < c->devices; d++) {
        if (c->kind == TIDE_WL_DEVOPS) {
            snprintf(t[d].a, sizeof(t[d].a), "%s",
                     regions[next_u64(&s) % COUNT(regions)]);
            snprintf(t[d].b, sizeof(t[d].b), "fw-%u.%u",
                     (unsigned)(next_u64(&s) % 4 + 1),
                     (unsigned)(next_u64(&s) % 10));
        } else {
            snprintf(t[d].a, sizeof(t[d].a), "%s",
                     fleets[next_u64(&s) % COUNT(fleets)]);
            snprintf(t[d].b, sizeof(t[d].b), "%s",
                     drivers[next_u64(&s) % COUNT(drivers)]);
            snprintf(t[d].c, sizeof(t[d].c), "%s",
                     models[next_u64(&s) % COUNT(models)]);
        }
    }
}

static double mono_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int by_device_then_send(const void *a, const void *b)
{
    const struct tide_wl_row *x = a, *y = b;

    if (x->device != y->device)
        return x->device < y->device ? -1 : 1;
    /* Rows of one device keep their send order: the sort key's tie-break
     * is the send position, stored in ts_ns's place for the sort. */
    return (x->ts_ns > y->ts_ns) - (x->ts_ns < y->ts_ns);
}

/* Series-major order: each device's rows in their send order, devices one
 * after another. */
static int to_series_major(struct rows *r)
{
    int64_t *ts = malloc(r->n * sizeof(*ts));

    if (!ts)
        return -ENOMEM;
    for (size_t i = 0; i < r->n; i++) {
        ts[i] = r->v[i].ts_ns;
        r->v[i].ts_ns = (int64_t)i;
    }
    qsort(r->v, r->n, sizeof(r->v[0]), by_device_then_send);
    for (size_t i = 0; i < r->n; i++)
        r->v[i].ts_ns = ts[r->v[i].ts_ns];
    free(ts);
    return 0;
}

int tide__wl_generate(const struct tide_wl_config *c, struct tide_wl **out)
{
    struct tide_wl *w = NULL;
    struct rows r = {0};
    uint8_t *has_diag = NULL;
    double t0 = mono_s();
    int rc;

    if (!c->devices || c->devices > TIDE_WL_DEVICES_MAX || !c->fields ||
        c->fields > TIDE_WL_FIELDS_MAX || c->interval_ns <= 0 ||
        c->duration_ns < c->interval_ns || c->ooo_share < 0 ||
        c->late_share < 0 || c->ooo_share + c->late_share > 1 ||
        c->offline_share < 0 || c->offline_share > 1 ||
        (c->order != TIDE_WL_ORDER_TIME && c->order != TIDE_WL_ORDER_SERIES))
        return -EINVAL;
    w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->cfg = *c;
    if (c->kind == TIDE_WL_IOT)
        w->cfg.fields = N_READINGS + N_DIAG;
    if (c->kind == TIDE_WL_SPARSE)
        w->cfg.fields = 1;
    w->tags = calloc(c->devices, sizeof(*w->tags));
    has_diag = calloc(c->devices, 1);
    if (!w->tags || !has_diag) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = c->kind == TIDE_WL_DEVOPS   ? gen_devops(c, &r)
         : c->kind == TIDE_WL_SPARSE ? gen_sparse(c, &r)
                                     : gen_iot(c, &r);
    if (!rc && c->order == TIDE_WL_ORDER_SERIES)
        rc = to_series_major(&r);
    if (rc)
        goto fail;
    gen_tags(c, w->tags);
    w->rows = r.v;
    w->n_rows = r.n;
    w->end_ns = c->start_ns;
    for (size_t i = 0; i < r.n; i++) {
        w->points += r.v[i].n;
        if (r.v[i].ts_ns >= w->end_ns)
            w->end_ns = r.v[i].ts_ns + 1;
        if (r.v[i].shape)
            has_diag[r.v[i].device] = 1;
    }
    if (c->kind == TIDE_WL_DEVOPS) {
        w->series = (uint64_t)c->devices * c->fields;
    } else if (c->kind == TIDE_WL_SPARSE) {
        w->series = c->devices;
    } else {
        for (uint32_t d = 0; d < c->devices; d++)
            w->series += N_READINGS + (has_diag[d] ? N_DIAG : 0);
    }
    free(has_diag);
    w->generate_s = mono_s() - t0;
    *out = w;
    return 0;

fail:
    free(r.v);
    free(has_diag);
    tide__wl_free(w);
    return rc;
}

void tide__wl_free(struct tide_wl *w)
{
    if (!w)
        return;
    free(w->rows);
    free(w->tags);
    free(w);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t point_hash(uint64_t dev_h, uint64_t field_h, int64_t ts_ns,
                           enum tide_value_type type, uint64_t bits)
{
    uint64_t h = mix(dev_h ^ mix(field_h));

    h = mix(h ^ (uint64_t)ts_ns);
    return mix(h ^ bits ^ ((uint64_t)type << 56));
}

uint64_t tide__wl_point_hash(const char *device, const char *field,
                             int64_t ts_ns, enum tide_value_type type,
                             uint64_t bits, const char *str)
{
    return point_hash(fnv1a(device), fnv1a(field), ts_ns, type,
                      type == TIDE_VALUE_STR ? fnv1a(str) : bits);
}

void tide__wl_expect(const struct tide_wl *w, uint64_t *points,
                     uint64_t *checksum)
{
    uint64_t sum = 0, field_h[2][TIDE_WL_FIELDS_MAX];
    char name[32];

    for (uint16_t shape = 0; shape < 2; shape++) {
        uint16_t n;
        const struct tide_wl_field *f = tide__wl_fields(w->cfg.kind, shape, &n);

        for (uint16_t i = 0; i < n; i++)
            field_h[shape][i] = fnv1a(f[i].name);
    }
    for (size_t i = 0; i < w->n_rows; i++) {
        const struct tide_wl_row *r = &w->rows[i];
        uint16_t n;
        const struct tide_wl_field *f =
            tide__wl_fields(w->cfg.kind, r->shape, &n);
        uint64_t dev_h;

        tide__wl_device_name(w->cfg.kind, r->device, name, sizeof(name));
        dev_h = fnv1a(name);
        for (uint16_t j = 0; j < r->n; j++) {
            uint64_t bits = f[j].type == TIDE_VALUE_STR
                                ? fnv1a(tide__wl_status_name(r->v[j]))
                                : r->v[j];

            sum += point_hash(dev_h, field_h[r->shape][j], r->ts_ns, f[j].type,
                              bits);
        }
    }
    *points = w->points;
    *checksum = sum;
}
