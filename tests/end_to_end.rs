//! Cross-crate parity: trainer checkpoint → tools package → runtime answers.
//!
//! A tiny BERT (3 layers, hidden 64, the tools' SST-2 test vocabulary) is fine-tuned with COSEE by the trainer (tch)
//! on 800 real SST-2 training lines, exported by the tools to f32 and int8 packages, and answered by the runtime:
//! - f32: every exit's logits within 1e-4 of tch, and the same exit layer at three thresholds;
//! - int8: full-depth accuracy within 0.5 pt of f32 on 200 real SST-2 dev lines;
//! - mean-pooled exits with standardized per-exit poolers (the shipped model's layout): f32 logits within 1e-4 of
//!   tch, whose batches are padded (masked mean) while the runtime never pads (plain mean).

use cosee_runtime::config::Pooling;
use cosee_runtime::glue::{read_tsv, Task};
use cosee_runtime::{Engine, ExitSignal};
use cosee_tools::testing::tiny_config;
use cosee_tools::verify::{self, ParityReport};
use cosee_tools::{export, write_random_checkpoint, ExportOptions};
use cosee_trainer::data::DataSource;
use cosee_trainer::train::{self, RunOptions, TrainConfig};
use cosee_trainer::MultiExitBert;
use std::path::{Path, PathBuf};
use tch::Device;

fn trainer_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("trainer/tests/data").join(name)
}

/// Fine-tunes a random tiny backbone for a few epochs on the committed SST-2 lines; returns the final model dir.
/// Training draws dropout masks from libtorch's one global generator: two tests training at once would interleave
/// their draws and neither run would be reproducible, so training runs one at a time.
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn trained_checkpoint(root: &Path, adjust: impl FnOnce(&mut TrainConfig)) -> PathBuf {
    let _one_at_a_time = TRAINING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let backbone = root.join("backbone");
    write_random_checkpoint(&backbone, &tiny_config(3, 64, 4, Task::Sst2, ExitSignal::Energy), 3).unwrap();
    let data = DataSource {
        data_dir: None,
        train_file: Some(trainer_data("sst2_train.tsv")),
        dev_file: Some(trainer_data("sst2_dev.tsv")),
    };
    let mut config = TrainConfig::new(Task::Sst2, backbone, data, root.join("run"));
    // A random encoder needs a high rate. 800 lines cannot teach it SST-2 (dev accuracy stays near chance), but
    // ten epochs make every exit fit its training lines confidently: trained, far-from-initial weights whose
    // answers are decisive, which is what parity is about.
    config.learning_rate = 2e-3;
    config.epochs = 10;
    config.batch_size = 16;
    config.max_seq_len = 64;
    config.eval_each_epoch = false;
    config.objective.beta0 = 1.0;
    adjust(&mut config);
    let options = RunOptions { device: Device::Cpu, progress: false, verbose: false, stop_after_steps: None };
    train::train(&config, &options, false).unwrap().final_model.expect("a finished run writes model/")
}

fn parity(checkpoint: &Path, package: &Path, data: &str, thresholds: &[f32]) -> ParityReport {
    let model = MultiExitBert::load_checkpoint(checkpoint, Device::Cpu).unwrap();
    let engine = Engine::load(package).unwrap();
    let examples = read_tsv(Task::Sst2, &trainer_data(data)).unwrap();
    verify::compare(&model, &engine, &examples, thresholds, || {}).unwrap()
}

