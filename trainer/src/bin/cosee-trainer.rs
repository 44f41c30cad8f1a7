//! `cosee-trainer`: fine-tune (train), evaluate (eval), chart (plot) COSEE multi-exit models and collect runs
//! (results). The parity of a checkpoint with the package exported from it is `cosee-tools verify`.
//! Flags only; the work is done by the `cosee_trainer` library.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use cosee_format::config::Pooling;
use cosee_format::glue::Task;
use cosee_format::signal::ExitSignal;
use cosee_trainer::data::{read_labelled, subset, DataSource, Split};
use cosee_trainer::eval::{self, EvalReport};
use cosee_trainer::model::{MultiExitBert, TOKENIZER_FILE};
use cosee_trainer::objective::ObjectiveConfig;
use cosee_trainer::train::optimizer::AdamWConfig;
use cosee_trainer::train::{self, RunOptions, TrainConfig};
use cosee_trainer::{device, plot, results, TextEncoder};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "cosee-trainer", version, about = "Fine-tune and evaluate COSEE early-exit BERT classifiers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fine-tune a pretrained BERT with an exit per layer (COSEE or a baseline objective).
    Train(Box<TrainArgs>),
    /// Run a dev set through every exit of a checkpoint and sweep the exit threshold.
    Eval(EvalArgs),
    /// Overlay the accuracy / speed-up curves of several `eval` reports on one chart.
    Plot(PlotArgs),
    /// Collect trained and evaluated runs into the objective comparison: a JSON file of runs, a chart (mean and
    /// spread over seeds at fixed speed-ups) and a Markdown table on stdout.
    Results(ResultsArgs),
}

#[derive(Args)]
struct Runtime {
    /// libtorch CPU threads, 1 to 1024 (default: libtorch's, one per core).
    #[arg(long, value_parser = cosee_format::settings::parse_threads_flag)]
    threads: Option<usize>,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Args)]
struct DataArgs {
    /// GLUE root directory (holding SST-2/, MRPC/, …).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Training TSV in the task's GLUE format (instead of <data-dir>/<TASK>/train.tsv).
    #[arg(long)]
    train_file: Option<PathBuf>,
    /// Dev TSV in the task's GLUE format (instead of <data-dir>/<TASK>/dev.tsv).
    #[arg(long)]
    dev_file: Option<PathBuf>,
}

impl DataArgs {
    fn source(&self) -> DataSource {
        DataSource {
            data_dir: self.data_dir.clone(),
            train_file: self.train_file.clone(),
            dev_file: self.dev_file.clone(),
        }
    }
}

#[derive(Args)]
struct TrainArgs {
    /// GLUE task: sst-2, mrpc, qqp, mnli, qnli, rte.
    #[arg(long)]
    task: Option<Task>,
    /// Pretrained HF BERT directory (model.safetensors, config.json, tokenizer.json).
    #[arg(long)]
    backbone: Option<PathBuf>,
    /// Where checkpoints, metrics.jsonl and the final model/ go.
    #[arg(long)]
    output_dir: PathBuf,
    /// Continue the run in --output-dir from its latest checkpoint, with its saved configuration.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    data: DataArgs,
    /// Train on a seeded random subset of this many examples.
    #[arg(long)]
    max_train_examples: Option<usize>,
    /// Evaluate on a seeded random subset of this many dev examples.
    #[arg(long)]
    max_dev_examples: Option<usize>,
    /// Hold this fraction of the training file out (a fixed slice, the same for every seed) and write it to
    /// <output-dir>/holdout.tsv: tune β0, α and τ there, and dev stays unseen.
    #[arg(long)]
    holdout_fraction: Option<f64>,

    #[command(flatten)]
    objective: ObjectiveConfig,

