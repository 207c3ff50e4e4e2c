/* SPDX-License-Identifier: Apache-2.0 */
/* tide-bench's streaming JSON writer (json.h). */
#include "json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>

void tide__json_init(struct tide_json *j, FILE *f)
{
    j->f = f;
    j->depth = 0;
    j->first[0] = 1;
    j->err = 0;
}

static void put(struct tide_json *j, const char *s)
{
    if (!j->err && fputs(s, j->f) == EOF)
        j->err = errno ? -errno : -EIO;
}

static void escaped(struct tide_json *j, const char *s)
{
    char u[8];

    put(j, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch == '"')
            put(j, "\\\"");
        else if (ch == '\\')
            put(j, "\\\\");
        else if (ch == '\n')
            put(j, "\\n");
        else if (ch == '\t')
            put(j, "\\t");
        else if (ch < 0x20) {
            snprintf(u, sizeof(u), "\\u%04x", ch);
            put(j, u);
        } else {
            u[0] = (char)ch;
            u[1] = 0;
            put(j, u);
        }
    }
    put(j, "\"");
}

/* The separator and key before a value. */
static void member(struct tide_json *j, const char *key)
{
    if (!j->first[j->depth])
        put(j, ",");
    j->first[j->depth] = 0;
    if (key) {
        escaped(j, key);
        put(j, ":");
    }
}

static void open_container(struct tide_json *j, const char *key,
                           const char *brace)
{
    member(j, key);
    if (j->depth >= TIDE_JSON_DEPTH_MAX) {
        j->err = j->err ? j->err : -EINVAL;
        return;
    }
    put(j, brace);
    j->first[++j->depth] = 1;
}

static void close_container(struct tide_json *j, const char *brace)
{
    if (j->depth <= 0) {
        j->err = j->err ? j->err : -EINVAL;
        return;
    }
    j->depth--;
    put(j, brace);
}

void tide__json_object_begin(struct tide_json *j, const char *key)
{
    open_container(j, key, "{");
}

void tide__json_object_end(struct tide_json *j)
{
    close_container(j, "}");
}

void tide__json_array_begin(struct tide_json *j, const char *key)
{
    open_container(j, key, "[");
}

void tide__json_array_end(struct tide_json *j)
{
    close_container(j, "]");
}

void tide__json_str(struct tide_json *j, const char *key, const char *v)
{
    member(j, key);
    if (v)
        escaped(j, v);
    else
        put(j, "null");
}

void tide__json_u64(struct tide_json *j, const char *key, uint64_t v)
{
    char b[32];

    member(j, key);
    snprintf(b, sizeof(b), "%" PRIu64, v);
    put(j, b);
}

void tide__json_i64(struct tide_json *j, const char *key, int64_t v)
{
    char b[32];

    member(j, key);
    snprintf(b, sizeof(b), "%" PRId64, v);
    put(j, b);
}

void tide__json_f64(struct tide_json *j, const char *key, double v)
{
    char b[40];

    member(j, key);
    if (!isfinite(v)) {
        put(j, "null");
        return;
    }
    snprintf(b, sizeof(b), "%.10g", v);
    put(j, b);
}

void tide__json_bool(struct tide_json *j, const char *key, int v)
{
    member(j, key);
    put(j, v ? "true" : "false");
}

int tide__json_fini(struct tide_json *j)
{
    if (j->depth != 0 && !j->err)
        j->err = -EINVAL;
    put(j, "\n");
    if (!j->err && fflush(j->f) == EOF)
        j->err = errno ? -errno : -EIO;
    return j->err;
}
