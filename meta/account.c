/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tiers and accounts: sign-up, profile reads and rectification, email
 * verification, password change, plan and billing, pause and deletion.
 * Field rules are in docs/accounts.md.
 */
#include "meta_int.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <string.h>

#define PREFIX_VERIFY "tide_vrfy_"

/* ---- Accounts ----------------------------------------------------------- */

static const char SQL_TIER_EXISTS[] = "SELECT 1 FROM tiers WHERE id=?1";
/* ?11 is the email for the lookup hash (NULL while encryption is off);
 * with encryption on, ?1 and the names are "" here and sealed by
 * SQL_ACCOUNT_SEAL once the account has its id and data key. */
static const char SQL_ACCOUNT_INSERT[] =
    "INSERT INTO accounts(email, pw_hash, first_name, surname, organization,"
    " timezone, verify_hash, verify_expires_ns, tier, created_ns,"
    " updated_ns, email_hmac) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
    " ?10, ?10, tide_mac('email', 0, ?11))";
static const char SQL_ACCOUNT_SEAL[] =
    "UPDATE accounts SET email=tide_enc(?2, 'accounts.email', id),"
    " first_name=tide_enc(?3, 'accounts.first_name', id),"
    " surname=tide_enc(?4, 'accounts.surname', id),"
    " organization=tide_enc(?5, 'accounts.organization', id) WHERE id=?1";

static int tier_exists(tide_meta *m, unsigned tier)
{
    return tide__meta_ints(m, SQL_TIER_EXISTS, NULL, 0,
                           META_ARGS(META_INT(tier)));
}

static const char SQL_ACCOUNT_BY_EMAIL[] =
    "SELECT id FROM accounts WHERE email=?1 AND deleted_ns IS NULL";
static const char SQL_ACCOUNT_BY_EMAIL_HMAC[] =
    "SELECT id FROM accounts WHERE email_hmac=tide_mac('email', 0, ?1)"
    " AND deleted_ns IS NULL";

/* A self sign-up named an email that has an account: tell its owner, by
 * the notification the operator's mailer sends, in place of a
 * verification mail. The caller answers as for a new account, so the
 * reply does not reveal which emails exist (docs/accounts.md). Best
 * effort: a failure here changes nothing for the caller. m->lock held. */
static void signup_taken(tide_meta *m, const char *email)
{
    int64_t id;

    if (tide__meta_ints(
            m, m->crypt ? SQL_ACCOUNT_BY_EMAIL_HMAC : SQL_ACCOUNT_BY_EMAIL, &id,
            1, META_ARGS(META_TEXT(email))) == 0)
        tide__meta_notify_add(m, (uint64_t)id, TIDE_META_NOTIFY_SECURITY,
                              "sign-up attempted with this account's email "
                              "address; if it was you, log in or reset the "
                              "password");
}

