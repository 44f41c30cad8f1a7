//! The fine-tuning loop (paper §4.3 "Training"): AdamW with linear decay, gradient clipping, batches of
//! `batch_size` (accumulated over micro-batches when memory is short), the COSEE objective or a baseline,
//! per-epoch dev evaluation, checkpoints every N steps and at each epoch end, and exact resume.

pub mod diagnostics;
pub mod optimizer;
pub mod state;

use crate::data::{labels, load_with_holdout, subset, DataSource, Split, HOLDOUT_FILE};
use crate::error::{io_err, Result, TrainerError};
use crate::eval::{self, EvalReport};
use crate::model::{checkpoint, LoadReport, MultiExitBert, TOKENIZER_FILE};
use crate::objective::swm::{beta_t, ThresholdRange};
use crate::objective::ObjectiveConfig;
use crate::tokenize::{bucketed_batches, BatchTensors, Encoded, EncodedBatch, TextEncoder, DEFAULT_MAX_LEN};
use cosee_format::config::{ExitConfig, Pooling};
use cosee_format::glue::Task;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use optimizer::{linear_lr, AdamW, AdamWConfig};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use state::{derive_seed, TrainingState};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Tensor};

const STREAM_DATA: u64 = 1;
const STREAM_DROPOUT: u64 = 2;
const STREAM_THRESHOLDS: u64 = 3;
const STREAM_INIT: u64 = 4;
/// Training examples measured for [`TrainConfig::standardize_poolers`].
const POOLER_SAMPLE: usize = 512;

/// Every setting of a run; saved as `train_config.json` and reused as is by `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub task: Task,
    /// HF BERT directory: `config.json`, `model.safetensors`, `tokenizer.json`.
    pub backbone: PathBuf,
    pub data: DataSource,
    pub output_dir: PathBuf,
    /// Train on a seeded random subset of this many examples.
    pub max_train_examples: Option<usize>,
    pub max_dev_examples: Option<usize>,
    /// Hold this fraction of the training file out of training (a fixed slice, `data::HOLDOUT_SEED`) and write it
    /// to `<output_dir>/holdout.tsv`, for choosing hyper-parameters and τ without touching dev.
    #[serde(default)]
    pub holdout_fraction: Option<f64>,
    pub objective: ObjectiveConfig,
    pub learning_rate: f64,
    pub adam: AdamWConfig,
    pub warmup_steps: usize,
    pub max_grad_norm: f64,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// Examples per forward/backward pass (gradient accumulation when smaller than `batch_size`).
    pub micro_batch: Option<usize>,
    pub epochs: usize,
    /// Stop (and end the linear schedule) after this many optimizer steps instead of `epochs` epochs.
    pub max_steps: Option<usize>,
    pub max_seq_len: usize,
    /// Pad every batch to this length instead of its longest input (the reference pads to 128).
    pub pad_to: Option<usize>,
    pub per_exit_pooler: bool,
    /// What the exits pool: [CLS] (the reference) or the mean over tokens.
    #[serde(default)]
    pub pooling: Pooling,
    /// Start each exit's pooler as a per-unit standardization of what it pools from its layer, measured on the first
    /// training examples ([`MultiExitBert::standardize_exit_poolers`]); needs `per_exit_pooler`.
    #[serde(default)]
    pub standardize_poolers: bool,
    /// Keep every exit's logits zero-sum (`MultiExitBert::center_classifiers` after each step), so the energy
    /// signal has no free common level for OSC to train.
    #[serde(default)]
    pub centered_logits: bool,
    pub seed: u64,
    /// Checkpoint every N optimizer steps (0: only at epoch ends).
    pub save_steps: usize,
    pub keep_checkpoints: usize,
    pub eval_batch_size: usize,
    /// Evaluate on the dev set at every epoch end.
    pub eval_each_epoch: bool,
}

