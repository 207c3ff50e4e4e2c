/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tide CLI: account, key, device and usage administration, CSV and
 * line-format writes, and queries, all through libtide's public header.
 * Manual: docs/cli.md. Exit status: 0 success, 1 server or runtime error,
 * 2 usage error.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "parse.h"
#include "tide/client.h"
#include "tide/crypto.h"

#define EXIT_SERVER 1
#define EXIT_USAGE 2
#define MAX_ARGS 64
#define MAX_LINE_POINTS 64
#define ARG_BYTES 512

struct opts {
    const char *host;
    unsigned port;
    const char *key;
    const char *token;
    const char *output; /* table, csv, json */
    /* TLS: --tls, --ca, --tls-server-name, --tls-cert/--tls-key,
     * --tls-insecure-skip-verify, --cert-auth (docs/cli.md, "TLS"). */
    int tls;
    const char *ca, *server_name, *cert, *cert_key;
    int insecure;
    int cert_auth;
    char cfg_key[600];
    char cfg_token[600];
};

/* A command that maps to one admin request. `pos` names the request
 * fields that positional arguments fill, in order; `npos` is the minimum. */
struct cmd {
    const char *group, *sub, *request;
    const char *pos[3];
    int npos;
    int auth;
    const char *usage;
};

static const struct cmd cmds[] = {
    {"account",
     "create",
     "account_create",
     {"email", "password"},
     2,
     0,
     "EMAIL PASSWORD [first_name=..] [surname=..] [organization=..]"},
    {"account",
     "login",
     "login",
     {"email", "password"},
     2,
     0,
     "EMAIL PASSWORD (saves the session token to the config file)"},
    {"account", "show", "account_get", {0}, 0, 1, "[account_id=N]"},
    {"account", "update", "account_update", {0}, 0, 1, "FIELD=VALUE..."},
    {"account", "verify", "verify_email", {"token"}, 1, 0, "TOKEN"},
    {"account",
     "tier",
     "tier_set",
     {"account_id", "tier"},
     2,
     1,
     "ACCOUNT_ID TIER"},
    {"account",
     "pause",
     "account_pause",
     {"paused"},
     1,
     1,
     "true|false [account_id=N]"},
    {"account",
     "delete",
     "account_delete",
     {"password"},
     0,
     1,
     "[PASSWORD] [immediate=true] [account_id=N]"},
    {"account",
     "restore",
     "account_restore",
     {"account_id"},
     1,
     1,
     "ACCOUNT_ID (operator, within the deletion grace period)"},
    {"tier", "list", "tier_list", {0}, 0, 1, ""},
    {"tier",
     "set",
     "tier_upsert",
     {"tier.name", "tier.telemetry_ttl_s"},
     2,
     1,
     "NAME TTL_S [tier.points_per_s=N] [tier.daily_points=N] "
     "[tier.max_devices=N] [tier.max_series=N] [tier.key_points_per_s=N] "
     "[tier.queries_per_s=N] [tier.max_concurrent_queries=N] (operator)"},
    {"key",
     "create",
     "key_create",
     {"name", "role", "device"},
     2,
     1,
     "NAME analyst|device|operator [DEVICE]"},
    {"key", "list", "key_list", {0}, 0, 1, "[limit=N] [account_id=N]"},
    {"key", "revoke", "key_revoke", {"key_id"}, 1, 1, "KEY_ID"},
    {"device",
     "add",
     "device_register",
     {"device.name"},
     1,
     1,
     "NAME [mac=..] [friendly_name=..] [firmware_version=..] [tags=k:v]"},
    {"device",
     "list",
     "device_list",
     {0},
     0,
     1,
     "[NAME].. [tag=KEY:VALUE].. [limit=N] [account_id=N]"},
    {"device", "show", "device_get", {"name"}, 1, 1, "NAME"},
    {"device",
     "update",
     "device_update",
     {"name"},
     1,
     1,
     "NAME FIELD=VALUE..."},
    {"device", "delete", "device_delete", {"name"}, 1, 1, "NAME"},
    {"usage",
     NULL,
     "usage_get",
     {"from_day", "to_day"},
     0,
     1,
     "[FROM_DAY TO_DAY] (days since 1970-01-01)"},
    {"log", "auth", "auth_log_get", {0}, 0, 1, "[limit=N]"},
    {"notifications",
     NULL,
     "notification_list",
     {0},
     0,
     1,
     "[unread_only=true]"},
    {"status", NULL, "server_status", {0}, 0, 1, ""},
    {"admin",
     "rotate-master-key",
     "master_key_rotate",
     {"new_key_file"},
     1,
     1,
     "NEWFILE (operator; a path on the server's host)"},
};

static void usage_all(FILE *f)
{
    fprintf(f, "usage: tide [--host H] [--port P] [--key KEY] "
               "[--output table|csv|json]\n"
               "            [--tls] [--ca FILE] [--tls-server-name NAME] "
               "[--tls-cert FILE --tls-key FILE]\n"
               "            [--cert-auth] [--tls-insecure-skip-verify] "
               "COMMAND ...\n"
               "environment: TIDE_KEY, TIDE_TLS=1, TIDE_CA, TIDE_TLS_CERT, "
               "TIDE_TLS_KEY, TIDE_TLS_SERVER_NAME (flags win)\n"
               "\ncommands:\n");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        fprintf(f, "  %s %s %s\n", cmds[i].group,
                cmds[i].sub ? cmds[i].sub : "", cmds[i].usage);
    fprintf(f, "  write [FILE] [--line]\n"
               "  query [--device D].. [--field F].. [--from T] [--to T] "
               "[--agg FN[,FN].. --bucket DUR [--bucket-offset DUR] "
               "[--by-device]] [--latest] [--limit N] [--desc]\n"
               "  export [--telemetry] [--csv] [--from T] [--to T] "
               "[--account N]\n"
               "  admin compact [--wait] [--timeout SECONDS] (operator)\n"
               "  admin keygen FILE (a new master key file, 0600; local)\n"
               "  retention [--account N]\n"
               "  account erasure-report ACCOUNT_ID (operator)\n"
               "\nexit status: 0 ok, 1 server or runtime error, "
               "2 usage error\n");
}

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static const char *config_path(char *buf, size_t n)
{
    const char *home = getenv("HOME");

    if (!home)
        return NULL;
    snprintf(buf, n, "%s/.config/tide/config", home);
    return buf;
}

