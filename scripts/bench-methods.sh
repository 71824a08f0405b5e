#!/usr/bin/env bash
# The healthy path measured the two other ways issue #14 asks for, next to bench-healthy.sh's
# paired runs (where both clients take turns inside one process):
#
#  (b) separate processes: `bench --client raw` and `bench --client resilient` alternate, each in
#      its own process on the default runtime, PAIRS pairs of SECS s per concurrency (the first
#      of a pair alternates). Throughput and p99 ratios are medians of per-pair ratios; CPU per
#      call is `perf stat` task-clock divided by the calls the run made (median per pair).
#  (c) pinned: the lab redis-server on CPU 0, every bench process on CPU 1 with one tokio worker
#      (TOKIO_WORKER_THREADS=1), one connection, 64 B SET/GET alternating over 10,000 keys
#      (filled by a first run), REPS repetitions of PINNED_SECS s with the two clients
#      interleaved in each; the same ratios.
#
# Informational: prints one table per method and exits 0 (the targets are #14's: throughput
# >= 1.0x and p99 <= 1.0x at 50 and 256 callers, >= 0.97x at 1, CPU per call <= 1.0x).
#
#   scripts/bench-methods.sh                          # both methods at 1, 50 and 256 callers
#   METHODS=c REPS=9 CONCURRENCY=50 scripts/bench-methods.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${PAIRS:-9}
SECS=${SECS:-3}
REPS=${REPS:-5}
PINNED_SECS=${PINNED_SECS:-5}
CONCURRENCY=${CONCURRENCY:-"1 50 256"}
METHODS=${METHODS:-"b c"}
source scripts/bench-lib.sh
results=$(mktemp)
BENCH_TMP=$results

# One bench run of `client` at concurrency `c` for `secs` under `perf stat` (when it works):
# appends "method c round client ops/s p99 cpu_ns_per_call" to the results.
run() {
  local method=$1 c=$2 round=$3 client=$4 secs=$5
  shift 5
  local perf_out json cpu_ms ops
  perf_out=$(mktemp)
  if perf stat -x, -e task-clock -o "$perf_out" -- true 2>/dev/null; then
    json=$("$@" perf stat -x, -e task-clock -o "$perf_out" -- "$bin" bench --url "$url" \
      --client "$client" --workload get-set --value-size 64 --keys 10000 \
      --concurrency "$c" --duration "$secs" --json)
    cpu_ms=$(awk -F, '$3 == "task-clock" { print $1 }' "$perf_out")
  else
    json=$("$@" "$bin" bench --url "$url" --client "$client" --workload get-set \
      --value-size 64 --keys 10000 --concurrency "$c" --duration "$secs" --json)
    cpu_ms=0
  fi
  rm -f "$perf_out"
  ops=$(field ops "$json")
  local per_call
  per_call=$(awk -v ms="$cpu_ms" -v n="$ops" 'BEGIN { printf "%.0f", (n > 0 ? ms * 1e6 / n : 0) }')
  printf '  (%s) c=%-4s round %d  %-9s %10.0f ops/s  p99 %6d us  %6d ns CPU per call\n' \
    "$method" "$c" "$round" "$client" "$(field ops_per_sec "$json")" "$(field p99 "$json")" \
    "$per_call" >&2
  echo "$method $c $round $client $(field ops_per_sec "$json") $(field p99 "$json") $per_call" >>"$results"
}

for method in $METHODS; do
  case $method in
    b)
      echo "==> (b) separate processes, default runtime: $PAIRS pairs x $SECS s" >&2
      for c in $CONCURRENCY; do
        for ((round = 1; round <= PAIRS; round++)); do
          if ((round % 2)); then order="raw resilient"; else order="resilient raw"; fi
          for client in $order; do run b "$c" "$round" "$client" "$SECS" env; done
        done
      done
      ;;
    c)
      server_pid=$(pgrep -P "$lab_pid" -x redis-server)
      taskset -cp 0 "$server_pid" >/dev/null
      echo "==> (c) pinned: redis-server (pid $server_pid) on CPU 0, the bench on CPU 1 with one worker; $REPS x $PINNED_SECS s" >&2
      # Fill the key space, so that every GET finds a value.
      TOKIO_WORKER_THREADS=1 taskset -c 1 "$bin" bench --url "$url" --client raw \
        --workload get-set --keys 10000 --value-size 64 --concurrency 50 --duration 2 --json >/dev/null
      for c in $CONCURRENCY; do
        for ((round = 1; round <= REPS; round++)); do
          if ((round % 2)); then order="raw resilient"; else order="resilient raw"; fi
          for client in $order; do
            run c "$c" "$round" "$client" "$PINNED_SECS" env TOKIO_WORKER_THREADS=1 taskset -c 1
          done
        done
      done
      taskset -cp 0-"$(($(nproc) - 1))" "$server_pid" >/dev/null
      ;;
    *) echo "METHODS lists b and/or c" >&2; exit 2 ;;
  esac
done

echo
printf '%-7s %-11s %12s %15s %7s %11s %16s %7s %9s\n' method concurrency "raw ops/s" "resilient ops/s" ratio "raw p99 us" "resilient p99 us" ratio "CPU/call"
for method in $METHODS; do
  for c in $CONCURRENCY; do
    awk -v m="$method" -v c="$c" "$AWK_MEDIAN"'
      $1 == m && $2 == c && $4 == "raw"       { rops[$3] = $5; rp99[$3] = $6; rcpu[$3] = $7 }
      $1 == m && $2 == c && $4 == "resilient" { sops[$3] = $5; sp99[$3] = $6; scpu[$3] = $7 }
      END {
        n = 0
        for (r in rops) { n++; ro[n] = rops[r]; so[n] = sops[r]; rp[n] = rp99[r]; sp[n] = sp99[r]
                          tr[n] = sops[r] / rops[r]; pr[n] = sp99[r] / rp99[r]
                          cr[n] = rcpu[r] > 0 ? scpu[r] / rcpu[r] : 0 }
        printf "(%s)     %-11s %12.0f %15.0f %7.3f %11.0f %16.0f %7.3f %9.3f\n", m, c, median(ro, n),
          median(so, n), median(tr, n), median(rp, n), median(sp, n), median(pr, n), median(cr, n)
      }' "$results"
  done
done
echo "((b) medians over $PAIRS pairs of separate $SECS s processes; (c) over $REPS interleaved pairs of $PINNED_SECS s, server on CPU 0, bench on CPU 1 with one worker; ratios resilient / raw per pair; CPU/call: perf stat task-clock per call, 0 when perf is not allowed)"
