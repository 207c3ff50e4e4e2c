/* SPDX-License-Identifier: Apache-2.0 */
/*
 * NUL bytes in length-delimited strings (issue #10, item 13). protobuf-c
 * hands strings over NUL-terminated, so `dev-a1\0hidden` became `dev-a1`,
 * `abc\0def` was stored as `abc` and a key followed by `\0junk`
 * authenticated. Names and keys with a NUL are INVALID_ARGUMENT; a string
 * value keeps its exact bytes or is refused, never truncated. The frames
 * are encoded with a placeholder byte, then patched to hold the NUL.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adv.h"
#include "frame.h"

TestSuite(adv_input, .fini = adv_fini, .timeout = 60);

/* One point at T0 of device/field (placeholders included), an f64 or, with
 * `str`, a string value. The encoded frame with `from` patched to `to`
 * (len bytes) is sent on `fd`; the answer. */
static Tide__V1__Envelope *write_patched(int fd, const char *device,
                                         const char *field, const char *str,
                                         const char *from, const char *to,
                                         size_t len)
{
    struct wire_batch b;
    Tide__V1__Envelope *e;
    int64_t ts = T0;
    double v = 1;
    char *sv = (char *)str;
    uint8_t *buf;
    size_t n;

    e = wire_batch_f64(&b, device, field, &ts, &v, 1);
    if (str) {
        b.c.type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_STRING;
        b.c.f64 = NULL;
        b.c.n_f64 = 0;
        b.c.str = &sv;
        b.c.n_str = 1;
    }
    e->request_id = next_rid++;
    buf = wire_encode(e, &n);
    adv_patch(buf, n, from, to, len);
    cr_assert_eq(wire_send_raw(fd, buf, n), 0);
    free(buf);
    return wire_recv(fd);
}

/* Is `r` a refusal with INVALID_ARGUMENT: an Error, or a WriteAck that
 * accepted nothing and rejected with that code? With `any_code`, any
 * Error or rejection counts. */
static int refused(const Tide__V1__Envelope *r, int any_code)
{
    const int inval = TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT;

    if (!r)
        return 0;
    if (r->body_case == TIDE__V1__ENVELOPE__BODY_ERROR)
        return any_code || (int)r->error->code == inval;
    if (r->body_case != TIDE__V1__ENVELOPE__BODY_WRITE_ACK ||
        r->write_ack->accepted_points != 0 || r->write_ack->n_rejections == 0)
        return 0;
    for (size_t i = 0; i < r->write_ack->n_rejections; i++)
        if (!any_code && (int)r->write_ack->rejections[i]->code != inval)
            return 0;
    return 1;
}

/* Send a query of `device` over [T0, T0 + 1) on `fd`. */
static void send_query_t0(int fd, const char *device)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__Query q = TIDE__V1__QUERY__INIT;
    Tide__V1__DeviceSelector sel = TIDE__V1__DEVICE_SELECTOR__INIT;
    char *name = (char *)device;

    sel.names = &name;
    sel.n_names = 1;
    q.devices = &sel;
    q.from_ns = T0;
    q.to_ns = T0 + 1;
    e.request_id = next_rid++;
    e.body_case = TIDE__V1__ENVELOPE__BODY_QUERY;
    e.query = &q;
    cr_assert_eq(wire_send(fd, &e), 0);
}

/* The raw frames of a query of `device` over [T0, T0 + 1), concatenated
 * (malloc'd, *n their length); asserts that it ends with QueryEnd. */
static uint8_t *query_raw(int fd, const char *device, size_t *n)
{
    uint8_t *all = NULL;

    send_query_t0(fd, device);
    *n = 0;
    for (;;) {
        size_t len;
        uint8_t *f = adv_recv_raw(fd, &len, 10000);
        Tide__V1__Envelope *r;
        int end;

        cr_assert_not_null(f, "query of %s: no answer", device);
        r = tide__v1__envelope__unpack(&tide_frame_allocator, len, f);
        cr_assert_not_null(r, "query of %s: undecodable answer", device);
        end = r->body_case != TIDE__V1__ENVELOPE__BODY_QUERY_CHUNK;
        cr_assert(!end || r->body_case == TIDE__V1__ENVELOPE__BODY_QUERY_END,
                  "query of %s: %s", device, wire_why(r));
        tide_frame_free(r, NULL);
        all = realloc(all, *n + len);
        cr_assert_not_null(all);
        memcpy(all + *n, f, len);
        *n += len;
        free(f);
        if (end)
            return all;
    }
}

/* Points of `device` at T0 (any field). */
static size_t points_at_t0(int fd, const char *device)
{
    Tide__V1__Envelope *r;
    size_t n = 0;

    send_query_t0(fd, device);
    while ((r = wire_recv(fd)) &&
           r->body_case == TIDE__V1__ENVELOPE__BODY_QUERY_CHUNK) {
        for (size_t s = 0; s < r->query_chunk->n_series; s++)
            n += r->query_chunk->series[s]->n_ts_delta_ns;
        tide_frame_free(r, NULL);
    }
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_QUERY_END,
              "query of %s: %s", device, wire_why(r));
    tide_frame_free(r, NULL);
    return n;
}