impl TrainConfig {
    /// The paper's reference settings for `task`.
    pub fn new(task: Task, backbone: PathBuf, data: DataSource, output_dir: PathBuf) -> Self {
        Self {
            task,
            backbone,
            data,
            output_dir,
            max_train_examples: None,
            max_dev_examples: None,
            holdout_fraction: None,
            objective: ObjectiveConfig::default(),
            learning_rate: 2e-5,
            adam: AdamWConfig::default(),
            warmup_steps: 0,
            max_grad_norm: 1.0,
            batch_size: 128,
            micro_batch: None,
            epochs: 10,
            max_steps: None,
            max_seq_len: DEFAULT_MAX_LEN,
            pad_to: None,
            per_exit_pooler: false,
            pooling: Pooling::Cls,
            standardize_poolers: false,
            centered_logits: false,
            seed: 42,
            save_steps: 0,
            keep_checkpoints: 2,
            eval_batch_size: 128,
            eval_each_epoch: true,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainerError::Invalid(m));
        self.objective.validate().map_err(TrainerError::Invalid)?;
        if self.batch_size == 0 || self.micro_batch == Some(0) || self.eval_batch_size == 0 {
            return bad("batch sizes must be at least 1".into());
        }
        if self.epochs == 0 && self.max_steps.is_none() {
            return bad("--epochs must be at least 1".into());
        }
        if let Some(p) = self.pad_to {
            if p < self.max_seq_len {
                return bad(format!("--pad-to {p} is below --max-seq-len {}: inputs would not fit", self.max_seq_len));
            }
        }
        if let Some(f) = self.holdout_fraction {
            if !(f > 0.0 && f < 1.0) {
                return bad(format!("--holdout-fraction {f} must lie strictly between 0 and 1"));
            }
        }
        if self.standardize_poolers && !self.per_exit_pooler {
            return bad("standardized poolers need one pooler per exit (per_exit_pooler)".into());
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(self.learning_rate) || !positive(self.max_grad_norm) || !positive(self.adam.head_lr_scale) {
            return bad("learning rate, head learning-rate scale and max grad norm must be positive".into());
        }
        Ok(())
    }

    pub fn micro_batch_size(&self) -> usize {
        self.micro_batch.unwrap_or(self.batch_size).min(self.batch_size).max(1)
    }

    fn exit_config(&self) -> ExitConfig {
        ExitConfig {
            task: self.task,
            label_names: self.task.label_names().iter().map(|s| s.to_string()).collect(),
            signal: self.objective.signal,
            per_exit_pooler: self.per_exit_pooler,
            pooling: self.pooling,
            max_seq_len: self.max_seq_len,
        }
    }
}

/// Settings of this process that do not change what is computed.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub device: Device,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Print notes (load report, epoch summaries) on stderr.
    pub verbose: bool,
    /// Stop after this many optimizer steps in total, as if the process were interrupted there: no final
    /// evaluation or model, only the checkpoints already written. For measuring speed and testing resume.
    pub stop_after_steps: Option<usize>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { device: Device::Cpu, progress: false, verbose: false, stop_after_steps: None }
    }
}

/// What a call to [`train`] did.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps_done: usize,
    pub total_steps: usize,
    /// Steps taken by this call and their rate (optimizer steps per second of training, evaluation excluded).
    pub steps_this_run: usize,
    pub steps_per_second: f64,
    /// Mean padded sequence length of the batches this call trained on.
    pub mean_seq_len: f64,
    pub final_model: Option<PathBuf>,
    pub last_dev: Option<EvalReport>,
    pub load_report: Option<LoadReport>,
}

/// The data, tokenized once.
struct Prepared {
    train: Vec<Encoded>,
    train_labels: Vec<i64>,
    dev: Vec<Encoded>,
    dev_labels: Vec<usize>,
}

