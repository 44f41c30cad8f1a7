//! The shipped default model, `models/sst2-minilm-l6`, as a newcomer meets it: the README's first command.
//!
//! It loads (every file's sha256 against its manifest), its calibrated default τ keeps the promise of the package
//! format (a layer speed-up of at least 2 on SST-2 dev), and it answers plain English sentences the way a reader
//! would, at the default τ and at full depth, through the library and through the `cosee-edge` binary.

mod common;

use common::cosee_edge;
use cosee_runtime::{Engine, ExitPolicy, ExitSignal, Input};
use std::path::PathBuf;
use std::process::Command;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/sst2-minilm-l6")
}

/// Sentences not in SST-2, with the label any reader would give them.
const CLEAR: [(&str, &str); 6] = [
    ("a gorgeous, witty, seductive movie.", "positive"),
    ("one of the best films of the year, funny and deeply moving", "positive"),
    ("i loved every minute of it", "positive"),
    ("the plot is a mess and the acting is even worse", "negative"),
    ("a boring, pointless waste of two hours", "negative"),
    ("dull, lifeless and far too long", "negative"),
];

#[test]
fn shipped_model_loads_and_answers_plain_sentences() {
    let engine = Engine::load(&shipped()).expect("the committed package loads and its checksums match");
    let manifest = engine.manifest();
    assert_eq!(manifest.num_layers, 6);
    assert!(manifest.calibration.is_some(), "the shipped package is calibrated");
    let default =
        manifest.calibration_at(manifest.default_threshold).expect("the default τ is a point of the calibration table");
    assert!(default.layer_speedup >= 2.0, "default τ speed-up {:.2}", default.layer_speedup);

    let full_depth = ExitPolicy { signal: ExitSignal::Energy, threshold: 0.0 };
    let mut early = 0;
    for (text, label) in CLEAR {
        let answer = engine.classify(&Input::single(text)).unwrap();
        assert_eq!(answer.label, label, "default τ: {text}");
        early += usize::from(answer.exit_layer < 6);
        let deep = engine.classify_with(&Input::single(text), full_depth).unwrap();
        assert_eq!((deep.label.as_str(), deep.exit_layer), (label, 6), "full depth: {text}");
    }
    assert!(early > 0, "at the default τ no clear sentence left early");
}

#[test]
fn readme_first_command_works() {
    let out = Command::new(cosee_edge())
        .args(["classify", "--model"])
        .arg(shipped())
        .arg("a gorgeous, witty, seductive movie.")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("positive"), "{text}");
    assert!(text.contains("exit ") && text.contains("/6"), "{text}");
}