    /// Peak learning rate (linear decay to 0).
    #[arg(long, default_value_t = 2e-5)]
    lr: f64,
    #[command(flatten)]
    adam: AdamWConfig,
    #[arg(long, default_value_t = 0)]
    warmup_steps: usize,
    /// Gradient clipping (global L2 norm).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Examples per optimizer step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Examples per forward/backward pass; gradients accumulate up to --batch-size.
    #[arg(long)]
    micro_batch: Option<usize>,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// End training (and the linear schedule) after this many optimizer steps.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Longest input in tokens, [CLS]/[SEP] included.
    #[arg(long, default_value_t = 128)]
    max_seq_len: usize,
    /// Pad every batch to this length (the reference: 128) instead of its longest input.
    #[arg(long)]
    pad_to: Option<usize>,
    /// One pooler per exit instead of the shared pooler.
    #[arg(long)]
    per_exit_pooler: bool,
    /// What each exit pools from its layer: the [CLS] vector (the paper's reference) or the mean over the tokens
    /// (for sentence-embedding backbones such as all-MiniLM-L6-v2, trained with mean pooling).
    #[arg(long, default_value_t = Pooling::Cls)]
    pooling: Pooling,
    /// Start each exit's pooler as a standardization of what it pools from its layer, measured on 512 training
    /// examples (implies --per-exit-pooler). For backbones whose shallow [CLS] barely varies, e.g. all-MiniLM-L6-v2.
    #[arg(long)]
    standardize_poolers: bool,
    /// Keep each exit's logits zero-sum (classifier rows centered after every step): the normalized energy then
    /// ranks by the margins only, and OSC cannot train the logits' free common level into a second difficulty
    /// score (see docs/results/osc-on-minilm.md). Prediction and cross-entropy are unchanged.
    #[arg(long)]
    centered_logits: bool,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Checkpoint every N optimizer steps (besides every epoch end); 0: epoch ends only.
    #[arg(long, default_value_t = 0)]
    save_steps: usize,
    #[arg(long, default_value_t = 2)]
    keep_checkpoints: usize,
    #[arg(long, default_value_t = 128)]
    eval_batch_size: usize,
    /// Skip the dev evaluation at epoch ends.
    #[arg(long)]
    no_eval: bool,
    /// Stop after this many optimizer steps in total, as if interrupted (for timing; --resume continues).
    #[arg(long)]
    stop_after_steps: Option<usize>,
    #[command(flatten)]
    runtime: Runtime,
}

#[derive(Args)]
struct EvalArgs {
    /// Checkpoint directory (model.safetensors, config.json, tokenizer.json).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Task (default: the checkpoint's).
    #[arg(long)]
    task: Option<Task>,
    #[command(flatten)]
    data: DataArgs,
    /// Exit signal (default: the one the checkpoint was trained with).
    #[arg(long)]
    signal: Option<ExitSignal>,
    /// Comma-separated thresholds (default: 0.00..1.00 step 0.05; patience: 1..M-1).
    #[arg(long, value_delimiter = ',')]
    thresholds: Option<Vec<f32>>,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    #[arg(long)]
    pad_to: Option<usize>,
    /// Evaluate a seeded random subset of this many examples.
    #[arg(long)]
    max_examples: Option<usize>,
    /// Output directory for eval.json, eval_sweep.csv, eval_layers.csv and the PNG charts.
    #[arg(long)]
    out: PathBuf,
    /// Name of this run in charts (default: the checkpoint directory's name).
    #[arg(long)]
    label: Option<String>,
    /// Also write every exit's logits and the labels (eval_logits.json: {"labels": [...], "logits":
    /// [exit][sample][class]}), for analyses of the signals beyond the report.
    #[arg(long)]
    save_logits: bool,
    #[command(flatten)]
    runtime: Runtime,
}

#[derive(Args)]
struct PlotArgs {
    /// Report files written by `eval` (eval.json).
    #[arg(long, num_args = 1.., required = true)]
    runs: Vec<PathBuf>,
    /// One label per run (comma-separated or repeated); default: each report's label.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// The PNG to write.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct ResultsArgs {
    /// Run directories (each with train_config.json and its dev evaluation in <run>/<eval-dir>/eval.json).
    #[arg(long, num_args = 1.., required = true)]
    runs: Vec<PathBuf>,
    /// The evaluation folder inside each run.
    #[arg(long, default_value = "eval-dev")]
    eval_dir: String,
    /// The JSON file to write (a list of runs).
    #[arg(long)]
    out: PathBuf,
    /// Keep the runs recorded in this results file (an earlier collection, whose run directories may be gone); a
    /// run directory of the same name, trained on the same device, replaces its record. It may be `--out` itself.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Also draw the comparison chart here (PNG).
    #[arg(long)]
    chart: Option<PathBuf>,
    /// The chart's title.
    #[arg(long, default_value = "COSEE and baselines at fixed speed-ups")]
    title: String,
}

fn main() -> Result<()> {
    cosee_format::sigpipe::restore_default();
    match Cli::parse().command {
        Command::Train(args) => run_train(*args),
        Command::Eval(args) => run_eval(args),
        Command::Plot(args) => run_plot(args),
        Command::Results(args) => run_results(args),
    }
}

