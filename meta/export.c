/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The export iterator: every row that belongs to one account, as one JSON
 * object per row (JSON lines), read from one snapshot on a private
 * read-only connection. Secrets (password hash, key and token hashes,
 * verification hash) are never selected.
 */
#include "meta_int.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

/* Each table's columns, in export order; ?1 is the account id. */
static const struct {
    const char *table;
    const char *sql;
} parts[] = {
    {"account",
     "SELECT id, tide_dec(email, 'accounts.email', id) AS email,"
     " tide_dec(first_name, 'accounts.first_name', id) AS first_name,"
     " tide_dec(surname, 'accounts.surname', id) AS surname,"
     " tide_dec(organization, 'accounts.organization', id) AS organization,"
     " timezone,"
     " email_verified, tier, plan_status, billing_customer_id,"
     " billing_period, notify_device, notify_usage, notify_product, paused,"
     " created_ns, updated_ns FROM accounts WHERE id=?1"},
    {"device", "SELECT id, tide_dec(thing_name, 'devices.thing_name',"
               " account_id) AS thing_name,"
               " tide_dec(mac, 'devices.mac', account_id) AS mac,"
               " tide_dec(friendly_name, 'devices.friendly_name',"
               " account_id) AS friendly_name, firmware, tags,"
               " online, paused, last_connect_ns,"
               " tide_dec(last_ip, 'devices.last_ip', account_id) AS last_ip,"
               " last_seen_ns,"
               " created_ns, updated_ns FROM devices WHERE account_id=?1"
               " ORDER BY id"},
    {"key", "SELECT id, device_id, role, name, prefix, created_ns,"
            " last_used_ns, tide_dec(last_ip, 'api_keys.last_ip',"
            " account_id) AS last_ip, requests, revoked, revoked_ns"
            " FROM api_keys WHERE account_id=?1 ORDER BY id"},
    {"session", "SELECT id, created_ns, expires_ns,"
                " tide_dec(ip, 'sessions.ip', account_id) AS ip, ended"
                " FROM sessions"
                " WHERE account_id=?1 ORDER BY id"},
    {"series", "SELECT id, device_id, field, type, created_ns, deleted_ns"
               " FROM series WHERE account_id=?1 ORDER BY id"},
    {"usage", "SELECT day, messages, points, bytes_in, bytes_out, queries"
              " FROM usage_daily WHERE account_id=?1 ORDER BY day"},
    {"auth_log", "SELECT id, ts_ns, key_id, kind, ok, reason,"
                 " tide_dec(ip, 'auth_log.ip', account_id) AS ip"
                 " FROM auth_log WHERE account_id=?1 ORDER BY id"},
    {"request_log", "SELECT id, ts_ns, key_id,"
                    " tide_dec(ip, 'request_log.ip', account_id) AS ip, op,"
                    " bytes_in, bytes_out,"
                    " status FROM request_log WHERE account_id=?1"
                    " ORDER BY id"},
    {"request_daily", "SELECT day, op, requests, errors, bytes_in, bytes_out"
                      " FROM request_daily WHERE account_id=?1"
                      " ORDER BY day, op"},
    {"notification", "SELECT id, ts_ns, kind, tide_dec(text,"
                     " 'notifications.text', account_id) AS text, read"
                     " FROM notifications"
                     " WHERE account_id=?1 ORDER BY id"},
};

#define N_PARTS (sizeof(parts) / sizeof(parts[0]))

struct tide_meta_export {
    sqlite3 *db;
    sqlite3_stmt *st;
    uint64_t account_id;
    size_t part;
    struct tide_buf json;
};

static int put(struct tide_buf *b, const char *s, size_t n)
{
    return tide__buf_append(b, s, n);
}

/* A JSON string. Valid UTF-8 passes through; any other byte >= 0x80 (a
 * series field is raw bytes) is written as \u00XX. */
static int put_string(struct tide_buf *b, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    int rc = put(b, "\"", 1);

    for (size_t i = 0; !rc && i < n; i++) {
        unsigned c = s[i];
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

        if (c == '"' || c == '\\') {
            char e2[2] = {'\\', (char)c};

            rc = put(b, e2, 2);
        } else if (c < 0x20 || c == 0x7f) {
            rc = put(b, esc, 6);
        } else if (c < 0x80) {
            rc = put(b, (const char *)&s[i], 1);
        } else {
            size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
            char tmp[5];
            int ok = len && i + len <= n;

            for (size_t k = 1; ok && k < len; k++)
                ok = (s[i + k] & 0xc0) == 0x80;
            if (ok) {
                memcpy(tmp, &s[i], len);
                tmp[len] = '\0';
                ok = tide__meta_text_ok(tmp, 4, 0) == 0;
            }
            if (ok) {
                rc = put(b, (const char *)&s[i], len);
                i += len - 1;
            } else {
                rc = put(b, esc, 6);
            }
        }
    }
    return rc ? rc : put(b, "\"", 1);
}

