/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration tests of TLS on tided's two ports (issue #13, items 1 and
 * 4): a real tided with certificates from scripts/dev-certs.sh, real
 * OpenSSL clients (tests/support/tls.c, the openssl and curl commands) and
 * libtide, the CLI and tide's writer over TLS.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "proc.h"
#include "testutil.h"
#include "tide/client.h"
#include "tls.h"
#include "wire.h"

static char certs[1100], ca[1200], cert[1200], cert_key[1200];
static char set_cert[1300], set_key[1300];

/* Certificates (the client's for `client_cn`) first, then tided on them
 * with `extra` settings, where "%s" stands for the certificates' folder. */
static void tls_start(const char *extra, const char *client_cn)
{
    static char set_extra[1300];
    const char *settings[] = {set_cert, set_key, set_extra, NULL};

    snprintf(certs, sizeof(certs), "%s", tls_dev_certs(client_cn));
    snprintf(set_extra, sizeof(set_extra), extra, certs);
    snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
    snprintf(cert, sizeof(cert), "%s/server.pem", certs);
    snprintf(cert_key, sizeof(cert_key), "%s/server.key", certs);
    snprintf(set_cert, sizeof(set_cert), "tls_cert=%s", cert);
    snprintf(set_key, sizeof(set_key), "tls_key=%s", cert_key);
    fixture_start(settings);
}

static void tls_init(void)
{
    tls_start("read_timeout_ms=500", NULL);
}

TestSuite(tls, .init = tls_init, .fini = fixture_fini, .timeout = 60);

/* Hello and Auth with `api_key` over a TLS connection verified against
 * `ca_file` for `host`; the plain end of its bridge. */
static int tls_session(const char *ca_file, const char *host,
                       const char *api_key)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Auth a = TIDE__V1__AUTH__INIT;
    char why[512];
    int fd = tls_connect(srv.port, ca_file, host, why, sizeof(why));

    cr_assert_geq(fd, 0, "TLS connection: %s", why);
    wire_hello(fd);
    a.credential_case = TIDE__V1__AUTH__CREDENTIAL_API_KEY;
    a.api_key = (char *)api_key;
    e.body_case = TIDE__V1__ENVELOPE__BODY_AUTH;
    e.auth = &a;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_AUTH_OK,
              "auth over TLS: %s", wire_why(r));
    tide_frame_free(r, NULL);
    return fd;
}

/* The value of stat `name` in a ServerStatusOk, or -1. */
static double server_stat(int fd, const char *name)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__ServerStatus ss = TIDE__V1__SERVER_STATUS__INIT;
    double v = -1;

    e.body_case = TIDE__V1__ENVELOPE__BODY_SERVER_STATUS;
    e.server_status = &ss;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_SERVER_STATUS_OK,
              "ServerStatus: %s", wire_why(r));
    for (size_t i = 0; i < r->server_status_ok->n_stats; i++)
        if (!strcmp(r->server_status_ok->stats[i]->name, name))
            v = r->server_status_ok->stats[i]->value;
    tide_frame_free(r, NULL);
    return v;
}

/* A full session over TLS, on the name and on the IP the certificate
 * names; a plaintext client gets no answer; the TLS counters count. */
Test(tls, a_session_over_tls_and_plaintext_refused)
{
    int fd = tls_session(ca, "localhost", srv.admin_key), plain;
    int fd2 = tls_session(ca, "127.0.0.1", srv.admin_key);
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Ping p = TIDE__V1__PING__INIT;

    p.nonce = 42;
    e.body_case = TIDE__V1__ENVELOPE__BODY_PING;
    e.ping = &p;
    r = wire_next(fd2, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_PONG &&
              r->pong->nonce == 42);
    tide_frame_free(r, NULL);
    cr_assert_eq(server_stat(fd, "tls_enabled"), 1);
    cr_assert_geq(server_stat(fd, "tls_handshakes"), 2);
    close(fd2);

    /* A plaintext Hello is not TLS: the handshake fails, the server
     * closes, nothing is answered. */
    plain = wire_connect(srv.port);
    cr_assert_geq(plain, 0);
    {
        Tide__V1__Hello h = TIDE__V1__HELLO__INIT;

        h.protocol_version = 1;
        e.body_case = TIDE__V1__ENVELOPE__BODY_HELLO;
        e.hello = &h;
        e.request_id = 1;
        wire_send(plain, &e);
    }
    cr_assert_null(wire_recv(plain));
    close(plain);
    cr_assert_geq(server_stat(fd, "tls_handshake_failures"), 1);
    close(fd);
}

