/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin path: account, key, usage, log and tier requests mapped
 * one-to-one onto the sidecar (meta/include/tide/meta.h; devices are in
 * admin_device.c), which checks the role of every
 * call in tide_meta_authorize(). A request naming `account_id` is the
 * operator's; everyone else acts on their own account, and naming another
 * one is PERMISSION_DENIED (handle_admin). Requests that hash or check a
 * password (AccountCreate, PasswordChange, AccountDelete) run as password
 * jobs off the loop (admin_int.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "admin_int.h"

/* The account a request acts on. */
uint64_t admin_target_account(const struct conn *c, uint64_t requested)
{
    return c->who.role == TIDE_META_ROLE_ADMIN ? requested : c->who.account_id;
}

/* Tier ids are small: the tiers table is scanned by id. */
#define TIER_ID_MAX 256

/* The id of the tier named `name`, or 0. With `free_id`, also the first
 * unused id (0 when the table is full). */
static uint16_t tier_id_by_name(tide_meta *m, const char *name,
                                uint16_t *free_id)
{
    struct tide_meta_tier t;

    if (free_id)
        *free_id = 0;
    for (uint16_t i = 1; i < TIER_ID_MAX; i++) {
        if (tide_meta_tier_get(m, i, &t)) {
            if (free_id && !*free_id)
                *free_id = i;
        } else if (!strcmp(t.name, name)) {
            return i;
        }
    }
    return 0;
}

void admin_reply(struct conn *c, uint64_t rid, Tide__V1__Envelope *env)
{
    env->request_id = rid;
    conn_send(c, env);
}

void admin_reply_ok(struct conn *c, uint64_t rid)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__Ok ok = TIDE__V1__OK__INIT;

    env.body_case = TIDE__V1__ENVELOPE__BODY_OK;
    env.ok = &ok;
    admin_reply(c, rid, &env);
}

void admin_reply_rc(struct conn *c, uint64_t rid, int rc)
{
    if (rc == 0)
        admin_reply_ok(c, rid);
    else
        conn_send_error(c, rid, tide_wire_error(rc), tide_strerror(rc), 0);
}

static void fill_account(Tide__V1__Account *a,
                         const struct tide_meta_account *m,
                         Tide__V1__NotificationPrefs *prefs, const char *tier)
{
    a->id = m->id;
    a->email = (char *)m->email;
    a->first_name = (char *)m->first_name;
    a->surname = (char *)m->surname;
    a->organization = (char *)m->organization;
    a->timezone = (char *)m->timezone;
    a->email_verified = m->email_verified;
    a->tier = (char *)tier;
    a->plan_status = !strcmp(m->plan_status, "trialing")
                         ? TIDE__V1__PLAN_STATUS__PLAN_STATUS_TRIALING
                     : !strcmp(m->plan_status, "past_due")
                         ? TIDE__V1__PLAN_STATUS__PLAN_STATUS_PAST_DUE
                     : !strcmp(m->plan_status, "canceled")
                         ? TIDE__V1__PLAN_STATUS__PLAN_STATUS_CANCELED
                         : TIDE__V1__PLAN_STATUS__PLAN_STATUS_ACTIVE;
    a->billing_customer_id = (char *)m->billing_customer_id;
    a->billing_period = (char *)m->billing_period;
    prefs->device_alerts = m->notify_device;
    prefs->usage_warnings = m->notify_usage;
    prefs->product_news = m->notify_product;
    a->notification_prefs = prefs;
    a->created_ns = m->created_ns;
    a->updated_ns = m->updated_ns;
    a->paused = m->paused;
}

static void send_account(struct conn *c, uint64_t rid, uint64_t id,
                         int create_ok, const char *token)
{
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__Account a = TIDE__V1__ACCOUNT__INIT;
    Tide__V1__AccountCreateOk ok = TIDE__V1__ACCOUNT_CREATE_OK__INIT;
    Tide__V1__NotificationPrefs prefs = TIDE__V1__NOTIFICATION_PREFS__INIT;
    struct tide_meta_account m;
    struct tide_meta_tier t;
    const struct tide_meta_principal *p =
        create_ok ? &tided_system_principal : &c->who;
    int rc = tide_meta_account_get(c->srv->meta, p, id, &m);

    if (rc) {
        admin_reply_rc(c, rid, rc);
        return;
    }
    if (tide_meta_tier_get(c->srv->meta, m.tier, &t))
        t.name[0] = 0;
    fill_account(&a, &m, &prefs, t.name);
    if (create_ok) {
        ok.account = &a;
        ok.verification_token = (char *)(token ? token : "");
        env.body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_CREATE_OK;
        env.account_create_ok = &ok;
    } else {
        env.body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT;
        env.account = &a;
    }
    admin_reply(c, rid, &env);
}

/* A sign-up or the operator's AccountCreate, on a password job. */
struct create_args {
    struct login_job job;
    char *email, *password, *first_name, *surname, *organization, *timezone;
    uint16_t tier;
    uint64_t id;
    char token[TIDE_META_SECRET_MAX + 1];
};

static void create_free(struct login_job *j)
{
    struct create_args *a = (struct create_args *)j;

    if (a->password)
        explicit_bzero(a->password, strlen(a->password));
    explicit_bzero(a->token, sizeof(a->token));
    tide_free(a->email);
    tide_free(a->password);
    tide_free(a->first_name);
    tide_free(a->surname);
    tide_free(a->organization);
    tide_free(a->timezone);
    tide_free(a);
}

