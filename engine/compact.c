/* SPDX-License-Identifier: Apache-2.0 */
/* Placeholder while compaction is written (replaced before landing). */
#include "db.h"

#include <errno.h>
#include <string.h>

int tide_db_compact(tide_db *db, int wait)
{
    (void)db;
    (void)wait;
    return -ENOSYS;
}

int tide_db_erase(tide_db *db, uint64_t account_id, int wait)
{
    (void)db;
    (void)account_id;
    (void)wait;
    return -ENOSYS;
}

int tide_db_account_usage(tide_db *db, uint64_t account_id, unsigned flags,
                          struct tide_account_usage *out)
{
    (void)db;
    (void)account_id;
    (void)flags;
    memset(out, 0, sizeof(*out));
    return -ENOSYS;
}
