#!/usr/bin/env bash
# Unpacks the libtorch that tch 0.24 links against (2.11.0) from the PyPI torch wheel, with no Python needed
# afterwards. Idempotent and cached under the user's cache directory. Prints the LIBTORCH directory on stdout;
# `source <(scripts/setup-libtorch.sh --env)` exports LIBTORCH for the calling shell.
#
# On a machine with a full torch 2.11 install (the GPU machine), skip this and set LIBTORCH_USE_PYTORCH=1.
set -euo pipefail

TORCH_VERSION=2.11.0
CUDART_VERSION=13.0.96
CUPTI_VERSION=13.0.85
cache="${XDG_CACHE_HOME:-$HOME/.cache}/cosee-edge"
dest="$cache/libtorch-$TORCH_VERSION"

if [ ! -f "$dest/build-version" ]; then
  command -v python3 >/dev/null || { echo "setup-libtorch: python3 with pip is needed to download the torch wheel" >&2; exit 1; }
  wheels="$cache/wheels"
  mkdir -p "$wheels"
  echo "setup-libtorch: downloading torch==$TORCH_VERSION wheels from PyPI into $wheels" >&2
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" \
    "torch==$TORCH_VERSION" "nvidia-cuda-runtime==$CUDART_VERSION" "nvidia-cuda-cupti==$CUPTI_VERSION" >&2
  tmp="$dest.partial"
  rm -rf "$tmp"
  mkdir -p "$tmp/lib" "$tmp/unzip"
  torch_whl=$(ls "$wheels"/torch-"$TORCH_VERSION"-*.whl | head -n1)
  echo "setup-libtorch: unpacking $(basename "$torch_whl")" >&2
  python3 - "$torch_whl" "$tmp" <<'PY'
import sys, zipfile, os, shutil
whl, out = sys.argv[1], sys.argv[2]
keep_libs = {"libtorch_cpu.so", "libtorch.so", "libc10.so", "libgomp.so.1", "libshm.so", "libtorch_global_deps.so"}
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith("torch/include/") and not name.endswith("/"):
            target = os.path.join(out, "include", name[len("torch/include/"):])
        elif name.startswith("torch/lib/") and os.path.basename(name) in keep_libs:
            target = os.path.join(out, "lib", os.path.basename(name))
        else:
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(name) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
  # libtorch_cpu.so links these two small CUDA libraries even on the CPU-only path.
  for pkg in nvidia_cuda_runtime nvidia_cuda_cupti; do
    whl=$(ls "$wheels"/${pkg}-*.whl | head -n1)
    python3 - "$whl" "$tmp/lib" <<'PY'
import sys, zipfile, os, shutil
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if base.startswith(("libcudart.so.", "libcupti.so.")):
            with z.open(name) as src, open(os.path.join(out, base), "wb") as dst:
                shutil.copyfileobj(src, dst)
PY
  done
  echo "$TORCH_VERSION" > "$tmp/build-version"
  rm -rf "$tmp/unzip" "$dest"
  mv "$tmp" "$dest"
  echo "setup-libtorch: libtorch $TORCH_VERSION ready in $dest" >&2
fi

if [ "${1:-}" = "--env" ]; then
  # Only LIBTORCH: build-version says 2.11.0, which torch-sys 0.24 accepts, and every other LIBTORCH* variable
  # that changes re-runs torch-sys's 85-second C++ build.
  echo "export LIBTORCH=$dest"
else
  echo "$dest"
fi
