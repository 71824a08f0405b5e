#!/usr/bin/env bash
# Cost of exactly-once writes: the resilient client's plain INCR (or LPUSH) against the same
# workload through idempotency tokens (`bench --exactly-once`), same binary, same lab server,
# alternating round after round. Prints throughput, p50 and p99 and the throughput ratio
# (target: exactly-once >= 0.5 x plain). Exit 1 if the target is missed.
#
#   scripts/bench-exactly-once.sh                           # 3 rounds x 5 s, 50 tasks, INCR and LPUSH
#   ROUNDS=5 SECS=3 WORKLOADS=incr scripts/bench-exactly-once.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
TASKS=${TASKS:-50}
WORKLOADS=${WORKLOADS:-"incr lpush"}
MIN_RATIO=0.5

source scripts/bench-lib.sh
echo "==> lab server at $url; $ROUNDS rounds x $SECS s, $TASKS tasks" >&2


results=$(mktemp)
BENCH_TMP=$results
for w in $WORKLOADS; do
  for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order="plain once"; else order="once plain"; fi
    for mode in $order; do
      flag=(); [[ $mode == once ]] && flag=(--exactly-once)
      json=$("$bin" bench --url "$url" --workload "$w" --key "bench:xo:$w" "${flag[@]}" \
        --concurrency "$TASKS" --duration "$SECS" --json)
      ops=$(field ops_per_sec "$json"); p50=$(field p50 "$json"); p99=$(field p99 "$json")
      errors=$(( $(field failed "$json") + $(field ambiguous "$json") ))
      printf '  %-6s round %d  %-5s %10.0f ops/s  p50 %6d us  p99 %6d us  errors %d\n' "$w" "$round" "$mode" "$ops" "$p50" "$p99" "$errors" >&2
      echo "$w $round $mode $ops $p50 $p99 $errors" >>"$results"
    done
  done
done

echo
printf '%-8s %12s %17s %7s %14s %14s  %s\n' workload "plain ops/s" "exactly-once ops/s" ratio "p50 plain/xo" "p99 plain/xo" verdict
status=0
for w in $WORKLOADS; do
  line=$(awk -v w="$w" -v min="$MIN_RATIO" "$AWK_MEDIAN"'
    $1 == w { errs += $7 }
    $1 == w && $3 == "plain" { po[$2] = $4; p5[$2] = $5; p9[$2] = $6 }
    $1 == w && $3 == "once"  { xo[$2] = $4; x5[$2] = $5; x9[$2] = $6 }
    END {
      n = 0
      for (r in po) { n++; a[n] = po[r]; b[n] = xo[r]; c[n] = p5[r]; d[n] = x5[r]; e[n] = p9[r]; f[n] = x9[r]; t[n] = xo[r] / po[r] }
      ratio = median(t, n)
      printf "%-8s %12.0f %17.0f %7.3f %6d/%-7d %6d/%-7d  %s\n", w, median(a, n), median(b, n), ratio, median(c, n), median(d, n), median(e, n), median(f, n), (ratio >= min && errs == 0) ? "ok" : "MISSED"
    }' "$results")
  echo "$line"
  [[ $line == *MISSED ]] && status=1
done
echo "(medians over $ROUNDS rounds, ratio per round; target: exactly-once throughput >= $MIN_RATIO x plain, no errors)"
exit $status
