#!/usr/bin/env bash
# Server CPU per TLS handshake: `openssl s_time -new` (full handshakes, 5 s
# per run) against a release build serving TLS on 127.0.0.1:18443, with an
# RSA-2048 and an EC P-256 certificate made here, TLS 1.3 and 1.2; the
# server's CPU comes from /proc before and after. Usage:
#   cargo build --release --bin ws-realtime && benches/tls_handshake.sh [BINARY]
set -euo pipefail
bin=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/ws-realtime}")
dir=$(mktemp -d)
cd "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -keyout ca.key -out ca.pem -subj /CN=ca 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > ext
for kind in rsa ec; do
  if [ $kind = rsa ]; then openssl genpkey -algorithm RSA -out $kind.key 2>/dev/null
  else openssl ecparam -name prime256v1 -genkey -noout -out $kind.key; fi
  openssl req -new -key $kind.key -out $kind.csr -subj /CN=localhost
  openssl x509 -req -in $kind.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out $kind.pem 2>/dev/null
done
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
for kind in rsa ec; do
  for ver in tls1_3 tls1_2; do
    WS_AUTH_SECRET=integration-test-secret-0123456789abcdef WS_SOURCES=http WS_API_KEY=k \
    WS_BIND_ADDRESS=127.0.0.1:18443 WS_TLS_CERT_FILE=$kind.pem WS_TLS_KEY_FILE=$kind.key RUST_LOG=warn \
      "$bin" serve & pid=$!
    sleep 0.5
    t0=$(ticks $pid)
    out=$(timeout 20 openssl s_time -connect 127.0.0.1:18443 -new -time 5 -$ver -CAfile ca.pem 2>&1 | grep -E "connections in [0-9.]+s;" | head -1)
    t1=$(ticks $pid)
    kill $pid; wait $pid || true
    n=$(echo "$out" | awk '{print $1}')
    echo "$kind $ver: $out | server cpu $(( (t1-t0)*10 )) ms => $(awk -v c=$(( (t1-t0)*10000 )) -v n=$n 'BEGIN{printf "%.0f", c/n}') us/handshake"
  done
done
rm -rf "$dir"
