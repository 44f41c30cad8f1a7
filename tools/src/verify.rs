//! Parity between a checkpoint (the trainer's tch model) and the package exported from it (the runtime's tract
//! plans): `cosee-tools verify`, built with the `verify` feature (it links libtorch).
//!
//! Both sides see the same token ids — the runtime's tokenizer output — so any difference is numerical: the export,
//! the quantization or the runtime. Exit decisions are compared with the runtime's own decision code
//! ([`exit_layer_of_logits`]) applied to each side's logits.

use cosee_runtime::glue::Example;
use cosee_runtime::manifest::TOKENIZER_FILE;
use cosee_runtime::signal::{argmax, exit_layer_of_logits};
use cosee_runtime::{Engine, ExitPolicy, Input, LoadError};
use cosee_trainer::tokenize::{EncodedBatch, TextEncoder};
use cosee_trainer::{data::read_labelled, device, MultiExitBert, Result, TrainerError};
use indicatif::ProgressBar;
use serde::Serialize;
use std::path::Path;

/// How `cosee-tools verify` runs the two sides.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Use only the first N examples.
    pub limit: Option<usize>,
    /// Thresholds to compare exit decisions at besides the package's default τ.
    pub thresholds: Vec<f32>,
    /// libtorch CPU threads (libtorch's default when absent).
    pub threads: Option<usize>,
    /// `auto`, `cpu`, `cuda` or `cuda:N` (see [`device::parse_device`]).
    pub device: String,
    pub progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("loading checkpoint {path}")]
    Checkpoint { path: String, source: TrainerError },
    #[error("loading package {path}")]
    Package { path: String, source: LoadError },
    #[error(transparent)]
    Trainer(#[from] TrainerError),
}

/// Loads the checkpoint (tch) and the package (the runtime), reads the labelled `data` of the package's task and
/// [`compare`]s them on it.
pub fn verify_files(
    checkpoint: &Path,
    package: &Path,
    data: &Path,
    options: &VerifyOptions,
) -> std::result::Result<ParityReport, VerifyError> {
    device::set_threads(options.threads);
    let device = device::parse_device(&options.device)?;
    let model = MultiExitBert::load_checkpoint(checkpoint, device)
        .map_err(|source| VerifyError::Checkpoint { path: checkpoint.display().to_string(), source })?;
    let engine =
        Engine::load(package).map_err(|source| VerifyError::Package { path: package.display().to_string(), source })?;
    let mut examples = read_labelled(engine.manifest().task, data)?;
    examples.truncate(options.limit.unwrap_or(usize::MAX));
    let bar = if options.progress { ProgressBar::new(examples.len() as u64) } else { ProgressBar::hidden() };
    let report = compare(&model, &engine, &examples, &options.thresholds, || bar.inc(1))?;
    bar.finish_and_clear();
    Ok(report)
}

