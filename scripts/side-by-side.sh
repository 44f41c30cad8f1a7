#!/usr/bin/env bash
# ONNX Runtime beside cosee-edge on one package, the same inputs and token ids, in one invocation:
#
#   scripts/side-by-side.sh --package PKG [--f32-package PKG] [--int8-ort-package PKG] --data dev.tsv [--limit N]
#                           [--out DIR] [--ort-backend] [-- PYARGS…]
#
# 1. `cosee-edge bench` on PKG (and on the f32 package): our early exit at the package's τ and our full depth,
#    interleaved per input, one thread;
# 2. runtime/examples/dump_tokens.rs: the token ids the runtime gave those inputs;
# 3. scripts/ort_side_by_side.py: the packages' stage graphs chained in ONNX Runtime (f32, the package's int8 graph,
#    ORT's own quantize_dynamic int8), full depth and early exit, 1 thread and all cores, on those token ids.
# With --ort-backend, also the runtime's own exit loop on its ONNX Runtime backend (cargo feature `ort`, the .venv
# wheel's libonnxruntime.so): runtime/examples/ort_bench.rs, the same bench on every package, ORT's own int8 form of
# the f32 package included (DIR/package-int8-ort, written by ort_side_by_side.py --write-ort-int8-package), and
# --int8-ort-package, the same form written by `cosee-tools export --quantize int8-ort` (rows `int8-ort-export`).
# Writes DIR/ours-int8.json, DIR/ours-f32.json, DIR/tokens.jsonl, DIR/side-by-side.json and DIR/side-by-side.md
# (default DIR: target/side-by-side); the table is printed too. Arguments after `--` go to ort_side_by_side.py.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2; }
package="" f32_package="" int8_ort_package="" data="" limit="" out="target/side-by-side" ort_backend=""
py_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --package) package="$2"; shift 2 ;;
    --f32-package) f32_package="$2"; shift 2 ;;
    --int8-ort-package) int8_ort_package="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --ort-backend) ort_backend=1; shift ;;
    --) shift; py_args=("$@"); break ;;
    -h|--help) usage ;;
    *) echo "side-by-side.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$package" ] && [ -n "$data" ] || usage
mkdir -p "$out"

# Python: the pinned interoperability packages plus onnx (for ORT's quantize_dynamic), in .venv.
scripts/setup-python.sh
if ! .venv/bin/python -c "import onnx" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/requirements-side-by-side.txt
fi

# The test command's own build (scripts/test.sh): the same feature unification, so nothing of tract rebuilds.
LIBTORCH="$(scripts/setup-libtorch.sh)"
export LIBTORCH
cargo build --release --workspace --all-targets >&2
limit_args=()
[ -n "$limit" ] && limit_args=(--limit "$limit")

echo "side-by-side: cosee-edge bench on $package" >&2
target/release/cosee-edge bench --model "$package" --data "$data" "${limit_args[@]}" --json "$out/ours-int8.json" \
  --profile-out "$out/device-profile-int8.json" >&2
ours_f32=()
if [ -n "$f32_package" ]; then
  echo "side-by-side: cosee-edge bench on $f32_package" >&2
  target/release/cosee-edge bench --model "$f32_package" --data "$data" "${limit_args[@]}" \
    --json "$out/ours-f32.json" --profile-out "$out/device-profile-f32.json" >&2
  ours_f32=(--f32-package "$f32_package" --ours-f32 "$out/ours-f32.json")
fi
target/release/examples/dump_tokens "$package" "$data" $limit > "$out/tokens.jsonl"

ours_ort=()
ort_package=()
if [ -n "$f32_package" ]; then
  ort_package=(--ort-int8-package "$out/package-int8-ort")
  rm -rf "$out/package-int8-ort"
  .venv/bin/python scripts/ort_side_by_side.py --write-ort-int8-package --package "$package" \
    --f32-package "$f32_package" "${ort_package[@]}"
fi
if [ -n "$ort_backend" ]; then
  ORT_DYLIB_PATH="$(ls "$PWD"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n1)"
  export ORT_DYLIB_PATH
  cargo build --release --workspace --all-targets >&2    # ort_bench: the `ort` feature is on by default
  forms=("int8-pkg=$package")
  [ -n "$f32_package" ] && forms+=("f32=$f32_package" "int8-ort=$out/package-int8-ort")
  [ -n "$int8_ort_package" ] && forms+=("int8-ort-export=$int8_ort_package")
  for f in "${forms[@]}"; do
    echo "side-by-side: the runtime's ORT backend on ${f#*=} (${f%%=*})" >&2
    target/release/examples/ort_bench "${f#*=}" "$data" $limit > "$out/ours-ort-${f%%=*}.json"
    ours_ort+=(--ours-ort "${f%%=*}=$out/ours-ort-${f%%=*}.json")
  done
fi

.venv/bin/python scripts/ort_side_by_side.py --tokens "$out/tokens.jsonl" --package "$package" \
  --ours "$out/ours-int8.json" "${ours_f32[@]}" "${ours_ort[@]}" "${ort_package[@]}" --json "$out/side-by-side.json" "${py_args[@]}" \
  | tee "$out/side-by-side.md"
