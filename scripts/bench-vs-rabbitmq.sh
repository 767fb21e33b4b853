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
#   ONLY=stream scripts/bench-vs-rabbitmq.sh
#       # the stream group (issue 15), not part of the default list: confirmed publishing
#       # into a stream, 10 consumers reading a 1M stream from first, a seek by timestamp
#       # into a STREAM_MESSAGES-message stream (default 10,000,000 x 1 KiB, ~11 GB per
#       # broker: one broker at a time, deleted after) and the broker's peak RSS with 10
#       # consumers at different offsets in it; its own table between the STREAM-BENCH
#       # markers. RabbitMQ is not restarted here (others use it)
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

run() { # broker-label addr pid name flags  (RUN_DURATION overrides DURATION)
  local who=$1 addr=$2 pid=$3 name=$4 flags=$5
  # shellcheck disable=SC2086
  if ! "$BENCH" --addr "$addr" --broker-pid "$pid" --duration "${RUN_DURATION:-$DURATION}" --json \
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

# --- streams (ONLY=stream) ---
STREAM_MESSAGES=${STREAM_MESSAGES:-10000000}
SQ=bench-$$-0   # the stream the bench declares (prefix bench-$$, queue 0)
STREAM_READ="--queue-type stream --size 1024 --prefetch 1000 --multiple-ack 500"
# a 10M x 1 KiB stream is ~11 GB: make sure the disk holds it (one broker at a time)
stream_disk_check() {
  local need=$((STREAM_MESSAGES * 1200 / 1048576)) free
  free=$(df -Pm . /tmp | awk 'NR > 1 {print $4}' | sort -n | head -1)
  if [ "$free" -lt $((need + 4096)) ]; then
    echo "need ~$need MiB free for a $STREAM_MESSAGES-message stream, have $free MiB" >&2
    exit 1
  fi
}
# fill, seek by timestamp (to 80% of the fill), 10 readers at different offsets; one
# broker's run. The stream is deleted by the last step (and by the trap after a failure)
stream_big() { # who addr pid
  local who=$1 addr=$2 pid=$3 n=$STREAM_MESSAGES ts name
  name="stream $((n / 1000000))M x 1 KiB"
  RUN_DURATION=900 run "$who" "$addr" "$pid" "$name: fill (confirms, window 1000)" \
    "$STREAM_READ --prefill $n --consumers 0 --keep"
  # the fill's wall-clock start and end, from its JSON line
  ts=$(python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print((r["prefill_started_unix_ms"] + (r["prefill_ended_unix_ms"] - r["prefill_started_unix_ms"]) * 8 // 10) // 1000)' "$OUT" 2>/dev/null || echo 0)
  RUN_DURATION=300 run "$who" "$addr" "$pid" "$name: seek by timestamp to 80%, read 1M" \
    "$STREAM_READ --no-publish --consumers 1 --stream-offset timestamp:$ts --count 1000000 --keep"
  RUN_DURATION=${STREAM_RSS_SECONDS:-30} run "$who" "$addr" "$pid" "$name: 10 consumers at offsets 0, 10%, ..., 90%" \
    "$STREAM_READ --no-publish --consumers 10 --stream-offset 0 --offset-step $((n / 10))"
}
if [[ "${ONLY:-}" == stream* ]]; then
  rabbit_drop_stream() { rabbitmqctl -n ref@localhost delete_queue "$SQ" >/dev/null 2>&1 || true; }
  trap 'kill $OURS_PID 2>/dev/null || true; rm -rf "$DATA" "$BEFORE_DATA"; rabbit_drop_stream' EXIT
  for s in "stream confirmed publish 1 KiB (window 100)|--queue-type stream --size 1024 --confirm 100 -y 0" \
           "stream 1M x 1 KiB, 10 consumers from first|$STREAM_READ --prefill 1000000 --consumers 10"; do
    name=${s%%|*}; flags=${s#*|}
    echo "== $name"
    for _ in $(seq "$ROUNDS"); do
      quiet_rabbit
      fresh_ours
      RUN_DURATION=$([[ $name == *1M* ]] && echo 600 || echo "$DURATION") run ours "127.0.0.1:$PORT" "$OURS_PID" "$name" "$flags"
      kill "$OURS_PID" 2>/dev/null || true; wait "$OURS_PID" 2>/dev/null || true; OURS_PID=
      RUN_DURATION=$([[ $name == *1M* ]] && echo 600 || echo "$DURATION") run rabbitmq "$OTHER_ADDR" "$RABBIT_PID" "$name" "$flags"
    done
  done
  echo "== stream $STREAM_MESSAGES x 1 KiB (fill, seek, 10 readers), one round each"
  stream_disk_check
  quiet_rabbit
  fresh_ours
  stream_big ours "127.0.0.1:$PORT" "$OURS_PID"
  kill "$OURS_PID" 2>/dev/null || true; wait "$OURS_PID" 2>/dev/null || true; OURS_PID=
  rm -rf "$DATA"; mkdir -p "$DATA"
  stream_disk_check
  quiet_rabbit
  stream_big rabbitmq "$OTHER_ADDR" "$RABBIT_PID"
  rabbit_drop_stream
fi

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
    if unit == "ms":
        return f"{v:,.1f} ms"
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

def stream_rows(name, o, r):
    g = lambda k: (lambda x: x.get(k))
    if "fill" in name:
        row(name, "publish msg/s", med(o, g("prefill_publish_rate")), med(r, g("prefill_publish_rate")))
        row(name, "broker peak RSS", med(o, g("broker_peak_rss")), med(r, g("broker_peak_rss")), "MiB", False)
    elif "seek" in name:
        row(name, "time to first delivery", med(o, g("first_delivery_ms")), med(r, g("first_delivery_ms")), "ms", False)
        row(name, "read msg/s after it", med(o, g("read_rate_after_first")), med(r, g("read_rate_after_first")))
        for who, rs in (("ours", o), ("RabbitMQ", r)):
            offs = [x["first_offsets"][0] for x in rs if not x.get("failed") and x.get("first_offsets")]
            if offs:
                lines.append(f"| | first offset delivered ({who}) | {offs[0]:,} | | |")
    elif "publish" in name:
        row(name, "published msg/s", med(o, g("publish_rate")), med(r, g("publish_rate")))
        row(name, "confirm latency p99", med(o, lambda x: x["confirm_latency_us"]["p99"]), med(r, lambda x: x["confirm_latency_us"]["p99"]), "us", False)
    else:
        if "from first" in name:
            row(name, "fill msg/s (confirms, window 1000)", med(o, g("prefill_publish_rate")), med(r, g("prefill_publish_rate")))
        row(name, "read msg/s (all consumers)", med(o, g("consume_rate")), med(r, g("consume_rate")))
        row(name, "broker peak RSS", med(o, g("broker_peak_rss")), med(r, g("broker_peak_rss")), "MiB", False)

for name in order:
    o, r = rows[name]["ours"], rows[name]["rabbitmq"]
    if name.startswith("stream"):
        stream_rows(name, o, r)
    elif "backlog" in name:
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
    if gen is not None and "idle" not in name and "seek" not in name:
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
elif all(n.startswith("stream") for n in order):
    marker, heading = "STREAM-BENCH", "Streams against RabbitMQ (issue 15)"
    header = [
        f"Run {stamp}, commit {commit}, {cores} × {cpu}, {mem}; RabbitMQ {rver} (Debian, default",
        f"settings) beside ours; {rounds} rounds of {duration} s for the first two scenarios, one round of the big stream; medians.",
        "Command: `ONLY=stream scripts/bench-vs-rabbitmq.sh` (broker-bench, raw AMQP, both brokers on loopback).",
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
