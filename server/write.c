/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The write path (docs/protocol.md, "Write model"): a WriteBatch is
 * checked whole (size, role, account pause, rate limit, daily quota), then
 * per column (device and field names, UTF-8, value count and type, series
 * type, retention horizon), resolved to series ids through the sidecar's
 * in-memory registry, and handed to the engine. Its WriteAck is sent only
 * when the engine reports the batch durable, and acks leave each
 * connection in the order the batches arrived (ack.c).
 *
 * handle_write() runs these steps in order, each a function below:
 *   write_limits ─► write_principal ─► write_account ─► write_key_rate
 *   ─► write_groups
 *   (devices, then each group's columns) ─► write_series ─► write_ack
 *   ─► write_append ─► write_usage
 * The first four refuse the batch whole; an allocation failure before
 * write_ack refuses it whole too; after write_ack nothing can fail.
 *
 * A batch naming devices the account does not have yet, or series the
 * registry does not know, or tags that change its devices' tags, is parked
 * after step 3b (write_park): its WriteBatch is taken from the envelope, a
 * placeholder takes its place in the connection's write FIFO, and the
 * registration worker creates the devices and series and stores the tags
 * in the sidecar, off the loop (a new fleet's first batch names 100,000).
 * When it is done the loop runs steps 2 to 8 again, each name now
 * resolving from the cache and the registry, the stored tags entering the
 * cache (write_tags):
 *
 *   loop: handle_write ─► write_park ─► worker queue
 *   worker: job_register (devices, then series) ─► job_tags ─► done queue
 *           ─► wake
 *   loop: tided_write_jobs_drain ─► write_resume ─► steps 2..8
 *
 * The same worker decodes WriteBatch frames of TIDED_OFFLOOP_DECODE_BYTES
 * and more (tided_write_decode, job_decode; conn_decoded() dispatches the
 * envelope as on_read would), and a batch of more than WRITE_SLICE_MIN
 * groups plus columns is built over several loop turns ("Sliced
 * batches" below), its build freed by the worker afterwards (JOB_FREE).
 *
 * Invariants:
 *   1. Nothing of a batch refused whole reaches the engine.
 *   2. A WriteAck with accepted_points > 0 is sent only after the engine's
 *      completion callback reported 0 (durable) for that batch.
 *   3. accepted_points + rejected_points equals the batch's point count.
 *   4. Batches of a connection reach the engine in arrival order: while
 *      one is parked, the later ones park behind it, and the worker and
 *      its done queue are FIFO. Their answers keep that order (ack.c).
 *   5. The worker touches no connection and no cache; it reads the
 *      WriteBatch, calls the sidecar and fills in its job, nothing else.
 *   6. A parked batch whose connection closed is dropped unapplied when
 *      it comes back (its client never got an answer).
 */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "ratelimit.h"
#include "server.h"

/* ---- Building the batch ---------------------------------------------------
 */

struct rejection_list {
    Tide__V1__Rejection **v;
    size_t n, cap;
    int lost; /* a rejection could not be recorded: refuse the batch */
};

static int reject(struct rejection_list *r, uint32_t group, uint32_t column,
                  const char *device, const char *field,
                  Tide__V1__ErrorCode code, uint32_t points, const char *msg)
{
    Tide__V1__Rejection *x;

    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 8;
        Tide__V1__Rejection **v = tide_realloc(r->v, cap * sizeof(*v));

        if (!v)
            goto fail;
        r->v = v;
        r->cap = cap;
    }
    x = tide_calloc(1, sizeof(*x));
    if (!x)
        goto fail;
    tide__v1__rejection__init(x);
    x->group_index = group;
    x->column_index = column;
    x->device = tide_strdup(device ? device : "");
    x->field = tide_strdup(field ? field : "");
    x->message = tide_strdup(msg);
    if (!x->device || !x->field || !x->message) {
        tide_free(x->device);
        tide_free(x->field);
        tide_free(x->message);
        tide_free(x);
        goto fail;
    }
    x->code = code;
    x->points = points;
    r->v[r->n++] = x;
    return 0;

fail:
    r->lost = 1;
    return -ENOMEM;
}

/* Everything one batch borrows until tide_db_append() returns. */
struct batch_build {
    struct tide_column *cols;
    uint32_t n_cols;
    void **owned; /* arrays to free after the append */
    size_t n_owned, cap_owned;
};

static void *build_alloc(struct batch_build *b, size_t bytes)
{
    void *p;

    if (b->n_owned == b->cap_owned) {
        size_t cap = b->cap_owned ? 2 * b->cap_owned : 16;
        void **v = tide_realloc(b->owned, cap * sizeof(*v));

        if (!v)
            return NULL;
        b->owned = v;
        b->cap_owned = cap;
    }
    p = tide_malloc(bytes ? bytes : 1);
    if (p)
        b->owned[b->n_owned++] = p;
    return p;
}

static void build_free(struct batch_build *b)
{
    for (size_t i = 0; i < b->n_owned; i++)
        tide_free(b->owned[i]);
    tide_free(b->owned);
    tide_free(b->cols);
}

static uint64_t column_count(const Tide__V1__Column *col)
{
    switch (col->type) {
    case TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64:
        return col->n_f64;
    case TIDE__V1__VALUE_TYPE__VALUE_TYPE_I64:
        return col->n_i64;
    case TIDE__V1__VALUE_TYPE__VALUE_TYPE_BOOL:
        return (uint64_t)col->bool_bits.len * 8;
    case TIDE__V1__VALUE_TYPE__VALUE_TYPE_STRING:
        return col->n_str;
    default:
        return UINT64_MAX;
    }
}

/* Fill `tc` with the points of `col` whose timestamps are >= horizon
 * (keep[i] says which). Returns 0 or -ENOMEM. */
static int column_values(struct batch_build *b, struct tide_column *tc,
                         const Tide__V1__Column *col, const int64_t *ts,
                         uint32_t n, const uint8_t *keep, uint32_t kept)
{
    int64_t *ts_out = (int64_t *)ts;
    uint32_t k = 0;

    if (kept != n) {
        ts_out = build_alloc(b, (size_t)kept * sizeof(*ts_out));
        if (!ts_out)
            return -ENOMEM;
        for (uint32_t i = 0; i < n; i++)
            if (keep[i])
                ts_out[k++] = ts[i];
    }
    tc->ts_ns = ts_out;
    tc->n = kept;
    switch (col->type) {
    case TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64:
    case TIDE__V1__VALUE_TYPE__VALUE_TYPE_I64: {
        const uint64_t *src = col->type == TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64
                                  ? (const uint64_t *)(const void *)col->f64
                                  : (const uint64_t *)(const void *)col->i64;
        uint64_t *dst = (uint64_t *)src;

        if (kept != n) {
            dst = build_alloc(b, (size_t)kept * 8);
            if (!dst)
                return -ENOMEM;
            for (uint32_t i = 0, j = 0; i < n; i++)
                if (keep[i])
                    dst[j++] = src[i];
        }
        tc->type = col->type == TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64
                       ? TIDE_TYPE_F64
                       : TIDE_TYPE_I64;
        tc->v.f64 = (const double *)(const void *)dst;
        return 0;
    }
    case TIDE__V1__VALUE_TYPE__VALUE_TYPE_BOOL: {
        uint8_t *dst = build_alloc(b, kept);

        if (!dst)
            return -ENOMEM;
        for (uint32_t i = 0, j = 0; i < n; i++)
            if (keep[i])
                dst[j++] = (col->bool_bits.data[i / 8] >> (i % 8)) & 1;
        tc->type = TIDE_TYPE_BOOL;
        tc->v.b = dst;
        return 0;
    }
    default: {
        struct tide_str *dst = build_alloc(b, (size_t)kept * sizeof(*dst));

        if (!dst)
            return -ENOMEM;
        for (uint32_t i = 0, j = 0; i < n; i++) {
            if (keep[i]) {
                dst[j].ptr = col->str[i];
                dst[j].len = (uint32_t)strlen(col->str[i]);
                j++;
            }
        }
        tc->type = TIDE_TYPE_STR;
        tc->v.str = dst;
        return 0;
    }
    }
}

/* ---- The request ------------------------------------------------------------
 */

struct col_ref {
    uint32_t group;
    uint32_t column;
};

static void refuse(struct conn *c, uint64_t rid, Tide__V1__ErrorCode code,
                   const char *msg)
{
    ack_refuse(c, rid, code, msg, 0);
}

struct write_job;

/* One WriteBatch while handle_write() takes it through its steps. */
struct write_req {
    struct conn *c;
    struct server *s;
    const Tide__V1__WriteBatch *wb;
    uint64_t rid;
    uint64_t total;    /* points in the batch */
    uint64_t accepted; /* points handed to the engine */
    uint32_t n_cols;   /* columns in the batch */
    int64_t now_ns;
    int64_t horizon_ns; /* points before it are TOO_OLD */
    struct account_state *acct;
    struct rejection_list rej;
    struct batch_build b;
    /* Series key of b.cols[i] and the column it came from. */
    struct tide_meta_series_key *keys;
    struct col_ref *key_col;
    uint32_t n_keys;
    uint8_t *keep; /* per point of the current group: inside retention */
    struct pending_write *w; /* its place in the write FIFO, once it has one */
    struct write_job *job;   /* a parked batch: what the worker did */
    size_t frame_bytes;      /* of the batch's frame */
    /* Where a batch built in slices (slice_turn) goes on: the next group
     * of write_groups(), the next key of write_series(), and the series
     * keys that write_series() found missing so far. */
    uint32_t g_next, i_next;
    int phase; /* 0: groups, 1: series */
    uint32_t *new_idx;
    struct tide_meta_series_key *new_keys;
    uint32_t n_new;
};

/* Refuse the batch whole: a parked one in its placeholder (r->w), any
 * other as a new entry of the connection's write FIFO. */
static void refuse_req(struct write_req *r, Tide__V1__ErrorCode code,
                       const char *msg, uint32_t retry_after_ms)
{
    struct pending_write *w = r->w;
    Tide__V1__WriteAck *ack;

    if (!w) {
        ack_refuse(r->c, r->rid, code, msg, retry_after_ms);
        return;
    }
    /* ack_to_error() turns a WriteAck reply into the Error. */
    w->reply = tide_calloc(1, sizeof(*w->reply));
    ack = tide_calloc(1, sizeof(*ack));
    if (w->reply && ack) {
        tide__v1__envelope__init(w->reply);
        tide__v1__write_ack__init(ack);
        w->reply->request_id = w->request_id;
        w->reply->body_case = TIDE__V1__ENVELOPE__BODY_WRITE_ACK;
        w->reply->write_ack = ack;
        ack_to_error(w, code, msg);
        if (w->reply)
            w->reply->error->retry_after_ms = retry_after_ms;
    } else {
        tide_free(w->reply);
        tide_free(ack);
        w->reply = NULL; /* conn_flush_writes() answers INTERNAL */
    }
    w->done = 1;
    conn_flush_writes(r->c);
}

/* Step 1, limits: refuse a batch over max_batch_groups or
 * max_batch_points; count its points and columns. Returns 0, or -1 when
 * the batch was refused. */
static int write_limits(struct write_req *r)
{
    const Tide__V1__WriteBatch *wb = r->wb;

    if (wb->n_groups > r->s->cfg.max_batch_groups) {
        refuse(r->c, r->rid, TIDE__V1__ERROR_CODE__ERROR_CODE_BATCH_TOO_LARGE,
               "more groups than max_batch_groups");
        return -1;
    }
    for (size_t g = 0; g < wb->n_groups; g++) {
        r->total +=
            (uint64_t)wb->groups[g]->n_ts_delta_ns * wb->groups[g]->n_columns;
        r->n_cols += (uint32_t)wb->groups[g]->n_columns;
        if (r->total > r->s->cfg.max_batch_points || r->n_cols > 16u << 20) {
            refuse(r->c, r->rid,
                   TIDE__V1__ERROR_CODE__ERROR_CODE_BATCH_TOO_LARGE,
                   "more points than max_batch_points");
            return -1;
        }
    }
    return 0;
}

/* Step 2, principal: the credential may write telemetry of its account,
 * which is not paused. A device key is authorised for its own device;
 * write_device() refuses any other. Returns 0 or -1 (refused). */
static int write_principal(struct write_req *r)
{
    const struct conn *c = r->c;
    int rc = tide_meta_authorize(
        r->s->meta, &c->who, TIDE_META_ACT_TELEMETRY_WRITE, c->who.account_id,
        c->who.role == TIDE_META_ROLE_DEVICE ? c->who.device_id : 0);

    if (rc || !c->who.account_id) {
        refuse_req(r,
                   rc == TIDE_EPAUSED
                       ? TIDE__V1__ERROR_CODE__ERROR_CODE_PAUSED
                       : TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED,
                   rc == TIDE_EPAUSED ? "ingestion is paused for this account"
                                      : "this credential may not write",
                   0);
        return -1;
    }
    return 0;
}

/* Step 3, account state: the plan's rate limit and daily quota, and the
 * retention horizon. Returns 0 or -1 (refused). */
static int write_account(struct write_req *r)
{
    struct account_state *acct = devices_account(r->s, r->c->who.account_id);

    if (!acct) {
        refuse_req(r, TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
                   "out of memory", 0);
        return -1;
    }
    if (acct->tier.rate_points_s) {
        double rate = (double)acct->tier.rate_points_s;

        acct->tokens += rate * (double)(r->now_ns - acct->refill_ns) / 1e9;
        if (acct->tokens > rate)
            acct->tokens = rate;
        acct->refill_ns = r->now_ns;
        if (acct->tokens <= 0) {
            refuse_req(r, TIDE__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED,
                       "points/s rate limit of the plan reached",
                       (uint32_t)(-acct->tokens / rate * 1000) + 1);
            return -1;
        }
    }
    if (acct->tier.daily_points_max &&
        acct->day_points + r->total > acct->tier.daily_points_max) {
        refuse_req(r, TIDE__V1__ERROR_CODE__ERROR_CODE_QUOTA_EXCEEDED,
                   "daily points quota of the plan spent", 0);
        return -1;
    }
    r->acct = acct;
    r->horizon_ns = acct->tier.ttl_s
                        ? r->now_ns - acct->tier.ttl_s * 1000000000ll
                        : INT64_MIN;
    return 0;
}

/* Step 3b, the write rate of the batch's API key (the tier's
 * key_rate_points_s): charged only here, after the principal and account
 * checks, so a batch they refuse spends none of the key's allowance. Not
 * run again when a parked batch resumes: it was charged before it parked.
 * Returns 0 or -1 (refused). */
static int write_key_rate(struct write_req *r)
{
    const struct tide_meta_principal *who = &r->c->who;
    uint32_t retry_ms = 0;

    if (!who->key_id)
        return 0; /* sessions and the operator have no key limit */
    if (ratelimit_key_write(&r->acct->tier, who->key_id, r->total, r->now_ns,
                            &retry_ms)) {
        refuse_req(r, TIDE__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED,
                   "points/s rate limit of the key reached", retry_ms);
        return -1;
    }
    return 0;
}

/* ---- Parked batches ------------------------------------------------------
 */

/* Parked batches hold their decoded frames: at most this many frame bytes
 * of them, server-wide; one more is refused OVERLOADED (retryable). */
#define WRITE_PARKED_BYTES_MAX (256u << 20)
/* Series keys per tide_meta_series_ensure() call of the worker: each call
 * holds the sidecar's lock, which the loop takes too, for one chunk. */
#define SERIES_CHUNK 1024

/* A parked batch (invariants 4 to 6). The arrays are per group g, or per
 * column g.k at col_off[g] + k; all NULL when the batch only waits behind
 * another one. */
enum write_job_kind {
    JOB_REGISTER, /* a parked batch: register its names, or just wait */
    JOB_DECODE,   /* a large WriteBatch frame to decode (conn_decoded) */
    JOB_FREE,     /* what a sliced batch leaves after its append */
};

struct write_job {
    struct write_job *next;
    enum write_job_kind kind;
    struct pending_write *w;  /* placeholder; w->conn NULL once closed */
    Tide__V1__WriteBatch *wb; /* owned, taken from the envelope */
    /* The decode arena of env (JOB_DECODE) or of wb (a parked batch): they
     * are its, freed with its last reference. NULL: tide_frame_allocator. */
    struct tide_frame_arena *arena;
    uint64_t rid;
    uint64_t total;
    uint32_t n_cols;
    uint32_t n_groups;
    size_t frame_bytes;
    unsigned long alloc_nth;        /* tests: the request's failure countdown */
    struct tide_meta_principal who; /* the connection's, at arrival */
    int64_t horizon_ns;
    uint32_t *col_off; /* n_groups + 1 */
    uint64_t *dev_id;  /* the group's device: cached, or registered */
    uint8_t *dev_new;  /* 1: the worker registers the group's device;
                          2: it did */
    int *dev_rc;       /* worker: why that registration failed */
    struct device_entry **dev_ent; /* worker: cache entries of those it
                                      registered, for the loop to link */
    int *col_rc;            /* worker: why the column's series was not made */
    int series_rc;          /* worker: why no series at all could be made */
    char **tags;            /* the device tags the group sets, for the worker to
                               store; NULL: none, or left to the loop */
    uint8_t *tags_ok;       /* worker: 1 = tags[g] stored */
    uint32_t n_tags_stored; /* worker: groups with tags_ok set */
    uint32_t n_tags_applied; /* loop: of those, put into the cache */
    /* JOB_DECODE: the frame (header included, in the buffer taken from
     * the connection's decoder) and what decoding it gave. `conn` is the
     * loop's: NULL once the connection closed. */
    struct conn *conn;
    uint8_t *frame; /* the decoder's buffer; the frame at frame_off */
    size_t frame_off;
    uint32_t max_frame, decode_ratio, max_groups;
    Tide__V1__Envelope *env;
    uint64_t groups_over; /* not decoded: its groups, over max_groups */
    uint64_t over_rid;    /* and its request id */
    int decode_rc, mem_over;
    const char *nul_field;
    /* JOB_FREE: the build of a sliced batch (and j->wb), freed by the
     * worker so that the loop does not spend a turn on it. */
    struct batch_build b;
    struct tide_meta_series_key *keys;
    struct col_ref *key_col;
};

/* The registration thread and its two FIFOs. */
struct write_worker {
    pthread_t thread;
    int running;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int stop;
    struct write_job *head, *tail;           /* for the worker */
    struct write_job *done_head, *done_tail; /* for the loop */
    size_t parked_bytes; /* frame bytes of the parked jobs; loop only */
    /* Loop only: the one batch being built in slices, the done jobs held
     * behind it (invariant 4), and the timer of its next turn. */
    struct write_req *sliced;
    struct write_job *held_head, *held_tail;
    struct event *slice_ev;
};

/* Link the cache entry the worker built for group g's device (a pointer:
 * done as the group is reached, so that a sliced batch spreads them). */
static void job_link(struct server *s, struct write_job *j, uint32_t g)
{
    if (j && j->dev_ent && j->dev_ent[g]) {
        devices_entry_link(s, j->dev_ent[g]);
        j->dev_ent[g] = NULL; /* the cache's now */
    }
}

static int job_device_rc(const struct write_job *j, uint32_t g)
{
    return j && j->dev_rc ? j->dev_rc[g] : 0;
}

static int job_series_rc(const struct write_job *j, uint32_t g, uint32_t k)
{
    if (!j || !j->col_rc)
        return 0;
    return j->series_rc ? j->series_rc : j->col_rc[j->col_off[g] + k];
}

/* Step 4, devices: the device of group `pg` in *dev, created when the
 * credential may. Returns NULL, or why the group is refused whole (with
 * the wire code in *code). */
static const char *write_device(struct write_req *r, uint32_t g,
                                const Tide__V1__PointGroup *pg,
                                struct device_entry **dev,
                                Tide__V1__ErrorCode *code)
{
    const struct conn *c = r->c;
    const char *msg = names_error(pg->device, TIDE_META_NAME_MAX, code);
    int rc;

    if (msg)
        return msg;
    /* A device the worker failed to register is not tried again here. */
    rc = job_device_rc(r->job, g);
    if (rc == 0)
        rc = devices_get(r->s, c->who.account_id, pg->device,
                         c->who.role != TIDE_META_ROLE_DEVICE, dev);
    if (rc == 0 && c->who.role == TIDE_META_ROLE_DEVICE &&
        (*dev)->id != c->who.device_id)
        rc = TIDE_EPERM;
    if (rc == TIDE_ENOTFOUND || rc == TIDE_EPERM) {
        *code = TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED;
        return "a device key writes only its own device";
    }
    if (rc == TIDE_EFULL) {
        *code = TIDE__V1__ERROR_CODE__ERROR_CODE_LIMIT_EXCEEDED;
        return "the plan's max_devices is reached";
    }
    if (rc) {
        *code = tide_wire_error(rc);
        return tide_strerror(rc);
    }
    if ((*dev)->paused) {
        *code = TIDE__V1__ERROR_CODE__ERROR_CODE_PAUSED;
        return "ingestion is paused for this device";
    }
    return NULL;
}

static uint8_t wire_type(const Tide__V1__Column *col);

/* Why column `col` of a group of `n` points is refused whole (wire code in
 * *code), or NULL; `name_known`: its field name was checked before. */
static const char *column_error(const Tide__V1__Column *col, uint32_t n,
                                int name_known, Tide__V1__ErrorCode *code)
{
    uint64_t count = column_count(col);
    int ok_count = col->type == TIDE__V1__VALUE_TYPE__VALUE_TYPE_BOOL
                       ? col->bool_bits.len == (n + 7) / 8
                       : count == n;
    const char *msg =
        name_known ? NULL : names_error(col->field, TIDE_META_FIELD_MAX, code);

    if (msg)
        return msg;
    if (count == UINT64_MAX || !ok_count) {
        *code = TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT;
        return count == UINT64_MAX ? "column type missing or unknown"
                                   : "value count differs from the timestamps";
    }
    if (col->type != TIDE__V1__VALUE_TYPE__VALUE_TYPE_STRING)
        return NULL;
    for (size_t i = 0; i < col->n_str; i++) {
        size_t len = strlen(col->str[i]);

        if (len > TIDE_STR_BYTES_MAX) {
            *code = TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT;
            return "string value too long";
        }
        if (!names_utf8_valid((const uint8_t *)col->str[i], len)) {
            *code = TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_UTF8;
            return "string value is not valid UTF-8";
        }
    }
    return NULL;
}

/* Step 4b, tags: upsert the tags of group `g` onto its device `dev` in
 * the cache; devices_tags_flush() stores those that changed, unless the
 * worker stored them already (a parked batch's, job_tags). Returns 0
 * with *msg NULL, 0 with *msg saying why the group is refused (wire code
 * in *code), or -ENOMEM. */
static int write_tags(struct write_req *r, uint32_t g,
                      const Tide__V1__PointGroup *pg, struct device_entry *dev,
                      const char **msg, Tide__V1__ErrorCode *code)
{
    struct write_job *j = r->job;
    char text[TIDE_META_TAGS_MAX + 1];
    const char *cur = dev->tags ? dev->tags : "";

    *msg = names_tags_upsert(cur, pg->tags, pg->n_tags, text, code);
    if (*msg)
        return 0;
    if (j && j->tags_ok && j->tags_ok[g]) {
        j->tags_ok[g] = 0;
        j->n_tags_applied++;
        if (!strcmp(text, j->tags[g]))
            return strcmp(text, cur) ? devices_tags_cached(dev, text) : 0;
        /* The cache changed while the batch waited: the loop stores what
         * it has now, over what the worker stored. */
        return devices_set_tags(r->s, dev, text);
    }
    if (!strcmp(text, cur))
        return 0;
    return devices_set_tags(r->s, dev, text);
}

/* Step 5a', after write_group, which took the series the device's cache
 * holds: key i's from the registry, into that cache; 0 in its column when
 * the registry does not know it live either (write_series then creates it,
 * or rejects it). */
static void write_series_cached(struct write_req *r, struct device_entry *dev,
                                uint32_t i)
{
    const struct tide_meta_series_key *k = &r->keys[i];
    uint64_t *id = &r->b.cols[i].series_id;

    if (!*id && tide_meta_series_lookup(r->s->meta, k, id) == 0)
        devices_series_put(dev, k->field, k->field_len, k->type, *id);
}

/* Step 5a, series: the columns of group `g` of device `dev` become engine
 * columns (points inside retention only) with their series keys, and the
 * series ids the device's cache holds. Returns 0 or -ENOMEM. */
static int write_group(struct write_req *r, uint32_t g,
                       const struct device_entry *dev)
{
    const Tide__V1__PointGroup *pg = r->wb->groups[g];
    uint32_t n = (uint32_t)pg->n_ts_delta_ns, kept = 0;
    struct batch_build *b = &r->b;
    uint8_t *keep;
    int64_t *ts;

    ts = build_alloc(b, (size_t)n * sizeof(*ts));
    keep = tide_realloc(r->keep, n ? n : 1);
    if (keep)
        r->keep = keep;
    if (!ts || !keep)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        ts[i] = (int64_t)((uint64_t)(i ? ts[i - 1] : 0) +
                          (uint64_t)pg->ts_delta_ns[i]);
        keep[i] = ts[i] >= r->horizon_ns;
        kept += keep[i];
    }
    for (uint32_t k = 0; k < pg->n_columns; k++) {
        const Tide__V1__Column *col = pg->columns[k];
        Tide__V1__ErrorCode code = 0;
        size_t len = strlen(col->field);
        /* A series the device's cache holds has a name checked before. */
        uint64_t known =
            devices_series_find(dev, col->field, len, wire_type(col), k);
        const char *msg = column_error(col, n, known != 0, &code);
        struct tide_column *tc = &b->cols[b->n_cols];

        if (msg) {
            if (reject(&r->rej, g, k, pg->device, col->field, code, n, msg))
                return -ENOMEM;
            continue;
        }
        if (kept < n &&
            reject(&r->rej, g, k, pg->device, col->field,
                   TIDE__V1__ERROR_CODE__ERROR_CODE_TOO_OLD, n - kept,
                   "points behind the plan's retention horizon"))
            return -ENOMEM;
        if (kept == 0)
            continue;
        if (column_values(b, tc, col, ts, n, keep, kept))
            return -ENOMEM;
        tc->account_id = r->c->who.account_id;
        tc->tier = r->acct->tier.id;
        tc->series_id = known;
        r->keys[r->n_keys] =
            (struct tide_meta_series_key){.account_id = r->c->who.account_id,
                                          .device_id = dev->id,
                                          .field = col->field,
                                          .field_len = (uint32_t)len,
                                          .type = tc->type};
        r->key_col[r->n_keys++] = (struct col_ref){g, k};
        b->n_cols++;
    }
    return 0;
}

/* Steps 4, 4b and 5a for every group from r->g_next on, until `budget`
 * (groups plus columns) is spent: a group whose device or tags are
 * refused has each of its columns rejected. The tags that changed are
 * stored in one transaction at the end of the call (of each slice of a
 * sliced batch), or dropped when the batch is refused. Returns 0 (all
 * groups done), 1 (more to do) or -ENOMEM. */
static int write_groups(struct write_req *r, uint32_t budget)
{
    const Tide__V1__WriteBatch *wb = r->wb;
    uint32_t n = r->n_cols ? r->n_cols : 1;

    if (!r->b.cols) {
        r->b.cols = tide_calloc(n, sizeof(*r->b.cols));
        r->keys = tide_calloc(n, sizeof(*r->keys));
        r->key_col = tide_calloc(n, sizeof(*r->key_col));
    }
    if (!r->b.cols || !r->keys || !r->key_col)
        return -ENOMEM;
    for (; r->g_next < wb->n_groups && budget > 0; r->g_next++) {
        uint32_t g = r->g_next;
        const Tide__V1__PointGroup *pg = wb->groups[g];
        struct device_entry *dev = NULL;
        uint32_t keys_before;
        Tide__V1__ErrorCode gcode = 0;
        const char *gmsg;
        uint64_t work = 1 + (uint64_t)pg->n_columns;

        budget = work < budget ? budget - (uint32_t)work : 0;
        job_link(r->s, r->job, g);
        gmsg = write_device(r, g, pg, &dev, &gcode);

        if (!gmsg && pg->n_tags && write_tags(r, g, pg, dev, &gmsg, &gcode))
            goto oom;
        if (gmsg) {
            for (uint32_t k = 0; k < pg->n_columns; k++)
                if (reject(&r->rej, g, k, pg->device, pg->columns[k]->field,
                           gcode, (uint32_t)pg->n_ts_delta_ns, gmsg))
                    goto oom;
            continue;
        }
        keys_before = r->n_keys;
        if (write_group(r, g, dev))
            goto oom;
        for (uint32_t i = keys_before; i < r->n_keys; i++)
            write_series_cached(r, dev, i);
        tide_meta_device_seen(r->s->meta, dev->id);
    }
    devices_tags_flush(r->s);
    return r->g_next < wb->n_groups;

oom:
    devices_tags_drop(r->s);
    return -ENOMEM;
}

/* Reject column i of the batch (its series did not resolve) with `rc`. */
static int reject_series(struct write_req *r, uint32_t i, int rc)
{
    const struct col_ref *ref = &r->key_col[i];

    return reject(
        &r->rej, ref->group, ref->column, r->wb->groups[ref->group]->device,
        r->keys[i].field,
        rc == TIDE_ETYPE   ? TIDE__V1__ERROR_CODE__ERROR_CODE_TYPE_MISMATCH
        : rc == TIDE_EFULL ? TIDE__V1__ERROR_CODE__ERROR_CODE_LIMIT_EXCEEDED
                           : tide_wire_error(rc),
        r->b.cols[i].n,
        rc == TIDE_ETYPE   ? "the series has another value type"
        : rc == TIDE_EFULL ? "the plan's max_series is reached"
                           : tide_strerror(rc));
}

/* Step 5b, series ids: the registry answers known ones without SQL (the
 * keys from r->i_next on, until `budget` of them were looked up); once
 * all were, the rest are created in one transaction. Columns that do not
 * resolve are rejected and dropped; r->accepted counts the points left.
 * Returns 0 (done), 1 (more keys to look up) or -ENOMEM. */
static int write_series(struct write_req *r, uint32_t budget)
{
    struct batch_build *b = &r->b;
    uint32_t n_keys = r->n_keys, out = 0, cap = n_keys ? n_keys : 1;
    uint32_t *new_idx, n_new;
    uint64_t *new_ids = NULL;
    int *new_rcs = NULL;
    struct tide_meta_series_key *new_keys;
    int rc = 0;

    if (!r->new_idx)
        r->new_idx = tide_calloc(cap, sizeof(*r->new_idx));
    if (!r->new_keys)
        r->new_keys = tide_calloc(cap, sizeof(*r->new_keys));
    if (!r->new_idx || !r->new_keys)
        return -ENOMEM;
    new_idx = r->new_idx;
    new_keys = r->new_keys;
    n_new = r->n_new;
    for (; r->i_next < n_keys && budget > 0; r->i_next++, budget--) {
        uint32_t i = r->i_next;
        int lrc = b->cols[i].series_id
                      ? 0 /* resolved in write_group */
                      : tide_meta_series_lookup(r->s->meta, &r->keys[i],
                                                &b->cols[i].series_id);

        int jrc = lrc == TIDE_ENOTFOUND
                      ? job_series_rc(r->job, r->key_col[i].group,
                                      r->key_col[i].column)
                      : 0;

        if (jrc) {
            /* The worker tried this one: no second try on the loop. */
            b->cols[i].series_id = 0;
            if (reject_series(r, i, jrc)) {
                r->i_next = n_keys; /* the batch is refused (rej.lost) */
                break;
            }
        } else if (lrc == TIDE_ENOTFOUND) {
            new_idx[n_new] = i;
            new_keys[n_new++] = r->keys[i];
            b->cols[i].series_id = 0;
        } else if (lrc) {
            b->cols[i].series_id = 0;
            /* Out of memory for the rejection: the rest stay unresolved. */
            if (reject(&r->rej, r->key_col[i].group, r->key_col[i].column,
                       r->wb->groups[r->key_col[i].group]->device,
                       r->keys[i].field,
                       lrc == TIDE_ETYPE
                           ? TIDE__V1__ERROR_CODE__ERROR_CODE_TYPE_MISMATCH
                           : tide_wire_error(lrc),
                       b->cols[i].n,
                       lrc == TIDE_ETYPE ? "the series has another value type"
                                         : "series lookup failed")) {
                r->i_next = n_keys; /* the batch is refused (rej.lost) */
                break;
            }
        }
    }
    r->n_new = n_new;
    if (r->i_next < n_keys)
        return 1;
    new_ids = tide_calloc(cap, sizeof(*new_ids));
    new_rcs = tide_calloc(cap, sizeof(*new_rcs));
    rc = new_ids && new_rcs ? 0 : -ENOMEM;
    if (rc == 0) {
        int erc =
            n_new ? tide_meta_series_ensure(r->s->meta, &r->c->who, new_keys,
                                            n_new, new_ids, new_rcs)
                  : 0;

        for (uint32_t j = 0; j < n_new; j++) {
            int e = erc ? erc : new_rcs[j];

            if (e == 0)
                b->cols[new_idx[j]].series_id = new_ids[j];
            else
                reject_series(r, new_idx[j], e);
        }
        /* Drop the columns that did not resolve. */
        for (uint32_t i = 0; i < b->n_cols; i++) {
            if (b->cols[i].series_id == 0)
                continue;
            r->accepted += b->cols[i].n;
            b->cols[out++] = b->cols[i];
        }
        b->n_cols = out;
    }
    tide_free(new_ids);
    tide_free(new_rcs);
    return rc;
}

/* Step 6, ack: the WriteAck with the counts and rejections, queued last
 * in the connection's write FIFO (r->w). Returns 0 or -ENOMEM (nothing
 * queued). */
static int write_ack(struct write_req *r)
{
    Tide__V1__WriteAck *ack;
    struct pending_write *w;
    struct conn *c = r->c;

    if (r->rej.lost)
        return -ENOMEM; /* an unexplained drop would be a wrong answer */
    ack = tide_calloc(1, sizeof(*ack));
    /* A parked batch already has its place in the FIFO. */
    w = r->w ? r->w : tide_calloc(1, sizeof(*w));
    if (w)
        w->reply = tide_calloc(1, sizeof(*w->reply));
    if (!ack || !w || !w->reply) {
        tide_free(ack);
        if (w)
            tide_free(w->reply);
        if (w && w != r->w)
            tide_free(w);
        else if (w)
            w->reply = NULL;
        return -ENOMEM;
    }
    tide__v1__write_ack__init(ack);
    tide__v1__envelope__init(w->reply);
    ack->sequence = r->wb->sequence;
    ack->accepted_points = r->accepted;
    ack->rejected_points = r->total - r->accepted;
    ack->rejections = r->rej.v;
    ack->n_rejections = r->rej.n;
    r->rej.v = NULL;
    r->rej.n = 0;
    w->reply->request_id = r->rid;
    w->reply->body_case = TIDE__V1__ENVELOPE__BODY_WRITE_ACK;
    w->reply->write_ack = ack;
    w->srv = r->s;
    w->conn = c;
    w->request_id = r->rid;
    w->accepted = r->accepted;
    w->account_id = c->who.account_id;
    atomic_fetch_add(&r->s->metrics.points_rejected, r->total - r->accepted);
    if (w != r->w)
        ack_enqueue(c, w);
    r->w = w;
    return 0;
}

/* The engine's producer of a batch: the client's producer id within its
 * account, so that one tenant's sequences never make another's batches
 * duplicates (the engine's table is one for the whole database). 0 stays
 * 0 (no deduplication). */
static uint64_t engine_producer(uint64_t account, uint64_t producer)
{
    uint64_t key[2] = {account, producer}, h;

    if (!producer)
        return 0;
    h = XXH3_64bits(key, sizeof(key));
    return h ? h : 1;
}

/* Step 7, engine append: hand the resolved columns to the engine; the ack
 * waits for ack_on_durable(). A batch the engine refuses at once becomes an
 * Error and r->accepted 0. */
static void write_append(struct write_req *r)
{
    struct pending_write *w = r->w;
    struct tide_batch batch = {
        .producer_id = engine_producer(r->acct->account_id, r->wb->producer_id),
        .sequence = r->wb->sequence,
        .n_columns = r->b.n_cols,
        .columns = r->b.cols};
    int rc;

    if (r->b.n_cols == 0) {
        w->done = 1;
        return;
    }
    rc = tide_db_append(r->s->db, &batch, ack_on_durable, w);
    if (rc == 0) {
        r->s->inflight_writes++;
        return;
    }
    /* Nothing was queued: the batch is refused whole. */
    tide_log(LOG_ERROR, "engine refused a batch: %s", tide_strerror(rc));
    ack_to_error(
        w,
        rc == TIDE_ECLOSED  ? TIDE__V1__ERROR_CODE__ERROR_CODE_SHUTTING_DOWN
        : rc == TIDE_EINVAL ? TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT
                            : TIDE__V1__ERROR_CODE__ERROR_CODE_STORAGE,
        tide_strerror(rc));
    w->done = 1;
    r->accepted = 0;
}

/* Step 8, usage: charge the accepted points to the rate bucket, the
 * daily quota and the account's usage counters. */
static void write_usage(struct write_req *r)
{
    struct tide_meta_usage u = {
        .messages = 1, .points = r->accepted, .bytes_in = r->frame_bytes};

    r->acct->tokens -= (double)r->accepted;
    r->acct->day_points += r->accepted;
    tide_meta_usage_add(r->s->meta, r->c->who.account_id, &u);
}

static void write_req_fini(struct write_req *r)
{
    ack_rejections_free(r->rej.v, r->rej.n);
    build_free(&r->b);
    tide_free(r->keys);
    tide_free(r->key_col);
    tide_free(r->keep);
    tide_free(r->new_idx);
    tide_free(r->new_keys);
    memset(&r->b, 0, sizeof(r->b));
    r->rej.v = NULL;
    r->rej.n = 0;
    r->keys = r->new_keys = NULL;
    r->key_col = NULL;
    r->keep = NULL;
    r->new_idx = NULL;
}

static uint8_t wire_type(const Tide__V1__Column *col)
{
    switch (col->type) {
    case TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64:
        return TIDE_TYPE_F64;
    case TIDE__V1__VALUE_TYPE__VALUE_TYPE_I64:
        return TIDE_TYPE_I64;
    case TIDE__V1__VALUE_TYPE__VALUE_TYPE_BOOL:
        return TIDE_TYPE_BOOL;
    default:
        return TIDE_TYPE_STR;
    }
}

/* Whether a point of group `pg` is inside retention (not TOO_OLD). */
static int group_kept(const Tide__V1__PointGroup *pg, int64_t horizon_ns)
{
    int64_t ts = 0;

    for (size_t i = 0; i < pg->n_ts_delta_ns; i++) {
        ts = (int64_t)((uint64_t)ts + (uint64_t)pg->ts_delta_ns[i]);
        if (ts >= horizon_ns)
            return 1;
    }
    return 0;
}

/* Look for names the cache or the registry lacks, on the loop without
 * SQL. Without `j`: whether the batch names a device to register or a
 * series to create (a cheap check of each column's name and type only).
 * With `j`: record each group's cached device id, or that it is new, for
 * the worker. Returns whether something is new. */
/* Whether the tags of group `pg` change the device tags `cur`; the new
 * text goes to out[TIDE_META_TAGS_MAX + 1]. Tags that are refused change
 * nothing (write_tags() refuses the group). */
static int tags_change(const char *cur, const Tide__V1__PointGroup *pg,
                       char *out)
{
    Tide__V1__ErrorCode code;

    return !names_tags_upsert(cur, pg->tags, pg->n_tags, out, &code) &&
           strcmp(out, cur);
}

static int batch_scan(struct write_req *r, struct write_job *j)
{
    const Tide__V1__WriteBatch *wb = r->wb;
    uint64_t account = r->c->who.account_id, id;
    int create = r->c->who.role != TIDE_META_ROLE_DEVICE, fresh = 0, lrc;
    uint32_t off = 0;
    char text[TIDE_META_TAGS_MAX + 1];

    for (uint32_t g = 0; g < wb->n_groups; g++) {
        const Tide__V1__PointGroup *pg = wb->groups[g];
        Tide__V1__ErrorCode code;
        struct device_entry *e;

        if (j)
            j->col_off[g] = off;
        off += (uint32_t)pg->n_columns;
        if (names_error(pg->device, TIDE_META_NAME_MAX, &code))
            continue; /* refused by write_device() */
        e = devices_peek(r->s, account, pg->device);
        if (!e && !create)
            continue; /* a device key's other device: refused */
        if (j) {
            /* A paused device's group is refused: no series for it. */
            j->dev_id[g] = e && !e->paused ? e->id : 0;
            j->dev_new[g] = !e;
        }
        fresh |= !e;
        /* Tags that change the device's are stored by the worker too: a
         * 100,000-group batch's are one sidecar transaction per chunk. */
        if (pg->n_tags && !(e && e->paused) &&
            tags_change(e && e->tags ? e->tags : "", pg, text)) {
            fresh = 1;
            if (j) /* without memory the loop stores them */
                j->tags[g] = tide_strdup(text);
        }
        if (fresh && !j)
            return 1;
        if (!e || j || !group_kept(pg, r->horizon_ns))
            continue;
        for (size_t k = 0; k < pg->n_columns && !fresh; k++) {
            const Tide__V1__Column *col = pg->columns[k];
            struct tide_meta_series_key key = {.account_id = account,
                                               .device_id = e->id,
                                               .field = col->field,
                                               .type = wire_type(col)};

            key.field_len = (uint32_t)strlen(col->field);
            /* The device's cache first: a known series costs no registry
             * probe (a cache miss per point at fleet width), and its name
             * was checked when it was cached. */
            if (devices_series_find(e, key.field, key.field_len, key.type,
                                    (uint32_t)k))
                continue;
            if (names_error(col->field, TIDE_META_FIELD_MAX, &code) ||
                column_count(col) == UINT64_MAX)
                continue;
            lrc = tide_meta_series_lookup(r->s->meta, &key, &id);
            fresh = lrc == TIDE_ENOTFOUND;
            if (lrc == 0)
                devices_series_put(e, key.field, key.field_len, key.type, id);
        }
        if (fresh && !j)
            return 1;
    }
    if (j)
        j->col_off[wb->n_groups] = off;
    return fresh;
}

static void job_free(struct write_job *j)
{
    if (!j)
        return;
    if (j->wb && !j->arena)
        tide__v1__write_batch__free_unpacked(j->wb, &tide_frame_allocator);
    tide_free(j->col_off);
    tide_free(j->dev_id);
    tide_free(j->dev_new);
    tide_free(j->dev_rc);
    tide_free(j->col_rc);
    for (uint32_t g = 0; j->dev_ent && g < j->n_groups; g++)
        devices_entry_free(j->dev_ent[g]);
    tide_free(j->dev_ent);
    for (uint32_t g = 0; j->tags && g < j->n_groups; g++)
        tide_free(j->tags[g]);
    tide_free(j->tags);
    tide_free(j->tags_ok);
    tide_free(j->frame);
    if (!j->arena)
        tide_frame_free(j->env, NULL);
    tide_frame_arena_release(j->arena);
    build_free(&j->b);
    tide_free(j->keys);
    tide_free(j->key_col);
    tide_free(j);
}

/* Link every cache entry of `j` not linked yet: the devices exist in the
 * sidecar whatever became of the batch. */
static void job_link_rest(struct server *s, struct write_job *j)
{
    for (uint32_t g = 0; j->dev_ent && g < j->n_groups; g++)
        job_link(s, j, g);
}

/* Queue `j` for the worker (loop thread). */
static void job_push(struct write_worker *ww, struct write_job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&ww->lock);
    if (ww->tail)
        ww->tail->next = j;
    else
        ww->head = j;
    ww->tail = j;
    pthread_cond_signal(&ww->cv);
    pthread_mutex_unlock(&ww->lock);
}

