//! `cosee-edge tune --model PKG --budget-ms X [--percentile 95] [--data FILE] [--profile FILE] [--out CONFIG]`
//!
//! Predicts the latency distribution of every τ of the package's calibration table from the device profile, the
//! exit histograms and the token-length distribution; chooses the most accurate τ within the budget; measures it
//! on the data (and corrects and re-chooses if the device disagrees); prints predicted against measured; saves the
//! runtime config that `classify --config` and `serve --config` read. An impossible budget is said plainly and
//! the fastest τ is saved.

use super::bench::progress_bar;
use super::UsageError;
use cosee_runtime::profile::DEFAULT_PROFILE;
use cosee_runtime::settings;
use cosee_runtime::tune::{self, Choice, TuneError, TuneEvent, TuneOptions, TuneReport};
use cosee_runtime::Task;
use indicatif::ProgressBar;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model package directory (with a calibration table: `cosee-tools calibrate`).
    #[arg(long, short = 'm', value_name = "DIR")]
    pub model: PathBuf,
    #[command(flatten)]
    pub backend: super::BackendArg,
    /// Latency budget in milliseconds for the chosen percentile.
    #[arg(long, value_name = "X")]
    pub budget_ms: f64,
    /// Which latency percentile must stay within the budget.
    #[arg(long, default_value_t = 95.0, value_name = "Q")]
    pub percentile: f64,
    /// Inputs like those to be served (GLUE TSV or plain lines): their token lengths drive the prediction, and the
    /// choice is measured on them. Without it, the profile's token lengths are used and nothing is measured.
    #[arg(long, short = 'd', value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// The task whose TSV columns to read. Default: the package's task.
    #[arg(long, value_name = "TASK")]
    pub task: Option<Task>,
    /// Read the data file as plain lines.
    #[arg(long)]
    pub plain: bool,
    /// Device profile written by `bench`. Default: ./device-profile.json if present, else one is measured on
    /// --data now.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Use at most N inputs of --data (profiling and verification).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// How many τ to measure at most before settling.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub attempts: usize,
    /// Where to save the runtime config.
    #[arg(long, default_value = "runtime-config.json", value_name = "CONFIG")]
    pub out: PathBuf,
    /// Print the predictions and the verification as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    settings::budget_ms("--budget-ms", args.budget_ms).map_err(UsageError::from)?;
    settings::percentile("--percentile", args.percentile).map_err(UsageError::from)?;
    let options = TuneOptions {
        budget_ms: args.budget_ms,
        percentile: args.percentile,
        data: args.data,
        task: args.task,
        plain: args.plain,
        profile: args.profile.or_else(|| {
            let default = PathBuf::from(DEFAULT_PROFILE);
            default.exists().then_some(default)
        }),
        limit: args.limit,
        attempts: args.attempts,
        out: args.out,
        backend: args.backend.backend,
    };
    let mut bar: Option<ProgressBar> = None;
    let report = tune::run(&args.model, &options, &mut |event| show(event, &mut bar)).map_err(|e| match e {
        // Neither a profile nor data to measure one on: the command line lacks a flag.
        TuneError::NoProfile => UsageError(e.to_string()).into(),
        e => anyhow::Error::from(e),
    })?;
    if args.json {
        // Through a `Value`, as this JSON always was: its keys sorted at every level, f32 τ written as f64.
        println!("{}", serde_json::to_string_pretty(&serde_json::to_value(&report)?)?);
    } else {
        print_table(&report, &args.model.display().to_string());
    }
    Ok(ExitCode::SUCCESS)
}

/// Notes and progress bars on stderr: the profile used or measured, each measurement of the data.
fn show(event: TuneEvent<'_>, bar: &mut Option<ProgressBar>) {
    match event {
        TuneEvent::ProfileRead { path, profile_shape, package_shape } => {
            if profile_shape != package_shape {
                eprintln!(
                    "cosee-edge tune: warning: {} was measured on a {}-layer, {}-wide package, this one has {} layers \
                     of {}",
                    path.display(),
                    profile_shape.0,
                    profile_shape.1,
                    package_shape.0,
                    package_shape.1
                );
            }
            eprintln!("cosee-edge tune: device profile {}", path.display());
        }
        TuneEvent::MeasuringProfile { inputs } => *bar = Some(progress_bar(inputs, "profile")),
        TuneEvent::ProfileMeasured { inputs } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            eprintln!("cosee-edge tune: measured a device profile on {inputs} inputs");
        }
        TuneEvent::MeasuringThreshold { threshold, inputs } => {
            // One bar for every τ measured, restarted for each.
            let b = bar.get_or_insert_with(|| progress_bar(inputs, "verify"));
            b.set_message(format!("verify τ {threshold}"));
            b.set_position(0);
        }
        TuneEvent::Measured => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
        }
        TuneEvent::Progress { done } => {
            if let Some(b) = bar {
                b.set_position(done as u64);
            }
        }
    }
}

/// Every τ with its prediction (the saved one marked), the measurements, and what was saved.
fn print_table(report: &TuneReport, model: &str) {
    let q = report.percentile;
    let predictions = &report.predictions;
    println!(
        "tune {} for p{q} ≤ {} ms ({} inputs' token lengths{})",
        model,
        report.budget_ms,
        report.token_inputs,
        if report.data_inputs.is_some() { ", from --data" } else { ", from the profile" }
    );
    println!(
        "{:>8}{:>10}{:>9}{:>12}{:>12}{:>12}",
        "τ",
        "accuracy",
        "layer×",
        "pred p50",
        format!("pred p{q}"),
        "pred mean"
    );
    for (i, p) in predictions.iter().enumerate() {
        let mark = if i == report.index { "  ← chosen" } else { "" };
        println!(
            "{:>8}{:>10.4}{:>9.2}{:>12.3}{:>12.3}{:>12.3}{mark}",
            p.threshold, p.accuracy, p.layer_speedup, p.p50_ms, p.percentile_ms, p.mean_ms
        );
    }
    if let Choice::Impossible { .. } = report.choice {
        println!("\n{}", report.choice);
    }
    if let Some(v) = &report.verification {
        println!("\nmeasured on {} inputs:", report.data_inputs.unwrap_or(0));
        for a in &v.attempts {
            println!(
                "  τ {}: predicted p{q} {:.3} ms, measured p{q} {:.3} ms (p50 {:.3}, mean {:.3}), accuracy {} \
                 (calibration {:.4}) — {}",
                a.threshold,
                a.predicted_ms,
                a.measured.percentile_ms,
                a.measured.p50_ms,
                a.measured.mean_ms,
                a.measured.accuracy.map_or("-".to_string(), |x| format!("{x:.4}")),
                predictions[a.index].accuracy,
                if a.within_budget { "within budget" } else { "over budget" }
            );
        }
        if !v.met {
            println!("the budget is not met by any measured threshold; saved the fastest measured");
        }
    } else {
        println!("\nnot verified: give --data to measure the choice");
    }
    let chosen = report.chosen();
    println!(
        "chosen τ {} ({}, calibration accuracy {:.4}, layer speed-up {:.2}×, predicted p{q} {:.3} ms); config \
         written to {}",
        chosen.threshold,
        report.signal(),
        chosen.accuracy,
        chosen.layer_speedup,
        chosen.percentile_ms,
        report.config_file
    );
}
