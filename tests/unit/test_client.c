/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of libtide without a server (client/writer.c, client/client.c) and
 * of the CLI's parsing (client/cli/parse.c): the exact bytes of a sealed
 * WriteBatch, sequence numbering, the overflow policies, backoff bounds,
 * time expressions, CSV and line records.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../../client/cli/parse.h"
#include "../../client/internal.h"

#define T0_NS 1700000000000000000LL

static tide_client *new_client(uint64_t buffer_max, enum tide_overflow ov)
{
    struct tide_client_options o;
    tide_client *c = NULL;
    int rc;

    tide_client_options_init(&o);
    o.producer_id = 0x5eedf00d;
    o.buffer_points_max = buffer_max;
    o.overflow = ov;
    rc = tide__client_new(&o, &c);
    cr_assert_eq(rc, 0, "tide__client_new: %s", tide_strerror(rc));
    return c;
}

static void append_f64(tide_client *c, const char *dev, const char *field,
                       int64_t ts, double v, int want)
{
    int rc = tide__writer_append(c, dev, field, TIDE_VALUE_F64, ts, &v);

    cr_assert_eq(rc, want, "append: %s", tide_strerror(rc));
}

/* Frozen: request 1, producer 0x5eedf00d, sequence 1; one group truck-7
 * at T0 and T0+10s with two columns: velocity f64 12.5, 13.25 and moving
 * bool true, false (fields of a device at the same timestamps share a
 * group). */
static const char golden_hex[] =
    "57000000" /* frame length 87 */
    "0801"     /* request_id 1 */
    "a20152"   /* write_batch, 82 bytes */
    "088de0b7f705"
    "1001" /* producer, sequence 1 */
    "1a48"
    "0a07747275636b2d37"               /* group: device truck-7 */
    "120e8080d0e2c6bfce972f8090dfc04a" /* ts T0, +10 s (zigzag) */
    "1a1e0a0876656c6f6369747910011a10" /* column velocity, f64 */
    "0000000000002940"
    "0000000000802a40"         /* 12.5, 13.25 */
    "1a0d0a066d6f76696e671003" /* column moving, bool */
    "2a0101";                  /* bool_bits: true, false */

Test(client, write_batch_golden_bytes)
{
    tide_client *c = new_client(1000, TIDE_OVERFLOW_BLOCK);
    int on = 1, off = 0;
    char hex[512] = "";
    struct batch *b;

    append_f64(c, "truck-7", "velocity", T0_NS, 12.5, 0);
    cr_assert_eq(tide__writer_append(c, "truck-7", "moving", TIDE_VALUE_BOOL,
                                     T0_NS, &on),
                 0);
    append_f64(c, "truck-7", "velocity", T0_NS + 10000000000LL, 13.25, 0);
    cr_assert_eq(tide__writer_append(c, "truck-7", "moving", TIDE_VALUE_BOOL,
                                     T0_NS + 10000000000LL, &off),
                 0);
    cr_assert_eq(tide__writer_seal(c), 0);
    b = c->q_head;
    cr_assert_not_null(b);
    cr_assert_eq(b->points, 4);
    for (size_t i = 0; i < b->len && i * 2 + 2 < sizeof(hex); i++)
        sprintf(hex + 2 * i, "%02x", b->frame[i]);
    cr_assert_str_eq(hex, golden_hex);
    tide_client_close(c);
}

Test(client, sequence_strictly_increasing)
{
    tide_client *c = new_client(1000, TIDE_OVERFLOW_BLOCK);
    uint64_t prev_seq = 0, prev_id = 0, n = 0;

    cr_assert_eq(tide__writer_seal(c), 0); /* nothing open: no batch */
    cr_assert_null(c->q_head);
    for (int i = 0; i < 5; i++) {
        append_f64(c, "d", "f", T0_NS + i, i, 0);
        cr_assert_eq(tide__writer_seal(c), 0);
    }
    for (struct batch *b = c->q_head; b; b = b->next, n++) {
        cr_assert_gt(b->sequence, prev_seq);
        cr_assert_gt(b->request_id, prev_id);
        prev_seq = b->sequence;
        prev_id = b->request_id;
    }
    cr_assert_eq(n, 5);
    cr_assert_eq(prev_seq, 5);
    tide_client_close(c);
}

Test(client, overflow_error)
{
    tide_client *c = new_client(3, TIDE_OVERFLOW_ERROR);

    for (int i = 0; i < 3; i++)
        append_f64(c, "d", "f", i, i, 0);
    append_f64(c, "d", "f", 3, 3, TIDE_EFULL);
    cr_assert_eq(c->st.points_written, 3);
    cr_assert_eq(c->n_open_points, 3);
    tide_client_close(c);
}

