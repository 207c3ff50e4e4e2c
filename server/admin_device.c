/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin path's device requests: DeviceRegister, DeviceGet, DeviceList
 * (selector, pages), DeviceUpdate, DeviceDelete and DevicePause onto the
 * sidecar. Tags travel as Tag messages and are stored as "k=v,k=v".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin_int.h"

/* Split `text` ("k=v,k=v", cut in place) into d->tags. Returns 0 or
 * -ENOMEM (d has no tags then); device_tags_free() releases them. */
static int fill_tags(Tide__V1__Device *d, char *text)
{
    size_t n = 1, k = 0;
    Tide__V1__Tag *t, **pt;
    char *save = NULL;

    if (!*text)
        return 0;
    for (const char *q = text; *q; q++)
        n += *q == ',';
    t = tide_calloc(n, sizeof(*t));
    pt = tide_calloc(n, sizeof(*pt));
    if (!t || !pt) {
        tide_free(t);
        tide_free(pt);
        return -ENOMEM;
    }
    for (char *tok = strtok_r(text, ",", &save); tok && k < n;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');

        tide__v1__tag__init(&t[k]);
        t[k].key = tok;
        t[k].value = "";
        if (eq) {
            *eq = 0;
            t[k].value = eq + 1;
        }
        pt[k] = &t[k];
        k++;
    }
    d->tags = pt;
    d->n_tags = k;
    return 0;
}

static void device_tags_free(Tide__V1__Device *d)
{
    if (d->tags)
        tide_free(d->tags[0]); /* the Tag array, see fill_tags */
    tide_free(d->tags);
}

/* Fill `d` from `m`, borrowing its strings; m->tags is cut into d->tags.
 * Returns 0 or -ENOMEM. */
static int fill_device(Tide__V1__Device *d, struct tide_meta_device *m)
{
    d->name = (char *)m->thing_name;
    d->mac = (char *)m->mac;
    d->friendly_name = (char *)m->friendly_name;
    d->firmware_version = (char *)m->firmware;
    d->status = m->online
                    ? TIDE__V1__CONNECTION_STATUS__CONNECTION_STATUS_ONLINE
                    : TIDE__V1__CONNECTION_STATUS__CONNECTION_STATUS_OFFLINE;
    d->last_connect_ns = m->last_connect_ns;
    d->last_connect_ip = (char *)m->last_ip;
    d->last_seen_ns = m->last_seen_ns;
    d->created_ns = m->created_ns;
    d->paused = m->paused;
    d->account_id = m->account_id;
    return fill_tags(d, m->tags);
}

/* Device tags travel as Tag messages and are stored as "k=v,k=v". */
static int tags_text(Tide__V1__Tag **tags, size_t n, char *out, size_t cap)
{
    size_t off = 0;

    out[0] = 0;
    for (size_t i = 0; i < n; i++) {
        int w;

        if (strpbrk(tags[i]->key, ",=") || strchr(tags[i]->value, ','))
            return TIDE_EINVAL;
        w = snprintf(out + off, cap - off, "%s%s=%s", i ? "," : "",
                     tags[i]->key, tags[i]->value);
        if (w < 0 || (size_t)w >= cap - off)
            return TIDE_EINVAL;
        off += (size_t)w;
    }
    return 0;
}

/* Reply with device `id` of `account` as a Device message. */
static void device_get_by_id(struct conn *c, uint64_t rid, uint64_t account,
                             uint64_t id)
{
    struct tide_meta_device m;
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__Device out = TIDE__V1__DEVICE__INIT;
    int rc = tide_meta_device_get(c->srv->meta, &c->who, account, id, &m);

    if (rc) {
        admin_reply_rc(c, rid, rc);
        return;
    }
    if (fill_device(&out, &m)) {
        admin_reply_rc(c, rid, -ENOMEM);
        return;
    }
    env.body_case = TIDE__V1__ENVELOPE__BODY_DEVICE;
    env.device = &out;
    admin_reply(c, rid, &env);
    device_tags_free(&out);
}

void admin_device_register(struct conn *c, const Tide__V1__Envelope *e)
{
    const Tide__V1__DeviceRegister *r = e->device_register;
    uint64_t account = admin_target_account(c, r->account_id), id;
    char tags[TIDE_META_TAGS_MAX + 1];
    struct tide_meta_device_new d;
    int rc;

    if (!r->device) {
        admin_reply_rc(c, e->request_id, TIDE_EINVAL);
        return;
    }
    rc = tags_text(r->device->tags, r->device->n_tags, tags, sizeof(tags));
    d = (struct tide_meta_device_new){.thing_name = r->device->name,
                                      .mac = r->device->mac,
                                      .friendly_name = r->device->friendly_name,
                                      .firmware = r->device->firmware_version,
                                      .tags = tags};
    if (rc == 0)
        rc = tide_meta_device_register(c->srv->meta, &c->who, account, &d, &id);
    if (rc == 0)
        tided_device_forget(c->srv, account); /* reloaded on next use */
    if (rc)
        admin_reply_rc(c, e->request_id, rc);
    else
        device_get_by_id(c, e->request_id, account, id);
}

void admin_device_get(struct conn *c, const Tide__V1__Envelope *e)
{
    uint64_t account = admin_target_account(c, e->device_get->account_id), id;
    int rc = tided_device_resolve(c->srv, account, e->device_get->name, 0, &id);

    if (rc)
        admin_reply_rc(c, e->request_id, rc);
    else
        device_get_by_id(c, e->request_id, account, id);
}