static void create_work(struct login_job *j)
{
    struct create_args *a = (struct create_args *)j;
    struct tide_meta_account_new n = {.email = a->email,
                                      .password = a->password,
                                      .first_name = a->first_name,
                                      .surname = a->surname,
                                      .organization = a->organization,
                                      .timezone =
                                          a->timezone[0] ? a->timezone : NULL,
                                      .tier = a->tier};

    j->rc =
        tide_meta_account_create(j->srv->meta, &j->who, &n, &a->id, a->token);
}

static void create_answer(struct conn *c, struct login_job *j)
{
    struct create_args *a = (struct create_args *)j;

    if (j->who.role != TIDE_META_ROLE_ADMIN) {
        /* A sign-up is answered Ok whether the email was new or had an
         * account already (whose owner the sidecar notified): the answer
         * tells no one which emails exist. The token goes out by mail,
         * never in the reply. */
        admin_reply_rc(c, j->rid, j->rc == TIDE_EEXIST ? 0 : j->rc);
        return;
    }
    /* The operator's mailer delivers the token. */
    if (j->rc)
        admin_reply_rc(c, j->rid, j->rc);
    else
        send_account(c, j->rid, a->id, 1, a->token);
}

static void account_create(struct conn *c, const Tide__V1__Envelope *e)
{
    const Tide__V1__AccountCreate *r = e->account_create;
    int admin = c->state == CONN_AUTHED && c->who.role == TIDE_META_ROLE_ADMIN;
    struct create_args *a;
    uint16_t tier = 0;

    if (!admin && !c->srv->cfg.allow_signup) {
        conn_send_error(c, e->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED,
                        "sign-up is disabled on this server", 0);
        return;
    }
    if (r->tier[0]) {
        if (!admin) {
            conn_send_error(c, e->request_id,
                            TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED,
                            "only the operator picks the tier", 0);
            return;
        }
        tier = tier_id_by_name(c->srv->meta, r->tier, NULL);
        if (!tier) {
            conn_send_error(c, e->request_id,
                            TIDE__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND,
                            "no such tier", 0);
            return;
        }
    }
    if (!admin && tided_signup_throttled(c, e->request_id))
        return;
    a = tide_calloc(1, sizeof(*a));
    if (!a || !(a->email = tide_strdup(r->email)) ||
        !(a->password = tide_strdup(r->password)) ||
        !(a->first_name = tide_strdup(r->first_name)) ||
        !(a->surname = tide_strdup(r->surname)) ||
        !(a->organization = tide_strdup(r->organization)) ||
        !(a->timezone = tide_strdup(r->timezone))) {
        if (a)
            create_free(&a->job);
        admin_reply_rc(c, e->request_id, -ENOMEM);
        return;
    }
    a->tier = tier;
    a->job.work = create_work;
    a->job.answer = create_answer;
    a->job.done = create_free;
    tided_password_job(c, e->request_id, &a->job);
}

static Tide__V1__Role wire_role(enum tide_meta_role r)
{
    return (Tide__V1__Role)r;
}

static void key_create(struct conn *c, const Tide__V1__Envelope *e)
{
    const Tide__V1__KeyCreate *r = e->key_create;
    uint64_t account = admin_target_account(c, r->account_id), device = 0, id;
    char secret[TIDE_META_SECRET_MAX + 1];
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__KeyCreateOk ok = TIDE__V1__KEY_CREATE_OK__INIT;
    Tide__V1__ApiKey k = TIDE__V1__API_KEY__INIT;
    enum tide_meta_role role;
    int rc;

    if (r->role == TIDE__V1__ROLE__ROLE_OPERATOR) {
        /* Another operator key (the sidecar allows it the operator
         * only): how the bootstrap key is rotated (docs/accounts.md). */
        role = TIDE_META_ROLE_ADMIN;
        account = 0;
    } else if (r->role == TIDE__V1__ROLE__ROLE_ANALYST) {
        role = TIDE_META_ROLE_ANALYST;
    } else if (r->role == TIDE__V1__ROLE__ROLE_DEVICE) {
        role = TIDE_META_ROLE_DEVICE;
        if (r->client_cert_sha256.len &&
            r->client_cert_sha256.len != TIDE_META_CERT_FP_BYTES) {
            conn_send_error(c, e->request_id,
                            TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                            "client_cert_sha256 must be 32 bytes (the "
                            "SHA-256 of the certificate's DER)",
                            0);
            return;
        }
        rc = tided_device_resolve(c->srv, account, r->device, 0, &device);
        if (rc) {
            admin_reply_rc(c, e->request_id, rc);
            return;
        }
    } else {
        conn_send_error(c, e->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                        "role must be ROLE_ANALYST, ROLE_DEVICE or "
                        "ROLE_OPERATOR",
                        0);
        return;
    }
    if (r->client_cert_sha256.len && role != TIDE_META_ROLE_DEVICE) {
        conn_send_error(c, e->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                        "only device keys carry a client certificate", 0);
        return;
    }
    rc = tide_meta_key_create(c->srv->meta, &c->who, account, role, device,
                              r->name, secret, &id);
    /* The certificate is registered with the key or the key is taken
     * back: a key without the certificate asked for is not what was
     * requested. */
    if (!rc && r->client_cert_sha256.len &&
        (rc = tide_meta_key_set_cert(c->srv->meta, &c->who, account, id,
                                     r->client_cert_sha256.data)) != 0)
        tide_meta_key_revoke(c->srv->meta, &c->who, account, id);
    if (rc) {
        admin_reply_rc(c, e->request_id, rc);
        return;
    }
    k.client_cert = r->client_cert_sha256.len > 0;
    k.id = id;
    k.name = r->name;
    k.prefix = "";
    k.role = wire_role(role);
    k.device = r->device;
    k.created_ns = tided_now_ns();
    ok.key = &k;
    ok.secret = secret;
    env.body_case = TIDE__V1__ENVELOPE__BODY_KEY_CREATE_OK;
    env.key_create_ok = &ok;
    admin_reply(c, e->request_id, &env);
}

