/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gather buffer: the points of one series collected from every source
 * a read visits (chunks, then the frozen and active heads), with the
 * scratch buffers a read reuses from series to series. Owned by one
 * query; never shared between threads.
 */
#ifndef TIDE_ENGINE_GATHER_H
#define TIDE_ENGINE_GATHER_H

#include "internal.h"

/* Points of one series gathered from every source. For strings, `val`
 * holds offsets into `strbytes` and `len` the lengths. */
struct gather {
    uint8_t type;
    int ordered;      /* the points so far are strictly ascending in time */
    uint8_t seg_type; /* type in the newest segment holding the series */
    uint32_t n;
    struct tide_buf ts;
    struct tide_buf val;
    struct tide_buf len;
    struct tide_buf strbytes;
    struct tide_buf payload; /* chunk bytes read from disk */
    struct tide_buf tmp;     /* decode scratch */
    struct tide_buf arena;   /* decoded strings of one chunk */
    struct tide_buf refs;    /* struct chunk_ref[] */
    struct tide_buf reqs;    /* struct tide_io_req[] */
    struct tide_buf alone;   /* aggregates: per-ref exclusivity flags */
    struct tide_buf parts;   /* aggregates: struct partial[] */
};

/* Forget the points (keeping every buffer's memory) for the next series. */
void tide__gather_reset(struct gather *g);
void tide__gather_fini(struct gather *g);

static inline int64_t *tide__gather_ts(const struct gather *g)
{
    return (int64_t *)(void *)g->ts.data;
}

static inline uint64_t *tide__gather_val(const struct gather *g)
{
    return (uint64_t *)(void *)g->val.data;
}

static inline uint32_t *tide__gather_len(const struct gather *g)
{
    return (uint32_t *)(void *)g->len.data;
}

/* Make room for `n` more points. Returns 0 or -ENOMEM. */
int tide__gather_reserve(struct gather *g, uint32_t n);

/* Append points [a, b) of arrays in arrival order (`val` for numeric
 * types, `str` for strings, which are copied). Returns 0 or -ENOMEM. */
int tide__gather_append(struct gather *g, const int64_t *ts,
                        const uint64_t *val, const struct tide_str *str,
                        uint32_t a, uint32_t b);

#endif /* TIDE_ENGINE_GATHER_H */
