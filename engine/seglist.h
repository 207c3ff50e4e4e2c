/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The published segment list: an immutable, refcounted snapshot of the
 * segments a read may use. Readers take the current list with
 * tide__seglist_acquire() (a pointer copy and an increment under a mutex
 * held for nothing else) and keep it, without any lock, for as long as
 * their chunk I/O takes. A flush (and later a compaction) builds a new
 * list beside the current one and swaps it in with tide__seglist_publish();
 * a list is freed when its last holder releases it, and a segment is
 * closed when the last list holding it is freed. Readers never block the
 * writer: LMDB's rule (lmdb:mdb.c, "readers never block writers").
 */
#ifndef TIDE_ENGINE_SEGLIST_H
#define TIDE_ENGINE_SEGLIST_H

#include <stdatomic.h>

#include "segment.h"

struct tide_db;

/* A segment's share count across lists. */
struct segref {
    atomic_uint refs; /* lists holding the segment */
    struct seg *seg;
};

struct seglist {
    atomic_uint refs; /* holders: the db while current, and each reader */
    uint64_t gen;     /* the current list's gen grows with every publish */
    uint32_t n;
    struct seg **segs;   /* [n] oldest first: a newer source wins */
    struct segref **own; /* [n] segs[i] is own[i]->seg */
};

/* An empty list of generation 0, held once. Returns 0 or -ENOMEM. */
int tide__seglist_new(struct seglist **out);

/*
 * A new list: `base` without the segments in drop[0..n_drop), with
 * add[0..n_add) (in that order) in the place of `at`, one of the dropped
 * segments, or after all others when `at` is NULL. The new list holds one
 * reference to it; ownership of the added segments passes to the new
 * list on success only. Its gen is base->gen + 1. `db` maps series to
 * shards to mark the segments holding one shard's series. Returns 0 or
 * -ENOMEM (nothing changed).
 */
int tide__seglist_edit(struct tide_db *db, const struct seglist *base,
                       struct seg *const *drop, uint32_t n_drop,
                       struct seg **add, uint32_t n_add, const struct seg *at,
                       struct seglist **out);

/* The db's current list, held for the caller until tide__seglist_release.
 * Never blocks on I/O. */
struct seglist *tide__seglist_acquire(struct tide_db *db);

/* Let go of a list. Accepts NULL. The last release frees the list and
 * closes the segments no other list holds. */
void tide__seglist_release(struct seglist *l);

/* Make `l` (made by tide__seglist_edit from the current list) the db's
 * current list, taking over its reference, and release the previous one.
 * Caller serialises publications (man_mu; invariant 2). */
void tide__seglist_publish(struct tide_db *db, struct seglist *l);

#endif /* TIDE_ENGINE_SEGLIST_H */
