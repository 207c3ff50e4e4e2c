/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Hot-path counters and logs: usage per account and day, key last-used
 * data, device last-seen times, buffered auth-log and request-log rows.
 * They collect in memory under a short mutex and are written every flush
 * interval (last-seen times every seen interval) and at close, in
 * transactions of at most TIDE__META_FLUSH_CHUNK rows with the sidecar
 * lock released between them, so a crash loses at most one interval of
 * them (docs/accounts.md, "Crash-loss window"). Also the readers of usage and
 * the auth log, and log retention (prune).
 */
#include "meta_int.h"

#include <errno.h>
#include <string.h>
#include <time.h>

/* ---- Pending tables ----------------------------------------------------- */

static void ptab_init(struct ptab *t, size_t vsize)
{
    memset(t, 0, sizeof(*t));
    t->vsize = vsize;
}

static void ptab_fini(struct ptab *t)
{
    tide_free(t->vals);
    tide_free(t->slots);
    ptab_init(t, t->vsize);
}

static uint32_t ptab_slot(const struct ptab *t, uint64_t a, uint64_t b)
{
    uint64_t h = (a * 0x9e3779b97f4a7c15ull) ^ (b * 0xc2b2ae3d27d4eb4full);

    return (uint32_t)(h ^ (h >> 29)) & (t->n_slots - 1);
}

/* The value whose key is (a, b), created zeroed if absent; NULL on
 * -ENOMEM. */
static void *ptab_get(struct ptab *t, uint64_t a, uint64_t b)
{
    uint32_t i;
    uint8_t *v;

    if (t->n_slots) {
        for (i = ptab_slot(t, a, b); t->slots[i];
             i = (i + 1) & (t->n_slots - 1)) {
            uint64_t *k = (uint64_t *)(t->vals + (t->slots[i] - 1) * t->vsize);

            if (k[0] == a && k[1] == b)
                return k;
        }
    }
    if (t->n == t->cap) {
        uint32_t cap = t->cap ? t->cap * 2 : 64;
        uint8_t *vals = tide_realloc(t->vals, (size_t)cap * t->vsize);
        uint32_t *slots;

        if (!vals)
            return NULL;
        t->vals = vals;
        slots = tide_calloc((size_t)cap * 2, sizeof(*slots));
        if (!slots)
            return NULL;
        tide_free(t->slots);
        t->slots = slots;
        t->n_slots = cap * 2;
        t->cap = cap;
        for (uint32_t j = 0; j < t->n; j++) {
            uint64_t *k = (uint64_t *)(t->vals + (size_t)j * t->vsize);

            for (i = ptab_slot(t, k[0], k[1]); t->slots[i];
                 i = (i + 1) & (t->n_slots - 1))
                ;
            t->slots[i] = j + 1;
        }
    }
    for (i = ptab_slot(t, a, b); t->slots[i]; i = (i + 1) & (t->n_slots - 1))
        ;
    v = t->vals + (size_t)t->n * t->vsize;
    memset(v, 0, t->vsize);
    ((uint64_t *)v)[0] = a;
    ((uint64_t *)v)[1] = b;
    t->slots[i] = ++t->n;
    return v;
}

/* The i-th value, in insertion order. */
static const void *ptab_at(const struct ptab *t, uint32_t i)
{
    return t->vals + (size_t)i * t->vsize;
}

int tide__meta_pending_init(struct pending *p)
{
    memset(p, 0, sizeof(*p));
    ptab_init(&p->usage, sizeof(struct usage_ent));
    ptab_init(&p->keyuse, sizeof(struct keyuse_ent));
    ptab_init(&p->seen, sizeof(struct seen_ent));
    return 0;
}

void tide__meta_pending_fini(struct pending *p)
{
    ptab_fini(&p->usage);
    ptab_fini(&p->keyuse);
    ptab_fini(&p->seen);
    tide__buf_fini(&p->authlog);
    tide__buf_fini(&p->requests);
}

