/* SPDX-License-Identifier: Apache-2.0 */
/* tide_strerror: one description for every code of tide/error.h and for
 * -errno. */
#include "tide/error.h"

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
        return "limit reached or buffer full";
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
    case TIDE_EKEY:
        return "encryption key missing, wrong or destroyed";
    case TIDE_ECIPHER:
        return "encrypted block failed authentication (altered, moved or "
               "wrong key)";
    case TIDE_ETOOLARGE:
        return "frame length exceeds the maximum frame size";
    case TIDE_EMALFORMED:
        return "frame payload is not a valid Envelope";
    case TIDE_ENOSPACE:
        return "output buffer too small for frame";
    case TIDE_ESERVER:
        return "the server returned an error";
    case TIDE_ETIMEDOUT:
        return "timed out";
    case TIDE_EDISCONNECTED:
        return "connection lost";
    case TIDE_EPROTO:
        return "protocol error: unexpected response";
    case TIDE_EBUSY:
        return "a query is already open on this client";
    case TIDE_EREJECTED:
        return "some points were rejected by the server";
    case TIDE_ETLS:
        return "TLS handshake or certificate verification failed";
    default:
        if (rc > 0)
            return "not an error";
        if (rc > -4096)
            return strerror(-rc);
        return "unknown error";
    }
}