/* Worker: decode the frame of a JOB_DECODE with the bound the
 * connection's decoder would apply (frame.h, invariant 4). */
static void job_decode(struct write_job *j)
{
    const uint8_t *frame = j->frame + j->frame_off;
    size_t consumed = 0, payload = j->frame_bytes - TIDE_FRAME_HEADER_BYTES;
    size_t mem_max = j->decode_ratio ? (size_t)j->decode_ratio * payload +
                                           TIDE_FRAME_DECODE_SLACK
                                     : 0;
    struct tide_frame_head h;
    uint64_t groups;

    /* A batch over max_batch_groups is refused as write_limits() would,
     * without the memory and time of decoding it (8 M empty groups fit
     * in 16 MiB). */
    if (tide_frame_batch_groups(frame + TIDE_FRAME_HEADER_BYTES, payload,
                                &groups) == 0 &&
        groups > j->max_groups &&
        tide_frame_scan(frame + TIDE_FRAME_HEADER_BYTES, payload, &h) == 0) {
        j->groups_over = groups;
        j->over_rid = h.request_id;
        tide_free(j->frame);
        j->frame = NULL;
        return;
    }
    /* Into a decode arena: a few blocks, not ~3 mallocs per point (each
     * later freed on the loop, the other thread). */
    j->arena = tide_frame_arena_new(3 * payload);
    if (!j->arena) {
        j->decode_rc = -ENOMEM;
    } else if (tide_frame_read_write_batch(frame, j->frame_bytes, j->arena,
                                           mem_max, &j->env,
                                           &j->nul_field) == 0) {
        /* The plain encoding, read without protobuf-c's generic unpack;
         * the reader made the NUL check. */
        j->decode_rc = 0;
    } else {
        j->decode_rc =
            tide_frame_parse_bounded(frame, j->frame_bytes, j->max_frame,
                                     tide_frame_arena_allocator(j->arena),
                                     mem_max, &j->env, &consumed, &j->mem_over);
        if (j->decode_rc == TIDE_FRAME_NEED_MORE)
            j->decode_rc = TIDE_EMALFORMED; /* cannot be: the frame is whole */
        if (j->decode_rc == 0)
            j->nul_field =
                tide_frame_nul_field(frame + TIDE_FRAME_HEADER_BYTES,
                                     consumed - TIDE_FRAME_HEADER_BYTES);
    }
    tide_free(j->frame);
    j->frame = NULL;
}

