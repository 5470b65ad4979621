#!/usr/bin/env bash
# Deliveries per second per server core with WS_WORKERS workers (issue 18):
# on a host of N cores the server gets N-K cores and N-K workers, and K
# load-generator processes (`ws-realtime-load`) get the other K cores, each
# on its own 127.0.0.x source addresses with its own channels, publishing
# through POST /api/publish. Bounded: every phase of every process has a
# deadline, and the server is stopped (by its PID) at the end.
#
#   benches/scale.sh N K                # e.g. 16 4: 12 workers, 4 load processes
#   WORKERS=2 SERVER_CPUS=0,1 LOAD_CPUS=0,1 benches/scale.sh 2 1
#                                       # a 2-core host: server and load share
#
# Knobs (environment): WORKERS (default N-K), SERVER_CPUS / LOAD_CPUS
# (taskset lists; default the first N-K cores / the last K), CONNECTIONS
# per load process (1000), CHANNELS per load process (10), RATE publishes
# per second per load process (1000), DURATION (10s), WARMUP (2s), PORT
# (9180), BIN and LOAD (prebuilt binaries; default: cargo build --release).
#
# Prints one line per load process and the total: deliveries/s, lost, p99,
# and the server's CPU seconds, then deliveries/s per server core (total
# over N-K) and per CPU-second the server used (the figure that does not
# depend on how busy the other cores were).
set -euo pipefail
cd "$(dirname "$0")/.."

cores="${1:?usage: benches/scale.sh N K}"
loaders="${2:?usage: benches/scale.sh N K}"
server_cores=$((cores - loaders))
[ "$server_cores" -ge 1 ] || { echo "N-K must be at least 1" >&2; exit 2; }
workers="${WORKERS:-$server_cores}"
server_cpus="${SERVER_CPUS:-0-$((server_cores - 1))}"
load_cpus="${LOAD_CPUS:-$server_cores-$((cores - 1))}"
connections="${CONNECTIONS:-1000}"
channels="${CHANNELS:-10}"
rate="${RATE:-1000}"
duration="${DURATION:-10s}"
warmup="${WARMUP:-2s}"
port="${PORT:-9180}"
secret="scale-bench-secret-scale-bench-secret"
api_key="scale-bench-key"

work=$(mktemp -d /tmp/scale.XXXXXX)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${BIN:-}" ] || [ -z "${LOAD:-}" ]; then
    cargo build --release --bin ws-realtime --bin ws-realtime-load >&2
    target="${CARGO_TARGET_DIR:-target}"
    BIN="${BIN:-$target/release/ws-realtime}"
    LOAD="${LOAD:-$target/release/ws-realtime-load}"
fi
# The target dir may be shared: run private copies.
cp "$BIN" "$work/ws-realtime"
cp "$LOAD" "$work/ws-realtime-load"

WS_WORKERS="$workers" WS_BIND_ADDRESS="127.0.0.1:$port" WS_SOURCES=http \
    WS_API_KEY="$api_key" WS_AUTH_SECRET="$secret" RUST_LOG=warn \
    taskset -c "$server_cpus" "$work/ws-realtime" serve >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
    sleep 0.1
done
cpu_secs() {
    # utime + stime of the server process (all its threads), in seconds.
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$server_pid/stat"
}
other_cpu() {
    # Busy jiffies of the whole machine, to report the noise of others.
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat
}

echo "scale: $cores cores, server $workers workers on CPUs $server_cpus, $loaders load processes on CPUs $load_cpus"
cpu_before=$(cpu_secs)
busy_before=$(other_cpu)
started=$(date +%s.%N)
for i in $(seq 0 $((loaders - 1))); do
    names=$(seq -s, -f "g${i}c%g" 0 $((channels - 1)))
    # 127.0.(i+1).1-20: each process its own source addresses.
    ips="127.0.$((i + 1)).1-127.0.$((i + 1)).20"
    taskset -c "$load_cpus" "$work/ws-realtime-load" \
        --url "ws://127.0.0.1:$port/ws" --connections "$connections" \
        --connect-rate 2000/s --channels "$names" --secret "$secret" \
        --publish-url "http://127.0.0.1:$port/api/publish" --api-key "$api_key" \
        --publish-rate "$rate/s" --payload-bytes 128 \
        --warmup "$warmup" --duration "$duration" --source-ips "$ips" \
        --server-pid "$server_pid" --json >"$work/load$i.json" 2>"$work/load$i.err" &
done
wait_status=0
for job in $(jobs -p); do
    [ "$job" = "$server_pid" ] && continue
    wait "$job" || wait_status=$?
done
ended=$(date +%s.%N)
cpu_after=$(cpu_secs)
busy_after=$(other_cpu)
[ "$wait_status" -eq 0 ] || { echo "a load process failed ($wait_status):" >&2; cat "$work"/load*.err >&2; }

python3 - "$work" "$loaders" "$workers" "$cpu_before" "$cpu_after" \
    "$busy_before" "$busy_after" "$started" "$ended" "$(getconf CLK_TCK)" "$(nproc)" <<'EOF'
import json, sys
# Per server core = per worker: the server has one core per worker.
work, loaders, server_cores = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cpu = float(sys.argv[5]) - float(sys.argv[4])
busy = (float(sys.argv[7]) - float(sys.argv[6])) / float(sys.argv[10])
wall = float(sys.argv[9]) - float(sys.argv[8])
total = 0.0
load_cpu = 0.0
for i in range(loaders):
    r = json.load(open(f"{work}/load{i}.json"))
    d, l = r.get("deliveries") or {}, r.get("latency_us") or {}
    per_sec = d.get("per_sec", 0.0)
    total += per_sec
    load_cpu += (r.get("tool_cpu_util") or 0.0) * wall
    print(f"load {i}: {per_sec:,.0f} deliveries/s, lost {d.get('lost')}, "
          f"p99 {l.get('p99', 0) / 1000:.2f} ms, connections {r['connections'].get('ok')}")
other = max(0.0, busy - cpu - load_cpu)
print(f"total: {total:,.0f} deliveries/s; server CPU {cpu:.1f} s over {wall:.1f} s "
      f"({cpu / wall:.2f} cores busy); machine busy {busy / wall:.2f} of {sys.argv[11]} cores, "
      f"other CPU (neither server nor load) ~{other / wall:.2f} cores")
print(f"deliveries/s per server core: {total / server_cores:,.0f}")
# Server CPU inside the measured window (the load processes' windows
# coincide: they start together and connect at the same rate).
r0 = json.load(open(f"{work}/load0.json"))
window_cpu = (r0.get("server") or {}).get("cpu_secs") or 0.0
window = r0.get("window_secs") or 0.0
if window_cpu and total:
    print(f"server CPU per delivery in the window: {window_cpu * 1e9 / (total * window):.0f} ns "
          f"({window_cpu / window:.2f} cores busy)")
EOF
