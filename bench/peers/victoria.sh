#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# VictoriaMetrics for tide-bench: install (Debian package) if missing, start
# on 127.0.0.1 with a temporary data directory, stop by PID.
#   victoria.sh start PORT   prints "PID DATADIR" once the port answers
#   victoria.sh stop PID DATADIR
set -euo pipefail
cmd=${1:-}
case "$cmd" in
install)
    command -v victoria-metrics >/dev/null && exit 0
    if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get install -y --no-install-recommends victoria-metrics >&2
    ;;
start)
    port=${2:?port}
    "$0" install
    dir=$(mktemp -d /tmp/tide-bench-vm.XXXXXX)
    # A long retention: the workload's timestamps are a fixed past date.
    victoria-metrics -httpListenAddr="127.0.0.1:$port" \
        -storageDataPath="$dir" -retentionPeriod=100y \
        -search.latencyOffset=0s -loggerLevel=ERROR \
        >"$dir.log" 2>&1 </dev/null &
    pid=$!
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$pid $dir"
            exit 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "victoria.sh: VictoriaMetrics did not start; log $dir.log" >&2
    kill "$pid" 2>/dev/null || true
    exit 1
    ;;
stop)
    pid=${2:?pid} dir=${3:?dir}
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    du -sb "$dir" | cut -f1
    rm -rf "$dir" "$dir.log"
    ;;
*)
    echo "usage: victoria.sh install | start PORT | stop PID DATADIR" >&2
    exit 2
    ;;
esac
