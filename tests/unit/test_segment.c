/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of segment files (engine/segment.c): write and read back a small
 * segment, truncation at every offset, every byte flipped (an error for
 * every checksummed byte, the exact original data for the padding), and
 * the chunk index lookups.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "io.h"
#include "segment.h"
#include "testutil.h"

TEST_IO_SUITE(segment, 120);

#define N 40

/* Write a segment with an f64 series (id 1, two chunks) and a string
 * series (id 2); returns its path in `path`. */
static void write_small(char *path)
{
    struct seg_writer *w;
    int64_t ts[N];
    uint64_t v[N];
    struct tide_str s[N];
    char *p = NULL;

    for (int i = 0; i < N; i++) {
        double d = i * 0.25;

        ts[i] = 1000 + i * 10;
        memcpy(&v[i], &d, 8);
        s[i].ptr = i % 2 ? "on" : "off";
        s[i].len = i % 2 ? 2 : 3;
    }
    cr_assert_eq(tide__segw_open(dir, 7, 0, 1, io, NULL, &w), 0);
    cr_assert_eq(tide__segw_add(w, 1, 9, TIDE_TYPE_F64, N / 2, ts, v, NULL), 0);
    cr_assert_eq(tide__segw_add(w, 1, 9, TIDE_TYPE_F64, N / 2, ts + N / 2,
                                v + N / 2, NULL),
                 0);
    cr_assert_eq(tide__segw_add(w, 2, 9, TIDE_TYPE_STR, N, ts, NULL, s), 0);
    cr_assert_eq(tide__segw_finish(w, &p), 0);
    snprintf(path, PATH_MAX, "%s", p);
    tide_free(p);
}

/* Open and decode everything; 0 and exact data, or an error code. */
static int read_back(const char *path)
{
    struct seg *seg;
    struct tide_buf buf = {0}, arena = {0};
    int rc = tide__seg_open(path, NULL, &seg);

    if (rc)
        return rc;
    cr_assert_eq(seg->n_chunks, 3);
    cr_assert_eq(seg->points, 2 * N);
    for (uint32_t c = 0; c < seg->n_chunks && rc == 0; c++) {
        const struct chunk_ent *e = &seg->chunks[c];
        int64_t ts[N];
        uint64_t v[N];
        struct tide_str s[N];
        struct tide_io_req req;

        buf.len = 0;
        cr_assert_eq(tide__buf_reserve(&buf, e->stored_bytes), 0);
        req = (struct tide_io_req){.op = TIDE_IO_READ,
                                   .fd = seg->fd,
                                   .buf = buf.data,
                                   .len = e->stored_bytes,
                                   .off = e->offset};
        rc = tide__io_run(io, &req, 1);
        if (rc == 0)
            rc = tide__chunk_decode(e, buf.data, e->stored_bytes, ts, v, s,
                                    &arena);
        for (uint32_t i = 0; rc == 0 && i < e->count; i++) {
            uint32_t k = e->series_id == 1 && c == 1 ? i + N / 2 : i;
            double d = k * 0.25;

            cr_assert_eq(ts[i], 1000 + (int64_t)k * 10);
            if (e->type == TIDE_TYPE_F64)
                cr_assert(!memcmp(&v[i], &d, 8));
            else
                cr_assert(s[i].len == (k % 2 ? 2u : 3u) &&
                          !memcmp(s[i].ptr, k % 2 ? "on" : "off", s[i].len));
        }
    }
    tide__buf_fini(&buf);
    tide__buf_fini(&arena);
    tide__seg_close(seg);
    return rc;
}

TEST_IO(segment, roundtrip_and_index)
{
    char path[PATH_MAX];
    struct seg *seg;
    uint32_t lo, hi;

    TEST_IO_OPEN(backend, 8, &io);

    write_small(path);
    cr_assert_eq(read_back(path), 0);
    cr_assert_eq(tide__seg_open(path, NULL, &seg), 0);
    cr_assert_eq(seg->tier, 1);
    cr_assert_eq(seg->id, 7);
    cr_assert_eq(seg->n_accounts, 1);
    cr_assert_eq(seg->accounts[0], 9);
    cr_assert_eq(seg->min_ts, 1000);
    cr_assert_eq(seg->max_ts, 1000 + (N - 1) * 10);
    cr_assert_eq(seg->file_bytes % 4096, 0);
    tide__seg_find(seg, 1, &lo, &hi);
    cr_assert_eq(hi - lo, 2);
    tide__seg_find(seg, 2, &lo, &hi);
    cr_assert_eq(hi - lo, 1);
    cr_assert_eq(seg->chunks[lo].first, 0);
    tide__seg_find(seg, 3, &lo, &hi);
    cr_assert_eq(hi, lo);
    tide__seg_close(seg);
}

/* tide__seg_seek() agrees with tide__seg_find() whatever the hint: fresh,
 * carried over ascending or descending ids, or out of range. */
