/* SPDX-License-Identifier: Apache-2.0 */
/* Integration-test support (tided.h). */
#include "tided.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "testutil.h"

static const char *tided_path(void)
{
    const char *p = getenv("TIDED_BIN");

    return p && *p ? p : "build/release/tided";
}

int tided_start(struct tided_proc *p, const char *dir,
                const char *const *settings)
{
    int out[2];
    const char *argv[64];
    int argc = 0;
    char buf[4096];
    size_t len = 0;
    FILE *f;
    char path[600];
    time_t deadline = time(NULL) + 20;

    memset(p, 0, sizeof(*p));
    snprintf(p->dir, sizeof(p->dir), "%s", dir);
    if (pipe(out))
        return -1;
    argv[argc++] = tided_path();
    argv[argc++] = "--data-dir";
    argv[argc++] = dir;
    argv[argc++] = "--listen";
    argv[argc++] = "127.0.0.1:0";
    argv[argc++] = "--http-listen";
    argv[argc++] = "127.0.0.1:0";
    argv[argc++] = "--set";
    argv[argc++] = "bcrypt_cost=4";
    argv[argc++] = "--set";
    argv[argc++] = "log_level=warn";
    for (int i = 0; settings && settings[i] && argc < 60; i++) {
        /* "--flag" goes as it is, "k=v" after --set. */
        if (strncmp(settings[i], "--", 2))
            argv[argc++] = "--set";
        argv[argc++] = settings[i];
    }
    argv[argc] = NULL;
    p->pid = fork();
    if (p->pid < 0)
        return -1;
    if (p->pid == 0) {
        char log[600];
        int fd;

        /* The server's log stays in its data directory for a failing
         * test to show; the test's cleanup removes it. */
        snprintf(log, sizeof(log), "%s/tided.log", dir);
        fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0)
            dup2(fd, 2);
        dup2(out[1], 1);
        close(out[0]);
        /* Criterion's worker handshake variable is not the server's. */
        unsetenv("BXFI_MAP");
        close(out[1]);
        execv(argv[0], (char *const *)argv);
        perror("exec tided");
        _exit(127);
    }
    close(out[1]);
    /* Read stdout until the ready line. */
    while (time(NULL) < deadline && len < sizeof(buf) - 1) {
        struct pollfd pfd = {out[0], POLLIN, 0};
        ssize_t n;
        char *r;

        if (poll(&pfd, 1, 200) <= 0)
            continue;
        n = read(out[0], buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = 0;
        r = strstr(buf, "ready: listening on 127.0.0.1:");
        if (r && strchr(r, '\n')) {
            char *h = strstr(buf, "http: listening on 127.0.0.1:");

            p->port = atoi(r + strlen("ready: listening on 127.0.0.1:"));
            if (h)
                p->http_port =
                    atoi(h + strlen("http: listening on 127.0.0.1:"));
            break;
        }
    }
    close(out[0]);
    if (p->port <= 0) {
        buf[len] = 0;
        fprintf(stderr,
                "tided did not print its ready line; stdout: '%s'; its log is "
                "%s/tided.log\n",
                buf, dir);
        tided_kill(p);
        return -1;
    }
    snprintf(path, sizeof(path), "%s/admin.key", dir);
    f = fopen(path, "r");
    if (f) {
        if (fgets(p->admin_key, sizeof(p->admin_key), f))
            p->admin_key[strcspn(p->admin_key, "\r\n")] = 0;
        fclose(f);
    }
    return 0;
}

int tided_start_fresh(struct tided_proc *p, char *dir, size_t dir_len,
                      const char *const *settings)
{
    snprintf(dir, dir_len, "%s", test_tmpdir());
    return tided_start(p, dir, settings);
}

void tided_kill_fresh(struct tided_proc *p, const char *dir)
{
    tided_kill(p);
    test_rmrf(dir);
}

int tided_stop(struct tided_proc *p)
{
    int status = 0;

    if (p->pid <= 0)
        return -1;
    kill(p->pid, SIGTERM);
    for (int i = 0; i < 2000; i++) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);

        if (r == p->pid) {
            p->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        usleep(10000);
    }
    tided_kill(p);
    return -1;
}

