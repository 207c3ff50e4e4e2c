/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tided: the Tide server. Parses flags and the config file, opens the data
 * directory (engine + accounts sidecar), listens, and runs the event loop
 * until SIGTERM/SIGINT; then it stops accepting, finishes the writes in
 * flight, flushes, fsyncs and exits 0. docs/operations.md describes it.
 */
#include <errno.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "server.h"
#include "tide/crypto.h"

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: tided [--config FILE] [--data-dir DIR] [--listen HOST:PORT]\n"
        "             [--http-listen HOST:PORT] [--set KEY=VALUE]...\n"
        "             [--allow-open-data-dir] [--version] [--help]\n"
        "Defaults: --data-dir ./tide-data --listen 127.0.0.1:8433\n"
        "--http-listen 127.0.0.1:8434. Port 0 picks a free port. Keys for\n"
        "--set and the config file are listed in docs/operations.md.\n");
}

/* --allow-open-data-dir: serve a data directory others may read. */
static int allow_open_data_dir;

/* TIDED_TEST_ALLOC_FAIL_NTH=request_id: tests only (docs/operations.md). */
static int test_alloc_fail;

void tided_test_alloc_arm(unsigned long nth)
{
    if (test_alloc_fail)
        tide_alloc_fail_nth(nth);
}

unsigned long tided_test_alloc_take(void)
{
    return test_alloc_fail ? tide_alloc_fail_nth(0) : 0;
}

/* Monotonic milliseconds. */
static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The maintenance thread. Every flush_interval_ms it writes the in-memory
 * head into segments, so that recovery replays little WAL, memory stays
 * low on a quiet server, and queries read chunk headers instead of
 * scanning the head. Every prune_interval_s it applies the sidecar's log
 * retention and purges accounts past their deletion grace period
 * (tide_meta_prune). When poked (tided_retention_poke: a purge, a device
 * deletion) and after each prune it refreshes the compaction policy and
 * schedules the erasures it found (tided_retention_maintain). All of it
 * blocks, hence a thread of its own.
 */
static void *maint_main(void *arg)
{
    struct server *s = arg;
    int64_t flush_ms = s->cfg.flush_interval_ms;
    int64_t prune_ms = (int64_t)s->cfg.prune_interval_s * 1000;
    int64_t next_flush = flush_ms ? mono_ms() + flush_ms : INT64_MAX;
    int64_t next_prune = prune_ms ? mono_ms() + prune_ms : INT64_MAX;

    pthread_mutex_lock(&s->flush_lock);
    while (!s->flush_stop) {
        int64_t now = mono_ms(),
                wake = next_flush < next_prune ? next_flush : next_prune;
        struct timespec until;
        struct tide_db_stats st;
        struct tide_meta_prune_stats ps;
        int rc;

        if (now < wake && !s->maint_poke) {
            /* The condition variable waits on CLOCK_REALTIME. */
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += (wake - now) / 1000;
            until.tv_nsec += (long)((wake - now) % 1000) * 1000000;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&s->flush_cv, &s->flush_lock, &until);
            continue;
        }
        s->maint_poke = 0;
        pthread_mutex_unlock(&s->flush_lock);
        if (now >= next_flush) {
            next_flush = now + flush_ms;
            tide_db_stats(s->db, &st);
            if (st.head_points > 0 && (rc = tide_db_flush(s->db)) != 0)
                tide_log(LOG_ERROR, "periodic flush of %s failed: %s",
                         s->cfg.data_dir, tide_strerror(rc));
        }
        if (now >= next_prune) {
            next_prune = now + prune_ms;
            rc = tide_meta_prune(s->meta, &tided_system_principal, &ps);
            if (rc)
                tide_log(LOG_ERROR, "log retention (prune) failed: %s",
                         tide_strerror(rc));
            else if (ps.auth_rows || ps.request_rows || ps.sessions ||
                     ps.accounts)
                tide_log(LOG_INFO,
                         "retention: %llu auth log rows, %llu request rows "
                         "folded, %llu sessions, %llu accounts purged",
                         (unsigned long long)ps.auth_rows,
                         (unsigned long long)ps.request_rows,
                         (unsigned long long)ps.sessions,
                         (unsigned long long)ps.accounts);
        }
        tided_retention_maintain(s);
        pthread_mutex_lock(&s->flush_lock);
    }
    pthread_mutex_unlock(&s->flush_lock);
    return NULL;
}