fn run_train(a: TrainArgs) -> Result<()> {
    device::set_threads(a.runtime.threads);
    let device = device::parse_device(&a.runtime.device)?;
    let config = train_config(&a)?;
    let options =
        RunOptions { device, progress: !a.runtime.no_progress, verbose: true, stop_after_steps: a.stop_after_steps };
    let summary = train::train(&config, &options, a.resume)?;
    eprintln!(
        "{} of {} steps done; this run: {} steps at {:.3} steps/s (mean padded length {:.1}, {} threads, {:?})",
        summary.steps_done,
        summary.total_steps,
        summary.steps_this_run,
        summary.steps_per_second,
        summary.mean_seq_len,
        tch::get_num_threads(),
        device
    );
    if let Some(report) = &summary.last_dev {
        println!("{}", report.table());
    }
    match &summary.final_model {
        Some(dir) => eprintln!("final model: {}", dir.display()),
        None => eprintln!("stopped before the end; continue with --resume --output-dir {}", a.output_dir.display()),
    }
    Ok(())
}

/// The run's configuration: the saved one with `--resume` (where the run is now), else the flags'.
fn train_config(a: &TrainArgs) -> Result<TrainConfig> {
    if a.resume {
        // The saved configuration is authoritative; flags other than the runtime ones are not read. The run is
        // where it is now: a directory moved or copied since resumes there, not where it was written.
        let mut c = train::state::read_config(&a.output_dir)
            .with_context(|| format!("--resume: {} holds no run to continue", a.output_dir.display()))?;
        c.output_dir = a.output_dir.clone();
        Ok(c)
    } else {
        let (Some(task), Some(backbone)) = (a.task, a.backbone.clone()) else {
            bail!("--task and --backbone are required (unless --resume)");
        };
        let mut c = TrainConfig::new(task, backbone, a.data.source(), a.output_dir.clone());
        c.max_train_examples = a.max_train_examples;
        c.max_dev_examples = a.max_dev_examples;
        c.holdout_fraction = a.holdout_fraction;
        c.objective = a.objective.clone();
        c.learning_rate = a.lr;
        c.adam = a.adam;
        c.warmup_steps = a.warmup_steps;
        c.max_grad_norm = a.max_grad_norm;
        c.batch_size = a.batch_size;
        c.micro_batch = a.micro_batch;
        c.epochs = a.epochs;
        c.max_steps = a.max_steps;
        c.max_seq_len = a.max_seq_len;
        c.pad_to = a.pad_to;
        c.per_exit_pooler = a.per_exit_pooler || a.standardize_poolers;
        c.standardize_poolers = a.standardize_poolers;
        c.centered_logits = a.centered_logits;
        c.pooling = a.pooling;
        c.seed = a.seed;
        c.save_steps = a.save_steps;
        c.keep_checkpoints = a.keep_checkpoints;
        c.eval_batch_size = a.eval_batch_size;
        c.eval_each_epoch = !a.no_eval;
        Ok(c)
    }
}

