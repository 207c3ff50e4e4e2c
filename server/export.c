/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ExportStart (docs/protocol.md, "Export"): every row the sidecar holds of
 * the account, section by section, then optionally its telemetry as JSON
 * lines or CSV, in ExportChunk frames of about max_chunk_bytes and an
 * ExportEnd with the SHA-256 of every chunk's data. An export is a query
 * (query_int.h): it runs on a query thread and leaves through the query's
 * frame queue, with its flow control and cancellation.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query_int.h"

/* A growable byte buffer. */
struct obuf {
    char *p;
    size_t len, cap;
};

static int ob_add(struct obuf *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *v;

        while (cap < b->len + n)
            cap *= 2;
        v = tide_realloc(b->p, cap);
        if (!v)
            return -ENOMEM;
        b->p = v;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

/* One export in progress: the section being filled and the digest of every
 * chunk's data. */
struct export_out {
    const char *section;
    struct obuf data;
    EVP_MD_CTX *sha;
    uint64_t rows;
    uint64_t bytes;
    int flushed; /* a chunk went out: the step may end */
};

static int export_flush(struct query_state *q, struct export_out *x)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__ExportChunk chunk = TIDE__V1__EXPORT_CHUNK__INIT;
    int rc;

    if (x->data.len == 0)
        return 0;
    EVP_DigestUpdate(x->sha, x->data.p, x->data.len);
    x->bytes += x->data.len;
    chunk.section = (char *)x->section;
    chunk.data.data = (uint8_t *)x->data.p;
    chunk.data.len = x->data.len;
    env.request_id = q->rid;
    env.body_case = TIDE__V1__ENVELOPE__BODY_EXPORT_CHUNK;
    env.export_chunk = &chunk;
    rc = query_push(q, &env);
    x->data.len = 0;
    x->flushed = 1;
    return rc;
}

/* Append one row (a line without its newline) to `section`. */
static int export_row(struct query_state *q, struct export_out *x,
                      const char *section, const char *line, size_t len)
{
    int rc = 0;

    if (x->section && strcmp(x->section, section))
        rc = export_flush(q, x);
    x->section = section;
    if (rc == 0 && x->data.len + len + 1 > q->srv->cfg.max_chunk_bytes)
        rc = export_flush(q, x);
    if (rc == 0)
        rc = ob_add(&x->data, line, len);
    if (rc == 0)
        rc = ob_add(&x->data, "\n", 1);
    x->rows += rc == 0;
    return rc;
}

/* `s` as a JSON string, or as a CSV field, into `b`. */
static int put_text(struct obuf *b, const char *s, size_t n, int csv)
{
    static const char hex[] = "0123456789abcdef";
    int quote = !csv, rc;

    /* `s` is not NUL-terminated: only its n bytes may be read. */
    for (size_t i = 0; !quote && i < n; i++)
        quote = s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n';
    rc = quote ? ob_add(b, "\"", 1) : 0;

    for (size_t i = 0; rc == 0 && i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (csv && c == '"') {
            rc = ob_add(b, "\"\"", 2);
        } else if (!csv && (c == '"' || c == '\\')) {
            char e[2] = {'\\', (char)c};

            rc = ob_add(b, e, 2);
        } else if (!csv && c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

            rc = ob_add(b, e, 6);
        } else {
            rc = ob_add(b, &s[i], 1);
        }
    }
    return rc == 0 && quote ? ob_add(b, "\"", 1) : rc;
}