/* Start the maintenance thread: erasures need it even without periodic
 * work. Returns 0 or -errno of pthread_create. */
static int maint_start(struct server *s)
{
    int rc;

    rc = pthread_create(&s->flusher, NULL, maint_main, s);
    if (rc) {
        tide_log(LOG_ERROR, "cannot start the maintenance thread: %s",
                 strerror(rc));
        return -rc;
    }
    s->flusher_running = 1;
    return 0;
}

static void maint_stop(struct server *s)
{
    if (!s->flusher_running)
        return;
    pthread_mutex_lock(&s->flush_lock);
    s->flush_stop = 1;
    pthread_cond_signal(&s->flush_cv);
    pthread_mutex_unlock(&s->flush_lock);
    pthread_join(s->flusher, NULL);
    s->flusher_running = 0;
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tided_writes_drain(arg);
    tided_write_jobs_drain(arg);
    tided_logins_drain(arg);
    tided_queries_drain(arg);
}

/* Drain: stop accepting, wait for the engine to finish in-flight writes so
 * their acks go out, then leave the loop. */
static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;

    (void)fd;
    (void)what;
    tided_writes_drain(s);
    tided_write_jobs_drain(s);
    tided_logins_drain(s);
    if (s->inflight_writes == 0 && s->writes_parked == 0 &&
        s->logins_running == 0)
        event_base_loopexit(s->base, NULL);
}

static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    tided_tls_reload(arg);
}

/* 127.0.0.0/8 or ::1: plaintext there never leaves the machine. */
static int is_loopback(const char *host)
{
    return !strncmp(host, "127.", 4) || !strcmp(host, "::1") ||
           !strcmp(host, "localhost");
}

/* Plaintext is for loopback: a port on any other address needs TLS or an
 * explicit allow_plaintext. Returns 0 or -1 (logged). */
static int plaintext_check(const struct server *s)
{
    const struct tided_config *c = &s->cfg;
    const char *host = !is_loopback(c->listen_host) ? c->listen_host
                       : !is_loopback(c->http_host) ? c->http_host
                                                    : NULL;

    if (s->tls || !host)
        return 0;
    if (!c->allow_plaintext) {
        tide_log(LOG_ERROR,
                 "refusing to serve plaintext on %s, which is not loopback: "
                 "set tls_cert and tls_key (docs/operations.md, \"TLS\"), "
                 "or allow_plaintext=true",
                 host);
        return -1;
    }
    tide_log(LOG_WARN,
             "serving plaintext on %s (allow_plaintext): credentials and "
             "telemetry cross the network unencrypted",
             host);
    return 0;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct server *s = arg;
    struct timeval tick = {0, 10000};

    (void)what;
    if (s->stopping)
        return;
    tide_log(LOG_INFO, "received %s, shutting down",
             sig == SIGTERM ? "SIGTERM" : "SIGINT");
    s->stopping = 1;
    if (s->listener)
        evconnlistener_disable(s->listener);
    s->drain = event_new(s->base, -1, EV_PERSIST, on_drain_tick, s);
    if (!s->drain || event_add(s->drain, &tick))
        event_base_loopexit(s->base, NULL);
}

/* Encryption at rest: read master_key_file when configured. Returns 0, or
 * -1 with the reason logged (missing, open to others, not a key). */
static int master_key_load(struct server *s)
{
    char why[1400];

    if (!s->cfg.master_key_file[0])
        return 0;
    if (tide_crypto_master_load(s->cfg.master_key_file, s->master_key, why,
                                sizeof(why))) {
        tide_log(LOG_ERROR, "%s", why);
        return -1;
    }
    s->has_master_key = 1;
    return 0;
}

/* The config file, then the flags. Returns 0, or the first failure of
 * tided_config_load or tided_config_set, or TIDE_EINVAL for a malformed
 * command line (message on stderr). */
