/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libtide over TLS (OpenSSL 3): the client context built from the
 * options, the handshake on the connection's non-blocking socket within
 * the connect timeout, reads and writes that say which way the socket
 * must become ready, and the session kept for the next connection. TLS
 * 1.3 tickets arrive after the handshake, so the session is taken from the
 * new-session callback rather than right after connecting.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

void tide__client_reason(tide_client *c, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    msg = tide_strdup(buf);
    c->have_error = 1;
    c->err_code = 0;
    if (msg) {
        tide_free(c->err_msg);
        c->err_msg = msg;
    }
}

/* OpenSSL's first queued error as text; the queue is emptied. */
static const char *ssl_text(char *buf, size_t cap)
{
    unsigned long e = ERR_get_error();

    if (e)
        ERR_error_string_n(e, buf, cap);
    else
        snprintf(buf, cap, "%s", errno ? strerror(errno) : "no detail");
    ERR_clear_error();
    return buf;
}

/* Keep the newest session the server gave (a TLS 1.3 ticket, or the
 * TLS 1.2 session) for the next connection. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    tide_client *c = SSL_get_app_data(ssl);

    if (!c)
        return 0;
    SSL_SESSION_free(c->tls_session);
    c->tls_session = sess;
    return 1; /* we hold the reference */
}

int tide__tls_init(tide_client *c, const struct tide_client_options *o)
{
    char why[256];
    SSL_CTX *ctx;

    if (!o->tls)
        return 0;
    ctx = SSL_CTX_new(TLS_client_method());
    c->tls_ctx = ctx;
    if (!ctx) {
        tide__client_reason(c, "TLS: %s", ssl_text(why, sizeof(why)));
        return TIDE_ETLS;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                            SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    SSL_CTX_set_verify(
        ctx, o->tls_insecure_skip_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER,
        NULL);
    if (o->tls_ca_file || o->tls_ca_dir) {
        if (SSL_CTX_load_verify_locations(ctx, o->tls_ca_file, o->tls_ca_dir) !=
            1) {
            tide__client_reason(c, "TLS: cannot load the CA %s: %s",
                                o->tls_ca_file ? o->tls_ca_file : o->tls_ca_dir,
                                ssl_text(why, sizeof(why)));
            return TIDE_ETLS;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        tide__client_reason(c, "TLS: cannot load the system CAs: %s",
                            ssl_text(why, sizeof(why)));
        return TIDE_ETLS;
    }
    if (o->tls_cert_file &&
        (SSL_CTX_use_certificate_chain_file(ctx, o->tls_cert_file) != 1 ||
         SSL_CTX_use_PrivateKey_file(
             ctx, o->tls_key_file ? o->tls_key_file : o->tls_cert_file,
             SSL_FILETYPE_PEM) != 1 ||
         SSL_CTX_check_private_key(ctx) != 1)) {
        tide__client_reason(c, "TLS: cannot load the client certificate %s: %s",
                            o->tls_cert_file, ssl_text(why, sizeof(why)));
        return TIDE_ETLS;
    }
    return 0;
}

void tide__tls_fini(tide_client *c)
{
    tide__tls_close(c);
    SSL_SESSION_free(c->tls_session);
    c->tls_session = NULL;
    SSL_CTX_free(c->tls_ctx);
    c->tls_ctx = NULL;
}

void tide__tls_close(tide_client *c)
{
    if (!c->ssl)
        return;
    SSL_set_app_data(c->ssl, NULL);
    /* A quiet shutdown sends nothing (the server reads EOF) but marks the
     * connection as ended on purpose: OpenSSL forgets the session of one
     * freed mid-stream, and it is the one to resume. */
    SSL_set_quiet_shutdown(c->ssl, 1);
    SSL_shutdown(c->ssl);
    SSL_free(c->ssl);
    c->ssl = NULL;
}

/* Why the handshake failed, for the user: the certificate check's own
 * words when it was that. */
static void handshake_reason(tide_client *c, const char *name)
{
    long v = SSL_get_verify_result(c->ssl);
    char why[256];

    if (v != X509_V_OK)
        tide__client_reason(c,
                            "TLS: the certificate of %s:%u did not verify: "
                            "%s (server name checked: %s)",
                            c->o.host, (unsigned)c->o.port,
                            X509_verify_cert_error_string(v), name);
    else
        tide__client_reason(c,
                            "TLS handshake with %s:%u failed: %s (is the "
                            "server speaking TLS?)",
                            c->o.host, (unsigned)c->o.port,
                            ssl_text(why, sizeof(why)));
}

int tide__tls_connect(tide_client *c, int64_t deadline_ms)
{
    const char *name = c->o.tls_server_name ? c->o.tls_server_name : c->o.host;
    unsigned char ip[16];
    int is_ip =
        inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;

    c->ssl = SSL_new(c->tls_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        tide__client_reason(c, "TLS: out of memory");
        return -ENOMEM;
    }
    SSL_set_app_data(c->ssl, c);
    if (!c->o.tls_insecure_skip_verify) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);

        if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, name) != 1
                  : SSL_set1_host(c->ssl, name) != 1) {
            tide__client_reason(c, "TLS: bad server name %s", name);
            return TIDE_ETLS;
        }
    }
    if (!is_ip)
        SSL_set_tlsext_host_name(c->ssl, name);
    if (c->tls_session)
        SSL_set_session(c->ssl, c->tls_session);
    for (;;) {
        int r = SSL_connect(c->ssl), e;
        struct pollfd p = {.fd = c->fd};
        int64_t left = deadline_ms - tide__client_now_ms();

        if (r == 1)
            break;
        e = SSL_get_error(c->ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            handshake_reason(c, name);
            return TIDE_ETLS;
        }
        if (left <= 0) {
            tide__client_reason(c, "TLS handshake with %s:%u timed out",
                                c->o.host, (unsigned)c->o.port);
            return TIDE_ETIMEDOUT;
        }
        p.events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
            return -errno;
    }
    c->tls_resumed = SSL_session_reused(c->ssl);
    return 0;
}

int tide__tls_read(tide_client *c, uint8_t *buf, size_t cap)
{
    int n = SSL_read(c->ssl, buf, (int)(cap > INT32_MAX ? INT32_MAX : cap));

    if (n > 0)
        return n;
    switch (SSL_get_error(c->ssl, n)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    default:
        ERR_clear_error();
        return TIDE_EDISCONNECTED;
    }
}

int tide__tls_write(tide_client *c, const uint8_t *p, size_t n, short *want)
{
    int w = SSL_write(c->ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));

    if (w > 0)
        return w;
    switch (SSL_get_error(c->ssl, w)) {
    case SSL_ERROR_WANT_READ:
        *want = POLLIN;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        *want = POLLOUT;
        return 0;
    default:
        ERR_clear_error();
        return TIDE_EDISCONNECTED;
    }
}

int tide__tls_pending(const tide_client *c)
{
    return c->ssl && SSL_pending(c->ssl) > 0;
}

int tide_client_tls_resumed(const tide_client *c)
{
    return c && c->tls_resumed;
}