int tide_meta_account_create(tide_meta *m, const struct tide_meta_principal *p,
                             const struct tide_meta_account_new *a,
                             uint64_t *id_out, char *verify_token)
{
    char email[TIDE_META_EMAIL_MAX + 1];
    char token[TIDE_META_SECRET_MAX + 1];
    uint8_t vhash[TIDE__META_HASH_LEN];
    const char *tz;
    char *pw = NULL;
    uint64_t id = 0;
    unsigned tier;
    int64_t now;
    int rc;

    if (!a)
        return TIDE_EINVAL;
    tz = a->timezone ? a->timezone : "UTC";
    tier = a->tier ? a->tier : 1;
    if (tide__meta_email_norm(a->email, email) ||
        tide__meta_text_ok(a->first_name ? a->first_name : "",
                           TIDE_META_NAME_MAX, 1) ||
        tide__meta_text_ok(a->surname ? a->surname : "", TIDE_META_NAME_MAX,
                           1) ||
        tide__meta_text_ok(a->organization ? a->organization : "",
                           TIDE_META_ORG_MAX, 1) ||
        tide__meta_tz_ok(m->o.zoneinfo_dir, tz))
        return TIDE_EINVAL;
    /* Authorise before the expensive hash, without holding the lock
     * through it. */
    rc = tide_meta_authorize(m, p, TIDE_META_ACT_ACCOUNT_CREATE, 0, 0);
    if (rc)
        return rc;
    rc = tide__meta_pw_hash(m, a->password, &pw);
    if (rc)
        return rc;
    rc = tide__meta_secret_new(PREFIX_VERIFY, token, vhash);
    if (rc)
        goto fail;
    tide__meta_lock(m);
    now = tide__meta_now(m);
    rc = tide__meta_begin(m);
    if (rc)
        goto fail_locked;
    rc = tier_exists(m, tier);
    /* With encryption on, the plaintext never reaches a page: the row is
     * inserted with "" and sealed under the id it got. */
    if (!rc)
        rc = tide__meta_run(
            m, SQL_ACCOUNT_INSERT,
            META_ARGS(META_TEXT(m->crypt ? "" : email), META_TEXT(pw),
                      META_TEXT(m->crypt ? "" : a->first_name),
                      META_TEXT(m->crypt ? "" : a->surname),
                      META_TEXT(m->crypt ? "" : a->organization), META_TEXT(tz),
                      META_BLOB(vhash, sizeof(vhash)),
                      META_INT(now + m->o.verify_ttl_ns), META_INT(tier),
                      META_INT(now), META_TEXT(email)));
    if (!rc)
        id = (uint64_t)sqlite3_last_insert_rowid(m->db);
    if (!rc && m->crypt) {
        rc = tide__meta_key_create(m, id);
        if (!rc)
            rc = tide__meta_run(m, SQL_ACCOUNT_SEAL,
                                META_ARGS(META_INT(id), META_TEXT(email),
                                          META_TEXT(a->first_name),
                                          META_TEXT(a->surname),
                                          META_TEXT(a->organization)));
    }
    rc = tide__meta_end(m, rc);
    if (rc && id)
        tide__meta_key_forget(m, id);
    if (rc == TIDE_EEXIST && p->role == TIDE_META_ROLE_ANON)
        signup_taken(m, email);
    if (rc)
        goto fail_locked;
    if (id_out)
        *id_out = id;
    tide__meta_unlock(m);
    if (verify_token)
        memcpy(verify_token, token, sizeof(token));
    OPENSSL_cleanse(token, sizeof(token));
    tide_free(pw);
    return 0;

fail_locked:
    tide__meta_unlock(m);
fail:
    OPENSSL_cleanse(token, sizeof(token));
    tide_free(pw);
    return rc;
}

static const char SQL_ACCOUNT_GET[] =
    "SELECT id, tide_dec(email, 'accounts.email', id),"
    " tide_dec(first_name, 'accounts.first_name', id),"
    " tide_dec(surname, 'accounts.surname', id),"
    " tide_dec(organization, 'accounts.organization', id), timezone,"
    " email_verified, tier, plan_status, billing_customer_id,"
    " billing_period, notify_device, notify_usage, notify_product, paused,"
    " created_ns, updated_ns FROM accounts WHERE id=?1"
    " AND deleted_ns IS NULL";

static void account_row(sqlite3_stmt *st, void *arg)
{
    struct tide_meta_account *out = arg;

    memset(out, 0, sizeof(*out));
    out->id = (uint64_t)sqlite3_column_int64(st, 0);
    tide__meta_col_text(st, 1, out->email, sizeof(out->email));
    tide__meta_col_text(st, 2, out->first_name, sizeof(out->first_name));
    tide__meta_col_text(st, 3, out->surname, sizeof(out->surname));
    tide__meta_col_text(st, 4, out->organization, sizeof(out->organization));
    tide__meta_col_text(st, 5, out->timezone, sizeof(out->timezone));
    out->email_verified = sqlite3_column_int(st, 6);
    out->tier = (uint16_t)sqlite3_column_int(st, 7);
    tide__meta_col_text(st, 8, out->plan_status, sizeof(out->plan_status));
    tide__meta_col_text(st, 9, out->billing_customer_id,
                        sizeof(out->billing_customer_id));
    tide__meta_col_text(st, 10, out->billing_period,
                        sizeof(out->billing_period));
    out->notify_device = sqlite3_column_int(st, 11);
    out->notify_usage = sqlite3_column_int(st, 12);
    out->notify_product = sqlite3_column_int(st, 13);
    out->paused = sqlite3_column_int(st, 14);
    out->created_ns = sqlite3_column_int64(st, 15);
    out->updated_ns = sqlite3_column_int64(st, 16);
}

