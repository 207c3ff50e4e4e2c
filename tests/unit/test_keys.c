/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of encryption at rest (engine/keys.c and the sealed formats of
 * wal.c, segment.c, manifest.c): a round trip through WAL, flush,
 * compaction and reopen; no plaintext of known values in any byte of the
 * data directory; a flipped bit in a WAL record, a chunk, a footer and
 * the manifest is TIDE_ECIPHER naming file and offset; a wrong or missing
 * key refuses to open; a plaintext directory turned encrypted; crypto-
 * shredding of one account; a kill -9 with encryption on.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "tide/engine.h"

#define CHECK(call)                                                            \
    do {                                                                       \
        int rc_ = (call);                                                      \
        cr_assert_eq(rc_, 0, "%s: %s", #call, tide_strerror(rc_));             \
    } while (0)

#define N 300u /* points per series per batch */
#define SECRET "SECRET-PLAINTEXT-VALUE"
#define VAL 12345.678901 /* its bit pattern must not be on disk */

static char dir[1024];

/* ---- Keys and log ------------------------------------------------------- */

static int key_variant;   /* 1: a wrong key for every account */
static uint64_t shredded; /* this account's key is destroyed */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char errors[8192]; /* every ERROR line logged, concatenated */

static int data_key(void *ctx, uint64_t account, uint8_t key[32])
{
    (void)ctx;
    if (account && account == shredded)
        return TIDE_EKEY;
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)(account * 31 + (uint64_t)i * 7 + 0x5a +
                           (uint64_t)key_variant * 101);
    return 0;
}

static void logger(void *ctx, enum tide_log_level level, const char *msg)
{
    test_log(ctx, level, msg);
    if (level != TIDE_LOG_ERROR)
        return;
    pthread_mutex_lock(&log_mu);
    if (strlen(errors) + strlen(msg) + 2 < sizeof(errors)) {
        strcat(errors, msg);
        strcat(errors, "\n");
    }
    pthread_mutex_unlock(&log_mu);
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "%s", test_tmpdir());
    key_variant = 0;
    shredded = 0;
    errors[0] = 0;
}

static void teardown(void)
{
    test_rmrf(dir);
}

TestSuite(keys, .init = setup, .fini = teardown, .timeout = 300);

static void options(struct tide_db_options *o, int encrypt)
{
    tide_db_options_init(o);
    o->shards = 2;
    o->chunk_points_max = 128;
    o->wal_file_bytes = 1u << 20;
    o->log = logger;
    if (encrypt)
        o->data_key = data_key;
}

static tide_db *open_db(int encrypt)
{
    struct tide_db_options o;
    tide_db *db;

    options(&o, encrypt);
    CHECK(tide_db_open(dir, &o, &db));
    return db;
}

/* ---- Data: series 1, 2 (f64) and 5 (string) of account 1; 3, 4 (f64) of
 * account 2. Batch k holds ts k*N + i. */

static double value_of(uint64_t series, int64_t ts)
{
    return VAL + (double)series * 1000 + (double)ts / 7.0;
}

static void append_batch(tide_db *db, uint32_t k, unsigned accounts)
{
    static int64_t ts[N];
    static double v[5][N];
    static struct tide_str str[N];
    static char text[N][48];
    struct tide_column cols[5];
    uint32_t n = 0;

    for (uint32_t i = 0; i < N; i++) {
        ts[i] = (int64_t)k * N + i;
        for (uint64_t s = 1; s <= 4; s++)
            v[s][i] = value_of(s, ts[i]);
        snprintf(text[i], sizeof(text[i]), SECRET "-%u", i % 7);
        str[i] = (struct tide_str){text[i], (uint32_t)strlen(text[i])};
    }
    for (uint64_t s = 1; s <= 4; s++) {
        uint64_t acc = s <= 2 ? 1 : 2;

        if (!(accounts & (1u << acc)))
            continue;
        cols[n++] = (struct tide_column){.series_id = s,
                                         .account_id = acc,
                                         .type = TIDE_TYPE_F64,
                                         .n = N,
                                         .ts_ns = ts,
                                         .v.f64 = v[s]};
    }
    if (accounts & 2u)
        cols[n++] = (struct tide_column){.series_id = 5,
                                         .account_id = 1,
                                         .type = TIDE_TYPE_STR,
                                         .n = N,
                                         .ts_ns = ts,
                                         .v.str = str};
    CHECK(tide_db_append_wait(
        db, &(struct tide_batch){.n_columns = n, .columns = cols}));
}

