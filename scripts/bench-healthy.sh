#!/usr/bin/env bash
# Healthy-path benchmark: the resilient client against the raw redis-rs baseline, same binary,
# same lab server, GET/SET of 64-byte values. Each round is one `bench --paired-with` run: the two
# clients take turns every 200 ms within the run (so the machine's noise from one second to the
# next hits both alike), each for about half of SECS. Rounds are separate processes (a run's task
# placement on the runtime's threads moves a client's figures by several percent, for the run).
# Prints throughput and p99 ratios per concurrency (medians of per-round ratios) and checks the
# targets (resilient >= 0.97 x raw throughput, p99 <= 1.05 x raw). Exit 1 if a target is missed.
#
# With TOPOLOGY=cluster, the same on a lab cluster of 3 masters: the resilient client against
# redis-rs's cluster connection (keys spread over every shard).
#
#   scripts/bench-healthy.sh                       # 15 paired runs x 4 s at concurrency 1, 50, 256
#   ROUNDS=9 SECS=10 CONCURRENCY="50" scripts/bench-healthy.sh
#   TOPOLOGY=cluster scripts/bench-healthy.sh      # against redis-rs's cluster connection
#   RUST_LOG=info BENCH_ARGS="--metrics-addr 127.0.0.1:9464" scripts/bench-healthy.sh
#                                                  # with a subscriber at INFO and a Prometheus page
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-15}
SECS=${SECS:-4}
SLICE_MS=${SLICE_MS:-200}
CONCURRENCY=${CONCURRENCY:-"1 50 256"}
MIN_THROUGHPUT_RATIO=0.97
MAX_P99_RATIO=1.05
TOPOLOGY=${TOPOLOGY:-standalone}

case $TOPOLOGY in
  standalone) LAB_ARGS="" target_flag=--url ;;
  cluster) LAB_ARGS="--cluster" target_flag=--cluster ;;
  *) echo "TOPOLOGY must be standalone or cluster" >&2; exit 2 ;;
esac
source scripts/bench-lib.sh
echo "==> lab $TOPOLOGY at $url; $ROUNDS paired runs x $SECS s per concurrency" >&2


results=$(mktemp)
BENCH_TMP=$results
for c in $CONCURRENCY; do
  for ((round = 1; round <= ROUNDS; round++)); do
    # The first client of a pair starts each pair of turns: alternate it between rounds.
    if ((round % 2)); then first=raw second=resilient; else first=resilient second=raw; fi
    json=$("$bin" bench "$target_flag" "$url" --client "$first" --paired-with "$second" \
      --slice-ms "$SLICE_MS" --workload get-set --value-size 64 \
      --concurrency "$c" --duration "$SECS" --json ${BENCH_ARGS:-})
    # One report per client: split the object before each `{"client":`.
    sed 's/{"client":/\n{"client":/g' <<<"$json" | tail -n +2 | while read -r report; do
      client=$(sed -E 's/^\{"client":"([a-z]+)".*/\1/' <<<"$report")
      ops=$(field ops_per_sec "$report")
      p99=$(field p99 "$report")
      errors=$(( $(field failed "$report") + $(field ambiguous "$report") ))
      printf '  c=%-4s round %d  %-9s %10.0f ops/s  p99 %6d us  errors %d\n' "$c" "$round" "$client" "$ops" "$p99" "$errors" >&2
      echo "$c $round $client $ops $p99 $errors" >>"$results"
    done
  done
done

echo
printf '%-11s %12s %15s %7s %11s %16s %7s  %s\n' concurrency "raw ops/s" "resilient ops/s" ratio "raw p99 us" "resilient p99 us" ratio verdict
status=0
for c in $CONCURRENCY; do
  # Ratios are taken per round (the two clients of a round share one run), then the median
  # round is reported, so one noisy round does not decide the verdict.
  line=$(awk -v c="$c" -v tmin="$MIN_THROUGHPUT_RATIO" -v pmax="$MAX_P99_RATIO" "$AWK_MEDIAN"'
    $1 == c { errs += $6 }
    $1 == c && $3 == "raw"       { rops[$2] = $4; rp99[$2] = $5 }
    $1 == c && $3 == "resilient" { sops[$2] = $4; sp99[$2] = $5 }
    END {
      n = 0
      for (r in rops) { n++; ro[n] = rops[r]; so[n] = sops[r]; rp[n] = rp99[r]; sp[n] = sp99[r]
                        tr[n] = sops[r] / rops[r]; pr[n] = sp99[r] / rp99[r] }
      t = median(tr, n); p = median(pr, n)
      ok = (t >= tmin && p <= pmax && errs == 0)
      printf "%-11s %12.0f %15.0f %7.3f %11.0f %16.0f %7.3f  %s\n", c, median(ro, n), median(so, n), t, median(rp, n), median(sp, n), p, ok ? "ok" : "MISSED"
    }' "$results")
  echo "$line"
  [[ $line == *MISSED ]] && status=1
done
rm -f "$results"
echo "($TOPOLOGY; medians over $ROUNDS paired runs of $SECS s, turns of $SLICE_MS ms; ratios per run; targets: throughput ratio >= $MIN_THROUGHPUT_RATIO, p99 ratio <= $MAX_P99_RATIO, no errors)"
exit $status
