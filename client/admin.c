/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libtide's admin requests: tide_client_call builds any request of
 * proto/tide.proto from "path=value" arguments through the protobuf-c
 * descriptors, sends it, waits for the response with the same request id,
 * and flattens that response into rows of named strings (tide_result).
 * One code path serves every admin operation, so a new request in the
 * .proto needs no client change.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_PATH_DEPTH 4  /* deepest request path: "device.tags" is 2 */
#define MAX_FLAT_DEPTH 4  /* nesting flattened into one row */
#define VALUE_TEXT_MAX 64 /* any number as text */

struct row {
    size_t n, cap;
    char **names;
    char **values;
};

struct tide_result {
    char *kind;
    size_t n_rows;
    struct row *rows;
};

/* Requests that have their own API: never through tide_client_call. */
static const char *const reserved_requests[] = {
    "hello", "auth", "write_batch", "query", "query_cancel",
};

static void *field_ptr(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    return (char *)m + f->offset;
}

static ProtobufCMessage *message_new(const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = tide_malloc(d->sizeof_message);

    if (m)
        d->message_init(m);
    return m;
}

static size_t elem_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    default:
        return 8;
    }
}

static int parse_i64(const char *s, int64_t *v)
{
    char *end;

    errno = 0;
    *v = strtoll(s, &end, 0);
    return (*s && !*end && !errno) ? 0 : TIDE_EINVAL;
}

static int parse_u64(const char *s, uint64_t *v)
{
    char *end;

    errno = 0;
    *v = strtoull(s, &end, 0);
    return (*s && *s != '-' && !*end && !errno) ? 0 : TIDE_EINVAL;
}

/* A Tag-like message (two string fields) from "a:b" or "a=b". */
static int set_pair(ProtobufCMessage *m, const char *value)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *sep = strpbrk(value, ":=");
    char *a, *b;

    if (d->n_fields < 2 || d->fields[0].type != PROTOBUF_C_TYPE_STRING ||
        d->fields[1].type != PROTOBUF_C_TYPE_STRING || !sep)
        return TIDE_EINVAL;
    a = tide_strndup(value, (size_t)(sep - value));
    b = tide_strdup(sep + 1);
    if (!a || !b) {
        tide_free(a);
        tide_free(b);
        return -ENOMEM;
    }
    *(char **)field_ptr(m, &d->fields[0]) = a;
    *(char **)field_ptr(m, &d->fields[1]) = b;
    return 0;
}

