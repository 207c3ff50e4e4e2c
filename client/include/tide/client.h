/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libtide: the C client of tided. Connects and authenticates over the v1
 * protocol (docs/protocol.md), buffers points into per-series columns and
 * ships them as pipelined, deduplicated WriteBatches, iterates over query
 * results, and runs every admin request. Walkthrough: docs/client.md.
 *
 * Thread-safety: a tide_client and the iterator opened on it are used by one
 * thread at a time (the caller serialises); distinct clients are independent.
 * The library starts no threads and installs no signal handlers; it never
 * aborts on allocation failure.
 *
 * Errors: functions returning int give 0 on success, -errno for system
 * errors, or a code of tide/error.h. A server Error frame becomes
 * TIDE_ESERVER; tide_client_last_error() gives its wire code and text.
 */
#ifndef TIDE_CLIENT_TIDE_CLIENT_H
#define TIDE_CLIENT_TIDE_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "tide/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TIDE_API __attribute__((visibility("default")))

/* Not an error: a query iterator has no more results. Failures are -errno
 * or the codes of tide/error.h (the client's are TIDE_ESERVER ...
 * TIDE_EREJECTED), described by tide_strerror(). */
#define TIDE_CLIENT_DONE 1

/* Opaque handles. */
typedef struct tide_client tide_client;
typedef struct tide_query_iter tide_query_iter;
typedef struct tide_result tide_result;

/* What a write does when the buffer holds buffer_points_max points. */
enum tide_overflow {
    TIDE_OVERFLOW_BLOCK = 0,       /* wait for acks (default, loses nothing) */
    TIDE_OVERFLOW_DROP_OLDEST = 1, /* discard the oldest batch, count it */
    TIDE_OVERFLOW_ERROR = 2,       /* return TIDE_EFULL */
};

/* Value types; numbers equal the wire's ValueType. */
enum tide_value_type {
    TIDE_VALUE_F64 = 1,
    TIDE_VALUE_I64 = 2,
    TIDE_VALUE_BOOL = 3,
    TIDE_VALUE_STR = 4,
};

/*
 * Connection and writer options. Fill with tide_client_options_init(), then
 * change what you need; 0 in a numeric field means "the default". Strings
 * are borrowed for the duration of tide_client_open() only (copied).
 */
struct tide_client_options {
    const char *host;            /* IPv4/IPv6 literal or name; "127.0.0.1" */
    uint16_t port;               /* 8433 */
    const char *api_key;         /* Auth with this key, or */
    const char *session_token;   /* this token; both NULL: no Auth */
    uint32_t connect_timeout_ms; /* 5000 */
    uint32_t io_timeout_ms;      /* 10000: silence before a reconnect */
    uint32_t batch_points;       /* 10000: seal a batch at this size */
    uint32_t batch_interval_ms;  /* 100: seal older points on next call */
    uint32_t ack_window;         /* 8: batches sent and not yet acked */
    uint64_t buffer_points_max;  /* 1000000: open + unacked points */
    enum tide_overflow overflow; /* TIDE_OVERFLOW_BLOCK */
    uint32_t block_timeout_ms;   /* 0: BLOCK and flush wait forever */
    uint32_t backoff_base_ms;    /* 100 */
    uint32_t backoff_max_ms;     /* 10000 */
    uint32_t reconnect_attempts_max; /* 0: retry forever */
    uint64_t producer_id;            /* 0: random (getrandom) */
    /* TLS (docs/client.md, "TLS"). With `tls` set the connection is TLS
     * 1.2 or newer and the server's certificate is verified: its chain
     * against tls_ca_file / tls_ca_dir (both NULL: the system's CAs) and
     * its name against tls_server_name (NULL: `host`; an IP literal is
     * checked as an IP address), also sent as SNI. A failed check is
     * TIDE_ETLS with the reason in tide_client_last_error() (or
     * open_error for tide_client_open). Reconnects resume the session. */
    int tls;
    const char *tls_ca_file;
    const char *tls_ca_dir;
    const char *tls_server_name;
    const char *tls_cert_file; /* mutual TLS: this client certificate */
    const char *tls_key_file;  /* and its key (PEM) */
    /* 1 = accept ANY server certificate: no protection against a
     * man in the middle. For a throwaway test only, never production. */
    int tls_insecure_skip_verify;
    /* Auth with the TLS client certificate (registered to a device key,
     * docs/protocol.md "TLS") instead of api_key or session_token. */
    int auth_client_certificate;
    /* When not NULL, a failed tide_client_open() writes why here
     * (open_error_len bytes with the NUL): the TLS or server reason. */
    char *open_error;
    size_t open_error_len;
};

