#!/usr/bin/env bash
# POST /api/publish -> Kafka (the embedded cluster of a `ws-realtime dev`
# process) -> one `ws-realtime` replica with WS_PUBLISH_VIA=kafka -> its 100
# subscribers, at RATES publishes/s; then /api/publish/batch throughput
# (benches/publish-batch.py). Build first: cargo build --release --bin
# ws-realtime --bin ws-realtime-load.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$HERE/target/release}; DEV=18392; PORT=18393; OUT=${OUT:-$HERE/target/publish-path}
mkdir -p "$OUT"
SECRET=ws-realtime-dev-secret-not-for-production
RUST_LOG=warn WS_BIND_ADDRESS=127.0.0.1:$DEV timeout 300 $BIN/ws-realtime dev >$OUT/dev-pub.log 2>&1 &
dev=$!
brokers=""
for _ in $(seq 100); do
  brokers=$(sed -n 's/^Embedded Kafka .* on \([0-9.:]*\)$/\1/p' $OUT/dev-pub.log); [[ -n $brokers ]] && break; sleep 0.1
done
RUST_LOG=warn WS_BIND_ADDRESS=127.0.0.1:$PORT WS_AUTH_SECRET=$SECRET WS_API_KEY=k WS_SOURCES=kafka \
  WS_KAFKA_BROKERS=$brokers WS_KAFKA_TOPICS=lines timeout 280 $BIN/ws-realtime >$OUT/serve.log 2>&1 &
serve=$!
for _ in $(seq 100); do curl -fs http://127.0.0.1:$PORT/ready >/dev/null && break; sleep 0.2; done
curl -s http://127.0.0.1:$PORT/ready; echo
for rate in ${RATES:-100 2000}; do
  timeout 100 $BIN/ws-realtime-load --url "ws://127.0.0.1:$PORT/ws" --secret "$SECRET" \
    --connections 100 --connect-rate 2000/s --channels 10 \
    --publish-url http://127.0.0.1:$PORT/api/publish --api-key k \
    --publish-rate "$rate/s" --payload-bytes 128 --warmup 3s --duration 10s \
    --server-pid "$serve" --threads 1 --json --quiet > $OUT/publish-$rate.json || true
  echo "rate $rate: $(python3 -c "import json; d=json.load(open('$OUT/publish-$rate.json')); print(d['publish'], d['deliveries'], d['latency_us'])")"
done
for b in 100 1000; do
  timeout 60 python3 "$HERE/benches/publish-batch.py" 127.0.0.1 $PORT k $b 4 10
done
kill $serve $dev; wait 2>/dev/null || true