/* The page size a request asks for, within 1..LIST_PAGE_MAX. */
size_t admin_page_limit(uint32_t limit)
{
    return limit && limit < LIST_PAGE_MAX ? limit : LIST_PAGE_MAX;
}

static void key_list(struct conn *c, const Tide__V1__Envelope *e)
{
    const Tide__V1__KeyList *r = e->key_list;
    uint64_t account = admin_target_account(c, r->account_id);
    size_t limit = admin_page_limit(r->limit);
    struct tide_meta_key *keys = tide_malloc(limit * sizeof(*keys));
    Tide__V1__ApiKey *v = tide_calloc(limit, sizeof(*v));
    Tide__V1__ApiKey **pv = tide_calloc(limit, sizeof(*pv));
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__KeyListOk ok = TIDE__V1__KEY_LIST_OK__INIT;
    size_t n = 0;
    int rc = keys && v && pv ? 0 : -ENOMEM;

    if (rc == 0)
        rc = tide_meta_key_list(c->srv->meta, &c->who, account, r->page_token,
                                keys, limit, &n);
    if (rc) {
        admin_reply_rc(c, e->request_id, rc);
    } else {
        for (size_t i = 0; i < n; i++) {
            tide__v1__api_key__init(&v[i]);
            v[i].id = keys[i].id;
            v[i].name = keys[i].name;
            v[i].prefix = keys[i].prefix;
            v[i].role = wire_role(keys[i].role);
            v[i].device = "";
            v[i].created_ns = keys[i].created_ns;
            v[i].last_used_ns = keys[i].last_used_ns;
            v[i].last_used_ip = keys[i].last_ip;
            v[i].request_count = keys[i].requests;
            v[i].revoked = keys[i].revoked;
            v[i].client_cert = keys[i].has_cert;
            pv[i] = &v[i];
        }
        ok.keys = pv;
        ok.n_keys = n;
        /* A full page may have more behind it; a short one is the end. */
        ok.next_page_token = n == limit ? keys[n - 1].id : 0;
        env.body_case = TIDE__V1__ENVELOPE__BODY_KEY_LIST_OK;
        env.key_list_ok = &ok;
        admin_reply(c, e->request_id, &env);
    }
    tide_free(keys);
    tide_free(v);
    tide_free(pv);
}

static void usage_get(struct conn *c, const Tide__V1__Envelope *e)
{
    const Tide__V1__UsageGet *r = e->usage_get;
    uint64_t account = admin_target_account(c, r->account_id);
    struct tide_meta_usage *u = tide_malloc(400 * sizeof(*u));
    Tide__V1__UsageDay *v = tide_calloc(400, sizeof(*v));
    Tide__V1__UsageDay **pv = tide_calloc(400, sizeof(*pv));
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__UsageOk ok = TIDE__V1__USAGE_OK__INIT;
    size_t n = 0;
    int rc = u && v && pv ? 0 : -ENOMEM;

    if (rc == 0)
        rc = tide_meta_usage_read(c->srv->meta, &c->who, account, r->from_day,
                                  r->to_day, u, 400, &n);
    if (rc) {
        admin_reply_rc(c, e->request_id, rc);
    } else {
        for (size_t i = 0; i < n; i++) {
            tide__v1__usage_day__init(&v[i]);
            v[i].day = (int32_t)u[i].day;
            v[i].messages = u[i].messages;
            v[i].points = u[i].points;
            v[i].bytes_in = u[i].bytes_in;
            v[i].bytes_out = u[i].bytes_out;
            v[i].queries = u[i].queries;
            pv[i] = &v[i];
        }
        ok.days = pv;
        ok.n_days = n;
        env.body_case = TIDE__V1__ENVELOPE__BODY_USAGE_OK;
        env.usage_ok = &ok;
        admin_reply(c, e->request_id, &env);
    }
    tide_free(u);
    tide_free(v);
    tide_free(pv);
}

/* Is `name` among the `set` field names of an update request? */
int admin_in_set(char **set, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(set[i], name))
            return 1;
    return 0;
}

/* Owners confirm sensitive requests with their password: a login whose
 * session is ended at once. On a password job's thread. Returns 0,
 * TIDE_EAUTH (a wrong password), or the error of reading the account
 * (the caller may not act on it). */
static int confirm_password(struct login_job *j, uint64_t account,
                            const char *password)
{
    tide_meta *m = j->srv->meta;
    struct tide_meta_account a;
    struct tide_meta_principal p;
    char token[TIDE_META_SECRET_MAX + 1];
    int rc;

    if (j->who.role == TIDE_META_ROLE_ADMIN)
        return 0;
    rc = tide_meta_account_get(m, &j->who, account, &a);
    if (rc)
        return rc;
    rc = tide_meta_login(m, a.email, password, j->ip, token, &p);
    explicit_bzero(token, sizeof(token));
    if (rc == 0)
        tide_meta_logout(m, &p);
    return rc;
}

/* PasswordChange and AccountDelete, on a password job. */
struct confirm_args {
    struct login_job job;
    uint64_t account;
    char *password;     /* the one that confirms */
    char *new_password; /* PasswordChange */
    int immediate;      /* AccountDelete */
    int wrong;          /* the confirmation failed */
};

static void confirm_free(struct login_job *j)
{
    struct confirm_args *a = (struct confirm_args *)j;

    if (a->password)
        explicit_bzero(a->password, strlen(a->password));
    if (a->new_password)
        explicit_bzero(a->new_password, strlen(a->new_password));
    tide_free(a->password);
    tide_free(a->new_password);
    tide_free(a);
}