Test(client, overflow_drop_oldest)
{
    tide_client *c = new_client(4, TIDE_OVERFLOW_DROP_OLDEST);

    append_f64(c, "d", "f", 0, 0, 0);
    append_f64(c, "d", "f", 1, 1, 0);
    cr_assert_eq(tide__writer_seal(c), 0);
    append_f64(c, "d", "f", 2, 2, 0);
    append_f64(c, "d", "f", 3, 3, 0);
    cr_assert_eq(tide__writer_seal(c), 0);
    append_f64(c, "d", "f", 4, 4, 0); /* drops the first batch (2 points) */
    cr_assert_eq(c->st.points_dropped, 2);
    cr_assert_eq(c->sealed_points, 2);
    cr_assert_eq(c->n_open_points, 1);
    cr_assert_eq(c->q_head->sequence, 2);
    tide_client_close(c);
}

Test(client, overflow_block_asks_to_wait)
{
    tide_client *c = new_client(2, TIDE_OVERFLOW_BLOCK);

    append_f64(c, "d", "f", 0, 0, 0);
    append_f64(c, "d", "f", 1, 1, 0);
    append_f64(c, "d", "f", 2, 2, TIDE__NEED_WAIT);
    cr_assert_eq(c->st.points_written, 2);
    cr_assert_eq(c->st.points_dropped, 0);
    tide_client_close(c);
}

Test(client, type_change_seals)
{
    tide_client *c = new_client(100, TIDE_OVERFLOW_BLOCK);
    int64_t i = 7;

    append_f64(c, "d", "f", 0, 1.5, 0);
    cr_assert_eq(tide__writer_append(c, "d", "f", TIDE_VALUE_I64, 1, &i), 0);
    cr_assert_not_null(c->q_head);
    cr_assert_eq(c->q_head->points, 1);
    cr_assert_eq(c->n_open_points, 1);
    cr_assert_eq(tide__writer_append(c, "", "f", TIDE_VALUE_I64, 1, &i),
                 TIDE_EINVAL);
    tide_client_close(c);
}

Test(client, backoff_jitter_bounds)
{
    uint64_t rands[] = {0, 1, 12345, UINT64_MAX};

    for (uint32_t a = 0; a < 40; a++) {
        uint64_t d = 100;

        for (uint32_t i = 0; i < a && d < 10000; i++)
            d *= 2;
        if (d > 10000)
            d = 10000;
        for (size_t r = 0; r < sizeof(rands) / sizeof(rands[0]); r++) {
            uint32_t v = tide__client_backoff_ms(100, 10000, a, rands[r]);

            cr_assert_geq(v, d / 2, "attempt %u: %u < %lu", a, v,
                          (unsigned long)(d / 2));
            cr_assert_leq(v, d, "attempt %u: %u > %lu", a, v, (unsigned long)d);
        }
    }
    cr_assert_eq(tide__client_backoff_ms(100, 10000, 0, 0), 50);
    cr_assert_eq(tide__client_backoff_ms(100, 10000, 3, 400), 800);
}

Test(client, parse_duration)
{
    int64_t v;

    cr_assert_eq(tide__cli_parse_duration("1h", &v), 0);
    cr_assert_eq(v, 3600000000000LL);
    cr_assert_eq(tide__cli_parse_duration("500ms", &v), 0);
    cr_assert_eq(v, 500000000LL);
    cr_assert_eq(tide__cli_parse_duration("7", &v), 0);
    cr_assert_eq(v, 7);
    cr_assert_eq(tide__cli_parse_duration("1x", &v), -EINVAL);
    cr_assert_eq(tide__cli_parse_duration("-1s", &v), -EINVAL);
    cr_assert_eq(tide__cli_parse_duration("99999999999d", &v), -EINVAL);
}

Test(client, parse_time_expressions)
{
    const int64_t now = T0_NS;
    int64_t v;

    cr_assert_eq(tide__cli_parse_time("now", now, &v), 0);
    cr_assert_eq(v, now);
    cr_assert_eq(tide__cli_parse_time("-1h", now, &v), 0);
    cr_assert_eq(v, now - 3600000000000LL);
    cr_assert_eq(tide__cli_parse_time("now-30s", now, &v), 0);
    cr_assert_eq(v, now - 30000000000LL);
    cr_assert_eq(tide__cli_parse_time("+5m", now, &v), 0);
    cr_assert_eq(v, now + 300000000000LL);
    cr_assert_eq(tide__cli_parse_time("2023-11-14T22:13:20Z", now, &v), 0);
    cr_assert_eq(v, T0_NS);
    cr_assert_eq(tide__cli_parse_time("2023-11-14T23:13:20.5+01:00", now, &v),
                 0);
    cr_assert_eq(v, T0_NS + 500000000LL);
    cr_assert_eq(tide__cli_parse_time("1700000000000000000", now, &v), 0);
    cr_assert_eq(v, T0_NS);
    cr_assert_eq(tide__cli_parse_time("yesterday", now, &v), -EINVAL);
    cr_assert_eq(tide__cli_parse_time("2023-13-14T22:13:20Z", now, &v),
                 -EINVAL);
    cr_assert_eq(tide__cli_parse_time("", now, &v), -EINVAL);
}