/* Worker: create the series keys[0..*n) of columns at[] of `j`, record
 * each failure in j->col_rc, and empty the chunk. */
static void series_chunk(struct server *s, struct write_job *j,
                         const struct tide_meta_series_key *keys,
                         const uint32_t *at, uint64_t *ids, int *rcs, size_t *n)
{
    int rc =
        *n ? tide_meta_series_ensure(s->meta, &j->who, keys, *n, ids, rcs) : 0;

    for (size_t i = 0; i < *n; i++)
        j->col_rc[at[i]] = rc ? rc : rcs[i];
    *n = 0;
}

/* Worker: create the series of j's columns that the registry lacks, in
 * chunks of SERIES_CHUNK keys; record each failure in j->col_rc. */
static void job_series(struct server *s, struct write_job *j)
{
    const Tide__V1__WriteBatch *wb = j->wb;
    struct tide_meta_series_key *keys =
        tide_malloc(SERIES_CHUNK * sizeof(*keys));
    uint32_t *at = tide_malloc(SERIES_CHUNK * sizeof(*at));
    uint64_t *ids = tide_malloc(SERIES_CHUNK * sizeof(*ids)), id;
    int *rcs = tide_malloc(SERIES_CHUNK * sizeof(*rcs));
    size_t n = 0;

    if (!keys || !at || !ids || !rcs) {
        j->series_rc = -ENOMEM; /* each new series is rejected for it */
        goto out;
    }
    for (uint32_t g = 0; g <= wb->n_groups; g++) {
        const Tide__V1__PointGroup *pg =
            g < wb->n_groups ? wb->groups[g] : NULL;

        if (!pg) {
            series_chunk(s, j, keys, at, ids, rcs, &n);
            break;
        }
        if (!j->dev_id[g] || j->dev_rc[g] || !group_kept(pg, j->horizon_ns))
            continue;
        for (uint32_t k = 0; k < pg->n_columns; k++) {
            const Tide__V1__Column *col = pg->columns[k];
            Tide__V1__ErrorCode code;
            struct tide_meta_series_key key = {.account_id = j->who.account_id,
                                               .device_id = j->dev_id[g],
                                               .field = col->field,
                                               .type = wire_type(col)};

            if (column_error(col, (uint32_t)pg->n_ts_delta_ns, 0, &code))
                continue;
            key.field_len = (uint32_t)strlen(col->field);
            if (tide_meta_series_lookup(s->meta, &key, &id) != TIDE_ENOTFOUND)
                continue;
            if (n == SERIES_CHUNK)
                series_chunk(s, j, keys, at, ids, rcs, &n);
            keys[n] = key;
            at[n++] = j->col_off[g] + k;
        }
    }
out:
    tide_free(keys);
    tide_free(at);
    tide_free(ids);
    tide_free(rcs);
}

