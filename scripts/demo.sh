#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# make demo: start tided on 127.0.0.1 (free ports) with ./tide-demo-data,
# provision a demo account, stream a simulated fleet through libtide for
# about 10 s, run the four reference queries, compact and show the
# retention report, then stop the server with SIGTERM (a clean shutdown:
# flush, fsync, exit 0).
set -euo pipefail
BUILD=${1:-build/release}
DATA=${TIDE_DEMO_DATA:-./tide-demo-data}
SECONDS_RUN=${TIDE_DEMO_SECONDS:-10}
DEVICES=${TIDE_DEMO_DEVICES:-100}

# The demo owns its data directory: private, as tided requires.
mkdir -p "$DATA"
chmod 700 "$DATA"
out=$(mktemp)
"$BUILD/tided" --data-dir "$DATA" --listen 127.0.0.1:0 \
    --http-listen 127.0.0.1:0 >"$out" &
pid=$!
stop() {
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || true
    fi
    rm -f "$out"
}
trap stop EXIT

port=
for _ in $(seq 1 200); do
    port=$(sed -n 's/^ready: listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$out")
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "demo: tided exited" >&2; exit 1; }
    sleep 0.05
done
[ -n "$port" ] || { echo "demo: tided did not become ready" >&2; exit 1; }
http=$(sed -n 's/^http: listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$out")
echo "demo: tided (pid $pid) on 127.0.0.1:$port, HTTP on 127.0.0.1:$http, data in $DATA"

"$BUILD/tide-demo" --port "$port" --admin-key-file "$DATA/admin.key" \
    --devices "$DEVICES" --seconds "$SECONDS_RUN"

echo "demo: a full compaction (tide admin compact --wait), then the retention"
echo "demo: report and the server status through the CLI:"
export TIDE_KEY
TIDE_KEY=$(cat "$DATA/admin.key")
"$BUILD/tide" --port "$port" admin compact --wait || true
"$BUILD/tide" --port "$port" retention || true
"$BUILD/tide" --port "$port" status || true

kill -TERM "$pid"
if wait "$pid"; then
    echo "demo: tided stopped cleanly"
else
    echo "demo: tided exited with an error" >&2
    exit 1
fi
