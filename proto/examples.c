/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prints one hex example frame per member of Envelope's `body` oneof, in
 * field-number order, as the Markdown pasted into docs/protocol.md
 * ("Examples"). Each frame is also decoded and re-encoded with the shared
 * frame codec; the program exits 1 unless every round trip is byte-exact and
 * the examples cover the whole oneof.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "frame.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

#define T0_NS INT64_C(1700000000000000000) /* 2023-11-14 22:13:20 UTC */
#define S_NS INT64_C(1000000000)
#define DAY0 19675 /* T0_NS as days since 1970-01-01 */

/* Every example must fit; the largest is about 130 bytes. */
#define EXAMPLE_BYTES_MAX 1024

/*
 * Each builder points `env`'s body at messages in its own static storage;
 * nothing is allocated, so nothing needs freeing.
 */
typedef void example_fn(Tide__V1__Envelope *env);

struct example {
    const char *name;
    Tide__V1__Envelope__BodyCase body;
    uint64_t request_id;
    example_fn *build;
};

/* Session */

static void ex_hello(Tide__V1__Envelope *env)
{
    static Tide__V1__Hello m = TIDE__V1__HELLO__INIT;

    m.protocol_version = 1;
    m.client_name = "libtide";
    m.client_version = "1.0.0";
    env->body_case = TIDE__V1__ENVELOPE__BODY_HELLO;
    env->hello = &m;
}

static void ex_hello_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__Limits limits = TIDE__V1__LIMITS__INIT;
    static Tide__V1__HelloOk m = TIDE__V1__HELLO_OK__INIT;

    limits.max_frame_bytes = 16u << 20;
    limits.max_batch_points = 1000000;
    limits.max_batch_groups = 100000;
    limits.max_string_bytes = 4096;
    limits.max_query_points = 10000000;
    limits.query_timeout_ms = 30000;
    limits.max_inflight_requests = 256;
    limits.max_chunk_bytes = 1u << 20;
    limits.idle_timeout_ms = 300000;
    m.protocol_version = 1;
    m.server_version = "1.0.0";
    m.limits = &limits;
    m.server_time_ns = T0_NS;
    env->body_case = TIDE__V1__ENVELOPE__BODY_HELLO_OK;
    env->hello_ok = &m;
}

static void ex_auth(Tide__V1__Envelope *env)
{
    static Tide__V1__Auth m = TIDE__V1__AUTH__INIT;

    m.credential_case = TIDE__V1__AUTH__CREDENTIAL_API_KEY;
    m.api_key = "tide_live_4f9a2c1e8b7d05a6";
    env->body_case = TIDE__V1__ENVELOPE__BODY_AUTH;
    env->auth = &m;
}

static void ex_auth_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__AuthOk m = TIDE__V1__AUTH_OK__INIT;

    m.account_id = 42;
    m.role = TIDE__V1__ROLE__ROLE_DEVICE;
    m.tier = "free";
    m.device = "truck-7";
    m.key_id = 7;
    env->body_case = TIDE__V1__ENVELOPE__BODY_AUTH_OK;
    env->auth_ok = &m;
}

static void ex_error(Tide__V1__Envelope *env)
{
    static Tide__V1__Error m = TIDE__V1__ERROR__INIT;

    m.code = TIDE__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED;
    m.message = "rate limit of tier free exceeded";
    m.retryable = 1;
    m.retry_after_ms = 250;
    env->body_case = TIDE__V1__ENVELOPE__BODY_ERROR;
    env->error = &m;
}

static void ex_ping(Tide__V1__Envelope *env)
{
    static Tide__V1__Ping m = TIDE__V1__PING__INIT;

    m.nonce = 0x5eed;
    env->body_case = TIDE__V1__ENVELOPE__BODY_PING;
    env->ping = &m;
}

static void ex_pong(Tide__V1__Envelope *env)
{
    static Tide__V1__Pong m = TIDE__V1__PONG__INIT;

    m.nonce = 0x5eed;
    m.server_time_ns = T0_NS + 250000;
    env->body_case = TIDE__V1__ENVELOPE__BODY_PONG;
    env->pong = &m;
}

static void ex_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__Ok m = TIDE__V1__OK__INIT;

    env->body_case = TIDE__V1__ENVELOPE__BODY_OK;
    env->ok = &m;
}

/* Telemetry */

static void ex_write_batch(Tide__V1__Envelope *env)
{
    static int64_t ts[] = {T0_NS, 10 * S_NS, 10 * S_NS};
    static double velocity[] = {12.5, 13.0, 0.0};
    static char *status[] = {"ok", "ok", "idle"};
    static Tide__V1__Column cols[2] = {TIDE__V1__COLUMN__INIT,
                                       TIDE__V1__COLUMN__INIT};
    static Tide__V1__Column *colp[] = {&cols[0], &cols[1]};
    static Tide__V1__Tag tag = TIDE__V1__TAG__INIT;
    static Tide__V1__Tag *tagp[] = {&tag};
    static Tide__V1__PointGroup group = TIDE__V1__POINT_GROUP__INIT;
    static Tide__V1__PointGroup *groupp[] = {&group};
    static Tide__V1__WriteBatch m = TIDE__V1__WRITE_BATCH__INIT;

    cols[0].field = "velocity";
    cols[0].type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64;
    cols[0].n_f64 = COUNT(velocity);
    cols[0].f64 = velocity;
    cols[1].field = "status";
    cols[1].type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_STRING;
    cols[1].n_str = COUNT(status);
    cols[1].str = status;
    tag.key = "fleet";
    tag.value = "north";
    group.device = "truck-7";
    group.n_ts_delta_ns = COUNT(ts);
    group.ts_delta_ns = ts;
    group.n_columns = COUNT(colp);
    group.columns = colp;
    group.n_tags = COUNT(tagp);
    group.tags = tagp;
    m.producer_id = 0x2f9c41d7;
    m.sequence = 1;
    m.n_groups = COUNT(groupp);
    m.groups = groupp;
    env->body_case = TIDE__V1__ENVELOPE__BODY_WRITE_BATCH;
    env->write_batch = &m;
}