/* One telemetry point as a JSON or CSV line into `b` (emptied first). */
static int telemetry_line(struct obuf *b, const struct qseries *sr,
                          const struct tide_block *blk, uint32_t i, int csv)
{
    char num[64];
    int rc;

    b->len = 0;
    rc = csv ? 0 : ob_add(b, "{\"device\":", 10);
    if (rc == 0)
        rc = put_text(b, sr->device, strlen(sr->device), csv);
    if (rc == 0)
        rc = ob_add(b, csv ? "," : ",\"field\":", csv ? 1 : 9);
    if (rc == 0)
        rc = put_text(b, sr->field, strlen(sr->field), csv);
    snprintf(num, sizeof(num),
             csv ? ",%" PRId64 "," : ",\"ts_ns\":%" PRId64 ",\"value\":",
             blk->ts_ns[i]);
    if (rc == 0)
        rc = ob_add(b, num, strlen(num));
    if (rc)
        return rc;
    switch (blk->type) {
    case TIDE_TYPE_F64:
        /* JSON has no NaN or infinities: those become strings. */
        if (isfinite(blk->v.f64[i]))
            snprintf(num, sizeof(num), "%.17g", blk->v.f64[i]);
        else
            snprintf(num, sizeof(num), csv ? "%s" : "\"%s\"",
                     isnan(blk->v.f64[i]) ? "NaN"
                     : blk->v.f64[i] > 0  ? "Infinity"
                                          : "-Infinity");
        rc = ob_add(b, num, strlen(num));
        break;
    case TIDE_TYPE_I64:
        snprintf(num, sizeof(num), "%" PRId64, blk->v.i64[i]);
        rc = ob_add(b, num, strlen(num));
        break;
    case TIDE_TYPE_BOOL:
        rc = ob_add(b, blk->v.b[i] ? "true" : "false", blk->v.b[i] ? 4 : 5);
        break;
    default:
        rc = put_text(b, blk->v.str[i].ptr, blk->v.str[i].len, csv);
        break;
    }
    return rc == 0 && !csv ? ob_add(b, "}", 1) : rc;
}

/* An export between steps: what it sent and where it stands. */
struct export_state {
    struct export_out x;
    struct obuf line;
    tide_meta_export *it; /* the sidecar's rows; NULL once they are out */
    int rows_done;
    struct tide_block blk; /* the telemetry block being returned */
    uint32_t blk_at;       /* its next point; blk.n when none is left */
};

void export_state_free(struct query_state *q)
{
    struct export_state *xs = q->xs;

    if (!xs)
        return;
    tide_meta_export_close(xs->it);
    EVP_MD_CTX_free(xs->x.sha);
    tide_free(xs->x.data.p);
    tide_free(xs->line.p);
    tide_free(xs);
    q->xs = NULL;
}

static int export_begin(struct query_state *q)
{
    struct export_state *xs = tide_calloc(1, sizeof(*xs));

    if (!xs)
        return -ENOMEM;
    q->xs = xs;
    xs->x.sha = EVP_MD_CTX_new();
    if (!xs->x.sha || EVP_DigestInit_ex(xs->x.sha, EVP_sha256(), NULL) != 1)
        return -ENOMEM;
    return tide_meta_export_open(q->srv->meta, &tided_system_principal,
                                 q->account_id, &xs->it);
}

/* One step: rows (the sidecar's, then telemetry points) until a chunk went
 * out. Returns 0 (call again), 1 (every row is out) or an error. */
static int export_step(struct query_state *q, struct export_state *xs)
{
    struct export_out *x = &xs->x;
    struct tide_meta_export_row row;
    int rc = 0;

    x->flushed = 0;
    while (rc == 0 && !xs->rows_done && !x->flushed) {
        rc = tide_meta_export_next(xs->it, &row);
        if (rc == 0)
            rc = export_row(q, x, row.table, row.json, row.json_len);
        if (rc == 1) {
            tide_meta_export_close(xs->it);
            xs->it = NULL;
            xs->rows_done = 1;
            rc = q->export_telemetry && q->export_csv
                     ? export_row(q, x, "telemetry", "device,field,ts_ns,value",
                                  24)
                     : 0;
        }
    }
    while (rc == 0 && q->it && !x->flushed) {
        if (xs->blk_at == xs->blk.n) {
            rc = tide_iter_next(q->it, &xs->blk);
            if (rc <= 0)
                return rc ? rc : 1;
            rc = 0;
            xs->blk_at = 0;
            while (q->cur < q->n_series &&
                   q->series[q->cur].id != xs->blk.series_id)
                q->cur++;
            if (q->cur == q->n_series)
                return TIDE_ECORRUPT; /* the iterator follows the id order */
        }
        for (; rc == 0 && xs->blk_at < xs->blk.n && !x->flushed; xs->blk_at++) {
            rc = telemetry_line(&xs->line, &q->series[q->cur], &xs->blk,
                                xs->blk_at, q->export_csv);
            if (rc == 0)
                rc = export_row(q, x, "telemetry", xs->line.p, xs->line.len);
        }
    }
    return rc ? rc : xs->rows_done && !q->it;
}

