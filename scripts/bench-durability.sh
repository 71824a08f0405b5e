#!/usr/bin/env bash
# Cost of durable acknowledgements: the same workload with `--durability fast` and
# `--durability replicated` (every write confirmed by both replicas through WAIT, group-committed
# per connection), same binary, same lab master with 2 replicas, alternating round after round.
# Prints throughput, p50 and p99 per mode and the throughput ratio replicated / fast (medians of
# per-round ratios). The target (issue 18): exactly-once replicated >= 0.5 x exactly-once fast
# at 50 tasks, no errors. Exit 1 if it is missed. Plain INCR is reported for information.
#
#   scripts/bench-durability.sh                     # 5 rounds x 4 s, 50 tasks, exactly-once INCR and plain INCR
#   ROUNDS=3 SECS=3 TASKS=1 scripts/bench-durability.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
SECS=${SECS:-4}
TASKS=${TASKS:-50}
MIN_RATIO=0.5

LAB_ARGS="--replicas 2"
source scripts/bench-lib.sh
echo "==> lab master with 2 replicas at $url; $ROUNDS rounds x $SECS s, $TASKS tasks" >&2

results=$(mktemp)
BENCH_TMP=$results
for kind in exactly-once plain; do
  flag=(); [[ $kind == exactly-once ]] && flag=(--exactly-once)
  for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order="fast replicated"; else order="replicated fast"; fi
    for mode in $order; do
      json=$("$bin" bench --url "$url" --workload incr --key "bench:durable:$kind" "${flag[@]}" \
        --durability "$mode" --concurrency "$TASKS" --duration "$SECS" --json)
      ops=$(field ops_per_sec "$json"); p50=$(field p50 "$json"); p99=$(field p99 "$json")
      errors=$(( $(field failed "$json") + $(field ambiguous "$json") ))
      unconfirmed=$(field unconfirmed "$json")
      printf '  %-12s round %d  %-10s %10.0f ops/s  p50 %6d us  p99 %6d us  errors %d  unconfirmed %d\n' \
        "$kind" "$round" "$mode" "$ops" "$p50" "$p99" "$errors" "$unconfirmed" >&2
      echo "$kind $round $mode $ops $p50 $p99 $errors" >>"$results"
    done
  done
done

echo
printf '%-12s %12s %17s %7s %16s %16s  %s\n' workload "fast ops/s" "replicated ops/s" ratio "p50 fast/repl" "p99 fast/repl" verdict
status=0
for kind in exactly-once plain; do
  line=$(awk -v w="$kind" -v min="$MIN_RATIO" "$AWK_MEDIAN"'
    $1 == w { errs += $7 }
    $1 == w && $3 == "fast"       { fo[$2] = $4; f5[$2] = $5; f9[$2] = $6 }
    $1 == w && $3 == "replicated" { ro[$2] = $4; r5[$2] = $5; r9[$2] = $6 }
    END {
      n = 0
      for (r in fo) { n++; a[n] = fo[r]; b[n] = ro[r]; c[n] = f5[r]; d[n] = r5[r]; e[n] = f9[r]; f[n] = r9[r]; t[n] = ro[r] / fo[r] }
      ratio = median(t, n)
      verdict = w == "exactly-once" ? ((ratio >= min && errs == 0) ? "ok" : "MISSED") : (errs == 0 ? "(no target)" : "ERRORS")
      printf "%-12s %12.0f %17.0f %7.3f %7d/%-8d %7d/%-8d  %s\n", w, median(a, n), median(b, n), ratio, median(c, n), median(d, n), median(e, n), median(f, n), verdict
    }' "$results")
  echo "$line"
  [[ $line == *MISSED || $line == *ERRORS ]] && status=1
done
echo "(medians over $ROUNDS rounds, ratio per round; target: exactly-once replicated >= $MIN_RATIO x fast, no errors)"
exit $status
