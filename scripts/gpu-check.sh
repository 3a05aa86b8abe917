#!/usr/bin/env bash
# GPU check of the device layer: build HERE (no GPU needed), run on a lent GPU machine.
#
#   1. here:    scripts/gpu-check.sh
#      builds (release, with nvcc 13.0 from scripts/install-nvcc.sh, SCALERL_REQUIRE_NVCC=1, and
#      libstdc++ linked statically: SCALERL_STATIC_STDCXX=1, so the GPU machine's C++ runtime
#      does not matter) the tests/gpu.rs binary and the bench binaries (BENCHES below), strips
#      their debug info, checks each holds the fatbin and needs no libstdc++.so, compresses them
#      (gzip: the bundle travels with the tree) and stages them with tests/fixtures/tiny-qwen2
#      {,-d64}, scripts/gpu_check_table.py, scripts/gpu_torch_ref.py and run.sh (a copy of
#      scripts/gpu_bundle_run.sh) into gpu-bundle/ (gitignored).
#   2. device:  one call per phase, each fits one 10-minute call (run.sh's header has the details):
#        run(command="PHASE=tests bash gpu-bundle/run.sh", carry=["gpu-bundle"], timeout_s=560)
#      PHASE=tests: preflight (driver >= 580 for nvcc 13.0's code, ldd of every executable,
#      libcuda, cuBLASLt .so.13 or .so.12: a missing piece is said before anything runs), then
#      every test of tests/gpu.rs in its own process with its own timeout (SCALERL_REQUIRE_GPU=1
#      SCALERL_CUDA_SYNC=1), then compute-sanitizer racecheck + synccheck on the attention tests
#      when the machine has it. PHASE=kernels | attention | train | decode: the benches
#      (kernels + attention_decode + PyTorch; attention_prefill + attention_packed + PyTorch;
#      backward_kernels + logprob; decode_step: the random-weight 1.5B model's decode step at
#      batch 1/32/128 x 1K-24K split into forward, sampling and host time next to its HBM
#      roofline; sample: the device sampler at batch 1/32/128 x V = 151,936). Each call prints ONE table: test results; per kernel and shape: time, GB/s,
#      % of the device-to-device copy bandwidth of the same run, TFLOP/s, torch's time.
#      Logs and results.json land in $OUT (fetched back by the tool). Then give_back, unless you
#      rerun at once.
#   Without a GPU: bash gpu-bundle/run.sh prints the preflight (driver and library report),
#   then "skipped: no NVIDIA driver (…)", exit 2. DRY_RUN=1 stops after the preflight anywhere.
#   Narrower: command="PHASE=tests TEST_FILTER=gemm bash gpu-bundle/run.sh", or
#   command="PHASE=kernels BENCH_FILTER=gemm_bf16_nt RUN_TORCH=0 bash gpu-bundle/run.sh".
#
# Options: --no-build (re-stage the last build), CARGO_TARGET_DIR as usual.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
bundle=$root/gpu-bundle
# The GPU benches: the binaries staged and run, each with its time limit on the GPU (run.sh
# groups them in phases whose limits, plus PyTorch's 120 s, stay under one 10-minute call).
benches=(kernels attention_decode attention_prefill attention_packed backward_kernels logprob decode_step sample)
declare -A bench_limit=([kernels]=200 [attention_decode]=150 [attention_prefill]=90 [attention_packed]=120 [backward_kernels]=120
                        [logprob]=120 [decode_step]=330 [sample]=120)
target=${CARGO_TARGET_DIR:-$root/target}
build=1
[[ "${1:-}" == "--no-build" ]] && build=0

step() { printf '\n== %s\n' "$*" >&2; }

artifacts=$target/gpu-check-artifacts.json
if [[ $build == 1 ]]; then
    step "nvcc 13.0"
    CUDA_HOME="$(scripts/install-nvcc.sh)"
    # SCALERL_STATIC_STDCXX=1: build.rs links libstdc++.a (the GPU machine's may be missing or old).
    export CUDA_HOME SCALERL_REQUIRE_NVCC=1 SCALERL_STATIC_STDCXX=1
    step "cargo test --release --no-run --test gpu --bench ${benches[*]} (CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-default})"
    mkdir -p "$target"
    # shellcheck disable=SC2046  # one "--bench NAME" pair per bench, split on purpose
    cargo test --locked --release --no-run --test gpu $(printf -- '--bench %s ' "${benches[@]}") \
        --message-format=json-render-diagnostics >"$artifacts"
