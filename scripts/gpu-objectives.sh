#!/usr/bin/env bash
# Issue 12's objective comparison on a GPU machine, in one sitting with a deadline: many runs of
# scripts/objectives.sh share the one GPU (the model is small; each run is bound by kernel launches, not by the
# GPU's arithmetic), then the evaluated runs come back without their checkpoints.
#
#   SST-2, SST2_EPOCHS (3) epochs: conventional and COSEE (β0 1, α 0.1, centered logits) at seeds 42 and 43,
#          SWM-only and OSC-only (centered) at seed 42.
#   MRPC and RTE, PAIR_EPOCHS (10) epochs, the paper's schedule: conventional at seeds 42 and 43; COSEE over the
#          paper's grid β0 ∈ {0.05, 0.2, 1, 10} × α ∈ {0.001, 0.01, 0.1, 1.0} at seed 42; the setting best on the
#          hold-out (mean of the metric at 2× and 3×) again at seed 43, and with centered logits at both seeds.
#
# It needs the machine's own PyTorch 2.11 (python3 -c 'import torch') and a cosee-trainer built against the same
# libtorch (scripts/setup-libtorch.sh): tch links libtorch_cpu only, so a wrapper preloads PyTorch's
# libtorch_cuda, whose loading registers the CUDA backend.
#
#   scripts/gpu-objectives.sh --bin DIR --backbone DIR --data-dir DIR --out DIR [--deadline SECONDS]
#       [--prior DIR] [--pair-jobs N] [--sst2 "RUN …"] [--sst2-recipes "BATCH:LR …"]
#
# --prior DIR: a runs directory (TASK/RUN/…) of runs evaluated before, elsewhere; they are not trained again and
# take part in choosing the best setting. --pair-jobs: trainings at once per pair task (2). --sst2: the SST-2 runs
# (objectives.sh specs; the list above by default, "" for none); --sst2-recipes: batch size and learning rate of
# each pass over them (32:5e-5, the recipe; others are recipe probes, run side by side).
#
# OUT receives: results.tgz (every run directory minus checkpoints, weights, charts and hold-out copies; the logs
# of unfinished runs too), gpu-objectives.log, and the SST-2 run best at 2× on its hold-out as F16 weights in
# 15 MiB parts (sst2-best.f16.safetensors.part-*; `cat` them back together; its name is in sst2-best.txt).
set -uo pipefail
cd "$(dirname "$0")/.."

real_bin="" backbone="" data_dir="" out="" deadline=480 prior="" pair_jobs=2 sst2_recipes="32:5e-5"
sst2_runs="conventional:42 cosee:42:1:0.1:centered conventional:43 cosee:43:1:0.1:centered swm:42:1 osc:42:1:0.1:centered"
# GPU_OBJECTIVES_DEVICE=cpu rehearses the whole sitting on a machine without a GPU (tiny data, few epochs).
device="${GPU_OBJECTIVES_DEVICE:-cuda}"
sst2_epochs="${SST2_EPOCHS:-3}" pair_epochs="${PAIR_EPOCHS:-10}"
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) real_bin="$(cd "$2" && pwd)"; shift 2 ;;
    --backbone) backbone="$2"; shift 2 ;;
    --data-dir) data_dir="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --deadline) deadline="$2"; shift 2 ;;
    --prior) prior="$2"; shift 2 ;;
    --pair-jobs) pair_jobs="$2"; shift 2 ;;
    --sst2) sst2_runs="$2"; shift 2 ;;
    --sst2-recipes) sst2_recipes="$2"; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
for v in real_bin backbone data_dir out; do
  [ -n "${!v}" ] || { echo "give --${v//_/-}" >&2; exit 2; }
done
mkdir -p "$out"
exec > >(tee -a "$out/gpu-objectives.log") 2>&1

start=$(date +%s)
log() { printf '[%4ds] %s\n' "$(($(date +%s) - start))" "$*"; }
left() { echo $((deadline - ($(date +%s) - start))); }
work="${GPU_OBJECTIVES_WORK:-/tmp/gpu-objectives}"
runs="$work/runs"
mkdir -p "$work/bin" "$runs"
if [ -n "$prior" ]; then
  cp -r "$prior"/. "$runs"/
  log "prior runs: $(ls -d "$runs"/*/*/ 2>/dev/null | wc -l)"
fi

# --- the machine's libtorch, and a trainer that loads its CUDA backend ---
if [ "$device" = cpu ]; then
  ln -sf "$real_bin/cosee-trainer" "$work/bin/cosee-trainer"
else
torch_lib="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" \
  || { log "no PyTorch on this machine"; exit 1; }
cuda_dirs="$(python3 - <<'PY'
import glob, os, site
dirs = set()
for sp in site.getsitepackages():
    for pattern in ("libcudart.so.13*", "libcupti.so.13*"):
        dirs.update(os.path.dirname(f) for f in glob.glob(os.path.join(sp, "nvidia", "**", pattern), recursive=True))
print(":".join(sorted(dirs)))
PY
)"
cat >"$work/bin/cosee-trainer" <<EOF
#!/bin/sh
LD_LIBRARY_PATH="$torch_lib:$cuda_dirs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" LD_PRELOAD="$torch_lib/libtorch_cuda.so" exec "$real_bin/cosee-trainer" "\$@"
EOF
chmod +x "$work/bin/cosee-trainer"
export LIBTORCH="${torch_lib%/lib}"
log "torch lib $torch_lib; CUDA runtime dirs $cuda_dirs"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

