/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The WriteBatch reader: a purpose-built decoder of an Envelope whose body
 * is a WriteBatch, the one message that arrives at fleet width (a batch of
 * 10,000 devices is 10,000 PointGroups and 100,000 Columns of one point
 * each). protobuf-c's generic unpack looks every field up in its
 * descriptor, scans each message twice and allocates per element; here
 * each message is read in one walk that knows the schema, into a decode
 * arena, and the NUL check of tide_frame_nul_field() is made on the way.
 *
 * The result is the protobuf-c structs protobuf-c itself would build, so
 * everything downstream is unchanged. The reader accepts only the plain
 * encoding (known fields with their own wire types, packed repeated
 * scalars in one run, one WriteBatch body) and declines anything else
 * (unknown fields, unpacked or split repeated scalars, merged bodies,
 * malformed bytes, a memory bound crossed): the caller then decodes with
 * protobuf-c, which gives the answer. tests/fuzz/fuzz_frame.c checks that
 * whatever this reader accepts protobuf-c accepts too, to the same bytes.
 */
#include <string.h>

#include "frame.h"
#include "wire.h"

/* Field numbers, from tide.proto. */
enum {
    ENV_REQUEST_ID = 1,
    ENV_WRITE_BATCH = TIDE__V1__ENVELOPE__BODY_WRITE_BATCH,
    WB_PRODUCER_ID = 1,
    WB_SEQUENCE = 2,
    WB_GROUPS = 3,
    PG_DEVICE = 1,
    PG_TS_DELTA = 2,
    PG_COLUMNS = 3,
    PG_TAGS = 4,
    COL_FIELD = 1,
    COL_TYPE = 2,
    COL_F64 = 3,
    COL_I64 = 4,
    COL_BOOL_BITS = 5,
    COL_STR = 6,
    TAG_KEY = 1,
    TAG_VALUE = 2,
};

enum { WIRE_VARINT = 0, WIRE_LEN = 2 }; /* wire types this reader takes */

struct reader {
    ProtobufCAllocator *alloc;
    size_t left;     /* memory bound, counted as protobuf-c's is */
    const char *nul; /* first string field holding a NUL, in wire order */
};

/* The next field of p[0..n): 0, 1 at the end, -1 when malformed. Keys
 * and lengths are read up to 5 bytes, as protobuf-c reads them. */
static inline int next(const uint8_t *p, size_t n, size_t *at,
                       struct tide__wire_field *f)
{
    return tide__wire_next(p, n, at, TIDE__WIRE_PBC_HDR, f);
}

static void *take(struct reader *r, size_t size)
{
    size_t cost = size + TIDE_FRAME_ALLOC_OVERHEAD;

    if (cost > r->left)
        return NULL;
    r->left -= cost;
    return r->alloc->alloc(r->alloc->allocator_data, size);
}

/* A NUL-terminated copy of a string field named `name`. */
static char *string(struct reader *r, const struct tide__wire_field *f,
                    const char *name)
{
    char *s = take(r, f->len + 1);

    if (!s)
        return NULL;
    memcpy(s, f->data, f->len);
    s[f->len] = '\0';
    if (!r->nul && memchr(f->data, 0, f->len))
        r->nul = name;
    return s;
}

/* Count the elements of a packed varint run; -1 when one is bad. */
static int packed_count(const struct tide__wire_field *f, size_t *count)
{
    size_t at = 0, c = 0;
    uint64_t v;

    while (at < f->len) {
        if (tide__wire_varint(f->data, f->len, &at, 10, &v))
            return -1;
        c++;
    }
    *count = c;
    return 0;
}

/* A packed sint64 run into a new array; -1 to decline. */
static int packed_sint64(struct reader *r, const struct tide__wire_field *f,
                         size_t *n, int64_t **out)
{
    size_t count, at = 0;
    int64_t *v;

    if (*n || f->type != WIRE_LEN || packed_count(f, &count))
        return -1;
    if (!count)
        return 0;
    v = take(r, count * sizeof(*v));
    if (!v)
        return -1;
    for (size_t i = 0; i < count; i++) {
        uint64_t z = 0;

        tide__wire_varint(f->data, f->len, &at, 10, &z);
        v[i] = (int64_t)((z >> 1) ^ (0 - (z & 1)));
    }
    *n = count;
    *out = v;
    return 0;
}

