/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Devices ("things"): registration, metadata rectification, listing,
 * pause, deletion with tombstone, and connection events. Last-seen times
 * from the write path are buffered in usage.c.
 */
#include "meta_int.h"

#include <string.h>

struct dev_fields {
    char mac[TIDE_META_MAC_LEN + 1];
};

/* Validate `d`; `reg` says whether thing_name is required. */
static int check_fields(const struct tide_meta_device_new *d, int reg,
                        struct dev_fields *f)
{
    if (!d)
        return TIDE_EINVAL;
    if ((reg || d->thing_name) &&
        tide__meta_text_ok(d->thing_name, TIDE_META_NAME_MAX, 0))
        return TIDE_EINVAL;
    if (d->mac && tide__meta_mac_norm(d->mac, f->mac))
        return TIDE_EINVAL;
    if (!d->mac)
        f->mac[0] = '\0';
    if ((d->friendly_name &&
         tide__meta_text_ok(d->friendly_name, TIDE_META_NAME_MAX, 1)) ||
        (d->firmware &&
         tide__meta_text_ok(d->firmware, TIDE_META_FIRMWARE_MAX, 1)) ||
        (d->tags && tide__meta_text_ok(d->tags, TIDE_META_TAGS_MAX, 1)))
        return TIDE_EINVAL;
    return 0;
}

/* The tier's device limit is checked once per transaction, then counted
 * down as devices are inserted. The count is account_counts' (kept by
 * triggers, migration 5): a count(*) per check made registering n devices
 * a few at a time O(n^2). */
static const char SQL_DEV_LIMIT[] =
    "SELECT t.devices_max, coalesce((SELECT c.devices FROM account_counts c"
    " WHERE c.account_id=a.id), 0) FROM accounts a JOIN tiers t ON t.id=a.tier"
    " WHERE a.id=?1";
/* tide_enc seals the personal columns and tide_mac makes the thing
 * name's lookup hash when encryption is on; otherwise they leave the
 * value as it is and the hash NULL (crypt.c). */
static const char SQL_DEV_INSERT[] =
    "INSERT INTO devices(account_id, thing_name, thing_hmac, mac,"
    " friendly_name, firmware, tags, created_ns, updated_ns)"
    " VALUES(?1, tide_enc(?2, 'devices.thing_name', ?1),"
    " tide_mac('thing', ?1, ?2), tide_enc(?3, 'devices.mac', ?1),"
    " tide_enc(?4, 'devices.friendly_name', ?1), ?5, ?6, ?7, ?7)";
static const char SQL_DEV_ID[] =
    "SELECT id FROM devices WHERE account_id=?1 AND thing_name=?2";
static const char SQL_DEV_ID_HMAC[] =
    "SELECT id FROM devices WHERE account_id=?1"
    " AND thing_hmac=tide_mac('thing', ?1, ?2)";

/* Names per transaction of tide_meta_device_register_many(): m->lock is
 * released between two, so other callers wait for one chunk at most
 * (about 10 ms), never for a whole fleet. */
#define REGISTER_CHUNK 1024

/* Room for *left more devices in the account's tier (INT64_MAX: no
 * limit); m->lock held. Returns 0 or TIDE_EIO. */
static int device_room(tide_meta *m, uint64_t account_id, int64_t *left)
{
    int64_t lim[2]; /* devices_max, devices */
    int rc;

    rc = tide__meta_ints(m, SQL_DEV_LIMIT, lim, 2,
                         META_ARGS(META_INT(account_id)));
    if (rc == TIDE_ENOTFOUND)
        rc = TIDE_EIO; /* the caller authorised the account: it exists */
    if (!rc)
        *left = lim[0] <= 0        ? INT64_MAX
                : lim[1] >= lim[0] ? 0
                                   : lim[0] - lim[1];
    return rc;
}

/* Insert `d` if *left allows and count it off (m->lock held). Returns 0
 * (*id_out set), TIDE_EEXIST (name taken; *id_out is its device), TIDE_EFULL,
 * TIDE_EIO. */
static int register_locked(tide_meta *m, uint64_t account_id,
                           const struct tide_meta_device_new *d,
                           const struct dev_fields *f, int64_t *left,
                           uint64_t *id_out)
{
    int64_t id;
    int rc;

    if (*left > 0) {
        rc = tide__meta_run(
            m, SQL_DEV_INSERT,
            META_ARGS(META_INT(account_id), META_TEXT(d->thing_name),
                      META_TEXT(f->mac), META_TEXT(d->friendly_name),
                      META_TEXT(d->firmware), META_TEXT(d->tags), META_NOW));
        if (!rc) {
            if (*left != INT64_MAX)
                (*left)--;
            if (id_out)
                *id_out = (uint64_t)sqlite3_last_insert_rowid(m->db);
            return 0;
        }
        if (rc != TIDE_EEXIST)
            return rc;
    }
    /* Full, or the name is taken: a taken name says so, with its id. */
    rc = tide__meta_ints(
        m, m->crypt ? SQL_DEV_ID_HMAC : SQL_DEV_ID, &id, 1,
        META_ARGS(META_INT(account_id), META_TEXT(d->thing_name)));
    if (rc == TIDE_ENOTFOUND)
        return TIDE_EFULL;
    if (!rc) {
        rc = TIDE_EEXIST;
        if (id_out)
            *id_out = (uint64_t)id;
    }
    return rc;
}