static void ex_write_ack(Tide__V1__Envelope *env)
{
    static Tide__V1__Rejection rej = TIDE__V1__REJECTION__INIT;
    static Tide__V1__Rejection *rejp[] = {&rej};
    static Tide__V1__WriteAck m = TIDE__V1__WRITE_ACK__INIT;

    rej.group_index = 0;
    rej.column_index = 1;
    rej.device = "truck-7";
    rej.field = "status";
    rej.code = TIDE__V1__ERROR_CODE__ERROR_CODE_TYPE_MISMATCH;
    rej.points = 3;
    rej.message = "series is i64";
    m.sequence = 1;
    m.accepted_points = 3;
    m.rejected_points = 3;
    m.n_rejections = COUNT(rejp);
    m.rejections = rejp;
    env->body_case = TIDE__V1__ENVELOPE__BODY_WRITE_ACK;
    env->write_ack = &m;
}

static void ex_query(Tide__V1__Envelope *env)
{
    static Tide__V1__TagMatch tag = TIDE__V1__TAG_MATCH__INIT;
    static Tide__V1__TagMatch *tagp[] = {&tag};
    static Tide__V1__DeviceSelector sel = TIDE__V1__DEVICE_SELECTOR__INIT;
    static char *fields[] = {"velocity"};
    static Tide__V1__Query m = TIDE__V1__QUERY__INIT;

    tag.key = "fleet";
    tag.value = "north";
    tag.op = TIDE__V1__TAG_OP__TAG_OP_EQ;
    sel.n_tags = COUNT(tagp);
    sel.tags = tagp;
    m.devices = &sel;
    m.n_fields = COUNT(fields);
    m.fields = fields;
    m.from_ns = T0_NS;
    m.to_ns = T0_NS + 3600 * S_NS;
    m.aggregation = TIDE__V1__AGGREGATION__AGGREGATION_MAX;
    m.bucket_ns = 1200 * S_NS;
    m.group_by_device = 1;
    env->body_case = TIDE__V1__ENVELOPE__BODY_QUERY;
    env->query = &m;
}

static void ex_query_chunk(Tide__V1__Envelope *env)
{
    static int64_t ts[] = {T0_NS, 1200 * S_NS, 1200 * S_NS};
    static double max[] = {61.5, 72.0, 58.25};
    static uint64_t counts[] = {120, 120, 119};
    static Tide__V1__SeriesResult sr = TIDE__V1__SERIES_RESULT__INIT;
    static Tide__V1__SeriesResult *srp[] = {&sr};
    static Tide__V1__QueryChunk m = TIDE__V1__QUERY_CHUNK__INIT;

    sr.device = "truck-7";
    sr.field = "velocity";
    sr.type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64;
    sr.n_ts_delta_ns = COUNT(ts);
    sr.ts_delta_ns = ts;
    sr.n_f64 = COUNT(max);
    sr.f64 = max;
    sr.n_counts = COUNT(counts);
    sr.counts = counts;
    m.n_series = COUNT(srp);
    m.series = srp;
    env->body_case = TIDE__V1__ENVELOPE__BODY_QUERY_CHUNK;
    env->query_chunk = &m;
}

/* Average and maximum velocity in 20-minute buckets aligned to the epoch
 * shifted by 5 minutes: the v1 `aggregation` is left NONE. */
static void ex_query_multi(Tide__V1__Envelope *env)
{
    static char *fields[] = {"velocity"};
    static Tide__V1__Aggregation aggs[] = {
        TIDE__V1__AGGREGATION__AGGREGATION_AVG,
        TIDE__V1__AGGREGATION__AGGREGATION_MAX};
    static Tide__V1__Query m = TIDE__V1__QUERY__INIT;

    m.n_fields = COUNT(fields);
    m.fields = fields;
    m.from_ns = T0_NS;
    m.to_ns = T0_NS + 3600 * S_NS;
    m.bucket_ns = 1200 * S_NS;
    m.group_by_device = 1;
    m.n_aggregations = COUNT(aggs);
    m.aggregations = aggs;
    m.bucket_offset_ns = 300 * S_NS;
    env->body_case = TIDE__V1__ENVELOPE__BODY_QUERY;
    env->query = &m;
}

/* Its answer: the averages where one aggregate's values go, the maxima
 * (one more value per bucket) in more_values. */
static void ex_query_chunk_multi(Tide__V1__Envelope *env)
{
    static int64_t ts[] = {T0_NS - 500 * S_NS, 1200 * S_NS, 1200 * S_NS,
                           1200 * S_NS};
    static double avg[] = {48.5, 55.0, 52.25, 47.0};
    static double max[] = {61.5, 72.0, 66.0, 58.25};
    static uint64_t counts[] = {70, 120, 120, 50};
    static Tide__V1__SeriesResult sr = TIDE__V1__SERIES_RESULT__INIT;
    static Tide__V1__SeriesResult *srp[] = {&sr};
    static Tide__V1__QueryChunk m = TIDE__V1__QUERY_CHUNK__INIT;

    sr.device = "truck-7";
    sr.field = "velocity";
    sr.type = TIDE__V1__VALUE_TYPE__VALUE_TYPE_F64;
    sr.n_ts_delta_ns = COUNT(ts);
    sr.ts_delta_ns = ts;
    sr.n_f64 = COUNT(avg);
    sr.f64 = avg;
    sr.n_counts = COUNT(counts);
    sr.counts = counts;
    sr.n_more_values = COUNT(max);
    sr.more_values = max;
    m.n_series = COUNT(srp);
    m.series = srp;
    env->body_case = TIDE__V1__ENVELOPE__BODY_QUERY_CHUNK;
    env->query_chunk = &m;
}

static void ex_query_end(Tide__V1__Envelope *env)
{
    static Tide__V1__QueryEnd m = TIDE__V1__QUERY_END__INIT;

    m.points = 3;
    m.series = 1;
    m.chunks_scanned = 1;
    m.chunks_from_header = 2;
    m.bytes_read = 4096;
    m.elapsed_us = 850;
    env->body_case = TIDE__V1__ENVELOPE__BODY_QUERY_END;
    env->query_end = &m;
}

static void ex_query_cancel(Tide__V1__Envelope *env)
{
    static Tide__V1__QueryCancel m = TIDE__V1__QUERY_CANCEL__INIT;

    m.query_request_id = 7;
    env->body_case = TIDE__V1__ENVELOPE__BODY_QUERY_CANCEL;
    env->query_cancel = &m;
}

/* Accounts and sessions */

