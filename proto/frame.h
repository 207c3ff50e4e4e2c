/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one frame codec of the Tide wire protocol, shared by tided and libtide.
 * A frame is a u32 little-endian payload length followed by that many bytes
 * of one protobuf-encoded tide.v1.Envelope (docs/protocol.md, "Framing").
 *
 * Thread-safety: a decoder belongs to one thread at a time; the free
 * functions are reentrant.
 */
#ifndef TIDE_PROTO_FRAME_H
#define TIDE_PROTO_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "tide.pb-c.h"
#include "tide/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TIDE_FRAME_HEADER_BYTES 4u
#define TIDE_FRAME_MAX_BYTES_DEFAULT (16u << 20) /* 16 MiB payload */
#define TIDE_FRAME_MAX_BYTES_LIMIT (1u << 30)    /* hard upper bound */

/* Not an error: the decoder needs more bytes. Failures are the frame codes
 * of tide/error.h (TIDE_ETOOLARGE, TIDE_EMALFORMED, TIDE_ENOSPACE). */
#define TIDE_FRAME_NEED_MORE 1

/* Bytes needed to frame `env`: header plus payload. */
size_t tide_frame_size(const Tide__V1__Envelope *env);

/*
 * Encode `env` as one frame into `out` (capacity `cap`).
 * Returns the number of bytes written, or TIDE_ENOSPACE when `cap` is
 * smaller than tide_frame_size(env) (nothing is written then).
 */
int64_t tide_frame_encode(const Tide__V1__Envelope *env, uint8_t *out,
                          size_t cap);

/*
 * Parse one frame from the start of `buf[0..len)`.
 * On success returns 0, sets *env (owned by the caller, free it with
 * tide_frame_free(*env, alloc)) and *consumed (header plus payload).
 * Returns TIDE_FRAME_NEED_MORE when `buf` holds no whole frame yet,
 * TIDE_ETOOLARGE as soon as the header announces more than
 * `max_bytes` (before anything is allocated), TIDE_EMALFORMED when the
 * payload does not decode, -ENOMEM when allocation fails. `alloc` may be
 * NULL for tide_frame_allocator.
 */
int tide_frame_parse(const uint8_t *buf, size_t len, uint32_t max_bytes,
                     ProtobufCAllocator *alloc, Tide__V1__Envelope **env,
                     size_t *consumed);

/*
 * The name of the first string field (tide.proto `string`) in the encoded
 * Envelope payload[0..len) whose bytes hold a NUL, or NULL when none does.
 * protobuf-c hands a string to C as NUL-terminated text, so one with a NUL
 * inside would silently be cut short there (a device "dev-a1\0hidden"
 * read as "dev-a1"); only the wire still shows it. The name is static.
 */
const char *tide_frame_nul_field(const uint8_t *payload, size_t len);

/*
 * tide_frame_parse() with a bound on the memory the decode may take:
 * `mem_max` bytes requested from `alloc`, each allocation counted with
 * TIDE_FRAME_ALLOC_OVERHEAD more (0 = no bound). A payload that would
 * decode to more fails with TIDE_ETOOLARGE and *mem_over set to 1 (left
 * 0 otherwise), everything it had allocated freed.
 */
#define TIDE_FRAME_ALLOC_OVERHEAD 16u
int tide_frame_parse_bounded(const uint8_t *buf, size_t len, uint32_t max_bytes,
                             ProtobufCAllocator *alloc, size_t mem_max,
                             Tide__V1__Envelope **env, size_t *consumed,
                             int *mem_over);

/* What a frame is, read from its payload without decoding it: the last
 * request_id and the field number of the last body field present (a
 * Tide__V1__Envelope__BodyCase; 0 when none or unknown to this build),
 * as protobuf's "last one wins" would give them. */
struct tide_frame_head {
    uint64_t request_id;
    uint32_t body;
    size_t bytes; /* the whole frame, header included */
};

/* Scan the top-level fields of payload[0..n). Returns 0, or
 * TIDE_EMALFORMED when a field is truncated or its key or varint is bad
 * (a payload that cannot decode either). Allocates nothing. */
int tide_frame_scan(const uint8_t *payload, size_t n,
                    struct tide_frame_head *h);

/* The PointGroups of the WriteBatch in Envelope payload[0..n) (0 when
 * the body is something else), counted without decoding, so that a batch
 * over max_batch_groups is refused before it takes memory. Returns 0, or
 * TIDE_EMALFORMED as tide_frame_scan(). Allocates nothing. */
int tide_frame_batch_groups(const uint8_t *payload, size_t n, uint64_t *groups);

/* protobuf-c's allocator over tide_malloc/tide_free: what a NULL `alloc`
 * means to this codec. Free messages whose parts were tide_malloc'd with
 * it. */
extern ProtobufCAllocator tide_frame_allocator;

/* Free an envelope returned by this codec. Accepts NULL. */
void tide_frame_free(Tide__V1__Envelope *env, ProtobufCAllocator *alloc);

/*
 * A decode arena: an allocator whose allocations are carved from a few
 * large blocks and freed all at once when its last reference goes; its
 * free() does nothing. A large WriteBatch decoded with it costs one malloc
 * per block instead of about three per point, and no free walk. A message
 * decoded with it is never passed to tide_frame_free(): release the arena.
 * References may be taken and released on any thread.
 */
struct tide_frame_arena;

/* A new arena with one reference, its first block `first_bytes` (at
 * least 64 KiB); NULL without memory. */
