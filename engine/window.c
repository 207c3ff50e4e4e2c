/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Time windows (window.h): which windows a head's points fall in, and the
 * span of each.
 */
#include "window.h"

#include "ts.h"

int tide__window_collect(const struct head *h, int64_t part_ns,
                         struct tide_buf *out)
{
    for (uint32_t i = 0; i < h->n_slots; i++) {
        struct hseries *s = h->slots[i].s;
        uint32_t j = 0;

        while (s && j < s->n) {
            struct window k = {s->tier, tide__floor_div(s->ts[j], part_ns)};
            struct window *keys = (struct window *)out->data;
            size_t n = out->len / sizeof(k), x;
            int64_t end;
            int rc;

            for (x = 0; x < n; x++)
                if (keys[x].tier == k.tier && keys[x].part == k.part)
                    break;
            if (x == n) {
                rc = tide__buf_append(out, &k, sizeof(k));
                if (rc)
                    return rc;
            }
            end = k.part >= INT64_MAX / part_ns ? INT64_MAX
                                                : (k.part + 1) * part_ns;
            j = end == INT64_MAX ? s->n
                                 : tide__ts_lower_bound(s->ts, s->n, end);
        }
    }
    return 0;
}

void tide__window_bounds(struct window w, int64_t part_ns, int64_t *lo,
                         int64_t *hi)
{
    *lo = w.part <= INT64_MIN / part_ns ? INT64_MIN : w.part * part_ns;
    *hi =
        w.part >= INT64_MAX / part_ns - 1 ? INT64_MAX : (w.part + 1) * part_ns;
}
