#!/usr/bin/env bash
# The Raspberry Pi check (issue 7), run by CI after the tests: cross-builds cosee-edge for aarch64, runs it under
# qemu-user as the Pi 4 (Cortex-A72) and the Pi 5 (Cortex-A76, with and without its SDOT int8 kernels), and fails
# unless it answers like the x86 build. Also prints the tract matmul kernels picked on each CPU model, the stripped
# binary size and the emulated instruction count of loading each package, held to scripts/aarch64-budget.txt.
#
#   scripts/check-aarch64.sh [PACKAGE_DIR ...]
#
# Without PACKAGE_DIR: exports an f32 package, two int8 packages (fused and portable numerics) and the int8-ort form
# from a random 4-layer checkpoint (tools) into target/aarch64-check/, and checks them and the shipped
# models/sst2-minilm-l6.
# Emulated timings mean nothing for a Pi and are printed only as the check's own cost.
# Environment: AARCH64_PROFILE (cargo profile of the aarch64 build, default `release`; `release-pi` adds fat LTO),
# AARCH64_INPUTS (inputs file, default the 40 committed SST-2 dev sentences), AARCH64_BUDGET=warn (report an
# exceeded budget without failing).
set -euo pipefail
cd "$(dirname "$0")/.."

target="aarch64-unknown-linux-gnu"
profile="${AARCH64_PROFILE:-release}"
inputs="${AARCH64_INPUTS:-tests/data/sst2-dev-40.tsv}"
work="target/aarch64-check"
budget_file="scripts/aarch64-budget.txt"
qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
# shellcheck source=scripts/pi-configs.sh
source scripts/pi-configs.sh
configs=("${pi_configs[@]}")
started=$SECONDS
step() { echo "== check-aarch64: $* ($((SECONDS - started)) s)"; }

step "toolchain"
scripts/setup-aarch64.sh

# --- builds: native tools and runtime, then the aarch64 runtime (one cargo at a time on 2 cores) ---
step "native build"
# Exactly the test command's build (scripts/test.sh): the same feature unification, so after the tests nothing
# rebuilds. A narrower `cargo build -p` resolves features differently (cc, bytemuck, digest) and would rebuild tract.
# `cargo test --all-targets` compiles examples only as test harnesses; `cargo build --all-targets` makes the real
# executables with the same features and dependencies (tests/common/mod.rs does the same), and their paths come
# from cargo's own JSON messages.
LIBTORCH="$(scripts/setup-libtorch.sh)"
export LIBTORCH
mkdir -p "$work"
cargo build --release -q --workspace --all-targets --message-format=json-render-diagnostics \
  >"$work/native-build.json"
# exe NAME: the path of the workspace executable (bin or example, not a test harness) called NAME.
exe() {
  python3 - "$work/native-build.json" "$1" <<'PY'
import json, sys
path, name = sys.argv[1], sys.argv[2]
for line in open(path):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == name \
            and not m["profile"]["test"] and m.get("executable"):
        print(m["executable"])
        sys.exit(0)
sys.exit(f"cargo built no executable named {name}")
PY
}
native="$(exe cosee-edge)"
tools_bin="$(exe cosee-tools)"
random_checkpoint="$(exe random_checkpoint)"
step "aarch64 build (profile $profile)"
build_started=$SECONDS
cargo build --profile "$profile" -q --target "$target" -p cosee-runtime --bin cosee-edge --example tract_kernels
build_seconds=$((SECONDS - build_started))
out_dir="target/$target/$profile"
arm="$work/cosee-edge"
aarch64-linux-gnu-strip -o "$arm" "$out_dir/cosee-edge"
kernels="$out_dir/examples/tract_kernels"
echo "aarch64 build: ${build_seconds} s (incremental when nothing changed)"
failed=0

# --- the runtime's own unit tests, on each Pi CPU (cargo's runner is qemu, see .cargo/config.toml) ---
for cpu in cortex-a72 cortex-a76; do
  step "runtime unit tests under qemu -cpu $cpu"
  if QEMU_CPU="$cpu" cargo test --profile "$profile" -q --target "$target" -p cosee-runtime --lib \
    >"$work/unit-$cpu.log" 2>&1; then
    grep '^test result' "$work/unit-$cpu.log"
  else
    tail -n 60 "$work/unit-$cpu.log"
    echo "FAIL: the runtime's unit tests under qemu -cpu $cpu"
    failed=1
  fi
done

# --- packages ---
if [ "$#" -gt 0 ]; then
  packages=("$@")