/* Store `value` into the element at `p` of field `f`. */
static int set_scalar(const ProtobufCFieldDescriptor *f, void *p,
                      const char *value)
{
    int64_t i;
    uint64_t u;
    int rc = 0;

    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        rc = parse_i64(value, &i);
        if (!rc && (i < INT32_MIN || i > INT32_MAX))
            rc = TIDE_EINVAL;
        if (!rc)
            *(int32_t *)p = (int32_t)i;
        return rc;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        rc = parse_u64(value, &u);
        if (!rc && u > UINT32_MAX)
            rc = TIDE_EINVAL;
        if (!rc)
            *(uint32_t *)p = (uint32_t)u;
        return rc;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        rc = parse_i64(value, &i);
        if (!rc)
            *(int64_t *)p = i;
        return rc;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        rc = parse_u64(value, &u);
        if (!rc)
            *(uint64_t *)p = u;
        return rc;
    case PROTOBUF_C_TYPE_BOOL:
        if (!strcmp(value, "true") || !strcmp(value, "1"))
            *(protobuf_c_boolean *)p = 1;
        else if (!strcmp(value, "false") || !strcmp(value, "0"))
            *(protobuf_c_boolean *)p = 0;
        else
            return TIDE_EINVAL;
        return 0;
    case PROTOBUF_C_TYPE_DOUBLE:
    case PROTOBUF_C_TYPE_FLOAT: {
        char *end;
        double d = strtod(value, &end);

        if (!*value || *end)
            return TIDE_EINVAL;
        if (f->type == PROTOBUF_C_TYPE_FLOAT)
            *(float *)p = (float)d;
        else
            *(double *)p = d;
        return 0;
    }
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *ev =
            protobuf_c_enum_descriptor_get_value_by_name(f->descriptor, value);

        if (ev) {
            *(int32_t *)p = ev->value;
            return 0;
        }
        rc = parse_i64(value, &i);
        if (!rc && (i < INT32_MIN || i > INT32_MAX))
            rc = TIDE_EINVAL;
        if (!rc)
            *(int32_t *)p = (int32_t)i;
        return rc;
    }
    case PROTOBUF_C_TYPE_STRING: {
        char *s = tide_strdup(value);

        if (!s)
            return -ENOMEM;
        *(char **)p = s;
        return 0;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        /* Hex, as results print bytes; pairs may be separated by ':'
         * (openssl's fingerprints). */
        ProtobufCBinaryData *b = p;
        size_t n = 0;

        b->data = tide_malloc(strlen(value) / 2 + 1);
        if (!b->data)
            return -ENOMEM;
        for (const char *v = value; *v; v += *v == ':' ? 1 : 2) {
            unsigned x;

            if (*v == ':')
                continue;
            if (!isxdigit((unsigned char)v[0]) ||
                !isxdigit((unsigned char)v[1]) || sscanf(v, "%2x", &x) != 1) {
                b->len = n; /* the caller frees the message and data */
                return TIDE_EINVAL;
            }
            b->data[n++] = (uint8_t)x;
        }
        b->len = n;
        return 0;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        ProtobufCMessage *m = message_new(f->descriptor);

        if (!m)
            return -ENOMEM;
        *(ProtobufCMessage **)p = m;
        return set_pair(m, value);
    }
    default:
        return TIDE_EINVAL;
    }
}

/* Set the field named by dotted `path` of `m` from `value`. */
static int set_path(ProtobufCMessage *m, const char *path, size_t path_len,
                    const char *value)
{
    for (int depth = 0; depth < MAX_PATH_DEPTH; depth++) {
        const char *dot = memchr(path, '.', path_len);
        size_t seg = dot ? (size_t)(dot - path) : path_len;
        const ProtobufCFieldDescriptor *f = NULL;
        char name[64];

        if (seg == 0 || seg >= sizeof(name))
            return TIDE_EINVAL;
        memcpy(name, path, seg);
        name[seg] = '\0';
        f = protobuf_c_message_descriptor_get_field_by_name(m->descriptor,
                                                            name);
        if (!f)
            return TIDE_EINVAL;
        if (dot) {
            ProtobufCMessage **sub = field_ptr(m, f);

            if (f->type != PROTOBUF_C_TYPE_MESSAGE ||
                f->label == PROTOBUF_C_LABEL_REPEATED)
                return TIDE_EINVAL;
            if (!*sub) {
                *sub = message_new(f->descriptor);
                if (!*sub)
                    return -ENOMEM;
            }
            m = *sub;
            path_len -= seg + 1;
            path = dot + 1;
            continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t *n = (size_t *)((char *)m + f->quantifier_offset);
            void **arr = field_ptr(m, f);
            size_t es = elem_size(f);
            char *grown = tide_realloc(*arr, (*n + 1) * es);

            if (!grown)
                return -ENOMEM;
            *arr = grown;
            memset(grown + *n * es, 0, es);
            (*n)++;
            return set_scalar(f, grown + (*n - 1) * es, value);
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
            *(uint32_t *)((char *)m + f->quantifier_offset) = f->id;
        if (f->type == PROTOBUF_C_TYPE_MESSAGE)
            return TIDE_EINVAL;
        return set_scalar(f, field_ptr(m, f), value);
    }
    return TIDE_EINVAL;
}

/* Build the request envelope. On failure *out is NULL. */
static int build(const char *request, const char *const *args, size_t n_args,
                 Tide__V1__Envelope **out)
{
    const ProtobufCFieldDescriptor *f;
    Tide__V1__Envelope *env = NULL;
    ProtobufCMessage *body;
    int rc = TIDE_EINVAL;

    *out = NULL;
    for (size_t i = 0; i < sizeof(reserved_requests) / sizeof(char *); i++)
        if (!strcmp(request, reserved_requests[i]))
            return TIDE_EINVAL;
    f = protobuf_c_message_descriptor_get_field_by_name(
        &tide__v1__envelope__descriptor, request);
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return TIDE_EINVAL;
    env = tide_malloc(sizeof(*env));
    if (!env)
        return -ENOMEM;
    tide__v1__envelope__init(env);
    body = message_new(f->descriptor);
    if (!body) {
        rc = -ENOMEM;
        goto fail;
    }
    *(ProtobufCMessage **)field_ptr(&env->base, f) = body;
    *(uint32_t *)((char *)env + f->quantifier_offset) = f->id;
    for (size_t i = 0; i < n_args; i++) {
        const char *eq = args[i] ? strchr(args[i], '=') : NULL;

        if (!eq) {
            rc = TIDE_EINVAL;
            goto fail;
        }
        rc = set_path(body, args[i], (size_t)(eq - args[i]), eq + 1);
        if (rc)
            goto fail;
    }
    *out = env;
    return 0;

fail:
    protobuf_c_message_free_unpacked(&env->base, &tide_frame_allocator);
    return rc;
}

static int row_add(struct row *r, const char *name, const char *value)
{
    char *n = tide_strdup(name), *v = tide_strdup(value);

    if (!n || !v)
        goto fail;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        char **nn = tide_realloc(r->names, cap * sizeof(char *));

        if (!nn)
            goto fail;
        r->names = nn;
        nn = tide_realloc(r->values, cap * sizeof(char *));
        if (!nn)
            goto fail;
        r->values = nn;
        r->cap = cap;
    }
    r->names[r->n] = n;
    r->values[r->n] = v;
    r->n++;
    return 0;

fail:
    tide_free(n);
    tide_free(v);
    return -ENOMEM;
}

