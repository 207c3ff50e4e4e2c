#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs every Debian 12 package that Tide's build, tests, demo and bench
# need. Idempotent: silent and quick when everything is present; runs
# `apt-get update` only when something is missing. Works as root or via sudo.
set -euo pipefail

# Debian package -> how to tell it is present (a pkg-config module, a command,
# or "dpkg" to ask dpkg directly).
PACKAGES=(
    "build-essential:cmd:gcc"
    "make:cmd:make"
    "pkg-config:cmd:pkg-config"
    "clang:cmd:clang"
    "libclang-rt-14-dev:dpkg"
    "clang-format:cmd:clang-format"
    "liburing-dev:pc:liburing"
    "liblz4-dev:pc:liblz4"
    "libxxhash-dev:pc:libxxhash"
    "libevent-dev:pc:libevent_openssl"
    "libprotobuf-c-dev:pc:libprotobuf-c"
    "protobuf-c-compiler:cmd:protoc-c"
    "libcriterion-dev:pc:criterion"
    "libsqlite3-dev:pc:sqlite3"
    "libssl-dev:pc:openssl"
    "libcrypt-dev:pc:libxcrypt"
)

present() {
    local pkg=$1 how=$2 what=${3:-}
    case "$how" in
    pc) pkg-config --exists "$what" 2>/dev/null ;;
    cmd) command -v "$what" >/dev/null 2>&1 ;;
    dpkg) dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null |
        grep -q 'install ok installed' ;;
    esac
}

missing=()
for entry in "${PACKAGES[@]}"; do
    IFS=: read -r pkg how what <<<"$entry"
    # pkg-config itself may be absent on a bare machine: then every pc check
    # fails and the package is simply (re)installed, which is harmless.
    present "$pkg" "$how" "$what" || missing+=("$pkg")
done

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "install-deps: need root or sudo to install: ${missing[*]}" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" apt-get update -qq; then
    echo "install-deps: apt-get update failed" >&2
    exit 1
fi
if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null; then
    echo "install-deps: apt-get install failed for: ${missing[*]}" >&2
    exit 1
fi

failed=()
for entry in "${PACKAGES[@]}"; do
    IFS=: read -r pkg how what <<<"$entry"
    present "$pkg" "$how" "$what" || failed+=("$pkg")
done
if [ ${#failed[@]} -ne 0 ]; then
    echo "install-deps: still missing after install: ${failed[*]}" >&2
    exit 1
fi
echo "install-deps: done"
