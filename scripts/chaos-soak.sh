#!/usr/bin/env bash
# Chaos soak: `resilient-redis chaos` with random seeds over every topology, one after another,
# for as long as you give it; keeps the report of every failing seed.
#
#   scripts/chaos-soak.sh [HOURS]          # default 2 hours
#
# Environment: DURATION (each run, default 60s), TOPOLOGIES (default "standalone sentinel
# cluster", taken in turn), PROFILES (sets of chaos flags separated by ";", one per round of
# topologies, taken in turn; default "; --exactly-once; --durability replicated --exactly-once",
# where standalone, which has no replica, drops --durability and --read-from), EXTRA (flags for
# every run), OUT (default chaos-soak/). Writes OUT/runs.tsv (one line per run: seed,
# topology, verdict, operations, faults, anomalies, server losses, seconds, flags),
# OUT/reports/TOPOLOGY-SEED.json (every run's report: faults by kind, recovery times),
# OUT/failing/TOPOLOGY-SEED.json and .log (the run's output and the client's log at RUST_LOG,
# default resilient_redis=debug,redis=warn: a few hundred lines) for every run that did not
# pass, and prints the totals. Exit status 1 when any run failed.
# Reproduce a failing run with: resilient-redis chaos --topology TOPOLOGY --seed SEED FLAGS
set -euo pipefail
cd "$(dirname "$0")/.."

hours=${1:-2}
out=${OUT:-chaos-soak}
topologies=(${TOPOLOGIES:-standalone sentinel cluster})
IFS=';' read -r -a profiles <<<"${PROFILES-; --exactly-once; --durability replicated --exactly-once}"
(( ${#profiles[@]} > 0 )) || profiles=("")
mkdir -p "$out/failing" "$out/reports"
echo "==> building (release)" >&2
cargo build --release --quiet -p resilient-redis-cli
bin="${CARGO_TARGET_DIR:-target}/release/resilient-redis"

end=$(( $(date +%s) + $(awk -v h="$hours" 'BEGIN { printf "%d", h * 3600 }') ))
runs=0 failed=0 ops=0 faults=0 anomalies=0 losses=0 i=0
# Counts the entries of a JSON array field of the (pretty-printed) report: the lines that open
# one of its objects at the array's indentation.
count_entries() { awk -v f="\"$1\": [" '
  index($0, f) { if (index($0, "[]")) exit; inside = 1; depth = match($0, /[^ ]/); next }
  inside && match($0, /[^ ]/) == depth && /^ *\]/ { inside = 0 }
  inside && match($0, /[^ ]/) == depth + 2 && /^ *\{/ { n++ }
  END { print n + 0 }' <<<"$2"; }
num() { sed -nE "s/^  \"$1\": ([0-9]+),?$/\1/p" <<<"$2" | head -1; }

while (( $(date +%s) < end )); do
  topology=${topologies[$(( i % ${#topologies[@]} ))]}
  profile=${profiles[$(( i / ${#topologies[@]} % ${#profiles[@]} ))]}
  i=$(( i + 1 ))
  if [[ $topology == standalone ]]; then
    profile=$(sed -E 's/--(durability|read-from)[ =][^ ]+//g' <<<"$profile")
  fi
  flags=$(echo $profile ${EXTRA:-})
  seed=$(od -An -N6 -tu8 /dev/urandom | tr -d ' ')
  started=$(date +%s)
  set +e
  # The client's own log (reconnections, slot-map changes, failed calls, replica counts) goes
  # with the report of a failing run: one that does not reproduce still says what happened.
  report=$(RUST_LOG=${RUST_LOG:-resilient_redis=debug,redis=warn} NO_COLOR=1 \
    "$bin" chaos --topology "$topology" --duration "${DURATION:-60s}" --seed "$seed" \
    --json $flags 2>"$out/last.log")
  status=$?
  set -e
  took=$(( $(date +%s) - started ))
  printf '%s\n' "$report" >"$out/reports/$topology-$seed.json"
  verdict=$(sed -nE 's/^  "verdict": "([a-z]+)".*/\1/p' <<<"$report")
  n_ops=$(num operations "$report"); n_ops=${n_ops:-0}
  n_faults=$(count_entries schedule "$report")
  n_anomalies=$(count_entries anomalies "$report")
  n_losses=$(count_entries server_losses "$report")
  runs=$(( runs + 1 )) ops=$(( ops + n_ops )) faults=$(( faults + n_faults ))
  anomalies=$(( anomalies + n_anomalies )) losses=$(( losses + n_losses ))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$seed" "$topology" "${verdict:-error($status)}" \
    "$n_ops" "$n_faults" "$n_anomalies" "$n_losses" "$took" "$flags" >>"$out/runs.tsv"
  if [[ $status -ne 0 || $verdict != pass ]]; then
    failed=$(( failed + 1 ))
    printf '%s\n' "$report" >"$out/failing/$topology-$seed.json"
    cp "$out/last.log" "$out/failing/$topology-$seed.log"
    echo "FAIL $topology seed $seed $flags (exit $status): $out/failing/$topology-$seed.json" >&2
  else
    echo "ok   $topology seed $seed $flags: $n_ops operations, $n_faults faults, $n_losses server losses" >&2
  fi
done
echo "soak: $runs runs over $hours h, $failed failing; $faults faults, $ops operations checked, $anomalies anomalies, $losses server-loss events (runs in $out/runs.tsv)"
[[ $failed -eq 0 ]]