#[test]
fn trained_checkpoint_exports_to_packages_the_runtime_answers_like_tch() {
    tch::set_num_threads(1);
    let root = tempfile::tempdir().unwrap();
    let checkpoint = trained_checkpoint(root.path(), |_| {});

    let f32_package = root.path().join("f32");
    let options = ExportOptions { self_check: true, ..ExportOptions::default() };
    export(&checkpoint, &f32_package, &options).unwrap();
    // Energy thresholds spread so that each one sends a different share of the dev lines out early.
    let thresholds = [0.05, 0.2, 0.35];
    let f32_report = parity(&checkpoint, &f32_package, "sst2_dev.tsv", &thresholds);
    assert_eq!(f32_report.examples, 200);
    eprintln!("f32: {f32_report:#?}");
    assert_eq!(f32_report.tokenization_mismatches, 0, "the package's tokenizer must be the checkpoint's");
    for (m, delta) in f32_report.max_abs_delta.iter().enumerate() {
        assert!(*delta <= 1e-4, "exit {}: max |Δlogit| {delta:e} > 1e-4", m + 1);
    }
    for d in &f32_report.decisions {
        assert_eq!(d.identical, d.examples, "τ = {}: exit layers differ", d.threshold);
    }
    // The thresholds must really exercise early exit, or identical decisions would prove nothing.
    let engine = Engine::load(&f32_package).unwrap();
    let dev = read_tsv(Task::Sst2, &trainer_data("sst2_dev.tsv")).unwrap();
    let mut layers_seen = std::collections::BTreeSet::new();
    for example in &dev {
        let full = engine.run_all_exits(&cosee_runtime::Input::single(&example.text_a)).unwrap();
        for &t in &thresholds {
            layers_seen.insert(full.exit_layer(cosee_runtime::ExitPolicy { signal: ExitSignal::Energy, threshold: t }));
        }
    }
    assert!(layers_seen.len() >= 2, "the thresholds never make the model exit early: {layers_seen:?}");
    let fit = parity(&checkpoint, &f32_package, "sst2_train.tsv", &[]);
    assert!(fit.tch_accuracy > 0.9, "the tiny model did not fit its training lines: {:.3}", fit.tch_accuracy);
    assert!(fit.worst_delta() <= 1e-4, "training lines: max |Δlogit| {:e}", fit.worst_delta());

    let int8_package = root.path().join("int8");
    export(&checkpoint, &int8_package, &ExportOptions { self_check: true, ..ExportOptions::int8() }).unwrap();
    let int8_report = parity(&checkpoint, &int8_package, "sst2_dev.tsv", &thresholds);
    eprintln!("int8: {int8_report:#?}");
    let drop = 100.0 * (f32_report.runtime_accuracy - int8_report.runtime_accuracy);
    // 0.5 pt is one line of 200; the epsilon keeps exactly one line from failing on float rounding.
    assert!(
        drop.abs() <= 0.5 + 1e-9,
        "int8 accuracy {:.2}% vs f32 {:.2}%",
        100.0 * int8_report.runtime_accuracy,
        100.0 * f32_report.runtime_accuracy
    );
}

#[test]
fn mean_pooled_exits_export_like_tch() {
    tch::set_num_threads(1);
    let root = tempfile::tempdir().unwrap();
    let checkpoint = trained_checkpoint(root.path(), |c| {
        c.pooling = Pooling::Mean;
        c.per_exit_pooler = true;
        c.standardize_poolers = true;
        c.epochs = 3;
    });
    let package = root.path().join("f32");
    export(&checkpoint, &package, &ExportOptions { self_check: true, ..ExportOptions::default() }).unwrap();
    let thresholds = [0.05, 0.2, 0.35];
    let report = parity(&checkpoint, &package, "sst2_dev.tsv", &thresholds);
    eprintln!("mean pooling: {report:#?}");
    for (m, delta) in report.max_abs_delta.iter().enumerate() {
        assert!(*delta <= 1e-4, "exit {}: max |Δlogit| {delta:e} > 1e-4", m + 1);
    }
    for d in &report.decisions {
        assert_eq!(d.identical, d.examples, "τ = {}: exit layers differ", d.threshold);
    }
    let config = cosee_runtime::config::ModelConfig::read(&checkpoint.join("config.json")).unwrap();
    assert_eq!(config.cosee.unwrap().pooling, Pooling::Mean);
}
