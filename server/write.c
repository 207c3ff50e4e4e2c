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
 *   write_limits ─► write_principal ─► write_account ─► write_groups
 *   (devices, then each group's columns) ─► write_series ─► write_ack
 *   ─► write_append ─► write_usage
 * The first three refuse the batch whole; an allocation failure before
 * write_ack refuses it whole too; after write_ack nothing can fail.
 *
 * Invariants:
 *   1. Nothing of a batch refused whole reaches the engine.
 *   2. A WriteAck with accepted_points > 0 is sent only after the engine's
 *      completion callback reported 0 (durable) for that batch.
 *   3. accepted_points + rejected_points equals the batch's point count.
 */
#include <stdlib.h>
#include <string.h>

#include "ratelimit.h"
#include "server.h"

int tided_write_init(struct server *s)
{
    return devices_init(s);
}

void tided_write_fini(struct server *s)
{
    devices_fini(s);
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
            names_valid(name, TIDE_META_NAME_MAX) &&
            names_utf8_valid((const uint8_t *)name, strlen(name)))
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
    struct pending_write *w;
};

/* Step 1, limits: refuse a batch over max_batch_groups or
 * max_batch_points, or over the write rate of its API key (the tier's
 * key_rate_points_s; the account's rate is step 3's); count its points
 * and columns. Returns 0, or -1 when the batch was refused. */
static int write_limits(struct write_req *r)
{
    const Tide__V1__WriteBatch *wb = r->wb;
    const struct tide_meta_principal *who = &r->c->who;
    struct account_state *acct;
    uint32_t retry_ms = 0;

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
    if (!who->key_id || !who->account_id)
        return 0; /* sessions and the operator have no key limit */
    acct = devices_account(r->s, who->account_id);
    if (acct && ratelimit_key_write(&acct->tier, who->key_id, r->total,
                                    r->now_ns, &retry_ms)) {
        ack_refuse(r->c, r->rid, TIDE__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED,
                   "points/s rate limit of the key reached", retry_ms);
        return -1;
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
        refuse(r->c, r->rid,
               rc == TIDE_EPAUSED
                   ? TIDE__V1__ERROR_CODE__ERROR_CODE_PAUSED
                   : TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED,
               rc == TIDE_EPAUSED ? "ingestion is paused for this account"
                                  : "this credential may not write");
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
        refuse(r->c, r->rid, TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
               "out of memory");
        return -1;
    }
    if (acct->tier.rate_points_s) {
        double rate = (double)acct->tier.rate_points_s;

        acct->tokens += rate * (double)(r->now_ns - acct->refill_ns) / 1e9;
        if (acct->tokens > rate)
            acct->tokens = rate;
        acct->refill_ns = r->now_ns;
        if (acct->tokens <= 0) {
            ack_refuse(r->c, r->rid,
                       TIDE__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED,
                       "points/s rate limit of the plan reached",
                       (uint32_t)(-acct->tokens / rate * 1000) + 1);
            return -1;
        }
    }
    if (acct->tier.daily_points_max &&
        acct->day_points + r->total > acct->tier.daily_points_max) {
        refuse(r->c, r->rid, TIDE__V1__ERROR_CODE__ERROR_CODE_QUOTA_EXCEEDED,
               "daily points quota of the plan spent");
        return -1;
    }
    r->acct = acct;
    r->horizon_ns = acct->tier.ttl_s
                        ? r->now_ns - acct->tier.ttl_s * 1000000000ll
                        : INT64_MIN;
    return 0;
}

/* Step 4, devices: the device of group `pg` in *dev, created when the
 * credential may. Returns NULL, or why the group is refused whole (with
 * the wire code in *code). */
static const char *write_device(struct write_req *r,
                                const Tide__V1__PointGroup *pg,
                                struct device_entry **dev,
                                Tide__V1__ErrorCode *code)
{
    const struct conn *c = r->c;
    const char *msg = names_error(pg->device, TIDE_META_NAME_MAX, code);
    int rc;

    if (msg)
        return msg;
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

/* Why column `col` of a group of `n` points is refused whole (wire code in
 * *code), or NULL. */
static const char *column_error(const Tide__V1__Column *col, uint32_t n,
                                Tide__V1__ErrorCode *code)
{
    uint64_t count = column_count(col);
    int ok_count = col->type == TIDE__V1__VALUE_TYPE__VALUE_TYPE_BOOL
                       ? col->bool_bits.len == (n + 7) / 8
                       : count == n;
    const char *msg = names_error(col->field, TIDE_META_FIELD_MAX, code);

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

/* Step 4b, tags: upsert the tags of group `pg` onto its device `dev` in
 * the cache; devices_tags_flush() stores those that changed. Returns 0
 * with *msg NULL, 0 with *msg saying why the group is refused (wire code
 * in *code), or -ENOMEM. */
static int write_tags(struct write_req *r, const Tide__V1__PointGroup *pg,
                      struct device_entry *dev, const char **msg,
                      Tide__V1__ErrorCode *code)
{
    char text[TIDE_META_TAGS_MAX + 1];
    const char *cur = dev->tags ? dev->tags : "";

    *msg = names_tags_upsert(cur, pg->tags, pg->n_tags, text, code);
    if (*msg || !strcmp(text, cur))
        return 0;
    return devices_set_tags(r->s, dev, text);
}

/* Step 5a, series: the columns of group `g` of device `dev` become engine
 * columns (points inside retention only) with their series keys. Returns
 * 0 or -ENOMEM. */
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
        const char *msg = column_error(col, n, &code);
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
        r->keys[r->n_keys] = (struct tide_meta_series_key){
            .account_id = r->c->who.account_id,
            .device_id = dev->id,
            .field = col->field,
            .field_len = (uint32_t)strlen(col->field),
            .type = tc->type};
        r->key_col[r->n_keys++] = (struct col_ref){g, k};
        b->n_cols++;
    }
    return 0;
}

