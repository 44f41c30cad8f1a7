//! The exported ONNX graphs run in ONNX Runtime (python `onnxruntime`, pinned in scripts/requirements.txt and
//! installed into .venv by scripts/setup-python.sh) with the same outputs as in tract, stage by stage.
//!
//! f32: every stage within 1e-4 of tract. int8: both runtimes compute the same s8×s8 arithmetic, so most rows
//! agree to f32 rounding; a row may differ where an f32 intermediate (LayerNorm, softmax, GELU, computed by each
//! runtime's own kernels) lies within rounding noise of a quantization boundary and the two runtimes round an
//! activation to neighbouring integers — one step of max|x|/127 on one input, a few 1e-2 after the next
//! LayerNorm. Hence int8 allows 0.1 on any stage and at most 5% of rows beyond 1e-4.
//!
//! Skipped, loudly, when python3 or onnxruntime is missing and `CI` is unset; under CI it fails instead.

use cosee_runtime::manifest::{exit_file, layer_file, EmbeddingStorage, QuantScheme, EMBEDDINGS_FILE};
use cosee_runtime::{ExitSignal, Task};
use cosee_tools::check::{sample_batch, StagePlans};
use cosee_tools::reference::Hidden;
use cosee_tools::testing::tiny_config;
use cosee_tools::{export, write_random_checkpoint, ExportOptions};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The project's virtual environment's python when set up, else python3 from PATH; None (or a panic under CI)
/// when it cannot import onnxruntime and numpy.
fn python() -> Option<PathBuf> {
    let venv = root().join(".venv/bin/python");
    let candidates = [venv, PathBuf::from("python3")];
    for py in &candidates {
        let ok = Command::new(py)
            .args(["-c", "import onnxruntime, numpy"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Some(py.clone());
        }
    }
    let ci = std::env::var("CI").map(|v| !v.is_empty() && v != "false" && v != "0").unwrap_or(false);
    if ci {
        panic!("CI is set but neither .venv/bin/python nor python3 can import onnxruntime and numpy: run scripts/setup-python.sh");
    }
    eprintln!(
        "\n==================== SKIPPED: export_ort ====================\n\
         python3 with onnxruntime + numpy not found (run scripts/setup-python.sh).\n\
         The exported graphs were NOT checked in ONNX Runtime.\n\
         =============================================================\n"
    );
    None
}

/// Runs tract over each batch, recording every stage's input and output (each stage fed tract's own previous
/// output), in the layout scripts/ort_check.py reads.
fn tract_cases(package: &Path, layers: usize, hidden: usize, vocab: usize) -> Value {
    let plans = StagePlans::load(package, layers).unwrap();
    let mut cases = Vec::new();
    for (seed, (batch, sequence)) in [(1, 1), (2, 7), (1, 40), (2, 40)].into_iter().enumerate() {
        let tokens = sample_batch(batch, sequence, vocab, 50 + seed as u64);
        let mut stages = serde_json::Map::new();
        let emb = plans.embeddings(&tokens, hidden).unwrap();
        stages.insert(EMBEDDINGS_FILE.into(), json!({ "output": emb.data }));
        let mut h: Hidden = emb;
        for m in 1..=layers {
            let next = plans.layer(m, &h, &tokens.attention_mask).unwrap();
            stages.insert(layer_file(m), json!({ "input": h.data, "output": next.data }));
            let logits = plans.exit(m, &next).unwrap();
            stages.insert(exit_file(m), json!({ "input": next.data, "output": logits }));
            h = next;
        }
        cases.push(json!({
            "batch": batch, "sequence": sequence, "input_ids": tokens.input_ids,
            "token_type_ids": tokens.token_type_ids, "attention_mask": tokens.attention_mask, "stages": stages,
        }));
    }
    json!({ "cases": cases })
}

fn ort_check(python: &Path, package: &Path, cases: &Value, tolerance: f64, max_rows_off: f64) -> Value {
    let cases_path = package.with_extension("cases.json");
    std::fs::write(&cases_path, cases.to_string()).unwrap();
    let out = Command::new(python)
        .arg(root().join("scripts/ort_check.py"))
        .arg("--package")
        .arg(package)
        .arg("--cases")
        .arg(&cases_path)
        .args(["--tolerance", &tolerance.to_string(), "--max-rows-off", &max_rows_off.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("ort_check.py gave no report ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    assert!(out.status.success() && report["ok"] == true, "ONNX Runtime disagrees with tract: {report:#}");
    report
}

#[test]
fn exported_graphs_run_in_onnx_runtime_like_in_tract() {
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    let (layers, hidden) = (3, 64);
    let config = tiny_config(layers, hidden, 4, Task::Sst2, ExitSignal::Energy);
    write_random_checkpoint(&ckpt, &config, 21).unwrap();
    let vocab = config.bert.vocab_size;

    let f32_pkg = tmp.path().join("f32");
    export(&ckpt, &f32_pkg, &ExportOptions::default()).unwrap();
    let report = ort_check(&python, &f32_pkg, &tract_cases(&f32_pkg, layers, hidden, vocab), 1e-4, 0.0);
    eprintln!("f32: ORT vs tract max |Δ| {}", report["max"]);
    assert_eq!(report["stages"].as_object().unwrap().len(), 1 + 2 * layers);

    for embeddings in [EmbeddingStorage::F16, EmbeddingStorage::Int8] {
        let pkg = tmp.path().join(format!("int8-{embeddings:?}"));
        export(&ckpt, &pkg, &ExportOptions { embeddings, ..ExportOptions::int8() }).unwrap();
        let report = ort_check(&python, &pkg, &tract_cases(&pkg, layers, hidden, vocab), 0.1, 0.05);
        eprintln!(
            "int8 ({embeddings:?} embeddings): ORT vs tract max |Δ| {}, {} of {} rows beyond 1e-4",
            report["max"], report["rows_off"], report["rows"]
        );
    }

    // ONNX Runtime's own dynamic form, written by us: ORT must run it like tract does (the same u8×s8 arithmetic;
    // the rows that differ are the int8 rounding-boundary rows described above), and must fuse every linear
    // layer's chain into its int8 kernels, or the form would not be the fast path it exists for.
    let pkg = tmp.path().join("int8-ort");
    let options = ExportOptions::quantized(QuantScheme::Int8OrtDynamic);
    export(&ckpt, &pkg, &options).unwrap();
    let report = ort_check(&python, &pkg, &tract_cases(&pkg, layers, hidden, vocab), 0.1, 0.05);
    eprintln!(
        "int8-ort: ORT vs tract max |Δ| {}, {} of {} rows beyond 1e-4; ORT's layer_01 after optimization: {}",
        report["max"], report["rows_off"], report["rows"], report["optimized_ops"]["layer_01.onnx"]
    );
    let ops = &report["optimized_ops"]["layer_01.onnx"];
    assert_eq!(ops["MatMulInteger"], Value::Null, "ORT left an unfused MatMulInteger: {ops}");
    assert_eq!(
        ops["DynamicQuantizeMatMul"].as_u64().unwrap_or(0) + ops["MatMulIntegerToFloat"].as_u64().unwrap_or(0),
        6,
        "{ops}"
    );
}
