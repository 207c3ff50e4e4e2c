/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared by the engine's source files and unit tests only: varints,
 * little-endian helpers and 8-byte values as doubles (the allocator,
 * buffers and asserts are in tide/common.h). Nothing here is part of the
 * engine's contract (engine/include/tide/engine.h).
 */
#ifndef TIDE_ENGINE_INTERNAL_H
#define TIDE_ENGINE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tide/common.h"
#include "tide/engine.h"

/* Timestamps and values are stored and mapped in host byte order in the
 * WAL and head; the on-disk format is little-endian, and so must be the
 * host. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "Tide needs a little-endian host"
#endif

/* ---- Varints and zigzag (little-endian base-128, at most 10 bytes) ------ */

#define TIDE_VARINT_MAX 10

static inline uint64_t tide__zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static inline int64_t tide__unzigzag(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* Write `v` at `p` (room for TIDE_VARINT_MAX); returns bytes written. */
static inline size_t tide__varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;

    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Read a varint from p[0..len). Returns bytes consumed, or 0 when the input
 * is truncated or longer than TIDE_VARINT_MAX bytes. */
static inline size_t tide__varint_get(const uint8_t *p, size_t len, uint64_t *v)
{
    uint64_t r = 0;

    for (size_t i = 0; i < len && i < TIDE_VARINT_MAX; i++) {
        r |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *v = r;
            return i + 1;
        }
    }
    return 0;
}

/* ---- Little-endian fixed-width loads and stores (all on-disk integers) -- */

static inline void tide__put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void tide__put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t tide__get_le32(const uint8_t *p)
{
    uint32_t v = 0;

    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static inline uint64_t tide__get_le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ---- 8-byte values ----------------------------------------------------- */

/* A point's 8-byte value of `type` (f64 bits, i64, or bool 0/1) as the
 * double that statistics and aggregates count. */
static inline double tide__value_double(uint8_t type, uint64_t v)
{
    double d;

    if (type == TIDE_TYPE_F64) {
        memcpy(&d, &v, sizeof(d));
        return d;
    }
    return type == TIDE_TYPE_I64 ? (double)(int64_t)v : (double)v;
}

#endif /* TIDE_ENGINE_INTERNAL_H */
