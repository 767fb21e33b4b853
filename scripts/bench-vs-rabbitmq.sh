#!/usr/bin/env bash
# Our broker against the reference RabbitMQ on this machine, same tool, same run.
# Builds in release mode, starts our broker on a fresh data dir and the reference RabbitMQ
# (../shared/scripts/reference-rabbitmq.sh), runs each scenario against both alternately
# (ours, RabbitMQ, ours, RabbitMQ: a noisy machine averages out), and writes the medians
# and ratios into docs/performance.md between the BENCH markers, with date, machine and
# commit.
#
#   scripts/bench-vs-rabbitmq.sh            # every scenario, 10 s each
#   DURATION=3 ROUNDS=1 scripts/bench-vs-rabbitmq.sh   # quicker
#   ONLY=backlog ROUNDS=5 scripts/bench-vs-rabbitmq.sh   # the matching scenarios only
#       (the table then holds only those; rerun the full list for the record)
#   BEFORE_BIN=/path/to/old/broker scripts/bench-vs-rabbitmq.sh
#       # this build against an older build of ours instead of RabbitMQ (a refactoring's
#       # before and after, same machine, same run); the table goes between the
#       # BEFORE-AFTER markers of docs/performance.md
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
PORT=${PORT:-5791}
RABBIT_PORT=${REF_PORT:-5673}
OUT=$(mktemp /tmp/bench-vs-rabbitmq.XXXXXX.jsonl)
DATA=$(mktemp -d /tmp/bench-data.XXXXXX)

cargo build --release -q -p broker-server -p broker-bench
BENCH=target/release/broker-bench
# OURS_BIN=/path/to/broker measures another build as "ours" (bisecting a regression)
OURS_BIN=${OURS_BIN:-target/release/broker}

BEFORE_BIN=${BEFORE_BIN:-}
BEFORE_PORT=$((PORT + 1))
BEFORE_DATA=$(mktemp -d /tmp/bench-data-before.XXXXXX)
OURS_PID=
# every run of ours starts on a fresh process and data dir, so peak RSS is that run's
fresh_ours() {
  if [ -n "$OURS_PID" ]; then kill "$OURS_PID" 2>/dev/null || true; wait "$OURS_PID" 2>/dev/null || true; fi
  rm -rf "$DATA"; mkdir -p "$DATA"
  # a broker left over from something else on this port would be measured instead
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "port $PORT is already in use: stop what listens there or set PORT" >&2
    exit 1
  fi
  "$OURS_BIN" --listen "127.0.0.1:$PORT" --http-listen none --data-dir "$DATA" --log-level warn >/dev/null 2>&1 &
  OURS_PID=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
  if ! kill -0 "$OURS_PID" 2>/dev/null; then
    echo "our broker did not start" >&2
    exit 1
  fi
}
# the older build of ours, fresh for every run (BEFORE_BIN mode)
BEFORE_PID=
fresh_before() {
  if [ -n "$BEFORE_PID" ]; then kill "$BEFORE_PID" 2>/dev/null || true; wait "$BEFORE_PID" 2>/dev/null || true; fi
  rm -rf "$BEFORE_DATA"; mkdir -p "$BEFORE_DATA"
  "$BEFORE_BIN" --listen "127.0.0.1:$BEFORE_PORT" --http-listen none --data-dir "$BEFORE_DATA" --log-level warn >/dev/null 2>&1 &
  BEFORE_PID=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$BEFORE_PORT") 2>/dev/null && break; sleep 0.05; done
  RABBIT_PID=$BEFORE_PID
}
# the node's own pid (rabbitmqctl runs short-lived beam processes of its own)
rabbit_pid() {
  rabbitmqctl -n ref@localhost eval 'os:getpid().' 2>/dev/null | tr -dc '0-9'
}
# RabbitMQ restarts only for the scenarios that measure memory (it takes seconds)
fresh_rabbit() {
  ../shared/scripts/reference-rabbitmq.sh stop >/dev/null 2>&1 || true
  ../shared/scripts/reference-rabbitmq.sh start >/dev/null
  RABBIT_PID=$(rabbit_pid)
}
# waits (up to 20 s) until RabbitMQ is idle: after a start or a heavy run it goes on
# working (boot, garbage collection, closing thousands of connections) and would take
# CPU from the next run of ours on this 2-core machine
quiet_rabbit() {
  local pid=$RABBIT_PID a b
  [ -r "/proc/$pid/stat" ] || return 0
  for _ in $(seq 40); do
    a=$(awk '{print $14+$15}' "/proc/$pid/stat")
    sleep 0.5
    b=$(awk '{print $14+$15}' "/proc/$pid/stat")
    # clock ticks in 0.5 s: under 5 (10% of a core) is idle
    [ $((b - a)) -lt 5 ] && return 0
  done
}
trap 'kill $OURS_PID $BEFORE_PID 2>/dev/null || true; rm -rf "$DATA" "$BEFORE_DATA"' EXIT
if [ -z "$BEFORE_BIN" ]; then
  ../shared/scripts/reference-rabbitmq.sh start >/dev/null
  RABBIT_PID=$(rabbit_pid)
  OTHER_ADDR="127.0.0.1:$RABBIT_PORT"