void tided_kill(struct tided_proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
}

int wire_connect(int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port)};
    struct timeval tv = {10, 0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    if (fd < 0)
        return -1;
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin))) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

int wire_send_raw(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;

    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

int wire_send(int fd, const Tide__V1__Envelope *env)
{
    size_t n = tide_frame_size(env);
    uint8_t *buf = malloc(n);
    int rc;

    if (!buf)
        return -1;
    rc = tide_frame_encode(env, buf, n) == (int64_t)n
             ? wire_send_raw(fd, buf, n)
             : -1;
    free(buf);
    return rc;
}

static int read_full(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

uint8_t *wire_recv_frame(int fd, size_t max, size_t *n)
{
    uint8_t hdr[4], *buf;
    size_t len;

    if (read_full(fd, hdr, 4))
        return NULL;
    len = (size_t)hdr[0] | (size_t)hdr[1] << 8 | (size_t)hdr[2] << 16 |
          (size_t)hdr[3] << 24;
    if (len > max)
        return NULL;
    buf = malloc(len ? len : 1);
    if (!buf || read_full(fd, buf, len)) {
        free(buf);
        return NULL;
    }
    *n = len;
    return buf;
}

Tide__V1__Envelope *wire_recv(int fd)
{
    Tide__V1__Envelope *env;
    size_t n;
    uint8_t *buf = wire_recv_frame(fd, TIDE_FRAME_MAX_BYTES_DEFAULT, &n);

    if (!buf)
        return NULL;
    env = tide__v1__envelope__unpack(&tide_frame_allocator, n, buf);
    free(buf);
    return env;
}

int wire_closed(int fd)
{
    uint8_t b[4096];

    for (;;) {
        ssize_t r = recv(fd, b, sizeof(b), 0);

        if (r == 0)
            return 1;
        if (r < 0)
            return errno == ECONNRESET;
    }
}

Tide__V1__Envelope *wire_call(int fd, Tide__V1__Envelope *req)
{
    if (wire_send(fd, req))
        return NULL;
    return wire_recv(fd);
}

int wire_session(int port, const char *key)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Hello h = TIDE__V1__HELLO__INIT;
    Tide__V1__Auth a = TIDE__V1__AUTH__INIT;
    int fd = wire_connect(port), ok;

    if (fd < 0)
        return -1;
    h.protocol_version = 1;
    e.request_id = 1;
    e.body_case = TIDE__V1__ENVELOPE__BODY_HELLO;
    e.hello = &h;
    r = wire_call(fd, &e);
    ok = r && r->body_case == TIDE__V1__ENVELOPE__BODY_HELLO_OK;
    tide_frame_free(r, NULL);
    if (!ok)
        goto fail;
    a.credential_case = TIDE__V1__AUTH__CREDENTIAL_API_KEY;
    a.api_key = (char *)key;
    e.request_id = 2;
    e.body_case = TIDE__V1__ENVELOPE__BODY_AUTH;
    e.auth = &a;
    r = wire_call(fd, &e);
    ok = r && r->body_case == TIDE__V1__ENVELOPE__BODY_AUTH_OK;
    tide_frame_free(r, NULL);
    if (ok)
        return fd;
fail:
    close(fd);
    return -1;
}

char *http_get(int port, const char *path, int *status)
{
    int fd = wire_connect(port);
    char req[512], *buf = NULL, *body;
    size_t len = 0, cap = 0;

    *status = 0;
    if (fd < 0)
        return NULL;
    snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
             path);
    if (wire_send_raw(fd, req, strlen(req)))
        goto out;
    for (;;) {
        ssize_t r;

        if (len + 4096 + 1 > cap) {
            char *v = realloc(buf, cap = 2 * cap + 8192);

            if (!v)
                goto out;
            buf = v;
        }
        r = recv(fd, buf + len, cap - len - 1, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    if (!buf)
        goto out;
    buf[len] = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", status) != 1)
        goto out;
    body = strstr(buf, "\r\n\r\n");
    if (!body)
        goto out;
    memmove(buf, body + 4, strlen(body + 4) + 1);
    close(fd);
    return buf;
out:
    free(buf);
    close(fd);
    return NULL;
}
