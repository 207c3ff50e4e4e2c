/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internals shared by libtide's files (client.c, writer.c, query.c,
 * admin.c) and its unit tests. Nothing here is exported.
 *
 * Writer invariants:
 *   1. Every buffered point is in exactly one place: an open column
 *      (n_open_points) or a sealed batch of the queue (sealed_points).
 *   2. The queue is in sealing order; `sent` marks the batches transmitted
 *      on the current connection, n_inflight counts them and is at most
 *      the ack window.
 *   3. A connection loss clears every `sent` flag: all queued batches are
 *      resent, in queue order, with their original producer/sequence.
 *   4. A batch leaves the queue only on its WriteAck, on a non-retryable
 *      Error, or when TIDE_OVERFLOW_DROP_OLDEST discards it.
 */
#ifndef TIDE_CLIENT_INTERNAL_H
#define TIDE_CLIENT_INTERNAL_H

#include <openssl/types.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "tide/common.h"
#include "wire_error.h"
#include "tide/client.h"

/* Internal only: the buffer is full and the policy asks the caller to wait
 * for acks. Never returned by a public function. */
#define TIDE__NEED_WAIT 2

/* Open (unsealed) points of one series. */
struct column {
    char *device;
    char *field;
    uint64_t hash; /* of (device, field): the table's key */
    size_t device_len, field_len;
    int type; /* enum tide_value_type; 0 while empty */
    int64_t *ts_ns;
    union {
        double *f64;
        int64_t *i64;
        uint8_t *b;
        char **str;
    } v;
    size_t n;
    size_t cap;
    struct column *all_next;  /* every column, for closing */
    struct column *open_next; /* columns with points, in first-write order */
};

/* A sealed WriteBatch, kept as its encoded frame until acknowledged. */
struct batch {
    uint64_t request_id;
    uint64_t sequence;
    uint64_t points;
    uint8_t *frame;
    size_t len;
    int sent;      /* sent on the current connection */
    int ever_sent; /* a later send counts as a resend */
    struct batch *next;
};

struct envq {
    Tide__V1__Envelope *env;
    struct envq *next;
};

struct tide_query_iter {
    tide_client *c;
    uint64_t request_id;
    struct envq *head, *tail; /* frames received, not yet consumed */
    Tide__V1__Envelope *cur;  /* chunk being walked */
    size_t cur_index;
    int state; /* 0 running, TIDE_CLIENT_DONE, or an error */
    char *prev_device, *prev_field;
    int64_t *ts;
    uint8_t *bools;
    size_t scratch_cap;
    double *aggv; /* tide_series_block.agg_values */
    size_t aggv_cap;
    struct tide_query_stats stats;
    struct tide_export_stats export_stats; /* exports only */
};

struct tide_client {
    struct tide_client_options o; /* host, api_key, token owned copies */
    int fd;
    int connected;
    int ever_connected;
    int failed;              /* sticky TIDE_EAUTH after a refused reconnect */
    uint32_t attempt;        /* failed connects since the last success */
    int64_t next_connect_ms; /* backoff: no attempt before this */
    int connect_rc;          /* result of the last failed attempt */
    struct tide_frame_decoder dec;

    uint32_t max_frame_bytes;
    uint32_t max_batch_points;
    uint32_t max_string_bytes;
    uint32_t window; /* effective ack window */

    uint64_t account_id;
    int role;
    char *device;

    uint64_t next_request_id;
    uint64_t producer_id;
    uint64_t next_sequence;
    uint64_t rng;

    /* Columns by (device, field): open addressing, at most half full. */
    struct column **slots;
    size_t n_slots, n_columns;
    struct column *all_head;
    /* The open batch's columns in the order of their first point, so a
     * seal visits only what it sends and its groups are deterministic. */
    struct column *open_head, *open_tail;
    uint64_t n_open_points;
    uint32_t writes_since_drive; /* points since the last read of acks */
    int64_t open_since_ms;       /* monotonic time of the oldest open point */

    struct batch *q_head, *q_tail;
    uint64_t sealed_points;
    uint32_t n_inflight;
    int64_t retry_at_ms; /* no sends before this (retryable Error) */

    struct tide_client_stats st;
    int flush_rejected;

    int have_error;
    int err_code;
    char *err_msg;

    tide_query_iter *iter;
    uint64_t wait_id;
    Tide__V1__Envelope *wait_env;

    /* TLS (tls.c): the context from the options, the connection's SSL
     * on fd, and the session to resume on the next connection. */
    SSL_CTX *tls_ctx;
    SSL *ssl;
    struct ssl_session_st *tls_session;
    int tls_resumed;
};

/* client.c */
int64_t tide__client_now_ms(void);
int tide__client_new(const struct tide_client_options *opts, tide_client **out);
uint32_t tide__client_backoff_ms(uint32_t base_ms, uint32_t max_ms,
                                 uint32_t attempt, uint64_t rand);
uint64_t tide__client_rand(tide_client *c);
int tide__client_step(tide_client *c);
int tide__client_ensure(tide_client *c, int64_t deadline_ms);
int tide__client_send(tide_client *c, const uint8_t *buf, size_t len);
int tide__client_send_env(tide_client *c, Tide__V1__Envelope *env);
int tide__client_read(tide_client *c, uint32_t timeout_ms);
int tide__client_wait(tide_client *c, uint64_t id, Tide__V1__Envelope **env);
int tide__client_request(tide_client *c, Tide__V1__Envelope *env, int want_case,
                         Tide__V1__Envelope **resp);
void tide__client_lost(tide_client *c);
void tide__client_set_error(tide_client *c, const Tide__V1__Error *e);

/* tls.c. A reason for the user in last_error (code 0). */
void tide__client_reason(tide_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The context from the options (nothing without o->tls): 0 or TIDE_ETLS. */
int tide__tls_init(tide_client *c, const struct tide_client_options *o);
void tide__tls_fini(tide_client *c);
/* Handshake on c->fd by deadline_ms: 0, TIDE_ETLS, TIDE_ETIMEDOUT,
 * -errno; the reason is recorded. */
int tide__tls_connect(tide_client *c, int64_t deadline_ms);
/* Free the connection's SSL (the session is kept). */
void tide__tls_close(tide_client *c);
/* Bytes read (> 0), 0 when the socket has none now, or
 * TIDE_EDISCONNECTED. */
int tide__tls_read(tide_client *c, uint8_t *buf, size_t cap);
/* Bytes written (> 0), 0 with *want (POLLIN or POLLOUT) to wait for, or
 * TIDE_EDISCONNECTED. */
int tide__tls_write(tide_client *c, const uint8_t *p, size_t n, short *want);
/* Decrypted bytes wait inside OpenSSL, where poll() cannot see them. */
int tide__tls_pending(const tide_client *c);

/* writer.c */
int tide__writer_append(tide_client *c, const char *device, const char *field,
                        int type, int64_t ts_ns, const void *value);
int tide__writer_seal(tide_client *c);
int tide__writer_dispatch(tide_client *c, Tide__V1__Envelope *env);
void tide__writer_lost(tide_client *c);
void tide__writer_fini(tide_client *c);

/* query.c */
void tide__query_deliver(tide_query_iter *it, Tide__V1__Envelope *env);

#endif /* TIDE_CLIENT_INTERNAL_H */