static void ex_account_create(Tide__V1__Envelope *env)
{
    static Tide__V1__AccountCreate m = TIDE__V1__ACCOUNT_CREATE__INIT;

    m.email = "ada@example.com";
    m.password = "correct horse";
    m.first_name = "Ada";
    m.timezone = "Europe/Berlin";
    env->body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_CREATE;
    env->account_create = &m;
}

static void ex_account_create_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__Account acct = TIDE__V1__ACCOUNT__INIT;
    static Tide__V1__AccountCreateOk m = TIDE__V1__ACCOUNT_CREATE_OK__INIT;

    acct.id = 42;
    acct.email = "ada@example.com";
    acct.first_name = "Ada";
    acct.timezone = "Europe/Berlin";
    acct.tier = "free";
    acct.plan_status = TIDE__V1__PLAN_STATUS__PLAN_STATUS_ACTIVE;
    acct.created_ns = T0_NS;
    m.account = &acct;
    env->body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_CREATE_OK;
    env->account_create_ok = &m;
}

static void ex_login(Tide__V1__Envelope *env)
{
    static Tide__V1__Login m = TIDE__V1__LOGIN__INIT;

    m.email = "ada@example.com";
    m.password = "correct horse";
    env->body_case = TIDE__V1__ENVELOPE__BODY_LOGIN;
    env->login = &m;
}

static void ex_login_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__LoginOk m = TIDE__V1__LOGIN_OK__INIT;

    m.session_token = "tide_sess_9b2e71c04d5a";
    m.expires_ns = T0_NS + 86400 * S_NS;
    m.account_id = 42;
    env->body_case = TIDE__V1__ENVELOPE__BODY_LOGIN_OK;
    env->login_ok = &m;
}

static void ex_logout(Tide__V1__Envelope *env)
{
    static Tide__V1__Logout m = TIDE__V1__LOGOUT__INIT;

    env->body_case = TIDE__V1__ENVELOPE__BODY_LOGOUT;
    env->logout = &m;
}

static void ex_verify_email(Tide__V1__Envelope *env)
{
    static Tide__V1__VerifyEmail m = TIDE__V1__VERIFY_EMAIL__INIT;

    m.token = "vrf_3c8a0f6e21b4";
    env->body_case = TIDE__V1__ENVELOPE__BODY_VERIFY_EMAIL;
    env->verify_email = &m;
}

static void ex_account_get(Tide__V1__Envelope *env)
{
    static Tide__V1__AccountGet m = TIDE__V1__ACCOUNT_GET__INIT;

    m.account_id = 0;
    env->body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_GET;
    env->account_get = &m;
}

static void ex_account(Tide__V1__Envelope *env)
{
    static Tide__V1__NotificationPrefs prefs =
        TIDE__V1__NOTIFICATION_PREFS__INIT;
    static Tide__V1__Account m = TIDE__V1__ACCOUNT__INIT;

    prefs.device_alerts = 1;
    prefs.usage_warnings = 1;
    m.id = 42;
    m.email = "ada@example.com";
    m.first_name = "Ada";
    m.timezone = "Europe/Berlin";
    m.email_verified = 1;
    m.tier = "free";
    m.plan_status = TIDE__V1__PLAN_STATUS__PLAN_STATUS_ACTIVE;
    m.notification_prefs = &prefs;
    m.created_ns = T0_NS;
    env->body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT;
    env->account = &m;
}

static void ex_account_update(Tide__V1__Envelope *env)
{
    static char *set[] = {"timezone"};
    static Tide__V1__AccountUpdate m = TIDE__V1__ACCOUNT_UPDATE__INIT;

    m.n_set = COUNT(set);
    m.set = set;
    m.timezone = "Europe/Paris";
    env->body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_UPDATE;
    env->account_update = &m;
}

static void ex_password_change(Tide__V1__Envelope *env)
{
    static Tide__V1__PasswordChange m = TIDE__V1__PASSWORD_CHANGE__INIT;

    m.old_password = "correct horse";
    m.new_password = "battery staple";
    env->body_case = TIDE__V1__ENVELOPE__BODY_PASSWORD_CHANGE;
    env->password_change = &m;
}

static void ex_account_pause(Tide__V1__Envelope *env)
{
    static Tide__V1__AccountPause m = TIDE__V1__ACCOUNT_PAUSE__INIT;

    m.paused = 1;
    env->body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_PAUSE;
    env->account_pause = &m;
}

static void ex_account_delete(Tide__V1__Envelope *env)
{
    static Tide__V1__AccountDelete m = TIDE__V1__ACCOUNT_DELETE__INIT;

    m.password = "battery staple";
    env->body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_DELETE;
    env->account_delete = &m;
}

static void ex_account_delete_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__AccountDeleteOk m = TIDE__V1__ACCOUNT_DELETE_OK__INIT;

    m.purge_after_ns = T0_NS + 30 * 86400 * S_NS;
    env->body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_DELETE_OK;
    env->account_delete_ok = &m;
}

static void ex_account_restore(Tide__V1__Envelope *env)
{
    static Tide__V1__AccountRestore m = TIDE__V1__ACCOUNT_RESTORE__INIT;

    m.account_id = 42;
    env->body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_RESTORE;
    env->account_restore = &m;
}

static void ex_account_list(Tide__V1__Envelope *env)
{
    static Tide__V1__AccountList m = TIDE__V1__ACCOUNT_LIST__INIT;

    m.after_id = 0;
    m.limit = 100;
    env->body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_LIST;
    env->account_list = &m;
}

static void ex_account_list_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__Account a[2] = {TIDE__V1__ACCOUNT__INIT,
                                     TIDE__V1__ACCOUNT__INIT};
    static Tide__V1__Account *ap[] = {&a[0], &a[1]};
    static Tide__V1__AccountListOk m = TIDE__V1__ACCOUNT_LIST_OK__INIT;

    a[0].id = 42;
    a[0].email = "ada@example.com";
    a[0].tier = "free";
    a[1].id = 43;
    a[1].email = "bob@example.com";
    a[1].tier = "pro";
    m.n_accounts = COUNT(ap);
    m.accounts = ap;
    env->body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_LIST_OK;
    env->account_list_ok = &m;
}

/* Tiers */

static void ex_tier_list(Tide__V1__Envelope *env)
{
    static Tide__V1__TierList m = TIDE__V1__TIER_LIST__INIT;

    env->body_case = TIDE__V1__ENVELOPE__BODY_TIER_LIST;
    env->tier_list = &m;
}

