#!/usr/bin/env bash
# GPU check of the device layer: build HERE (no GPU needed), run on a lent GPU machine.
#
#   1. here:    scripts/gpu-check.sh
#      builds (release, with nvcc 13.0 from scripts/install-nvcc.sh, SCALERL_REQUIRE_NVCC=1) the
#      tests/gpu.rs binary and the criterion binaries of the GPU benches (BENCHES below),
#      strips their debug info and compresses them (gzip: the bundle travels with the tree),
#      and stages them with tests/fixtures/tiny-qwen2{,-d64}, scripts/gpu_check_table.py and
#      scripts/gpu_torch_ref.py into gpu-bundle/ (gitignored), plus gpu-bundle/run.sh.
#   2. device:  run(command="bash gpu-bundle/run.sh", carry=["gpu-bundle"], timeout_s=560)
#      ON THE GPU MACHINE (no Rust there; python3 + torch are) run.sh runs the GPU tests with
#      SCALERL_REQUIRE_GPU=1 SCALERL_CUDA_SYNC=1, the kernel benches (criterion: --warm-up-time 1
#      --measurement-time 2), PyTorch's time for the same ops, and prints ONE table: test
#      results; per kernel and shape: time, GB/s, % of the device-to-device copy bandwidth of
#      the same run, TFLOP/s (GEMMs, prefill and packed attention), torch's time for the same op
#      (SDPA's flash backend for attention). ~8-9 minutes of GPU time without benches/logprob.rs
#      and benches/sample.rs, which add ~1.5 and ~1 (each phase has a timeout; a device call
#      has 10 minutes: run those phases as their own call with BENCHES="logprob sample", the
#      others with BENCHES="kernels ...").
#      Logs and results.json land in $OUT (fetched back by the tool).
#      Then give_back, unless you rerun at once.
#   Without a GPU, run.sh prints "skipped: no GPU (…)" and exits 2 (try: bash gpu-bundle/run.sh).
#   A narrower rerun: command="RUN_BENCH=0 TEST_FILTER=gemm bash gpu-bundle/run.sh" (knobs:
#   RUN_TESTS, RUN_BENCH, RUN_TORCH = 0 to skip; TEST_FILTER, BENCH_FILTER, BENCHES; see run.sh).
#   The backward/optimizer benches (~2 min, 32 GB of optimizer buffers) alone:
#   command="RUN_TESTS=0 RUN_TORCH=0 BENCHES=backward_kernels bash gpu-bundle/run.sh".
#
# Options: --no-build (re-stage the last build), CARGO_TARGET_DIR as usual.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
bundle=$root/gpu-bundle
# The GPU benches: the criterion binaries staged and run, each with its time limit on the GPU.
benches=(kernels attention_decode attention_prefill attention_packed backward_kernels logprob sample)
declare -A bench_limit=([kernels]=200 [attention_decode]=150 [attention_prefill]=90 [attention_packed]=120 [backward_kernels]=120
                        [logprob]=120 [sample]=120)
target=${CARGO_TARGET_DIR:-$root/target}
build=1
[[ "${1:-}" == "--no-build" ]] && build=0

step() { printf '\n== %s\n' "$*" >&2; }

artifacts=$target/gpu-check-artifacts.json
if [[ $build == 1 ]]; then
    step "nvcc 13.0"
    CUDA_HOME="$(scripts/install-nvcc.sh)"
    export CUDA_HOME SCALERL_REQUIRE_NVCC=1
    step "cargo test --release --no-run --test gpu --bench ${benches[*]} (CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-default})"
    mkdir -p "$target"
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
} >"$bundle/BUILD-INFO"

cat >"$bundle/run.sh" <<'RUNSH'
#!/usr/bin/env bash
# Written by scripts/gpu-check.sh. Runs ON THE GPU MACHINE from the repository root:
#   device run: command="bash gpu-bundle/run.sh", carry=["gpu-bundle"], timeout_s=560
# Needs no Rust: the test and bench binaries are prebuilt; python3 (+ torch for the reference
# column) is used for the table. Prints one table at the end; logs go to $OUT (or a temp dir).
# Knobs: RUN_TESTS=0 / RUN_BENCH=0 / RUN_TORCH=0 skip a phase; TEST_FILTER=gemm and
# BENCH_FILTER=gemm_bf16_nt narrow the tests / benches (libtest and criterion filters);
# BENCHES="backward_kernels" runs only the named bench binaries.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
cd "$here"
cat BUILD-INFO
# The executables travel gzipped (the carry limit): unpack them outside the bundle.
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
for gz in *.gz; do
    gunzip -c "$gz" >"$bin/${gz%.gz}" && chmod +x "$bin/${gz%.gz}"
done