static void usage_merge(struct pending *p, uint64_t account_id, int64_t day,
                        const struct tide_meta_usage *u, int *rc)
{
    struct usage_ent *e = ptab_get(&p->usage, account_id, (uint64_t)day);

    if (!e) {
        *rc = -ENOMEM;
        return;
    }
    e->u.day = day;
    e->u.messages += u->messages;
    e->u.points += u->points;
    e->u.bytes_in += u->bytes_in;
    e->u.bytes_out += u->bytes_out;
    e->u.queries += u->queries;
}

static void keyuse_merge(struct pending *p, const struct keyuse_ent *k)
{
    struct keyuse_ent *e = ptab_get(&p->keyuse, k->key_id, 0);

    if (!e)
        return;
    if (k->last_ns >= e->last_ns) {
        e->last_ns = k->last_ns;
        memcpy(e->ip, k->ip, sizeof(e->ip));
    }
    e->requests += k->requests;
}

static void seen_merge(struct pending *p, uint64_t device_id, int64_t ns)
{
    struct seen_ent *e = ptab_get(&p->seen, device_id, 0);

    if (e && ns > e->last_ns)
        e->last_ns = ns;
}

static void buf_push(struct tide_buf *b, const void *v, size_t size)
{
    /* Bounded: past the cap rows are dropped rather than memory grown
     * without limit while the database is failing. */
    if (b->len / size < TIDE__META_PENDING_MAX)
        tide__buf_append(b, v, size);
}

/* ---- Hot-path entry points ---------------------------------------------- */

int tide_meta_usage_add(tide_meta *m, uint64_t account_id,
                        const struct tide_meta_usage *u)
{
    int64_t day = tide__meta_now(m) / TIDE__META_DAY_NS;
    int rc = 0;

    if (!u || !account_id)
        return TIDE_EINVAL;
    pthread_mutex_lock(&m->plock);
    usage_merge(&m->pend, account_id, day, u, &rc);
    pthread_mutex_unlock(&m->plock);
    return rc;
}

void tide_meta_device_seen(tide_meta *m, uint64_t device_id)
{
    int64_t now = tide__meta_now(m);

    pthread_mutex_lock(&m->plock);
    seen_merge(&m->pend, device_id, now);
    pthread_mutex_unlock(&m->plock);
}

void tide__meta_keyuse_note(tide_meta *m, uint64_t key_id, int64_t now_ns,
                            const char *ip)
{
    struct keyuse_ent k;

    memset(&k, 0, sizeof(k));
    k.key_id = key_id;
    k.last_ns = now_ns;
    k.requests = 1;
    if (ip)
        snprintf(k.ip, sizeof(k.ip), "%s", ip);
    pthread_mutex_lock(&m->plock);
    keyuse_merge(&m->pend, &k);
    pthread_mutex_unlock(&m->plock);
}

void tide__meta_authlog_buffer(tide_meta *m, const struct authlog_ent *e)
{
    pthread_mutex_lock(&m->plock);
    buf_push(&m->pend.authlog, e, sizeof(*e));
    pthread_mutex_unlock(&m->plock);
}

int tide_meta_request_log(tide_meta *m, const struct tide_meta_request *r)
{
    struct request_ent e;

    if (!r || !r->op || tide__meta_text_ok(r->op, sizeof(e.op) - 1, 0) ||
        tide__meta_ip_ok(r->ip) || r->bytes_in > INT64_MAX ||
        r->bytes_out > INT64_MAX)
        return TIDE_EINVAL;
    memset(&e, 0, sizeof(e));
    e.ts_ns = tide__meta_now(m);
    e.account_id = r->account_id;
    e.key_id = r->key_id;
    e.bytes_in = r->bytes_in;
    e.bytes_out = r->bytes_out;
    e.status = r->status;
    snprintf(e.op, sizeof(e.op), "%s", r->op);
    if (r->ip)
        snprintf(e.ip, sizeof(e.ip), "%s", r->ip);
    pthread_mutex_lock(&m->plock);
    buf_push(&m->pend.requests, &e, sizeof(e));
    pthread_mutex_unlock(&m->plock);
    return 0;
}

