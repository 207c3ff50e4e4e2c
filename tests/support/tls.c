/* SPDX-License-Identifier: Apache-2.0 */
/* Integration-test support for TLS (tls.h). */
#include "tls.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "testutil.h"

const char *tls_dev_certs(const char *client_cn)
{
    static char certs[1100];
    char cmd[1400];

    snprintf(certs, sizeof(certs), "%s/certs", test_tmpdir());
    snprintf(cmd, sizeof(cmd), "scripts/dev-certs.sh '%s' '%s' >/dev/null",
             certs, client_cn ? client_cn : "dev-device");
    cr_assert_eq(system(cmd), 0, "scripts/dev-certs.sh failed");
    return certs;
}

static void why_ssl(char *why, size_t cap, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";

    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(why, cap, "%s: %s", what, e ? buf : strerror(errno));
    ERR_clear_error();
}

SSL *tls_dial(int port, const char *ca, const char *host, const char *cert,
              const char *key, SSL_SESSION *session, char *why, size_t cap)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port)};
    struct timeval tv = {10, 0};
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    int fd = -1, one = 1;

    if (!ctx) {
        why_ssl(why, cap, "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1 ||
        (cert && SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) ||
        (key && SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)) {
        why_ssl(why, cap, "loading certificates");
        goto fail;
    }
    ssl = SSL_new(ctx);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    if (!ssl || fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin))) {
        why_ssl(why, cap, "connect");
        goto fail;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    SSL_set_fd(ssl, fd);
    SSL_set1_host(ssl, host);
    if (strspn(host, "0123456789.") != strlen(host))
        SSL_set_tlsext_host_name(ssl, host);
    if (session)
        SSL_set_session(ssl, session);
    if (SSL_connect(ssl) != 1) {
        why_ssl(why, cap, "handshake");
        goto fail;
    }
    SSL_CTX_free(ctx); /* the connection keeps its reference */
    return ssl;

fail:
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    SSL_CTX_free(ctx);
    return NULL;
}

void tls_close(SSL *ssl)
{
    int fd;

    if (!ssl)
        return;
    fd = SSL_get_fd(ssl);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
}

struct bridge {
    SSL *ssl;
    int plain;
};

/* Write all of buf to a non-blocking `ssl`, waiting as OpenSSL asks. */
static int ssl_write_all(SSL *ssl, const char *buf, int n)
{
    while (n > 0) {
        int w = SSL_write(ssl, buf, n), e;
        struct pollfd p = {SSL_get_fd(ssl), 0, 0};

        if (w > 0) {
            buf += w;
            n -= w;
            continue;
        }
        e = SSL_get_error(ssl, w);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            return -1;
        p.events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        if (poll(&p, 1, 10000) <= 0)
            return -1;
    }
    return 0;
}

/* Relay until either side ends. The TLS socket is non-blocking: a record
 * that carries no data (a session ticket) must not block the relay, and
 * SSL_pending() comes first, as what OpenSSL has decrypted already is
 * invisible to poll(). */
static void *bridge_main(void *arg)
{
    struct bridge *b = arg;
    int tls_fd = SSL_get_fd(b->ssl);
    char buf[16384];

    fcntl(tls_fd, F_SETFL, fcntl(tls_fd, F_GETFL) | O_NONBLOCK);
    for (;;) {
        struct pollfd p[2] = {{tls_fd, POLLIN, 0}, {b->plain, POLLIN, 0}};
        int n, pending = SSL_pending(b->ssl);

        if (poll(p, 2, pending ? 0 : -1) < 0 && errno != EINTR)
            break;
        if (pending || (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            n = SSL_read(b->ssl, buf, sizeof(buf));
            if (n > 0) {
                if (send(b->plain, buf, (size_t)n, MSG_NOSIGNAL) != n)
                    break;
            } else if (SSL_get_error(b->ssl, n) != SSL_ERROR_WANT_READ) {
                break;
            }
        }
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = recv(b->plain, buf, sizeof(buf), 0);

            if (r <= 0 || ssl_write_all(b->ssl, buf, (int)r))
                break;
        }
    }
    shutdown(b->plain, SHUT_RDWR);
    close(b->plain);
    tls_close(b->ssl);
    free(b);
    return NULL;
}

int tls_bridge(SSL *ssl)
{
    int sv[2];
    struct bridge *b = malloc(sizeof(*b));
    pthread_t t;
    struct timeval tv = {10, 0};

    if (!b || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
        free(b);
        return -1;
    }
    b->ssl = ssl;
    b->plain = sv[1];
    setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (pthread_create(&t, NULL, bridge_main, b)) {
        close(sv[0]);
        close(sv[1]);
        free(b);
        return -1;
    }
    pthread_detach(t);
    return sv[0];
}

int tls_connect(int port, const char *ca, const char *host, char *why,
                size_t cap)
{
    SSL *ssl = tls_dial(port, ca, host, NULL, NULL, NULL, why, cap);

    return ssl ? tls_bridge(ssl) : -1;
}
