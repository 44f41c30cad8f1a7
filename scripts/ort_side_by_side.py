#!/usr/bin/env python3
"""ONNX Runtime beside the cosee-edge runtime: the same model package, the same token ids, the same machine.

Reads the token ids the runtime gives every input (runtime/examples/dump_tokens.rs) and the JSON of
`cosee-edge bench` on the same inputs (our early exit at the package's τ and our full depth, one thread; with
--ours-ort, the same bench on the runtime's ORT backend, runtime/examples/ort_bench.rs), then runs
the package's stage graphs in ONNX Runtime, batch 1, chained embeddings → layer_01 … layer_M → exit_M:

  * forms: `f32` (the f32 package's graphs), `int8-pkg` (the int8 package's graphs: per-token symmetric activations
    quantized with basic ops, s8×s8 MatMulInteger, as tract runs them), `int8-ort` (ONNX Runtime's own
    `quantize_dynamic` of the f32 package's layers and exits — DynamicQuantizeLinear + MatMulInteger fused by ORT
    into DynamicQuantizeMatMul —, what a user choosing ONNX Runtime would run; needs the `onnx` package; written as
    a package the runtime's ORT backend opens too, with --ort-int8-package);
  * depths: full (every layer, the last exit answers) and early exit (the exit loop of engine.rs — exit m's signal
    against τ, stopping at the first exit that meets it — written out in Python around ORT sessions);
  * threads: 1 and all cores (intra-op), inter-op 1, sequential execution, all graph optimizations; multi-threaded
    sessions do not spin between runs unless --spin (every stage is a session with its own pool).

Every configuration runs every input once, interleaved per input in a rotating order, after warm-up, so that load
from other processes hits them alike. Latency is from token ids to logits (ORT has no tokenizer here); ours includes
tokenization, whose mean is printed beside it. Prints a markdown table (ratios against the fastest ORT int8 full-depth
configuration on one thread) and, with --layer-tokens, the time of one layer at those token counts; writes JSON.
Progress goes to stderr.

usage: ort_side_by_side.py --tokens T.jsonl --package INT8_PKG --ours BENCH.json [--f32-package PKG
       --ours-f32 BENCH.json] [--ours-ort FORM=BENCH.json …] [--ort-int8-package DIR] [--threshold T] [--warmup N] [--layer-tokens 16,64] [--layer-runs N] [--json OUT]
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- exit signals, as runtime/src/signal.rs defines them ----------------------------------------------------------

def log_sum_exp(z):
    m = float(np.max(z))
    if not math.isfinite(m):
        return m
    return m + math.log(float(np.sum(np.exp(z - m))))


def signal_value(name, z, tracker):
    if name == "energy":
        x = -log_sum_exp(z)
        return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
    if name == "entropy":
        lse = log_sum_exp(z)
        logp = z - lse
        return float(-np.sum(np.exp(logp) * logp) / math.log(len(z)))
    if name == "max_softmax":
        return float(np.exp(np.max(z) - log_sum_exp(z)))
    if name == "patience":
        current = int(np.argmax(z))
        tracker["streak"] = tracker["streak"] + 1 if tracker.get("previous") == current else 0
        tracker["previous"] = current
        return float(tracker["streak"])
    raise ValueError(f"unknown exit signal {name}")


def meets(name, value, tau):
    if math.isnan(value):
        return False
    if name in ("energy", "entropy"):
        return value < tau
    if name == "max_softmax":
        return value > tau
    return value >= tau


# ---- ORT chains ---------------------------------------------------------------------------------------------------

def stage_files(manifest):
    return ["embeddings.onnx"] + [f for m in range(1, manifest["num_layers"] + 1)
                                  for f in (f"layer_{m:02}.onnx", f"exit_{m:02}.onnx")]


SPIN = False


def session(path, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads > 1 and not SPIN:
        # Each stage is its own session with its own intra-op pool; spinning workers of the idle stages' pools
        # would compete with the running stage's (2M + 1 pools per chain).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


class Chain:
    """One form of the model in ORT at one thread count: embeddings, M layers, M exits."""

    def __init__(self, form, directory, manifest, threads):
        self.form, self.threads, self.manifest = form, threads, manifest
        self.m = manifest["num_layers"]
        s = {f: session(os.path.join(directory, f), threads) for f in stage_files(manifest)}
        self.emb = s["embeddings.onnx"]
        self.layers = [s[f"layer_{m:02}.onnx"] for m in range(1, self.m + 1)]
        self.exits = [s[f"exit_{m:02}.onnx"] for m in range(1, self.m + 1)]
        self.emb_inputs = [i.name for i in self.emb.get_inputs()]
        self.layer_inputs = [[i.name for i in l.get_inputs()] for l in self.layers]

    def layer(self, m, hidden, mask):
        feeds = {n: (hidden if n == "hidden_states" else mask) for n in self.layer_inputs[m - 1]}
        return self.layers[m - 1].run(None, feeds)[0]

    def run(self, toks, policy):
        """Logits of the answering exit and its layer; `policy` None = full depth (only the last exit runs)."""
        h = self.emb.run(None, {n: toks[n] for n in self.emb_inputs})[0]
        mask = toks["attention_mask"]
        tracker = {"streak": 0}
        answer = None
        for m in range(1, self.m + 1):
            h = self.layer(m, h, mask)
            if policy is None and m < self.m:
                continue
            z = self.exits[m - 1].run(None, {"hidden_states": h})[0][0]
            if policy is None:
                return z, m
            if not np.all(np.isfinite(z)):
                continue
            answer = (z, m)
            if m == self.m or meets(policy[0], signal_value(policy[0], z, tracker), policy[1]):
                break
        return answer if answer is not None else (z, self.m)


def quantize_with_ort(f32_dir, manifest, out_dir):
    """A package in `out_dir` whose layers and exits are ONNX Runtime's own dynamic quantization (per-tensor u8
    activations, s8 weights) of the f32 package's; embeddings, tokenizer and manifest copied, the manifest's file
    list re-digested so that the runtime (its ORT backend) opens it too. Its manifest still says f32: the format has
    no name for this form, which only ORT runs fast (it is for measuring, not for shipping)."""
    import hashlib
    import shutil
    from onnxruntime.quantization import QuantType, quantize_dynamic
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(f32_dir, "manifest.json")) as f:
        m = json.load(f)
    for f in m["files"]:
        src, dst = os.path.join(f32_dir, f), os.path.join(out_dir, f)
        if f.startswith(("layer_", "exit_")):
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        else:
            shutil.copyfile(src, dst)
        with open(dst, "rb") as g:
            data = g.read()
        m["files"][f] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(m, f, indent=2)
        f.write("\n")
    return out_dir


# ---- statistics ---------------------------------------------------------------------------------------------------

def percentile(values, p):
    return float(np.percentile(np.asarray(values), p, method="linear")) if values else float("nan")


def stats(ms):
    return {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "mean": float(np.mean(ms)) if ms else float("nan")}


def load_tokens(path):
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                toks = {k: np.asarray(r[k], dtype=np.int64).reshape(1, -1)
                        for k in ("input_ids", "token_type_ids", "attention_mask")}
                rows.append((toks, r.get("label")))
    return rows


def ours_rows(bench, precision, engine="cosee-edge (tract)"):
    tokenize = next((s["ms"] for s in bench["stage_costs"]["mean_ms"] if s["stage"] == "tokenize"), None)
    common = {"engine": engine, "precision": precision, "threads": 1, "n": bench["n"],
              "tokenize_ms": tokenize}
    rows = [dict(common, depth=f"early exit τ={bench['threshold']:g}", accuracy=bench.get("accuracy"),
                 latency_ms=bench["latency_ms"], exit_histogram=bench["exit_histogram"])]
    if bench.get("full_depth_latency_ms"):
        rows.append(dict(common, depth="full", accuracy=bench.get("full_depth_accuracy"),
                         latency_ms=bench["full_depth_latency_ms"]))
    return rows


def fmt(v, spec):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def table(rows, ref):
    out = [f"| engine | precision | depth | threads | accuracy | p50 ms | p95 ms | mean ms | p50 / ref | mean / ref |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lat = r["latency_ms"]
        acc = r.get("accuracy")
        out.append(f"| {r['engine']} | {r['precision']} | {r['depth']} | {r['threads']} | "
                   f"{fmt(None if acc is None else 100 * acc, '.2f')} | {fmt(lat['p50'], '.3f')} | "
                   f"{fmt(lat['p95'], '.3f')} | {fmt(lat['mean'], '.3f')} | "
                   f"{fmt(lat['p50'] / ref['latency_ms']['p50'], '.2f')}× | "
                   f"{fmt(lat['mean'] / ref['latency_ms']['mean'], '.2f')}× |")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", help="JSON lines from runtime/examples/dump_tokens.rs")
    parser.add_argument("--package", required=True, help="the int8 package (the one shipped)")
    parser.add_argument("--ours", help="cosee-edge bench --json of --package on the same inputs")
    parser.add_argument("--f32-package", help="the f32 export of the same model")
    parser.add_argument("--ours-f32", help="cosee-edge bench --json of --f32-package")
    parser.add_argument("--ours-ort", action="append", default=[], metavar="FORM=BENCH.json",
                        help="runtime/examples/ort_bench.rs JSON of one form (f32, int8-pkg, int8-ort): the runtime's "
                             "exit loop on its ORT backend (repeatable)")
    parser.add_argument("--ort-int8-package", metavar="DIR",
                        help="where the int8-ort package is (written there first if it has no manifest)")
    parser.add_argument("--write-ort-int8-package", action="store_true",
                        help="only write the int8-ort package of --f32-package into --ort-int8-package, and exit")
    parser.add_argument("--threshold", type=float, help="τ of the ORT early-exit rows (default: the package's)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="'all cores' count")
    parser.add_argument("--spin", action="store_true", help="let multi-threaded ORT pools spin between runs")
    parser.add_argument("--no-ort-quantize", action="store_true", help="skip ORT's quantize_dynamic form")
    parser.add_argument("--layer-tokens", default="16,64", help="token counts of the one-layer timing ('' = none)")
    parser.add_argument("--layer-runs", type=int, default=200)
    parser.add_argument("--json", help="write every number here")
    args = parser.parse_args()
    global SPIN
    SPIN = args.spin
    if args.write_ort_int8_package:
        if not (args.f32_package and args.ort_int8_package):
            sys.exit("--write-ort-int8-package needs --f32-package and --ort-int8-package")
        log(f"side-by-side: writing ORT's quantize_dynamic of {args.f32_package} to {args.ort_int8_package}")
        quantize_with_ort(args.f32_package, None, args.ort_int8_package)
        return 0
    if not (args.tokens and args.ours):
        parser.error("--tokens and --ours are required")

    with open(os.path.join(args.package, "manifest.json")) as f:
        manifest = json.load(f)
    signal = manifest["signal"]["name"]
    tau = args.threshold if args.threshold is not None else manifest["default_threshold"]
    inputs = load_tokens(args.tokens)
    if not inputs:
        sys.exit(f"{args.tokens}: no inputs")
    threads = sorted({1, args.threads})

    forms = [("int8-pkg", args.package)]
    tmp = tempfile.TemporaryDirectory()
    if args.f32_package:
        forms.insert(0, ("f32", args.f32_package))
        if not args.no_ort_quantize:
            try:
                target = args.ort_int8_package or tmp.name
                if not os.path.exists(os.path.join(target, "manifest.json")):
                    log("side-by-side: quantizing the f32 package with onnxruntime.quantization.quantize_dynamic")
                    quantize_with_ort(args.f32_package, manifest, target)
                forms.append(("int8-ort", target))
            except ImportError as e:
                log(f"side-by-side: no `int8-ort` form ({e}); pip install -r scripts/requirements-side-by-side.txt")
    chains = []
    for form, directory in forms:
        for t in threads:
            log(f"side-by-side: loading {form} ({directory}) in ONNX Runtime {ort.__version__}, {t} thread(s)")
            chains.append(Chain(form, directory, manifest, t))
    configs = [(c, None) for c in chains] + [(c, (signal, tau)) for c in chains]

    for toks, _ in inputs[:args.warmup]:
        for chain, policy in configs:
            chain.run(toks, policy)
    times = [[] for _ in configs]
    preds = [[] for _ in configs]
    layers = [[] for _ in configs]
    labels = []
    for i, (toks, label) in enumerate(inputs):
        for j in range(len(configs)):
            k = (i + j) % len(configs)
            chain, policy = configs[k]
            start = time.perf_counter()
            z, m = chain.run(toks, policy)
            times[k].append((time.perf_counter() - start) * 1e3)
            preds[k].append(int(np.argmax(z)))
            layers[k].append(m)
        labels.append(label)
        if (i + 1) % 50 == 0 or i + 1 == len(inputs):
            log(f"side-by-side: {i + 1}/{len(inputs)} inputs")

    labelled = [i for i, l in enumerate(labels) if l is not None]
    rows = []
    with open(args.ours) as f:
        ours = json.load(f)
    rows += ours_rows(ours, "int8")
    if args.ours_f32:
        with open(args.ours_f32) as f:
            rows += ours_rows(json.load(f), "f32")
    for spec in args.ours_ort:
        form, _, path = spec.partition("=")
        with open(path) as f:
            rows += ours_rows(json.load(f), form, "cosee-edge (ORT backend)")
    for k, (chain, policy) in enumerate(configs):
        acc = (sum(preds[k][i] == labels[i] for i in labelled) / len(labelled)) if labelled else None
        row = {"engine": f"ONNX Runtime {ort.__version__}", "precision": chain.form, "threads": chain.threads,
               "depth": "full" if policy is None else f"early exit τ={tau:g}", "n": len(inputs), "accuracy": acc,
               "latency_ms": stats(times[k])}
        if policy is not None:
            row["exit_histogram"] = [layers[k].count(m) for m in range(1, chain.m + 1)]
        rows.append(row)
    refs = [r for r in rows if r["engine"].startswith("ONNX") and r["precision"].startswith("int8")
            and r["depth"] == "full" and r["threads"] == 1]
    ref = min(refs, key=lambda r: r["latency_ms"]["mean"])

    print(f"{len(inputs)} inputs, batch 1; {os.uname().machine}, {len(os.sched_getaffinity(0))} cores; "
          f"ref = ONNX Runtime {ref['precision']} full depth, 1 thread")
    print()
    print(table(rows, ref))
    tok = [r.get("tokenize_ms") for r in rows if r.get("tokenize_ms") is not None]
    if tok:
        print()
        print(f"cosee-edge latencies include tokenization (mean {tok[0]:.3f} ms); ONNX Runtime's start from token ids.")

    layer_rows = []
    lengths = [int(t) for t in args.layer_tokens.split(",") if t.strip()]
    if lengths:
        hidden = manifest["hidden_size"]
        rng = np.random.default_rng(0)
        print()
        print(f"one layer (layer_01) in ONNX Runtime, batch 1, median of {args.layer_runs} interleaved runs (ms)")
        print()
        print("| form | threads | " + " | ".join(f"{t} tokens" for t in lengths) + " |")
        print("|---|---:|" + "---:|" * len(lengths))
        medians = {(c.form, c.threads): [] for c in chains}
        for t in lengths:
            x = rng.standard_normal((1, t, hidden)).astype(np.float32)
            mask = np.ones((1, t), dtype=np.int64)
            for c in chains:
                for _ in range(20):
                    c.layer(1, x, mask)
            samples = {key: [] for key in medians}
            for _ in range(args.layer_runs):
                for c in chains:
                    start = time.perf_counter()
                    c.layer(1, x, mask)
                    samples[(c.form, c.threads)].append((time.perf_counter() - start) * 1e3)
            for key in medians:
                medians[key].append(float(np.median(samples[key])))
        for (form, t), ms in medians.items():
            print(f"| {form} | {t} | " + " | ".join(f"{v:.3f}" for v in ms) + " |")
            layer_rows.append({"form": form, "threads": t, "tokens": lengths, "median_ms": ms})

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"onnxruntime": ort.__version__, "machine": os.uname().machine,
                       "cores": len(os.sched_getaffinity(0)), "signal": signal, "threshold": tau,
                       "reference": {k: ref[k] for k in ("engine", "precision", "depth", "threads")},
                       "rows": rows, "one_layer": layer_rows}, f, indent=1)
        log(f"side-by-side: JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
