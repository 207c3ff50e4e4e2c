/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of compaction (engine/compact.c, compact_job.c, usage.c): a
 * window's segments merged into one with full chunks, last write wins
 * across segments, the policy's horizon and erasure applied, whole
 * windows deleted unread, windows re-cut when a tier's width changes,
 * order kept against another tier's segments, readers seeing every point
 * exactly once while compaction runs, the account report, and a kill -9
 * at each step of a job.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "compact.h"
#include "db.h"
#include "internal.h"
#include "io.h"
#include "testutil.h"
#include "tide/engine.h"

#define CHECK(call)                                                            \
    do {                                                                       \
        int rc_ = (call);                                                      \
        cr_assert_eq(rc_, 0, "%s: %s", #call, tide_strerror(rc_));             \
    } while (0)

#define DAY (86400ll * 1000000000ll)
#define T0 (20006 * DAY) /* 2024-10-10: aligned to 7- and 14-day windows */

static char dir[1024];
static tide_db *db;

static unsigned files_ending(const char *sub, const char *suffix);

/* The policy under test. */
static int64_t window_days = 7;
static int64_t horizon = TIDE_KEEP_ALL; /* for account 7 */
static uint64_t erased_account;

static int64_t pol_window(void *ctx, uint16_t tier)
{
    (void)ctx;
    return tier == 2 ? DAY : window_days * DAY;
}

static int64_t pol_keep(void *ctx, uint64_t account, uint64_t series)
{
    (void)ctx;
    (void)series;
    if (account == erased_account)
        return TIDE_KEEP_NONE;
    return account == 7 ? horizon : TIDE_KEEP_ALL;
}

static uint32_t interval_s; /* routine passes; 0 = only when asked */

static void open_db(void)
{
    struct tide_db_options o;

    tide_db_options_init(&o);
    o.shards = 1;
    o.chunk_points_max = 64;
    o.log = test_log;
    o.wal_file_bytes = 1u << 20;
    o.compaction_interval_s = interval_s;
    o.compaction_mb_s = 0;
    o.retention = (struct tide_retention){pol_window, pol_keep, NULL};
    CHECK(tide_db_open(dir, &o, &db));
}

static void reopen(void)
{
    tide_db_close(db);
    open_db();
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "%s", test_tmpdir());
    window_days = 7;
    horizon = TIDE_KEEP_ALL;
    erased_account = 0;
    interval_s = 0;
    tide__compact_hook = NULL;
    open_db();
}

static void teardown(void)
{
    tide_db_close(db);
    db = NULL;
    test_rmrf(dir);
}

TestSuite(compact, .init = setup, .fini = teardown, .timeout = 120);

/* Append points ts[i] = from + i * step, value v0 + i, of one series. */
static void put(uint64_t id, uint64_t account, uint16_t tier, uint32_t n,
                int64_t from, int64_t step, double v0)
{
    int64_t *ts = malloc(n * sizeof(*ts));
    double *v = malloc(n * sizeof(*v));
    struct tide_column c = {.series_id = id,
                            .account_id = account,
                            .tier = tier,
                            .type = TIDE_TYPE_F64,
                            .n = n,
                            .ts_ns = ts};
    struct tide_batch b = {.n_columns = 1, .columns = &c};

    for (uint32_t i = 0; i < n; i++) {
        ts[i] = from + (int64_t)i * step;
        v[i] = v0 + i;
    }
    c.v.f64 = v;
    CHECK(tide_db_append_wait(db, &b));
    free(ts);
    free(v);
}

/* Count and sum of a series over all time, and whether its points
 * ascend without duplicates. */
static uint64_t count_of(uint64_t id, double *sum)
{
    tide_iter *it;
    struct tide_block b;
    uint64_t n = 0;
    int64_t last = INT64_MIN;
    int rc;

    *sum = 0;
    CHECK(tide_db_read_open(db, &id, 1, INT64_MIN, INT64_MAX, &it));
    while ((rc = tide_iter_next(it, &b)) == 1)
        for (uint32_t i = 0; i < b.n; i++, n++) {
            cr_assert_gt(b.ts_ns[i], last, "points ascend, once each");
            last = b.ts_ns[i];
            *sum += b.v.f64[i];
        }
    cr_assert_eq(rc, 0);
    tide_iter_close(it);
    return n;
}