else
  OTHER_ADDR="127.0.0.1:$BEFORE_PORT"
fi

# name | flags
SCENARIOS=(
  "1p1c 16 B auto-ack|--size 16 --auto-ack"
  "1p1c 1 KiB manual ack prefetch 100|--size 1024 --prefetch 100 --multiple-ack 50"
  "4p4c 4 queues 1 KiB|-x 4 -y 4 --queues 4 --size 1024 --prefetch 100 --multiple-ack 50"
  "confirms (window 100) persistent 1 KiB durable|--size 1024 --confirm 100 --persistent --prefetch 100 --multiple-ack 50"
  "fanout 1 to 50 queues 1 KiB (deliveries/s)|--fanout 50 --size 1024 --auto-ack"
  "backlog 200k x 1 KiB publish then drain|--prefill 200000 --size 1024 --prefetch 500 --multiple-ack 250"
  "fixed 2000 msg/s 1 KiB latency|--rate 2000 --size 1024 --auto-ack"
  "10000 idle connections|--idle-connections 10000"
)

run() { # broker-label addr pid name flags
  local who=$1 addr=$2 pid=$3 name=$4 flags=$5
  # shellcheck disable=SC2086
  if ! "$BENCH" --addr "$addr" --broker-pid "$pid" --duration "$DURATION" --json \
      --label "$who|$name" --prefix "bench-$$" $flags >>"$OUT" 2>/tmp/bench-err.txt; then
    echo "  $who: failed: $(tail -1 /tmp/bench-err.txt)"
    echo "{\"label\": \"$who|$name\", \"failed\": true}" >>"$OUT"
  fi
}

for s in "${SCENARIOS[@]}"; do
  name=${s%%|*}
  flags=${s#*|}
  # ONLY=backlog (a substring of the name) runs just the matching scenarios
  if [ -n "${ONLY:-}" ] && [[ "$name" != *"$ONLY"* ]]; then continue; fi
  echo "== $name"
  for _ in $(seq "$ROUNDS"); do
    if [ -z "$BEFORE_BIN" ]; then quiet_rabbit; fi
    fresh_ours
    run ours "127.0.0.1:$PORT" "$OURS_PID" "$name" "$flags"
    kill "$OURS_PID" 2>/dev/null || true; wait "$OURS_PID" 2>/dev/null || true; OURS_PID=
    if [ -n "$BEFORE_BIN" ]; then
      fresh_before
    else
      case "$name" in backlog*|*idle*) fresh_rabbit ;; esac
    fi
    run rabbitmq "$OTHER_ADDR" "$RABBIT_PID" "$name" "$flags"
    if [ -n "$BEFORE_BIN" ]; then kill "$BEFORE_PID" 2>/dev/null || true; wait "$BEFORE_PID" 2>/dev/null || true; BEFORE_PID=; fi
  done
done

COMMIT=$(git rev-parse --short HEAD)
CPU=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs)
MEM=$(free -g | awk '/Mem:/ {print $2 " GiB"}')
RVER=$(rabbitmqctl version 2>/dev/null || echo "3.10")
python3 - "$OUT" "$COMMIT" "$CPU" "$(nproc)" "$MEM" "$RVER" "$DURATION" "$ROUNDS" "$BEFORE_BIN" "${BEFORE_COMMIT:-}" <<'EOF'
import json, statistics, sys, datetime, re, pathlib
path, commit, cpu, cores, mem, rver, duration, rounds, before_bin, before_commit = sys.argv[1:]
versus = "before" if before_bin else "RabbitMQ"
rows = {}
order = []
for line in open(path):
    r = json.loads(line)
    who, name = r["label"].split("|", 1)
    if name not in rows:
        rows[name] = {"ours": [], "rabbitmq": []}
        order.append(name)
    rows[name][who].append(r)

def med(rs, f):
    vals = [f(r) for r in rs if not r.get("failed") and f(r) is not None]
    return statistics.median(vals) if vals else None

