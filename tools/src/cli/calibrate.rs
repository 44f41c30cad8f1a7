//! `cosee-tools calibrate --package PKG --data TSV [--task T] [--target-speedup X] [--thresholds τ,…] [--limit N]
//! [--dry-run] [--json]`

use super::{print_json, Json, LabelledData};
use anyhow::Context;
use cosee_tools::calibrate::{calibrate, CalibrateOptions, CalibrationReport, DEFAULT_TARGET_SPEEDUP};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    pub package: PathBuf,
    #[command(flatten)]
    pub data: LabelledData,
    /// The default τ becomes the most accurate one whose layer speed-up (Eq. 12) reaches this.
    #[arg(long, default_value_t = DEFAULT_TARGET_SPEEDUP)]
    pub target_speedup: f64,
    /// Thresholds to sweep, comma-separated [default: the signal's standard sweep].
    #[arg(long, value_delimiter = ',')]
    pub thresholds: Option<Vec<f32>>,
    /// Print the table without writing it.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub output: Json,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = CalibrateOptions {
        task: args.data.task,
        target_speedup: args.target_speedup,
        thresholds: args.thresholds,
        limit: args.data.limit,
        dry_run: args.dry_run,
        progress: !args.output.json,
    };
    let data = &args.data.data;
    let report = calibrate(&args.package, data, &options)
        .with_context(|| format!("calibrating {} on {}", args.package.display(), data.display()))?;
    if args.output.json {
        print_json(&report)?;
    } else {
        print_table(&args.package, &report, &options)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The package as it now is (with its new table unless a dry run), then the choice of the default τ.
fn print_table(package: &Path, report: &CalibrationReport, options: &CalibrateOptions) -> anyhow::Result<()> {
    print!("{}", cosee_tools::inspect::inspect(package)?);
    println!(
        "full-depth accuracy {:.2}% on {} examples ({:.1} s)",
        100.0 * report.full_depth_accuracy,
        report.calibration.num_examples,
        report.seconds
    );
    if !report.target_reached {
        eprintln!(
            "warning: no τ reaches a {:.2}× layer speed-up; the default is the fastest τ, {}",
            options.target_speedup, report.default_threshold
        );
    }
    println!(
        "default τ {} ({}){}",
        report.default_threshold,
        report.signal,
        if options.dry_run { " — dry run, manifest unchanged" } else { " written to the manifest" }
    );
    Ok(())
}
