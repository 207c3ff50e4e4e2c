/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The adversarial suite's harness (docs/testing.md): a real tided started
 * by the fixture (wire.h), and next to every attack a bystander, another
 * tenant on its own connection that sends a Ping every 10 ms and every
 * 50 ms a small WriteBatch, recording each round trip. When the attack is
 * over, adv_finish() checks that the bystander was served in time (p99 of
 * its pings, the slowest WriteAck), that every point it was acknowledged
 * reads back point for point, and the caller checks tided's memory
 * (adv_rss_kib, adv_peak_kib).
 *
 * Bounds are the (#10), scaled by adv_scale(): 1 for release
 * builds, 3 for the sanitizer build (ASan and UBSan make tided about 3x
 * slower), or $TIDE_ADV_SCALE when set.
 */
#ifndef TIDE_TESTS_ADVERSARIAL_ADV_H
#define TIDE_TESTS_ADVERSARIAL_ADV_H

#include <stddef.h>
#include <stdint.h>

#include "proc.h"
#include "tided.h"
#include "wire.h"

/* The bystander's bounds, ×adv_scale():
 *   ADV_PING_P99_MS    the loop bound (item 5: a Ping's p99 under
 *                      20 ms while another client attacks);
 *   ADV_NO_STALL_MS    Ping p99 where the attack itself is a large frame
 *                      the loop must at least read (and decode or refuse):
 *                      "no stall", against the seconds of the old server;
 *   ADV_WRITE_MAX_MS   the slowest WriteAck: each one waits for an
 *                      fdatasync, which a shared CI disk can delay. */
#define ADV_PING_P99_MS 20.0
#define ADV_NO_STALL_MS 100.0
#define ADV_WRITE_MAX_MS 250.0
/* ... while a batch of 100,000 new series is made durable ahead of it. */
#define ADV_BULK_WRITE_MAX_MS 1000.0

/* The slowdown factor of this build for time bounds. */
double adv_scale(void);

/* tided's resident set (VmRSS) and peak resident set since the last
 * adv_peak_reset() (VmHWM), in KiB; -1 when unreadable. */
long adv_rss_kib(void);
long adv_peak_kib(void);

/* Reset tided's VmHWM to its current RSS (/proc/pid/clear_refs), so that
 * adv_peak_kib() gives the peak of what follows. */
void adv_peak_reset(void);

/* Wait up to `seconds` for tided's RSS to fall to `kib` or less; returns
 * the last RSS read. */
long adv_rss_settle(long kib, double seconds);

/* Start the fixture's tided with `settings` (wire.h fixture_start), make
 * the bystander's account and connection and start it. `rss0` of the
 * returned state is tided's RSS once the bystander runs. */
struct adv_state {
    long rss0;    /* KiB, after setup */
    int admin_fd; /* an operator connection for the test's own use */
};
void adv_begin(struct adv_state *st, const char *const *settings);

/* Stop the bystander and check it: at least `min_pings` pings were
 * answered (the caller's attack window), their p99 is at most
 * `ping_p99_ms` × adv_scale(), no WriteAck took longer than
 * `write_max_ms` × adv_scale(), its connection is still open, and every
 * point acknowledged to it reads back exactly. Prints the figures to
 * stderr under `name`. */
void adv_finish(const char *name, double ping_p99_ms, double write_max_ms);

/* The attack begins: the bystander's Ping samples so far (the test's
 * setup) are dropped, so that its p99 is the attack's. Writes and their
 * data check are kept. */
void adv_attack_start(void);

/* The suites' .fini: stop the bystander if it still runs, kill tided and
 * remove its directory. */
void adv_fini(void);

/* Let the bystander run until it has at least `n` ping samples (at most
 * twice the 10 ms × n they take, ×adv_scale()). */
void adv_wait_pings(size_t n);

/* ---- Raw frames ---------------------------------------------------------- */

/* Replace the first occurrence of `from` in buf[n] by `to` (the same
 * length `len`): lets a test put bytes protobuf-c would not emit (a NUL in
 * a string) into an encoded frame. Asserts that `from` occurs. */
void adv_patch(uint8_t *buf, size_t n, const void *from, const void *to,
               size_t len);

/* Receive one raw frame body (malloc'd, *n its length) within
 * `timeout_ms`; NULL on EOF, error or timeout. */
uint8_t *adv_recv_raw(int fd, size_t *n, int timeout_ms);

/* Has the peer closed `fd` (EOF or reset) within `timeout_ms`? Frames that
 * arrive first are skipped; *got_error is set when one was an Error (may
 * be NULL). */
int adv_closed_within(int fd, int timeout_ms, int *got_error);

/* As the operator: an account on tier "unlimited" and an owner session
 * of it. */
int adv_tenant(struct adv_state *st, const char *email, uint64_t *account);

/* Write `n` f64 points of device/field at T0 + start + i (value i) in
 * batches of at most 500000 points, asserting each is fully accepted. */
void adv_write_series(int fd, const char *device, const char *field,
                      int64_t start, size_t n);

#endif /* TIDE_TESTS_ADVERSARIAL_ADV_H */
