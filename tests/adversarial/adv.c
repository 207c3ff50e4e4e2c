/* SPDX-License-Identifier: Apache-2.0 */
/* The adversarial suite's harness (adv.h). */
#include "adv.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"

#ifndef ADV_SCALE
#define ADV_SCALE 1
#endif

/* Points per bystander WriteBatch, and its pings between two writes. */
#define BY_POINTS 10
#define BY_PINGS_PER_WRITE 5
/* The most samples kept (10 ms each: over 10 minutes). */
#define BY_MAX 65536

double adv_scale(void)
{
    const char *s = getenv("TIDE_ADV_SCALE");

    if (s && *s && atof(s) > 0)
        return atof(s);
    return ADV_SCALE;
}

long adv_rss_kib(void)
{
    return proc_status_kib(srv.pid, "VmRSS");
}

long adv_peak_kib(void)
{
    return proc_status_kib(srv.pid, "VmHWM");
}

void adv_peak_reset(void)
{
    proc_peak_reset(srv.pid);
}

long adv_rss_settle(long kib, double seconds)
{
    double end = proc_now_ms() + seconds * 1e3;
    long rss;

    while ((rss = adv_rss_kib()) > kib && proc_now_ms() < end)
        usleep(50000);
    return rss;
}

/* ---- The bystander ------------------------------------------------------- */

static struct {
    pthread_t th;
    int running;
    int fd;
    atomic_int stop;
    atomic_int restart; /* adv_attack_start(): drop the pings so far */
    atomic_size_t n_ping;
    double ping_ms[BY_MAX];
    size_t n_write;
    double write_ms[BY_MAX];
    /* Batches acknowledged in full: batch k holds T0 + k * BY_POINTS + j,
     * value k * BY_POINTS + j. */
    uint8_t *acked;
    size_t n_batches;
    const char *fail; /* why the bystander stopped early, or NULL */
} by;

/* Wait for the answer to the one request in flight, sent at `t0`: 0 with
 * *r set, or -1 (*r NULL) when the connection failed or the test stopped
 * the bystander first (the wait so far is then its sample). */
static int by_wait(double t0, Tide__V1__Envelope **r, double *ms)
{
    struct pollfd p = {by.fd, POLLIN, 0};

    *r = NULL;
    for (;;) {
        int n = poll(&p, 1, 20);

        if (n > 0) {
            *r = wire_recv(by.fd);
            *ms = proc_now_ms() - t0;
            if (!*r) {
                by.fail = "the bystander's connection failed";
                return -1;
            }
            return 0;
        }
        if (atomic_load(&by.stop)) {
            *ms = proc_now_ms() - t0;
            return -1;
        }
    }
}

static int by_ping(uint64_t nonce)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Ping p = TIDE__V1__PING__INIT;
    double t0 = proc_now_ms(), ms;
    int rc;

    p.nonce = nonce;
    e.request_id = nonce;
    e.body_case = TIDE__V1__ENVELOPE__BODY_PING;
    e.ping = &p;
    if (wire_send(by.fd, &e)) {
        by.fail = "the bystander could not send";
        return -1;
    }
    rc = by_wait(t0, &r, &ms);
    if (r && r->body_case != TIDE__V1__ENVELOPE__BODY_PONG) {
        by.fail = "the bystander's Ping got no Pong";
        rc = -1;
    }
    tide_frame_free(r, NULL);
    /* A Ping stalled for `ms` also stands for the pings the bystander
     * would have sent every 10 ms meanwhile, as HdrHistogram corrects for
     * coordinated omission: one 3 s stall is 300 slow samples, not one. */
    for (double v = ms; v > 0 && atomic_load(&by.n_ping) < BY_MAX; v -= 10) {
        by.ping_ms[atomic_load(&by.n_ping)] = v;
        atomic_fetch_add(&by.n_ping, 1);
        if (v < 20)
            break;
    }
    return rc;
}

static int by_write(uint64_t rid)
{
    struct wire_batch b;
    Tide__V1__Envelope *e, *r;
    int64_t deltas[BY_POINTS];
    double vals[BY_POINTS], t0, ms;
    size_t k = by.n_batches;
    int rc;

    if (k >= BY_MAX)
        return 0;
    for (int i = 0; i < BY_POINTS; i++) {
        deltas[i] = i ? 1 : T0 + (int64_t)(k * BY_POINTS);
        vals[i] = (double)(k * BY_POINTS + (size_t)i);
    }
    e = wire_batch_f64(&b, "bystander", "v", deltas, vals, BY_POINTS);
    e->request_id = rid;
    t0 = proc_now_ms();
    if (wire_send(by.fd, e)) {
        by.fail = "the bystander could not send";
        return -1;
    }
    by.n_batches++;
    rc = by_wait(t0, &r, &ms);
    if (r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK &&
        r->write_ack->accepted_points == BY_POINTS)
        by.acked[k] = 1;
    else if (r)
        by.fail = "the bystander's write was not accepted";
    tide_frame_free(r, NULL);
    if (ms > 0 && by.n_write < BY_MAX)
        by.write_ms[by.n_write++] = ms;
    return by.fail ? -1 : rc;
}

