//! `cosee-tools compare A B --data TSV [--task T] [--limit N] [--json]`

use super::{print_json, Json, LabelledData};
use anyhow::Context;
use cosee_tools::compare::{compare_packages, Comparison};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub a: PathBuf,
    pub b: PathBuf,
    #[command(flatten)]
    pub data: LabelledData,
    #[command(flatten)]
    pub output: Json,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let LabelledData { data, task, limit } = &args.data;
    let comparison = compare_packages(&args.a, &args.b, data, *task, *limit, !args.output.json)
        .with_context(|| format!("comparing {} and {}", args.a.display(), args.b.display()))?;
    if args.output.json {
        print_json(&comparison)?;
    } else {
        print_table(&args.a, &args.b, &comparison);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(a: &Path, b: &Path, c: &Comparison) {
    println!("{} examples; A = {}, B = {}", c.num_examples, a.display(), b.display());
    println!("{:>5} {:>14} {:>10} {:>8} {:>8}", "exit", "max |Δlogit|", "same pred", "acc A", "acc B");
    for e in &c.exits {
        println!(
            "{:>5} {:>14.2e} {:>9.2}% {:>7.2}% {:>7.2}%",
            e.layer,
            e.max_abs_logit_delta,
            100.0 * e.same_prediction,
            100.0 * e.accuracy_a,
            100.0 * e.accuracy_b
        );
    }
}
