/* SPDX-License-Identifier: Apache-2.0 */
/* tide-bench's comparison targets (peer.h). */
#include "peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define HOUR_NS 3600000000000ll

static int append(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (*len >= size)
        return -ENOSPC;
    va_start(ap, fmt);
    n = vsnprintf(buf + *len, size - *len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size - *len)
        return -ENOSPC;
    *len += (size_t)n;
    return 0;
}

int tide__peer_line(const struct tide_wl *w, const struct tide_wl_row *r,
                    char *buf, size_t size, size_t *len)
{
    const struct tide_wl_tags *t = &w->tags[r->device];
    size_t at = *len;
    uint16_t n;
    const struct tide_wl_field *f = tide__wl_fields(w->cfg.kind, r->shape, &n);
    char dev[32];
    int rc;

    tide__wl_device_name(w->cfg.kind, r->device, dev, sizeof(dev));
    if (w->cfg.kind == TIDE_WL_DEVOPS)
        rc = append(buf, size, &at, "cpu,device=%s,region=%s,firmware=%s ", dev,
                    t->a, t->b);
    else
        rc = append(buf, size, &at, "%s,device=%s,fleet=%s,driver=%s,model=%s ",
                    tide__wl_measurement(w->cfg.kind, r->shape), dev, t->a,
                    t->b, t->c);
    for (uint16_t i = 0; i < r->n && !rc; i++) {
        const char *sep = i ? "," : "";
        double d;

        switch (f[i].type) {
        case TIDE_VALUE_I64:
            rc = append(buf, size, &at, "%s%s=%" PRId64 "i", sep, f[i].name,
                        (int64_t)r->v[i]);
            break;
        case TIDE_VALUE_STR:
            rc = append(buf, size, &at, "%s%s=\"%s\"", sep, f[i].name,
                        tide__wl_status_name(r->v[i]));
            break;
        default:
            memcpy(&d, &r->v[i], sizeof(d));
            rc = append(buf, size, &at, "%s%s=%.15g", sep, f[i].name, d);
            break;
        }
    }
    if (!rc)
        rc = append(buf, size, &at, " %" PRId64 "\n", r->ts_ns);
    if (!rc)
        *len = at;
    return rc;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int tide__peer_http(uint16_t port, const char *method, const char *path,
                    const char *body, size_t len, int *status, uint64_t *bytes)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct timeval tv = {60, 0};
    char head[4096], buf[65536];
    size_t got = 0;
    int fd, rc, one = 1, n;

    *status = 0;
    *bytes = 0;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin))) {
        rc = -errno;
        goto out;
    }
    n = snprintf(head, sizeof(head),
                 "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                 "Content-Length: %zu\r\n\r\n",
                 method, path, len);
    if (n < 0 || (size_t)n >= sizeof(head)) {
        rc = -ENAMETOOLONG;
        goto out;
    }
    rc = send_all(fd, head, (size_t)n);
    if (!rc && len)
        rc = send_all(fd, body, len);
    if (rc)
        goto out;
    for (;;) {
        ssize_t r = recv(fd, buf + (got < 64 ? got : 0),
                         sizeof(buf) - 1 - (got < 64 ? got : 0), 0);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto out;
        }
        if (r == 0)
            break;
        if (got < 64) {
            buf[got + (size_t)r] = 0;
            if (got + (size_t)r >= 12 &&
                sscanf(buf, "HTTP/1.%*d %d", status) != 1) {
                rc = -EPROTO;
                goto out;
            }
        }
        got += (size_t)r;
    }
    *bytes = got;
    rc = *status ? 0 : -EPROTO;
out:
    close(fd);
    return rc;
}

const char *tide__peer_write_path(enum tide_peer p)
{
    return p == TIDE_PEER_VICTORIA ? "/write"
                                   : "/write?db=" TIDE_PEER_DB "&precision=ns";
}

