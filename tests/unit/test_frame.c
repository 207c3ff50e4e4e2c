/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of the frame codec (proto/frame.c): a round trip of every message
 * type with every field set, truncation at every byte offset, oversized
 * lengths, random bytes, pipelined frames, and the golden bytes of one
 * WriteBatch (tests/fixtures/write_batch_v1.hex).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "pbfill.h"
#include "tide/common.h"

#define FIXTURE_WRITE_BATCH "tests/fixtures/write_batch_v1.hex"

static ProtobufCAllocator *const SYS = NULL; /* protobuf-c's malloc/free */

/* An envelope whose body is `field` of Envelope, every field filled. */
static Tide__V1__Envelope *filled_envelope(const ProtobufCFieldDescriptor *f,
                                           uint64_t request_id)
{
    Tide__V1__Envelope *env = calloc(1, sizeof(*env));

    cr_assert_not_null(env);
    tide__v1__envelope__init(env);
    env->request_id = request_id;
    pbfill_field(&env->base, f, 3, 4);
    return env;
}

/* Encode into a fresh buffer; *len receives the frame size. */
static uint8_t *encode(const Tide__V1__Envelope *env, size_t *len)
{
    size_t size = tide_frame_size(env);
    uint8_t *buf = malloc(size);
    int64_t n;

    cr_assert_not_null(buf);
    n = tide_frame_encode(env, buf, size);
    cr_assert_eq(n, (int64_t)size, "encode: %s", tide_strerror((int)n));
    *len = size;
    return buf;
}

static void free_env(Tide__V1__Envelope *env)
{
    protobuf_c_message_free_unpacked(&env->base, SYS);
}

Test(frame, roundtrip_every_message_type)
{
    const ProtobufCMessageDescriptor *d = &tide__v1__envelope__descriptor;
    unsigned bodies = 0;

    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        Tide__V1__Envelope *env, *back = NULL;
        uint8_t *a, *b;
        size_t alen, blen, used = 0;
        int rc;

        if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
            continue;
        bodies++;
        env = filled_envelope(f, 1000 + i);
        a = encode(env, &alen);
        rc = tide_frame_parse(a, alen, 0, SYS, &back, &used);
        cr_assert_eq(rc, 0, "%s: parse: %s", f->name, tide_strerror(rc));
        cr_assert_eq(used, alen, "%s: consumed %zu of %zu", f->name, used,
                     alen);
        cr_assert_eq(back->request_id, 1000 + i);
        cr_assert_eq((unsigned)back->body_case, f->id, "%s: body %u", f->name,
                     (unsigned)back->body_case);
        /* Every field survived: re-encoding gives the same bytes. */
        b = encode(back, &blen);
        cr_assert_eq(blen, alen, "%s: %zu vs %zu bytes", f->name, blen, alen);
        cr_assert_arr_eq(a, b, alen, "%s: bytes differ", f->name);
        free(a);
        free(b);
        free_env(env);
        tide_frame_free(back, SYS);
    }
    /* Exact: a new message type must be added here on purpose. */
    cr_assert_eq(bodies, 68, "%u message types", bodies);
}

/* The batch of the golden vector: device truck-7, 3 points, two fields. */
static Tide__V1__Envelope *golden_write_batch(void)
{
    static int64_t ts[] = {1700000000000000000, 10000000000, 10000000000};
    static double velocity[] = {12.5, 13.25, 0};
    static char *status[] = {"moving", "moving", "parked"};
    static Tide__V1__Column cols[2];
    static Tide__V1__Column *colp[2] = {&cols[0], &cols[1]};
    static Tide__V1__Tag tag;
    static Tide__V1__Tag *tagp[1] = {&tag};
    static Tide__V1__PointGroup group;
    static Tide__V1__PointGroup *groupp[1] = {&group};
    static Tide__V1__WriteBatch batch;
    static Tide__V1__Envelope env;

    tide__v1__column__init(&cols[0]);
    cols[0].field = "velocity";
    cols[0].type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64;
    cols[0].n_f64 = 3;
    cols[0].f64 = velocity;
    tide__v1__column__init(&cols[1]);
    cols[1].field = "status";
    cols[1].type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_STRING;
    cols[1].n_str = 3;
    cols[1].str = status;
    tide__v1__tag__init(&tag);
    tag.key = "fleet";
    tag.value = "north";
    tide__v1__point_group__init(&group);
    group.device = "truck-7";
    group.n_ts_delta_ns = 3;
    group.ts_delta_ns = ts;
    group.n_columns = 2;
    group.columns = colp;
    group.n_tags = 1;
    group.tags = tagp;
    tide__v1__write_batch__init(&batch);
    batch.producer_id = 0x5eedf00d;
    batch.sequence = 42;
    batch.n_groups = 1;
    batch.groups = groupp;
    tide__v1__envelope__init(&env);
    env.request_id = 7;
    env.body_case = TIDE__V1__ENVELOPE__BODY_WRITE_BATCH;
    env.write_batch = &batch;
    return &env;
}

