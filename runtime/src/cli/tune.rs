//! `cosee-edge tune --model PKG --budget-ms X [--percentile 95] [--data FILE] [--profile FILE] [--out CONFIG]`
//!
//! Predicts the latency distribution of every τ of the package's calibration table from the device profile, the
//! exit histograms and the token-length distribution; chooses the most accurate τ within the budget; measures it
//! on the data (and corrects and re-chooses if the device disagrees); prints predicted against measured; saves the
//! runtime config that `classify --config` and `serve --config` read. An impossible budget is said plainly and
//! the fastest τ is saved.

use super::bench::{progress_bar, DEFAULT_PROFILE};
use super::UsageError;
use anyhow::Context;
use cosee_runtime::bench::{self, BenchOptions};
use cosee_runtime::profile::DeviceProfile;
use cosee_runtime::settings;
use cosee_runtime::tune::{self, Choice, Measured, RuntimeConfig, TuneError};
use cosee_runtime::{Engine, Input, Task};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model package directory (with a calibration table: `cosee-tools calibrate`).
    #[arg(long, short = 'm', value_name = "DIR")]
    pub model: PathBuf,
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
    let (engine, cold_start_ms) =
        bench::load_timed(&args.model).with_context(|| format!("cannot load {}", args.model.display()))?;
    let manifest = engine.manifest().clone();
    let calibration = manifest.calibration.clone().ok_or(TuneError::NoCalibration)?;
    let task = args.task.unwrap_or(manifest.task);
    let examples = match &args.data {
        Some(path) => {
            let mut ex = bench::read_inputs(path, task, args.plain)?;
            ex.truncate(args.limit.unwrap_or(ex.len()));
            Some(ex)
        }
        None => None,
    };
    let data_name = args.data.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let model_name = args.model.display().to_string();

    let profile = load_or_measure_profile(&args, &engine, cold_start_ms, examples.as_deref(), &model_name, &data_name)?;
    let token_counts = match &examples {
        Some(ex) => token_counts(&engine, ex),
        None => profile.token_counts.clone(),
    };
    let predictions = tune::predict_all(&profile, &calibration, manifest.num_layers, &token_counts, args.percentile)?;

    let q = args.percentile;
    let verified = match &examples {
        Some(ex) => {
            let bar = progress_bar(ex.len(), "verify");
            let mut measure = |i: usize| -> anyhow::Result<Measured> {
                let tau = predictions[i].threshold;
                bar.set_message(format!("verify τ {tau}"));
                bar.set_position(0);
                let options = BenchOptions {
                    signal: Some(manifest.signal.name),
                    threshold: Some(tau),
                    sweep: None,
                    warmup: 3,
                    limit: None,
                    full_depth: false,
                };
                let run = bench::run(&engine, cold_start_ms, &model_name, &data_name, ex, &options, &mut |d, _| {
                    bar.set_position(d as u64)
                })?;
                let r = &run.result.main;
                let ms: Vec<f64> = run.samples.iter().map(|s| s.wall_ms).collect();
                Ok(Measured {
                    percentile_ms: cosee_runtime::metrics::percentile(&ms, q),
                    p50_ms: r.latency_ms.p50,
                    mean_ms: r.latency_ms.mean,
                    accuracy: r.accuracy(),
                    f1: r.point.f1,
                })
            };
            let v = tune::verify(&predictions, args.budget_ms, args.attempts, &mut measure)?;
            bar.finish_and_clear();
            Some(v)
        }
        None => None,
    };
    let choice = tune::choose(&predictions, args.budget_ms)?;
    let index = verified.as_ref().map_or(choice.index(), |v| v.index);
    let chosen = &predictions[index];

    let config = RuntimeConfig {
        threshold: chosen.threshold,
        signal: manifest.signal.name,
        budget_ms: Some(args.budget_ms),
        percentile: q,
    };
    config.write(&args.out)?;

    if args.json {
        let json = serde_json::json!({
            "budget_ms": args.budget_ms,
            "percentile": q,
            "predictions": predictions,
            "choice": choice,
            "verification": verified,
            "config": config,
            "config_file": args.out.display().to_string(),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!(
            "tune {} for p{q} ≤ {} ms ({} inputs' token lengths{})",
            model_name,
            args.budget_ms,
            token_counts.values().sum::<usize>(),
            if examples.is_some() { ", from --data" } else { ", from the profile" }
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
            let mark = if i == index { "  ← chosen" } else { "" };
            println!(
                "{:>8}{:>10.4}{:>9.2}{:>12.3}{:>12.3}{:>12.3}{mark}",
                p.threshold, p.accuracy, p.layer_speedup, p.p50_ms, p.percentile_ms, p.mean_ms
            );
        }
        if let Choice::Impossible { .. } = choice {
            println!("\n{choice}");
        }
        if let Some(v) = &verified {
            println!("\nmeasured on {} inputs:", examples.as_ref().map_or(0, Vec::len));
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
        println!(
            "chosen τ {} ({}, calibration accuracy {:.4}, layer speed-up {:.2}×, predicted p{q} {:.3} ms); config \
             written to {}",
            chosen.threshold,
            manifest.signal.name,
            chosen.accuracy,
            chosen.layer_speedup,
            chosen.percentile_ms,
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn load_or_measure_profile(
    args: &Args,
    engine: &Engine,
    cold_start_ms: f64,
    examples: Option<&[cosee_runtime::Example]>,
    model: &str,
    data: &str,
) -> anyhow::Result<DeviceProfile> {
    let default = PathBuf::from(DEFAULT_PROFILE);
    let path = args.profile.clone().or_else(|| default.exists().then_some(default));
    if let Some(path) = path {
        let profile = DeviceProfile::read(&path)?;
        let m = engine.manifest();
        if profile.origin.num_layers != m.num_layers || profile.origin.hidden_size != m.hidden_size {
            eprintln!(
                "cosee-edge tune: warning: {} was measured on a {}-layer, {}-wide package, this one has {} layers \
                 of {}",
                path.display(),
                profile.origin.num_layers,
                profile.origin.hidden_size,
                m.num_layers,
                m.hidden_size
            );
        }
        eprintln!("cosee-edge tune: device profile {}", path.display());
        return Ok(profile);
    }
    let Some(examples) = examples else {
        return Err(UsageError(format!(
            "no device profile: run `cosee-edge bench` first (it writes {DEFAULT_PROFILE}), or give --profile or --data"
        ))
        .into());
    };
    // Profile now: full depth and the package default on the data, as bench does.
    let bar = progress_bar(examples.len(), "profile");
    let options = BenchOptions { limit: args.limit, ..BenchOptions::default() };
    let run =
        bench::run(engine, cold_start_ms, model, data, examples, &options, &mut |d, _| bar.set_position(d as u64))?;
    bar.finish_and_clear();
    eprintln!("cosee-edge tune: measured a device profile on {} inputs", run.result.n);
    Ok(run.profile()?)
}

/// Token count of every input that tokenizes.
fn token_counts(engine: &Engine, examples: &[cosee_runtime::Example]) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for e in examples {
        if let Ok(enc) = engine.encode(&Input::from(e)) {
            *counts.entry(enc.len()).or_default() += 1;
        }
    }
    counts
}