/// A run in progress: what starting or resuming gives, and what every step changes.
struct Run {
    config: TrainConfig,
    model: MultiExitBert,
    encoder: TextEncoder,
    optimizer: AdamW,
    state: TrainingState,
    /// The checkpoint this process resumed from, if any.
    resumed_from: Option<PathBuf>,
}

/// What this process has trained so far (a resumed run counts from its resume).
#[derive(Default)]
struct Progress {
    steps: usize,
    train_seconds: f64,
    padded_tokens_len: usize,
    micro_batches: usize,
    loss_ema: Option<f64>,
}

/// What one optimizer step computed: the batch-mean losses.
struct StepLosses {
    total: f64,
    ce: f64,
    osc: f64,
}

/// Runs (or, with `resume`, continues) the training described by `config`.
pub fn train(config: &TrainConfig, options: &RunOptions, resume: bool) -> Result<TrainSummary> {
    let say = |msg: String| {
        if options.verbose {
            eprintln!("{msg}");
        }
    };
    let (mut run, load_report) = start_or_resume(config, options, resume, &say)?;
    let output = run.config.output_dir.clone();

    let data = prepare(&run.config, &run.encoder)?;
    let config = &run.config;
    let steps_per_epoch = data.train.len().div_ceil(config.batch_size);
    let total_steps = config.max_steps.unwrap_or(steps_per_epoch * config.epochs);
    let epochs = total_steps.div_ceil(steps_per_epoch.max(1));
    if run.resumed_from.is_some()
        && (run.state.steps_per_epoch != steps_per_epoch || run.state.total_steps != total_steps)
    {
        return Err(TrainerError::Invalid(format!(
            "the data changed since the checkpoint: {steps_per_epoch} steps per epoch and {total_steps} in total now, \
             {} and {} then",
            run.state.steps_per_epoch, run.state.total_steps
        )));
    }
    run.state.steps_per_epoch = steps_per_epoch;
    run.state.total_steps = total_steps;
    if run.resumed_from.is_none() && config.standardize_poolers {
        let sample: Vec<&Encoded> = data.train.iter().take(POOLER_SAMPLE).collect();
        run.model.standardize_exit_poolers(&EncodedBatch::pad(&sample, run.encoder.pad_id(), None))?;
        say(format!("exit poolers standardized on {} training examples", sample.len()));
    }
    if run.resumed_from.is_none() && config.centered_logits {
        run.model.center_classifiers();
    }
    say(format!(
        "{} train / {} dev examples; {} epochs × {} steps = {} optimizer steps of {} (micro-batch {}) on {:?}",
        data.train.len(),
        data.dev.len(),
        epochs,
        steps_per_epoch,
        total_steps,
        config.batch_size,
        config.micro_batch_size(),
        options.device
    ));

    let bar = progress_bar(options.progress, total_steps, run.state.step);
    let lengths: Vec<usize> = data.train.iter().map(Encoded::len).collect();
    let mut progress = Progress::default();
    let mut last_dev = None;
    let resumed_epoch = run.resumed_from.is_some().then_some(run.state.epoch);

    'epochs: while run.state.epoch < epochs && run.state.step < total_steps {
        let seed = derive_seed(run.config.seed, STREAM_DATA, run.state.epoch as u64);
        let batches = bucketed_batches(&lengths, run.config.batch_size, &mut rand::rngs::StdRng::seed_from_u64(seed));
        let mut epoch_clock = Instant::now();
        for batch in batches.iter().skip(run.state.batch_in_epoch) {
            if run.state.step >= total_steps {
                break;
            }
            if options.stop_after_steps.is_some_and(|s| run.state.step >= s) {
                break 'epochs;
            }
            let started = Instant::now();
            let losses = train_step(&mut run, &data, batch, total_steps, options.device, &mut progress)?;
            run.state.record_step(losses.total, losses.ce, losses.osc);
            let seconds = started.elapsed().as_secs_f64();
            progress.train_seconds += seconds;
            progress.steps += 1;
            let ema = progress.loss_ema.map_or(losses.total, |e| 0.9 * e + 0.1 * losses.total);
            progress.loss_ema = Some(ema);
            bar.set_position(run.state.step as u64);
            bar.set_message(format!(
                "loss {ema:.4} | {:.2} steps/s",
                progress.steps as f64 / progress.train_seconds.max(1e-9)
            ));

            let epoch_done = run.state.batch_in_epoch == batches.len() || run.state.step == total_steps;
            if run.config.save_steps > 0 && run.state.step % run.config.save_steps == 0 && !epoch_done {
                run.state.epoch_seconds += epoch_clock.elapsed().as_secs_f64();
                epoch_clock = Instant::now();
                save_training_checkpoint(&run)?;
            }
        }

        let epoch_seconds = run.state.epoch_seconds + epoch_clock.elapsed().as_secs_f64();
        let mut line = end_epoch(&mut run, epoch_seconds, total_steps, resumed_epoch);
        if run.config.eval_each_epoch && !data.dev.is_empty() {
            let clock = Instant::now();
            let report = evaluate_dev(&run.model, &run.encoder, &data, &run.config)?;
            line["dev_seconds"] = serde_json::json!(clock.elapsed().as_secs_f64());
            line["dev"] = serde_json::to_value(&report).expect("report serializes");
            bar.suspend(|| say(epoch_note(&line, &report)));
            last_dev = Some(report);
        }
        append_metrics(&output, &line)?;
        save_training_checkpoint(&run)?;
    }
    bar.finish_and_clear();
    finish(run, &data, total_steps, progress, last_dev, load_report, options)
}

