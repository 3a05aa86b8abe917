#!/usr/bin/env bash
# interpret-selftest.sh — builds the interpret-mode runtime and the selftest kernels with
# g++ under AddressSanitizer and runs every selftest (one line each, then "N passed, M
# failed"; non-zero exit on failure). Extra arguments go to the binary (--only NAME, --bench).
#   SANITIZE=none scripts/interpret-selftest.sh --bench   # plain -O2 build, for timings
set -euo pipefail
cd "$(dirname "$0")/.."
SANITIZE=${SANITIZE:-address}
OUT=${OUT:-target/interpret-selftest/$SANITIZE}
CXX=${CXX:-g++}
JOBS=${JOBS:-2}
mkdir -p "$OUT"

FLAGS=(-std=c++20 -g -DSCALERL_INTERPRET -Wall -Wextra -Wno-unknown-pragmas -Wno-unused-parameter
       "-DSELFTEST_DIR=\"$PWD/kernels/selftest\"")
case "$SANITIZE" in
  address) FLAGS+=(-O1 -fsanitize=address -fno-omit-frame-pointer) ;;
  thread)  FLAGS+=(-O1 -fsanitize=thread -Wno-tsan) ;;
  none)    FLAGS+=(-O2) ;;
  *) echo "SANITIZE must be address, thread or none" >&2; exit 2 ;;
esac

SRCS=(kernels/interpret/runtime.cpp kernels/interpret/collectives.cpp kernels/interpret/fiber.cpp
      kernels/selftest/main.cpp kernels/selftest/*.cu)
HDRS=(kernels/common.cuh kernels/interpret/*.h)
OBJS=()
pids=()
for src in "${SRCS[@]}"; do
  obj="$OUT/$(basename "$src").o"
  OBJS+=("$obj")
  # rebuild when the source, any header or this script is newer than the object
  if [[ -f "$obj" && "$obj" -nt "$src" && "$obj" -nt "$0" ]] && ! [[ -n "$(find "${HDRS[@]}" -newer "$obj" 2>/dev/null)" ]]; then
    continue
  fi
  "$CXX" "${FLAGS[@]}" -x c++ -c "$src" -o "$obj" &
  pids+=($!)
  if (( ${#pids[@]} >= JOBS )); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done
"$CXX" "${FLAGS[@]}" "${OBJS[@]}" -o "$OUT/selftest" -pthread

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
exec "$OUT/selftest" "$@"
