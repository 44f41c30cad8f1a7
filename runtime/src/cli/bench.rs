//! `cosee-edge bench --model PKG --data FILE [--task T] [--threshold T | --sweep] [--warmup N] [--json OUT]
//! [--limit N] [--profile-out FILE]`
//!
//! Batch size 1 over a labelled GLUE TSV or plain text lines: accuracy (F1 for MRPC/QQP), layer speed-up (Eq. 12),
//! wall-clock latency, the same inputs at full depth in the same run (realized wall-clock speed-up), per-stage cost
//! against the token count, peak RSS and cold start. A table on stdout; JSON with `--json OUT` (`-` for stdout).
//! Writes the device profile `tune` and `serve` use.

use super::UsageError;
use anyhow::Context;
use cosee_runtime::bench::{self, BenchOptions};
use cosee_runtime::profile::DEFAULT_PROFILE;
use cosee_runtime::{ExitSignal, Task};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model package directory.
    #[arg(long, short = 'm', value_name = "DIR")]
    pub model: PathBuf,
    #[command(flatten)]
    pub backend: super::BackendArg,
    /// Inputs: a GLUE TSV of the task (labelled: accuracy is reported), or plain text, one input per line (a pair
    /// as `first<TAB>second`).
    #[arg(long, short = 'd', value_name = "FILE")]
    pub data: PathBuf,
    /// The task whose TSV columns to read. Default: the package's task.
    #[arg(long, value_name = "TASK")]
    pub task: Option<Task>,
    /// Read the data file as plain lines even if it looks like a TSV.
    #[arg(long)]
    pub plain: bool,
    /// The τ to measure. Default: the package's default threshold.
    #[arg(long, short = 't', value_name = "T", conflicts_with = "sweep")]
    pub threshold: Option<f32>,
    /// Measure every τ of the package's calibration table (or the signal's default grid without one); the
    /// package default is reported at the top level.
    #[arg(long)]
    pub sweep: bool,
    /// Exit signal. Default: the package's; another signal needs --threshold or --sweep.
    #[arg(long, value_name = "NAME")]
    pub signal: Option<ExitSignal>,
    /// Untimed warm-up inputs (each at full depth and every τ).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub warmup: usize,
    /// Measure only the first N inputs.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Write the result as JSON to this file (`-`: stdout, instead of the table).
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,
    /// Where to write the device profile (per-stage cost against token count, fitted).
    #[arg(long, default_value = DEFAULT_PROFILE, value_name = "FILE")]
    pub profile_out: PathBuf,
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress_bar(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} inputs, {elapsed} (eta {eta})")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (engine, cold_start) = bench::load_timed(&args.model, args.backend.backend)
        .with_context(|| format!("cannot load {}", args.model.display()))?;
    let manifest = engine.manifest();
    let signal = args.signal.unwrap_or(manifest.signal.name);
    if let Some(t) = args.threshold {
        signal.check_threshold("--threshold", t, Some(engine.num_layers())).map_err(UsageError::from)?;
    }
    if signal != manifest.signal.name && args.threshold.is_none() && !args.sweep {
        return Err(UsageError(format!(
            "--signal {signal} differs from the package's signal ({}): give --threshold or --sweep",
            manifest.signal.name
        ))
        .into());
    }
    let task = args.task.unwrap_or(manifest.task);
    let examples = bench::read_inputs(&args.data, task, args.plain)?;
    let sweep = args.sweep.then(|| match &manifest.calibration {
        Some(c) if signal == manifest.signal.name && !c.points.is_empty() => {
            c.points.iter().map(|p| p.threshold).collect()
        }
        _ => signal.default_sweep(engine.num_layers()),
    });
    // With another signal the package default τ means nothing: report the middle of the sweep instead.
    let threshold = args.threshold.or_else(|| match &sweep {
        Some(s) if signal != manifest.signal.name => s.get(s.len() / 2).copied(),
        _ => None,
    });
    let options = BenchOptions {
        signal: Some(signal),
        threshold,
        sweep,
        warmup: args.warmup,
        limit: args.limit,
        full_depth: true,
    };
    let total = args.limit.unwrap_or(examples.len()).min(examples.len());
    let bar = progress_bar(total, "bench");
    let run = bench::run(
        &engine,
        cold_start,
        &args.model.display().to_string(),
        &args.data.display().to_string(),
        &examples,
        &options,
        &mut |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();

    let profile = run.profile()?;
    profile.write(&args.profile_out)?;
    for f in &run.result.failed {
        eprintln!("cosee-edge bench: input {} failed: {}", f.input, f.error);
    }
    match args.json.as_deref() {
        Some(p) if p == Path::new("-") => println!("{}", bench::to_json(&run.result)),
        Some(p) => {
            std::fs::write(p, bench::to_json(&run.result) + "\n")
                .with_context(|| format!("cannot write {}", p.display()))?;
            print!("{}", bench::format_table(&run.result));
            println!("JSON written to {}", p.display());
        }
        None => print!("{}", bench::format_table(&run.result)),
    }
    eprintln!("cosee-edge bench: device profile written to {}", args.profile_out.display());
    Ok(ExitCode::SUCCESS)
}