/// A fresh run (its directory created and its config saved, the model built from the backbone) or, with `resume`,
/// the latest checkpoint of `config.output_dir` with its weights, optimizer moments and training state.
fn start_or_resume(
    config: &TrainConfig,
    options: &RunOptions,
    resume: bool,
    say: &dyn Fn(String),
) -> Result<(Run, Option<LoadReport>)> {
    let output = config.output_dir.clone();
    let resumed_from = if resume { state::latest_checkpoint(&output)? } else { None };
    if let Some(dir) = resumed_from {
        // The saved `output_dir` is where the run was written; a moved or copied run continues where it is now.
        let config = TrainConfig { output_dir: output.clone(), ..state::read_config(&output)? };
        config.validate()?;
        let model = MultiExitBert::load_checkpoint(&dir, options.device)?;
        let encoder = TextEncoder::from_file(&dir.join(TOKENIZER_FILE), config.max_seq_len)?;
        let state = state::read_state(&dir)?;
        let mut optimizer = AdamW::new(&model, config.adam);
        let moments = checkpoint::read_tensors(&dir.join(state::OPTIMIZER_FILE), options.device)?;
        optimizer.load_state(&moments, state.step as i64)?;
        say(format!("resuming from {} (step {}, epoch {})", dir.display(), state.step, state.epoch + 1));
        let run = Run { config, model, encoder, optimizer, state, resumed_from: Some(dir) };
        return Ok((run, None));
    }
    let config = config.clone();
    config.validate()?;
    if !resume && state::latest_checkpoint(&output)?.is_some() {
        return Err(TrainerError::Invalid(format!(
            "{} already holds a run with checkpoints: continue it with --resume or choose another directory",
            output.display()
        )));
    }
    std::fs::create_dir_all(&output).map_err(io_err(&output))?;
    let json = serde_json::to_string_pretty(&config).expect("config serializes");
    checkpoint::write_file_atomically(&output.join(state::CONFIG_FILE), json.as_bytes())?;
    let (model, report) = initial_model(&config, options.device)?;
    say(describe_load(&report));
    let encoder = TextEncoder::from_file(&config.backbone.join(TOKENIZER_FILE), config.max_seq_len)?;
    let optimizer = AdamW::new(&model, config.adam);
    let state = TrainingState::start(config.seed, ThresholdRange::initial(config.objective.signal, model.num_layers()));
    Ok((Run { config, model, encoder, optimizer, state, resumed_from: None }, Some(report)))
}