static int row_json(tide_meta_export *it)
{
    sqlite3_stmt *st = it->st;
    char num[32];
    int rc = 0, n = sqlite3_column_count(st);

    it->json.len = 0;
    rc = put(&it->json, "{", 1);
    for (int i = 0; !rc && i < n; i++) {
        const char *name = sqlite3_column_name(st, i);

        if (i)
            rc = put(&it->json, ",", 1);
        if (!rc)
            rc = put_string(&it->json, (const unsigned char *)name,
                            strlen(name));
        if (!rc)
            rc = put(&it->json, ":", 1);
        if (rc)
            break;
        switch (sqlite3_column_type(st, i)) {
        case SQLITE_INTEGER:
            snprintf(num, sizeof(num), "%lld",
                     (long long)sqlite3_column_int64(st, i));
            rc = put(&it->json, num, strlen(num));
            break;
        case SQLITE_FLOAT:
            snprintf(num, sizeof(num), "%.17g", sqlite3_column_double(st, i));
            rc = put(&it->json, num, strlen(num));
            break;
        case SQLITE_NULL:
            rc = put(&it->json, "null", 4);
            break;
        default: {
            const unsigned char *v = sqlite3_column_blob(st, i);

            rc = put_string(&it->json, v ? v : (const unsigned char *)"",
                            (size_t)sqlite3_column_bytes(st, i));
            break;
        }
        }
    }
    if (!rc)
        rc = put(&it->json, "}\0", 2);
    if (!rc)
        it->json.len--;
    return rc;
}

int tide_meta_export_open(tide_meta *m, const struct tide_meta_principal *p,
                          uint64_t account_id, tide_meta_export **out)
{
    char path[PATH_MAX];
    tide_meta_export *it = NULL;
    int rc, src;

    if (!out || !account_id)
        return TIDE_EINVAL;
    rc = tide__meta_authorize_flush(m, p, TIDE_META_ACT_EXPORT, account_id, 0);
    if (rc)
        return rc;
    it = tide_calloc(1, sizeof(*it));
    if (!it)
        return -ENOMEM;
    it->account_id = account_id;
    snprintf(path, sizeof(path), "%s/meta.db", m->dir);
    src = sqlite3_open_v2(path, &it->db,
                          SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (src != SQLITE_OK) {
        rc = tide__meta_sqlerr(src);
        goto fail;
    }
    sqlite3_busy_timeout(it->db, 5000);
    /* The sealed columns are opened by tide_dec (crypt.c), which reads
     * the key cache only: no SQL on m's connection, no m->lock. */
    rc = tide__meta_crypt_functions(m, it->db);
    if (rc)
        goto fail;
    /* One read transaction over every part: one consistent snapshot,
     * taken now by the first read, not at the first export_next(). */
    src = sqlite3_exec(it->db, "BEGIN; SELECT count(*) FROM schema_version",
                       NULL, NULL, NULL);
    if (src != SQLITE_OK) {
        rc = tide__meta_sqlerr(src);
        goto fail;
    }
    *out = it;
    return 0;

fail:
    tide_meta_export_close(it);
    return rc;
}

int tide_meta_export_next(tide_meta_export *it,
                          struct tide_meta_export_row *row)
{
    int rc, src;

    while (it->part < N_PARTS) {
        if (!it->st) {
            src = sqlite3_prepare_v2(it->db, parts[it->part].sql, -1, &it->st,
                                     NULL);
            if (src != SQLITE_OK)
                return tide__meta_sqlerr(src);
            sqlite3_bind_int64(it->st, 1, (sqlite3_int64)it->account_id);
        }
        src = sqlite3_step(it->st);
        if (src == SQLITE_ROW) {
            rc = row_json(it);
            if (rc)
                return rc;
            row->table = parts[it->part].table;
            row->json = (const char *)it->json.data;
            row->json_len = it->json.len;
            return 0;
        }
        sqlite3_finalize(it->st);
        it->st = NULL;
        if (src != SQLITE_DONE)
            return tide__meta_sqlerr(src);
        it->part++;
    }
    return 1;
}

void tide_meta_export_close(tide_meta_export *it)
{
    if (!it)
        return;
    sqlite3_finalize(it->st);
    if (it->db) {
        sqlite3_exec(it->db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(it->db);
    }
    tide__buf_fini(&it->json);
    tide_free(it);
}
