/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Requests to a shard's writer thread, the tickets that complete them, and
 * the inbox that carries them: a lock-free stack that appenders push to
 * and the writer empties in one exchange.
 */
#ifndef TIDE_ENGINE_INBOX_H
#define TIDE_ENGINE_INBOX_H

#include <pthread.h>
#include <stdatomic.h>

#include "internal.h"

enum req_kind {
    REQ_BATCH = 1,
    REQ_FLUSH = 2,
    REQ_RESUME = 3, /* write the abort list and leave the no-space state */
};

/* Completion shared by the per-shard parts of one append or flush. */
struct ticket {
    atomic_uint pending; /* parts not yet complete */
    atomic_int err;      /* first error of any part */
    unsigned parts;
    tide_append_cb cb;
    void *ctx;
    /* A batch over several shards (shard.c): its id, the parts whose WAL
     * record is durable, and whether a part failed (then no part is
     * applied). Guarded by the db's dec_mu. */
    uint64_t batch_id; /* 0: one shard, or not a batch */
    unsigned durable;
    int aborted;
    /* Deduplication (db.c): called once, before `cb`, with the result. */
    void (*on_done)(struct ticket *t, int rc);
    void *owner;
    uint64_t producer_id;
    uint64_t sequence;
    uint64_t prev_accepted; /* the producer's accepted before this batch */
};

/* A shard's part of an append (its WAL record), or another request. */
struct req {
    struct req *next;
    enum req_kind kind;
    struct ticket *ticket;
    uint32_t points;
    uint8_t rec_type; /* TIDE_WAL_BATCH or TIDE_WAL_PART */
    int rc;           /* the writer's verdict, before completion */
    uint32_t rec_len;
    _Alignas(8) uint8_t rec[]; /* WAL record payload */
};

struct inbox {
    _Atomic(struct req *) stack; /* LIFO stack pushed by appenders */
    atomic_uint depth;
    atomic_int sleeping;
    pthread_mutex_t wake_mu;
    pthread_cond_t wake_cv;
};

void tide__inbox_init(struct inbox *in);

/* Complete every request still queued with TIDE_ECLOSED and release the
 * inbox. No thread may push or take any more. */
void tide__inbox_fini(struct inbox *in);

/* Queue `r` (now owned by the inbox) and wake the writer if it sleeps. */
void tide__inbox_push(struct inbox *in, struct req *r);

/* Take every queued request, oldest first; sleeps while there is none.
 * Returns NULL only when *stopping is set and the inbox is empty. */
struct req *tide__inbox_take(struct inbox *in, const int *stopping);

/* Wake a writer sleeping in tide__inbox_take() (to see *stopping). */
void tide__inbox_wake(struct inbox *in);

/* Requests queued and not yet taken. */
unsigned tide__inbox_depth(struct inbox *in);

/* Complete request `r` with `rc` and free it; its ticket's callback fires
 * when the last part completes. */
void tide__inbox_done(struct req *r, int rc);

/* tide__inbox_done() on every request of the list. */
void tide__inbox_complete(struct req *list, int rc);

#endif /* TIDE_ENGINE_INBOX_H */