static void *by_main(void *arg)
{
    uint64_t rid = 1000;

    (void)arg;
    for (unsigned i = 1; !atomic_load(&by.stop); i++) {
        double next = proc_now_ms() + 10;

        if (atomic_exchange(&by.restart, 0))
            atomic_store(&by.n_ping, 0);

        if (by_ping(rid++))
            break;
        if (i % BY_PINGS_PER_WRITE == 0 && by_write(rid++))
            break;
        while (!atomic_load(&by.stop) && proc_now_ms() < next)
            usleep(1000);
    }
    return NULL;
}

static void by_stop(void)
{
    atomic_store(&by.stop, 1);
    if (by.running)
        pthread_join(by.th, NULL);
    by.running = 0;
}

void adv_fini(void)
{
    by_stop();
    fixture_fini();
}

void adv_begin(struct adv_state *st, const char *const *settings)
{
    uint64_t account;

    memset(&by, 0, sizeof(by));
    fixture_start(settings);
    st->admin_fd = wire_session(srv.port, srv.admin_key);
    cr_assert_geq(st->admin_fd, 0, "operator session");
    by.fd = adv_tenant(st, "bystander@example.com", &account);
    by.acked = calloc(BY_MAX, 1);
    cr_assert_not_null(by.acked);
    cr_assert_eq(pthread_create(&by.th, NULL, by_main, NULL), 0);
    by.running = 1;
    adv_wait_pings(20);
    st->rss0 = adv_rss_kib();
    cr_assert_gt(st->rss0, 0, "VmRSS of tided");
}

void adv_attack_start(void)
{
    double end = proc_now_ms() + 5000 * adv_scale();

    atomic_store(&by.restart, 1);
    while (atomic_load(&by.restart) && !by.fail && proc_now_ms() < end)
        usleep(1000);
}

void adv_wait_pings(size_t n)
{
    /* Twice the time n pings take, so that a stalled server fails the
     * test's bounds rather than its timeout. */
    double end = proc_now_ms() + 1000 + 20.0 * (double)n * adv_scale();

    while (atomic_load(&by.n_ping) < n && !by.fail && proc_now_ms() < end)
        usleep(10000);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* Re-read the bystander's series and compare it with what was acked. */
static void by_check_data(void)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Query q = TIDE__V1__QUERY__INIT;
    size_t total = by.n_batches * BY_POINTS, seen = 0, acked = 0;
    uint8_t *got = calloc(total + 1, 1);
    int fd;

    for (size_t k = 0; k < by.n_batches; k++)
        acked += by.acked[k];
    cr_assert_gt(acked, 0, "the bystander got no write acknowledged");
    /* A fresh connection: the bystander's own one may be mid-request. */
    fd = wire_owner_session(srv.port, "bystander@example.com");
    q.from_ns = T0;
    q.to_ns = T0 + (int64_t)total;
    e.body_case = TIDE__V1__ENVELOPE__BODY_QUERY;
    e.query = &q;
    e.request_id = 7;
    cr_assert_eq(wire_send(fd, &e), 0);
    while ((r = wire_recv(fd)) &&
           r->body_case == TIDE__V1__ENVELOPE__BODY_QUERY_CHUNK) {
        for (size_t s = 0; s < r->query_chunk->n_series; s++) {
            Tide__V1__SeriesResult *sr = r->query_chunk->series[s];
            int64_t ts = 0;

            cr_assert_str_eq(sr->device, "bystander");
            cr_assert_str_eq(sr->field, "v");
            cr_assert_eq(sr->n_f64, sr->n_ts_delta_ns);
            for (size_t i = 0; i < sr->n_ts_delta_ns; i++) {
                int64_t off;

                ts += sr->ts_delta_ns[i];
                off = ts - T0;
                cr_assert(off >= 0 && (size_t)off < total,
                          "a point the bystander never wrote: T0%+lld",
                          (long long)off);
                cr_assert_eq(sr->f64[i], (double)off,
                             "bystander point T0+%lld reads %g", (long long)off,
                             sr->f64[i]);
                cr_assert_eq(got[off], 0, "point T0+%lld twice",
                             (long long)off);
                got[off] = 1;
                seen++;
            }
        }
        tide_frame_free(r, NULL);
    }
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_QUERY_END,
              "re-reading the bystander's points: %s", wire_why(r));
    tide_frame_free(r, NULL);
    for (size_t k = 0; k < by.n_batches; k++)
        for (size_t j = 0; by.acked[k] && j < BY_POINTS; j++)
            cr_assert(got[k * BY_POINTS + j],
                      "acknowledged point T0+%zu of the bystander is lost",
                      k * BY_POINTS + j);
    fprintf(stderr, "  bystander data: %zu batches acked, %zu points read\n",
            acked, seen);
    free(got);
    close(fd);
}

