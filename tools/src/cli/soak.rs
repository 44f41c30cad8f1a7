//! `cosee-tools soak --serve EXE --model PKG --data TSV [--lines N] … [-- SERVE FLAGS]`: the report as JSON on stdout
//! (and in --out), its verdict on stderr; exits 1 when a property fails.

use anyhow::Context;
use cosee_tools::soak::{self, SoakOptions, SoakReport};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `cosee-edge` executable to soak.
    #[arg(long)]
    pub serve: PathBuf,
    /// Model package directory.
    #[arg(long)]
    pub model: PathBuf,
    /// GLUE TSV of the package's task whose sentences make the stream (e.g. SST-2/dev.tsv).
    #[arg(long)]
    pub data: PathBuf,
    /// Lines to send.
    #[arg(long, default_value_t = 200_000)]
    pub lines: usize,
    /// One 10 MB whitespace-free line per this many lines (0: none).
    #[arg(long, default_value_t = 5000)]
    pub huge_every: usize,
    /// Warm-up lines: the largest RSS over their second half is the baseline [default: a tenth of --lines].
    #[arg(long)]
    pub warmup_lines: Option<usize>,
    /// Largest RSS growth after the warm-up, as a fraction of the baseline.
    #[arg(long, default_value_t = 0.05)]
    pub max_growth: f64,
    /// How often the fake battery and thermal files change, milliseconds.
    #[arg(long, default_value_t = 50)]
    pub sysfs_ms: u64,
    /// How often serve reads them (its --power-poll-ms).
    #[arg(long, default_value_t = 20)]
    pub power_poll_ms: u64,
    /// How often the RSS is sampled, milliseconds.
    #[arg(long, default_value_t = 100)]
    pub rss_ms: u64,
    /// Where the fake sysfs goes [default: a temporary directory].
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Write the report here as well.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Further flags for serve, after `--` (e.g. -- --budget-ms 20).
    #[arg(last = true)]
    pub serve_args: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // A zero period would make the sampling threads spin.
    let period = |ms: u64| Duration::from_millis(ms.max(1));
    let options = SoakOptions {
        serve: args.serve,
        model: args.model,
        lines: args.lines,
        huge_every: args.huge_every,
        warmup_lines: args.warmup_lines.unwrap_or(args.lines / 10),
        sysfs_every: period(args.sysfs_ms),
        power_poll: period(args.power_poll_ms),
        rss_every: period(args.rss_ms),
        serve_args: args.serve_args,
    };
    let report = soak::run_on_tsv(&options, &args.data, args.scratch.as_deref())?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{json}\n")).with_context(|| format!("writing {}", out.display()))?;
    }
    println!("{json}");
    let failures = report.failures(args.max_growth);
    print_verdict(&report, &failures);
    Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Each failed property, or a one-line summary of a passed soak, on stderr.
fn print_verdict(report: &SoakReport, failures: &[String]) {
    for f in failures {
        eprintln!("soak: FAILED: {f}");
    }
    if failures.is_empty() {
        eprintln!(
            "soak: passed: {} lines ({:.1} MB) in {:.0} s, RSS {} → {} KiB after the warm-up ({:+.2} %), peak {} KiB, \
             {} τ changes, {} sysfs rewrites",
            report.lines_sent,
            report.bytes_sent as f64 / 1e6,
            report.seconds,
            report.baseline_rss_kib,
            report.max_rss_kib_after_warmup,
            report.rss_growth * 100.0,
            report.peak_rss_kib,
            report.tau_changes,
            report.sysfs_rewrites
        );
    }
}
