/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the WAL reader (engine/wal.c replay) and what
 * recovery does with each record (engine/recover.c replay_record): batch
 * records are applied to a head (wal_batch.c), producer-table records
 * loaded (dedup.c). The input becomes WAL file 1 of shard 0 in a temporary
 * directory. Bit 1 of the first byte asks for repair (truncate a corrupt
 * log instead of refusing it).
 *
 * When the first input byte is odd the harness first recomputes the
 * checksums (file header, then each record it can walk), so that
 * mutations reach the record and batch decoders instead of stopping at
 * the checksum. docs/file-format.md, "WAL files", is the layout.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "dedup.h"
#include "fuzz_util.h"
#include "head.h"
#include "wal.h"
#include "wal_batch.h"

static char dir[4096], path[4200];

struct replay {
    struct head head;
    struct producers prod;
};

static void fix_checksums(uint8_t *f, size_t n)
{
    size_t p = TIDE_WAL_FILE_HEADER;

    if (n < TIDE_WAL_FILE_HEADER)
        return;
    fuzz_put64(f + 24, XXH3_64bits(f, 24));
    while (p + TIDE_WAL_RECORD_HEADER <= n) {
        uint32_t len = fuzz_get32(f + p);

        if (len > n - p - TIDE_WAL_RECORD_HEADER || (len == 0 && !f[p + 4]))
            break;
        fuzz_put64(f + p + 16,
                   XXH3_64bits_withSeed(f + p + TIDE_WAL_RECORD_HEADER, len,
                                        XXH3_64bits(f + p, 16)));
        p += (TIDE_WAL_RECORD_HEADER + (size_t)len + 7) & ~(size_t)7;
    }
}

/* What recovery does with a record (recover.c, replay_record). */
static int record(void *ctx, uint8_t type, const uint8_t *payload, uint32_t len)
{
    struct replay *r = ctx;
    struct tide_buf scratch = {0};
    uint32_t skipped = 0;
    int rc;

    if (type == TIDE_WAL_PRODUCERS)
        return tide__dedup_load(&r->prod, payload, len);
    rc = tide__wal_batch_apply(&r->head, payload, len, &scratch, &skipped);
    tide__buf_fini(&scratch);
    if (rc == 0 && tide__wal_batch_sequence(payload))
        rc = tide__dedup_set(&r->prod, tide__wal_batch_producer(payload),
                             tide__wal_batch_sequence(payload));
    return rc;
}

static void quiet(void *ctx, enum tide_log_level level, const char *fmt, ...)
{
    (void)ctx;
    (void)level;
    (void)fmt;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct replay r;
    uint64_t last_seq = 0, next_group = 0;

    if (size < 1)
        return 0;
    fuzz_tmpdir(dir, sizeof(dir), "wal");
    snprintf(path, sizeof(path), "%s/%016x.wal", dir, 1);
    if (fuzz_write_input(path, data, size, fix_checksums))
        return 0;
    memset(&r, 0, sizeof(r));
    tide__head_init(&r.head);
    (void)tide__wal_replay(dir, 0, NULL, 0, data[0] & 2, record, &r, quiet,
                           NULL, &last_seq, &next_group);
    tide__head_fini(&r.head);
    tide__dedup_fini(&r.prod);
    /* Repair may have deleted or truncated it; start clean next time. */
    unlink(path);
    return 0;
}
