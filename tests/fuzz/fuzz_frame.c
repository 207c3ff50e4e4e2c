/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the frame decoder (proto/frame.c). The first input
 * byte picks how the rest is split into feeds, so that frames cut at every
 * position are exercised; each decoded envelope must re-encode and decode
 * to the same body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

static void check_reencode(const Tide__V1__Envelope *env)
{
    size_t size = tide_frame_size(env), used = 0;
    uint8_t *buf = malloc(size);
    Tide__V1__Envelope *back = NULL;

    if (!buf)
        return;
    if (tide_frame_encode(env, buf, size) != (int64_t)size)
        abort();
    if (tide_frame_parse(buf, size, TIDE_FRAME_MAX_BYTES_LIMIT, NULL, &back,
                         &used) != 0 ||
        used != size || back->body_case != env->body_case ||
        back->request_id != env->request_id)
        abort();
    tide_frame_free(back, NULL);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tide_frame_decoder d;
    size_t step, off = 1;
    Tide__V1__Envelope *env = NULL;
    int rc = 0;

    if (size == 0)
        return 0;
    step = (size_t)data[0] % 64 + 1;
    tide_frame_decoder_init(&d, 1u << 16, NULL);
    while (off < size && rc == 0) {
        size_t n = size - off < step ? size - off : step;

        rc = tide_frame_decoder_feed(&d, data + off, n);
        off += n;
        while (rc == 0 && (rc = tide_frame_decoder_next(&d, &env)) == 0) {
            check_reencode(env);
            tide_frame_free(env, NULL);
        }
        if (rc == TIDE_FRAME_NEED_MORE)
            rc = 0;
    }
    if (rc != 0 && rc != TIDE_FRAME_ETOOLARGE && rc != TIDE_FRAME_EMALFORMED)
        abort();
    tide_frame_decoder_fini(&d);
    return 0;
}
