/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The operators' HTTP port (libevent evhttp): GET /health answers "ok" while
 * the server accepts work, and GET /metrics gives the counters in the
 * Prometheus text format (docs/operations.md lists every metric).
 */
#include <errno.h>
#include <arpa/inet.h>
#include <event2/bufferevent_ssl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "server.h"

void tided_metrics_query_latency(struct server *s, uint64_t us)
{
    unsigned i = 0;

    while (i < TIDED_LAT_BUCKETS && us > (100ull << i))
        i++;
    atomic_fetch_add(&s->metrics.query_lat[i], 1);
    atomic_fetch_add(&s->metrics.query_lat_sum_us, us);
}

static void counter(struct evbuffer *b, const char *name, const char *help,
                    const char *type, uint64_t v)
{
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help,
                        name, type, name, (unsigned long long)v);
}

/* Compaction and erasure (docs/operations.md, "Compaction"). */
static void compaction_metrics(struct evbuffer *b,
                               const struct tide_db_stats *st)
{
    int64_t now = tided_now_ns(), oldest = 0;

    counter(b, "tide_compaction_runs_total",
            "Compaction jobs done (window rewrites).", "counter",
            st->compactions);
    counter(b, "tide_compaction_bytes_read_total",
            "Segment bytes compaction read.", "counter",
            st->compact_bytes_read);
    counter(b, "tide_compaction_bytes_written_total",
            "Segment bytes compaction wrote.", "counter",
            st->compact_bytes_written);
    counter(b, "tide_compaction_points_expired_total",
            "Points dropped behind their account's retention horizon.",
            "counter", st->points_expired);
    counter(b, "tide_compaction_points_erased_total",
            "Points dropped as erased (purged account, deleted device).",
            "counter", st->points_erased);
    counter(b, "tide_compaction_files_deleted_total",
            "Segment files compaction deleted.", "counter",
            st->segment_files_deleted);
    counter(b, "tide_compaction_errors_total", "Compaction jobs that failed.",
            "counter", st->compaction_errors);
    counter(b, "tide_compaction_running", "1 while a compaction job runs.",
            "gauge", st->compaction_running ? 1 : 0);
    /* 0 when every window is compacted. */
    if (st->oldest_uncompacted_ns != INT64_MAX &&
        st->oldest_uncompacted_ns < now)
        oldest = (now - st->oldest_uncompacted_ns) / 1000000000;
    counter(b, "tide_compaction_oldest_uncompacted_window_seconds",
            "Age of the start of the oldest window that needs compaction; "
            "0 when none does.",
            "gauge", (uint64_t)oldest);
}

/* TLS (docs/operations.md, "TLS"). */
static void tls_metrics(struct evbuffer *b, const struct server *s)
{
    const struct tided_metrics *m = &s->metrics;

    counter(b, "tide_tls_enabled", "1 when both ports speak TLS.", "gauge",
            s->tls ? 1 : 0);
    counter(b, "tide_tls_handshakes_total",
            "TLS handshakes completed on the protocol port.", "counter",
            atomic_load(&m->tls_handshakes));
    counter(b, "tide_tls_resumed_total",
            "Of them, sessions resumed (ticket or cache).", "counter",
            atomic_load(&m->tls_resumed));
    counter(b, "tide_tls_handshake_failures_total",
            "TLS handshakes on the protocol port that failed or did not "
            "complete within read_timeout_ms.",
            "counter", atomic_load(&m->tls_handshake_failures));
    counter(b, "tide_tls_reloads_total",
            "Certificate reloads (SIGHUP) that took effect.", "counter",
            atomic_load(&m->tls_reloads));
    counter(b, "tide_tls_reload_failures_total",
            "Certificate reloads refused; the previous one is served.",
            "counter", atomic_load(&m->tls_reload_failures));
    counter(b, "tide_tls_certificate_not_after_seconds",
            "Expiry of the served certificate, Unix time; 0 without TLS.",
            "gauge", (uint64_t)s->tls_not_after);
}

