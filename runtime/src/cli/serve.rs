//! `cosee-edge serve --model PKG [--config FILE] [--budget-ms X] [--power-root DIR] [--thermal-root DIR] [--http ADDR]`
//!
//! A long-running mode: one input per stdin line (a pair as `first<TAB>second`), one JSON answer per stdout line,
//! flushed as each is answered. Between requests the threshold controller moves τ along the package's calibration
//! table to hold the latency budget and to save energy on battery or when hot; every change is written to stderr
//! with its reason. A line that cannot be classified (one longer than [`cosee_runtime::MAX_LINE_BYTES`] = 1 MiB
//! among them, skipped without being held) answers `{"input": n, "error": …}` and serving goes on.
//!
//! With `--http ADDR` the same answers come from the local HTTP API instead ([`cosee_runtime::http`],
//! docs/http.md), under the same controller; stdin is not read.

use super::{json_line, UsageError, EXIT_INPUT_ERRORS, EXIT_OK};
use anyhow::Context;
use cosee_runtime::power::{DEFAULT_POWER_ROOT, DEFAULT_THERMAL_ROOT};
use cosee_runtime::serving::{self, ServeError, ServeOptions, ThresholdControl};
use cosee_runtime::{Engine, Input, LineReader};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

/// Requests between two decisions of the latency rule, unless told otherwise.
pub const DEFAULT_MIN_SAMPLES: usize = serving::DEFAULT_MIN_SAMPLES;
/// How often battery and temperature are read, milliseconds, unless told otherwise.
pub const DEFAULT_POWER_POLL_MS: u64 = serving::DEFAULT_POWER_POLL.as_millis() as u64;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model package directory.
    #[arg(long, short = 'm', value_name = "DIR")]
    pub model: PathBuf,
    #[command(flatten)]
    pub backend: super::BackendArg,
    /// Runtime config written by `tune`: the operating point τ (used on battery), the budget and percentile.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Latency budget in milliseconds (overrides the config's). Without one, τ follows only the power policy.
    #[arg(long, value_name = "X")]
    pub budget_ms: Option<f64>,
    /// Latency percentile the budget applies to (overrides the config's; default 95).
    #[arg(long, value_name = "Q")]
    pub percentile: Option<f64>,
    /// The operating point τ on battery (overrides the config's; default: the package's default threshold).
    #[arg(long, short = 't', value_name = "T")]
    pub threshold: Option<f32>,
    /// Device profile from `bench`: lets the controller predict the latency of a slower τ more precisely.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Requests between two decisions of the latency rule.
    #[arg(long, default_value_t = DEFAULT_MIN_SAMPLES, value_name = "N")]
    pub min_samples: usize,
    /// Where the kernel lists power supplies.
    #[arg(long, default_value = DEFAULT_POWER_ROOT, value_name = "DIR")]
    pub power_root: PathBuf,
    /// Where the kernel lists thermal zones.
    #[arg(long, default_value = DEFAULT_THERMAL_ROOT, value_name = "DIR")]
    pub thermal_root: PathBuf,
    /// How often to read battery and temperature, milliseconds.
    #[arg(long, default_value_t = DEFAULT_POWER_POLL_MS, value_name = "MS")]
    pub power_poll_ms: u64,
    #[cfg(feature = "http")]
    #[command(flatten)]
    pub http: super::http::Args,
}

impl Args {
    fn options(&self) -> ServeOptions {
        ServeOptions {
            config: self.config.clone(),
            budget_ms: self.budget_ms,
            percentile: self.percentile,
            threshold: self.threshold,
            profile: self.profile.clone(),
            min_samples: self.min_samples,
            power_root: self.power_root.clone(),
            thermal_root: self.thermal_root.clone(),
            power_poll: Duration::from_millis(self.power_poll_ms),
        }
    }
}

/// `--budget-ms` for the field `budget_ms`.
fn flag(field: &str) -> String {
    format!("--{}", field.replace('_', "-"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // The flags that do not depend on the package, before it is loaded (and before any input is read).
    let options = args.options();
    options.check(flag).map_err(UsageError::from)?;
    #[cfg(feature = "http")]
    let http = args.http.config()?;
    let engine = Engine::load_on(&args.model, args.backend.backend)
        .with_context(|| format!("cannot load {}", args.model.display()))?;
    let control = ThresholdControl::new(engine.manifest(), &options, flag).map_err(|e| match e {
        ServeError::Setting(e) => anyhow::Error::from(UsageError::from(e)),
        e => e.into(),
    })?;
    for note in control.notes() {
        eprintln!("cosee-edge serve: {note}");
    }
    let state = control.state();
    eprintln!(
        "cosee-edge serve: {} ({} layers), {} τ {} ({} rungs), budget {}",
        args.model.display(),
        engine.num_layers(),
        state.signal,
        state.threshold,
        state.rungs.len(),
        state.budget_ms.map_or("none".to_string(), |b| format!("p{} ≤ {b} ms", state.percentile))
    );
    #[cfg(feature = "http")]
    if let Some(http) = http {
        return super::http::run(engine, control, http);
    }
    serve_stdin(&engine, &Mutex::new(control))
}

/// One JSON line out per stdin line in, until the end of stdin.
fn serve_stdin(engine: &Engine, control: &Mutex<ThresholdControl>) -> anyhow::Result<ExitCode> {
    let pair_task = engine.manifest().task.is_pair();
    let stdin = std::io::stdin();
    let mut lines = LineReader::new(stdin.lock());
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (mut number, mut failed) = (0usize, 0usize);
    let log = |event: &cosee_runtime::controller::ControllerEvent| eprintln!("cosee-edge serve: {event}");
    while let Some(line) = lines.next_line().context("cannot read stdin")? {
        number += 1;
        let result = line.map_err(|e| e.to_string()).and_then(|text| {
            serving::classify_controlled(control, engine, &Input::from_line(text, pair_task), log)
                .map_err(|e| e.to_string())
        });
        writeln!(out, "{}", json_line(number, &result)).context("cannot write to stdout")?;
        out.flush().context("cannot write to stdout")?;
        failed += usize::from(result.is_err());
    }
    Ok(ExitCode::from(if failed == 0 { EXIT_OK } else { EXIT_INPUT_ERRORS }))
}