/* Points of `series` in [0, batches * N), each checked exactly; returns
 * the count, or the iterator's error as a negative number. */
static long count_series(tide_db *db, uint64_t series, uint32_t batches)
{
    tide_iter *it;
    struct tide_block b;
    long seen = 0;
    int rc;

    CHECK(tide_db_read_open(db, &series, 1, 0, (int64_t)batches * N, &it));
    while ((rc = tide_iter_next(it, &b)) == 1)
        for (uint32_t i = 0; i < b.n; i++, seen++) {
            cr_assert_eq(b.ts_ns[i], seen, "series %llu: ts %lld at %ld",
                         (unsigned long long)series, (long long)b.ts_ns[i],
                         seen);
            if (series == 5) {
                char want[48];

                snprintf(want, sizeof(want), SECRET "-%u",
                         (unsigned)(seen % N % 7));
                cr_assert(b.v.str[i].len == strlen(want) &&
                          !memcmp(b.v.str[i].ptr, want, b.v.str[i].len));
            } else {
                cr_assert_eq(b.v.f64[i], value_of(series, seen));
            }
        }
    tide_iter_close(it);
    return rc ? rc : seen;
}

static void check_all(tide_db *db, uint32_t batches, int account2)
{
    for (uint64_t s = 1; s <= 5; s++) {
        long want =
            s == 3 || s == 4 ? (account2 ? batches * N : 0) : batches * N;

        cr_assert_eq(count_series(db, s, batches), want,
                     "series %llu: %ld points, want %ld", (unsigned long long)s,
                     count_series(db, s, batches), want);
    }
}

/* ---- Scanning the directory for plaintext ------------------------------ */

static size_t hits_in(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t pat[8];
    double d = value_of(1, 5);
    static uint8_t buf[4 << 20];
    size_t n, hits = 0;

    memcpy(pat, &d, 8);
    cr_assert(f, "open %s", path);
    /* Files here are small: one read each (a bigger one fails loudly). */
    n = fread(buf, 1, sizeof(buf), f);
    cr_assert(feof(f), "%s is larger than the scan buffer", path);
    fclose(f);
    for (size_t i = 0; i + sizeof(SECRET) - 1 <= n; i++) {
        if (!memcmp(buf + i, SECRET, sizeof(SECRET) - 1))
            hits++;
        if (i + 8 <= n && !memcmp(buf + i, pat, 8))
            hits++;
    }
    return hits;
}

/* Plaintext hits in every file below `path`; *files counts them. */
static size_t scan_dir(const char *path, unsigned *files)
{
    DIR *d = opendir(path);
    struct dirent *e;
    size_t hits = 0;

    cr_assert(d, "opendir %s", path);
    while ((e = readdir(d))) {
        char sub[2048];
        struct stat st;

        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
        cr_assert_eq(stat(sub, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            hits += scan_dir(sub, files);
        } else {
            size_t h = hits_in(sub);

            if (h)
                fprintf(stderr, "plaintext in %s: %zu hits\n", sub, h);
            hits += h;
            (*files)++;
        }
    }
    closedir(d);
    return hits;
}

static void assert_no_plaintext(const char *when)
{
    unsigned files = 0;

    cr_assert_eq(scan_dir(dir, &files), 0, "%s: plaintext on disk", when);
    cr_assert_gt(files, 2);
}

/* ---- Files ----------------------------------------------------------------
 */

/* The path of the first file in `sub` ending with `suffix`. */
static void first_file(const char *sub, const char *suffix, char *out)
{
    char path[1536];
    DIR *d;
    struct dirent *e;

    snprintf(path, sizeof(path), "%s/%s", dir, sub);
    d = opendir(path);
    cr_assert(d, "opendir %s", path);
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name), s = strlen(suffix);

        if (l > s && !strcmp(e->d_name + l - s, suffix)) {
            snprintf(out, 2048, "%s/%s", path, e->d_name);
            closedir(d);
            return;
        }
    }
    closedir(d);
    cr_assert_fail("no %s file in %s", suffix, path);
}

