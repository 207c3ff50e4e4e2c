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
#include <stdint.h>
#include <stdlib.h>
#include <xxhash.h>

#include "fuzz_util.h"
#include "segment.h"

static char dir[4096], path[4200];

/* Make the checksums of f[n] match its bytes, as far as its layout is
 * readable; anything else is left as the fuzzer made it. */
static void fix_checksums(uint8_t *f, size_t n)
{
    uint64_t off, len, a, c;
    uint8_t *tr, *ft;

    if (n < TIDE_SEG_HEADER_BYTES + TIDE_SEG_TRAILER_BYTES)
        return;
    fuzz_put64(f + 56, XXH3_64bits(f, 56));
    tr = f + n - TIDE_SEG_TRAILER_BYTES;
    off = fuzz_get64(tr);
    len = fuzz_get32(tr + 8);
    if (off > n - TIDE_SEG_TRAILER_BYTES ||
        len > n - TIDE_SEG_TRAILER_BYTES - off || len < 40)
        return;
    ft = f + off;
    a = fuzz_get32(ft + 28);
    c = fuzz_get32(ft + 32);
    for (uint64_t i = 0; 40 + 8 * a + 112 * (i + 1) <= len && i < c; i++) {
        uint8_t *e = ft + 40 + 8 * a + 112 * i;
        uint64_t po = fuzz_get64(e + 8), pl = fuzz_get32(e + 24);

        if (po <= n && pl <= n - po)
            fuzz_put64(e + 104, XXH3_64bits(f + po, pl));
    }
    fuzz_put64(tr + 16, XXH3_64bits(ft, len));
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

    if (size < 1)
        return 0;
    if (!path[0]) {
        fuzz_tmpdir(dir, sizeof(dir), "seg");
        snprintf(path, sizeof(path), "%s/0000000000000001.seg", dir);
    }
    if (fuzz_write_input(path, data, size, fix_checksums))
        return 0;
    if (tide__seg_open(path, NULL, &seg) == 0) {
        int64_t mid = seg->min_ts / 2 + seg->max_ts / 2;

        read_chunks(seg, data[0] & 2 ? seg->min_ts : mid,
                    data[0] & 4 ? seg->max_ts : mid + 1);
        tide__seg_close(seg);
    }
    return 0;
}
