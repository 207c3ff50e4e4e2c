/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tide CLI's input parsing: durations, time expressions, value type
 * inference, CSV records and the line format. Pure functions; the unit
 * tests (tests/unit/test_client.c) link this file.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"

#define NS_PER_S 1000000000LL

static const struct {
    const char *suffix;
    int64_t ns;
} units[] = {
    {"ns", 1},
    {"us", 1000},
    {"ms", 1000000},
    {"s", NS_PER_S},
    {"m", 60 * NS_PER_S},
    {"h", 3600 * NS_PER_S},
    {"d", 86400 * NS_PER_S},
};

int tide__cli_parse_duration(const char *s, int64_t *out_ns)
{
    char *end;
    long long v;

    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno)
        return -EINVAL;
    if (!*end) {
        *out_ns = v;
        return 0;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].suffix))
            continue;
        if (v > INT64_MAX / units[i].ns)
            return -EINVAL;
        *out_ns = v * units[i].ns;
        return 0;
    }
    return -EINVAL;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* Read exactly `n` digits. */
static int digits(const char **p, int n, int64_t *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if ((*p)[i] < '0' || (*p)[i] > '9')
            return -EINVAL;
        *v = *v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    return 0;
}

static int expect(const char **p, char c)
{
    if (**p != c)
        return -EINVAL;
    (*p)++;
    return 0;
}

static int parse_rfc3339(const char *s, int64_t *out_ns)
{
    int64_t y, mo, d, h, mi, sec, frac = 0, oh, om, off = 0;
    const char *p = s;
    int scale = 0;

    if (digits(&p, 4, &y) || expect(&p, '-') || digits(&p, 2, &mo) ||
        expect(&p, '-') || digits(&p, 2, &d))
        return -EINVAL;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -EINVAL;
    p++;
    if (digits(&p, 2, &h) || expect(&p, ':') || digits(&p, 2, &mi) ||
        expect(&p, ':') || digits(&p, 2, &sec))
        return -EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -EINVAL;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') {
            if (scale < 9) {
                frac = frac * 10 + (*p - '0');
                scale++;
            }
            p++;
        }
        if (!scale)
            return -EINVAL;
        for (; scale < 9; scale++)
            frac *= 10;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;

        p++;
        if (digits(&p, 2, &oh) || expect(&p, ':') || digits(&p, 2, &om))
            return -EINVAL;
        off = sign * (oh * 3600 + om * 60);
    } else {
        return -EINVAL;
    }
    if (*p)
        return -EINVAL;
    *out_ns =
        ((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off) *
         NS_PER_S) +
        frac;
    return 0;
}

int tide__cli_parse_time(const char *s, int64_t now_ns, int64_t *out_ns)
{
    int64_t dur;
    char *end;
    long long v;

    if (!s || !*s)
        return -EINVAL;
    if (!strncmp(s, "now", 3)) {
        s += 3;
        if (!*s) {
            *out_ns = now_ns;
            return 0;
        }
    }
    if (*s == '-' || *s == '+') {
        if (tide__cli_parse_duration(s + 1, &dur))
            return -EINVAL;
        *out_ns = *s == '-' ? now_ns - dur : now_ns + dur;
        return 0;
    }
    if (strchr(s, 'T') || strchr(s, 't') || strchr(s, ' '))
        return parse_rfc3339(s, out_ns);
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end || *s < '0' || *s > '9')
        return -EINVAL;
    *out_ns = v;
    return 0;
}

void tide__cli_infer_value(const char *s, struct tide__cli_point *p)
{
    size_t n = strlen(s);
    char *end;

    /* Integers carry an 'i' suffix ("42i"), as in InfluxDB's line
     * protocol: a plain "22" in a column of "21.5"s must stay a float, or
     * the series' type would depend on how a value happens to print. */
    if (n > 1 && s[n - 1] == 'i' && strspn(s, "+-0123456789") == n - 1) {
        errno = 0;
        long long i = strtoll(s, &end, 10);

        if (end == s + n - 1 && !errno) {
            p->type = TIDE_VALUE_I64;
            p->i64 = i;
            return;
        }
    }
    if (n) {
        errno = 0;
        double d = strtod(s, &end);

        /* strtod also takes "nan", "inf" and hex; only plain decimals
         * count as numbers here. */
        if (!*end && !errno && strspn(s, "0123456789+-.eE") == n) {
            p->type = TIDE_VALUE_F64;
            p->f64 = d;
            return;
        }
    }
    if (!strcmp(s, "true") || !strcmp(s, "false")) {
        p->type = TIDE_VALUE_BOOL;
        p->b = s[0] == 't';
        return;
    }
    p->type = TIDE_VALUE_STR;
    p->str = s;
}