/* Read a hex fixture: whitespace-separated byte pairs; '#' starts a
 * comment that runs to the end of the line. */
static size_t read_hex(const char *path, uint8_t *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    int c, hi = -1;

    cr_assert_not_null(f, "open %s (run tests from the repository root)", path);
    while ((c = fgetc(f)) != EOF) {
        int v;

        if (c == '#') {
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
            continue;
        }
        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else
            continue;
        if (hi < 0) {
            hi = v;
            continue;
        }
        cr_assert_lt(n, cap);
        out[n++] = (uint8_t)(hi << 4 | v);
        hi = -1;
    }
    fclose(f);
    return n;
}

Test(frame, golden_write_batch_bytes)
{
    uint8_t want[512];
    size_t want_len = read_hex(FIXTURE_WRITE_BATCH, want, sizeof(want));
    size_t len;
    uint8_t *got = encode(golden_write_batch(), &len);

    cr_assert_eq(len, want_len, "frame is %zu bytes, fixture %zu", len,
                 want_len);
    cr_assert_arr_eq(got, want, len, "WriteBatch bytes differ from %s",
                     FIXTURE_WRITE_BATCH);
    free(got);
}

Test(frame, golden_write_batch_decodes)
{
    uint8_t buf[512];
    size_t len = read_hex(FIXTURE_WRITE_BATCH, buf, sizeof(buf)), used;
    Tide__V1__Envelope *env = NULL;
    Tide__V1__PointGroup *g;

    cr_assert_eq(tide_frame_parse(buf, len, 0, SYS, &env, &used), 0);
    cr_assert_eq(env->body_case, TIDE__V1__ENVELOPE__BODY_WRITE_BATCH);
    cr_assert_eq(env->write_batch->sequence, 42);
    g = env->write_batch->groups[0];
    cr_assert_str_eq(g->device, "truck-7");
    cr_assert_eq(g->n_ts_delta_ns, 3);
    cr_assert_eq(g->ts_delta_ns[0] + g->ts_delta_ns[1] + g->ts_delta_ns[2],
                 1700000020000000000);
    cr_assert_eq(g->columns[0]->f64[1], 13.25);
    cr_assert_str_eq(g->columns[1]->str[2], "parked");
    tide_frame_free(env, SYS);
}

Test(frame, truncated_at_every_offset)
{
    size_t len;
    uint8_t *frame = encode(golden_write_batch(), &len);

    for (size_t k = 0; k < len; k++) {
        Tide__V1__Envelope *env = NULL;
        size_t used = 0;
        int rc = tide_frame_parse(frame, k, 0, SYS, &env, &used);

        cr_assert_eq(rc, TIDE_FRAME_NEED_MORE, "prefix %zu: %s", k,
                     tide_strerror(rc));
        cr_assert_null(env);
    }
    free(frame);
}

/* A header that claims exactly the bytes present, with the payload cut at
 * every offset: the payload is then either valid protobuf (cut on a field
 * boundary) or malformed, never a crash. */
Test(frame, truncated_payload_with_consistent_length)
{
    size_t len;
    uint8_t *frame = encode(golden_write_batch(), &len);
    unsigned malformed = 0;

    for (size_t k = TIDE_FRAME_HEADER_BYTES; k < len; k++) {
        uint8_t *cut = malloc(k);
        uint32_t n = (uint32_t)(k - TIDE_FRAME_HEADER_BYTES);
        Tide__V1__Envelope *env = NULL;
        size_t used;
        int rc;

        memcpy(cut, frame, k);
        cut[0] = (uint8_t)n;
        cut[1] = (uint8_t)(n >> 8);
        cut[2] = cut[3] = 0;
        rc = tide_frame_parse(cut, k, 0, SYS, &env, &used);
        cr_assert(rc == 0 || rc == TIDE_EMALFORMED, "cut %zu: %s", k,
                  tide_strerror(rc));
        malformed += rc == TIDE_EMALFORMED;
        tide_frame_free(env, SYS);
        free(cut);
    }
    cr_assert_gt(malformed, 0);
    free(frame);
}