/* The confirmation failed: count it for the IP and the account, end the
 * guessed-on session at the account's limit, and close the connection. */
static void confirm_refused(struct conn *c, struct login_job *j,
                            const char *msg)
{
    struct confirm_args *a = (struct confirm_args *)j;

    if (tided_confirm_failed(c, a->account) && j->who.session_id) {
        tide_log(LOG_WARN,
                 "ending session %llu of account %llu: repeated wrong "
                 "passwords from %s",
                 (unsigned long long)j->who.session_id,
                 (unsigned long long)a->account, c->ip);
        tide_meta_logout(c->srv->meta, &j->who);
    }
    conn_send_error(c, j->rid, TIDE__V1__ERROR_CODE__ERROR_CODE_AUTH_FAILED,
                    msg, 1);
}

/* Start a confirmed request: refused when throttled; else the job `a`
 * (whose strings the caller set) runs. A NUL in a field was refused by
 * route() before. */
static void confirm_start(struct conn *c, const Tide__V1__Envelope *e,
                          struct confirm_args *a)
{
    if (!a->password ||
        (e->body_case == TIDE__V1__ENVELOPE__BODY_PASSWORD_CHANGE &&
         !a->new_password)) {
        confirm_free(&a->job);
        admin_reply_rc(c, e->request_id, -ENOMEM);
        return;
    }
    if (c->who.role != TIDE_META_ROLE_ADMIN &&
        tided_confirm_throttled(c, e->request_id, a->account)) {
        confirm_free(&a->job);
        return;
    }
    a->job.done = confirm_free;
    tided_password_job(c, e->request_id, &a->job);
}

static void password_work(struct login_job *j)
{
    struct confirm_args *a = (struct confirm_args *)j;

    j->rc = confirm_password(j, a->account, a->password);
    a->wrong = j->rc == TIDE_EAUTH;
    if (j->rc == 0)
        j->rc = tide_meta_account_set_password(j->srv->meta, &j->who,
                                               a->account, a->new_password);
}

static void password_answer(struct conn *c, struct login_job *j)
{
    if (((struct confirm_args *)j)->wrong)
        confirm_refused(c, j, "the current password is wrong");
    else
        admin_reply_rc(c, j->rid, j->rc);
}

static void password_change(struct conn *c, const Tide__V1__Envelope *e)
{
    const Tide__V1__PasswordChange *r = e->password_change;
    struct confirm_args *a = tide_calloc(1, sizeof(*a));

    if (!a) {
        admin_reply_rc(c, e->request_id, -ENOMEM);
        return;
    }
    a->account = c->who.account_id;
    a->password = tide_strdup(r->old_password);
    a->new_password = tide_strdup(r->new_password);
    a->job.work = password_work;
    a->job.answer = password_answer;
    confirm_start(c, e, a);
}

static void account_update(struct conn *c, const Tide__V1__Envelope *e)
{
    const Tide__V1__AccountUpdate *r = e->account_update;
    static const char *const plan_names[] = {NULL, "active", "trialing",
                                             "past_due", "canceled"};
    static const char *const known[] = {
        "email",    "first_name",          "surname",        "organization",
        "timezone", "billing_customer_id", "billing_period", "plan_status"};
    uint64_t account = admin_target_account(c, r->account_id);
    struct tide_meta_profile pr = {0};
    struct tide_meta_account cur;
    int billing = 0, rc = 0;

    for (size_t i = 0; i < r->n_set && rc == 0; i++) {
        size_t k = 0;

        while (k < sizeof(known) / sizeof(known[0]) &&
               strcmp(r->set[i], known[k]))
            k++;
        if (k == sizeof(known) / sizeof(known[0]))
            rc = TIDE_EINVAL;
        billing |= k >= 5 && k < sizeof(known) / sizeof(known[0]);
    }
    if (rc == 0 && r->plan_status > TIDE__V1__PLAN_STATUS__PLAN_STATUS_CANCELED)
        rc = TIDE_EINVAL;
    if (rc) {
        conn_send_error(c, e->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                        "set names an unknown field or a bad value", 0);
        return;
    }
    pr.email = admin_in_set(r->set, r->n_set, "email") ? r->email : NULL;
    pr.first_name =
        admin_in_set(r->set, r->n_set, "first_name") ? r->first_name : NULL;
    pr.surname = admin_in_set(r->set, r->n_set, "surname") ? r->surname : NULL;
    pr.organization =
        admin_in_set(r->set, r->n_set, "organization") ? r->organization : NULL;
    pr.timezone =
        admin_in_set(r->set, r->n_set, "timezone") ? r->timezone : NULL;
    if (pr.email || pr.first_name || pr.surname || pr.organization ||
        pr.timezone)
        rc = tide_meta_account_update(c->srv->meta, &c->who, account, &pr);
    if (rc == 0 && billing) {
        rc = tide_meta_account_get(c->srv->meta, &c->who, account, &cur);
        if (rc == 0)
            rc = tide_meta_account_set_tier(
                c->srv->meta, &c->who, account, cur.tier,
                admin_in_set(r->set, r->n_set, "plan_status")
                    ? plan_names[r->plan_status ? r->plan_status : 1]
                    : NULL,
                admin_in_set(r->set, r->n_set, "billing_customer_id")
                    ? r->billing_customer_id
                    : NULL,
                admin_in_set(r->set, r->n_set, "billing_period")
                    ? r->billing_period
                    : NULL);
    }
    if (rc) {
        admin_reply_rc(c, e->request_id, rc);
        return;
    }
    send_account(c, e->request_id, account, 0, NULL);
}

/* Delete an account: purged after the configured grace period, or at
 * once with `immediate` (the operator, or the owner confirming with the
 * password, as for any deletion). */
