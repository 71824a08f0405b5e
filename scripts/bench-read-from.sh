#!/usr/bin/env bash
# Replica reads on a healthy cluster: `bench --workload get` (GETs of 64-byte values over 10,000
# keys) with `--read-from replica-preferred` against `--read-from master`, on a lab cluster of 3
# masters with 1 replica each. Each round runs the two modes as separate processes, one after the
# other (the order alternates between rounds); ratios are taken per round and the median round
# is reported. Targets (issue 13): at least 95 % of the reads served by replicas (the client's
# count, `reads_by_role`), throughput >= 0.97 x reads from the masters, no errors.
#
#   scripts/bench-read-from.sh
#   ROUNDS=9 SECS=5 CONCURRENCY="50 256" scripts/bench-read-from.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-9}
SECS=${SECS:-3}
CONCURRENCY=${CONCURRENCY:-"50 256"}
MIN_THROUGHPUT_RATIO=0.97
MIN_REPLICA_SHARE=0.95

LAB_ARGS="--cluster --replicas 1"
source scripts/bench-lib.sh
echo "==> lab cluster (3 masters, 1 replica each) at $url; $ROUNDS rounds x $SECS s per mode" >&2

results=$(mktemp)
BENCH_TMP=$results
for c in $CONCURRENCY; do
  for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then modes="master replica-preferred"; else modes="replica-preferred master"; fi
    for mode in $modes; do
      json=$("$bin" bench --cluster "$url" --read-from "$mode" --workload get --keys 10000 \
        --value-size 64 --concurrency "$c" --duration "$SECS" --json)
      ops=$(field ops_per_sec "$json")
      p99=$(field p99 "$json")
      errors=$(( $(field failed "$json") + $(field ambiguous "$json") ))
      replica=$(sed -E 's/.*"reads_by_role":\{"master":[0-9]+,"replica":([0-9]+)\}.*/\1/' <<<"$json")
      master=$(sed -E 's/.*"reads_by_role":\{"master":([0-9]+),.*/\1/' <<<"$json")
      printf '  c=%-4s round %d  %-17s %10.0f ops/s  p99 %6d us  reads: master %d replica %d  errors %d\n' \
        "$c" "$round" "$mode" "$ops" "$p99" "$master" "$replica" "$errors" >&2
      echo "$c $round $mode $ops $p99 $errors $master $replica" >>"$results"
    done
  done
done

echo
printf '%-11s %14s %16s %7s %15s  %s\n' concurrency "master ops/s" "replica ops/s" ratio "replica share" verdict
status=0
for c in $CONCURRENCY; do
  line=$(awk -v c="$c" -v tmin="$MIN_THROUGHPUT_RATIO" -v smin="$MIN_REPLICA_SHARE" "$AWK_MEDIAN"'
    $1 == c { errs += $6 }
    $1 == c && $3 == "master"            { mops[$2] = $4 }
    $1 == c && $3 == "replica-preferred" { rops[$2] = $4; share[$2] = $8 / ($7 + $8 > 0 ? $7 + $8 : 1) }
    END {
      n = 0
      for (r in mops) { n++; mo[n] = mops[r]; ro[n] = rops[r]; tr[n] = rops[r] / mops[r]; sh[n] = share[r] }
      t = median(tr, n); s = median(sh, n)
      ok = (t >= tmin && s >= smin && errs == 0)
      printf "%-11s %14.0f %16.0f %7.3f %14.1f%%  %s\n", c, median(mo, n), median(ro, n), t, 100 * s, ok ? "ok" : "MISSED"
    }' "$results")
  echo "$line"
  [[ $line == *MISSED ]] && status=1
done
rm -f "$results"
echo "(cluster 3+3; medians over $ROUNDS rounds of $SECS s per mode; targets: throughput ratio >= $MIN_THROUGHPUT_RATIO, replica share >= $MIN_REPLICA_SHARE, no errors)"
exit $status