static struct tide_db_stats stats(void)
{
    struct tide_db_stats st;

    tide_db_stats(db, &st);
    return st;
}

/* Segments of the current list holding a chunk of `account`. */
static uint32_t segs_with(uint64_t account)
{
    struct seglist *sl = tide__seglist_acquire(db);
    uint32_t n = 0;

    for (uint32_t i = 0; i < sl->n; i++)
        for (uint32_t c = 0; c < sl->segs[i]->n_chunks; c++)
            if (sl->segs[i]->chunks[c].account_id == account) {
                n++;
                break;
            }
    tide__seglist_release(sl);
    return n;
}

Test(compact, window_merged_full_chunks_last_write_wins)
{
    double sum;
    struct seglist *sl;

    /* Five flushes of one series over five days of one 7-day window,
     * 40 points each (chunks of 64 hold them with room to spare). */
    for (int d = 0; d < 5; d++) {
        put(11, 7, 1, 40, T0 + d * DAY, 60000000000ll, 0);
        CHECK(tide_db_flush(db));
    }
    /* Rewrite day 2's points with new values: the newer write wins. */
    put(11, 7, 1, 40, T0 + 2 * DAY, 60000000000ll, 1000);
    CHECK(tide_db_flush(db));
    cr_assert_eq(stats().segments, 6);
    cr_assert_eq(count_of(11, &sum), 200);
    CHECK(tide_db_compact(db, 1));
    sl = tide__seglist_acquire(db);
    cr_assert_eq(sl->n, 1, "one segment for the window");
    cr_assert_eq(sl->segs[0]->level, 1);
    cr_assert_eq(sl->segs[0]->n_chunks, 4, "200 points in full chunks of 64");
    for (uint32_t c = 0; c + 1 < sl->segs[0]->n_chunks; c++)
        cr_assert_eq(sl->segs[0]->chunks[c].count, 64);
    tide__seglist_release(sl);
    cr_assert_eq(count_of(11, &sum), 200);
    /* 5 days of sum(0..39) = 780, day 2 with +1000 each. */
    cr_assert_float_eq(sum, 5 * 780.0 + 40 * 1000.0, 1e-6);
    cr_assert_eq(stats().points_deduplicated, 40);
    cr_assert_eq(stats().segment_files_deleted, 6);
    /* Survives a reopen, and a compacted window is left alone. */
    reopen();
    cr_assert_eq(count_of(11, &sum), 200);
    cr_assert_float_eq(sum, 5 * 780.0 + 40 * 1000.0, 1e-6);
    CHECK(tide_db_compact(db, 1));
    cr_assert_eq(stats().compactions, 0, "nothing left to do");
}

Test(compact, horizon_expires_and_whole_window_is_deleted_unread)
{
    double sum;

    /* Window A (days 0..6) wholly old, window B (days 7..13) half. */
    put(21, 7, 1, 10, T0, DAY / 10, 0);
    CHECK(tide_db_flush(db));
    put(21, 7, 1, 70, T0 + 7 * DAY, DAY / 10, 0);
    CHECK(tide_db_flush(db));
    put(22, 8, 1, 10, T0 + 7 * DAY, DAY / 10, 0); /* other account */
    CHECK(tide_db_flush(db));
    horizon = T0 + 10 * DAY;
    CHECK(tide_db_compact(db, 1));
    cr_assert_eq(count_of(21, &sum), 40, "days 10..13 kept");
    cr_assert_eq(count_of(22, &sum), 10, "the other account keeps all");
    cr_assert_eq(stats().points_expired, 40);
    cr_assert_eq(stats().segments, 1, "window A's file deleted");
    /* A window only behind the horizon costs no read. */
    put(21, 7, 1, 10, T0 + 14 * DAY, DAY / 10, 0);
    CHECK(tide_db_flush(db));
    {
        uint64_t read_before = stats().compact_bytes_read, b_bytes = 0;
        struct seglist *sl = tide__seglist_acquire(db);

        /* Window B holds account 8 too, so it is read; window C is not. */
        for (uint32_t i = 0; i < sl->n; i++)
            for (uint32_t c = 0; sl->segs[i]->min_ts < T0 + 14 * DAY &&
                                 c < sl->segs[i]->n_chunks;
                 c++)
                if (sl->segs[i]->chunks[c].account_id == 8)
                    b_bytes += sl->segs[i]->chunks[c].stored_bytes;
        tide__seglist_release(sl);
        horizon = T0 + 100 * DAY;
        CHECK(tide_db_compact(db, 1));
        cr_assert_eq(count_of(21, &sum), 0);
        cr_assert_eq(segs_with(7), 0);
        cr_assert_eq(count_of(22, &sum), 10);
        cr_assert_eq(stats().compact_bytes_read - read_before, b_bytes,
                     "only account 8's chunks were read");
    }
}

