/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Encryption at rest in tided (docs/operations.md, "Encryption at rest"):
 * the storage engine's data keys come from the sidecar, which keeps them
 * wrapped by the master key; MasterKeyRotate rewraps them on a job
 * thread; ServerStatus and /metrics show the state.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "admin_int.h"
#include "server.h"
#include "tide/crypto.h"

int tided_crypt_data_key(void *ctx, uint64_t account_id, uint8_t key[32])
{
    struct server *s = ctx;

    return tide_meta_data_key(s->meta, account_id, key);
}

void tided_crypt_key_id_hex(const uint8_t id[8], char *out)
{
    for (int i = 0; i < TIDE_KEY_ID_BYTES; i++)
        sprintf(out + 2 * i, "%02x", id[i]);
}

void tided_crypt_status(struct server *s, const struct tide_db_stats *st,
                        struct tided_crypt_status *out)
{
    struct tide_meta_crypt_state ms;

    memset(out, 0, sizeof(*out));
    out->enabled = s->has_master_key;
    if (s->has_master_key && tide_meta_crypt_state(s->meta, 0, &ms) == 0) {
        tided_crypt_key_id_hex(ms.master_key_id, out->master_key_id);
        out->data_keys = ms.data_keys;
        out->rotated_ns = ms.rotated_ns;
    }
    out->segments_encrypted = st->segments_encrypted;
    out->segments_plaintext = st->segments_plaintext;
    out->segment_bytes_plaintext = st->segment_bytes_plaintext;
}

/* ---- MasterKeyRotate ----------------------------------------------------- */

struct rotate_job {
    struct login_job job; /* first: the job is the whole */
    char path[1024];
    char why[1400];
    char old_id[2 * TIDE_KEY_ID_BYTES + 1];
    char new_id[2 * TIDE_KEY_ID_BYTES + 1];
    uint64_t data_keys;
};

static void rotate_free(struct login_job *j)
{
    tide_free(j);
}

/* On the job's thread: reading the file and rewrapping every data key in
 * one sidecar transaction may take milliseconds. */
static void rotate_work(struct login_job *j)
{
    struct rotate_job *r = (struct rotate_job *)j;
    struct server *s = j->srv;
    struct tide_meta_crypt_state before, after;
    uint8_t key[TIDE_KEY_BYTES];

    j->rc = tide_meta_crypt_state(s->meta, 0, &before);
    if (j->rc)
        return;
    j->rc = tide_crypto_master_load(r->path, key, r->why, sizeof(r->why));
    if (j->rc)
        return;
    j->rc = tide_meta_rotate_master(s->meta, &j->who, key);
    tide_crypto_wipe(key, sizeof(key));
    if (j->rc || tide_meta_crypt_state(s->meta, 0, &after))
        return;
    tided_crypt_key_id_hex(before.master_key_id, r->old_id);
    tided_crypt_key_id_hex(after.master_key_id, r->new_id);
    r->data_keys = after.data_keys;
    tide_log(LOG_WARN,
             "master key rotated from %s to %s (%llu data keys rewrapped): "
             "start tided with master_key_file = %s from now on",
             r->old_id, r->new_id, (unsigned long long)r->data_keys, r->path);
}

static void rotate_answer(struct conn *c, struct login_job *j)
{
    struct rotate_job *r = (struct rotate_job *)j;
    Tide__V1__Envelope env = TIDE__V1__ENVELOPE__INIT;
    Tide__V1__MasterKeyRotateOk ok = TIDE__V1__MASTER_KEY_ROTATE_OK__INIT;

    if (j->rc) {
        conn_send_error(c, j->rid,
                        j->rc == TIDE_EPERM
                            ? TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED
                            : TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                        r->why[0]            ? r->why
                        : j->rc == TIDE_EKEY ? "encryption at rest is off: "
                                               "no master_key_file configured"
                                             : tide_strerror(j->rc),
                        0);
        return;
    }
    ok.old_master_key_id = r->old_id;
    ok.new_master_key_id = r->new_id;
    ok.data_keys = r->data_keys;
    env.body_case = TIDE__V1__ENVELOPE__BODY_MASTER_KEY_ROTATE_OK;
    env.master_key_rotate_ok = &ok;
    admin_reply(c, j->rid, &env);
}

void handle_master_key_rotate(struct conn *c, const Tide__V1__Envelope *e)
{
    const char *path = e->master_key_rotate->new_key_file;
    struct rotate_job *r;

    if (c->who.role != TIDE_META_ROLE_ADMIN) {
        conn_send_error(c, e->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED,
                        "only the operator may rotate the master key", 0);
        return;
    }
    if (!path || !*path || strlen(path) >= sizeof(r->path)) {
        conn_send_error(c, e->request_id,
                        TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                        "new_key_file: name the new master key file", 0);
        return;
    }
    r = tide_calloc(1, sizeof(*r));
    if (!r) {
        admin_reply_rc(c, e->request_id, -ENOMEM);
        return;
    }
    snprintf(r->path, sizeof(r->path), "%s", path);
    r->job.work = rotate_work;
    r->job.answer = rotate_answer;
    r->job.done = rotate_free;
    tided_password_job(c, e->request_id, &r->job);
}
