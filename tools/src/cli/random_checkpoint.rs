//! `cosee-tools random-checkpoint --out DIR [--layers N] [--hidden N] [--heads N] [--task T] [--signal S]
//! [--seed N]`

use anyhow::Context;
use cosee_runtime::{ExitSignal, Task};
use cosee_tools::testing::tiny_config;
use cosee_tools::write_random_checkpoint;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    #[arg(long, default_value_t = 32)]
    pub hidden: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value = "sst-2")]
    pub task: Task,
    #[arg(long, default_value = "energy")]
    pub signal: ExitSignal,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args { out, layers, hidden, heads, task, signal, seed } = args;
    write_random_checkpoint(&out, &tiny_config(layers, hidden, heads, task, signal), seed)
        .with_context(|| format!("writing a random checkpoint to {}", out.display()))?;
    println!("wrote {} ({layers} layers, hidden {hidden}, {heads} heads, {task}, {signal})", out.display());
    Ok(ExitCode::SUCCESS)
}