int tide_meta_device_register(tide_meta *m, const struct tide_meta_principal *p,
                              uint64_t account_id,
                              const struct tide_meta_device_new *d,
                              uint64_t *id_out)
{
    struct dev_fields f;
    int64_t left = 0;
    int rc;

    if (check_fields(d, 1, &f))
        return TIDE_EINVAL;
    tide__meta_lock(m);
    rc = tide__meta_authorize_locked(m, p, TIDE_META_ACT_DEVICE_MANAGE,
                                     account_id, 0);
    if (!rc)
        rc = device_room(m, account_id, &left);
    if (!rc)
        rc = register_locked(m, account_id, d, &f, &left, id_out);
    tide__meta_unlock(m);
    return rc;
}

/* At most REGISTER_CHUNK names of tide_meta_device_register_many(), in
 * one transaction. */
static int register_chunk(tide_meta *m, const struct tide_meta_principal *p,
                          uint64_t account_id, const char *const *names,
                          size_t n, uint64_t *ids, int *rcs)
{
    int64_t left = 0;
    int rc;

    rc = tide__meta_authz_begin(m, p, TIDE_META_ACT_DEVICE_MANAGE, account_id,
                                0);
    if (rc)
        goto out;
    rc = device_room(m, account_id, &left);
    for (size_t i = 0; !rc && i < n; i++) {
        struct tide_meta_device_new d = {.thing_name = names[i]};
        struct dev_fields f;

        ids[i] = 0;
        rcs[i] = check_fields(&d, 1, &f)
                     ? TIDE_EINVAL
                     : register_locked(m, account_id, &d, &f, &left, &ids[i]);
        if (rcs[i] && rcs[i] != TIDE_EINVAL && rcs[i] != TIDE_EEXIST &&
            rcs[i] != TIDE_EFULL)
            rc = rcs[i];
    }
    rc = tide__meta_end(m, rc);
out:
    tide__meta_unlock(m);
    return rc;
}

int tide_meta_device_register_many(tide_meta *m,
                                   const struct tide_meta_principal *p,
                                   uint64_t account_id,
                                   const char *const *names, size_t n,
                                   uint64_t *ids, int *rcs)
{
    int rc = 0;

    for (size_t at = 0; !rc && at < n; at += REGISTER_CHUNK)
        rc = register_chunk(m, p, account_id, names + at,
                            n - at < REGISTER_CHUNK ? n - at : REGISTER_CHUNK,
                            ids + at, rcs + at);
    return rc;
}

static const char SQL_DEV_UPDATE[] =
    "UPDATE devices SET"
    " thing_name=coalesce(tide_enc(?3, 'devices.thing_name', ?2), thing_name),"
    " thing_hmac=coalesce(tide_mac('thing', ?2, ?3), thing_hmac),"
    " mac=coalesce(tide_enc(?4, 'devices.mac', ?2), mac),"
    " friendly_name=coalesce(tide_enc(?5, 'devices.friendly_name', ?2),"
    " friendly_name),"
    " firmware=coalesce(?6, firmware), tags=coalesce(?7, tags),"
    " updated_ns=?8 WHERE id=?1 AND account_id=?2";

int tide_meta_device_update(tide_meta *m, const struct tide_meta_principal *p,
                            uint64_t account_id, uint64_t device_id,
                            const struct tide_meta_device_new *d)
{
    struct dev_fields f;
    int rc;

    if (check_fields(d, 0, &f))
        return TIDE_EINVAL;
    tide__meta_lock(m);
    rc = tide__meta_authorize_locked(m, p, TIDE_META_ACT_DEVICE_MANAGE,
                                     account_id, device_id);
    if (!rc && !device_id)
        rc = TIDE_EINVAL;
    if (!rc)
        rc = tide__meta_run(
            m, SQL_DEV_UPDATE,
            META_ARGS(META_INT(device_id), META_INT(account_id),
                      META_OPT(d->thing_name), META_OPT(d->mac ? f.mac : NULL),
                      META_OPT(d->friendly_name), META_OPT(d->firmware),
                      META_OPT(d->tags), META_NOW));
    tide__meta_changed(m, rc, account_id, device_id);
    tide__meta_unlock(m);
    return rc;
}

