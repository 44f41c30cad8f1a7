//! The subcommands of `cosee-tools`, one module each, as `cosee-edge`'s are: an `Args` (clap parses it), and a `run`
//! that calls one function of the `cosee_tools` library and prints its result as a table or as JSON.
//!
//! Exit codes: 0 success; 1 an error (printed by `main`), a package that is not intact (`inspect`) or a soak
//! property that does not hold (`soak`); 2 bad command line (clap).

pub mod calibrate;
pub mod compare;
pub mod export;
pub mod inspect;
pub mod random_checkpoint;
pub mod soak;
#[cfg(feature = "verify")]
pub mod verify;

use cosee_runtime::Task;
use std::path::PathBuf;

/// Labelled data a package runs over (`calibrate`, `compare`).
#[derive(Debug, clap::Args)]
pub struct LabelledData {
    /// GLUE-format TSV with labels (e.g. the task's dev.tsv).
    #[arg(long)]
    pub data: PathBuf,
    /// Layout of the data file [default: the package's task].
    #[arg(long)]
    pub task: Option<Task>,
    /// Use only the first N examples.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// The choice of printer.
#[derive(Debug, clap::Args)]
pub struct Json {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A report as indented JSON on stdout.
pub fn print_json(report: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(report)?);
    Ok(())
}
