/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TLS for both of tided's ports (docs/operations.md, "TLS"): the server
 * context built from tls_cert / tls_key (and tls_client_ca for mutual
 * TLS), its reload on SIGHUP, and the OpenSSL bufferevents the protocol
 * listener (conn.c) and evhttp (metrics.c) run their connections on.
 *
 * A reload builds a whole new context and swaps it in only when it loaded
 * cleanly: connections already open keep the one they were accepted with
 * (SSL_new holds a reference), new ones get the new one, and the session
 * ticket keys move across so that clients resume as before.
 */
#include <errno.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "server.h"

/* TLS 1.2's suites: ECDHE with an AEAD only (Mozilla's "intermediate"
 * list); TLS 1.3 keeps OpenSSL's default suites, all AEAD. */
#define TLS12_CIPHERS                                                          \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"               \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"               \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* The ticket keys' size (SSL_CTX_get_tlsext_ticket_keys): name, HMAC and
 * AES keys. */
#define TICKET_KEYS_BYTES 80

/* The first error on OpenSSL's queue as text, and the queue emptied. */
static const char *ssl_why(char *buf, size_t cap)
{
    unsigned long e = ERR_get_error();

    if (!e)
        snprintf(buf, cap, "no detail from OpenSSL");
    else
        ERR_error_string_n(e, buf, cap);
    ERR_clear_error();
    return buf;
}

static int64_t cert_not_after(SSL_CTX *ctx)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    struct tm tm;

    if (!x || ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

/* A server context from the configured files, or NULL with the reason
 * logged. */
static SSL_CTX *ctx_build(const struct tided_config *cfg)
{
    static const unsigned char sid_ctx[] = "tided";
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    char why[256];
    const char *what = "";

    if (!ctx) {
        what = "creating the context";
        goto fail;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* Resumption (tickets and the session cache) across the connections
     * of one context; the id context is required once peers are
     * verified. */
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_timeout(ctx, 24 * 3600);
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
        what = "setting the cipher list";
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
        what = cfg->tls_cert;
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1) {
        what = cfg->tls_key;
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        what = "tls_key does not match tls_cert";
        goto fail;
    }
    if (cfg->tls_client_ca[0]) {
        STACK_OF(X509_NAME) *names =
            SSL_load_client_CA_file(cfg->tls_client_ca);

        if (!names ||
            SSL_CTX_load_verify_locations(ctx, cfg->tls_client_ca, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            what = cfg->tls_client_ca;
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        /* A certificate is asked for, not required: API keys and
         * sessions still authenticate. One that is presented must
         * verify, or the handshake fails. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    return ctx;

fail:
    tide_log(LOG_ERROR, "TLS: cannot load %s: %s", what,
             ssl_why(why, sizeof(why)));
    SSL_CTX_free(ctx);
    return NULL;
}

static void log_loaded(const struct server *s, const char *verb)
{
    char when[32] = "unknown";
    time_t t = (time_t)s->tls_not_after;
    struct tm tm;

    if (t && gmtime_r(&t, &tm))
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    tide_log(LOG_INFO, "TLS: %s certificate %s (valid until %s)%s%s", verb,
             s->cfg.tls_cert, when,
             s->cfg.tls_client_ca[0] ? "; client certificates from " : "",
             s->cfg.tls_client_ca);
}

int tided_tls_init(struct server *s)
{
    if (!s->cfg.tls_cert[0] && !s->cfg.tls_key[0])
        return 0;
    if (!s->cfg.tls_cert[0] || !s->cfg.tls_key[0]) {
        tide_log(LOG_ERROR, "TLS needs both tls_cert and tls_key");
        return -1;
    }
    s->tls = ctx_build(&s->cfg);
    if (!s->tls)
        return -1;
    s->tls_not_after = cert_not_after(s->tls);
    log_loaded(s, "serving");
    return 0;
}

int tided_tls_reload(struct server *s)
{
    unsigned char keys[TICKET_KEYS_BYTES];
    SSL_CTX *fresh;

    if (!s->tls)
        return 0;
    fresh = ctx_build(&s->cfg);
    if (!fresh) {
        atomic_fetch_add(&s->metrics.tls_reload_failures, 1);
        tide_log(LOG_ERROR, "TLS: reload failed; still serving the "
                            "certificate loaded before");
        return -1;
    }
    if (SSL_CTX_get_tlsext_ticket_keys(s->tls, keys, sizeof(keys)) == 1)
        SSL_CTX_set_tlsext_ticket_keys(fresh, keys, sizeof(keys));
    OPENSSL_cleanse(keys, sizeof(keys));
    SSL_CTX_free(s->tls); /* open connections keep their reference */
    s->tls = fresh;
    s->tls_not_after = cert_not_after(fresh);
    atomic_fetch_add(&s->metrics.tls_reloads, 1);
    log_loaded(s, "reloaded");
    return 0;
}

void tided_tls_fini(struct server *s)
{
    SSL_CTX_free(s->tls);
    s->tls = NULL;
}

struct bufferevent *tided_tls_bev(struct server *s, evutil_socket_t fd)
{
    SSL *ssl = SSL_new(s->tls);
    struct bufferevent *bev;

    if (!ssl)
        return NULL;
    bev = bufferevent_openssl_socket_new(
        s->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        SSL_free(ssl);
        return NULL;
    }
    /* A peer that closes without close_notify ends its connection like a
     * plaintext one does, not with an error. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

void tided_tls_handshake_done(struct server *s, struct bufferevent *bev)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);

    atomic_fetch_add(&s->metrics.tls_handshakes, 1);
    if (ssl && SSL_session_reused(ssl))
        atomic_fetch_add(&s->metrics.tls_resumed, 1);
}

const char *tided_tls_error(struct bufferevent *bev, char *buf, size_t cap)
{
    unsigned long e = bufferevent_get_openssl_error(bev);

    if (!e)
        return "connection closed during the TLS handshake";
    ERR_error_string_n(e, buf, cap);
    while (bufferevent_get_openssl_error(bev))
        ;
    return buf;
}

int tided_tls_peer_fingerprint(struct bufferevent *bev, uint8_t fp[32])
{
    SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
    X509 *peer;
    unsigned len = 0;
    int ok;

    if (!ssl || !(peer = SSL_get1_peer_certificate(ssl)))
        return TIDE_EAUTH;
    ok = SSL_get_verify_result(ssl) == X509_V_OK &&
         X509_digest(peer, EVP_sha256(), fp, &len) == 1 && len == 32;
    X509_free(peer);
    return ok ? 0 : TIDE_EAUTH;
}
