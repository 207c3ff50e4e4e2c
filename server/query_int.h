/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared by query.c and export.c only: the state of a query or export in
 * flight, and the query machinery an export runs on (selection, engine
 * iterator, frame queue, lifecycle). server.h is what the other files of
 * tided see.
 */
#ifndef TIDE_SERVER_QUERY_INT_H
#define TIDE_SERVER_QUERY_INT_H

#include "server.h"

struct qseries {
    char device[TIDE_META_NAME_MAX + 1];
    char field[TIDE_META_FIELD_MAX + 1];
    uint8_t type;
    uint64_t id;
};

/* An encoded frame waiting for its connection. */
struct qframe {
    struct qframe *next;
    size_t len;
    uint8_t data[];
};

/* Encoded bytes a query may have waiting before it parks (lets go of its
 * thread), and the level its delivery must fall to for it to resume. */
#define QUERY_QUEUED_MAX (1u << 20)
#define QUERY_RESUME_BYTES (QUERY_QUEUED_MAX / 2)

/* Aggregates one query may ask for (Query.aggregations). */
#define QUERY_AGGS_MAX 8

/* query_execute() and export_execute(): the query parked, or it ended. */
#define QUERY_PARKED 1
#define QUERY_DONE 0

struct export_state; /* export.c */

struct query_state {
    struct query_state *next;       /* in the connection's list (loop) */
    struct query_state *job_next;   /* in the job queue */
    struct query_state *ready_next; /* in the server's ready list */
    struct server *srv;
    struct conn *conn; /* NULL once the connection is gone (loop only) */
    uint64_t rid;
    uint64_t account_id;
    /* Shared between the loop and the query thread, under `lock`. */
    pthread_mutex_t lock;
    struct qframe *out_head, *out_tail;
    size_t out_bytes;
    int produced;     /* its last frame is queued (or it was cancelled) */
    int ready_queued; /* in the server's ready list */
    /* No thread runs it until its delivery drains to QUERY_RESUME_BYTES;
     * the thread's reference stays with the parked query. */
    int parked;
    atomic_int cancelled; /* stop producing */
    atomic_int refs;      /* loop + thread */
    /* Loop: ends the query with TIMEOUT query_timeout_ms after it
     * started, parked or not (queries only; an export ends with its
     * connection). */
    struct event *deadline_ev;
    /* Parameters. */
    int64_t from_ns, to_ns, bucket_ns;
    int64_t origin_ns;         /* buckets start at origin_ns + k * bucket_ns */
    Tide__V1__Aggregation agg; /* aggs[0], or NONE */
    /* Every aggregate asked for, in the order of the answer's values:
     * aggs[0] where one aggregate's values go, the rest in more_values. */
    Tide__V1__Aggregation aggs[QUERY_AGGS_MAX];
    uint32_t n_aggs;
    int group_by_device, latest, desc;
    uint64_t limit;
    /* Selection, sorted by (device, field). */
    struct qseries *series;
    uint32_t n_series;
    /* Raw: the engine iterator and the series being returned. */
    tide_iter *it;
    uint32_t cur;
    uint64_t cur_points;
    int finished; /* every result produced; only QueryEnd left */
    /* Aggregates: the engine's results, returned a chunk at a time from
     * series (or fleet field) agg_i, bucket agg_k. */
    struct tide_agg_series *agg_res;
    uint32_t agg_i;
    uint64_t agg_k;
    char **agg_fields; /* fleet-wide: the distinct fields */
    uint32_t n_agg_fields;
    struct tide_bucket *fleet, *spare; /* fleet-wide: field agg_i merged */
    uint32_t cap_fleet, cap_spare, n_fleet;
    uint8_t fleet_type;
    int fleet_ready;
    /* An export (ExportStart) instead of a query. */
    int export;
    int export_csv;
    int export_telemetry;
    struct export_state *xs; /* between steps of an export */
    /* Chunk under construction. */
    struct result *res;
    size_t n_res, cap_res;
    size_t chunk_bytes;
    /* Raw: the result that series `emit_series` appends to, so that a
     * point does not search the chunk (NULL after a chunk is sent). */
    struct result *emit_res;
    uint32_t emit_series;
    /* Statistics for QueryEnd. */
    uint64_t points;
    uint64_t series_out;
    int truncated;
    struct tide_agg_stats st;
    int64_t started_ns;
    int limited; /* counted by ratelimit_query_begin() (loop) */
    /* Loop: handed to the job queue; until then it waits for one of its
     * connection's started queries to end (query_start). */
    int started;
};

/* A query_state for request `rid` of `c` on `account` (references: the
 * loop and the thread), or NULL after answering OVERLOADED. */
struct query_state *query_new(struct conn *c, uint64_t rid, uint64_t account);
/* Free `q` and everything it holds (before query_start, or the last
 * reference). */
void query_free(struct query_state *q);
/* Select the series of `account` that `qp` names into q->series, sorted
 * by (device, field). Loop thread. Returns 0 or an error. */
int query_select(struct server *s, struct query_state *q, uint64_t account,
                 const Tide__V1__Query *qp);
/* Open the engine iterator over the selected series and [from, to). */
int query_open_iterator(struct query_state *q);
/* The engine ids of q's series, in order (tide_malloc'd; NULL without
 * memory). */
uint64_t *query_series_ids(const struct query_state *q);
/* Hand `q` to the query threads; the connection keeps it in flight. */
void query_start(struct query_state *q);
/* Query thread: encode `env` and queue it for the connection; an Error,
 * QueryEnd or ExportEnd is the query's last frame. Never waits (see
 * query_park). Returns 0, -ENOMEM or -ECANCELED. */
int query_push(struct query_state *q, const Tide__V1__Envelope *env);
/* Query thread, between steps: park `q` when more than QUERY_QUEUED_MAX
 * bytes wait for its connection. Returns 1 when parked: the caller
 * returns QUERY_PARKED at once and touches `q` no more. */
int query_park(struct query_state *q);
/* Query thread: end `q` with an Error for `rc`. */
void query_fail(struct query_state *q, int rc);
/* Produce the frames of `q`, its results then QueryEnd or Error, until
 * it ends (QUERY_DONE) or parks (QUERY_PARKED; called again on resume).
 * Query thread; query_produce.c. */
int query_execute(struct query_state *q);
/* Free what producing left in `q` (query_free). */
void query_results_fini(struct query_state *q);

/* export.c: produce the frames of export `q`, as query_execute(). */
int export_execute(struct query_state *q);
/* export.c: free q->xs (query_free). */
void export_state_free(struct query_state *q);

#endif /* TIDE_SERVER_QUERY_INT_H */