/* ---- Flush -------------------------------------------------------------- */

static const char SQL_USAGE_UPSERT[] =
    "INSERT INTO usage_daily(account_id, day, messages, points, bytes_in,"
    " bytes_out, queries) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    " ON CONFLICT(account_id, day) DO UPDATE SET"
    " messages=messages+excluded.messages, points=points+excluded.points,"
    " bytes_in=bytes_in+excluded.bytes_in,"
    " bytes_out=bytes_out+excluded.bytes_out,"
    " queries=queries+excluded.queries";
static const char SQL_USAGE_QUOTA[] =
    "SELECT u.points, t.daily_points_max FROM usage_daily u"
    " JOIN accounts a ON a.id=u.account_id JOIN tiers t ON t.id=a.tier"
    " WHERE u.account_id=?1 AND u.day=?2";
/* tide_enc seals the IPs when encryption is on (crypt.c). */
static const char SQL_KEYUSE[] =
    "UPDATE api_keys SET last_used_ns=max(last_used_ns, ?2),"
    " last_ip=tide_enc(?3, 'api_keys.last_ip', coalesce(account_id, 0)),"
    " requests=requests+?4 WHERE id=?1";
static const char SQL_SEEN[] =
    "UPDATE devices SET last_seen_ns=max(last_seen_ns, ?2) WHERE id=?1";
static const char SQL_AUTHLOG[] =
    "INSERT INTO auth_log(ts_ns, account_id, key_id, kind, ok, reason, ip,"
    " ip_hmac) VALUES(?1, ?2, ?3, ?4, ?5, ?6, tide_enc(?7, 'auth_log.ip', ?2),"
    " tide_mac('ip', ?2, ?7))";
static const char SQL_REQUEST[] =
    "INSERT INTO request_log(ts_ns, account_id, key_id, ip, op, bytes_in,"
    " bytes_out, status) VALUES(?1, ?2, ?3, tide_enc(?4, 'request_log.ip', ?2),"
    " ?5, ?6, ?7, ?8)";

int tide__meta_authlog_write(tide_meta *m, const struct authlog_ent *e)
{
    return tide__meta_run(m, SQL_AUTHLOG,
                          META_ARGS(META_INT(e->ts_ns), META_INT(e->account_id),
                                    META_INT(e->key_id), META_INT(e->kind),
                                    META_INT(e->ok), META_TEXT(e->reason),
                                    META_TEXT(e->ip)));
}

/* A usage warning when today's points crossed 80 % of the daily quota in
 * this flush. */
static int usage_warn(tide_meta *m, const struct usage_ent *e)
{
    int64_t q[2] = {0, 0}; /* today's points, daily_points_max */
    uint64_t now_pts, max;
    char text[128];
    int rc;

    rc = tide__meta_ints(m, SQL_USAGE_QUOTA, q, 2,
                         META_ARGS(META_INT(e->account_id), META_INT(e->day)));
    if (rc && rc != TIDE_ENOTFOUND)
        return rc;
    now_pts = (uint64_t)q[0];
    max = (uint64_t)q[1];
    if (max == 0 || now_pts * 5 < max * 4 ||
        (now_pts - e->u.points) * 5 >= max * 4)
        return 0;
    snprintf(text, sizeof(text),
             "usage at %llu of %llu daily points (80%% reached)",
             (unsigned long long)now_pts, (unsigned long long)max);
    return tide__meta_notify_add(m, e->account_id, TIDE_META_NOTIFY_USAGE,
                                 text);
}

/* The rows of a swapped-out `struct pending`, numbered in one order:
 * usage, key use, last seen, auth log, request log. A flush writes them in
 * chunks of this order and, on failure, gives back those from a row on. */
static size_t n_authlog(const struct pending *p)
{
    return p->authlog.len / sizeof(struct authlog_ent);
}