/* Steps 4, 4b and 5a for every group: a group whose device or tags are
 * refused has each of its columns rejected. The tags that changed are
 * stored in one transaction at the end, or dropped when the batch is
 * refused. Returns 0 or -ENOMEM. */
static int write_groups(struct write_req *r)
{
    const Tide__V1__WriteBatch *wb = r->wb;
    uint32_t n = r->n_cols ? r->n_cols : 1;

    devices_prepare(r->s, r->c, wb);
    r->b.cols = tide_calloc(n, sizeof(*r->b.cols));
    r->keys = tide_calloc(n, sizeof(*r->keys));
    r->key_col = tide_calloc(n, sizeof(*r->key_col));
    if (!r->b.cols || !r->keys || !r->key_col)
        return -ENOMEM;
    for (uint32_t g = 0; g < wb->n_groups; g++) {
        const Tide__V1__PointGroup *pg = wb->groups[g];
        struct device_entry *dev = NULL;
        Tide__V1__ErrorCode gcode = 0;
        const char *gmsg = write_device(r, pg, &dev, &gcode);

        if (!gmsg && pg->n_tags && write_tags(r, pg, dev, &gmsg, &gcode))
            goto oom;
        if (gmsg) {
            for (uint32_t k = 0; k < pg->n_columns; k++)
                if (reject(&r->rej, g, k, pg->device, pg->columns[k]->field,
                           gcode, (uint32_t)pg->n_ts_delta_ns, gmsg))
                    goto oom;
            continue;
        }
        if (write_group(r, g, dev))
            goto oom;
        tide_meta_device_seen(r->s->meta, dev->id);
    }
    devices_tags_flush(r->s);
    return 0;

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

/* Step 5b, series ids: the registry answers known ones without SQL; the
 * rest are created in one transaction. Columns that do not resolve are
 * rejected and dropped; r->accepted counts the points left. Returns 0 or
 * -ENOMEM. */
static int write_series(struct write_req *r)
{
    struct batch_build *b = &r->b;
    uint32_t n_keys = r->n_keys, n_new = 0, out = 0, cap = n_keys ? n_keys : 1;
    uint32_t *new_idx = tide_calloc(cap, sizeof(*new_idx));
    uint64_t *new_ids = tide_calloc(cap, sizeof(*new_ids));
    int *new_rcs = tide_calloc(cap, sizeof(*new_rcs));
    struct tide_meta_series_key *new_keys = tide_calloc(cap, sizeof(*new_keys));
    int rc = new_idx && new_ids && new_rcs && new_keys ? 0 : -ENOMEM;

    for (uint32_t i = 0; rc == 0 && i < n_keys; i++) {
        int lrc = tide_meta_series_lookup(r->s->meta, &r->keys[i],
                                          &b->cols[i].series_id);

        if (lrc == TIDE_ENOTFOUND) {
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
                                         : "series lookup failed"))
                break;
        }
    }
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
    tide_free(new_idx);
    tide_free(new_ids);
    tide_free(new_rcs);
    tide_free(new_keys);
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
    w = tide_calloc(1, sizeof(*w));
    if (w)
        w->reply = tide_calloc(1, sizeof(*w->reply));
    if (!ack || !w || !w->reply) {
        tide_free(ack);
        if (w)
            tide_free(w->reply);
        tide_free(w);
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
    ack_enqueue(c, w);
    r->w = w;
    return 0;
}

/* Step 7, engine append: hand the resolved columns to the engine; the ack
 * waits for ack_on_durable(). A batch the engine refuses at once becomes an
 * Error and r->accepted 0. */
static void write_append(struct write_req *r)
{
    struct pending_write *w = r->w;
    struct tide_batch batch = {.producer_id = r->wb->producer_id,
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
        .messages = 1, .points = r->accepted, .bytes_in = r->c->frame_bytes};

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
}

void handle_write(struct conn *c, const Tide__V1__Envelope *env)
{
    struct write_req r = {.c = c,
                          .s = c->srv,
                          .wb = env->write_batch,
                          .rid = env->request_id,
                          .now_ns = tided_now_ns()};

    if (write_limits(&r) || write_principal(&r) || write_account(&r))
        return;
    if (write_groups(&r) || write_series(&r) || write_ack(&r)) {
        write_req_fini(&r);
        refuse(c, r.rid, TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED,
               "out of memory; nothing of the batch was applied");
        return;
    }
    write_append(&r);
    write_usage(&r);
    write_req_fini(&r);
    conn_flush_writes(c);
}
