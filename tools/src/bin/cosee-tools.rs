//! `cosee-tools`: argument parsing and printing over the `cosee_tools` library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use cosee_runtime::config::ExitConfig;
use cosee_runtime::manifest::{EmbeddingStorage, Numerics, QuantScheme};
use cosee_runtime::{ExitSignal, Task};
use cosee_tools::export::{export, ExportOptions};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "cosee-tools", version, about = "Export, calibrate and inspect COSEE model packages")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Quantize {
    /// f32 everywhere.
    None,
    /// s8×s8 linear layers (per-token activations, per-channel weights); LayerNorm/softmax/GELU in f32.
    Int8,
}

#[derive(Clone, Copy, ValueEnum)]
enum Embeddings {
    F32,
    F16,
    Int8,
}

/// How LayerNorm, softmax and GELU are written (see the manifest's `Numerics`).
#[derive(Clone, Copy, ValueEnum)]
enum NumericsArg {
    /// The standard operators (tract's fused kernels): fastest, but differ by an ulp between x86-64 and ARM.
    Fused,
    /// Operations tract computes bit for bit alike on x86-64 and ARM; GELU in its tanh form.
    Portable,
}

#[derive(Subcommand)]
enum Command {
    /// Write the per-layer ONNX package of a checkpoint.
    Export {
        /// Checkpoint directory (model.safetensors, config.json, tokenizer.json).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Package directory to create.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "none")]
        quantize: Quantize,
        /// Word-embedding table storage [default: f32 with --quantize none, f16 with --quantize int8].
        #[arg(long, value_enum)]
        embeddings: Option<Embeddings>,
        /// How LayerNorm, softmax and GELU are written. `portable`: an int8 package answers on ARM bit for bit as
        /// on x86-64 (the fused kernels differ by an ulp, which an int8 rounding can turn into a whole step), at
        /// about 1.3x the latency (docs/raspberry-pi.md).
        #[arg(long, value_enum, default_value = "fused")]
        numerics: NumericsArg,
        /// For a pretrained backbone without a `cosee` section: export it for this task with RANDOM exit heads
        /// (for timing and format checks).
        #[arg(long)]
        task: Option<Task>,
        /// Exit signal of those random heads.
        #[arg(long, default_value = "energy", requires = "task")]
        signal: ExitSignal,
        /// Longest input of those random heads, in tokens.
        #[arg(long, default_value_t = 128, requires = "task")]
        max_seq_len: usize,
        /// Default τ written to the manifest [default: the signal's, until `calibrate`].
        #[arg(long)]
        threshold: Option<f32>,
        /// Seed of random exit heads.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Replace an existing package.
        #[arg(long)]
        force: bool,
        /// Skip running the written graphs against the reference forward pass.
        #[arg(long)]
        no_check: bool,
    },
    /// Run a package over labelled data at full depth and write its τ table and default τ into the manifest.
    Calibrate {
        #[arg(long)]
        package: PathBuf,
        /// GLUE-format TSV with labels (e.g. the task's dev.tsv).
        #[arg(long)]
        data: PathBuf,
        /// Layout of the data file [default: the package's task].
        #[arg(long)]
        task: Option<Task>,
        /// The default τ becomes the most accurate one whose layer speed-up (Eq. 12) reaches this.
        #[arg(long, default_value_t = cosee_tools::calibrate::DEFAULT_TARGET_SPEEDUP)]
        target_speedup: f64,
        /// Thresholds to sweep, comma-separated [default: the signal's standard sweep].
        #[arg(long, value_delimiter = ',')]
        thresholds: Option<Vec<f32>>,
        /// Use only the first N examples.
        #[arg(long)]
        limit: Option<usize>,
        /// Print the table without writing it.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Run two packages of one model (e.g. f32 and int8) over labelled data at full depth: per-exit max |Δlogit|,
    /// argmax agreement and accuracy of each.
    Compare {
        a: PathBuf,
        b: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        task: Option<Task>,
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Summarize a package: layers, files, quantization, signal, calibration.
    Inspect {
        package: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write a checkpoint with random weights over the small test tokenizer (for tests and benchmarks).
    RandomCheckpoint {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 2)]
        layers: usize,
        #[arg(long, default_value_t = 32)]
        hidden: usize,
        #[arg(long, default_value_t = 4)]
        heads: usize,
        #[arg(long, default_value = "sst-2")]
        task: Task,
        #[arg(long, default_value = "energy")]
        signal: ExitSignal,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Soak `cosee-edge serve`: a long hostile stdin (real sentences, empty lines, invalid UTF-8, lines over the
    /// 1 MiB cap, 10 MB lines without whitespace, pairs) while fake battery and thermal files change and turn to
    /// garbage; checks every line is answered once, in order, with the right kind of answer, no panic, τ changes
    /// logged, RSS flat after the warm-up. Prints the report as JSON; exits 1 when a property fails.
    Soak(SoakArgs),
    /// Run a checkpoint (tch) and the package exported from it (the runtime) on the same inputs: max |Δlogit| per
    /// exit, identical exit decisions, accuracy of both. Built with `--features verify` (links libtorch).
    #[cfg(feature = "verify")]
    Verify(VerifyArgs),
}

#[derive(clap::Args)]
struct SoakArgs {
    /// The `cosee-edge` executable to soak.
    #[arg(long)]
    serve: PathBuf,
    /// Model package directory.
    #[arg(long)]
    model: PathBuf,
    /// GLUE TSV of the package's task whose sentences make the stream (e.g. SST-2/dev.tsv).
    #[arg(long)]
    data: PathBuf,
    /// Lines to send.
    #[arg(long, default_value_t = 200_000)]
    lines: usize,
    /// One 10 MB whitespace-free line per this many lines (0: none).
    #[arg(long, default_value_t = 5000)]
    huge_every: usize,
    /// Lines whose memory is the baseline [default: a tenth of --lines].
    #[arg(long)]
    warmup_lines: Option<usize>,
    /// Largest RSS growth after the warm-up, as a fraction of the baseline.
    #[arg(long, default_value_t = 0.05)]
    max_growth: f64,
    /// How often the fake battery and thermal files change, milliseconds.
    #[arg(long, default_value_t = 50)]
    sysfs_ms: u64,
    /// How often serve reads them (its --power-poll-ms).
    #[arg(long, default_value_t = 20)]
    power_poll_ms: u64,
    /// How often the RSS is sampled, milliseconds.
    #[arg(long, default_value_t = 100)]
    rss_ms: u64,
    /// Where the fake sysfs goes [default: a temporary directory].
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Write the report here as well.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Further flags for serve, after `--` (e.g. -- --budget-ms 20).
    #[arg(last = true)]
    serve_args: Vec<String>,
}

fn run_soak(a: SoakArgs) -> Result<bool> {
    use cosee_tools::soak::{self, lines::LineSource, SoakOptions};
    use std::time::Duration;
    let task = cosee_runtime::manifest::Manifest::read(&a.model)
        .with_context(|| format!("reading the manifest of {}", a.model.display()))?
        .task;
    let sentences = soak::sentences_from_tsv(task, &a.data)?;
    anyhow::ensure!(!sentences.is_empty(), "{} holds no sentences", a.data.display());
    let options = SoakOptions {
        serve: a.serve.clone(),
        model: a.model.clone(),
        lines: a.lines,
        huge_every: a.huge_every,
        warmup_lines: a.warmup_lines.unwrap_or(a.lines / 10),
        sysfs_every: Duration::from_millis(a.sysfs_ms.max(1)),
        power_poll: Duration::from_millis(a.power_poll_ms.max(1)),
        rss_every: Duration::from_millis(a.rss_ms.max(1)),
        serve_args: a.serve_args.clone(),
    };
    let temporary = tempfile::tempdir()?;
    let scratch = a.scratch.clone().unwrap_or_else(|| temporary.path().to_path_buf());
    let report = soak::run(&options, LineSource::new(sentences, a.huge_every), &scratch)?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &a.out {
        std::fs::write(out, format!("{json}\n")).with_context(|| format!("writing {}", out.display()))?;
    }
    println!("{json}");
    let failures = report.failures(a.max_growth);
    for f in &failures {
        eprintln!("soak: FAILED: {f}");
    }
    if failures.is_empty() {
        eprintln!(
            "soak: passed: {} lines ({:.1} MB) in {:.0} s, RSS {} → {} KiB after the warm-up ({:+.2} %), peak {} KiB, \
             {} τ changes, {} sysfs rewrites",
            report.lines_sent,
            report.bytes_sent as f64 / 1e6,
            report.seconds,
            report.baseline_rss_kib,
            report.max_rss_kib_after_warmup,
            report.rss_growth * 100.0,
            report.peak_rss_kib,
            report.tau_changes,
            report.sysfs_rewrites
        );
    }
    Ok(failures.is_empty())
}

/// `verify`'s flags: the trainer's `verify` ones before it moved here.
#[cfg(feature = "verify")]
#[derive(clap::Args)]
struct VerifyArgs {
    /// Checkpoint directory the package was exported from.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Model package directory.
    #[arg(long)]
    package: PathBuf,
    /// Labelled GLUE TSV of the package's task (e.g. its dev.tsv).
    #[arg(long)]
    data: PathBuf,
    /// Use only the first N examples.
    #[arg(short = 'n', long)]
    limit: Option<usize>,
    /// More thresholds to compare exit decisions at (the package's default τ always is), comma-separated.
    #[arg(long, value_delimiter = ',')]
    thresholds: Vec<f32>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// libtorch CPU threads, 1 to 1024 (default: libtorch's, one per core).
    #[arg(long, value_parser = cosee_runtime::settings::parse_threads_flag)]
    threads: Option<usize>,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[cfg(feature = "verify")]
fn run_verify(a: VerifyArgs) -> Result<()> {
    use cosee_trainer::{data::read_labelled, device, MultiExitBert};
    use indicatif::ProgressBar;
    device::set_threads(a.threads);
    let device = device::parse_device(&a.device)?;
    let model = MultiExitBert::load_checkpoint(&a.checkpoint, device)
        .with_context(|| format!("loading checkpoint {}", a.checkpoint.display()))?;
    let engine =
        cosee_runtime::Engine::load(&a.package).with_context(|| format!("loading package {}", a.package.display()))?;
    let task = engine.manifest().task;
    let mut examples = read_labelled(task, &a.data)?;
    examples.truncate(a.limit.unwrap_or(usize::MAX));
    let bar = if a.no_progress { ProgressBar::hidden() } else { ProgressBar::new(examples.len() as u64) };
    let report = cosee_tools::verify::compare(&model, &engine, &examples, &a.thresholds, || bar.inc(1))?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} examples ({} tokenized differently by the checkpoint's own tokenizer)",
        report.examples, report.tokenization_mismatches
    );
    for (m, delta) in report.max_abs_delta.iter().enumerate() {
        println!("exit {:>2}: max |Δlogit| {delta:.3e}", m + 1);
    }
    for d in &report.decisions {
        println!(
            "τ = {}: identical exit layer {}/{} ({:.1}%)",
            d.threshold,
            d.identical,
            d.examples,
            100.0 * d.share()
        );
    }
    println!(
        "accuracy at full depth: tch {:.2}%, runtime {:.2}%; at the default τ: tch {:.2}%, runtime {:.2}%",
        100.0 * report.tch_accuracy,
        100.0 * report.runtime_accuracy,
        100.0 * report.tch_early_exit_accuracy,
        100.0 * report.runtime_early_exit_accuracy
    );
    Ok(())
}

fn main() -> Result<()> {
    cosee_runtime::sigpipe::restore_default();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match Cli::parse().command {
        Command::Export {
            checkpoint,
            out,
            quantize,
            embeddings,
            numerics,
            task,
            signal,
            max_seq_len,
            threshold,
            seed,
            force,
            no_check,
        } => {
            let quantize = match quantize {
                Quantize::None => QuantScheme::None,
                Quantize::Int8 => QuantScheme::Int8PerTokenSymmetric,
            };
            let embeddings = match (embeddings, quantize) {
                (Some(Embeddings::F32), _) | (None, QuantScheme::None) => EmbeddingStorage::F32,
                (Some(Embeddings::F16), _) | (None, QuantScheme::Int8PerTokenSymmetric) => EmbeddingStorage::F16,
                (Some(Embeddings::Int8), _) => EmbeddingStorage::Int8,
            };
            let numerics = match numerics {
                NumericsArg::Fused => Numerics::Fused,
                NumericsArg::Portable => Numerics::Portable,
            };
            let backbone_heads = task.map(|task| ExitConfig {
                task,
                label_names: task.label_names().iter().map(|s| s.to_string()).collect(),
                signal,
                per_exit_pooler: false,
                pooling: cosee_runtime::config::Pooling::Cls,
                max_seq_len,
            });
            let options = ExportOptions {
                quantize,
                embeddings,
                numerics,
                backbone_heads,
                seed,
                default_threshold: threshold,
                overwrite: force,
                self_check: !no_check,
                progress: true,
                ..ExportOptions::default()
            };
            let report = export(&checkpoint, &out, &options)
                .with_context(|| format!("exporting {} to {}", checkpoint.display(), out.display()))?;
            for warning in &report.warnings {
                eprintln!("warning: {warning}");
            }
            let m = &report.manifest;
            println!(
                "wrote {} ({} layers, hidden {}, {:?} / {:?} embeddings / {:?} numerics, {:.1} MB)",
                report.package.display(),
                m.num_layers,
                m.hidden_size,
                m.quantization.scheme,
                m.quantization.embeddings,
                m.quantization.numerics,
                report.total_bytes as f64 / 1e6
            );
            if let Some(check) = &report.check {
                println!(
                    "self-check vs reference (batch×tokens {:?}): max |Δ| hidden {:.2e}, logits {:.2e} (tolerance {:.0e})",
                    check.shapes,
                    check.deltas.max(),
                    check.deltas.max_logit(),
                    check.tolerance
                );
            }
            println!(
                "default threshold {} ({}); run `cosee-tools calibrate` to set it from data",
                m.default_threshold, m.signal.name
            );
        }
        Command::Calibrate { package, data, task, target_speedup, thresholds, limit, dry_run, json } => {
            let options = cosee_tools::calibrate::CalibrateOptions {
                task,
                target_speedup,
                thresholds,
                limit,
                dry_run,
                progress: !json,
            };
            let report = cosee_tools::calibrate::calibrate(&package, &data, &options)
                .with_context(|| format!("calibrating {} on {}", package.display(), data.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let summary = cosee_tools::inspect::inspect(&package)?;
                print!("{summary}");
                println!(
                    "full-depth accuracy {:.2}% on {} examples ({:.1} s)",
                    100.0 * report.full_depth_accuracy,
                    report.calibration.num_examples,
                    report.seconds
                );
                if !report.target_reached {
                    eprintln!(
                        "warning: no τ reaches a {:.2}× layer speed-up; the default is the fastest τ, {}",
                        target_speedup, report.default_threshold
                    );
                }
                println!(
                    "default τ {} ({}){}",
                    report.default_threshold,
                    report.signal,
                    if dry_run { " — dry run, manifest unchanged" } else { " written to the manifest" }
                );
            }
        }
        Command::Compare { a, b, data, task, limit, json } => {
            let c = cosee_tools::compare::compare_packages(&a, &b, &data, task, limit, !json)
                .with_context(|| format!("comparing {} and {}", a.display(), b.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                println!("{} examples; A = {}, B = {}", c.num_examples, a.display(), b.display());
                println!("{:>5} {:>14} {:>10} {:>8} {:>8}", "exit", "max |Δlogit|", "same pred", "acc A", "acc B");
                for e in &c.exits {
                    println!(
                        "{:>5} {:>14.2e} {:>9.2}% {:>7.2}% {:>7.2}%",
                        e.layer,
                        e.max_abs_logit_delta,
                        100.0 * e.same_prediction,
                        100.0 * e.accuracy_a,
                        100.0 * e.accuracy_b
                    );
                }
            }
        }
        Command::Inspect { package, json } => {
            let summary =
                cosee_tools::inspect::inspect(&package).with_context(|| format!("inspecting {}", package.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{summary}");
            }
            if !summary.intact() {
                anyhow::bail!("{} is not intact: some files are missing or modified", package.display());
            }
        }
        Command::RandomCheckpoint { out, layers, hidden, heads, task, signal, seed } => {
            let config = cosee_tools::testing::tiny_config(layers, hidden, heads, task, signal);
            cosee_tools::write_random_checkpoint(&out, &config, seed)
                .with_context(|| format!("writing a random checkpoint to {}", out.display()))?;
            println!("wrote {} ({layers} layers, hidden {hidden}, {heads} heads, {task}, {signal})", out.display());
        }
        Command::Soak(args) => {
            if !run_soak(args)? {
                std::process::exit(1);
            }
        }
        #[cfg(feature = "verify")]
        Command::Verify(args) => run_verify(args)?,
    }
    Ok(())
}
