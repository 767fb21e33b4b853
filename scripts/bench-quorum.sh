#!/usr/bin/env bash
# Confirmed 1 KiB persistent publishes to a quorum queue (issue 16, docs/performance.md
# "Cluster: quorum queues against RabbitMQ"): our broker as a three-node cluster on this
# machine (release build, the nodes on 127.0.0.1 with their own ports and data dirs, the
# clients on the first node, which declares and so leads the queue), our broker as a
# single node (a quorum queue of one member, and a durable classic queue for the cost of
# replication), and with RABBIT=1 the reference RabbitMQ's quorum queue on one node.
# Each scenario runs ROUNDS times, alternating brokers; the median publish rate is printed.
#
#   scripts/bench-quorum.sh [SECONDS] [ROUNDS]            # ours only
#   RABBIT=1 scripts/bench-quorum.sh [SECONDS] [ROUNDS]   # also the reference RabbitMQ 3.10
#   CONFIRM=1000 scripts/bench-quorum.sh ...               # the publishers' confirm window (100)
#   BENCH_ARGS="--producers 4 --consumers 4" ...           # other flows (default 1p1c)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${2:-3}
FLOW=${BENCH_ARGS:---producers 1 --consumers 1}
CONFIRM=${CONFIRM:-100}
BASE=${PORT:-5810}
DIR=$(mktemp -d /tmp/bench-quorum.XXXXXX)
PIDS=()
stop_all() { # and wait, so the next broker can bind the same ports
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; PIDS=()
}
trap 'stop_all; rm -rf "$DIR"' EXIT

cargo build --release -q -p broker-server -p broker-bench
BIN=${BIN:-target/release/broker}
BENCH=target/release/broker-bench
head -c 32 /dev/urandom | base64 > "$DIR/secret" && chmod 600 "$DIR/secret"

# node i (1-based): AMQP BASE+i, HTTP BASE+10+i, cluster link BASE+20+i
start_node() { # i, cluster(0|1)
  local i=$1 peers=() j
  local a=("$BIN" --node-name "bench-$i@localhost" --data-dir "$DIR/n$i-$RANDOM"
           --listen "127.0.0.1:$((BASE + i))" --http-listen "127.0.0.1:$((BASE + 10 + i))")
  if [ "$2" = 1 ]; then
    for j in 1 2 3; do [ "$j" = "$i" ] || peers+=("bench-$j@localhost@127.0.0.1:$((BASE + 20 + j))"); done
    a+=(--cluster-listen "127.0.0.1:$((BASE + 20 + i))" --cluster-peers "$(IFS=,; echo "${peers[*]}")"
        --cluster-secret-file "$DIR/secret")
  fi
  "${a[@]}" >"$DIR/n$i.out" 2>"$DIR/n$i.err" &
  PIDS+=($!)
}

wait_amqp() { # port: until the node answers an AMQP header (in a subshell: an exec
  # redirection there cannot touch this shell's descriptors)
  for _ in $(seq 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'AMQP\0\0\x09\x01' >&3 &&
        timeout 1 head -c 4 <&3 | grep -q .) 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "node on port $1 did not start" >&2; exit 2
}

bench() { # label, port, extra args...
  local label=$1 port=$2; shift 2
  # shellcheck disable=SC2086
  "$BENCH" --addr "127.0.0.1:$port" $FLOW -s 1024 --persistent --confirm "$CONFIRM" -z "$SECS" --json \
    --label "$label" "$@" | tee -a "$DIR/results.jsonl" >/dev/null
}

: > "$DIR/results.jsonl"
for r in $(seq "$ROUNDS"); do
  echo "== round $r: three-node cluster" >&2
  for i in 1 2 3; do start_node "$i" 1; done
  for i in 1 2 3; do wait_amqp $((BASE + i)); done
  bench "ours: quorum, 3 nodes" $((BASE + 1)) --queue-type quorum
  stop_all
  echo "== round $r: single node" >&2
  start_node 1 0; wait_amqp $((BASE + 1))
  bench "ours: quorum, 1 node" $((BASE + 1)) --queue-type quorum
  bench "ours: classic durable, 1 node" $((BASE + 1))
  stop_all
  if [ "${RABBIT:-0}" = 1 ]; then
    echo "== round $r: RabbitMQ" >&2
    ../shared/scripts/reference-rabbitmq.sh start >/dev/null
    bench "rabbitmq: quorum, 1 node" 5673 --queue-type quorum
  fi
done

python3 - "$DIR/results.jsonl" <<'EOF'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs.setdefault(r["label"], []).append(r)
print(f"{'scenario':34} {'publish msg/s (median)':>24} {'confirm p50/p99 µs':>20}  runs")
for label, rs in runs.items():
    rate = statistics.median(r["publish_rate"] for r in rs)
    c = sorted(rs, key=lambda r: r["publish_rate"])[len(rs) // 2]["confirm_latency_us"]
    rates = ", ".join(f"{r['publish_rate']:.0f}" for r in rs)
    print(f"{label:34} {rate:>24.0f} {c['p50']:>9.0f} / {c['p99']:<9.0f}  {rates}")
EOF
