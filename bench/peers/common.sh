# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Shared by the peer scripts, which source it: install a peer's Debian
# package, wait until a started peer answers, stop one by PID.

# Install `package` unless `command` is on PATH.
peer_install() { # command package
    command -v "$1" >/dev/null && return 0
    if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get install -y --no-install-recommends "$2" >&2
}

# Run `check...` every 50 ms for up to 10 s while process `pid` lives. Once
# it succeeds, print "PID DATADIR"; else kill the process, say that `what`
# did not start and where its log is, and fail.
peer_wait() { # what pid dir check...
    local what=$1 pid=$2 dir=$3
    shift 3
    for _ in $(seq 1 200); do
        if "$@"; then
            echo "$pid $dir"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "${0##*/}: $what did not start; log $dir.log" >&2
    kill "$pid" 2>/dev/null || true
    return 1
}

# SIGTERM `pid` and wait up to 10 s for it to exit.
peer_stop() { # pid
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 200); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.05
    done
}
