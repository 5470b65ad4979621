#!/usr/bin/env bash
# Runs the shared fan-out harness (`run.sh custom`) against a release build of
# ws-realtime, configured like the peers: HTTP publishing only, one token for
# every subscriber, logs at warn.
#
#   benches/harness.sh                     # all scenarios; results in $RESULTS
#   SCENARIOS=idle benches/harness.sh      # any run.sh variable passes through
#
# HARNESS points at the harness folder (default ../shared/bench). Build first:
# cargo build --release --bin ws-realtime; (cd $HARNESS/loadgen && cargo build --release)
set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=${HARNESS:-$HERE/../shared/bench}
BIN=${BIN:-$HERE/target/release/ws-realtime}
PORT=${PORT:-9100}
SECRET=${SECRET:-harness-secret-harness-secret-harness}
KEY=${KEY:-harness-api-key}

[[ -x "$BIN" ]] || { echo "build first: cargo build --release --bin ws-realtime" >&2; exit 2; }
TOKEN=$("$BIN" token --secret "$SECRET" --sub bench --ttl 24h --channels 'ch*')

export PORT
export SERVER_CMD="env RUST_LOG=${SERVER_LOG:-warn} WS_SOURCES=http WS_API_KEY=$KEY WS_AUTH_SECRET=$SECRET WS_BIND_ADDRESS=127.0.0.1:$PORT $BIN"
export WS_URL="ws://127.0.0.1:$PORT/ws?token=$TOKEN"
export PUBLISH_URL="http://127.0.0.1:$PORT/api/publish"
export PUBLISH_HEADERS=$'Content-Type: application/json\nX-API-Key: '"$KEY"
export RESULTS=${RESULTS:-$HERE/target/harness-results}
exec "$HARNESS/run.sh" custom
