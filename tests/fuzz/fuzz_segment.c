/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the segment reader (engine/segment.c,
 * chunk_read.c): the input becomes a segment file in a temporary
 * directory, which tide__seg_open() opens; every chunk of the index it
 * loads is read back and decoded whole and by range, as a query would.
 *
 * Checksums would stop nearly every mutation at the door, so when the
 * first input byte is odd the harness first recomputes them (header,
 * every chunk payload the footer names, then the footer): mutations then
 * reach the index checks and the column decoders. docs/file-format.md,
 * "Segment files", is the layout.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "segment.h"

static char path[4096];

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return v;
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return v;
}

static void put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

/* Make the checksums of f[n] match its bytes, as far as its layout is
 * readable; anything else is left as the fuzzer made it. */
static void fix_checksums(uint8_t *f, size_t n)
{
    uint64_t off, len, a, c;
    uint8_t *tr, *ft;

    if (n < TIDE_SEG_HEADER_BYTES + TIDE_SEG_TRAILER_BYTES)
        return;
    put64(f + 56, XXH3_64bits(f, 56));
    tr = f + n - TIDE_SEG_TRAILER_BYTES;
    off = get64(tr);
    len = get32(tr + 8);
    if (off > n - TIDE_SEG_TRAILER_BYTES ||
        len > n - TIDE_SEG_TRAILER_BYTES - off || len < 40)
        return;
    ft = f + off;
    a = get32(ft + 28);
    c = get32(ft + 32);
    for (uint64_t i = 0; 40 + 8 * a + 112 * (i + 1) <= len && i < c; i++) {
        uint8_t *e = ft + 40 + 8 * a + 112 * i;
        uint64_t po = get64(e + 8), pl = get32(e + 24);

        if (po <= n && pl <= n - po)
            put64(e + 104, XXH3_64bits(f + po, pl));
    }
    put64(tr + 16, XXH3_64bits(ft, len));
}

/* Decode every chunk of `seg` from the file, whole and by a range taken
 * from the input. */
static void read_chunks(struct seg *seg, int64_t from, int64_t to)
{
    struct tide_buf arena = {0};

    for (uint32_t i = 0; i < seg->n_chunks; i++) {
        const struct chunk_ent *e = &seg->chunks[i];
        uint8_t *payload = malloc(e->stored_bytes ? e->stored_bytes : 1);
        int64_t *ts = malloc((size_t)(e->count ? e->count : 1) * 8);
        uint64_t *vals = malloc((size_t)(e->count ? e->count : 1) * 8);
        struct tide_str *strs =
            malloc((size_t)(e->count ? e->count : 1) * sizeof(*strs));
        uint32_t lo, hi;

        if (!payload || !ts || !vals || !strs ||
            tide__io_pread_full(seg->fd, payload, e->stored_bytes, e->offset))
            goto next;
        arena.len = 0;
        if (tide__chunk_decode(e, payload, e->stored_bytes, ts, vals, strs,
                               &arena) == 0) {
            /* Touch every decoded value: ASan checks the string spans. */
            volatile uint64_t sink = 0;

            for (uint32_t k = 0; k < e->count; k++) {
                sink += (uint64_t)ts[k];
                if (e->type == TIDE_TYPE_STR)
                    for (uint32_t b = 0; b < strs[k].len; b++)
                        sink += (uint8_t)strs[k].ptr[b];
                else
                    sink += vals[k];
            }
            (void)sink;
        }
        if (e->type != TIDE_TYPE_STR)
            (void)tide__chunk_decode_range(e, payload, e->stored_bytes, from,
                                           to, ts, vals, &lo, &hi);
    next:
        free(payload);
        free(ts);
        free(vals);
        free(strs);
    }
    tide__buf_fini(&arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct seg *seg = NULL;
    uint8_t *f;
    int fd;

    if (size < 1)
        return 0;
    if (!path[0]) {
        char tmpl[] = "/tmp/tide-fuzz-seg-XXXXXX";

        if (!mkdtemp(tmpl))
            abort();
        snprintf(path, sizeof(path), "%s/0000000000000001.seg", tmpl);
    }
    f = malloc(size);
    if (!f)
        return 0;
    memcpy(f, data + 1, size - 1);
    if (data[0] & 1)
        fix_checksums(f, size - 1);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, f, size - 1) != (ssize_t)(size - 1))
        abort();
    close(fd);
    if (tide__seg_open(path, &seg) == 0) {
        int64_t mid = seg->min_ts / 2 + seg->max_ts / 2;

        read_chunks(seg, data[0] & 2 ? seg->min_ts : mid,
                    data[0] & 4 ? seg->max_ts : mid + 1);
        tide__seg_close(seg);
    }
    free(f);
    return 0;
}
