/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the write path checks in the names and tags a client sends
 * (docs/protocol.md, "Write model"): thing and field names, strict UTF-8,
 * and device tags, which are merged into the "k=v,k=v" text the sidecar
 * stores (docs/accounts.md).
 */
#include <string.h>

#include "server.h"

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
int names_utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;

    while (i < n) {
        uint8_t b = p[i];
        uint32_t cp;
        size_t len;

        if (b < 0x80) {
            i++;
            continue;
        }
        if ((b & 0xe0) == 0xc0) {
            len = 2;
            cp = b & 0x1f;
        } else if ((b & 0xf0) == 0xe0) {
            len = 3;
            cp = b & 0x0f;
        } else if ((b & 0xf8) == 0xf0) {
            len = 4;
            cp = b & 0x07;
        } else {
            return 0;
        }
        if (i + len > n)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
            (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

int names_valid(const char *s, size_t max)
{
    size_t n = strlen(s);

    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((uint8_t)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

/* Why `s` cannot be a device or field name of at most `max` bytes, with
 * the wire code in *code; NULL when it can. */
const char *names_error(const char *s, size_t max, Tide__V1__ErrorCode *code)
{
    if (!names_valid(s, max)) {
        *code = TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT;
        return "name empty, too long or with control characters";
    }
    if (!names_utf8_valid((const uint8_t *)s, strlen(s))) {
        *code = TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_UTF8;
        return "name is not valid UTF-8";
    }
    return NULL;
}

/* Append "k=v" to the tag text out[0..*off) (capacity TIDE_META_TAGS_MAX
 * + 1). Returns 0, or -1 when it does not fit. */
static int tag_append(char *out, size_t *off, const char *k, size_t klen,
                      const char *v, size_t vlen)
{
    size_t need = (*off ? 1 : 0) + klen + 1 + vlen;

    if (*off + need > TIDE_META_TAGS_MAX)
        return -1;
    if (*off)
        out[(*off)++] = ',';
    memcpy(out + *off, k, klen);
    out[*off + klen] = '=';
    memcpy(out + *off + klen + 1, v, vlen);
    *off += klen + 1 + vlen;
    out[*off] = 0;
    return 0;
}

/* The last of t[0..n) whose key is k[0..klen), or NULL. */
static const Tide__V1__Tag *tag_last(Tide__V1__Tag *const *t, size_t n,
                                     const char *k, size_t klen)
{
    for (size_t i = n; i-- > 0;)
        if (strlen(t[i]->key) == klen && !memcmp(t[i]->key, k, klen))
            return t[i];
    return NULL;
}

/* Does the tag text `cur` have key k[0..klen)? */
static int tag_has(const char *cur, const char *k, size_t klen)
{
    for (const char *p = cur; *p;) {
        size_t len = strcspn(p, ",");

        if (len > klen && p[klen] == '=' && !memcmp(p, k, klen))
            return 1;
        p += len + (p[len] == ',');
    }
    return 0;
}

/* Upsert t[0..n) into the device tags `cur` ("k=v,k=v"): a key already
 * there takes the new value in place, a new key is appended; of a key
 * given twice the last value wins. The result goes to
 * out[TIDE_META_TAGS_MAX + 1]. Returns NULL, or why the tags are refused
 * (wire code in *code). */
const char *names_tags_upsert(const char *cur, Tide__V1__Tag *const *t,
                              size_t n, char *out, Tide__V1__ErrorCode *code)
{
    static const char *const too_long = "tags over 1024 bytes";
    size_t off = 0;

    *code = TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT;
    /* Each tag takes at least 2 bytes ("k="): bounds the loops below. */
    if (n > TIDE_META_TAGS_MAX / 2)
        return too_long;
    for (size_t i = 0; i < n; i++) {
        const char *k = t[i]->key, *v = t[i]->value;

        if (!names_valid(k, TIDE_META_TAGS_MAX) || strpbrk(k, ",=") ||
            (*v && !names_valid(v, TIDE_META_TAGS_MAX)) || strchr(v, ',')) {
            return "tag key empty, or with ',', '=' or control characters,"
                   " or value with ',' or control characters";
        }
        if (!names_utf8_valid((const uint8_t *)k, strlen(k)) ||
            !names_utf8_valid((const uint8_t *)v, strlen(v))) {
            *code = TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_UTF8;
            return "tag is not valid UTF-8";
        }
    }
    out[0] = 0;
    for (const char *p = cur; *p;) {
        size_t len = strcspn(p, ","), klen = strcspn(p, "=");
        const Tide__V1__Tag *nt = tag_last(t, n, p, klen < len ? klen : len);
        int rc = nt ? tag_append(out, &off, nt->key, strlen(nt->key), nt->value,
                                 strlen(nt->value))
                 : klen < len ? tag_append(out, &off, p, klen, p + klen + 1,
                                           len - klen - 1)
                              : 0;

        if (rc)
            return too_long;
        p += len + (p[len] == ',');
    }
    for (size_t i = 0; i < n; i++) {
        size_t klen = strlen(t[i]->key);
        const Tide__V1__Tag *nt = tag_last(t, n, t[i]->key, klen);

        /* Each new key once, where it first appears. */
        if (tag_has(cur, t[i]->key, klen) || tag_last(t, i, t[i]->key, klen))
            continue;
        if (tag_append(out, &off, nt->key, klen, nt->value, strlen(nt->value)))
            return too_long;
    }
    return NULL;
}
