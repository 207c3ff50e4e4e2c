#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# VictoriaMetrics for tide-bench: install (Debian package) if missing, start
# on 127.0.0.1 with a temporary data directory, stop by PID.
#   victoria.sh start PORT   prints "PID DATADIR" once the port answers
#   victoria.sh stop PID DATADIR
set -euo pipefail
cmd=${1:-}
# shellcheck source=bench/peers/common.sh
. "$(dirname "$0")/common.sh"

# Up once its port accepts a connection.
ready() { # port
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

case "$cmd" in
install)
    peer_install victoria-metrics victoria-metrics
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
    peer_wait VictoriaMetrics $! "$dir" ready "$port"
    ;;
stop)
    pid=${2:?pid} dir=${3:?dir}
    peer_stop "$pid"
    du -sb "$dir" | cut -f1
    rm -rf "$dir" "$dir.log"
    ;;
*)
    echo "usage: victoria.sh install | start PORT | stop PID DATADIR" >&2
    exit 2
    ;;
esac
