#!/usr/bin/env bash
# Run the fuzz targets in fuzz/ one after another, SECONDS each (default 600), with one
# libFuzzer process at low priority. Prints per target the executions, coverage and any crash
# artifacts; exits non-zero if a target crashed. Needs the nightly toolchain; installs
# cargo-fuzz if missing. Not part of CI.
#   scripts/fuzz.sh [SECONDS] [TARGET...]      (no TARGET: all of them)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs=600
if [[ ${1:-} =~ ^[0-9]+$ ]]; then
  secs=$1
  shift
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

# The daemon's targets need the `daemon` feature; building every target with it keeps one set
# of dependencies instead of rebuilding them back and forth.
nice -n 10 cargo +nightly fuzz build --features daemon
bin=target/x86_64-unknown-linux-gnu/release

failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log=artifacts/$t/last-run.log
  echo "== $t: ${secs}s"
  stamp=artifacts/$t/.started
  touch "$stamp"
  status=0
  nice -n 19 "$bin/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$secs" -timeout=30 \
    -print_final_stats=1 "corpus/$t" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1)
  echo "   executions: ${execs:-?}  ${cov:-cov: ?}  corpus: $(ls "corpus/$t" | wc -l) files  log: fuzz/$log"
  # Only this run's artifacts: older ones stay until someone looks at them.
  crashes=$(find "artifacts/$t" -newer "$stamp" \( -name 'crash-*' -o -name 'timeout-*' \
    -o -name 'oom-*' -o -name 'leak-*' \) | sort)
  if [ "$status" -ne 0 ] || [ -n "$crashes" ]; then
    failed+=("$t")
    echo "   FAILED (exit $status):"
    grep -m1 -E 'panicked at|ERROR: libFuzzer' "$log" | sed 's/^/     /' || true
    for c in $crashes; do echo "     artifact: fuzz/$c"; done
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "crashed: ${failed[*]} (reproduce: cd fuzz && cargo +nightly fuzz run --features daemon TARGET ARTIFACT)"
  exit 1
fi
echo "no crashes"
