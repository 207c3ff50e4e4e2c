/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration tests of the write path's caches against the real tided:
 * the account table and device cache are invalidated by the sidecar
 * itself (a tier change, a pause or a delete is seen by the very next
 * write), and PointGroup.tags are upserted onto the device.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "testutil.h"
#include "wire.h"

TestSuite(write, .init = fixture_init, .fini = fixture_fini, .timeout = 120);

/* ---- Helpers ------------------------------------------------------------- */

/* As the operator: put `account` on tier `name`. */
static void tier_set(int fd, uint64_t account, const char *name)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__TierSet ts = TIDE__V1__TIER_SET__INIT;

    ts.account_id = account;
    ts.tier = (char *)name;
    e.body_case = TIDE__V1__ENVELOPE__BODY_TIER_SET;
    e.tier_set = &ts;
    wire_call_ok(fd, &e, "tier set");
}

/* A one-group batch of 5 f64 points of `device`/temp at T0 + 0..4, with
 * tags "k=v" pairs (NULL-terminated, may be NULL). The response. */
static Tide__V1__Envelope *write5(int fd, const char *device,
                                  const char *const *tags)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__WriteBatch wb = TIDE__V1__WRITE_BATCH__INIT;
    Tide__V1__PointGroup g = TIDE__V1__POINT_GROUP__INIT, *gp = &g;
    Tide__V1__Column c = TIDE__V1__COLUMN__INIT, *cp = &c;
    Tide__V1__Tag t[8], *tp[8];
    char kv[8][64];
    int64_t deltas[5];
    double vals[5];

    for (int i = 0; i < 5; i++) {
        deltas[i] = i ? 1 : T0;
        vals[i] = i;
    }
    for (size_t i = 0; tags && tags[i]; i++) {
        cr_assert_lt(i, 8);
        snprintf(kv[i], sizeof(kv[i]), "%s", tags[i]);
        tide__v1__tag__init(&t[i]);
        t[i].key = kv[i];
        t[i].value = strchr(kv[i], '=') + 1;
        t[i].value[-1] = 0;
        tp[i] = &t[i];
        g.n_tags = i + 1;
    }
    g.tags = tp;
    c.field = "temp";
    c.type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64;
    c.f64 = vals;
    c.n_f64 = 5;
    g.device = (char *)device;
    g.ts_delta_ns = deltas;
    g.n_ts_delta_ns = 5;
    g.columns = &cp;
    g.n_columns = 1;
    wb.groups = &gp;
    wb.n_groups = 1;
    e.body_case = TIDE__V1__ENVELOPE__BODY_WRITE_BATCH;
    e.write_batch = &wb;
    return wire_next(fd, &e);
}

/* write5() and expect all 5 points accepted. */
static void write5_ok(int fd, const char *device, const char *const *tags)
{
    Tide__V1__Envelope *r = write5(fd, device, tags);

    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK,
              "write: %s", wire_why(r));
    cr_assert_eq(r->write_ack->accepted_points, 5, "accepted %llu",
                 (unsigned long long)r->write_ack->accepted_points);
    tide_frame_free(r, NULL);
}

/* ---- Tests --------------------------------------------------------------- */

/* The account table used to keep a tier for 5 s after TierSet or
 * TierUpsert: the write right after a change still ran on the old plan. */
Test(write, tier_change_is_seen_by_the_next_write)
{
    int ofd = wire_session(srv.port, srv.admin_key), wfd;
    uint64_t account = wire_make_account(ofd, "tier@example.com");
    Tide__V1__Envelope *r;

    wfd = wire_owner_session(srv.port, "tier@example.com");
    write5_ok(wfd, "dev1", NULL);
    /* A plan whose daily quota the next 5 points exceed. */
    wire_tier_upsert(ofd, "tiny", 0, 7);
    tier_set(ofd, account, "tiny");
    r = write5(wfd, "dev1", NULL);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_ERROR,
              "the write after TierSet ran on the old tier");
    cr_assert_eq(r->error->code,
                 TIDE__V1__ERROR_CODE__ERROR_CODE_QUOTA_EXCEEDED, "%s",
                 wire_why(r));
    tide_frame_free(r, NULL);
    /* Raising the quota of the account's tier is seen at once too. */
    wire_tier_upsert(ofd, "tiny", 0, 1000);
    write5_ok(wfd, "dev1", NULL);
    close(wfd);
    close(ofd);
}

/* Points of field temp over [T0, T0 + 10) of the devices whose tags match
 * every "k=v" of `match` (NULL-terminated). */
