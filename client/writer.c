/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libtide's buffered writer: points go into per-(device, field) columns,
 * are sealed into WriteBatch frames (one PointGroup per column, its
 * timestamps delta-encoded) with the producer id and the next sequence,
 * sent within the ack window, and kept until their WriteAck. Write model:
 * docs/protocol.md, "Write model"; invariants in internal.h.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"

/* A new column's first arrays: a wide fleet has many columns of few
 * points per batch. */
#define COLUMN_CAP_MIN 4
#define SLOTS_MIN 1024

static uint64_t hash_key(const char *device, size_t device_len,
                         const char *field, size_t field_len)
{
    return XXH3_64bits_withSeed(field, field_len,
                                XXH3_64bits(device, device_len));
}

/* Put `col` in the first free slot of its probe sequence. */
static void slot_put(struct column **slots, size_t n_slots, struct column *col)
{
    size_t i = col->hash & (n_slots - 1);

    while (slots[i])
        i = (i + 1) & (n_slots - 1);
    slots[i] = col;
}

/* Keep the table at most half full. Returns 0 or -ENOMEM. */
static int slots_reserve(tide_client *c)
{
    size_t n = c->n_slots ? 2 * c->n_slots : SLOTS_MIN;
    struct column **slots;

    if ((c->n_columns + 1) * 2 <= c->n_slots)
        return 0;
    slots = tide_calloc(n, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < c->n_slots; i++)
        if (c->slots[i])
            slot_put(slots, n, c->slots[i]);
    tide_free(c->slots);
    c->slots = slots;
    c->n_slots = n;
    return 0;
}

static struct column *column_new(tide_client *c, uint64_t hash,
                                 const char *device, size_t device_len,
                                 const char *field, size_t field_len)
{
    struct column *col;

    if (slots_reserve(c))
        return NULL;
    col = tide_calloc(1, sizeof(*col));
    if (!col)
        return NULL;
    col->device = tide_strdup(device);
    col->field = tide_strdup(field);
    if (!col->device || !col->field) {
        tide_free(col->device);
        tide_free(col->field);
        tide_free(col);
        return NULL;
    }
    col->hash = hash;
    col->device_len = device_len;
    col->field_len = field_len;
    slot_put(c->slots, c->n_slots, col);
    c->n_columns++;
    col->all_next = c->all_head;
    c->all_head = col;
    return col;
}

/* The column of (device, field), made on first use: one hash of the two
 * names and, for a known series, one compare of each. */
static struct column *column_get(tide_client *c, const char *device,
                                 size_t device_len, const char *field,
                                 size_t field_len)
{
    uint64_t h = hash_key(device, device_len, field, field_len);

    for (size_t i = h & (c->n_slots - 1); c->n_slots && c->slots[i];
         i = (i + 1) & (c->n_slots - 1)) {
        struct column *col = c->slots[i];

        if (col->hash == h && col->device_len == device_len &&
            col->field_len == field_len &&
            !memcmp(col->device, device, device_len) &&
            !memcmp(col->field, field, field_len))
            return col;
    }
    return column_new(c, h, device, device_len, field, field_len);
}

static size_t value_size(int type)
{
    switch (type) {
    case TIDE_VALUE_F64:
        return sizeof(double);
    case TIDE_VALUE_I64:
        return sizeof(int64_t);
    case TIDE_VALUE_BOOL:
        return sizeof(uint8_t);
    default:
        return sizeof(char *);
    }
}

/* Empty a column after sealing; its arrays stay for reuse. */
static void column_reset(struct column *col)
{
    if (col->type == TIDE_VALUE_STR)
        for (size_t i = 0; i < col->n; i++)
            tide_free(col->v.str[i]);
    col->n = 0;
}

/* Make room for one more point of `type`. Returns 0 or -ENOMEM. */
static int column_reserve(struct column *col, int type)
{
    size_t cap;
    int64_t *ts;
    void *v;

    if (col->type != type) {
        /* Empty (the caller sealed): reuse the arrays, resized below. */
        tide_free(col->v.f64);
        col->v.f64 = NULL;
        tide_free(col->ts_ns);
        col->ts_ns = NULL;
        col->cap = 0;
        col->type = type;
    }
    if (col->n < col->cap)
        return 0;
    cap = col->cap ? col->cap * 2 : COLUMN_CAP_MIN;
    ts = tide_realloc(col->ts_ns, cap * sizeof(*ts));
    if (!ts)
        return -ENOMEM;
    col->ts_ns = ts;
    v = tide_realloc(col->v.f64, cap * value_size(type));
    if (!v)
        return -ENOMEM;
    col->v.f64 = v;
    col->cap = cap;
    return 0;
}