/* The "pro" tier of the examples: 90 days of telemetry. */
static void set_pro_tier(Tide__V1__Tier *t)
{
    t->name = "pro";
    t->telemetry_ttl_s = 90 * 86400;
    t->points_per_s = 50000;
    t->daily_points = 1000000000;
    t->max_devices = 1000;
}

static void ex_tier_list_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__Tier t[2] = {TIDE__V1__TIER__INIT, TIDE__V1__TIER__INIT};
    static Tide__V1__Tier *tp[] = {&t[0], &t[1]};
    static Tide__V1__TierListOk m = TIDE__V1__TIER_LIST_OK__INIT;

    t[0].name = "free";
    t[0].telemetry_ttl_s = 7 * 86400;
    t[0].points_per_s = 1000;
    t[0].daily_points = 10000000;
    t[0].max_devices = 10;
    set_pro_tier(&t[1]);
    m.n_tiers = COUNT(tp);
    m.tiers = tp;
    env->body_case = TIDE__V1__ENVELOPE__BODY_TIER_LIST_OK;
    env->tier_list_ok = &m;
}

static void ex_tier_set(Tide__V1__Envelope *env)
{
    static Tide__V1__TierSet m = TIDE__V1__TIER_SET__INIT;

    m.account_id = 42;
    m.tier = "pro";
    env->body_case = TIDE__V1__ENVELOPE__BODY_TIER_SET;
    env->tier_set = &m;
}

static void ex_tier_upsert(Tide__V1__Envelope *env)
{
    static Tide__V1__Tier t = TIDE__V1__TIER__INIT;
    static Tide__V1__TierUpsert m = TIDE__V1__TIER_UPSERT__INIT;

    set_pro_tier(&t);
    m.tier = &t;
    env->body_case = TIDE__V1__ENVELOPE__BODY_TIER_UPSERT;
    env->tier_upsert = &m;
}

/* API keys */

/* Key 7 of the examples: the device key of truck-7. */
static void set_device_key(Tide__V1__ApiKey *k)
{
    k->id = 7;
    k->name = "truck-7 uplink";
    k->prefix = "tide_live_4f9a";
    k->role = TIDE__V1__ROLE__ROLE_DEVICE;
    k->device = "truck-7";
    k->created_ns = T0_NS;
}

static void ex_key_create(Tide__V1__Envelope *env)
{
    static Tide__V1__KeyCreate m = TIDE__V1__KEY_CREATE__INIT;

    m.name = "truck-7 uplink";
    m.role = TIDE__V1__ROLE__ROLE_DEVICE;
    m.device = "truck-7";
    env->body_case = TIDE__V1__ENVELOPE__BODY_KEY_CREATE;
    env->key_create = &m;
}

static void ex_key_create_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__ApiKey key = TIDE__V1__API_KEY__INIT;
    static Tide__V1__KeyCreateOk m = TIDE__V1__KEY_CREATE_OK__INIT;

    set_device_key(&key);
    m.key = &key;
    m.secret = "tide_live_4f9a2c1e8b7d05a6";
    env->body_case = TIDE__V1__ENVELOPE__BODY_KEY_CREATE_OK;
    env->key_create_ok = &m;
}

static void ex_key_list(Tide__V1__Envelope *env)
{
    static Tide__V1__KeyList m = TIDE__V1__KEY_LIST__INIT;

    m.account_id = 0;
    env->body_case = TIDE__V1__ENVELOPE__BODY_KEY_LIST;
    env->key_list = &m;
}

static void ex_key_list_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__ApiKey key = TIDE__V1__API_KEY__INIT;
    static Tide__V1__ApiKey *keyp[] = {&key};
    static Tide__V1__KeyListOk m = TIDE__V1__KEY_LIST_OK__INIT;

    set_device_key(&key);
    key.last_used_ns = T0_NS + 3600 * S_NS;
    key.last_used_ip = "203.0.113.7";
    key.request_count = 1289;
    m.n_keys = COUNT(keyp);
    m.keys = keyp;
    env->body_case = TIDE__V1__ENVELOPE__BODY_KEY_LIST_OK;
    env->key_list_ok = &m;
}

static void ex_key_revoke(Tide__V1__Envelope *env)
{
    static Tide__V1__KeyRevoke m = TIDE__V1__KEY_REVOKE__INIT;

    m.key_id = 7;
    env->body_case = TIDE__V1__ENVELOPE__BODY_KEY_REVOKE;
    env->key_revoke = &m;
}

/* Devices */

static void ex_device_register(Tide__V1__Envelope *env)
{
    static Tide__V1__Tag tag = TIDE__V1__TAG__INIT;
    static Tide__V1__Tag *tagp[] = {&tag};
    static Tide__V1__Device dev = TIDE__V1__DEVICE__INIT;
    static Tide__V1__DeviceRegister m = TIDE__V1__DEVICE_REGISTER__INIT;

    tag.key = "fleet";
    tag.value = "north";
    dev.name = "truck-7";
    dev.mac = "02:42:ac:11:00:07";
    dev.friendly_name = "Truck 7";
    dev.firmware_version = "2.4.1";
    dev.n_tags = COUNT(tagp);
    dev.tags = tagp;
    m.device = &dev;
    env->body_case = TIDE__V1__ENVELOPE__BODY_DEVICE_REGISTER;
    env->device_register = &m;
}

static void ex_device(Tide__V1__Envelope *env)
{
    static Tide__V1__Device m = TIDE__V1__DEVICE__INIT;

    m.name = "truck-7";
    m.mac = "02:42:ac:11:00:07";
    m.firmware_version = "2.4.1";
    m.status = TIDE__V1__CONNECTION_STATUS__CONNECTION_STATUS_ONLINE;
    m.last_connect_ns = T0_NS;
    m.last_connect_ip = "203.0.113.7";
    m.last_seen_ns = T0_NS + 20 * S_NS;
    m.account_id = 42;
    env->body_case = TIDE__V1__ENVELOPE__BODY_DEVICE;
    env->device = &m;
}

static void ex_device_update(Tide__V1__Envelope *env)
{
    static char *set[] = {"firmware_version"};
    static Tide__V1__Device dev = TIDE__V1__DEVICE__INIT;
    static Tide__V1__DeviceUpdate m = TIDE__V1__DEVICE_UPDATE__INIT;

    dev.firmware_version = "2.5.0";
    m.name = "truck-7";
    m.n_set = COUNT(set);
    m.set = set;
    m.device = &dev;
    env->body_case = TIDE__V1__ENVELOPE__BODY_DEVICE_UPDATE;
    env->device_update = &m;
}

