/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the frame decoder (proto/frame.c). The first input
 * byte picks how the rest is split into feeds, so that frames cut at every
 * position are exercised; each decoded envelope must re-encode and decode
 * to the same body, the whole input must decode into a decode arena
 * as it does with the default allocator, and what the WriteBatch reader
 * accepts must be what protobuf-c reads.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

/* Does `m` or any message inside it hold unknown fields? protobuf-c keeps
 * them verbatim and re-emits them in a canonical form that its own parser
 * may refuse (field 0 spelt as a two-byte varint is accepted, the one-byte
 * form is not), so such envelopes are exempt from the re-parse check. The
 * schema nests messages only a few levels deep. */
static int has_unknown(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;

    if (m->n_unknown_fields)
        return 1;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m;

        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *v =
                *(ProtobufCMessage *const *const *)(base + f->offset);

            for (size_t k = 0; k < n; k++)
                if (has_unknown(v[k]))
                    return 1;
        } else {
            const ProtobufCMessage *sub =
                *(const ProtobufCMessage *const *)(base + f->offset);

            if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF &&
                *(const uint32_t *)(base + f->quantifier_offset) != f->id)
                continue;
            if (sub && has_unknown(sub))
                return 1;
        }
    }
    return 0;
}

static void check_reencode(const Tide__V1__Envelope *env)
{
    size_t size = tide_frame_size(env), used = 0;
    uint8_t *buf = malloc(size);
    Tide__V1__Envelope *back = NULL;

    if (!buf)
        return;
    if (tide_frame_encode(env, buf, size) != (int64_t)size)
        abort();
    if (has_unknown(&env->base)) {
        free(buf);
        return;
    }
    if (tide_frame_parse(buf, size, TIDE_FRAME_MAX_BYTES_LIMIT, NULL, &back,
                         &used) != 0 ||
        used != size || back->body_case != env->body_case ||
        back->request_id != env->request_id)
        abort();
    tide_frame_free(back, NULL);
    free(buf);
}

/* Abort unless x and y encode to the same bytes. */
static void same_bytes(const Tide__V1__Envelope *x, const Tide__V1__Envelope *y)
{
    size_t sx = tide_frame_size(x), sy = tide_frame_size(y);
    uint8_t *bx, *by;

    if (sx != sy)
        abort();
    bx = malloc(sx);
    by = malloc(sy);
    if (bx && by &&
        (tide_frame_encode(x, bx, sx) != (int64_t)sx ||
         tide_frame_encode(y, by, sy) != (int64_t)sy || memcmp(bx, by, sx)))
        abort();
    free(bx);
    free(by);
}

/* The frame at buf[0..n) decodes the same into a decode arena as with
 * the default allocator: same result, same bytes when re-encoded. */
static void check_arena(const uint8_t *buf, size_t n)
{
    struct tide_frame_arena *a = tide_frame_arena_new(0);
    Tide__V1__Envelope *x = NULL, *y = NULL;
    size_t ux = 0, uy = 0;
    int rx, ry;

    if (!a)
        return;
    rx = tide_frame_parse(buf, n, 1u << 16, NULL, &x, &ux);
    ry = tide_frame_parse(buf, n, 1u << 16, tide_frame_arena_allocator(a), &y,
                          &uy);
    if (rx != ry || ux != uy)
        abort();
    if (rx == 0) {
        same_bytes(x, y);
        tide_frame_free(x, NULL);
    }
    tide_frame_arena_release(a);
}

/* Whatever the WriteBatch reader accepts, protobuf-c accepts too, to the
 * same bytes when re-encoded and the same NUL-field answer; what it
 * declines is protobuf-c's to decide, so accept and reject stay the same
 * as protobuf-c's alone. */
static void check_reader(const uint8_t *buf, size_t n)
{
    struct tide_frame_arena *a = tide_frame_arena_new(0);
    Tide__V1__Envelope *x = NULL, *y = NULL;
    const char *nul = "unset", *want;
    size_t used = 0;

    if (!a)
        return;
    if (tide_frame_read_write_batch(buf, n, a, 0, &y, &nul) == 0) {
        if (tide_frame_parse(buf, n, TIDE_FRAME_MAX_BYTES_LIMIT, NULL, &x,
                             &used) != 0)
            abort();
        want = tide_frame_nul_field(buf + TIDE_FRAME_HEADER_BYTES,
                                    used - TIDE_FRAME_HEADER_BYTES);
        if ((want == NULL) != (nul == NULL) || (want && strcmp(want, nul)))
            abort();
        same_bytes(x, y);
        tide_frame_free(x, NULL);
    }
    tide_frame_arena_release(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tide_frame_decoder d;
    size_t step, off = 1;
    Tide__V1__Envelope *env = NULL;
    int rc = 0;

    if (size == 0)
        return 0;
    check_arena(data + 1, size - 1);
    check_reader(data + 1, size - 1);
    step = (size_t)data[0] % 64 + 1;
    tide_frame_decoder_init(&d, 1u << 16, NULL);
    while (off < size && rc == 0) {
        size_t n = size - off < step ? size - off : step;

        rc = tide_frame_decoder_feed(&d, data + off, n);
        off += n;
        while (rc == 0 && (rc = tide_frame_decoder_next(&d, &env)) == 0) {
            check_reencode(env);
            tide_frame_free(env, NULL);
        }
        if (rc == TIDE_FRAME_NEED_MORE)
            rc = 0;
    }
    if (rc != 0 && rc != TIDE_ETOOLARGE && rc != TIDE_EMALFORMED)
        abort();
    tide_frame_decoder_fini(&d);
    return 0;
}