static void delete_work(struct login_job *j)
{
    struct confirm_args *a = (struct confirm_args *)j;
    tide_meta *m = j->srv->meta;

    j->rc = confirm_password(j, a->account, a->password);
    a->wrong = j->rc == TIDE_EAUTH;
    if (j->rc == 0)
        j->rc = tide_meta_account_delete(m, &j->who, a->account);
    /* The caller may delete the account, so it may have it purged: the
     * purge itself is the operator's step, taken on the caller's word. */
    if (j->rc == 0 && a->immediate)
        j->rc = tide_meta_account_purge(m, &tided_system_principal, a->account);
    /* Its telemetry goes now, not at the next routine compaction. */
    if (j->rc == 0 && a->immediate)
        tided_retention_poke(j->srv);
}

static void delete_answer(struct conn *c, struct login_job *j)
{
    struct confirm_args *a = (struct confirm_args *)j;
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__AccountDeleteOk ok = TIDE__V1__ACCOUNT_DELETE_OK__INIT;
    int64_t now = tided_now_ns();

    if (a->wrong) {
        confirm_refused(c, j,
                        "confirm the deletion with the account's password");
        return;
    }
    if (j->rc) {
        admin_reply_rc(c, j->rid, j->rc);
        return;
    }
    tided_device_forget(c->srv, a->account);
    ok.purge_after_ns =
        a->immediate ? now
                     : now + (int64_t)c->srv->cfg.delete_grace_s * 1000000000;
    env.body_case = TIDE__V1__ENVELOPE__BODY_ACCOUNT_DELETE_OK;
    env.account_delete_ok = &ok;
    admin_reply(c, j->rid, &env);
}

static void account_delete(struct conn *c, const Tide__V1__Envelope *e)
{
    const Tide__V1__AccountDelete *r = e->account_delete;
    struct confirm_args *a = tide_calloc(1, sizeof(*a));

    if (!a) {
        admin_reply_rc(c, e->request_id, -ENOMEM);
        return;
    }
    a->account = admin_target_account(c, r->account_id);
    a->password = tide_strdup(r->password);
    a->immediate = r->immediate;
    a->job.work = delete_work;
    a->job.answer = delete_answer;
    confirm_start(c, e, a);
}

static Tide__V1__AuthOutcome auth_outcome(const struct tide_meta_auth_event *a)
{
    if (a->ok)
        return TIDE__V1__AUTH_OUTCOME__AUTH_OUTCOME_SUCCESS;
    if (!strcmp(a->reason, "revoked"))
        return TIDE__V1__AUTH_OUTCOME__AUTH_OUTCOME_REVOKED;
    if (!strcmp(a->reason, "expired") || !strcmp(a->reason, "ended"))
        return TIDE__V1__AUTH_OUTCOME__AUTH_OUTCOME_EXPIRED;
    if (!strcmp(a->reason, "deleted"))
        return TIDE__V1__AUTH_OUTCOME__AUTH_OUTCOME_ACCOUNT_DISABLED;
    return TIDE__V1__AUTH_OUTCOME__AUTH_OUTCOME_BAD_CREDENTIAL;
}

#define LIST_MAX 1000

static void auth_log_get(struct conn *c, const Tide__V1__Envelope *e)
{
    const Tide__V1__AuthLogGet *r = e->auth_log_get;
    uint64_t account = admin_target_account(c, r->account_id), before = 0;
    size_t limit = r->limit && r->limit < LIST_MAX ? r->limit : LIST_MAX;
    struct tide_meta_auth_event *ev = tide_malloc(LIST_MAX * sizeof(*ev));
    Tide__V1__AuthEvent *v = tide_calloc(LIST_MAX, sizeof(*v));
    Tide__V1__AuthEvent **pv = tide_calloc(LIST_MAX, sizeof(*pv));
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__AuthLogOk ok = TIDE__V1__AUTH_LOG_OK__INIT;
    static const char *const kinds[] = {"", "password", "api_key", "session"};
    size_t n = 0, got;
    int rc = ev && v && pv ? 0 : -ENOMEM;

    /* Newest first, paged by id, until the window or the limit is done. */
    while (rc == 0 && n < limit) {
        rc = tide_meta_authlog_read(c->srv->meta, &c->who, account, before, ev,
                                    LIST_MAX, &got);
        for (size_t i = 0; rc == 0 && i < got && n < limit; i++) {
            before = ev[i].id;
            if ((r->to_ns && ev[i].ts_ns >= r->to_ns) ||
                ev[i].ts_ns < r->from_ns)
                continue;
            tide__v1__auth_event__init(&v[n]);
            v[n].ts_ns = ev[i].ts_ns;
            v[n].ip = tide_strdup(ev[i].ip);
            v[n].method = (char *)kinds[ev[i].kind <= 3 ? ev[i].kind : 0];
            v[n].outcome = auth_outcome(&ev[i]);
            v[n].key_id = ev[i].key_id;
            pv[n] = &v[n];
            n++;
        }
        if (rc || got < LIST_MAX)
            break;
    }
    if (rc) {
        admin_reply_rc(c, e->request_id, rc);
    } else {
        ok.events = pv;
        ok.n_events = n;
        env.body_case = TIDE__V1__ENVELOPE__BODY_AUTH_LOG_OK;
        env.auth_log_ok = &ok;
        admin_reply(c, e->request_id, &env);
    }
    for (size_t i = 0; i < n; i++)
        tide_free(v[i].ip);
    tide_free(ev);
    tide_free(v);
    tide_free(pv);
}

