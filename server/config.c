/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tided's configuration: defaults, an INI-style file ("key = value", '#'
 * comments) and the same keys as flags. docs/operations.md lists every key.
 */
#include <ctype.h>
#include <stddef.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

void tided_config_defaults(struct tided_config *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->data_dir, sizeof(c->data_dir), "./tide-data");
    snprintf(c->listen_host, sizeof(c->listen_host), "127.0.0.1");
    c->listen_port = 8433;
    snprintf(c->http_host, sizeof(c->http_host), "127.0.0.1");
    c->http_port = 8434;
    c->max_frame_bytes = 16u << 20;
    c->max_unauth_frame_bytes = 8192;
    c->max_decode_ratio = 16;
    c->partial_frame_budget_bytes = 256u << 20;
    c->max_batch_points = 1u << 20;
    c->max_batch_groups = 100000;
    c->max_query_points = 50000000;
    c->query_timeout_ms = 30000;
    c->max_inflight = 1024;
    c->max_chunk_bytes = 256u << 10;
    c->idle_timeout_ms = 300000;
    c->read_timeout_ms = 30000;
    c->max_connections = 16384;
    c->query_threads = 2;
    c->flush_interval_ms = 60000;
    c->prune_interval_s = 3600;
    c->delete_grace_s = 30 * 86400;
    c->compaction_mb_s = 64;
    c->compaction_interval_s = 600;
    c->wal_file_mb = 16;
    c->head_mb = 256;
    c->out_high_bytes = 4u << 20;
    c->bcrypt_cost = 12;
    c->allow_signup = 1;
    c->log_level = LOG_INFO;
}

static int parse_u64(const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long x;

    errno = 0;
    x = strtoull(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max || v[0] == '-')
        return TIDE_EINVAL;
    *out = x;
    return 0;
}

/* "host:port" with port 0..65535. */
static int parse_addr(const char *v, char *host, size_t host_cap, int *port)
{
    const char *colon = strrchr(v, ':');
    uint64_t p;

    if (!colon || colon == v || (size_t)(colon - v) >= host_cap ||
        parse_u64(colon + 1, 0, 65535, &p))
        return TIDE_EINVAL;
    memcpy(host, v, (size_t)(colon - v));
    host[colon - v] = 0;
    *port = (int)p;
    return 0;
}

static int parse_bool(const char *v, int *out)
{
    if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes"))
        *out = 1;
    else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no"))
        *out = 0;
    else
        return TIDE_EINVAL;
    return 0;
}

struct u32_key {
    const char *name;
    size_t off;
    uint64_t min, max;
};

#define U32(f, lo, hi)                                                         \
    {                                                                          \
#f, offsetof(struct tided_config, f), lo, hi                           \
    }

static const struct u32_key u32_keys[] = {
    U32(max_frame_bytes, 1024, 1u << 30),
    U32(max_unauth_frame_bytes, 1024, 1u << 30),
    U32(max_decode_ratio, 1, 1024),
    U32(max_batch_points, 1, TIDE_BATCH_POINTS_MAX),
    U32(max_batch_groups, 1, 10000000),
    U32(query_timeout_ms, 1, 3600000),
    U32(max_inflight, 1, 65536),
    U32(max_chunk_bytes, 1024, 64u << 20),
    U32(idle_timeout_ms, 100, 86400000),
    U32(read_timeout_ms, 100, 3600000),
    U32(max_connections, 1, 1000000),
    U32(query_threads, 1, TIDED_QUERY_THREADS_MAX),
    U32(flush_interval_ms, 0, 86400000),
    U32(prune_interval_s, 0, 86400 * 30),
    U32(delete_grace_s, 0, 86400 * 3650),
    U32(out_high_bytes, 65536, 1u << 30),
    U32(compaction_mb_s, 0, 1u << 20),
    U32(compaction_interval_s, 0, 86400 * 30),
    U32(wal_file_mb, 1, 4096),
    U32(head_mb, 2, 1u << 20),
};