#define DEV_COLS                                                               \
    "id, account_id, tide_dec(thing_name, 'devices.thing_name', account_id),"  \
    " tide_dec(mac, 'devices.mac', account_id),"                               \
    " tide_dec(friendly_name, 'devices.friendly_name', account_id),"           \
    " firmware, tags, online, paused, last_connect_ns,"                        \
    " tide_dec(last_ip, 'devices.last_ip', account_id), last_seen_ns,"         \
    " created_ns, updated_ns"
static const char SQL_DEV_GET[] =
    "SELECT " DEV_COLS " FROM devices WHERE id=?1 AND account_id=?2";
static const char SQL_DEV_LIST[] =
    "SELECT " DEV_COLS " FROM devices WHERE account_id=?1 AND id>?2"
    " ORDER BY id LIMIT ?3";

static void dev_row(sqlite3_stmt *st, void *arg)
{
    struct tide_meta_device *d = arg;

    memset(d, 0, sizeof(*d));
    d->id = (uint64_t)sqlite3_column_int64(st, 0);
    d->account_id = (uint64_t)sqlite3_column_int64(st, 1);
    tide__meta_col_text(st, 2, d->thing_name, sizeof(d->thing_name));
    tide__meta_col_text(st, 3, d->mac, sizeof(d->mac));
    tide__meta_col_text(st, 4, d->friendly_name, sizeof(d->friendly_name));
    tide__meta_col_text(st, 5, d->firmware, sizeof(d->firmware));
    tide__meta_col_text(st, 6, d->tags, sizeof(d->tags));
    d->online = sqlite3_column_int(st, 7);
    d->paused = sqlite3_column_int(st, 8);
    d->last_connect_ns = sqlite3_column_int64(st, 9);
    tide__meta_col_text(st, 10, d->last_ip, sizeof(d->last_ip));
    d->last_seen_ns = sqlite3_column_int64(st, 11);
    d->created_ns = sqlite3_column_int64(st, 12);
    d->updated_ns = sqlite3_column_int64(st, 13);
}

int tide_meta_device_get(tide_meta *m, const struct tide_meta_principal *p,
                         uint64_t account_id, uint64_t device_id,
                         struct tide_meta_device *out)
{
    int rc;

    if (!out || !device_id)
        return TIDE_EINVAL;
    /* Flushed: pending last-seen times. */
    rc = tide__meta_authorize_flush(m, p, TIDE_META_ACT_DEVICE_READ, account_id,
                                    device_id);
    if (rc)
        return rc;
    tide__meta_lock(m);
    rc = tide__meta_get(m, SQL_DEV_GET, dev_row, out,
                        META_ARGS(META_INT(device_id), META_INT(account_id)));
    tide__meta_unlock(m);
    return rc;
}

int tide_meta_device_list(tide_meta *m, const struct tide_meta_principal *p,
                          uint64_t account_id, uint64_t after_id,
                          struct tide_meta_device *out, size_t cap,
                          size_t *n_out)
{
    return tide__meta_read(
        m, p, TIDE_META_ACT_DEVICE_READ, account_id, SQL_DEV_LIST, dev_row, out,
        sizeof(*out), cap, n_out,
        META_ARGS(META_INT(account_id), META_INT(after_id), META_INT(cap)));
}

static const char SQL_DEV_PAUSE[] =
    "UPDATE devices SET paused=?3, updated_ns=?4 WHERE id=?1"
    " AND account_id=?2";

int tide_meta_device_pause(tide_meta *m, const struct tide_meta_principal *p,
                           uint64_t account_id, uint64_t device_id, int paused)
{
    int rc;

    if (!device_id)
        return TIDE_EINVAL;
    rc = tide__meta_authz_run(m, p, TIDE_META_ACT_DEVICE_MANAGE, account_id,
                              device_id, SQL_DEV_PAUSE, 0,
                              META_ARGS(META_INT(device_id),
                                        META_INT(account_id),
                                        META_INT(!!paused), META_NOW));
    tide__meta_changed(m, rc, account_id, device_id);
    return rc;
}

static const char SQL_DEV_DELETE[] =
    "DELETE FROM devices WHERE id=?1 AND account_id=?2";
static const char SQL_DEV_KEYS[] =
    "DELETE FROM api_keys WHERE device_id=?1 AND account_id=?2";
/* The series rows hold the device's field names: they go, and only their
 * numbers stay, in erased_series, for the compaction policy. Ids are not
 * reused: they come from counters.next_series_id. */
static const char SQL_DEV_ERASED[] =
    "INSERT OR IGNORE INTO erased_series(series_id, account_id, erased_ns)"
    " SELECT id, account_id, ?3 FROM series WHERE device_id=?1"
    " AND account_id=?2";