/* Writer counters, monotonic since tide_client_open (points_buffered is a
 * gauge). */
struct tide_client_stats {
    uint64_t points_written;    /* accepted by tide_write_* */
    uint64_t points_acked;      /* WriteAck.accepted_points, summed */
    uint64_t points_rejected;   /* rejected per column or refused whole */
    uint64_t points_dropped;    /* discarded by TIDE_OVERFLOW_DROP_OLDEST */
    uint64_t points_buffered;   /* held now: open columns + unacked */
    uint64_t batches_sent;      /* first transmissions */
    uint64_t batches_acked;     /* WriteAcks received */
    uint64_t batches_resent;    /* retransmissions after reconnect/retry */
    uint64_t batches_duplicate; /* acks with duplicate set */
    uint64_t batches_failed;    /* refused whole by a non-retryable Error */
    uint64_t reconnects;        /* successful reconnects */
};

/* Fill `o` with the defaults listed in struct tide_client_options. */
TIDE_API void tide_client_options_init(struct tide_client_options *o);

/*
 * Connect, send Hello and (with a credential) Auth, and return the client in
 * *out (owned by the caller; release with tide_client_close). Retries the
 * connection per the backoff options only for reconnects, not here.
 * Returns 0; TIDE_EAUTH (key/token refused, see last_error);
 * TIDE_ESERVER; TIDE_ETIMEDOUT; TIDE_EINVAL (bad
 * options); -ECONNREFUSED and other -errno; -ENOMEM. On failure nothing is
 * left allocated and *out is untouched.
 */
TIDE_API int tide_client_open(const struct tide_client_options *opts,
                              tide_client **out);

/*
 * Close the connection and free `c`. Buffered, unacknowledged points are
 * discarded: call tide_flush first to keep them. Accepts NULL.
 */
TIDE_API void tide_client_close(tide_client *c);

/*
 * Make libtide take all its memory from `malloc_fn` and return it to
 * `free_fn` (both, or both NULL for the C library's). Call it before the
 * first other call of the library: memory is returned to the functions that
 * gave it. Not thread-safe against concurrent use of the library.
 */
TIDE_API void tide_client_set_allocator(void *(*malloc_fn)(size_t),
                                        void (*free_fn)(void *));

/*
 * The last server Error seen on `c`: *code receives the wire ErrorCode
 * (docs/protocol.md, "Error model"; 0 for a TLS failure of a reconnect,
 * TIDE_ETLS) and *msg its text, borrowed from `c`
 * until the next call on it. Either out-pointer may be NULL. Returns 0, or
 * TIDE_EINVAL when no server error has been seen.
 */
TIDE_API int tide_client_last_error(const tide_client *c, int *code,
                                    const char **msg);

/* TLS: 1 when the current (or last) connection resumed an earlier TLS
 * session, 0 when it made a full handshake or is plaintext. */
TIDE_API int tide_client_tls_resumed(const tide_client *c);

/*
 * Drop the connection and connect again now (Hello, Auth; over TLS
 * offering the last session for resumption), waiting at most
 * connect_timeout_ms. Batches not yet acknowledged are resent by the next
 * write or flush, as after any reconnect. Returns 0 or as
 * tide_client_open.
 */
TIDE_API int tide_client_reconnect(tide_client *c);

/* Copy the writer counters into *st. */
TIDE_API void tide_client_stats_get(const tide_client *c,
                                    struct tide_client_stats *st);

