#!/usr/bin/env bash
# The project's test command (README, CI): installs what the tests need, then runs every test in release mode
# with one target directory. Safe to re-run: each install step is cached.
set -euo pipefail
cd "$(dirname "$0")/.."

# libtorch 2.11 for tch (trainer, and tests that compare against it), unpacked from the PyPI wheel.
LIBTORCH="$(scripts/setup-libtorch.sh)"
export LIBTORCH

# ONNX Runtime for the interoperability test (the exported graphs must run there too).
scripts/setup-python.sh

cargo test --release --workspace --all-targets "$@"