static void batch_free(struct batch *b)
{
    if (b) {
        tide_free(b->frame);
        tide_free(b);
    }
}

/* Unlink `b` (whose predecessor is `prev`, NULL for the head). */
static void batch_remove(tide_client *c, struct batch *prev, struct batch *b)
{
    if (prev)
        prev->next = b->next;
    else
        c->q_head = b->next;
    if (c->q_tail == b)
        c->q_tail = prev;
    if (b->sent)
        c->n_inflight--;
    c->sealed_points -= b->points;
    batch_free(b);
}

int tide__writer_seal(tide_client *c)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__WriteBatch wb = TIDE__V1__WRITE_BATCH__INIT;
    Tide__V1__PointGroup *groups = NULL, **gptrs = NULL;
    Tide__V1__Column *cols = NULL, **cptrs = NULL;
    int64_t *deltas = NULL;
    uint8_t *bits = NULL;
    struct batch *b = NULL;
    struct column *col, *lead = NULL; /* first column of the open group */
    size_t ng = 0, gi = 0, ci = 0, off = 0, boff = 0, size;
    int rc = -ENOMEM;

    if (!c->n_open_points)
        return 0;
    for (col = c->open_head; col; col = col->open_next)
        ng++;
    groups = tide_calloc(ng, sizeof(*groups));
    gptrs = tide_calloc(ng, sizeof(*gptrs));
    cols = tide_calloc(ng, sizeof(*cols));
    cptrs = tide_calloc(ng, sizeof(*cptrs));
    deltas = tide_malloc(c->n_open_points * sizeof(*deltas));
    bits = tide_calloc(c->n_open_points + 8 * ng, 1);
    b = tide_calloc(1, sizeof(*b));
    if (!groups || !gptrs || !cols || !cptrs || !deltas || !bits || !b)
        goto fail;
    for (col = c->open_head; col; col = col->open_next) {
        Tide__V1__Column *k = &cols[ci];
        int64_t prev = 0;

        tide__v1__column__init(k);
        /* Fields of one device written at the same timestamps share a
         * group: one device name and one timestamp column for all of them,
         * which is what makes a wide row cheap to encode and decode. */
        if (lead && lead->n == col->n && lead->device_len == col->device_len &&
            !memcmp(lead->device, col->device, col->device_len) &&
            !memcmp(lead->ts_ns, col->ts_ns, col->n * sizeof(*col->ts_ns))) {
            groups[gi - 1].n_columns++;
        } else {
            Tide__V1__PointGroup *g = &groups[gi];

            tide__v1__point_group__init(g);
            g->device = col->device;
            g->n_ts_delta_ns = col->n;
            g->ts_delta_ns = deltas + off;
            for (size_t i = 0; i < col->n; i++) {
                /* Wrapping subtraction: zigzag carries any step exactly. */
                deltas[off + i] =
                    (int64_t)((uint64_t)col->ts_ns[i] - (uint64_t)prev);
                prev = col->ts_ns[i];
            }
            off += col->n;
            g->n_columns = 1;
            g->columns = &cptrs[ci];
            gptrs[gi++] = g;
            lead = col;
        }
        k->field = col->field;
        k->type = (Tide__V1__ValueType)col->type;
        switch (col->type) {
        case TIDE_VALUE_F64:
            k->n_f64 = col->n;
            k->f64 = col->v.f64;
            break;
        case TIDE_VALUE_I64:
            k->n_i64 = col->n;
            k->i64 = col->v.i64;
            break;
        case TIDE_VALUE_BOOL:
            k->bool_bits.len = (col->n + 7) / 8;
            k->bool_bits.data = bits + boff;
            for (size_t i = 0; i < col->n; i++)
                if (col->v.b[i])
                    bits[boff + i / 8] |= (uint8_t)(1u << (i % 8));
            boff += k->bool_bits.len;
            break;
        default:
            k->n_str = col->n;
            k->str = col->v.str;
            break;
        }
        cptrs[ci++] = k;
    }
    wb.producer_id = c->producer_id;
    wb.sequence = c->next_sequence;
    wb.n_groups = gi;
    wb.groups = gptrs;
    env.request_id = c->next_request_id;
    env.body_case = TIDE__V1__ENVELOPE__BODY_WRITE_BATCH;
    env.write_batch = &wb;
    size = tide_frame_size(&env);
    b->frame = tide_malloc(size);
    if (!b->frame)
        goto fail;
    if (tide_frame_encode(&env, b->frame, size) != (int64_t)size) {
        rc = TIDE_EPROTO;
        goto fail;
    }
    b->len = size;
    b->request_id = c->next_request_id++;
    b->sequence = c->next_sequence++;
    b->points = c->n_open_points;
    if (c->q_tail)
        c->q_tail->next = b;
    else
        c->q_head = b;
    c->q_tail = b;
    b = NULL;
    c->sealed_points += c->n_open_points;
    c->n_open_points = 0;
    for (col = c->open_head; col; col = col->open_next)
        column_reset(col);
    c->open_head = c->open_tail = NULL;
    rc = 0;