static void ex_device_get(Tide__V1__Envelope *env)
{
    static Tide__V1__DeviceGet m = TIDE__V1__DEVICE_GET__INIT;

    m.name = "truck-7";
    env->body_case = TIDE__V1__ENVELOPE__BODY_DEVICE_GET;
    env->device_get = &m;
}

static void ex_device_list(Tide__V1__Envelope *env)
{
    static Tide__V1__TagMatch tag = TIDE__V1__TAG_MATCH__INIT;
    static Tide__V1__TagMatch *tagp[] = {&tag};
    static Tide__V1__DeviceSelector sel = TIDE__V1__DEVICE_SELECTOR__INIT;
    static Tide__V1__DeviceList m = TIDE__V1__DEVICE_LIST__INIT;

    tag.key = "fleet";
    tag.value = "north";
    sel.n_tags = COUNT(tagp);
    sel.tags = tagp;
    m.selector = &sel;
    env->body_case = TIDE__V1__ENVELOPE__BODY_DEVICE_LIST;
    env->device_list = &m;
}

static void ex_device_list_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__Device d[2] = {TIDE__V1__DEVICE__INIT,
                                    TIDE__V1__DEVICE__INIT};
    static Tide__V1__Device *dp[] = {&d[0], &d[1]};
    static Tide__V1__DeviceListOk m = TIDE__V1__DEVICE_LIST_OK__INIT;

    d[0].name = "truck-7";
    d[0].status = TIDE__V1__CONNECTION_STATUS__CONNECTION_STATUS_ONLINE;
    d[0].last_seen_ns = T0_NS + 20 * S_NS;
    d[1].name = "truck-9";
    d[1].status = TIDE__V1__CONNECTION_STATUS__CONNECTION_STATUS_OFFLINE;
    d[1].last_seen_ns = T0_NS - 3600 * S_NS;
    m.n_devices = COUNT(dp);
    m.devices = dp;
    env->body_case = TIDE__V1__ENVELOPE__BODY_DEVICE_LIST_OK;
    env->device_list_ok = &m;
}

static void ex_device_delete(Tide__V1__Envelope *env)
{
    static Tide__V1__DeviceDelete m = TIDE__V1__DEVICE_DELETE__INIT;

    m.name = "truck-9";
    env->body_case = TIDE__V1__ENVELOPE__BODY_DEVICE_DELETE;
    env->device_delete = &m;
}

static void ex_device_pause(Tide__V1__Envelope *env)
{
    static Tide__V1__DevicePause m = TIDE__V1__DEVICE_PAUSE__INIT;

    m.name = "truck-7";
    m.paused = 1;
    env->body_case = TIDE__V1__ENVELOPE__BODY_DEVICE_PAUSE;
    env->device_pause = &m;
}

/* Usage, logs, notifications */

static void ex_usage_get(Tide__V1__Envelope *env)
{
    static Tide__V1__UsageGet m = TIDE__V1__USAGE_GET__INIT;

    m.from_day = DAY0 - 1;
    m.to_day = DAY0;
    env->body_case = TIDE__V1__ENVELOPE__BODY_USAGE_GET;
    env->usage_get = &m;
}

static void ex_usage_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__UsageDay d[2] = {TIDE__V1__USAGE_DAY__INIT,
                                      TIDE__V1__USAGE_DAY__INIT};
    static Tide__V1__UsageDay *dp[] = {&d[0], &d[1]};
    static Tide__V1__UsageOk m = TIDE__V1__USAGE_OK__INIT;
    size_t i;

    for (i = 0; i < COUNT(d); i++) {
        d[i].day = DAY0 - 1 + (int32_t)i;
        d[i].messages = 8640 + 12 * i;
        d[i].points = 3 * d[i].messages;
        d[i].bytes_in = 130 * d[i].messages;
        d[i].bytes_out = 5200 + 800 * i;
        d[i].queries = 12 + i;
    }
    m.n_days = COUNT(dp);
    m.days = dp;
    env->body_case = TIDE__V1__ENVELOPE__BODY_USAGE_OK;
    env->usage_ok = &m;
}

static void ex_auth_log_get(Tide__V1__Envelope *env)
{
    static Tide__V1__AuthLogGet m = TIDE__V1__AUTH_LOG_GET__INIT;

    m.from_ns = T0_NS - 86400 * S_NS;
    m.to_ns = T0_NS;
    m.limit = 50;
    env->body_case = TIDE__V1__ENVELOPE__BODY_AUTH_LOG_GET;
    env->auth_log_get = &m;
}

static void ex_auth_log_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__AuthEvent e[2] = {TIDE__V1__AUTH_EVENT__INIT,
                                       TIDE__V1__AUTH_EVENT__INIT};
    static Tide__V1__AuthEvent *ep[] = {&e[0], &e[1]};
    static Tide__V1__AuthLogOk m = TIDE__V1__AUTH_LOG_OK__INIT;

    e[0].ts_ns = T0_NS - 600 * S_NS;
    e[0].ip = "203.0.113.7";
    e[0].method = "api_key";
    e[0].outcome = TIDE__V1__AUTH_OUTCOME__AUTH_OUTCOME_SUCCESS;
    e[0].key_id = 7;
    e[1].ts_ns = T0_NS - 60 * S_NS;
    e[1].ip = "198.51.100.23";
    e[1].method = "password";
    e[1].outcome = TIDE__V1__AUTH_OUTCOME__AUTH_OUTCOME_BAD_CREDENTIAL;
    m.n_events = COUNT(ep);
    m.events = ep;
    env->body_case = TIDE__V1__ENVELOPE__BODY_AUTH_LOG_OK;
    env->auth_log_ok = &m;
}

static void ex_notification_list(Tide__V1__Envelope *env)
{
    static Tide__V1__NotificationList m = TIDE__V1__NOTIFICATION_LIST__INIT;

    m.unread_only = 1;
    m.limit = 20;
    env->body_case = TIDE__V1__ENVELOPE__BODY_NOTIFICATION_LIST;
    env->notification_list = &m;
}

