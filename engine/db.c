/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Opening, recovery, appends and the two kinds of engine threads: one
 * writer per shard (group commit into the WAL, apply into the head) and
 * one flusher (frozen heads into segments, manifest, WAL checkpoint).
 * Invariants are listed in db.h; the formats in docs/file-format.md.
 *
 * Life of an append:
 *
 *   tide_db_append ──► per-shard req (WAL record) ──► shard inbox
 *        writer: take all queued reqs ─► dedup ─► WAL buffer + head
 *                ─► write + fdatasync (one per group) ─► callbacks
 *        head over budget / flush asked ─► rotate WAL, freeze head
 *        flusher: frozen head ─► segments ─► MANIFEST ─► publish ─► delete
 *                 WAL files before the rotation
 *
 * WAL batch record payload (little-endian; docs/file-format.md):
 *   OFFSET  SIZE  DESCRIPTION
 *   0       8     producer id
 *   8       8     sequence
 *   16      4     number of columns C
 *   20      4     zero
 *   24      ...   C columns, each 8-byte aligned:
 *                 series id (8), account id (8), tier (2), type (1),
 *                 zero (1), points n (4), timestamps (8n), then values:
 *                 f64/i64 8n; bool n bytes; string 4n lengths then the
 *                 bytes; each part padded with zeros to a multiple of 8
 * WAL producer-table record payload:
 *   0       4     entries E;  4  4  zero;  8  16E  (producer id, sequence)
 */
#include "db.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#define COL_HEADER 24u
#define BATCH_HEADER 24u
#define PRODUCERS_MAX (1u << 16)

static size_t pad8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

void tide_db_options_init(struct tide_db_options *o)
{
    memset(o, 0, sizeof(*o));
    o->sync = TIDE_SYNC_BATCH;
    o->chunk_points_max = 8192;
    o->head_bytes_max = 256ull << 20;
    o->wal_file_bytes = 64ull << 20;
    o->partition_ns = 86400ll * 1000000000ll;
}

void tide__db_log(struct tide_db *db, enum tide_log_level level,
                  const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (!db->o.log)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    db->o.log(db->o.log_ctx, level, msg);
}

static void wal_log(void *ctx, enum tide_log_level level, const char *fmt, ...)
{
    struct tide_db *db = ctx;
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    tide__db_log(db, level, "%s", msg);
}

unsigned tide__db_shard_of(const struct tide_db *db, uint64_t series_id)
{
    return (unsigned)(((series_id * 0x9e3779b97f4a7c15ull) >> 32) %
                      db->n_shards);
}

int tide__db_io_get(struct tide_db *db, struct tide_io **out)
{
    pthread_mutex_lock(&db->io_mu);
    if (db->n_io_pool > 0) {
        *out = db->io_pool[--db->n_io_pool];
        pthread_mutex_unlock(&db->io_mu);
        return 0;
    }
    pthread_mutex_unlock(&db->io_mu);
    return tide__io_open(db->o.io_backend, 64, out);
}

void tide__db_io_put(struct tide_db *db, struct tide_io *io)
{
    pthread_mutex_lock(&db->io_mu);
    if (db->n_io_pool < sizeof(db->io_pool) / sizeof(db->io_pool[0])) {
        db->io_pool[db->n_io_pool++] = io;
        io = NULL;
    }
    pthread_mutex_unlock(&db->io_mu);
    tide__io_close(io);
}

/* ---- Producer table ------------------------------------------------------ */

static uint32_t prod_slot(const struct producers *p, uint64_t id)
{
    return (uint32_t)((id * 0x9e3779b97f4a7c15ull) >> 32) & (p->cap - 1);
}

static uint64_t prod_get(const struct producers *p, uint64_t id)
{
    if (p->cap == 0)
        return 0;
    for (uint32_t i = prod_slot(p, id);; i = (i + 1) & (p->cap - 1)) {
        if (p->ids[i] == id)
            return p->seqs[i];
        if (p->ids[i] == 0)
            return 0;
    }
}

static void prod_fini(struct producers *p)
{
    tide_free(p->ids);
    tide_free(p->seqs);
    memset(p, 0, sizeof(*p));
}

/* Record `seq` for `id`. The table is bounded: when it holds
 * PRODUCERS_MAX producers it is cleared, which only means a retry of a
 * forgotten producer's batch is applied again, harmlessly, because a
 * repeated (series, timestamp) keeps one value. */
static int prod_set(struct producers *p, uint64_t id, uint64_t seq)
{
    uint32_t i;

    if (id == 0)
        return 0;
    if ((p->n + 1) * 2 > p->cap) {
        struct producers q = {0};
        uint32_t cap = p->cap ? p->cap * 2 : 64;

        if (p->n >= PRODUCERS_MAX)
            cap = p->cap;
        q.cap = cap;
        q.ids = tide_calloc(cap, sizeof(*q.ids));
        q.seqs = tide_calloc(cap, sizeof(*q.seqs));
        if (!q.ids || !q.seqs) {
            prod_fini(&q);
            return -ENOMEM;
        }
        for (uint32_t j = 0; j < p->cap && p->n < PRODUCERS_MAX; j++) {
            if (!p->ids[j])
                continue;
            i = prod_slot(&q, p->ids[j]);
            while (q.ids[i])
                i = (i + 1) & (q.cap - 1);
            q.ids[i] = p->ids[j];
            q.seqs[i] = p->seqs[j];
            q.n++;
        }
        prod_fini(p);
        *p = q;
    }
    for (i = prod_slot(p, id); p->ids[i] && p->ids[i] != id;
         i = (i + 1) & (p->cap - 1))
        ;
    if (!p->ids[i])
        p->n++;
    p->ids[i] = id;
    if (seq > p->seqs[i])
        p->seqs[i] = seq;
    return 0;
}

/* Serialise the producer table as a WAL record payload. */
static int prod_record(const struct producers *p, struct tide_buf *out)
{
    uint8_t e[16];
    int rc;

    out->len = 0;
    rc = tide__buf_reserve(out, 8 + (size_t)p->n * 16);
    if (rc)
        return rc;
    memset(e, 0, 8);
    tide__put_le32(e, p->n);
    tide__buf_append(out, e, 8);
    for (uint32_t i = 0; i < p->cap; i++) {
        if (!p->ids[i])
            continue;
        tide__put_le64(e, p->ids[i]);
        tide__put_le64(e + 8, p->seqs[i]);
        tide__buf_append(out, e, 16);
    }
    return 0;
}