/* Text of one element at `p`. Messages are their scalar fields joined by
 * '=' (Tag "k=v", Stat "name=value"). Returns a malloc'd string. */
static char *elem_text(const ProtobufCFieldDescriptor *f, const void *p)
{
    char buf[VALUE_TEXT_MAX];

    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        snprintf(buf, sizeof(buf), "%" PRId32, *(const int32_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        snprintf(buf, sizeof(buf), "%" PRIu32, *(const uint32_t *)p);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(buf, sizeof(buf), "%" PRId64, *(const int64_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(buf, sizeof(buf), "%" PRIu64, *(const uint64_t *)p);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        snprintf(buf, sizeof(buf), "%s",
                 *(const protobuf_c_boolean *)p ? "true" : "false");
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        snprintf(buf, sizeof(buf), "%.9g", (double)*(const float *)p);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        snprintf(buf, sizeof(buf), "%.17g", *(const double *)p);
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        int32_t v = *(const int32_t *)p;
        const ProtobufCEnumValue *ev =
            protobuf_c_enum_descriptor_get_value(f->descriptor, v);

        if (ev)
            return tide_strdup(ev->name);
        snprintf(buf, sizeof(buf), "%" PRId32, v);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;

        return tide_strdup(s ? s : "");
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        char *s = tide_malloc(b->len * 2 + 1);

        if (!s)
            return NULL;
        for (size_t i = 0; i < b->len; i++)
            snprintf(s + 2 * i, 3, "%02x", b->data[i]);
        s[b->len * 2] = '\0';
        return s;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
        const ProtobufCMessageDescriptor *d = f->descriptor;
        char *out = tide_strdup("");

        for (unsigned i = 0; m && out && i < d->n_fields; i++) {
            const ProtobufCFieldDescriptor *sf = &d->fields[i];
            char *t, *joined;

            if (sf->label == PROTOBUF_C_LABEL_REPEATED ||
                sf->type == PROTOBUF_C_TYPE_MESSAGE)
                continue;
            t = elem_text(sf, (const char *)m + sf->offset);
            joined = t ? tide_malloc(strlen(out) + strlen(t) + 2) : NULL;
            if (joined)
                sprintf(joined, "%s%s%s", out, *out ? "=" : "", t);
            tide_free(t);
            tide_free(out);
            out = joined;
        }
        return out;
    }
    default:
        buf[0] = '\0';
        break;
    }
    return tide_strdup(buf);
}

/* Append every field of `m` to `r`, names prefixed by `prefix`. */
static int flatten(struct row *r, const char *prefix, const ProtobufCMessage *m,
                   int depth)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;

    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *p = (const char *)m + f->offset;
        char name[128];
        char *text = NULL;
        int rc;

        snprintf(name, sizeof(name), "%s%s", prefix, f->name);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n =
                *(const size_t *)((const char *)m + f->quantifier_offset);
            const char *arr = *(char *const *)p;
            size_t es = elem_size(f);

            text = tide_strdup("");
            for (size_t k = 0; k < n && text; k++) {
                char *t = elem_text(f, arr + k * es);
                char *joined =
                    t ? tide_malloc(strlen(text) + strlen(t) + 2) : NULL;

                if (joined)
                    sprintf(joined, "%s%s%s", text, k ? "," : "", t);
                tide_free(t);
                tide_free(text);
                text = joined;
            }
        } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
            char sub_prefix[sizeof(name) + 1];

            if (!sub || depth >= MAX_FLAT_DEPTH)
                continue;
            snprintf(sub_prefix, sizeof(sub_prefix), "%s.", name);
            rc = flatten(r, sub_prefix, sub, depth + 1);
            if (rc)
                return rc;
            continue;
        } else {
            text = elem_text(f, p);
        }
        if (!text)
            return -ENOMEM;
        rc = row_add(r, name, text);
        tide_free(text);
        if (rc)
            return rc;
    }
    return 0;
}

