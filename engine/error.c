/* SPDX-License-Identifier: Apache-2.0 */
/* tide_strerror: one description for the engine's codes and for -errno. */
#include "internal.h"

#include <string.h>

const char *tide_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "success";
    case TIDE_ECORRUPT:
        return "data is corrupt (bad checksum, magic or length)";
    case TIDE_EVERSION:
        return "unsupported file format version";
    case TIDE_EFULL:
        return "limit reached";
    case TIDE_ECLOSED:
        return "database is closed";
    case TIDE_EIO:
        return "database is in an error state after a failed write or sync";
    case TIDE_EINVAL:
        return "invalid argument";
    case TIDE_ETYPE:
        return "value type differs from the series' type";
    case TIDE_ENOTFOUND:
        return "not found";
    case TIDE_ELOCKED:
        return "data directory is locked by another process";
    case TIDE_EDUPLICATE:
        return "batch already applied";
    case TIDE_EEXIST:
        return "already exists";
    case TIDE_EPERM:
        return "permission denied for this principal";
    case TIDE_EAUTH:
        return "authentication failed (bad, revoked or expired credential)";
    case TIDE_EPAUSED:
        return "ingestion is paused";
    default:
        if (rc < 0 && rc > -4096)
            return strerror(-rc);
        return "unknown error";
    }
}