log "smoke test: 64 MRPC pairs on $device"
rm -rf "$work/smoke" # a warm machine keeps /tmp: the smoke run of an earlier call would refuse a fresh start
if ! "$work/bin/cosee-trainer" train --task mrpc --backbone "$backbone" --data-dir "$data_dir" \
  --max-train-examples 64 --max-dev-examples 32 --epochs 1 --device "$device" --threads 1 --no-progress \
  --output-dir "$work/smoke" >"$out/smoke.log" 2>&1; then
  log "smoke test failed:"; tail -n 30 "$out/smoke.log"
  LD_LIBRARY_PATH="${torch_lib:-}:${cuda_dirs:-}" ldd "$real_bin/cosee-trainer" | grep -E "not found|torch|cuda" || true
  exit 1
fi
tail -n 3 "$out/smoke.log"

common=(--threads 1 --device "$device" --bin "$work/bin" --backbone "$backbone" --data-dir "$data_dir"
  --runs-dir "$runs" --no-collect --save-steps 1000)

# The best COSEE setting of a task at seed 42 on the hold-out (mean of the metric at 2× and 3×): "β0:α".
best_setting() { # task
  local run
  run="$(python3 scripts/best_run.py --at 2.0 --at 3.0 "$runs/$1"/cosee-*-s42/ 2>/dev/null)" || return 0
  python3 -c 'import json, sys; o = json.load(open(sys.argv[1]))["objective"]; print("%g:%g" % (o["beta0"], o["alpha"]))' \
    "$run/train_config.json"
}

pair_task() { # task jobs
  local task="$1" jobs="$2" grid=() best
  for b in 0.05 0.2 1 10; do for a in 0.001 0.01 0.1 1.0; do grid+=("cosee:42:$b:$a"); done; done
  scripts/objectives.sh --task "$task" --epochs "$pair_epochs" --jobs "$jobs" "${common[@]}" \
    conventional:42 conventional:43 "${grid[@]}"
  best="$(best_setting "$task")"
  [ -n "$best" ] || { log "$task: no COSEE run evaluated on the hold-out"; return 1; }
  log "$task: best COSEE setting on the hold-out (seed 42): β0:α = $best"
  scripts/objectives.sh --task "$task" --epochs "$pair_epochs" --jobs "$jobs" "${common[@]}" \
    "cosee:43:$best" "cosee:42:$best:centered" "cosee:43:$best:centered"
}

sst2() { # one pass over the SST-2 runs per recipe, side by side
  local recipe specs
  read -r -a specs <<<"$sst2_runs"
  [ "${#specs[@]}" -gt 0 ] || return 0
  for recipe in $sst2_recipes; do
    scripts/objectives.sh --task sst-2 --epochs "$sst2_epochs" --jobs "${#specs[@]}" "${common[@]}" \
      --batch-size "${recipe%%:*}" --lr "${recipe#*:}" "${specs[@]}" &
  done
  wait
}

log "launching: sst-2 (${sst2_epochs} epochs), mrpc and rte (${pair_epochs} epochs); deadline ${deadline}s"
# `timeout` ends each group with all its trainings (it signals its process group) at the deadline.
groups=()
timeout "$(left)" bash -c "$(declare -f sst2); $(declare -p common sst2_epochs sst2_runs sst2_recipes); sst2" &
groups+=($!)
for task in mrpc rte; do
  timeout "$(left)" bash -c "$(declare -f pair_task best_setting log); $(declare -p common pair_epochs runs start); pair_task $task $pair_jobs" &
  groups+=($!)
done
running() { for p in "${groups[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }

# Progress every 30 s: each training's latest step (from its metrics and checkpoints) and the GPU's load.
while running; do
  sleep 30
  log "$(ls -d "$runs"/*/*/ 2>/dev/null | wc -l) runs started, $(ls "$runs"/*/*/eval-holdout/eval.json 2>/dev/null | wc -l) evaluated; $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null)"
  for d in "$runs"/sst-2/*/; do
    [ -d "$d" ] && echo "    $(basename "$d"): $(ls "$d/checkpoints" 2>/dev/null | tail -n 1) $(grep -c '"event":"epoch"' "$d/metrics.jsonl" 2>/dev/null) epochs"
  done
done
wait "${groups[@]}" # not a bare `wait`: that would also wait for the log's tee, which never ends
log "trainings ended"

# --- pack: the evaluated runs (and the logs of the rest) without weights; the best SST-2 model as F16 parts ---
best="$(python3 scripts/best_run.py --require-weights "$runs"/sst-2/*/ 2>/dev/null)"
if [ -n "$best" ] && [ -f "$best/model/model.safetensors" ]; then
  log "best SST-2 run at 2x on its hold-out: $(basename "$best")"
  basename "$best" >"$out/sst2-best.txt"
  python3 scripts/safetensors_f16.py "$best/model/model.safetensors" "$work/sst2-best.f16.safetensors"
  sha256sum "$work/sst2-best.f16.safetensors" | cut -d' ' -f1 >>"$out/sst2-best.txt"
  split -b 15M -d "$work/sst2-best.f16.safetensors" "$out/sst2-best.f16.safetensors.part-"
fi
# Every run's model/tokenizer.json is the backbone's; only the shipped candidate keeps its copy.
find "$runs" -path '*/model/tokenizer.json' ! -path "${best:-/nonexistent}/*" -delete
tar -C "$runs" -czf "$out/results.tgz" --exclude=checkpoints --exclude=model.safetensors --exclude='*.png' \
  --exclude=holdout.tsv --exclude=optimizer.safetensors .
log "packed: $(du -sh "$out"/* | tr '\n' ' ')"
