#!/usr/bin/env bash
# The issue-16 harness scenario: 1 000 subscribers of which 100 read at most
# 50 frames/s, 100 keys, HTTP publishing at 5 000 msg/s, one loopback server
# under POLICY (disconnect or conflate). Bounded: about 30 s per run.
#
#   benches/conflation-load.sh POLICY [RATE] [PORT] [TOOL FLAGS…]
#   SLOW=0 CONNS=900 benches/conflation-load.sh POLICY   # the no-slow baseline
#
# Uses target/release/ws-realtime and ws-realtime-load (cargo build --release
# --bin ws-realtime --bin ws-realtime-load); BIN_DIR points elsewhere (a copy,
# when the target dir is shared). The server runs on CPU SERVER_CPU (0) and
# the tool on TOOL_CPU (1), so neither takes the other's core; set both
# empty to let the scheduler choose. 32 publishes in flight, as the shared
# harness's load generator keeps.
set -euo pipefail
cd "$(dirname "$0")/.."
policy="${1:?usage: $0 disconnect|conflate [rate] [port]}"
rate="${2:-5000}"
port="${3:-18090}"
bin="${BIN_DIR:-target/release}"
pin() { if [[ -n "$1" ]]; then echo taskset -c "$1"; fi; }
server_pin=$(pin "${SERVER_CPU-0}")
tool_pin=$(pin "${TOOL_CPU-1}")
secret=conflation-load-secret-0123456789abcdef
WS_BIND_ADDRESS="127.0.0.1:$port" WS_AUTH_SECRET="$secret" WS_API_KEY=loadkey \
    WS_SOURCES=http WS_SLOW_CLIENT_POLICY="$policy" WS_HISTORY_SNAPSHOT_FIELD=key \
    WS_LOG_LEVEL=warn $server_pin "$bin/ws-realtime" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
sleep 2
timeout 80 $tool_pin "$bin/ws-realtime-load" --url "ws://127.0.0.1:$port/ws" --secret "$secret" \
    --api-key loadkey --publish-url "http://127.0.0.1:$port/api/publish" \
    --connections "${CONNS:-1000}" --slow-readers "${SLOW:-100}" --slow-read-rate 50 \
    --keys 100 --publish-rate "$rate" --publish-concurrency 32 \
    --duration 15s --warmup 2s --grace 3s \
    --server-pid "$server" --quiet "${@:4}"