/* Worker: register j's new devices in one sidecar call (linear, chunked
 * transactions: tide_meta_device_register_many), then create its new
 * series. Invariant 5: j and its WriteBatch only. */
static void job_register(struct server *s, struct write_job *j)
{
    const Tide__V1__WriteBatch *wb = j->wb;
    size_t ng = wb->n_groups, n = 0;
    const char **names = tide_malloc(ng * sizeof(*names));
    uint32_t *group = tide_malloc(ng * sizeof(*group));
    uint64_t *ids = tide_malloc(ng * sizeof(*ids));
    int *rcs = tide_malloc(ng * sizeof(*rcs));
    int rc = names && group && ids && rcs ? 0 : -ENOMEM;

    for (uint32_t g = 0; g < ng; g++) {
        if (!j->dev_new[g])
            continue;
        if (rc) {
            j->dev_rc[g] = rc;
            continue;
        }
        names[n] = wb->groups[g]->device;
        group[n++] = g;
    }
    if (!rc && n)
        rc = tide_meta_device_register_many(s->meta, &tided_system_principal,
                                            j->who.account_id, names, n, ids,
                                            rcs);
    for (size_t i = 0; i < n; i++) {
        int e = rc ? rc : rcs[i];

        /* A name registered meanwhile, or earlier in the batch, is left to
         * devices_get(): only the sidecar knows whether it is paused. */
        j->dev_rc[group[i]] = e == TIDE_EEXIST ? 0 : e;
        if (!e) {
            j->dev_id[group[i]] = ids[i];
            j->dev_new[group[i]] = 2; /* registered here */
            /* Built here, linked by the loop: 100,000 entries cost it a
             * pointer each. Without memory the group is refused. */
            j->dev_ent[group[i]] =
                devices_entry_new(j->who.account_id, names[i], ids[i]);
            if (!j->dev_ent[group[i]])
                j->dev_rc[group[i]] = -ENOMEM;
        }
    }
    tide_free(names);
    tide_free(group);
    tide_free(ids);
    tide_free(rcs);
    job_series(s, j);
}