/* Percent-encode everything but unreserved characters. */
static int urlenc(const char *s, char *buf, size_t size, size_t *len)
{
    static const char hex[] = "0123456789ABCDEF";

    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;

        if (*len + 4 > size)
            return -ENOSPC;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
            (ch >= '0' && ch <= '9') || strchr("-_.~", ch)) {
            buf[(*len)++] = (char)ch;
        } else {
            buf[(*len)++] = '%';
            buf[(*len)++] = hex[ch >> 4];
            buf[(*len)++] = hex[ch & 15];
        }
    }
    buf[*len] = 0;
    return 0;
}

int tide__peer_query_path(enum tide_peer p, int q, const struct tide_wl *w,
                          uint32_t device, char *buf, size_t size)
{
    const char *m = tide__wl_measurement(w->cfg.kind, 0);
    uint16_t nf;
    const char *f0 = tide__wl_fields(w->cfg.kind, 0, &nf)[0].name;
    int64_t end = w->end_ns, hour_ago = end - HOUR_NS;
    int64_t day_ago = end - 24 * HOUR_NS;
    char dev[32], expr[512];
    size_t len = 0;
    int rc;

    if (day_ago < w->cfg.start_ns)
        day_ago = w->cfg.start_ns;
    tide__wl_device_name(w->cfg.kind, device, dev, sizeof(dev));
    if (p == TIDE_PEER_VICTORIA) {
        /* line protocol "m,tags f=v" becomes the metric m_f. */
        const char *pre[5] = {
            "/api/v1/export?match[]=", "/api/v1/query_range?query=",
            "/api/v1/query?query=", "/api/v1/query?query=",
            "/api/v1/query?query="};
        switch (q) {
        case 0:
            snprintf(expr, sizeof(expr), "{__name__=~\"%s_.*\",device=\"%s\"}",
                     m, dev);
            break;
        case 1:
            snprintf(expr, sizeof(expr),
                     "avg_over_time(%s_%s{device=\"%s\"}[5m])", m, f0, dev);
            break;
        case 2:
            snprintf(expr, sizeof(expr), "max(max_over_time(%s_%s[1h]))", m,
                     f0);
            break;
        case 3:
            snprintf(expr, sizeof(expr),
                     "avg_over_time({__name__=~\"%s_.*\"}[24h])", m);
            break;
        default:
            snprintf(expr, sizeof(expr),
                     "last_over_time({__name__=~\"%s_.*\"}[24h])", m);
            break;
        }
        rc = append(buf, size, &len, "%s", pre[q]);
        if (!rc)
            rc = urlenc(expr, buf, size, &len);
        if (rc)
            return rc;
        if (q == 0)
            return append(buf, size, &len, "&start=%" PRId64 "&end=%" PRId64,
                          hour_ago / 1000000000, end / 1000000000);
        if (q == 1)
            return append(buf, size, &len,
                          "&start=%" PRId64 "&end=%" PRId64 "&step=300",
                          day_ago / 1000000000, end / 1000000000);
        return append(buf, size, &len, "&time=%" PRId64, end / 1000000000);
    }
    switch (q) {
    case 0:
        snprintf(expr, sizeof(expr),
                 "SELECT * FROM %s WHERE device='%s' AND time >= %" PRId64
                 " AND time < %" PRId64,
                 m, dev, hour_ago, end);
        break;
    case 1:
        snprintf(
            expr, sizeof(expr),
            "SELECT mean(%s) FROM %s WHERE device='%s' AND time >= %" PRId64
            " AND time < %" PRId64 " GROUP BY time(5m)",
            f0, m, dev, day_ago, end);
        break;
    case 2:
        snprintf(expr, sizeof(expr),
                 "SELECT max(%s) FROM %s WHERE time >= %" PRId64
                 " AND time < %" PRId64,
                 f0, m, hour_ago, end);
        break;
    case 3:
        snprintf(expr, sizeof(expr),
                 "SELECT mean(*) FROM %s WHERE time >= %" PRId64
                 " AND time < %" PRId64 " GROUP BY device",
                 m, day_ago, end);
        break;
    default:
        snprintf(expr, sizeof(expr), "SELECT last(*) FROM %s GROUP BY device",
                 m);
        break;
    }
    rc = append(buf, size, &len, "/query?db=" TIDE_PEER_DB "&q=");
    return rc ? rc : urlenc(expr, buf, size, &len);
}
