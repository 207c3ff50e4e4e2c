/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Attacks on tided's memory through framing (issue #10, item 4): partial
 * frames that are never finished, before Hello and after Auth, and frames
 * whose decoded form is many times their size. tided's VmRSS and VmHWM are
 * read from /proc while a bystander tenant pings and writes (adv.h).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "adv.h"
#include "frame.h"

TestSuite(adv_memory, .fini = adv_fini, .timeout = 120);

#define MIB (1024L * 1024)
#define KIB_OF_MIB(m) ((long)(m)*1024)

static void set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Frame header of a frame of `len` bytes. */
static void header(uint8_t h[4], uint32_t len)
{
    h[0] = (uint8_t)len;
    h[1] = (uint8_t)(len >> 8);
    h[2] = (uint8_t)(len >> 16);
    h[3] = (uint8_t)(len >> 24);
}

/*
 * `n` connections each start a frame of 16 MiB and send all of it but its
 * last byte, round-robin, 256 KiB at a time, without blocking. It stops when
 * every connection is done or closed by the server, when no connection makes
 * progress for 2 s (the server stopped reading them), or as soon as tided's
 * RSS exceeds `bound_kib` (the test then fails, without taking the machine's
 * memory). Returns the number of connections the server closed; the fds
 * stay open (or closed) in fds[].
 */
static int partial_frames(int *fds, int n, long bound_kib, long *peak)
{
    static uint8_t chunk[256 * 1024];
    const size_t len = 16 * MIB;
    size_t *sent = calloc((size_t)n, sizeof(*sent));
    int *dead = calloc((size_t)n, sizeof(*dead)), closed = 0;
    double last_progress = proc_now_ms();

    cr_assert(sent && dead);
    memset(chunk, 0x55, sizeof(chunk));
    for (int i = 0; i < n; i++) {
        uint8_t h[4];

        header(h, (uint32_t)len);
        set_nonblock(fds[i]);
        if (send(fds[i], h, 4, MSG_NOSIGNAL) != 4)
            dead[i] = 1;
    }
    *peak = adv_rss_kib();
    for (;;) {
        int busy = 0, progress = 0;
        long rss;

        for (int i = 0; i < n; i++) {
            size_t want = len - 1 - sent[i];
            ssize_t w;

            if (dead[i] || want == 0)
                continue;
            busy = 1;
            w = send(fds[i], chunk, want < sizeof(chunk) ? want : sizeof(chunk),
                     MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                sent[i] += (size_t)w;
                progress = 1;
            } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                dead[i] = 1;
                closed++;
            }
        }
        rss = adv_rss_kib();
        *peak = rss > *peak ? rss : *peak;
        if (!busy || rss > bound_kib)
            break;
        if (progress)
            last_progress = proc_now_ms();
        else if (proc_now_ms() - last_progress > 2000)
            break;
        else
            usleep(2000);
    }
    /* Connections the server closed while we were not sending. */
    for (int i = 0; i < n; i++)
        if (!dead[i] && adv_closed_within(fds[i], 0, NULL))
            closed++;
    free(sent);
    free(dead);
    return closed;
}

/* The attack of the partial-frame tests on fds[150]: each starts a 16 MiB
 * frame and sends it but its last byte. The peak RSS stays within `bound`,
 * RSS falls back to st->rss0 + `slack` once the connections close, and
 * the bystander sees no stall; `name` labels the figures. */
static void partial_frames_attack(const char *name, struct adv_state *st,
                                  int *fds, long bound, long slack)
{
    long peak, after;
    int closed;

    adv_attack_start();
    adv_peak_reset();
    closed = partial_frames(fds, 150, bound, &peak);
    peak = adv_peak_kib() > peak ? adv_peak_kib() : peak;
    for (int i = 0; i < 150; i++)
        close(fds[i]);
    after = adv_rss_settle(st->rss0 + slack, 5 * adv_scale());
    fprintf(stderr,
            "%s: RSS %ld KiB at start, peak %ld KiB, %ld KiB after close; %d "
            "of 150 closed by tided\n",
            name, st->rss0, peak, after, closed);
    cr_expect_leq(peak, bound, "peak RSS %ld KiB > bound %ld KiB", peak, bound);
    cr_expect_leq(after, st->rss0 + slack,
                  "RSS %ld KiB did not fall back after the connections closed",
                  after);
    adv_wait_pings(200);
    adv_finish(name, ADV_NO_STALL_MS, ADV_WRITE_MAX_MS);
}