/* The HTTP port speaks TLS with the same certificate. */
Test(tls, http_port_over_tls)
{
    char cmd[4096], out[4096];
    FILE *f;
    size_t n;

    snprintf(cmd, sizeof(cmd),
             "curl -sS --max-time 10 --cacert '%s' "
             "https://localhost:%d/health; echo; "
             "curl -sS --max-time 10 --cacert '%s' "
             "https://127.0.0.1:%d/metrics | grep '^tide_tls_handshakes_total'",
             ca, srv.http_port, ca, srv.http_port);
    f = popen(cmd, "r");
    cr_assert(f);
    n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = 0;
    cr_assert_eq(pclose(f), 0, "curl: %s", out);
    cr_assert(strstr(out, "ok") && strstr(out, "tide_tls_handshakes_total"),
              "%s", out);
}

/* `openssl s_client` with one protocol version; its output. */
static char *s_client(const char *version, char *out, size_t cap)
{
    char cmd[4096];
    FILE *f;
    size_t n;

    snprintf(cmd, sizeof(cmd),
             "echo | timeout 10 openssl s_client -connect 127.0.0.1:%d %s "
             "-CAfile '%s' -verify_return_error 2>&1",
             srv.port, version, ca);
    f = popen(cmd, "r");
    cr_assert(f);
    n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    pclose(f);
    return out;
}

/* TLS 1.2 is the minimum: 1.1 and 1.0 are refused with a protocol
 * version alert; 1.2 and 1.3 are taken. */
Test(tls, tls_1_1_is_refused)
{
    char out[16384];

    cr_assert(
        strstr(s_client("-tls1_1", out, sizeof(out)), "alert protocol version"),
        "%s", out);
    cr_assert(
        strstr(s_client("-tls1", out, sizeof(out)), "alert protocol version"),
        "%s", out);
    cr_assert(
        strstr(s_client("-tls1_2", out, sizeof(out)), "Protocol  : TLSv1.2"),
        "%s", out);
    cr_assert(strstr(s_client("-tls1_3", out, sizeof(out)), "New, TLSv1.3"),
              "%s", out);
}

/* A client that opens TCP and stalls in the handshake (nothing, or half
 * a ClientHello) is cut off within read_timeout_ms (500 ms here), not
 * after the 300 s idle timeout. */
Test(tls, a_stalled_handshake_is_cut_within_read_timeout)
{
    static const unsigned char half_hello[] = {0x16, 0x03, 0x01, 0x02, 0x00,
                                               0x01, 0x00, 0x01, 0xfc};

    for (int partial = 0; partial < 2; partial++) {
        int fd = wire_connect(srv.port);
        double start = proc_now_ms(), took;

        cr_assert_geq(fd, 0);
        if (partial)
            wire_send_raw(fd, half_hello, sizeof(half_hello));
        cr_assert(wire_closed(fd), "the server did not close");
        took = proc_now_ms() - start;
        close(fd);
        cr_assert(took >= 400 && took < 3000,
                  "closed after %.0f ms (read_timeout_ms=500)", took);
    }
}

/* A client verifying against another CA, or for a name the certificate
 * does not carry, refuses the server. */