/* Read "key = ..." and "token = ..." from the config file. A file that
 * the group or others can read is refused: it holds secrets. */
static int load_config(struct opts *o)
{
    char path[512], line[1024];
    struct stat st;
    FILE *f;

    if (!config_path(path, sizeof(path)) || stat(path, &st) != 0)
        return 0;
    if (st.st_mode & 077) {
        fprintf(stderr, "tide: %s is readable by others; chmod 600 it\n", path);
        return -EPERM;
    }
    f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f)) {
        char k[32], v[600];

        if (sscanf(line, " %31[a-z_] = %599s", k, v) != 2)
            continue;
        if (!strcmp(k, "key"))
            snprintf(o->cfg_key, sizeof(o->cfg_key), "%s", v);
        else if (!strcmp(k, "token"))
            snprintf(o->cfg_token, sizeof(o->cfg_token), "%s", v);
    }
    fclose(f);
    return 0;
}

static int save_token(const char *token)
{
    char path[512], dir[512];
    FILE *f;

    if (!config_path(path, sizeof(path)))
        return -ENOENT;
    snprintf(dir, sizeof(dir), "%s/.config", getenv("HOME"));
    mkdir(dir, 0700);
    snprintf(dir, sizeof(dir), "%s/.config/tide", getenv("HOME"));
    mkdir(dir, 0700);
    umask(077);
    f = fopen(path, "w");
    if (!f)
        return -errno;
    fprintf(f, "token = %s\n", token);
    return fclose(f) ? -errno : 0;
}

static int fail(tide_client *c, const char *what, int rc)
{
    int code;
    const char *msg;

    if (rc == TIDE_ESERVER && c && !tide_client_last_error(c, &code, &msg))
        fprintf(stderr, "tide: %s: server error %d: %s\n", what, code, msg);
    else
        fprintf(stderr, "tide: %s: %s\n", what, tide_strerror(rc));
    return EXIT_SERVER;
}

static int open_client(const struct opts *o, int auth, tide_client **c)
{
    struct tide_client_options co;
    int rc;
    char why[512] = "";

    tide_client_options_init(&co);
    co.host = o->host;
    co.port = (uint16_t)o->port;
    co.reconnect_attempts_max = 10;
    co.tls = o->tls;
    co.tls_ca_file = o->ca;
    co.tls_server_name = o->server_name;
    co.tls_cert_file = o->cert;
    co.tls_key_file = o->cert_key;
    co.tls_insecure_skip_verify = o->insecure;
    co.open_error = why;
    co.open_error_len = sizeof(why);
    if (o->insecure)
        fprintf(stderr, "tide: WARNING: --tls-insecure-skip-verify: the "
                        "server's certificate is NOT checked; anyone on the "
                        "path can read and change this session\n");
    if (auth && o->cert_auth) {
        co.auth_client_certificate = 1;
    } else if (auth) {
        co.api_key = o->key;
        co.session_token = o->key ? NULL : o->token;
        if (!co.api_key && !co.session_token) {
            fprintf(stderr, "tide: no credentials: use --key, TIDE_KEY or "
                            "tide account login\n");
            return EXIT_USAGE;
        }
    }
    rc = tide_client_open(&co, c);
    if (rc) {
        fprintf(stderr, "tide: connect %s:%u: %s%s%s\n", o->host, o->port,
                tide_strerror(rc), why[0] ? ": " : "", why);
        return EXIT_SERVER;
    }
    return 0;
}

static void print_json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void print_result(const struct opts *o, const tide_result *r)
{
    size_t rows = tide_result_rows(r);

    for (size_t i = 0; i < rows; i++) {
        size_t n = tide_result_cols(r, i);

        if (!strcmp(o->output, "json"))
            putchar('{');
        for (size_t k = 0; k < n; k++) {
            const char *name, *value;

            tide_result_get(r, i, k, &name, &value);
            if (!strcmp(o->output, "json")) {
                printf("%s", k ? "," : "");
                print_json_str(name);
                putchar(':');
                print_json_str(value);
            } else if (!strcmp(o->output, "csv")) {
                if (i == 0 && k == 0)
                    for (size_t h = 0; h < n; h++) {
                        const char *hn;

                        tide_result_get(r, 0, h, &hn, NULL);
                        printf("%s%s", hn, h + 1 < n ? "," : "\n");
                    }
                printf("%s%s", value, k + 1 < n ? "," : "\n");
            } else {
                printf("%-24s %s\n", name, value);
            }
        }
        if (!strcmp(o->output, "json"))
            printf("}\n");
        else if (!strcmp(o->output, "table") && i + 1 < rows)
            putchar('\n');
    }
}

