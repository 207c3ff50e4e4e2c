/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the files of tided share: the server, its connections, the logging
 * macro and the metrics counters. One libevent loop thread owns every
 * connection; engine writer threads, login threads and query threads hand
 * their results back through queues that wake the loop (main.c, on_wake).
 * docs/architecture.md, "Server", has the picture.
 */
#ifndef TIDE_SERVER_SERVER_H
#define TIDE_SERVER_SERVER_H

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <openssl/types.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "frame.h"
#include "tide/common.h"
#include "wire_error.h"
#include "tide/meta.h"
#include "tide.pb-c.h"
#include "tide/engine.h"

#define TIDED_VERSION "0.1.0"
#define TIDED_QUERY_THREADS_MAX 16

/* ---- Logging (log.c) ---------------------------------------------------- */

enum tided_log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

extern int tided_log_level;

/* The level is tested before the arguments are evaluated. */
#define tide_log(level, ...)                                                   \
    do {                                                                       \
        if ((level) >= tided_log_level)                                        \
            tided_log_raw((level), __VA_ARGS__);                               \
    } while (0)

void tided_log_raw(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Engine log callback: forwards to tide_log. */
void tided_engine_log(void *ctx, enum tide_log_level level, const char *msg);

/* ---- Configuration (config.c) ------------------------------------------- */

struct tided_config {
    char data_dir[1024];
    char listen_host[256];
    int listen_port;
    char http_host[256];
    int http_port;
    unsigned shards;            /* 0 = one per core */
    int sync_none;              /* sync=none: benchmarks only */
    uint32_t max_frame_bytes;   /* default 16 MiB */
    uint32_t max_batch_points;  /* default 1 M */
    uint32_t max_batch_groups;  /* default 100 k */
    uint64_t max_query_points;  /* default 50 M */
    uint32_t query_timeout_ms;  /* default 30 s */
    uint32_t max_inflight;      /* requests per connection; default 1024 */
    uint32_t max_chunk_bytes;   /* QueryChunk target; default 256 KiB */
    uint32_t idle_timeout_ms;   /* default 300 s */
    uint32_t read_timeout_ms;   /* a started frame must finish; 30 s */
    uint32_t max_connections;   /* default 16384 */
    uint32_t query_threads;     /* threads running queries; default 2 */
    uint32_t flush_interval_ms; /* head to segments at least this often;
                                   default 60 s, 0 = by memory only */
    uint32_t prune_interval_s;  /* log retention and purges; default 3600,
                                   0 = never (run it yourself) */
    uint32_t delete_grace_s;    /* a deleted account is kept this long,
                                   restorable; default 30 days, 0 = until
                                   the next prune */
    uint32_t out_high_bytes;    /* output high watermark; default 4 MiB */
    /* Compaction (retention.c, docs/operations.md "Compaction"): its I/O
     * budget in MiB/s (0 = unthrottled), how often a routine pass runs
     * (0 = only erasures and asked-for passes), and the WAL file size. */
    uint32_t compaction_mb_s;       /* default 64 */
    uint32_t compaction_interval_s; /* default 600 */
    uint32_t wal_file_mb;           /* default 16 */
    uint32_t head_mb;               /* in-memory head budget; default 256 */
    unsigned bcrypt_cost;           /* default 12 */
    int allow_signup;               /* anonymous AccountCreate; default 1 */
    int log_level;
    /* Memory a client can make the server hold (docs/operations.md,
     * "Limits"): the frame limit before Auth (default 8 KiB), a decode's
     * memory relative to its payload (default 16x), and the bytes of
     * partial frames of all connections (default 256 MiB). */
    uint32_t max_unauth_frame_bytes;
    uint32_t max_decode_ratio;
    uint64_t partial_frame_budget_bytes;
    /* TLS on both ports (tls.c, docs/operations.md "TLS"): PEM files; an
     * empty tls_cert and tls_key mean plaintext, which a listener on a
     * non-loopback address refuses unless allow_plaintext is set. */
    char tls_cert[1024];
    char tls_key[1024];
    char tls_client_ca[1024]; /* mutual TLS: CAs of device certificates */
    int allow_plaintext;
    /* Encryption at rest: the operator's master key file (0600, made by
     * `tide admin keygen`); empty = files are written in plaintext. */
    char master_key_file[1024];
};

void tided_config_defaults(struct tided_config *c);

/* Parse an INI-style file ("key = value", '#' comments, no sections).
 * Returns 0, -errno when the file cannot be opened, or TIDE_EINVAL for a
 * line that is not "key = value" or fails tided_config_set; a message on
 * stderr names file and line. Keys before the bad line are set. */
int tided_config_load(struct tided_config *c, const char *path);

/* Set one documented key. Returns 0, or TIDE_EINVAL for an unknown key
 * or bad value (message on stderr; `c` is unchanged then). */
int tided_config_set(struct tided_config *c, const char *key,
                     const char *value);

/* ---- Metrics (metrics.c) ------------------------------------------------ */

#define TIDED_LAT_BUCKETS 16

struct tided_metrics {
    atomic_uint_fast64_t connections_total;
    atomic_int_fast64_t connections_open;
    atomic_int_fast64_t connections_read_paused; /* output above the mark */
    atomic_uint_fast64_t frames_in;
    atomic_uint_fast64_t frames_out;
    atomic_uint_fast64_t bytes_in;
    atomic_uint_fast64_t bytes_out;
    atomic_uint_fast64_t points_accepted;
    atomic_uint_fast64_t points_rejected;
    atomic_uint_fast64_t write_acks;
    atomic_uint_fast64_t write_duplicates;
    atomic_uint_fast64_t protocol_errors;
    atomic_uint_fast64_t auth_failures;
    atomic_uint_fast64_t queries;
    /* Query latency histogram: bucket i counts queries <= 2^i * 100 us. */
    atomic_uint_fast64_t query_lat[TIDED_LAT_BUCKETS + 1];
    atomic_uint_fast64_t query_lat_sum_us;
    /* TLS (tls.c): handshakes completed (and of them resumed), failed,
     * and certificate reloads. */
    atomic_uint_fast64_t tls_handshakes;
    atomic_uint_fast64_t tls_resumed;
    atomic_uint_fast64_t tls_handshake_failures;
    atomic_uint_fast64_t tls_reloads;
    atomic_uint_fast64_t tls_reload_failures;
};

/* ---- Server and connections --------------------------------------------- */

struct conn;

struct server {
    struct tided_config cfg;
    struct event_base *base;
    struct evconnlistener *listener;
    struct evhttp *http;
    struct event *sig_term;
    struct event *sig_int;
    struct event *sig_hup; /* reload the TLS certificate */
    struct event *wake;    /* writes, logins or query frames are ready */
    struct event *drain;   /* shutdown: waits for in-flight writes */
    /* The maintenance thread: periodic flush and prune (main.c). */
    pthread_t flusher;
    int flusher_running;
    pthread_mutex_t flush_lock;
    pthread_cond_t flush_cv;
    int flush_stop;
    tide_db *db;
    tide_meta *meta;
    struct tided_metrics metrics;
    int64_t started_ns;
    int stopping; /* no new connections or requests */
    uint64_t next_conn_id;
    struct conn *conns; /* doubly linked, all open connections */
    /* Work finished on other threads (engine writers, login and query
     * threads), pushed under done_lock and drained by the loop. */
    pthread_mutex_t done_lock;
    struct pending_write *done_head;
    struct pending_write *done_tail;
    uint64_t inflight_writes;          /* appends queued to the engine */
    struct login_job *logins_done;     /* finished logins */
    struct query_state *queries_ready; /* queries with frames to deliver */
    unsigned logins_running;           /* login threads not yet answered */
    /* Query threads and their job queue (query.c). */
    pthread_t qthreads[TIDED_QUERY_THREADS_MAX];
    unsigned n_qthreads;
    pthread_mutex_t qjob_lock;
    pthread_cond_t qjob_cv;
    struct query_state *qjob_head, *qjob_tail;
    int qjob_stop;
    /* Throttling of failed authentications per IP (auth.c). */
    struct auth_throttle *throttle;
    /* Device name -> id cache and per-account state (devices.c). */
    struct devices *devices;
    /* The registration worker of batches naming new devices or series,
     * and how many batches are parked for it (write.c). */
    struct write_worker *write_worker;
    unsigned writes_parked;
    /* Bytes in the decoders of all connections beyond the first
     * max_unauth_frame_bytes of each, loop thread only: within
     * cfg.partial_frame_budget_bytes (conn.c, invariant 5). */
    uint64_t partial_bytes;
    /* The compaction policy and the erasures it schedules (retention.c);
     * maint_poke (under flush_lock) wakes the maintenance thread for
     * them. */
    struct tided_retention *retention;
    int maint_poke;
    /* The TLS context new connections get (tls.c), NULL in plaintext;
     * loop thread only. Its certificate's notAfter, Unix seconds. */
    SSL_CTX *tls;
    int64_t tls_not_after;
    /* The master key from cfg.master_key_file (has_master_key), wiped at
     * exit; it never leaves this process. */
    uint8_t master_key[32];
    int has_master_key;
};

enum conn_state { CONN_NEW, CONN_HELLO, CONN_AUTHED };

/* A WriteBatch in flight: answered in arrival order per connection. */
struct pending_write {
    struct pending_write *next;      /* in the connection's FIFO */
    struct pending_write *done_next; /* in the server's completion queue */
    struct conn *conn;               /* NULL once the connection is gone */
    struct server *srv;
    uint64_t request_id;
    int done; /* the response is ready */
    int engine_rc;
    Tide__V1__Envelope *reply; /* WriteAck or Error */
    uint64_t accepted;
    uint64_t account_id;
    struct write_job *job; /* parked for registration (write.c), or NULL */
};

struct query_state; /* query.c */
struct write_job;   /* write.c */

/* The request ids in flight on a connection (conn.c): a hash set, open
 * addressing with linear probing; 0 marks a free slot (id 0 is reserved,
 * docs/protocol.md). Grows by doubling to at most twice max_inflight. */
struct conn_ids {
    uint64_t *slot;
    uint32_t cap; /* a power of two; 0 until the first id */
    uint32_t count;
};

struct conn {
    struct conn *prev, *next;
    struct server *srv;
    struct bufferevent *bev;
    uint64_t id;
    char ip[64];
    enum conn_state state;
    struct tide_meta_principal who;
    uint16_t tier;
    int closing;        /* close once the output is flushed */
    int partial;        /* a frame has started arriving */
    size_t frame_bytes; /* the frame being handled, header included */
    int read_paused;    /* reading stopped: output above the high watermark */
    uint32_t inflight;  /* requests not yet fully answered */
    struct pending_write *writes_head, *writes_tail;
    uint32_t writes_parked;      /* of them waiting for registration */
    struct query_state *queries; /* running queries, oldest first */
    uint64_t connected_device;   /* device id recorded online, or 0 */
    struct conn_ids ids;         /* ids of the requests in flight */
    int keep_id;                 /* an answer that ends no request */
    /* Input framing: bytes move from the bufferevent's input into the
     * shared frame decoder (proto/frame.h) as it asks for them. */
    struct tide_frame_decoder dec;
    int dec_large; /* dec grew for a frame above 256 KiB */
    /* Its frame being decoded by the write worker (tided_write_decode):
     * the connection is not read meanwhile. */
    struct write_job *decoding;
    /* While conn_decoded() dispatches it: the arena of the envelope, for a
     * parked batch to take a reference (write.c). */
    struct tide_frame_arena *env_arena;
    uint8_t sample[16]; /* the first bytes of the last input fed */
    size_t sample_len;
    /* This connection's share of srv->partial_bytes. */
    size_t partial_charged;
    /* CLOCK_MONOTONIC ms when the frame being received began; 0 = none. */
    uint64_t frame_start_ms;
    /* TLS: the handshake is not done yet; it must finish within
     * read_timeout_ms of handshake_start_ms, as a frame must. */
    int handshaking;
    uint64_t handshake_start_ms;
};

/* ---- TLS (tls.c) --------------------------------------------------------- */

/* Load tls_cert/tls_key (and tls_client_ca) into s->tls; nothing when
 * neither is set. Returns 0, or -1 with the reason logged. */
int tided_tls_init(struct server *s);
/* SIGHUP: load the files again and serve them to new connections; on
 * failure the old context stays (logged, -1). */
int tided_tls_reload(struct server *s);
void tided_tls_fini(struct server *s);
/* A bufferevent accepting TLS on `fd` (closed with it), NULL without
 * memory. */
struct bufferevent *tided_tls_bev(struct server *s, evutil_socket_t fd);
/* Count a finished handshake (resumed or not). */
void tided_tls_handshake_done(struct server *s, struct bufferevent *bev);
/* Why the TLS bufferevent `bev` failed, into buf. */
const char *tided_tls_error(struct bufferevent *bev, char *buf, size_t cap);
/* The SHA-256 of the verified client certificate of `bev`: 0, or
 * TIDE_EAUTH when it has none (plaintext, none presented). */
int tided_tls_peer_fingerprint(struct bufferevent *bev, uint8_t fp[32]);

/* ---- Encryption at rest (crypt.c) --------------------------------------- */

/* The engine's data_key callback (ctx: the server): the sidecar's key of
 * the account, TIDE_EKEY once it was destroyed. */
int tided_crypt_data_key(void *ctx, uint64_t account_id, uint8_t key[32]);

/* What ServerStatus and /metrics show. */
struct tided_crypt_status {
    int enabled;
    char master_key_id[17]; /* hex; "" when off */
    uint64_t data_keys;
    int64_t rotated_ns;
    uint64_t segments_encrypted, segments_plaintext;
    uint64_t segment_bytes_plaintext;
};
void tided_crypt_status(struct server *s, const struct tide_db_stats *st,
                        struct tided_crypt_status *out);
/* Hex of a key id into out[17]. */
void tided_crypt_key_id_hex(const uint8_t id[8], char *out);
/* MasterKeyRotate: operator only, on a job thread. */
void handle_master_key_rotate(struct conn *c, const Tide__V1__Envelope *e);

/* conn.c: bind the protocol listener (port 0 picks one; *port_out gets
 * the real port). Returns 0, TIDE_EINVAL (listen host is not an IP
 * literal) or -errno (socket, bind, listen); failures are logged. */
int tided_listen(struct server *s, int *port_out);
/* Close every connection at once (shutdown). */
void tided_close_all(struct server *s);

/* Send an envelope to the connection. Returns 0, TIDE_ECLOSED (the
 * connection is being closed), TIDE_ENOSPACE (the envelope encodes above
 * the frame limit) or -ENOMEM; nothing is sent then. Either way the frame
 * counts as sent for the request ids in flight. The envelope stays owned
 * by the caller. */
int conn_send(struct conn *c, const Tide__V1__Envelope *env);

/* Send Error{code, message} for request `rid`; `close_after` closes the
 * connection once it is flushed. */
void conn_send_error(struct conn *c, uint64_t rid, Tide__V1__ErrorCode code,
                     const char *message, int close_after);

/* The last frame of request `rid` (a query or an export, whose frames do
 * not pass through conn_send) has been delivered: its id is free again. */
void conn_request_done(struct conn *c, uint64_t rid);

/* Bytes waiting in the connection's output buffer. */
size_t conn_out_pending(const struct conn *c);

/* ---- Names and tags from the wire (names.c) --------------------------- */

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
int names_utf8_valid(const uint8_t *p, size_t n);
/* 1..max bytes, no control characters. */
int names_valid(const char *s, size_t max);
/* Why `s` cannot be a device or field name of at most `max` bytes, with
 * the wire code in *code; NULL when it can. */
const char *names_error(const char *s, size_t max, Tide__V1__ErrorCode *code);
/* Upsert tags t[0..n) into the device tags `cur` ("k=v,k=v"): a key
 * already there takes the new value in place, a new key is appended; of a
 * key given twice the last value wins. The result goes to
 * out[TIDE_META_TAGS_MAX + 1]. Returns NULL, or why the tags are refused
 * (wire code in *code). */
const char *names_tags_upsert(const char *cur, Tide__V1__Tag *const *t,
                              size_t n, char *out, Tide__V1__ErrorCode *code);

/* ---- Device cache and account table (devices.c) ------------------------ */

/* Loop thread only. Entries stay owned by the cache: a device_entry is
 * valid until the next call into devices.c or tided_device_forget(), an
 * account_state until the next devices_account() or
 * tided_device_resolve(). */

/* A cached device. Read-only outside devices.c. */
/* A series of a cached device: its field's name inline, so that the
 * write path resolves a known series next to the device it just found,
 * without a registry lookup (two cache misses each at fleet width). */
#define DEVICE_SERIES_FIELD_MAX 22
struct device_series {
    uint64_t id;
    uint8_t type;
    uint8_t len;
    char field[DEVICE_SERIES_FIELD_MAX];
};

struct device_entry {
    struct device_entry *next;
    uint64_t account_id;
    uint64_t id;
    int paused;
    int64_t checked_ns;
    char *tags;                   /* "k=v,k=v"; NULL when none */
    struct device_series *series; /* live series only; see devices.c */
    uint32_t n_series, cap_series;
    char name[TIDE_META_NAME_MAX + 1];
};

/* A cached account: tier and limits (read-only outside devices.c), and
 * the write path's rate bucket and daily count (write.c updates them). */
struct account_state {
    struct account_state *next;
    uint64_t account_id;
    struct tide_meta_tier tier;
    int paused;
    int stale; /* the sidecar reported a change: read again */
    int64_t checked_ns;
    double tokens; /* rate limit bucket; may go negative (debt) */
    int64_t refill_ns;
    int64_t day;
    uint64_t day_points;
};

/* Allocate the cache and the table and install the sidecar's
 * invalidation hook (s->meta open, on the loop thread); 0 or -1. Free them
 * (after tide_meta_close, which ends the hook's calls). */
int devices_init(struct server *s);
void devices_fini(struct server *s);

/* Load every device of the account into the cache unless it is there
 * already. Returns 0 or a sidecar error (nothing is marked loaded). */
int devices_load(struct server *s, uint64_t account_id);

/* The cached entry of device `name` of the account, or NULL (no SQL, no
 * recheck). */
struct device_entry *devices_peek(struct server *s, uint64_t account_id,
                                  const char *name);

/* The entry of device `name` of the account in *out, registering the
 * device when `create`. Returns 0, TIDE_ENOTFOUND, TIDE_EFULL (the tier's
 * devices_max), or another sidecar error. */
int devices_get(struct server *s, uint64_t account_id, const char *name,
                int create, struct device_entry **out);

/* A cache entry for device `name` (id `id`) of the account, just
 * registered in the sidecar, so neither paused nor tagged: made on any
 * thread (the registration thread, write.c), NULL without memory.
 * devices_entry_link() hands it to the cache (loop thread), which keeps
 * an entry it already has for that name instead; devices_entry_free()
 * frees one never linked. */
/* The id of the live series (`field`, `type`) of `e` when it is cached
 * there, else 0, looked for from position `hint` (the column's place in
 * its group); remember one the registry resolved (dropped silently when
 * it does not fit). The cache lives and dies with its entry, and an
 * entry is dropped on every sidecar change of its account. */
uint64_t devices_series_find(const struct device_entry *e, const char *field,
                             size_t len, uint8_t type, uint32_t hint);
void devices_series_put(struct device_entry *e, const char *field, size_t len,
                        uint8_t type, uint64_t id);

struct device_entry *devices_entry_new(uint64_t account_id, const char *name,
                                       uint64_t id);
void devices_entry_link(struct server *s, struct device_entry *e);
void devices_entry_free(struct device_entry *e);

/* Set the tags of cached device `e` to `tags` ("k=v,k=v", at most
 * TIDE_META_TAGS_MAX bytes) and queue them for devices_tags_flush().
 * Returns 0 or -ENOMEM (nothing changed). */
int devices_set_tags(struct server *s, struct device_entry *e,
                     const char *tags);

/* Set the cached tags of `e` to `tags`, which the registration worker
 * stored already: nothing is queued. Returns 0 or -ENOMEM. */
int devices_tags_cached(struct device_entry *e, const char *tags);

/* On (1) or off: the sidecar's change reports made by the calling thread
 * are not queued for the cache, which is updated by its owner instead. */
void devices_mute_echoes(int on);

/* Store every queued tag change, one sidecar transaction per account. A
 * failure is logged and the account's devices are read again. */
void devices_tags_flush(struct server *s);

/* Drop every queued tag change unstored; the accounts' devices are read
 * again, so the cache forgets those tags too. */
void devices_tags_drop(struct server *s);

/* The state of account `id`, its tier re-read when stale. NULL without
 * memory. */
struct account_state *devices_account(struct server *s, uint64_t id);

/* True when device `d` matches `sel` (NULL = every device): one of its
 * names, if any, and every tag match. */
int tided_device_selected(const Tide__V1__DeviceSelector *sel,
                          const struct tide_meta_device *d);

/* devices_get() for callers that want the id only (admin.c, query.c). */
int tided_device_resolve(struct server *s, uint64_t account_id,
                         const char *name, int create, uint64_t *id_out);
/* Forget cached device ids of an account (after a delete). */
void tided_device_forget(struct server *s, uint64_t account_id);

/* ---- Request handlers --------------------------------------------------- */

/* auth.c: Auth, Login, Logout; failures logged and throttled. */
void handle_auth(struct conn *c, const Tide__V1__Envelope *env);
void handle_login(struct conn *c, const Tide__V1__Envelope *env);
void handle_logout(struct conn *c, const Tide__V1__Envelope *env);
/* Answer the logins whose bcrypt work finished (loop thread). */
void tided_logins_drain(struct server *s);
int tided_throttle_init(struct server *s);
void tided_throttle_fini(struct server *s);

/* write.c */
void handle_write(struct conn *c, const Tide__V1__Envelope *env);
/* Set up / free what the write path keeps (the device cache and the
 * registration worker). tided_write_stop() ends the worker, dropping the
 * batches still parked (their connections are closed): call it after
 * tided_close_all() and before tide_meta_close(). */
int tided_write_init(struct server *s);
void tided_write_stop(struct server *s);
void tided_write_fini(struct server *s);
/* Build and append the parked batches whose registration finished (loop
 * thread). */
void tided_write_jobs_drain(struct server *s);
/* WriteBatch frames of at least this many bytes (header included) from an
 * authenticated connection are decoded by the write worker, not on the
 * loop (a 100,000-device batch takes ~80 ms to decode). */
#define TIDED_OFFLOOP_DECODE_BYTES (256u << 10)
/* Hand the complete frame (a WriteBatch) peeked in the decoder of `c` to
 * the write worker to decode (the decoder's buffer goes with it:
 * tide_frame_decoder_take). The connection is not read until the worker
 * is done and conn_decoded() has dispatched the envelope. Returns 0,
 * TIDE_EFULL (too many frame bytes parked: refuse it; the frame is still
 * in the decoder) or -ENOMEM (decode it here). */
int tided_write_decode(struct conn *c, size_t len);
/* Free `buf` (tide_malloc'd) on the write worker, not the loop: a large
 * buffer's munmap takes milliseconds. Frees it here when the worker is
 * not running or without memory. */
void tided_write_free_later(struct server *s, void *buf);
/* conn_free(): the connection of a frame in the worker's hands is gone;
 * the result is dropped when it comes back. */
void tided_write_decode_forget(struct conn *c);

/* conn.c: the write worker decoded the frame of `c` (tided_write_decode):
 * rc 0 and `env`, decoded into `arena` (whose reference the callee takes),
 * to dispatch as on_read would, with `nul_field` (tide_frame_nul_field of
 * its payload); or the decode error (mem_over: the decode memory bound),
 * answered as on_read answers one. Then reading resumes. */
void conn_decoded(struct conn *c, Tide__V1__Envelope *env,
                  struct tide_frame_arena *arena, int rc, int mem_over,
                  const char *nul_field, size_t frame_bytes);
/* conn.c: the write worker refused that frame without decoding it (a
 * WriteBatch over a limit): request `rid` is answered `code` through the
 * write FIFO, as handle_write() refuses, and reading resumes. */
void conn_refused_undecoded(struct conn *c, uint64_t rid,
                            Tide__V1__ErrorCode code, const char *msg);

/* ack.c: the write FIFO of each connection and the engine's completions.
 * Move finished writes of the completion queue to their connections and
 * send every ack that is next in line. */
void tided_writes_drain(struct server *s);
/* Send the ready responses at the head of a connection's write FIFO. */
void conn_flush_writes(struct conn *c);
/* Refuse a batch whole with Error{code, msg, retry_after_ms}, queued in
 * the connection's write FIFO so responses keep the order of the batches.
 * Without memory the connection gets OVERLOADED and is closed. */
void ack_refuse(struct conn *c, uint64_t rid, Tide__V1__ErrorCode code,
                const char *msg, uint32_t retry_after_ms);
/* The engine's completion callback for a pending_write (`ctx`); any
 * thread. Queues it for tided_writes_drain(). */
void ack_on_durable(void *ctx, int rc);
/* The connection closes: the answered writes still in its FIFO (behind
 * an unfinished one) are freed; the others are left to their engine
 * completion (invariant 2). The FIFO is empty afterwards. */
void ack_conn_closed(struct conn *c);
/* Append `w` to c's write FIFO: its reply leaves after every earlier one
 * (invariant 1). */
void ack_enqueue(struct conn *c, struct pending_write *w);
/* Replace the WriteAck of `w` by Error{code, msg}. Without memory the
 * reply is dropped, and conn_flush_writes() answers INTERNAL instead. */
void ack_to_error(struct pending_write *w, Tide__V1__ErrorCode code,
                  const char *msg);
/* Free rejections v[0..n) and the array. Accepts NULL. */
void ack_rejections_free(Tide__V1__Rejection **v, size_t n);

/* query.c */
void handle_query(struct conn *c, const Tide__V1__Envelope *env);
void handle_query_cancel(struct conn *c, const Tide__V1__Envelope *env);
/* ExportStart: every row of the account, then (optionally) its telemetry,
 * streamed by a query thread. */
void handle_export(struct conn *c, const Tide__V1__Envelope *env);
/* The output buffer drained below the low watermark: continue. */
void query_resume(struct conn *c);
void query_free_all(struct conn *c);
/* Deliver the frames query threads queued (loop thread). */
void tided_queries_drain(struct server *s);
/* Start / stop (after every connection is closed) the query threads. */
int tided_query_threads_start(struct server *s);
void tided_query_threads_stop(struct server *s);

/* compact_admin.c: AdminCompact, RetentionGet and ErasureReport, each a
 * job off the loop answered on it. */
void handle_compact_admin(struct conn *c, const Tide__V1__Envelope *env);

/* admin.c: every sidecar operation, one-to-one. Returns 1 when the body
 * was an admin request it handled. */
int handle_admin(struct conn *c, const Tide__V1__Envelope *env);

/* metrics.c: serve /metrics and /health on cfg.http_host:http_port
 * (port 0 picks one and writes it back to cfg.http_port). Returns 0,
 * -ENOMEM, or -errno when the socket cannot be bound (logged). */
int tided_http_start(struct server *s);
void tided_metrics_query_latency(struct server *s, uint64_t us);

/* ---- Retention policy and erasure (retention.c) ------------------------
 *
 * The engine's compaction policy (struct tide_retention), answered from
 * an in-memory snapshot of the sidecar (tide_meta_retention_load): hash
 * tables of accounts (tier TTL, purged) and erased series, rebuilt when
 * tide_meta_generation() moves, on the thread asking (the engine's
 * compaction thread, the maintenance thread), never on the loop, which
 * answers from the snapshot it finds. Each rebuild that finds an account
 * newly purged, or newly erased series of an account, queues that account
 * for tide_db_erase(), which the maintenance thread runs. */

/* Allocate the policy on s->meta (open) and fill o->retention with it.
 * Call on the loop thread (it is recognised later). Returns 0 or -ENOMEM. */
int tided_retention_init(struct server *s, struct tide_db_options *o);
/* Free it, after tide_db_close(): the engine calls it until then. */
void tided_retention_fini(struct server *s);
/* Maintenance thread: rebuild the snapshot if the sidecar changed, then
 * erase every account queued: checkpoint the sidecar's WAL and call
 * tide_db_erase(db, account, 0) for each. Failures are logged. */
void tided_retention_maintain(struct server *s);
/* Wake the maintenance thread for tided_retention_maintain(): after an
 * account purge or a device deletion. Any thread. */
void tided_retention_poke(struct server *s);
/* The width of tier `ttl_s`'s segment windows: ttl_s / 8 rounded down to
 * whole days, within [1 day, 365 days]. */
int64_t tided_retention_window_ns(int64_t ttl_s);
/* The oldest timestamp account `account_id` may still read at `now_ns`,
 * or INT64_MIN (the operator's own queries of no account). Loop thread:
 * from the account table (devices.c). Returns 0 with *horizon_ns, or
 * -ENOMEM. */
int tided_retention_horizon(struct server *s, uint64_t account_id,
                            int64_t now_ns, int64_t *horizon_ns);
/* Clamp a read's start `*from_ns` to `horizon_ns`: raised to it, or with
 * time buckets (`bucket_ns` > 0) to the first bucket boundary at or after
 * it, so that no bucket holds expired points; never past `to_ns`. */
void tided_retention_clamp(int64_t horizon_ns, int64_t bucket_ns,
                           int64_t *from_ns, int64_t to_ns);

/* main.c, tests only: with TIDED_TEST_ALLOC_FAIL_NTH=request_id in the
 * environment, make the `nth` allocation from now fail (0 disarms);
 * without it, nothing. conn.c disarms as each frame arrives and arms
 * request_id >> 32 once the frame is decoded (docs/operations.md). */
void tided_test_alloc_arm(unsigned long nth);
/* Disarm and return how many allocations were left before the failing
 * one (0: none armed, or it happened): a request that moves to another
 * thread takes its countdown along (write.c's parked batches). */
unsigned long tided_test_alloc_take(void);

/* Now in ns, CLOCK_REALTIME. */
int64_t tided_now_ns(void);

/* The principal of server-internal sidecar calls (device
 * auto-registration after an authorised write): the sidecar's system
 * principal, which it knows by its address (meta.h). */
#define tided_system_principal tide_meta_system_principal

#endif /* TIDE_SERVER_SERVER_H */
