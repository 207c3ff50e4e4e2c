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

/* Encoded bytes a query may have waiting before its thread pauses. */
#define QUERY_QUEUED_MAX (1u << 20)

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
    pthread_cond_t cv; /* the loop took frames, or the query ended */
    struct qframe *out_head, *out_tail;
    size_t out_bytes;
    int produced;         /* the thread queued its last frame */
    int ready_queued;     /* in the server's ready list */
    atomic_int cancelled; /* stop producing */
    atomic_int refs;      /* loop + thread */
    /* Parameters. */
    int64_t from_ns, to_ns, bucket_ns;
    Tide__V1__Aggregation agg;
    int group_by_device, latest, desc;
    uint64_t limit;
    /* Selection, sorted by (device, field). */
    struct qseries *series;
    uint32_t n_series;
    /* Raw: the engine iterator and the series being returned. */
    tide_iter *it;
    uint32_t cur;
    uint64_t cur_points;
    /* Raw, descending: the current series' points, returned reversed once
     * the series is complete (the engine returns ascending blocks). */
    struct tide_point *held; /* a ring of `limit` points when limited */
    uint64_t n_held, cap_held;
    uint64_t seen_held; /* points of the series seen, held or dropped */
    int finished;       /* every result produced; only QueryEnd left */
    /* An export (ExportStart) instead of a query. */
    int export;
    int export_csv;
    int export_telemetry;
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
    int64_t deadline_ns;
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
/* Query thread: encode `env` and queue it for the connection, waiting
 * while too much is queued. Returns 0, -ENOMEM or -ECANCELED. */
int query_push(struct query_state *q, const Tide__V1__Envelope *env);
/* Query thread: end `q` with an Error for `rc`. */
void query_fail(struct query_state *q, int rc);
/* Produce every frame of `q`: its results, then QueryEnd or Error (query
 * thread; query_produce.c). */
void query_execute(struct query_state *q);
/* Free what producing left in `q` (query_free). */
void query_results_fini(struct query_state *q);

/* export.c: produce every frame of export `q` (query thread). */
void export_execute(struct query_state *q);

#endif /* TIDE_SERVER_QUERY_INT_H */
