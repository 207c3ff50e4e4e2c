#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# make bench-width: ingest at fleet width, Tide and VictoriaMetrics side by
# side in one run (docs/bench.md, "Width matrix"). Each row is a fresh
# tided and a fresh VictoriaMetrics (its line-protocol /write path, the
# devops fleet), 2 connections, batches of 10,000. A row is
# DEVICES:HOURS[:ORDER], ORDER time (default: every device at t, then
# t + 10 s) or series (each device's whole span in turn).
# Prints a Markdown table: points/s, server CPU per point, server peak RSS.
#   bench/width.sh [BUILD]   rows from BENCH_WIDTH_ROWS
set -euo pipefail
BUILD=${1:-build/release}
ROWS=${BENCH_WIDTH_ROWS:-100:24 1000:4 10000:1 10000:1:series 100000:0.1}
VM_PORT=${BENCH_VM_PORT:-18428}
BENCH="$BUILD/tide-bench"

work=$(mktemp -d /tmp/tide-bench-width.XXXXXX)
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# points/s, server ns per point and peak RSS MiB of one tide-bench JSON.
figures() {
    python3 - "$1" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))["results"]
    print("%.2f M | %.0f | %.0f | %.0f" % (
        r["points_per_s"] / 1e6, r["server_cpu_s"] * 1e9 / max(r["points_acked"], 1),
        r["server_rss_peak_mib"], r["points_per_s"]))
except Exception:
    print("failed | | | 0")
PY
}

has_vm=0
case " ${BENCH_PEERS:-victoria} " in
*" victoria "*) command -v victoria-metrics >/dev/null && has_vm=1 ;;
esac
echo "| devices × span | Tide points/s | Tide server ns/pt | Tide peak RSS MiB | VM points/s | VM server ns/pt | VM peak RSS MiB | Tide / VM |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for row in $ROWS; do
    IFS=: read -r d h order <<<"$row"
    order=${order:-time}
    wl="--workload devops --devices $d --hours $h --order $order"
    wl="$wl --start 1704067200 --seed 1"
    wl="$wl --connections 2 --batch 10000 --no-progress"
    rm -rf "$work/data"
    "$BUILD/tided" --data-dir "$work/data" --listen 127.0.0.1:0 \
        --http-listen 127.0.0.1:0 --set log_level=warn >"$work/out" \
        2>>"$work/tided.log" &
    pid=$!
    port=
    for _ in $(seq 1 600); do
        port=$(sed -n 's/^ready: listening on 127.0.0.1:\([0-9]*\)$/\1/p' \
            "$work/out")
        [ -n "$port" ] && break
        sleep 0.05
    done
    [ -n "$port" ] || { echo "width: tided did not start" >&2; exit 1; }
    "$BENCH" ingest --port "$port" --admin-key-file "$work/data/admin.key" \
        --server-pid "$pid" $wl --json "$work/tide.json" >"$work/tide.txt" 2>&1 || true
    kill -TERM "$pid"
    wait "$pid" || true
    pid=
    t=$(figures "$work/tide.json")
    v="not installed | | | 0"
    if [ "$has_vm" = 1 ]; then
        read -r vpid vdir < <(bench/peers/victoria.sh start "$VM_PORT")
        "$BENCH" ingest --target victoria --port "$VM_PORT" \
            --server-pid "$vpid" $wl --json "$work/vm.json" >"$work/vm.txt" 2>&1 || true
        bench/peers/victoria.sh stop "$vpid" "$vdir" >/dev/null
        v=$(figures "$work/vm.json")
    fi
    ratio=$(awk -v a="${t##* }" -v b="${v##* }" \
        'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }')
    echo "| $d × $h h, $order-major | ${t% | *} | ${v% | *} | $ratio |"
done
