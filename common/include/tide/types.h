/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The data model's small shared vocabulary: value types and the clock that
 * the engine and the sidecar both take in their options.
 */
#ifndef TIDE_TYPES_H
#define TIDE_TYPES_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Value types; the numbers match the wire's ValueType and are on disk. */
enum tide_type {
    TIDE_TYPE_F64 = 1,
    TIDE_TYPE_I64 = 2,
    TIDE_TYPE_BOOL = 3,
    TIDE_TYPE_STR = 4,
};

/* Wall clock in ns since the Unix epoch. Tests install their own. */
typedef int64_t (*tide_clock_fn)(void *ctx);

#ifdef __cplusplus
}
#endif

#endif /* TIDE_TYPES_H */
