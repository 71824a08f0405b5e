#!/usr/bin/env bash
# The durability promise, repeated (issue 18: "in 10 of 10 runs each"): runs the durability
# tests against real servers RUNS times (release build) and counts, per test, the runs that
# passed: exactly-once INCR and LPUSH and plain INCR with `--durability replicated` through
# SENTINEL FAILOVER, a 2.5 s SIGSTOP of the Sentinel master, CLUSTER FAILOVER FORCE, a
# graceful CLUSTER FAILOVER and a SIGSTOP of a cluster master (final == acknowledged, every
# acknowledged element once, nothing failed or ambiguous; plain ok <= final <= ok + ambiguous).
# Prints each run's figures. Exit 1 unless every test passed every run.
#
#   scripts/durability-runs.sh           # 10 runs (about 6 minutes)
#   RUNS=3 scripts/durability-runs.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-10}
logs=$(mktemp -d)
echo "==> building (release)" >&2
cargo test --release -q -p resilient-redis --test durability --no-run 2>/dev/null
for ((run = 1; run <= RUNS; run++)); do
  log="$logs/run-$run.log"
  cargo test --release -q -p resilient-redis --test durability -- --nocapture >"$log" 2>&1 || true
  echo "run $run:" >&2
  # The figures each test printed: exactly-once (acked, failed, final) and the list check.
  grep -E '^replicated through' "$log" | sed -E 's/plain: Tally \{ ok: ([0-9]+), failed: ([0-9]+), ambiguous: ([0-9]+),.*plain_final: ([0-9]+),/plain ok \1 failed \2 ambiguous \3 final \4,/' \
    | sed -E 's/ errors: \[[^]]*\]//' | cut -c1-400 | sed 's/^/  /' >&2 || true
  grep -E '^test [a-z_]+ \.\.\. (ok|FAILED)$' "$log" >>"$logs/verdicts" || true
done
echo
status=0
for t in $(sed -E 's/^test ([a-z_]+) .*/\1/' "$logs/verdicts" | sort -u); do
  passed=$(grep -c "^test $t \.\.\. ok$" "$logs/verdicts" || true)
  verdict=ok; ((passed == RUNS)) || { verdict=MISSED; status=1; }
  printf '%-60s %2d of %d  %s\n' "$t" "$passed" "$RUNS" "$verdict"
done
if ((status)); then echo "logs kept in $logs" >&2; else rm -rf "$logs"; fi
exit $status