static int run_admin(const struct opts *o, const struct cmd *cm, int argc,
                     char **argv)
{
    char store[MAX_ARGS][ARG_BYTES];
    const char *args[MAX_ARGS];
    tide_client *c = NULL;
    tide_result *r = NULL;
    size_t n = 0;
    int npos = 0, rc;

    for (int i = 0; i < argc && n + 2 < MAX_ARGS; i++) {
        const char *a = argv[i];
        const char *eq = strchr(a, '=');

        if (!strcmp(a, "--help")) {
            printf("usage: tide %s %s %s\n", cm->group, cm->sub ? cm->sub : "",
                   cm->usage);
            return 0;
        }
        if (!strcmp(cm->request, "device_list") &&
            (!eq || !strncmp(a, "tag=", 4))) {
            /* The selector: names are ORed, tags ANDed with them. */
            snprintf(store[n], ARG_BYTES, "selector.%s=%s",
                     eq ? "tags" : "names", eq ? eq + 1 : a);
        } else if (!eq && npos < 3 && cm->pos[npos]) {
            const char *v = a;

            if (!strcmp(cm->pos[npos], "role"))
                v = !strcmp(a, "device")     ? "ROLE_DEVICE"
                    : !strcmp(a, "operator") ? "ROLE_OPERATOR"
                                             : "ROLE_ANALYST";
            snprintf(store[n], ARG_BYTES, "%s=%s", cm->pos[npos++], v);
        } else if (eq && !strcmp(cm->request, "account_update")) {
            snprintf(store[n++], ARG_BYTES, "set=%.*s", (int)(eq - a), a);
            snprintf(store[n], ARG_BYTES, "%s", a);
        } else if (eq && !strcmp(cm->request, "device_update")) {
            snprintf(store[n++], ARG_BYTES, "set=%.*s", (int)(eq - a), a);
            snprintf(store[n], ARG_BYTES, "device.%s", a);
        } else if (eq && !strcmp(cm->request, "device_register") &&
                   strncmp(a, "account_id=", 11)) {
            snprintf(store[n], ARG_BYTES, "device.%s", a);
        } else if (eq) {
            snprintf(store[n], ARG_BYTES, "%s", a);
        } else {
            fprintf(stderr, "tide: unexpected argument '%s'\n", a);
            return EXIT_USAGE;
        }
        n++;
    }
    if (npos < cm->npos) {
        fprintf(stderr, "usage: tide %s %s %s\n", cm->group,
                cm->sub ? cm->sub : "", cm->usage);
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < n; i++)
        args[i] = store[i];
    rc = open_client(o, cm->auth, &c);
    if (rc)
        return rc;
    rc = tide_client_call(c, cm->request, args, n, &r);
    if (rc == TIDE_EINVAL) {
        fprintf(stderr, "tide: invalid field or value for %s\n", cm->request);
        tide_client_close(c);
        return EXIT_USAGE;
    }
    if (rc) {
        rc = fail(c, cm->request, rc);
        tide_client_close(c);
        return rc;
    }
    if (!strcmp(cm->request, "login")) {
        const char *tok = tide_result_find(r, 0, "session_token");

        if (tok && save_token(tok))
            fprintf(stderr, "tide: could not save the session token\n");
    }
    /* A sign-up is answered Ok alike for a new and a taken email: the
     * mail to the address says which it was. */
    if (!strcmp(cm->request, "account_create") &&
        (tide_result_rows(r) == 0 || tide_result_cols(r, 0) == 0))
        printf("sign-up received: confirm it with the token mailed to the "
               "address (tide account verify TOKEN)\n");
    print_result(o, r);
    tide_result_free(r);
    tide_client_close(c);
    return 0;
}

static int run_write(const struct opts *o, int argc, char **argv)
{
    struct tide__cli_point pts[MAX_LINE_POINTS];
    const char *file = NULL;
    int line_fmt = 0, rc = 0, flush_rc;
    tide_client *c = NULL;
    char line[65536];
    unsigned long lineno = 0;
    FILE *in = stdin;

    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            printf("usage: tide write [FILE] [--line]\n"
                   "CSV records device,field,timestamp,value (or the line "
                   "format with --line) from FILE or stdin.\n");
            return 0;
        }
        if (!strcmp(argv[i], "--line"))
            line_fmt = 1;
        else if (!file)
            file = argv[i];
        else
            return EXIT_USAGE;
    }
    if (file && strcmp(file, "-")) {
        in = fopen(file, "r");
        if (!in) {
            fprintf(stderr, "tide: %s: %s\n", file, strerror(errno));
            return EXIT_SERVER;
        }
    }
    rc = open_client(o, 1, &c);
    if (rc)
        goto out;
    while (fgets(line, sizeof(line), in)) {
        size_t n = 1;
        int prc;

        lineno++;
        prc = line_fmt ? tide__cli_parse_line(line, now_ns(), pts,
                                              MAX_LINE_POINTS, &n)
                       : tide__cli_parse_csv(line, now_ns(), pts);
        if (prc == 1)
            continue;
        if (prc) {
            fprintf(stderr, "tide: line %lu: malformed record\n", lineno);
            rc = EXIT_USAGE;
            goto out;
        }
        for (size_t i = 0; i < n && !rc; i++) {
            const struct tide__cli_point *p = &pts[i];
            int wrc;

            switch (p->type) {
            case TIDE_VALUE_F64:
                wrc = tide_write_f64(c, p->device, p->field, p->ts_ns, p->f64);
                break;
            case TIDE_VALUE_I64:
                wrc = tide_write_i64(c, p->device, p->field, p->ts_ns, p->i64);
                break;
            case TIDE_VALUE_BOOL:
                wrc = tide_write_bool(c, p->device, p->field, p->ts_ns, p->b);
                break;
            default:
                wrc = tide_write_str(c, p->device, p->field, p->ts_ns, p->str);
                break;
            }
            if (wrc)
                rc = fail(c, "write", wrc);
        }
        if (rc)
            goto out;
    }
    flush_rc = tide_flush(c);
    if (flush_rc)
        rc = fail(c, "flush", flush_rc);
    {
        struct tide_client_stats st;

        tide_client_stats_get(c, &st);
        fprintf(stderr,
                "tide: %" PRIu64 " points acknowledged, %" PRIu64 " rejected\n",
                st.points_acked, st.points_rejected);
    }
out:
    tide_client_close(c);
    if (in != stdin)
        fclose(in);
    return rc;
}

