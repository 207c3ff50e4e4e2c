/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tide-bench's streaming JSON writer: objects and arrays nest up to
 * TIDE_JSON_DEPTH_MAX deep, commas and string escapes are the writer's job.
 * Output goes to a stdio stream; the first I/O error is kept and returned
 * by tide__json_fini.
 */
#ifndef TIDE_BENCH_JSON_H
#define TIDE_BENCH_JSON_H

#include <stdint.h>
#include <stdio.h>

#define TIDE_JSON_DEPTH_MAX 16

struct tide_json {
    FILE *f;                            /* borrowed, not closed */
    int depth;                          /* open containers */
    int first[TIDE_JSON_DEPTH_MAX + 1]; /* no element yet at this depth */
    int err;                            /* first error, 0 or -errno/-EINVAL */
};

/* Start writing to `f` (caller-allocated writer). */
void tide__json_init(struct tide_json *j, FILE *f);

/* Containers; `key` names the member inside an object, NULL in an array or
 * at the top. */
void tide__json_object_begin(struct tide_json *j, const char *key);
void tide__json_object_end(struct tide_json *j);
void tide__json_array_begin(struct tide_json *j, const char *key);
void tide__json_array_end(struct tide_json *j);

/* Scalars, `key` as above. Non-finite doubles are written as null. */
void tide__json_str(struct tide_json *j, const char *key, const char *v);
void tide__json_u64(struct tide_json *j, const char *key, uint64_t v);
void tide__json_i64(struct tide_json *j, const char *key, int64_t v);
void tide__json_f64(struct tide_json *j, const char *key, double v);
void tide__json_bool(struct tide_json *j, const char *key, int v);

/* Finish: every container must be closed. Writes a final newline. Returns
 * 0, -EINVAL (unbalanced nesting) or the first -errno of the stream. */
int tide__json_fini(struct tide_json *j);

#endif /* TIDE_BENCH_JSON_H */
