//! `cosee-edge tune` as one call: load the package, read (or measure) the device profile, predict every τ of the
//! calibration table, measure the choice on the data, save the runtime config. The caller hears of each step
//! through [`TuneEvent`]s (the CLI draws them as notes and progress bars on stderr) and prints the [`TuneReport`].

use super::{choose, predict_all, verify, Choice, Measured, Prediction, RuntimeConfig, TuneError, Verified};
use crate::bench::{self, BenchOptions};
use crate::glue::{Example, Task};
use crate::profile::DeviceProfile;
use crate::{BackendKind, Engine, ExitSignal, Input};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct TuneOptions {
    /// Latency budget for the `percentile`, milliseconds.
    pub budget_ms: f64,
    pub percentile: f64,
    /// Inputs like those to be served: their token lengths drive the prediction and the choice is measured on
    /// them. Without them, the profile's token lengths are used and nothing is measured.
    pub data: Option<PathBuf>,
    /// The task whose TSV columns to read; the package's by default.
    pub task: Option<Task>,
    /// Read the data file as plain lines.
    pub plain: bool,
    /// The device profile file (`bench` writes [`crate::profile::DEFAULT_PROFILE`]); without one, a profile is
    /// measured on the data.
    pub profile: Option<PathBuf>,
    /// Use at most N inputs of the data.
    pub limit: Option<usize>,
    /// How many τ to measure at most before settling.
    pub attempts: usize,
    /// Where to save the runtime config.
    pub out: PathBuf,
    /// The engine that runs the stages while measuring (the one that will serve).
    pub backend: BackendKind,
}

/// What [`run`] is doing, as it does it.
#[derive(Debug, Clone, Copy)]
pub enum TuneEvent<'a> {
    /// The device profile read from `path`, measured on a package of `profile_shape` (layers, hidden size); this
    /// one has `package_shape`.
    ProfileRead { path: &'a Path, profile_shape: (usize, usize), package_shape: (usize, usize) },
    /// Measuring a device profile on the data, as bench does, over `inputs` inputs.
    MeasuringProfile { inputs: usize },
    /// The device profile was measured on `inputs` inputs.
    ProfileMeasured { inputs: usize },
    /// Measuring `threshold` on `inputs` inputs of the data.
    MeasuringThreshold { threshold: f32, inputs: usize },
    /// Every measurement is done.
    Measured,
    /// `done` inputs of the current measurement.
    Progress { done: usize },
}

/// Everything `tune` found. Serialized, it is `cosee-edge tune --json`'s output; the fields after `config_file`
/// are for the table.
#[derive(Debug, Clone, Serialize)]
pub struct TuneReport {
    pub budget_ms: f64,
    pub percentile: f64,
    /// Every τ of the calibration table, in table order.
    pub predictions: Vec<Prediction>,
    /// The choice from the predictions alone.
    pub choice: Choice,
    /// The measurements on the data, when there were data.
    pub verification: Option<Verified>,
    /// What was saved.
    pub config: RuntimeConfig,
    pub config_file: String,
    /// Index into `predictions` of the saved τ: the verified one, else the choice.
    #[serde(skip)]
    pub index: usize,
    /// How many inputs' token lengths the predictions used.
    #[serde(skip)]
    pub token_inputs: usize,
    /// How many inputs of the data were measured (None: no data, the profile's token lengths were used).
    #[serde(skip)]
    pub data_inputs: Option<usize>,
}

impl TuneReport {
    /// The saved τ's prediction.
    pub fn chosen(&self) -> &Prediction {
        &self.predictions[self.index]
    }

    pub fn signal(&self) -> ExitSignal {
        self.config.signal
    }
}