static void print_point(const struct opts *o, const struct tide_series_block *b,
                        size_t i)
{
    char v[64];
    const char *val = v;

    switch (b->type) {
    case TIDE_VALUE_F64:
        snprintf(v, sizeof(v), "%.17g", b->f64[i]);
        break;
    case TIDE_VALUE_I64:
        snprintf(v, sizeof(v), "%" PRId64, b->i64[i]);
        break;
    case TIDE_VALUE_BOOL:
        snprintf(v, sizeof(v), "%s", b->bools[i] ? "true" : "false");
        break;
    default:
        val = b->str[i];
        break;
    }
    if (!strcmp(o->output, "csv")) {
        printf("%s,%s,%" PRId64 ",%s\n", b->device, b->field, b->ts_ns[i], val);
    } else if (!strcmp(o->output, "json")) {
        printf("{\"device\":");
        print_json_str(b->device);
        printf(",\"field\":");
        print_json_str(b->field);
        printf(",\"ts_ns\":%" PRId64 ",\"value\":", b->ts_ns[i]);
        if (b->type == TIDE_VALUE_STR)
            print_json_str(val);
        else
            printf("%s", val);
        printf("}\n");
    } else {
        printf("%-16s %-16s %20" PRId64 " %s\n", b->device, b->field,
               b->ts_ns[i], val);
    }
}

static const char *const agg_names[] = {"none", "count", "sum",   "min",
                                        "max",  "avg",   "first", "last"};

/* A point of a query with several aggregates: one value per aggregate,
 * in the order asked for, named after it in csv headers and json keys. */
static void print_aggs(const struct opts *o, const struct tide_query_params *q,
                       const struct tide_series_block *b, size_t i)
{
    int json = !strcmp(o->output, "json"), csv = !strcmp(o->output, "csv");

    if (json) {
        printf("{\"device\":");
        print_json_str(b->device);
        printf(",\"field\":");
        print_json_str(b->field);
        printf(",\"ts_ns\":%" PRId64, b->ts_ns[i]);
    } else if (csv) {
        printf("%s,%s,%" PRId64, b->device, b->field, b->ts_ns[i]);
    } else {
        printf("%-16s %-16s %20" PRId64, b->device, b->field, b->ts_ns[i]);
    }
    for (size_t a = 0; a < b->n_aggs && a < q->n_aggs; a++) {
        double v = b->agg_values[i * b->n_aggs + a];

        if (json && isfinite(v))
            printf(",\"%s\":%.17g", agg_names[q->aggs[a]], v);
        else if (json)
            printf(",\"%s\":\"%s\"", agg_names[q->aggs[a]],
                   isnan(v) ? "NaN"
                   : v > 0  ? "Infinity"
                            : "-Infinity");
        else
            printf("%s%.17g", csv ? "," : " ", v);
    }
    printf(json ? "}\n" : "\n");
}

/* Parse "avg,max" into aggs[0..*n), at most `max` entries. Returns
 * 1, or 0 for a name that is no aggregate or too many of them. */
static int parse_aggs(const char *v, enum tide_agg *aggs, size_t max, size_t *n)
{
    *n = 0;
    while (*v) {
        size_t len = strcspn(v, ",");
        int found = 0;

        for (int k = 1; k < 8 && !found; k++)
            if (strlen(agg_names[k]) == len && !strncmp(v, agg_names[k], len))
                found = k;
        if (!found || *n == max)
            return 0;
        aggs[(*n)++] = (enum tide_agg)found;
        v += len;
        if (*v == ',' && !*++v)
            return 0; /* a trailing comma */
    }
    return *n > 0;
}

static int run_query(const struct opts *o, int argc, char **argv)
{
    enum tide_agg aggs[8];
    const char *devices[MAX_ARGS], *fields[MAX_ARGS];
    struct tide_query_params q = {0};
    struct tide_series_block b;
    struct tide_query_stats st;
    tide_query_iter *it = NULL;
    tide_client *c = NULL;
    int64_t now = now_ns();
    int rc;

    q.devices = devices;
    q.fields = fields;
    q.from_ns = now - 3600LL * 1000000000LL;
    q.to_ns = now + 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1;

        if (!strcmp(a, "--help")) {
            printf("usage: tide query [--device D].. [--field F].. "
                   "[--from T] [--to T] [--agg FN[,FN]..] [--bucket DUR] "
                   "[--bucket-offset DUR] [--by-device] [--latest] "
                   "[--limit N] [--desc]\n"
                   "T: now, -1h, now-30m, RFC3339 or ns; FN: count sum min "
                   "max avg first last (up to 8, comma-separated)\n"
                   "buckets start at multiples of DUR since the epoch, "
                   "shifted by --bucket-offset (may be negative)\n");
            return 0;
        }
        if (!strcmp(a, "--latest")) {
            q.latest = 1;
            continue;
        }
        if (!strcmp(a, "--desc")) {
            q.descending = 1;
            continue;
        }
        if (!strcmp(a, "--by-device")) {
            q.group_by_device = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "tide: %s needs a value\n", a);
            return EXIT_USAGE;
        }
        i++;
        if (!strcmp(a, "--device") && q.n_devices < MAX_ARGS)
            devices[q.n_devices++] = v;
        else if (!strcmp(a, "--field") && q.n_fields < MAX_ARGS)
            fields[q.n_fields++] = v;
        else if (!strcmp(a, "--from"))
            ok = !tide__cli_parse_time(v, now, &q.from_ns);
        else if (!strcmp(a, "--to"))
            ok = !tide__cli_parse_time(v, now, &q.to_ns);
        else if (!strcmp(a, "--bucket"))
            ok = !tide__cli_parse_duration(v, &q.bucket_ns);
        else if (!strcmp(a, "--bucket-offset")) {
            ok =
                !tide__cli_parse_duration(v + (*v == '-'), &q.bucket_offset_ns);
            if (*v == '-')
                q.bucket_offset_ns = -q.bucket_offset_ns;
        } else if (!strcmp(a, "--limit"))
            q.limit = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--agg")) {
            size_t n = 0;

            ok = parse_aggs(v, aggs, sizeof(aggs) / sizeof(aggs[0]), &n);
            /* One aggregate goes as v1's `aggregation`, so that an older
             * server answers it too. */
            q.agg = ok && n == 1 ? aggs[0] : TIDE_AGG_NONE;
            q.aggs = ok && n > 1 ? aggs : NULL;
            q.n_aggs = ok && n > 1 ? n : 0;
        } else
            ok = 0;
        if (!ok) {
            fprintf(stderr, "tide: bad option %s %s\n", a, v);
            return EXIT_USAGE;
        }
    }
    rc = open_client(o, 1, &c);
    if (rc)
        return rc;
    rc = tide_query_open(c, &q, &it);
    if (rc) {
        rc = fail(c, "query", rc);
        tide_client_close(c);
        return rc;
    }
    if (!strcmp(o->output, "csv") && q.n_aggs == 0) {
        printf("device,field,ts_ns,value\n");
    } else if (!strcmp(o->output, "csv")) {
        printf("device,field,ts_ns");
        for (size_t a = 0; a < q.n_aggs; a++)
            printf(",%s", agg_names[q.aggs[a]]);
        printf("\n");
    }
    while ((rc = tide_query_next(it, &b)) == 0)
        for (size_t i = 0; i < b.n; i++) {
            if (q.n_aggs)
                print_aggs(o, &q, &b, i);
            else
                print_point(o, &b, i);
        }
    if (rc == TIDE_CLIENT_DONE) {
        rc = 0;
        if (!tide_query_stats_get(it, &st))
            fprintf(stderr,
                    "tide: %" PRIu64 " points, %" PRIu64 " series, %" PRIu64
                    " us%s\n",
                    st.points, st.series, st.elapsed_us,
                    st.truncated ? " (truncated)" : "");
    } else {
        rc = fail(c, "query", rc);
    }
    tide_query_close(it);
    tide_client_close(c);
    return rc;
}