fail:
    batch_free(b);
    tide_free(groups);
    tide_free(gptrs);
    tide_free(cols);
    tide_free(cptrs);
    tide_free(deltas);
    tide_free(bits);
    return rc;
}

int tide__writer_append(tide_client *c, const char *device, const char *field,
                        int type, int64_t ts_ns, const void *value)
{
    struct column *col;
    size_t device_len, field_len;
    char *s = NULL;
    int rc;

    if (!device || !*device || !field || !*field)
        return TIDE_EINVAL;
    device_len = strlen(device);
    field_len = strlen(field);
    if (c->max_string_bytes &&
        (device_len > c->max_string_bytes || field_len > c->max_string_bytes ||
         (type == TIDE_VALUE_STR &&
          strlen((const char *)value) > c->max_string_bytes)))
        return TIDE_EINVAL;
    if (c->n_open_points + c->sealed_points >= c->o.buffer_points_max) {
        if (c->o.overflow == TIDE_OVERFLOW_ERROR)
            return TIDE_EFULL;
        if (c->o.overflow == TIDE_OVERFLOW_BLOCK)
            return TIDE__NEED_WAIT;
        if (!c->q_head) {
            rc = tide__writer_seal(c);
            if (rc)
                return rc;
        }
        c->st.points_dropped += c->q_head->points;
        batch_remove(c, NULL, c->q_head);
    }
    col = column_get(c, device, device_len, field, field_len);
    if (!col)
        return -ENOMEM;
    if (col->n && col->type != type) {
        rc = tide__writer_seal(c);
        if (rc)
            return rc;
    }
    if (type == TIDE_VALUE_STR) {
        s = tide_strdup((const char *)value);
        if (!s)
            return -ENOMEM;
    }
    rc = column_reserve(col, type);
    if (rc) {
        tide_free(s);
        return rc;
    }
    col->ts_ns[col->n] = ts_ns;
    switch (type) {
    case TIDE_VALUE_F64:
        col->v.f64[col->n] = *(const double *)value;
        break;
    case TIDE_VALUE_I64:
        col->v.i64[col->n] = *(const int64_t *)value;
        break;
    case TIDE_VALUE_BOOL:
        col->v.b[col->n] = *(const int *)value != 0;
        break;
    default:
        col->v.str[col->n] = s;
        break;
    }
    if (!col->n++) {
        if (c->open_tail)
            c->open_tail->open_next = col;
        else
            c->open_head = col;
        c->open_tail = col;
        col->open_next = NULL;
    }
    if (!c->n_open_points)
        c->open_since_ms = tide__client_now_ms();
    c->n_open_points++;
    c->st.points_written++;
    return 0;
}

/* Give a refused batch a new sequence: later batches of this producer may
 * already be applied, and the server would take the old one for a
 * duplicate. Returns 0 or -ENOMEM / TIDE_EPROTO. */
static int resequence(tide_client *c, struct batch *b)
{
    Tide__V1__Envelope *env = NULL;
    uint8_t *frame = NULL;
    size_t used, size;
    int rc;

    rc = tide_frame_parse(b->frame, b->len, TIDE_FRAME_MAX_BYTES_LIMIT, NULL,
                          &env, &used);
    if (rc)
        return rc == -ENOMEM ? rc : TIDE_EPROTO;
    env->write_batch->sequence = c->next_sequence;
    size = tide_frame_size(env);
    frame = tide_malloc(size);
    if (!frame) {
        rc = -ENOMEM;
        goto out;
    }
    if (tide_frame_encode(env, frame, size) != (int64_t)size) {
        tide_free(frame);
        rc = TIDE_EPROTO;
        goto out;
    }
    tide_free(b->frame);
    b->frame = frame;
    b->len = size;
    b->sequence = c->next_sequence++;
out:
    tide_frame_free(env, NULL);
    return rc;
}

/* The server's flag, or the protocol's definition for a server that
 * leaves it unset. */