static int is_blank(const char *s)
{
    s += strspn(s, " \t\r\n");
    return !*s || *s == '#';
}

static void chomp(char *s)
{
    size_t n = strlen(s);

    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

/* Unquote a '"'-quoted token in place starting at `s`; *end receives the
 * character after the closing quote. Returns 0 or -EINVAL. */
static int unquote(char *s, char **end)
{
    char *r = s + 1, *w = s;

    for (;;) {
        if (!*r)
            return -EINVAL;
        if (*r == '"') {
            if (r[1] == '"') {
                *w++ = '"';
                r += 2;
                continue;
            }
            *w = '\0';
            *end = r + 1;
            return 0;
        }
        *w++ = *r++;
    }
}

int tide__cli_parse_csv(char *line, int64_t now_ns, struct tide__cli_point *p)
{
    char *f[3], *value, *end;

    if (is_blank(line))
        return 1;
    chomp(line);
    f[0] = line;
    for (int i = 1; i < 3; i++) {
        char *comma = strchr(f[i - 1], ',');

        if (!comma)
            return -EINVAL;
        *comma = '\0';
        f[i] = comma + 1;
    }
    value = strchr(f[2], ',');
    if (!value)
        return -EINVAL;
    *value++ = '\0';
    if (!*f[0] || !*f[1] || tide__cli_parse_time(f[2], now_ns, &p->ts_ns))
        return -EINVAL;
    p->device = f[0];
    p->field = f[1];
    if (*value == '"') {
        if (unquote(value, &end) || *end)
            return -EINVAL;
        p->type = TIDE_VALUE_STR;
        p->str = value;
        return 0;
    }
    tide__cli_infer_value(value, p);
    return 0;
}

int tide__cli_parse_line(char *line, int64_t now_ns,
                         struct tide__cli_point *pts, size_t max, size_t *n)
{
    char *p, *device;
    size_t k = 0;
    int64_t ts = now_ns;

    if (is_blank(line))
        return 1;
    chomp(line);
    p = line + strspn(line, " \t");
    device = p;
    p += strcspn(p, " \t");
    if (!*p || p == device)
        return -EINVAL;
    *p++ = '\0';
    for (;;) {
        char *tok, *eq, *end;

        p += strspn(p, " \t");
        if (!*p)
            break;
        tok = p;
        eq = NULL;
        while (*p && *p != ' ' && *p != '\t' && *p != '=')
            p++;
        if (*p == '=')
            eq = p;
        if (!eq) {
            /* The only token without '=' is the trailing timestamp. */
            end = p;
            if (*end)
                *end++ = '\0';
            if (tide__cli_parse_time(tok, now_ns, &ts) ||
                end[strspn(end, " \t")])
                return -EINVAL;
            break;
        }
        if (k == max || eq == tok)
            return -EINVAL;
        *eq = '\0';
        pts[k].device = device;
        pts[k].field = tok;
        if (eq[1] == '"') {
            if (unquote(eq + 1, &end))
                return -EINVAL;
            if (*end && *end != ' ' && *end != '\t')
                return -EINVAL;
            pts[k].type = TIDE_VALUE_STR;
            pts[k].str = eq + 1;
            p = end;
        } else {
            end = eq + 1 + strcspn(eq + 1, " \t");
            p = *end ? end + 1 : end;
            *end = '\0';
            tide__cli_infer_value(eq + 1, &pts[k]);
        }
        k++;
    }
    if (!k)
        return -EINVAL;
    for (size_t i = 0; i < k; i++)
        pts[i].ts_ns = ts;
    *n = k;
    return 0;
}