/// One optimizer step on `batch` (indices into the training data), accumulated over micro-batches. Its random
/// streams (dropout, SWM thresholds) are derived from the step number, so a resumed run repeats it exactly.
fn train_step(
    run: &mut Run,
    data: &Prepared,
    batch: &[usize],
    total_steps: usize,
    device: Device,
    progress: &mut Progress,
) -> Result<StepLosses> {
    let (config, state) = (&run.config, &mut run.state);
    tch::manual_seed(derive_seed(config.seed, STREAM_DROPOUT, state.step as u64) as i64);
    let mut threshold_rng =
        rand::rngs::StdRng::seed_from_u64(derive_seed(config.seed, STREAM_THRESHOLDS, state.step as u64));
    let thresholds = state.threshold_range.sample(config.objective.k, &mut threshold_rng);
    let beta = beta_t(config.objective.beta0, state.step, total_steps);
    let lr = linear_lr(config.learning_rate, state.step, config.warmup_steps, total_steps);

    run.optimizer.zero_grad();
    let mut losses = StepLosses { total: 0.0, ce: 0.0, osc: 0.0 };
    for chunk in batch.chunks(config.micro_batch_size()) {
        let items: Vec<&Encoded> = chunk.iter().map(|&i| &data.train[i]).collect();
        let padded = EncodedBatch::pad(&items, run.encoder.pad_id(), config.pad_to);
        progress.padded_tokens_len += padded.seq_len;
        progress.micro_batches += 1;
        let (ids, types, mask) = padded.to_tensors(device);
        let labels: Vec<i64> = chunk.iter().map(|&i| data.train_labels[i]).collect();
        let labels = Tensor::from_slice(&labels).to_device(device);
        let logits = run.model.forward(&ids, &types, &mask, true);
        let out = config.objective.loss(&logits, &labels, &thresholds, beta)?;
        // Each micro-batch loss is a mean over its samples: weight it by its share of the batch so the
        // accumulated gradient is that of the batch mean.
        let share = chunk.len() as f64 / batch.len() as f64;
        (&out.total * share).backward();
        losses.total += out.total.double_value(&[]) * share;
        losses.ce += out.ce * share;
        losses.osc += out.osc.unwrap_or(0.0) * share;
        if let Some(signals) = &out.signals {
            state.range_tracker.observe(signals);
        }
        let signal_rows = match out.signals {
            Some(rows) => rows,
            None => config.objective.signal_rows(&logits)?,
        };
        state.diagnostics.observe(&signal_rows, &correct_rows(&logits, &labels)?, &out.exit_weights);
    }
    run.optimizer.clip_grad_norm(config.max_grad_norm);
    run.optimizer.step(lr);
    if config.centered_logits {
        run.model.center_classifiers();
    }
    if !losses.total.is_finite() {
        return Err(TrainerError::Invalid(format!("the loss became {} at step {}", losses.total, state.step + 1)));
    }
    Ok(losses)
}

/// Closes the epoch in progress: its `metrics.jsonl` line (losses, schedule, per-exit diagnostics), and the state
/// set for the next one, whose SWM threshold range is the signals seen in this one (paper §3.2).
fn end_epoch(run: &mut Run, epoch_seconds: f64, total_steps: usize, resumed_epoch: Option<usize>) -> serde_json::Value {
    let (config, state) = (&run.config, &mut run.state);
    let initial_range = ThresholdRange::initial(config.objective.signal, run.model.num_layers());
    let batches_done = state.epoch_batches.max(1) as f64;
    let used_range = state.threshold_range;
    state.threshold_range = state.range_tracker.range(initial_range);
    let line = serde_json::json!({
        "event": "epoch",
        "epoch": state.epoch + 1,
        "step": state.step,
        "wall_seconds": epoch_seconds,
        "resumed": resumed_epoch == Some(state.epoch),
        "train_loss": state.epoch_loss_sum / batches_done,
        "train_ce": state.epoch_ce_sum / batches_done,
        "train_osc": state.epoch_osc_sum / batches_done,
        "lr_end": linear_lr(config.learning_rate, state.step, config.warmup_steps, total_steps),
        "beta_end": beta_t(config.objective.beta0, state.step, total_steps),
        "threshold_range": used_range,
        "next_threshold_range": state.threshold_range,
        "exits": state.diagnostics.summary(),
    });
    state.start_next_epoch();
    line
}

