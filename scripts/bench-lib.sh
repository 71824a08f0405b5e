# Shared by the bench-*.sh scripts (sourced from the repository root): builds the CLI in release
# mode (`$bin`), starts a lab redis-server (`$url`) that lives as long as the script holds the
# pipe to its stdin, stops it on exit and removes `$BENCH_TMP` (a file or folder the script may
# set), reads fields of the bench's JSON (`field NAME JSON`), and gives the scripts' awk programs
# a median (`awk "$AWK_MEDIAN"'...'`).

echo "==> building (release)" >&2
cargo build --release --quiet -p resilient-redis-cli
bin="${CARGO_TARGET_DIR:-target}/release/resilient-redis"

# LAB_ARGS="--cluster" starts a cluster of 3 masters instead (`$url` is then its node URLs,
# comma-separated).
coproc LAB { exec "$bin" lab-server ${LAB_ARGS:-}; }
lab_pid=$LAB_PID lab_in=${LAB[1]} lab_out=${LAB[0]}
# Closing the pipe stops the lab server (and its redis-server); wait until it has.
bench_cleanup() {
  exec {lab_in}>&- 2>/dev/null || true
  wait "$lab_pid" 2>/dev/null || true
  if [[ -n ${BENCH_TMP:-} ]]; then rm -rf "$BENCH_TMP"; fi
}
trap bench_cleanup EXIT
read -r url <&"$lab_out"

field() { sed -E "s/.*\"$1\":([0-9.eE+-]+).*/\1/" <<<"$2"; }

# `median(a, n)`: the median of a[1..n] (sorts the array in place).
AWK_MEDIAN='function median(a, n,   i, j, t) {
  for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
  return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}'
