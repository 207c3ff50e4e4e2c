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
 * caller's own. */
uint64_t admin_target_account(const struct conn *c, uint64_t requested);

/* Send `env` as the answer to request `rid`. */
void admin_reply(struct conn *c, uint64_t rid, Tide__V1__Envelope *env);
/* Answer `rid` with Ok. */
void admin_reply_ok(struct conn *c, uint64_t rid);
/* Answer `rid` with Ok when `rc` is 0, else with its Error. */
void admin_reply_rc(struct conn *c, uint64_t rid, int rc);

/* Is `name` among the `set` field names of an update request? */
int admin_in_set(char **set, size_t n, const char *name);

/* The device requests (admin_device.c). */
void admin_device_register(struct conn *c, const Tide__V1__Envelope *e);
void admin_device_get(struct conn *c, const Tide__V1__Envelope *e);
void admin_device_list(struct conn *c, const Tide__V1__Envelope *e);
void admin_device_delete(struct conn *c, const Tide__V1__Envelope *e);
void admin_device_pause(struct conn *c, const Tide__V1__Envelope *e);
void admin_device_update(struct conn *c, const Tide__V1__Envelope *e);

#endif /* TIDE_SERVER_ADMIN_INT_H */