Test(compact, erase_leaves_no_chunk_and_no_wal_record)
{
    struct tide_account_usage u;
    double sum;

    put(31, 9, 1, 100, T0, 1000000000ll, 0);
    put(32, 7, 1, 100, T0, 1000000000ll, 0);
    CHECK(tide_db_flush(db));
    put(31, 9, 1, 100, T0 + DAY, 1000000000ll, 0); /* still in the head */
    CHECK(tide_db_account_usage(db, 9, TIDE_USAGE_WAL, &u));
    cr_assert_eq(u.points, 200);
    cr_assert_eq(u.head_points, 100);
    cr_assert_eq(u.segments, 1);
    cr_assert_geq(u.wal_files, 1);
    cr_assert_eq(u.oldest_ts, T0);
    erased_account = 9;
    CHECK(tide_db_erase(db, 9, 1));
    CHECK(tide_db_account_usage(db, 9, TIDE_USAGE_WAL, &u));
    cr_assert_eq(u.points, 0);
    cr_assert_eq(u.segments, 0);
    cr_assert_eq(u.wal_files, 0, "the WAL files holding it are deleted");
    cr_assert_gt(u.files_scanned, 0);
    cr_assert_eq(segs_with(9), 0);
    cr_assert_eq(stats().points_erased, 200);
    cr_assert_eq(count_of(32, &sum), 100);
    reopen();
    cr_assert_eq(count_of(31, &sum), 0, "not resurrected by recovery");
    cr_assert_eq(count_of(32, &sum), 100);
}

Test(compact, usage_counts_what_expires)
{
    struct tide_account_usage u;

    put(41, 7, 1, 64, T0, DAY / 64, 0);
    put(41, 7, 1, 64, T0 + 7 * DAY, DAY / 64, 0);
    CHECK(tide_db_flush(db));
    horizon = T0 + 7 * DAY;
    CHECK(tide_db_account_usage(db, 7, 0, &u));
    cr_assert_eq(u.points, 128);
    cr_assert_eq(u.expiring_points, 64);
    cr_assert_eq(u.wal_files, 0, "no WAL scan without the flag");
}

Test(compact, width_change_splits_straddling_segments)
{
    double sum;
    struct seglist *sl;

    window_days = 14;
    put(51, 7, 1, 140, T0, DAY / 10, 0); /* days 0..13 */
    CHECK(tide_db_compact(db, 1));
    cr_assert_eq(stats().segments, 1);
    window_days = 7; /* the plan's TTL changed */
    CHECK(tide_db_compact(db, 1));
    sl = tide__seglist_acquire(db);
    cr_assert_eq(sl->n, 2, "one segment per new window");
    for (uint32_t i = 0; i < sl->n; i++)
        cr_assert_lt(sl->segs[i]->max_ts - sl->segs[i]->min_ts, 7 * DAY);
    tide__seglist_release(sl);
    cr_assert_eq(count_of(51, &sum), 140);
    CHECK(tide_db_compact(db, 1));
    cr_assert_eq(stats().segments, 2, "stable");
}

Test(compact, order_kept_against_another_tiers_segment)
{
    double sum;

    /* An account changed tier: tier 1 (7-day windows) and tier 2 (1-day
     * windows) segments hold the same series and timestamps; a newer
     * write must keep winning. */
    put(61, 7, 1, 10, T0, 1000000000ll, 0);
    CHECK(tide_db_flush(db));
    put(61, 7, 2, 10, T0, 1000000000ll, 100); /* newer, tier 2 */
    CHECK(tide_db_flush(db));
    put(61, 7, 1, 10, T0 + DAY, 1000000000ll, 0);
    CHECK(tide_db_flush(db));
    CHECK(tide_db_compact(db, 1));
    CHECK(tide_db_compact(db, 1));
    cr_assert_eq(count_of(61, &sum), 20);
    cr_assert_float_eq(sum, (100 * 10 + 45) + 45.0, 1e-6,
                       "the tier-2 write still wins");
    reopen();
    cr_assert_eq(count_of(61, &sum), 20);
    cr_assert_float_eq(sum, (100 * 10 + 45) + 45.0, 1e-6);
}