static size_t n_requests(const struct pending *p)
{
    return p->requests.len / sizeof(struct request_ent);
}

static size_t pending_rows(const struct pending *p)
{
    return (size_t)p->usage.n + p->keyuse.n + p->seen.n + n_authlog(p) +
           n_requests(p);
}

/* Write row `i` of `p` (m->lock held, inside a transaction). */
static int write_row(tide_meta *m, const struct pending *p, size_t i)
{
    int rc;

    if (i < p->usage.n) {
        const struct usage_ent *e = ptab_at(&p->usage, (uint32_t)i);

        rc = tide__meta_run(
            m, SQL_USAGE_UPSERT,
            META_ARGS(META_INT(e->account_id), META_INT(e->day),
                      META_INT(e->u.messages), META_INT(e->u.points),
                      META_INT(e->u.bytes_in), META_INT(e->u.bytes_out),
                      META_INT(e->u.queries)));
        return rc ? rc : usage_warn(m, e);
    }
    i -= p->usage.n;
    if (i < p->keyuse.n) {
        const struct keyuse_ent *e = ptab_at(&p->keyuse, (uint32_t)i);

        return tide__meta_run(m, SQL_KEYUSE,
                              META_ARGS(META_INT(e->key_id),
                                        META_INT(e->last_ns), META_TEXT(e->ip),
                                        META_INT(e->requests)));
    }
    i -= p->keyuse.n;
    if (i < p->seen.n) {
        const struct seen_ent *e = ptab_at(&p->seen, (uint32_t)i);

        return tide__meta_run(
            m, SQL_SEEN,
            META_ARGS(META_INT(e->device_id), META_INT(e->last_ns)));
    }
    i -= p->seen.n;
    if (i < n_authlog(p))
        return tide__meta_authlog_write(
            m, (const struct authlog_ent *)p->authlog.data + i);
    i -= n_authlog(p);
    {
        const struct request_ent *e =
            (const struct request_ent *)p->requests.data + i;

        return tide__meta_run(
            m, SQL_REQUEST,
            META_ARGS(META_INT(e->ts_ns), META_INT(e->account_id),
                      META_INT(e->key_id), META_TEXT(e->ip), META_TEXT(e->op),
                      META_INT(e->bytes_in), META_INT(e->bytes_out),
                      META_INT(e->status)));
    }
}

/* Put row `i` of `p` back into the live tables (plock held). */
static void merge_row(tide_meta *m, const struct pending *p, size_t i)
{
    int rc = 0;

    if (i < p->usage.n) {
        const struct usage_ent *e = ptab_at(&p->usage, (uint32_t)i);

        usage_merge(&m->pend, e->account_id, e->day, &e->u, &rc);
        return;
    }
    i -= p->usage.n;
    if (i < p->keyuse.n) {
        keyuse_merge(&m->pend, ptab_at(&p->keyuse, (uint32_t)i));
        return;
    }
    i -= p->keyuse.n;
    if (i < p->seen.n) {
        const struct seen_ent *e = ptab_at(&p->seen, (uint32_t)i);

        seen_merge(&m->pend, e->device_id, e->last_ns);
        return;
    }
    i -= p->seen.n;
    if (i < n_authlog(p)) {
        buf_push(&m->pend.authlog,
                 (const struct authlog_ent *)p->authlog.data + i,
                 sizeof(struct authlog_ent));
        return;
    }
    i -= n_authlog(p);
    buf_push(&m->pend.requests,
             (const struct request_ent *)p->requests.data + i,
             sizeof(struct request_ent));
}

/* Put the rows of a failed flush from row `from` on back, merged with what
 * arrived meanwhile, so the next flush retries them. Rows before `from`
 * were committed and are not given back: nothing is counted twice. */
