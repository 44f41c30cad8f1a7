//! `cosee-edge`: classify text with a COSEE model package, exiting early layer by layer.
//!
//! A thin layer over the `cosee_runtime` library: it parses flags and prints. Each subcommand is one module under
//! `runtime/src/cli/` with its own `Args` and `run`; adding one means one variant below and one module.
//!
//! Exit codes (all subcommands): 0 success; 1 some inputs failed (each answered with an error, the others were
//! answered); 2 bad command line; 3 fatal (the package could not be loaded, or reading input / writing output failed).

#[path = "../cli/mod.rs"]
mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cosee-edge", version, about = "Early-exit BERT text classification on CPU (COSEE model packages)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify texts given as arguments, or one per stdin line of at most 1 MiB (JSON lines out).
    Classify(cli::classify::Args),
    /// Measure accuracy, latency, realized wall-clock speed-up and per-stage cost; write the device profile.
    Bench(cli::bench::Args),
    /// Choose the most accurate threshold whose latency percentile fits a budget; verify; save a runtime config.
    Tune(cli::tune::Args),
    /// Answer one JSON line per stdin line (at most 1 MiB), the threshold controller adjusting τ to latency,
    /// battery and heat.
    Serve(cli::serve::Args),
}

fn main() -> ExitCode {
    cosee_runtime::sigpipe::restore_default();
    cosee_runtime::parallel::share_one_malloc_arena();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = match Cli::parse().command {
        Command::Classify(args) => cli::classify::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Tune(args) => cli::tune::run(args),
        Command::Serve(args) => cli::serve::run(args),
    };
    result.unwrap_or_else(|e| cli::fatal(&e))
}
