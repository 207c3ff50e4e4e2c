/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration-test support for TLS: development certificates made by
 * scripts/dev-certs.sh, a blocking OpenSSL client connection to tided, and
 * a bridge that turns one into a plain socket, so that every raw-frame
 * helper of tided.h and wire.h speaks through real TLS unchanged.
 */
#ifndef TIDE_TESTS_SUPPORT_TLS_H
#define TIDE_TESTS_SUPPORT_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

/* scripts/dev-certs.sh run into a fresh directory under the test's tmp
 * dir (with CLIENT_CN `client_cn`, or its default when NULL): ca.pem,
 * server.pem/.key, client.pem/.key. Returns the directory (static until
 * the next call); asserts that the script succeeded. */
const char *tls_dev_certs(const char *client_cn);

/* A TLS connection to 127.0.0.1:port verifying the server against `ca`
 * for `host` (a DNS name or IP literal), presenting `cert`/`key` when not
 * NULL, TLS 1.2 or newer, with 10 s socket timeouts. `session`, when not
 * NULL, is offered for resumption. Returns the connection, or NULL with
 * OpenSSL's reason in why[cap]. */
SSL *tls_dial(int port, const char *ca, const char *host, const char *cert,
              const char *key, SSL_SESSION *session, char *why, size_t cap);

/* Close `ssl` (close_notify, then the socket) and free it. */
void tls_close(SSL *ssl);

/* A plain socket whose bytes a thread relays to and from `ssl` until
 * either side closes; then the thread closes both. Returns the fd (the
 * caller closes it) or -1. */
int tls_bridge(SSL *ssl);

/* tls_dial() then tls_bridge(): the fd, or -1 (why says why). */
int tls_connect(int port, const char *ca, const char *host, char *why,
                size_t cap);

#endif /* TIDE_TESTS_SUPPORT_TLS_H */