fi
[[ -s "$artifacts" ]] || { echo "gpu-check: no build to stage ($artifacts); run without --no-build" >&2; exit 1; }

# The executables of the test and bench targets, from cargo's JSON messages, in this order.
read -r tests_exe bench_exes < <(python3 - "$artifacts" "${benches[@]}" <<'EOF'
import json, sys
exe = {}
wanted = sys.argv[2:]
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        t = m["target"]
        if t["name"] == "gpu" and "test" in t["kind"]:
            exe["gpu"] = m["executable"]
        if t["name"] in wanted and "bench" in t["kind"]:
            exe[t["name"]] = m["executable"]
names = ["gpu"] + wanted
missing = [k for k in names if k not in exe]
if missing:
    sys.exit(f"gpu-check: cargo built no executable for {missing}")
print(" ".join(exe[k] for k in names))
EOF
)

step "staging $bundle"
rm -rf "$bundle"
mkdir -p "$bundle/fixtures"
# Debug info off (release keeps line tables); symbols stay for readable panics and backtraces.
read -r -a bench_exe <<<"$bench_exes"
stage() {  # source executable, name in the bundle: stripped, checked, gzipped (run.sh unzips)
    strip --strip-debug -o "$bundle/$2" "$1"
    # The fatbin must be in there (its magic 0xBA55ED50), or the GPU run can only say "built
    # without nvcc". (Kernel names alone prove nothing: the launchers hold them as strings.)
    if ! python3 -c "import sys; sys.exit(bytes.fromhex('50ed55ba') not in open(sys.argv[1], 'rb').read())" "$bundle/$2"; then
        echo "gpu-check: $2 holds no fatbin (built without nvcc?)" >&2
        exit 1
    fi
    # Statically linked C++ runtime: a libstdc++.so here means the build ignored
    # SCALERL_STATIC_STDCXX (an old build re-staged with --no-build?).
    if ldd "$bundle/$2" | grep -q 'libstdc++'; then
        echo "gpu-check: $2 still needs libstdc++.so (rebuild without --no-build: SCALERL_STATIC_STDCXX=1)" >&2
        exit 1
    fi
    gzip -6 "$bundle/$2"
}
stage "$tests_exe" gpu-tests
for i in "${!benches[@]}"; do
    stage "${bench_exe[$i]}" "bench-${benches[$i]}"
done
echo "${benches[*]}" >"$bundle/BENCHES"
for b in "${benches[@]}"; do echo "$b ${bench_limit[$b]}"; done >"$bundle/BENCH-LIMITS"
cp -r tests/fixtures/tiny-qwen2 tests/fixtures/tiny-qwen2-d64 "$bundle/fixtures/"
cp scripts/gpu_check_table.py scripts/gpu_torch_ref.py "$bundle/"

{
    echo "staged: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' + local changes')"
    echo "nvcc: $("${CUDA_HOME:-/nonexistent}/bin/nvcc" --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'from an earlier build')"
    echo "tests: $tests_exe"
    echo "benches: ${benches[*]}"
    # What the GPU machine's C library must offer (libstdc++ is linked in; glibc cannot be).
    echo "needs: glibc >= $(objdump -T "$tests_exe" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"
} >"$bundle/BUILD-INFO"

# The device side (preflight, phases, one process per test): a script of its own.
cp scripts/gpu_bundle_run.sh "$bundle/run.sh"
chmod +x "$bundle/run.sh"

grep -qx '/gpu-bundle' .gitignore 2>/dev/null || echo "gpu-check: add /gpu-bundle to .gitignore (the bundle must not be committed)" >&2
size=$(du -sm "$bundle" | cut -f1)
ls -la "$bundle" >&2
echo "gpu-check: $bundle is ${size} MiB (carry limit 64 MiB for the whole tree)" >&2
if ((size > 40)); then
    echo "gpu-check: the bundle is too big to carry with the tree" >&2
    exit 1
fi
cat >&2 <<EOF

Next, on a session with a GPU (device tool), one call per phase (each fits one 10-minute call):
  run(command="PHASE=tests bash gpu-bundle/run.sh", carry=["gpu-bundle"], timeout_s=560)
  PHASE=kernels | attention | train | decode: the benches (see scripts/gpu_bundle_run.sh)
then give_back. Without a GPU: bash gpu-bundle/run.sh  →  preflight, "skipped: no NVIDIA driver (…)", exit 2.
EOF