/* tide export: the account's data to standard output, chunk by chunk. */
static int run_export(const struct opts *o, int argc, char **argv)
{
    struct tide_export_params p = {0};
    struct tide_export_stats st;
    tide_query_iter *it = NULL;
    tide_client *c = NULL;
    const char *section;
    const uint8_t *data;
    size_t len;
    int64_t now = now_ns();
    int rc;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1;

        if (!strcmp(a, "--help")) {
            printf("usage: tide export [--telemetry] [--csv] [--from T] "
                   "[--to T] [--account N]\n"
                   "Every record of the account as JSON lines, then with "
                   "--telemetry its points (JSON lines, or CSV with "
                   "--csv), on standard output.\n");
            return 0;
        }
        if (!strcmp(a, "--telemetry")) {
            p.telemetry = 1;
            continue;
        }
        if (!strcmp(a, "--csv")) {
            p.csv = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "tide: %s needs a value\n", a);
            return EXIT_USAGE;
        }
        i++;
        if (!strcmp(a, "--from"))
            ok = !tide__cli_parse_time(v, now, &p.from_ns);
        else if (!strcmp(a, "--to"))
            ok = !tide__cli_parse_time(v, now, &p.to_ns);
        else if (!strcmp(a, "--account"))
            p.account_id = strtoull(v, NULL, 10);
        else
            ok = 0;
        if (!ok) {
            fprintf(stderr, "tide: bad option %s %s\n", a, v);
            return EXIT_USAGE;
        }
    }
    rc = open_client(o, 1, &c);
    if (rc)
        return rc;
    rc = tide_export_open(c, &p, &it);
    while (rc == 0 && (rc = tide_export_next(it, &section, &data, &len)) == 0)
        if (fwrite(data, 1, len, stdout) != len) {
            perror("tide: export");
            rc = -EIO;
        }
    if (rc == TIDE_CLIENT_DONE && !tide_export_stats_get(it, &st)) {
        fprintf(stderr, "tide: %" PRIu64 " rows, %" PRIu64 " bytes, sha256 ",
                st.rows, st.bytes);
        for (int i = 0; i < 32; i++)
            fprintf(stderr, "%02x", st.sha256[i]);
        fprintf(stderr, "\n");
        rc = 0;
    } else {
        rc = fail(c, "export", rc);
    }
    tide_query_close(it);
    tide_client_close(c);
    return rc;
}

