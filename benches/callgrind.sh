#!/usr/bin/env bash
# Instructions per delivery of the fan-out hot path (publish to 1 000
# subscribers, drain every output), counted by callgrind: deterministic, so
# it can compare commits on a loaded machine where criterion cannot.
#
#   benches/callgrind.sh            # builds benches/callgrind_fanout.rs
#   benches/callgrind.sh BINARY     # measures an already built copy
#   WORKERS=4 benches/callgrind.sh  # the subscribers spread over 4 cores,
#                                   # each message routed once for all
#
# Runs the driver with 50 and 150 publishes and divides the difference in
# instructions by the 100 000 extra deliveries, so set-up cost cancels.
# PER_TURN (default 1) is the messages per driver turn: 1 is the idle server's
# case (one frame per write), 25 (a multiple that divides both counts) a
# saturated one, where each socket's write carries many messages.
# Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-}"
if [ -z "$bin" ]; then
    exe=$(cargo bench --bench callgrind_fanout --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*callgrind_fanout[^"]*\)".*/\1/p' | tail -1)
    # The target dir may be shared: measure a private copy.
    bin=$(mktemp /tmp/callgrind_fanout.XXXXXX)
    cp "$exe" "$bin"
fi
count() {
    local out
    out=$(mktemp /tmp/callgrind.out.XXXXXX)
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$1" "${PER_TURN:-1}" "${WORKERS:-1}" >/dev/null 2>&1
    sed -n 's/^summary: //p' "$out"
    rm -f "$out"
}
low=$(count 50)
high=$(count 150)
echo "messages per turn: ${PER_TURN:-1}, workers: ${WORKERS:-1}"
echo "instructions: 50 publishes $low, 150 publishes $high"
echo "instructions per delivery: $(( (high - low) / 100000 ))" \
    "($(( (high - low) / 100 )) per publish to 1000 subscribers)"
