#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Development certificates for TLS (docs/operations.md, "TLS"): a
# self-signed CA and, signed by it, a server certificate for localhost and
# 127.0.0.1 and a client certificate for mutual TLS. Keys are ECDSA P-256
# (fast handshakes), certificates valid for 825 days. Not for production:
# the CA key sits next to what it signs.
#
#   scripts/dev-certs.sh [DIR] [CLIENT_CN]
#
# DIR defaults to ./tide-certs; CLIENT_CN (the client certificate's
# subject CN) to "dev-device". Existing files in DIR are kept, so running
# it again is harmless; delete DIR to start over.
set -euo pipefail
DIR=${1:-./tide-certs}
CLIENT_CN=${2:-dev-device}
DAYS=825

mkdir -p "$DIR"
chmod 700 "$DIR"
cd "$DIR"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ ! -f ca.pem ]; then
    key ca.key
    openssl req -x509 -new -key ca.key -sha256 -days "$DAYS" \
        -subj "/O=Tide development/CN=Tide development CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
fi

# sign NAME SUBJECT EXTFILE_CONTENT
sign() {
    local name=$1 subj=$2 ext=$3
    [ -f "$name.pem" ] && return 0
    key "$name.key"
    openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr"
    printf '%s\n' "$ext" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key \
        -CAcreateserial -sha256 -days "$DAYS" -extfile "$name.ext" \
        -out "$name.pem" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

sign server "/O=Tide development/CN=localhost" \
    "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"
sign client "/O=Tide development/CN=$CLIENT_CN" \
    "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
chmod 644 ca.pem server.pem client.pem

echo "dev-certs: CA $DIR/ca.pem; server $DIR/server.pem + server.key;" \
    "client $DIR/client.pem + client.key (CN=$CLIENT_CN)"
echo "dev-certs: client fingerprint $(openssl x509 -in client.pem -noout -fingerprint -sha256 | cut -d= -f2)"
