#!/usr/bin/env bash
# Two broker builds, alternately, on one long prefill-and-drain (default 1,000,000 × 1 KiB,
# prefetch 500, multiple ack every 250): a fresh broker process and data dir per run.
# The 200k backlog row of bench-vs-rabbitmq.sh drains in ~0.2 s, too short to compare
# two builds of ours; this one drains for about a second. Prints one line per run
# ("A|B publish/s drain/s") and the medians.
#
#   scripts/bench-drain-ab.sh target/release/broker /path/to/old/broker [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1; B=$2; N=${3:-10}; PREFILL=${PREFILL:-1000000}; PORT=${PORT:-5799}
cargo build --release -q -p broker-bench
OUT=$(mktemp /tmp/bench-drain-ab.XXXXXX)
for _ in $(seq "$N"); do
  for who in A B; do
    bin=${!who}; d=$(mktemp -d /tmp/bench-drain-data.XXXXXX)
    "$bin" --listen "127.0.0.1:$PORT" --http-listen none --data-dir "$d" --log-level warn >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
    r=$(target/release/broker-bench --addr "127.0.0.1:$PORT" --broker-pid "$pid" --duration 5 --json \
          --prefill "$PREFILL" --size 1024 --prefetch 500 --multiple-ack 250 \
        | python3 -c 'import json,sys; r=json.load(sys.stdin); print(int(r["prefill_publish_rate"]), int(r["prefill_drain_rate"]))')
    echo "$who $r" | tee -a "$OUT"
    kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$d"
  done
done
python3 - "$OUT" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
for who in "AB":
    p = [int(r[1]) for r in rows if r[0] == who]
    d = [int(r[2]) for r in rows if r[0] == who]
    print(f"{who}: publish median {statistics.median(p):,.0f}/s, drain median {statistics.median(d):,.0f}/s")
PY
rm -f "$OUT"
