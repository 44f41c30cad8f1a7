#!/usr/bin/env bash
# The Python package (runtime/python, docs/python.md), run by scripts/test.sh after the cargo tests: builds the wheel
# with maturin (pinned, like pytest, in scripts/requirements-wheel.txt; installed into the project's .venv) in the
# same target directory as the cargo build, installs the wheel into a fresh virtual environment, runs the README's
# three-line example there, then the pytest suite (runtime/python/tests) against the shipped model and the
# cosee-edge binary of the same target directory. After the cargo tests only pyo3, the runtime (without its `http`
# feature) and the bindings compile (see the feature pins in runtime/python/Cargo.toml): under a minute.
#
#
#   scripts/python-wheel.sh            the x86-64 wheel, installed and tested
#   scripts/python-wheel.sh aarch64    the Raspberry Pi wheel, cross-built only (docs/python.md: no aarch64 CPython
#                                      to import it under qemu here; cold, this compiles tract for aarch64: minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
started=$SECONDS
arch="${1:-x86_64}"
case "$arch" in
  x86_64 | aarch64) ;;
  *) echo "usage: scripts/python-wheel.sh [x86_64|aarch64]" >&2; exit 2 ;;
esac

venv=".venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pinned="$(sed -n 's/^maturin==//p' scripts/requirements-wheel.txt)"
if [ "$("$venv/bin/maturin" --version 2>/dev/null || true)" != "maturin $pinned" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/requirements-wheel.txt
fi

# The wheel: the crate is a workspace member, so its dependencies are the ones `cargo build --workspace` compiled.
out="$target_dir/wheels"
rm -f "$out"/cosee_edge-*"$arch".whl
if [ "$arch" = aarch64 ]; then
  # The cross gcc and glibc of the Pi build (.cargo/config.toml names the linker). abi3 needs no aarch64 Python to
  # build against.
  scripts/setup-aarch64.sh
  "$venv/bin/maturin" build --release --manifest-path runtime/python/Cargo.toml --out "$out" \
    --target aarch64-unknown-linux-gnu
  wheel="$(ls "$out"/cosee_edge-*aarch64.whl)"
  # What can be checked without an aarch64 interpreter: an aarch64 shared object that exports the module's init.
  unpacked="$target_dir/python-wheel-aarch64"
  rm -rf "$unpacked"
  python3 -m zipfile -e "$wheel" "$unpacked"
  so="$unpacked/cosee_edge/_native.abi3.so"
  file "$so" | grep -q "ARM aarch64" || { file "$so"; echo "python-wheel: not an aarch64 object"; exit 1; }
  aarch64-linux-gnu-nm -D --defined-only "$so" | grep -q " PyInit__native$" ||
    { echo "python-wheel: $so does not export PyInit__native"; exit 1; }
  echo "python-wheel: built $wheel, an aarch64 extension exporting PyInit__native ($((SECONDS - started)) s)"
  exit 0
fi
"$venv/bin/maturin" build --release --manifest-path runtime/python/Cargo.toml --out "$out" \
  --interpreter "$venv/bin/python"
wheel="$(ls "$out"/cosee_edge-*x86_64.whl)"
echo "python-wheel: built $wheel ($((SECONDS - started)) s)"

# A fresh environment, as a user's: only the wheel and pytest.
fresh="$target_dir/python-wheel-venv"
rm -rf "$fresh"
python3 -m venv "$fresh"
"$fresh/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel" "$(grep "^pytest==" scripts/requirements-wheel.txt)"
"$fresh/bin/python" - <<'PY'
from cosee_edge import Engine
e = Engine("models/sst2-minilm-l6")
a = e.classify("a tender, funny film")
assert a["label"] == "positive", a
print(f"python-wheel: the README example answers {a['label']} at layer {a['exit_layer']}/{a['num_layers']}")
PY
COSEE_EDGE="$target_dir/release/cosee-edge" "$fresh/bin/python" -m pytest -q -p no:cacheprovider runtime/python/tests
echo "python-wheel: done ($((SECONDS - started)) s)"
