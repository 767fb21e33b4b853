#!/usr/bin/env bash
# What a topology storm costs other clients: the p99 latency of a fixed-rate 1p1c flow
# (broker-bench --rate) alone, then while another connection makes 10,000 durable bindings
# on one exchange and 2,000 durable queue declares and deletes (scripts/topology_storm.py).
#
#   scripts/bench-topology-storm.sh [RATE] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-2000}
SECS=${2:-15}
PORT=${PORT:-5791}
DATA=$(mktemp -d /tmp/bench-storm.XXXXXX)
trap 'kill $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT

cargo build --release -q -p broker-server -p broker-bench
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/pip install -q -r tests/python/requirements.txt; }
target/release/broker --listen "127.0.0.1:$PORT" --http-listen none --data-dir "$DATA" >"$DATA.out" 2>"$DATA.err" &
PID=$!
until grep -q "listening on" "$DATA.out" 2>/dev/null; do sleep 0.05; done

bench() { target/release/broker-bench --addr "127.0.0.1:$PORT" --rate "$RATE" -z "$SECS" | grep -E "latency p50"; }
echo "== 1p1c at $RATE msg/s alone"
bench
echo "== 1p1c at $RATE msg/s during the storm"
.venv/bin/python scripts/topology_storm.py --port "$PORT" &
STORM=$!
bench
wait $STORM