/*
 * Identity from AuthOk: account id, role (wire Role number, 0 without
 * Auth) and, for device keys, the device (borrowed from `c`). Out-pointers
 * may be NULL.
 */
TIDE_API void tide_client_identity(const tide_client *c, uint64_t *account_id,
                                   int *role, const char **device);

/*
 * Buffer one point of series (device, field) at ts_ns (ns since the Unix
 * epoch). `device`, `field` and a string `value` are copied. A series keeps
 * one type in the buffer; writing another type to it seals the buffer
 * first. May seal and send a batch (size or interval reached) and read
 * pending acks; with TIDE_OVERFLOW_BLOCK it may wait (and reconnect).
 * Returns 0; TIDE_EINVAL (empty name or value too long);
 * TIDE_EFULL (policy ERROR, point not stored);
 * TIDE_ETIMEDOUT (BLOCK past block_timeout_ms, point not stored);
 * TIDE_EAUTH (reconnect refused); -ENOMEM. Network failures are not
 * returned here: the batch stays buffered and is resent.
 */
TIDE_API int tide_write_f64(tide_client *c, const char *device,
                            const char *field, int64_t ts_ns, double value);
TIDE_API int tide_write_i64(tide_client *c, const char *device,
                            const char *field, int64_t ts_ns, int64_t value);
TIDE_API int tide_write_bool(tide_client *c, const char *device,
                             const char *field, int64_t ts_ns, int value);
TIDE_API int tide_write_str(tide_client *c, const char *device,
                            const char *field, int64_t ts_ns,
                            const char *value);

/*
 * Seal what is buffered, send it and wait until every batch is
 * acknowledged, reconnecting and resending as needed. Returns 0 when all
 * points since the previous flush were accepted; TIDE_EREJECTED when
 * some were rejected or refused (counters and last_error tell which);
 * TIDE_ETIMEDOUT (block_timeout_ms passed, data still buffered);
 * TIDE_EAUTH; -ENOMEM.
 */
TIDE_API int tide_flush(tide_client *c);

/*
 * Drive the writer without writing: seal by interval, send within the ack
 * window, read acks for up to timeout_ms (0 = only what is ready). Call it
 * periodically from an idle producer. Returns 0 or as tide_flush.
 */
TIDE_API int tide_client_poll(tide_client *c, uint32_t timeout_ms);

/* ------------------------------------------------------------------------ */
/* Queries */

enum tide_agg {
    TIDE_AGG_NONE = 0, /* raw points; numbers equal the wire's Aggregation */
    TIDE_AGG_COUNT = 1,
    TIDE_AGG_SUM = 2,
    TIDE_AGG_MIN = 3,
    TIDE_AGG_MAX = 4,
    TIDE_AGG_AVG = 5,
    TIDE_AGG_FIRST = 6,
    TIDE_AGG_LAST = 7,
};

/* A query (docs/protocol.md, "Query model"). Borrowed during open only. */
struct tide_query_params {
    const char *const *devices; /* names, ORed; n_devices 0 = all */
    size_t n_devices;
    const char *const *fields; /* n_fields 0 = every field */
    size_t n_fields;
    int64_t from_ns;     /* inclusive */
    int64_t to_ns;       /* exclusive */
    enum tide_agg agg;   /* one aggregate; ignored when n_aggs > 0 */
    int64_t bucket_ns;   /* 0 = one bucket */
    int group_by_device; /* aggregates: per device (1) or fleet-wide (0) */
    int latest;          /* newest point per series only */
    uint64_t limit;      /* points per series, 0 = none */
    int descending;      /* newest first */
    uint64_t account_id; /* operator only */
    /* Several aggregates of the same buckets (at most 8, distinct, no
     * TIDE_AGG_NONE): when n_aggs > 0 they replace `agg`, and each block
     * carries their values in this order (agg_values). */
    const enum tide_agg *aggs;
    size_t n_aggs;
    /* Buckets start at bucket_offset_ns + k * bucket_ns (0: aligned to the
     * epoch, so the first bucket may begin before from_ns). */
    int64_t bucket_offset_ns;
};