def fmt(v, unit=""):
    if v is None:
        return "failed"
    if unit == "MiB":
        return f"{v / 1048576:,.0f} MiB"
    if unit == "KB":
        return f"{v / 1024:,.1f} KB"
    if unit == "us":
        return f"{v:,.0f} µs"
    return f"{v:,.0f}"

lines = [f"| scenario | metric | ours | {versus} | ratio |", "|---|---|---|---|---|"]
def row(name, metric, o, r, unit="", higher_better=True):
    ratio = "—"
    if o and r:
        digits = 2 if before_bin else 1
        if higher_better:
            ratio = f"{o / r:.{digits}f}×"
        elif o <= r:
            ratio = f"{r / o:.{digits}f}× lower"
        else:
            ratio = f"{o / r:.{digits}f}× higher"
    lines.append(f"| {name} | {metric} | {fmt(o, unit)} | {fmt(r, unit)} | {ratio} |")

for name in order:
    o, r = rows[name]["ours"], rows[name]["rabbitmq"]
    if "backlog" in name:
        row(name, "publish msg/s", med(o, lambda x: x.get("prefill_publish_rate")), med(r, lambda x: x.get("prefill_publish_rate")))
        row(name, "drain msg/s", med(o, lambda x: x.get("prefill_drain_rate")), med(r, lambda x: x.get("prefill_drain_rate")))
        row(name, "broker peak RSS", med(o, lambda x: x.get("broker_peak_rss")), med(r, lambda x: x.get("broker_peak_rss")), "MiB", False)
    elif "idle" in name:
        row(name, "connections held", med(o, lambda x: x.get("idle_connections")), med(r, lambda x: x.get("idle_connections")))
        row(name, "RSS per connection", med(o, lambda x: x.get("rss_per_connection")), med(r, lambda x: x.get("rss_per_connection")), "KB", False)
    elif "fixed" in name:
        row(name, "latency p50", med(o, lambda x: x["latency_us"]["p50"]), med(r, lambda x: x["latency_us"]["p50"]), "us", False)
        row(name, "latency p99", med(o, lambda x: x["latency_us"]["p99"]), med(r, lambda x: x["latency_us"]["p99"]), "us", False)
        row(name, "latency p99.9", med(o, lambda x: x["latency_us"]["p999"]), med(r, lambda x: x["latency_us"]["p999"]), "us", False)
    else:
        row(name, "consumed msg/s", med(o, lambda x: x.get("consume_rate")), med(r, lambda x: x.get("consume_rate")))
        row(name, "published msg/s", med(o, lambda x: x.get("publish_rate")), med(r, lambda x: x.get("publish_rate")))
        if "confirms" in name:
            row(name, "confirm latency p99", med(o, lambda x: x["confirm_latency_us"]["p99"]), med(r, lambda x: x["confirm_latency_us"]["p99"]), "us", False)
    gen = med(o + r, lambda x: x.get("generator_cpu_us_per_msg"))
    if gen is not None and "idle" not in name:
        lines.append(f"| | generator CPU per message | {gen:.2f} µs | | |")

stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
if before_bin:
    marker, heading = "BEFORE-AFTER", "Before and after a refactoring"
    header = [
        f"Run {stamp}, {cores} × {cpu}, {mem}: this build (commit {commit}) against the build of",
        f"commit {before_commit or before_bin}; {rounds} rounds of {duration} s per scenario, alternating, medians.",
        "Ratio = ours / before for rates, and lower/higher for memory and latency.",
        "Command: `BEFORE_BIN=<old broker> scripts/bench-vs-rabbitmq.sh`.",
    ]
else:
    marker, heading = "BENCH", "Against RabbitMQ: every scenario"
    header = [
        f"Run {stamp}, commit {commit}, {cores} × {cpu}, {mem}; RabbitMQ {rver} (Debian, default",
        f"settings) beside ours; {rounds} rounds of {duration} s per scenario, alternating, medians.",
        "Command: `scripts/bench-vs-rabbitmq.sh` (broker-bench, raw AMQP, both brokers on loopback).",
    ]
begin, end = f"<!-- {marker}:BEGIN -->", f"<!-- {marker}:END -->"
block = "\n".join([begin, *header, "", *lines, end])
doc = pathlib.Path("docs/performance.md")
text = doc.read_text()
if begin in text:
    text = re.sub(re.escape(begin) + ".*" + re.escape(end), lambda _: block, text, flags=re.S)
else:
    text += f"\n## {heading}\n\n" + block + "\n"
doc.write_text(text)
print(block)
EOF