static void merge_back(tide_meta *m, const struct pending *p, size_t from)
{
    size_t n = pending_rows(p);

    pthread_mutex_lock(&m->plock);
    for (size_t i = from; i < n; i++)
        merge_row(m, p, i);
    pthread_mutex_unlock(&m->plock);
}

/* Let a thread that waits for m->lock in before the next chunk: a
 * mutex unlocked and at once locked again by the same thread is rarely
 * handed over. A sleep this short costs ~100 chunks x 50 us on a flush of
 * 100,000 rows. */
static void let_others_in(void)
{
    struct timespec ts = {0, 50000};

    nanosleep(&ts, NULL);
}

/* Write what is pending; last-seen times only if `with_seen`, else they
 * stay pending. */
static int flush_pending(tide_meta *m, int with_seen)
{
    struct pending snap;
    size_t n, done = 0;
    int rc = 0;

    /* Swap the pending tables for empty ones: the hot path waits only for
     * this, never for SQLite. Readers (tide__meta_authorize_flush) wait
     * for a flush already running: usage reads, rare, see every add made
     * before them. */
    pthread_mutex_lock(&m->flush_mu);
    pthread_mutex_lock(&m->plock);
    snap = m->pend;
    tide__meta_pending_init(&m->pend);
    if (!with_seen) {
        m->pend.seen = snap.seen;
        ptab_init(&snap.seen, sizeof(struct seen_ent));
    }
    pthread_mutex_unlock(&m->plock);
    n = pending_rows(&snap);
    /* One transaction per chunk of TIDE__META_FLUSH_CHUNK rows, the lock
     * released between them: 100,000 "last seen" rows in one transaction
     * held the sidecar, and with it every event-loop call into it, for
     * ~300 ms. A row is in exactly one committed chunk; a crash between
     * chunks loses only rows not yet committed, as before. */
    while (done < n && !rc) {
        size_t end = n - done > TIDE__META_FLUSH_CHUNK
                         ? done + TIDE__META_FLUSH_CHUNK
                         : n;

        if (done)
            let_others_in();
        tide__meta_lock(m);
        rc = tide__meta_begin(m);
        if (!rc) {
            for (size_t i = done; !rc && i < end; i++)
                rc = write_row(m, &snap, i);
            rc = tide__meta_end(m, rc);
        }
        tide__meta_unlock(m);
        if (!rc)
            done = end;
    }
    if (rc)
        merge_back(m, &snap, done);
    tide__meta_pending_fini(&snap);
    pthread_mutex_unlock(&m->flush_mu);
    return rc;
}

int tide_meta_flush(tide_meta *m)
{
    return flush_pending(m, 1);
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *flusher_main(void *arg)
{
    tide_meta *m = arg;
    struct timespec ts;
    int64_t seen_due = mono_ms() + m->o.seen_interval_ms;
    int with_seen;

    pthread_mutex_lock(&m->flock);
    while (!m->stopping) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += m->o.flush_interval_ms / 1000;
        ts.tv_nsec += (long)(m->o.flush_interval_ms % 1000) * 1000000l;
        if (ts.tv_nsec >= 1000000000l) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000l;
        }
        pthread_cond_timedwait(&m->fcond, &m->flock, &ts);
        if (m->stopping)
            break;
        pthread_mutex_unlock(&m->flock);
        /* A failed flush keeps its counters for the next attempt. Last-seen
         * times, one row per device, are written every seen_interval_ms:
         * at 100,000 devices each interval's rows cost a third of a core
         * second. Readers of them flush first, so they see exact times. */
        with_seen = mono_ms() >= seen_due;
        if (flush_pending(m, with_seen) == 0 && with_seen)
            seen_due = mono_ms() + m->o.seen_interval_ms;
        pthread_mutex_lock(&m->flock);
    }
    pthread_mutex_unlock(&m->flock);
    return NULL;
}

