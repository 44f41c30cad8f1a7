//! End to end on the CPU: a tiny 3-layer BERT fine-tuned with COSEE on 800 real SST-2 lines. Every exit's dev
//! loss must fall, the final checkpoint must reload with the in-process results, and an interrupted run
//! resumed from its checkpoint must end bit-identical to an uninterrupted one.

mod common;

use common::{data, write_backbone};
use cosee_format::glue::Task;
use cosee_trainer::data::DataSource;
use cosee_trainer::eval;
use cosee_trainer::train::{self, initial_model, RunOptions, TrainConfig};
use cosee_trainer::{MultiExitBert, TextEncoder};
use std::path::Path;
use tch::Device;

fn config(backbone: &Path, output: &Path) -> TrainConfig {
    let source =
        DataSource { data_dir: None, train_file: Some(data("sst2_train.tsv")), dev_file: Some(data("sst2_dev.tsv")) };
    let mut c = TrainConfig::new(Task::Sst2, backbone.to_path_buf(), source, output.to_path_buf());
    // A random 3-layer encoder learns slowly and overfits 800 phrases fast: 5 epochs at 7e-4 is the window in
    // which every exit has learned and none has yet become overconfident on the dev sentences.
    c.learning_rate = 7e-4;
    c.epochs = 5;
    c.batch_size = 32;
    c.micro_batch = Some(16);
    c.max_seq_len = 64;
    c.save_steps = 5;
    c.eval_batch_size = 64;
    c.seed = 11;
    // β0 = 1 (from the paper's grid). With β0 = 10 and signals that do not yet separate anything, SWM sends
    // nearly every sample to exit 1 or 3 and the middle exit gets almost no weight late in such a short run.
    c.objective.beta0 = 1.0;
    c
}

fn dev_losses(model: &MultiExitBert) -> Vec<f64> {
    let enc = TextEncoder::from_file(&data("tiny_tokenizer.json"), 64).unwrap();
    let dev = cosee_trainer::data::read_labelled(Task::Sst2, &data("sst2_dev.tsv")).unwrap();
    eval::run_examples(model, &enc, &dev, 64, None, None).unwrap().per_exit_loss()
}

#[test]
fn cosee_training_lowers_every_exit_and_resumes_exactly() {
    // One intra-op thread: the model is tiny, and on a shared 2-core machine OpenMP threads that spin-wait for
    // each other can slow a run down by an order of magnitude.
    tch::set_num_threads(1);
    let root = tempfile::tempdir().unwrap();
    let backbone = root.path().join("backbone");
    write_backbone(&backbone, 3, 6);
    let full = config(&backbone, &root.path().join("full"));

    let (start, report) = initial_model(&full, Device::Cpu).unwrap();
    assert_eq!(report.initialized.len(), 6);
    let before = dev_losses(&start);

    let summary = train::train(&full, &RunOptions::default(), false).unwrap();
    assert_eq!(summary.total_steps, 5 * 25);
    assert_eq!(summary.steps_done, summary.total_steps);
    let final_dir = summary.final_model.clone().expect("a finished run writes model/");
    let trained = MultiExitBert::load_checkpoint(&final_dir, Device::Cpu).unwrap();
    let after = dev_losses(&trained);
    for (m, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(a < &(b - 0.005), "exit {}: dev loss {b:.4} → {a:.4} did not fall", m + 1);
    }
    // The reloaded checkpoint reproduces the in-process evaluation of the last epoch exactly.
    let last = summary.last_dev.as_ref().unwrap();
    for (layer, loss) in last.layers.iter().zip(&after) {
        assert_eq!(layer.loss, *loss);
    }
    let metrics = std::fs::read_to_string(root.path().join("full/metrics.jsonl")).unwrap();
    let epochs: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["event"] == "epoch")
        .collect();
    assert_eq!(epochs.len(), 5);
    assert!(epochs.iter().all(|e| e["wall_seconds"].as_f64().unwrap() > 0.0 && e["dev"]["sweep"].is_array()));
    // From epoch 2 on, thresholds come from the signals seen in the previous epoch.
    assert_eq!(epochs[0]["threshold_range"], serde_json::json!({"lo": 0.0, "hi": 1.0}));
    assert_eq!(epochs[1]["threshold_range"], epochs[0]["next_threshold_range"]);
    assert_ne!(epochs[1]["threshold_range"], epochs[0]["threshold_range"]);

    // A fresh run never overwrites a directory that holds checkpoints.
    let again = train::train(&full, &RunOptions::default(), false).unwrap_err();
    assert!(again.to_string().contains("--resume"), "{again}");

    // Interrupted after step 7 (the last checkpoint is step 5), then resumed: same final weights, bit for bit.
    let split = config(&backbone, &root.path().join("split"));
    let stop = RunOptions { stop_after_steps: Some(7), ..RunOptions::default() };
    let partial = train::train(&split, &stop, false).unwrap();
    assert_eq!(partial.steps_done, 7);
    assert!(partial.final_model.is_none());
    let resumed = train::train(&split, &RunOptions::default(), true).unwrap();
    assert_eq!(resumed.steps_this_run, 125 - 5);
    let a = std::fs::read(final_dir.join("model.safetensors")).unwrap();
    let b = std::fs::read(resumed.final_model.unwrap().join("model.safetensors")).unwrap();
    assert!(a == b, "resumed run differs from the uninterrupted one");
}
