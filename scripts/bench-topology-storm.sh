#!/usr/bin/env bash
# What a topology storm costs other clients: the p99 latency of a fixed-rate 1p1c flow
# (broker-bench --rate) alone, then while another connection makes 10,000 durable bindings
# on one exchange and 2,000 durable queue declares and deletes (scripts/topology_storm.py).
#
#   scripts/bench-topology-storm.sh [RATE] [SECONDS]          # our broker (release build)
#   RABBIT=1 scripts/bench-topology-storm.sh [RATE] [SECONDS] # also the reference RabbitMQ
#   BIN=path/to/broker scripts/bench-topology-storm.sh        # another build of ours
#   STORM_ARGS="--transient --rate 500" ...                  # options of topology_storm.py
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-2000}
SECS=${2:-15}
PORT=${PORT:-5791}
DATA=$(mktemp -d /tmp/bench-storm.XXXXXX)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$DATA"' EXIT

cargo build --release -q -p broker-server -p broker-bench
BIN=${BIN:-target/release/broker}
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/pip install -q -r tests/python/requirements.txt; }

run() { # name, port
  echo "== $1: 1p1c at $RATE msg/s alone"
  target/release/broker-bench --addr "127.0.0.1:$2" --rate "$RATE" -z "$SECS" | grep -E "latency p50"
  echo "== $1: 1p1c at $RATE msg/s during the storm"
  .venv/bin/python scripts/topology_storm.py --port "$2" ${STORM_ARGS:-} &
  local storm=$!
  target/release/broker-bench --addr "127.0.0.1:$2" --rate "$RATE" -z "$SECS" | grep -E "latency p50"
  wait $storm
}

"$BIN" --listen "127.0.0.1:$PORT" --http-listen none --data-dir "$DATA" >"$DATA.out" 2>"$DATA.err" &
PID=$!
until grep -q "listening on" "$DATA.out" 2>/dev/null; do sleep 0.05; done
run ours "$PORT"
kill $PID; wait $PID 2>/dev/null || true; PID=

if [ "${RABBIT:-0}" = 1 ]; then
  ../shared/scripts/reference-rabbitmq.sh start >/dev/null
  run rabbitmq 5673
fi
