#!/usr/bin/env bash
# The durability promise, repeated (issue 18: "in 10 of 10 runs each"): runs the durability
# tests against real servers RUNS times (release build) and counts, per test, the runs that
# passed: exactly-once INCR and LPUSH and plain INCR with `--durability replicated` through
# SENTINEL FAILOVER, a 2.5 s SIGSTOP of the Sentinel master, CLUSTER FAILOVER FORCE, a
# graceful CLUSTER FAILOVER and a SIGSTOP of a cluster master (final == acknowledged, every
# acknowledged element once, nothing failed or ambiguous; plain ok <= final <= ok + ambiguous),
# and a managed service's failover behind one hostname (tests/managed.rs, `durable_*`).
# Prints each run's figures. Exit 1 unless every test passed every run.
#
#   scripts/durability-runs.sh           # 10 runs (about 8 minutes)
#   RUNS=3 scripts/durability-runs.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-10}
logs=$(mktemp -d)
echo "==> building (release)" >&2
cargo test --release -q -p resilient-redis --test durability --test managed --no-run 2>/dev/null
# Each test binary with the filter that picks its durability tests.
suites=("durability" "managed durable")
list() { cargo test --release -q -p resilient-redis --test "$1" -- --list "${@:2}" 2>/dev/null \
  | sed -nE 's/^([a-z_]+): test$/\1/p'; }
tests=$( (list durability; list managed | grep '^durable') )
ignored=$( (list durability --ignored; list managed --ignored | grep '^durable') || true)
declare -A passed
for t in $tests; do passed[$t]=0; done
for ((run = 1; run <= RUNS; run++)); do
  log="$logs/run-$run.log"
  : >"$log"
  for suite in "${suites[@]}"; do
    read -r binary filter <<<"$suite"
    cargo test --release -q -p resilient-redis --test "$binary" -- ${filter:+"$filter"} --nocapture >>"$log" 2>&1 || true
  done
  echo "run $run:" >&2
  # The figures each test printed (they may follow another test's name on its line).
  grep -oE '(replicated through [^:]+: Run|durable behind one hostname:) .*' "$log" \
    | sed -E 's/plain: Tally \{ ok: ([0-9]+), failed: ([0-9]+), ambiguous: ([0-9]+),.*plain_final: ([0-9]+),/plain ok \1 failed \2 ambiguous \3 final \4,/' \
    | cut -c1-400 | sed 's/^/  /' >&2 || true
  # Output of parallel tests interleaves: a test passed when the run ended and the failures
  # list (printed after every test ended) does not name it.
  if (($(grep -cE '^test result: (ok|FAILED)\.' "$log") != ${#suites[@]})); then
    echo "  the run did not finish: see $log" >&2
    continue
  fi
  failed=$(sed -n '/^failures:$/,/^test result/p' "$log" | sed -nE 's/^    ([a-z_]+)$/\1/p')
  for t in $tests; do
    if grep -qxF "$t" <<<"$ignored"; then continue; fi
    if grep -qxF "$t" <<<"$failed"; then echo "  FAILED: $t (log $log)" >&2; else passed[$t]=$((passed[$t] + 1)); fi
  done
done
echo
status=0
for t in $tests; do
  if grep -qxF "$t" <<<"$ignored"; then continue; fi
  verdict=ok; ((passed[$t] == RUNS)) || { verdict=MISSED; status=1; }
  printf '%-60s %2d of %d  %s\n' "$t" "${passed[$t]}" "$RUNS" "$verdict"
done
if ((status)); then echo "logs kept in $logs" >&2; else rm -rf "$logs"; fi
exit $status
