#!/usr/bin/env python3
"""Where an exit's normalized energy gets its ranking from (issue 12: why OSC hurts on all-MiniLM-L6-v2).

For two classes the logits f = (f0, f1) split into a common level c = (f0 + f1) / 2 and a margin d = f1 - f0:
logsumexp(f) = c + log(2 cosh(d / 2)), so the energy sigmoid(-logsumexp f) ranks samples by c and |d| together.
Cross-entropy only ever sees d; c is free. OSC pushes the energy of right answers down and of wrong ones up, and
may do so through c. This script reads `cosee-trainer eval --save-logits` outputs and reports, per exit, the DIS
(CascadeBERT's difficulty inversion score, as in cosee_runtime::metrics) of the energy, of the margin |d| alone
and of the level c alone, and how much of the spread of logsumexp comes from c.

    scripts/signal_analysis.py NAME=runs/x/eval-dev/eval_logits.json [NAME=...] [--json out.json]
"""
import json
import math
import sys


def dis(confidence, correct):
    """1 - inverted (easy, hard) pairs / all pairs; a hard sample more confident than an easy one inverts, ties half."""
    pairs = sorted(zip(confidence, correct))
    easy_total = sum(1 for _, c in pairs if c)
    hard_total = len(pairs) - easy_total
    if easy_total == 0 or hard_total == 0:
        return None
    inversions, hard_above, i = 0.0, hard_total, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        easy = sum(1 for _, c in pairs[i:j] if c)
        hard = (j - i) - easy
        hard_above -= hard
        inversions += easy * (hard_above + 0.5 * hard)
        i = j
    return 1.0 - inversions / (easy_total * hard_total)


def lse(z):
    m = max(z)
    return m + math.log(sum(math.exp(v - m) for v in z))


def var(xs):
    mu = sum(xs) / len(xs)
    return sum((x - mu) ** 2 for x in xs) / len(xs)


def analyse(path):
    doc = json.load(open(path))
    labels, logits = doc["labels"], doc["logits"]
    rows = []
    for m, exit_logits in enumerate(logits[:-1]):
        correct = [max(range(len(z)), key=z.__getitem__) == y for z, y in zip(exit_logits, labels)]
        level = [sum(z) / len(z) for z in exit_logits]
        margin = [abs(z[1] - z[0]) if len(z) == 2 else sorted(z)[-1] - sorted(z)[-2] for z in exit_logits]
        l = [lse(z) for z in exit_logits]
        energy = [1.0 / (1.0 + math.exp(v)) if v > -700 else 1.0 for v in l]
        shape = [a - c for a, c in zip(l, level)]  # logsumexp minus the level: a function of the margin only
        easy = [e for e, c in zip(energy, correct) if c]
        hard = [e for e, c in zip(energy, correct) if not c]
        rows.append({
            "exit": m + 1,
            "accuracy": sum(correct) / len(correct),
            "dis_energy": dis([-e for e in energy], correct),
            "dis_margin_only": dis(margin, correct),
            "dis_level_only": dis(level, correct),
            "mean_energy_right": sum(easy) / max(len(easy), 1),
            "mean_energy_wrong": sum(hard) / max(len(hard), 1),
            "var_level": var(level),
            "var_margin_part": var(shape),
            "mean_level": sum(level) / len(level),
        })
    return rows


def main(argv):
    out = None
    if "--json" in argv:
        i = argv.index("--json")
        out = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    result = {}
    for arg in argv:
        name, _, path = arg.partition("=")
        result[name] = analyse(path)
    print("| run | exit | acc | DIS energy | DIS margin only | DIS level only | energy right / wrong | var level / var margin part | mean level |")
    print("|---|---:|---:|---:|---:|---:|---|---|---:|")
    fmt = lambda v: "–" if v is None else f"{v:.3f}"
    for name, rows in result.items():
        for r in rows:
            print(f"| {name} | {r['exit']} | {100 * r['accuracy']:.1f} | {fmt(r['dis_energy'])} | {fmt(r['dis_margin_only'])} | "
                  f"{fmt(r['dis_level_only'])} | {r['mean_energy_right']:.3f} / {r['mean_energy_wrong']:.3f} | "
                  f"{r['var_level']:.3f} / {r['var_margin_part']:.3f} | {r['mean_level']:.2f} |")
    if out:
        json.dump(result, open(out, "w"), indent=1)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0)
    main(sys.argv[1:])
