#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# InfluxDB 1.x for tide-bench: install (Debian package) if missing, start on
# 127.0.0.1 with a temporary data directory and the database "bench", stop
# by PID.
#   influx.sh start PORT   prints "PID DATADIR" once the database exists
#   influx.sh stop PID DATADIR   prints the bytes the data directory held
set -euo pipefail
cmd=${1:-}
# shellcheck source=bench/peers/common.sh
. "$(dirname "$0")/common.sh"

# One HTTP request over bash's /dev/tcp (no curl needed); prints the status.
http() { # port method path
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf '%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n' \
        "$2" "$3" >&3
    head -1 <&3 | cut -d' ' -f2
    exec 3<&-
}

# Up once it answers /ping and has created the database "bench".
ready() { # port
    [ "$(http "$1" GET /ping 2>/dev/null)" = 204 ] &&
        [ "$(http "$1" POST '/query?q=CREATE%20DATABASE%20bench')" = 200 ]
}

case "$cmd" in
install)
    peer_install influxd influxdb
    ;;
start)
    port=${2:?port}
    "$0" install
    dir=$(mktemp -d /tmp/tide-bench-influx.XXXXXX)
    # Every port on loopback: the RPC port next to the HTTP one. Reporting
    # and the internal monitor are off so that only the benchmark writes.
    cat >"$dir/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$((port + 1))"
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
  max-series-per-database = 0
  max-values-per-tag = 0
[http]
  bind-address = "127.0.0.1:$port"
  log-enabled = false
[monitor]
  store-enabled = false
CONF
    influxd -config "$dir/influxdb.conf" >"$dir.log" 2>&1 </dev/null &
    peer_wait InfluxDB $! "$dir" ready "$port"
    ;;
stop)
    pid=${2:?pid} dir=${3:?dir}
    peer_stop "$pid"
    du -sb "$dir/data" "$dir/wal" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'
    rm -rf "$dir" "$dir.log"
    ;;
*)
    echo "usage: influx.sh install | start PORT | stop PID DATADIR" >&2
    exit 2
    ;;
esac