int tide__meta_flusher_start(tide_meta *m)
{
    pthread_condattr_t ca;
    int err;

    if (m->o.flush_interval_ms == 0)
        return 0;
    /* The condition variable waits on CLOCK_MONOTONIC so a clock step does
     * not stall or rush the flusher. */
    pthread_cond_destroy(&m->fcond);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->fcond, &ca);
    pthread_condattr_destroy(&ca);
    err = pthread_create(&m->flusher, NULL, flusher_main, m);
    if (err)
        return -err;
    m->flusher_running = 1;
    return 0;
}

void tide__meta_flusher_stop(tide_meta *m)
{
    if (!m->flusher_running)
        return;
    pthread_mutex_lock(&m->flock);
    m->stopping = 1;
    pthread_cond_signal(&m->fcond);
    pthread_mutex_unlock(&m->flock);
    pthread_join(m->flusher, NULL);
    m->flusher_running = 0;
}

/* ---- Readers ------------------------------------------------------------ */

static const char SQL_USAGE_READ[] =
    "SELECT day, messages, points, bytes_in, bytes_out, queries"
    " FROM usage_daily WHERE account_id=?1 AND day BETWEEN ?2 AND ?3"
    " ORDER BY day LIMIT ?4";

static void usage_row(sqlite3_stmt *st, void *arg)
{
    struct tide_meta_usage *u = arg;

    u->day = sqlite3_column_int64(st, 0);
    u->messages = (uint64_t)sqlite3_column_int64(st, 1);
    u->points = (uint64_t)sqlite3_column_int64(st, 2);
    u->bytes_in = (uint64_t)sqlite3_column_int64(st, 3);
    u->bytes_out = (uint64_t)sqlite3_column_int64(st, 4);
    u->queries = (uint64_t)sqlite3_column_int64(st, 5);
}

int tide_meta_usage_read(tide_meta *m, const struct tide_meta_principal *p,
                         uint64_t account_id, int64_t day_from, int64_t day_to,
                         struct tide_meta_usage *out, size_t cap, size_t *n_out)
{
    if (day_from > day_to)
        return TIDE_EINVAL;
    return tide__meta_read(m, p, TIDE_META_ACT_USAGE_READ, account_id,
                           SQL_USAGE_READ, usage_row, out, sizeof(*out), cap,
                           n_out,
                           META_ARGS(META_INT(account_id), META_INT(day_from),
                                     META_INT(day_to), META_INT(cap)));
}

static const char SQL_AUTHLOG_READ[] =
    "SELECT id, ts_ns, account_id, key_id, kind, ok, reason,"
    " tide_dec(ip, 'auth_log.ip', account_id) FROM auth_log"
    " WHERE account_id=?1 AND id<?2 ORDER BY id DESC LIMIT ?3";

static void auth_event_row(sqlite3_stmt *st, void *arg)
{
    struct tide_meta_auth_event *e = arg;

    memset(e, 0, sizeof(*e));
    e->id = (uint64_t)sqlite3_column_int64(st, 0);
    e->ts_ns = sqlite3_column_int64(st, 1);
    e->account_id = (uint64_t)sqlite3_column_int64(st, 2);
    e->key_id = (uint64_t)sqlite3_column_int64(st, 3);
    e->kind = (enum tide_meta_auth_kind)sqlite3_column_int(st, 4);
    e->ok = sqlite3_column_int(st, 5);
    tide__meta_col_text(st, 6, e->reason, sizeof(e->reason));
    tide__meta_col_text(st, 7, e->ip, sizeof(e->ip));
}

int tide_meta_authlog_read(tide_meta *m, const struct tide_meta_principal *p,
                           uint64_t account_id, uint64_t before_id,
                           struct tide_meta_auth_event *out, size_t cap,
                           size_t *n_out)
{
    return tide__meta_read(
        m, p, TIDE_META_ACT_AUTHLOG_READ, account_id, SQL_AUTHLOG_READ,
        auth_event_row, out, sizeof(*out), cap, n_out,
        META_ARGS(META_INT(account_id),
                  META_INT(before_id ? (int64_t)before_id : INT64_MAX),
                  META_INT(cap)));
}