/// The end of this process's part of the run: the final model and its dev evaluation when the run is complete,
/// the closing `metrics.jsonl` line either way.
fn finish(
    run: Run,
    data: &Prepared,
    total_steps: usize,
    progress: Progress,
    mut last_dev: Option<EvalReport>,
    load_report: Option<LoadReport>,
    options: &RunOptions,
) -> Result<TrainSummary> {
    let output = &run.config.output_dir;
    let finished = run.state.step >= total_steps;
    let final_model = if finished {
        let dir = output.join("model");
        run.model.save_checkpoint(&dir, run.encoder.json_bytes())?;
        if last_dev.is_none() && !data.dev.is_empty() {
            last_dev = Some(evaluate_dev(&run.model, &run.encoder, data, &run.config)?);
        }
        Some(dir)
    } else {
        None
    };
    let steps_per_second =
        if progress.train_seconds > 0.0 { progress.steps as f64 / progress.train_seconds } else { 0.0 };
    let mean_seq_len = progress.padded_tokens_len as f64 / progress.micro_batches.max(1) as f64;
    append_metrics(
        output,
        &serde_json::json!({
            "event": if finished { "finished" } else { "stopped" },
            "step": run.state.step,
            "steps_this_run": progress.steps,
            "steps_per_second": steps_per_second,
            "mean_padded_seq_len": mean_seq_len,
            "device": format!("{:?}", options.device),
            "threads": tch::get_num_threads(),
        }),
    )?;
    Ok(TrainSummary {
        steps_done: run.state.step,
        total_steps,
        steps_this_run: progress.steps,
        steps_per_second,
        mean_seq_len,
        final_model,
        last_dev,
        load_report,
    })
}

/// Whether each exit predicts each sample right, `[sample][exit]`.
fn correct_rows(logits: &[Tensor], labels: &Tensor) -> Result<Vec<Vec<bool>>> {
    let columns: Vec<Tensor> =
        logits.iter().map(|l| l.detach().argmax(-1, false).eq_tensor(labels).to_kind(tch::Kind::Float)).collect();
    let rows = crate::model::tensor_to_rows(&Tensor::stack(&columns, 1))?;
    Ok(rows.into_iter().map(|r| r.into_iter().map(|v| v > 0.5).collect()).collect())
}

/// The model a fresh run starts from: the backbone plus exit heads drawn from libtorch's generator seeded by
/// the run's seed, so that two runs with the same flags start (and end) the same.
pub fn initial_model(config: &TrainConfig, device: Device) -> Result<(MultiExitBert, LoadReport)> {
    tch::manual_seed(derive_seed(config.seed, STREAM_INIT, 0) as i64);
    MultiExitBert::from_pretrained(&config.backbone, config.exit_config(), device)
}

