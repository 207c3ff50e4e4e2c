/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test support: build protobuf-c messages with every field set to a
 * deterministic non-default value, by walking the generated descriptors, so
 * that round-trip tests cover every field of every message without listing
 * them by hand.
 */
#ifndef TIDE_TESTS_SUPPORT_PBFILL_H
#define TIDE_TESTS_SUPPORT_PBFILL_H

#include <protobuf-c/protobuf-c.h>

/*
 * Allocate a message of type `desc` with every field set (repeated fields
 * get `n_repeat` elements; of each oneof, the first member is chosen; nested
 * messages down to `depth` levels). Free with
 * protobuf_c_message_free_unpacked(msg, NULL). Aborts on out-of-memory.
 */
ProtobufCMessage *pbfill_new(const ProtobufCMessageDescriptor *desc,
                             unsigned n_repeat, unsigned depth);

/*
 * Set `field` of `msg` (which must be empty) to a filled value; for a oneof
 * member this also sets the oneof's case. Used to pick a oneof member.
 */
void pbfill_field(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *field,
                  unsigned n_repeat, unsigned depth);

#endif /* TIDE_TESTS_SUPPORT_PBFILL_H */