/* Worker: store the tags that j's groups set on their devices, chunks
 * of SERIES_CHUNK devices a transaction, with the sidecar's change
 * reports muted: write_tags() puts them into the cache when the batch
 * resumes (devices.c, invariant 3). A chunk that fails is left to the
 * loop, which stores it as for any batch. Invariant 5: j only. */
static void job_tags(struct server *s, struct write_job *j)
{
    uint64_t *ids = tide_malloc(SERIES_CHUNK * sizeof(*ids));
    const char **tags = tide_malloc(SERIES_CHUNK * sizeof(*tags));
    uint32_t *at = tide_malloc(SERIES_CHUNK * sizeof(*at));
    int *rcs = tide_malloc(SERIES_CHUNK * sizeof(*rcs));
    size_t n = 0;

    if (!ids || !tags || !at || !rcs)
        goto out;
    devices_mute_echoes(1);
    for (uint32_t g = 0; g <= j->n_groups; g++) {
        int rc;

        if (g < j->n_groups) {
            if (!j->tags[g] || !j->dev_id[g] || j->dev_rc[g])
                continue;
            ids[n] = j->dev_id[g];
            tags[n] = j->tags[g];
            at[n++] = g;
            if (n < SERIES_CHUNK)
                continue;
        }
        rc = n ? tide_meta_device_tags_set(s->meta, &tided_system_principal,
                                           j->who.account_id, ids, tags, n, rcs)
               : 0;
        for (size_t i = 0; !rc && i < n; i++) {
            if (rcs[i])
                continue;
            j->tags_ok[at[i]] = 1;
            j->n_tags_stored++;
        }
        n = 0;
    }
    devices_mute_echoes(0);
out:
    tide_free(ids);
    tide_free(tags);
    tide_free(at);
    tide_free(rcs);
}