static void ex_notification_list_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__Notification n = TIDE__V1__NOTIFICATION__INIT;
    static Tide__V1__Notification *np[] = {&n};
    static Tide__V1__NotificationListOk m =
        TIDE__V1__NOTIFICATION_LIST_OK__INIT;

    n.id = 5;
    n.ts_ns = T0_NS;
    n.kind = TIDE__V1__NOTIFICATION_KIND__NOTIFICATION_KIND_DEVICE_OFFLINE;
    n.message = "truck-9 offline for 1 h";
    m.n_notifications = COUNT(np);
    m.notifications = np;
    env->body_case = TIDE__V1__ENVELOPE__BODY_NOTIFICATION_LIST_OK;
    env->notification_list_ok = &m;
}

static void ex_notification_mark_read(Tide__V1__Envelope *env)
{
    static uint64_t ids[] = {5};
    static Tide__V1__NotificationMarkRead m =
        TIDE__V1__NOTIFICATION_MARK_READ__INIT;

    m.n_ids = COUNT(ids);
    m.ids = ids;
    env->body_case = TIDE__V1__ENVELOPE__BODY_NOTIFICATION_MARK_READ;
    env->notification_mark_read = &m;
}

static void ex_notification_prefs_set(Tide__V1__Envelope *env)
{
    static Tide__V1__NotificationPrefs prefs =
        TIDE__V1__NOTIFICATION_PREFS__INIT;
    static Tide__V1__NotificationPrefsSet m =
        TIDE__V1__NOTIFICATION_PREFS_SET__INIT;

    prefs.device_alerts = 1;
    prefs.usage_warnings = 0;
    prefs.product_news = 0;
    m.prefs = &prefs;
    env->body_case = TIDE__V1__ENVELOPE__BODY_NOTIFICATION_PREFS_SET;
    env->notification_prefs_set = &m;
}

/* Export */

static void ex_export_start(Tide__V1__Envelope *env)
{
    static Tide__V1__ExportStart m = TIDE__V1__EXPORT_START__INIT;

    m.format = TIDE__V1__EXPORT_FORMAT__EXPORT_FORMAT_JSONL;
    m.include_telemetry = 1;
    env->body_case = TIDE__V1__ENVELOPE__BODY_EXPORT_START;
    env->export_start = &m;
}

static void ex_export_chunk(Tide__V1__Envelope *env)
{
    static uint8_t line[] = "{\"id\":42,\"email\":\"ada@example.com\"}\n";
    static Tide__V1__ExportChunk m = TIDE__V1__EXPORT_CHUNK__INIT;

    m.section = "profile";
    m.data.len = sizeof(line) - 1;
    m.data.data = line;
    env->body_case = TIDE__V1__ENVELOPE__BODY_EXPORT_CHUNK;
    env->export_chunk = &m;
}

static void ex_export_end(Tide__V1__Envelope *env)
{
    /* Stand-in digest; a real one covers every ExportChunk.data. */
    static uint8_t sha[32] = {0x9f, 0x86, 0xd0, 0x81, 0x88, 0x4c, 0x7d, 0x65,
                              0x9a, 0x2f, 0xea, 0xa0, 0xc5, 0x5a, 0xd0, 0x15,
                              0xa3, 0xbf, 0x4f, 0x1b, 0x2b, 0x0b, 0x82, 0x2c,
                              0xd1, 0x5d, 0x6c, 0x15, 0xb0, 0xf0, 0x0a, 0x08};
    static Tide__V1__ExportEnd m = TIDE__V1__EXPORT_END__INIT;

    m.rows = 9;
    m.bytes = 2417;
    m.sha256.len = sizeof(sha);
    m.sha256.data = sha;
    env->body_case = TIDE__V1__ENVELOPE__BODY_EXPORT_END;
    env->export_end = &m;
}

/* Operations */

static void ex_server_status(Tide__V1__Envelope *env)
{
    static Tide__V1__ServerStatus m = TIDE__V1__SERVER_STATUS__INIT;

    env->body_case = TIDE__V1__ENVELOPE__BODY_SERVER_STATUS;
    env->server_status = &m;
}

static void ex_server_status_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__Stat s[2] = {TIDE__V1__STAT__INIT, TIDE__V1__STAT__INIT};
    static Tide__V1__Stat *sp[] = {&s[0], &s[1]};
    static Tide__V1__ServerStatusOk m = TIDE__V1__SERVER_STATUS_OK__INIT;

    s[0].name = "connections";
    s[0].value = 12;
    s[1].name = "points_written";
    s[1].value = 1.2e9;
    m.server_version = "1.0.0";
    m.uptime_s = 86400;
    m.n_stats = COUNT(sp);
    m.stats = sp;
    env->body_case = TIDE__V1__ENVELOPE__BODY_SERVER_STATUS_OK;
    env->server_status_ok = &m;
}

static void ex_admin_compact(Tide__V1__Envelope *env)
{
    static Tide__V1__AdminCompact m = TIDE__V1__ADMIN_COMPACT__INIT;

    m.wait = 1;
    env->body_case = TIDE__V1__ENVELOPE__BODY_ADMIN_COMPACT;
    env->admin_compact = &m;
}

static void ex_admin_compact_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__CompactionStats c = TIDE__V1__COMPACTION_STATS__INIT;
    static Tide__V1__AdminCompactOk m = TIDE__V1__ADMIN_COMPACT_OK__INIT;

    c.runs = 12;
    c.bytes_read = 48000000;
    c.bytes_written = 21000000;
    c.points_expired = 3600;
    c.files_deleted = 40;
    c.next_compaction_ns = T0_NS + 600 * S_NS;
    m.compaction = &c;
    env->body_case = TIDE__V1__ENVELOPE__BODY_ADMIN_COMPACT_OK;
    env->admin_compact_ok = &m;
}

static void ex_master_key_rotate(Tide__V1__Envelope *env)
{
    static Tide__V1__MasterKeyRotate m = TIDE__V1__MASTER_KEY_ROTATE__INIT;

    m.new_key_file = "/etc/tide/master-2027.key";
    env->body_case = TIDE__V1__ENVELOPE__BODY_MASTER_KEY_ROTATE;
    env->master_key_rotate = &m;
}

static void ex_master_key_rotate_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__MasterKeyRotateOk m = TIDE__V1__MASTER_KEY_ROTATE_OK__INIT;

    m.old_master_key_id = "3f9a1c0e5b7d2468";
    m.new_master_key_id = "c41e07d9a25b8f31";
    m.data_keys = 1201;
    env->body_case = TIDE__V1__ENVELOPE__BODY_MASTER_KEY_ROTATE_OK;
    env->master_key_rotate_ok = &m;
}