Test(compact, routine_pass_merges_small_files_not_the_big_one)
{
    struct timespec now;
    int64_t t;
    uint64_t big_id, compactions;
    struct seglist *sl;
    double sum;
    int found = 0;

    clock_gettime(CLOCK_REALTIME, &now);
    t = (int64_t)now.tv_sec * 1000000000ll - 6000 * 1000000000ll;
    put(91, 7, 1, 5000, t, 1000000000ll, 0); /* the last 100 minutes */
    CHECK(tide_db_compact(db, 1));
    sl = tide__seglist_acquire(db);
    big_id = sl->segs[sl->n - 1]->id;
    tide__seglist_release(sl);
    interval_s = 1;
    reopen();
    for (int i = 0; i < 3; i++) {
        put(91, 7, 1, 10, t + 5000 * 1000000000ll + i * 10000000000ll,
            1000000000ll, 0);
        CHECK(tide_db_flush(db));
    }
    compactions = stats().compactions;
    /* Routine passes run every second: wait for the small files to go. */
    for (int ms = 0; ms < 8000 && stats().segments > 2; ms += 20)
        usleep(20000);
    cr_assert_gt(stats().compactions, compactions, "a routine pass ran");
    sl = tide__seglist_acquire(db);
    for (uint32_t i = 0; i < sl->n; i++)
        found |= sl->segs[i]->id == big_id;
    cr_assert_eq(sl->n, 2, "the small files merged into one, not %u", sl->n);
    tide__seglist_release(sl);
    cr_assert(found, "the big segment of this hot window was not rewritten");
    cr_assert_eq(count_of(91, &sum), 5030);
    CHECK(tide_db_compact(db, 1));
    cr_assert_eq(stats().segments, 1, "a full pass merges the window whole");
    cr_assert_eq(count_of(91, &sum), 5030);
}

Test(compact, failed_io_leaves_inputs_in_force)
{
    static const enum tide_io_op ops[] = {TIDE_IO_WRITE, TIDE_IO_FDATASYNC};
    double sum;

    for (int d = 0; d < 3; d++) {
        put(95, 7, 1, 100, T0 + d * DAY, 60000000000ll, d);
        CHECK(tide_db_flush(db));
    }
    for (unsigned k = 0; k < 2; k++)
        for (unsigned long nth = 1; nth <= 3; nth++) {
            uint64_t segs = stats().segments, points = count_of(95, &sum);
            int rc;

            tide__io_inject(ops[k], nth, k ? EIO : ENOSPC, 0);
            rc = tide_db_compact(db, 1);
            tide__io_inject(ops[k], 0, 0, 0);
            if (rc == 0) {
                /* The job needed fewer of those requests: start over. */
                put(95, 7, 1, 1, T0 + (11 + nth + 3 * k) * DAY, 1, 0);
                CHECK(tide_db_flush(db));
                continue;
            }
            /* Jobs before the failed one may have been published. */
            cr_assert_leq(stats().segments, segs);
            cr_assert_eq(files_ending("seg", ".tmp"), 0);
            cr_assert_eq(files_ending("seg", ".tseg"), stats().segments,
                         "no file left of the failed job");
            cr_assert_eq(count_of(95, &sum), points);
            cr_assert_gt(stats().compaction_errors, 0);
            put(95, 7, 1, 1, T0 + (20 + nth + 3 * k) * DAY, 1, 0); /* goes on */
            CHECK(tide_db_flush(db));
        }
    cr_assert_gt(stats().compaction_errors, 0, "some injection hit a job");
    CHECK(tide_db_compact(db, 1));
    cr_assert_eq(count_of(95, &sum), 306);
    reopen();
    cr_assert_eq(count_of(95, &sum), 306);
}

