#!/usr/bin/env bash
# A long soak of `cosee-edge serve` (the CI one is tests/soak_serve.rs, 20,000 lines):
#
#   scripts/soak-serve.sh [--model PKG] [--data TSV] [--lines N] [--huge-every N] [--max-growth F] [--out FILE]
#                         [-- SERVE-FLAGS…]
#
# Feeds serve N lines (default 200,000) of the task's real sentences mixed with empty lines, invalid UTF-8, lines over
# the 1 MiB cap, 10 MB lines without whitespace (one per --huge-every lines, default 5000), lines just under the cap
# without whitespace, tab-joined pairs and odd characters, while a fake battery and thermal zone (serve's
# --power-root/--thermal-root) change every 50 ms between plausible states and garbage. `cosee-tools soak` checks
# every line answered exactly once and in order with the right kind of answer, no panic, τ changes logged, and the
# RSS (from /proc/PID/status) after the first tenth of the lines within --max-growth (default 0.05) of the
# warm-up's. Writes the JSON report to FILE (default target/soak/soak-serve.json); exits 1 when a property fails.
# Defaults: the shipped package models/sst2-minilm-l6 and the SST-2 dev set of ../shared/data/glue (or
# $GLUE_DIR); flags after `--` go to serve (e.g. -- --budget-ms 20).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2; }
model="models/sst2-minilm-l6" data="${GLUE_DIR:-../shared/data/glue}/SST-2/dev.tsv"
lines=200000 huge_every=5000 max_growth=0.05 out="target/soak/soak-serve.json"
serve_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --lines) lines="$2"; shift 2 ;;
    --huge-every) huge_every="$2"; shift 2 ;;
    --max-growth) max_growth="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --) shift; serve_args=("$@"); break ;;
    -h|--help) usage ;;
    *) echo "soak-serve.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -f "$data" ] || { echo "soak-serve.sh: no data file $data (--data or GLUE_DIR)" >&2; exit 2; }
mkdir -p "$(dirname "$out")"

# The test command's build (no tract rebuild); the trainer's tests need libtorch for it.
LIBTORCH="$(scripts/setup-libtorch.sh)"
export LIBTORCH
cargo build --release --workspace --all-targets >&2
target="${CARGO_TARGET_DIR:-target}"

"$target/release/cosee-tools" soak --serve "$target/release/cosee-edge" --model "$model" --data "$data" \
  --lines "$lines" --huge-every "$huge_every" --max-growth "$max_growth" --out "$out" -- "${serve_args[@]}" \
  > /dev/null