void adv_finish(const char *name, double ping_p99_ms, double write_max_ms)
{
    size_t n, p99;
    double wmax = 0, scale = adv_scale();

    by_stop();
    n = atomic_load(&by.n_ping);
    cr_assert_gt(n, 0, "%s: the bystander got no Pong at all", name);
    qsort(by.ping_ms, n, sizeof(double), cmp_double);
    /* Nearest rank: of 100 samples the 99th, not the worst. A stall still
     * fails, as it stands for one sample per 10 ms it lasted. */
    p99 = (n * 99 + 99) / 100 - 1;
    for (size_t i = 0; i < by.n_write; i++)
        wmax = by.write_ms[i] > wmax ? by.write_ms[i] : wmax;
    fprintf(stderr,
            "%s: bystander %zu pings p50 %.2f ms p99 %.2f ms max %.2f ms; "
            "%zu writes, slowest ack %.2f ms; tided VmRSS %ld KiB\n",
            name, n, by.ping_ms[n / 2], by.ping_ms[p99], by.ping_ms[n - 1],
            by.n_write, wmax, adv_rss_kib());
    cr_assert_null(by.fail, "%s: %s", name, by.fail);
    cr_expect_leq(by.ping_ms[p99], ping_p99_ms * scale,
                  "%s: bystander Ping p99 %.1f ms > %.1f ms", name,
                  by.ping_ms[p99], ping_p99_ms * scale);
    cr_expect_leq(wmax, write_max_ms * scale,
                  "%s: a bystander WriteAck took %.1f ms > %.1f ms", name, wmax,
                  write_max_ms * scale);
    by_check_data();
}

/* ---- Raw frames ---------------------------------------------------------- */

void adv_patch(uint8_t *buf, size_t n, const void *from, const void *to,
               size_t len)
{
    uint8_t *at = memmem(buf, n, from, len);

    cr_assert_not_null(at, "adv_patch: placeholder not in the frame");
    memcpy(at, to, len);
}

uint8_t *adv_recv_raw(int fd, size_t *n, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};

    if (poll(&p, 1, timeout_ms) <= 0)
        return NULL;
    return wire_recv_frame(fd, TIDE_FRAME_MAX_BYTES_LIMIT, n);
}

int adv_closed_within(int fd, int timeout_ms, int *got_error)
{
    double end = proc_now_ms() + timeout_ms;
    uint8_t b[65536];

    if (got_error)
        *got_error = 0;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        int left = (int)(end - proc_now_ms());
        ssize_t r;

        /* With no time left, one look at what is there already. */
        if (poll(&p, 1, left > 0 ? left : 0) <= 0)
            return 0;
        r = recv(fd, b, sizeof(b), MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
            return 1;
        /* An Error envelope is field 6: tag byte 0x32 after the length
         * prefix and the request id. Good enough to report it. */
        if (r > 0 && got_error && memchr(b, 0x32, (size_t)r))
            *got_error = 1;
    }
}

int adv_tenant(struct adv_state *st, const char *email, uint64_t *account)
{
    *account = wire_make_account(st->admin_fd, email);
    return wire_owner_session(srv.port, email);
}

void adv_write_series(int fd, const char *device, const char *field,
                      int64_t start, size_t n)
{
    const size_t per = 500000;
    int64_t *deltas = malloc(per * sizeof(*deltas));
    double *vals = malloc(per * sizeof(*vals));

    cr_assert(deltas && vals);
    for (size_t done = 0; done < n;) {
        struct wire_batch b;
        Tide__V1__Envelope *r;
        size_t k = n - done < per ? n - done : per;

        for (size_t i = 0; i < k; i++) {
            deltas[i] = i ? 1 : T0 + start + (int64_t)done;
            vals[i] = (double)(done + i);
        }
        r = wire_next(fd, wire_batch_f64(&b, device, field, deltas, vals, k));
        cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK &&
                      r->write_ack->accepted_points == k,
                  "writing %s/%s: %s", device, field, wire_why(r));
        tide_frame_free(r, NULL);
        done += k;
    }
    free(deltas);
    free(vals);
}
