/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Input validation for the sidecar: emails, free text (UTF-8, no control
 * characters, bounded), MAC addresses, IANA timezone names and IP texts.
 * Every string from a client passes through here before it is bound to a
 * statement; docs/accounts.md states the rules.
 */
#include "meta_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int tide__meta_text_ok(const char *s, size_t max, int empty_ok)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    if (!s)
        return TIDE_EINVAL;
    while (p[i]) {
        unsigned c = p[i], need, cp;

        if (i >= max)
            return TIDE_EINVAL;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return TIDE_EINVAL;
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            cp = c & 0x07;
        } else {
            return TIDE_EINVAL;
        }
        for (unsigned k = 1; k <= need; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return TIDE_EINVAL;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        /* Overlong forms, surrogates and code points past U+10FFFF. */
        if ((need == 2 && cp < 0x800) || (cp >= 0xd800 && cp <= 0xdfff) ||
            (need == 3 && (cp < 0x10000 || cp > 0x10ffff)) || cp < 0xa0)
            return TIDE_EINVAL;
        i += need + 1;
    }
    if (i > max || (!empty_ok && i == 0))
        return TIDE_EINVAL;
    return 0;
}

static int local_char_ok(int c)
{
    return isalnum(c) || strchr("!#$%&'*+/=?^_`{|}~-.", c);
}

/* A practical subset of RFC 5321: a dot-atom local part of at most 64
 * bytes and a domain of at least two LDH labels whose last one is
 * alphabetic. Quoted local parts and address literals are refused. */
int tide__meta_email_norm(const char *in, char *out)
{
    const char *at, *p, *label;
    size_t n, local;

    if (!in)
        return TIDE_EINVAL;
    n = strnlen(in, TIDE_META_EMAIL_MAX + 1);
    if (n == 0 || n > TIDE_META_EMAIL_MAX)
        return TIDE_EINVAL;
    at = strchr(in, '@');
    if (!at || strchr(at + 1, '@'))
        return TIDE_EINVAL;
    local = (size_t)(at - in);
    if (local == 0 || local > 64 || in[0] == '.' || at[-1] == '.')
        return TIDE_EINVAL;
    for (p = in; p < at; p++) {
        if (!local_char_ok((unsigned char)*p) || (p[0] == '.' && p[1] == '.'))
            return TIDE_EINVAL;
    }
    label = at + 1;
    for (p = at + 1;; p++) {
        if (*p == '.' || *p == '\0') {
            size_t len = (size_t)(p - label);

            if (len == 0 || len > 63 || label[0] == '-' || p[-1] == '-')
                return TIDE_EINVAL;
            if (*p == '\0')
                break;
            label = p + 1;
            continue;
        }
        if (!isalnum((unsigned char)*p) && *p != '-')
            return TIDE_EINVAL;
    }
    if (label == at + 1 || (size_t)(p - label) < 2)
        return TIDE_EINVAL;
    for (const char *q = label; q < p; q++) {
        if (!isalpha((unsigned char)*q))
            return TIDE_EINVAL;
    }
    for (size_t i = 0; i <= n; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Accepts aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff and
 * aabbccddeeff in either case. */
int tide__meta_mac_norm(const char *in, char out[TIDE_META_MAC_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t b[6];
    int digits = 0, seps = 0;
    char sep = 0;
    size_t n;

    if (!in)
        return TIDE_EINVAL;
    n = strnlen(in, 32);
    if (n == 0) {
        out[0] = '\0';
        return 0;
    }
    if (n != 12 && n != 14 && n != 17)
        return TIDE_EINVAL;
    for (size_t i = 0; i < n; i++) {
        int v = hexval((unsigned char)in[i]);

        if (v >= 0) {
            if (digits >= 12)
                return TIDE_EINVAL;
            if (digits % 2 == 0)
                b[digits / 2] = (uint8_t)(v << 4);
            else
                b[digits / 2] |= (uint8_t)v;
            digits++;
            continue;
        }
        if (in[i] != ':' && in[i] != '-' && in[i] != '.')
            return TIDE_EINVAL;
        if (sep && in[i] != sep)
            return TIDE_EINVAL;
        sep = in[i];
        /* ':' and '-' every 2 digits, '.' every 4. */
        if (digits == 0 || digits % (sep == '.' ? 4 : 2) != 0 ||
            (i + 1 < n && hexval((unsigned char)in[i + 1]) < 0))
            return TIDE_EINVAL;
        seps++;
    }
    if (digits != 12 || (sep == '.' && seps != 2) ||
        ((sep == ':' || sep == '-') && seps != 5) || in[n - 1] == sep)
        return TIDE_EINVAL;
    for (int i = 0; i < 6; i++) {
        out[3 * i] = hex[b[i] >> 4];
        out[3 * i + 1] = hex[b[i] & 15];
        out[3 * i + 2] = i < 5 ? ':' : '\0';
    }
    return 0;
}

/* Names like "Europe/Paris", "America/Argentina/Buenos_Aires",
 * "Etc/GMT+5": components of [A-Za-z0-9_+-], not starting with '.' or
 * '-', so no path can leave the zoneinfo directory. The file must be a
 * regular file starting with the TZif magic. "UTC" needs no file. */
int tide__meta_tz_ok(const char *zoneinfo_dir, const char *name)
{
    char path[PATH_MAX], magic[4];
    struct stat st;
    size_t n;
    int fd, comp_start = 1;
    ssize_t got;

    if (!name)
        return TIDE_EINVAL;
    n = strnlen(name, TIDE_META_TZ_MAX + 1);
    if (n == 0 || n > TIDE_META_TZ_MAX)
        return TIDE_EINVAL;
    if (!strcmp(name, "UTC"))
        return 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)name[i];

        if (c == '/') {
            if (comp_start)
                return TIDE_EINVAL;
            comp_start = 1;
            continue;
        }
        if (comp_start && (c == '-' || c == '+'))
            return TIDE_EINVAL;
        if (!isalnum(c) && c != '_' && c != '-' && c != '+')
            return TIDE_EINVAL;
        comp_start = 0;
    }
    if (comp_start)
        return TIDE_EINVAL;
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", zoneinfo_dir, name) >=
        sizeof(path))
        return TIDE_EINVAL;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        /* Debian ships some zones as symlinks (e.g. "UCT"): follow them
         * only after the name itself proved safe, which it has. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
            return TIDE_EINVAL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return TIDE_EINVAL;
    }
    got = read(fd, magic, sizeof(magic));
    close(fd);
    if (got != 4 || memcmp(magic, "TZif", 4) != 0)
        return TIDE_EINVAL;
    return 0;
}

int tide__meta_ip_ok(const char *ip)
{
    if (!ip)
        return 0;
    for (size_t i = 0; ip[i]; i++) {
        if (i >= TIDE_META_IP_MAX)
            return TIDE_EINVAL;
        if (!isxdigit((unsigned char)ip[i]) && ip[i] != '.' && ip[i] != ':' &&
            ip[i] != '%' && !isalnum((unsigned char)ip[i]))
            return TIDE_EINVAL;
    }
    return 0;
}