static int prod_load(struct producers *p, const uint8_t *rec, uint32_t len)
{
    uint32_t n;
    int rc;

    if (len < 8)
        return TIDE_ECORRUPT;
    n = tide__get_le32(rec);
    if ((uint64_t)n * 16 != len - 8)
        return TIDE_ECORRUPT;
    for (uint32_t i = 0; i < n; i++) {
        rc = prod_set(p, tide__get_le64(rec + 8 + 16 * i),
                      tide__get_le64(rec + 16 + 16 * i));
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- Batch records --------------------------------------------------- */

static size_t values_bytes(const struct tide_column *c)
{
    size_t n = c->n, bytes = 0;

    switch (c->type) {
    case TIDE_TYPE_F64:
    case TIDE_TYPE_I64:
        return 8 * n;
    case TIDE_TYPE_BOOL:
        return pad8(n);
    case TIDE_TYPE_STR:
        for (size_t i = 0; i < n; i++)
            bytes += c->v.str[i].len;
        return pad8(4 * n) + pad8(bytes);
    }
    return 0;
}

static size_t column_bytes(const struct tide_column *c)
{
    return COL_HEADER + 8 * (size_t)c->n + values_bytes(c);
}

static int column_valid(const struct tide_column *c)
{
    if (c->series_id == 0 || c->type < TIDE_TYPE_F64 ||
        c->type > TIDE_TYPE_STR || (c->n && !c->ts_ns))
        return 0;
    if (c->n && !c->v.f64)
        return 0;
    if (c->type == TIDE_TYPE_STR)
        for (uint32_t i = 0; i < c->n; i++)
            if (c->v.str[i].len > TIDE_STR_BYTES_MAX ||
                (c->v.str[i].len && !c->v.str[i].ptr))
                return 0;
    return 1;
}

static uint8_t *put_column(uint8_t *p, const struct tide_column *c)
{
    size_t n = c->n;

    memset(p, 0, COL_HEADER);
    tide__put_le64(p, c->series_id);
    tide__put_le64(p + 8, c->account_id);
    p[16] = (uint8_t)c->tier;
    p[17] = (uint8_t)(c->tier >> 8);
    p[18] = c->type;
    tide__put_le32(p + 20, c->n);
    p += COL_HEADER;
    memcpy(p, c->ts_ns, 8 * n);
    p += 8 * n;
    switch (c->type) {
    case TIDE_TYPE_F64:
    case TIDE_TYPE_I64:
        memcpy(p, c->v.i64, 8 * n);
        return p + 8 * n;
    case TIDE_TYPE_BOOL:
        for (size_t i = 0; i < n; i++)
            p[i] = c->v.b[i] != 0;
        memset(p + n, 0, pad8(n) - n);
        return p + pad8(n);
    default: {
        uint8_t *s;

        for (size_t i = 0; i < n; i++)
            tide__put_le32(p + 4 * i, c->v.str[i].len);
        memset(p + 4 * n, 0, pad8(4 * n) - 4 * n);
        s = p + pad8(4 * n);
        for (size_t i = 0; i < n; i++) {
            if (c->v.str[i].len)
                memcpy(s, c->v.str[i].ptr, c->v.str[i].len);
            s += c->v.str[i].len;
        }
        while ((size_t)(s - p) % 8)
            *s++ = 0;
        return s;
    }
    }
}

/* Apply a batch record to a head. The record may come from disk (replay),
 * so every length is checked against the record. Returns 0, TIDE_ECORRUPT
 * or -ENOMEM; TIDE_ETYPE columns are skipped and counted in *skipped. */
static int apply_batch(struct head *h, const uint8_t *rec, uint32_t len,
                       struct tide_buf *scratch, uint32_t *skipped)
{
    const uint8_t *p = rec + BATCH_HEADER, *end = rec + len;
    uint32_t n_cols;

    if (len < BATCH_HEADER)
        return TIDE_ECORRUPT;
    n_cols = tide__get_le32(rec + 16);
    for (uint32_t c = 0; c < n_cols; c++) {
        uint64_t id, account;
        uint16_t tier;
        uint8_t type;
        uint32_t n;
        const uint8_t *ts, *v;
        size_t vbytes;
        int rc;

        if ((size_t)(end - p) < COL_HEADER)
            return TIDE_ECORRUPT;
        id = tide__get_le64(p);
        account = tide__get_le64(p + 8);
        tier = (uint16_t)(p[16] | p[17] << 8);
        type = p[18];
        n = tide__get_le32(p + 20);
        p += COL_HEADER;
        if ((size_t)(end - p) / 8 < n)
            return TIDE_ECORRUPT;
        ts = p;
        v = p + 8 * (size_t)n;
        switch (type) {
        case TIDE_TYPE_F64:
        case TIDE_TYPE_I64:
            vbytes = 8 * (size_t)n;
            break;
        case TIDE_TYPE_BOOL:
            vbytes = pad8(n);
            break;
        case TIDE_TYPE_STR:
            vbytes = pad8(4 * (size_t)n);
            break;
        default:
            return TIDE_ECORRUPT;
        }
        if ((size_t)(end - v) < vbytes)
            return TIDE_ECORRUPT;
        scratch->len = 0;
        if (type == TIDE_TYPE_STR) {
            const uint8_t *s = v + vbytes;
            struct tide_str *strs;
            size_t total = 0;

            rc = tide__buf_reserve(scratch, (size_t)n * sizeof(*strs));
            if (rc)
                return rc;
            strs = (struct tide_str *)scratch->data;
            for (uint32_t i = 0; i < n; i++) {
                uint32_t l = tide__get_le32(v + 4 * (size_t)i);

                if ((size_t)(end - s) - total < l || l > TIDE_STR_BYTES_MAX)
                    return TIDE_ECORRUPT;
                strs[i].ptr = (const char *)s + total;
                strs[i].len = l;
                total += l;
            }
            if ((size_t)(end - s) < pad8(total))
                return TIDE_ECORRUPT;
            vbytes += pad8(total);
            rc = tide__head_append(h, id, account, tier, type, n,
                                   (const int64_t *)(const void *)ts, NULL,
                                   strs);
        } else {
            const uint64_t *vals = (const uint64_t *)(const void *)v;

            /* f64 and i64 are used in place: records are 8-byte aligned
             * and little-endian like the host. Bools widen to 8 bytes. */
            if (type == TIDE_TYPE_BOOL) {
                uint64_t *wide;

                rc = tide__buf_reserve(scratch, 8 * (size_t)n);
                if (rc)
                    return rc;
                wide = (uint64_t *)(void *)scratch->data;
                for (uint32_t i = 0; i < n; i++)
                    wide[i] = v[i];
                vals = wide;
            }
            rc = tide__head_append(h, id, account, tier, type, n,
                                   (const int64_t *)(const void *)ts, vals,
                                   NULL);
        }
        if (rc == TIDE_ETYPE) {
            (*skipped)++;
            rc = 0;
        }
        if (rc)
            return rc;
        p = v + vbytes;
    }
    return 0;
}

/* ---- Tickets ------------------------------------------------------------ */

/* One part of a ticket finished with `rc` (0, duplicate, or an error). */
static void ticket_part_done(struct ticket *t, int rc, int dup)
{
    int expected = 0;

    if (rc)
        atomic_compare_exchange_strong(&t->err, &expected, rc);
    if (dup)
        atomic_fetch_add(&t->dups, 1);
    if (atomic_fetch_sub(&t->pending, 1) != 1)
        return;
    rc = atomic_load(&t->err);
    if (rc == 0 && atomic_load(&t->dups) == t->parts)
        rc = TIDE_EDUPLICATE;
    t->cb(t->ctx, rc);
    tide_free(t);
}

static void req_done(struct req *r, int rc)
{
    ticket_part_done(r->ticket, rc, r->dup);
    tide_free(r);
}

static void complete_list(struct req *list, int rc)
{
    while (list) {
        struct req *next = list->next;

        req_done(list, rc);
        list = next;
    }
}

/* ---- Shard inbox ----------------------------------------------------- */

static void inbox_push(struct shard *s, struct req *r)
{
    struct req *head = atomic_load(&s->inbox);

    do
        r->next = head;
    while (!atomic_compare_exchange_weak(&s->inbox, &head, r));
    atomic_fetch_add(&s->depth, 1);
    if (atomic_load(&s->sleeping)) {
        pthread_mutex_lock(&s->wake_mu);
        pthread_cond_signal(&s->wake_cv);
        pthread_mutex_unlock(&s->wake_mu);
    }
}

/* Take every queued request, oldest first; sleeps while there is none.
 * Returns NULL only when the db is stopping and the inbox is empty. */
static struct req *inbox_take(struct shard *s)
{
    struct req *list = atomic_exchange(&s->inbox, NULL), *fifo = NULL;

    if (!list) {
        atomic_store(&s->sleeping, 1);
        pthread_mutex_lock(&s->wake_mu);
        while (!(list = atomic_exchange(&s->inbox, NULL)) && !s->db->stopping)
            pthread_cond_wait(&s->wake_cv, &s->wake_mu);
        pthread_mutex_unlock(&s->wake_mu);
        atomic_store(&s->sleeping, 0);
    }
    while (list) {
        struct req *next = list->next;

        list->next = fifo;
        fifo = list;
        list = next;
        atomic_fetch_sub(&s->depth, 1);
    }
    return fifo;
}

/* ---- Appending ------------------------------------------------------- */

int tide_db_append(tide_db *db, const struct tide_batch *batch,
                   tide_append_cb cb, void *ctx)
{
    size_t bytes[TIDE_SHARDS_MAX] = {0};
    uint32_t points[TIDE_SHARDS_MAX] = {0};
    struct req *reqs[TIDE_SHARDS_MAX] = {0};
    uint8_t *pos[TIDE_SHARDS_MAX];
    struct ticket *t;
    uint64_t total = 0;
    unsigned parts = 0;
    int rc;

    if (atomic_load(&db->closing))
        return TIDE_ECLOSED;
    if (atomic_load(&db->failed))
        return TIDE_EIO;
    if (!cb || (batch->n_columns && !batch->columns))
        return TIDE_EINVAL;
    for (uint32_t i = 0; i < batch->n_columns; i++) {
        const struct tide_column *c = &batch->columns[i];
        unsigned sh;

        if (!column_valid(c))
            return TIDE_EINVAL;
        total += c->n;
        if (total > TIDE_BATCH_POINTS_MAX)
            return TIDE_EFULL;
        if (c->n == 0)
            continue;
        sh = tide__db_shard_of(db, c->series_id);
        bytes[sh] += column_bytes(c);
        points[sh] += c->n;
    }
    t = tide_calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    for (unsigned sh = 0; sh < db->n_shards; sh++) {
        struct req *r;

        if (!bytes[sh])
            continue;
        r = tide_malloc(sizeof(*r) + BATCH_HEADER + bytes[sh]);
        if (!r) {
            rc = -ENOMEM;
            goto fail;
        }
        memset(r, 0, sizeof(*r));
        r->kind = REQ_BATCH;
        r->ticket = t;
        r->producer_id = batch->producer_id;
        r->sequence = batch->sequence;
        r->points = points[sh];
        r->rec_len = (uint32_t)(BATCH_HEADER + bytes[sh]);
        memset(r->rec, 0, BATCH_HEADER);
        tide__put_le64(r->rec, batch->producer_id);
        tide__put_le64(r->rec + 8, batch->sequence);
        pos[sh] = r->rec + BATCH_HEADER;
        reqs[sh] = r;
        parts++;
    }
    for (uint32_t i = 0; i < batch->n_columns; i++) {
        const struct tide_column *c = &batch->columns[i];
        unsigned sh;

        if (c->n == 0)
            continue;
        sh = tide__db_shard_of(db, c->series_id);
        pos[sh] = put_column(pos[sh], c);
        tide__put_le32(reqs[sh]->rec + 16,
                       tide__get_le32(reqs[sh]->rec + 16) + 1);
    }
    if (parts == 0) {
        /* Nothing to store: durable by definition. */
        tide_free(t);
        cb(ctx, 0);
        return 0;
    }
    t->parts = parts;
    t->cb = cb;
    t->ctx = ctx;
    atomic_store(&t->pending, parts);
    for (unsigned sh = 0; sh < db->n_shards; sh++)
        if (reqs[sh])
            inbox_push(&db->shards[sh], reqs[sh]);
    return 0;
fail:
    for (unsigned sh = 0; sh < db->n_shards; sh++)
        tide_free(reqs[sh]);
    tide_free(t);
    return rc;
}

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int rc;
};

static void waiter_cb(void *ctx, int rc)
{
    struct waiter *w = ctx;

    pthread_mutex_lock(&w->mu);
    w->rc = rc;
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int waiter_wait(struct waiter *w)
{
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    return w->rc;
}

#define WAITER_INIT                                                            \
    {                                                                          \
        PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0              \
    }

int tide_db_append_wait(tide_db *db, const struct tide_batch *batch)
{
    struct waiter w = WAITER_INIT;
    int rc = tide_db_append(db, batch, waiter_cb, &w);

    return rc ? rc : waiter_wait(&w);
}

/* ---- Writer thread --------------------------------------------------- */

static void set_failed(struct tide_db *db, int rc, const char *what)
{
    int expected = 0;

    if (atomic_compare_exchange_strong(&db->failed, &expected, TIDE_EIO))
        tide__db_log(db, TIDE_LOG_ERROR,
                     "%s failed: %s; the database refuses writes until it "
                     "is reopened",
                     what, tide_strerror(rc));
}

/* Commit the pending WAL group and complete the requests waiting on it. */
static int commit_group(struct shard *s, struct req **done)
{
    struct tide_db *db = s->db;
    int sync = db->o.sync == TIDE_SYNC_BATCH;
    struct timespec t0, t1;
    int rc;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = tide__wal_commit(&s->wal, s->io, sync);
    clock_gettime(CLOCK_MONOTONIC, &t1);

    uint64_t points = 0, batches = 0, dups = 0;

    if (rc)
        set_failed(db, rc, "WAL commit");
    else if (sync) {
        uint64_t ns = (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000ll +
                                 (t1.tv_nsec - t0.tv_nsec));
        unsigned b = 0;

        while (b + 1 < TIDE_SYNC_LAT_BUCKETS && ns > (50000ull << b))
            b++;
        atomic_fetch_add(&db->wal_syncs, 1);
        atomic_fetch_add(&db->wal_sync_lat[b], 1);
        atomic_fetch_add(&db->wal_sync_ns_total, ns);
    }
    /* Counted before any completion fires, so a caller that has its
     * acknowledgement also sees its points in tide_db_stats(). */
    for (const struct req *r = *done; r && rc == 0; r = r->next) {
        dups += r->dup;
        points += r->dup ? 0 : r->points;
        batches += !r->dup;
    }
    atomic_fetch_add(&db->points_appended, points);
    atomic_fetch_add(&db->batches_appended, batches);
    atomic_fetch_add(&db->batches_duplicate, dups);
    complete_list(*done, rc ? TIDE_EIO : 0);
    *done = NULL;
    return rc;
}

/* Start WAL file `seq` and open it with a snapshot of the producer table,
 * so that deduplication survives the deletion of older files. */
static int wal_rotate(struct shard *s, uint64_t seq)
{
    struct tide_buf rec = {0};
    int rc;

    rc = tide__wal_start(&s->wal, s->io, seq, s->db->o.wal_file_bytes);
    if (rc == 0)
        atomic_fetch_add(&s->wal_bytes, s->wal.file_bytes);
    if (rc == 0)
        rc = prod_record(&s->prod, &rec);
    if (rc == 0 && !tide__wal_fits(&s->wal, (uint32_t)rec.len))
        rc = TIDE_EFULL;
    if (rc == 0)
        rc = tide__wal_append(&s->wal, TIDE_WAL_PRODUCERS, rec.data,
                              (uint32_t)rec.len);
    tide__buf_fini(&rec);
    return rc;
}

/* Make room for a record of `len` bytes: commit and rotate when the
 * current file is full. A record larger than a file gets a file its size. */
static int wal_make_room(struct shard *s, uint32_t len, struct req **done)
{
    uint64_t need = tide__wal_record_bytes(len) + (1u << 20);
    int rc;

    if (tide__wal_fits(&s->wal, len))
        return 0;
    rc = commit_group(s, done);
    if (rc)
        return rc;
    if (need < s->db->o.wal_file_bytes)
        need = s->db->o.wal_file_bytes;
    rc = tide__wal_start(&s->wal, s->io, s->wal.seq + 1, need);
    if (rc)
        return rc;
    atomic_fetch_add(&s->wal_bytes, s->wal.file_bytes);
    return 0;
}

/* Hand the active head to the flusher (waiting while it is still busy with
 * the previous one) and attach the flush requests in `waiters`. */
static int freeze_head(struct shard *s, struct req *waiters)
{
    struct tide_db *db = s->db;
    struct req **tail;
    struct head *frozen;
    int rc, busy;

    pthread_mutex_lock(&db->fl_mu);
    while (s->frozen && s->head.points > 0 && !db->stopping &&
           !atomic_load(&db->failed))
        pthread_cond_wait(&db->done_cv, &db->fl_mu);
    if (s->head.points == 0) {
        /* Nothing new: the flush is done once any frozen head is. */
        if (!s->frozen) {
            pthread_mutex_unlock(&db->fl_mu);
            complete_list(waiters, 0);
            return 0;
        }
        for (tail = &s->frozen_waiters; *tail; tail = &(*tail)->next)
            ;
        *tail = waiters;
        pthread_mutex_unlock(&db->fl_mu);
        return 0;
    }
    busy = s->frozen != NULL;
    pthread_mutex_unlock(&db->fl_mu);
    if (busy) { /* stopping or failed while the flusher is busy */
        complete_list(waiters,
                      atomic_load(&db->failed) ? TIDE_EIO : TIDE_ECLOSED);
        return 0;
    }
    frozen = tide_malloc(sizeof(*frozen));
    if (!frozen) {
        complete_list(waiters, -ENOMEM);
        return -ENOMEM;
    }
    rc = wal_rotate(s, s->wal.seq + 1);
    if (rc == 0)
        rc = tide__wal_commit(&s->wal, s->io, 1);
    if (rc) {
        tide_free(frozen);
        set_failed(db, rc, "WAL rotation");
        complete_list(waiters, TIDE_EIO);
        return rc;
    }
    /* Swap under the read lock's writer side so readers see the points
     * in the active head or the frozen one, never in neither. */
    pthread_rwlock_wrlock(&s->rw);
    *frozen = s->head;
    tide__head_init(&s->head);
    pthread_mutex_lock(&db->fl_mu);
    s->frozen = frozen;
    s->frozen_replay = s->wal.seq;
    s->frozen_waiters = waiters;
    s->flush_wanted = 1;
    pthread_cond_signal(&db->fl_cv);
    pthread_mutex_unlock(&db->fl_mu);
    pthread_rwlock_unlock(&s->rw);
    return 0;
}

static void *writer_main(void *arg)
{
    struct shard *s = arg;
    struct tide_db *db = s->db;
    struct tide_buf scratch = {0};
    struct req *list;

    while ((list = inbox_take(s))) {
        struct req *done = NULL, *flushes = NULL;
        uint32_t skipped = 0;
        int rc = atomic_load(&db->failed);

        pthread_rwlock_wrlock(&s->rw);
        while (list) {
            struct req *r = list;

            list = r->next;
            if (r->kind == REQ_FLUSH) {
                r->next = flushes;
                flushes = r;
                continue;
            }
            if (!rc && r->sequence &&
                prod_get(&s->prod, r->producer_id) >= r->sequence)
                r->dup = 1;
            /* A rotation commits the group so far; r joins the list of
             * completions only once its own record is in the buffer. */
            if (!rc && !r->dup)
                rc = wal_make_room(s, r->rec_len, &done);
            r->next = done;
            done = r;
            if (rc || r->dup)
                continue;
            rc = tide__wal_append(&s->wal, TIDE_WAL_BATCH, r->rec, r->rec_len);
            if (rc == 0)
                rc = apply_batch(&s->head, r->rec, r->rec_len, &scratch,
                                 &skipped);
            if (rc == 0 && r->sequence)
                rc = prod_set(&s->prod, r->producer_id, r->sequence);
            if (rc) {
                set_failed(db, rc, "append");
                continue;
            }
        }
        pthread_rwlock_unlock(&s->rw);
        if (skipped)
            tide__db_log(db, TIDE_LOG_WARN,
                         "shard %u: %u column(s) skipped: value type differs "
                         "from the series' type",
                         s->idx, skipped);
        if (rc)
            complete_list(done, TIDE_EIO);
        else
            commit_group(s, &done);
        if (atomic_load(&db->failed)) {
            complete_list(flushes, TIDE_EIO);
            continue;
        }
        if (flushes || s->head.bytes >= db->head_bytes_per_shard)
            freeze_head(s, flushes);
    }
    tide__buf_fini(&scratch);
    return NULL;
}

/* ---- Flusher ------------------------------------------------------------ */

struct part_key {
    uint16_t tier;
    int64_t part;
};

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;

    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* First index in ts[0..n) with ts >= bound (ts ascending). */
static uint32_t lower_bound(const int64_t *ts, uint32_t n, int64_t bound)
{
    uint32_t a = 0, b = n;

    while (a < b) {
        uint32_t m = a + (b - a) / 2;

        if (ts[m] < bound)
            a = m + 1;
        else
            b = m;
    }
    return a;
}

/* Distinct (tier, partition) pairs of a normalised head. */
static int collect_keys(struct head *h, int64_t part_ns, struct tide_buf *out)
{
    for (uint32_t i = 0; i < h->n_slots; i++) {
        struct hseries *s = h->slots[i];
        uint32_t j = 0;

        while (s && j < s->n) {
            struct part_key k = {s->tier, floor_div(s->ts[j], part_ns)};
            struct part_key *keys = (struct part_key *)out->data;
            size_t n = out->len / sizeof(k), x;
            int64_t end;
            int rc;

            for (x = 0; x < n; x++)
                if (keys[x].tier == k.tier && keys[x].part == k.part)
                    break;
            if (x == n) {
                rc = tide__buf_append(out, &k, sizeof(k));
                if (rc)
                    return rc;
            }
            end = k.part >= INT64_MAX / part_ns ? INT64_MAX
                                                : (k.part + 1) * part_ns;
            j = end == INT64_MAX ? s->n : lower_bound(s->ts, s->n, end);
        }
    }
    return 0;
}

static int cmp_series_id(const void *a, const void *b)
{
    const struct hseries *x = *(const struct hseries *const *)a;
    const struct hseries *y = *(const struct hseries *const *)b;

    return x->id < y->id ? -1 : x->id > y->id;
}

/* The series of `h` ordered by id, into `out` (struct hseries *[]). */
static int series_by_id(const struct head *h, struct tide_buf *out)
{
    int rc = 0;

    for (uint32_t i = 0; i < h->n_slots && rc == 0; i++)
        if (h->slots[i])
            rc = tide__buf_append(out, &h->slots[i], sizeof(h->slots[i]));
    if (rc == 0 && out->len)
        qsort(out->data, out->len / sizeof(struct hseries *),
              sizeof(struct hseries *), cmp_series_id);
    return rc;
}

/* Write one segment with the points of the series in `order` (ascending
 * ids) in tier/partition `k`. Chunks are laid out in the footer's order,
 * so a read of ascending ids walks each file forward and the kernel's
 * read-ahead serves it. */
static int write_segment(struct tide_db *db, struct shard *sh,
                         const struct tide_buf *order, struct part_key k,
                         struct seg **out)
{
    int64_t part_ns = db->o.partition_ns;
    int64_t lo = k.part <= INT64_MIN / part_ns ? INT64_MIN : k.part * part_ns;
    int64_t hi =
        k.part >= INT64_MAX / part_ns - 1 ? INT64_MAX : (k.part + 1) * part_ns;
    struct seg_writer *w = NULL;
    char *path = NULL;
    uint64_t id;
    int rc;

    pthread_mutex_lock(&db->man_mu);
    id = db->man.next_seg_id++;
    pthread_mutex_unlock(&db->man_mu);
    rc = tide__segw_open(db->seg_dir, id, (uint16_t)sh->idx, k.tier,
                         db->flush_io, &w);
    if (rc)
        return rc;
    for (size_t i = 0; i < order->len / sizeof(struct hseries *) && rc == 0;
         i++) {
        const struct hseries *s = ((struct hseries *const *)order->data)[i];
        uint32_t a, b;

        if (s->tier != k.tier)
            continue;
        a = lower_bound(s->ts, s->n, lo);
        b = hi == INT64_MAX ? s->n : lower_bound(s->ts, s->n, hi);
        while (a < b && rc == 0) {
            uint32_t n =
                b - a < db->o.chunk_points_max ? b - a : db->o.chunk_points_max;

            rc = tide__segw_add(w, s->id, s->account_id, s->type, n, s->ts + a,
                                s->val ? s->val + a : NULL,
                                s->str ? s->str + a : NULL);
            a += n;
        }
    }
    if (rc) {
        tide__segw_abort(w);
        return rc;
    }
    rc = tide__segw_finish(w, &path);
    if (rc == 0)
        rc = tide__seg_open(path, out);
    tide_free(path);
    return rc;
}

static int add_segs(struct tide_db *db, struct seg **segs, uint32_t n)
{
    if (db->n_segs + n > db->cap_segs) {
        uint32_t cap = db->cap_segs ? db->cap_segs : 16;
        struct seg **p;

        while (cap < db->n_segs + n)
            cap *= 2;
        p = tide_realloc(db->segs, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        db->segs = p;
        db->cap_segs = cap;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct seg *seg = segs[i];

        seg->shard_only = 1;
        for (uint32_t c = 0; c < seg->n_chunks && seg->shard_only; c++)
            seg->shard_only =
                tide__db_shard_of(db, seg->chunks[c].series_id) == seg->shard;
    }
    memcpy(db->segs + db->n_segs, segs, n * sizeof(*segs));
    db->n_segs += n;
    db->seg_gen++;
    return 0;
}

/* Record new segments and the shard's new replay point in the MANIFEST. */
static int manifest_add(struct tide_db *db, struct shard *sh, struct seg **segs,
                        uint32_t n)
{
    struct manifest *m = &db->man;
    struct man_seg *p;
    int rc;

    pthread_mutex_lock(&db->man_mu);
    p = tide_realloc(m->segs, (m->n_segs + n + 1) * sizeof(*p));
    if (!p) {
        pthread_mutex_unlock(&db->man_mu);
        return -ENOMEM;
    }
    m->segs = p;
    for (uint32_t i = 0; i < n; i++)
        m->segs[m->n_segs + i] =
            (struct man_seg){segs[i]->id, segs[i]->shard, segs[i]->tier};
    m->n_segs += n;
    m->replay_from[sh->idx] = sh->frozen_replay;
    rc = tide__manifest_store(db->dir, m);
    if (rc)
        m->n_segs -= n; /* the old manifest stays in force */
    pthread_mutex_unlock(&db->man_mu);
    return rc;
}

static void flush_frozen(struct tide_db *db, struct shard *sh)
{
    struct head *h = sh->frozen;
    struct tide_buf keys = {0}, segs = {0}, order = {0};
    struct req *waiters;
    uint64_t removed = 0;
    uint32_t n_segs = 0;
    int rc = 0;

    pthread_rwlock_wrlock(&sh->rw);
    for (uint32_t i = 0; i < h->n_slots && rc == 0; i++)
        if (h->slots[i])
            rc = tide__hseries_normalize(h->slots[i]);
    pthread_rwlock_unlock(&sh->rw);
    if (rc == 0)
        rc = collect_keys(h, db->o.partition_ns, &keys);
    if (rc == 0)
        rc = series_by_id(h, &order);
    for (size_t i = 0; rc == 0 && i < keys.len / sizeof(struct part_key); i++) {
        struct seg *seg = NULL;

        rc = write_segment(db, sh, &order, ((struct part_key *)keys.data)[i],
                           &seg);
        if (rc == 0) {
            rc = tide__buf_append(&segs, &seg, sizeof(seg));
            if (rc)
                tide__seg_close(seg);
        }
    }
    n_segs = (uint32_t)(segs.len / sizeof(struct seg *));
    if (rc == 0)
        rc = manifest_add(db, sh, (struct seg **)segs.data, n_segs);
    if (rc) {
        for (uint32_t i = 0; i < n_segs; i++) {
            struct seg *seg = ((struct seg **)segs.data)[i];

            unlink(seg->path);
            tide__seg_close(seg);
        }
        set_failed(db, rc, "flush");
        pthread_mutex_lock(&db->fl_mu);
        waiters = sh->frozen_waiters;
        sh->frozen_waiters = NULL;
        pthread_cond_broadcast(&db->done_cv);
        pthread_mutex_unlock(&db->fl_mu);
        complete_list(waiters, TIDE_EIO);
        goto out;
    }
    /* Publish: the segments appear as the frozen head disappears. */
    pthread_rwlock_wrlock(&db->seg_lock);
    pthread_rwlock_wrlock(&sh->rw);
    rc = add_segs(db, (struct seg **)segs.data, n_segs);
    pthread_mutex_lock(&db->fl_mu);
    if (rc == 0)
        sh->frozen = NULL;
    waiters = sh->frozen_waiters;
    sh->frozen_waiters = NULL;
    pthread_cond_broadcast(&db->done_cv);
    pthread_mutex_unlock(&db->fl_mu);
    pthread_rwlock_unlock(&sh->rw);
    pthread_rwlock_unlock(&db->seg_lock);
    if (rc) {
        /* The segments are in the MANIFEST, so a reopen finds them; here
         * the frozen head keeps serving reads. */
        for (uint32_t i = 0; i < n_segs; i++)
            tide__seg_close(((struct seg **)segs.data)[i]);
        set_failed(db, rc, "publishing segments");
        complete_list(waiters, TIDE_EIO);
        goto out;
    }
    tide__head_fini(h);
    tide_free(h);
    rc = tide__wal_remove_before(sh->wal_dir, sh->frozen_replay, &removed);
    atomic_fetch_sub(&sh->wal_bytes, removed);
    if (rc)
        tide__db_log(db, TIDE_LOG_WARN, "removing old WAL files in %s: %s",
                     sh->wal_dir, tide_strerror(rc));
    atomic_fetch_add(&db->flushes, 1);
    complete_list(waiters, 0);
out:
    tide__buf_fini(&keys);
    tide__buf_fini(&order);
    tide__buf_fini(&segs);
}

static void *flusher_main(void *arg)
{
    struct tide_db *db = arg;

    pthread_mutex_lock(&db->fl_mu);
    for (;;) {
        struct shard *sh = NULL;

        for (unsigned i = 0; i < db->n_shards && !sh; i++)
            if (db->shards[i].flush_wanted)
                sh = &db->shards[i];
        if (sh) {
            sh->flush_wanted = 0;
            pthread_mutex_unlock(&db->fl_mu);
            flush_frozen(db, sh);
            pthread_mutex_lock(&db->fl_mu);
            continue;
        }
        if (db->stopping)
            break;
        pthread_cond_wait(&db->fl_cv, &db->fl_mu);
    }
    pthread_mutex_unlock(&db->fl_mu);
    return NULL;
}

/* ---- Open, recovery, close -------------------------------------------- */

static int replay_record(void *ctx, uint8_t type, const uint8_t *payload,
                         uint32_t len)
{
    struct shard *s = ctx;
    uint32_t skipped = 0;
    struct tide_buf scratch = {0};
    int rc;

    if (type == TIDE_WAL_PRODUCERS)
        return prod_load(&s->prod, payload, len);
    rc = apply_batch(&s->head, payload, len, &scratch, &skipped);
    tide__buf_fini(&scratch);
    if (rc == 0 && tide__get_le64(payload + 8))
        rc = prod_set(&s->prod, tide__get_le64(payload),
                      tide__get_le64(payload + 8));
    return rc;
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static int validate_options(const struct tide_db_options *o)
{
    if (o->shards > TIDE_SHARDS_MAX || o->chunk_points_max < 16 ||
        o->chunk_points_max > 65536 || o->head_bytes_max < (1u << 20) ||
        o->wal_file_bytes < (1u << 20) || o->partition_ns <= 0 ||
        o->sync > TIDE_SYNC_NONE || o->io_backend < 0 || o->io_backend > 2)
        return TIDE_EINVAL;
    return 0;
}

/* Delete segment files that no manifest lists: leftovers of a flush that
 * crashed before its manifest was stored. */
static void remove_strays(struct tide_db *db)
{
    DIR *d = opendir(db->seg_dir);
    struct dirent *e;

    if (!d)
        return;
    while ((e = readdir(d))) {
        char path[PATH_MAX];
        uint64_t id;
        char *end;
        int listed = 0;

        if (e->d_name[0] == '.')
            continue;
        id = strtoull(e->d_name, &end, 16);
        if (end != e->d_name + 16)
            continue;
        if (!strcmp(end, ".tseg"))
            for (uint32_t i = 0; i < db->man.n_segs && !listed; i++)
                listed = db->man.segs[i].id == id;
        else if (strcmp(end, ".tseg.tmp"))
            continue;
        if (listed)
            continue;
        snprintf(path, sizeof(path), "%s/%s", db->seg_dir, e->d_name);
        tide__db_log(db, TIDE_LOG_INFO, "removing unlisted segment file %s",
                     path);
        unlink(path);
    }
    closedir(d);
}

static int load_manifest(struct tide_db *db)
{
    int rc = tide__manifest_load(db->dir, &db->man);
    long cpus;

    if (rc == -ENOENT) {
        cpus = sysconf(_SC_NPROCESSORS_ONLN);
        db->man.n_shards = db->o.shards             ? db->o.shards
                           : cpus < 1               ? 1
                           : cpus > TIDE_SHARDS_MAX ? TIDE_SHARDS_MAX
                                                    : (unsigned)cpus;
        db->man.next_seg_id = 1;
        return tide__manifest_store(db->dir, &db->man);
    }
    if (rc) {
        tide__db_log(db, TIDE_LOG_ERROR, "reading %s/MANIFEST: %s", db->dir,
                     tide_strerror(rc));
        return rc;
    }
    if (db->o.shards && db->o.shards != db->man.n_shards)
        tide__db_log(db, TIDE_LOG_INFO,
                     "%s was created with %u shards; keeping them", db->dir,
                     db->man.n_shards);
    /* add_segs() maps series to shards to tell which segments hold only
     * one shard's series. */
    db->n_shards = db->man.n_shards;
    for (uint32_t i = 0; i < db->man.n_segs; i++) {
        char path[PATH_MAX];
        struct seg *seg;

        tide__seg_path(path, db->seg_dir, db->man.segs[i].id);
        rc = tide__seg_open(path, &seg);
        if (rc == 0)
            rc = add_segs(db, &seg, 1);
        if (rc) {
            tide__db_log(db, TIDE_LOG_ERROR, "opening segment %s: %s", path,
                         tide_strerror(rc));
            return rc;
        }
    }
    remove_strays(db);
    return 0;
}

static int shard_open(struct tide_db *db, struct shard *s, unsigned idx)
{
    char path[PATH_MAX];
    uint64_t last_seq = 0, group = 0;
    int rc;

    s->db = db;
    s->idx = idx;
    tide__head_init(&s->head);
    pthread_mutex_init(&s->wake_mu, NULL);
    pthread_cond_init(&s->wake_cv, NULL);
    {
        /* glibc's default rwlock prefers readers: a stream of queries
         * copying out of the head would starve the shard's writer. */
        pthread_rwlockattr_t attr;

        pthread_rwlockattr_init(&attr);
        pthread_rwlockattr_setkind_np(
            &attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        pthread_rwlock_init(&s->rw, &attr);
        pthread_rwlockattr_destroy(&attr);
    }
    snprintf(path, sizeof(path), "%s/wal/%03u", db->dir, idx);
    s->wal_dir = tide_strdup(path);
    if (!s->wal_dir)
        return -ENOMEM;
    rc = tide__wal_init(&s->wal, path, idx);
    if (rc)
        return rc;
    rc = tide__io_open(db->o.io_backend, 8, &s->io);
    if (rc)
        return rc;
    rc = tide__wal_replay(path, idx, db->man.replay_from[idx], db->o.repair,
                          replay_record, s, wal_log, db, &last_seq, &group);
    if (rc) {
        tide__db_log(db, TIDE_LOG_ERROR, "recovering WAL of shard %u: %s", idx,
                     tide_strerror(rc));
        return rc;
    }
    s->wal.group = group;
    if (last_seq < db->man.replay_from[idx])
        last_seq = db->man.replay_from[idx];
    rc = wal_rotate(s, last_seq + 1);
    if (rc == 0)
        rc = tide__wal_commit(&s->wal, s->io, 1);
    if (rc == 0)
        rc = tide__wal_remove_before(path, db->man.replay_from[idx],
                                     &(uint64_t){0});
    if (rc == 0)
        atomic_store(&s->wal_bytes, tide__wal_dir_bytes(path));
    return rc;
}

static void shard_close(struct shard *s)
{
    if (s->started)
        pthread_join(s->thread, NULL);
    complete_list(atomic_exchange(&s->inbox, NULL), TIDE_ECLOSED);
    tide__head_fini(&s->head);
    if (s->frozen) {
        tide__head_fini(s->frozen);
        tide_free(s->frozen);
    }
    complete_list(s->frozen_waiters, TIDE_ECLOSED);
    tide__wal_fini(&s->wal);
    tide__io_close(s->io);
    prod_fini(&s->prod);
    tide_free(s->wal_dir);
    pthread_mutex_destroy(&s->wake_mu);
    pthread_cond_destroy(&s->wake_cv);
    pthread_rwlock_destroy(&s->rw);
}

static void db_free(struct tide_db *db)
{
    for (unsigned i = 0; db->shards && i < db->n_shards; i++)
        shard_close(&db->shards[i]);
    tide_free(db->shards);
    for (uint32_t i = 0; i < db->n_segs; i++)
        tide__seg_close(db->segs[i]);
    tide_free(db->segs);
    for (unsigned i = 0; i < db->n_io_pool; i++)
        tide__io_close(db->io_pool[i]);
    tide__io_close(db->flush_io);
    tide__manifest_fini(&db->man);
    if (db->lock_fd >= 0)
        close(db->lock_fd);
    pthread_rwlock_destroy(&db->seg_lock);
    pthread_mutex_destroy(&db->man_mu);
    pthread_mutex_destroy(&db->fl_mu);
    pthread_mutex_destroy(&db->io_mu);
    pthread_cond_destroy(&db->fl_cv);
    pthread_cond_destroy(&db->done_cv);
    tide_free(db->dir);
    tide_free(db->seg_dir);
    tide_free(db);
}

/* Wake every thread and wait for them to finish. */
static void stop_threads(struct tide_db *db)
{
    pthread_mutex_lock(&db->fl_mu);
    db->stopping = 1;
    pthread_cond_broadcast(&db->fl_cv);
    pthread_cond_broadcast(&db->done_cv);
    pthread_mutex_unlock(&db->fl_mu);
    for (unsigned i = 0; db->shards && i < db->n_shards; i++) {
        struct shard *s = &db->shards[i];

        pthread_mutex_lock(&s->wake_mu);
        pthread_cond_signal(&s->wake_cv);
        pthread_mutex_unlock(&s->wake_mu);
        if (s->started)
            pthread_join(s->thread, NULL);
        s->started = 0;
    }
    if (db->flusher_started)
        pthread_join(db->flusher, NULL);
    db->flusher_started = 0;
}

int tide_db_open(const char *dir, const struct tide_db_options *opts,
                 tide_db **out)
{
    struct tide_db *db;
    char path[PATH_MAX];
    int rc;

    db = tide_calloc(1, sizeof(*db));
    if (!db)
        return -ENOMEM;
    db->lock_fd = -1;
    pthread_rwlock_init(&db->seg_lock, NULL);
    pthread_mutex_init(&db->man_mu, NULL);
    pthread_mutex_init(&db->fl_mu, NULL);
    pthread_mutex_init(&db->io_mu, NULL);
    pthread_cond_init(&db->fl_cv, NULL);
    pthread_cond_init(&db->done_cv, NULL);
    if (opts)
        db->o = *opts;
    else
        tide_db_options_init(&db->o);
    rc = validate_options(&db->o);
    if (rc)
        goto fail;
    snprintf(path, sizeof(path), "%s/seg", dir);
    db->dir = tide_strdup(dir);
    db->seg_dir = tide_strdup(path);
    if (!db->dir || !db->seg_dir) {
        rc = -ENOMEM;
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/wal", dir);
    if ((rc = make_dir(dir)) || (rc = make_dir(db->seg_dir)) ||
        (rc = make_dir(path)))
        goto fail;
    snprintf(path, sizeof(path), "%s/LOCK", dir);
    db->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (db->lock_fd < 0) {
        rc = -errno;
        goto fail;
    }
    if (flock(db->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        rc = errno == EWOULDBLOCK ? TIDE_ELOCKED : -errno;
        goto fail;
    }
    rc = load_manifest(db);
    if (rc)
        goto fail;
    db->n_shards = db->man.n_shards;
    db->head_bytes_per_shard = db->o.head_bytes_max / db->n_shards;
    db->shards = tide_calloc(db->n_shards, sizeof(*db->shards));
    if (!db->shards) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = tide__io_open(db->o.io_backend, 8, &db->flush_io);
    if (rc)
        goto fail;
    db->io_backend = tide__io_backend_name(db->flush_io);
    for (unsigned i = 0; i < db->n_shards; i++) {
        rc = shard_open(db, &db->shards[i], i);
        if (rc)
            goto fail;
    }
    for (unsigned i = 0; i < db->n_shards; i++) {
        rc = -pthread_create(&db->shards[i].thread, NULL, writer_main,
                             &db->shards[i]);
        if (rc)
            goto fail;
        db->shards[i].started = 1;
    }
    rc = -pthread_create(&db->flusher, NULL, flusher_main, db);
    if (rc)
        goto fail;
    db->flusher_started = 1;
    tide__db_log(db, TIDE_LOG_INFO, "opened %s: %u shards, %s I/O, sync=%s",
                 dir, db->n_shards, db->io_backend,
                 db->o.sync == TIDE_SYNC_NONE ? "none" : "batch");
    if (db->o.sync == TIDE_SYNC_NONE)
        tide__db_log(db, TIDE_LOG_WARN,
                     "sync=none: acknowledged writes can be lost on power "
                     "failure or kernel crash; for benchmarks only");
    *out = db;
    return 0;
fail:
    stop_threads(db);
    db_free(db);
    return rc;
}

/* Send a flush request to every shard and wait for all of them. */
static int flush_all(struct tide_db *db)
{
    struct waiter w = WAITER_INIT;
    struct ticket *t = tide_calloc(1, sizeof(*t));
    struct req *reqs[TIDE_SHARDS_MAX];

    if (!t)
        return -ENOMEM;
    for (unsigned i = 0; i < db->n_shards; i++) {
        reqs[i] = tide_calloc(1, sizeof(struct req));
        if (!reqs[i]) {
            while (i-- > 0)
                tide_free(reqs[i]);
            tide_free(t);
            return -ENOMEM;
        }
        reqs[i]->kind = REQ_FLUSH;
        reqs[i]->ticket = t;
    }
    t->parts = db->n_shards;
    t->cb = waiter_cb;
    t->ctx = &w;
    atomic_store(&t->pending, db->n_shards);
    for (unsigned i = 0; i < db->n_shards; i++)
        inbox_push(&db->shards[i], reqs[i]);
    return waiter_wait(&w);
}

int tide_db_flush(tide_db *db)
{
    if (atomic_load(&db->closing))
        return TIDE_ECLOSED;
    if (atomic_load(&db->failed))
        return TIDE_EIO;
    return flush_all(db);
}

void tide_db_close(tide_db *db)
{
    int rc;

    if (!db)
        return;
    atomic_store(&db->closing, 1);
    if (!atomic_load(&db->failed)) {
        rc = flush_all(db);
        if (rc)
            tide__db_log(db, TIDE_LOG_WARN,
                         "flush at close failed: %s; the WAL keeps the data",
                         tide_strerror(rc));
    }
    stop_threads(db);
    db_free(db);
}

void tide_db_stats(tide_db *db, struct tide_db_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->points_appended = atomic_load(&db->points_appended);
    st->batches_appended = atomic_load(&db->batches_appended);
    st->batches_duplicate = atomic_load(&db->batches_duplicate);
    st->wal_syncs = atomic_load(&db->wal_syncs);
    for (unsigned b = 0; b < TIDE_SYNC_LAT_BUCKETS; b++)
        st->wal_sync_lat[b] = atomic_load(&db->wal_sync_lat[b]);
    st->wal_sync_ns_total = atomic_load(&db->wal_sync_ns_total);
    st->flushes = atomic_load(&db->flushes);
    st->shards = db->n_shards;
    st->io_backend = db->io_backend;
    pthread_rwlock_rdlock(&db->seg_lock);
    st->segments = db->n_segs;
    for (uint32_t i = 0; i < db->n_segs; i++) {
        st->segment_bytes += db->segs[i]->file_bytes;
        st->segment_points += db->segs[i]->points;
        st->chunks += db->segs[i]->n_chunks;
    }
    pthread_rwlock_unlock(&db->seg_lock);
    for (unsigned i = 0; i < db->n_shards; i++) {
        struct shard *s = &db->shards[i];

        pthread_rwlock_rdlock(&s->rw);
        st->head_points += s->head.points;
        st->head_bytes += s->head.bytes;
        if (s->frozen) {
            st->head_points += s->frozen->points;
            st->head_bytes += s->frozen->bytes;
        }
        pthread_rwlock_unlock(&s->rw);
        st->wal_bytes += atomic_load(&s->wal_bytes);
        st->queue_depth[i] = atomic_load(&s->depth);
    }
}
