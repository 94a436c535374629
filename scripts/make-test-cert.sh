#!/usr/bin/env bash
# Makes a throwaway self-signed leaf certificate for localhost (ECDSA P-256,
# one day, CA:FALSE so webpki accepts it as the end entity) in DIR:
# DIR/cert.pem and DIR/key.pem. For tests and benchmarks only.
#   scripts/make-test-cert.sh DIR
set -euo pipefail
dir=${1:?usage: make-test-cert.sh DIR}
mkdir -p "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
