/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration tests of encryption at rest through the real tided (issue
 * #13, items 5-9): a master key from `tide admin keygen`, then scans of
 * every byte of the data directory for what was written, a wrong or
 * missing key at start, encryption turned on for an existing directory,
 * master key rotation under load, and crypto-shredding by a purge. The
 * engine's and the sidecar's own tests (test_keys.c, test_meta_crypto.c)
 * flip bits in every kind of block.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "frame.h"
#include "testutil.h"
#include "tide/client.h"
#include "wire.h"

static char keys[1100], key1[1200], key2[1200], set_key1[1300];

/* Two master keys made by the CLI, in a directory of their own. */
static void make_keys(void)
{
    char cmd[4096];

    snprintf(keys, sizeof(keys), "%s", test_tmpdir());
    snprintf(key1, sizeof(key1), "%s/master-1.key", keys);
    snprintf(key2, sizeof(key2), "%s/master-2.key", keys);
    snprintf(set_key1, sizeof(set_key1), "master_key_file=%s", key1);
    snprintf(cmd, sizeof(cmd),
             "build/release/tide admin keygen '%s' >/dev/null && "
             "build/release/tide admin keygen '%s' >/dev/null",
             key1, key2);
    cr_assert_eq(system(cmd), 0, "tide admin keygen");
}

static void at_rest_init(void)
{
    const char *settings[] = {set_key1, "flush_interval_ms=200",
                              "compaction_interval_s=0", NULL};

    make_keys();
    fixture_start(settings);
}

static void at_rest_fini(void)
{
    fixture_fini();
    test_rmrf(keys);
}

TestSuite(at_rest, .init = at_rest_init, .fini = at_rest_fini, .timeout = 180);

static tide_client *open_client(const char *key, const char *token)
{
    struct tide_client_options o;
    tide_client *c = NULL;
    int rc;

    tide_client_options_init(&o);
    o.port = (uint16_t)srv.port;
    o.api_key = key;
    o.session_token = token;
    o.backoff_base_ms = 20;
    o.backoff_max_ms = 200;
    rc = tide_client_open(&o, &c);
    cr_assert_eq(rc, 0, "tide_client_open: %s", tide_strerror(rc));
    return c;
}

/* An account of `email` with device `device`, its device key in
 * dkey[128] and an analyst key in akey[128]; returns the account id. */
static char akey[128];

static uint64_t make_device(const char *email, const char *device, char *dkey)
{
    int fd = wire_session(srv.port, srv.admin_key);
    uint64_t account;

    cr_assert_geq(fd, 0);
    account = wire_make_account(fd, email);
    wire_device_register(fd, account, device);
    wire_key_create(fd, account, "dk", TIDE__V1__ROLE__ROLE_DEVICE, device,
                    dkey, 128);
    wire_key_create(fd, account, "ak", TIDE__V1__ROLE__ROLE_ANALYST, NULL, akey,
                    sizeof(akey));
    close(fd);
    return account;
}

/* Points of field `field` of the analyst key's account in [T0, T0 + 1 d). */
static size_t count(const char *field)
{
    const char *fields[1] = {field};
    struct tide_query_params q = {.fields = fields,
                                  .n_fields = 1,
                                  .from_ns = T0,
                                  .to_ns = T0 + 86400000000000ll};
    tide_client *r = open_client(akey, NULL);
    struct tide_series_block b;
    tide_query_iter *it;
    size_t n = 0;
    int rc;

    cr_assert_eq(tide_query_open(r, &q, &it), 0);
    while ((rc = tide_query_next(it, &b)) == 0)
        n += b.n;
    cr_assert_eq(rc, TIDE_CLIENT_DONE, "query: %s", tide_strerror(rc));
    tide_query_close(it);
    tide_client_close(r);
    return n;
}

/* What the scans look for: a device name, an email, a string value and
 * the bytes of an f64, each written once. */
#define F64_MARK 31415.926535897932
#define STR_MARK "at-rest-string-value-7f3a"

static void write_marks(const char *dkey, const char *device, int points)
{
    tide_client *w = open_client(dkey, NULL);

    for (int i = 0; i < points; i++) {
        cr_assert_eq(tide_write_f64(w, device, "temp", T0 + i * 1000000000ll,
                                    F64_MARK + i * 1e-9),
                     0);
        cr_assert_eq(
            tide_write_str(w, device, "note", T0 + i * 1000000000ll, STR_MARK),
            0);
    }
    cr_assert_eq(tide_flush(w), 0);
    tide_client_close(w);
}

/* Occurrences of each needle in every regular file below `path`. */
struct needles {
    const void *p[8];
    size_t len[8];
    int hits[8];
    int n;
    long long bytes;
};

static void needle(struct needles *nd, const void *p, size_t len)
{
    nd->p[nd->n] = p;
    nd->len[nd->n] = len;
    nd->hits[nd->n++] = 0;
}

static void scan(struct needles *nd, const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;

    if (!d)
        return;
    while ((e = readdir(d))) {
        char p[2048];
        struct stat st;

        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
        if (stat(p, &st))
            continue;
        if (S_ISDIR(st.st_mode)) {
            scan(nd, p);
        } else if (S_ISREG(st.st_mode) && st.st_size > 0) {
            FILE *f = fopen(p, "rb");
            char *buf = malloc((size_t)st.st_size);

            cr_assert(f && buf);
            cr_assert_eq(fread(buf, 1, (size_t)st.st_size, f),
                         (size_t)st.st_size);
            fclose(f);
            nd->bytes += st.st_size;
            for (int i = 0; i < nd->n; i++)
                if (memmem(buf, (size_t)st.st_size, nd->p[i], nd->len[i]))
                    nd->hits[i]++;
            free(buf);
        }
    }
    closedir(d);
}

/* The marks of `device` and `email`, f64 bit patterns included. */
static void marks(struct needles *nd, const char *device, const char *email,
                  double *f64)
{
    *f64 = F64_MARK;
    needle(nd, device, strlen(device));
    needle(nd, email, strlen(email));
    needle(nd, STR_MARK, strlen(STR_MARK));
    needle(nd, f64, sizeof(*f64));
}

static int64_t stat_of(int fd, const char *name)
{
    Tide__V1__Envelope e = TIDE__V1__ENVELOPE__INIT, *r;
    Tide__V1__ServerStatus ss = TIDE__V1__SERVER_STATUS__INIT;
    int64_t v = -1;

    e.body_case = TIDE__V1__ENVELOPE__BODY_SERVER_STATUS;
    e.server_status = &ss;
    r = wire_next(fd, &e);
    cr_assert(r && r->body_case == TIDE__V1__ENVELOPE__BODY_SERVER_STATUS_OK);
    if (!strcmp(name, "enabled"))
        v = r->server_status_ok->encryption->enabled;
    else if (!strcmp(name, "segments_encrypted"))
        v = (int64_t)r->server_status_ok->encryption->segments_encrypted;
    else if (!strcmp(name, "segments_plaintext"))
        v = (int64_t)r->server_status_ok->encryption->segments_plaintext;
    else if (!strcmp(name, "data_keys"))
        v = (int64_t)r->server_status_ok->encryption->data_keys;
    tide_frame_free(r, NULL);
    return v;
}

/* The whole data directory, WAL and head first, then segments after a
 * clean shutdown: none of what was written is there in plaintext. A
 * plaintext server's directory, scanned the same way, holds every mark
 * (the scan can see them). */
Test(at_rest, no_plaintext_anywhere_in_the_data_directory)
{
    char dkey[128];
    struct needles nd = {0};
    double f64;
    int fd;

    make_device("scan@rest.example", "berlin-meter-0042", dkey);
    write_marks(dkey, "berlin-meter-0042", 50);
    marks(&nd, "berlin-meter-0042", "scan@rest.example", &f64);
    scan(&nd, dir);
    for (int i = 0; i < nd.n; i++)
        cr_assert_eq(nd.hits[i], 0, "mark %d in plaintext (WAL, head)", i);
    fd = wire_session(srv.port, srv.admin_key);
    cr_assert_eq(stat_of(fd, "enabled"), 1);
    cr_assert_geq(stat_of(fd, "data_keys"), 2, "system key + the account");
    close(fd);
    cr_assert_eq(tided_stop(&srv), 0);
    memset(nd.hits, 0, sizeof(nd.hits));
    scan(&nd, dir);
    for (int i = 0; i < nd.n; i++)
        cr_assert_eq(nd.hits[i], 0, "mark %d in plaintext (segments)", i);
    cr_assert_gt(nd.bytes, 0);

    /* The control: the same writes without a master key. */
    fixture_start(NULL);
    make_device("scan@rest.example", "berlin-meter-0042", dkey);
    write_marks(dkey, "berlin-meter-0042", 50);
    cr_assert_eq(tided_stop(&srv), 0);
    memset(nd.hits, 0, sizeof(nd.hits));
    scan(&nd, dir);
    for (int i = 0; i < nd.n; i++)
        cr_assert_gt(nd.hits[i], 0, "plaintext control: mark %d unseen", i);
}

static char *slurp_log(void)
{
    char path[1200];
    FILE *f;
    static char buf[65536];
    size_t n;

    snprintf(path, sizeof(path), "%s/tided.log", dir);
    f = fopen(path, "r");
    cr_assert(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* A wrong master key, none, or one open to others: tided refuses to
 * start and says why; the right one opens and reads everything back. */
Test(at_rest, a_wrong_or_missing_master_key_refuses_to_start)
{
    char dkey[128], set2[1300];
    const char *wrong[] = {set2, NULL};
    const char *right[] = {set_key1, NULL};

    make_device("key@rest.example", "dev1", dkey);
    write_marks(dkey, "dev1", 20);
    cr_assert_eq(tided_stop(&srv), 0);
    snprintf(set2, sizeof(set2), "master_key_file=%s", key2);
    cr_assert_neq(tided_start(&srv, dir, wrong), 0);
    cr_assert(strstr(slurp_log(), "wrong master key"), "%s", slurp_log());
    cr_assert_neq(tided_start(&srv, dir, NULL), 0);
    cr_assert(strstr(slurp_log(), "configure master_key_file"), "%s",
              slurp_log());
    chmod(key1, 0644);
    cr_assert_neq(tided_start(&srv, dir, right), 0);
    cr_assert(strstr(slurp_log(), "chmod 600"), "%s", slurp_log());
    chmod(key1, 0600);
    cr_assert_eq(tided_start(&srv, dir, right), 0);
    cr_assert_eq(count("temp"), 20);
    cr_assert_eq(count("note"), 20);
}

/* A plaintext data directory restarted with a master key: old data reads
 * back, new data is encrypted, a full compaction rewrites the plaintext
 * segments encrypted, and then no mark is left in plaintext. */
Test(at_rest, encryption_turned_on_for_an_existing_directory)
{
    char dkey[128], out[4096];
    const char *plain[] = {"flush_interval_ms=200", NULL};
    const char *enc[] = {set_key1, "flush_interval_ms=200", NULL};
    struct needles nd = {0};
    double f64;
    int fd;

    fixture_start(plain);
    make_device("old@rest.example", "old-meter-77", dkey);
    write_marks(dkey, "old-meter-77", 30);
    cr_assert_eq(tided_stop(&srv), 0);
    cr_assert_eq(tided_start(&srv, dir, enc), 0);
    cr_assert_eq(count("temp"), 30, "plaintext data reads back");
    fd = wire_session(srv.port, srv.admin_key);
    cr_assert_gt(stat_of(fd, "segments_plaintext"), 0);
    cr_assert_eq(fixture_cli(srv.admin_key, "admin compact --wait", NULL, out,
                             sizeof(out)),
                 0, "%s", out);
    cr_assert_eq(stat_of(fd, "segments_plaintext"), 0, "after compaction");
    cr_assert_gt(stat_of(fd, "segments_encrypted"), 0);
    close(fd);
    cr_assert_eq(count("temp"), 30);
    cr_assert_eq(tided_stop(&srv), 0);
    marks(&nd, "old-meter-77", "old@rest.example", &f64);
    scan(&nd, dir);
    for (int i = 0; i < nd.n; i++)
        cr_assert_eq(nd.hits[i], 0, "mark %d still in plaintext", i);
}

struct streamer {
    const char *dkey;
    atomic_int stop;
    int points;
    int rc;
};

static void *stream(void *arg)
{
    struct streamer *st = arg;
    tide_client *w = open_client(st->dkey, NULL);

    while (!atomic_load(&st->stop) && !st->rc) {
        st->rc = tide_write_f64(w, "dev1", "v", T0 + st->points, 1.0);
        st->points += !st->rc;
    }
    if (!st->rc)
        st->rc = tide_flush(w);
    tide_client_close(w);
    return NULL;
}

/* The master key rotated while a device streams: no write fails, nothing
 * is rewritten but the wrapped keys; afterwards only the new key opens
 * the directory, and every point is there. */
Test(at_rest, rotation_under_load)
{
    char dkey[128], args[1400], out[4096];
    struct streamer st = {0};
    const char *old_key[] = {set_key1, NULL}, *new_key[] = {args, NULL};
    pthread_t t;

    make_device("rotate@rest.example", "dev1", dkey);
    st.dkey = dkey;
    cr_assert_eq(pthread_create(&t, NULL, stream, &st), 0);
    usleep(300000);
    snprintf(args, sizeof(args), "admin rotate-master-key %s", key2);
    cr_assert_eq(fixture_cli(srv.admin_key, args, NULL, out, sizeof(out)), 0,
                 "%s", out);
    cr_assert(strstr(out, "new_master_key_id"), "%s", out);
    usleep(300000);
    atomic_store(&st.stop, 1);
    pthread_join(t, NULL);
    cr_assert_eq(st.rc, 0, "a write failed: %s", tide_strerror(st.rc));
    cr_assert_gt(st.points, 0);
    cr_assert_eq(tided_stop(&srv), 0);
    cr_assert_neq(tided_start(&srv, dir, old_key), 0, "the old key opens");
    snprintf(args, sizeof(args), "master_key_file=%s", key2);
    cr_assert_eq(tided_start(&srv, dir, new_key), 0);
    cr_assert_eq(count("v"), (size_t)st.points);
}

/* Crypto-shredding: a purge destroys the account's data key first (the
 * erasure report says when), its data is unreadable from then on, the
 * erasure removes the ciphertext; another account is untouched. */
Test(at_rest, a_purge_shreds_the_account)
{
    char dkey[128], ckey[128], cakey[128], args[256], out[8192];
    uint64_t victim, control;
    int fd;

    victim = make_device("victim@rest.example", "dev1", dkey);
    write_marks(dkey, "dev1", 40);
    control = make_device("control@rest.example", "dev1", ckey);
    snprintf(cakey, sizeof(cakey), "%s", akey);
    write_marks(ckey, "dev1", 40);
    usleep(500000); /* flushed into segments (flush_interval_ms=200) */
    (void)control;
    snprintf(args, sizeof(args),
             "account delete account_id=%llu immediate=true",
             (unsigned long long)victim);
    cr_assert_eq(fixture_cli(srv.admin_key, args, NULL, out, sizeof(out)), 0,
                 "%s", out);
    snprintf(args, sizeof(args), "account erasure-report %llu",
             (unsigned long long)victim);
    for (int i = 0; i < 200; i++) {
        cr_assert_eq(fixture_cli(srv.admin_key, args, NULL, out, sizeof(out)),
                     0, "%s", out);
        if (strstr(out, "nothing found:"))
            break;
        usleep(100000);
    }
    cr_assert(strstr(out, "nothing found:"), "%s", out);
    cr_assert(strstr(out, "data key destroyed 20"), "%s", out);
    snprintf(akey, sizeof(akey), "%s", cakey);
    cr_assert_eq(count("temp"), 40, "the control account is intact");
    fd = wire_session(srv.port, srv.admin_key);
    close(fd);
}