/* 150 connections without Hello, each sending a 16 MiB frame but its last
 * byte: the old server buffered all of it (2.4 GB). A connection before
 * Auth may send a frame of a few KiB; RSS stays within 64 MiB of the
 * start and falls back once the connections close. */
Test(adv_memory, unauthenticated_partial_frames)
{
    struct adv_state st;
    int fds[150];

    adv_begin(&st, NULL);
    for (int i = 0; i < 150; i++) {
        fds[i] = wire_connect(srv.port);
        cr_assert_geq(fds[i], 0);
    }
    partial_frames_attack("unauthenticated_partial_frames", &st, fds,
                          st.rss0 + KIB_OF_MIB(64), KIB_OF_MIB(32));
}

/* Before Auth a frame over a few KiB is refused at its header: the
 * connection is closed (after an Error), without waiting for the body. */
Test(adv_memory, unauthenticated_frame_limit)
{
    struct adv_state st;
    uint8_t h[4];
    int fd_new, fd_hello, err = 0;
    double t0;

    adv_begin(&st, NULL);
    fd_new = wire_connect(srv.port);
    fd_hello = wire_hello_connect(srv.port);
    adv_attack_start();
    header(h, 64 * 1024);
    cr_assert_eq(wire_send_raw(fd_new, h, 4), 0);
    cr_assert_eq(wire_send_raw(fd_hello, h, 4), 0);
    cr_assert_eq(wire_send_raw(fd_new, "\x08\x01", 2), 0);
    cr_assert_eq(wire_send_raw(fd_hello, "\x08\x01", 2), 0);
    /* One 3 s deadline for both. */
    t0 = proc_now_ms();
    cr_expect(adv_closed_within(fd_new, (int)(3000 * adv_scale()), &err),
              "a 64 KiB frame before Hello was not refused");
    cr_expect(
        adv_closed_within(
            fd_hello, (int)(3000 * adv_scale() - (proc_now_ms() - t0)), &err),
        "a 64 KiB frame after Hello, before Auth, was not refused");
    close(fd_new);
    close(fd_hello);
    adv_wait_pings(100);
    adv_finish("unauthenticated_frame_limit", ADV_PING_P99_MS,
               ADV_WRITE_MAX_MS);
}

static uint8_t *put_varint(uint8_t *p, size_t v)
{
    for (; v >= 0x80; v >>= 7)
        *p++ = (uint8_t)(v | 0x80);
    *p++ = (uint8_t)v;
    return p;
}

/* A 16 MiB frame: Envelope.write_batch (field 20) of 8 M empty PointGroups
 * (field 3, length 0), 2 bytes each on the wire, ~100 bytes each decoded.
 * Sent without blocking; stops early when the server closes. Returns 1 if
 * the server closed the connection or answered with an Error within
 * `timeout_ms` of the last byte sent. */
static int empty_groups_frame(int fd, int timeout_ms)
{
    /* Just under max_frame_bytes (16 MiB) with the envelope's 8 bytes. */
    const size_t groups = (8u << 20) - 8, body = 2 * groups;
    uint8_t *f = malloc(body + 32), *p = f;
    size_t len, off = 0;
    int err = 0, closed;
    uint8_t *r;
    size_t rn;

    cr_assert_not_null(f);
    p += 4;
    *p++ = 0x08; /* request_id = 9 */
    *p++ = 9;
    *p++ = 0xa2; /* field 20, length-delimited */
    *p++ = 0x01;
    p = put_varint(p, body);
    for (size_t i = 0; i < groups; i++) {
        *p++ = 0x1a;
        *p++ = 0x00;
    }
    len = (size_t)(p - f);
    header(f, (uint32_t)(len - 4));
    set_nonblock(fd);
    while (off < len) {
        ssize_t w = send(fd, f + off, len - off, MSG_NOSIGNAL);

        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            usleep(1000);
            continue;
        }
        break; /* closed by the server */
    }
    free(f);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    r = adv_recv_raw(fd, &rn, timeout_ms);
    /* Field 6 (Error) after the request id. */
    if (r) {
        err = rn >= 1 && memchr(r, 0x32, rn < 8 ? rn : 8) != NULL;
        free(r);
        return err;
    }
    closed = adv_closed_within(fd, 0, NULL);
    return closed || off < len;
}

