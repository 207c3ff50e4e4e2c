/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tide-bench workloads: a TSBS-like fleet generated from a seed before the
 * timed phase (docs/bench.md, "Workloads"). The same configuration gives
 * the same rows, byte for byte. A row is one device's reading of one
 * measurement (all its fields) at one timestamp; rows are stored in the
 * order they are sent, which is where out-of-order, late and catch-up
 * points come from.
 */
#ifndef TIDE_BENCH_WORKLOAD_H
#define TIDE_BENCH_WORKLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "tide/client.h"

#define TIDE_WL_FIELDS_MAX 10
#define TIDE_WL_DEVICES_MAX 1000000u
#define TIDE_WL_ROWS_MAX 200000000ull /* ~19 GB of rows: a hard stop */

enum tide_wl_kind {
    TIDE_WL_DEVOPS = 0, /* "cpu": 10 f64 usage fields per host */
    TIDE_WL_IOT = 1,    /* trucks: readings and diagnostics */
    TIDE_WL_SPARSE = 2, /* sensors: one f64 reading (3 decimals) a day */
};

/* The order rows are sent in: time-major (every device at t, then t + 1:
 * a live feed) or series-major (each device's whole span, then the next:
 * a back-fill of device archives). */
enum tide_wl_order {
    TIDE_WL_ORDER_TIME = 0,
    TIDE_WL_ORDER_SERIES = 1,
};

struct tide_wl_config {
    enum tide_wl_kind kind;
    enum tide_wl_order order;
    uint32_t devices;
    uint32_t fields;     /* devops: first N of the 10 cpu fields */
    int64_t start_ns;    /* first timestamp */
    int64_t interval_ns; /* reading interval (iot: the mean) */
    int64_t duration_ns; /* timestamps lie in [start, start + duration) */
    uint64_t seed;
    double ooo_share;     /* iot: points delayed by up to 5 intervals */
    double late_share;    /* iot: points delayed by 10..60 intervals */
    double offline_share; /* iot: devices offline for a window, then catch up */
};

struct tide_wl_field {
    const char *name;
    enum tide_value_type type;
};

/* One device reading. v[] holds f64 bits, an i64, or (TIDE_VALUE_STR) an
 * index into tide__wl_status_names. */
struct tide_wl_row {
    int64_t ts_ns;
    uint32_t device;
    uint16_t shape; /* 0: cpu or readings; 1: diagnostics */
    uint16_t n;     /* fields in v[] */
    uint64_t v[TIDE_WL_FIELDS_MAX];
};

struct tide_wl_tags {
    char a[24], b[24], c[24]; /* devops: region, firmware; iot: fleet,
                                 driver, model */
};

struct tide_wl {
    struct tide_wl_config cfg;
    struct tide_wl_row *rows; /* in send order */
    size_t n_rows;
    uint64_t points;           /* fields summed over rows */
    uint64_t series;           /* distinct (device, field) */
    struct tide_wl_tags *tags; /* per device */
    int64_t end_ns;            /* largest timestamp + 1 */
    double generate_s;         /* wall time spent generating */
};

/* Defaults for `kind`: 100 devices, 10 fields, 10 s interval, 24 h from
 * 2024-01-01T00:00:00Z, seed 1; iot shares 5 % ooo, 1 % late, 10 %
 * offline; sparse: a sparse long history, 100 sensors of 1 field, one
 * reading a day for 12 years (4383 days) from 2012-01-01T00:00:00Z, sent
 * time-major (every sensor's day d before any sensor's day d + 1). */
void tide__wl_config_init(struct tide_wl_config *c, enum tide_wl_kind kind);

/*
 * Generate the workload into *out (owned by the caller, free with
 * tide__wl_free). Returns 0, -EINVAL (a knob out of range: no devices,
 * fields not 1..10, interval <= 0, shares outside 0..1, too many rows) or
 * -ENOMEM. On failure nothing is allocated.
 */
int tide__wl_generate(const struct tide_wl_config *c, struct tide_wl **out);

/* Free a workload. Accepts NULL. */
void tide__wl_free(struct tide_wl *w);

/* The fields of a shape and their number in *n. */
const struct tide_wl_field *tide__wl_fields(enum tide_wl_kind kind,
                                            uint16_t shape, uint16_t *n);

/* "host_17", "truck_17" or "sensor_17" into buf. */
void tide__wl_device_name(enum tide_wl_kind kind, uint32_t device, char *buf,
                          size_t size);

/* "cpu", "readings", "diagnostics" or "sensor": the measurement of a
 * shape. */
const char *tide__wl_measurement(enum tide_wl_kind kind, uint16_t shape);

/* Text of a status string value index. */
const char *tide__wl_status_name(uint64_t index);

/*
 * Hash of one point, as verify adds them up: the sum (mod 2^64) over a
 * set of points is independent of their order. `str` is used for string
 * values, `bits` otherwise (f64 bits, i64, bool 0/1).
 */
uint64_t tide__wl_point_hash(const char *device, const char *field,
                             int64_t ts_ns, enum tide_value_type type,
                             uint64_t bits, const char *str);

/* Count and checksum of every point of the workload. */
void tide__wl_expect(const struct tide_wl *w, uint64_t *points,
                     uint64_t *checksum);

#endif /* TIDE_BENCH_WORKLOAD_H */