/* A name with a NUL (`what`, for the messages): the write of one point of
 * device/field, its `from` patched to `to` (len bytes), is refused with
 * INVALID_ARGUMENT, and `stored` (the device the name before the NUL
 * would write to) holds no point at T0. */
static void nul_in_name(const char *test, const char *what, const char *device,
                        const char *field, const char *from, const char *to,
                        size_t len, const char *stored)
{
    struct adv_state st;
    uint64_t account;
    Tide__V1__Envelope *r;
    int fd;

    adv_begin(&st, NULL);
    fd = adv_tenant(&st, "nul@example.com", &account);
    adv_attack_start();
    r = write_patched(fd, device, field, NULL, from, to, len);
    cr_expect(refused(r, 0), "%s was not refused with INVALID_ARGUMENT", what);
    tide_frame_free(r, NULL);
    cr_expect_eq(points_at_t0(fd, stored), 0, "%s was written to %s", what,
                 stored);
    close(fd);
    adv_wait_pings(100);
    adv_finish(test, ADV_PING_P99_MS, ADV_WRITE_MAX_MS);
}

Test(adv_input, nul_in_device_name)
{
    nul_in_name("nul_in_device_name", "device dev-a1\\0hidden", "dev-a1Xhidden",
                "temp", "dev-a1X", "dev-a1\0", 7, "dev-a1");
}

Test(adv_input, nul_in_field_name)
{
    nul_in_name("nul_in_field_name", "field temp\\0hidden", "dev-b",
                "tempXhidden", "tempX", "temp\0", 5, "dev-b");
}

/* A string value with a NUL is stored with its 7 bytes, or refused. */
Test(adv_input, nul_in_string_value)
{
    struct adv_state st;
    uint64_t account;
    Tide__V1__Envelope *r;
    uint8_t *raw;
    size_t n;
    int fd, no;

    adv_begin(&st, NULL);
    fd = adv_tenant(&st, "nul@example.com", &account);
    adv_attack_start();
    r = write_patched(fd, "dev-c", "note", "abcXdef", "abcX", "abc\0", 4);
    cr_assert_not_null(r, "no answer to a string with a NUL");
    no = refused(r, 1);
    cr_assert(no || (r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK &&
                     r->write_ack->accepted_points == 1),
              "a string with a NUL: neither accepted nor refused: %s",
              wire_why(r));
    tide_frame_free(r, NULL);
    raw = query_raw(fd, "dev-c", &n);
    if (no) {
        cr_expect_null(memmem(raw, n, "abc", 3),
                       "a refused string value was stored");
    } else {
        /* The string as protobuf encodes it: length 7, then its bytes. */
        cr_expect_not_null(memmem(raw, n,
                                  "\x07"
                                  "abc\0def",
                                  8),
                           "abc\\0def was accepted but does not read back "
                           "with its 7 bytes");
    }
    free(raw);
    close(fd);
    adv_wait_pings(100);
    adv_finish("nul_in_string_value", ADV_PING_P99_MS, ADV_WRITE_MAX_MS);
}

/* A valid API key followed by "\0junk" is not that key. */
Test(adv_input, nul_after_api_key)
{
    struct adv_state st;
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Auth a = TIDE__V1__AUTH__INIT;
    char key[256], padded[300];
    uint64_t account;
    uint8_t *buf;
    size_t n, klen;
    int fd;

    adv_begin(&st, NULL);
    account = wire_make_account(st.admin_fd, "nulkey@example.com");
    wire_device_register(st.admin_fd, account, "k1");
    wire_key_create(st.admin_fd, account, "k", TIDE__V1__ROLE__ROLE_DEVICE,
                    "k1", key, sizeof(key));
    klen = strlen(key);
    adv_attack_start();
    fd = wire_session(srv.port, key);
    cr_assert_geq(fd, 0, "the key itself authenticates");
    close(fd);
    snprintf(padded, sizeof(padded), "%sXjunk", key);
    fd = wire_hello_connect(srv.port);
    a.credential_case = TIDE__V1__AUTH__CREDENTIAL_API_KEY;
    a.api_key = padded;
    e.request_id = 2;
    e.body_case = TIDE__V1__ENVELOPE__BODY_AUTH;
    e.auth = &a;
    buf = wire_encode(&e, &n);
    padded[klen] = 0;
    adv_patch(buf, n, "Xjunk", "\0junk", 5);
    cr_assert_eq(wire_send_raw(fd, buf, n), 0);
    free(buf);
    r = wire_recv(fd);
    cr_expect(!r || r->body_case == TIDE__V1__ENVELOPE__BODY_ERROR,
              "key + \\0junk authenticated");
    if (r && r->body_case == TIDE__V1__ENVELOPE__BODY_ERROR)
        cr_expect(r->error->code ==
                          TIDE__V1__ERROR_CODE__ERROR_CODE_AUTH_FAILED ||
                      r->error->code ==
                          TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                  "key + \\0junk: error %d", r->error->code);
    tide_frame_free(r, NULL);
    close(fd);
    adv_wait_pings(100);
    adv_finish("nul_after_api_key", ADV_PING_P99_MS, ADV_WRITE_MAX_MS);
}
