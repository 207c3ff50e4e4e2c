/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The protobuf wire walker of this room, shared by the frame codec
 * (frame.c: scans, group counts, the NUL check) and the WriteBatch reader
 * (batch_reader.c). Internal to proto/.
 */
#ifndef TIDE_PROTO_WIRE_H
#define TIDE_PROTO_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* Key and length varints of any length up to 10 bytes; protobuf-c reads
 * them only up to TIDE__WIRE_PBC_HDR bytes. */
#define TIDE__WIRE_ANY 10u
#define TIDE__WIRE_PBC_HDR 5u

static inline uint32_t tide__wire_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

/* A base-128 varint of at most `max` (<= 10) bytes at p[*at..n): 0 and
 * *v, or -1 when it is truncated or longer. */
static inline int tide__wire_varint(const uint8_t *p, size_t n, size_t *at,
                                    unsigned max, uint64_t *v)
{
    uint64_t x = 0;

    if (*at < n && p[*at] < 0x80) {
        *v = p[(*at)++];
        return 0;
    }
    for (unsigned i = 0; i < max && *at < n; i++) {
        uint8_t b = p[(*at)++];

        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* One field of an encoded message, as tide__wire_next() reads it. */
struct tide__wire_field {
    uint32_t number;
    uint8_t type;        /* wire type: 0 varint, 1 64-bit, 2 bytes, 5 32-bit */
    uint64_t varint;     /* type 0 */
    const uint8_t *data; /* type 2: data[0..len) */
    size_t len;
};

/* The field at p[*at..n), *at moved past it; its key and (type 2) length
 * at most `hdr_max` bytes each. Returns 0, 1 at the end of the message,
 * or -1 when it is truncated, its key or varint is bad, or its wire type
 * is a group (3, 4) or undefined (6, 7): protobuf-c refuses those too. */
static inline int tide__wire_next(const uint8_t *p, size_t n, size_t *at,
                                  unsigned hdr_max, struct tide__wire_field *f)
{
    uint64_t key, v;

    if (*at >= n)
        return 1;
    if (tide__wire_varint(p, n, at, hdr_max, &key) || (key >> 3) == 0 ||
        (key >> 3) > UINT32_MAX)
        return -1;
    f->number = (uint32_t)(key >> 3);
    f->type = (uint8_t)(key & 7);
    switch (f->type) {
    case 0:
        return tide__wire_varint(p, n, at, 10, &f->varint);
    case 1:
    case 5: {
        size_t w = f->type == 1 ? 8 : 4;

        if (n - *at < w)
            return -1;
        *at += w;
        return 0;
    }
    case 2:
        if (tide__wire_varint(p, n, at, hdr_max, &v) || v > n - *at)
            return -1;
        f->data = p + *at;
        f->len = (size_t)v;
        *at += (size_t)v;
        return 0;
    default:
        return -1;
    }
}

#endif