Test(tls, a_wrong_ca_or_name_fails_verification)
{
    char other[1100], other_ca[1200], why[512];
    SSL *ssl;

    snprintf(other, sizeof(other), "%s", tls_dev_certs(NULL));
    snprintf(other_ca, sizeof(other_ca), "%s/ca.pem", other);
    ssl = tls_dial(srv.port, other_ca, "localhost", NULL, NULL, NULL, why,
                   sizeof(why));
    cr_assert_null(ssl);
    cr_assert(strstr(why, "certificate verify failed"), "%s", why);
    ssl = tls_dial(srv.port, ca, "tide.example.com", NULL, NULL, NULL, why,
                   sizeof(why));
    cr_assert_null(ssl);
    cr_assert(strstr(why, "certificate verify failed"), "%s", why);
}

/* A second connection resumes the first's session (a TLS 1.3 ticket). */
Test(tls, sessions_resume)
{
    char why[512], buf[8];
    SSL *a = tls_dial(srv.port, ca, "localhost", NULL, NULL, NULL, why,
                      sizeof(why)),
        *b;
    SSL_SESSION *sess;

    cr_assert(a, "%s", why);
    /* TLS 1.3 tickets come after the handshake: read to take them. */
    SSL_set_mode(a, SSL_MODE_AUTO_RETRY);
    {
        int fd = SSL_get_fd(a);
        struct timeval tv = {0, 300000};

        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        SSL_read(a, buf, sizeof(buf));
    }
    sess = SSL_get1_session(a);
    cr_assert(sess && SSL_SESSION_is_resumable(sess), "no ticket");
    b = tls_dial(srv.port, ca, "localhost", NULL, NULL, sess, why, sizeof(why));
    cr_assert(b, "%s", why);
    cr_assert(SSL_session_reused(b), "the session was not resumed");
    SSL_SESSION_free(sess);
    tls_close(a);
    tls_close(b);
}

/* SIGHUP loads a new certificate: the open connection keeps working, new
 * ones get the new certificate (the old CA no longer verifies them). A
 * broken file keeps the current one, counted as a failed reload. */
Test(tls, sighup_reloads_the_certificate)
{
    char next[1100], cmd[8192], next_ca[1200], why[512];
    int fd = tls_session(ca, "localhost", srv.admin_key), fd2;
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Ping p = TIDE__V1__PING__INIT;
    FILE *f;

    snprintf(next, sizeof(next), "%s", tls_dev_certs(NULL));
    snprintf(next_ca, sizeof(next_ca), "%s/ca.pem", next);
    snprintf(cmd, sizeof(cmd),
             "cp '%s/server.pem' '%s' && cp '%s/server.key' '%s'", next, cert,
             next, cert_key);
    cr_assert_eq(system(cmd), 0);
    kill(srv.pid, SIGHUP);
    for (int i = 0; i < 100 && server_stat(fd, "tls_reloads") < 1; i++)
        usleep(20000);
    cr_assert_eq(server_stat(fd, "tls_reloads"), 1);
    p.nonce = 7;
    e.body_case = TIDE__V1__ENVELOPE__BODY_PING;
    e.ping = &p;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_PONG,
              "the open connection survives the reload");
    tide_frame_free(r, NULL);
    cr_assert_null(
        tls_dial(srv.port, ca, "localhost", NULL, NULL, NULL, why, sizeof(why)),
        "the old certificate is still served");
    fd2 = tls_session(next_ca, "localhost", srv.admin_key);
    close(fd2);

    /* A key that does not parse: the reload fails, the current stays. */
    f = fopen(cert_key, "w");
    cr_assert(f);
    fputs("not a key\n", f);
    fclose(f);
    kill(srv.pid, SIGHUP);
    for (int i = 0; i < 100 && server_stat(fd, "tls_reload_failures") < 1; i++)
        usleep(20000);
    cr_assert_eq(server_stat(fd, "tls_reload_failures"), 1);
    fd2 = tls_session(next_ca, "localhost", srv.admin_key);
    close(fd2);
    close(fd);
}

/* Plaintext on an address that is not loopback is refused at start,
 * naming the fix; nothing is bound. A missing key file is named too. */