/*
 * One SeriesResult of a chunk, decoded. Read-only; every pointer is
 * borrowed from the iterator until the next tide_query_next or
 * tide_query_close. Exactly the array matching `type` is set; `counts` is
 * set for aggregates. `continued` is 1 when this block carries more points
 * of the previous block's series (a series split across chunks).
 */
struct tide_series_block {
    const char *device; /* "" when aggregated fleet-wide */
    const char *field;
    enum tide_value_type type;
    size_t n;
    const int64_t *ts_ns; /* absolute, decoded from the deltas */
    const double *f64;
    const int64_t *i64;
    const uint8_t *bools; /* one byte (0/1) per point */
    const char *const *str;
    const uint64_t *counts; /* NULL for raw points */
    int continued;
    /* Aggregates: every aggregate's value of bucket i as a double, at
     * agg_values[i * n_aggs + a] for the a-th aggregate asked for (a 0 is
     * also in the array matching `type`). n_aggs 0 and NULL for raw
     * points. */
    size_t n_aggs;
    const double *agg_values;
};

/* QueryEnd statistics. */
struct tide_query_stats {
    uint64_t points;
    uint64_t series;
    uint64_t chunks_scanned;
    uint64_t chunks_from_header;
    uint64_t bytes_read;
    uint64_t elapsed_us;
    int truncated;
};

/*
 * Send a query and return its iterator in *out (owned by the caller, close
 * with tide_query_close). One iterator may be open per client; writes and
 * admin calls may be made while it is open. Returns 0, TIDE_EBUSY,
 * TIDE_EINVAL, -ENOMEM, or a send failure.
 */
TIDE_API int tide_query_open(tide_client *c, const struct tide_query_params *q,
                             tide_query_iter **out);

/*
 * Next block of the result into *block. Returns 0 with a block,
 * TIDE_CLIENT_DONE at QueryEnd (stats available), TIDE_ESERVER
 * (Error frame, e.g. QUERY_TOO_LARGE; blocks already returned are a prefix
 * to discard), TIDE_ETIMEDOUT, TIDE_EDISCONNECTED, -ENOMEM.
 * After DONE or an error, further calls return the same code.
 */
TIDE_API int tide_query_next(tide_query_iter *it,
                             struct tide_series_block *block);

/* Copy the QueryEnd statistics. Returns 0, or TIDE_EINVAL before
 * tide_query_next has returned TIDE_CLIENT_DONE. */
TIDE_API int tide_query_stats_get(const tide_query_iter *it,
                                  struct tide_query_stats *st);

/* Free the iterator; a running query is cancelled (QueryCancel) and its
 * remaining frames are discarded when they arrive. Accepts NULL. */
TIDE_API void tide_query_close(tide_query_iter *it);

/* ------------------------------------------------------------------------ */
/* Export (access and portability) */

/* An export (docs/protocol.md, "Export"). */
struct tide_export_params {
    uint64_t account_id; /* operator only; 0 = own account */
    int telemetry;       /* include every point of the account */
    int csv;             /* telemetry as CSV instead of JSON lines */
    int64_t from_ns;     /* telemetry window; 0/0 = everything */
    int64_t to_ns;
};

/* ExportEnd: totals and the SHA-256 of every chunk's data in order. */
struct tide_export_stats {
    uint64_t rows;
    uint64_t bytes;
    uint8_t sha256[32];
};

/*
 * Start an export of the account's data and return its iterator in *out
 * (close with tide_query_close; it shares the one-iterator-per-client rule
 * of queries). Returns 0, TIDE_EBUSY, TIDE_EINVAL, -ENOMEM,
 * or a send failure.
 */
TIDE_API int tide_export_open(tide_client *c,
                              const struct tide_export_params *p,
                              tide_query_iter **out);