static int retryable(const Tide__V1__Error *e)
{
    return e->retryable || tide_wire_retryable(e->code);
}

/* Handle a WriteAck or Error answering a sent batch. Returns 1 when the
 * frame was one (and is freed), 0 when it belongs to someone else. */
int tide__writer_dispatch(tide_client *c, Tide__V1__Envelope *env)
{
    struct batch *prev = NULL, *b;

    for (b = c->q_head; b; prev = b, b = b->next)
        if (b->sent && b->request_id == env->request_id)
            break;
    if (!b)
        return 0;
    if (env->body_case == TIDE__V1__ENVELOPE__BODY_WRITE_ACK &&
        env->write_ack) {
        const Tide__V1__WriteAck *a = env->write_ack;

        c->st.batches_acked++;
        if (a->duplicate) {
            /* Applied on an earlier connection whose ack was lost. */
            c->st.batches_duplicate++;
            c->st.points_acked += b->points;
        } else {
            c->st.points_acked += a->accepted_points;
            c->st.points_rejected += a->rejected_points;
            if (a->rejected_points)
                c->flush_rejected = 1;
        }
        batch_remove(c, prev, b);
    } else if (env->body_case == TIDE__V1__ENVELOPE__BODY_ERROR && env->error) {
        tide__client_set_error(c, env->error);
        if (retryable(env->error) && resequence(c, b) == 0) {
            b->sent = 0;
            c->n_inflight--;
            c->retry_at_ms = tide__client_now_ms() + env->error->retry_after_ms;
        } else {
            c->st.batches_failed++;
            c->st.points_rejected += b->points;
            c->flush_rejected = 1;
            batch_remove(c, prev, b);
        }
    } else {
        /* Anything else under a batch's id breaks the protocol; the
         * batch stays and is resent after the reconnect. */
        tide_frame_free(env, NULL);
        tide__client_lost(c);
        return 1;
    }
    tide_frame_free(env, NULL);
    return 1;
}

void tide__writer_lost(tide_client *c)
{
    for (struct batch *b = c->q_head; b; b = b->next)
        b->sent = 0;
    c->n_inflight = 0;
}

void tide__writer_fini(tide_client *c)
{
    struct column *col, *next;

    while (c->q_head)
        batch_remove(c, NULL, c->q_head);
    for (col = c->all_head; col; col = next) {
        next = col->all_next;
        column_reset(col);
        tide_free(col->ts_ns);
        tide_free(col->v.f64);
        tide_free(col->device);
        tide_free(col->field);
        tide_free(col);
    }
    tide_free(c->slots);
    c->slots = NULL;
    c->n_slots = c->n_columns = 0;
    c->all_head = c->open_head = c->open_tail = NULL;
    c->n_open_points = 0;
}

/*
 * Send unsent batches while the window has room. With `block` the
 * connection is re-established through the backoff (until deadline_ms),
 * otherwise at most one attempt is made when the backoff allows. Returns 0,
 * TIDE_EAUTH, -ENOMEM, or a connection error (batches stay queued).
 */
static int pump_send(tide_client *c, int block, int64_t deadline_ms)
{
    struct batch *b;
    int rc;

    if (!c->q_head || tide__client_now_ms() < c->retry_at_ms)
        return 0;
    rc = block ? tide__client_ensure(c, deadline_ms) : tide__client_step(c);
    if (rc)
        return rc;
    for (b = c->q_head; b && c->n_inflight < c->window; b = b->next) {
        if (b->sent)
            continue;
        rc = tide__client_send(c, b->frame, b->len);
        if (rc)
            return rc;
        b->sent = 1;
        c->n_inflight++;
        if (b->ever_sent)
            c->st.batches_resent++;
        else
            c->st.batches_sent++;
        b->ever_sent = 1;
    }
    return 0;
}

/* Read what is ready without waiting. Returns 0, or -ENOMEM. */
static int read_ready(tide_client *c)
{
    while (c->connected) {
        int rc = tide__client_read(c, 0);

        if (rc == -ENOMEM)
            return rc;
        if (rc)
            break;
    }
    return 0;
}

/* Non-blocking drive: send, then read whatever acks are ready. Only
 * refusals and OOM are errors; network trouble leaves data queued. */
static int drive(tide_client *c)
{
    int rc = pump_send(c, 0, 0);

    if (rc == TIDE_EAUTH || rc == -ENOMEM)
        return rc;
    return read_ready(c);
}

