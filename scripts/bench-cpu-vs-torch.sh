#!/usr/bin/env bash
# Decode and prefill speed of scalerl's CPU backend and of PyTorch eager (transformers) on the
# same model, prompt length and thread count, in the same run; prints the ratios.
#   TORCH_PYTHON=/path/to/venv/bin/python scripts/bench-cpu-vs-torch.sh [MODEL_DIR]
# TORCH_PYTHON must have the pins of scripts/requirements-fixtures.txt (torch, transformers).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model="${1:-${SCALERL_CACHE:-$HOME/.cache/scalerl}/smollm2-135m-instruct}"
py="${TORCH_PYTHON:-python3}"
threads="${THREADS:-$(nproc)}"
cargo build --locked --release --example cpu_speed >&2
printf '%-6s %-18s %12s %12s %8s\n' batch metric scalerl torch ratio
for batch in 1 8; do
    ours=$(RAYON_NUM_THREADS=$threads target/release/examples/cpu_speed "$model" "$batch" 64 64)
    theirs=$("$py" scripts/bench_torch.py --model "$model" --prompt-len 64 --new-tokens 64 --batch "$batch" --threads "$threads" | tail -n 1)
    for metric in decode_tok_s prefill_tok_s; do
        python3 - "$ours" "$theirs" "$metric" "$batch" <<'PY'
import json, sys
ours, theirs, metric, batch = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
print(f"{batch:<6} {metric:<18} {ours[metric]:12.1f} {theirs[metric]:12.1f} {ours[metric] / theirs[metric]:7.2f}x")
PY
    done
done
echo "(CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads)"
