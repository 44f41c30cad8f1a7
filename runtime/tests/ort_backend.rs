//! The ONNX Runtime backend against tract on one package, through the same exit loop: every exit's logits agree and
//! early exit takes the same decisions (cargo feature `ort`, on by default).
//!
//! The package is `COSEE_TEST_PACKAGE` when set (any package: f32, int8 or int8-ort), else the shipped one. ONNX
//! Runtime's library is `ORT_DYLIB_PATH` when set, else the one scripts/setup-python.sh installs into `.venv`.
//! Without either, the test is skipped loudly, and fails under CI, like tests/export_ort.rs.

use cosee_format::testing;
use cosee_runtime::ort_backend::{OrtBackend, DYLIB_ENV};
use cosee_runtime::{BackendKind, Engine, Input, Package};
use std::path::PathBuf;

const SENTENCES: [&str; 6] = [
    "a gorgeous , witty , seductive movie .",
    "the movie is a disaster from start to finish",
    "it 's not a bad film , but it is n't a good one either",
    "an ambitious , moving and often hilarious look at life on the road",
    "ok",
    "the plot is paper thin and the characters are cardboard cut-outs , yet i could not stop watching",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn package() -> Package {
    let dir = std::env::var_os("COSEE_TEST_PACKAGE").map(PathBuf::from);
    let dir = dir.unwrap_or_else(|| root().join("models/sst2-minilm-l6"));
    Package::open(&dir).unwrap_or_else(|e| panic!("{} is not a valid package: {e}", dir.display()))
}

/// Points `ORT_DYLIB_PATH` at ONNX Runtime's library (the `.venv` wheel's unless already set); false, with a loud
/// note, when there is none (a panic under CI).
fn onnx_runtime() -> bool {
    let Some(library) = testing::onnx_runtime_library(&root()) else {
        assert!(!testing::under_ci(), "CI is set but there is no ONNX Runtime library: run scripts/setup-python.sh");
        eprintln!(
            "\n==================== SKIPPED: ort_backend ====================\n\
             no ONNX Runtime library ({DYLIB_ENV} unset, none in .venv: run scripts/setup-python.sh).\n\
             The ONNX Runtime backend was NOT checked.\n\
             ==============================================================\n"
        );
        return false;
    };
    // The tests of this binary run on several threads, and every one of them sets the same value.
    std::env::set_var(DYLIB_ENV, library);
    true
}

/// `--backend ort` is [`Engine::load_on`]: the same engine as the typed one, answering alike.
#[test]
fn the_run_time_choice_loads_onnx_runtime() {
    if !onnx_runtime() {
        return;
    }
    let dir = package().dir().to_path_buf();
    let chosen = Engine::load_on(&dir, BackendKind::Ort).unwrap();
    assert_eq!(chosen.backend().kind(), BackendKind::Ort);
    let typed = Engine::<OrtBackend>::with_backend(package()).unwrap();
    for s in SENTENCES {
        let input = Input::single(s);
        let (a, b) = (chosen.run_all_exits(&input).unwrap(), typed.run_all_exits(&input).unwrap());
        assert_eq!(a.logits, b.logits, "{s}");
    }
}

#[test]
fn ort_backend_agrees_with_tract() {
    if !onnx_runtime() {
        return;
    }
    let package = package();
    let int8 = package.manifest().quantization.scheme != cosee_runtime::manifest::QuantScheme::None;
    // f32: both engines compute the same graph in f32. int8: the two engines round an activation scale differently in
    // the last ulp now and then, moving a value by one quantization step, and six layers carry it on to the logits
    // (9e-2 measured on all-MiniLM-L6 with random heads; scripts/ort_check.py allows 0.1 per stage).
    let tolerance = if int8 { 0.25 } else { 1e-3 };
    let tract = Engine::new(package.clone()).unwrap();
    let ort = Engine::<OrtBackend>::with_backend(package).unwrap();
    assert_eq!(ort.num_layers(), tract.num_layers());
    let mut worst = 0f32;
    for s in SENTENCES {
        let input = Input::single(s);
        let (a, b) = (tract.run_all_exits(&input).unwrap(), ort.run_all_exits(&input).unwrap());
        assert_eq!(a.logits.len(), b.logits.len());
        for (za, zb) in a.logits.iter().zip(&b.logits) {
            for (x, y) in za.iter().zip(zb) {
                worst = worst.max((x - y).abs());
            }
        }
        assert_eq!(b.stage_ms.iter().count(), 2 + 2 * ort.num_layers(), "every stage timed");
        let policy = tract.default_policy();
        let (ea, eb) = (tract.classify_with(&input, policy).unwrap(), ort.classify_with(&input, policy).unwrap());
        if worst < 1e-3 {
            assert_eq!(ea.exit_layer, eb.exit_layer, "{s}");
            assert_eq!(ea.label_index, eb.label_index, "{s}");
        }
        assert_eq!(eb.exit_layer, b.exit_layer(policy), "the ORT exit loop decides as its own full-depth logits say");
    }
    assert!(worst <= tolerance, "max |Δlogit| tract vs ORT {worst} > {tolerance}");
    eprintln!("max |Δlogit| tract vs ONNX Runtime: {worst:.2e}");
}