/* Encryption at rest (docs/operations.md, "Encryption at rest"). */
static void crypt_metrics(struct evbuffer *b, struct server *s,
                          const struct tide_db_stats *st)
{
    struct tided_crypt_status cs;

    tided_crypt_status(s, st, &cs);
    counter(b, "tide_encryption_enabled",
            "1 when data is encrypted at rest (master_key_file).", "gauge",
            (uint64_t)cs.enabled);
    counter(b, "tide_encryption_data_keys",
            "Wrapped data keys in the sidecar (accounts and the system key).",
            "gauge", cs.data_keys);
    counter(b, "tide_encryption_segments_encrypted",
            "Segment files written encrypted.", "gauge", cs.segments_encrypted);
    counter(b, "tide_encryption_segments_plaintext",
            "Segment files still in plaintext; compaction rewrites them "
            "encrypted.",
            "gauge", cs.segments_plaintext);
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
    struct server *s = arg;
    struct tided_metrics *m = &s->metrics;
    struct evbuffer *b = evbuffer_new();
    struct tide_db_stats st;
    uint64_t cum = 0, count = 0;

    if (!b) {
        evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
        return;
    }
    tide_db_stats(s->db, &st);
    counter(b, "tide_connections_total", "Connections accepted.", "counter",
            atomic_load(&m->connections_total));
    counter(b, "tide_connections_open", "Connections open now.", "gauge",
            (uint64_t)atomic_load(&m->connections_open));
    counter(b, "tide_connections_read_paused",
            "Connections not read: their unread answers are above "
            "out_high_bytes.",
            "gauge", (uint64_t)atomic_load(&m->connections_read_paused));
    counter(b, "tide_frames_in_total", "Frames received.", "counter",
            atomic_load(&m->frames_in));
    counter(b, "tide_frames_out_total", "Frames sent.", "counter",
            atomic_load(&m->frames_out));
    counter(b, "tide_bytes_in_total", "Protocol bytes received.", "counter",
            atomic_load(&m->bytes_in));
    counter(b, "tide_bytes_out_total", "Protocol bytes sent.", "counter",
            atomic_load(&m->bytes_out));
    counter(b, "tide_points_accepted_total", "Points acknowledged durable.",
            "counter", atomic_load(&m->points_accepted));
    counter(b, "tide_points_rejected_total", "Points rejected.", "counter",
            atomic_load(&m->points_rejected));
    counter(b, "tide_write_acks_total", "WriteAck frames sent.", "counter",
            atomic_load(&m->write_acks));
    counter(b, "tide_write_duplicates_total",
            "Batches recognised as already applied.", "counter",
            atomic_load(&m->write_duplicates));
    counter(b, "tide_protocol_errors_total", "Malformed or oversized frames.",
            "counter", atomic_load(&m->protocol_errors));
    counter(b, "tide_auth_failures_total", "Failed authentications.", "counter",
            atomic_load(&m->auth_failures));
    counter(b, "tide_queries_total", "Queries started.", "counter",
            atomic_load(&m->queries));
    evbuffer_add_printf(b, "# HELP tide_query_duration_seconds Query "
                           "latency.\n# TYPE tide_query_duration_seconds "
                           "histogram\n");
    for (unsigned i = 0; i <= TIDED_LAT_BUCKETS; i++) {
        cum += atomic_load(&m->query_lat[i]);
        if (i < TIDED_LAT_BUCKETS)
            evbuffer_add_printf(
                b, "tide_query_duration_seconds_bucket{le=\"%g\"} %llu\n",
                (double)(100ull << i) / 1e6, (unsigned long long)cum);
    }
    count = cum;
    evbuffer_add_printf(b,
                        "tide_query_duration_seconds_bucket{le=\"+Inf\"} "
                        "%llu\ntide_query_duration_seconds_sum %g\n"
                        "tide_query_duration_seconds_count %llu\n",
                        (unsigned long long)count,
                        (double)atomic_load(&m->query_lat_sum_us) / 1e6,
                        (unsigned long long)count);
    counter(b, "tide_engine_points_appended_total",
            "Points appended to the engine since start.", "counter",
            st.points_appended);
    counter(b, "tide_engine_head_points", "Points in memory, not yet flushed.",
            "gauge", st.head_points);
    counter(b, "tide_engine_segments", "Segment files.", "gauge", st.segments);
    counter(b, "tide_engine_segment_bytes", "Bytes in segment files.", "gauge",
            st.segment_bytes);
    counter(b, "tide_engine_wal_bytes", "Live WAL bytes.", "gauge",
            st.wal_bytes);
    counter(b, "tide_engine_wal_syncs_total",
            "WAL fdatasync calls (group commits).", "counter", st.wal_syncs);
    evbuffer_add_printf(b, "# HELP tide_engine_wal_sync_seconds WAL group "
                           "commit (write + fdatasync) duration.\n# TYPE "
                           "tide_engine_wal_sync_seconds histogram\n");
    cum = 0;
    for (unsigned i = 0; i < TIDE_SYNC_LAT_BUCKETS; i++) {
        cum += st.wal_sync_lat[i];
        if (i + 1 < TIDE_SYNC_LAT_BUCKETS)
            evbuffer_add_printf(
                b, "tide_engine_wal_sync_seconds_bucket{le=\"%g\"} %llu\n",
                (double)(50ull << i) / 1e6, (unsigned long long)cum);
    }
    evbuffer_add_printf(b,
                        "tide_engine_wal_sync_seconds_bucket{le=\"+Inf\"} "
                        "%llu\ntide_engine_wal_sync_seconds_sum %g\n"
                        "tide_engine_wal_sync_seconds_count %llu\n",
                        (unsigned long long)cum,
                        (double)st.wal_sync_ns_total / 1e9,
                        (unsigned long long)cum);
    counter(b, "tide_engine_flushes_total", "Head flushes into segments.",
            "counter", st.flushes);
    counter(b, "tide_engine_storage_state",
            "0 ok; 1 out of space: writes refused, they resume on their own "
            "once space returns; 2 failed: writes refused until restart.",
            "gauge",
            st.storage_error == 0         ? 0
            : st.storage_error == -ENOSPC ? 1
                                          : 2);
    counter(b, "tide_engine_nospace_total",
            "Times writes stopped because the disk was full.", "counter",
            st.nospace_events);
    counter(b, "tide_engine_disk_free_bytes",
            "Free bytes on the data directory's file system.", "gauge",
            st.disk_free_bytes);
    compaction_metrics(b, &st);
    tls_metrics(b, s);
    crypt_metrics(b, s, &st);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4");
    evhttp_send_reply(req, HTTP_OK, "OK", b);
    evbuffer_free(b);
}

