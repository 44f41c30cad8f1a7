//! Serving under the threshold controller, shared by every long-running surface: `cosee-edge serve` on stdin, the
//! HTTP API (`serve --http`, [`crate::http`]) and the Python package's `budget_ms`.
//!
//! [`ServeOptions`] are the settings those surfaces offer (a tuned config, a budget, a percentile, an operating
//! point, a device profile, where battery and temperature are read). [`ThresholdControl::new`] checks them against
//! the package and builds the one [`Controller`] and [`PowerMonitor`]; [`classify_controlled`] is the request step
//! (power reading, τ, the exit loop, latency feedback). Keeping the step here, and not in each surface, is what
//! makes the three answer alike: a latency is recorded only for an answer, power is read after the wait for a
//! request, and the controller's lock is never held while the engine runs, so concurrent requests share one
//! controller without queueing behind each other's layers.

use crate::controller::{self, Controller, ControllerConfig, ControllerError, ControllerEvent, Ladder, PowerMode};
use crate::json::JsonError;
use crate::manifest::Manifest;
use crate::power::{PowerMonitor, PowerProbe, SysfsProbe, DEFAULT_POWER_ROOT, DEFAULT_THERMAL_ROOT};
use crate::profile::DeviceProfile;
use crate::settings::{self, OutOfRange};
use crate::signal::ExitSignal;
use crate::tune::{self, ConfigError, RuntimeConfig, TuneError};
use crate::{Answer, Engine, ExitPolicy, Input, RunError};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Requests between two decisions of the latency rule, unless told otherwise.
pub const DEFAULT_MIN_SAMPLES: usize = 32;
/// How often battery and temperature are read, unless told otherwise.
pub const DEFAULT_POWER_POLL: Duration = Duration::from_millis(5000);
/// The latency percentile a budget applies to, unless the config or the caller says otherwise.
pub const DEFAULT_PERCENTILE: f64 = 95.0;

/// What a serving surface lets its user set; each `None` falls back to the tuned config, then to the package.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeOptions {
    /// Runtime config written by `tune`: the operating point τ (used on battery), the budget and percentile.
    pub config: Option<PathBuf>,
    /// Latency budget in milliseconds (overrides the config's). Without one, τ follows only the power policy.
    pub budget_ms: Option<f64>,
    /// Latency percentile the budget applies to (overrides the config's).
    pub percentile: Option<f64>,
    /// The operating point τ on battery (overrides the config's; default: the package's default threshold).
    pub threshold: Option<f32>,
    /// Device profile from `bench`, for the controller's latency predictions.
    pub profile: Option<PathBuf>,
    pub min_samples: usize,
    pub power_root: PathBuf,
    pub thermal_root: PathBuf,
    pub power_poll: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            config: None,
            budget_ms: None,
            percentile: None,
            threshold: None,
            profile: None,
            min_samples: DEFAULT_MIN_SAMPLES,
            power_root: DEFAULT_POWER_ROOT.into(),
            thermal_root: DEFAULT_THERMAL_ROOT.into(),
            power_poll: DEFAULT_POWER_POLL,
        }
    }
}

impl ServeOptions {
    /// The settings that do not depend on the package, checked before it is loaded; each is named by `flag(field)`
    /// (`--budget-ms` for the CLI, `budget_ms` for Python).
    pub fn check(&self, flag: impl Fn(&str) -> String) -> Result<(), OutOfRange> {
        if let Some(budget) = self.budget_ms {
            settings::budget_ms(&flag("budget_ms"), budget)?;
        }
        if let Some(q) = self.percentile {
            settings::percentile(&flag("percentile"), q)?;
        }
        controller::min_samples(&flag("min_samples"), self.min_samples)?;
        Ok(())
    }
}

