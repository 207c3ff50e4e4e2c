/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The write path (docs/protocol.md, "Write model"): a WriteBatch is
 * checked whole (size, role, account pause, rate limit, daily quota), then
 * per column (device and field names, UTF-8, value count and type, series
 * type, retention horizon), resolved to series ids through the sidecar's
 * in-memory registry, and handed to the engine. Its WriteAck is sent only
 * when the engine reports the batch durable, and acks leave each
 * connection in the order the batches arrived.
 *
 * Invariants:
 *   1. Nothing of a batch refused whole reaches the engine.
 *   2. A WriteAck with accepted_points > 0 is sent only after the engine's
 *      completion callback reported 0 (durable) for that batch.
 *   3. accepted_points + rejected_points equals the batch's point count.
 */
#include <stdlib.h>
#include <string.h>

#include "server.h"

int tided_write_init(struct server *s)
{
    return devices_init(s);
}

void tided_write_fini(struct server *s)
{
    devices_fini(s);
}

/* ---- Validation helpers -------------------------------------------------- */

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;

    while (i < n) {
        uint8_t b = p[i];
        uint32_t cp;
        size_t len;

        if (b < 0x80) {
            i++;
            continue;
        }
        if ((b & 0xe0) == 0xc0) {
            len = 2;
            cp = b & 0x1f;
        } else if ((b & 0xf0) == 0xe0) {
            len = 3;
            cp = b & 0x0f;
        } else if ((b & 0xf8) == 0xf0) {
            len = 4;
            cp = b & 0x07;
        } else {
            return 0;
        }
        if (i + len > n)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
            (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

static int name_valid(const char *s, size_t max)
{
    size_t n = strlen(s);

    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((uint8_t)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

/* Why `s` cannot be a device or field name of at most `max` bytes, with
 * the wire code in *code; NULL when it can. */
static const char *name_error(const char *s, size_t max,
                              Tide__V1__ErrorCode *code)
{
    if (!name_valid(s, max)) {
        *code = TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT;
        return "name empty, too long or with control characters";
    }
    if (!utf8_valid((const uint8_t *)s, strlen(s))) {
        *code = TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_UTF8;
        return "name is not valid UTF-8";
    }
    return NULL;
}

/* Register, in one sidecar transaction, the devices this batch names that
 * the account does not have yet (a new fleet's first batch names
 * thousands). Best effort: a device left out is registered, or refused,
 * one at a time by devices_get(). */
static void devices_prepare(struct server *s, const struct conn *c,
                            const Tide__V1__WriteBatch *wb)
{
    uint64_t account = c->who.account_id;
    const char **names;
    size_t n = 0;

    if (c->who.role == TIDE_META_ROLE_DEVICE || wb->n_groups < 2 ||
        devices_load(s, account))
        return;
    /* The usual batch names known devices only: one lookup each, no more. */
    for (size_t g = 0; g < wb->n_groups && !n; g++)
        n = !devices_known(s, account, wb->groups[g]->device);
    if (!n)
        return;
    n = 0;
    names = tide_malloc(wb->n_groups * sizeof(*names));
    for (size_t g = 0; names && g < wb->n_groups; g++) {
        const char *name = wb->groups[g]->device;

        /* Repeats within the batch come back as TIDE_EEXIST: harmless. */
        if (!devices_known(s, account, name) &&
            name_valid(name, TIDE_META_NAME_MAX) &&
            utf8_valid((const uint8_t *)name, strlen(name)))
            names[n++] = name;
    }
    if (n > 1)
        devices_register_many(s, account, names, n);
    tide_free(names);
}

/* ---- Building the batch ---------------------------------------------------
 */

struct rejection_list {
    Tide__V1__Rejection **v;
    size_t n, cap;
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
            return -ENOMEM;
        r->v = v;
        r->cap = cap;
    }
    x = tide_calloc(1, sizeof(*x));
    if (!x)
        return -ENOMEM;
    tide__v1__rejection__init(x);
    x->group_index = group;
    x->column_index = column;
    x->device = tide_strdup(device ? device : "");
    x->field = tide_strdup(field ? field : "");
    x->message = tide_strdup(msg);
    x->code = code;
    x->points = points;
    r->v[r->n++] = x;
    return 0;
}

static void rejections_free(Tide__V1__Rejection **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        tide_free(v[i]->device);
        tide_free(v[i]->field);
        tide_free(v[i]->message);
        tide_free(v[i]);
    }
    tide_free(v);
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

/* ---- Completions -----------------------------------------------------------
 */

static void pending_free(struct pending_write *w)
{
    if (w->reply) {
        if (w->reply->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK) {
            rejections_free(w->reply->write_ack->rejections,
                            w->reply->write_ack->n_rejections);
            tide_free(w->reply->write_ack);
        } else if (w->reply->body_case == TIDE__V1__ENVELOPE__BODY_ERROR) {
            tide_free(w->reply->error->message);
            tide_free(w->reply->error);
        }
        tide_free(w->reply);
    }
    tide_free(w);
}

/* A heap Error (freed by pending_free), or NULL without memory. Retryable
 * codes are marked as conn_send_error() marks them. */
static Tide__V1__Error *error_new(Tide__V1__ErrorCode code, const char *msg,
                                  uint32_t retry_after_ms)
{
    Tide__V1__Error *err = tide_calloc(1, sizeof(*err));

    if (!err)
        return NULL;
    tide__v1__error__init(err);
    err->message = tide_strdup(msg);
    if (!err->message) {
        tide_free(err);
        return NULL;
    }
    err->code = code;
    err->retryable = tide_wire_retryable(code);
    err->retry_after_ms = retry_after_ms;
    return err;
}

/* Replace the WriteAck of `w` by Error{code, msg}. Without memory the
 * reply is dropped, and conn_flush_writes() answers INTERNAL instead. */
static void ack_to_error(struct pending_write *w, Tide__V1__ErrorCode code,
                         const char *msg)
{
    Tide__V1__WriteAck *ack = w->reply->write_ack;
    Tide__V1__Error *err = error_new(code, msg, 0);

    rejections_free(ack->rejections, ack->n_rejections);
    tide_free(ack);
    if (!err) {
        tide_free(w->reply);
        w->reply = NULL;
        return;
    }
    w->reply->body_case = TIDE__V1__ENVELOPE__BODY_ERROR;
    w->reply->error = err;
}

/* Engine thread: queue the completion for the loop. */
static void on_durable(void *ctx, int rc)
{
    struct pending_write *w = ctx;
    struct server *s = w->srv;

    w->engine_rc = rc;
    pthread_mutex_lock(&s->done_lock);
    w->done_next = NULL;
    if (s->done_tail)
        s->done_tail->done_next = w;
    else
        s->done_head = w;
    s->done_tail = w;
    pthread_mutex_unlock(&s->done_lock);
    event_active(s->wake, EV_READ, 0);
}

/* Turn the engine's verdict into the response of `w`. */
static void settle(struct server *s, struct pending_write *w)
{
    Tide__V1__WriteAck *ack = w->reply->write_ack;

    w->done = 1;
    if (w->engine_rc == TIDE_EDUPLICATE) {
        atomic_fetch_add(&s->metrics.write_duplicates, 1);
        rejections_free(ack->rejections, ack->n_rejections);
        ack->rejections = NULL;
        ack->n_rejections = 0;
        ack->accepted_points = ack->rejected_points = 0;
        ack->duplicate = 1;
    } else if (w->engine_rc) {
        tide_log(LOG_ERROR, "write failed in the engine: %s",
                 tide_strerror(w->engine_rc));
        ack_to_error(w, TIDE__V1__ERROR_CODE__ERROR_CODE_STORAGE,
                     tide_strerror(w->engine_rc));
    } else {
        atomic_fetch_add(&s->metrics.points_accepted, w->accepted);
    }
}

void conn_flush_writes(struct conn *c)
{
    while (c->writes_head && c->writes_head->done) {
        struct pending_write *w = c->writes_head;

        c->writes_head = w->next;
        if (!c->writes_head)
            c->writes_tail = NULL;
        if (w->reply) {
            if (w->reply->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK)
                atomic_fetch_add(&c->srv->metrics.write_acks, 1);
            conn_send(c, w->reply);
        } else {
            conn_send_error(c, w->request_id,
                            TIDE__V1__ERROR_CODE__ERROR_CODE_INTERNAL,
                            "out of memory building the response", 0);
        }
        c->inflight--;
        pending_free(w);
    }
}

void tided_writes_drain(struct server *s)
{
    struct pending_write *w;

    pthread_mutex_lock(&s->done_lock);
    w = s->done_head;
    s->done_head = s->done_tail = NULL;
    pthread_mutex_unlock(&s->done_lock);
    while (w) {
        struct pending_write *next = w->done_next;

        s->inflight_writes--;
        if (w->reply)
            settle(s, w);
        if (!w->conn)
            pending_free(w);
        else
            conn_flush_writes(w->conn);
        w = next;
    }
}

/* ---- The request ------------------------------------------------------------
 */

struct col_ref {
    uint32_t group;
    uint32_t column;
};

/* Refuse a batch whole. The Error joins the connection's write FIFO so
 * that write responses keep the order of the batches. */
static void refuse_retry(struct conn *c, uint64_t rid, Tide__V1__ErrorCode code,
                         const char *msg, uint32_t retry_after_ms)
{
    struct pending_write *w = tide_calloc(1, sizeof(*w));
    Tide__V1__Envelope *env = tide_calloc(1, sizeof(*env));
    Tide__V1__Error *err = error_new(code, msg, retry_after_ms);

    if (!w || !env || !err) {
        tide_free(w);
        tide_free(env);
        if (err)
            tide_free(err->message);
        tide_free(err);
        conn_send_error(c, rid, TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
                        "out of memory", 1);
        return;
    }
    tide__v1__envelope__init(env);
    env->request_id = rid;
    env->body_case = TIDE__V1__ENVELOPE__BODY_ERROR;
    env->error = err;
    w->srv = c->srv;
    w->conn = c;
    w->request_id = rid;
    w->reply = env;
    w->done = 1;
    if (c->writes_tail)
        c->writes_tail->next = w;
    else
        c->writes_head = w;
    c->writes_tail = w;
    c->inflight++;
    conn_flush_writes(c);
}

static void refuse(struct conn *c, uint64_t rid, Tide__V1__ErrorCode code,
                   const char *msg)
{
    refuse_retry(c, rid, code, msg, 0);
}

void handle_write(struct conn *c, const Tide__V1__Envelope *env)
{
    const Tide__V1__WriteBatch *wb = env->write_batch;
    struct server *s = c->srv;
    uint64_t rid = env->request_id, total = 0, accepted = 0;
    struct rejection_list rej = {0};
    struct batch_build b = {0};
    struct tide_meta_series_key *keys = NULL;
    struct col_ref *key_col = NULL;
    uint32_t n_keys = 0, n_cols = 0;
    struct account_state *acct;
    struct pending_write *w = NULL;
    Tide__V1__WriteAck *ack = NULL;
    int64_t horizon, now = tided_now_ns();
    uint8_t *keep = NULL;
    int rc;

    /* Whole-batch checks: size, role, account state, limits. */
    if (wb->n_groups > s->cfg.max_batch_groups) {
        refuse(c, rid, TIDE__V1__ERROR_CODE__ERROR_CODE_BATCH_TOO_LARGE,
               "more groups than max_batch_groups");
        return;
    }
    for (size_t g = 0; g < wb->n_groups; g++) {
        total +=
            (uint64_t)wb->groups[g]->n_ts_delta_ns * wb->groups[g]->n_columns;
        n_cols += (uint32_t)wb->groups[g]->n_columns;
        if (total > s->cfg.max_batch_points || n_cols > 16u << 20) {
            refuse(c, rid, TIDE__V1__ERROR_CODE__ERROR_CODE_BATCH_TOO_LARGE,
                   "more points than max_batch_points");
            return;
        }
    }
    /* A device key is authorised for its own device; per-group checks
     * below refuse any other device. */
    rc = tide_meta_authorize(
        s->meta, &c->who, TIDE_META_ACT_TELEMETRY_WRITE, c->who.account_id,
        c->who.role == TIDE_META_ROLE_DEVICE ? c->who.device_id : 0);
    if (rc || !c->who.account_id) {
        refuse(c, rid,
               rc == TIDE_EPAUSED
                   ? TIDE__V1__ERROR_CODE__ERROR_CODE_PAUSED
                   : TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED,
               rc == TIDE_EPAUSED ? "ingestion is paused for this account"
                                  : "this credential may not write");
        return;
    }
    acct = devices_account(s, c->who.account_id);
    if (!acct) {
        refuse(c, rid, TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
               "out of memory");
        return;
    }
    if (acct->tier.rate_points_s) {
        double rate = (double)acct->tier.rate_points_s;

        acct->tokens += rate * (double)(now - acct->refill_ns) / 1e9;
        if (acct->tokens > rate)
            acct->tokens = rate;
        acct->refill_ns = now;
        if (acct->tokens <= 0) {
            refuse_retry(c, rid, TIDE__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED,
                         "points/s rate limit of the plan reached",
                         (uint32_t)(-acct->tokens / rate * 1000) + 1);
            return;
        }
    }
    if (acct->tier.daily_points_max &&
        acct->day_points + total > acct->tier.daily_points_max) {
        refuse(c, rid, TIDE__V1__ERROR_CODE__ERROR_CODE_QUOTA_EXCEEDED,
               "daily points quota of the plan spent");
        return;
    }
    horizon =
        acct->tier.ttl_s ? now - acct->tier.ttl_s * 1000000000ll : INT64_MIN;
    devices_prepare(s, c, wb);

    b.cols = tide_calloc(n_cols ? n_cols : 1, sizeof(*b.cols));
    keys = tide_calloc(n_cols ? n_cols : 1, sizeof(*keys));
    key_col = tide_calloc(n_cols ? n_cols : 1, sizeof(*key_col));
    if (!b.cols || !keys || !key_col)
        goto oom;

    /* Per group, per column checks; collect series keys. */
    for (size_t g = 0; g < wb->n_groups; g++) {
        const Tide__V1__PointGroup *pg = wb->groups[g];
        uint32_t n = (uint32_t)pg->n_ts_delta_ns, kept = 0;
        struct device_entry *dev = NULL;
        Tide__V1__ErrorCode gcode = 0;
        const char *gmsg = NULL;
        int64_t *ts;

        gmsg = name_error(pg->device, TIDE_META_NAME_MAX, &gcode);
        if (!gmsg) {
            rc = devices_get(s, c->who.account_id, pg->device,
                             c->who.role != TIDE_META_ROLE_DEVICE, &dev);
            if (rc == 0 && c->who.role == TIDE_META_ROLE_DEVICE &&
                dev->id != c->who.device_id)
                rc = TIDE_EPERM;
            if (rc == TIDE_ENOTFOUND || rc == TIDE_EPERM) {
                gcode = TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED;
                gmsg = "a device key writes only its own device";
            } else if (rc == TIDE_EFULL) {
                gcode = TIDE__V1__ERROR_CODE__ERROR_CODE_LIMIT_EXCEEDED;
                gmsg = "the plan's max_devices is reached";
            } else if (rc) {
                gcode = tide_wire_error(rc);
                gmsg = tide_strerror(rc);
            } else if (dev->paused) {
                gcode = TIDE__V1__ERROR_CODE__ERROR_CODE_PAUSED;
                gmsg = "ingestion is paused for this device";
            }
        }
        if (gcode) {
            for (size_t k = 0; k < pg->n_columns; k++)
                if (reject(&rej, (uint32_t)g, (uint32_t)k, pg->device,
                           pg->columns[k]->field, gcode, n, gmsg))
                    goto oom;
            continue;
        }
        ts = build_alloc(&b, (size_t)n * sizeof(*ts));
        keep = tide_realloc(keep, n ? n : 1);
        if (!ts || !keep)
            goto oom;
        for (uint32_t i = 0; i < n; i++) {
            ts[i] = (int64_t)((uint64_t)(i ? ts[i - 1] : 0) +
                              (uint64_t)pg->ts_delta_ns[i]);
            keep[i] = ts[i] >= horizon;
            kept += keep[i];
        }
        for (size_t k = 0; k < pg->n_columns; k++) {
            const Tide__V1__Column *col = pg->columns[k];
            uint64_t count = column_count(col);
            int ok_count = col->type == TIDE__V1__VALUE_TYPE__VALUE_TYPE_BOOL
                               ? col->bool_bits.len == (n + 7) / 8
                               : count == n;
            Tide__V1__ErrorCode code = 0;
            const char *msg =
                name_error(col->field, TIDE_META_FIELD_MAX, &code);

            if (!msg && (count == UINT64_MAX || !ok_count)) {
                code = TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT;
                msg = count == UINT64_MAX
                          ? "column type missing or unknown"
                          : "value count differs from the timestamps";
            } else if (!msg &&
                       col->type == TIDE__V1__VALUE_TYPE__VALUE_TYPE_STRING) {
                for (size_t i = 0; i < col->n_str && !code; i++) {
                    size_t len = strlen(col->str[i]);

                    if (len > TIDE_STR_BYTES_MAX) {
                        code =
                            TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT;
                        msg = "string value too long";
                    } else if (!utf8_valid((const uint8_t *)col->str[i], len)) {
                        code = TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_UTF8;
                        msg = "string value is not valid UTF-8";
                    }
                }
            }
            if (code) {
                if (reject(&rej, (uint32_t)g, (uint32_t)k, pg->device,
                           col->field, code, n, msg))
                    goto oom;
                continue;
            }
            if (kept < n &&
                reject(&rej, (uint32_t)g, (uint32_t)k, pg->device, col->field,
                       TIDE__V1__ERROR_CODE__ERROR_CODE_TOO_OLD, n - kept,
                       "points behind the plan's retention horizon"))
                goto oom;
            if (kept == 0)
                continue;
            if (column_values(&b, &b.cols[b.n_cols], col, ts, n, keep, kept))
                goto oom;
            b.cols[b.n_cols].account_id = c->who.account_id;
            b.cols[b.n_cols].tier = acct->tier.id;
            keys[n_keys] = (struct tide_meta_series_key){
                .account_id = c->who.account_id,
                .device_id = dev->id,
                .field = col->field,
                .field_len = (uint32_t)strlen(col->field),
                .type = b.cols[b.n_cols].type};
            key_col[n_keys++] = (struct col_ref){(uint32_t)g, (uint32_t)k};
            b.n_cols++;
        }
        tide_meta_device_seen(s->meta, dev->id);
    }

    /* Resolve series ids: the registry answers known ones without SQL;
     * the rest are created in one transaction. */
    {
        uint32_t n_new = 0, out = 0;
        uint32_t *new_idx = tide_calloc(n_keys ? n_keys : 1, sizeof(*new_idx));
        uint64_t *new_ids = tide_calloc(n_keys ? n_keys : 1, sizeof(*new_ids));
        int *new_rcs = tide_calloc(n_keys ? n_keys : 1, sizeof(*new_rcs));
        struct tide_meta_series_key *new_keys =
            tide_calloc(n_keys ? n_keys : 1, sizeof(*new_keys));

        if (!new_idx || !new_ids || !new_rcs || !new_keys) {
            tide_free(new_idx);
            tide_free(new_ids);
            tide_free(new_rcs);
            tide_free(new_keys);
            goto oom;
        }
        for (uint32_t i = 0; i < n_keys; i++) {
            rc = tide_meta_series_lookup(s->meta, &keys[i],
                                         &b.cols[i].series_id);
            if (rc == TIDE_ENOTFOUND) {
                new_idx[n_new] = i;
                new_keys[n_new++] = keys[i];
                b.cols[i].series_id = 0;
            } else if (rc) {
                b.cols[i].series_id = 0;
                rc = reject(&rej, key_col[i].group, key_col[i].column,
                            wb->groups[key_col[i].group]->device, keys[i].field,
                            rc == TIDE_ETYPE
                                ? TIDE__V1__ERROR_CODE__ERROR_CODE_TYPE_MISMATCH
                                : tide_wire_error(rc),
                            b.cols[i].n,
                            rc == TIDE_ETYPE
                                ? "the series has another value type"
                                : "series lookup failed");
                if (rc)
                    break;
            }
        }
        rc = n_new ? tide_meta_series_ensure(s->meta, &c->who, new_keys, n_new,
                                             new_ids, new_rcs)
                   : 0;
        for (uint32_t j = 0; j < n_new; j++) {
            uint32_t i = new_idx[j];
            int r = rc ? rc : new_rcs[j];

            if (r == 0) {
                b.cols[i].series_id = new_ids[j];
                continue;
            }
            reject(&rej, key_col[i].group, key_col[i].column,
                   wb->groups[key_col[i].group]->device, keys[i].field,
                   r == TIDE_ETYPE
                       ? TIDE__V1__ERROR_CODE__ERROR_CODE_TYPE_MISMATCH
                   : r == TIDE_EFULL
                       ? TIDE__V1__ERROR_CODE__ERROR_CODE_LIMIT_EXCEEDED
                       : tide_wire_error(r),
                   b.cols[i].n,
                   r == TIDE_ETYPE   ? "the series has another value type"
                   : r == TIDE_EFULL ? "the plan's max_series is reached"
                                     : tide_strerror(r));
        }
        tide_free(new_idx);
        tide_free(new_ids);
        tide_free(new_rcs);
        tide_free(new_keys);
        /* Drop the columns that did not resolve. */
        for (uint32_t i = 0; i < b.n_cols; i++) {
            if (b.cols[i].series_id == 0)
                continue;
            accepted += b.cols[i].n;
            b.cols[out++] = b.cols[i];
        }
        b.n_cols = out;
    }

    ack = tide_calloc(1, sizeof(*ack));
    w = tide_calloc(1, sizeof(*w));
    if (!ack || !w)
        goto oom;
    w->reply = tide_calloc(1, sizeof(*w->reply));
    if (!w->reply)
        goto oom;
    tide__v1__write_ack__init(ack);
    tide__v1__envelope__init(w->reply);
    ack->sequence = wb->sequence;
    ack->accepted_points = accepted;
    ack->rejected_points = total - accepted;
    ack->rejections = rej.v;
    ack->n_rejections = rej.n;
    rej.v = NULL;
    rej.n = 0;
    w->reply->request_id = rid;
    w->reply->body_case = TIDE__V1__ENVELOPE__BODY_WRITE_ACK;
    w->reply->write_ack = ack;
    ack = NULL;
    w->srv = s;
    w->conn = c;
    w->request_id = rid;
    w->accepted = accepted;
    w->account_id = c->who.account_id;
    atomic_fetch_add(&s->metrics.points_rejected, total - accepted);
    if (c->writes_tail)
        c->writes_tail->next = w;
    else
        c->writes_head = w;
    c->writes_tail = w;
    c->inflight++;

    if (b.n_cols == 0) {
        w->done = 1;
    } else {
        struct tide_batch batch = {.producer_id = wb->producer_id,
                                   .sequence = wb->sequence,
                                   .n_columns = b.n_cols,
                                   .columns = b.cols};

        rc = tide_db_append(s->db, &batch, on_durable, w);
        if (rc) {
            /* Nothing was queued: the batch is refused whole. */
            tide_log(LOG_ERROR, "engine refused a batch: %s",
                     tide_strerror(rc));
            ack_to_error(w,
                         rc == TIDE_ECLOSED
                             ? TIDE__V1__ERROR_CODE__ERROR_CODE_SHUTTING_DOWN
                         : rc == TIDE_EINVAL
                             ? TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT
                             : TIDE__V1__ERROR_CODE__ERROR_CODE_STORAGE,
                         tide_strerror(rc));
            w->done = 1;
            accepted = 0;
        } else {
            s->inflight_writes++;
        }
    }
    acct->tokens -= (double)accepted;
    acct->day_points += accepted;
    {
        struct tide_meta_usage u = {
            .messages = 1, .points = accepted, .bytes_in = c->frame_bytes};

        tide_meta_usage_add(s->meta, c->who.account_id, &u);
    }
    build_free(&b);
    tide_free(keys);
    tide_free(key_col);
    tide_free(keep);
    conn_flush_writes(c);
    return;

oom:
    rejections_free(rej.v, rej.n);
    build_free(&b);
    tide_free(keys);
    tide_free(key_col);
    tide_free(keep);
    tide_free(ack);
    if (w)
        tide_free(w->reply);
    tide_free(w);
    refuse(c, rid, TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
           "out of memory; nothing of the batch was applied");
}