fn run_eval(a: EvalArgs) -> Result<()> {
    device::set_threads(a.runtime.threads);
    let device = device::parse_device(&a.runtime.device)?;
    let model = MultiExitBert::load_checkpoint(&a.checkpoint, device)
        .with_context(|| format!("loading checkpoint {}", a.checkpoint.display()))?;
    let exit = model.exit_config().clone();
    let task = a.task.unwrap_or(exit.task);
    if task.num_labels() != model.num_labels() {
        bail!("task {task} has {} labels, the checkpoint {}", task.num_labels(), model.num_labels());
    }
    let encoder = TextEncoder::from_file(&a.checkpoint.join(TOKENIZER_FILE), exit.max_seq_len)?;
    let source = a.data.source();
    let path = source.path(task, Split::Dev)?;
    let examples = subset(read_labelled(task, &path)?, a.max_examples, 42);
    let signal = a.signal.unwrap_or(exit.signal);
    let thresholds = a.thresholds.clone().unwrap_or_else(|| signal.default_sweep(model.num_layers()));

    let bar = if a.runtime.no_progress {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(examples.len() as u64);
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} examples [{elapsed_precise}] {per_sec}")?);
        bar
    };
    let started = std::time::Instant::now();
    let outputs = eval::run_examples(&model, &encoder, &examples, a.batch_size, a.pad_to, Some(&bar))?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let label = a.label.clone().unwrap_or_else(|| {
        a.checkpoint.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
    });
    let mut report = eval::evaluate(&outputs, task, signal, &thresholds);
    report.label = Some(label.clone());
    let json = report.write_files(&a.out, "eval")?;
    if a.save_logits {
        let path = a.out.join("eval_logits.json");
        let doc = serde_json::json!({ "labels": outputs.labels, "logits": outputs.logits });
        std::fs::write(&path, doc.to_string()).with_context(|| format!("writing {}", path.display()))?;
    }
    let pngs = plot::all(&report, &a.out, "eval", &label)?;
    println!("{}", report.table());
    eprintln!("{} examples through {} exits in {seconds:.1}s", examples.len(), model.num_layers());
    eprintln!(
        "wrote {} (+ CSV) and {}",
        json.display(),
        pngs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

fn run_results(a: ResultsArgs) -> Result<()> {
    let runs = a
        .runs
        .iter()
        .map(|dir| {
            let report = EvalReport::read(&dir.join(&a.eval_dir).join("eval.json"))?;
            results::RunResult::from_run(dir, &report)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let runs = match &a.keep {
        Some(kept) => results::merge(results::read(kept)?, runs),
        None => runs,
    };
    if let Some(parent) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&a.out, serde_json::to_string_pretty(&runs)? + "\n")
        .with_context(|| format!("writing {}", a.out.display()))?;
    if let Some(chart) = &a.chart {
        plot::objectives(&runs, &a.title, chart)?;
        eprintln!("wrote {}", chart.display());
    }
    print!("{}", results::markdown_table(&runs));
    eprintln!("wrote {} ({} runs)", a.out.display(), runs.len());
    Ok(())
}

fn run_plot(a: PlotArgs) -> Result<()> {
    if !a.labels.is_empty() && a.labels.len() != a.runs.len() {
        bail!("{} labels for {} runs", a.labels.len(), a.runs.len());
    }
    let reports = a.runs.iter().map(|p| EvalReport::read(p)).collect::<Result<Vec<_>, _>>()?;
    let runs: Vec<(String, &EvalReport)> = reports
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let label =
                a.labels.get(i).cloned().or_else(|| r.label.clone()).unwrap_or_else(|| format!("run {}", i + 1));
            (label, r)
        })
        .collect();
    if let Some(parent) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    plot::tradeoff(&runs, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cosee_trainer::objective::ObjectiveKind;

    /// The objective's and AdamW's flags land in the configuration (they are its own fields, flattened).
    #[test]
    fn objective_and_optimizer_flags_fill_the_config() {
        let cli = Cli::try_parse_from([
            "cosee-trainer",
            "train",
            "--task",
            "sst-2",
            "--backbone",
            "b",
            "--output-dir",
            "o",
            "--objective",
            "swm",
            "--signal",
            "entropy",
            "--k",
            "3",
            "--beta0",
            "1",
            "--alpha",
            "0.01",
            "--epsilon",
            "0.1",
            "--weight-decay",
            "0.01",
            "--head-lr-scale",
            "20",
            "--adam-beta1",
            "0.8",
            "--adam-beta2",
            "0.99",
            "--adam-eps",
            "1e-6",
        ])
        .unwrap();
        let Command::Train(args) = cli.command else { panic!("not the train command") };
        let c = train_config(&args).unwrap();
        let o = &c.objective;
        assert_eq!(
            (o.kind, o.signal, o.k, o.beta0, o.alpha, o.epsilon),
            (ObjectiveKind::Swm, ExitSignal::Entropy, 3, 1.0, 0.01, 0.1)
        );
        let a = c.adam;
        assert_eq!((a.weight_decay, a.head_lr_scale, a.beta1, a.beta2, a.eps), (0.01, 20.0, 0.8, 0.99, 1e-6));
        // Without the flags: the paper's and PyTorch's values, as the library's defaults.
        let cli =
            Cli::try_parse_from(["cosee-trainer", "train", "--task", "sst-2", "--backbone", "b", "--output-dir", "o"]);
        let Command::Train(args) = cli.unwrap().command else { panic!("not the train command") };
        let c = train_config(&args).unwrap();
        assert_eq!(c.objective, ObjectiveConfig::default());
        assert_eq!(c.adam, AdamWConfig::default());
    }
}
