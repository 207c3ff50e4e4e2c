/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Write-ahead log of one shard: a numbered series of preallocated files of
 * checksummed records, written in 4 KiB-aligned groups (O_DIRECT where the
 * file system allows it) and made durable by one fdatasync per group. The
 * byte layout is in docs/file-format.md, "WAL files".
 */
#ifndef TIDE_ENGINE_WAL_H
#define TIDE_ENGINE_WAL_H

#include "internal.h"
#include "io.h"
#include "keys.h"

#define TIDE_WAL_BLOCK 4096u
#define TIDE_WAL_FILE_HEADER 32u     /* versions 1 and 2 (plaintext) */
#define TIDE_WAL_FILE_HEADER_ENC 64u /* version 3 (encrypted) */
/* An encrypted record's payload: parts N (4), plaintext bytes (4), N part
 * entries, then the ciphertext (docs/file-format.md). */
#define TIDE_WAL_SEAL_HEADER 8u
#define TIDE_WAL_SEAL_PART 40u
#define TIDE_WAL_RECORD_HEADER 24u

/* Record types. Frozen: they are on disk. */
#define TIDE_WAL_BATCH 1     /* an append that touches only this shard */
#define TIDE_WAL_PRODUCERS 2 /* snapshot of the producer table */
/* Format version 2 adds (docs/file-format.md, "Batches over shards"): */
#define TIDE_WAL_MARK 3  /* highest batch id of parts in earlier files */
#define TIDE_WAL_PART 4  /* this shard's part of an append over shards */
#define TIDE_WAL_ABORT 5 /* ids of batches over shards never applied */
#define TIDE_WAL_PART_HEADER 16u /* batch id (8), shard mask (8) */

struct wal {
    char *dir; /* the shard's WAL directory */
    unsigned shard;
    int fd;              /* current file, -1 when none */
    int direct;          /* fd was opened with O_DIRECT */
    uint64_t seq;        /* number of the current file */
    uint64_t file_bytes; /* preallocated size of the current file */
    uint64_t group;      /* number of the next commit group */
    uint8_t *buf;        /* aligned; holds the unwritten tail */
    size_t buf_cap;
    size_t buf_len;
    uint64_t buf_off; /* file offset of buf[0], block-aligned */
    /* buf_len after the last successful commit: a failed commit drops
     * the records after it, and the next commit rewrites the file up to
     * dirty_end with zeros past its own records, so that nothing of the
     * failed group can be read back (0: nothing to clear). */
    size_t committed_len;
    uint64_t dirty_end;
    /* Encryption at rest: set by the owner after tide__wal_init() (NULL:
     * plaintext files). Each file has a fresh salt, and every sealed part
     * takes the next nonce counter, never reset within the file, even when
     * a failed group's records are dropped and their offsets rewritten. */
    struct keys *kr;
    uint32_t hdr_bytes; /* of the current file */
    uint8_t salt[TIDE_SALT_BYTES];
    uint64_t nonce_ctr;
    struct tide_buf subkeys; /* (account, key) of the current file */
    /* The parts of the record last planned by tide__wal_stored_len(). */
    struct tide_buf plan;
    const void *plan_for;
    uint32_t plan_len;
};

/* The payload length record (`type`, `payload`, `len`) takes in the
 * current file: `len`, or sealed (parts, entries and ciphertext) when the
 * WAL is encrypted. Pass that length to tide__wal_fits() and
 * tide__wal_record_bytes(). Returns 0 on -ENOMEM. */
uint32_t tide__wal_stored_len(struct wal *w, uint8_t type, const void *payload,
                              uint32_t len);

/* The stored length of a record with no account data (producer table,
 * mark, abort) of `len` payload bytes: one part under the engine key. */
uint32_t tide__wal_stored_len_plain(const struct wal *w, uint32_t len);

/* Set up `w` for the directory `dir` (created if missing). No file is
 * open until tide__wal_start(). Returns 0 or -errno. */
int tide__wal_init(struct wal *w, const char *dir, unsigned shard);
void tide__wal_fini(struct wal *w);