static const char SQL_DEV_SERIES[] =
    "DELETE FROM series WHERE device_id=?1 AND account_id=?2";
/* Device-offline notifications name the device (device_connect). */
static const char SQL_DEV_NOTES[] =
    "DELETE FROM notifications WHERE account_id=?2 AND kind=1"
    " AND tide_dec(text, 'notifications.text', account_id)="
    " (SELECT 'device ' || tide_dec(thing_name, 'devices.thing_name',"
    " account_id) || ' went offline' FROM devices"
    " WHERE id=?1 AND account_id=?2)";

int tide_meta_device_delete(tide_meta *m, const struct tide_meta_principal *p,
                            uint64_t account_id, uint64_t device_id)
{
    int64_t now;
    int rc;

    if (!device_id)
        return TIDE_EINVAL;
    rc = tide__meta_authz_begin(m, p, TIDE_META_ACT_DEVICE_MANAGE, account_id,
                                device_id);
    if (rc)
        goto out;
    now = tide__meta_now(m);
    rc = tide__meta_run(m, SQL_DEV_KEYS,
                        META_ARGS(META_INT(device_id), META_INT(account_id)));
    if (!rc)
        rc = tide__meta_run(m, SQL_DEV_ERASED,
                            META_ARGS(META_INT(device_id), META_INT(account_id),
                                      META_INT(now)));
    if (!rc)
        rc = tide__meta_run(
            m, SQL_DEV_SERIES,
            META_ARGS(META_INT(device_id), META_INT(account_id)));
    if (!rc)
        rc = tide__meta_run(
            m, SQL_DEV_NOTES,
            META_ARGS(META_INT(device_id), META_INT(account_id)));
    if (!rc)
        rc = tide__meta_run(
            m, SQL_DEV_DELETE,
            META_ARGS(META_INT(device_id), META_INT(account_id)));
    if (!rc)
        rc = tide__meta_tombstone(m, "device", device_id, account_id, now, 0);
    rc = tide__meta_end(m, rc);
    if (!rc) {
        tide__meta_registry_kill(m, account_id, device_id);
        tide__meta_wal_scrub(m);
    }
out:
    tide__meta_changed(m, rc, account_id, device_id);
    tide__meta_unlock(m);
    return rc;
}

static const char SQL_DEV_CONNECT[] =
    "UPDATE devices SET online=1, last_connect_ns=?3,"
    " last_ip=tide_enc(?4, 'devices.last_ip', ?2),"
    " last_seen_ns=max(last_seen_ns, ?3) WHERE id=?1 AND account_id=?2";
static const char SQL_DEV_DISCONNECT[] =
    "UPDATE devices SET online=0, last_seen_ns=max(last_seen_ns, ?3)"
    " WHERE id=?1 AND account_id=?2";
static const char SQL_DEV_NAME[] =
    "SELECT tide_dec(thing_name, 'devices.thing_name', account_id)"
    " FROM devices WHERE id=?1";

static void name_row(sqlite3_stmt *st, void *name)
{
    tide__meta_col_text(st, 0, name, TIDE_META_NAME_MAX + 1);
}

int tide_meta_device_connect(tide_meta *m, const struct tide_meta_principal *p,
                             uint64_t account_id, uint64_t device_id,
                             int connected, const char *ip)
{
    char name[TIDE_META_NAME_MAX + 1], text[256];
    /* SQL_DEV_DISCONNECT takes the first three. */
    const struct tide__meta_arg args[] = {
        META_INT(device_id), META_INT(account_id), META_NOW, META_TEXT(ip)};
    int rc;

    if (!device_id || tide__meta_ip_ok(ip))
        return TIDE_EINVAL;
    rc = tide__meta_authz_begin(m, p, TIDE_META_ACT_DEVICE_CONNECT, account_id,
                                device_id);
    if (rc)
        goto out;
    rc = tide__meta_run(m, connected ? SQL_DEV_CONNECT : SQL_DEV_DISCONNECT,
                        args, connected ? 4 : 3);
    if (!rc && !connected) {
        rc = tide__meta_get(m, SQL_DEV_NAME, name_row, name,
                            META_ARGS(META_INT(device_id)));
        if (rc == TIDE_ENOTFOUND)
            rc = TIDE_EIO; /* authorised under this lock: it exists */
        if (!rc) {
            snprintf(text, sizeof(text), "device %s went offline", name);
            rc = tide__meta_notify_add(m, account_id, TIDE_META_NOTIFY_DEVICE,
                                       text);
        }
    }
    rc = tide__meta_end(m, rc);
out:
    tide__meta_unlock(m);
    return rc;
}