static int parse_args(struct tided_config *c, int argc, char **argv)
{
    /* The config file first, so that flags override it. */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config")) {
            int rc =
                i + 1 < argc ? tided_config_load(c, argv[i + 1]) : TIDE_EINVAL;

            if (rc)
                return rc;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;

        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--version")) {
            printf("tided %s\n", TIDED_VERSION);
            exit(0);
        } else if (!strcmp(a, "--allow-open-data-dir")) {
            allow_open_data_dir = 1;
            continue; /* takes no value */
        } else if (!v) {
            fprintf(stderr, "tided: %s needs a value\n", a);
            return TIDE_EINVAL;
        } else if (!strcmp(a, "--config")) {
            ;
        } else if (!strcmp(a, "--data-dir")) {
            rc = tided_config_set(c, "data_dir", v);
        } else if (!strcmp(a, "--listen")) {
            rc = tided_config_set(c, "listen", v);
        } else if (!strcmp(a, "--http-listen")) {
            rc = tided_config_set(c, "http_listen", v);
        } else if (!strcmp(a, "--set")) {
            char key[128];
            const char *eq = strchr(v, '=');

            if (!eq || (size_t)(eq - v) >= sizeof(key)) {
                fprintf(stderr, "tided: --set needs KEY=VALUE\n");
                return TIDE_EINVAL;
            }
            memcpy(key, v, (size_t)(eq - v));
            key[eq - v] = 0;
            rc = tided_config_set(c, key, eq + 1);
        } else {
            fprintf(stderr, "tided: unknown option %s\n", a);
            usage(stderr);
            return TIDE_EINVAL;
        }
        if (rc)
            return rc;
        i++;
    }
    return 0;
}

/* Many idle connections need many descriptors: raise the soft limit to the
 * hard one. */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Create the data directory 0700, or check that an existing one is
 * neither readable nor writable by group or others: it holds every
 * tenant's telemetry, emails and password hashes (docs/operations.md,
 * "Data directory"). Returns 0, or -1 with the reason logged. */
