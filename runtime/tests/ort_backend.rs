//! The ONNX Runtime backend against tract on one package, through the same exit loop: every exit's logits agree and
//! early exit takes the same decisions (cargo feature `ort`).
//!
//! ```text
//! export ORT_DYLIB_PATH=$PWD/.venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.23.2
//! COSEE_TEST_PACKAGE=PKG cargo test --release -p cosee-runtime --features ort --test ort_backend
//! ```
//!
//! `COSEE_TEST_PACKAGE` is any package (e.g. `cosee-tools export --checkpoint BACKBONE --task sst-2 --out PKG`, f32 or
//! int8); the test fails, not skips, without it: it only builds when the feature is asked for.

use cosee_runtime::ort_backend::OrtBackend;
use cosee_runtime::{Engine, Input, Package};
use std::path::PathBuf;

const SENTENCES: [&str; 6] = [
    "a gorgeous , witty , seductive movie .",
    "the movie is a disaster from start to finish",
    "it 's not a bad film , but it is n't a good one either",
    "an ambitious , moving and often hilarious look at life on the road",
    "ok",
    "the plot is paper thin and the characters are cardboard cut-outs , yet i could not stop watching",
];

fn package() -> Package {
    let dir = std::env::var_os("COSEE_TEST_PACKAGE").expect("set COSEE_TEST_PACKAGE to a package directory");
    Package::open(&PathBuf::from(dir)).expect("COSEE_TEST_PACKAGE is not a valid package")
}

#[test]
fn ort_backend_agrees_with_tract() {
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
