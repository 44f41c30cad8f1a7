//! `cosee-tools verify --checkpoint DIR --package PKG --data TSV [-n N] [--thresholds τ,…] [--json] [--threads N]
//! [--device D] [--no-progress]` (feature `verify`: it links libtorch).

use super::{print_json, Json};
use cosee_tools::verify::{verify_files, ParityReport, VerifyOptions};
use std::path::PathBuf;
use std::process::ExitCode;

/// `verify`'s flags: the trainer's `verify` ones before it moved here.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory the package was exported from.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Model package directory.
    #[arg(long)]
    pub package: PathBuf,
    /// Labelled GLUE TSV of the package's task (e.g. its dev.tsv).
    #[arg(long)]
    pub data: PathBuf,
    /// Use only the first N examples.
    #[arg(short = 'n', long)]
    pub limit: Option<usize>,
    /// More thresholds to compare exit decisions at (the package's default τ always is), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub thresholds: Vec<f32>,
    #[command(flatten)]
    pub output: Json,
    /// libtorch CPU threads, 1 to 1024 (default: libtorch's, one per core).
    #[arg(long, value_parser = cosee_runtime::settings::parse_threads_flag)]
    pub threads: Option<usize>,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = VerifyOptions {
        limit: args.limit,
        thresholds: args.thresholds,
        threads: args.threads,
        device: args.device,
        progress: !args.no_progress,
    };
    let report = verify_files(&args.checkpoint, &args.package, &args.data, &options)?;
    if args.output.json {
        print_json(&report)?;
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(report: &ParityReport) {
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
}
