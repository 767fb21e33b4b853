#!/usr/bin/env bash
# The long Jepsen-style run on three local brokers (issue 16; docs/operations.md,
# "Fault tests"): workloads against every node while faults are injected, then heal,
# check and count. Exit code: 0 clean, 1 if anything acknowledged was lost or anything
# unexpected appeared, 2 on a harness error.
#
#   scripts/jepsen.sh [--duration SECONDS] [--faults kill-leader,kill-follower,stop-leader,
#                     partition-leader,partition-follower] [--workloads definitions,queues]
#                     [--hold SECONDS] [--gap SECONDS] [--seed N]
#
# Partition faults need root and network namespaces; elsewhere they are skipped with the
# reason printed. The workloads are tests/cluster/longrun.py's WORKLOADS: `definitions`
# (metadata changes) and `queues` (tests/cluster/jepsen.py's checker on a three-member
# quorum queue), both by default; faults alternate between the metadata leader and the
# queue's leader.
# BROKER_BIN picks the broker binary (default: target/debug/broker, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${BROKER_BIN:-}" ]; then
  if [ ! -x target/debug/broker ]; then
    echo "== building the broker (debug)"
    cargo build -p broker-server --bin broker
  fi
  BROKER_BIN="$PWD/target/debug/broker"
fi
export BROKER_BIN

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt

exec .venv/bin/python tests/cluster/longrun.py "$@"