TEST_IO(segment, seek_with_any_hint)
{
    static const uint32_t hints[] = {0, 1, 2, 3, 4, 1000, UINT32_MAX};
    char path[PATH_MAX];
    struct seg *seg;
    uint32_t carried = 0;

    TEST_IO_OPEN(backend, 8, &io);

    write_small(path);
    cr_assert_eq(tide__seg_open(path, NULL, &seg), 0);
    for (int pass = 0; pass < 2; pass++) {
        for (uint64_t k = 0; k <= 4; k++) {
            uint64_t id = pass ? 4 - k : k;
            uint32_t lo, hi, lo2, hi2;

            tide__seg_find(seg, id, &lo, &hi);
            tide__seg_seek(seg, id, &carried, &lo2, &hi2);
            cr_assert_eq(lo2, lo, "id %llu", (unsigned long long)id);
            cr_assert_eq(hi2, hi, "id %llu", (unsigned long long)id);
            cr_assert_eq(carried, hi);
            for (size_t h = 0; h < sizeof(hints) / sizeof(hints[0]); h++) {
                uint32_t hint = hints[h];

                tide__seg_seek(seg, id, &hint, &lo2, &hi2);
                cr_assert_eq(lo2, lo);
                cr_assert_eq(hi2, hi);
            }
        }
    }
    tide__seg_close(seg);
}

static void copy_file(const char *from, const char *to, long long len)
{
    char buf[65536];
    int in = open(from, O_RDONLY),
        out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    long long left = len;

    cr_assert(in >= 0 && out >= 0);
    while (left > 0) {
        ssize_t n =
            read(in, buf,
                 left < (long long)sizeof(buf) ? (size_t)left : sizeof(buf));

        cr_assert_gt(n, 0);
        cr_assert_eq(write(out, buf, (size_t)n), n);
        left -= n;
    }
    close(in);
    close(out);
}

TEST_IO(segment, truncated_at_every_offset_is_corrupt)
{
    char path[PATH_MAX], cut[PATH_MAX];
    long long size;

    TEST_IO_OPEN(backend, 8, &io);

    write_small(path);
    size = test_file_size(path);
    snprintf(cut, sizeof(cut), "%s/cut.tseg", dir);
    for (long long k = 0; k < size; k += k < 256 || k > size - 256 ? 1 : 61) {
        int rc;

        copy_file(path, cut, k);
        rc = read_back(cut);
        cr_assert(rc == TIDE_ECORRUPT, "cut at %lld: %s", k, tide_strerror(rc));
    }
}

/* The zero padding between the footer's end and the trailer, [*from, *to):
 * the only bytes of a segment no checksum or exact-match check covers
 * (docs/file-format.md, "Segment files"). */
static void padding_range(const char *path, long long *from, long long *to)
{
    uint8_t tr[TIDE_SEG_TRAILER_BYTES];
    long long size = test_file_size(path);
    int fd = open(path, O_RDONLY);

    cr_assert_geq(fd, 0);
    cr_assert_eq(pread(fd, tr, sizeof(tr), size - (long long)sizeof(tr)),
                 (ssize_t)sizeof(tr));
    close(fd);
    *from = (long long)(tide__get_le64(tr) + tide__get_le32(tr + 8));
    *to = size - (long long)sizeof(tr);
    cr_assert_lt(*from, *to, "the small segment has padding to flip");
}

/* Header, payloads and footer are covered by XXH3-64 checksums; the
 * trailer's offset, length and checksum lead to a footer that fails its
 * checksum, and its magic and version must match exactly. So a flip
 * anywhere but the padding must be reported, and a flip in the padding
 * must change nothing. */
TEST_IO(segment, every_byte_flipped_is_detected_or_harmless)
{
    static const uint8_t masks[] = {0x01, 0x10, 0x80};
    char path[PATH_MAX];
    long long size, pad_from, pad_to, detected = 0;
    int fd;

    TEST_IO_OPEN(backend, 8, &io);

    write_small(path);
    size = test_file_size(path);
    padding_range(path, &pad_from, &pad_to);
    fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    for (long long k = 0; k < size; k++) {
        int padding = k >= pad_from && k < pad_to;
        uint8_t b;

        cr_assert_eq(pread(fd, &b, 1, k), 1);
        for (size_t m = 0; m < sizeof(masks); m++) {
            uint8_t f = b ^ masks[m];
            int rc;

            cr_assert_eq(pwrite(fd, &f, 1, k), 1);
            rc = read_back(path); /* asserts exact data when it succeeds */
            if (padding)
                cr_assert_eq(rc, 0, "flip %#x at %lld (padding): %s", masks[m],
                             k, tide_strerror(rc));
            else
                cr_assert(rc == TIDE_ECORRUPT || rc == TIDE_EVERSION,
                          "flip %#x at %lld not detected: %s", masks[m], k,
                          tide_strerror(rc));
            detected += rc != 0;
        }
        cr_assert_eq(pwrite(fd, &b, 1, k), 1);
    }
    close(fd);
    cr_assert_eq(read_back(path), 0);
    cr_assert_eq(detected,
                 (size - (pad_to - pad_from)) * (long long)sizeof(masks));
}
