/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Searches over ascending timestamp arrays, shared by the flusher (window
 * bounds of a head series) and the read path (points of a decoded chunk
 * within a query's range).
 */
#ifndef TIDE_ENGINE_TS_H
#define TIDE_ENGINE_TS_H

#include <stdint.h>

/* First index in ts[0..n) with ts >= bound; n when there is none. ts must
 * be ascending (duplicates allowed). */
static inline uint32_t tide__ts_lower_bound(const int64_t *ts, uint32_t n,
                                            int64_t bound)
{
    uint32_t a = 0, b = n;

    while (a < b) {
        uint32_t m = a + (b - a) / 2;

        if (ts[m] < bound)
            a = m + 1;
        else
            b = m;
    }
    return a;
}

/* floor(a / b) for b > 0: the window index of a timestamp. */
static inline int64_t tide__floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;

    return (a % b != 0 && a < 0) ? q - 1 : q;
}

#endif /* TIDE_ENGINE_TS_H */