/* Append one f64 point per value of v[] at T0 + i minutes + off. */
static void put_values(uint64_t id, const double *v, uint32_t n, int64_t off)
{
    int64_t ts[64];
    struct tide_column c = {.series_id = id,
                            .account_id = 7,
                            .tier = 1,
                            .type = TIDE_TYPE_F64,
                            .n = n,
                            .ts_ns = ts};
    struct tide_batch b = {.n_columns = 1, .columns = &c};

    for (uint32_t i = 0; i < n; i++)
        ts[i] = T0 + off + (int64_t)i * 60000000000ll;
    c.v.f64 = v;
    CHECK(tide_db_append_wait(db, &b));
}

Test(compact, merged_values_come_back_bit_for_bit)
{
    /* Chunks of one series at different decimal exponents (merged at the
     * larger), and of another series where one chunk is not decimal. */
    static const double ints[] = {1, 2, -3, 40000000, 0, 7};
    static const double cents[] = {0.25, -1.5, 99.99, 1e-2, 123456.78, 3};
    static const double milli[] = {1.001, 2.002, -0.003, 4.5, 5, 6.007};
    double odd[6] = {0.1 + 0.2, -0.0, 1e300, 0, 0, 3.25};
    const double *sets[2][3] = {{ints, cents, milli}, {cents, odd, ints}};
    struct tide_block blk;
    tide_iter *it;

    odd[3] = 1.0 / 0.0;
    odd[4] = 0.0 / 0.0;
    for (int c = 0; c < 3; c++) {
        for (int s_ = 0; s_ < 2; s_++)
            put_values(101 + s_, sets[s_][c], 6, c * 600000000000ll);
        CHECK(tide_db_flush(db));
    }
    CHECK(tide_db_compact(db, 1));
    cr_assert_eq(stats().segments, 1);
    for (int s_ = 0; s_ < 2; s_++) {
        uint64_t id = 101 + s_;
        uint32_t n = 0;

        CHECK(tide_db_read_open(db, &id, 1, INT64_MIN, INT64_MAX, &it));
        while (tide_iter_next(it, &blk) == 1)
            for (uint32_t i = 0; i < blk.n; i++, n++)
                cr_assert_eq(memcmp(&blk.v.f64[i], &sets[s_][n / 6][n % 6], 8),
                             0, "series %d value %u: %a", s_, n, blk.v.f64[i]);
        tide_iter_close(it);
        cr_assert_eq(n, 18);
    }
}

/* ---- Readers during compaction -------------------------------------- */

static atomic_int stop_readers;
static atomic_uint_fast64_t bad_reads, reads;
static uint64_t want_count;
static double want_sum;
static char bad_what[160];

static void *reader_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_readers)) {
        uint64_t id = 71;
        struct tide_agg_series *res;

        int rc = tide_db_aggregate(db, &id, 1, INT64_MIN, INT64_MAX, 0, 0, &res,
                                   NULL);

        if (rc == 0) {
            if (res[0].n_buckets != 1 ||
                res[0].buckets[0].count != want_count ||
                res[0].buckets[0].sum != want_sum) {
                snprintf(bad_what, sizeof(bad_what),
                         "count %llu sum %.1f, want %llu %.1f",
                         res[0].n_buckets
                             ? (unsigned long long)res[0].buckets[0].count
                             : 0ull,
                         res[0].n_buckets ? res[0].buckets[0].sum : 0.0,
                         (unsigned long long)want_count, want_sum);
                atomic_fetch_add(&bad_reads, 1);
            }
            tide_agg_free(res, 1);
        } else {
            snprintf(bad_what, sizeof(bad_what), "%s", tide_strerror(rc));
            atomic_fetch_add(&bad_reads, 1);
        }
        atomic_fetch_add(&reads, 1);
    }
    return NULL;
}