Test(frame, oversized_length_rejected_before_payload)
{
    uint8_t hdr[4] = {0xff, 0xff, 0xff, 0xff};
    uint8_t at_limit[4] = {0x00, 0x01, 0x00, 0x00}; /* 256 */
    uint8_t above[4] = {0x01, 0x01, 0x00, 0x00};    /* 257 */
    Tide__V1__Envelope *env = NULL;
    size_t used;

    cr_assert_eq(tide_frame_parse(hdr, 4, 0, SYS, &env, &used), TIDE_ETOOLARGE);
    cr_assert_eq(tide_frame_parse(at_limit, 4, 256, SYS, &env, &used),
                 TIDE_FRAME_NEED_MORE);
    cr_assert_eq(tide_frame_parse(above, 4, 256, SYS, &env, &used),
                 TIDE_ETOOLARGE);
    cr_assert_null(env);
}

Test(frame, decoder_rejects_split_oversized_header)
{
    struct tide_frame_decoder d;
    uint8_t hdr[4] = {0x00, 0x00, 0x00, 0x40}; /* 1 GiB */
    Tide__V1__Envelope *env = NULL;

    tide_frame_decoder_init(&d, 1024, SYS);
    cr_assert_eq(tide_frame_decoder_feed(&d, hdr, 2), 0);
    cr_assert_eq(tide_frame_decoder_next(&d, &env), TIDE_FRAME_NEED_MORE);
    cr_assert_eq(tide_frame_decoder_feed(&d, hdr + 2, 2), TIDE_ETOOLARGE);
    /* Sticky: the stream has no frame boundary left. */
    cr_assert_eq(tide_frame_decoder_next(&d, &env), TIDE_ETOOLARGE);
    cr_assert_eq(tide_frame_decoder_feed(&d, "x", 1), TIDE_ETOOLARGE);
    cr_assert_leq(d.cap, 1024 + TIDE_FRAME_HEADER_BYTES,
                  "decoder reserved %zu bytes", d.cap);
    tide_frame_decoder_fini(&d);
}

Test(frame, decoder_byte_by_byte_and_pipelined)
{
    struct tide_frame_decoder d;
    size_t len;
    uint8_t *frame = encode(golden_write_batch(), &len);
    Tide__V1__Envelope *env = NULL;
    unsigned got = 0;

    tide_frame_decoder_init(&d, 0, SYS);
    for (unsigned round = 0; round < 3; round++) {
        for (size_t k = 0; k < len; k++) {
            cr_assert_eq(tide_frame_decoder_feed(&d, frame + k, 1), 0);
            if (k + 1 < len)
                cr_assert_eq(tide_frame_decoder_next(&d, &env),
                             TIDE_FRAME_NEED_MORE);
        }
        cr_assert_eq(tide_frame_decoder_next(&d, &env), 0);
        cr_assert_eq(env->request_id, 7);
        tide_frame_free(env, SYS);
    }
    /* Three frames in one feed come out in order. */
    for (unsigned i = 0; i < 3; i++)
        cr_assert_eq(tide_frame_decoder_feed(&d, frame, len), 0);
    while (tide_frame_decoder_next(&d, &env) == 0) {
        cr_assert_eq(env->body_case, TIDE__V1__ENVELOPE__BODY_WRITE_BATCH);
        tide_frame_free(env, SYS);
        got++;
    }
    cr_assert_eq(got, 3);
    cr_assert_eq(tide_frame_decoder_pending(&d), 0);
    tide_frame_decoder_fini(&d);
    free(frame);
}

static unsigned counted_allocs;

static void *counting_alloc(void *data, size_t n)
{
    (void)data;
    counted_allocs++;
    return malloc(n);
}

static void counting_free(void *data, void *p)
{
    (void)data;
    free(p);
}

/* A large frame read 4 KiB at a time gets its whole buffer once its
 * header is known: one allocation after the first, never a copy per
 * doubling (which cost milliseconds on the server's loop). */