else
  step "random packages"
  checkpoint="$work/checkpoint"
  rm -rf "$checkpoint"
  "$random_checkpoint" "$checkpoint" >/dev/null
  packages=("$work/random-f32" "$work/random-int8" "$work/random-int8-portable" "$work/random-int8-ort")
  "$tools_bin" export --checkpoint "$checkpoint" --out "$work/random-f32" --quantize none --force
  "$tools_bin" export --checkpoint "$checkpoint" --out "$work/random-int8" --quantize int8 --force
  # Portable numerics: held to 1e-3 against x86 (fused int8 packages to identical labels and exit layers; see
  # scripts/aarch64_agreement.py).
  "$tools_bin" export --checkpoint "$checkpoint" --out "$work/random-int8-portable" --quantize int8 \
    --numerics portable --force
  # ONNX Runtime's int8 form, made for `--backend ort` on x86; tract runs it wherever ORT is not at hand, a Pi included.
  "$tools_bin" export --checkpoint "$checkpoint" --out "$work/random-int8-ort" --quantize int8-ort --force
  # The shipped model too: the package users copy to their Pi.
  [ -f models/sst2-minilm-l6/manifest.json ] && packages+=(models/sst2-minilm-l6)
fi

# --- agreement ---
for pkg in "${packages[@]}"; do
  step "agreement $(basename "$pkg")"
  config_args=()
  for c in "${configs[@]}"; do config_args+=(--config "$c"); done
  python3 scripts/aarch64_agreement.py --package "$pkg" --inputs "$inputs" --native "$native" --arm "$arm" \
    --qemu "${qemu[*]}" "${config_args[@]}" || failed=1
done

# --- kernels per CPU model ---
for pkg in "${packages[@]}"; do
  step "tract kernels $(basename "$pkg")"
  for c in "${configs[@]}"; do
    name="${c%%=*}"
    spec="${c#*=}"
    cpu="${spec%%,*}"
    env_pairs=()
    [ "$spec" != "$cpu" ] && IFS=',' read -r -a env_pairs <<<"${spec#*,}"
    report="$(env "${env_pairs[@]}" "${qemu[@]}" -cpu "$cpu" "$kernels" "$pkg" 2>"$work/kernels.log")" || {
      cat "$work/kernels.log"
      echo "FAIL: tract_kernels under $name"
      failed=1
      continue
    }
    # One line per configuration: what tract detected, then every kernel with its matmul count.
    summary="$(grep -E '^(cpu_kind|dotprod|fp16):' <<<"$report" | tr '\n' ' ')"
    picked="$(grep '^kernel:' <<<"$report" | sed 's/^kernel: //' | paste -sd ',' | sed 's/,/, /g')"
    echo "  $name: ${summary}| $picked"
    if grep -q '^unlowered:' <<<"$report"; then
      grep '^unlowered:' <<<"$report" | sed 's/^/    /'
    fi
  done
done

# --- size and start-up budget ---
step "size and start-up budget"
plugin="$work/insn-count.so"
if [ ! -f "$plugin" ] || [ scripts/qemu-insn-count.c -nt "$plugin" ]; then
  cc -shared -fPIC -O2 -o "$plugin" scripts/qemu-insn-count.c
fi
declare -A measured
measured[binary_bytes]="$(stat -c %s "$arm")"
for pkg in "${packages[@]}"; do
  name="$(basename "$pkg")"
  # Loading = start-up, checksums, parsing and optimizing every stage plan: classify with no input.
  "${qemu[@]}" -cpu cortex-a76 -plugin "$plugin,out=$work/insns-load.txt" "$arm" classify --model "$pkg" --json \
    </dev/null >/dev/null 2>"$work/insns.log" || { cat "$work/insns.log"; exit 1; }
  measured["load_insns/$name"]="$(awk '{print $2}' "$work/insns-load.txt")"
  first="$(python3 -c 'import sys; sys.path.insert(0, "scripts"); import aarch64_agreement as a; print(a.read_inputs(sys.argv[1])[0])' "$inputs")"
  "${qemu[@]}" -cpu cortex-a76 -plugin "$plugin,out=$work/insns-one.txt" "$arm" classify --model "$pkg" --json \
    <<<"$first" >/dev/null 2>"$work/insns.log" || { cat "$work/insns.log"; exit 1; }
  one="$(awk '{print $2}' "$work/insns-one.txt")"
  echo "  $name: load ${measured[load_insns/$name]} instructions; + first input $((one - measured[load_insns/$name]))"
done
echo "  binary: ${measured[binary_bytes]} bytes, stripped, profile $profile"
over=0
for key in $(printf '%s\n' "${!measured[@]}" | sort); do
  limit="$(awk -v k="$key" '$1 == k {print $2}' "$budget_file" 2>/dev/null || true)"
  if [ -z "$limit" ]; then
    echo "  budget: $key = ${measured[$key]} has no limit in $budget_file (add one to track it)"
  elif [ "${measured[$key]}" -gt "$limit" ]; then
    echo "  budget: OVER $key = ${measured[$key]} > limit $limit"
    over=1
  else
    echo "  budget: ok $key = ${measured[$key]} <= $limit"
  fi
done
if [ "$over" = 1 ]; then
  if [ "${AARCH64_BUDGET:-fail}" = warn ]; then
    echo "WARNING: aarch64 budget exceeded (AARCH64_BUDGET=warn): see above"
  else
    echo "FAIL: aarch64 budget exceeded: fix the regression or raise the limit in $budget_file with the reason"
    failed=1
  fi
fi

step "done"
if [ "$failed" = 1 ]; then
  echo "check-aarch64: FAILED"
  exit 1
fi
echo "check-aarch64: all aarch64 checks passed"
