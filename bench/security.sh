#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# make bench-security: what TLS and encryption at rest cost (docs/bench.md,
# "Security"). Four fresh tided runs on one workload, in alternating
# order: plaintext, TLS (scripts/dev-certs.sh certificates), encryption at
# rest (a master key from tide admin keygen), and both. Each: durable
# ingest over 2 connections, then the connect mode (connect, Auth, first
# acknowledged write) fresh and resumed. Then engine_bench without and
# with --encrypt for Q1-Q4 in-process. Prints Markdown tables.
#   bench/security.sh [BUILD]   BENCH_SEC_DEVICES (100), BENCH_SEC_HOURS (24)
set -euo pipefail
BUILD=${1:-build/release}
DEVICES=${BENCH_SEC_DEVICES:-100}
HOURS=${BENCH_SEC_HOURS:-24}
BENCH="$BUILD/tide-bench"
WL="--workload devops --devices $DEVICES --hours $HOURS --start 1704067200 --seed 1"

work=$(mktemp -d /tmp/tide-bench-sec.XXXXXX)
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
scripts/dev-certs.sh "$work/certs" >/dev/null
"$BUILD/tide" admin keygen "$work/master.key" >/dev/null

# start MODE: tided on a fresh data directory; sets pid, port, tls.
start() {
    local args=(--set log_level=warn)
    tls=
    case $1 in *tls*)
        args+=(--set "tls_cert=$work/certs/server.pem"
            --set "tls_key=$work/certs/server.key")
        tls="--ca $work/certs/ca.pem" ;;
    esac
    case $1 in *rest*) args+=(--set "master_key_file=$work/master.key") ;; esac
    rm -rf "$work/data"
    "$BUILD/tided" --data-dir "$work/data" --listen 127.0.0.1:0 \
        --http-listen 127.0.0.1:0 "${args[@]}" >"$work/out" \
        2>>"$work/tided.log" &
    pid=$!
    port=
    for _ in $(seq 1 600); do
        port=$(sed -n 's/^ready: listening on 127.0.0.1:\([0-9]*\)$/\1/p' \
            "$work/out")
        [ -n "$port" ] && break
        sleep 0.05
    done
    [ -n "$port" ] || { echo "security: tided did not start" >&2; exit 1; }
}
stop() {
    kill -TERM "$pid"
    wait "$pid" || true
    pid=
}
pps() {
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"]; print("%.0f %.0f" % (r["points_per_s"], r["server_cpu_s"]*1e9/max(r["points_acked"],1)))' "$1" 2>/dev/null || echo "0 0"
}

modes="plain tls rest tls+rest"
declare -A ingest cpu fresh resumed
for round in 1 2; do
    for m in $modes; do
        start "$m"
        T="--port $port --admin-key-file $work/data/admin.key --server-pid $pid $tls"
        "$BENCH" ingest $T $WL --connections 2 --batch 10000 --no-progress \
            --json "$work/$m.json" >"$work/$m.txt" 2>&1 || true
        read -r p c < <(pps "$work/$m.json")
        ingest[$m]="${ingest[$m]:-} $p"
        cpu[$m]="${cpu[$m]:-} $c"
        if [ "$round" = 1 ]; then
            fresh[$m]=$("$BENCH" connect $T $WL --count 200 2>/dev/null |
                sed -n 's/.*p50 \([0-9.]*\) ms, p99 \([0-9.]*\) ms.*/\1 \/ \2/p')
            resumed[$m]=$("$BENCH" connect $T $WL --count 200 --resume 2>/dev/null |
                sed -n 's/.*p50 \([0-9.]*\) ms, p99 \([0-9.]*\) ms.*/\1 \/ \2/p')
        fi
        stop
    done
done

best() { tr ' ' '\n' | sort -n | tail -1; }
base=$(echo ${ingest[plain]} | best)
echo "| server | ingest points/s (best of 2) | of plaintext | server ns/pt (best) | connect + Auth + first ack p50 / p99 ms, fresh | same, resumed |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for m in $modes; do
    b=$(echo ${ingest[$m]} | best)
    c=$(echo ${cpu[$m]} | tr ' ' '\n' | grep -v '^$' | sort -n | head -1)
    printf '| %s | %s | %s | %s | %s | %s |\n' "$m" \
        "$(awk -v v="$b" 'BEGIN { printf "%.2f M", v / 1e6 }')" \
        "$(awk -v v="$b" -v p="$base" 'BEGIN { if (p > 0) printf "%.0f %%", 100 * v / p; else print "-" }')" \
        "$c" "${fresh[$m]:--}" "${resumed[$m]:--}"
done
echo
echo "Workload: \`$WL\`, 2 connections, batches of 10,000, durable acks;"
echo "rounds: $(for m in $modes; do printf '%s %s; ' "$m" "${ingest[$m]}"; done)"
echo
EB="$BUILD/engine_bench --devices 1000 --hours 24 --reps 3"
echo "Queries in-process, \`$EB\` without and with \`--encrypt\` (ms, flushed):"
echo
echo '```'
for e in "" --encrypt; do
    echo "engine_bench $e"
    $EB $e 2>/dev/null | grep -E '^(Q[1-4]|ingest|latest)' || true
done
echo '```'