static void *worker_main(void *arg)
{
    struct server *s = arg;
    struct write_worker *ww = s->write_worker;

    pthread_mutex_lock(&ww->lock);
    for (;;) {
        struct write_job *j;

        while (!ww->head && !ww->stop)
            pthread_cond_wait(&ww->cv, &ww->lock);
        if (ww->stop)
            break;
        j = ww->head;
        ww->head = j->next;
        if (!ww->head)
            ww->tail = NULL;
        pthread_mutex_unlock(&ww->lock);
        if (j->kind == JOB_FREE) {
            job_free(j); /* nothing goes back to the loop */
            pthread_mutex_lock(&ww->lock);
            continue;
        }
        if (j->kind == JOB_DECODE) {
            /* Not under a request's injected failures: the loop decodes
             * without them too. */
            job_decode(j);
        } else {
            tided_test_alloc_arm(j->alloc_nth);
            if (j->dev_new) {
                job_register(s, j);
                job_tags(s, j);
            }
            j->alloc_nth = tided_test_alloc_take();
        }
        pthread_mutex_lock(&ww->lock);
        j->next = NULL;
        if (ww->done_tail)
            ww->done_tail->next = j;
        else
            ww->done_head = j;
        ww->done_tail = j;
        pthread_mutex_unlock(&ww->lock);
        event_active(s->wake, EV_READ, 0);
        pthread_mutex_lock(&ww->lock);
    }
    pthread_mutex_unlock(&ww->lock);
    return NULL;
}

/* Park the batch of `r` (steps 1 to 3b passed) for the worker: `fresh`
 * when it names something new, else it only waits behind another. Its
 * WriteBatch leaves `env`. Without room or memory it is refused whole. */
