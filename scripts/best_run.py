#!/usr/bin/env python3
"""Prints the run directory whose hold-out evaluation scores best, as scripts/objectives.sh leaves them
(RUN/eval-holdout/eval.json). Dev is never looked at: it stays an unseen-data number.

    scripts/best_run.py [--at 2.0 [--at 3.0 …]] [--require-weights] [--json] RUN_DIR …

The score is the mean of the task's metric at the given layer speed-ups (Eq. 12; default 2.0), ties broken by the
full-depth metric. Runs without a hold-out evaluation, or missing one of the speed-ups, are skipped (and named on
stderr); --require-weights also skips runs without RUN/model/model.safetensors. --json prints every scored run
and the choice instead of the bare directory. Exit 1 when no run qualifies. Standard library only.
"""
import argparse
import json
import sys
from pathlib import Path


def full_depth(report):
    last = report["layers"][-1]
    # MRPC and QQP report F1 (cosee-trainer eval writes it per layer); the rest accuracy.
    return last["f1"] if report.get("task") in ("mrpc", "qqp") and last.get("f1") is not None else last["accuracy"]


def score(run, speedups):
    path = Path(run) / "eval-holdout" / "eval.json"
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return None, f"no hold-out evaluation ({err})"
    at = report.get("at_speedup") or {}
    missing = [s for s in speedups if s not in at]
    if missing:
        return None, f"never reaches {', '.join(missing)}× on the hold-out"
    return {"run": str(Path(run)), "score": sum(at[s] for s in speedups) / len(speedups), "full_depth": full_depth(report),
            "at_speedup": at}, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--at", action="append", help="a layer speed-up key of eval.json's at_speedup (default 2.0)")
    ap.add_argument("--require-weights", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    speedups = [f"{float(s):.1f}" for s in (a.at or ["2.0"])]
    scored = []
    for run in a.runs:
        if a.require_weights and not (Path(run) / "model" / "model.safetensors").is_file():
            print(f"best_run.py: skipping {run}: no model/model.safetensors", file=sys.stderr)
            continue
        entry, why = score(run, speedups)
        if entry is None:
            print(f"best_run.py: skipping {run}: {why}", file=sys.stderr)
        else:
            scored.append(entry)
    if not scored:
        sys.exit("best_run.py: no run qualifies")
    best = max(scored, key=lambda e: (e["score"], e["full_depth"]))
    if a.json:
        print(json.dumps({"criterion": {"split": "hold-out", "at_speedup": speedups}, "chosen": best["run"],
                          "runs": scored}, indent=2))
    else:
        print(best["run"])


if __name__ == "__main__":
    main()
