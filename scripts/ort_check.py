#!/usr/bin/env python3
"""Runs a COSEE model package's stage graphs in ONNX Runtime and compares them with tract's outputs.

The exported graphs are standard ONNX (opset 17, symbolic batch/sequence), so they must run in ONNX Runtime and
agree with tract, the runtime's engine. The cases file (written by tests/export_ort.rs) holds token batches and,
for every stage, the input tract was given and the output tract produced; each stage is run here on the same input
(stage by stage, so a difference is attributed to the stage that makes it) and compared on the rows the attention
mask keeps (hidden states of padded positions are never read, logits always compared).

usage: ort_check.py --package PKG --cases CASES.json --tolerance T [--max-rows-off F]

Prints a JSON report {"stages": {file: max |delta|}, "rows": n, "rows_off": k, "max": d, "ok": bool,
"onnxruntime": version, "optimized_ops": {file: {op type: count}}} and exits 1 when a stage exceeds the tolerance or more than F of the rows differ by more
than 1e-4 (F = 0 by default: every row must agree to 1e-4). With no --cases, only loads every graph and runs it
once on a small input (a smoke test of the package in ONNX Runtime).
"""
import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort

ROW_EXACT = 1e-4


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def stage_files(manifest):
    files = ["embeddings.onnx"]
    for m in range(1, manifest["num_layers"] + 1):
        files += [f"layer_{m:02}.onnx", f"exit_{m:02}.onnx"]
    return files


def tokens(case):
    shape = (case["batch"], case["sequence"])
    return {name: np.asarray(case[name], dtype=np.int64).reshape(shape)
            for name in ("input_ids", "token_type_ids", "attention_mask")}


def feeds(sess, case, stage_input, hidden):
    toks = tokens(case)
    out = {}
    for inp in sess.get_inputs():
        if inp.name == "hidden_states":
            out[inp.name] = np.asarray(stage_input, dtype=np.float32).reshape(case["batch"], case["sequence"], hidden)
        else:
            out[inp.name] = toks[inp.name]
    return out


def case_input(case, name):
    return case["stages"][name].get("input")


def optimized_ops(path, case, stage_input, hidden):
    """{op type: count} of the nodes ORT runs for the graph at `path`, after its optimizations."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "profile")
        sess = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        sess.run(None, feeds(sess, case, stage_input, hidden))
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    counts = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event["args"]["op_name"]
            counts[op] = counts.get(op, 0) + 1
    return counts


def compare(found, expected, case, is_logits):
    """Max |delta| and per-row counts, over kept positions for hidden states."""
    found = np.asarray(found, dtype=np.float32).reshape(case["batch"], -1) if is_logits else found
    expected = np.asarray(expected, dtype=np.float32).reshape(found.shape)
    if is_logits:
        rows = np.abs(found - expected).max(axis=-1)
    else:
        keep = np.asarray(case["attention_mask"]).reshape(case["batch"], case["sequence"]) != 0
        rows = np.abs(found - expected).max(axis=-1)[keep]
    rows = np.where(np.isnan(rows), np.inf, rows)
    return float(rows.max(initial=0.0)), int(rows.size), int((rows > ROW_EXACT).sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True)
    parser.add_argument("--cases")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--max-rows-off", type=float, default=0.0)
    args = parser.parse_args()

    with open(os.path.join(args.package, "manifest.json")) as f:
        manifest = json.load(f)
    hidden = manifest["hidden_size"]
    sessions = {name: session(os.path.join(args.package, name)) for name in stage_files(manifest)}

    if not args.cases:
        case = {"batch": 1, "sequence": 5, "input_ids": [2, 5, 6, 7, 3], "token_type_ids": [0] * 5,
                "attention_mask": [1] * 5}
        h = sessions["embeddings.onnx"].run(None, feeds(sessions["embeddings.onnx"], case, None, hidden))[0]
        for m in range(1, manifest["num_layers"] + 1):
            h = sessions[f"layer_{m:02}.onnx"].run(None, feeds(sessions[f"layer_{m:02}.onnx"], case, h, hidden))[0]
            z = sessions[f"exit_{m:02}.onnx"].run(None, feeds(sessions[f"exit_{m:02}.onnx"], case, h, hidden))[0]
            assert z.shape == (1, len(manifest["label_names"])) and np.isfinite(z).all(), z
        print(json.dumps({"ok": True, "onnxruntime": ort.__version__, "stages": list(sessions)}))
        return 0

    with open(args.cases) as f:
        cases = json.load(f)["cases"]
    worst = {name: 0.0 for name in sessions}
    rows = rows_off = 0
    for case in cases:
        for name, io in case["stages"].items():
            sess = sessions[name]
            out = sess.run(None, feeds(sess, case, io.get("input"), hidden))[0]
            delta, n, off = compare(out, io["output"], case, name.startswith("exit_"))
            worst[name] = max(worst[name], delta)
            rows += n
            rows_off += off
    # What ORT actually runs after its graph optimizations (fusions included), per layer, from its profiler: the
    # nodes of one run of the first case.
    optimized = {}
    for m in range(1, manifest["num_layers"] + 1):
        name = f"layer_{m:02}.onnx"
        optimized[name] = optimized_ops(os.path.join(args.package, name), cases[0], case_input(cases[0], name),
                                        hidden)
    top = max(worst.values())
    ok = top <= args.tolerance and rows_off <= args.max_rows_off * rows
    print(json.dumps({"ok": ok, "onnxruntime": ort.__version__, "max": top, "rows": rows, "rows_off": rows_off,
                      "stages": worst, "optimized_ops": optimized}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