/// What `verify` measured over a set of examples.
#[derive(Debug, Clone, Serialize)]
pub struct ParityReport {
    pub examples: usize,
    /// Per exit (index m-1): the largest |logit_tch - logit_runtime| over all examples and classes.
    pub max_abs_delta: Vec<f32>,
    /// Inputs whose ids from the trainer's own tokenizer differ from the runtime's (informational: both models are
    /// fed the runtime's ids).
    pub tokenization_mismatches: usize,
    /// Per policy: how many examples exit at the same layer on both sides.
    pub decisions: Vec<DecisionParity>,
    /// Full-depth accuracy of the last exit, tch and runtime.
    pub tch_accuracy: f64,
    pub runtime_accuracy: f64,
    /// Accuracy at the package's default policy, tch and runtime (each exiting early on its own logits).
    pub tch_early_exit_accuracy: f64,
    pub runtime_early_exit_accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecisionParity {
    pub threshold: f32,
    pub identical: usize,
    pub examples: usize,
}

impl DecisionParity {
    pub fn share(&self) -> f64 {
        self.identical as f64 / self.examples.max(1) as f64
    }
}

impl ParityReport {
    pub fn worst_delta(&self) -> f32 {
        self.max_abs_delta.iter().copied().fold(0.0, f32::max)
    }
}

/// Runs every example through both models at full depth and compares logits and exit decisions under the package's
/// signal at each threshold in `thresholds` (the package's default τ is always included, first).
pub fn compare(
    model: &MultiExitBert,
    engine: &Engine,
    examples: &[Example],
    thresholds: &[f32],
    mut progress: impl FnMut(),
) -> Result<ParityReport> {
    let layers = engine.num_layers();
    let model_layers = model.config().bert.num_hidden_layers;
    if model_layers != layers {
        return Err(TrainerError::Invalid(format!(
            "the checkpoint has {model_layers} layers, the package {layers}: not the same model"
        )));
    }
    let default = engine.default_policy();
    let mut policies = vec![default];
    policies.extend(
        thresholds
            .iter()
            .filter(|&&t| t != default.threshold)
            .map(|&t| ExitPolicy { signal: default.signal, threshold: t }),
    );
    let tokenizer_path = engine.package().path(TOKENIZER_FILE);
    let json = std::fs::read(&tokenizer_path)
        .map_err(|source| TrainerError::Io { path: tokenizer_path.display().to_string(), source })?;
    let encoder = TextEncoder::from_bytes(json, engine.manifest().max_seq_len, &tokenizer_path.display().to_string())?;

    let mut max_abs_delta = vec![0.0f32; layers];
    let mut identical = vec![0usize; policies.len()];
    let (mut mismatches, mut tch_right, mut rt_right, mut tch_early_right, mut rt_early_right) = (0, 0, 0, 0, 0);
    for example in examples {
        let input = match &example.text_b {
            Some(b) => Input::pair(&example.text_a, b),
            None => Input::single(&example.text_a),
        };
        let ids = engine.encode(&input).map_err(|e| TrainerError::Invalid(format!("runtime tokenizer: {e}")))?;
        let ours = encoder.encode(&example.text_a, example.text_b.as_deref())?;
        mismatches += usize::from(ours.input_ids != ids.input_ids);

        let runtime = engine.run_all_exits(&input).map_err(|e| TrainerError::Invalid(format!("runtime: {e}")))?;
        let batch = EncodedBatch::pad(&[&ids], encoder.pad_id(), None);
        let tch_logits: Vec<Vec<f32>> =
            model.forward_logits(&batch)?.into_iter().map(|mut rows| rows.swap_remove(0)).collect();
        for (m, (a, b)) in tch_logits.iter().zip(&runtime.logits).enumerate() {
            for (x, y) in a.iter().zip(b) {
                max_abs_delta[m] = max_abs_delta[m].max((x - y).abs());
            }
        }
        for (count, &policy) in identical.iter_mut().zip(&policies) {
            *count += usize::from(exit_layer_of_logits(policy, &tch_logits) == runtime.exit_layer(policy));
        }
        if let Some(label) = example.label {
            let tch_exit = exit_layer_of_logits(default, &tch_logits);
            tch_right += usize::from(argmax(&tch_logits[layers - 1]) == label);
            rt_right += usize::from(argmax(&runtime.logits[layers - 1]) == label);
            tch_early_right += usize::from(argmax(&tch_logits[tch_exit - 1]) == label);
            rt_early_right += usize::from(argmax(&runtime.logits[runtime.exit_layer(default) - 1]) == label);
        }
        progress();
    }
    let labelled = examples.iter().filter(|e| e.label.is_some()).count().max(1) as f64;
    Ok(ParityReport {
        examples: examples.len(),
        max_abs_delta,
        tokenization_mismatches: mismatches,
        decisions: policies
            .iter()
            .zip(identical)
            .map(|(p, identical)| DecisionParity { threshold: p.threshold, identical, examples: examples.len() })
            .collect(),
        tch_accuracy: tch_right as f64 / labelled,
        runtime_accuracy: rt_right as f64 / labelled,
        tch_early_exit_accuracy: tch_early_right as f64 / labelled,
        runtime_early_exit_accuracy: rt_early_right as f64 / labelled,
    })
}
