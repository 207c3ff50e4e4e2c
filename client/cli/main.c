/* SPDX-License-Identifier: Apache-2.0 */
/* The tide CLI: placeholder entry point, replaced by the commands below. */
#include <stdio.h>

#include "tide/client.h"

int main(void)
{
    fprintf(stderr, "tide: %s\n", tide_client_strerror(TIDE_CLIENT_EINVAL));
    return 2;
}
