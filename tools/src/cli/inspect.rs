//! `cosee-tools inspect PKG [--json]`: exits 1 when a file is missing or modified.

use super::{print_json, Json};
use anyhow::Context;
use cosee_tools::inspect::inspect;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub package: PathBuf,
    #[command(flatten)]
    pub output: Json,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let summary = inspect(&args.package).with_context(|| format!("inspecting {}", args.package.display()))?;
    if args.output.json {
        print_json(&summary)?;
    } else {
        print!("{summary}");
    }
    anyhow::ensure!(summary.intact(), "{} is not intact: some files are missing or modified", args.package.display());
    Ok(ExitCode::SUCCESS)
}
