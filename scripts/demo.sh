#!/usr/bin/env bash
# Runs the demo: a local Redis topology (Sentinel: 1 master, 2 replicas, 3 sentinels), the
# resilient and the raw client under load, SIGKILL of the master, what each client saw.
# Installs redis-server and redis-sentinel when missing (apt-get, with sudo when not root).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=""
for binary in redis-server redis-sentinel; do
  command -v "$binary" >/dev/null || missing="$missing $binary"
done
if [ -n "$missing" ]; then
  pkgs="redis-server redis-sentinel redis-tools"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "missing:$missing; installing $pkgs with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
    echo "missing:$missing; installing $pkgs with sudo apt-get (you may be asked for your password)"
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs
  else
    echo "error: missing:$missing; install them (Debian/Ubuntu: apt-get install $pkgs)" >&2
    exit 2
  fi
  # The Debian packages start system services on the default ports; the demo does not need them.
  command -v systemctl >/dev/null && systemctl stop redis-server redis-sentinel 2>/dev/null || true
fi

exec cargo run --release --quiet -p resilient-redis-cli -- demo "$@"
