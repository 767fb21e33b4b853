#!/usr/bin/env bash
# Puts RabbitMQ's own rabbitmqadmin (a single Python script shipped in Debian's
# rabbitmq-server package) at .venv/bin/rabbitmqadmin, for the compatibility test of the
# management API. Takes the script out of the .deb without installing RabbitMQ or Erlang.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.venv/bin/rabbitmqadmin
[ -x "$dest" ] && exit 0
if command -v rabbitmqadmin >/dev/null 2>&1; then
  cp "$(command -v rabbitmqadmin)" "$dest"
  chmod +x "$dest"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(
  cd "$tmp"
  apt-get download rabbitmq-server >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get download rabbitmq-server >/dev/null
  }
  dpkg-deb -x rabbitmq-server_*.deb x
)
script=$(find "$tmp/x" -path '*/cli/rabbitmqadmin' -o -name rabbitmqadmin -path '*/bin/*' | head -1)
if [ -z "$script" ]; then
  echo "rabbitmqadmin not found in the rabbitmq-server package" >&2
  exit 1
fi
cp "$script" "$dest"
chmod +x "$dest"