Test(frame, large_frame_buffer_is_allocated_once)
{
    ProtobufCAllocator counting = {counting_alloc, counting_free, NULL};
    const size_t payload = 4u << 20;
    uint8_t *frame = calloc(1, payload + TIDE_FRAME_HEADER_BYTES);
    const size_t total = payload + TIDE_FRAME_HEADER_BYTES;
    struct tide_frame_decoder d;

    cr_assert_not_null(frame);
    frame[0] = (uint8_t)payload;
    frame[1] = (uint8_t)(payload >> 8);
    frame[2] = (uint8_t)(payload >> 16);
    frame[3] = (uint8_t)(payload >> 24);
    tide_frame_decoder_init(&d, 16u << 20, &counting);
    counted_allocs = 0;
    for (size_t off = 0; off < total; off += 4096)
        cr_assert_eq(
            tide_frame_decoder_feed(&d, frame + off,
                                    total - off < 4096 ? total - off : 4096),
            0);
    cr_assert_eq(tide_frame_decoder_pending(&d), total);
    cr_assert_leq(counted_allocs, 2, "%u allocations", counted_allocs);
    tide_frame_decoder_fini(&d);
    free(frame);
}

/* A batch decoded into an arena equals the default decode, the arena
 * outlives a reference taken while it is in use, and a decode larger than
 * the first block takes more blocks. */
Test(frame, arena_decode_equals_default_decode)
{
    struct tide_frame_arena *a = tide_frame_arena_new(0);
    size_t len, used = 0;
    uint8_t *frame = encode(golden_write_batch(), &len);
    Tide__V1__Envelope *x = NULL, *y = NULL;
    uint8_t *bx, *by;

    cr_assert_not_null(a);
    cr_assert_eq(tide_frame_parse(frame, len, 0, NULL, &x, &used), 0);
    /* Decoded again and again, never freed but with the arena: more than
     * the first block's 64 KiB. */
    for (int i = 0; i < 2000; i++)
        cr_assert_eq(tide_frame_parse(frame, len, 0,
                                      tide_frame_arena_allocator(a), &y, &used),
                     0);
    bx = encode(x, &used);
    by = encode(y, &len);
    cr_assert_eq(used, len);
    cr_assert_eq(memcmp(bx, by, len), 0);
    cr_assert_str_eq(y->write_batch->groups[0]->device,
                     x->write_batch->groups[0]->device);
    tide_frame_arena_ref(a);
    tide_frame_arena_release(a);
    cr_assert_str_eq(y->write_batch->groups[0]->device,
                     x->write_batch->groups[0]->device); /* still held */
    tide_frame_arena_release(a);
    tide_frame_free(x, NULL);
    free(bx);
    free(by);
    free(frame);
}

/* A batch with every value type, tags, an empty string and negative
 * deltas, encoded; the reader's result re-encodes to the same bytes as
 * protobuf-c's, and the NUL answer is the same. */
Test(frame, write_batch_reader_equals_protobuf_c)
{
    static int64_t ts[] = {1700000000000000000, -5, 10, 0};
    static int64_t i64[] = {-1, INT64_MIN, INT64_MAX, 0};
    static double f64[] = {-0.0, 1e300, 2.5, -7};
    static char *str[] = {"", "ok", "h\xc3\xa9llo", "x"};
    static uint8_t bits[] = {0x0b};
    Tide__V1__Envelope *env = golden_write_batch(), *x = NULL, *y = NULL;
    Tide__V1__PointGroup g2, *groups[2];
    Tide__V1__Column c[4], *cp[4] = {&c[0], &c[1], &c[2], &c[3]};
    struct tide_frame_arena *a = tide_frame_arena_new(0);
    const char *nul = "unset";
    size_t len, used, lx, ly;
    uint8_t *frame, *bx, *by;

    for (int i = 0; i < 4; i++) {
        tide__v1__column__init(&c[i]);
        c[i].field = (char *[]){"f", "i", "b", "s"}[i];
    }
    c[0].type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64;
    c[0].n_f64 = 4;
    c[0].f64 = f64;
    c[1].type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_I64;
    c[1].n_i64 = 4;
    c[1].i64 = i64;
    c[2].type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_BOOL;
    c[2].bool_bits = (ProtobufCBinaryData){1, bits};
    c[3].type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_STRING;
    c[3].n_str = 4;
    c[3].str = str;
    tide__v1__point_group__init(&g2);
    g2.device = "dev-2";
    g2.n_ts_delta_ns = 4;
    g2.ts_delta_ns = ts;
    g2.n_columns = 4;
    g2.columns = cp;
    groups[0] = env->write_batch->groups[0];
    groups[1] = &g2;
    env->write_batch->n_groups = 2;
    env->write_batch->groups = groups;
    frame = encode(env, &len);
    cr_assert_eq(tide_frame_read_write_batch(frame, len, a, 0, &y, &nul), 0);
    cr_assert_null(nul);
    cr_assert_eq(tide_frame_parse(frame, len, 0, NULL, &x, &used), 0);
    bx = encode(x, &lx);
    by = encode(y, &ly);
    cr_assert_eq(lx, ly);
    cr_assert_eq(memcmp(bx, by, lx), 0);
    cr_assert_eq(y->request_id, 7);
    cr_assert_eq(y->write_batch->sequence, 42);
    cr_assert_eq(y->write_batch->groups[1]->ts_delta_ns[1], -5);
    cr_assert_eq(y->write_batch->groups[1]->columns[1]->i64[1], INT64_MIN);
    cr_assert_str_eq(y->write_batch->groups[1]->columns[3]->str[2],
                     "h\xc3\xa9llo");
    cr_assert_str_eq(y->write_batch->groups[0]->tags[0]->value, "north");
    tide_frame_free(x, NULL);
    free(bx);
    free(by);
    free(frame);
    tide_frame_arena_release(a);
}

