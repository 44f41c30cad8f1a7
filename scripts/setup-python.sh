#!/usr/bin/env bash
# Installs the pinned Python packages the interoperability tests use (ONNX Runtime, numpy), into a project-local
# virtual environment so nothing system-wide changes. Prints nothing on success when already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=".venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import onnxruntime, numpy" 2>/dev/null; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
fi