/* ---- Retention ---------------------------------------------------------- */

static const char SQL_PRUNE_AUTH[] = "DELETE FROM auth_log WHERE ts_ns<?1";
static const char SQL_FOLD[] =
    "INSERT INTO request_daily(account_id, day, op, requests, errors,"
    " bytes_in, bytes_out)"
    " SELECT account_id, ts_ns/86400000000000, op, count(*),"
    " sum(status<>0), sum(bytes_in), sum(bytes_out) FROM request_log"
    " WHERE ts_ns<?1 GROUP BY 1, 2, 3"
    " ON CONFLICT(account_id, day, op) DO UPDATE SET"
    " requests=requests+excluded.requests, errors=errors+excluded.errors,"
    " bytes_in=bytes_in+excluded.bytes_in,"
    " bytes_out=bytes_out+excluded.bytes_out";
static const char SQL_PRUNE_REQ[] = "DELETE FROM request_log WHERE ts_ns<?1";
static const char SQL_PRUNE_SESS[] =
    "DELETE FROM sessions WHERE expires_ns<=?1 OR ended=1";
static const char SQL_PURGE_DUE[] =
    "SELECT id, account_id FROM tombstones WHERE kind='account'"
    " AND purged_ns IS NULL AND purge_after_ns<=?1 LIMIT 1";
static const char SQL_PURGED[] =
    "UPDATE tombstones SET purged_ns=?2 WHERE id=?1";

/* Every table holding rows of an account; the account row goes last. */
static const char *const purge_sql[] = {
    "DELETE FROM api_keys WHERE account_id=?1",
    "DELETE FROM sessions WHERE account_id=?1",
    "DELETE FROM devices WHERE account_id=?1",
    "DELETE FROM series WHERE account_id=?1",
    /* The purged tombstone covers them: every series of the account. */
    "DELETE FROM erased_series WHERE account_id=?1",
    "DELETE FROM usage_daily WHERE account_id=?1",
    "DELETE FROM auth_log WHERE account_id=?1",
    "DELETE FROM request_log WHERE account_id=?1",
    "DELETE FROM request_daily WHERE account_id=?1",
    "DELETE FROM notifications WHERE account_id=?1",
    "DELETE FROM account_counts WHERE account_id=?1",
    /* Destroyed already in its own transaction (tide__meta_key_destroy);
     * here for a key made after that, which cannot happen, and so that
     * this list stays every table holding rows of the account. */
    "DELETE FROM data_keys WHERE account_id=?1",
    "DELETE FROM accounts WHERE id=?1",
};

static int run_ts(tide_meta *m, const char *sql, int64_t v, uint64_t *changes)
{
    int rc = tide__meta_run(m, sql, META_ARGS(META_INT(v)));

    if (!rc && changes)
        *changes += (uint64_t)sqlite3_changes(m->db);
    return rc;
}

/* Remove every row of account `acct` and mark its tombstone `tomb` purged
 * at `now`. Inside the caller's transaction. */
static int purge_one(tide_meta *m, uint64_t tomb, uint64_t acct, int64_t now)
{
    int rc;

    for (size_t i = 0; i < sizeof(purge_sql) / sizeof(purge_sql[0]); i++) {
        rc = run_ts(m, purge_sql[i], (int64_t)acct, NULL);
        if (rc)
            return rc;
    }
    rc =
        tide__meta_run(m, SQL_PURGED, META_ARGS(META_INT(tomb), META_INT(now)));
    tide__meta_changed(m, rc, acct, 0);
    return rc;
}

static int purge_accounts(tide_meta *m, int64_t now, uint64_t *n)
{
    int rc;

    /* Bounded: at most one pass per tombstone row. */
    for (;;) {
        int64_t due[2]; /* tombstone id, account id */

        rc =
            tide__meta_ints(m, SQL_PURGE_DUE, due, 2, META_ARGS(META_INT(now)));
        if (rc)
            return rc == TIDE_ENOTFOUND ? 0 : rc;
        rc = purge_one(m, (uint64_t)due[0], (uint64_t)due[1], now);
        if (rc)
            return rc;
        (*n)++;
    }
}

