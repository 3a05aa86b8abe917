#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler from PyPI into ${SCALERL_CACHE:-~/.cache/scalerl}/nvcc-13.0
# and prints the CUDA_HOME to use. Every wheel is pinned: nvcc's wheel names its dependencies
# without versions, and a newer nvcc emits PTX that the GPU machines' CUDA 13.0 driver rejects.
# cccl is needed because cuda_fp16.h includes <nv/target>.
set -euo pipefail
cache="${SCALERL_CACHE:-$HOME/.cache/scalerl}"
venv="$cache/nvcc-13.0"
python="${PYTHON:-python3}"
pins=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)
stamp="$venv/.pins-$(printf '%s\n' "${pins[@]}" | sha256sum | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "${pins[@]}" >&2
    touch "$stamp"
fi
cuda_home=$(ls -d "$venv"/lib/python3*/site-packages/nvidia/cu13)
"$cuda_home/bin/nvcc" --version | grep -q "release 13.0" || { echo "install-nvcc: wrong nvcc version" >&2; exit 1; }
echo "$cuda_home"