static int read_column(struct reader *r, const uint8_t *p, size_t n,
                       Tide__V1__Column *c)
{
    struct tide__wire_field f;
    size_t at = 0, n_str = 0, i = 0;
    int rc;

    /* Strings are the one repeated field of pointers: count them first. */
    while ((rc = next(p, n, &at, &f)) == 0)
        n_str += f.number == COL_STR;
    if (rc < 0)
        return -1;
    if (n_str && !(c->str = take(r, n_str * sizeof(*c->str))))
        return -1;
    at = 0;
    while (next(p, n, &at, &f) == 0) {
        switch (f.number) {
        case COL_FIELD:
            if (f.type != WIRE_LEN || !(c->field = string(r, &f, "field")))
                return -1;
            break;
        case COL_TYPE:
            if (f.type != WIRE_VARINT || f.varint > INT32_MAX)
                return -1;
            c->type = (Tide__V1__ValueType)f.varint;
            break;
        case COL_F64:
            if (c->n_f64 || f.type != WIRE_LEN || f.len % sizeof(double))
                return -1;
            if (f.len) {
                if (!(c->f64 = take(r, f.len)))
                    return -1;
                memcpy(c->f64, f.data, f.len);
                c->n_f64 = f.len / sizeof(double);
            }
            break;
        case COL_I64:
            if (packed_sint64(r, &f, &c->n_i64, &c->i64))
                return -1;
            break;
        case COL_BOOL_BITS:
            if (f.type != WIRE_LEN)
                return -1;
            c->bool_bits.len = f.len;
            c->bool_bits.data = NULL;
            if (f.len) {
                if (!(c->bool_bits.data = take(r, f.len)))
                    return -1;
                memcpy(c->bool_bits.data, f.data, f.len);
            }
            break;
        case COL_STR:
            if (f.type != WIRE_LEN || !(c->str[i++] = string(r, &f, "str")))
                return -1;
            break;
        default:
            return -1;
        }
    }
    c->n_str = n_str;
    return 0;
}

static int read_tag(struct reader *r, const uint8_t *p, size_t n,
                    Tide__V1__Tag *t)
{
    struct tide__wire_field f;
    size_t at = 0;
    int rc;

    while ((rc = next(p, n, &at, &f)) == 0) {
        if (f.type != WIRE_LEN)
            return -1;
        if (f.number == TAG_KEY) {
            if (!(t->key = string(r, &f, "key")))
                return -1;
        } else if (f.number == TAG_VALUE) {
            if (!(t->value = string(r, &f, "value")))
                return -1;
        } else {
            return -1;
        }
    }
    return rc < 0 ? -1 : 0;
}

static int read_group(struct reader *r, const uint8_t *p, size_t n,
                      Tide__V1__PointGroup *g)
{
    struct tide__wire_field f;
    size_t at = 0, n_cols = 0, n_tags = 0, ci = 0, ti = 0;
    Tide__V1__Column *cols = NULL;
    Tide__V1__Tag *tags = NULL;
    int rc;

    while ((rc = next(p, n, &at, &f)) == 0) {
        n_cols += f.number == PG_COLUMNS;
        n_tags += f.number == PG_TAGS;
    }
    if (rc < 0)
        return -1;
    /* The messages of a repeated field in one allocation, their pointers
     * in another: protobuf-c takes one per message. */
    if (n_cols && (!(g->columns = take(r, n_cols * sizeof(*g->columns))) ||
                   !(cols = take(r, n_cols * sizeof(*cols)))))
        return -1;
    if (n_tags && (!(g->tags = take(r, n_tags * sizeof(*g->tags))) ||
                   !(tags = take(r, n_tags * sizeof(*tags)))))
        return -1;
    at = 0;
    while (next(p, n, &at, &f) == 0) {
        switch (f.number) {
        case PG_DEVICE:
            if (f.type != WIRE_LEN || !(g->device = string(r, &f, "device")))
                return -1;
            break;
        case PG_TS_DELTA:
            if (packed_sint64(r, &f, &g->n_ts_delta_ns, &g->ts_delta_ns))
                return -1;
            break;
        case PG_COLUMNS:
            tide__v1__column__init(&cols[ci]);
            g->columns[ci] = &cols[ci];
            if (f.type != WIRE_LEN || read_column(r, f.data, f.len, &cols[ci]))
                return -1;
            ci++;
            break;
        case PG_TAGS:
            tide__v1__tag__init(&tags[ti]);
            g->tags[ti] = &tags[ti];
            if (f.type != WIRE_LEN || read_tag(r, f.data, f.len, &tags[ti]))
                return -1;
            ti++;
            break;
        default:
            return -1;
        }
    }
    g->n_columns = n_cols;
    g->n_tags = n_tags;
    return 0;
}

