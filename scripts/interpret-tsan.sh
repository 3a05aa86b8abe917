#!/usr/bin/env bash
# interpret-tsan.sh — the interpret-mode selftests under ThreadSanitizer.
# 1. every selftest must pass with no TSan report: barriers, warp collectives and atomics
#    are the only happens-before edges between fibers, so a report here is a false alarm
#    (or a real race in a selftest kernel);
# 2. each planted race in kernels/selftest/race.cu must produce a TSan data-race report
#    that names race.cu. No fiber schedule can show these; TSan can.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/interpret-selftest/thread
export TSAN_OPTIONS="halt_on_error=0 exitcode=66 ${TSAN_OPTIONS:-}"
export SCALERL_INTERP_THREADS=2   # blocks on two OS threads: cross-block races are visible

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! SANITIZE=thread scripts/interpret-selftest.sh >"$log" 2>&1; then
  cat "$log"; echo "FAIL selftests under TSan (exit code above; 66 = TSan reported something)"; exit 1
fi
grep -E '^(PASS|FAIL|SKIP)|passed' "$log"
if grep -q "WARNING: ThreadSanitizer" "$log"; then cat "$log"; echo "FAIL unexpected TSan report"; exit 1; fi

fail=0
for race in race_nonatomic_add race_missing_barrier race_cross_block; do
  "$OUT/selftest" --race "$race" >"$log" 2>&1 || true
  if grep -q "WARNING: ThreadSanitizer: data race" "$log" && grep -q "race.cu" "$log"; then
    echo "PASS $race: $(grep -m1 -o 'race.cu:[0-9]*' "$log") reported by TSan"
  else
    echo "FAIL $race: no TSan data race naming race.cu"; cat "$log"; fail=1
  fi
done
exit $fail