static void flip(const char *path, long off)
{
    int fd = open(path, O_RDWR);
    uint8_t c;

    cr_assert_geq(fd, 0);
    cr_assert_eq(pread(fd, &c, 1, off), 1);
    c ^= 0x10;
    cr_assert_eq(pwrite(fd, &c, 1, off), 1);
    close(fd);
}

static uint64_t le64_at(const char *path, long off)
{
    int fd = open(path, O_RDONLY);
    uint8_t b[8];
    uint64_t v = 0;

    cr_assert_geq(fd, 0);
    cr_assert_eq(pread(fd, b, 8, off), 8);
    close(fd);
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

/* The log named the file and the offset of the failed block. */
static void assert_logged(const char *path, unsigned long long off)
{
    char want[64];

    snprintf(want, sizeof(want), "at offset %llu", off);
    cr_assert(strstr(errors, path) && strstr(errors, want),
              "log does not name %s %s:\n%s", path, want, errors);
    cr_assert(strstr(errors, "authentication"), "%s", errors);
}

/* Append `batches` batches in a child that then dies without closing, so
 * that they are in the WAL only (written encrypted when `encrypt`). */
static void append_and_die_as(uint32_t first, uint32_t batches, int encrypt)
{
    pid_t pid = fork();
    int st = 0;

    cr_assert_geq(pid, 0);
    if (pid == 0) {
        struct tide_db_options o;
        tide_db *db;

        options(&o, encrypt);
        o.log = NULL;
        if (tide_db_open(dir, &o, &db))
            _exit(2);
        for (uint32_t k = first; k < first + batches; k++)
            append_batch(db, k, 6u);
        _exit(0);
    }
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child failed");
}

static void append_and_die(uint32_t first, uint32_t batches)
{
    append_and_die_as(first, batches, 1);
}

/* ---- Tests -------------------------------------------------------------- */

Test(keys, roundtrip_and_no_plaintext)
{
    tide_db *db = open_db(1);
    struct tide_db_stats st;

    for (uint32_t k = 0; k < 3; k++)
        append_batch(db, k, 6u);
    check_all(db, 3, 1);
    assert_no_plaintext("WAL only");
    CHECK(tide_db_flush(db));
    for (uint32_t k = 3; k < 5; k++)
        append_batch(db, k, 6u);
    CHECK(tide_db_flush(db));
    assert_no_plaintext("after flush");
    CHECK(tide_db_compact(db, 1));
    check_all(db, 5, 1);
    tide_db_stats(db, &st);
    cr_assert_eq(st.encryption, 1);
    cr_assert_gt(st.segments_encrypted, 0);
    cr_assert_eq(st.segments_plaintext, 0);
    cr_assert_eq(st.segment_bytes_plaintext, 0);
    cr_assert_eq(st.segment_bytes_encrypted, st.segment_bytes);
    tide_db_close(db);
    assert_no_plaintext("after compaction and close");
    db = open_db(1);
    check_all(db, 5, 1);
    tide_db_close(db);
}

/* The scan itself finds what it looks for: without encryption the values
 * are on disk. */
Test(keys, plaintext_control)
{
    tide_db *db = open_db(0);
    unsigned files = 0;
    struct tide_db_stats st;

    append_batch(db, 0, 6u);
    cr_assert_gt(scan_dir(dir, &files), 0);
    CHECK(tide_db_flush(db));
    tide_db_stats(db, &st);
    cr_assert_eq(st.encryption, 0);
    cr_assert_eq(st.segments_encrypted, 0);
    cr_assert_eq(st.segments_plaintext, st.segments);
    tide_db_close(db);
}

Test(keys, flipped_wal_record)
{
    char path[2048];
    struct tide_db_options o;
    tide_db *db;

    append_and_die(0, 3);
    /* shard 0's file: the first record (the producer table) at 64, its
     * ciphertext after N part entries; later records follow it. */
    first_file("wal/000", ".wal", path);
    flip(path,
         64 + 24 + 8 + 40 * (long)(le64_at(path, 64 + 24) & 0xffffffffu) + 2);
    options(&o, 1);
    cr_assert_eq(tide_db_open(dir, &o, &db), TIDE_ECIPHER);
    assert_logged(path, 64);
}

/* A torn (here: bit-flipped) last record is cut like a torn write, not an
 * error: none of it was acknowledged. */
Test(keys, flipped_wal_tail_is_torn)
{
    char path[2048];
    tide_db *db;
    long size;

    append_and_die(0, 1);
    first_file("wal/000", ".wal", path);
    size = test_file_size(path);
    cr_assert_gt(size, 0);
    /* The one batch record after the producer table and mark. */
    for (long off = 64;;) {
        uint64_t len = le64_at(path, off) & 0xffffffffu;
        long next = off + 24 + (long)((len + 7) / 8 * 8);

        if (le64_at(path, next) == 0) {
            flip(path, off + 24 + 8 + 40 + 3);
            break;
        }
        off = next;
    }
    db = open_db(1);
    cr_assert_eq(count_series(db, 1, 1), 0);
    cr_assert(!strstr(errors, "wal:"), "%s", errors);
    tide_db_close(db);
}

Test(keys, flipped_chunk)
{
    char path[2048];
    tide_db *db = open_db(1);
    long rc = 0;

    append_batch(db, 0, 6u);
    tide_db_close(db);
    first_file("seg", ".tseg", path);
    flip(path, 64 + 5); /* the first chunk's ciphertext */
    db = open_db(1);
    for (uint64_t s = 1; s <= 5 && rc == 0; s++) {
        long got = count_series(db, s, 1);

        if (got < 0)
            rc = got;
    }
    cr_assert_eq(rc, TIDE_ECIPHER);
    assert_logged(path, 64);
    tide_db_close(db);
}

Test(keys, flipped_footer)
{
    char path[2048];
    struct tide_db_options o;
    tide_db *db = open_db(1);
    uint64_t footer;

    append_batch(db, 0, 6u);
    tide_db_close(db);
    first_file("seg", ".tseg", path);
    footer = le64_at(path, test_file_size(path) - 32);
    flip(path, (long)footer + 30);
    options(&o, 1);
    cr_assert_eq(tide_db_open(dir, &o, &db), TIDE_ECIPHER);
    assert_logged(path, footer);
}

Test(keys, flipped_manifest)
{
    char path[2048];
    struct tide_db_options o;
    tide_db *db = open_db(1);

    append_batch(db, 0, 6u);
    tide_db_close(db);
    snprintf(path, sizeof(path), "%s/MANIFEST", dir);
    flip(path, 40);
    options(&o, 1);
    cr_assert_eq(tide_db_open(dir, &o, &db), TIDE_ECIPHER);
    assert_logged(path, 32);
}

Test(keys, wrong_key_refused)
{
    struct tide_db_options o;
    tide_db *db = open_db(1);

    append_batch(db, 0, 6u);
    tide_db_close(db);
    key_variant = 1;
    options(&o, 1);
    cr_assert_eq(tide_db_open(dir, &o, &db), TIDE_EKEY);
    cr_assert(strstr(errors, "another engine key"), "%s", errors);
}

Test(keys, no_key_refused)
{
    struct tide_db_options o;
    tide_db *db = open_db(1);

    append_batch(db, 0, 6u);
    tide_db_close(db);
    options(&o, 0);
    cr_assert_eq(tide_db_open(dir, &o, &db), TIDE_EKEY);
    cr_assert(strstr(errors, "data directory is encrypted; configure "
                             "master_key_file"),
              "%s", errors);
}

Test(keys, plaintext_dir_turned_encrypted)
{
    tide_db *db = open_db(0);
    struct tide_db_stats st;
    unsigned files = 0;

    for (uint32_t k = 0; k < 2; k++)
        append_batch(db, k, 6u);
    tide_db_close(db);
    db = open_db(1);
    check_all(db, 2, 1);
    for (uint32_t k = 2; k < 4; k++)
        append_batch(db, k, 6u);
    CHECK(tide_db_flush(db));
    tide_db_stats(db, &st);
    cr_assert_eq(st.encryption, 1);
    cr_assert_gt(st.segments_plaintext, 0);
    cr_assert_gt(st.segments_encrypted, 0);
    check_all(db, 4, 1);
    CHECK(tide_db_compact(db, 1));
    tide_db_stats(db, &st);
    cr_assert_eq(st.segments_plaintext, 0, "%llu plaintext segments left",
                 (unsigned long long)st.segments_plaintext);
    cr_assert_gt(st.segments_encrypted, 0);
    check_all(db, 4, 1);
    tide_db_close(db);
    cr_assert_eq(scan_dir(dir, &files), 0, "plaintext left after compaction");
    db = open_db(1);
    check_all(db, 4, 1);
    tide_db_close(db);
}

/* Account 2's key destroyed while the db is closed: its points in
 * segments and in the WAL read as erased, compaction drops them, account
 * 1 stays whole. */
Test(keys, shredded_account)
{
    tide_db *db = open_db(1);
    struct tide_account_usage u;
    struct tide_db_stats st;

    for (uint32_t k = 0; k < 2; k++)
        append_batch(db, k, 6u);
    tide_db_close(db);
    append_and_die(2, 2); /* batches 2 and 3 in the WAL only */
    shredded = 2;
    db = open_db(1);
    check_all(db, 4, 0);
    CHECK(tide_db_erase(db, 2, 1));
    CHECK(tide_db_account_usage(db, 2, TIDE_USAGE_WAL, &u));
    cr_assert_eq(u.points, 0);
    cr_assert_eq(u.segments, 0, "%llu segments still list account 2",
                 (unsigned long long)u.segments);
    cr_assert_eq(u.wal_files, 0);
    CHECK(tide_db_account_usage(db, 1, 0, &u));
    cr_assert_eq(u.points, 4 * 3 * N);
    tide_db_stats(db, &st);
    cr_assert_eq(st.segments_plaintext, 0);
    check_all(db, 4, 0);
    cr_assert_eq(errors[0], 0, "shredding is not corruption:\n%s", errors);
    tide_db_close(db);
    db = open_db(1);
    check_all(db, 4, 0);
    tide_db_close(db);
}

/* tide_db_shred() at run time: the key is forgotten and the erasure
 * removes the account's chunks from every segment. */
Test(keys, shred_at_runtime)
{
    tide_db *db = open_db(1);
    struct tide_account_usage u;

    for (uint32_t k = 0; k < 2; k++)
        append_batch(db, k, 6u);
    CHECK(tide_db_flush(db));
    append_batch(db, 2, 6u); /* in the head only */
    shredded = 2;
    CHECK(tide_db_shred(db, 2, 1));
    CHECK(tide_db_account_usage(db, 2, 0, &u));
    cr_assert_eq(u.segments, 0);
    check_all(db, 3, 0);
    tide_db_close(db);
    db = open_db(1);
    check_all(db, 3, 0);
    tide_db_close(db);
}

/* ---- kill -9 with encryption on ----------------------------------------- */

static _Noreturn void crash_child(int fd, uint32_t start)
{
    struct tide_db_options o;
    tide_db *db;

    options(&o, 1);
    o.log = NULL;
    o.head_bytes_max = 1u << 20;
    if (tide_db_open(dir, &o, &db))
        _exit(2);
    for (uint32_t k = start;; k++) {
        append_batch(db, k, 6u);
        if (write(fd, &k, sizeof(k)) != sizeof(k))
            _exit(4);
    }
}

Test(keys, sigkill_loses_nothing_acknowledged)
{
    uint32_t next = 0;

    srand(test_seed("keys/sigkill_loses_nothing_acknowledged"));
    for (unsigned r = 0; r < 8; r++) {
        struct timespec nap = {0, (rand() % 100 + 20) * 1000000L};
        int fds[2], st = 0;
        uint32_t k, acked = next;
        pid_t pid;
        tide_db *db;

        cr_assert_eq(pipe(fds), 0);
        pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            close(fds[0]);
            crash_child(fds[1], next);
        }
        close(fds[1]);
        if (read(fds[0], &k, sizeof(k)) == sizeof(k))
            acked = k + 1;
        nanosleep(&nap, NULL);
        kill(pid, SIGKILL);
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFSIGNALED(st), "round %u: child exited %d", r,
                  WEXITSTATUS(st));
        while (read(fds[0], &k, sizeof(k)) == sizeof(k))
            acked = k + 1;
        close(fds[0]);
        db = open_db(1);
        /* Every acknowledged batch, exactly (a later one may be there). */
        for (uint64_t s = 1; s <= 5; s++)
            cr_assert_eq(count_series(db, s, acked), (long)acked * N,
                         "round %u series %llu", r, (unsigned long long)s);
        /* Values follow from timestamps: rewriting a batch that was
         * durable but not acknowledged writes the same points. */
        next = acked;
        tide_db_close(db);
    }
}

