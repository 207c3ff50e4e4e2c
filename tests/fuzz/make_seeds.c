/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writes the seed corpora of the fuzz harnesses with the real writers
 * (`make fuzz-seeds`; the output is committed under tests/fuzz/corpus/):
 *
 *   write_columns/  WriteBatch messages of every value type, with tags,
 *                   several groups, behind fuzz_write_columns' byte 0;
 *   frame/          the same batches as whole frames, for fuzz_frame;
 *   wal/            the WAL file of a one-shard database after appends of
 *                   every type (cut after its last record);
 *   segment/        the segment files that database's flush wrote.
 *
 * Usage: make_seeds CORPUS_DIR (its four subdirectories must exist).
 */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tide.pb-c.h"
#include "tide/engine.h"

static const char *out_dir;
static int n_seg, want_wal = 1;

/* Write byte `lead` then buf[n] to OUT/sub/name. */
static void put(const char *sub, const char *name, uint8_t lead,
                const void *buf, size_t n)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s/%s", out_dir, sub, name);
    f = fopen(path, "wb");
    if (!f || fwrite(&lead, 1, 1, f) != 1 || fwrite(buf, 1, n, f) != n ||
        fclose(f)) {
        perror(path);
        exit(1);
    }
}

/* The batch as a whole frame (Envelope with request id 7, behind its
 * 4-byte length), for fuzz_frame and its WriteBatch reader check; lead
 * byte 0x07 feeds it to the stream decoder 8 bytes at a time. */
static void put_frame(const char *name, const Tide__V1__WriteBatch *wb)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    size_t n;
    uint8_t *buf;

    env.request_id = 7;
    env.body_case = TIDE__V1__ENVELOPE__BODY_WRITE_BATCH;
    env.write_batch = (Tide__V1__WriteBatch *)wb;
    n = tide__v1__envelope__get_packed_size(&env);
    buf = malloc(n + 4);
    buf[0] = (uint8_t)n;
    buf[1] = (uint8_t)(n >> 8);
    buf[2] = (uint8_t)(n >> 16);
    buf[3] = (uint8_t)(n >> 24);
    tide__v1__envelope__pack(&env, buf + 4);
    put("frame", name, 0x07, buf, n + 4);
    free(buf);
}

static void put_batch(const char *name, const Tide__V1__WriteBatch *wb)
{
    size_t n = tide__v1__write_batch__get_packed_size(wb);
    uint8_t *buf = malloc(n ? n : 1);
    char old[64];

    tide__v1__write_batch__pack(wb, buf);
    put("write_columns", name, 0x80, buf, n);
    /* The same with a horizon inside the group: some points TOO_OLD. */
    snprintf(old, sizeof(old), "%s-old", name);
    put("write_columns", old, 0x02, buf, n);
    free(buf);
    put_frame(name, wb);
}

static void write_batches(void)
{
    int64_t ts[4] = {1700000000000000000, 1, 1, 5};
    double f64[4] = {1.5, -2, 0, 1e300};
    int64_t i64[4] = {1, -1, 1LL << 62, 0};
    uint8_t bits[1] = {0x05};
    char *str[4] = {"a", "", "h\xc3\xa9llo", "zzz"};
    Tide__V1__Column c[4], *cp[4];
    Tide__V1__Tag tag = TIDE__V1__TAG__INIT, *tp = &tag;
    Tide__V1__PointGroup g[2], *gp[2];
    Tide__V1__WriteBatch wb = TIDE__V1__WRITE_BATCH__INIT;

    for (int i = 0; i < 4; i++) {
        tide__v1__column__init(&c[i]);
        cp[i] = &c[i];
    }
    c[0].field = "temp";
    c[0].type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64;
    c[0].f64 = f64;
    c[0].n_f64 = 4;
    c[1].field = "count";
    c[1].type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_I64;
    c[1].i64 = i64;
    c[1].n_i64 = 4;
    c[2].field = "on";
    c[2].type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_BOOL;
    c[2].bool_bits.data = bits;
    c[2].bool_bits.len = 1;
    c[3].field = "note";
    c[3].type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_STRING;
    c[3].str = str;
    c[3].n_str = 4;
    tag.key = "site";
    tag.value = "north";
    for (int i = 0; i < 2; i++) {
        tide__v1__point_group__init(&g[i]);
        gp[i] = &g[i];
        g[i].ts_delta_ns = ts;
        g[i].n_ts_delta_ns = 4;
    }
    g[0].device = "dev-1";
    g[0].columns = cp;
    g[0].n_columns = 4;
    g[0].tags = &tp;
    g[0].n_tags = 1;
    g[1].device = "dev-2";
    g[1].columns = cp;
    g[1].n_columns = 1;
    wb.producer_id = 42;
    wb.sequence = 7;
    wb.groups = gp;
    wb.n_groups = 2;
    put_batch("all-types", &wb);
    for (int i = 0; i < 4; i++) {
        char name[32];

        g[0].columns = &cp[i];
        g[0].n_columns = 1;
        wb.n_groups = 1;
        snprintf(name, sizeof(name), "one-%s", c[i].field);
        put_batch(name, &wb);
    }
}

