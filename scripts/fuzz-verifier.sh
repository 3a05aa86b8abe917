#!/usr/bin/env bash
# Fuzz the math-reward parser and grader with cargo-fuzz (libFuzzer).
#
#   scripts/fuzz-verifier.sh [SECONDS]     (default 60)
#
# cargo-fuzz needs nightly-only rustc flags; RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them. The seed corpus is built from the boxed
# answers and golds of tests/fixtures/verifier/dev.jsonl. Exits non-zero if
# the fuzzer finds a crash, a timeout (>5 s on one input) or runaway memory.
set -euo pipefail
SECONDS_TO_RUN="${1:-60}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz from crates.io..." >&2
  cargo install cargo-fuzz --version 0.13.2 --locked
fi

CORPUS="$ROOT/fuzz/corpus/parse"
mkdir -p "$CORPUS"
if [ -z "$(ls -A "$CORPUS" 2>/dev/null)" ]; then
  # One seed per distinct boxed answer / gold in the fixture (JSON-escaped
  # backslashes are fine: they are still interesting LaTeX).
  i=0
  grep -o '\\\\boxed{[^"]\{0,200\}' "$ROOT/tests/fixtures/verifier/dev.jsonl" | sort -u | head -2000 |
    while IFS= read -r line; do
      printf '%s' "${line//\\\\/\\}" > "$CORPUS/seed-$i"; i=$((i + 1))
    done
  grep -o '"gold": "[^"]*"' "$ROOT/tests/fixtures/verifier/dev.jsonl" | sort -u | head -1000 |
    while IFS= read -r line; do
      g="${line#\"gold\": \"}"; g="${g%\"}"
      printf '%s' "${g//\\\\/\\}" > "$CORPUS/gold-$i"; i=$((i + 1))
    done
fi

# -timeout: one input may take at most 5 s (the grader's own budget is 25 ms;
# parsing is linear), -rss_limit_mb bounds memory, -max_len keeps inputs
# near the 32 KiB answer cap.
cargo fuzz run parse "$CORPUS" -- \
  -max_total_time="$SECONDS_TO_RUN" -timeout=5 -rss_limit_mb=2048 -max_len=40000 -print_final_stats=1