/* Anything but the plain encoding is declined, for protobuf-c to decide;
 * a NUL in a string is named as tide_frame_nul_field() names it. */
Test(frame, write_batch_reader_declines_what_it_does_not_read)
{
    /* Envelope{request_id 1, write_batch{groups{device "d\0", f: unknown
     * field 9 of PointGroup as a varint}}}. */
    uint8_t unknown[] = {0x0c, 0,    0,    0,    0x08, 0x01, 0xa2, 0x01,
                         0x07, 0x1a, 0x05, 0x0a, 0x01, 'd',  0x48, 0x01};
    uint8_t nul[] = {0x0b, 0,    0,    0,    0x08, 0x01, 0xa2, 0x01,
                     0x06, 0x1a, 0x04, 0x0a, 0x02, 'd',  0x00};
    /* ts_delta_ns unpacked (wire type 0): protobuf-c takes it, the reader
     * does not. */
    uint8_t unpacked[] = {0x09, 0,    0,    0,    0xa2, 0x01, 0x06,
                          0x1a, 0x04, 0x10, 0x02, 0x10, 0x04};
    uint8_t ping[] = {0x02, 0, 0, 0, 0x3a, 0x00};
    struct tide_frame_arena *a = tide_frame_arena_new(0);
    Tide__V1__Envelope *y = NULL, *x = NULL;
    const char *name = NULL;
    size_t len, used;
    uint8_t *frame = encode(golden_write_batch(), &len);

    cr_assert_eq(
        tide_frame_read_write_batch(unknown, sizeof(unknown), a, 0, &y, &name),
        TIDE_FRAME_DECLINED);
    cr_assert_eq(tide_frame_read_write_batch(unpacked, sizeof(unpacked), a, 0,
                                             &y, &name),
                 TIDE_FRAME_DECLINED);
    cr_assert_eq(
        tide_frame_parse(unpacked, sizeof(unpacked), 0, NULL, &x, &used), 0,
        "protobuf-c reads the unpacked form");
    cr_assert_eq(x->write_batch->groups[0]->n_ts_delta_ns, 2);
    tide_frame_free(x, NULL);
    cr_assert_eq(
        tide_frame_read_write_batch(ping, sizeof(ping), a, 0, &y, &name),
        TIDE_FRAME_DECLINED);
    cr_assert_eq(tide_frame_read_write_batch(frame, len - 1, a, 0, &y, &name),
                 TIDE_FRAME_DECLINED, "truncated");
    cr_assert_eq(tide_frame_read_write_batch(frame, len, a, 64, &y, &name),
                 TIDE_FRAME_DECLINED, "over the memory bound");
    cr_assert_eq(tide_frame_read_write_batch(nul, sizeof(nul), a, 0, &y, &name),
                 0);
    cr_assert_str_eq(name, "device");
    cr_assert_str_eq(tide_frame_nul_field(nul + 4, sizeof(nul) - 4), "device");
    free(frame);
    tide_frame_arena_release(a);
}

Test(frame, garbage_is_malformed_and_sticky)
{
    struct tide_frame_decoder d;
    uint8_t junk[] = {0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff};
    Tide__V1__Envelope *env = NULL;

    tide_frame_decoder_init(&d, 0, SYS);
    cr_assert_eq(tide_frame_decoder_feed(&d, junk, sizeof(junk)), 0);
    cr_assert_eq(tide_frame_decoder_next(&d, &env), TIDE_EMALFORMED);
    cr_assert_eq(tide_frame_decoder_next(&d, &env), TIDE_EMALFORMED);
    tide_frame_decoder_fini(&d);
}

