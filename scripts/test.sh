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

# The Python package: its wheel built from the same target directory, installed into a fresh venv, pytest there.
# Only the full run: a filtered run (arguments) is a developer's look at some cargo tests.
if [ "$#" -eq 0 ]; then
  scripts/python-wheel.sh
fi