Test(client, parse_csv_types)
{
    struct tide__cli_point p;
    char l1[] = "truck-7,speed,1700000000000000000,42i\n";
    char l2[] = "truck-7,temp,2023-11-14T22:13:20Z,21.5";
    char l3[] = "truck-7,moving,1,true";
    char l4[] = "truck-7,note,1,\"a,\"\"b\"\"\"";
    char l5[] = "truck-7,note,1,hello, world";
    char l6[] = "# comment";
    char l7[] = "truck-7,speed,1";
    char l8[] = ",speed,1,2";

    cr_assert_eq(tide__cli_parse_csv(l1, 0, &p), 0);
    cr_assert_str_eq(p.device, "truck-7");
    cr_assert_str_eq(p.field, "speed");
    cr_assert_eq(p.ts_ns, T0_NS);
    cr_assert_eq(p.type, TIDE_VALUE_I64);
    cr_assert_eq(p.i64, 42);
    cr_assert_eq(tide__cli_parse_csv(l2, 0, &p), 0);
    cr_assert_eq(p.type, TIDE_VALUE_F64);
    cr_assert_eq(p.f64, 21.5);
    cr_assert_eq(p.ts_ns, T0_NS);
    cr_assert_eq(tide__cli_parse_csv(l3, 0, &p), 0);
    cr_assert_eq(p.type, TIDE_VALUE_BOOL);
    cr_assert_eq(p.b, 1);
    cr_assert_eq(tide__cli_parse_csv(l4, 0, &p), 0);
    cr_assert_eq(p.type, TIDE_VALUE_STR);
    cr_assert_str_eq(p.str, "a,\"b\"");
    cr_assert_eq(tide__cli_parse_csv(l5, 0, &p), 0);
    cr_assert_str_eq(p.str, "hello, world");
    cr_assert_eq(tide__cli_parse_csv(l6, 0, &p), 1);
    cr_assert_eq(tide__cli_parse_csv(l7, 0, &p), -EINVAL);
    cr_assert_eq(tide__cli_parse_csv(l8, 0, &p), -EINVAL);
}

Test(client, parse_infer_value)
{
    struct tide__cli_point p;

    tide__cli_infer_value("-17i", &p);
    cr_assert_eq(p.type, TIDE_VALUE_I64);
    cr_assert_eq(p.i64, -17);
    tide__cli_infer_value("22", &p);
    cr_assert_eq(p.type, TIDE_VALUE_F64, "plain numbers are floats");
    cr_assert_eq(p.f64, 22);
    tide__cli_infer_value("12i3", &p);
    cr_assert_eq(p.type, TIDE_VALUE_STR);
    tide__cli_infer_value("1e3", &p);
    cr_assert_eq(p.type, TIDE_VALUE_F64);
    tide__cli_infer_value("nan", &p);
    cr_assert_eq(p.type, TIDE_VALUE_STR);
    tide__cli_infer_value("false", &p);
    cr_assert_eq(p.type, TIDE_VALUE_BOOL);
    cr_assert_eq(p.b, 0);
    tide__cli_infer_value("", &p);
    cr_assert_eq(p.type, TIDE_VALUE_STR);
}

Test(client, parse_line_format)
{
    struct tide__cli_point p[4];
    size_t n = 0;
    char l1[] =
        "truck-7 speed=42i temp=21.5 note=\"in yard\" 1700000000000000000";
    char l2[] = "truck-7 moving=true";
    char l3[] = "truck-7";
    char l4[] = "truck-7 a=1 b=2 c=3 d=4 e=5";

    cr_assert_eq(tide__cli_parse_line(l1, 5, p, 4, &n), 0);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(p[0].field, "speed");
    cr_assert_eq(p[0].i64, 42);
    cr_assert_eq(p[1].type, TIDE_VALUE_F64);
    cr_assert_str_eq(p[2].str, "in yard");
    cr_assert_eq(p[2].ts_ns, T0_NS);
    cr_assert_eq(tide__cli_parse_line(l2, 5, p, 4, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(p[0].ts_ns, 5);
    cr_assert_eq(tide__cli_parse_line(l3, 5, p, 4, &n), -EINVAL);
    cr_assert_eq(tide__cli_parse_line(l4, 5, p, 4, &n), -EINVAL);
}