/* Retention and erasure reports */

static void ex_retention_get(Tide__V1__Envelope *env)
{
    static Tide__V1__RetentionGet m = TIDE__V1__RETENTION_GET__INIT;

    m.account_id = 42;
    env->body_case = TIDE__V1__ENVELOPE__BODY_RETENTION_GET;
    env->retention_get = &m;
}

static void ex_retention_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__RetentionRow r = TIDE__V1__RETENTION_ROW__INIT;
    static Tide__V1__RetentionRow *rp[] = {&r};
    static Tide__V1__RetentionOk m = TIDE__V1__RETENTION_OK__INIT;

    r.account_id = 42;
    r.tier = "free";
    r.ttl_s = 604800;
    r.oldest_ts_ns = T0_NS - 7 * 86400 * S_NS;
    r.points = 1000000;
    r.bytes = 1100000;
    r.expiring_points = 8640;
    r.expiring_bytes = 9500;
    r.next_compaction_ns = T0_NS + 600 * S_NS;
    m.n_rows = COUNT(rp);
    m.rows = rp;
    env->body_case = TIDE__V1__ENVELOPE__BODY_RETENTION_OK;
    env->retention_ok = &m;
}

static void ex_erasure_report(Tide__V1__Envelope *env)
{
    static Tide__V1__ErasureReport m = TIDE__V1__ERASURE_REPORT__INIT;

    m.account_id = 42;
    env->body_case = TIDE__V1__ENVELOPE__BODY_ERASURE_REPORT;
    env->erasure_report = &m;
}

static void ex_erasure_report_ok(Tide__V1__Envelope *env)
{
    static Tide__V1__SidecarRows t[2] = {TIDE__V1__SIDECAR_ROWS__INIT,
                                         TIDE__V1__SIDECAR_ROWS__INIT};
    static Tide__V1__SidecarRows *tp[] = {&t[0], &t[1]};
    static Tide__V1__ErasureReportOk m = TIDE__V1__ERASURE_REPORT_OK__INIT;

    /* After the purge and a compaction: only the tombstone is left. */
    t[0].table = "series";
    t[1].table = "tombstones";
    t[1].rows = 1;
    m.account_id = 42;
    m.n_sidecar = COUNT(tp);
    m.sidecar = tp;
    m.files_scanned = 9;
    m.bytes_scanned = 73400320;
    m.next_compaction_ns = T0_NS + 600 * S_NS;
    m.nothing_found = 1;
    env->body_case = TIDE__V1__ENVELOPE__BODY_ERASURE_REPORT_OK;
    env->erasure_report_ok = &m;
}

#define BODY(c) TIDE__V1__ENVELOPE__BODY_##c

/* In oneof field-number order; a request and its answers share an id. */
static const struct example examples[] = {
    {"Hello", BODY(HELLO), 1, ex_hello},
    {"HelloOk", BODY(HELLO_OK), 1, ex_hello_ok},
    {"Auth", BODY(AUTH), 2, ex_auth},
    {"AuthOk", BODY(AUTH_OK), 2, ex_auth_ok},
    {"Error", BODY(ERROR), 3, ex_error},
    {"Ping", BODY(PING), 4, ex_ping},
    {"Pong", BODY(PONG), 4, ex_pong},
    {"Ok", BODY(OK), 5, ex_ok},
    {"WriteBatch", BODY(WRITE_BATCH), 6, ex_write_batch},
    {"WriteAck", BODY(WRITE_ACK), 6, ex_write_ack},
    {"Query", BODY(QUERY), 7, ex_query},
    {"QueryChunk", BODY(QUERY_CHUNK), 7, ex_query_chunk},
    {"QueryEnd", BODY(QUERY_END), 7, ex_query_end},
    {"QueryCancel", BODY(QUERY_CANCEL), 8, ex_query_cancel},
    {"AccountCreate", BODY(ACCOUNT_CREATE), 9, ex_account_create},
    {"AccountCreateOk", BODY(ACCOUNT_CREATE_OK), 9, ex_account_create_ok},
    {"Login", BODY(LOGIN), 10, ex_login},
    {"LoginOk", BODY(LOGIN_OK), 10, ex_login_ok},
    {"Logout", BODY(LOGOUT), 11, ex_logout},
    {"VerifyEmail", BODY(VERIFY_EMAIL), 12, ex_verify_email},
    {"AccountGet", BODY(ACCOUNT_GET), 13, ex_account_get},
    {"Account", BODY(ACCOUNT), 13, ex_account},
    {"AccountUpdate", BODY(ACCOUNT_UPDATE), 14, ex_account_update},
    {"PasswordChange", BODY(PASSWORD_CHANGE), 15, ex_password_change},
    {"AccountPause", BODY(ACCOUNT_PAUSE), 16, ex_account_pause},
    {"AccountDelete", BODY(ACCOUNT_DELETE), 17, ex_account_delete},
    {"AccountDeleteOk", BODY(ACCOUNT_DELETE_OK), 17, ex_account_delete_ok},
    {"AccountRestore", BODY(ACCOUNT_RESTORE), 18, ex_account_restore},
    {"AccountList", BODY(ACCOUNT_LIST), 19, ex_account_list},
    {"AccountListOk", BODY(ACCOUNT_LIST_OK), 19, ex_account_list_ok},
    {"TierList", BODY(TIER_LIST), 20, ex_tier_list},
    {"TierListOk", BODY(TIER_LIST_OK), 20, ex_tier_list_ok},
    {"TierSet", BODY(TIER_SET), 21, ex_tier_set},
    {"TierUpsert", BODY(TIER_UPSERT), 22, ex_tier_upsert},
    {"KeyCreate", BODY(KEY_CREATE), 23, ex_key_create},
    {"KeyCreateOk", BODY(KEY_CREATE_OK), 23, ex_key_create_ok},
    {"KeyList", BODY(KEY_LIST), 24, ex_key_list},
    {"KeyListOk", BODY(KEY_LIST_OK), 24, ex_key_list_ok},
    {"KeyRevoke", BODY(KEY_REVOKE), 25, ex_key_revoke},
    {"DeviceRegister", BODY(DEVICE_REGISTER), 26, ex_device_register},
    {"Device", BODY(DEVICE), 26, ex_device},
    {"DeviceUpdate", BODY(DEVICE_UPDATE), 27, ex_device_update},
    {"DeviceGet", BODY(DEVICE_GET), 28, ex_device_get},
    {"DeviceList", BODY(DEVICE_LIST), 29, ex_device_list},
    {"DeviceListOk", BODY(DEVICE_LIST_OK), 29, ex_device_list_ok},
    {"DeviceDelete", BODY(DEVICE_DELETE), 30, ex_device_delete},
    {"DevicePause", BODY(DEVICE_PAUSE), 31, ex_device_pause},
    {"UsageGet", BODY(USAGE_GET), 32, ex_usage_get},
    {"UsageOk", BODY(USAGE_OK), 32, ex_usage_ok},
    {"AuthLogGet", BODY(AUTH_LOG_GET), 33, ex_auth_log_get},
    {"AuthLogOk", BODY(AUTH_LOG_OK), 33, ex_auth_log_ok},
    {"NotificationList", BODY(NOTIFICATION_LIST), 34, ex_notification_list},
    {"NotificationListOk", BODY(NOTIFICATION_LIST_OK), 34,
     ex_notification_list_ok},
    {"NotificationMarkRead", BODY(NOTIFICATION_MARK_READ), 35,
     ex_notification_mark_read},
    {"NotificationPrefsSet", BODY(NOTIFICATION_PREFS_SET), 36,
     ex_notification_prefs_set},
    {"ExportStart", BODY(EXPORT_START), 37, ex_export_start},
    {"ExportChunk", BODY(EXPORT_CHUNK), 37, ex_export_chunk},
    {"ExportEnd", BODY(EXPORT_END), 37, ex_export_end},
    {"ServerStatus", BODY(SERVER_STATUS), 38, ex_server_status},
    {"ServerStatusOk", BODY(SERVER_STATUS_OK), 38, ex_server_status_ok},
    {"AdminCompact", BODY(ADMIN_COMPACT), 39, ex_admin_compact},
    {"AdminCompactOk", BODY(ADMIN_COMPACT_OK), 39, ex_admin_compact_ok},
    {"MasterKeyRotate", BODY(MASTER_KEY_ROTATE), 42, ex_master_key_rotate},
    {"MasterKeyRotateOk", BODY(MASTER_KEY_ROTATE_OK), 42,
     ex_master_key_rotate_ok},
    {"RetentionGet", BODY(RETENTION_GET), 40, ex_retention_get},
    {"RetentionOk", BODY(RETENTION_OK), 40, ex_retention_ok},
    {"ErasureReport", BODY(ERASURE_REPORT), 41, ex_erasure_report},
    {"ErasureReportOk", BODY(ERASURE_REPORT_OK), 41, ex_erasure_report_ok},
};

