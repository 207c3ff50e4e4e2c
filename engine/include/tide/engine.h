/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The storage engine's whole contract: open a data directory, append
 * batches of typed points durably, read ranges, aggregates and latest
 * values. No networking. docs/file-format.md specifies every file the
 * engine writes; docs/architecture.md the write and read paths.
 *
 * Thread-safety:
 *   1. tide_db_append() may be called from any number of threads at once.
 *      Each shard has one writer thread; callers only enqueue.
 *   2. Reads (tide_db_read_open, tide_db_aggregate, tide_db_latest) may run
 *      concurrently with each other and with appends. A read sees every
 *      batch whose completion has fired before the read started.
 *   3. An iterator belongs to one thread at a time.
 *   4. tide_db_close() must not race with any other call on the same db.
 */
#ifndef TIDE_ENGINE_H
#define TIDE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Return codes -------------------------------------------------------
 * 0 is success; system errors are -errno; the engine's own conditions sit in
 * a reserved range far from errno. Append-only: never renumber or reuse. */
#define TIDE_ECORRUPT (-30800)   /* a checksum, magic or length is wrong */
#define TIDE_EVERSION (-30801)   /* file format version not supported */
#define TIDE_EFULL (-30802)      /* a configured limit or buffer is full */
#define TIDE_ECLOSED (-30803)    /* the db is closing or closed */
#define TIDE_EIO (-30804)        /* sticky: an earlier write/fsync failed */
#define TIDE_EINVAL (-30805)     /* an argument is out of range */
#define TIDE_ETYPE (-30806)      /* value type differs from the series' */
#define TIDE_ENOTFOUND (-30807)  /* no such series / file / entry */
#define TIDE_ELOCKED (-30808)    /* data directory used by another process */
#define TIDE_EDUPLICATE (-30809) /* batch (producer, sequence) seen before */

/* Return a static, human-readable description of any code above or of a
 * -errno value. Never NULL. */
const char *tide_strerror(int rc);

/* ---- Values ------------------------------------------------------------ */

/* Value types; the numbers match the wire's ValueType and are on disk. */
enum tide_type {
    TIDE_TYPE_F64 = 1,
    TIDE_TYPE_I64 = 2,
    TIDE_TYPE_BOOL = 3,
    TIDE_TYPE_STR = 4,
};

/* A string value: `len` bytes at `ptr`, not NUL-terminated. */
struct tide_str {
    const char *ptr;
    uint32_t len;
};

#ifdef __cplusplus
}
#endif

#endif /* TIDE_ENGINE_H */