void admin_device_list(struct conn *c, const Tide__V1__Envelope *e)
{
    const Tide__V1__DeviceList *r = e->device_list;
    uint64_t account = admin_target_account(c, r->account_id);
    uint64_t after = r->page_token;
    size_t limit = admin_page_limit(r->limit), scanned = 0, n = 0;
    struct tide_meta_device *m = tide_malloc(LIST_PAGE_MAX * sizeof(*m));
    struct tide_meta_device *sel = tide_malloc(limit * sizeof(*sel));
    Tide__V1__Device *v = tide_calloc(limit, sizeof(*v));
    Tide__V1__Device **pv = tide_calloc(limit, sizeof(*pv));
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__DeviceListOk ok = TIDE__V1__DEVICE_LIST_OK__INIT;
    int more = 1, rc = m && v && pv && sel ? 0 : -ENOMEM;

    /* Rows in id order until the page is full, the table ends or the scan
     * budget is spent; `after` is the last row looked at. Without a
     * selector every row is taken, so no more are read than fit. */
    while (rc == 0 && more && n < limit && scanned < LIST_SCAN_MAX) {
        size_t want = r->selector ? LIST_PAGE_MAX : limit - n, got = 0, i;

        rc = tide_meta_device_list(c->srv->meta, &c->who, account, after, m,
                                   want, &got);
        for (i = 0; rc == 0 && i < got && n < limit; i++) {
            after = m[i].id;
            scanned++;
            if (tided_device_selected(r->selector, &m[i]))
                sel[n++] = m[i];
        }
        more = got == want || i < got;
    }
    if (rc) {
        admin_reply_rc(c, e->request_id, rc);
    } else {
        for (size_t i = 0; rc == 0 && i < n; i++) {
            tide__v1__device__init(&v[i]);
            rc = fill_device(&v[i], &sel[i]);
            pv[i] = &v[i];
        }
        ok.devices = pv;
        ok.n_devices = n;
        ok.next_page_token = more ? after : 0;
        env.body_case = TIDE__V1__ENVELOPE__BODY_DEVICE_LIST_OK;
        env.device_list_ok = &ok;
        if (rc)
            admin_reply_rc(c, e->request_id, rc);
        else
            admin_reply(c, e->request_id, &env);
    }
    for (size_t i = 0; v && i < n; i++)
        device_tags_free(&v[i]);
    tide_free(m);
    tide_free(v);
    tide_free(pv);
    tide_free(sel);
}

void admin_device_delete(struct conn *c, const Tide__V1__Envelope *e)
{
    uint64_t account = admin_target_account(c, e->device_delete->account_id),
             id;
    int rc =
        tided_device_resolve(c->srv, account, e->device_delete->name, 0, &id);

    if (rc == 0)
        rc = tide_meta_device_delete(c->srv->meta, &c->who, account, id);
    if (rc == 0) {
        tided_device_forget(c->srv, account);
        /* The maintenance thread erases its series' telemetry now. */
        tided_retention_poke(c->srv);
    }
    admin_reply_rc(c, e->request_id, rc);
}

void admin_device_pause(struct conn *c, const Tide__V1__Envelope *e)
{
    const Tide__V1__DevicePause *r = e->device_pause;
    uint64_t account = admin_target_account(c, r->account_id), id;
    int rc = tided_device_resolve(c->srv, account, r->name, 0, &id);

    if (rc == 0)
        rc = tide_meta_device_pause(c->srv->meta, &c->who, account, id,
                                    r->paused);
    if (rc == 0)
        tided_device_forget(c->srv, account);
    admin_reply_rc(c, e->request_id, rc);
}

void admin_device_update(struct conn *c, const Tide__V1__Envelope *e)
{
    const Tide__V1__DeviceUpdate *r = e->device_update;
    uint64_t account = admin_target_account(c, r->account_id), id;
    char tags[TIDE_META_TAGS_MAX + 1];
    struct tide_meta_device_new d = {0};
    int rc = r->device ? 0 : TIDE_EINVAL;

    for (size_t i = 0; i < r->n_set && rc == 0; i++)
        if (strcmp(r->set[i], "mac") && strcmp(r->set[i], "friendly_name") &&
            strcmp(r->set[i], "firmware_version") && strcmp(r->set[i], "tags"))
            rc = TIDE_EINVAL;
    if (rc == 0 && admin_in_set(r->set, r->n_set, "tags")) {
        rc = tags_text(r->device->tags, r->device->n_tags, tags, sizeof(tags));
        d.tags = tags;
    }
    if (rc == 0) {
        d.mac = admin_in_set(r->set, r->n_set, "mac") ? r->device->mac : NULL;
        d.friendly_name = admin_in_set(r->set, r->n_set, "friendly_name")
                              ? r->device->friendly_name
                              : NULL;
        d.firmware = admin_in_set(r->set, r->n_set, "firmware_version")
                         ? r->device->firmware_version
                         : NULL;
        rc = tided_device_resolve(c->srv, account, r->name, 0, &id);
    }
    if (rc == 0)
        rc = tide_meta_device_update(c->srv->meta, &c->who, account, id, &d);
    if (rc) {
        admin_reply_rc(c, e->request_id, rc);
        return;
    }
    device_get_by_id(c, e->request_id, account, id);
}
