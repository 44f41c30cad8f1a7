//! `cosee-edge classify` and the engine under it, on a real package: a tiny random checkpoint (3 layers, hidden 32)
//! exported by `cosee-tools`.
//!
//! The engine is tested through the library (exit at τ extremes, the exit loop against the full-depth run, bad
//! inputs, non-finite logits); the command line through the built binary, found by `common::cosee_edge`.

mod common;

use common::{cosee_edge, run_with_stdin};
use cosee_runtime::signal::softmax;
use cosee_runtime::{Engine, ExitPolicy, ExitSignal, Input, InputError, RunError, Task};
use cosee_tools::export::{export, ExportOptions};
use cosee_tools::testing::tiny_config;
use cosee_tools::write_random_checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const SENTENCES: [&str; 4] = [
    "a charming and often affecting journey",
    "unflinchingly bleak and desperate",
    "the movie is great",
    "it 's a bad film , and the acting is worse",
];

fn export_tiny(root: &Path, task: Task, options: &ExportOptions, poison: Option<&str>) -> PathBuf {
    let checkpoint = root.join("checkpoint");
    write_random_checkpoint(&checkpoint, &tiny_config(3, 32, 4, task, ExitSignal::Energy), 11).unwrap();
    if let Some(tensor) = poison {
        fill_with_nan(&checkpoint.join("model.safetensors"), tensor);
    }
    let package = root.join("package");
    export(&checkpoint, &package, options).unwrap();
    package
}

/// The shared SST-2 package of these tests, exported once.
fn package() -> &'static Path {
    static PACKAGE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &PACKAGE
        .get_or_init(|| {
            let root = tempfile::tempdir().unwrap();
            let package = export_tiny(root.path(), Task::Sst2, &ExportOptions::default(), None);
            (root, package)
        })
        .1
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::load(package()).unwrap())
}

