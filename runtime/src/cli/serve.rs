//! `cosee-edge serve --model PKG [--config FILE] [--budget-ms X] [--power-root DIR] [--thermal-root DIR]`
//!
//! A long-running mode: one input per stdin line (a pair as `first<TAB>second`), one JSON answer per stdout line,
//! flushed as each is answered. Between requests the threshold controller moves τ along the package's calibration
//! table to hold the latency budget and to save energy on battery or when hot; every change is written to stderr
//! with its reason. A line that cannot be classified (one longer than [`cosee_runtime::MAX_LINE_BYTES`] = 1 MiB
//! among them, skipped without being held) answers `{"input": n, "error": …}` and serving goes on.

use super::{json_line, UsageError, EXIT_INPUT_ERRORS, EXIT_OK};
use anyhow::Context;
use cosee_runtime::controller::{self, Controller, ControllerConfig, Ladder};
use cosee_runtime::power::{PowerMonitor, SysfsProbe, DEFAULT_POWER_ROOT, DEFAULT_THERMAL_ROOT};
use cosee_runtime::profile::DeviceProfile;
use cosee_runtime::settings;
use cosee_runtime::tune::{self, RuntimeConfig};
use cosee_runtime::{Engine, ExitPolicy, Input, LineReader};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Requests between two decisions of the latency rule, unless told otherwise.
pub const DEFAULT_MIN_SAMPLES: usize = 32;
/// How often battery and temperature are read, milliseconds, unless told otherwise.
pub const DEFAULT_POWER_POLL_MS: u64 = 5000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model package directory.
    #[arg(long, short = 'm', value_name = "DIR")]
    pub model: PathBuf,
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
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // The flags that do not depend on the package, before it is loaded (and before any input is read).
    if let Some(budget) = args.budget_ms {
        settings::budget_ms("--budget-ms", budget).map_err(UsageError::from)?;
    }
    if let Some(q) = args.percentile {
        settings::percentile("--percentile", q).map_err(UsageError::from)?;
    }
    controller::min_samples("--min-samples", args.min_samples).map_err(UsageError::from)?;
    let engine = Engine::load(&args.model).with_context(|| format!("cannot load {}", args.model.display()))?;
    let manifest = engine.manifest();
    let layers = Some(manifest.num_layers);
    if let Some(t) = args.threshold {
        manifest.signal.name.check_threshold("--threshold", t, layers).map_err(UsageError::from)?;
    }
    let file = args.config.as_deref().map(RuntimeConfig::read).transpose()?;
    if let (Some(f), Some(path)) = (&file, &args.config) {
        f.check(&path.display().to_string(), layers)?;
    }
    if let Some(f) = &file {
        if f.signal != manifest.signal.name {
            anyhow::bail!(
                "{}: tuned for signal {}, but the package exits on {}",
                args.config.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
                f.signal,
                manifest.signal.name
            );
        }
    }
    let configured = args.threshold.or(file.as_ref().map(|f| f.threshold)).unwrap_or(manifest.default_threshold);
    let config = ControllerConfig {
        budget_ms: args.budget_ms.or(file.as_ref().and_then(|f| f.budget_ms)),
        percentile: args.percentile.or(file.as_ref().map(|f| f.percentile)).unwrap_or(95.0),
        min_samples: args.min_samples,
        ..ControllerConfig::default()
    };
    let mut ladder = Ladder::from_manifest(manifest);
    if let (Some(path), Some(cal)) = (&args.profile, &manifest.calibration) {
        let profile = DeviceProfile::read(path)?;
        let preds = tune::predict_all(&profile, cal, manifest.num_layers, &profile.token_counts, config.percentile)?;
        ladder = ladder
            .with_predictions(|tau| preds.iter().find(|p| (p.threshold - tau).abs() < 1e-6).map(|p| p.percentile_ms));
    }
    if manifest.calibration.is_none() {
        eprintln!("cosee-edge serve: the package has no calibration table: τ stays at {}", ladder.get(0).threshold);
    } else if ladder.len() == 1 {
        eprintln!(
            "cosee-edge serve: one threshold of the calibration table dominates all others (most accurate and \
             fastest): τ stays at {}",
            ladder.get(0).threshold
        );
    }
    let mut controller = Controller::new(ladder, configured, config)?;
    let mut monitor = PowerMonitor::new(
        SysfsProbe::new(&args.power_root, &args.thermal_root),
        Duration::from_millis(args.power_poll_ms),
    );
    eprintln!(
        "cosee-edge serve: {} ({} layers), {} τ {} ({} rungs), budget {}",
        args.model.display(),
        engine.num_layers(),
        controller.signal(),
        controller.threshold(),
        controller.ladder().len(),
        controller
            .config()
            .budget_ms
            .map_or("none".to_string(), |b| format!("p{} ≤ {b} ms", controller.config().percentile))
    );

    let pair_task = manifest.task.is_pair();
    let stdin = std::io::stdin();
    let mut lines = LineReader::new(stdin.lock());
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (mut number, mut failed) = (0usize, 0usize);
    while let Some(line) = lines.next_line().context("cannot read stdin")? {
        // Power is read after the wait for input, so that a request after a long idle sees today's battery.
        if let Some(reading) = monitor.poll(Instant::now()) {
            for event in controller.observe_power(&reading) {
                eprintln!("cosee-edge serve: {event}");
            }
        }
        number += 1;
        let policy = ExitPolicy { signal: controller.signal(), threshold: controller.threshold() };
        let start = Instant::now();
        let result = line.map_err(|e| e.to_string()).and_then(|text| {
            engine.classify_with(&Input::from_line(text, pair_task), policy).map_err(|e| e.to_string())
        });
        let wall_ms = start.elapsed().as_secs_f64() * 1e3;
        writeln!(out, "{}", json_line(number, &result)).context("cannot write to stdout")?;
        out.flush().context("cannot write to stdout")?;
        // Failed inputs say nothing about the latency of the model: only answers feed the controller.
        match result {
            Ok(_) => {
                if let Some(change) = controller.record(wall_ms) {
                    eprintln!("cosee-edge serve: {change}");
                }
            }
            Err(_) => failed += 1,
        }
    }
    Ok(ExitCode::from(if failed == 0 { EXIT_OK } else { EXIT_INPUT_ERRORS }))
}