fn prepare(config: &TrainConfig, encoder: &TextEncoder) -> Result<Prepared> {
    let all_train = match config.holdout_fraction {
        Some(fraction) => {
            let path = config.data.path(config.task, Split::Train)?;
            load_with_holdout(config.task, &path, fraction, &config.output_dir.join(HOLDOUT_FILE))?
        }
        None => config.data.load(config.task, Split::Train)?,
    };
    let train_examples = subset(all_train, config.max_train_examples, config.seed);
    let dev_examples = match config.data.path(config.task, Split::Dev) {
        Ok(_) => subset(config.data.load(config.task, Split::Dev)?, config.max_dev_examples, config.seed),
        Err(_) => Vec::new(),
    };
    Ok(Prepared {
        train: encoder.encode_all(&train_examples)?,
        train_labels: labels(&train_examples).into_iter().map(|l| l as i64).collect(),
        dev: encoder.encode_all(&dev_examples)?,
        dev_labels: labels(&dev_examples),
    })
}

fn evaluate_dev(
    model: &MultiExitBert,
    encoder: &TextEncoder,
    data: &Prepared,
    config: &TrainConfig,
) -> Result<EvalReport> {
    let outputs = eval::run_all_exits(
        model,
        &data.dev,
        &data.dev_labels,
        config.eval_batch_size,
        encoder.pad_id(),
        config.pad_to,
        None,
    )?;
    let signal = config.objective.signal;
    Ok(eval::evaluate(&outputs, config.task, signal, &signal.default_sweep(model.num_layers())))
}

fn save_training_checkpoint(run: &Run) -> Result<()> {
    let name = state::checkpoint_name(run.state.step);
    let dir = state::checkpoints_dir(&run.config.output_dir).join(&name);
    let state_json = serde_json::to_vec_pretty(&run.state).expect("state serializes");
    let moments = checkpoint::serialize_tensors(&run.optimizer.state_tensors())?;
    checkpoint::save(
        &run.model,
        &dir,
        run.encoder.json_bytes(),
        &[(state::STATE_FILE, state_json), (state::OPTIMIZER_FILE, moments)],
    )?;
    state::publish_checkpoint(&run.config.output_dir, &name, run.config.keep_checkpoints)
}

fn append_metrics(output: &Path, line: &serde_json::Value) -> Result<()> {
    let path = output.join(state::METRICS_FILE);
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
    writeln!(file, "{line}").map_err(io_err(&path))
}

fn progress_bar(show: bool, total: usize, position: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} steps [{elapsed_precise} < {eta_precise}] {msg}")
            .expect("valid template"),
    );
    bar.set_position(position as u64);
    bar
}

/// A one-paragraph summary of a pretrained load.
pub fn describe_load(report: &LoadReport) -> String {
    let mut out = format!("loaded {} pretrained tensors", report.loaded.len());
    if !report.copied.is_empty() {
        out.push_str(&format!("; {} per-exit pooler tensors copied from the shared pooler", report.copied.len()));
    }
    if !report.initialized.is_empty() {
        out.push_str(&format!(
            "\nwarning: {} tensors not in the backbone start from random init (N(0, 0.02²), zero bias): {}",
            report.initialized.len(),
            abbreviate(&report.initialized)
        ));
    }
    if !report.ignored.is_empty() {
        out.push_str(&format!("\nignored backbone tensors: {}", abbreviate(&report.ignored)));
    }
    out
}

fn abbreviate(names: &[String]) -> String {
    if names.len() <= 6 {
        names.join(", ")
    } else {
        format!("{}, … ({} more)", names[..4].join(", "), names.len() - 4)
    }
}

fn epoch_note(line: &serde_json::Value, report: &EvalReport) -> String {
    let acc: Vec<String> = report.layers.iter().map(|l| format!("{:.3}", l.accuracy)).collect();
    let loss: Vec<String> = report.layers.iter().map(|l| format!("{:.3}", l.loss)).collect();
    format!(
        "epoch {} (step {}): {:.1}s, train loss {:.4}; dev accuracy per exit [{}], loss [{}]",
        line["epoch"],
        line["step"],
        line["wall_seconds"].as_f64().unwrap_or(0.0),
        line["train_loss"].as_f64().unwrap_or(f64::NAN),
        acc.join(" "),
        loss.join(" ")
    )
}
