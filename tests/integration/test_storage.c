/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Storage health as an operator sees it on a real tided: ServerStatus
 * names the storage state and its cause, /metrics exports the state, the
 * out-of-space count and the free bytes (docs/operations.md, "Disk
 * full"). The engine's reactions to ENOSPC themselves are in
 * tests/unit/test_db.c, where faults can be injected.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "testutil.h"
#include "wire.h"

TestSuite(storage, .init = fixture_init, .fini = fixture_fini, .timeout = 60);

Test(storage, server_status_and_metrics_name_the_storage_state)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__ServerStatus st = TIDE__V1__SERVER_STATUS__INIT;
    int fd = wire_session(srv.port, srv.admin_key), status, seen = 0;
    char *body;

    cr_assert_geq(fd, 0);
    e.body_case = TIDE__V1__ENVELOPE__BODY_SERVER_STATUS;
    e.server_status = &st;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_SERVER_STATUS_OK);
    cr_assert_str_eq(r->server_status_ok->storage_state, "ok");
    cr_assert_str_eq(r->server_status_ok->storage_error, "");
    for (size_t i = 0; i < r->server_status_ok->n_stats; i++) {
        const Tide__V1__Stat *s = r->server_status_ok->stats[i];

        if (!strcmp(s->name, "disk_free_bytes")) {
            cr_assert_gt(s->value, 0);
            seen++;
        } else if (!strcmp(s->name, "nospace_events")) {
            cr_assert_eq(s->value, 0);
            seen++;
        }
    }
    cr_assert_eq(seen, 2);
    tide_frame_free(r, NULL);
    body = http_get(srv.http_port, "/metrics", &status);
    cr_assert_not_null(body);
    cr_assert_eq(status, 200);
    cr_assert_not_null(strstr(body, "\ntide_engine_storage_state 0\n"));
    cr_assert_not_null(strstr(body, "\ntide_engine_nospace_total 0\n"));
    cr_assert_not_null(strstr(body, "\ntide_engine_disk_free_bytes "));
    free(body);
    close(fd);
}