/* A wall-clock time in ns as RFC 3339 UTC, "-" for 0 (none). */
static const char *fmt_time(int64_t ns, char *buf, size_t n)
{
    time_t t = (time_t)(ns / 1000000000LL);
    struct tm tm;

    if (ns <= 0 || !gmtime_r(&t, &tm))
        return "-";
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/* A TTL in seconds as whole days ("7d"), hours or seconds. */
static const char *fmt_ttl(int64_t s, char *buf, size_t n)
{
    if (s > 0 && s % 86400 == 0)
        snprintf(buf, n, "%" PRId64 "d", s / 86400);
    else if (s > 0 && s % 3600 == 0)
        snprintf(buf, n, "%" PRId64 "h", s / 3600);
    else
        snprintf(buf, n, "%" PRId64 "s", s);
    return buf;
}

/* Print named values as one record in the --output format. */
static void print_record(const struct opts *o, const char *const *names,
                         const char *const *values, size_t n, int header)
{
    if (!strcmp(o->output, "json")) {
        putchar('{');
        for (size_t k = 0; k < n; k++) {
            printf("%s", k ? "," : "");
            print_json_str(names[k]);
            putchar(':');
            print_json_str(values[k]);
        }
        printf("}\n");
    } else if (!strcmp(o->output, "csv")) {
        for (size_t k = 0; header && k < n; k++)
            printf("%s%s", names[k], k + 1 < n ? "," : "\n");
        for (size_t k = 0; k < n; k++)
            printf("%s%s", values[k], k + 1 < n ? "," : "\n");
    } else {
        for (size_t k = 0; k < n; k++)
            printf("%-24s %s\n", names[k], values[k]);
    }
}

/* tide admin compact [--wait]: force a compaction pass. */
static int run_compact(const struct opts *o, int argc, char **argv)
{
    struct tide_compaction_stats st;
    tide_client *c = NULL;
    uint32_t timeout_ms = 0;
    int wait = 0, rc;

    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            printf("usage: tide admin compact [--wait] [--timeout SECONDS]\n"
                   "Force a compaction pass (operator). With --wait, return "
                   "once it is done (no time limit unless --timeout).\n");
            return 0;
        }
        if (!strcmp(argv[i], "--wait")) {
            wait = 1;
        } else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            char *end;
            unsigned long v = strtoul(argv[++i], &end, 10);

            if (*end || !v || v > 4000000) {
                fprintf(stderr, "tide: bad --timeout %s\n", argv[i]);
                return EXIT_USAGE;
            }
            timeout_ms = (uint32_t)(v * 1000);
        } else {
            fprintf(stderr, "tide: unexpected argument '%s'\n", argv[i]);
            return EXIT_USAGE;
        }
    }
    rc = open_client(o, 1, &c);
    if (rc)
        return rc;
    rc = tide_client_compact(c, wait, timeout_ms, &st);
    if (rc) {
        rc = fail(c, "admin compact", rc);
    } else {
        static const char *const names[] = {"state",
                                            "runs",
                                            "bytes_read",
                                            "bytes_written",
                                            "points_expired",
                                            "points_erased",
                                            "points_deduplicated",
                                            "files_deleted",
                                            "errors",
                                            "running",
                                            "oldest_uncompacted",
                                            "next_compaction"};
        char v[9][24], t1[32], t2[32];
        const char *values[12];

        snprintf(v[0], 24, "%" PRIu64, st.runs);
        snprintf(v[1], 24, "%" PRIu64, st.bytes_read);
        snprintf(v[2], 24, "%" PRIu64, st.bytes_written);
        snprintf(v[3], 24, "%" PRIu64, st.points_expired);
        snprintf(v[4], 24, "%" PRIu64, st.points_erased);
        snprintf(v[5], 24, "%" PRIu64, st.points_deduplicated);
        snprintf(v[6], 24, "%" PRIu64, st.files_deleted);
        snprintf(v[7], 24, "%" PRIu64, st.errors);
        snprintf(v[8], 24, "%s", st.running ? "true" : "false");
        values[0] = wait ? "done" : "queued";
        for (int k = 0; k < 9; k++)
            values[k + 1] = v[k];
        values[10] = fmt_time(st.oldest_uncompacted_ns, t1, sizeof(t1));
        values[11] = fmt_time(st.next_compaction_ns, t2, sizeof(t2));
        print_record(o, names, values, 12, 1);
    }
    tide_client_close(c);
    return rc;
}

/* tide retention [--account N]: each account against its tier's TTL. */
static int run_retention(const struct opts *o, int argc, char **argv)
{
    static const char *const names[] = {
        "account",         "tier",           "ttl",
        "oldest_point",    "points",         "bytes",
        "expiring_points", "expiring_bytes", "next_compaction"};
    struct tide_retention_row *rows = NULL;
    tide_client *c = NULL;
    uint64_t account = 0;
    size_t n = 0;
    int rc;

    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            printf("usage: tide retention [--account N]\n"
                   "Per account: tier, TTL, oldest point kept, points and "
                   "bytes stored, what expires at the next compaction and "
                   "when that runs.\n");
            return 0;
        }
        if (!strcmp(argv[i], "--account") && i + 1 < argc) {
            char *end;

            account = strtoull(argv[++i], &end, 10);
            if (*end || !account) {
                fprintf(stderr, "tide: bad --account %s\n", argv[i]);
                return EXIT_USAGE;
            }
        } else {
            fprintf(stderr, "tide: unexpected argument '%s'\n", argv[i]);
            return EXIT_USAGE;
        }
    }
    rc = open_client(o, 1, &c);
    if (rc)
        return rc;
    rc = tide_client_retention(c, account, &rows, &n);
    if (rc) {
        rc = fail(c, "retention", rc);
        tide_client_close(c);
        return rc;
    }
    if (!strcmp(o->output, "table"))
        printf("%-8s %-10s %-6s %-20s %12s %12s %12s %12s %s\n", "ACCOUNT",
               "TIER", "TTL", "OLDEST POINT", "POINTS", "BYTES", "EXP.POINTS",
               "EXP.BYTES", "NEXT COMPACTION");
    for (size_t i = 0; i < n; i++) {
        const struct tide_retention_row *r = &rows[i];
        char id[24], ttl[24], t1[32], t2[32], v[4][24];
        char tier[48];

        snprintf(id, sizeof(id), "%" PRIu64, r->account_id);
        snprintf(tier, sizeof(tier), "%s%s", r->tier,
                 r->deleted ? " (deleted)" : "");
        fmt_ttl(r->ttl_s, ttl, sizeof(ttl));
        fmt_time(r->oldest_ts_ns, t1, sizeof(t1));
        snprintf(v[0], 24, "%" PRIu64, r->points);
        snprintf(v[1], 24, "%" PRIu64, r->bytes);
        snprintf(v[2], 24, "%" PRIu64, r->expiring_points);
        snprintf(v[3], 24, "%" PRIu64, r->expiring_bytes);
        if (!strcmp(o->output, "table")) {
            printf("%-8s %-10s %-6s %-20s %12s %12s %12s %12s %s\n", id, tier,
                   ttl, fmt_time(r->oldest_ts_ns, t1, sizeof(t1)), v[0], v[1],
                   v[2], v[3], fmt_time(r->next_compaction_ns, t2, sizeof(t2)));
        } else {
            const char *values[9] = {
                id,
                tier,
                ttl,
                fmt_time(r->oldest_ts_ns, t1, sizeof(t1)),
                v[0],
                v[1],
                v[2],
                v[3],
                fmt_time(r->next_compaction_ns, t2, sizeof(t2))};

            print_record(o, names, values, 9, i == 0);
        }
    }
    if (n == 0)
        fprintf(stderr, "tide: no accounts\n");
    tide_client_retention_free(rows);
    tide_client_close(c);
    return 0;
}

