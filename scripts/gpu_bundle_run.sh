#!/usr/bin/env bash
# The GPU check's device side: scripts/gpu-check.sh copies this file to gpu-bundle/run.sh next to
# the prebuilt test and bench executables. It runs ON THE GPU MACHINE from the repository root:
#
#   run(command="PHASE=tests bash gpu-bundle/run.sh", carry=["gpu-bundle"], timeout_s=560)
#
# GPU time is rare, so the script is built not to waste it:
#   - preflight first, in seconds: the NVIDIA driver (nvcc 13.0's kernels need driver >= 580),
#     the shared libraries every executable needs (ldd) and the ones it loads at run time
#     (libcuda.so.1, cuBLASLt as .so.13 or .so.12), then one probe that the device layer opens
#     the GPU. Anything missing is said in one line before any test runs;
#   - one process per test, each under its own timeout, so a hang or a crash loses that test
#     only (it is reported as FAILED with "timed out" and the others run on);
#   - PHASE picks a part that fits one 10-minute device call (the sums of the time limits below
#     stay under 9 minutes); PHASE=all runs every part in a row (no 10-minute limit).
#       tests      tests/gpu.rs, then compute-sanitizer racecheck and synccheck on the attention
#                  tests when compute-sanitizer is installed
#       kernels    benches/kernels.rs and attention_decode.rs, PyTorch's time for the same ops
#       attention  benches/attention_prefill.rs and attention_packed.rs, PyTorch's time
#       train      benches/backward_kernels.rs and logprob.rs
#       decode     benches/decode_step.rs: one decode step of the random-weight 1.5B model; benches/sample.rs
#   Each call prints one table (gpu_check_table.py) and leaves its logs and results.json in $OUT.
# Exit status: 0 all passed, 1 a test failed or a phase broke, 2 skipped (no NVIDIA driver or no
# GPU), 3 the machine cannot run the bundle (driver too old, a library missing).
#
# Knobs: PHASE (default tests); TEST_FILTER=gemm (substring of test names); TEST_TIMEOUT (s per
# test, 150) within TESTS_BUDGET (s for all tests, 330); SANITIZE=0 skips compute-sanitizer,
# SANITIZER_TIMEOUT (s per tool and test, 120) within SANITIZER_BUDGET (s, 150);
# BENCHES="kernels logprob" overrides the phase's bench list; BENCH_FILTER=gemm_bf16_nt (criterion
# filter); RUN_TORCH=0 skips PyTorch; DRY_RUN=1 stops after the preflight.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
cd "$here" || exit 1
phase=${PHASE:-tests}
cat BUILD-INFO
echo "phase: $phase; logs: $out"

# The benches of each phase and each bench's time limit (BENCH-LIMITS, written by gpu-check.sh).
declare -A phase_benches=(
    [tests]=""
    [kernels]="kernels attention_decode"
    [attention]="attention_prefill attention_packed"
    [train]="backward_kernels logprob"
    [decode]="decode_step sample"
)
case $phase in
    all) run_tests=1; benches="${BENCHES:-kernels attention_decode attention_prefill attention_packed backward_kernels logprob decode_step sample}" ;;
    tests) run_tests=1; benches="${BENCHES:-}" ;;
    kernels | attention | train | decode) run_tests=0; benches="${BENCHES:-${phase_benches[$phase]}}" ;;
    *) echo "run.sh: unknown PHASE=$phase (tests, kernels, attention, train, decode or all)"; exit 1 ;;
esac

# The executables travel gzipped (the carry limit): unpack them outside the bundle.
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
for gz in *.gz; do
    gunzip -c "$gz" >"$bin/${gz%.gz}" && chmod +x "$bin/${gz%.gz}"
done

# ---------------------------------------------------------------- preflight
echo "== preflight"
# 1. The driver, before anything else: without it nothing below can work, and an old one fails
#    every kernel load with an opaque CUDA_ERROR_UNSUPPORTED_PTX_VERSION. nvcc 13.0 (the pinned
#    build) emits code that needs the CUDA 13 driver, 580 or newer.
min_driver=580
driver=""
if [[ -r /proc/driver/nvidia/version ]]; then
    driver=$(grep -o -m1 'Kernel Module *[0-9.]*' /proc/driver/nvidia/version | grep -o '[0-9][0-9.]*')
fi
if [[ -z "$driver" ]] && command -v nvidia-smi >/dev/null 2>&1; then
    driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
fi
driver_ok=0
if [[ -z "$driver" ]]; then
    driver_msg="no NVIDIA driver (no /proc/driver/nvidia/version, no working nvidia-smi)"
