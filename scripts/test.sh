#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (lab tests start real Redis servers).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null || ! command -v redis-sentinel >/dev/null; then
  echo "error: redis-server and redis-sentinel are needed by the tests." >&2
  echo "       install them with: sudo apt-get install redis-server redis-sentinel redis-tools" >&2
  exit 2
fi
if ! command -v openssl >/dev/null; then
  echo "error: openssl is needed by the TLS tests (they generate a throwaway CA)." >&2
  echo "       install it with: sudo apt-get install openssl" >&2
  exit 2
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "==> cargo test"
# The examples crate has no tests; clippy above has checked its examples.
cargo test --workspace --all-features --exclude resilient-redis-examples
