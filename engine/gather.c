/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gather buffer (gather.h): the points of one series collected from
 * its sources, in arrival order, before they are ordered by time.
 */
#include "gather.h"

#include <string.h>

void tide__gather_reset(struct gather *g)
{
    g->type = 0;
    g->n = 0;
    g->ordered = 1;
    g->ts.len = g->val.len = g->len.len = g->strbytes.len = 0;
}

void tide__gather_fini(struct gather *g)
{
    tide__buf_fini(&g->ts);
    tide__buf_fini(&g->val);
    tide__buf_fini(&g->len);
    tide__buf_fini(&g->strbytes);
    tide__buf_fini(&g->payload);
    tide__buf_fini(&g->tmp);
    tide__buf_fini(&g->arena);
    tide__buf_fini(&g->refs);
    tide__buf_fini(&g->reqs);
    tide__buf_fini(&g->alone);
    tide__buf_fini(&g->parts);
}

int tide__gather_reserve(struct gather *g, uint32_t n)
{
    int rc = tide__buf_reserve(&g->ts, (size_t)n * 8);

    if (rc == 0)
        rc = tide__buf_reserve(&g->val, (size_t)n * 8);
    if (rc == 0 && g->type == TIDE_TYPE_STR)
        rc = tide__buf_reserve(&g->len, (size_t)n * 4);
    return rc;
}

/* Append points [a, b) of arrays in arrival order. */
int tide__gather_append(struct gather *g, const int64_t *ts,
                        const uint64_t *val, const struct tide_str *str,
                        uint32_t a, uint32_t b)
{
    int rc = tide__gather_reserve(g, b - a);

    if (rc)
        return rc;
    for (uint32_t i = a; i < b; i++) {
        if (g->n && ts[i] <= tide__gather_ts(g)[g->n - 1])
            g->ordered = 0;
        tide__gather_ts(g)[g->n] = ts[i];
        if (g->type == TIDE_TYPE_STR) {
            tide__gather_val(g)[g->n] = g->strbytes.len;
            tide__gather_len(g)[g->n] = str[i].len;
            rc = tide__buf_append(&g->strbytes, str[i].ptr, str[i].len);
            if (rc)
                return rc;
        } else {
            tide__gather_val(g)[g->n] = val[i];
        }
        g->n++;
    }
    g->ts.len = g->val.len = (size_t)g->n * 8;
    if (g->type == TIDE_TYPE_STR)
        g->len.len = (size_t)g->n * 4;
    return 0;
}
