/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the admin path's files (admin.c, admin_device.c) share: replies,
 * the account a request acts on, and list paging.
 */
#ifndef TIDE_SERVER_ADMIN_INT_H
#define TIDE_SERVER_ADMIN_INT_H

#include "server.h"

/* List paging (KeyList, DeviceList): a page holds at most LIST_PAGE_MAX
 * rows, and its continuation token is the id of the last row it looked at,
 * so a page resumes with the rows of greater id. A filtered list (a device
 * selector) looks at no more than LIST_SCAN_MAX rows per request: a page
 * may then come back short, even empty, with a token to go on. */
#define LIST_PAGE_MAX 1024
#define LIST_SCAN_MAX (4 * LIST_PAGE_MAX)

/* The page size a request asks for, within 1..LIST_PAGE_MAX. */
size_t admin_page_limit(uint32_t limit);

/* The account a request acts on: `requested` for the operator, else the
 * caller's own (handle_admin has refused any other account already). */
uint64_t admin_target_account(const struct conn *c, uint64_t requested);

/* Send `env` as the answer to request `rid`. */
void admin_reply(struct conn *c, uint64_t rid, Tide__V1__Envelope *env);
/* Answer `rid` with Ok. */
void admin_reply_ok(struct conn *c, uint64_t rid);
/* Answer `rid` with Ok when `rc` is 0, else with its Error. */
void admin_reply_rc(struct conn *c, uint64_t rid, int rc);

/* Is `name` among the `set` field names of an update request? */
int admin_in_set(char **set, size_t n, const char *name);

/* ---- Password jobs and throttling (auth.c) ------------------------------
 * Every bcrypt hash or check runs in a job on a thread of its own, never
 * on the loop. A request type embeds the job first in its own struct and
 * sets the three hooks: */
struct login_job {
    struct login_job *next; /* in the server's queue of finished jobs */
    struct server *srv;
    uint64_t conn_id;
    uint64_t rid;
    struct tide_meta_principal who; /* the caller when the job started */
    char ip[64];
    int rc;
    void (*work)(struct login_job *j); /* on the job's thread */
    /* On the loop, when the connection `c` is still open. */
    void (*answer)(struct conn *c, struct login_job *j);
    void (*done)(struct login_job *j); /* on the loop: free the job */
};

/* Start `j` for request `rid` of `c` (srv, conn_id, rid, who and ip are
 * filled here). The job counts as a request in flight on `c` until it is
 * answered. Returns 0, or -1 when it cannot start: `rid` is then answered
 * OVERLOADED and the job freed. */
int tided_password_job(struct conn *c, uint64_t rid, struct login_job *j);

/* A password confirmation (PasswordChange, AccountDelete) of `account`
 * from `c`: refused with RATE_LIMITED (and the connection closed) while
 * the IP or the account is throttled; returns 1 when it answered. */
int tided_confirm_throttled(struct conn *c, uint64_t rid, uint64_t account);
/* Count a wrong confirmation for the IP and the account; returns 1 when
 * the account reached the limit: the caller ends the session. */
int tided_confirm_failed(struct conn *c, uint64_t account);
/* An anonymous sign-up from `c`: refused with RATE_LIMITED (connection
 * kept) over the per-IP rate; returns 1 when it answered. */
int tided_signup_throttled(struct conn *c, uint64_t rid);

/* The compaction counters of `st` as the wire's CompactionStats
 * (compact_admin.c; ServerStatus and AdminCompact answer them). */
void admin_compaction_fill(Tide__V1__CompactionStats *out,
                           const struct tide_db_stats *st);

/* The device requests (admin_device.c). */
void admin_device_register(struct conn *c, const Tide__V1__Envelope *e);
void admin_device_get(struct conn *c, const Tide__V1__Envelope *e);
void admin_device_list(struct conn *c, const Tide__V1__Envelope *e);
void admin_device_delete(struct conn *c, const Tide__V1__Envelope *e);
void admin_device_pause(struct conn *c, const Tide__V1__Envelope *e);
void admin_device_update(struct conn *c, const Tide__V1__Envelope *e);

#endif /* TIDE_SERVER_ADMIN_INT_H */
