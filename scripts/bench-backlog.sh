#!/usr/bin/env bash
# Durable backlog benchmark: publish COUNT persistent messages of SIZE bytes to a durable
# queue with publisher confirms, restart the broker, time its recovery, then drain.
# Reports rates, the broker's peak RSS and the recovery time.
#
#   scripts/bench-backlog.sh [COUNT] [SIZE]        # our broker (release build)
#   RABBIT=1 scripts/bench-backlog.sh [COUNT] [SIZE]  # also the reference RabbitMQ
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-1000000}
SIZE=${2:-1024}
PORT=${PORT:-5790}
DATA=$(mktemp -d /tmp/bench-backlog.XXXXXX)
trap 'pkill -f "broker --listen 127.0.0.1:$PORT" 2>/dev/null || true; rm -rf "$DATA"' EXIT

cargo build --release -q -p broker-server
BIN=target/release/broker

hwm() { awk '/VmHWM/ {print int($2/1024) " MiB"}' "/proc/$1/status"; }

start() {
  "$BIN" --listen "127.0.0.1:$PORT" --data-dir "$DATA" --log-level info >"$DATA.out" 2>"$DATA.err" &
  local pid=$!
  local t0=$(date +%s.%N)
  until grep -q "listening on" "$DATA.out" 2>/dev/null; do sleep 0.02; done
  local t1=$(date +%s.%N)
  STARTED_IN=$(echo "$t1 - $t0" | bc)
  PID=$pid
}

echo "== ours: $COUNT x $SIZE B persistent, durable queue, confirms"
start
python3 scripts/backlog.py publish --port "$PORT" --count "$COUNT" --size "$SIZE"
echo "peak RSS while publishing: $(hwm "$PID")"
echo "on disk: $(du -sh "$DATA" | cut -f1)"
kill -TERM "$PID"; wait "$PID" || true
rm -f "$DATA.out"
start
echo "restart: accepting connections after ${STARTED_IN} s; $(grep -o 'recovered durable state.*' "$DATA.err")"
echo "peak RSS after recovery: $(hwm "$PID")"
python3 scripts/backlog.py drain --port "$PORT" --count "$COUNT"
echo "peak RSS over recovery and drain: $(hwm "$PID")"
kill -TERM "$PID"; wait "$PID" || true

if [ "${RABBIT:-0}" = 1 ]; then
  ../shared/scripts/reference-rabbitmq.sh start >/dev/null
  RPID=$(pgrep -f "beam.smp" | head -1)
  echo "== RabbitMQ (127.0.0.1:5673, pid $RPID): same run"
  python3 scripts/backlog.py publish --port 5673 --queue "backlog-$$" --count "$COUNT" --size "$SIZE"
  echo "RabbitMQ RSS after publishing: $(awk '/VmRSS/ {print int($2/1024) " MiB"}' /proc/$RPID/status)"
  python3 scripts/backlog.py drain --port 5673 --queue "backlog-$$" --count "$COUNT"
  echo "RabbitMQ peak RSS (whole life of the node): $(hwm "$RPID")"
fi
