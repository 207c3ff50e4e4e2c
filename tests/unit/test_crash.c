/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Crash tests of the engine (engine/db.c, wal.c): a child process appends
 * batches with sync=batch and reports each acknowledged batch through a
 * pipe; the parent kills it with SIGKILL at a random moment, reopens the
 * directory and checks that every acknowledged point is there exactly
 * once with its value, and that every later batch (they span both
 * shards) is there whole or not at all. TIDE_CRASH_ROUNDS sets the number of
 * rounds (default 50); TIDE_TEST_SEED, printed by every run, repeats one.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "tide/engine.h"

#define SERIES 8u
#define POINTS 50u /* per series per batch */

static char dir[1024];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "%s", test_tmpdir());
}

static void teardown(void)
{
    test_rmrf(dir);
}

TestSuite(crash, .init = setup, .fini = teardown, .timeout = 300);

static void options(struct tide_db_options *o)
{
    tide_db_options_init(o);
    o->shards = 2;
    o->chunk_points_max = 128;
    o->head_bytes_max = 1u << 20; /* flush often: crash inside flushes too */
    o->wal_file_bytes = 1u << 20;
}

/* Batch k: every series gets POINTS points at ts k*POINTS + i, value
 * k * 1000 + i; so any point tells which batch wrote it. */
static void fill_batch(uint32_t k, struct tide_column *cols, int64_t *ts,
                       double *v)
{
    for (uint32_t i = 0; i < POINTS; i++) {
        ts[i] = (int64_t)k * POINTS + i;
        v[i] = (double)k * 1000 + i;
    }
    for (uint32_t s = 0; s < SERIES; s++)
        cols[s] = (struct tide_column){.series_id = s + 1,
                                       .account_id = 1,
                                       .type = TIDE_TYPE_F64,
                                       .n = POINTS,
                                       .ts_ns = ts,
                                       .v.f64 = v};
}

static _Noreturn void child(int fd, uint32_t start)
{
    struct tide_db_options o;
    tide_db *db;
    int rc;

    options(&o);
    if (tide_db_open(dir, &o, &db))
        _exit(2);
    for (uint32_t k = start;; k++) {
        struct tide_column cols[SERIES];
        int64_t ts[POINTS];
        double v[POINTS];
        struct tide_batch b = {.producer_id = 1,
                               .sequence = k + 1,
                               .n_columns = SERIES,
                               .columns = cols};

        fill_batch(k, cols, ts, v);
        /* A batch the previous child wrote but never saw acknowledged
         * comes back as a duplicate: durable all the same. */
        rc = tide_db_append_wait(db, &b);
        if (rc && rc != TIDE_EDUPLICATE)
            _exit(3);
        if (write(fd, &k, sizeof(k)) != sizeof(k))
            _exit(4);
    }
}

