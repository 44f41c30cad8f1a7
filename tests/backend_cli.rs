//! `--backend`: one binary runs a package on tract or on ONNX Runtime. The `int8-ort` form (ONNX Runtime's own
//! dynamic int8, `cosee-tools export --quantize int8-ort`) answers alike on both engines through `cosee-edge
//! classify`; without ONNX Runtime's library, `--backend ort` is a clear load error, not a crash.
//!
//! The ONNX Runtime half needs the library `scripts/setup-python.sh` installs into `.venv` (or `ORT_DYLIB_PATH`):
//! without it that test is skipped loudly, and fails under CI.

mod common;

use common::{cosee_edge, run_with_stdin};
use cosee_runtime::manifest::QuantScheme;
use cosee_runtime::{ExitSignal, Task};
use cosee_tools::export::{export, ExportOptions};
use cosee_tools::testing::{onnx_runtime_library, tiny_config, under_ci, ORT_DYLIB_ENV};
use cosee_tools::write_random_checkpoint;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const SENTENCES: [&str; 4] = [
    "a charming and often affecting journey",
    "unflinchingly bleak and desperate",
    "the movie is great",
    "it 's a bad film , and the acting is worse",
];

fn int8_ort_package(root: &Path) -> PathBuf {
    let checkpoint = root.join("checkpoint");
    write_random_checkpoint(&checkpoint, &tiny_config(3, 64, 4, Task::Sst2, ExitSignal::Energy), 5).unwrap();
    let package = root.join("package");
    let options = ExportOptions::quantized(QuantScheme::Int8OrtDynamic);
    export(&checkpoint, &package, &options).unwrap();
    package
}

/// `classify --json` of [`SENTENCES`] on `backend`, with `ORT_DYLIB_PATH` set to `library` (or removed).
fn classify(package: &Path, backend: &str, library: Option<&Path>) -> (Option<i32>, Vec<Value>, String) {
    let mut cmd = Command::new(cosee_edge());
    cmd.args(["classify", "--json", "--backend", backend, "--model"]).arg(package).args(SENTENCES);
    match library {
        Some(path) => cmd.env(ORT_DYLIB_ENV, path),
        None => cmd.env_remove(ORT_DYLIB_ENV),
    };
    let out = run_with_stdin(&mut cmd, None);
    let answers = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (out.status.code(), answers, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn without_onnx_runtime_the_ort_backend_is_a_clear_load_error() {
    let root = tempfile::tempdir().unwrap();
    let package = int8_ort_package(root.path());
    let (code, answers, stderr) = classify(&package, "ort", None);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(answers.is_empty());
    assert!(stderr.contains(ORT_DYLIB_ENV) && stderr.contains("onnxruntime"), "{stderr}");
}

#[test]
fn the_int8_ort_form_answers_alike_on_both_backends() {
    let root_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let Some(library) = onnx_runtime_library(&root_dir) else {
        assert!(!under_ci(), "CI is set but there is no ONNX Runtime library: run scripts/setup-python.sh");
        eprintln!(
            "\n==================== SKIPPED: backend_cli ====================\n\
             no ONNX Runtime library ({ORT_DYLIB_ENV} unset, none in .venv: run scripts/setup-python.sh).\n\
             `--backend ort` was NOT checked.\n\
             ==============================================================\n"
        );
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let package = int8_ort_package(root.path());
    let (tract_code, tract, tract_err) = classify(&package, "tract", None);
    let (ort_code, ort, ort_err) = classify(&package, "ort", Some(&library));
    assert_eq!((tract_code, ort_code), (Some(0), Some(0)), "tract: {tract_err}\nort: {ort_err}");
    assert_eq!(tract.len(), SENTENCES.len());
    assert_eq!(ort.len(), SENTENCES.len());
    // `bench` says which engine produced its numbers.
    let data = root.path().join("inputs.txt");
    std::fs::write(&data, SENTENCES.join("\n")).unwrap();
    let mut cmd = Command::new(cosee_edge());
    cmd.args(["bench", "--plain", "--backend", "ort", "--json", "-", "--model"]).arg(&package).arg("--data").arg(&data);
    cmd.arg("--profile-out").arg(root.path().join("profile.json")).env(ORT_DYLIB_ENV, &library);
    let out = run_with_stdin(&mut cmd, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["backend"].as_str(), report["n"].as_u64()), (Some("onnxruntime"), Some(4)), "{report}");
    // The same u8×s8 arithmetic in both engines (tests/export_ort.rs: stages within 1e-6 of each other).
    for (a, b) in tract.iter().zip(&ort) {
        assert_eq!((&a["label"], &a["exit_layer"]), (&b["label"], &b["exit_layer"]), "{a}\n{b}");
        let probs =
            |v: &Value| -> Vec<f64> { v["probs"].as_array().unwrap().iter().filter_map(Value::as_f64).collect() };
        let (pa, pb) = (probs(a), probs(b));
        assert_eq!(pa.len(), 2, "{a}");
        assert!(pa.iter().zip(&pb).all(|(x, y)| (x - y).abs() < 1e-3), "{a}\n{b}");
    }
}