Test(frame, empty_and_unknown_bodies_decode_without_body)
{
    /* A zero-length frame, and a frame whose body is field 2047 (a message
     * type from a future version): both decode with no body set, so the
     * server can answer UNKNOWN_MESSAGE and keep the connection. */
    uint8_t empty[4] = {0};
    uint8_t future[] = {0x05, 0x00, 0x00, 0x00, 0x08, 0x09, 0xfa, 0x7f, 0x00};
    Tide__V1__Envelope *env = NULL;
    size_t used;

    cr_assert_eq(tide_frame_parse(empty, 4, 0, SYS, &env, &used), 0);
    cr_assert_eq(env->body_case, TIDE__V1__ENVELOPE__BODY__NOT_SET);
    tide_frame_free(env, SYS);
    cr_assert_eq(tide_frame_parse(future, sizeof(future), 0, SYS, &env, &used),
                 0);
    cr_assert_eq(env->request_id, 9);
    cr_assert_eq(env->body_case, TIDE__V1__ENVELOPE__BODY__NOT_SET);
    tide_frame_free(env, SYS);
}

Test(frame, encode_into_small_buffer)
{
    Tide__V1__Envelope *env = golden_write_batch();
    size_t size = tide_frame_size(env);
    uint8_t buf[512];

    memset(buf, 0xee, sizeof(buf));
    cr_assert_eq(tide_frame_encode(env, buf, size - 1), TIDE_ENOSPACE);
    cr_assert_eq(buf[0], 0xee, "nothing may be written on ENOSPACE");
}

/* xorshift64*: deterministic random bytes without libc state. */
static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

Test(frame, random_bytes_never_crash)
{
    uint64_t seed = 0x7469646531ull;
    uint8_t buf[256];

    for (unsigned iter = 0; iter < 20000; iter++) {
        size_t len = next_rand(&seed) % sizeof(buf);
        struct tide_frame_decoder d;
        Tide__V1__Envelope *env = NULL;
        int rc;

        for (size_t k = 0; k < len; k++)
            buf[k] = (uint8_t)next_rand(&seed);
        /* Half the time, a plausible length so the payload gets decoded. */
        if (len >= 4 && (iter & 1)) {
            buf[0] = (uint8_t)(len - 4);
            buf[1] = buf[2] = buf[3] = 0;
        }
        tide_frame_decoder_init(&d, 1024, SYS);
        rc = tide_frame_decoder_feed(&d, buf, len);
        while (rc == 0 && (rc = tide_frame_decoder_next(&d, &env)) == 0)
            tide_frame_free(env, SYS);
        cr_assert(rc == TIDE_FRAME_NEED_MORE || rc == TIDE_ETOOLARGE ||
                      rc == TIDE_EMALFORMED,
                  "iteration %u: %s", iter, tide_strerror(rc));
        tide_frame_decoder_fini(&d);
    }
}

Test(frame, strerror_names_every_code)
{
    cr_assert_str_neq(tide_strerror(TIDE_ETOOLARGE), "unknown error");
    cr_assert_str_neq(tide_strerror(TIDE_EMALFORMED), "unknown error");
    cr_assert_str_neq(tide_strerror(TIDE_ENOSPACE), "unknown error");
    cr_assert_str_eq(tide_strerror(-31999), "unknown error");
}

/* Every body is named by the scan, without decoding, as the decoder
 * names it; a truncated payload that still decodes scans the same. */
Test(frame, scan_names_every_body_as_the_decoder_does)
{
    const ProtobufCMessageDescriptor *d = &tide__v1__envelope__descriptor;

    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        Tide__V1__Envelope *env;
        struct tide_frame_head h;
        uint8_t *buf;
        size_t len;

        if (f->id == 1)
            continue; /* request_id */
        env = filled_envelope(f, 77 + f->id);
        buf = encode(env, &len);
        cr_assert_eq(tide_frame_scan(buf + TIDE_FRAME_HEADER_BYTES,
                                     len - TIDE_FRAME_HEADER_BYTES, &h),
                     0, "%s", f->name);
        cr_assert_eq(h.body, f->id, "%s: body %u", f->name, h.body);
        cr_assert_eq(h.request_id, 77 + f->id, "%s", f->name);
        cr_assert_eq(h.bytes, len);
        for (size_t n = 0; n < len - TIDE_FRAME_HEADER_BYTES; n++) {
            Tide__V1__Envelope *back = tide__v1__envelope__unpack(
                SYS, n, buf + TIDE_FRAME_HEADER_BYTES);
            int rc = tide_frame_scan(buf + TIDE_FRAME_HEADER_BYTES, n, &h);

            if (!back)
                continue;
            cr_assert_eq(rc, 0, "%s cut at %zu decodes but does not scan",
                         f->name, n);
            cr_assert_eq(h.body, (uint32_t)back->body_case, "%s cut at %zu",
                         f->name, n);
            cr_assert_eq(h.request_id, back->request_id);
            free_env(back);
        }
        free(buf);
        free_env(env);
    }
}