/* The engine's files: segments whole, the WAL cut after its last
 * non-zero byte (the preallocated rest is zeros, a clean end). */
static int collect(const char *path, const struct stat *st, int type,
                   struct FTW *ftw)
{
    size_t len = strlen(path), n;
    uint8_t *buf;
    FILE *f;
    char name[64];

    (void)ftw;
    if (type != FTW_F || len < 5)
        return 0;
    if (strcmp(path + len - 5, ".tseg") && strcmp(path + len - 4, ".wal"))
        return 0;
    buf = malloc((size_t)st->st_size + 1);
    f = fopen(path, "rb");
    if (!buf || !f ||
        fread(buf, 1, (size_t)st->st_size, f) != (size_t)st->st_size) {
        perror(path);
        exit(1);
    }
    fclose(f);
    n = (size_t)st->st_size;
    if (!strcmp(path + len - 4, ".wal")) {
        if (!want_wal) {
            free(buf);
            return 0;
        }
        while (n > 0 && buf[n - 1] == 0)
            n--;
        n = (n + 7) & ~(size_t)7;
        put("wal", "seed-appends", 0x01, buf, n);
        /* The same cut inside its last record: a torn tail. */
        put("wal", "seed-torn", 0x00, buf, n > 40 ? n - 13 : n);
    } else {
        snprintf(name, sizeof(name), "seed-%d", n_seg++);
        put("segment", name, 0x01, buf, n);
    }
    free(buf);
    return 0;
}

static void append(tide_db *db, uint64_t series, uint8_t type, int k)
{
    int64_t ts[64];
    double f64[64];
    int64_t i64[64];
    uint8_t b[64];
    struct tide_str s[64];
    static const char *words[] = {"ok", "warn", "", "h\xc3\xa9llo"};
    struct tide_column c = {.series_id = series,
                            .account_id = 3,
                            .tier = 1,
                            .type = type,
                            .n = 64,
                            .ts_ns = ts};
    struct tide_batch batch = {.producer_id = 9,
                               .sequence = (uint64_t)k + 1,
                               .n_columns = 1,
                               .columns = &c};

    for (int i = 0; i < 64; i++) {
        ts[i] = 1700000000000000000 + (int64_t)k * 1000 + i * 10;
        f64[i] = i * 0.25 + k;
        i64[i] = (int64_t)i * i - k;
        b[i] = (uint8_t)(i % 3 == 0);
        s[i].ptr = words[i % 4];
        s[i].len = (uint32_t)strlen(words[i % 4]);
    }
    if (type == TIDE_TYPE_F64)
        c.v.f64 = f64;
    else if (type == TIDE_TYPE_I64)
        c.v.i64 = i64;
    else if (type == TIDE_TYPE_BOOL)
        c.v.b = b;
    else
        c.v.str = s;
    if (tide_db_append_wait(db, &batch)) {
        fprintf(stderr, "append failed\n");
        exit(1);
    }
}

int main(int argc, char **argv)
{
    char tmpl[] = "/tmp/tide-seeds-XXXXXX", cmd[128];
    struct tide_db_options o;
    tide_db *db;
    const uint8_t types[] = {TIDE_TYPE_F64, TIDE_TYPE_I64, TIDE_TYPE_BOOL,
                             TIDE_TYPE_STR};

    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds CORPUS_DIR\n");
        return 2;
    }
    out_dir = argv[1];
    write_batches();
    if (!mkdtemp(tmpl))
        return 1;
    tide_db_options_init(&o);
    o.shards = 1;
    o.io_backend = 2;
    o.wal_file_bytes = 1 << 20;
    if (tide_db_open(tmpl, &o, &db)) {
        fprintf(stderr, "tide_db_open failed\n");
        return 1;
    }
    for (int k = 0; k < 8; k++)
        append(db, (uint64_t)(k % 4) + 1, types[k % 4], k);
    /* The WAL before the flush, the segments after it. */
    nftw(tmpl, collect, 16, FTW_PHYS);
    if (tide_db_flush(db)) {
        fprintf(stderr, "tide_db_flush failed\n");
        return 1;
    }
    tide_db_close(db);
    want_wal = 0;
    nftw(tmpl, collect, 16, FTW_PHYS);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpl);
    return system(cmd) ? 1 : 0;
}