/* Create and preallocate file `seq` (at least `file_bytes`), write its
 * header, make it and the directory durable, and make it current. The
 * previous file, if any, must be committed. On failure nothing changes
 * (the new file is removed). Returns 0 or -errno (-ENOSPC when the disk
 * lacks room for the preallocation). */
int tide__wal_start(struct wal *w, struct tide_io *io, uint64_t seq,
                    uint64_t file_bytes);

/* Bytes a record with a payload of `len` takes in the file. */
uint64_t tide__wal_record_bytes(uint32_t len);

/* True when a record of `len` stored payload bytes (tide__wal_stored_len)
 * fits in the current file. */
int tide__wal_fits(const struct wal *w, uint32_t len);

/* Append a record to the pending group (memory only), sealed when the WAL
 * is encrypted (a part of an account whose key was destroyed is written
 * as zeros: it reads as erased). Returns 0, -ENOMEM or TIDE_EKEY. The
 * caller checked tide__wal_fits() with tide__wal_stored_len(). */
int tide__wal_append(struct wal *w, uint8_t type, const void *payload,
                     uint32_t len);

/* Write the pending group and, when `sync`, fdatasync it. Returns 0 or
 * -errno; on failure the group's records are dropped from the buffer (they
 * are not acknowledged) and the next successful commit overwrites what of
 * them may have reached the file. */
int tide__wal_commit(struct wal *w, struct tide_io *io, int sync);

/* Record callback of tide__wal_replay(); a non-zero return stops it. */
typedef int (*tide_wal_record_fn)(void *ctx, uint8_t type,
                                  const uint8_t *payload, uint32_t len);

/* Log callback for recovery messages (file and offset). */
typedef void (*tide_wal_log_fn)(void *ctx, enum tide_log_level level,
                                const char *fmt, ...);

/*
 * Replay every file numbered >= `from_seq` in `dir`, in order, calling
 * `fn` for each valid record (decrypted through `kr` when the file is
 * encrypted; the columns of accounts whose key was destroyed are left out
 * of the payload `fn` sees). An encrypted file without `kr` (or under
 * another engine key) is TIDE_EKEY; a record that fails authentication
 * and is followed by valid ones is TIDE_ECIPHER (logged with file and
 * offset), at the tail it is torn like any bad record. A torn tail (a bad
 * record with nothing valid after it but the rest of its own last commit group)
 * is truncated and logged. A bad record followed by other valid records is
 * corruption: TIDE_ECORRUPT unless `repair`, which truncates there and deletes
 * later files. *last_seq receives the highest file number seen (0 if none).
 */
int tide__wal_replay(const char *dir, unsigned shard, struct keys *kr,
                     uint64_t from_seq, int repair, tide_wal_record_fn fn,
                     void *ctx, tide_wal_log_fn log, void *log_ctx,
                     uint64_t *last_seq, uint64_t *next_group);

/* Delete the WAL files in `dir` numbered below `seq`; adds the bytes
 * they held to *removed. Returns 0 or -errno. Safe to call from another
 * thread than the shard's writer: it touches no struct wal. */
int tide__wal_remove_before(const char *dir, uint64_t seq, uint64_t *removed);

/* Tests: make every WAL preallocation larger than `bytes` fail with
 * ENOSPC, as on a disk with that much room left; 0 disables. */
void tide__wal_inject_space(uint64_t bytes);

/* Call `fn` for every valid record of every WAL file in `dir`, then
 * `file_done` with the file's size, reading only (unlike replay, nothing
 * is truncated): each file's log ends at its first invalid record. Safe
 * beside the shard's writer. Returns 0, fn's error or -errno. */
int tide__wal_scan(const char *dir, struct keys *kr, tide_wal_record_fn fn,
                   void (*file_done)(void *ctx, uint64_t bytes), void *ctx);

/* Total size of the WAL files in `dir` (0 when unreadable). */
uint64_t tide__wal_dir_bytes(const char *dir);

#endif /* TIDE_ENGINE_WAL_H */