/* A WriteBatch of `groups` empty PointGroups as one frame (malloc'd). */
static uint8_t *empty_groups(size_t groups, size_t *len)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__WriteBatch wb = TIDE__V1__WRITE_BATCH__INIT;
    Tide__V1__PointGroup g = TIDE__V1__POINT_GROUP__INIT;
    Tide__V1__PointGroup **v = malloc(groups * sizeof(*v));
    uint8_t *buf;

    cr_assert_not_null(v);
    for (size_t i = 0; i < groups; i++)
        v[i] = &g;
    wb.groups = v;
    wb.n_groups = groups;
    env.body_case = TIDE__V1__ENVELOPE__BODY_WRITE_BATCH;
    env.write_batch = &wb;
    buf = encode(&env, len);
    free(v);
    return buf;
}

/* 2 wire bytes per empty group decode to ~100 bytes: refused by a bound
 * of 16x the payload, everything it took freed; a real batch of as many
 * one-point groups decodes within it. */
Test(frame, decode_memory_is_bounded)
{
    enum { GROUPS = 100000 };
    size_t len, consumed, live = tide_alloc_live_bytes(), payload;
    uint8_t *buf = empty_groups(GROUPS, &len);
    Tide__V1__Envelope *env = NULL;
    struct tide_frame_decoder dec;
    int over = 0;

    payload = len - TIDE_FRAME_HEADER_BYTES;
    cr_assert_eq(tide_frame_parse_bounded(buf, len, 0, NULL, 16 * payload, &env,
                                          &consumed, &over),
                 TIDE_ETOOLARGE);
    cr_assert(over);
    cr_assert_eq(tide_alloc_live_bytes(), live, "the failed decode leaked");
    cr_assert_eq(
        tide_frame_parse_bounded(buf, len, 0, NULL, 0, &env, &consumed, &over),
        0);
    cr_assert(!over);
    cr_assert_eq(env->write_batch->n_groups, GROUPS);
    tide_frame_free(env, NULL);

    /* The decoder: the bound follows the payload, the error is sticky. */
    tide_frame_decoder_init(&dec, 0, &tide_frame_allocator);
    tide_frame_decoder_set_decode_ratio(&dec, 16);
    cr_assert_eq(tide_frame_decoder_feed(&dec, buf, len), 0);
    cr_assert_eq(tide_frame_decoder_next(&dec, &env), TIDE_ETOOLARGE);
    cr_assert(dec.mem_over);
    cr_assert_eq(tide_frame_decoder_next(&dec, &env), TIDE_ETOOLARGE);
    tide_frame_decoder_fini(&dec);
    free(buf);
    cr_assert_eq(tide_alloc_live_bytes(), live);

    {
        static int64_t ts[1] = {1700000000000000000};
        static double v[1] = {1.5};
        static Tide__V1__PointGroup g[GROUPS], *gp[GROUPS];
        static char names[GROUPS][16];
        Tide__V1__Column col = TIDE__V1__COLUMN__INIT, *cp = &col;
        Tide__V1__WriteBatch wb = TIDE__V1__WRITE_BATCH__INIT;
        Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT;

        col.field = "t";
        col.type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64;
        col.f64 = v;
        col.n_f64 = 1;
        for (int i = 0; i < GROUPS; i++) {
            tide__v1__point_group__init(&g[i]);
            snprintf(names[i], sizeof(names[i]), "dev-%06d", i);
            g[i].device = names[i];
            g[i].ts_delta_ns = ts;
            g[i].n_ts_delta_ns = 1;
            g[i].columns = &cp;
            g[i].n_columns = 1;
            gp[i] = &g[i];
        }
        wb.groups = gp;
        wb.n_groups = GROUPS;
        e.body_case = TIDE__V1__ENVELOPE__BODY_WRITE_BATCH;
        e.write_batch = &wb;
        buf = encode(&e, &len);
        tide_frame_decoder_init(&dec, 0, &tide_frame_allocator);
        tide_frame_decoder_set_decode_ratio(&dec, 16);
        cr_assert_eq(tide_frame_decoder_feed(&dec, buf, len), 0);
        cr_assert_eq(tide_frame_decoder_next(&dec, &env), 0);
        cr_assert_eq(env->write_batch->n_groups, GROUPS);
        tide_frame_free(env, NULL);
        tide_frame_decoder_fini(&dec);
        free(buf);
    }
}