/* A segment copied over another one's name (both valid, both sealed)
 * is refused: every block is bound to its file. */
Test(keys, moved_segment)
{
    char a[2048], b[2048], cmd[4200];
    struct tide_db_options o;
    tide_db *db = open_db(1);

    append_batch(db, 0, 6u);
    tide_db_close(db);
    snprintf(a, sizeof(a), "%s/seg/0000000000000001.tseg", dir);
    snprintf(b, sizeof(b), "%s/seg/0000000000000002.tseg", dir);
    cr_assert_geq(test_file_size(a), 0);
    cr_assert_geq(test_file_size(b), 0);
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", a, b);
    cr_assert_eq(system(cmd), 0);
    options(&o, 1);
    cr_assert_eq(tide_db_open(dir, &o, &db), TIDE_ECIPHER);
    assert_logged(b, 0);
}

/* Plaintext WAL records not yet flushed replay when the directory is
 * opened with encryption; what follows is written encrypted. */
Test(keys, plaintext_wal_replays_encrypted)
{
    tide_db *db;

    append_and_die_as(0, 2, 0);
    db = open_db(1);
    check_all(db, 2, 1);
    append_batch(db, 2, 6u);
    tide_db_close(db);
    assert_no_plaintext("after the plaintext WAL was flushed");
    db = open_db(1);
    check_all(db, 3, 1);
    tide_db_close(db);
}

/* An encrypted WAL cut inside its last record (a torn write) recovers
 * every record before the cut. */
Test(keys, truncated_wal_tail_recovers)
{
    char path[2048];
    tide_db *db;
    long last = 0;

    append_and_die(0, 3);
    first_file("wal/000", ".wal", path);
    for (long off = 64;;) {
        uint64_t len = le64_at(path, off) & 0xffffffffu;
        long next = off + 24 + (long)((len + 7) / 8 * 8);

        if (le64_at(path, next) == 0) {
            last = off;
            break;
        }
        off = next;
    }
    cr_assert_eq(truncate(path, last + 24 + 100), 0);
    db = open_db(1);
    /* Batches 0 and 1 are whole; batch 2 lost its part in shard 0. */
    check_all(db, 2, 1);
    for (uint64_t s = 1; s <= 5; s++)
        cr_assert_leq(count_series(db, s, 3), 2 * N + N);
    tide_db_close(db);
}
