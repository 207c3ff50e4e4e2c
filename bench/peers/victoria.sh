#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# VictoriaMetrics for tide-bench: install (Debian package) if missing, start
# on 127.0.0.1 with a temporary data directory, stop by PID.
#   victoria.sh start PORT   prints "PID DATADIR" once the port answers
#   victoria.sh force-merge PORT  merges every partition, returns when done
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
force-merge)
    port=${2:?port}
    curl -fsS "http://127.0.0.1:$port/internal/force_merge" >/dev/null
    # The merge runs in the background: done once no merge has been
    # active for 2 s (vm_active_merges summed over every kind of part).
    quiet=0
    for _ in $(seq 1 1200); do
        active=$(curl -fsS "http://127.0.0.1:$port/metrics" |
            awk '/^vm_active_merges/ { s += $NF } END { print s + 0 }')
        if [ "$active" = 0 ]; then
            quiet=$((quiet + 1))
            [ "$quiet" -ge 4 ] && exit 0
        else
            quiet=0
        fi
        sleep 0.5
    done
    echo "victoria.sh: merges still active after 600 s" >&2
    exit 1
    ;;
stop)
    pid=${2:?pid} dir=${3:?dir}
    peer_stop "$pid"
    du -sb "$dir" | cut -f1
    rm -rf "$dir" "$dir.log"
    ;;
*)
    echo "usage: victoria.sh install | start PORT | force-merge PORT |" \
        "stop PID DATADIR" >&2
    exit 2
    ;;
esac
