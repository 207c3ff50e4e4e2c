#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# make bench: the standard suite (docs/bench.md). A fresh tided on free
# loopback ports with a temporary data directory: ingest, query, mixed,
# verify; then the same data directory after a forced full compaction
# (tide admin compact --wait): bytes/point and queries again, the
# "compacted" row; then VictoriaMetrics (also after its force_merge) and
# InfluxDB 1.x when installed (bench/peers/victoria.sh,
# bench/peers/influx.sh); then the sparse long history (100 sensors, one
# reading a day, 12 years) before and after compaction. Writes
# docs/benchmarks.md with the tables, the charts, the commands, the
# machine and the commit. Knobs: BENCH_DEVICES (100), BENCH_HOURS (24),
# BENCH_QUERY_S (20), BENCH_PEERS ("victoria influx", a subset, or
# "none"), BENCH_SPARSE (1; 0 skips the sparse history),
# BENCH_SPARSE_WINDOW_DAYS (365: the window width its layout is counted
# in), BENCH_WIDTH (1; 0 skips the width matrix, bench/width.sh, whose
# rows BENCH_WIDTH_ROWS sets), BENCH_SECURITY (1; 0 skips the TLS and
# encryption-at-rest rows, bench/security.sh).
set -euo pipefail
BUILD=${1:-build/release}
DEVICES=${BENCH_DEVICES:-100}
HOURS=${BENCH_HOURS:-24}
QUERY_S=${BENCH_QUERY_S:-20}
PEERS=${BENCH_PEERS:-victoria influx}
SPARSE=${BENCH_SPARSE:-1}
SPARSE_WINDOW_DAYS=${BENCH_SPARSE_WINDOW_DAYS:-365}
WIDTH=${BENCH_WIDTH:-1}
SECURITY=${BENCH_SECURITY:-1}
VM_PORT=${BENCH_VM_PORT:-18428}
INFLUX_PORT=${BENCH_INFLUX_PORT:-18086}
OUT=docs/benchmarks.md
ASSETS=docs/benchmarks
BENCH="$BUILD/tide-bench"
WL="--workload devops --devices $DEVICES --hours $HOURS --start 1704067200 --seed 1"