/*
 * Next chunk of the export: *section names its section ("account",
 * "device", ..., "telemetry"), *data and *len its bytes (whole lines).
 * Borrowed until the next call or tide_query_close. Returns 0 with a chunk,
 * TIDE_CLIENT_DONE after ExportEnd (stats available), TIDE_ESERVER,
 * TIDE_ETIMEDOUT, TIDE_EDISCONNECTED, -ENOMEM.
 */
TIDE_API int tide_export_next(tide_query_iter *it, const char **section,
                              const uint8_t **data, size_t *len);

/* Copy the ExportEnd totals. Returns 0, or TIDE_EINVAL before
 * tide_export_next has returned TIDE_CLIENT_DONE. */
TIDE_API int tide_export_stats_get(const tide_query_iter *it,
                                   struct tide_export_stats *st);

/* ------------------------------------------------------------------------ */
/* Compaction and reports (docs/protocol.md, "Compaction and reports") */

/* The server's compaction counters since it started. */
struct tide_compaction_stats {
    uint64_t runs; /* window rewrites */
    uint64_t bytes_read;
    uint64_t bytes_written;
    uint64_t points_expired; /* dropped behind a retention horizon */
    uint64_t points_erased;  /* dropped: account purged, device deleted */
    uint64_t points_deduplicated;
    uint64_t files_deleted;
    uint64_t errors;
    int running;                   /* a job is in progress */
    int64_t oldest_uncompacted_ns; /* oldest window waiting; 0 = none */
    int64_t next_compaction_ns;    /* next routine pass; 0 = none */
};

/*
 * Force a compaction pass (AdminCompact; operator only). With `wait`,
 * return once the pass is done, waiting up to `timeout_ms` for the answer
 * (0 = as long as it takes) instead of the client's io_timeout_ms; else
 * once it is queued. `out` (may be NULL) receives the counters after it.
 * Returns 0, TIDE_ESERVER (e.g. PERMISSION_DENIED, STORAGE; see
 * last_error), TIDE_ETIMEDOUT, TIDE_EDISCONNECTED, TIDE_EPROTO, -ENOMEM.
 */
TIDE_API int tide_client_compact(tide_client *c, int wait, uint32_t timeout_ms,
                                 struct tide_compaction_stats *out);

/* One account's standing against its tier's retention. */
struct tide_retention_row {
    uint64_t account_id;
    char tier[33];
    int64_t ttl_s;
    int64_t oldest_ts_ns; /* oldest point kept; 0 = none */
    uint64_t points;      /* stored */
    uint64_t bytes;
    uint64_t expiring_points; /* gone at the next compaction */
    uint64_t expiring_bytes;
    int64_t next_compaction_ns; /* 0 = none scheduled */
    int deleted;                /* in its deletion grace period */
};

/*
 * The retention report (RetentionGet): of `account_id`, or with 0 of every
 * account the caller may see (the operator: all, every page followed; an
 * owner: their own). On success *rows (free with
 * tide_client_retention_free) holds *n_rows rows in account order.
 * Returns 0, TIDE_EINVAL, TIDE_ESERVER (PERMISSION_DENIED, NOT_FOUND),
 * TIDE_ETIMEDOUT, TIDE_EDISCONNECTED, TIDE_EPROTO, -ENOMEM.
 */
TIDE_API int tide_client_retention(tide_client *c, uint64_t account_id,
                                   struct tide_retention_row **rows,
                                   size_t *n_rows);

/* Free the rows of tide_client_retention. Accepts NULL. */
TIDE_API void tide_client_retention_free(struct tide_retention_row *rows);

#define TIDE_SIDECAR_TABLES_MAX 32