/* Variants of a message that a later version added fields to, printed
 * after the table. */
static const struct example variants[] = {
    {"Query (several aggregates)", BODY(QUERY), 9, ex_query_multi},
    {"QueryChunk (several aggregates)", BODY(QUERY_CHUNK), 9,
     ex_query_chunk_multi},
};

/*
 * The table must name every member of the oneof exactly once, in field
 * number order. protoc-c emits a message's fields sorted by number, and
 * Envelope's only field outside the oneof is request_id (1), so entry i
 * must be field i + 1.
 */
static int check_coverage(void)
{
    const ProtobufCMessageDescriptor *d = &tide__v1__envelope__descriptor;
    size_t i;

    if (d->n_fields != COUNT(examples) + 1) {
        fprintf(stderr, "examples: %zu examples for %u oneof members\n",
                COUNT(examples), d->n_fields - 1);
        return -1;
    }
    for (i = 0; i < COUNT(examples); i++) {
        if (d->fields[i + 1].id != (uint32_t)examples[i].body) {
            fprintf(stderr, "examples: %s is not field %u (%s)\n",
                    examples[i].name, d->fields[i + 1].id,
                    d->fields[i + 1].name);
            return -1;
        }
    }
    return 0;
}

static void print_hex(const uint8_t *p, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        printf("%02x%c", p[i], i % 16 == 15 || i + 1 == n ? '\n' : ' ');
}

/*
 * Build, encode, decode and re-encode one example; print it when the round
 * trip is exact. Returns 0, or -1 after a message on stderr.
 */
static int run_example(const struct example *ex)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__Envelope *back = NULL;
    uint8_t frame[EXAMPLE_BYTES_MAX];
    uint8_t again[EXAMPLE_BYTES_MAX];
    size_t consumed = 0;
    int64_t n, m;
    int rc;

    env.request_id = ex->request_id;
    ex->build(&env);
    if (env.body_case != ex->body) {
        fprintf(stderr, "%s: builder set body %d, want %d\n", ex->name,
                (int)env.body_case, (int)ex->body);
        return -1;
    }
    n = tide_frame_encode(&env, frame, sizeof(frame));
    if (n < 0) {
        fprintf(stderr, "%s: encode: %s\n", ex->name, tide_strerror((int)n));
        return -1;
    }
    rc = tide_frame_parse(frame, (size_t)n, 0, NULL, &back, &consumed);
    if (rc) {
        fprintf(stderr, "%s: parse: %s\n", ex->name, tide_strerror(rc));
        return -1;
    }
    if (consumed != (size_t)n || back->body_case != env.body_case ||
        back->request_id != env.request_id) {
        fprintf(stderr,
                "%s: decoded frame differs (body %d, id %" PRIu64
                ", %zu bytes)\n",
                ex->name, (int)back->body_case, back->request_id, consumed);
        tide_frame_free(back, NULL);
        return -1;
    }
    m = tide_frame_encode(back, again, sizeof(again));
    tide_frame_free(back, NULL);
    if (m != n || memcmp(frame, again, (size_t)n) != 0) {
        fprintf(stderr, "%s: re-encoding differs from the original\n",
                ex->name);
        return -1;
    }
    printf("### %s\n\n```\n", ex->name);
    print_hex(frame, (size_t)n);
    printf("```\n\n");
    return 0;
}

int main(void)
{
    size_t i;

    if (check_coverage())
        return 1;
    printf("<!-- Generated by proto/examples.c; do not edit by hand. -->\n\n");
    for (i = 0; i < COUNT(examples); i++) {
        if (run_example(&examples[i]))
            return 1;
    }
    for (i = 0; i < COUNT(variants); i++) {
        if (run_example(&variants[i]))
            return 1;
    }
    return 0;
}
