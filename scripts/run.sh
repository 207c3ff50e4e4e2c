#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# make run: tided in the foreground with ./tide-data on 127.0.0.1:8433
# (HTTP :8434). TLS=1 serves both ports over TLS with development
# certificates from scripts/dev-certs.sh (./tide-certs). Prints how to
# connect either way. Ctrl-C stops it cleanly.
set -euo pipefail
BUILD=${1:-build/release}
DATA=./tide-data
CERTS=./tide-certs
args=(--data-dir "$DATA")

echo "run: the operator's key is in $DATA/admin.key once tided has started:"
echo "run:   export TIDE_KEY=\$(cat $DATA/admin.key)"
if [ "${TLS:-0}" = 1 ]; then
    scripts/dev-certs.sh "$CERTS" >/dev/null
    args+=(--set "tls_cert=$CERTS/server.pem" --set "tls_key=$CERTS/server.key")
    echo "run: TLS on both ports (certificates in $CERTS, CA $CERTS/ca.pem):"
    echo "run:   $BUILD/tide --tls --ca $CERTS/ca.pem status"
    echo "run:   curl --cacert $CERTS/ca.pem https://localhost:8434/metrics"
    echo "run: plaintext instead: make run (without TLS=1)"
else
    echo "run: plaintext on loopback:"
    echo "run:   $BUILD/tide status"
    echo "run:   curl http://127.0.0.1:8434/metrics"
    echo "run: TLS instead: make run TLS=1 (development certificates), then"
    echo "run:   $BUILD/tide --tls --ca $CERTS/ca.pem status"
fi
exec "$BUILD/tided" "${args[@]}"