static size_t query_tagged(int fd, const char *const *match)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__Query q = TIDE__V1__QUERY__INIT;
    Tide__V1__DeviceSelector sel = TIDE__V1__DEVICE_SELECTOR__INIT;
    Tide__V1__TagMatch tm[4], *tp[4];
    char kv[4][64];
    size_t n = 0;

    for (size_t i = 0; match[i]; i++) {
        cr_assert_lt(i, 4);
        snprintf(kv[i], sizeof(kv[i]), "%s", match[i]);
        tide__v1__tag_match__init(&tm[i]);
        tm[i].key = kv[i];
        tm[i].value = strchr(kv[i], '=') + 1;
        tm[i].value[-1] = 0;
        tm[i].op = TIDE__V1__TAG_OP__TAG_OP_EQ;
        tp[i] = &tm[i];
        sel.n_tags = i + 1;
    }
    sel.tags = tp;
    q.devices = &sel;
    q.from_ns = T0;
    q.to_ns = T0 + 10;
    e.body_case = TIDE__V1__ENVELOPE__BODY_QUERY;
    e.query = &q;
    e.request_id = next_rid++;
    cr_assert_eq(wire_send(fd, &e), 0);
    for (;;) {
        r = wire_recv(fd);
        cr_assert_not_null(r, "query: no response");
        if (r->body_case == TIDE__V1__ENVELOPE__BODY_QUERY_END) {
            tide_frame_free(r, NULL);
            return n;
        }
        cr_assert_eq(r->body_case, TIDE__V1__ENVELOPE__BODY_QUERY_CHUNK,
                     "query: %s", wire_why(r));
        for (size_t s = 0; s < r->query_chunk->n_series; s++)
            n += r->query_chunk->series[s]->n_ts_delta_ns;
        tide_frame_free(r, NULL);
    }
}

/* The JSONL export of `account` (no telemetry), malloc'd. */
static char *export_rows(int fd, uint64_t account)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__ExportStart xs = TIDE__V1__EXPORT_START__INIT;
    char *all = calloc(1, 1);
    size_t len = 0;

    xs.account_id = account;
    e.body_case = TIDE__V1__ENVELOPE__BODY_EXPORT_START;
    e.export_start = &xs;
    e.request_id = next_rid++;
    cr_assert_eq(wire_send(fd, &e), 0);
    while ((r = wire_recv(fd)) &&
           r->body_case == TIDE__V1__ENVELOPE__BODY_EXPORT_CHUNK) {
        all = realloc(all, len + r->export_chunk->data.len + 1);
        memcpy(all + len, r->export_chunk->data.data,
               r->export_chunk->data.len);
        len += r->export_chunk->data.len;
        all[len] = 0;
        tide_frame_free(r, NULL);
    }
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_EXPORT_END,
              "export: %s", wire_why(r));
    tide_frame_free(r, NULL);
    return all;
}

/* DeviceGet's tags of `device`, as "k=v,k=v". */
static void device_tags(int fd, const char *device, char *out, size_t cap)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__DeviceGet g = TIDE__V1__DEVICE_GET__INIT;
    size_t off = 0;

    g.name = (char *)device;
    e.body_case = TIDE__V1__ENVELOPE__BODY_DEVICE_GET;
    e.device_get = &g;
    e.request_id = next_rid++;
    r = wire_call(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_DEVICE,
              "device get: %s", wire_why(r));
    out[0] = 0;
    for (size_t i = 0; i < r->device->n_tags; i++)
        off += (size_t)snprintf(out + off, cap - off, "%s%s=%s", i ? "," : "",
                                r->device->tags[i]->key,
                                r->device->tags[i]->value);
    tide_frame_free(r, NULL);
}

/* PointGroup.tags was documented as upserted but never read. */
Test(write, point_group_tags_are_upserted_onto_the_device)
{
    int ofd = wire_session(srv.port, srv.admin_key), wfd;
    uint64_t account = wire_make_account(ofd, "tags@example.com");
    const char *const first[] = {"site=a", "rack=1", NULL};
    const char *const moved[] = {"site=c", NULL};
    const char *const bad[] = {"k=v,w", NULL};
    const char *const site_a[] = {"site=a", NULL};
    const char *const site_b[] = {"site=b", NULL};
    const char *const site_c[] = {"site=c", NULL};
    const char *const c_rack1[] = {"site=c", "rack=1", NULL};
    Tide__V1__Envelope *r;
    char *rows, text[256];

    wfd = wire_owner_session(srv.port, "tags@example.com");
    write5_ok(wfd, "dev1", first);
    write5_ok(wfd, "dev2", site_b);
    write5_ok(wfd, "dev3", NULL);
    cr_assert_eq(query_tagged(wfd, site_a), 5);
    cr_assert_eq(query_tagged(wfd, site_b), 5);
    /* A second write with changed tags updates them: site moves, rack
     * stays (an upsert, not a replacement). */
    write5_ok(wfd, "dev1", moved);
    cr_assert_eq(query_tagged(wfd, site_a), 0);
    cr_assert_eq(query_tagged(wfd, site_c), 5);
    cr_assert_eq(query_tagged(wfd, c_rack1), 5);
    device_tags(wfd, "dev1", text, sizeof(text));
    cr_assert_str_eq(text, "site=c,rack=1");
    device_tags(wfd, "dev3", text, sizeof(text));
    cr_assert_str_eq(text, "");
    rows = export_rows(ofd, account);
    cr_assert_not_null(strstr(rows, "\"site=c,rack=1\""), "%s", rows);
    cr_assert_not_null(strstr(rows, "\"site=b\""), "%s", rows);
    free(rows);
    /* Tags that cannot be stored refuse the group, not the batch. */
    r = write5(wfd, "dev2", bad);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK, "%s",
              wire_why(r));
    cr_assert_eq(r->write_ack->accepted_points, 0);
    cr_assert_eq(r->write_ack->rejected_points, 5);
    cr_assert_eq(r->write_ack->n_rejections, 1);
    cr_assert_eq(r->write_ack->rejections[0]->code,
                 TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT);
    tide_frame_free(r, NULL);
    cr_assert_eq(query_tagged(wfd, site_b), 5);
    close(wfd);
    close(ofd);
}