static void write_park(struct write_req *r, Tide__V1__Envelope *env, int fresh)
{
    struct server *s = r->s;
    struct write_worker *ww = s->write_worker;
    uint32_t ng = (uint32_t)r->wb->n_groups;
    struct write_job *j = NULL;
    struct pending_write *w = NULL;

    if (ww->parked_bytes + r->frame_bytes > WRITE_PARKED_BYTES_MAX &&
        ww->parked_bytes > 0) {
        refuse_req(r, TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
                   "too many batches wait for device registration; retry "
                   "shortly",
                   100);
        return;
    }
    j = tide_calloc(1, sizeof(*j));
    w = tide_calloc(1, sizeof(*w));
    if (!j || !w)
        goto oom;
    if (fresh) {
        j->col_off = tide_calloc(ng + 1, sizeof(*j->col_off));
        j->dev_id = tide_calloc(ng ? ng : 1, sizeof(*j->dev_id));
        j->dev_new = tide_calloc(ng ? ng : 1, sizeof(*j->dev_new));
        j->dev_rc = tide_calloc(ng ? ng : 1, sizeof(*j->dev_rc));
        j->col_rc = tide_calloc(r->n_cols ? r->n_cols : 1, sizeof(*j->col_rc));
        j->dev_ent = tide_calloc(ng ? ng : 1, sizeof(*j->dev_ent));
        j->tags = tide_calloc(ng ? ng : 1, sizeof(*j->tags));
        j->tags_ok = tide_calloc(ng ? ng : 1, sizeof(*j->tags_ok));
        j->n_groups = ng;
        if (!j->col_off || !j->dev_id || !j->dev_new || !j->dev_rc ||
            !j->col_rc || !j->dev_ent || !j->tags || !j->tags_ok)
            goto oom;
        batch_scan(r, j);
    }
    j->w = w;
    j->rid = r->rid;
    j->total = r->total;
    j->n_cols = r->n_cols;
    j->frame_bytes = r->frame_bytes;
    j->who = r->c->who;
    j->horizon_ns = r->horizon_ns;
    /* Taken: the envelope is freed without it, the job frees it (both from
     * tide_frame_allocator, or both in the write worker's decode arena). */
    j->wb = env->write_batch;
    env->write_batch = NULL;
    if (r->c->env_arena) /* the batch lives in the worker's decode arena */
        j->arena = tide_frame_arena_ref(r->c->env_arena);
    w->srv = s;
    w->conn = r->c;
    w->request_id = r->rid;
    w->account_id = r->c->who.account_id;
    w->job = j;
    ack_enqueue(r->c, w);
    r->c->writes_parked++;
    s->writes_parked++;
    ww->parked_bytes += r->frame_bytes;
    /* Tests: allocation failures injected for this request follow it to
     * the worker and back (TIDED_TEST_ALLOC_FAIL_NTH). */
    j->alloc_nth = tided_test_alloc_take();
    job_push(ww, j);
    return;

oom:
    job_free(j);
    tide_free(w);
    refuse_req(r, TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
               "out of memory; nothing of the batch was applied", 0);
}

static void write_run(struct write_req *r);
static int slice_start(struct write_req *r);

/* A batch of more groups plus columns than WRITE_SLICE_MIN (~20 ms of
 * building on the loop, at ~1.3 µs each) is built in slices of
 * WRITE_SLICE_WORK, one per loop turn (slice_turn), so that no turn of
 * the loop spends more than a few ms on it. Smaller ones, the common
 * case (10,000 points of 500 devices: 5,500), are built at once. */
#define WRITE_SLICE_MIN 16384u
#define WRITE_SLICE_WORK 4096u

static int batch_big(const struct write_req *r)
{
    return r->wb->n_groups + (uint64_t)r->n_cols > WRITE_SLICE_MIN;
}

/* Loop, at the end of parked batch `j`: a group refused (or the whole
 * batch, or a closed connection) left tags the worker stored out of the
 * cache, so the account's devices are read again. */
static void job_tags_settle(struct server *s, const struct write_job *j)
{
    if (j->n_tags_stored != j->n_tags_applied)
        tided_device_forget(s, j->who.account_id);
}

/* Loop: the worker is done with `j`; build and append its batch (in
 * slices when it is big). */
static void write_resume(struct server *s, struct write_job *j)
{
    struct pending_write *w = j->w;
    struct conn *c = w->conn;
    struct write_req r = {.c = c,
                          .s = s,
                          .wb = j->wb,
                          .rid = j->rid,
                          .total = j->total,
                          .n_cols = j->n_cols,
                          .now_ns = tided_now_ns(),
                          .w = w,
                          .job = j,
                          .frame_bytes = j->frame_bytes};

    if (!c) {
        job_tags_settle(s, j);
        tide_free(w); /* invariant 6; no FIFO holds it any more */
        job_free(j);
        return;
    }
    c->writes_parked--;
    w->job = NULL;
    tided_test_alloc_arm(j->alloc_nth);
    /* A Logout or another Auth meanwhile: not the batch's credential. */
    if (memcmp(&c->who, &j->who, sizeof(c->who))) {
        refuse_req(&r, TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED,
                   "the connection's credential changed while the batch "
                   "waited",
                   0);
    } else if (write_principal(&r) == 0 && write_account(&r) == 0) {
        /* write_groups() links the cache entries j->dev_ent as it goes. */
        if (batch_big(&r) && slice_start(&r) == 0)
            return; /* j is the sliced batch's now */
        write_run(&r);
    }
    job_tags_settle(s, j);
    job_link_rest(s, j);
    job_free(j);
}

/* Loop: a JOB_DECODE is back; dispatch its envelope (conn_decoded). */
static void write_decoded(struct write_job *j)
{
    Tide__V1__Envelope *env = j->env;
    struct tide_frame_arena *arena = j->arena;

    j->env = NULL;
    j->arena = NULL;
    if (j->conn && j->groups_over) /* not decoded: no arena */
        conn_refused_undecoded(j->conn, j->over_rid,
                               TIDE__V1__ERROR_CODE__ERROR_CODE_BATCH_TOO_LARGE,
                               "more groups than max_batch_groups");
    else if (j->conn)
        conn_decoded(j->conn, env, arena, j->decode_rc, j->mem_over,
                     j->nul_field, j->frame_bytes);
    else
        tide_frame_arena_release(arena);
    job_free(j);
}

int tided_write_decode(struct conn *c, size_t len)
{
    struct server *s = c->srv;
    struct write_worker *ww = s->write_worker;
    struct write_job *j;
    size_t off = 0, n = 0;

    if (ww->parked_bytes + len > WRITE_PARKED_BYTES_MAX && ww->parked_bytes)
        return TIDE_EFULL;
    j = tide_calloc(1, sizeof(*j));
    /* No copy: the decoder's buffer (tide_frame_allocator's) is the
     * job's, the frame at j->frame_off. */
    if (j)
        j->frame = tide_frame_decoder_take(&c->dec, &off, &n);
    if (!j || !j->frame) {
        tide_free(j);
        return -ENOMEM;
    }
    TIDE_ASSERT(n == len);
    j->frame_off = off;
    j->kind = JOB_DECODE;
    j->conn = c;
    j->frame_bytes = len;
    j->max_frame = s->cfg.max_frame_bytes;
    j->decode_ratio = s->cfg.max_decode_ratio;
    j->max_groups = s->cfg.max_batch_groups;
    c->decoding = j;
    /* Counted as a parked batch: the drain waits for it, and its bytes
     * count toward WRITE_PARKED_BYTES_MAX. */
    s->writes_parked++;
    ww->parked_bytes += len;
    job_push(ww, j);
    return 0;
}

void tided_write_decode_forget(struct conn *c)
{
    c->decoding->conn = NULL; /* loop only: the worker never reads it */
    c->decoding = NULL;
}

/* ---- Sliced batches ------------------------------------------------------
 *
 * A big batch (batch_big) is built over several loop turns: write_groups()
 * and write_series() each do WRITE_SLICE_WORK, then slice_turn() is
 * scheduled again on a zero timer, so the loop polls its sockets between
 * turns. One batch at a time is sliced, server-wide; the done jobs that
 * come back meanwhile are held behind it (ww->held, invariant 4). The
 * batch keeps its placeholder in the connection's FIFO and counts as
 * parked (c->writes_parked), so that the connection's later batches park
 * behind it. Between turns: the connection may close (w->conn NULL: the
 * batch is dropped unapplied, invariant 6), its credential may change
 * (refused, as in write_resume), the account state is looked up anew
 * each turn (no pointer into the caches is kept), and the device entries
 * are looked up per group. After the append, the build and the WriteBatch
 * are freed by the worker (JOB_FREE).
 */

static void slice_turn(evutil_socket_t fd, short what, void *arg);

static void slice_schedule(struct server *s)
{
    static const struct timeval now = {0, 0};

    evtimer_add(s->write_worker->slice_ev, &now);
}

/* Loop: take the big batch `src` (steps 1 to 3 passed; its placeholder
 * r->w in the FIFO) to be built in slices. Returns 0, or -ENOMEM (then the
 * caller builds it at once). */
