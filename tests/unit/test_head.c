/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of the in-memory head (engine/head.c): append and find, type
 * conflicts, ordering with last-arrival-wins duplicates, and allocation
 * failures.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "head.h"

Test(head, append_find_and_type_conflict)
{
    struct head h;
    int64_t ts[] = {3, 1, 2};
    uint64_t v[] = {30, 10, 20};
    struct hseries *s;

    tide__head_init(&h);
    cr_assert_eq(tide__head_append(&h, 5, 1, 0, TIDE_TYPE_I64, 3, ts, v, NULL),
                 0);
    s = tide__head_find(&h, 5);
    cr_assert_not_null(s);
    cr_assert_eq(s->n, 3);
    cr_assert_eq(s->sorted, 0);
    cr_assert_eq(h.points, 3);
    cr_assert_eq(h.min_ts, 1);
    cr_assert_eq(h.max_ts, 3);
    cr_assert_null(tide__head_find(&h, 6));
    cr_assert_eq(tide__head_append(&h, 5, 1, 0, TIDE_TYPE_F64, 1, ts, v, NULL),
                 TIDE_ETYPE);
    cr_assert_eq(tide__hseries_normalize(s), 0);
    cr_assert_eq(s->ts[0], 1);
    cr_assert_eq(s->val[2], 30);
    tide__head_fini(&h);
}

Test(head, many_series_grow_the_table)
{
    struct head h;
    int64_t ts = 1;
    uint64_t v = 2;

    tide__head_init(&h);
    for (uint64_t id = 1; id <= 5000; id++)
        cr_assert_eq(
            tide__head_append(&h, id, 1, 0, TIDE_TYPE_I64, 1, &ts, &v, NULL),
            0);
    cr_assert_eq(h.n_series, 5000);
    for (uint64_t id = 1; id <= 5000; id++)
        cr_assert_not_null(tide__head_find(&h, id));
    tide__head_fini(&h);
}

Test(head, ts_order_keeps_last_duplicate)
{
    int64_t ts[] = {5, 1, 5, 3, 1, 5};
    uint32_t idx[6], n;

    cr_assert_eq(tide__ts_order(ts, 6, idx, &n), 0);
    cr_assert_eq(n, 3);
    cr_assert_eq(idx[0], 4); /* the later of the two 1s */
    cr_assert_eq(idx[1], 3);
    cr_assert_eq(idx[2], 5); /* the last of the three 5s */
}

Test(head, strings_are_copied)
{
    struct head h;
    char buf[8] = "abc";
    struct tide_str s = {buf, 3};
    int64_t ts = 1;
    struct hseries *hs;

    tide__head_init(&h);
    cr_assert_eq(
        tide__head_append(&h, 1, 1, 0, TIDE_TYPE_STR, 1, &ts, NULL, &s), 0);
    buf[0] = 'x';
    hs = tide__head_find(&h, 1);
    cr_assert_eq(memcmp(hs->str[0].ptr, "abc", 3), 0);
    tide__head_fini(&h);
}

Test(head, allocation_failure_appends_nothing)
{
    struct head h;
    int64_t ts[] = {1, 2};
    uint64_t v[] = {1, 2};

    tide__head_init(&h);
    for (unsigned long nth = 1; nth <= 3; nth++) {
        int rc;

        tide_alloc_fail_nth(nth);
        rc = tide__head_append(&h, 1, 1, 0, TIDE_TYPE_I64, 2, ts, v, NULL);
        tide_alloc_fail_nth(0);
        cr_assert(rc == 0 || rc == -ENOMEM);
        if (rc == 0)
            break;
        cr_assert_eq(h.points, 0);
    }
    tide__head_fini(&h);
    cr_assert_eq(tide_alloc_live_bytes(), 0);
}
