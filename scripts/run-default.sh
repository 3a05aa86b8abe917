#!/usr/bin/env bash
# The main job on its embedded default: `scalerl train` with no arguments. A tiny Qwen2 built
# from scratch learns small additions on the CPU (a short SFT warm start, then GRPO with the
# real loop: rollouts, the math reward, PPO updates, validation on held-out problems,
# checkpoints), in a few minutes on two cores. No GPU, no downloads beyond crates.io.
# Extra arguments go to `scalerl train` (e.g. --seed 2 --run-dir runs/seed2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --locked --release --bin scalerl
run_dir=runs/default
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    [[ "${args[i]}" == --run-dir ]] && run_dir="${args[i + 1]}"
done
if [[ -e "$run_dir/latest" ]]; then
    echo "run-default: $run_dir holds a finished run; moving it to $run_dir.old" >&2
    rm -rf "$run_dir.old" && mv "$run_dir" "$run_dir.old"
fi
target/release/scalerl train "$@"