/* Peek names a complete frame without decoding it; skip drops it, next
 * takes the one after; a lowered limit applies to a header already
 * buffered. */
Test(frame, peek_skip_and_a_lowered_limit)
{
    Tide__V1__Envelope p = TIDE__V1__ENVELOPE__INIT, *env = NULL;
    Tide__V1__Ping pb = TIDE__V1__PING__INIT;
    struct tide_frame_decoder dec;
    struct tide_frame_head h;
    uint8_t buf[256], big[4] = {0x10, 0x27, 0, 0}; /* 10000 */
    size_t len = 0;

    p.body_case = TIDE__V1__ENVELOPE__BODY_PING;
    p.ping = &pb;
    for (int i = 0; i < 2; i++) {
        p.request_id = 5 + (uint64_t)i;
        len += (size_t)tide_frame_encode(&p, buf + len, sizeof(buf) - len);
    }
    tide_frame_decoder_init(&dec, 0, &tide_frame_allocator);
    cr_assert_eq(tide_frame_decoder_peek(&dec, &h), TIDE_FRAME_NEED_MORE);
    cr_assert_eq(tide_frame_decoder_feed(&dec, buf, len - 1), 0);
    cr_assert_eq(tide_frame_decoder_peek(&dec, &h), 0);
    cr_assert_eq(h.request_id, 5);
    cr_assert_eq(h.body, TIDE__V1__ENVELOPE__BODY_PING);
    cr_assert_eq(h.bytes, len / 2);
    tide_frame_decoder_skip(&dec);
    cr_assert_eq(tide_frame_decoder_peek(&dec, &h), TIDE_FRAME_NEED_MORE);
    cr_assert_eq(tide_frame_decoder_feed(&dec, buf + len - 1, 1), 0);
    cr_assert_eq(tide_frame_decoder_next(&dec, &env), 0);
    cr_assert_eq(env->request_id, 6);
    tide_frame_free(env, NULL);
    cr_assert_eq(tide_frame_decoder_pending(&dec), 0);
    cr_assert_eq(tide_frame_decoder_feed(&dec, big, sizeof(big)), 0);
    tide_frame_decoder_set_max(&dec, 8192);
    cr_assert_eq(tide_frame_decoder_peek(&dec, &h), TIDE_ETOOLARGE);
    cr_assert(!dec.mem_over);
    tide_frame_decoder_fini(&dec);
}

/* The groups of a WriteBatch are counted without decoding, for every body
 * (0 when it is not a WriteBatch), and a cut payload that would not decode
 * does not count either. */
Test(frame, batch_groups_are_counted_without_decoding)
{
    const ProtobufCMessageDescriptor *d = &tide__v1__envelope__descriptor;
    size_t len;
    uint8_t *buf = empty_groups(1000, &len);
    uint64_t n = 7;

    cr_assert_eq(tide_frame_batch_groups(buf + TIDE_FRAME_HEADER_BYTES,
                                         len - TIDE_FRAME_HEADER_BYTES, &n),
                 0);
    cr_assert_eq(n, 1000);
    cr_assert_eq(tide_frame_batch_groups(buf + TIDE_FRAME_HEADER_BYTES,
                                         len - TIDE_FRAME_HEADER_BYTES - 1, &n),
                 TIDE_EMALFORMED);
    free(buf);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        Tide__V1__Envelope *env, *back;
        uint64_t want;

        if (f->id == 1)
            continue; /* request_id */
        env = filled_envelope(f, 5);
        buf = encode(env, &len);
        back = tide__v1__envelope__unpack(SYS, len - TIDE_FRAME_HEADER_BYTES,
                                          buf + TIDE_FRAME_HEADER_BYTES);
        cr_assert_not_null(back, "%s", f->name);
        want = back->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_BATCH
                   ? back->write_batch->n_groups
                   : 0;
        cr_assert_eq(tide_frame_batch_groups(buf + TIDE_FRAME_HEADER_BYTES,
                                             len - TIDE_FRAME_HEADER_BYTES, &n),
                     0, "%s", f->name);
        cr_assert_eq(n, want, "%s: %llu groups", f->name,
                     (unsigned long long)n);
        free_env(back);
        free(buf);
        free_env(env);
    }
}