static int read_batch(struct reader *r, const uint8_t *p, size_t n,
                      Tide__V1__WriteBatch *wb)
{
    struct tide__wire_field f;
    size_t at = 0, n_groups = 0, gi = 0;
    Tide__V1__PointGroup *groups = NULL;
    int rc;

    while ((rc = next(p, n, &at, &f)) == 0)
        n_groups += f.number == WB_GROUPS;
    if (rc < 0)
        return -1;
    if (n_groups && (!(wb->groups = take(r, n_groups * sizeof(*wb->groups))) ||
                     !(groups = take(r, n_groups * sizeof(*groups)))))
        return -1;
    at = 0;
    while (next(p, n, &at, &f) == 0) {
        switch (f.number) {
        case WB_PRODUCER_ID:
        case WB_SEQUENCE:
            if (f.type != WIRE_VARINT)
                return -1;
            *(f.number == WB_PRODUCER_ID ? &wb->producer_id : &wb->sequence) =
                f.varint;
            break;
        case WB_GROUPS:
            tide__v1__point_group__init(&groups[gi]);
            wb->groups[gi] = &groups[gi];
            if (f.type != WIRE_LEN || read_group(r, f.data, f.len, &groups[gi]))
                return -1;
            gi++;
            break;
        default:
            return -1;
        }
    }
    wb->n_groups = n_groups;
    return 0;
}

int tide_frame_read_write_batch(const uint8_t *buf, size_t len,
                                struct tide_frame_arena *arena, size_t mem_max,
                                Tide__V1__Envelope **env, const char **nul)
{
    struct reader r = {tide_frame_arena_allocator(arena),
                       mem_max ? mem_max : SIZE_MAX, NULL};
    const uint8_t *p = buf + TIDE_FRAME_HEADER_BYTES;
    size_t n, at = 0;
    Tide__V1__Envelope *e;
    Tide__V1__WriteBatch *wb = NULL;
    struct tide__wire_field f;
    int rc;

    if (len < TIDE_FRAME_HEADER_BYTES)
        return TIDE_FRAME_DECLINED;
    n = tide__wire_le32(buf);
    if (n > len - TIDE_FRAME_HEADER_BYTES)
        return TIDE_FRAME_DECLINED;
    e = take(&r, sizeof(*e));
    if (!e)
        return TIDE_FRAME_DECLINED;
    tide__v1__envelope__init(e);
    while ((rc = next(p, n, &at, &f)) == 0) {
        if (f.number == ENV_REQUEST_ID && f.type == WIRE_VARINT) {
            e->request_id = f.varint;
        } else if (f.number == ENV_WRITE_BATCH && f.type == WIRE_LEN && !wb) {
            /* A second body would be merged into this one: declined. */
            wb = take(&r, sizeof(*wb));
            if (!wb)
                return TIDE_FRAME_DECLINED;
            tide__v1__write_batch__init(wb);
            if (read_batch(&r, f.data, f.len, wb))
                return TIDE_FRAME_DECLINED;
        } else {
            return TIDE_FRAME_DECLINED;
        }
    }
    if (rc < 0 || !wb)
        return TIDE_FRAME_DECLINED;
    e->body_case = TIDE__V1__ENVELOPE__BODY_WRITE_BATCH;
    e->write_batch = wb;
    *env = e;
    *nul = r.nul;
    return 0;
}
