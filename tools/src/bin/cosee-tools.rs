//! `cosee-tools`: export, calibrate and inspect COSEE model packages.
//!
//! A thin layer over the `cosee_tools` library, as `cosee-edge` is over the runtime's: each subcommand is one module
//! under `tools/src/cli/` with its own `Args` and `run`; adding one means one variant below and one module.

#[path = "../cli/mod.rs"]
mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cosee-tools", version, about = "Export, calibrate and inspect COSEE model packages")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the per-layer ONNX package of a checkpoint.
    Export(cli::export::Args),
    /// Run a package over labelled data at full depth and write its τ table and default τ into the manifest.
    Calibrate(cli::calibrate::Args),
    /// Run two packages of one model (e.g. f32 and int8) over labelled data at full depth: per-exit max |Δlogit|,
    /// argmax agreement and accuracy of each.
    Compare(cli::compare::Args),
    /// Summarize a package: layers, files, quantization, signal, calibration.
    Inspect(cli::inspect::Args),
    /// Write a checkpoint with random weights over the small test tokenizer (for tests and benchmarks).
    RandomCheckpoint(cli::random_checkpoint::Args),
    /// Soak `cosee-edge serve`: a long hostile stdin (real sentences, empty lines, invalid UTF-8, lines over the
    /// 1 MiB cap, 10 MB lines without whitespace, pairs) while fake battery and thermal files change and turn to
    /// garbage; checks every line is answered once, in order, with the right kind of answer, no panic, τ changes
    /// logged, RSS flat after the warm-up. Prints the report as JSON; exits 1 when a property fails.
    Soak(cli::soak::Args),
    /// Run a checkpoint (tch) and the package exported from it (the runtime) on the same inputs: max |Δlogit| per
    /// exit, identical exit decisions, accuracy of both. Built with `--features verify` (links libtorch).
    #[cfg(feature = "verify")]
    Verify(cli::verify::Args),
}

/// An error is printed by `main`'s `Result` (message and causes) and exits 1.
fn main() -> anyhow::Result<ExitCode> {
    cosee_runtime::sigpipe::restore_default();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match Cli::parse().command {
        Command::Export(args) => cli::export::run(args),
        Command::Calibrate(args) => cli::calibrate::run(args),
        Command::Compare(args) => cli::compare::run(args),
        Command::Inspect(args) => cli::inspect::run(args),
        Command::RandomCheckpoint(args) => cli::random_checkpoint::run(args),
        Command::Soak(args) => cli::soak::run(args),
        #[cfg(feature = "verify")]
        Command::Verify(args) => cli::verify::run(args),
    }
}
