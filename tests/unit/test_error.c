/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of the one error space (common/error.c, proto/wire_error.c). */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "tide/error.h"
#include "wire_error.h"

static const int codes[] = {
    TIDE_ECORRUPT, TIDE_EVERSION,   TIDE_EFULL,     TIDE_ECLOSED,
    TIDE_EIO,      TIDE_EINVAL,     TIDE_ETYPE,     TIDE_ENOTFOUND,
    TIDE_ELOCKED,  TIDE_EDUPLICATE, TIDE_EEXIST,    TIDE_EPERM,
    TIDE_EAUTH,    TIDE_EPAUSED,    TIDE_ETOOLARGE, TIDE_EMALFORMED,
    TIDE_ENOSPACE, TIDE_ESERVER,    TIDE_ETIMEDOUT, TIDE_EDISCONNECTED,
    TIDE_EPROTO,   TIDE_EBUSY,      TIDE_EREJECTED, TIDE_EKEY,
    TIDE_ECIPHER,  TIDE_ETLS,
};
#define N_CODES (sizeof(codes) / sizeof(codes[0]))

Test(error, every_code_has_its_own_text)
{
    for (size_t i = 0; i < N_CODES; i++) {
        cr_assert(codes[i] <= -30800, "code %d is inside errno's range",
                  codes[i]);
        cr_assert_str_neq(tide_strerror(codes[i]), "unknown error",
                          "code %d has no text", codes[i]);
        for (size_t j = 0; j < i; j++) {
            cr_assert_neq(codes[i], codes[j]);
            cr_assert_str_neq(tide_strerror(codes[i]), tide_strerror(codes[j]));
        }
    }
}

Test(error, errno_and_unknown)
{
    cr_assert_str_eq(tide_strerror(0), "success");
    cr_assert_str_eq(tide_strerror(-ENOENT), strerror(ENOENT));
    cr_assert_str_eq(tide_strerror(-31101), "unknown error"); /* retired */
    cr_assert_str_eq(tide_strerror(1), "not an error");
}

Test(error, wire_codes_and_retryable)
{
    cr_assert_eq(tide_wire_error(TIDE_EINVAL),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT);
    cr_assert_eq(tide_wire_error(TIDE_EIO),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_STORAGE);
    cr_assert_eq(tide_wire_error(-ENOSPC),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_STORAGE);
    cr_assert_eq(tide_wire_error(TIDE_ECLOSED),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_SHUTTING_DOWN);
    cr_assert_eq(tide_wire_error(-ENOMEM),
                 TIDE__V1__ERROR_CODE__ERROR_CODE_INTERNAL);
    /* docs/protocol.md, "Error model": exactly these may be retried. */
    for (int code = 0; code <= 27; code++) {
        int want = code == TIDE__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED ||
                   code == TIDE__V1__ERROR_CODE__ERROR_CODE_OVERLOADED ||
                   code == TIDE__V1__ERROR_CODE__ERROR_CODE_SHUTTING_DOWN ||
                   code == TIDE__V1__ERROR_CODE__ERROR_CODE_STORAGE ||
                   code == TIDE__V1__ERROR_CODE__ERROR_CODE_TOO_MANY_REQUESTS;

        cr_assert_eq(tide_wire_retryable((Tide__V1__ErrorCode)code), want,
                     "code %d", code);
    }
}