void tide_result_free(tide_result *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_rows; i++) {
        for (size_t k = 0; k < r->rows[i].n; k++) {
            tide_free(r->rows[i].names[k]);
            tide_free(r->rows[i].values[k]);
        }
        tide_free(r->rows[i].names);
        tide_free(r->rows[i].values);
    }
    tide_free(r->rows);
    tide_free(r->kind);
    tide_free(r);
}

/* The uint64 field `name` of `m`, or NULL when it has none. */
static uint64_t *u64_field(const ProtobufCMessage *m, const char *name)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);

    if (!f || f->type != PROTOBUF_C_TYPE_UINT64 ||
        f->label == PROTOBUF_C_LABEL_REPEATED)
        return NULL;
    return (uint64_t *)(void *)((char *)m + f->offset);
}

/* A list response: one repeated message field, plus, when the list is
 * paged, its next_page_token (docs/protocol.md, "Paging"). */
static int is_list(const ProtobufCMessageDescriptor *d)
{
    return d->fields[0].label == PROTOBUF_C_LABEL_REPEATED &&
           d->fields[0].type == PROTOBUF_C_TYPE_MESSAGE &&
           (d->n_fields == 1 ||
            (d->n_fields == 2 &&
             !strcmp(d->fields[1].name, "next_page_token")));
}

/* Flatten response `env` (not an Error) into rows appended to *rp, which
 * is created when NULL. A list response adds one row per element, any
 * other response one row. On failure *rp keeps the rows it had. */