/* tide account erasure-report ACCOUNT_ID: where the account's data still
 * lives, and when it will be gone. */
static int run_erasure_report(const struct opts *o, int argc, char **argv)
{
    struct tide_erasure_report er;
    tide_client *c = NULL;
    uint64_t account = 0;
    char t[32];
    int rc;

    for (int i = 0; i < argc; i++) {
        char *end;

        if (!strcmp(argv[i], "--help")) {
            printf("usage: tide account erasure-report ACCOUNT_ID\n"
                   "Where the account's data still lives (segments, WAL, "
                   "memory, sidecar rows) and when it will be gone "
                   "(operator).\n");
            return 0;
        }
        account = strtoull(argv[i], &end, 10);
        if (*end || !account || i) {
            fprintf(stderr, "usage: tide account erasure-report ACCOUNT_ID\n");
            return EXIT_USAGE;
        }
    }
    if (!account) {
        fprintf(stderr, "usage: tide account erasure-report ACCOUNT_ID\n");
        return EXIT_USAGE;
    }
    rc = open_client(o, 1, &c);
    if (rc)
        return rc;
    rc = tide_client_erasure_report(c, account, &er);
    if (rc) {
        rc = fail(c, "account erasure-report", rc);
        tide_client_close(c);
        return rc;
    }
    fmt_time(er.next_compaction_ns, t, sizeof(t));
    if (strcmp(o->output, "table")) {
        enum { NUMS = 9, MAXV = NUMS + TIDE_SIDECAR_TABLES_MAX + 4 };
        static const char *const num_names[NUMS] = {
            "account",     "segment_files", "segment_bytes",
            "points",      "wal_files",     "wal_bytes",
            "head_points", "files_scanned", "bytes_scanned"};
        const uint64_t nums[NUMS] = {
            er.account_id,  er.segment_files, er.segment_bytes,
            er.points,      er.wal_files,     er.wal_bytes,
            er.head_points, er.files_scanned, er.bytes_scanned};
        const char *names[MAXV], *values[MAXV];
        char v[MAXV][24], tn[TIDE_SIDECAR_TABLES_MAX][48], kt[64], cb[24];
        size_t k = 0;

        for (; k < NUMS; k++) {
            snprintf(v[k], 24, "%" PRIu64, nums[k]);
            names[k] = num_names[k];
            values[k] = v[k];
        }
        for (size_t i = 0; i < er.n_tables; i++, k++) {
            snprintf(tn[i], sizeof(tn[i]), "sidecar.%s", er.tables[i].table);
            snprintf(v[k], 24, "%" PRIu64, er.tables[i].rows);
            names[k] = tn[i];
            values[k] = v[k];
        }
        names[k] = "next_compaction";
        values[k++] = t;
        names[k] = "nothing_found";
        values[k++] = er.nothing_found ? "true" : "false";
        fmt_time(er.data_key_destroyed_ns, kt, sizeof(kt));
        names[k] = "data_key_destroyed";
        values[k++] = er.data_key_destroyed_ns ? kt : "";
        snprintf(cb, sizeof(cb), "%" PRIu64, er.ciphertext_bytes);
        names[k] = "ciphertext_bytes";
        values[k++] = cb;
        print_record(o, names, values, k, 1);
        tide_client_close(c);
        return 0;
    }
    printf("account %" PRIu64 "\n", er.account_id);
    if (er.nothing_found) {
        printf("nothing found: no segment, WAL record, unflushed point or "
               "sidecar row of the account is left\n");
    } else {
        printf("%-14s %" PRIu64 " files, %" PRIu64 " bytes, %" PRIu64
               " points%s%s%s\n",
               "segments", er.segment_files, er.segment_bytes, er.points,
               er.segment_files ? ": gone after the next compaction (" : "",
               er.segment_files ? t : "",
               er.segment_files ? ", or tide admin compact)" : "");
        printf("%-14s %" PRIu64 " files, %" PRIu64 " bytes%s\n", "wal",
               er.wal_files, er.wal_bytes,
               er.wal_files ? ": gone once checkpointed (after the next "
                              "flush)"
                            : "");
        printf("%-14s %" PRIu64 " points%s\n", "memory", er.head_points,
               er.head_points ? ": written to segments at the next flush" : "");
    }
    for (size_t i = 0; i < er.n_tables; i++) {
        int tomb = !strcmp(er.tables[i].table, "tombstones");
        const char *when = !er.tables[i].rows ? ""
                           : tomb ? "  kept: the record of the deletion"
                                  : "  removed when the account is purged";

        if (er.tables[i].rows || !er.nothing_found)
            printf("sidecar %-14s %8" PRIu64 " rows%s\n", er.tables[i].table,
                   er.tables[i].rows, when);
    }
    if (er.data_key_destroyed_ns) {
        char kt[64];

        fmt_time(er.data_key_destroyed_ns, kt, sizeof(kt));
        printf("data key destroyed %s: nothing of the account in this data "
               "directory can be decrypted any more; a backup taken before "
               "then still holds the key, wrapped, until the master key it "
               "was made under is destroyed (tide admin rotate-master-key, "
               "then delete the old key file and its copies)\n",
               kt);
        if (er.ciphertext_bytes)
            printf("%-14s %" PRIu64 " bytes of its ciphertext still in "
                   "segments, unreadable; removed by the next compaction\n",
                   "ciphertext", er.ciphertext_bytes);
    }
    printf("evidence: %" PRIu64 " files, %" PRIu64 " bytes scanned\n",
           er.files_scanned, er.bytes_scanned);
    tide_client_close(c);
    return 0;
}

