/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one mapping from Tide's codes (tide/error.h) to the wire's ErrorCode,
 * and the one definition of which wire errors a client may retry
 * (docs/protocol.md, "Error model"). Shared by tided and libtide.
 */
#ifndef TIDE_PROTO_WIRE_ERROR_H
#define TIDE_PROTO_WIRE_ERROR_H

#include "tide.pb-c.h"
#include "tide/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The wire code that reports `rc` (a TIDE_E* code or -errno) to a client.
 * Codes without a closer match are INTERNAL. */
Tide__V1__ErrorCode tide_wire_error(int rc);

/* True when a request refused with `code` may be sent again unchanged
 * (after retry_after_ms, or after a reconnect for SHUTTING_DOWN): the
 * refusal says nothing about the request itself, and nothing of it was
 * applied. */
int tide_wire_retryable(Tide__V1__ErrorCode code);

#ifdef __cplusplus
}
#endif

#endif /* TIDE_PROTO_WIRE_ERROR_H */