static Tide__V1__NotificationKind
notify_kind(const struct tide_meta_notification *x)
{
    switch (x->kind) {
    case TIDE_META_NOTIFY_DEVICE:
        return TIDE__V1__NOTIFICATION_KIND__NOTIFICATION_KIND_DEVICE_OFFLINE;
    case TIDE_META_NOTIFY_USAGE:
        return TIDE__V1__NOTIFICATION_KIND__NOTIFICATION_KIND_USAGE_WARNING;
    case TIDE_META_NOTIFY_SECURITY:
        if (strstr(x->text, "key"))
            return TIDE__V1__NOTIFICATION_KIND__NOTIFICATION_KIND_NEW_KEY;
        if (strstr(x->text, "failed"))
            return TIDE__V1__NOTIFICATION_KIND__NOTIFICATION_KIND_FAILED_LOGINS;
        return TIDE__V1__NOTIFICATION_KIND__NOTIFICATION_KIND_NEW_LOGIN_IP;
    default:
        return TIDE__V1__NOTIFICATION_KIND__NOTIFICATION_KIND_UNSPECIFIED;
    }
}

static void notification_list(struct conn *c, const Tide__V1__Envelope *e)
{
    const Tide__V1__NotificationList *r = e->notification_list;
    uint64_t account = admin_target_account(c, r->account_id);
    size_t limit = r->limit && r->limit < LIST_MAX ? r->limit : LIST_MAX;
    struct tide_meta_notification *x = tide_malloc(LIST_MAX * sizeof(*x));
    Tide__V1__Notification *v = tide_calloc(LIST_MAX, sizeof(*v));
    Tide__V1__Notification **pv = tide_calloc(LIST_MAX, sizeof(*pv));
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__NotificationListOk ok = TIDE__V1__NOTIFICATION_LIST_OK__INIT;
    size_t n = 0, got = 0;
    int rc = x && v && pv ? 0 : -ENOMEM;

    if (rc == 0)
        rc = tide_meta_notify_list(c->srv->meta, &c->who, account, 0, x,
                                   LIST_MAX, &got);
    for (size_t i = 0; rc == 0 && i < got && n < limit; i++) {
        if (r->unread_only && x[i].read)
            continue;
        tide__v1__notification__init(&v[n]);
        v[n].id = x[i].id;
        v[n].ts_ns = x[i].ts_ns;
        v[n].kind = notify_kind(&x[i]);
        v[n].message = x[i].text;
        v[n].read = x[i].read;
        pv[n] = &v[n];
        n++;
    }
    if (rc) {
        admin_reply_rc(c, e->request_id, rc);
    } else {
        ok.notifications = pv;
        ok.n_notifications = n;
        env.body_case = TIDE__V1__ENVELOPE__BODY_NOTIFICATION_LIST_OK;
        env.notification_list_ok = &ok;
        admin_reply(c, e->request_id, &env);
    }
    tide_free(x);
    tide_free(v);
    tide_free(pv);
}

static void notification_mark_read(struct conn *c, const Tide__V1__Envelope *e)
{
    const Tide__V1__NotificationMarkRead *r = e->notification_mark_read;
    int rc = 0;

    for (size_t i = 0; i < r->n_ids && rc == 0; i++)
        rc = tide_meta_notify_mark_read(c->srv->meta, &c->who,
                                        c->who.account_id, r->ids[i]);
    admin_reply_rc(c, e->request_id, rc);
}

static void notification_prefs(struct conn *c, const Tide__V1__Envelope *e)
{
    const Tide__V1__NotificationPrefs *p = e->notification_prefs_set->prefs;

    if (!p) {
        admin_reply_rc(c, e->request_id, TIDE_EINVAL);
        return;
    }
    admin_reply_rc(c, e->request_id,
                   tide_meta_notify_prefs(c->srv->meta, &c->who,
                                          c->who.account_id, p->device_alerts,
                                          p->usage_warnings, p->product_news));
}

/* Create or change a tier by name (TierUpsert, operator only). */
static void tier_upsert(struct conn *c, const Tide__V1__Envelope *e)
{
    const Tide__V1__Tier *t = e->tier_upsert->tier;
    struct tide_meta_tier row;
    uint16_t id, free_id;

    if (!t || !t->name[0] || strlen(t->name) > TIDE_META_TIER_NAME_MAX ||
        t->telemetry_ttl_s <= 0) {
        admin_reply_rc(c, e->request_id, TIDE_EINVAL);
        return;
    }
    id = tier_id_by_name(c->srv->meta, t->name, &free_id);
    memset(&row, 0, sizeof(row));
    row.id = id ? id : free_id;
    snprintf(row.name, sizeof(row.name), "%s", t->name);
    row.ttl_s = t->telemetry_ttl_s;
    row.rate_points_s = t->points_per_s;
    row.daily_points_max = t->daily_points;
    row.devices_max = t->max_devices;
    row.series_max = t->max_series;
    row.key_rate_points_s = t->key_points_per_s;
    row.query_rate_s = t->queries_per_s;
    row.queries_max = t->max_concurrent_queries;
    admin_reply_rc(c, e->request_id,
                   row.id ? tide_meta_tier_set(c->srv->meta, &c->who, &row)
                          : TIDE_EFULL);
}

/* Move an account to the tier named in TierSet (operator only). */
static void tier_set(struct conn *c, const Tide__V1__Envelope *e)
{
    uint16_t id = tier_id_by_name(c->srv->meta, e->tier_set->tier, NULL);

    admin_reply_rc(c, e->request_id,
                   id ? tide_meta_account_set_tier(
                            c->srv->meta, &c->who,
                            admin_target_account(c, e->tier_set->account_id),
                            id, NULL, NULL, NULL)
                      : TIDE_ENOTFOUND);
}

