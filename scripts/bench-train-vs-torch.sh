#!/usr/bin/env bash
# Forward + backward (GRPO loss) tokens/s of scalerl's CPU trainer and of PyTorch eager
# (transformers) on the same model, sequences and thread count, in the same run; prints the ratio.
#   TORCH_PYTHON=/path/to/venv/bin/python scripts/bench-train-vs-torch.sh [MODEL_DIR BATCH LEN]
# Default: the tiny fixture model (4 x 128 tokens), then SmolLM2-135M (1 x 256) if cached.
# TORCH_PYTHON must have the pins of scripts/requirements-fixtures.txt (torch, transformers).
# ROUNDS (default 2) alternates the two sides that many times and keeps each side's best, so a
# burst of load on a shared machine does not land on one side only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py="${TORCH_PYTHON:-python3}"
threads="${THREADS:-$(nproc)}"
if [[ $# -ge 1 ]]; then
    runs=("$1 ${2:-1} ${3:-256}")
else
    runs=("tests/fixtures/tiny-qwen2 4 128")
    smol="${SCALERL_CACHE:-$HOME/.cache/scalerl}/smollm2-135m-instruct"
    if [[ -f "$smol/model.safetensors" ]]; then runs+=("$smol 1 256"); else echo "(SmolLM2-135M not cached: scripts/fetch-artifacts.sh)" >&2; fi
fi
cargo build --locked --release --bench train_cpu >&2
bench_bin=$(ls -t target/release/deps/train_cpu-* | grep -v '\.d$' | head -n 1)
printf '%-44s %-8s %14s %14s %8s\n' model tokens scalerl_tok_s torch_tok_s ratio
for run in "${runs[@]}"; do
    read -r model batch len <<<"$run"
    ours=() theirs=()
    for _ in $(seq "${ROUNDS:-2}"); do
        ours+=("$(RAYON_NUM_THREADS=$threads "$bench_bin" --json "$model" "$batch" "$len")")
        theirs+=("$("$py" scripts/bench_train_torch.py --model "$model" --batch "$batch" --len "$len" --threads "$threads" 2>/dev/null | tail -n 1)")
    done
    python3 - "$model" "${batch}x${len}" "${#ours[@]}" "${ours[@]}" "${theirs[@]}" <<'PY'
import json, sys
model, shape, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
best = lambda runs: max(json.loads(r)["fwd_bwd_tok_s"] for r in runs)
ours, theirs = best(sys.argv[4:4 + n]), best(sys.argv[4 + n:])
print(f"{model[-44:]:<44} {shape:<8} {ours:14.1f} {theirs:14.1f} {ours / theirs:7.2f}x")
PY
done
echo "(CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads, f32, fwd+bwd of GRPO loss at T=0.6)"
