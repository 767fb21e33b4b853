#!/usr/bin/env bash
# Runs every test: unit and property tests, the lapin end-to-end suite, and the pika suite.
# Sets up what it needs (a Python venv with pika and pytest) on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# the test binary carries the fault-injection feature (POST /api/fault-injection, for
# tests/python/test_supervision.py); it is off in every other build and refused in release
FEATURES=(--features broker-server/fault-injection)

echo "== layers (the server's floors, no circles)"
python3 scripts/check-layers.py

echo "== build"
cargo build --workspace --all-targets "${FEATURES[@]}"

echo "== cargo tests (unit, property, lapin end-to-end)"
cargo test --workspace "${FEATURES[@]}" -- --test-threads "${TEST_THREADS:-4}"

echo "== python venv"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt

echo "== headless Chromium for tests/python/test_ui.py (Debian's chromium and chromium-driver;"
echo "   the UI tests are skipped, with the reason, where they cannot be installed)"
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; } \
      || echo "warning: chromium could not be installed: the UI tests will be skipped"
  else
    echo "warning: no chromium and no apt-get as root: the UI tests will be skipped"
  fi
fi

echo "== amqplib (Node) for tests/python/test_amqplib.py: npm ci from the committed lockfile,"
echo "   skipped while node_modules matches it (its hash is kept in node_modules/.lock-sha256)"
if command -v npm >/dev/null; then
  lock_hash=$(sha256sum tests/node/package-lock.json | cut -d' ' -f1)
  if [ "$(cat tests/node/node_modules/.lock-sha256 2>/dev/null)" != "$lock_hash" ]; then
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error) && echo "$lock_hash" > tests/node/node_modules/.lock-sha256
  fi
else
  echo "npm unavailable: the amqplib tests will be skipped"
fi

echo "== rabbitmqadmin (RabbitMQ's own management CLI, for the API compatibility test)"
scripts/fetch-rabbitmqadmin.sh || echo "rabbitmqadmin unavailable: its test will be skipped"

echo "== rabbitmqadmin v2 (RabbitMQ's current CLI, pinned; compiled once, ~6 min on 2 cores, then reused)"
scripts/fetch-rabbitmqadmin2.sh || echo "rabbitmqadmin v2 unavailable: its test will be skipped"

echo "== pika tests"
BROKER_BIN="$PWD/target/debug/broker" BROKER_CLI_BIN="$PWD/target/debug/broker-cli" .venv/bin/python -m pytest -q tests/python

echo "== soak (mixed workload, kill -9 at random moments, lost/unexpected must be 0; the long run: scripts/soak.py --duration 300 --kills 20)"
BROKER_BIN="$PWD/target/debug/broker" .venv/bin/python scripts/soak.py --duration "${SOAK_SECONDS:-60}" --kills "${SOAK_KILLS:-4}"