struct tide_frame_arena *tide_frame_arena_new(size_t first_bytes);
ProtobufCAllocator *tide_frame_arena_allocator(struct tide_frame_arena *a);
struct tide_frame_arena *tide_frame_arena_ref(struct tide_frame_arena *a);
/* Drop a reference; the last frees every block. Accepts NULL. */
void tide_frame_arena_release(struct tide_frame_arena *a);

/*
 * The WriteBatch reader (batch_reader.c): decode the whole frame
 * buf[0..len), an Envelope whose body is a WriteBatch in its plain
 * encoding, into `arena` as protobuf-c would, without protobuf-c's
 * generic unpack. Returns 0 with *env (in the arena: release the arena,
 * never tide_frame_free() it) and *nul (tide_frame_nul_field()'s answer
 * for the payload), or TIDE_FRAME_DECLINED for anything else, a memory
 * bound of `mem_max` (as tide_frame_parse_bounded() counts it; 0 = none)
 * crossed included: then decode with tide_frame_parse_bounded(), which
 * decides. What it declined may have left allocations in the arena.
 */
#define TIDE_FRAME_DECLINED 2
int tide_frame_read_write_batch(const uint8_t *buf, size_t len,
                                struct tide_frame_arena *arena, size_t mem_max,
                                Tide__V1__Envelope **env, const char **nul);

/*
 * Incremental decoder for a byte stream: feed bytes as they arrive, take
 * envelopes out as they complete. Caller-allocated; private fields.
 * Invariants:
 *   1. buf[head..len) holds received bytes not yet parsed; len <= cap.
 *   2. the buffer grows only to hold what the caller fed, and a header
 *      announcing more than max_bytes fails at once: a peer cannot make
 *      the decoder reserve memory for a frame it has not sent.
 *   3. err != 0 is sticky: after a framing error the stream has no frame
 *      boundary left to resynchronise on, so every later call returns it.
 *   4. a decode takes at most decode_ratio times the payload plus
 *      TIDE_FRAME_DECODE_SLACK bytes (when decode_ratio is not 0).
 */
struct tide_frame_decoder {
    uint8_t *buf;
    size_t head;
    size_t len;
    size_t cap;
    uint32_t max_bytes;
    uint32_t decode_ratio; /* 0 = the decode is not bounded */
    int err;
    int mem_over; /* err is TIDE_ETOOLARGE from the decode memory bound */
    ProtobufCAllocator *alloc;
    /* Of the envelope the last tide_frame_decoder_next() returned:
     * tide_frame_nul_field() of its payload. */
    const char *nul_field;
};

/* What a bounded decode may take beyond decode_ratio × payload. */
#define TIDE_FRAME_DECODE_SLACK (1u << 20)

/* Initialise `d` for frames up to `max_bytes` (0 = the default). */
void tide_frame_decoder_init(struct tide_frame_decoder *d, uint32_t max_bytes,
                             ProtobufCAllocator *alloc);

/* Change the largest frame accepted from now on (0 = the default): a
 * header already buffered is checked against it at the next call. */
void tide_frame_decoder_set_max(struct tide_frame_decoder *d,
                                uint32_t max_bytes);

/* Bound every later decode to `ratio` times its payload plus
 * TIDE_FRAME_DECODE_SLACK bytes (0 = unbounded, the default). */
void tide_frame_decoder_set_decode_ratio(struct tide_frame_decoder *d,
                                         uint32_t ratio);

/* Release the decoder's buffer. `d` may be re-initialised afterwards. */
void tide_frame_decoder_fini(struct tide_frame_decoder *d);

/*
 * Append `n` bytes of stream input. Returns 0, the decoder's sticky error,
 * TIDE_ETOOLARGE when a frame header already announces an oversized
 * frame, or -ENOMEM (then nothing was appended and the decoder is failed).
 */
int tide_frame_decoder_feed(struct tide_frame_decoder *d, const void *data,
                            size_t n);

/*
 * Take the next complete envelope. Returns 0 and sets *env (free with
 * tide_frame_free(*env, alloc)), TIDE_FRAME_NEED_MORE, or an error that
 * stays sticky (see invariant 3); TIDE_ETOOLARGE with mem_over set when
 * the decode passed its memory bound (invariant 4).
 */
int tide_frame_decoder_next(struct tide_frame_decoder *d,
                            Tide__V1__Envelope **env);

/*
 * Look at the next complete frame without decoding it (tide_frame_scan).
 * Returns 0 and fills *h, TIDE_FRAME_NEED_MORE, or a sticky error
 * (TIDE_ETOOLARGE, TIDE_EMALFORMED). The frame stays buffered: take it
 * with tide_frame_decoder_next() or drop it with
 * tide_frame_decoder_skip().
 */
int tide_frame_decoder_peek(struct tide_frame_decoder *d,
                            struct tide_frame_head *h);

/* Drop the complete frame that tide_frame_decoder_peek() described. */
void tide_frame_decoder_skip(struct tide_frame_decoder *d);

/* Take the complete frame that tide_frame_decoder_peek() described out of
 * the decoder without copying it, to decode it elsewhere
 * (tide_frame_parse_bounded): returns the decoder's buffer, which the
 * caller frees with the decoder's allocator; the frame (header included)
 * is at *off, *len bytes. The bytes buffered after it stay in the decoder
 * (copied into a buffer of their own). Returns NULL when there is no
 * complete frame, or without memory for those bytes (nothing changed). */
uint8_t *tide_frame_decoder_take(struct tide_frame_decoder *d, size_t *off,
                                 size_t *len);

/* Bytes buffered but not yet returned as envelopes. */
size_t tide_frame_decoder_pending(const struct tide_frame_decoder *d);

#ifdef __cplusplus
}
#endif

#endif /* TIDE_PROTO_FRAME_H */
