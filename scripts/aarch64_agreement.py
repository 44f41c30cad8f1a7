#!/usr/bin/env python3
"""x86 / aarch64 agreement of `cosee-edge classify --json` on one model package (issue 7).

Runs the native binary and the aarch64 binary (under qemu-user, once per emulated configuration) over the same
inputs, twice each:
  * full depth (a threshold no exit can meet): every layer's exit signal and the last exit's probabilities;
  * early exit at a threshold τ placed in the widest gap between the native run's signals (so the exit layers spread
    over the model, and no input sits next to τ where a rounding difference could legitimately move it).
Labels and exit layers must be identical; probabilities and signals must agree within the tolerance (1e-4 for
an f32 package, 1e-3 for int8). Any difference or error fails the check (exit status 1) with the inputs named.

Python standard library only, so CI needs nothing installed for it.
"""

import argparse
import json
import os
import subprocess
import sys
import time

TOLERANCE = {"none": 1e-4, "int8_per_token_symmetric": 1e-3}


def read_inputs(path):
    """One input per line; a GLUE TSV (header `sentence\tlabel`) gives its first column."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if lines and lines[0].startswith("sentence\t"):
        lines = [line.split("\t")[0].strip() for line in lines[1:]]
    return [line for line in lines if line.strip()]


def classify(command, env_extra, package, threshold, inputs):
    """Runs `classify --json` over stdin; returns (answers, seconds)."""
    env = dict(os.environ)
    env.update(env_extra)
    argv = command + ["classify", "--model", package, "--json", f"--threshold={threshold!r}"]
    started = time.monotonic()
    proc = subprocess.run(
        argv, input="\n".join(inputs) + "\n", capture_output=True, text=True, env=env, check=False
    )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"FAIL: {' '.join(argv)} exited {proc.returncode}\n{proc.stderr[-4000:]}")
    answers = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    if len(answers) != len(inputs):
        sys.exit(f"FAIL: {' '.join(argv)} answered {len(answers)} of {len(inputs)} inputs")
    for a in answers:
        if "error" in a:
            sys.exit(f"FAIL: {' '.join(argv)} input {a.get('input')}: {a['error']}")
    return answers, elapsed


def never_exit_threshold(signal, num_layers):
    """A finite τ that no internal exit meets (ExitSignal::meets), so every input runs to the last layer."""
    return {"energy": -1.0, "entropy": -1.0, "max_softmax": 2.0}.get(signal, float(num_layers + 1))


def spread_threshold(signal, full_depth, num_layers):
    """τ in the middle of the widest gap between the internal exits' signals, within their central half."""
    if signal == "patience":
        return float(max(2, num_layers // 2)), None
    values = sorted(v for a in full_depth for v in a["signals"][:-1] if v is not None)
    if len(values) < 4:
        return never_exit_threshold(signal, num_layers), None
    lo, hi = len(values) // 4, (3 * len(values)) // 4
    best = max(range(lo, hi), key=lambda i: values[i + 1] - values[i])
    return (values[best] + values[best + 1]) / 2, (values[best + 1] - values[best]) / 2


def compare(reference, candidate):
    """Counts and largest differences of one run against the native one."""
    same_label = sum(r["label"] == c["label"] for r, c in zip(reference, candidate))
    same_exit = sum(r["exit_layer"] == c["exit_layer"] for r, c in zip(reference, candidate))
    d_probs = d_signals = 0.0
    mismatches = []
    for i, (r, c) in enumerate(zip(reference, candidate)):
        if r["label"] != c["label"] or r["exit_layer"] != c["exit_layer"]:
            mismatches.append(
                f"input {i + 1}: x86 {r['label']}@{r['exit_layer']} {r['probs']} {r['signals']}"
                f" / arm {c['label']}@{c['exit_layer']} {c['probs']} {c['signals']}"
            )
            continue
        d_probs = max([d_probs] + [abs(a - b) for a, b in zip(r["probs"], c["probs"])])
        for a, b in zip(r["signals"], c["signals"]):
            if (a is None) != (b is None):
                mismatches.append(f"input {i + 1}: skipped exits differ: {r['signals']} / {c['signals']}")
            elif a is not None:
                d_signals = max(d_signals, abs(a - b))
    return same_label, same_exit, d_probs, d_signals, mismatches


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", required=True)
    p.add_argument("--inputs", required=True, help="one input per line, or a GLUE TSV")
    p.add_argument("--native", required=True, help="x86 cosee-edge")
    p.add_argument("--arm", required=True, help="aarch64 cosee-edge")
    p.add_argument("--qemu", default="qemu-aarch64 -L /usr/aarch64-linux-gnu")
    p.add_argument(
        "--config",
        action="append",
        required=True,
        help="NAME=CPU[,VAR=VALUE...]: one emulated configuration (qemu -cpu CPU, extra environment)",
    )
    args = p.parse_args()

    with open(os.path.join(args.package, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    scheme = manifest["quantization"]["scheme"]
    tol = TOLERANCE.get(scheme)
    if tol is None:
        sys.exit(f"FAIL: no tolerance known for quantization scheme {scheme!r}")
    layers = manifest["num_layers"]
    signal = manifest["signal"]["name"]
    inputs = read_inputs(args.inputs)
    name = os.path.basename(os.path.normpath(args.package))

    native = [args.native]
    tau_full = never_exit_threshold(signal, layers)
    full, t_full = classify(native, {}, args.package, tau_full, inputs)
    tau, margin = spread_threshold(signal, full, layers)
    early, t_early = classify(native, {}, args.package, tau, inputs)
    hist = [sum(a["exit_layer"] == m for a in early) for m in range(1, layers + 1)]
    margin_text = f", nearest signal {margin:.2e} away" if margin is not None else ""
    print(
        f"{name}: {scheme}, {layers} layers, {signal}, {len(inputs)} inputs; native {t_full + t_early:.1f} s; "
        f"early-exit τ={tau:.6g}{margin_text}, exit layers {hist}"
    )

    failed = False
    for config in args.config:
        label, _, spec = config.partition("=")
        cpu, *env_pairs = spec.split(",")
        env = dict(pair.split("=", 1) for pair in env_pairs)
        arm = args.qemu.split() + ["-cpu", cpu, args.arm]
        results = []
        seconds = 0.0
        for tau_run, reference in ((tau_full, full), (tau, early)):
            answers, elapsed = classify(arm, env, args.package, tau_run, inputs)
            seconds += elapsed
            results.append(compare(reference, answers))
        same_label = min(r[0] for r in results)
        same_exit = min(r[1] for r in results)
        d_probs = max(r[2] for r in results)
        d_signals = max(r[3] for r in results)
        mismatches = [m for r in results for m in r[4]]
        ok = not mismatches and d_probs <= tol and d_signals <= tol
        failed |= not ok
        print(
            f"  {'ok  ' if ok else 'FAIL'} {label:<22} labels {same_label}/{len(inputs)}  "
            f"exit layers {same_exit}/{len(inputs)}  max|Δp| {d_probs:.2e}  max|Δsignal| {d_signals:.2e}  "
            f"(tolerance {tol:g}; emulated {seconds:.1f} s)"
        )
        for m in mismatches[:10]:
            print(f"       {m}")
    if failed:
        print(f"FAIL: {name}: the aarch64 answers differ from x86", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