static int result_add(const Tide__V1__Envelope *env, tide_result **rp)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(
        &tide__v1__envelope__descriptor, (unsigned)env->body_case);
    const ProtobufCMessage *m;
    const ProtobufCMessageDescriptor *d;
    tide_result *r = *rp;
    struct row *rows;
    size_t n_rows = 1;
    int per_elem, rc = 0;

    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return TIDE_EPROTO;
    m = *(ProtobufCMessage *const *)((const char *)env + f->offset);
    if (!m)
        return TIDE_EPROTO;
    d = m->descriptor;
    per_elem = d->n_fields > 0 && is_list(d);
    if (per_elem)
        n_rows =
            *(const size_t *)((const char *)m + d->fields[0].quantifier_offset);
    if (!r) {
        r = tide_calloc(1, sizeof(*r));
        if (!r || !(r->kind = tide_strdup(f->name))) {
            tide_free(r);
            return -ENOMEM;
        }
        *rp = r;
    }
    rows = tide_realloc(r->rows, (r->n_rows + n_rows + 1) * sizeof(*rows));
    if (!rows)
        return -ENOMEM;
    r->rows = rows;
    memset(rows + r->n_rows, 0, (n_rows + 1) * sizeof(*rows));
    for (size_t i = 0; i < n_rows && rc == 0; i++) {
        const ProtobufCMessage *row_msg = m;

        if (per_elem)
            row_msg =
                (*(ProtobufCMessage *const *const *)((const char *)m +
                                                     d->fields[0].offset))[i];
        /* Counted first so that tide_result_free sees a partial row. */
        r->n_rows++;
        rc = flatten(&r->rows[r->n_rows - 1], "", row_msg, 0);
    }
    return rc;
}

/* The response body of `env`, or NULL. */
static const ProtobufCMessage *body_of(const Tide__V1__Envelope *env)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(
        &tide__v1__envelope__descriptor, (unsigned)env->body_case);

    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return NULL;
    return *(ProtobufCMessage *const *)((const char *)env + f->offset);
}

int tide_client_call(tide_client *c, const char *request,
                     const char *const *args, size_t n_args, tide_result **out)
{
    Tide__V1__Envelope *env = NULL, *resp = NULL;
    tide_result *r = NULL;
    uint64_t *page;
    int follow, rc;

    if (!c || !request)
        return TIDE_EINVAL;
    rc = build(request, args, n_args, &env);
    if (rc)
        return rc;
    /* A paged list whose caller picked no page is followed to its end:
     * every page's rows in one result. Tokens are row ids and increase,
     * so a token that does not is a protocol error, never a loop. */
    page = u64_field(body_of(env), "page_token");
    follow = page && *page == 0;
    for (;;) {
        const ProtobufCMessage *body;
        uint64_t *next;

        rc = tide__client_ensure(c, 0);
        if (rc)
            goto out;
        env->request_id = c->next_request_id++;
        rc = tide__client_send_env(c, env);
        if (rc)
            goto out;
        rc = tide__client_wait(c, env->request_id, &resp);
        if (rc)
            goto out;
        if (resp->body_case == TIDE__V1__ENVELOPE__BODY_ERROR && resp->error) {
            tide__client_set_error(c, resp->error);
            rc = TIDE_ESERVER;
            goto out;
        }
        if (out) {
            rc = result_add(resp, &r);
            if (rc)
                goto out;
        }
        body = body_of(resp);
        next = body ? u64_field(body, "next_page_token") : NULL;
        if (!follow || !next || *next == 0)
            break;
        if (*next <= *page) {
            rc = TIDE_EPROTO;
            goto out;
        }
        *page = *next;
        tide_frame_free(resp, NULL);
        resp = NULL;
    }
    if (out) {
        *out = r;
        r = NULL;
    }
out:
    tide_result_free(r);
    tide_frame_free(resp, NULL);
    protobuf_c_message_free_unpacked(&env->base, &tide_frame_allocator);
    return rc;
}

const char *tide_result_kind(const tide_result *r)
{
    return r->kind;
}

size_t tide_result_rows(const tide_result *r)
{
    return r->n_rows;
}

size_t tide_result_cols(const tide_result *r, size_t row)
{
    return row < r->n_rows ? r->rows[row].n : 0;
}

int tide_result_get(const tide_result *r, size_t row, size_t col,
                    const char **name, const char **value)
{
    if (row >= r->n_rows || col >= r->rows[row].n)
        return TIDE_EINVAL;
    if (name)
        *name = r->rows[row].names[col];
    if (value)
        *value = r->rows[row].values[col];
    return 0;
}

const char *tide_result_find(const tide_result *r, size_t row, const char *name)
{
    if (row >= r->n_rows)
        return NULL;
    for (size_t k = 0; k < r->rows[row].n; k++)
        if (!strcmp(r->rows[row].names[k], name))
            return r->rows[row].values[k];
    return NULL;
}
