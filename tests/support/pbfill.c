/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Descriptor-driven message filler for round-trip tests (pbfill.h). Values
 * depend only on the field number and the element index, so two fills of the
 * same descriptor produce the same bytes.
 */
#include "pbfill.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);

    if (!p) {
        fprintf(stderr, "pbfill: out of memory\n");
        abort();
    }
    return p;
}

static size_t scalar_size(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 0;
}

/* Write one element of `field` at `dst`; `i` is the element index. */
static void fill_value(void *dst, const ProtobufCFieldDescriptor *field,
                       unsigned i, unsigned n_repeat, unsigned depth)
{
    uint64_t v = field->id * 1000u + i + 1;

    switch (field->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        *(uint32_t *)dst = (uint32_t)v;
        break;
    case PROTOBUF_C_TYPE_SINT32:
        *(int32_t *)dst = -(int32_t)v;
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *e = field->descriptor;

        /* The last value: non-zero, so it is on the wire in proto3. */
        *(int32_t *)dst = e->values[e->n_values - 1].value;
        break;
    }
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        *(uint64_t *)dst = v << 20;
        break;
    case PROTOBUF_C_TYPE_SINT64:
        *(int64_t *)dst = -(int64_t)(v << 20);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        *(float *)dst = (float)v + 0.25f;
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        *(double *)dst = (double)v + 0.5;
        break;
    case PROTOBUF_C_TYPE_BOOL:
        *(protobuf_c_boolean *)dst = 1;
        break;
    case PROTOBUF_C_TYPE_STRING: {
        char *s = xcalloc(1, 32);

        snprintf(s, 32, "%s-%u", field->name, i);
        *(char **)dst = s;
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        ProtobufCBinaryData *b = dst;

        b->len = 3;
        b->data = xcalloc(1, 3);
        b->data[0] = (uint8_t)field->id;
        b->data[1] = (uint8_t)i;
        b->data[2] = 0xa5;
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        *(ProtobufCMessage **)dst =
            depth ? pbfill_new(field->descriptor, n_repeat, depth - 1)
                  : pbfill_new(field->descriptor, 0, 0);
        break;
    }
}

void pbfill_field(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *field,
                  unsigned n_repeat, unsigned depth)
{
    char *base = (char *)msg;
    void *member = base + field->offset;

    if (field->label == PROTOBUF_C_LABEL_REPEATED) {
        size_t size = scalar_size(field->type);
        char *arr = xcalloc(n_repeat, size);

        for (unsigned i = 0; i < n_repeat; i++)
            fill_value(arr + i * size, field, i, n_repeat, depth);
        *(size_t *)(base + field->quantifier_offset) = n_repeat;
        *(void **)member = arr;
        return;
    }
    fill_value(member, field, 0, n_repeat, depth);
    if (field->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        *(uint32_t *)(base + field->quantifier_offset) = field->id;
}

ProtobufCMessage *pbfill_new(const ProtobufCMessageDescriptor *desc,
                             unsigned n_repeat, unsigned depth)
{
    ProtobufCMessage *msg = xcalloc(1, desc->sizeof_message);

    desc->message_init(msg);
    for (unsigned f = 0; f < desc->n_fields; f++) {
        const ProtobufCFieldDescriptor *field = &desc->fields[f];

        /* Of each oneof, only its first member (the one whose case is
         * still unset when we reach it). */
        if ((field->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(uint32_t *)((char *)msg + field->quantifier_offset) != 0)
            continue;
        pbfill_field(msg, field, n_repeat, depth);
    }
    return msg;
}
