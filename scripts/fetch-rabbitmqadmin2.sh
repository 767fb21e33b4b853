#!/usr/bin/env bash
# Puts RabbitMQ's current CLI, rabbitmqadmin v2 (the `rabbitmqadmin` crate), at
# .tools/rabbitmqadmin2/bin/rabbitmqadmin for tests/python/test_rabbitmqadmin2.py.
# The version is pinned so a new release cannot change what the test checks; the install
# is skipped when that version is already there (it compiles: a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
version=2.35.0
root=.tools/rabbitmqadmin2
bin=$root/bin/rabbitmqadmin
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qF " $version"; then
  exit 0
fi
# its default TLS backend links OpenSSL: make sure the headers are there on a fresh machine
if ! pkg-config --exists openssl 2>/dev/null; then
  { apt-get update -qq && apt-get install -y -qq libssl-dev pkg-config; } >/dev/null 2>&1 || true
fi
# built for the test only: no LTO and little optimisation (the crate's release profile
# asks for fat LTO and one codegen unit, which take minutes on two cores)
CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
  cargo install rabbitmqadmin --version "=$version" --locked --root "$root" --force --quiet
"$bin" --version
