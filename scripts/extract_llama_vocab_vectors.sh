#!/usr/bin/env bash
# One-off: how tests/fixtures/qwen2-vocab/ggml-vocab-qwen2.gguf.{inp,out} were made.
# They are llama.cpp's tokenizer test vectors for the Qwen2 BPE, shipped inside the
# llama-cpp-python 0.3.36 sdist (77 MB); the two small files are committed so CI never
# downloads the sdist. `pip download --no-binary` is avoided on purpose: it builds the sdist's
# metadata, which bootstraps CMake from source (many minutes). Take the sdist link (with its
# sha256) from PyPI's simple index instead, as pip itself would.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT

python3 - "$tmp" <<'PY'
import hashlib, re, sys, urllib.request
html = urllib.request.urlopen("https://pypi.org/simple/llama-cpp-python/").read().decode()
url, sha = re.search(r'href="([^"#]*/llama_cpp_python-0\.3\.36\.tar\.gz)#sha256=([0-9a-f]{64})"', html).groups()
path = f"{sys.argv[1]}/llama_cpp_python-0.3.36.tar.gz"
urllib.request.urlretrieve(url, path)
assert hashlib.sha256(open(path, "rb").read()).hexdigest() == sha, "sha256 mismatch"
print("llama_cpp_python-0.3.36.tar.gz", sha)
PY
dest="$repo/tests/fixtures/qwen2-vocab"
mkdir -p "$dest"
for ext in inp out; do
    tar -xzf "$tmp"/llama_cpp_python-0.3.36.tar.gz -O \
        "llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf.$ext" \
        > "$dest/ggml-vocab-qwen2.gguf.$ext"
done
sha256sum "$dest"/ggml-vocab-qwen2.gguf.*