static int data_dir_check(const char *dir)
{
    struct stat st;

    if (mkdir(dir, 0700) && errno != EEXIST) {
        tide_log(LOG_ERROR, "cannot create data directory %s: %s", dir,
                 strerror(errno));
        return -1;
    }
    if (stat(dir, &st) != 0) {
        tide_log(LOG_ERROR, "cannot stat data directory %s: %s", dir,
                 strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        tide_log(LOG_ERROR, "data directory %s is not a directory", dir);
        return -1;
    }
    if ((st.st_mode & 077) && !allow_open_data_dir) {
        tide_log(LOG_ERROR,
                 "data directory %s has mode %03o: group or others may "
                 "read or write it; run chmod 700 %s, or start with "
                 "--allow-open-data-dir",
                 dir, (unsigned)(st.st_mode & 0777), dir);
        return -1;
    }
    if (st.st_mode & 077)
        tide_log(LOG_WARN,
                 "data directory %s has mode %03o (--allow-open-data-dir); "
                 "the files tided creates in it are private all the same",
                 dir, (unsigned)(st.st_mode & 0777));
    return 0;
}

int main(int argc, char **argv)
{
    static struct server srv;
    struct server *s = &srv;
    struct tide_db_options dbo;
    struct tide_meta_options mo;
    const char *test;
    char why[512] = "";
    int port = 0, rc, code = 1;

    tided_config_defaults(&s->cfg);
    if (parse_args(&s->cfg, argc, argv))
        return 2;
    tided_log_level = s->cfg.log_level;
    test = getenv("TIDED_TEST_ALLOC_FAIL_NTH");
    if (test && *test) {
        if (strcmp(test, "request_id")) {
            tide_log(LOG_ERROR, "TIDED_TEST_ALLOC_FAIL_NTH must be request_id");
            return 2;
        }
        test_alloc_fail = 1;
        tide_log(LOG_WARN, "test mode: request ids make allocations fail");
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    if (data_dir_check(s->cfg.data_dir))
        return 1;
    /* Before anything opens: a bad certificate is an operator's mistake
     * to report at once. */
    if (tided_tls_init(s) || plaintext_check(s) || master_key_load(s))
        return 1;
    if (evthread_use_pthreads()) {
        tide_log(LOG_ERROR, "libevent has no pthreads support");
        return 1;
    }
    pthread_mutex_init(&s->done_lock, NULL);
    /* Before the engine opens: its compaction thread may poke the
     * maintenance thread (retention.c) from then on. */
    pthread_mutex_init(&s->flush_lock, NULL);
    pthread_cond_init(&s->flush_cv, NULL);
    s->started_ns = tided_now_ns();

    /* The sidecar first: the engine asks the retention policy, which
     * reads it, from the moment it opens. */
    tide_meta_options_init(&mo);
    mo.bcrypt_cost = s->cfg.bcrypt_cost;
    mo.delete_grace_ns = (int64_t)s->cfg.delete_grace_s * 1000000000;
    mo.master_key = s->has_master_key ? s->master_key : NULL;
    mo.why = why;
    mo.why_len = sizeof(why);
    rc = tide_meta_open(s->cfg.data_dir, &mo, &s->meta);
    if (rc) {
        tide_log(LOG_ERROR, "cannot open the accounts sidecar in %s: %s%s%s",
                 s->cfg.data_dir, tide_strerror(rc), why[0] ? ": " : "", why);
        return 1;
    }
    tide_db_options_init(&dbo);
    dbo.shards = s->cfg.shards;
    dbo.sync = s->cfg.sync_none ? TIDE_SYNC_NONE : TIDE_SYNC_BATCH;
    dbo.log = tided_engine_log;
    dbo.compaction_mb_s = s->cfg.compaction_mb_s;
    dbo.compaction_interval_s = s->cfg.compaction_interval_s;
    dbo.wal_file_bytes = (uint64_t)s->cfg.wal_file_mb << 20;
    dbo.head_bytes_max = (uint64_t)s->cfg.head_mb << 20;
    if (s->has_master_key) {
        /* Encryption at rest: the engine asks the sidecar for each
         * account's data key (account 0: its own). */
        dbo.data_key = tided_crypt_data_key;
        dbo.key_ctx = s;
    }
    if (tided_retention_init(s, &dbo)) {
        tide_log(LOG_ERROR, "out of memory");
        goto out;
    }
    rc = tide_db_open(s->cfg.data_dir, &dbo, &s->db);
    if (rc) {
        tide_log(LOG_ERROR, "cannot open the data directory %s: %s",
                 s->cfg.data_dir, tide_strerror(rc));
        goto out;
    }
    if (tided_throttle_init(s) || tided_write_init(s) ||
        tided_query_threads_start(s) || maint_start(s))
        goto out;
    s->base = event_base_new();
    if (!s->base)
        goto out;
    s->wake = event_new(s->base, -1, EV_PERSIST, on_wake, s);
    s->sig_term = evsignal_new(s->base, SIGTERM, on_signal, s);
    s->sig_int = evsignal_new(s->base, SIGINT, on_signal, s);
    s->sig_hup = evsignal_new(s->base, SIGHUP, on_sighup, s);
    if (!s->wake || !s->sig_term || !s->sig_int || !s->sig_hup ||
        event_add(s->wake, NULL) || event_add(s->sig_term, NULL) ||
        event_add(s->sig_int, NULL) || event_add(s->sig_hup, NULL))
        goto out;
    if (tided_http_start(s))
        goto out;
    printf("http: listening on %s:%d\n", s->cfg.http_host, s->cfg.http_port);
    if (tided_listen(s, &port))
        goto out;
    printf("ready: listening on %s:%d\n", s->cfg.listen_host, port);
    fflush(stdout);
    tide_log(LOG_INFO, "tided %s serving %s", TIDED_VERSION, s->cfg.data_dir);
    event_base_dispatch(s->base);
    code = 0;
    tide_log(LOG_INFO, "flushing and closing %s", s->cfg.data_dir);

out:
    if (s->listener)
        evconnlistener_free(s->listener);
    tided_close_all(s);
    tided_query_threads_stop(s);
    maint_stop(s);
    tided_queries_drain(s); /* the abandoned queries' last references */
    if (s->http)
        evhttp_free(s->http);
    /* Closing the engine completes every queued append; their acks can no
     * longer be sent, but the data is durable. */
    tide_db_close(s->db);
    tided_writes_drain(s);
    tided_write_stop(s); /* the registration thread uses the sidecar */
    tide_meta_close(s->meta);
    tided_write_fini(s);
    tided_retention_fini(s);
    tided_throttle_fini(s);
    if (s->wake)
        event_free(s->wake);
    if (s->drain)
        event_free(s->drain);
    if (s->sig_term)
        event_free(s->sig_term);
    if (s->sig_int)
        event_free(s->sig_int);
    if (s->sig_hup)
        event_free(s->sig_hup);
    if (s->base)
        event_base_free(s->base);
    tided_tls_fini(s);
    tide_crypto_wipe(s->master_key, sizeof(s->master_key));
    return code;
}