int tide_meta_account_get(tide_meta *m, const struct tide_meta_principal *p,
                          uint64_t id, struct tide_meta_account *out)
{
    int rc;

    if (!out)
        return TIDE_EINVAL;
    tide__meta_lock(m);
    rc = tide__meta_authorize_locked(m, p, TIDE_META_ACT_ACCOUNT_READ, id, 0);
    if (!rc)
        rc = tide__meta_get(m, SQL_ACCOUNT_GET, account_row, out,
                            META_ARGS(META_INT(id)));
    tide__meta_unlock(m);
    return rc;
}

static const char SQL_VERIFY[] =
    "UPDATE accounts SET email_verified=1, verify_hash=NULL,"
    " verify_expires_ns=NULL, updated_ns=?2 WHERE verify_hash=?1"
    " AND verify_expires_ns>?2 AND deleted_ns IS NULL";

int tide_meta_account_verify_email(tide_meta *m, const char *token)
{
    uint8_t hash[TIDE__META_HASH_LEN];

    if (!token || strncmp(token, PREFIX_VERIFY, strlen(PREFIX_VERIFY)) ||
        strnlen(token, TIDE_META_SECRET_MAX + 1) > TIDE_META_SECRET_MAX)
        return TIDE_EAUTH;
    /* The hash is the lookup key: equality in the index is on a SHA-256 of
     * a 192-bit secret, which leaks nothing through timing. */
    tide__meta_sha256(token, hash);
    /* verify_hash is unique: the update changes one row or none. */
    return tide__meta_authz_run(
        m, NULL, 0, 0, 0, SQL_VERIFY, TIDE_EAUTH,
        META_ARGS(META_BLOB(hash, sizeof(hash)), META_NOW));
}

/* tide_enc and tide_mac leave the value as it is, and the hash NULL,
 * while encryption is off. */
static const char SQL_UPD_EMAIL[] =
    "UPDATE accounts SET email=tide_enc(?2, 'accounts.email', id),"
    " email_hmac=tide_mac('email', 0, ?2), email_verified=0, updated_ns=?3"
    " WHERE id=?1 AND tide_dec(email, 'accounts.email', id)<>?2";
static const char SQL_UPD_FIRST[] =
    "UPDATE accounts SET first_name=tide_enc(?2, 'accounts.first_name', id),"
    " updated_ns=?3 WHERE id=?1";
static const char SQL_UPD_SURNAME[] =
    "UPDATE accounts SET surname=tide_enc(?2, 'accounts.surname', id),"
    " updated_ns=?3 WHERE id=?1";
static const char SQL_UPD_ORG[] =
    "UPDATE accounts SET organization=tide_enc(?2, 'accounts.organization',"
    " id), updated_ns=?3 WHERE id=?1";
static const char SQL_UPD_TZ[] =
    "UPDATE accounts SET timezone=?2, updated_ns=?3 WHERE id=?1";

static int update_col(tide_meta *m, const char *sql, uint64_t id, const char *v,
                      int64_t now)
{
    return tide__meta_run(m, sql,
                          META_ARGS(META_INT(id), META_TEXT(v), META_INT(now)));
}

int tide_meta_account_update(tide_meta *m, const struct tide_meta_principal *p,
                             uint64_t id, const struct tide_meta_profile *pr)
{
    char email[TIDE_META_EMAIL_MAX + 1];
    int64_t now;
    int rc;

    if (!pr || (pr->email && tide__meta_email_norm(pr->email, email)) ||
        (pr->first_name &&
         tide__meta_text_ok(pr->first_name, TIDE_META_NAME_MAX, 1)) ||
        (pr->surname &&
         tide__meta_text_ok(pr->surname, TIDE_META_NAME_MAX, 1)) ||
        (pr->organization &&
         tide__meta_text_ok(pr->organization, TIDE_META_ORG_MAX, 1)) ||
        (pr->timezone && tide__meta_tz_ok(m->o.zoneinfo_dir, pr->timezone)))
        return TIDE_EINVAL;
    rc = tide__meta_authz_begin(m, p, TIDE_META_ACT_ACCOUNT_UPDATE, id, 0);
    if (rc)
        goto out;
    now = tide__meta_now(m);
    if (pr->email)
        rc = update_col(m, SQL_UPD_EMAIL, id, email, now);
    if (!rc && pr->first_name)
        rc = update_col(m, SQL_UPD_FIRST, id, pr->first_name, now);
    if (!rc && pr->surname)
        rc = update_col(m, SQL_UPD_SURNAME, id, pr->surname, now);
    if (!rc && pr->organization)
        rc = update_col(m, SQL_UPD_ORG, id, pr->organization, now);
    if (!rc && pr->timezone)
        rc = update_col(m, SQL_UPD_TZ, id, pr->timezone, now);
    rc = tide__meta_end(m, rc);
out:
    tide__meta_unlock(m);
    return rc;
}