/* Every row of the account, then its telemetry (query thread), a step at
 * a time so that a slow client parks the export (query.c). The sections
 * are the sidecar's tables in its order (docs/protocol.md). */
int export_execute(struct query_state *q)
{
    struct export_state *xs;
    int rc = q->xs ? 0 : export_begin(q);

    xs = q->xs;
    while (rc == 0) {
        if (atomic_load(&q->cancelled))
            return QUERY_DONE;
        if (query_park(q))
            return QUERY_PARKED;
        rc = export_step(q, xs);
    }
    if (rc == 1)
        rc = export_flush(q, &xs->x);
    if (rc == 0) {
        Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
        Tide__V1__ExportEnd end = TIDE__V1__EXPORT_END__INIT;
        uint8_t digest[32];
        unsigned dlen = 0;

        EVP_DigestFinal_ex(xs->x.sha, digest, &dlen);
        end.rows = xs->x.rows;
        end.bytes = xs->x.bytes;
        end.sha256.data = digest;
        end.sha256.len = dlen;
        env.request_id = q->rid;
        env.body_case = TIDE__V1__ENVELOPE__BODY_EXPORT_END;
        env.export_end = &end;
        query_push(q, &env);
    } else if (rc != -ECANCELED) {
        query_fail(q, rc);
    }
    return QUERY_DONE;
}

void handle_export(struct conn *c, const Tide__V1__Envelope *env)
{
    const Tide__V1__ExportStart *r = env->export_start;
    struct server *s = c->srv;
    /* Naming another account is refused (0), never replaced. */
    uint64_t account = c->who.role == TIDE_META_ROLE_ADMIN ? r->account_id
                       : !r->account_id || r->account_id == c->who.account_id
                           ? c->who.account_id
                           : 0;
    Tide__V1__Query all = TIDE__V1__QUERY__INIT; /* every series */
    struct query_state *q;
    int64_t horizon;
    int rc =
        tide_meta_authorize(s->meta, &c->who, TIDE_META_ACT_EXPORT, account, 0);

    if (rc || !account || r->from_ns > r->to_ns) {
        conn_send_error(
            c, env->request_id,
            r->from_ns > r->to_ns
                ? TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT
                : TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED,
            r->from_ns > r->to_ns
                ? "from_ns > to_ns"
                : "this credential may not export the account",
            0);
        return;
    }
    q = query_new(c, env->request_id, account);
    if (!q)
        return;
    q->export = 1;
    q->export_csv = r->format == TIDE__V1__EXPORT_FORMAT__EXPORT_FORMAT_CSV;
    q->export_telemetry = r->include_telemetry;
    /* 0/0 is everything. */
    q->from_ns = r->from_ns || r->to_ns ? r->from_ns : INT64_MIN;
    q->to_ns = r->from_ns || r->to_ns ? r->to_ns : INT64_MAX;
    /* Nothing behind the account's retention horizon, as for queries. */
    rc = tided_retention_horizon(s, account, tided_now_ns(), &horizon);
    if (rc == 0)
        tided_retention_clamp(horizon, 0, &q->from_ns, q->to_ns);
    if (rc == 0 && q->export_telemetry) {
        rc = query_select(s, q, account, &all);
        if (rc == 0)
            rc = query_open_iterator(q);
    }
    if (rc) {
        conn_send_error(c, env->request_id, tide_wire_error(rc),
                        tide_strerror(rc), 0);
        query_free(q);
        return;
    }
    query_start(q);
}