work=$(mktemp -d /tmp/tide-bench-suite.XXXXXX)
pid=
stop_tided() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || true
    fi
    pid=
}
cleanup() {
    stop_tided
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$ASSETS"

# A figure from a tide-bench JSON report: the first "key":number.
jget() {
    grep -o "\"$1\":[-0-9.e+]*" "$2" | head -1 | cut -d: -f2
}
# p99 of query type N (1..5) from the queries_by_type array.
qp99() {
    grep -o '"p99_ms":[-0-9.e+]*' "$2" | sed -n "$(($1 + 1))p" | cut -d: -f2
}
fmt() {
    awk -v v="${1:-0}" -v d="${2:-0}" 'BEGIN { printf "%.*f", d, v }'
}

# Start tided on data directory $1; sets pid, port and T.
start_tided() {
    "$BUILD/tided" --data-dir "$1" --listen 127.0.0.1:0 \
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
    [ -n "$port" ] || { echo "bench: tided did not start" >&2; exit 1; }
    T="--port $port --admin-key-file $1/admin.key --server-pid $pid"
    echo "bench: tided (pid $pid) on 127.0.0.1:$port, data $1"
}

start_tided "$work/data"

run() { # name mode target-args...
    local name=$1 mode=$2
    shift 2
    echo "bench: $name"
    "$BENCH" "$mode" "$@" $WL --json "$work/$name.json" \
        --svg "$ASSETS/$name.svg" | tee "$work/$name.txt"
}
run tide-ingest ingest $T --connections 2 --batch 10000
run tide-query query $T --query-concurrency 2 --seconds "$QUERY_S"
run tide-mixed mixed $T --connections 1 --batch 10000 --query-concurrency 1
run tide-verify verify $T
stop_tided
seg=$(du -sb "$work/data/seg" 2>/dev/null | cut -f1)
points=$(jget points_acked "$work/tide-ingest.json")

# Compacted: the same data directory after a forced full compaction, as
# VictoriaMetrics is measured after its force_merge. The clean shutdown
# above flushed the head, so every point is in segments.
start_tided "$work/data"
compacted=
compact_err=
if "$BUILD/tide" --port "$port" --key "$(cat "$work/data/admin.key")" \
    admin compact --wait >"$work/tide-compact.txt" 2>&1; then
    cat "$work/tide-compact.txt"
    run tide-compacted-query query $T --query-concurrency 2 \
        --seconds "$QUERY_S"
    compacted=1
else
    compact_err=$(tail -1 "$work/tide-compact.txt")
    echo "bench: compaction failed: $compact_err" >&2
fi
stop_tided
seg_c=$(du -sb "$work/data/seg" 2>/dev/null | cut -f1)

vm=
if [[ " $PEERS " == *" victoria "* ]] && command -v victoria-metrics >/dev/null; then
    read -r vpid vdir < <(bench/peers/victoria.sh start "$VM_PORT")
    V="--target victoria --port $VM_PORT"
    run vm-ingest ingest $V --connections 2 --batch 10000
    sleep 2 # VictoriaMetrics makes new samples searchable after ~1 s
    run vm-query query $V --query-concurrency 2 --seconds "$QUERY_S"
    run vm-mixed mixed $V --connections 1 --batch 10000 \
        --query-concurrency 1
    sleep 5 # its in-memory parts reach the disk within a few seconds
    vm_bytes=$(du -sb "$vdir" | cut -f1)
    vm_c=
    if bench/peers/victoria.sh force-merge "$VM_PORT"; then
        run vm-compacted-query query $V --query-concurrency 2 \
            --seconds "$QUERY_S"
        vm_c=1
    fi
    vm_bytes_c=$(bench/peers/victoria.sh stop "$vpid" "$vdir")
    vm=1
fi

influx=
if [[ " $PEERS " == *" influx "* ]] && command -v influxd >/dev/null; then
    read -r ipid idir < <(bench/peers/influx.sh start "$INFLUX_PORT")
    I="--target influx --port $INFLUX_PORT"
    run influx-ingest ingest $I --connections 2 --batch 10000
    run influx-query query $I --query-concurrency 2 --seconds "$QUERY_S"
    run influx-mixed mixed $I --connections 1 --batch 10000 \
        --query-concurrency 1
    influx_bytes=$(bench/peers/influx.sh stop "$ipid" "$idir")
    influx=1
fi

# The sparse long history: written time-major through libtide, flushed
# by a clean shutdown, its layout counted; then compacted and counted
# again.
sparse=
if [ "$SPARSE" != 0 ]; then
    SW="--workload sparse --seed 1"
    start_tided "$work/sparse"
    S=$T
    echo "bench: sparse-ingest"
    "$BENCH" ingest $S $SW --connections 1 --batch 10000 --no-progress \
        --json "$work/sparse-ingest.json" | tee "$work/sparse-ingest.txt"
    stop_tided
    start_tided "$work/sparse"
    echo "bench: sparse-before"
    "$BENCH" verify $T $SW --no-progress --data-dir "$work/sparse" \
        --window-days "$SPARSE_WINDOW_DAYS" --json "$work/sparse-before.json" |
        tee "$work/sparse-before.txt"
    echo "bench: sparse-compact"
    if "$BENCH" compact $T $SW --no-progress --data-dir "$work/sparse" \
        --window-days "$SPARSE_WINDOW_DAYS" \
        --json "$work/sparse-compact.json" 2>&1 |
        tee "$work/sparse-compact.txt"; then
        sparse=1
    else
        sparse=failed
    fi
    stop_tided
fi

# The width matrix: ingest at 100 to 100,000 devices, Tide and (when
# installed and in BENCH_PEERS) VictoriaMetrics side by side per row.
if [ "$WIDTH" = 1 ]; then
    BENCH_PEERS="$PEERS" bench/width.sh "$BUILD" >"$work/width.md" ||
        echo "| width matrix failed | | | | | | | |" >>"$work/width.md"
fi

# TLS and encryption at rest beside plaintext, fresh servers.
if [ "$SECURITY" = 1 ]; then
    bench/security.sh "$BUILD" >"$work/security.md" ||
        echo "security rows failed" >>"$work/security.md"
fi

row() { # label prefix bytes
    local p=$2
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" \
        "$(fmt "$(jget points_per_s "$work/$p-ingest.json")" 0)" \
        "$(fmt "$(jget p99_ms "$work/$p-ingest.json")" 2)" \
        "$(fmt "$(jget queries_per_s "$work/$p-query.json")" 0)" \
        "$(fmt "$(qp99 1 "$work/$p-query.json")" 2) / $(fmt "$(qp99 2 "$work/$p-query.json")" 2) / $(fmt "$(qp99 3 "$work/$p-query.json")" 2) / $(fmt "$(qp99 4 "$work/$p-query.json")" 2) / $(fmt "$(qp99 5 "$work/$p-query.json")" 2)" \
        "$(fmt "$(jget points_per_s "$work/$p-mixed.json")" 0)" \
        "$(fmt "$(jget queries_per_s "$work/$p-mixed.json")" 0)" \
        "$(fmt "$(jget server_rss_peak_mib "$work/$p-ingest.json")" 0)" \
        "$(awk -v b="${3:-0}" -v n="${points:-1}" 'BEGIN { printf "%.2f", b / n }')"
}

c# TLS and encryption at rest beside plaintext, fresh servers.
if [ "$SECURITY" = 1 ]; then
    bench/security.sh "$BUILD" >"$work/security.md" ||
        echo "security rows failed" >>"$work/security.md"
fi

row() { # label prefix bytes: bytes/point and queries after compaction
    local p=$2
    printf '| %s | — | — | %s | %s | — | — | — | %s |\n' "$1" \
        "$(fmt "$(jget queries_per_s "$work/$p-query.json")" 0)" \
        "$(fmt "$(qp99 1 "$work/$p-query.json")" 2) / $(fmt "$(qp99 2 "$work/$p-query.json")" 2) / $(fmt "$(qp99 3 "$work/$p-query.json")" 2) / $(fmt "$(qp99 4 "$work/$p-query.json")" 2) / $(fmt "$(qp99 5 "$work/$p-query.json")" 2)" \
        "$(awk -v b="${3:-0}" -v n="${points:-1}" 'BEGIN { printf "%.2f", b / n }')"
}

{
    echo "# Benchmarks"
    echo
    echo "Written by \`make bench\` (bench/suite.sh) on $(date -u +%Y-%m-%dT%H:%MZ)."
    echo "Commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown);"
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo),"
    echo "kernel $(uname -r); loopback (127.0.0.1) only. One run each: take"
    echo "medians of several runs before comparing (docs/bench.md, Caveats)."
    echo
    echo "Workload: devops, $DEVICES devices x 10 fields, 10 s interval, $HOURS h"
    echo "($(jget points "$work/tide-ingest.json") points), seed 1. Command:"
    echo
    echo '```sh'
    echo "make bench   # BENCH_DEVICES=$DEVICES BENCH_HOURS=$HOURS BENCH_QUERY_S=$QUERY_S"
    echo "$BENCH ingest $WL --connections 2 --batch 10000"
    echo "$BENCH query $WL --query-concurrency 2 --seconds $QUERY_S"
    echo "$BENCH mixed $WL --connections 1 --batch 10000 --query-concurrency 1"
    echo "$BENCH verify $WL"
    echo "# restart on the same data directory, then:"
    echo "tide admin compact --wait"
    echo "$BENCH query $WL --query-concurrency 2 --seconds $QUERY_S"
    echo '```'
    echo
    echo "| target | ingest points/s | ingest ack p99 ms | queries/s | query p99 ms Q1/Q2/Q3/Q4/Q5 | mixed points/s | mixed queries/s | server peak RSS MiB | bytes/point on disk |"
    echo "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"
    row Tide tide "$seg"
    if [ -n "$compacted" ]; then
        crow "Tide, compacted" tide-compacted "$seg_c"
    else
        echo "| Tide, compacted | compaction failed: ${compact_err:-unknown} | | | | | | | |"
    fi
    if [ -n "$vm" ]; then
        row "VictoriaMetrics $(victoria-metrics -version 2>/dev/null | head -1 | sed 's/^victoria-metrics-//' | cut -c1-30)" vm "$vm_bytes"
        if [ -n "$vm_c" ]; then
            crow "VictoriaMetrics, after force_merge" vm-compacted "$vm_bytes_c"
        else
            echo "| VictoriaMetrics, after force_merge | force_merge did not finish | | | | | | | |"
        fi
    else
        echo "| VictoriaMetrics | not installed (apt-get install victoria-metrics) | | | | | | | |"
        echo "| VictoriaMetrics, after force_merge | not installed | | | | | | | |"
    fi
    if [ -n "$influx" ]; then
        row "InfluxDB $(influxd version 2>/dev/null | awk '{ print $2 }')" influx "$influx_bytes"
    else
        echo "| InfluxDB 1.x | not installed (apt-get install influxdb) | | | | | | | |"
    fi
    echo
    echo "Tide's bytes/point: segment files after the clean shutdown that"
    echo "flushes the head; \"compacted\": after \`tide admin compact --wait\`"
    echo "on a restart of the same data directory, then a clean shutdown (the"
    echo "query run is repeated on the compacted data; ingest and mixed are"
    echo "not). VictoriaMetrics: data directory 5 s after its last run, and"
    echo "after \`/internal/force_merge\` once no merge is active, at stop."
    echo "InfluxDB: data directory after stop. Every bytes/point divides by"
    echo "the ingest run's points (the mixed run rewrites the same points,"
    echo "duplicates that compaction removes). Ack latency for Tide is"
    echo "pipelined (batch sealed to ack seen); for peers it is the"
    echo "synchronous HTTP POST of one batch."
    echo
    echo "Compaction:"
    echo
    echo '```'
    cat "$work/tide-compact.txt" 2>/dev/null || true
    echo '```'
    echo
    echo "## Width matrix"
    echo
    echo "Ingest at fleet width (bench/width.sh, \`make bench-width\`): the"
    echo "devops fleet, 2 connections, batches of 10,000, durable acks; a"
    echo "fresh server per row, Tide then VictoriaMetrics (its line-protocol"
    echo "path). Time-major is a live feed (every device at t, then t + 10 s),"
    echo "series-major a back-fill (each device's span in turn). Server CPU"
    echo "and peak RSS from /proc of the server's pid. Command per row:"
    echo
    echo '```sh'
    echo "$BENCH ingest --workload devops --devices N --hours H --order time|series --start 1704067200 --seed 1 --connections 2 --batch 10000 [--target victoria]"
    echo '```'
    echo
    if [ "$WIDTH" = 1 ]; then
        cat "$work/width.md"
    else
        echo "Not run (BENCH_WIDTH=0)."
    fi
    echo
    echo "## Security: TLS and encryption at rest"
    echo
    echo "bench/security.sh (\`make bench-security\`): fresh tided runs,"
    echo "plaintext, TLS (development certificates), encryption at rest"
    echo "(master_key_file) and both, two alternating rounds of durable"
    echo "ingest; the connect mode times connect + Auth + the first"
    echo "acknowledged write (fresh: a full handshake; resumed: a reconnect"
    echo "resuming the TLS session)."
    echo
    if [ "$SECURITY" = 1 ]; then
        cat "$work/security.md"
    else
        echo "Not run (BENCH_SECURITY=0)."
    fi
    echo
    echo "## Sparse long history"
    echo
    echo "100 sensors, one reading (3 decimals) a day for 12 years"
    echo "(438,300 points), written time-major through libtide, one"
    echo "connection; segment files counted per (shard, tier, window) of"
    echo "$SPARSE_WINDOW_DAYS days from the MANIFEST and the segment footers."
    echo "Command:"
    echo
    echo '```sh'
    echo "$BENCH ingest --workload sparse --seed 1 --connections 1 --batch 10000"
    echo "# clean shutdown (flushes the head), restart on the same directory"
    echo "$BENCH verify --workload sparse --seed 1 --data-dir DIR --window-days $SPARSE_WINDOW_DAYS"
    echo "$BENCH compact --workload sparse --seed 1 --data-dir DIR --window-days $SPARSE_WINDOW_DAYS"
    echo '```'
    echo
    if [ "$sparse" = 1 ]; then
        echo "| data | segment files | files per shard per window (mean / max) | bytes/point |"
        echo "| --- | ---: | ---: | ---: |"
        for ph in before compact; do
            f="$work/sparse-$ph.json"
            printf '| %s | %s | %s / %s | %s |\n' \
                "$([ $ph = before ] && echo "flushed" || echo "compacted")" \
                "$(jget segment_files "$f")" \
                "$(fmt "$(jget files_per_shard_window_mean "$f")" 2)" \
                "$(jget files_per_shard_window_max "$f")" \
                "$(fmt "$(tr -d '\n' <"$f" | grep -o '"layout": *{[^}]*}' | grep -o '"bytes_per_point": *[-0-9.e+]*' | head -1 | cut -d: -f2)" 2)"
        done
    elif [ "$sparse" = failed ]; then
        echo "Compaction failed:"
        echo
        echo '```'
        tail -3 "$work/sparse-compact.txt"
        echo '```'
        echo
        echo "Flushed, before compaction:"
        echo
        echo '```'
        sed -n '/^segment layout/,$p' "$work/sparse-before.txt"
        echo '```'
    else
        echo "Not run (BENCH_SPARSE=0)."
    fi
    echo
    echo "Verify: $(grep '^verify:' "$work/tide-verify.txt")"
    echo
    for n in tide-ingest tide-query tide-mixed tide-compacted-query \
        vm-ingest vm-query vm-mixed vm-compacted-query \
        influx-ingest influx-query influx-mixed; do
        [ -f "$work/$n.txt" ] || continue
        echo "## $n"
        echo
        echo "![$n](benchmarks/$n.svg)"
        echo
        echo '```'
        sed -n '/^figure/,$p' "$work/$n.txt"
        echo '```'
        echo
    done
} >"$OUT"
echo "bench: wrote $OUT"