static int slice_start(struct write_req *src)
{
    struct server *s = src->s;
    struct write_worker *ww = s->write_worker;
    struct write_req *r;

    if (!ww->slice_ev)
        ww->slice_ev = evtimer_new(s->base, slice_turn, s);
    r = ww->slice_ev ? tide_malloc(sizeof(*r)) : NULL;
    if (!r)
        return -ENOMEM;
    *r = *src;
    r->acct = NULL; /* looked up each turn */
    ww->sliced = r;
    r->w->job = r->job; /* parked again, until its last turn */
    r->c->writes_parked++;
    s->writes_parked++;
    ww->parked_bytes += r->frame_bytes;
    r->job->alloc_nth = tided_test_alloc_take();
    slice_schedule(s);
    return 0;
}

/* Loop: the sliced batch is over (answered, refused or dropped). */
static void slice_end(struct server *s, struct write_req *r)
{
    struct write_worker *ww = s->write_worker;
    struct write_job *j = r->job;

    ww->sliced = NULL;
    s->writes_parked--;
    ww->parked_bytes -= r->frame_bytes;
    write_req_fini(r);
    if (j) {
        job_tags_settle(s, j);
        job_link_rest(s, j);
        job_free(j);
    }
    tide_free(r);
}

static void slice_turn(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    struct write_worker *ww = s->write_worker;
    struct write_req *r = ww->sliced;
    struct write_job *j = r->job;
    struct pending_write *w = r->w;
    struct conn *c = w->conn;
    int rc;

    (void)fd;
    (void)what;
    if (!c) {
        tide_free(w); /* invariant 6; no FIFO holds it any more */
        slice_end(s, r);
        tided_write_jobs_drain(s);
        return;
    }
    tided_test_alloc_arm(j->alloc_nth);
    r->acct = devices_account(s, j->who.account_id);
    if (memcmp(&c->who, &j->who, sizeof(c->who)) || !r->acct) {
        write_req_fini(r);
        goto refuse;
    }
    rc = r->phase == 0 ? write_groups(r, WRITE_SLICE_WORK)
                       : write_series(r, WRITE_SLICE_WORK);
    if (rc == 1 || (rc == 0 && r->phase == 0)) {
        r->phase += rc == 0; /* the groups are done: the series next */
        j->alloc_nth = tided_test_alloc_take();
        slice_schedule(s);
        return;
    }
    if (rc || write_ack(r)) {
        write_req_fini(r);
        goto refuse;
    }
    c->writes_parked--;
    w->job = NULL;
    write_append(r);
    write_usage(r);
    /* The build and the WriteBatch go to the worker to free. */
    j->kind = JOB_FREE;
    j->w = NULL;
    j->b = r->b;
    j->keys = r->keys;
    j->key_col = r->key_col;
    memset(&r->b, 0, sizeof(r->b));
    r->keys = NULL;
    r->key_col = NULL;
    job_tags_settle(s, j);
    job_link_rest(s, j);
    r->job = NULL;
    job_push(ww, j);
    conn_flush_writes(c);
    slice_end(s, r);
    tided_test_alloc_take();
    tided_write_jobs_drain(s);
    return;

refuse:
    c->writes_parked--;
    w->job = NULL;
    if (memcmp(&c->who, &j->who, sizeof(c->who)))
        refuse_req(r, TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED,
                   "the connection's credential changed while the batch "
                   "waited",
                   0);
    else
        refuse_req(r, TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
                   "out of memory; nothing of the batch was applied", 0);
    slice_end(s, r);
    tided_test_alloc_take();
    tided_write_jobs_drain(s);
}

void tided_write_jobs_drain(struct server *s)
{
    struct write_worker *ww = s->write_worker;
    struct write_job *j;

    if (!ww)
        return;
    pthread_mutex_lock(&ww->lock);
    j = ww->done_head;
    ww->done_head = ww->done_tail = NULL;
    pthread_mutex_unlock(&ww->lock);
    /* Behind the ones already held, in the worker's order. */
    if (j) {
        struct write_job *t = j;

        while (t->next)
            t = t->next;
        if (ww->held_tail)
            ww->held_tail->next = j;
        else
            ww->held_head = j;
        ww->held_tail = t;
    }
    /* Invariant 4: nothing passes a batch being built in slices. */
    while ((j = ww->held_head) && !ww->sliced) {
        ww->held_head = j->next;
        if (!ww->held_head)
            ww->held_tail = NULL;
        s->writes_parked--;
        ww->parked_bytes -= j->frame_bytes;
        if (j->kind == JOB_DECODE)
            write_decoded(j);
        else
            write_resume(s, j);
    }
}

int tided_write_init(struct server *s)
{
    struct write_worker *ww;
    int rc;

    if (devices_init(s))
        return -1;
    /* The worker decodes and frees large batches in its own malloc arena,
     * whose first heap glibc trims only above the trim threshold, which
     * it raises up to 64 MiB once a large block is freed: that much would
     * stay resident after one big frame. Fixed thresholds (glibc's
     * initial mmap threshold, so that large blocks stay mmapped and go
     * back when freed; an 8 MiB trim threshold) let it go back. */
    mallopt(M_MMAP_THRESHOLD, 128 << 10);
    mallopt(M_TRIM_THRESHOLD, 8 << 20);
    ww = tide_calloc(1, sizeof(*ww));
    if (!ww)
        return -1;
    pthread_mutex_init(&ww->lock, NULL);
    pthread_cond_init(&ww->cv, NULL);
    s->write_worker = ww;
    rc = pthread_create(&ww->thread, NULL, worker_main, s);
    if (rc) {
        tide_log(LOG_ERROR, "cannot start the registration thread: %s",
                 strerror(rc));
        return -1;
    }
    ww->running = 1;
    return 0;
}

void tided_write_free_later(struct server *s, void *buf)
{
    struct write_worker *ww = s->write_worker;
    struct write_job *j = ww && ww->running ? tide_calloc(1, sizeof(*j)) : NULL;

    if (!j) {
        tide_free(buf);
        return;
    }
    j->kind = JOB_FREE;
    j->frame = buf;
    job_push(ww, j);
}

void tided_write_stop(struct server *s)
{
    struct write_worker *ww = s->write_worker;
    struct write_job *lists[3];

    if (!ww)
        return;
    if (ww->running) {
        pthread_mutex_lock(&ww->lock);
        ww->stop = 1;
        pthread_cond_signal(&ww->cv);
        pthread_mutex_unlock(&ww->lock);
        pthread_join(ww->thread, NULL);
        ww->running = 0;
    }
    /* Invariant 6: their connections are closed; nothing is applied. */
    lists[0] = ww->head;
    lists[1] = ww->done_head;
    lists[2] = ww->held_head;
    ww->head = ww->tail = ww->done_head = ww->done_tail = NULL;
    ww->held_head = ww->held_tail = NULL;
    for (int l = 0; l < 3; l++) {
        while (lists[l]) {
            struct write_job *j = lists[l], *next = j->next;

            lists[l] = next;
            if (j->kind == JOB_FREE) {
                job_free(j); /* never counted as parked */
                continue;
            }
            if (j->kind == JOB_DECODE && j->conn)
                j->conn->decoding = NULL;
            else if (j->kind == JOB_REGISTER && j->w->conn)
                j->w->job = NULL; /* left to its FIFO */
            else if (j->kind == JOB_REGISTER)
                tide_free(j->w);
            ww->parked_bytes -= j->frame_bytes;
            job_free(j);
            s->writes_parked--;
        }
    }
    if (ww->sliced) {
        struct write_req *r = ww->sliced;

        if (r->w->conn)
            r->w->job = NULL; /* left to its FIFO, never answered */
        else
            tide_free(r->w);
        slice_end(s, r);
    }
    if (ww->slice_ev) {
        event_free(ww->slice_ev);
        ww->slice_ev = NULL;
    }
}

void tided_write_fini(struct server *s)
{
    struct write_worker *ww = s->write_worker;

    tided_write_stop(s);
    if (ww) {
        pthread_mutex_destroy(&ww->lock);
        pthread_cond_destroy(&ww->cv);
        tide_free(ww);
        s->write_worker = NULL;
    }
    devices_fini(s);
}

/* Steps 4 to 8 of a batch that passed steps 1 to 3. */
static void write_run(struct write_req *r)
{
    if (write_groups(r, UINT32_MAX) || write_series(r, UINT32_MAX) ||
        write_ack(r)) {
        write_req_fini(r);
        refuse_req(r, TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
                   "out of memory; nothing of the batch was applied", 0);
        return;
    }
    write_append(r);
    write_usage(r);
    write_req_fini(r);
    conn_flush_writes(r->c);
}

void handle_write(struct conn *c, const Tide__V1__Envelope *env)
{
    struct write_req r = {.c = c,
                          .s = c->srv,
                          .wb = env->write_batch,
                          .rid = env->request_id,
                          .now_ns = tided_now_ns(),
                          .frame_bytes = c->frame_bytes};
    int fresh;

    if (write_limits(&r) || write_principal(&r) || write_account(&r) ||
        write_key_rate(&r))
        return;
    /* Invariant 4: behind a parked batch, or with names to register. */
    fresh = batch_scan(&r, NULL);
    /* A big batch is parked even so: it comes back to be built in slices
     * (slice_start). */
    if (fresh || c->writes_parked || batch_big(&r)) {
        /* The envelope is const to dispatch(), not to its owner: the
         * WriteBatch is taken from it (write_park). */
        write_park(&r, (Tide__V1__Envelope *)env, fresh);
        return;
    }
    write_run(&r);
}