Test(tls, plaintext_off_loopback_and_bad_files_refuse_to_start)
{
    struct tided_proc other;
    char dir2[1024], log[1100], buf[8192];
    static const char *const open_plain[] = {"http_listen=0.0.0.0:0", NULL};
    const char *no_key[] = {set_cert, "tls_key=/nonexistent/tide.key", NULL};
    FILE *f;
    size_t n;

    snprintf(dir2, sizeof(dir2), "%s", test_tmpdir());
    snprintf(log, sizeof(log), "%s/tided.log", dir2);
    cr_assert_neq(tided_start(&other, dir2, open_plain), 0);
    cr_assert_neq(tided_start(&other, dir2, no_key), 0);
    f = fopen(log, "r");
    cr_assert(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    fclose(f);
    cr_assert(strstr(buf, "refusing to serve plaintext on 0.0.0.0") &&
                  strstr(buf, "allow_plaintext=true"),
              "%s", buf);
    cr_assert(strstr(buf, "TLS: cannot load /nonexistent/tide.key"), "%s", buf);
    test_rmrf(dir2);
}

/* ---- libtide and the CLI over TLS (item 3) ----------------------------- */

/* libtide with TLS against `ca_file` (the fixture's CA when NULL). */
static int tls_open(const char *key, const char *ca_file, const char *name,
                    int insecure, char *why, size_t cap, tide_client **c)
{
    struct tide_client_options o;

    tide_client_options_init(&o);
    o.port = (uint16_t)srv.port;
    o.api_key = key;
    o.tls = 1;
    o.tls_ca_file = ca_file ? ca_file : ca;
    o.tls_server_name = name;
    o.tls_insecure_skip_verify = insecure;
    o.backoff_base_ms = 20;
    o.backoff_max_ms = 200;
    o.open_error = why;
    o.open_error_len = cap;
    return tide_client_open(&o, c);
}

/* As the operator over TLS: an account with device "dev1", its device key
 * and an analyst key. Returns the account id. */
static uint64_t tls_account(const char *email, char *dkey, char *akey)
{
    int fd = tls_session(ca, "localhost", srv.admin_key);
    uint64_t account = wire_make_account(fd, email);

    wire_device_register(fd, account, "dev1");
    wire_key_create(fd, account, "dk", TIDE__V1__ROLE__ROLE_DEVICE, "dev1",
                    dkey, 128);
    wire_key_create(fd, account, "ak", TIDE__V1__ROLE__ROLE_ANALYST, NULL, akey,
                    128);
    close(fd);
    return account;
}

/* Points of dev1/v in [T0, T0 + span) and their sum. */
static size_t tls_count(tide_client *c, int64_t span, double *sum)
{
    const char *fields[1] = {"v"};
    struct tide_query_params q = {
        .fields = fields, .n_fields = 1, .from_ns = T0, .to_ns = T0 + span};
    struct tide_series_block b;
    tide_query_iter *it;
    size_t n = 0;
    int rc;

    *sum = 0;
    cr_assert_eq(tide_query_open(c, &q, &it), 0);
    while ((rc = tide_query_next(it, &b)) == 0) {
        for (size_t i = 0; b.f64 && i < b.n; i++)
            *sum += b.f64[i];
        n += b.n;
    }
    cr_assert_eq(rc, TIDE_CLIENT_DONE, "query: %s", tide_strerror(rc));
    tide_query_close(it);
    return n;
}

/* The writer, a query and the CLI's export, all over TLS; a reconnect
 * resumes the session. */
Test(tls, libtide_writes_queries_and_exports_over_tls)
{
    char dkey[128], akey[128], why[512], args[1600], out[16384];
    uint64_t account = tls_account("tls@client.example", dkey, akey);
    tide_client *w, *r;
    double sum;

    cr_assert_eq(tls_open(dkey, NULL, NULL, 0, why, sizeof(why), &w), 0, "%s",
                 why);
    for (int i = 0; i < 300; i++)
        cr_assert_eq(tide_write_f64(w, "dev1", "v", T0 + i * 1000, 2.0), 0);
    cr_assert_eq(tide_flush(w), 0);
    cr_assert_eq(tide_client_reconnect(w), 0);
    cr_assert(tide_client_tls_resumed(w), "the reconnect did not resume");
    cr_assert_eq(tide_write_f64(w, "dev1", "v", T0 + 300 * 1000, 2.0), 0);
    cr_assert_eq(tide_flush(w), 0);
    tide_client_close(w);
    cr_assert_eq(tls_open(akey, NULL, "localhost", 0, why, sizeof(why), &r), 0,
                 "%s", why);
    cr_assert_eq(tls_count(r, 3600000000000ll, &sum), 301);
    cr_assert_eq(sum, 602.0);
    tide_client_close(r);
    snprintf(args, sizeof(args),
             "--tls --ca %s export --telemetry --csv --account %llu", ca,
             (unsigned long long)account);
    cr_assert_eq(fixture_cli(srv.admin_key, args, NULL, out, sizeof(out)), 0,
                 "export: %s", out);
    cr_assert(strstr(out, "tls@client.example") && strstr(out, "dev1,v,"), "%s",
              out);
}

/* libtide refuses a server its CA did not sign or whose certificate is
 * for another name, and says which; a plaintext client is told to use
 * TLS; skipping verification (loudly named) connects. */
Test(tls, libtide_names_a_wrong_ca_a_wrong_host_and_plaintext)
{
    char other[1100], other_ca[1200], why[512], out[4096];
    tide_client *c = NULL;
    struct tide_client_options o;

    snprintf(other, sizeof(other), "%s", tls_dev_certs(NULL));
    snprintf(other_ca, sizeof(other_ca), "%s/ca.pem", other);
    cr_assert_eq(
        tls_open(srv.admin_key, other_ca, NULL, 0, why, sizeof(why), &c),
        TIDE_ETLS);
    cr_assert(strstr(why, "unable to get local issuer certificate"), "%s", why);
    cr_assert_eq(tls_open(srv.admin_key, NULL, "tide.example.com", 0, why,
                          sizeof(why), &c),
                 TIDE_ETLS);
    cr_assert(strstr(why, "hostname mismatch"), "%s", why);
    cr_assert_eq(tls_open(srv.admin_key, other_ca, "tide.example.com", 1, why,
                          sizeof(why), &c),
                 0, "%s", why);
    tide_client_close(c);

    tide_client_options_init(&o);
    o.port = (uint16_t)srv.port;
    o.open_error = why;
    o.open_error_len = sizeof(why);
    cr_assert_neq(tide_client_open(&o, &c), 0);
    cr_assert(strstr(why, "connect with TLS"), "%s", why);
    /* The CLI says the same (on stderr). */
    cr_assert_eq(
        fixture_cli(srv.admin_key, "status 2>&1", NULL, out, sizeof(out)), 1);
    cr_assert(strstr(out, "connect with TLS"), "%s", out);
}

/* The writer over TLS while tided is killed (-9) and restarted on the
 * same port: every acknowledged point is there exactly once. */
Test(tls, the_writer_over_tls_survives_kill_9)
{
    char dkey[128], akey[128], why[512], listen[64];
    const char *settings[] = {listen, set_cert, set_key, NULL};
    tide_client *w, *r;
    struct tide_client_stats st;
    double sum;
    enum { POINTS = 60000 };

    tls_account("kill@client.example", dkey, akey);
    snprintf(listen, sizeof(listen), "listen=127.0.0.1:%d", srv.port);
    cr_assert_eq(tls_open(dkey, NULL, NULL, 0, why, sizeof(why), &w), 0, "%s",
                 why);
    for (int i = 0; i < POINTS; i++) {
        if (i == POINTS / 3)
            tided_kill(&srv);
        if (i == POINTS / 2)
            cr_assert_eq(tided_start(&srv, dir, settings), 0);
        cr_assert_eq(tide_write_f64(w, "dev1", "v", T0 + i, 1.0), 0);
    }
    cr_assert_eq(tide_flush(w), 0);
    tide_client_stats_get(w, &st);
    cr_assert_eq(st.points_acked, POINTS);
    cr_assert_geq(st.reconnects, 1);
    tide_client_close(w);
    cr_assert_eq(tls_open(akey, NULL, NULL, 0, why, sizeof(why), &r), 0, "%s",
                 why);
    cr_assert_eq(tls_count(r, POINTS, &sum), POINTS);
    cr_assert_eq(sum, POINTS);
    tide_client_close(r);
}

struct reloader {
    pid_t pid;
    char certs[1100];
    atomic_int stop;
    atomic_int reloads;
};

/* New server certificates from the same CA, put in place, then SIGHUP,
 * until told to stop. */
static void *reload_loop(void *arg)
{
    struct reloader *rl = arg;
    char cmd[4096];

    while (!atomic_load(&rl->stop)) {
        snprintf(cmd, sizeof(cmd),
                 "cd '%s' && rm -f server.pem server.key && "
                 "cd - >/dev/null && scripts/dev-certs.sh '%s' >/dev/null",
                 rl->certs, rl->certs);
        if (system(cmd) != 0)
            break;
        kill(rl->pid, SIGHUP);
        atomic_fetch_add(&rl->reloads, 1);
        usleep(50000);
    }
    return NULL;
}

/* Certificates reloaded again and again while a writer streams over TLS
 * and reconnects now and then (so that new connections meet new
 * certificates): no acknowledged point is lost or doubled. */
Test(tls, a_certificate_reload_under_load_loses_nothing)
{
    char dkey[128], akey[128], why[512];
    struct reloader rl = {.pid = srv.pid};
    tide_client *w, *r;
    struct tide_client_stats st;
    pthread_t t;
    double sum;
    int points = 0;

    tls_account("reload@client.example", dkey, akey);
    snprintf(rl.certs, sizeof(rl.certs), "%s", certs);
    cr_assert_eq(tls_open(dkey, NULL, NULL, 0, why, sizeof(why), &w), 0, "%s",
                 why);
    cr_assert_eq(pthread_create(&t, NULL, reload_loop, &rl), 0);
    /* Until five reloads happened under the stream (each takes a new
     * certificate from openssl, tens of milliseconds). */
    while (points < 200000 || atomic_load(&rl.reloads) < 5) {
        cr_assert_eq(tide_write_f64(w, "dev1", "v", T0 + points, 1.0), 0);
        if (++points % 20000 == 0) {
            int rc = tide_client_reconnect(w);

            cr_assert_eq(rc, 0, "reconnect: %s", tide_strerror(rc));
        }
        cr_assert_lt(points, 50000000, "the reloads did not happen");
    }
    cr_assert_eq(tide_flush(w), 0);
    atomic_store(&rl.stop, 1);
    pthread_join(t, NULL);
    {
        int fd = tls_session(ca, "localhost", srv.admin_key);

        /* A reload may meet a half-copied pair and be refused; most
         * take. */
        cr_assert_geq(server_stat(fd, "tls_reloads"), 3);
        close(fd);
    }
    tide_client_stats_get(w, &st);
    cr_assert_eq(st.points_acked, (uint64_t)points);
    tide_client_close(w);
    cr_assert_eq(tls_open(akey, NULL, NULL, 0, why, sizeof(why), &r), 0, "%s",
                 why);
    cr_assert_eq(tls_count(r, points, &sum), (size_t)points);
    cr_assert_eq(sum, points);
    tide_client_close(r);
}

/* ---- Mutual TLS (item 2) ------------------------------------------------ */

static void mtls_init(void)
{
    tls_start("tls_client_ca=%s/ca.pem", "truck-7");
}

/* The SHA-256 of the DER of the certificate in `pem`, as hex. */
static void cert_sha256_hex(const char *pem, char *hex)
{
    FILE *f = fopen(pem, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    unsigned char md[32];
    unsigned len = 0;

    cr_assert(x, "cannot read %s", pem);
    fclose(f);
    cr_assert_eq(X509_digest(x, EVP_sha256(), md, &len), 1);
    X509_free(x);
    for (unsigned i = 0; i < len; i++)
        sprintf(hex + 2 * i, "%02x", md[i]);
}

/* libtide with the fixture's client certificate, authenticating by it
 * (`by_cert`) or by `key`. */
static int mtls_open(const char *key, int by_cert, const char *client_pem,
                     const char *client_key, char *why, size_t cap,
                     tide_client **c)
{
    struct tide_client_options o;

    tide_client_options_init(&o);
    o.port = (uint16_t)srv.port;
    o.tls = 1;
    o.tls_ca_file = ca;
    o.tls_cert_file = client_pem;
    o.tls_key_file = client_key;
    o.api_key = key;
    o.auth_client_certificate = by_cert;
    o.open_error = why;
    o.open_error_len = cap;
    return tide_client_open(&o, c);
}

/* A device whose certificate is registered to its key authenticates by
 * the certificate alone and writes; a connection without one, or with an
 * unregistered one, is refused AUTH_FAILED; a certificate of another CA
 * fails the handshake; API keys still work where client certificates are
 * asked for. */
Test(tls, a_registered_client_certificate_authenticates_a_device,
     .init = mtls_init)
{
    char pem[1300], pkey[1300], fp[80], args[1600], out[4096], why[512];
    char dkey[128], other[1100], opem[1300], okey[1300];
    uint64_t account;
    tide_client *c = NULL;
    int fd = tls_session(ca, "localhost", srv.admin_key), code;
    const char *msg;

    snprintf(pem, sizeof(pem), "%s/client.pem", certs);
    snprintf(pkey, sizeof(pkey), "%s/client.key", certs);
    cert_sha256_hex(pem, fp);
    account = wire_make_account(fd, "mtls@client.example");
    wire_device_register(fd, account, "truck-7");
    close(fd);
    /* Registered through the CLI: the fingerprint as hex. */
    snprintf(args, sizeof(args),
             "--ca %s key create dk device truck-7 account_id=%llu "
             "client_cert_sha256=%s",
             ca, (unsigned long long)account, fp);
    cr_assert_eq(fixture_cli(srv.admin_key, args, NULL, out, sizeof(out)), 0,
                 "key create: %s", out);
    cr_assert(strstr(out, "client_cert") && strstr(out, "true"), "%s", out);
    snprintf(dkey, sizeof(dkey), "%s", strstr(out, "tide_live_"));
    dkey[strcspn(dkey, " \r\n")] = 0;

    {
        int rc = mtls_open(NULL, 1, pem, pkey, why, sizeof(why), &c);

        cr_assert_eq(rc, 0, "%s: %s", tide_strerror(rc), why);
    }
    {
        const char *dev;

        tide_client_identity(c, NULL, NULL, &dev);
        cr_assert_str_eq(dev, "truck-7");
    }
    cr_assert_eq(tide_write_f64(c, "truck-7", "speed", T0, 42.5), 0);
    cr_assert_eq(tide_flush(c), 0);
    tide_client_close(c);

    /* No certificate: Auth by certificate fails, by key works. */
    cr_assert_eq(mtls_open(NULL, 1, NULL, NULL, why, sizeof(why), &c),
                 TIDE_EAUTH);
    cr_assert_eq(mtls_open(dkey, 0, NULL, NULL, why, sizeof(why), &c), 0, "%s",
                 why);
    cr_assert_eq(tide_client_call(c, "key_list", NULL, 0, NULL), TIDE_ESERVER);
    cr_assert_eq(tide_client_last_error(c, &code, &msg), 0);
    tide_client_close(c);

    /* A certificate signed by another CA: the handshake fails. */
    snprintf(other, sizeof(other), "%s", tls_dev_certs("truck-7"));
    snprintf(opem, sizeof(opem), "%s/client.pem", other);
    snprintf(okey, sizeof(okey), "%s/client.key", other);
    cr_assert_neq(mtls_open(NULL, 1, opem, okey, why, sizeof(why), &c), 0);
}