/* Check every acknowledged batch below `acked` is present, exactly. */
static void verify(uint32_t acked, uint32_t *next)
{
    struct tide_db_options o;
    tide_db *db;
    uint64_t ids[SERIES];
    tide_iter *it;
    struct tide_block b;
    uint32_t seen[SERIES] = {0};
    int rc;

    options(&o);
    o.log = test_log;
    rc = tide_db_open(dir, &o, &db);
    cr_assert_eq(rc, 0, "reopen after kill: %s", tide_strerror(rc));
    for (uint32_t s = 0; s < SERIES; s++)
        ids[s] = s + 1;
    cr_assert_eq(
        tide_db_read_open(db, ids, SERIES, 0, (int64_t)acked * POINTS, &it), 0);
    while ((rc = tide_iter_next(it, &b)) == 1) {
        uint32_t s = (uint32_t)b.series_id - 1;

        for (uint32_t i = 0; i < b.n; i++) {
            int64_t t = b.ts_ns[i];

            cr_assert_eq(t, (int64_t)seen[s], "series %u: ts %lld, want %u",
                         s + 1, (long long)t, seen[s]);
            cr_assert_eq(b.v.f64[i],
                         (double)(t / POINTS) * 1000 + (double)(t % POINTS));
            seen[s]++;
        }
    }
    cr_assert_eq(rc, 0, "read: %s", tide_strerror(rc));
    for (uint32_t s = 0; s < SERIES; s++)
        cr_assert_eq(seen[s], acked * POINTS,
                     "series %u: %u points of %u acknowledged", s + 1, seen[s],
                     acked * POINTS);
    tide_iter_close(it);
    /* Batches after the last acknowledged one may be durable too, but
     * each whole or not at all: a batch spans both shards. */
    {
        uint32_t per[64][SERIES] = {{0}};
        uint32_t top = 0;

        cr_assert_eq(tide_db_read_open(db, ids, SERIES, (int64_t)acked * POINTS,
                                       (int64_t)(acked + 64) * POINTS, &it),
                     0);
        while ((rc = tide_iter_next(it, &b)) == 1)
            for (uint32_t i = 0; i < b.n; i++) {
                uint32_t k = (uint32_t)(b.ts_ns[i] / POINTS) - acked;

                per[k][b.series_id - 1]++;
                if (k + 1 > top)
                    top = k + 1;
            }
        cr_assert_eq(rc, 0, "read: %s", tide_strerror(rc));
        tide_iter_close(it);
        for (uint32_t k = 0; k < top; k++)
            for (uint32_t s = 0; s < SERIES; s++)
                cr_assert_eq(per[k][s], per[k][0] ? POINTS : 0,
                             "batch %u after the last ack: series %u has "
                             "%u points, series 1 %u: partly applied",
                             acked + k, s + 1, per[k][s], per[k][0]);
    }
    /* The next child continues after the last acknowledged batch. */
    *next = acked;
    tide_db_close(db);
}

/* How the child ended: SIGKILL from us is the only good end; anything
 * else means it failed (exit codes 2 open, 3 append, 4 pipe). */
static void assert_killed(pid_t pid, unsigned round)
{
    int st = 0;

    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
              "round %u: child %s %d instead of being killed", round,
              WIFEXITED(st) ? "exited with status" : "died of signal",
              WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

/*
 * Three rounds in four wait for the child's first acknowledgement before
 * the random nap, so each of them must acknowledge at least one batch (a
 * child that cannot open or append fails the test); the fourth naps from
 * the fork, so that kills also land inside the child's open and recovery.
 * TIDE_TEST_SEED repeats the naps of a failing run.
 */
Test(crash, sigkill_loses_nothing_acknowledged)
{
    const char *env = getenv("TIDE_CRASH_ROUNDS");
    unsigned rounds = env ? (unsigned)atoi(env) : 50;
    uint32_t next = 0;

    srand(test_seed("crash/sigkill_loses_nothing_acknowledged"));
    for (unsigned r = 0; r < rounds; r++) {
        int fds[2];
        pid_t pid;
        uint32_t k, acked = next;
        int early = rand() % 4 == 0;
        struct timespec nap = {0, (rand() % 150 + 20) * 1000000L};

        cr_assert_eq(pipe(fds), 0);
        pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            close(fds[0]);
            child(fds[1], next);
        }
        close(fds[1]);
        if (!early) {
            if (read(fds[0], &k, sizeof(k)) != sizeof(k)) {
                assert_killed(pid, r);
                cr_assert_fail("round %u: killed before acknowledging", r);
            }
            cr_assert_eq(k, next, "round %u: first ack %u, want %u", r, k,
                         next);
            acked = k + 1;
        }
        nanosleep(&nap, NULL);
        kill(pid, SIGKILL);
        assert_killed(pid, r);
        while (read(fds[0], &k, sizeof(k)) == sizeof(k))
            acked = k + 1;
        close(fds[0]);
        verify(acked, &next);
    }
}
