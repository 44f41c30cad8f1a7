#!/usr/bin/env bash
# Issue 13's engine ratios for the Raspberry Pi's cores, from emulated instruction counts: a Pi cannot be timed
# here, but qemu-user as a Cortex-A72 (Pi 4) or A76 (Pi 5) runs the same aarch64 code a Pi runs, and counting its
# instructions (scripts/qemu-insn-count.c) is deterministic. What it cannot see is how fast each instruction is on
# the real core (SIMD int8 dot products against scalar code), so the ratios are instruction ratios, not timings.
#
#   scripts/pi-ratios.sh [--ort-lib PATH] [--out FILE.json]
#
# Measures, per CPU and at 16 and 64 tokens, the instructions of one input at full depth (embeddings, 6 layers, an
# exit; τ 0 never exits early) of a random checkpoint of the shipped shape (6 layers, hidden 384, 12 heads) in
# three forms: tract f32 (`--quantize none`), tract int8 (ours), and ONNX Runtime on the `int8-ort` form (the node
# chain of its own `quantize_dynamic`; with `--ort-lib`: the aarch64 libonnxruntime.so of the pinned PyPI wheel,
# e.g. from `pip download onnxruntime==1.23.2 --platform manylinux_2_27_aarch64 --only-binary=:all: --no-deps`;
# without it, the ORT column is left out). Each count is (1 + K inputs) - (1 input) over K: loading, and planning the
# stages the background planner had not reached (the first full-depth input waits for every one of them), are not in
# it. Instruction counts do not depend on the weights' values, so a random checkpoint stands for the trained one.
# Needs scripts/setup-aarch64.sh (and for ORT, Debian's libstdc++6-arm64-cross).
set -euo pipefail
cd "$(dirname "$0")/.."

ort_lib=""
out="docs/results/pi-ratios.json"
while [ $# -gt 0 ]; do
  case "$1" in
    --ort-lib) ort_lib="$(realpath "$2")"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

target="aarch64-unknown-linux-gnu"
work="target/pi-ratios"
qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
# The Pi 4 and Pi 5 (scripts/pi-configs.sh; not the no-SDOT variant, which no Pi runs by default).
# shellcheck source=scripts/pi-configs.sh
source scripts/pi-configs.sh
configs=("${pi_configs[@]:0:2}")
runs=4
mkdir -p "$work"

scripts/setup-aarch64.sh
LIBTORCH="${LIBTORCH:-$(scripts/setup-libtorch.sh)}"
export LIBTORCH
cargo build --release -q --workspace --all-targets
cargo build --release -q --target "$target" -p cosee-runtime --bin cosee-edge
arm="target/$target/release/cosee-edge"
plugin="$work/insn-count.so"
cc -shared -fPIC -O2 -o "$plugin" scripts/qemu-insn-count.c

# The packages, all three by our exporter.
target/release/examples/random_checkpoint "$work/checkpoint" 6 384 12 >/dev/null
forms=(none int8)
[ -n "$ort_lib" ] && forms+=(int8-ort)
for form in "${forms[@]}"; do
  [ -f "$work/pkg-$form/manifest.json" ] ||
    target/release/cosee-tools export --checkpoint "$work/checkpoint" --out "$work/pkg-$form" --quantize "$form" \
      --force >/dev/null
done

# count NAME CPU ENV FORM BACKEND INPUT_FILE: instructions of classify over INPUT_FILE's lines, into $count.
count() {
  local cpu="$2" env_pairs=() backend_env=()
  [ -n "$3" ] && IFS=',' read -r -a env_pairs <<<"$3"
  [ "$5" = ort ] && backend_env=(ORT_DYLIB_PATH="$ort_lib")
  env "${env_pairs[@]}" "${backend_env[@]}" "${qemu[@]}" -cpu "$cpu" -plugin "$plugin,out=$work/insns.txt" "$arm" \
    classify --model "$work/pkg-$4" --backend "$5" --threshold 0 --json <"$6" >"$work/answers.jsonl" \
    2>"$work/classify.log" || { cat "$work/classify.log" >&2; exit 1; }
  count="$(awk '{print $2}' "$work/insns.txt")"
}

for tokens in 16 64; do
  # "good" is one word piece: n of them and [CLS], [SEP] make `tokens`.
  python3 -c "print('\n'.join([' '.join(['good'] * ($tokens - 2))] * (1 + $runs)))" >"$work/in-$tokens.txt"
  head -n 1 "$work/in-$tokens.txt" >"$work/first-$tokens.txt"
done

rows=()
for c in "${configs[@]}"; do
  name="${c%%=*}"
  spec="${c#*=}"
  cpu="${spec%%,*}"
  env_spec=""
  [ "$spec" != "$cpu" ] && env_spec="${spec#*,}"
  for form in "${forms[@]}"; do
    backends=(tract)
    [ "$form" = int8-ort ] && backends=(ort)
    for backend in "${backends[@]}"; do
      for tokens in 16 64; do
        count "$name" "$cpu" "$env_spec" "$form" "$backend" "$work/first-$tokens.txt"
        base="$count"
        count "$name" "$cpu" "$env_spec" "$form" "$backend" "$work/in-$tokens.txt"
        per_input=$(((count - base) / runs))
        echo "  $name $form/$backend $tokens tokens: $per_input instructions per full-depth input"
        rows+=("$name $form $backend $tokens $per_input")
      done
    done
  done
done

printf '%s\n' "${rows[@]}" >"$work/rows.txt"
python3 - "$work/rows.txt" "$out" <<'PY'
import json, sys
rows, out = sys.argv[1], sys.argv[2]
counts = {}
for line in open(rows):
    cpu, form, backend, tokens, n = line.split()
    counts.setdefault(cpu, {}).setdefault(tokens, {})[f"{backend}-{form}"] = int(n)
result = {"what": "instructions per input at full depth (embeddings, 6 layers, one exit), random checkpoint of the "
                  "shipped shape (6 x 384, 12 heads), qemu-user with scripts/qemu-insn-count.c; made by "
                  "scripts/pi-ratios.sh", "counts": counts, "ratios": {}}
lines = ["| CPU | tokens | tract int8 / ORT int8 | tract f32 / tract int8 |", "|---|---:|---:|---:|"]
for cpu, by_tokens in counts.items():
    for tokens, c in by_tokens.items():
        r = {}
        if "ort-int8-ort" in c:
            r["tract_int8_over_ort_int8"] = c["tract-int8"] / c["ort-int8-ort"]
        r["tract_f32_over_tract_int8"] = c["tract-none"] / c["tract-int8"]
        result["ratios"].setdefault(cpu, {})[tokens] = r
        ort = f"{r['tract_int8_over_ort_int8']:.2f}" if "tract_int8_over_ort_int8" in r else "—"
        lines.append(f"| {cpu} | {tokens} | {ort} | {r['tract_f32_over_tract_int8']:.2f} |")
json.dump(result, open(out, "w"), indent=1)
print("\n".join(lines))
PY
echo "written: $out"