/// Overwrites one f32 tensor of a safetensors file with NaN, in place (the format: u64 header length, JSON header
/// with each tensor's dtype and data offsets, then the data).
fn fill_with_nan(path: &Path, tensor: &str) {
    let mut bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let info = &header[tensor];
    assert_eq!(info["dtype"], "F32", "{tensor} in {header}");
    let start = 8 + header_len + info["data_offsets"][0].as_u64().unwrap() as usize;
    let end = 8 + header_len + info["data_offsets"][1].as_u64().unwrap() as usize;
    for value in bytes[start..end].chunks_exact_mut(4) {
        value.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

fn energy(threshold: f32) -> ExitPolicy {
    ExitPolicy { signal: ExitSignal::Energy, threshold }
}

#[test]
fn threshold_forcing_full_depth_answers_at_the_last_layer() {
    for text in SENTENCES {
        // Normalized energy is > 0: nothing is below τ = 0.
        let a = engine().classify_with(&Input::single(text), energy(0.0)).unwrap();
        assert_eq!((a.exit_layer, a.num_layers), (3, 3));
        assert_eq!(a.signals.len(), 3);
        assert!(a.stage_ms.get(cosee_runtime::Stage::Layer(3)).is_some());
    }
}

#[test]
fn threshold_exiting_at_once_answers_at_layer_one() {
    for text in SENTENCES {
        // Normalized energy is < 1: everything is below τ = 1.
        let a = engine().classify_with(&Input::single(text), energy(1.0)).unwrap();
        assert_eq!(a.exit_layer, 1);
        assert_eq!(a.signals.len(), 1);
        // Layers after the exit never ran.
        assert!(a.stage_ms.get(cosee_runtime::Stage::Layer(2)).is_none());
        assert!((a.probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn the_exit_loop_agrees_with_the_full_depth_run() {
    for text in SENTENCES {
        let input = Input::single(text);
        let full = engine().run_all_exits(&input).unwrap();
        assert_eq!(full.logits.len(), 3);
        for signal in [ExitSignal::Energy, ExitSignal::Entropy, ExitSignal::MaxSoftmax] {
            let signals: Vec<f32> = full.logits.iter().map(|z| signal.of_logits(z)).collect();
            for &tau in &signals {
                // τ at each layer's own signal, nudged both ways, so that exits happen at every layer.
                for tau in [tau * 0.999, tau, tau * 1.001] {
                    let policy = ExitPolicy { signal, threshold: tau };
                    let a = engine().classify_with(&input, policy).unwrap();
                    let expected = cosee_runtime::signal::exit_layer(signal, &signals, tau);
                    assert_eq!(a.exit_layer, expected, "{signal} τ={tau} {signals:?}");
                    assert_eq!(full.exit_layer(policy), expected);
                    assert_eq!(a.probs, softmax(&full.logits[expected - 1]));
                    assert_eq!(a.signals, signals[..expected]);
                }
            }
        }
        let patience = ExitPolicy { signal: ExitSignal::Patience, threshold: 1.0 };
        assert_eq!(engine().classify_with(&input, patience).unwrap().exit_layer, full.exit_layer(patience));
    }
}

#[test]
fn bad_inputs_fail_alone() {
    let e = engine();
    assert!(matches!(e.classify(&Input::single("")), Err(RunError::Input(InputError::Empty))));
    assert!(matches!(e.classify(&Input::single(" \t ")), Err(RunError::Input(InputError::WhitespaceOnly))));
    assert!(matches!(e.classify(&Input::pair("a", "b")), Err(RunError::Input(InputError::Arity(_)))));
    let huge: String = SENTENCES.join(" ").chars().cycle().take(100_000).collect();
    // That only a prefix of it is tokenized is checked in the tokenizer's own tests (structurally, not by a timing).
    let a = e.classify_with(&Input::single(&huge), energy(0.0)).unwrap();
    assert!(a.truncated);
    assert_eq!(a.tokens, e.manifest().max_seq_len);
    // The engine is unharmed.
    assert!(!e.classify(&Input::single(SENTENCES[0])).unwrap().truncated);
}

#[test]
fn pair_tasks_take_pairs() {
    let root = tempfile::tempdir().unwrap();
    let engine = Engine::load(&export_tiny(root.path(), Task::Mrpc, &ExportOptions::default(), None)).unwrap();
    let a = engine.classify(&Input::from_line("the movie is great\tit is a great film", true)).unwrap();
    assert!(["not_equivalent", "equivalent"].contains(&a.label.as_str()));
    let err = engine.classify(&Input::single("only one sentence")).unwrap_err();
    assert!(err.to_string().contains("TAB"), "{err}");
}

#[test]
fn non_finite_exit_logits_are_skipped_and_flagged() {
    let root = tempfile::tempdir().unwrap();
    // NaN in exit 1's classifier bias: exit 1's logits are NaN for every input. The self-check would (rightly)
    // refuse such a package, so it is skipped.
    let options = ExportOptions { self_check: false, ..ExportOptions::default() };
    let engine =
        Engine::load(&export_tiny(root.path(), Task::Sst2, &options, Some("exits.0.classifier.bias"))).unwrap();
    let a = engine.classify_with(&Input::single(SENTENCES[0]), energy(1.0)).unwrap();
    // τ = 1 exits wherever the signal is a number: exit 1 cannot, exit 2 does.
    assert_eq!(a.exit_layer, 2);
    assert_eq!(a.skipped_exits, [1]);
    assert!(a.signals[0].is_nan() && a.signals[1].is_finite());
    assert!(a.probs.iter().all(|p| p.is_finite()));
    let json = serde_json::to_value(&a).unwrap();
    assert!(json["signals"][0].is_null());
    assert_eq!(json["skipped_exits"], serde_json::json!([1]));
}

// ---- the binary ----

fn classify(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(cosee_edge());
    cmd.arg("classify").arg("--model").arg(package()).args(args);
    // An empty stdin, not none: classify without TEXT reads lines until EOF.
    run_with_stdin(&mut cmd, Some(stdin.unwrap_or_default()))
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn cli_prints_label_and_exit_layer() {
    let out = classify(&["--threshold", "0", SENTENCES[0]], None);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    assert!(text.starts_with("negative") || text.starts_with("positive"), "{text}");
    assert!(text.contains("exit 3/3"), "{text}");
    let out = classify(&["--threshold", "1", SENTENCES[0], SENTENCES[1]], None);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2);
    assert!(text.lines().all(|l| l.contains("exit 1/3")), "{text}");
}

#[test]
fn cli_json_keys() {
    let out = classify(&["--json", "--signal", "max_softmax", "--threshold", "0.0", SENTENCES[2]], None);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    for key in ["label", "probs", "exit_layer", "num_layers", "signals", "stage_ms", "truncated", "input"] {
        assert!(v.get(key).is_some(), "missing `{key}` in {v}");
    }
    assert_eq!(v["exit_layer"], 1);
    assert_eq!(v["signal"], "max_softmax");
    assert!(v["stage_ms"]["embeddings"].as_f64().unwrap() >= 0.0);
    assert!(v["stage_ms"]["exit_01"].is_number());
}

#[test]
fn cli_stdin_answers_every_line_even_bad_ones() {
    let mut input = Vec::new();
    input.extend_from_slice(b"a charming and often affecting journey\n");
    input.extend_from_slice(b"\n");
    input.extend_from_slice(b"  \t  \n");
    input.extend_from_slice(&SENTENCES.join(" ").repeat(3000).as_bytes()[..100_000]);
    input.extend_from_slice(b"\n");
    input.extend_from_slice(b"invalid \xff\xfe utf-8\n");
    input.extend_from_slice(b"the movie is great\r\n");
    input.extend_from_slice(b"no final newline");
    let out = classify(&[], Some(&input));
    assert_eq!(out.status.code(), Some(1), "some lines failed: exit code 1");
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 7);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["input"], i + 1);
    }
    let answered = |i: usize| lines[i].get("label").is_some() && lines[i].get("error").is_none();
    assert!(answered(0) && answered(3) && answered(5) && answered(6), "{lines:?}");
    assert!(lines[1]["error"].as_str().unwrap().contains("empty"));
    assert!(lines[2]["error"].as_str().unwrap().contains("whitespace"));
    assert!(lines[4]["error"].as_str().unwrap().contains("UTF-8"));
    assert_eq!(lines[3]["truncated"], true);
    assert_eq!(lines[0]["truncated"], false);
}

#[test]
fn cli_exit_codes() {
    let ok = classify(&[], Some(b"the movie is great\n"));
    assert_eq!(ok.status.code(), Some(0));
    let out = Command::new(cosee_edge()).args(["classify", "--model", "/nonexistent/package", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("manifest.json"));
    // Another signal than the package's needs its own threshold.
    let out = classify(&["--signal", "patience", "x"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threshold"));
    let out = classify(&[""], None);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn cli_config_from_tune_sets_the_operating_point() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runtime-config.json");
    // τ = 1 on max_softmax is never met (the top probability is below 1 for 2 classes): full depth.
    std::fs::write(&config, r#"{"threshold": 1.0, "signal": "max_softmax", "percentile": 95.0}"#).unwrap();
    let config = config.to_str().unwrap();
    let out = classify(&["--json", "--config", config, SENTENCES[0]], None);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["signal"], "max_softmax");
    assert_eq!(v["exit_layer"], 3);
    // The command line still wins over the file.
    let out = classify(&["--json", "--config", config, "--threshold", "0", SENTENCES[0]], None);
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["exit_layer"], 1);
    // A file that is not a runtime config is a fatal error naming it.
    let out = classify(&["--config", env!("CARGO_MANIFEST_DIR"), "x"], None);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains(env!("CARGO_MANIFEST_DIR")));
}

#[test]
fn cli_budget_runs_stdin_under_the_controller() {
    let input = format!("{}\n\n{}\n", SENTENCES[0], SENTENCES[2]);
    let out = classify(&["--budget-ms", "1000"], Some(input.as_bytes()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("budget p95 ≤ 1000 ms"), "{stderr}");
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines.iter().map(|l| l["input"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(lines[1]["error"].is_string() && lines[0]["label"].is_string() && lines[2]["label"].is_string());
    assert_eq!(out.status.code(), Some(1), "one line failed");
    // A fixed τ wins over the budget: the plain loop, no controller.
    let fixed = classify(&["--budget-ms", "1000", "--threshold", "0"], Some(b"the movie is great\n"));
    assert!(!String::from_utf8_lossy(&fixed.stderr).contains("budget"), "{}", String::from_utf8_lossy(&fixed.stderr));
    assert_eq!(fixed.status.code(), Some(0));
    // Not for TEXT arguments, nor for a budget that is not a duration.
    assert_eq!(classify(&["--budget-ms", "5", "x"], None).status.code(), Some(2));
    assert_eq!(classify(&["--budget-ms=-1"], Some(b"x\n")).status.code(), Some(2));
    // A usage error answers at once, without reading stdin: with more input than a pipe holds, the write is cut off.
    let flood = "the movie is great\n".repeat(100_000);
    assert_eq!(classify(&["--budget-ms=-1"], Some(flood.as_bytes())).status.code(), Some(2));
}

#[test]
fn cli_stdin_line_over_the_cap_is_answered_and_skipped() {
    let cap = cosee_runtime::MAX_LINE_BYTES;
    let mut input = b"the movie is great\n".to_vec();
    // Issue 15's line: ten megabytes without whitespace, then a line at the cap exactly, then one just over it.
    input.extend(std::iter::repeat_n(b'x', 10_000_000));
    input.extend_from_slice(b"\nthe movie is bad\n");
    input.extend(std::iter::repeat_n(b'!', cap));
    input.extend_from_slice(b"\n");
    input.extend(std::iter::repeat_n(b'y', cap + 1));
    input.extend_from_slice(b"\na charming and often affecting journey");
    let out = classify(&[], Some(&input));
    assert_eq!(out.status.code(), Some(1), "two lines failed: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6, "one answer per line, in order");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["input"], i + 1);
    }
    for i in [0, 2, 3, 5] {
        assert!(lines[i]["label"].is_string(), "{}", lines[i]);
    }
    assert_eq!(lines[3]["truncated"], true);
    for (i, bytes) in [(1, 10_000_000), (4, cap + 1)] {
        let error = lines[i]["error"].as_str().unwrap();
        assert!(error.contains(&format!("line of {bytes} bytes")) && error.contains(&cap.to_string()), "{error}");
    }
    let help = Command::new(cosee_edge()).args(["classify", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("longer than 1 MiB"), "the cap is documented");
    assert_eq!(cap, 1 << 20, "--help and the README say 1 MiB");
}

#[test]
fn cli_out_of_range_settings_are_usage_errors_naming_the_flag() {
    let refused = |args: &[&str], stdin: &[u8], says: &[&str]| {
        let out = classify(args, Some(stdin));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        for s in says {
            assert!(stderr.contains(s), "{args:?}: {stderr}");
        }
    };
    // The package exits on normalized energy, in [0, 1]: τ 7 would make every input leave at layer 1.
    refused(&["--threshold", "7", "x"], b"", &["--threshold 7", "energy", "from 0 to 1"]);
    // `=`: clap takes a lone `-0.5` for a flag.
    refused(&["--threshold=-0.5"], b"x\n", &["--threshold -0.5"]);
    refused(&["--signal", "max_softmax", "--threshold", "1.5", "x"], b"", &["max_softmax"]);
    // Patience on 3 layers: 1 or 2 agreeing layers.
    refused(&["--signal", "patience", "--threshold", "3", "x"], b"", &["from 1 to 2"]);
    refused(&["--signal", "patience", "--threshold", "1.5", "x"], b"", &["integer"]);
    assert_eq!(classify(&["--signal", "patience", "--threshold", "2", "x"], None).status.code(), Some(0));
    refused(&["--budget-ms", "nan"], b"x\n", &["--budget-ms NaN", "above 0"]);
    refused(&["--budget-ms=-1", "--threshold", "0.5"], b"x\n", &["--budget-ms -1"]);

    // A runtime config out of range is refused naming the file and key (a fatal error, as any bad config file).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runtime-config.json");
    std::fs::write(&config, r#"{"threshold": 7.0, "signal": "energy", "percentile": 95.0}"#).unwrap();
    let out = classify(&["--config", config.to_str().unwrap(), "x"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("runtime-config.json: threshold 7"), "{stderr}");
    std::fs::write(&config, r#"{"threshold": 0.5, "signal": "energy", "percentile": 101}"#).unwrap();
    let out = classify(&["--config", config.to_str().unwrap(), "x"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("runtime-config.json: percentile 101"));
    // Patience beyond the package's depth, checked once the package is known.
    std::fs::write(&config, r#"{"threshold": 5, "signal": "patience", "percentile": 95}"#).unwrap();
    let out = classify(&["--config", config.to_str().unwrap(), "x"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("from 1 to 2"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(3));
}

/// What an answer says, bit for bit, without its timings: label, exit layer, probabilities and signals as bits,
/// tokens.
#[derive(Debug, PartialEq)]
struct Outcome(String, usize, Vec<u32>, Vec<u32>, usize);

fn outcome(engine: &Engine, text: &str, policy: ExitPolicy) -> Result<Outcome, String> {
    engine
        .classify_with(&Input::single(text), policy)
        .map(|a| {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            Outcome(a.label, a.exit_layer, bits(&a.probs), bits(&a.signals), a.tokens)
        })
        .map_err(|e| e.to_string())
}

#[test]
fn one_engine_shared_by_eight_threads_answers_as_sequential_calls() {
    let engine = std::sync::Arc::new(Engine::load(package()).unwrap());
    let long: String = SENTENCES.join(" , ").chars().cycle().take(5_000).collect();
    let mut texts: Vec<String> = SENTENCES.iter().map(|s| s.to_string()).collect();
    texts.extend([long, String::new(), "!".repeat(3_000), "the movie is great ".repeat(3)]);
    // τ at each sentence's own full-depth signals, so that answers leave at every layer.
    let mut work: Vec<(String, ExitPolicy)> = Vec::new();
    for text in &texts {
        let taus: Vec<f32> = match engine.run_all_exits(&Input::single(text)) {
            Ok(full) => full.logits.iter().map(|z| ExitSignal::Energy.of_logits(z) * 1.0001).collect(),
            Err(_) => vec![0.5],
        };
        for tau in taus.into_iter().chain([0.0, 1.0]) {
            work.push((text.clone(), energy(tau)));
        }
        work.push((text.clone(), ExitPolicy { signal: ExitSignal::Patience, threshold: 1.0 }));
    }
    let sequential: Vec<_> = work.iter().map(|(t, p)| outcome(&engine, t, *p)).collect();
    let layers: std::collections::BTreeSet<usize> = sequential.iter().flatten().map(|o| o.1).collect();
    assert_eq!(layers.len(), 3, "the work exits at every layer: {layers:?}");
    assert!(sequential.iter().any(Result::is_err), "and has a failing input");

    let work = std::sync::Arc::new(work);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (engine, work) = (std::sync::Arc::clone(&engine), std::sync::Arc::clone(&work));
            // Each thread walks the work from its own starting point, several times, so that different inputs
            // and thresholds run at the same moment.
            std::thread::spawn(move || {
                let n = work.len();
                (0..4 * n)
                    .map(|k| (t * 7 + k) % n)
                    .map(|i| (i, outcome(&engine, &work[i].0, work[i].1)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for thread in threads {
        for (i, answer) in thread.join().unwrap() {
            assert_eq!(answer, sequential[i], "work item {i}: {:?}", work[i].1);
        }
    }
}

/// tract plans layers 2 and deeper in the background after load (runtime/src/planner.rs). Inputs that reach a layer
/// while it is being planned, on several threads at once, must get exactly the answers of an engine whose every
/// stage was planned before the first input, and each stage must be planned once, whoever asks first.
#[test]
fn inputs_racing_the_background_planner_answer_as_a_fully_planned_engine() {
    use cosee_runtime::{Backend, Package, TractBackend};
    let planned = Engine::load(package()).unwrap();
    planned.ready().unwrap();
    // τ 0 on the energy keeps every input to the last layer, where the planner is most likely still at work.
    let policy = energy(0.0);
    let expected: Vec<_> = SENTENCES.iter().map(|s| outcome(&planned, s, policy)).collect();
    assert!(expected.iter().all(|o| matches!(o, Ok(o) if o.1 == planned.num_layers())), "{expected:?}");

    for _ in 0..3 {
        let fresh = std::sync::Arc::new(Engine::load(package()).unwrap());
        let answers: Vec<Vec<_>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| SENTENCES.iter().map(|s| outcome(&fresh, s, policy)).collect::<Vec<_>>()))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for answer in answers {
            assert_eq!(answer, expected);
        }
    }

    let backend = TractBackend::load(&Package::open(package()).unwrap()).unwrap();
    let deepest = backend.num_layers();
    let plans: Vec<usize> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| std::sync::Arc::as_ptr(backend.layer_plan(deepest).unwrap()) as usize))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert!(plans.windows(2).all(|w| w[0] == w[1]), "layer {deepest} was planned more than once: {plans:?}");
}
