/* SPDX-License-Identifier: Apache-2.0 */
/* Tide's codes to wire ErrorCodes, and which of those are retryable
 * (wire_error.h). */
#include "wire_error.h"

#include <errno.h>

Tide__V1__ErrorCode tide_wire_error(int rc)
{
    switch (rc) {
    case TIDE_EINVAL:
        return TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT;
    case TIDE_ENOTFOUND:
        return TIDE__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND;
    case TIDE_EEXIST:
        return TIDE__V1__ERROR_CODE__ERROR_CODE_ALREADY_EXISTS;
    case TIDE_EPERM:
        return TIDE__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED;
    case TIDE_EAUTH:
        return TIDE__V1__ERROR_CODE__ERROR_CODE_AUTH_FAILED;
    case TIDE_EPAUSED:
        return TIDE__V1__ERROR_CODE__ERROR_CODE_PAUSED;
    case TIDE_ETYPE:
        return TIDE__V1__ERROR_CODE__ERROR_CODE_TYPE_MISMATCH;
    case TIDE_EFULL:
        return TIDE__V1__ERROR_CODE__ERROR_CODE_LIMIT_EXCEEDED;
    case TIDE_ECLOSED:
        return TIDE__V1__ERROR_CODE__ERROR_CODE_SHUTTING_DOWN;
    case TIDE_ETOOLARGE:
        return TIDE__V1__ERROR_CODE__ERROR_CODE_FRAME_TOO_LARGE;
    case TIDE_EMALFORMED:
        return TIDE__V1__ERROR_CODE__ERROR_CODE_BAD_FRAME;
    case TIDE_ETIMEDOUT:
    case -ETIMEDOUT:
        return TIDE__V1__ERROR_CODE__ERROR_CODE_TIMEOUT;
    case TIDE_EIO:
    case TIDE_ECORRUPT:
    case TIDE_ECIPHER:
    case -EIO:
    case -ENOSPC:
        return TIDE__V1__ERROR_CODE__ERROR_CODE_STORAGE;
    default:
        return TIDE__V1__ERROR_CODE__ERROR_CODE_INTERNAL;
    }
}

int tide_wire_retryable(Tide__V1__ErrorCode code)
{
    switch (code) {
    case TIDE__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED:
    case TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED:
    case TIDE__V1__ERROR_CODE__ERROR_CODE_SHUTTING_DOWN:
    case TIDE__V1__ERROR_CODE__ERROR_CODE_STORAGE:
    case TIDE__V1__ERROR_CODE__ERROR_CODE_TOO_MANY_REQUESTS:
        return 1;
    default:
        return 0;
    }
}
