#!/usr/bin/env bash
# The management API's paged queue list with many queues (docs/performance.md, "Management
# API: a page of queues among 10,000"): declares N queues on a fresh broker and times
# /api/queues?page=1&page_size=100 (by name), a page filtered by name, a page sorted by
# message count, and the whole list (median of 5 each).
#
#   scripts/bench-api-paging.sh [N]     # BROKER_BIN (default target/release/broker)
#   RABBIT=1 scripts/bench-api-paging.sh [N]   # then the same against the reference RabbitMQ
#                                              # (../shared/scripts/reference-rabbitmq.sh start)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
BIN=${BROKER_BIN:-target/release/broker}
PY=${PYTHON:-.venv/bin/python}
DATA=$(mktemp -d /tmp/bench-api-paging.XXXXXX)
free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PORT=$(free)
HTTP=$(free)
"$BIN" --listen "127.0.0.1:$PORT" --http-listen "127.0.0.1:$HTTP" --data-dir "$DATA" >"$DATA.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DATA" "$DATA.log"' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$HTTP/api/overview" && break; sleep 0.1; done
"$PY" scripts/bench_api_paging.py "$PORT" "http://127.0.0.1:$HTTP" "$N"
if [ "${RABBIT:-0}" = 1 ]; then
  echo "== RabbitMQ (127.0.0.1:5673, management 15673)"
  "$PY" scripts/bench_api_paging.py 5673 "http://127.0.0.1:15673" "$N"
fi