int tided_config_set(struct tided_config *c, const char *key, const char *value)
{
    uint64_t x;
    int b;

    for (size_t i = 0; i < sizeof(u32_keys) / sizeof(u32_keys[0]); i++) {
        if (strcmp(key, u32_keys[i].name))
            continue;
        if (parse_u64(value, u32_keys[i].min, u32_keys[i].max, &x))
            goto bad;
        *(uint32_t *)(void *)((char *)c + u32_keys[i].off) = (uint32_t)x;
        return 0;
    }
    if (!strcmp(key, "data_dir")) {
        if (!*value || strlen(value) >= sizeof(c->data_dir))
            goto bad;
        snprintf(c->data_dir, sizeof(c->data_dir), "%s", value);
    } else if (!strcmp(key, "listen")) {
        if (parse_addr(value, c->listen_host, sizeof(c->listen_host),
                       &c->listen_port))
            goto bad;
    } else if (!strcmp(key, "http_listen")) {
        if (parse_addr(value, c->http_host, sizeof(c->http_host),
                       &c->http_port))
            goto bad;
    } else if (!strcmp(key, "shards")) {
        if (parse_u64(value, 0, TIDE_SHARDS_MAX, &x))
            goto bad;
        c->shards = (unsigned)x;
    } else if (!strcmp(key, "sync")) {
        if (strcmp(value, "batch") && strcmp(value, "none"))
            goto bad;
        c->sync_none = !strcmp(value, "none");
    } else if (!strcmp(key, "partial_frame_budget_bytes")) {
        if (parse_u64(value, 65536, UINT64_MAX, &c->partial_frame_budget_bytes))
            goto bad;
    } else if (!strcmp(key, "max_query_points")) {
        if (parse_u64(value, 1, UINT64_MAX, &c->max_query_points))
            goto bad;
    } else if (!strcmp(key, "bcrypt_cost")) {
        if (parse_u64(value, 4, 31, &x))
            goto bad;
        c->bcrypt_cost = (unsigned)x;
    } else if (!strcmp(key, "tls_cert") || !strcmp(key, "tls_key") ||
               !strcmp(key, "tls_client_ca") ||
               !strcmp(key, "master_key_file")) {
        char *dst = !strcmp(key, "tls_cert")        ? c->tls_cert
                    : !strcmp(key, "tls_key")       ? c->tls_key
                    : !strcmp(key, "tls_client_ca") ? c->tls_client_ca
                                                    : c->master_key_file;

        if (strlen(value) >= sizeof(c->tls_cert))
            goto bad;
        snprintf(dst, sizeof(c->tls_cert), "%s", value);
    } else if (!strcmp(key, "allow_plaintext")) {
        if (parse_bool(value, &b))
            goto bad;
        c->allow_plaintext = b;
    } else if (!strcmp(key, "allow_signup")) {
        if (parse_bool(value, &b))
            goto bad;
        c->allow_signup = b;
    } else if (!strcmp(key, "log_level")) {
        static const char *names[] = {"debug", "info", "warn", "error"};

        for (b = 0; b < 4 && strcmp(value, names[b]); b++)
            ;
        if (b == 4)
            goto bad;
        c->log_level = b;
    } else {
        fprintf(stderr, "tided: unknown configuration key '%s'\n", key);
        return TIDE_EINVAL;
    }
    return 0;

bad:
    fprintf(stderr, "tided: bad value '%s' for '%s'\n", value, key);
    return TIDE_EINVAL;
}

static char *trim(char *s)
{
    char *e;

    while (isspace((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = 0;
    return s;
}

int tided_config_load(struct tided_config *c, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[2048];
    unsigned lineno = 0;
    int rc = 0;

    if (!f) {
        rc = -errno;
        fprintf(stderr, "tided: cannot open config %s: %s\n", path,
                strerror(-rc));
        return rc;
    }
    while (fgets(line, sizeof(line), f)) {
        char *p = trim(line), *eq;

        lineno++;
        if (!*p || *p == '#')
            continue;
        eq = strchr(p, '=');
        if (!eq) {
            fprintf(stderr, "tided: %s:%u: expected 'key = value'\n", path,
                    lineno);
            rc = TIDE_EINVAL;
            break;
        }
        *eq = 0;
        rc = tided_config_set(c, trim(p), trim(eq + 1));
        if (rc) {
            fprintf(stderr, "tided: in %s line %u\n", path, lineno);
            break;
        }
    }
    fclose(f);
    return rc;
}
