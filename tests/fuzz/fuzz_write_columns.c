/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the WriteBatch column decoder: server/write.c's
 * write_group(), which turns a decoded PointGroup (delta timestamps, one
 * value array per column) into engine columns, through column_error()
 * (names, types, value counts, string lengths and UTF-8) and
 * column_values() (retention filter, bool bits, string spans).
 *
 * Those functions are static and the rest of handle_write() needs a live
 * connection, sidecar and engine, so this file includes write.c itself and
 * drives the pure part: after the whole-batch limits of write_limits()
 * (recomputed here with the default configuration, since refusing sends
 * on the connection), every group goes through write_group() with a
 * stand-in device, and every engine column it builds is checked and read
 * whole under ASan. The rest of tided is linked but not called.
 *
 * Input: byte 0 picks the retention horizon (relative to the group's own
 * timestamps, so that some points fall behind it), the rest is a
 * WriteBatch message.
 */
#include "write.c"

/* server/main.c is not linked (it has main()). */
void tided_test_alloc_arm(unsigned long nth)
{
    (void)nth;
}

unsigned long tided_test_alloc_take(void)
{
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Read every value of `tc` (ASan checks each span) and check what
 * write_group() promises: n points of a known type, bools 0 or 1. */
static void check_column(const struct tide_column *tc, uint32_t group_points)
{
    volatile uint64_t sink = 0;

    if (tc->n == 0 || tc->n > group_points)
        abort();
    for (uint32_t i = 0; i < tc->n; i++) {
        sink += (uint64_t)tc->ts_ns[i];
        switch (tc->type) {
        case TIDE_TYPE_F64:
        case TIDE_TYPE_I64:
            sink += (uint64_t)tc->v.i64[i];
            break;
        case TIDE_TYPE_BOOL:
            if (tc->v.b[i] > 1)
                abort();
            break;
        case TIDE_TYPE_STR:
            if (tc->v.str[i].len > TIDE_STR_BYTES_MAX)
                abort();
            for (uint32_t k = 0; k < tc->v.str[i].len; k++)
                sink += (uint8_t)tc->v.str[i].ptr[k];
            break;
        default:
            abort();
        }
    }
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct tided_config cfg;
    static int ready;
    struct server s;
    struct conn c;
    struct account_state acct;
    struct device_entry dev;
    struct write_req r;
    Tide__V1__WriteBatch *wb;
    uint64_t total = 0, n_cols = 0;

    if (size < 1)
        return 0;
    if (!ready) {
        tided_config_defaults(&cfg);
        ready = 1;
    }
    wb = tide__v1__write_batch__unpack(NULL, size - 1, data + 1);
    if (!wb)
        return 0;
    /* write_limits(), without its answer on the connection. */
    if (wb->n_groups > cfg.max_batch_groups)
        goto out;
    for (size_t g = 0; g < wb->n_groups; g++) {
        total +=
            (uint64_t)wb->groups[g]->n_ts_delta_ns * wb->groups[g]->n_columns;
        n_cols += wb->groups[g]->n_columns;
        if (total > cfg.max_batch_points || n_cols > 16u << 20)
            goto out;
    }
    memset(&s, 0, sizeof(s));
    memset(&c, 0, sizeof(c));
    memset(&acct, 0, sizeof(acct));
    memset(&dev, 0, sizeof(dev));
    s.cfg = cfg;
    c.srv = &s;
    c.who.account_id = 7;
    acct.account_id = 7;
    dev.account_id = 7;
    dev.id = 1;
    memset(&r, 0, sizeof(r));
    r.c = &c;
    r.s = &s;
    r.wb = wb;
    r.total = total;
    r.n_cols = (uint32_t)n_cols;
    r.acct = &acct;
    /* As write_groups() allocates them. */
    r.b.cols = tide_calloc(n_cols ? n_cols : 1, sizeof(*r.b.cols));
    r.keys = tide_calloc(n_cols ? n_cols : 1, sizeof(*r.keys));
    r.key_col = tide_calloc(n_cols ? n_cols : 1, sizeof(*r.key_col));
    if (!r.b.cols || !r.keys || !r.key_col)
        goto fini;
    for (uint32_t g = 0; g < wb->n_groups; g++) {
        const Tide__V1__PointGroup *pg = wb->groups[g];

        /* The horizon: before everything, or at the group's first
         * timestamp plus a few ns picked by byte 0. */
        r.horizon_ns = data[0] & 0x80 || pg->n_ts_delta_ns == 0
                           ? INT64_MIN
                           : pg->ts_delta_ns[0] + (data[0] & 0x7f);
        if (write_group(&r, g, &dev))
            break;
    }
    for (uint32_t i = 0; i < r.b.n_cols; i++) {
        const struct col_ref *ref = &r.key_col[i];

        if (ref->group >= wb->n_groups ||
            ref->column >= wb->groups[ref->group]->n_columns)
            abort();
        check_column(&r.b.cols[i],
                     (uint32_t)wb->groups[ref->group]->n_ts_delta_ns);
    }
fini:
    write_req_fini(&r);
out:
    tide__v1__write_batch__free_unpacked(wb, NULL);
    return 0;
}
