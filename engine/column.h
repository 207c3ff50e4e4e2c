/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Column codecs of segment chunks: each column of a chunk (timestamps, then
 * values) is transformed, packed and LZ4-compressed on its own. The byte
 * layouts are in docs/file-format.md, "Column encodings", and repeated at
 * the top of column.c (frame, integers), column_f64.c and column_str.c.
 *
 * Contract shared by every function below:
 *   1. An encoded column starts with a one-byte codec id (TIDE_COL_*), then
 *      the value count, so it can be decoded knowing only its type.
 *   2. Encoders append to `out` and return 0 or -ENOMEM. On failure
 *      out->len is unchanged (out->cap may have grown); out->data stays
 *      owned by the caller, who frees it with tide__buf_fini().
 *   3. Decoders read exactly `len` bytes at `in` and fill exactly `n`
 *      values. They return 0, TIDE_ECORRUPT on any inconsistency (unknown
 *      codec id, a count other than `n`, truncation, trailing bytes, a
 *      varint overflow, an LZ4 error or size mismatch, a value out of
 *      range), or -ENOMEM. They never read outside in[0..len) and never
 *      write outside the `n` output values, whatever the bytes; after a
 *      failure the output values are unspecified. Checksums are not their
 *      job: a damaged column may also decode to wrong values.
 *   4. Every size read from the input is bounded by `n` before anything is
 *      allocated. At most one scratch allocation is made per call; nothing
 *      is allocated per value.
 */
#ifndef TIDE_ENGINE_COLUMN_H
#define TIDE_ENGINE_COLUMN_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* Codec ids, the first byte of every encoded column. These numbers are
 * stored on disk: they are frozen, never reused, and new ones go last. */
#define TIDE_COL_TS_DOD 1      /* timestamps: delta-of-delta, packed */
#define TIDE_COL_F64_DECIMAL 2 /* f64: k / 10^e integers, delta, packed */
#define TIDE_COL_F64_XOR 3     /* f64: XOR with previous, 8 byte planes */
#define TIDE_COL_I64_DELTA 4   /* i64: delta, packed */
#define TIDE_COL_BOOL_BITMAP 5 /* bool: bitmap, LSB first */
#define TIDE_COL_STR_PLAIN 6   /* string: all lengths, then all bytes */
#define TIDE_COL_STR_DICT 7    /* string: dictionary, then packed indices */

/* Largest decimal exponent e of TIDE_COL_F64_DECIMAL. */
#define TIDE_COL_DECIMAL_EXP_MAX 9

/*
 * Timestamps ts[0..n). Any int64 sequence round trips (deltas wrap); an
 * ascending one with regular intervals is what makes the column small.
 */
int tide__col_encode_ts(const int64_t *ts, uint32_t n, struct tide_buf *out);
int tide__col_decode_ts(const uint8_t *in, size_t len, uint32_t n, int64_t *ts);

/*
 * Doubles v[0..n), bit for bit (NaN payloads, -0.0, infinities and
 * denormals included). Decimal scaling is used when every value is exactly
 * k / 10^e for one e in 0..TIDE_COL_DECIMAL_EXP_MAX, |k| <= 2^53, and none
 * is NaN, an infinity or -0.0; otherwise the XOR encoding.
 */
int tide__col_encode_f64(const double *v, uint32_t n, struct tide_buf *out);
int tide__col_decode_f64(const uint8_t *in, size_t len, uint32_t n, double *v);

/* Decode as tide__col_decode_f64 and, when the column is decimal, also the
 * integers k[0..n) with v[i] = k[i] / 10^e exactly and *e; *e = -1 for an
 * XOR column (k untouched). */
int tide__col_decode_f64_k(const uint8_t *in, size_t len, uint32_t n, double *v,
                           int64_t *k, int *e);

/* The decimal column of the values k[i] / 10^e, from their integers: what
 * tide__col_encode_f64 writes for them (at exponent e), without testing
 * each value. |k[i]| <= 2^53 and e <= TIDE_COL_DECIMAL_EXP_MAX. */
int tide__col_encode_f64_k(const int64_t *k, uint32_t n, unsigned e,
                           struct tide_buf *out);

/*
 * The same for a range read: fills at least v[lo, hi) (lo <= hi <= n; v
 * still has room for n values, the others are unspecified). Decimal
 * columns convert only the blocks overlapping the range and stop after
 * it, so bytes past it are not checked: only for payloads whose checksum
 * has been verified (tide__chunk_decode_range()).
 */
int tide__col_decode_f64_range(const uint8_t *in, size_t len, uint32_t n,
                               uint32_t lo, uint32_t hi, double *v);

/* 64-bit integers v[0..n); any values round trip (deltas wrap). */
int tide__col_encode_i64(const int64_t *v, uint32_t n, struct tide_buf *out);
int tide__col_decode_i64(const uint8_t *in, size_t len, uint32_t n, int64_t *v);

/* Booleans, one byte per value. The encoder stores any non-zero byte as 1;
 * the decoder writes only 0 and 1. */
int tide__col_encode_bool(const uint8_t *v, uint32_t n, struct tide_buf *out);
int tide__col_decode_bool(const uint8_t *in, size_t len, uint32_t n,
                          uint8_t *v);

/*
 * Strings v[0..n), each at most TIDE_STR_BYTES_MAX bytes (longer is a
 * programmer error: tide_db_append() rejects it). The dictionary encoding
 * is chosen when it is smaller than the plain one.
 */
int tide__col_encode_str(const struct tide_str *v, uint32_t n,
                         struct tide_buf *out);

/*
 * Decode strings into v[0..n). The column's raw payload is appended to
 * `arena` (one tide__buf_reserve() per call) and every v[i].ptr points into
 * that appended region; values that are equal in a dictionary column share
 * their bytes. The pointers are borrowed from the arena: they stay valid
 * until the arena is next grown (reserve, append, or another decode into
 * it) or freed. A caller decoding several string columns therefore uses
 * one arena per column, or consumes each column before the next decode.
 * On failure arena->len is unchanged (arena->cap may have grown).
 */
int tide__col_decode_str(const uint8_t *in, size_t len, uint32_t n,
                         struct tide_str *v, struct tide_buf *arena);

#endif /* TIDE_ENGINE_COLUMN_H */