/// Why serving cannot start with these options.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting given by the caller is out of range (a usage error: the message names the flag).
    #[error(transparent)]
    Setting(#[from] OutOfRange),
    /// The tuned config cannot be read, or one of its values is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: tuned for signal {tuned}, but the package exits on {package}")]
    SignalMismatch { path: String, tuned: ExitSignal, package: ExitSignal },
    #[error(transparent)]
    Profile(#[from] JsonError),
    #[error(transparent)]
    Tune(#[from] TuneError),
    #[error(transparent)]
    Controller(#[from] ControllerError),
}

/// The threshold controller of one serving process and the power readings that feed it.
pub struct ThresholdControl<P: PowerProbe = SysfsProbe> {
    controller: Controller,
    monitor: PowerMonitor<P>,
    notes: Vec<String>,
}

impl ThresholdControl {
    /// Checks `options` against the package (flags named by `flag(field)`, as in [`ServeOptions::check`]) and sets
    /// up the controller on the package's calibration ladder, reading battery and heat from sysfs.
    pub fn new(manifest: &Manifest, options: &ServeOptions, flag: impl Fn(&str) -> String) -> Result<Self, ServeError> {
        let probe = SysfsProbe::new(&options.power_root, &options.thermal_root);
        Self::with_probe(manifest, options, flag, probe)
    }
}

impl<P: PowerProbe> ThresholdControl<P> {
    /// [`ThresholdControl::new`] with another source of power readings (tests give synthetic ones).
    pub fn with_probe(
        manifest: &Manifest,
        options: &ServeOptions,
        flag: impl Fn(&str) -> String,
        probe: P,
    ) -> Result<Self, ServeError> {
        options.check(&flag)?;
        let layers = Some(manifest.num_layers);
        if let Some(t) = options.threshold {
            manifest.signal.name.check_threshold(&flag("threshold"), t, layers)?;
        }
        let file = options.config.as_deref().map(RuntimeConfig::read).transpose()?;
        if let (Some(f), Some(path)) = (&file, &options.config) {
            let path = path.display().to_string();
            f.check(&path, layers).map_err(ConfigError::from)?;
            if f.signal != manifest.signal.name {
                return Err(ServeError::SignalMismatch { path, tuned: f.signal, package: manifest.signal.name });
            }
        }
        let configured = options.threshold.or(file.as_ref().map(|f| f.threshold)).unwrap_or(manifest.default_threshold);
        let config = ControllerConfig {
            budget_ms: options.budget_ms.or(file.as_ref().and_then(|f| f.budget_ms)),
            percentile: options.percentile.or(file.as_ref().map(|f| f.percentile)).unwrap_or(DEFAULT_PERCENTILE),
            min_samples: options.min_samples,
            ..ControllerConfig::default()
        };
        let mut ladder = Ladder::from_manifest(manifest);
        if let (Some(path), Some(cal)) = (&options.profile, &manifest.calibration) {
            let profile = DeviceProfile::read(path)?;
            let preds =
                tune::predict_all(&profile, cal, manifest.num_layers, &profile.token_counts, config.percentile)?;
            ladder = ladder.with_predictions(|tau| {
                preds.iter().find(|p| (p.threshold - tau).abs() < 1e-6).map(|p| p.percentile_ms)
            });
        }
        let mut notes = Vec::new();
        if manifest.calibration.is_none() {
            notes.push(format!("the package has no calibration table: τ stays at {}", ladder.get(0).threshold));
        } else if ladder.len() == 1 {
            notes.push(format!(
                "one threshold of the calibration table dominates all others (most accurate and fastest): τ stays \
                 at {}",
                ladder.get(0).threshold
            ));
        }
        let controller = Controller::new(ladder, configured, config)?;
        Ok(Self { controller, monitor: PowerMonitor::new(probe, options.power_poll), notes })
    }

    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// What the operator should know before the first request (e.g. that τ cannot move).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The policy for the next request, after a power reading if one is due (its events go to `on_event`).
    pub fn policy(&mut self, now: Instant, mut on_event: impl FnMut(&ControllerEvent)) -> ExitPolicy {
        if let Some(reading) = self.monitor.poll(now) {
            for event in self.controller.observe_power(&reading) {
                on_event(&event);
            }
        }
        ExitPolicy { signal: self.controller.signal(), threshold: self.controller.threshold() }
    }

    /// The latency of one answer (failed inputs say nothing about the model's latency and are not recorded).
    pub fn record(&mut self, wall_ms: f64, mut on_event: impl FnMut(&ControllerEvent)) {
        if let Some(change) = self.controller.record(wall_ms) {
            on_event(&ControllerEvent::Tau(change));
        }
    }

    /// A snapshot for status pages (`GET /v1/model`, Python's `Engine.controller`).
    pub fn state(&self) -> ControllerState {
        let c = &self.controller;
        let observed = c.observed_percentile();
        ControllerState {
            signal: c.signal(),
            threshold: c.threshold(),
            rung: c.rung(),
            rungs: c.ladder().rungs().iter().map(|r| r.threshold).collect(),
            mode: c.mode(),
            budget_ms: c.config().budget_ms,
            percentile: c.config().percentile,
            observed_ms: observed.is_finite().then_some(observed),
        }
    }
}

impl<P: PowerProbe> std::fmt::Debug for ThresholdControl<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThresholdControl").field("controller", &self.controller).field("notes", &self.notes).finish()
    }
}

/// Where the controller stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControllerState {
    pub signal: ExitSignal,
    /// The τ of the next request.
    pub threshold: f32,
    /// Index of `threshold` in `rungs` (0 = the most accurate).
    pub rung: usize,
    /// The thresholds τ can take, most accurate first.
    pub rungs: Vec<f32>,
    pub mode: PowerMode,
    pub budget_ms: Option<f64>,
    pub percentile: f64,
    /// The `percentile` of the latencies recorded at the current τ, milliseconds (none before the first).
    pub observed_ms: Option<f64>,
}