elif (( ${driver%%.*} < min_driver )); then
    driver_msg="NVIDIA driver $driver is too old: nvcc 13.0's kernels need driver >= $min_driver (CUDA 13); update the driver or rebuild the bundle with a CUDA 12 nvcc"
else
    driver_ok=1
    driver_msg="NVIDIA driver $driver (>= $min_driver, as nvcc 13.0's kernels need)"
fi
echo "driver: $driver_msg"

# 2. Libraries. Linked ones (ldd "not found"), then the ones the device layer dlopens: libcuda
#    (the driver API) and cuBLASLt (the GEMMs; cudarc tries libcublasLt.so, .so.13, .so.12).
find_lib() {  # a library file name pattern → the first path holding it, or nothing
    local pat=$1 hit
    hit=$(ldconfig -p 2>/dev/null | grep -m1 -o "/[^ ]*/$pat\$" || true)
    [[ -z "$hit" ]] && hit=$(find /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib /usr/lib/x86_64-linux-gnu \
        /usr/lib64 /opt /usr/local/lib/python3*/dist-packages /usr/local/lib/python3*/site-packages \
        /usr/lib/python3/dist-packages -name "$pat" -not -path '*/stubs/*' 2>/dev/null | head -1)
    if [[ -z "$hit" ]] && command -v python3 >/dev/null 2>&1; then
        # pip's nvidia-* wheels (PyTorch's) keep their libraries under site-packages/nvidia.
        hit=$(python3 -c '
import glob, os, site, sys
for d in site.getsitepackages() + [site.getusersitepackages()]:
    for p in glob.glob(os.path.join(d, "nvidia", "**", sys.argv[1]), recursive=True):
        print(p); raise SystemExit
' "$pat" 2>/dev/null)
    fi
    echo "$hit"
}
lib_ok=1
mapfile -t missing < <(for exe in "$bin"/*; do ldd "$exe" 2>&1 | sed -n "s|^\s*\(.*not found\)|$(basename "$exe"): \1|p"; done)
if ((${#missing[@]})); then
    lib_ok=0
    echo "libraries: MISSING (the executables cannot start):"
    printf '  %s\n' "${missing[@]}"
else
    needed=$(for exe in "$bin"/*; do ldd "$exe" 2>/dev/null | awk '/=>/ { print $1 }'; done | sort -u | xargs)
    echo "libraries: every executable's linked libraries are present (ldd: $needed)"
fi
cuda_lib=$(find_lib 'libcuda.so.1')
# Not fatal here: a container may mount it where neither the loader cache nor find looks; the
# probe below then says for certain whether the device layer can open the GPU.
echo "libcuda.so.1: ${cuda_lib:-MISSING from the loader cache and the usual folders (the GPU probe below decides)}"
lt=""
for v in 13 12; do
    lt=$(find_lib "libcublasLt.so.$v*")
    [[ -n "$lt" ]] && break
done
if [[ -n "$lt" ]]; then
    # The loader may not know the directory (pip wheels): put it on the path for our executables.
    LD_LIBRARY_PATH="$(dirname "$lt")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
    echo "libcublasLt: $lt"
else
    echo "libcublasLt: MISSING (neither .so.13 nor .so.12 found): the GEMM tests and benches will fail"
fi
# NCCL (the multi-GPU runs; tests/gpu.rs's one-rank test): NCCL's packages name it libnccl.so.2,
# which cudarc does not try, so a link named libnccl.so goes into a folder on the path.
nccl=$(find_lib 'libnccl.so.2')
if [[ -n "$nccl" ]]; then
    nccl_dir=$(mktemp -d)
    ln -s "$nccl" "$nccl_dir/libnccl.so"
    LD_LIBRARY_PATH="$nccl_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
    echo "libnccl: $nccl (linked as libnccl.so)"
else
    echo "libnccl: not found (the NCCL test is skipped; pip install nvidia-nccl-cu13 provides it)"
fi
sanitizer=$(command -v compute-sanitizer 2>/dev/null || find /usr/local/cuda*/bin /opt/nvidia -name compute-sanitizer -type f 2>/dev/null | head -1)
echo "compute-sanitizer: ${sanitizer:-not installed (racecheck/synccheck skipped)}"

# SCRIPT_SELFTEST=1 goes on past a failed preflight and the GPU probe: only for checking this
# script on a machine without a GPU (the tests then fail with "no GPU", or pass in interpret mode).
selftest=${SCRIPT_SELFTEST:-0}
if [[ $driver_ok == 0 && -z "$driver" && $selftest != 1 ]]; then
    echo "skipped: $driver_msg"
    exit 2
fi
if [[ ($driver_ok == 0 || $lib_ok == 0) && $selftest != 1 ]]; then
    echo "FAILED preflight: this machine cannot run the bundle (see above); nothing was run"
    exit 3
fi
[[ "${DRY_RUN:-0}" == 1 ]] && { echo "dry run: preflight passed, stopping"; exit 0; }

# 3. A GPU the device layer can open? (The probe test prints "GPU present: …" or why not.)
probe=$(timeout -k 5 60 "$bin/gpu-tests" --exact cuda_device_is_a_clear_error_without_a_gpu --nocapture --test-threads=1 2>&1)
if ! grep -q "GPU present" <<<"$probe" && [[ $selftest != 1 ]]; then
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
device=${device:-no GPU (SCRIPT_SELFTEST)}
echo "device: $device, driver $driver"

# ---------------------------------------------------------------- tests
tests_log="$out/tests.log"
export SCALERL_FIXTURES="$here/fixtures" RUST_BACKTRACE=1
# run_one LOG LIMIT NAME CMD...: runs one test process under its own timeout and appends its
# output to LOG in libtest's format; a timeout becomes "test NAME ... FAILED" with the reason,
# so the table reports it like any failure.
run_one() {
    local log=$1 limit=$2 name=$3
    shift 3
    local t0=$SECONDS status
    timeout -k 5 "$limit" "$@" >"$out/one.log" 2>&1
    status=$?
    # Our own verdict lines start on a fresh line (libtest prints "test NAME ... " before the
    # test runs) and end with a "test result" line, where the table's parser ends a section.
    if ((status == 124 || status == 137)); then
        { cat "$out/one.log"; echo; echo "test $name ... FAILED"; echo "---- $name stdout ----"
          echo "timed out after ${limit} s (killed; the other tests ran on)"; echo "test result: FAILED (run.sh)"; } >>"$log"
    elif ! grep -qE "^test $name \.\.\. (ok|FAILED|ignored)" "$out/one.log"; then
        # Died before libtest printed a result (a crash, an abort): a failure with its last lines.
        { cat "$out/one.log"; echo; echo "test $name ... FAILED"; echo "---- $name stdout ----"
          echo "exit status $status before a result:"; tail -5 "$out/one.log"; echo "test result: FAILED (run.sh)"; } >>"$log"
    else
        cat "$out/one.log" >>"$log"
    fi
    printf '  %-60s %s (%d s)\n' "$name" "$(grep -oE "^test $name \.\.\. (ok|FAILED|ignored)" "$log" | tail -1 | awk '{print $4}')" $((SECONDS - t0))
}

if [[ $run_tests == 1 ]]; then
    echo "== tests/gpu.rs: one process per test, ${TEST_TIMEOUT:-150} s each (SCALERL_REQUIRE_GPU=1, SCALERL_CUDA_SYNC=1)"
    : >"$tests_log"
    mapfile -t names < <("$bin/gpu-tests" --list --format terse 2>/dev/null | sed -n 's/: test$//p' | grep -F -- "${TEST_FILTER:-}")
    # The whole test part stays within TESTS_BUDGET (s), so the phase fits its device call even
    # if several tests hang: each test gets at most what is left, and once nothing is left the
    # rest are reported as not run.
    budget_end=$((SECONDS + ${TESTS_BUDGET:-330}))
    for name in "${names[@]}"; do
        left=$((budget_end - SECONDS))
        if ((left < 10)); then
            { echo "test $name ... FAILED"; echo "---- $name stdout ----"; echo "not run: TESTS_BUDGET spent"
              echo "test result: FAILED (run.sh)"; } >>"$tests_log"
            printf '  %-60s not run (TESTS_BUDGET spent)\n' "$name"
            continue
        fi
        limit=${TEST_TIMEOUT:-150}
        ((limit > left)) && limit=$left
        SCALERL_REQUIRE_GPU=1 SCALERL_CUDA_SYNC=1 \
            run_one "$tests_log" "$limit" "$name" "$bin/gpu-tests" --exact "$name" --test-threads=1 --show-output
    done

    # compute-sanitizer on the attention kernels: racecheck (shared-memory hazards) and synccheck
    # (barriers in divergent code). Each tool and test is its own process with its own timeout;
    # a timeout is inconclusive, not a failure (the tools slow kernels 10-100x).
    if [[ -n "$sanitizer" && "${SANITIZE:-1}" == 1 ]]; then
        echo "== compute-sanitizer racecheck + synccheck on the attention tests (${SANITIZER_TIMEOUT:-120} s each)"
        san_log="$out/sanitizer.log"
        : >"$san_log"
        san_end=$((SECONDS + ${SANITIZER_BUDGET:-150}))
        for name in "${names[@]}"; do
            [[ "$name" == *attention* ]] || continue
            for tool in racecheck synccheck; do
                t0=$SECONDS
                limit=${SANITIZER_TIMEOUT:-120}
                ((limit > san_end - SECONDS)) && limit=$((san_end - SECONDS))
                if ((limit < 10)); then
                    printf '  %-10s %-50s not run (SANITIZER_BUDGET spent)\n' "$tool" "$name"
                    continue
                fi
                SCALERL_REQUIRE_GPU=1 SCALERL_CUDA_SYNC=1 timeout -k 5 "$limit" \
                    "$sanitizer" --tool "$tool" --error-exitcode 99 "$bin/gpu-tests" --exact "$name" --test-threads=1 \
                    >"$out/one.log" 2>&1
                status=$?
                case $status in
                    0) verdict="clean" ;;
                    99) verdict="HAZARDS REPORTED" ;;
                    124 | 137) verdict="inconclusive (timed out)" ;;
                    *) verdict="FAILED (exit $status)" ;;
                esac
                { echo "==== $tool $name: $verdict"; cat "$out/one.log"; } >>"$san_log"
                printf '  %-10s %-50s %s (%d s)\n' "$tool" "$name" "$verdict" $((SECONDS - t0))
                # The table counts a hazard or a crash under the tool as a failed test.
                if [[ "$verdict" == HAZARDS* || "$verdict" == FAILED* ]]; then
                    { echo "test ${tool}::$name ... FAILED"; echo "---- ${tool}::$name stdout ----"
                      grep -m3 -E 'Error|Hazard|ERROR' "$out/one.log"; echo "test result: FAILED (run.sh)"; } >>"$tests_log"
                elif [[ "$verdict" == clean ]]; then
                    echo "test ${tool}::$name ... ok" >>"$tests_log"
                fi
            done
        done
    fi