/* Crypto-shredding comes first: the data keys of the accounts due are
 * destroyed, each in its own committed transaction, before the
 * transaction that deletes their rows. */
static const char SQL_SHRED_DUE[] =
    "SELECT object_id FROM tombstones WHERE kind='account'"
    " AND purged_ns IS NULL AND purge_after_ns<=?1"
    " AND key_destroyed_ns IS NULL LIMIT 1";

static int shred_due(tide_meta *m, int64_t now)
{
    int rc = 0;

    /* Bounded: each pass marks one tombstone key_destroyed_ns. */
    while (m->crypt && !rc) {
        int64_t acct;

        rc = tide__meta_ints(m, SQL_SHRED_DUE, &acct, 1,
                             META_ARGS(META_INT(now)));
        if (rc)
            return rc == TIDE_ENOTFOUND ? 0 : rc;
        rc = tide__meta_key_destroy(m, (uint64_t)acct);
    }
    return rc;
}

static const char SQL_PURGE_PENDING[] =
    "SELECT id FROM tombstones WHERE kind='account' AND object_id=?1"
    " AND purged_ns IS NULL";

int tide_meta_account_purge(tide_meta *m, const struct tide_meta_principal *p,
                            uint64_t id)
{
    int64_t tomb;
    int rc;

    /* Flushed first: no pending counter outlives the rows. */
    rc = tide__meta_authorize_flush(m, p, TIDE_META_ACT_OPERATOR, 0, 0);
    if (rc)
        return rc;
    tide__meta_lock(m);
    rc = tide__meta_ints(m, SQL_PURGE_PENDING, &tomb, 1,
                         META_ARGS(META_INT(id)));
    if (!rc && m->crypt)
        rc = tide__meta_key_destroy(m, id);
    if (!rc)
        rc = tide__meta_begin(m);
    if (rc)
        goto out;
    rc = tide__meta_ints(m, SQL_PURGE_PENDING, &tomb, 1,
                         META_ARGS(META_INT(id)));
    if (!rc)
        rc = purge_one(m, (uint64_t)tomb, id, tide__meta_now(m));
    rc = tide__meta_end(m, rc);
    if (!rc)
        tide__meta_wal_scrub(m);
out:
    tide__meta_unlock(m);
    return rc;
}

int tide_meta_prune(tide_meta *m, const struct tide_meta_principal *p,
                    struct tide_meta_prune_stats *stp)
{
    struct tide_meta_prune_stats st;
    int64_t now;
    int rc;

    memset(&st, 0, sizeof(st));
    rc = tide__meta_authorize_flush(m, p, TIDE_META_ACT_OPERATOR, 0, 0);
    if (rc)
        return rc;
    tide__meta_lock(m);
    now = tide__meta_now(m);
    rc = shred_due(m, now);
    if (!rc)
        rc = tide__meta_begin(m);
    if (rc)
        goto out;
    rc = run_ts(m, SQL_PRUNE_AUTH, now - TIDE__META_AUTHLOG_KEEP_NS,
                &st.auth_rows);
    if (!rc)
        rc = run_ts(m, SQL_FOLD, now - TIDE__META_REQLOG_KEEP_NS, NULL);
    if (!rc)
        rc = run_ts(m, SQL_PRUNE_REQ, now - TIDE__META_REQLOG_KEEP_NS,
                    &st.request_rows);
    if (!rc)
        rc = run_ts(m, SQL_PRUNE_SESS, now, &st.sessions);
    if (!rc)
        rc = purge_accounts(m, now, &st.accounts);
    rc = tide__meta_end(m, rc);
    if (!rc && st.accounts)
        tide__meta_wal_scrub(m);
    if (!rc && stp)
        *stp = st;
out:
    tide__meta_unlock(m);
    return rc;
}