static void tier_list(struct conn *c, const Tide__V1__Envelope *e)
{
    static Tide__V1__Tier v[TIER_ID_MAX];
    static Tide__V1__Tier *pv[TIER_ID_MAX];
    static struct tide_meta_tier rows[TIER_ID_MAX];
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__TierListOk ok = TIDE__V1__TIER_LIST_OK__INIT;
    size_t n = 0;
    /* The operator and account owners (protocol.md); an owner's session
     * is checked as for reading the account. */
    int rc = c->who.role == TIDE_META_ROLE_ADMIN
                 ? tide_meta_authorize(c->srv->meta, &c->who,
                                       TIDE_META_ACT_OPERATOR, 0, 0)
             : c->who.role == TIDE_META_ROLE_OWNER
                 ? tide_meta_authorize(c->srv->meta, &c->who,
                                       TIDE_META_ACT_ACCOUNT_READ,
                                       c->who.account_id, 0)
                 : TIDE_EPERM;

    if (rc) {
        admin_reply_rc(c, e->request_id, rc);
        return;
    }
    for (uint16_t i = 1; i < TIER_ID_MAX; i++) {
        if (tide_meta_tier_get(c->srv->meta, i, &rows[n]))
            continue;
        tide__v1__tier__init(&v[n]);
        v[n].name = rows[n].name;
        v[n].telemetry_ttl_s = rows[n].ttl_s;
        v[n].points_per_s = rows[n].rate_points_s;
        v[n].daily_points = rows[n].daily_points_max;
        v[n].max_devices = rows[n].devices_max;
        v[n].max_series = rows[n].series_max;
        v[n].key_points_per_s = rows[n].key_rate_points_s;
        v[n].queries_per_s = rows[n].query_rate_s;
        v[n].max_concurrent_queries = rows[n].queries_max;
        pv[n] = &v[n];
        n++;
    }
    ok.tiers = pv;
    ok.n_tiers = n;
    env.body_case = TIDE__V1__ENVELOPE__BODY_TIER_LIST_OK;
    env.tier_list_ok = &ok;
    admin_reply(c, e->request_id, &env);
}

static void server_status(struct conn *c, const Tide__V1__Envelope *e)
{
    enum { N = 17 };
    struct server *s = c->srv;
    struct tide_db_stats st;
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__ServerStatusOk ok = TIDE__V1__SERVER_STATUS_OK__INIT;
    Tide__V1__CompactionStats cs;
    Tide__V1__EncryptionStatus enc = TIDE__V1__ENCRYPTION_STATUS__INIT;
    struct tided_crypt_status cst;
    Tide__V1__Stat v[N];
    Tide__V1__Stat *pv[N];
    const char *names[N] = {"points_appended",
                            "head_points",
                            "segments",
                            "segment_bytes",
                            "wal_bytes",
                            "wal_syncs",
                            "connections_open",
                            "series",
                            "nospace_events",
                            "disk_free_bytes",
                            "tls_enabled",
                            "tls_handshakes",
                            "tls_resumed",
                            "tls_handshake_failures",
                            "tls_reloads",
                            "tls_reload_failures",
                            "tls_cert_not_after_s"};
    double vals[N];
    /* Server-wide counters: the operator's only. */
    int rc =
        tide_meta_authorize(s->meta, &c->who, TIDE_META_ACT_OPERATOR, 0, 0);

    if (rc) {
        admin_reply_rc(c, e->request_id, rc);
        return;
    }
    tide_db_stats(s->db, &st);
    vals[0] = (double)st.points_appended;
    vals[1] = (double)st.head_points;
    vals[2] = (double)st.segments;
    vals[3] = (double)st.segment_bytes;
    vals[4] = (double)st.wal_bytes;
    vals[5] = (double)st.wal_syncs;
    vals[6] = (double)atomic_load(&s->metrics.connections_open);
    vals[7] = (double)tide_meta_series_count(s->meta);
    vals[8] = (double)st.nospace_events;
    vals[9] = (double)st.disk_free_bytes;
    vals[10] = s->tls ? 1 : 0;
    vals[11] = (double)atomic_load(&s->metrics.tls_handshakes);
    vals[12] = (double)atomic_load(&s->metrics.tls_resumed);
    vals[13] = (double)atomic_load(&s->metrics.tls_handshake_failures);
    vals[14] = (double)atomic_load(&s->metrics.tls_reloads);
    vals[15] = (double)atomic_load(&s->metrics.tls_reload_failures);
    vals[16] = (double)s->tls_not_after;
    for (int i = 0; i < N; i++) {
        tide__v1__stat__init(&v[i]);
        v[i].name = (char *)names[i];
        v[i].value = vals[i];
        pv[i] = &v[i];
    }
    ok.server_version = TIDED_VERSION;
    ok.uptime_s = (tided_now_ns() - s->started_ns) / 1000000000;
    ok.stats = pv;
    ok.n_stats = N;
    /* Storage health (docs/operations.md, "Disk full"). */
    ok.storage_state = st.storage_error == 0         ? "ok"
                       : st.storage_error == -ENOSPC ? "no_space"
                                                     : "failed";
    ok.storage_error = st.storage_error ? st.storage_error_msg : "";
    admin_compaction_fill(&cs, &st);
    ok.compaction = &cs;
    tided_crypt_status(s, &st, &cst);
    enc.enabled = cst.enabled;
    enc.master_key_id = cst.master_key_id;
    enc.data_keys = cst.data_keys;
    enc.segments_encrypted = cst.segments_encrypted;
    enc.segments_plaintext = cst.segments_plaintext;
    enc.segment_bytes_plaintext = cst.segment_bytes_plaintext;
    enc.master_key_rotated_ns = cst.rotated_ns;
    ok.encryption = &enc;
    env.body_case = TIDE__V1__ENVELOPE__BODY_SERVER_STATUS_OK;
    env.server_status_ok = &ok;
    admin_reply(c, e->request_id, &env);
}

