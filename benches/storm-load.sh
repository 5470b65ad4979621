#!/usr/bin/env bash
# Issue 15's reconnect storm on one loopback server: 1 000 connections on one
# channel drop at once after 3 s of HTTP publishing at RATE, stay away 2 s,
# and reconnect with their cursors (about 2 x RATE missed messages each).
# 100 bystanders on the same channel stay through it (in the storm's tool),
# and a second tool process, the observer (100 connections on a channel of
# its own, 100 msg/s), runs across the whole storm: its latency is what the
# storm costs everyone else, without the storm's own reading in the same
# process. Bounded: about 20 s per run.
#
#   benches/storm-load.sh [RATE] [PORT]
#   OBSERVER_ONLY=1 benches/storm-load.sh   # the observer alone: its baseline
#   OBSERVER_CHANNEL=lines OBSERVER_RATE=1 benches/storm-load.sh
#       # the observer on the storm's channel: its latency covers the storm's
#       # messages too (its delivery counts do not: it expects only its own)
#   OBSERVER_WINDOW=storm benches/storm-load.sh
#       # the observer measures only the storm: from about the reconnect
#       # (its warmup spans the storm tool's start, 1 100 connections at
#       # 1 000/s, its 3 s warmup and 2 s offline) to 2 s after
#
# Uses target/release/ws-realtime and ws-realtime-load; BIN_DIR points
# elsewhere (a copy, when the target dir is shared). The server runs on CPU
# SERVER_CPU (0), both tools on TOOL_CPU (1); set both empty to let the
# scheduler choose.
set -euo pipefail
cd "$(dirname "$0")/.."
rate="${1:-250}"
port="${2:-18091}"
bin="${BIN_DIR:-target/release}"
pin() { if [[ -n "$1" ]]; then echo taskset -c "$1"; fi; }
server_pin=$(pin "${SERVER_CPU-0}")
tool_pin=$(pin "${TOOL_CPU-1}")
secret=storm-load-secret-0123456789abcdef
url="ws://127.0.0.1:$port/ws"
publish="http://127.0.0.1:$port/api/publish"
WS_BIND_ADDRESS="127.0.0.1:$port" WS_AUTH_SECRET="$secret" WS_API_KEY=loadkey \
    WS_SOURCES=http WS_LOG_LEVEL=warn $server_pin "$bin/ws-realtime" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
sleep 2
observer_log=$(mktemp)
if [[ "${OBSERVER_WINDOW:-}" == storm ]]; then
    observer_phases=(--warmup 7s --duration 2s)
else
    observer_phases=(--warmup 2s --duration 14s)
fi
# The observer connects first and measures from before the drop until
# after the storm's replay is over.
timeout 60 $tool_pin "$bin/ws-realtime-load" --url "$url" --secret "$secret" \
    --api-key loadkey --publish-url "$publish" --connections 100 \
    --channels "${OBSERVER_CHANNEL:-observer}" --publish-rate "${OBSERVER_RATE:-100}" "${observer_phases[@]}" --grace 2s \
    --quiet >"$observer_log" 2>&1 &
observer=$!
if [[ -z "${OBSERVER_ONLY:-}" ]]; then
    sleep 1
    timeout 60 $tool_pin "$bin/ws-realtime-load" --url "$url" --secret "$secret" \
        --api-key loadkey --publish-url "$publish" --connections 1000 --channels lines \
        --publish-rate "$rate" --recover --warmup 3s --offline 2s --duration 5s \
        --bystanders 100 --server-pid "$server" --quiet || true
fi
wait $observer || true
echo "observer (100 connections on ${OBSERVER_CHANNEL:-observer}, publishing ${OBSERVER_RATE:-100} msg/s, window ${OBSERVER_WINDOW:-whole run}):"
grep -E "latency|deliveries|lost" "$observer_log" || cat "$observer_log"
rm -f "$observer_log"