# A GPU at all? (The probe test prints "GPU present: …" or the reason there is none.)
probe=$("$bin/gpu-tests" --exact cuda_device_is_a_clear_error_without_a_gpu --nocapture --test-threads=1 2>&1)
if ! grep -q "GPU present" <<<"$probe"; then
    reason=$(grep -m1 -o 'Device::cuda(0): .*' <<<"$probe" | sed 's/^Device::cuda(0): //')
    reason=${reason:-$(tail -3 <<<"$probe")}
    if nvidia-smi -L >/dev/null 2>&1; then
        # A GPU is there but the device layer could not open it: that is a failure, not a skip.
        nvidia-smi -L
        echo "FAILED: the device layer cannot open the GPU: $reason"
        printf '%s\n' "$probe" | tail -40
        exit 1
    fi
    [[ "$reason" == "no GPU"* ]] && echo "skipped: $reason" || echo "skipped: no GPU ($reason)"
    exit 2
fi
device=$(grep -m1 -o 'GPU present: .*' <<<"$probe" | sed 's/^GPU present: //')
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
echo "device: $device${driver:+, driver $driver}"

# cuBLASLt (the GEMMs) is loaded with dlopen("libcublasLt.so.13"): find one if the loader can't.
if ! ldconfig -p 2>/dev/null | grep -q 'libcublasLt\.so\.13'; then
    lt=$(find /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib /usr/lib/x86_64-linux-gnu /opt \
              /usr/local/lib/python3*/dist-packages /usr/lib/python3/dist-packages \
              -name 'libcublasLt.so.13*' -not -path '*/stubs/*' 2>/dev/null | head -1)
    if [[ -z "$lt" ]]; then
        lt=$(python3 - 2>/dev/null <<'EOF'
import glob, os, site
for d in site.getsitepackages() + [site.getusersitepackages()]:
    for p in glob.glob(os.path.join(d, "nvidia", "**", "libcublasLt.so.13*"), recursive=True):
        print(p); raise SystemExit
EOF
)
    fi
    if [[ -n "$lt" ]]; then
        export LD_LIBRARY_PATH="$(dirname "$lt")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        echo "libcublasLt: $lt"
    else
        echo "libcublasLt.so.13 not found: the GEMM tests and benches will fail"
    fi
fi

if [[ "${RUN_TESTS:-1}" == 1 ]]; then
    echo "== tests/gpu.rs (SCALERL_REQUIRE_GPU=1, SCALERL_CUDA_SYNC=1)"
    SCALERL_REQUIRE_GPU=1 SCALERL_CUDA_SYNC=1 SCALERL_FIXTURES="$here/fixtures" RUST_BACKTRACE=1 \
        timeout 150 "$bin/gpu-tests" --test-threads=1 --show-output ${TEST_FILTER:-} >"$out/tests.log" 2>&1
    echo "tests exit status $? (log: tests.log)"
    grep -E '^test |^test result|panicked|skipped' "$out/tests.log" | head -60
fi

# One criterion folder per bench binary: each measures its own copy ceiling in its run, and
# the attention benches reuse group names of benches/kernels.rs.
crit_dirs=()
bench_phase() {  # name, binary, timeout
    local name=$1 exe=$2 limit=$3
    # BENCHES="kernels backward_kernels" runs only the named phases (default: all).
    [[ -z "${BENCHES:-}" || " $BENCHES " == *" $name "* ]] || return 0
    rm -rf "$out/criterion-$name"
    echo "== benches/$name.rs"
    CRITERION_HOME="$out/criterion-$name" timeout "$limit" "$bin/$exe" --bench --warm-up-time 1 --measurement-time 2 \
        --sample-size 20 --noplot ${BENCH_FILTER:-} >"$out/bench-$name.log" 2>&1
    echo "bench exit status $? (log: bench-$name.log)"
    grep -E 'time:|thrpt:|skipped|panicked' "$out/bench-$name.log" | tail -3
    crit_dirs+=("$out/criterion-$name")
}
if [[ "${RUN_BENCH:-1}" == 1 ]]; then
    while read -r name limit; do
        bench_phase "$name" "bench-$name" "$limit"
    done <BENCH-LIMITS
fi

if [[ "${RUN_TORCH:-1}" == 1 && "${RUN_BENCH:-1}" == 1 ]]; then
    echo "== PyTorch reference (same shapes)"
    timeout 120 python3 gpu_torch_ref.py "$out/torch.json" >"$out/torch.log" 2>&1
    echo "torch exit status $? (log: torch.log)"
    tail -2 "$out/torch.log"
fi

crit_list=$(IFS=:; echo "${crit_dirs[*]:-}")
python3 gpu_check_table.py "$out/tests.log" "$crit_list" "$out/torch.json" "$device${driver:+, driver $driver}" "$out/results.json"
status=$?
# The criterion folders hold hundreds of files; the tool returns 8 at most: keep one archive.
(cd "$out" && ls -d criterion-* >/dev/null 2>&1 && tar -czf criterion.tgz criterion-* && rm -rf criterion-*)
exit $status
RUNSH
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

Next, on a session with a GPU (device tool):
  run(command="bash gpu-bundle/run.sh", carry=["gpu-bundle"], timeout_s=560)
then give_back. Without a GPU: bash gpu-bundle/run.sh  →  "skipped: no GPU (…)", exit 2.
EOF