/// Tunes the package in `model` for `options.budget_ms` and saves the runtime config to `options.out`.
pub fn run(
    model: &Path,
    options: &TuneOptions,
    events: &mut dyn FnMut(TuneEvent<'_>),
) -> Result<TuneReport, TuneError> {
    let (engine, cold_start) = bench::load_timed(model, options.backend)
        .map_err(|source| TuneError::Load { path: model.display().to_string(), source })?;
    let manifest = engine.manifest().clone();
    let calibration = manifest.calibration.clone().ok_or(TuneError::NoCalibration)?;
    let task = options.task.unwrap_or(manifest.task);
    let examples = match &options.data {
        Some(path) => {
            let mut ex = bench::read_inputs(path, task, options.plain)?;
            ex.truncate(options.limit.unwrap_or(ex.len()));
            Some(ex)
        }
        None => None,
    };
    let measure_on = Measure {
        engine: &engine,
        cold_start,
        model: model.display().to_string(),
        data: options.data.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
    };

    let profile = read_or_measure_profile(options, &measure_on, examples.as_deref(), events)?;
    let token_counts = match &examples {
        Some(ex) => token_counts(&engine, ex),
        None => profile.token_counts.clone(),
    };
    let q = options.percentile;
    let predictions = predict_all(&profile, &calibration, manifest.num_layers, &token_counts, q)?;

    let verification = match &examples {
        Some(ex) => {
            let mut measure = |i: usize| -> Result<Measured, TuneError> {
                let threshold = predictions[i].threshold;
                events(TuneEvent::MeasuringThreshold { threshold, inputs: ex.len() });
                let options = BenchOptions {
                    signal: Some(manifest.signal.name),
                    threshold: Some(threshold),
                    sweep: None,
                    warmup: 3,
                    limit: None,
                    full_depth: false,
                };
                let run = measure_on.run(ex, &options, events)?;
                let r = &run.result.main;
                let ms: Vec<f64> = run.samples.iter().map(|s| s.wall_ms).collect();
                Ok(Measured {
                    percentile_ms: crate::metrics::percentile(&ms, q),
                    p50_ms: r.latency_ms.p50,
                    mean_ms: r.latency_ms.mean,
                    accuracy: r.accuracy(),
                    f1: r.point.f1,
                })
            };
            let v = verify(&predictions, options.budget_ms, options.attempts, &mut measure)?;
            events(TuneEvent::Measured);
            Some(v)
        }
        None => None,
    };
    let choice = choose(&predictions, options.budget_ms)?;
    let index = verification.as_ref().map_or(choice.index(), |v| v.index);

    let config = RuntimeConfig {
        threshold: predictions[index].threshold,
        signal: manifest.signal.name,
        budget_ms: Some(options.budget_ms),
        percentile: q,
    };
    config.write(&options.out)?;
    Ok(TuneReport {
        budget_ms: options.budget_ms,
        percentile: q,
        token_inputs: token_counts.values().sum(),
        data_inputs: examples.as_ref().map(Vec::len),
        predictions,
        choice,
        verification,
        config,
        config_file: options.out.display().to_string(),
        index,
    })
}

/// The loaded package and the names bench records, for each measurement on the data.
struct Measure<'a> {
    engine: &'a Engine,
    cold_start: bench::ColdStart,
    model: String,
    data: String,
}

impl Measure<'_> {
    fn run(
        &self,
        examples: &[Example],
        options: &BenchOptions,
        events: &mut dyn FnMut(TuneEvent<'_>),
    ) -> Result<bench::BenchRun, bench::BenchError> {
        bench::run(self.engine, self.cold_start, &self.model, &self.data, examples, options, &mut |done, _| {
            events(TuneEvent::Progress { done })
        })
    }
}

fn read_or_measure_profile(
    options: &TuneOptions,
    measure_on: &Measure<'_>,
    examples: Option<&[Example]>,
    events: &mut dyn FnMut(TuneEvent<'_>),
) -> Result<DeviceProfile, TuneError> {
    if let Some(path) = &options.profile {
        let profile = DeviceProfile::read(path)?;
        let m = measure_on.engine.manifest();
        events(TuneEvent::ProfileRead {
            path,
            profile_shape: (profile.origin.num_layers, profile.origin.hidden_size),
            package_shape: (m.num_layers, m.hidden_size),
        });
        return Ok(profile);
    }
    let examples = examples.ok_or(TuneError::NoProfile)?;
    // Profile now: full depth and the package default on the data, as bench does.
    events(TuneEvent::MeasuringProfile { inputs: examples.len() });
    let options = BenchOptions { limit: options.limit, ..BenchOptions::default() };
    let run = measure_on.run(examples, &options, events)?;
    events(TuneEvent::ProfileMeasured { inputs: run.result.n });
    Ok(run.profile()?)
}

/// Token count of every input that tokenizes.
fn token_counts(engine: &Engine, examples: &[Example]) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for e in examples {
        if let Ok(enc) = engine.encode(&Input::from(e)) {
            *counts.entry(enc.len()).or_default() += 1;
        }
    }
    counts
}