/* Where an account's data still lives (ErasureReport). */
struct tide_erasure_report {
    uint64_t account_id;
    uint64_t segment_files; /* segment files holding its chunks */
    uint64_t segment_bytes; /* their sizes */
    uint64_t points;        /* in segments and the head */
    uint64_t wal_files;     /* live WAL files holding its records */
    uint64_t wal_bytes;
    uint64_t head_points;
    size_t n_tables;
    struct {
        char table[32];
        uint64_t rows;
    } tables[TIDE_SIDECAR_TABLES_MAX]; /* sidecar rows per table */
    uint64_t files_scanned;            /* evidence */
    uint64_t bytes_scanned;
    int64_t next_compaction_ns; /* 0 = none scheduled */
    int nothing_found;          /* nothing but its tombstones left */
    /* Crypto-shredding: when the purge destroyed its data key (0 = not
     * destroyed, or no encryption at rest), and the bytes of its chunks
     * still in segments, unreadable ciphertext until compaction. */
    int64_t data_key_destroyed_ns;
    uint64_t ciphertext_bytes;
};

/*
 * The erasure report of `account_id` (operator only) into *out. Returns
 * 0, TIDE_EINVAL (account_id 0), TIDE_ESERVER (PERMISSION_DENIED),
 * TIDE_ETIMEDOUT, TIDE_EDISCONNECTED, TIDE_EPROTO, -ENOMEM.
 */
TIDE_API int tide_client_erasure_report(tide_client *c, uint64_t account_id,
                                        struct tide_erasure_report *out);

/* ------------------------------------------------------------------------ */
/* Admin requests */

/*
 * Send one request and wait for its response. `request` is the name of the
 * request in the protocol, as the Envelope field: "account_create",
 * "login", "account_get", "account_update", "verify_email",
 * "account_pause", "account_delete", "tier_set", "key_create", "key_list",
 * "key_revoke", "device_register", "device_list", "device_get",
 * "device_update", "device_delete", "usage_get", "auth_log_get",
 * "notification_list", "server_status", ... (every request of
 * proto/tide.proto except hello, auth, write_batch and query).
 * `args` are n_args strings "path=value" setting fields of that request
 * message: `path` names fields by their .proto names, dot-separated into
 * sub-messages ("device.name=truck-7"); a repeated field gets one element
 * per argument ("set=timezone"); tags are "tags=key:value"; enums take
 * their value name ("role=ROLE_DEVICE") or number; bools take
 * true/false/1/0.
 * On success returns 0 and, when `out` is not NULL, *out is the response
 * (owned by the caller, free with tide_result_free).
 * Returns TIDE_EINVAL (unknown request, field or bad value; nothing
 * is sent), TIDE_ESERVER (see last_error), TIDE_EAUTH,
 * TIDE_ETIMEDOUT, TIDE_EDISCONNECTED (not retried: the request
 * may or may not have been applied), TIDE_EPROTO, -ENOMEM.
 */
TIDE_API int tide_client_call(tide_client *c, const char *request,
                              const char *const *args, size_t n_args,
                              tide_result **out);

/*
 * A response as rows of named string values. A response with one repeated
 * message field (device_list_ok.devices, key_list_ok.keys, ...) has one
 * row per element; any other response has one row. Sub-message fields are
 * flattened as "parent.child", repeated scalars joined by ",", tags as
 * "k=v,k=v", enums by value name, bytes in hex.
 */

/* Name of the response message body, e.g. "device_list_ok". */
TIDE_API const char *tide_result_kind(const tide_result *r);

/* Number of rows. */
TIDE_API size_t tide_result_rows(const tide_result *r);

/* Number of columns of row `row` (0 when out of range). */
TIDE_API size_t tide_result_cols(const tide_result *r, size_t row);

/*
 * Column `col` of row `row`: *name and *value borrowed from `r` until
 * tide_result_free. Returns 0 or TIDE_EINVAL when out of range.
 */
TIDE_API int tide_result_get(const tide_result *r, size_t row, size_t col,
                             const char **name, const char **value);

/* Value of column `name` in row `row`, or NULL. Borrowed as above. */
TIDE_API const char *tide_result_find(const tide_result *r, size_t row,
                                      const char *name);

/* Free a result. Accepts NULL. */
TIDE_API void tide_result_free(tide_result *r);

#ifdef __cplusplus
}
#endif

#endif /* TIDE_CLIENT_TIDE_CLIENT_H */