/*
 * Wait until at most `target` points are buffered, reconnecting and
 * resending as needed. Everything open is sealed first. Returns 0,
 * TIDE_ETIMEDOUT (block_timeout_ms), TIDE_EAUTH, -ENOMEM,
 * or the connect error once reconnect_attempts_max attempts failed.
 */
static int drain_until(tide_client *c, uint64_t target)
{
    int64_t deadline = 0;
    int rc = tide__writer_seal(c);

    if (rc)
        return rc;
    if (c->o.block_timeout_ms)
        deadline = tide__client_now_ms() + c->o.block_timeout_ms;
    while (c->sealed_points + c->n_open_points > target && c->q_head) {
        int64_t now = tide__client_now_ms();

        if (deadline && now >= deadline)
            return TIDE_ETIMEDOUT;
        if (now < c->retry_at_ms) {
            poll(NULL, 0, (int)(c->retry_at_ms - now));
            continue;
        }
        rc = pump_send(c, 1, deadline);
        if (rc == TIDE_EAUTH || rc == -ENOMEM || rc == TIDE_ETIMEDOUT)
            return rc;
        if (rc && !c->connected && c->o.reconnect_attempts_max &&
            c->attempt >= c->o.reconnect_attempts_max)
            return rc;
        if (!c->connected || !c->n_inflight)
            continue;
        rc = tide__client_read(c, c->o.io_timeout_ms);
        if (rc == TIDE_ETIMEDOUT)
            tide__client_lost(c); /* silent server: reconnect, resend */
        else if (rc == -ENOMEM)
            return rc;
    }
    return 0;
}

/* Points buffered between two non-blocking reads of acks (power of 2). */
#define DRIVE_EVERY_POINTS 4096

static int write_point(tide_client *c, const char *device, const char *field,
                       int type, int64_t ts_ns, const void *value)
{
    int rc;

    if (!c)
        return TIDE_EINVAL;
    if (c->failed)
        return c->failed;
    rc = tide__writer_append(c, device, field, type, ts_ns, value);
    if (rc == TIDE__NEED_WAIT) {
        rc = drain_until(c, c->o.buffer_points_max - 1);
        if (rc)
            return rc;
        rc = tide__writer_append(c, device, field, type, ts_ns, value);
    }
    if (rc)
        return rc;
    if (c->n_open_points >= c->max_batch_points ||
        tide__client_now_ms() - c->open_since_ms >= c->o.batch_interval_ms) {
        rc = tide__writer_seal(c);
        if (rc)
            return rc;
        return drive(c);
    }
    /* Between seals, look for acks only now and then: a read attempt is a
     * syscall, which would cost more than buffering the point. */
    if ((++c->writes_since_drive & (DRIVE_EVERY_POINTS - 1)) == 0)
        return drive(c);
    return 0;
}

int tide_write_f64(tide_client *c, const char *device, const char *field,
                   int64_t ts_ns, double value)
{
    return write_point(c, device, field, TIDE_VALUE_F64, ts_ns, &value);
}

int tide_write_i64(tide_client *c, const char *device, const char *field,
                   int64_t ts_ns, int64_t value)
{
    return write_point(c, device, field, TIDE_VALUE_I64, ts_ns, &value);
}

int tide_write_bool(tide_client *c, const char *device, const char *field,
                    int64_t ts_ns, int value)
{
    return write_point(c, device, field, TIDE_VALUE_BOOL, ts_ns, &value);
}

int tide_write_str(tide_client *c, const char *device, const char *field,
                   int64_t ts_ns, const char *value)
{
    if (!value)
        return TIDE_EINVAL;
    return write_point(c, device, field, TIDE_VALUE_STR, ts_ns, value);
}

int tide_flush(tide_client *c)
{
    int rc;

    if (!c)
        return TIDE_EINVAL;
    if (c->failed)
        return c->failed;
    rc = drain_until(c, 0);
    if (rc)
        return rc;
    rc = c->flush_rejected ? TIDE_EREJECTED : 0;
    c->flush_rejected = 0;
    return rc;
}

int tide_client_poll(tide_client *c, uint32_t timeout_ms)
{
    int rc;

    if (!c)
        return TIDE_EINVAL;
    if (c->failed)
        return c->failed;
    if (c->n_open_points &&
        tide__client_now_ms() - c->open_since_ms >= c->o.batch_interval_ms) {
        rc = tide__writer_seal(c);
        if (rc)
            return rc;
    }
    rc = drive(c);
    if (rc)
        return rc;
    if (timeout_ms && c->connected) {
        rc = tide__client_read(c, timeout_ms);
        if (rc == -ENOMEM)
            return rc;
        return read_ready(c);
    }
    return 0;
}