/// Why a fixed policy was refused: a value out of range, or a signal without the threshold that goes with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
    #[error("{flag} {signal} differs from the package's signal ({package}): give {threshold_flag} too")]
    SignalWithoutThreshold { flag: String, signal: ExitSignal, package: ExitSignal, threshold_flag: String },
}

/// A fixed policy from a caller's overrides of `default` (the package's, or a tuned config's), the settings named
/// by `flag(field)`: τ checked against the signal's range and the package's depth; another signal than the
/// default's needs its own τ (the default τ belongs to the default signal). What `classify --threshold/--signal`
/// and the Python package's `threshold`/`signal` both take.
pub fn fixed_policy(
    default: ExitPolicy,
    signal: Option<ExitSignal>,
    threshold: Option<f32>,
    num_layers: usize,
    flag: impl Fn(&str) -> String,
) -> Result<ExitPolicy, PolicyError> {
    let signal = signal.unwrap_or(default.signal);
    let threshold = match threshold {
        Some(t) => signal.check_threshold(&flag("threshold"), t, Some(num_layers))?,
        None if signal != default.signal => {
            return Err(PolicyError::SignalWithoutThreshold {
                flag: flag("signal"),
                signal,
                package: default.signal,
                threshold_flag: flag("threshold"),
            })
        }
        None => default.threshold,
    };
    Ok(ExitPolicy { signal, threshold })
}

/// One request under the controller: τ from it, the exit loop, the answer's latency back to it. `control` is
/// locked only for those two short steps, never while the engine runs.
pub fn classify_controlled<P: PowerProbe>(
    control: &Mutex<ThresholdControl<P>>,
    engine: &Engine,
    input: &Input,
    mut on_event: impl FnMut(&ControllerEvent),
) -> Result<Answer, RunError> {
    // A panic elsewhere while the lock was held cannot leave the controller half-updated in a way that matters
    // more than stopping to serve: its state is a few counters and a ring of latencies.
    let lock = || control.lock().unwrap_or_else(PoisonError::into_inner);
    let policy = lock().policy(Instant::now(), &mut on_event);
    let start = Instant::now();
    let result = engine.classify_with(input, policy);
    let wall_ms = start.elapsed().as_secs_f64() * 1e3;
    if result.is_ok() {
        lock().record(wall_ms, &mut on_event);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn energy(threshold: f32) -> ExitPolicy {
        ExitPolicy { signal: ExitSignal::Energy, threshold }
    }

    #[test]
    fn fixed_policy_overrides_and_refuses_like_the_cli() {
        let flag = |f: &str| format!("--{f}");
        assert_eq!(fixed_policy(energy(0.2), None, None, 6, flag), Ok(energy(0.2)));
        assert_eq!(fixed_policy(energy(0.2), None, Some(0.0), 6, flag), Ok(energy(0.0)));
        let softmax = fixed_policy(energy(0.2), Some(ExitSignal::MaxSoftmax), Some(0.9), 6, flag).unwrap();
        assert_eq!(softmax, ExitPolicy { signal: ExitSignal::MaxSoftmax, threshold: 0.9 });
        // The default τ belongs to the default signal.
        let e = fixed_policy(energy(0.2), Some(ExitSignal::Entropy), None, 6, flag).unwrap_err().to_string();
        assert_eq!(e, "--signal entropy differs from the package's signal (energy): give --threshold too");
        let e = fixed_policy(energy(0.2), None, Some(1.5), 6, str::to_string).unwrap_err().to_string();
        assert!(e.starts_with("threshold") && e.contains("out of range"), "{e}");
        // Patience counts layers: at most the package's depth.
        assert!(fixed_policy(energy(0.2), Some(ExitSignal::Patience), Some(7.0), 6, flag).is_err());
        assert!(fixed_policy(energy(0.2), Some(ExitSignal::Patience), Some(3.0), 6, flag).is_ok());
    }

    #[test]
    fn options_are_checked_before_the_package_is_loaded() {
        let flag = |f: &str| format!("--{}", f.replace('_', "-"));
        assert!(ServeOptions::default().check(flag).is_ok());
        let bad = ServeOptions { budget_ms: Some(0.0), ..ServeOptions::default() };
        assert!(bad.check(flag).unwrap_err().to_string().starts_with("--budget-ms"));
        let bad = ServeOptions { percentile: Some(101.0), ..ServeOptions::default() };
        assert!(bad.check(flag).unwrap_err().to_string().starts_with("--percentile"));
        let bad = ServeOptions { min_samples: 0, ..ServeOptions::default() };
        assert!(bad.check(flag).unwrap_err().to_string().starts_with("--min-samples"));
    }
}
