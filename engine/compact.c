/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The compaction thread (compact.h): routine passes every
 * compaction_interval_s, passes asked for by tide_db_compact and
 * tide_db_erase, the choice of jobs, pacing, and publication of a job's
 * result in the MANIFEST and the segment list.
 *
 * Jobs. Per shard, the segments of a tier fall in windows of the tier's
 * width (tide__compact_window_ns). A window's segments form one job when
 * there is more than one of them, one was written by a flush (level 0), or
 * the policy drops some of their points. A segment that straddles windows
 * (the tier's width changed) is a job of its own, split by window.
 *
 * Order. The segment list is ordered oldest first and a newer segment's
 * point wins a tie; the MANIFEST keeps that order. A job's outputs take
 * the place of its newest input. That is right as long as no other
 * segment between its oldest and newest input can hold the same points:
 * a segment of the same shard (or holding other shards' series) that
 * overlaps the window in time, i.e. one of another tier after a change of
 * plan, or a straddler. A job therefore ends before the first such
 * segment; the inputs after it make a job of a later pass.
 */
#include "compact.h"

#include <errno.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ts.h"
#include "window.h"

#define DAY_NS (86400ll * 1000000000ll)

struct comp_req {
    struct comp_req *next;
    uint64_t account; /* erase: its segments are rewritten; 0 = full pass */
    int heap;         /* freed by the thread: nobody waits */
    int done;
    int rc;
};

struct compactor {
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* the thread: work, or stop */
    pthread_cond_t done_cv; /* waiters: a pass ended */
    struct comp_req *queue;
    int stop;
    int64_t next_pass_ns; /* routine pass, CLOCK_REALTIME; 0 = none */
    /* Pacing of the current job. */
    int64_t pace_start_ns;
    uint64_t pace_bytes;

    atomic_uint_fast64_t runs;
    atomic_uint_fast64_t bytes_read;
    atomic_uint_fast64_t bytes_written;
    atomic_uint_fast64_t expired;
    atomic_uint_fast64_t erased;
    atomic_uint_fast64_t deduplicated;
    atomic_uint_fast64_t files_deleted;
    atomic_uint_fast64_t errors;
    atomic_int running;
};

static int64_t now_ns(clockid_t clk)
{
    struct timespec ts;

    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

int64_t tide__compact_window_ns(struct tide_db *db, uint16_t tier)
{
    int64_t part = db->o.partition_ns, w = 0;

    if (db->o.retention.window_ns)
        w = db->o.retention.window_ns(db->o.retention.ctx, tier);
    if (w <= 0 || w % part != 0 || w > 3660 * DAY_NS)
        return part;
    return w;
}

int64_t tide__compact_keep_from(struct tide_db *db, uint64_t account_id,
                                uint64_t series_id)
{
    /* A destroyed key: the account's points count as erased. */
    if (db->keys && account_id && tide__keys_destroyed(db->keys, account_id))
        return TIDE_KEEP_NONE;
    if (!db->o.retention.keep_from)
        return TIDE_KEEP_ALL;
    return db->o.retention.keep_from(db->o.retention.ctx, account_id,
                                     series_id);
}

/* ---- Pacing ------------------------------------------------------------- */

static int stopping(struct tide_db *db)
{
    return db->comp->stop || atomic_load(&db->closing);
}

/* Hold the job to compaction_mb_s: `bytes` more were moved. */
static int pace(struct tide_db *db, uint64_t bytes)
{
    struct compactor *c = db->comp;
    uint64_t rate = (uint64_t)db->o.compaction_mb_s << 20;
    int rc = 0;

    pthread_mutex_lock(&c->mu);
    c->pace_bytes += bytes;
    while (rate && !stopping(db)) {
        int64_t due = c->pace_start_ns +
                      (int64_t)((double)c->pace_bytes * 1e9 / (double)rate);
        int64_t now = now_ns(CLOCK_REALTIME), until;
        struct timespec ts;

        if (now >= due)
            break;
        until = due - now > 1000000000ll ? now + 1000000000ll : due;
        ts.tv_sec = until / 1000000000ll;
        ts.tv_nsec = until % 1000000000ll;
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
    if (stopping(db))
        rc = TIDE_ECLOSED;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ---- Publication --------------------------------------------------------- */

static int listed(struct seg *const *segs, uint32_t n, uint64_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (segs[i]->id == id)
            return 1;
    return 0;
}

/* Replace in[0..n) (list order) by out[0..n_out) in the MANIFEST and the
 * segment list, in the place of in[n - 1]. The inputs' files go when the
 * last reader lets go of them. */
static int publish(struct tide_db *db, struct seg *const *in, uint32_t n,
                   struct seg **out, uint32_t n_out)
{
    struct manifest *m = &db->man;
    struct man_seg *was, *next_segs;
    uint32_t was_n, k = 0;
    struct seglist *base, *next = NULL;
    struct tide_io *io;
    int rc, installed = 0;

    rc = tide__db_io_get(db, &io);
    if (rc)
        return rc;
    pthread_mutex_lock(&db->man_mu);
    was = m->segs;
    was_n = m->n_segs;
    next_segs = tide_malloc(((size_t)was_n + n_out + 1) * sizeof(*next_segs));
    if (!next_segs) {
        rc = -ENOMEM;
        goto unlock;
    }
    for (uint32_t i = 0; i < was_n; i++) {
        if (was[i].id == in[n - 1]->id)
            for (uint32_t j = 0; j < n_out; j++)
                next_segs[k++] = (struct man_seg){out[j]->id, out[j]->shard,
                                                  out[j]->tier, 1};
        if (!listed(in, n, was[i].id))
            next_segs[k++] = was[i];
    }
    TIDE_ASSERT(k == was_n - n + n_out); /* every input was listed */
    m->segs = next_segs;
    m->n_segs = k;
    rc = tide__manifest_store(db->dir, m, io, db->keys, &installed);
    if (rc && !installed) {
        m->segs = was;
        m->n_segs = was_n;
        tide_free(next_segs);
        goto unlock;
    }
    tide_free(was);
    if (rc) {
        /* Installed but maybe not durable: memory follows the disk, the
         * old files stay (either manifest may come back), writes stop. */
        tide__db_set_failed(db, rc, "MANIFEST directory sync", db->dir);
        atomic_store(&db->failed, TIDE_EIO);
    }
    tide__compact_step(TIDE__COMPACT_AT_MANIFEST);
    base = tide__seglist_acquire(db);
    if (tide__seglist_edit(db, base, in, n, out, n_out, in[n - 1], &next)) {
        /* The MANIFEST has the outputs; a reopen finds them. Until then
         * the old list keeps serving the same points. */
        tide__seglist_release(base);
        tide__db_set_failed(db, -ENOMEM, "publishing a compaction", NULL);
        atomic_store(&db->failed, TIDE_EIO);
        for (uint32_t j = 0; j < n_out; j++)
            tide__seg_close(out[j]);
        rc = rc ? rc : -ENOMEM;
        goto unlock;
    }
    tide__seglist_release(base);
    if (rc == 0)
        for (uint32_t i = 0; i < n; i++)
            in[i]->unlink_on_close = 1;
    tide__seglist_publish(db, next);
    pthread_mutex_unlock(&db->man_mu);
    tide__db_io_put(db, io);
    if (rc == 0)
        atomic_fetch_add(&db->comp->files_deleted, n);
    tide__compact_step(TIDE__COMPACT_AT_PUBLISHED);
    return rc;

unlock:
    pthread_mutex_unlock(&db->man_mu);
    tide__db_io_put(db, io);
    return rc;
}

/* ---- Jobs ---------------------------------------------------------------- */

/* What the policy does to the chunks of `seg`: *drops when it drops any
 * point, *keeps when it keeps any. */
static void policy_of(struct tide_db *db, const struct seg *seg, int *drops,
                      int *keeps)
{
    uint64_t id = 0;
    int64_t keep = TIDE_KEEP_ALL;

    for (uint32_t c = 0; c < seg->n_chunks && !(*drops && *keeps); c++) {
        const struct chunk_ent *e = &seg->chunks[c];

        if (c == 0 || e->series_id != id) {
            id = e->series_id;
            keep = tide__compact_keep_from(db, e->account_id, id);
        }
        if (keep != TIDE_KEEP_ALL && e->min_ts < keep)
            *drops = 1;
        if (keep == TIDE_KEEP_ALL ||
            (keep != TIDE_KEEP_NONE && e->max_ts >= keep))
            *keeps = 1;
    }
}

static int lists_account(const struct seg *seg, uint64_t account)
{
    for (uint32_t i = 0; account && i < seg->n_accounts; i++)
        if (seg->accounts[i] == account)
            return 1;
    return 0;
}

/* Run one job on in[0..n) (list order, one shard and tier). */
static int run_job(struct tide_db *db, struct seg **in, uint32_t n,
                   int64_t win_ns, int keeps)
{
    struct compactor *c = db->comp;
    struct compact_counts cnt = {0};
    struct seg **out = NULL;
    uint32_t n_out = 0;
    int rc = 0;

    pthread_mutex_lock(&c->mu);
    c->pace_start_ns = now_ns(CLOCK_REALTIME);
    c->pace_bytes = 0;
    pthread_mutex_unlock(&c->mu);
    if (keeps) {
        rc = tide__compact_rewrite(db, in, n, win_ns, pace, &cnt, &out, &n_out);
    } else {
        /* Wholly behind the horizon: deleted without being read. */
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t k = 0; k < in[i]->n_chunks; k++) {
                const struct chunk_ent *e = &in[i]->chunks[k];

                if (tide__compact_keep_from(db, e->account_id, e->series_id) ==
                    TIDE_KEEP_NONE)
                    cnt.points_erased += e->count;
                else
                    cnt.points_expired += e->count;
            }
    }
    if (rc == 0)
        rc = stopping(db) ? TIDE_ECLOSED : publish(db, in, n, out, n_out);
    if (rc && n_out) {
        for (uint32_t i = 0; i < n_out; i++) {
            unlink(out[i]->path);
            tide__seg_close(out[i]);
        }
    }
    tide_free(out);
    if (rc) {
        if (rc != TIDE_ECLOSED) {
            atomic_fetch_add(&c->errors, 1);
            tide__db_log(db, TIDE_LOG_ERROR,
                         "compaction of %u segments of shard %u failed: %s", n,
                         in[0]->shard, tide_strerror(rc));
        }
        return rc;
    }
    atomic_fetch_add(&c->runs, 1);
    atomic_fetch_add(&c->bytes_read, cnt.bytes_read);
    atomic_fetch_add(&c->bytes_written, cnt.bytes_written);
    atomic_fetch_add(&c->expired, cnt.points_expired);
    atomic_fetch_add(&c->erased, cnt.points_erased);
    atomic_fetch_add(&c->deduplicated, cnt.points_deduplicated);
    tide__db_log(db, TIDE_LOG_DEBUG,
                 "compacted %u segments of shard %u into %u: %llu bytes read, "
                 "%llu written, %llu points expired, %llu erased",
                 n, in[0]->shard, n_out, (unsigned long long)cnt.bytes_read,
                 (unsigned long long)cnt.bytes_written,
                 (unsigned long long)cnt.points_expired,
                 (unsigned long long)cnt.points_erased);
    return 0;
}

/* The window of `seg` under its tier's width: *lo, *hi, and whether it
 * lies inside that one window. */
static int window_of(struct tide_db *db, const struct seg *seg, int64_t *win,
                     int64_t *lo, int64_t *hi)
{
    int64_t w = tide__compact_window_ns(db, seg->tier);
    struct window k = {seg->tier, tide__floor_div(seg->min_ts, w)};

    *win = w;
    tide__window_bounds(k, w, lo, hi);
    return seg->max_ts < *hi;
}

/* Can `x` hold points of the series of `shard`'s segment `m`? */
static int may_share(const struct seg *x, const struct seg *m)
{
    return x->shard == m->shard || !x->shard_only || !m->shard_only;
}

/* The first of group[0..n) a routine pass merges: the newest segments
 * while each older one holds at most twice the points of those newer than
 * it (file sizes would mostly count block padding in small files),
 * so that a point is rewritten about log2(window / flush) times, not at
 * every pass (size-tiered, as LSM stores merge their small files). */
static uint32_t tiered_start(struct seg *const *group, uint32_t n)
{
    uint64_t acc = group[n - 1]->points;
    uint32_t k = n - 1;

    while (k > 0 && group[k - 1]->points <= 2 * acc)
        acc += group[--k]->points;
    return k;
}

/* One pass over `shard`: plan its jobs on the current list, run them.
 * `account` (or 0) forces the rewrite of every window holding it; `full`
 * merges every window whole, where a routine pass merges whole only the
 * windows that ended a day ago and, in the others, by size. */
static int pass_shard(struct tide_db *db, unsigned shard, uint64_t account,
                      int full)
{
    int64_t cold = now_ns(CLOCK_REALTIME) - DAY_NS;
    struct seglist *sl = tide__seglist_acquire(db);
    uint8_t *taken = tide_calloc((size_t)sl->n + 1, 1);
    struct seg **group = tide_calloc((size_t)sl->n + 1, sizeof(*group));
    int rc = 0;

    if (!taken || !group) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < sl->n && rc == 0; i++) {
        struct seg *first = sl->segs[i];
        int64_t win, lo, hi;
        uint32_t n = 0;
        int inside, drops = 0, keeps = 0, forced = 0, l0 = 0;

        if (taken[i] || first->shard != shard)
            continue;
        inside = window_of(db, first, &win, &lo, &hi);
        group[n++] = first;
        taken[i] = 1;
        for (uint32_t j = i + 1; inside && j < sl->n; j++) {
            struct seg *x = sl->segs[j];
            int64_t w2, lo2, hi2;

            if (!may_share(x, first) || x->min_ts >= hi || x->max_ts < lo)
                continue;
            if (taken[j] || x->shard != shard || x->tier != first->tier ||
                !window_of(db, x, &w2, &lo2, &hi2) || lo2 != lo)
                break; /* may hold the same points: the job ends here */
            group[n++] = x;
            taken[j] = 1;
        }
        for (uint32_t k = 0; k < n; k++) {
            policy_of(db, group[k], &drops, &keeps);
            forced |= lists_account(group[k], account);
        }
        if (!full && !forced && !drops && hi > cold) {
            uint32_t k = tiered_start(group, n);

            memmove(group, group + k, (n - k) * sizeof(*group));
            n -= k;
        }
        /* With encryption on, a plaintext segment is rewritten encrypted
         * like one a flush wrote, and one holding the ciphertext of a
         * destroyed key is rewritten without it. */
        for (uint32_t k = 0; k < n; k++)
            l0 |= group[k]->level == 0 || group[k]->shredded ||
                  (db->keys && !group[k]->encrypted);
        if (n == 1 && inside && !l0 && !drops && !forced)
            continue; /* compacted and nothing to drop */
        atomic_store(&db->comp->running, 1);
        rc = run_job(db, group, n, win, keeps);
        atomic_store(&db->comp->running, 0);
    }
out:
    tide_free(taken);
    tide_free(group);
    tide__seglist_release(sl);
    return rc;
}

/* A pass over every shard; `account` and `full` as in pass_shard. */
static int run_pass(struct tide_db *db, uint64_t account, int full)
{
    struct compactor *c = db->comp;
    uint64_t runs = atomic_load(&c->runs), rd = atomic_load(&c->bytes_read),
             wr = atomic_load(&c->bytes_written);
    int64_t t0 = now_ns(CLOCK_MONOTONIC);
    int rc = 0, first = 0;

    /* Heads to segments first: a full pass compacts everything written,
     * and an erasure needs the WAL files holding the account deleted. */
    if (!atomic_load(&db->failed))
        rc = tide_db_flush(db);
    for (unsigned s = 0; s < db->n_shards && !stopping(db); s++) {
        rc = pass_shard(db, s, account, full);
        if (rc && !first)
            first = rc;
    }
    if (stopping(db) && !first)
        first = TIDE_ECLOSED;
    if (atomic_load(&c->runs) != runs)
        tide__db_log(db, TIDE_LOG_INFO,
                     "compaction pass%s: %llu jobs, %llu bytes read, %llu "
                     "written, %.1f s",
                     account ? " (erasure)"
                     : full  ? " (full)"
                             : "",
                     (unsigned long long)(atomic_load(&c->runs) - runs),
                     (unsigned long long)(atomic_load(&c->bytes_read) - rd),
                     (unsigned long long)(atomic_load(&c->bytes_written) - wr),
                     (double)(now_ns(CLOCK_MONOTONIC) - t0) / 1e9);
    return first ? first : rc;
}

/* ---- The thread ---------------------------------------------------------- */

static void complete(struct compactor *c, struct comp_req *list, int rc)
{
    while (list) {
        struct comp_req *next = list->next;

        if (list->heap) {
            tide_free(list);
        } else {
            list->rc = rc;
            list->done = 1;
        }
        list = next;
    }
    pthread_cond_broadcast(&c->done_cv);
}

static void *compact_main(void *arg)
{
    struct tide_db *db = arg;
    struct compactor *c = db->comp;

    pthread_setname_np(pthread_self(), "tide-compact");
    /* Background work: the scheduler gives ingest and queries the CPU
     * first (Linux niceness is per thread). Failure only costs that. */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        struct comp_req *list = c->queue, *r;
        int64_t now = now_ns(CLOCK_REALTIME);
        int rc = 0;

        if (!list && (!c->next_pass_ns || now < c->next_pass_ns)) {
            if (c->next_pass_ns) {
                struct timespec ts = {c->next_pass_ns / 1000000000ll,
                                      c->next_pass_ns % 1000000000ll};

                pthread_cond_timedwait(&c->cv, &c->mu, &ts);
            } else {
                pthread_cond_wait(&c->cv, &c->mu);
            }
            continue;
        }
        c->queue = NULL;
        if (db->o.compaction_interval_s)
            c->next_pass_ns =
                now + (int64_t)db->o.compaction_interval_s * 1000000000ll;
        pthread_mutex_unlock(&c->mu);
        if (!list) {
            rc = run_pass(db, 0, 0); /* routine */
        } else {
            int full = 0;

            for (r = list; r; r = r->next)
                full |= r->account == 0;
            for (r = list; r && rc == 0; r = r->next)
                if (r->account)
                    rc = run_pass(db, r->account, 0);
            if (rc == 0 && full)
                rc = run_pass(db, 0, 1);
        }
        pthread_mutex_lock(&c->mu);
        complete(c, list, rc);
    }
    complete(c, c->queue, TIDE_ECLOSED);
    c->queue = NULL;
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int tide__compact_start(struct tide_db *db)
{
    struct compactor *c = tide_calloc(1, sizeof(*c));
    int rc;

    if (!c)
        return -ENOMEM;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    pthread_cond_init(&c->done_cv, NULL);
    if (db->o.compaction_interval_s)
        c->next_pass_ns = now_ns(CLOCK_REALTIME) +
                          (int64_t)db->o.compaction_interval_s * 1000000000ll;
    db->comp = c;
    rc = -pthread_create(&c->thread, NULL, compact_main, db);
    if (rc)
        return rc;
    c->started = 1;
    return 0;
}

void tide__compact_stop(struct tide_db *db)
{
    struct compactor *c = db->comp;

    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (c->started)
        pthread_join(c->thread, NULL);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    pthread_cond_destroy(&c->done_cv);
    tide_free(c);
    db->comp = NULL;
}

/* Queue a pass (account 0: full) and, with `wait`, wait for it. */
static int request(struct tide_db *db, uint64_t account, int wait)
{
    struct compactor *c = db->comp;
    struct comp_req local = {0}, *r = &local;
    int rc;

    if (atomic_load(&db->closing) || !c)
        return TIDE_ECLOSED;
    if (!wait) {
        r = tide_calloc(1, sizeof(*r));
        if (!r)
            return -ENOMEM;
        r->heap = 1;
    }
    r->account = account;
    pthread_mutex_lock(&c->mu);
    if (c->stop) {
        pthread_mutex_unlock(&c->mu);
        if (r->heap)
            tide_free(r);
        return TIDE_ECLOSED;
    }
    r->next = c->queue;
    c->queue = r;
    pthread_cond_broadcast(&c->cv);
    while (wait && !r->done)
        pthread_cond_wait(&c->done_cv, &c->mu);
    rc = wait ? r->rc : 0;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int tide_db_compact(tide_db *db, int wait)
{
    return request(db, 0, wait);
}

int tide_db_erase(tide_db *db, uint64_t account_id, int wait)
{
    if (!account_id)
        return TIDE_EINVAL;
    return request(db, account_id, wait);
}

int tide_db_shred(tide_db *db, uint64_t account_id, int wait)
{
    if (!account_id)
        return TIDE_EINVAL;
    if (db->keys)
        tide__keys_forget(db->keys, account_id);
    return tide_db_erase(db, account_id, wait);
}

void tide__compact_stats(struct tide_db *db, struct tide_db_stats *st)
{
    struct compactor *c = db->comp;
    struct seglist *sl;

    st->oldest_uncompacted_ns = INT64_MAX;
    if (!c)
        return;
    st->compactions = atomic_load(&c->runs);
    st->compact_bytes_read = atomic_load(&c->bytes_read);
    st->compact_bytes_written = atomic_load(&c->bytes_written);
    st->points_expired = atomic_load(&c->expired);
    st->points_erased = atomic_load(&c->erased);
    st->points_deduplicated = atomic_load(&c->deduplicated);
    st->segment_files_deleted = atomic_load(&c->files_deleted);
    st->compaction_errors = atomic_load(&c->errors);
    st->compaction_running = atomic_load(&c->running);
    pthread_mutex_lock(&c->mu);
    st->next_compaction_ns =
        c->queue ? now_ns(CLOCK_REALTIME) : c->next_pass_ns;
    pthread_mutex_unlock(&c->mu);
    sl = tide__seglist_acquire(db);
    for (uint32_t i = 0; i < sl->n; i++) {
        int64_t win, lo, hi;
        int inside = window_of(db, sl->segs[i], &win, &lo, &hi);

        if ((sl->segs[i]->level == 0 || !inside ||
             (db->keys && !sl->segs[i]->encrypted)) &&
            lo < st->oldest_uncompacted_ns)
            st->oldest_uncompacted_ns = lo;
    }
    tide__seglist_release(sl);
}