/* The account_id a request names, 0 when none. */
static uint64_t named_account(const Tide__V1__Envelope *e)
{
    switch (e->body_case) {
    case TIDE__V1__ENVELOPE__BODY_ACCOUNT_GET:
        return e->account_get->account_id;
    case TIDE__V1__ENVELOPE__BODY_ACCOUNT_UPDATE:
        return e->account_update->account_id;
    case TIDE__V1__ENVELOPE__BODY_ACCOUNT_PAUSE:
        return e->account_pause->account_id;
    case TIDE__V1__ENVELOPE__BODY_ACCOUNT_DELETE:
        return e->account_delete->account_id;
    case TIDE__V1__ENVELOPE__BODY_ACCOUNT_RESTORE:
        return e->account_restore->account_id;
    case TIDE__V1__ENVELOPE__BODY_TIER_SET:
        return e->tier_set->account_id;
    case TIDE__V1__ENVELOPE__BODY_KEY_CREATE:
        return e->key_create->account_id;
    case TIDE__V1__ENVELOPE__BODY_KEY_LIST:
        return e->key_list->account_id;
    case TIDE__V1__ENVELOPE__BODY_KEY_REVOKE:
        return e->key_revoke->account_id;
    case TIDE__V1__ENVELOPE__BODY_DEVICE_REGISTER:
        return e->device_register->account_id;
    case TIDE__V1__ENVELOPE__BODY_DEVICE_UPDATE:
        return e->device_update->account_id;
    case TIDE__V1__ENVELOPE__BODY_DEVICE_GET:
        return e->device_get->account_id;
    case TIDE__V1__ENVELOPE__BODY_DEVICE_LIST:
        return e->device_list->account_id;
    case TIDE__V1__ENVELOPE__BODY_DEVICE_DELETE:
        return e->device_delete->account_id;
    case TIDE__V1__ENVELOPE__BODY_DEVICE_PAUSE:
        return e->device_pause->account_id;
    case TIDE__V1__ENVELOPE__BODY_USAGE_GET:
        return e->usage_get->account_id;
    case TIDE__V1__ENVELOPE__BODY_AUTH_LOG_GET:
        return e->auth_log_get->account_id;
    case TIDE__V1__ENVELOPE__BODY_NOTIFICATION_LIST:
        return e->notification_list->account_id;
    default:
        return 0;
    }
}

int handle_admin(struct conn *c, const Tide__V1__Envelope *e)
{
    tide_meta *m = c->srv->meta;
    uint64_t rid = e->request_id, named = named_account(e);

    /* Only the operator names other accounts: anyone else naming one is
     * refused, never quietly served their own instead. */
    if (named && c->who.role != TIDE_META_ROLE_ADMIN &&
        named != c->who.account_id) {
        conn_send_error(c, rid,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED,
                        "account_id names another account", 0);
        return 1;
    }
    switch (e->body_case) {
    case TIDE__V1__ENVELOPE__BODY_ACCOUNT_CREATE:
        account_create(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_VERIFY_EMAIL:
        admin_reply_rc(
            c, rid, tide_meta_account_verify_email(m, e->verify_email->token));
        return 1;
    case TIDE__V1__ENVELOPE__BODY_ACCOUNT_GET:
        send_account(c, rid,
                     admin_target_account(c, e->account_get->account_id), 0,
                     NULL);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_ACCOUNT_PAUSE:
        admin_reply_rc(
            c, rid,
            tide_meta_account_pause(
                m, &c->who,
                admin_target_account(c, e->account_pause->account_id),
                e->account_pause->paused));
        return 1;
    case TIDE__V1__ENVELOPE__BODY_ACCOUNT_UPDATE:
        account_update(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_PASSWORD_CHANGE:
        password_change(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_ACCOUNT_DELETE:
        account_delete(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_ACCOUNT_RESTORE:
        if (c->who.role != TIDE_META_ROLE_ADMIN) {
            admin_reply_rc(c, rid, TIDE_EPERM);
            return 1;
        }
        {
            int rc = tide_meta_account_restore(m, &c->who,
                                               e->account_restore->account_id);

            if (rc == 0)
                tided_device_forget(c->srv, e->account_restore->account_id);
            admin_reply_rc(c, rid, rc);
        }
        return 1;
    case TIDE__V1__ENVELOPE__BODY_DEVICE_UPDATE:
        admin_device_update(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_AUTH_LOG_GET:
        auth_log_get(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_NOTIFICATION_LIST:
        notification_list(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_NOTIFICATION_MARK_READ:
        notification_mark_read(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_NOTIFICATION_PREFS_SET:
        notification_prefs(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_KEY_CREATE:
        key_create(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_KEY_LIST:
        key_list(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_KEY_REVOKE:
        admin_reply_rc(c, rid,
                       tide_meta_key_revoke(
                           m, &c->who,
                           admin_target_account(c, e->key_revoke->account_id),
                           e->key_revoke->key_id));
        return 1;
    case TIDE__V1__ENVELOPE__BODY_DEVICE_REGISTER:
        admin_device_register(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_DEVICE_GET:
        admin_device_get(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_DEVICE_LIST:
        admin_device_list(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_DEVICE_DELETE:
        admin_device_delete(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_DEVICE_PAUSE:
        admin_device_pause(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_USAGE_GET:
        usage_get(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_TIER_UPSERT:
        tier_upsert(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_TIER_SET:
        tier_set(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_TIER_LIST:
        tier_list(c, e);
        return 1;
    case TIDE__V1__ENVELOPE__BODY_SERVER_STATUS:
        server_status(c, e);
        return 1;
    default:
        return 0;
    }
}