/* tide admin keygen FILE: a new random master key (docs/operations.md,
 * "Encryption at rest"), made here, never sent anywhere. */
static int run_keygen(int argc, char **argv)
{
    char why[1200];
    uint8_t key[TIDE_KEY_BYTES], id[TIDE_KEY_ID_BYTES];

    if (argc != 1 || !strcmp(argv[0], "--help")) {
        fprintf(argc == 1 ? stdout : stderr,
                "usage: tide admin keygen FILE\n"
                "Writes a new random master key to FILE (mode 0600; never "
                "over an existing file).\nBack it up apart from the data "
                "directory: without it the data cannot be read.\n");
        return argc == 1 ? 0 : EXIT_USAGE;
    }
    if (tide_crypto_master_create(argv[0], why, sizeof(why)) ||
        tide_crypto_master_load(argv[0], key, why, sizeof(why))) {
        fprintf(stderr, "tide: %s\n", why);
        return EXIT_SERVER;
    }
    tide_crypto_key_id(key, id);
    tide_crypto_wipe(key, sizeof(key));
    printf("master key written to %s (id ", argv[0]);
    for (int i = 0; i < TIDE_KEY_ID_BYTES; i++)
        printf("%02x", id[i]);
    printf(")\n");
    return 0;
}

/* TIDE_TLS, TIDE_CA, TIDE_TLS_CERT, TIDE_TLS_KEY, TIDE_TLS_SERVER_NAME:
 * each fills what no flag set. */
static void tls_from_env(struct opts *o)
{
    const char *v = getenv("TIDE_TLS");

    if (v && *v && strcmp(v, "0"))
        o->tls = 1;
    if (!o->ca && (v = getenv("TIDE_CA")) && *v)
        o->ca = v, o->tls = 1;
    if (!o->cert && (v = getenv("TIDE_TLS_CERT")) && *v)
        o->cert = v, o->tls = 1;
    if (!o->cert_key && (v = getenv("TIDE_TLS_KEY")) && *v)
        o->cert_key = v;
    if (!o->server_name && (v = getenv("TIDE_TLS_SERVER_NAME")) && *v)
        o->server_name = v;
}

int main(int argc, char **argv)
{
    struct opts o = {.host = "127.0.0.1", .port = 8433, .output = "table"};
    int i;

    for (i = 1; i < argc && !strncmp(argv[i], "--", 2); i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (!strcmp(a, "--help")) {
            usage_all(stdout);
            return 0;
        }
        if (!strcmp(a, "--tls") || !strcmp(a, "--tls-insecure-skip-verify") ||
            !strcmp(a, "--cert-auth")) {
            o.tls = 1;
            o.insecure |= !strcmp(a, "--tls-insecure-skip-verify");
            o.cert_auth |= !strcmp(a, "--cert-auth");
            continue;
        }
        if (!v) {
            usage_all(stderr);
            return EXIT_USAGE;
        }
        i++;
        if (!strcmp(a, "--host"))
            o.host = v;
        else if (!strcmp(a, "--port"))
            o.port = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--key"))
            o.key = v;
        else if (!strcmp(a, "--ca"))
            o.ca = v, o.tls = 1;
        else if (!strcmp(a, "--tls-server-name"))
            o.server_name = v, o.tls = 1;
        else if (!strcmp(a, "--tls-cert"))
            o.cert = v, o.tls = 1;
        else if (!strcmp(a, "--tls-key"))
            o.cert_key = v, o.tls = 1;
        else if (!strcmp(a, "--output") &&
                 (!strcmp(v, "table") || !strcmp(v, "csv") ||
                  !strcmp(v, "json")))
            o.output = v;
        else {
            usage_all(stderr);
            return EXIT_USAGE;
        }
    }
    if (i >= argc || !o.port || o.port > 65535) {
        usage_all(stderr);
        return EXIT_USAGE;
    }
    if (!o.key)
        o.key = getenv("TIDE_KEY");
    tls_from_env(&o);
    if (load_config(&o))
        return EXIT_SERVER;
    if (!o.key && o.cfg_key[0])
        o.key = o.cfg_key;
    if (o.cfg_token[0])
        o.token = o.cfg_token;
    if (!strcmp(argv[i], "write"))
        return run_write(&o, argc - i - 1, argv + i + 1);
    if (!strcmp(argv[i], "query"))
        return run_query(&o, argc - i - 1, argv + i + 1);
    if (!strcmp(argv[i], "export"))
        return run_export(&o, argc - i - 1, argv + i + 1);
    if (!strcmp(argv[i], "retention"))
        return run_retention(&o, argc - i - 1, argv + i + 1);
    if (!strcmp(argv[i], "admin") && i + 1 < argc &&
        !strcmp(argv[i + 1], "compact"))
        return run_compact(&o, argc - i - 2, argv + i + 2);
    if (!strcmp(argv[i], "admin") && i + 1 < argc &&
        !strcmp(argv[i + 1], "keygen"))
        return run_keygen(argc - i - 2, argv + i + 2);
    if (!strcmp(argv[i], "account") && i + 1 < argc &&
        !strcmp(argv[i + 1], "erasure-report"))
        return run_erasure_report(&o, argc - i - 2, argv + i + 2);
    for (size_t k = 0; k < sizeof(cmds) / sizeof(cmds[0]); k++) {
        const struct cmd *cm = &cmds[k];
        int skip = cm->sub ? 2 : 1;

        if (strcmp(argv[i], cm->group))
            continue;
        if (cm->sub && (i + 1 >= argc || strcmp(argv[i + 1], cm->sub)))
            continue;
        return run_admin(&o, cm, argc - i - skip, argv + i + skip);
    }
    fprintf(stderr, "tide: unknown command '%s'\n", argv[i]);
    usage_all(stderr);
    return EXIT_USAGE;
}
