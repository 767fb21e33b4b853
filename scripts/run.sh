#!/usr/bin/env bash
# Builds the broker in release mode and runs it on 0.0.0.0:5672 (flags are passed through).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin broker
exec ./target/release/broker "$@"