static void on_health(struct evhttp_request *req, void *arg)
{
    struct server *s = arg;
    struct evbuffer *b = evbuffer_new();

    if (!b) {
        evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
        return;
    }
    evbuffer_add_printf(b, "%s\n", s->stopping ? "stopping" : "ok");
    evhttp_send_reply(req, s->stopping ? 503 : HTTP_OK,
                      s->stopping ? "Service Unavailable" : "OK", b);
    evbuffer_free(b);
}

static void on_other(struct evhttp_request *req, void *arg)
{
    (void)arg;
    evhttp_send_error(req, HTTP_NOTFOUND, "try /health or /metrics");
}

/* evhttp's connections over TLS: each gets the context of its time, so
 * that a reload reaches the HTTP port too. */
static struct bufferevent *http_tls_bev(struct event_base *base, void *arg)
{
    (void)base;
    return tided_tls_bev(arg, -1);
}

int tided_http_start(struct server *s)
{
    struct evhttp_bound_socket *sock;

    s->http = evhttp_new(s->base);
    if (!s->http)
        return -ENOMEM;
    if (s->tls)
        evhttp_set_bevcb(s->http, http_tls_bev, s);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_cb(s->http, "/metrics", on_metrics, s);
    evhttp_set_cb(s->http, "/health", on_health, s);
    evhttp_set_gencb(s->http, on_other, s);
    evhttp_set_timeout(s->http, 30);
    sock = evhttp_bind_socket_with_handle(s->http, s->cfg.http_host,
                                          (ev_uint16_t)s->cfg.http_port);
    if (!sock) {
        int rc = errno ? -errno : -EADDRNOTAVAIL;

        tide_log(LOG_ERROR, "cannot listen for HTTP on %s:%d: %s",
                 s->cfg.http_host, s->cfg.http_port, strerror(-rc));
        return rc;
    }
    {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int port = s->cfg.http_port;

        if (getsockname(evhttp_bound_socket_get_fd(sock),
                        (struct sockaddr *)&ss, &len) == 0 &&
            ss.ss_family == AF_INET)
            port = ntohs(((struct sockaddr_in *)(void *)&ss)->sin_port);
        s->cfg.http_port = port;
    }
    return 0;
}
