#!/usr/bin/env bash
# The fan-out figures through the Kafka source: `ws-realtime dev` (embedded
# Kafka cluster, Kafka source, synthetic feed) pinned to CPU 0, and
# `ws-realtime-load` pinned to CPU 1 producing its timestamped payloads into
# the `lines` topic, which 1 000 subscribers hold. One JSON summary per rate.
#
#   benches/kafka-path.sh                 # rates 100 2000 5000
#   RATES="500" CONNS=1000 benches/kafka-path.sh
#
# The server's CPU figure includes the embedded broker, which runs inside
# the same process.
set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
BIN=$HERE/target/release
RATES=${RATES:-"100 2000 5000"}
CONNS=${CONNS:-1000}
PORT=${PORT:-18080}
OUT=${OUT:-$HERE/target/kafka-path}
mkdir -p "$OUT"
[[ -x $BIN/ws-realtime && -x $BIN/ws-realtime-load ]] || {
    echo "build first: cargo build --release --bin ws-realtime --bin ws-realtime-load" >&2
    exit 2
}
SECRET=ws-realtime-dev-secret-not-for-production

for rate in $RATES; do
    log=$OUT/server-$rate.log
    RUST_LOG=warn WS_BIND_ADDRESS=127.0.0.1:$PORT taskset -c 0 "$BIN/ws-realtime" dev >"$log" 2>&1 &
    server=$!
    brokers=""
    for _ in $(seq 100); do
        brokers=$(sed -n 's/^Embedded Kafka .* on \([0-9.:]*\)$/\1/p' "$log")
        [[ -n $brokers ]] && break
        sleep 0.1
    done
    [[ -n $brokers ]] || { echo "dev did not start; see $log" >&2; kill $server; exit 1; }
    sleep 2
    taskset -c 1 "$BIN/ws-realtime-load" --url "ws://127.0.0.1:$PORT/ws" --secret "$SECRET" \
        --connections "$CONNS" --connect-rate 2000/s --channels lines \
        --publish-via kafka --brokers "$brokers" --topic lines \
        --publish-rate "$rate/s" --payload-bytes 128 --warmup 3s --duration 10s \
        --server-pid "$server" --threads 1 --json --quiet >"$OUT/rate-$rate.json"
    kill "$server"
    wait "$server" 2>/dev/null || true
    echo "rate $rate: $(cat "$OUT/rate-$rate.json")"
done