Test(compact, readers_see_every_point_once_during_compaction)
{
    pthread_t th[2];
    double sum;

    /* Overlapping rewrites (the same values again) in many flushes. */
    for (int d = 0; d < 28; d++) {
        put(71, 7, 1, 200, T0 + d * DAY / 2, 60000000000ll, d);
        if (d % 3 == 0)
            CHECK(tide_db_flush(db));
        if (d % 4 == 0)
            put(71, 7, 1, 100, T0 + d * DAY / 2, 60000000000ll, d);
    }
    CHECK(tide_db_flush(db));
    want_count = count_of(71, &sum);
    want_sum = sum;
    atomic_store(&stop_readers, 0);
    atomic_store(&bad_reads, 0);
    atomic_store(&reads, 0);
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, reader_main, NULL);
    for (int round = 0; round < 8; round++) {
        /* Each new width re-cuts every window: merges and splits. */
        static const int64_t widths[] = {7, 1, 14, 2, 28, 1, 7, 3};

        window_days = widths[round];
        CHECK(tide_db_compact(db, 1));
    }
    /* And with writes of the same points again (same totals) meanwhile:
     * a read must count a point once whichever source it finds it in. */
    for (int round = 0; round < 8; round++) {
        put(71, 7, 1, 200, T0 + round * DAY / 2, 60000000000ll, round);
        CHECK(tide_db_flush(db));
        CHECK(tide_db_compact(db, 1));
    }
    atomic_store(&stop_readers, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    cr_assert_gt(atomic_load(&reads), 0);
    cr_assert_geq(stats().compactions, 8);
    cr_assert_eq(atomic_load(&bad_reads), 0, "%llu of %llu reads wrong: %s",
                 (unsigned long long)atomic_load(&bad_reads),
                 (unsigned long long)atomic_load(&reads), bad_what);
}

/* ---- kill -9 at each step ------------------------------------------- */

static enum tide_compact_step crash_at;

static void crash_hook(enum tide_compact_step step)
{
    if (step == crash_at)
        raise(SIGKILL);
}

/* Files in `sub` of the data directory ending in `suffix`. */
static unsigned files_ending(const char *sub, const char *suffix)
{
    char path[1200];
    DIR *d;
    struct dirent *e;
    unsigned n = 0;

    snprintf(path, sizeof(path), "%s/%s", dir, sub);
    d = opendir(path);
    if (!d)
        return 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name), s = strlen(suffix);

        if (l >= s && !strcmp(e->d_name + l - s, suffix))
            n++;
    }
    closedir(d);
    return n;
}

static void crash_during_compaction(enum tide_compact_step step)
{
    double sum;
    pid_t pid;
    int status;

    for (int d = 0; d < 4; d++) {
        put(81, 7, 1, 50, T0 + d * DAY, 60000000000ll, d);
        put(82, 9, 1, 50, T0 + d * DAY, 60000000000ll, d);
        CHECK(tide_db_flush(db));
    }
    put(81, 7, 1, 50, T0, 60000000000ll, 500); /* a duplicate day */
    CHECK(tide_db_flush(db));
    erased_account = 9;
    tide_db_close(db);
    db = NULL;
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        crash_at = step;
        tide__compact_hook = crash_hook;
        open_db();
        tide_db_erase(db, 9, 1);
        _exit(3); /* the step was never reached */
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "the child was killed at step %d", step);
    open_db();
    cr_assert_eq(files_ending("seg", ".tmp"), 0, "no temporary file left");
    cr_assert_eq(files_ending("seg", ".tseg"), stats().segments,
                 "no orphan segment file");
    cr_assert_eq(count_of(81, &sum), 200, "nothing lost or duplicated");
    cr_assert_float_eq(sum, 4 * 1225.0 + 50 * (500 + 1 + 2 + 3), 1e-6);
    if (step >= TIDE__COMPACT_AT_MANIFEST)
        cr_assert_eq(count_of(82, &sum), 0, "the erasure held");
    /* Finishing the job leaves nothing of account 9. */
    CHECK(tide_db_erase(db, 9, 1));
    cr_assert_eq(count_of(82, &sum), 0, "not resurrected");
    cr_assert_eq(segs_with(9), 0);
    cr_assert_eq(count_of(81, &sum), 200);
    cr_assert_eq(files_ending("seg", ".tseg"), stats().segments);
}

Test(compact, kill_while_writing_the_output)
{
    crash_during_compaction(TIDE__COMPACT_AT_TMP);
}

Test(compact, kill_after_rename_before_manifest)
{
    crash_during_compaction(TIDE__COMPACT_AT_RENAMED);
}

Test(compact, kill_after_manifest_before_old_files_go)
{
    crash_during_compaction(TIDE__COMPACT_AT_MANIFEST);
}

Test(compact, kill_after_publication)
{
    crash_during_compaction(TIDE__COMPACT_AT_PUBLISHED);
}
