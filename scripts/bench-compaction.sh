#!/usr/bin/env bash
# Disk use under a long persistent stream: publishers with confirms and consumers with
# manual acks move 1 KiB persistent messages through durable queues for SECONDS; every
# 0.5 s the data dir's size (du) and the queues' depth (management API) are sampled.
# Prints the peak disk use, the peak live data (depth x (size + per-record overhead))
# and their ratio, against the target of issue 12: disk <= 3 x live + one segment.
#
#   scripts/bench-compaction.sh [SECONDS] [SIZE] [PRODUCERS] [CONSUMERS]
#
# The full target run (10M messages through a queue that never holds more than 100k) is
# SECONDS long enough for 10M at the measured rate; a short run shows the shape.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${1:-60}
SIZE=${2:-1024}
PRODUCERS=${3:-2}
CONSUMERS=${4:-2}
PORT=${PORT:-5791}
HTTP=${HTTP:-15791}
DATA=$(mktemp -d /tmp/bench-compaction.XXXXXX)
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  [ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null || true
  rm -rf "$DATA" "$DATA.samples" "$DATA.out" "$DATA.err"
}
trap cleanup EXIT

cargo build --release -q -p broker-server -p broker-bench
"target/release/broker" --listen "127.0.0.1:$PORT" --http-listen "127.0.0.1:$HTTP" \
  --data-dir "$DATA" >"$DATA.out" 2>"$DATA.err" &
PID=$!
until grep -q "listening on 127.0.0.1:$PORT" "$DATA.out" 2>/dev/null; do sleep 0.05; done

sample() {
  while true; do
    local disk depth
    disk=$(du -sb "$DATA" 2>/dev/null | cut -f1)
    depth=$(curl -s -u guest:guest "http://127.0.0.1:$HTTP/api/queues" |
      python3 -c 'import json,sys; print(sum(q.get("messages",0) for q in json.load(sys.stdin)))' 2>/dev/null || echo 0)
    echo "$disk $depth" >>"$DATA.samples"
    sleep 0.5
  done
}
sample &
SAMPLER=$!

target/release/broker-bench --addr "127.0.0.1:$PORT" --persistent --confirm 1000 \
  -x "$PRODUCERS" -y "$CONSUMERS" --queues 1 -s "$SIZE" -z "$SECONDS_RUN" \
  --prefetch 500 --broker-pid "$PID"
kill "$SAMPLER" 2>/dev/null || true
SAMPLER=

python3 - "$DATA.samples" "$SIZE" <<'PY'
import sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
size = int(sys.argv[2])
# a record: the message (properties, body) plus envelope and header, ~60 bytes
per = size + 60
seg = 16 << 20
peak_disk = max(d for d, _ in rows)
peak_depth = max(q for _, q in rows)
worst = max((d / (3 * q * per + seg)) for d, q in rows)
print(f"samples {len(rows)}; peak disk {peak_disk / 2**20:.1f} MiB; peak depth {peak_depth} "
      f"(~{peak_depth * per / 2**20:.1f} MiB live)")
print(f"worst disk / (3 x live + one segment) over the run: {worst:.2f} (target <= 1)")
PY
