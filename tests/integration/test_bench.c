/* SPDX-License-Identifier: Apache-2.0 */
/* tide-bench against the real tided: a short mixed run (ingest and queries
 * at once), then a verify whose count and checksum must match exactly. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "wire.h"

TestSuite(bench, .init = fixture_init, .fini = fixture_fini, .timeout = 120);

/* tide-bench sits next to tided in the build directory. */
static int run_bench(const char *mode, const char *extra, const char *log)
{
    const char *tided = getenv("TIDED_BIN");
    char bin[1024], cmd[4096];
    const char *slash;
    int st;

    if (!tided || !*tided)
        tided = "build/release/tided";
    slash = strrchr(tided, '/');
    snprintf(bin, sizeof(bin), "%.*stide-bench",
             slash ? (int)(slash - tided) + 1 : 0, tided);
    snprintf(cmd, sizeof(cmd),
             "%s %s --port %d --admin-key-file %s/admin.key --server-pid %d "
             "--workload iot --devices 20 --hours 6 --start 1704067200 "
             "--seed 7 --no-progress %s > %s 2>&1",
             bin, mode, srv.port, dir, (int)srv.pid, extra, log);
    st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void show(const char *log)
{
    char cmd[1200];

    snprintf(cmd, sizeof(cmd), "cat %s >&2", log);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot show %s\n", log);
}

Test(bench, mixed_then_verify_matches)
{
    char log[1100], json[1100], extra[1200];
    FILE *f;
    char buf[65536];
    size_t n;
    int rc;

    snprintf(log, sizeof(log), "%s/mixed.log", dir);
    snprintf(json, sizeof(json), "%s/mixed.json", dir);
    /* ~280 k points capped at 100 k points/s: about 3 s of mixed load. */
    snprintf(extra, sizeof(extra),
             "--rate 100000 --batch 2000 --query-concurrency 1 --json %s",
             json);
    rc = run_bench("mixed", extra, log);
    if (rc)
        show(log);
    cr_assert_eq(rc, 0, "tide-bench mixed exited %d", rc);
    f = fopen(json, "r");
    cr_assert_not_null(f, "no JSON report");
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    cr_assert_not_null(strstr(buf, "\"mode\":\"mixed\""));
    cr_assert_not_null(strstr(buf, "\"write_ack\""));
    cr_assert_not_null(strstr(buf, "\"errors\":[]"), "errors in %s", json);

    snprintf(log, sizeof(log), "%s/verify.log", dir);
    rc = run_bench("verify", "", log);
    show(log);
    cr_assert_eq(rc, 0, "verify did not match (exit %d)", rc);
}