fi

# ---------------------------------------------------------------- benches
# One criterion folder per bench binary: each measures its own copy ceiling in its run.
crit_dirs=()
bench_failed=()
torch_wanted=0
for name in $benches; do
    limit=$(awk -v n="$name" '$1 == n { print $2 }' BENCH-LIMITS)
    if [[ -z "$limit" || ! -e "$bin/bench-$name" ]]; then
        echo "== benches/$name.rs: not in this bundle (BENCH-LIMITS: $(cut -d' ' -f1 BENCH-LIMITS | tr '\n' ' '))"
        continue
    fi
    [[ $name == kernels || $name == attention_* ]] && torch_wanted=1
    rm -rf "$out/criterion-$name"
    echo "== benches/$name.rs (limit $limit s)"
    t0=$SECONDS
    # shellcheck disable=SC2086  # BENCH_FILTER is a word list on purpose
    CRITERION_HOME="$out/criterion-$name" timeout -k 5 "$limit" "$bin/bench-$name" --bench --warm-up-time 1 \
        --measurement-time 2 --sample-size 20 --noplot ${BENCH_FILTER:-} >"$out/bench-$name.log" 2>&1
    bstatus=$?
    echo "bench exit status $bstatus after $((SECONDS - t0)) s (log: bench-$name.log)"
    ((bstatus == 0)) || bench_failed+=("$name (exit $bstatus$( ((bstatus == 124 || bstatus == 137)) && echo ": timed out"))")
    grep -E 'time:|thrpt:|skipped|panicked|^decode_step' "$out/bench-$name.log" | tail -3
    crit_dirs+=("$out/criterion-$name")
done

if [[ $torch_wanted == 1 && "${RUN_TORCH:-1}" == 1 ]]; then
    echo "== PyTorch reference (same shapes)"
    timeout -k 5 120 python3 gpu_torch_ref.py "$out/torch.json" >"$out/torch.log" 2>&1
    echo "torch exit status $? (log: torch.log)"
    tail -2 "$out/torch.log"
fi

crit_list=$(IFS=:; echo "${crit_dirs[*]:-}")
python3 gpu_check_table.py "$tests_log" "$crit_list" "$out/torch.json" "$device, driver $driver" "$out/results.json"
status=$?
if ((${#bench_failed[@]})); then
    echo "FAILED benches: ${bench_failed[*]} (see their logs)"
    status=1
fi
# The criterion folders hold hundreds of files; the tool returns few: keep one archive.
(cd "$out" && ls -d criterion-* >/dev/null 2>&1 && tar -czf criterion.tgz criterion-* && rm -rf criterion-*)
rm -f "$out/one.log"
exit $status