static const char SQL_SET_PW[] =
    "UPDATE accounts SET pw_hash=?2, updated_ns=?3 WHERE id=?1";
static const char SQL_END_SESSIONS[] =
    "UPDATE sessions SET ended=1 WHERE account_id=?1";

int tide_meta_account_set_password(tide_meta *m,
                                   const struct tide_meta_principal *p,
                                   uint64_t id, const char *password)
{
    char *pw = NULL;
    int rc;

    rc = tide_meta_authorize(m, p, TIDE_META_ACT_ACCOUNT_UPDATE, id, 0);
    if (rc)
        return rc;
    rc = tide__meta_pw_hash(m, password, &pw);
    if (rc)
        return rc;
    /* Authorised again: the principal may have lost its right during the
     * hash. */
    rc = tide__meta_authz_begin(m, p, TIDE_META_ACT_ACCOUNT_UPDATE, id, 0);
    if (rc)
        goto out;
    rc = update_col(m, SQL_SET_PW, id, pw, tide__meta_now(m));
    if (!rc)
        rc = tide__meta_run(m, SQL_END_SESSIONS, META_ARGS(META_INT(id)));
    rc = tide__meta_end(m, rc);
out:
    tide__meta_unlock(m);
    tide_free(pw);
    return rc;
}

static const char SQL_SET_TIER[] =
    "UPDATE accounts SET tier=?2, plan_status=coalesce(?3, plan_status),"
    " billing_customer_id=coalesce(?4, billing_customer_id),"
    " billing_period=coalesce(?5, billing_period), updated_ns=?6"
    " WHERE id=?1";

int tide_meta_account_set_tier(tide_meta *m,
                               const struct tide_meta_principal *p, uint64_t id,
                               uint16_t tier, const char *plan_status,
                               const char *customer_id, const char *period)
{
    int rc;

    if ((plan_status &&
         tide__meta_text_ok(plan_status, TIDE_META_STATUS_MAX, 0)) ||
        (customer_id &&
         tide__meta_text_ok(customer_id, TIDE_META_BILLING_MAX, 1)) ||
        (period && tide__meta_text_ok(period, TIDE_META_BILLING_MAX, 1)))
        return TIDE_EINVAL;
    tide__meta_lock(m);
    rc = tide__meta_authorize_locked(m, p, TIDE_META_ACT_TIER_SET, id, 0);
    if (!rc)
        rc = tier_exists(m, tier);
    if (!rc)
        rc = tide__meta_run(
            m, SQL_SET_TIER,
            META_ARGS(META_INT(id), META_INT(tier), META_OPT(plan_status),
                      META_OPT(customer_id), META_OPT(period), META_NOW));
    tide__meta_changed(m, rc, id, 0);
    tide__meta_unlock(m);
    return rc;
}

static const char SQL_PAUSE[] =
    "UPDATE accounts SET paused=?2, updated_ns=?3 WHERE id=?1";

int tide_meta_account_pause(tide_meta *m, const struct tide_meta_principal *p,
                            uint64_t id, int paused)
{
    int rc = tide__meta_authz_run(
        m, p, TIDE_META_ACT_ACCOUNT_PAUSE, id, 0, SQL_PAUSE, 0,
        META_ARGS(META_INT(id), META_INT(!!paused), META_NOW));

    tide__meta_changed(m, rc, id, 0);
    return rc;
}