/* Send the frame of 8 M empty groups on `fd` (empty_groups_frame(); `what`
 * when it is neither answered with an Error nor closed) and close it: the
 * peak RSS stays within st->rss0 + `slack`, and the bystander sees no
 * stall; `name` labels the figures. */
static void empty_groups_attack(const char *name, struct adv_state *st, int fd,
                                long slack, const char *what)
{
    long peak;

    adv_attack_start();
    adv_peak_reset();
    cr_expect(empty_groups_frame(fd, (int)(20000 * adv_scale())), "%s", what);
    peak = adv_peak_kib();
    close(fd);
    fprintf(stderr, "%s: RSS %ld KiB at start, peak %ld KiB\n", name, st->rss0,
            peak);
    cr_expect_leq(peak, st->rss0 + slack,
                  "peak RSS %ld KiB: %ld MiB above the start", peak,
                  (peak - st->rss0) / 1024);
    adv_wait_pings(200);
    adv_finish(name, ADV_NO_STALL_MS, ADV_WRITE_MAX_MS);
}

/* The old server decoded such a frame before looking at the connection's
 * state: 1.1 GB peak for a 16 MiB frame before Auth. It must be refused
 * before it is decoded (frame limit before Auth, kind checked first). */
Test(adv_memory, unauthenticated_empty_groups_frame)
{
    struct adv_state st;

    adv_begin(&st, NULL);
    empty_groups_attack("unauthenticated_empty_groups_frame", &st,
                        wire_hello_connect(srv.port), KIB_OF_MIB(64),
                        "no Error and no close for a WriteBatch before Auth");
}

/* The same frame after Auth is a legal frame size, but 8 M groups are far
 * above max_batch_groups: the decode's memory is bounded relative to the
 * frame (old: 66x, 1.1 GB). Bound: 16 MiB of frame buffer plus 10x. */
Test(adv_memory, authenticated_empty_groups_frame)
{
    struct adv_state st;
    uint64_t account;

    adv_begin(&st, NULL);
    empty_groups_attack("authenticated_empty_groups_frame", &st,
                        adv_tenant(&st, "groups@example.com", &account),
                        KIB_OF_MIB(16 + 160),
                        "8 M empty groups were not refused with an Error");
}

/* 150 authenticated connections each start a legal 16 MiB frame and never
 * finish it (old: 2.4 GB). A server-wide budget bounds the bytes held in
 * partial frames; frames over it are refused. The bound, 1 GiB above the
 * start, assumes a default budget well below it. */
Test(adv_memory, authenticated_partial_frames_budget)
{
    struct adv_state st;
    uint64_t account;
    char key[256];
    int fds[150];

    adv_begin(&st, NULL);
    account = wire_make_account(st.admin_fd, "partial@example.com");
    wire_device_register(st.admin_fd, account, "p1");
    wire_key_create(st.admin_fd, account, "k", TIDE__V1__ROLE__ROLE_DEVICE,
                    "p1", key, sizeof(key));
    for (int i = 0; i < 150; i++) {
        fds[i] = wire_session(srv.port, key);
        cr_assert_geq(fds[i], 0, "session %d", i);
    }
    partial_frames_attack("authenticated_partial_frames_budget", &st, fds,
                          st.rss0 + KIB_OF_MIB(1024), KIB_OF_MIB(64));
}