static const char SQL_DELETE[] =
    "UPDATE accounts SET deleted_ns=?2, updated_ns=?2, verify_hash=NULL"
    " WHERE id=?1 AND deleted_ns IS NULL";
static const char SQL_TOMBSTONE[] =
    "INSERT INTO tombstones(kind, object_id, account_id, deleted_ns,"
    " purge_after_ns) VALUES(?1, ?2, ?3, ?4, ?5)";
static const char SQL_DELETE_SERIES[] =
    "UPDATE series SET deleted_ns=?2 WHERE account_id=?1"
    " AND deleted_ns IS NULL";

int tide__meta_tombstone(tide_meta *m, const char *kind, uint64_t object_id,
                         uint64_t account_id, int64_t now, int64_t grace_ns)
{
    return tide__meta_run(m, SQL_TOMBSTONE,
                          META_ARGS(META_TEXT(kind), META_INT(object_id),
                                    META_INT(account_id), META_INT(now),
                                    META_INT(now + grace_ns)));
}

int tide_meta_account_delete(tide_meta *m, const struct tide_meta_principal *p,
                             uint64_t id)
{
    int64_t now;
    int rc;

    rc = tide__meta_authz_begin(m, p, TIDE_META_ACT_ACCOUNT_DELETE, id, 0);
    if (rc)
        goto out;
    now = tide__meta_now(m);
    rc = tide__meta_run(m, SQL_DELETE, META_ARGS(META_INT(id), META_INT(now)));
    if (!rc)
        rc = tide__meta_run(m, SQL_DELETE_SERIES,
                            META_ARGS(META_INT(id), META_INT(now)));
    if (!rc)
        rc = tide__meta_tombstone(m, "account", id, id, now,
                                  m->o.delete_grace_ns);
    rc = tide__meta_end(m, rc);
    if (!rc)
        tide__meta_registry_kill(m, id, 0);
out:
    tide__meta_changed(m, rc, id, 0);
    tide__meta_unlock(m);
    return rc;
}

static const char SQL_RESTORE_STATE[] =
    "SELECT a.deleted_ns FROM accounts a JOIN tombstones t"
    " ON t.kind='account' AND t.object_id=a.id AND t.purged_ns IS NULL"
    " AND t.purge_after_ns > ?2 WHERE a.id=?1 AND a.deleted_ns IS NOT NULL";
static const char SQL_RESTORE[] =
    "UPDATE accounts SET deleted_ns=NULL, updated_ns=?2 WHERE id=?1";
static const char SQL_RESTORE_SERIES[] =
    "UPDATE series SET deleted_ns=NULL WHERE account_id=?1 AND deleted_ns=?2";
static const char SQL_RESTORE_TOMBSTONE[] =
    "DELETE FROM tombstones WHERE kind='account' AND object_id=?1"
    " AND purged_ns IS NULL";

int tide_meta_account_restore(tide_meta *m, const struct tide_meta_principal *p,
                              uint64_t id)
{
    int64_t now, deleted_ns = 0;
    int rc;

    rc = tide__meta_authz_begin(m, p, TIDE_META_ACT_OPERATOR, 0, 0);
    if (rc)
        goto out;
    now = tide__meta_now(m);
    /* TIDE_ENOTFOUND: not deleted, unknown, or past its grace period
     * (purged). */
    rc = tide__meta_ints(m, SQL_RESTORE_STATE, &deleted_ns, 1,
                         META_ARGS(META_INT(id), META_INT(now)));
    /* Series deleted with the account carry its deletion time; those of
     * devices deleted earlier keep theirs and stay deleted. */
    if (!rc)
        rc = tide__meta_run(m, SQL_RESTORE,
                            META_ARGS(META_INT(id), META_INT(now)));
    if (!rc)
        rc = tide__meta_run(m, SQL_RESTORE_SERIES,
                            META_ARGS(META_INT(id), META_INT(deleted_ns)));
    if (!rc)
        rc = tide__meta_run(m, SQL_RESTORE_TOMBSTONE, META_ARGS(META_INT(id)));
    rc = tide__meta_end(m, rc);
    if (!rc)
        rc = tide__meta_registry_revive(m, id);
out:
    tide__meta_changed(m, rc, id, 0);
    tide__meta_unlock(m);
    return rc;
}
