//! Latency-budget tuning: which τ of the calibration table gives the best accuracy within a latency percentile.
//!
//! For every τ the calibration table gives the exit-layer histogram (how many calibration inputs stop at each
//! layer) and the accuracy. The device profile gives the cost of a request as a function of its exit layer and
//! token count, and its jitter. With the token-length distribution of the user's data (or the one bench saw), the
//! latency distribution at τ is the exact mixture over (exit layer, token count, jitter quantile) triples, each
//! weighted by P(exit layer) · P(token count) / |jitter| — exit layer and length are treated as independent, which
//! the calibration table (histograms only) forces; `verify` measures the choice to catch where that is wrong.
//!
//! The choice is the most accurate τ whose predicted percentile is within the budget (ties go to the faster τ).
//! An impossible budget is not an error that leaves the caller with nothing: it is reported, with the fastest τ.
//!
//! [`run`] is all of `cosee-edge tune` in one call: profile, predictions, measurement, saved config.

mod run;

pub use run::{run, TuneEvent, TuneOptions, TuneReport};

use crate::bench::BenchError;
use crate::error::LoadError;
use crate::json::{JsonError, JsonFile};
use crate::manifest::Calibration;
use crate::profile::{DeviceProfile, ProfileError, DEFAULT_PROFILE};
use crate::settings::{self, OutOfRange};
use crate::signal::ExitSignal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// The predicted latency of one τ of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub threshold: f32,
    /// Calibration accuracy (and F1 where the task reports it).
    pub accuracy: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    pub layer_speedup: f64,
    /// The budgeted percentile of the predicted latency, milliseconds.
    pub percentile_ms: f64,
    pub p50_ms: f64,
    pub mean_ms: f64,
}

/// What `choose` decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Choice {
    /// `predictions[index]` is the most accurate τ within budget.
    WithinBudget { index: usize },
    /// No τ is predicted within budget; `predictions[index]` is the fastest, used anyway.
    Impossible { index: usize, budget_ms: f64, fastest_ms: f64 },
}

impl Choice {
    pub fn index(&self) -> usize {
        match *self {
            Choice::WithinBudget { index } | Choice::Impossible { index, .. } => index,
        }
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Choice::WithinBudget { .. } => f.write_str("within budget"),
            Choice::Impossible { budget_ms, fastest_ms, .. } => write!(
                f,
                "no threshold meets the {budget_ms:.2} ms budget: even the fastest is predicted at {fastest_ms:.2} ms; \
                 using the fastest (raise the budget, use an int8 package, or a smaller model)"
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error("the package has no calibration table: run `cosee-tools calibrate` on it first")]
    NoCalibration,
    #[error("the calibration table has no points")]
    EmptyCalibration,
    #[error("calibration point τ = {threshold}: its exit histogram has {found} layers, the package {expected}")]
    HistogramLength { threshold: f32, found: usize, expected: usize },
    #[error("no token-length distribution: give --data, or a profile that recorded one")]
    NoTokenCounts,
    /// A budget or percentile out of range.
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
    #[error("cannot load {path}")]
    Load { path: String, source: LoadError },
    #[error(
        "no device profile: run `cosee-edge bench` first (it writes {DEFAULT_PROFILE}), or give --profile or --data"
    )]
    NoProfile,
    /// Reading the data, or measuring on it.
    #[error(transparent)]
    Bench(#[from] BenchError),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// Reading the device profile, or writing the runtime config.
    #[error(transparent)]
    Json(#[from] JsonError),
}

/// Weighted percentile: the smallest value whose cumulative weight reaches q % of the total (NaN if empty).
pub fn weighted_percentile(sorted: &[(f64, f64)], q: f64) -> f64 {
    let total: f64 = sorted.iter().map(|p| p.1).sum();
    if sorted.is_empty() || total <= 0.0 {
        return f64::NAN;
    }
    let target = (q / 100.0).clamp(0.0, 1.0) * total;
    let mut cumulative = 0.0;
    for &(value, weight) in sorted {
        cumulative += weight;
        if cumulative >= target - 1e-12 * total {
            return value;
        }
    }
    sorted[sorted.len() - 1].0
}

/// The latency distribution at one exit histogram: (ms, weight) pairs sorted by ms.
pub fn latency_distribution(
    profile: &DeviceProfile,
    exit_histogram: &[usize],
    token_counts: &BTreeMap<usize, usize>,
) -> Vec<(f64, f64)> {
    let exits: f64 = exit_histogram.iter().sum::<usize>() as f64;
    let inputs: f64 = token_counts.values().sum::<usize>() as f64;
    let jitter: &[f64] = if profile.jitter.is_empty() { &[1.0] } else { &profile.jitter };
    let mut out = Vec::with_capacity(exit_histogram.len() * token_counts.len() * jitter.len());
    if exits == 0.0 || inputs == 0.0 {
        return out;
    }
    for (i, &n_exit) in exit_histogram.iter().enumerate().filter(|(_, &n)| n > 0) {
        for (&tokens, &n_tokens) in token_counts {
            let base = profile.predict_ms(i + 1, tokens);
            let w = (n_exit as f64 / exits) * (n_tokens as f64 / inputs) / jitter.len() as f64;
            out.extend(jitter.iter().map(|&j| (base * j, w)));
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Predicts every τ of the calibration table, in table order.
pub fn predict_all(
    profile: &DeviceProfile,
    calibration: &Calibration,
    num_layers: usize,
    token_counts: &BTreeMap<usize, usize>,
    percentile: f64,
) -> Result<Vec<Prediction>, TuneError> {
    settings::percentile("percentile", percentile)?;
    if calibration.points.is_empty() {
        return Err(TuneError::EmptyCalibration);
    }
    if token_counts.values().sum::<usize>() == 0 {
        return Err(TuneError::NoTokenCounts);
    }
    calibration
        .points
        .iter()
        .map(|p| {
            if p.exit_histogram.len() != num_layers {
                return Err(TuneError::HistogramLength {
                    threshold: p.threshold,
                    found: p.exit_histogram.len(),
                    expected: num_layers,
                });
            }
            let dist = latency_distribution(profile, &p.exit_histogram, token_counts);
            let total: f64 = dist.iter().map(|d| d.1).sum();
            let mean = dist.iter().map(|d| d.0 * d.1).sum::<f64>() / total;
            Ok(Prediction {
                threshold: p.threshold,
                accuracy: p.accuracy,
                f1: p.f1,
                layer_speedup: p.layer_speedup,
                percentile_ms: weighted_percentile(&dist, percentile),
                p50_ms: weighted_percentile(&dist, 50.0),
                mean_ms: mean,
            })
        })
        .collect()
}

/// The most accurate τ whose predicted percentile is within `budget_ms` (ties: the faster); if none, the fastest.
pub fn choose(predictions: &[Prediction], budget_ms: f64) -> Result<Choice, TuneError> {
    settings::budget_ms("budget_ms", budget_ms)?;
    if predictions.is_empty() {
        return Err(TuneError::EmptyCalibration);
    }
    let better = |a: &Prediction, b: &Prediction| {
        a.accuracy.total_cmp(&b.accuracy).then(b.percentile_ms.total_cmp(&a.percentile_ms)).is_gt()
    };
    let mut best: Option<usize> = None;
    for (i, p) in predictions.iter().enumerate() {
        if p.percentile_ms <= budget_ms && best.is_none_or(|b| better(p, &predictions[b])) {
            best = Some(i);
        }
    }
    if let Some(index) = best {
        return Ok(Choice::WithinBudget { index });
    }
    let mut fastest = 0;
    for (i, p) in predictions.iter().enumerate() {
        if p.percentile_ms < predictions[fastest].percentile_ms {
            fastest = i;
        }
    }
    Ok(Choice::Impossible { index: fastest, budget_ms, fastest_ms: predictions[fastest].percentile_ms })
}

/// What measuring one τ on the device gave.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measured {
    /// The budgeted percentile of the measured latencies, milliseconds.
    pub percentile_ms: f64,
    pub p50_ms: f64,
    pub mean_ms: f64,
    /// On the labelled inputs measured, if any.
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
}

/// One τ tried by [`verify`]: its prediction and its measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub index: usize,
    pub threshold: f32,
    /// The prediction as used for this attempt (after correcting by earlier measurements).
    pub predicted_ms: f64,
    pub measured: Measured,
    pub within_budget: bool,
}

/// The outcome of choosing and verifying.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verified {
    /// The first choice, from the predictions alone.
    pub choice: Choice,
    pub attempts: Vec<Attempt>,
    /// Index (into the predictions) of the τ to use: the last attempt.
    pub index: usize,
    /// Whether its measured percentile is within the budget.
    pub met: bool,
}

/// Chooses a τ from the predictions and measures it; if the measurement misses the budget, corrects every
/// prediction by the measured / predicted ratio and chooses again among the τ not yet tried, at most
/// `max_attempts` times in all. The predictions are a model of the device, the measurement is the device: when
/// they disagree, the measurement wins.
pub fn verify<E>(
    predictions: &[Prediction],
    budget_ms: f64,
    max_attempts: usize,
    measure: &mut dyn FnMut(usize) -> Result<Measured, E>,
) -> Result<Verified, E>
where
    E: From<TuneError>,
{
    let choice = choose(predictions, budget_ms)?;
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut scale = 1.0f64;
    let mut index = choice.index();
    loop {
        let predicted_ms = predictions[index].percentile_ms * scale;
        let measured = measure(index)?;
        let within = measured.percentile_ms <= budget_ms;
        if predictions[index].percentile_ms > 0.0 && measured.percentile_ms.is_finite() {
            scale = measured.percentile_ms / predictions[index].percentile_ms;
        }
        attempts.push(Attempt {
            index,
            threshold: predictions[index].threshold,
            predicted_ms,
            measured,
            within_budget: within,
        });
        if within || attempts.len() >= max_attempts.max(1) {
            break;
        }
        // Re-choose among the untried with corrected predictions; if none fits, the fastest untried one.
        let corrected: Vec<Prediction> =
            predictions.iter().map(|p| Prediction { percentile_ms: p.percentile_ms * scale, ..p.clone() }).collect();
        let untried = |i: &usize| !attempts.iter().any(|a| a.index == *i);
        let fastest_first = {
            let mut order: Vec<usize> = (0..predictions.len()).filter(untried).collect();
            order.sort_by(|&a, &b| corrected[a].percentile_ms.total_cmp(&corrected[b].percentile_ms));
            order
        };
        let fitting =
            fastest_first.iter().copied().filter(|&i| corrected[i].percentile_ms <= budget_ms).max_by(|&a, &b| {
                corrected[a]
                    .accuracy
                    .total_cmp(&corrected[b].accuracy)
                    .then(corrected[b].percentile_ms.total_cmp(&corrected[a].percentile_ms))
            });
        let faster_than_last =
            fastest_first.iter().copied().find(|&i| corrected[i].percentile_ms < corrected[index].percentile_ms);
        match fitting.or(faster_than_last) {
            Some(next) => index = next,
            None => break,
        }
    }
    let last = attempts.last().expect("at least one attempt");
    // Of everything measured, use a τ that met the budget (the most accurate one), else the fastest measured.
    let best = attempts
        .iter()
        .filter(|a| a.within_budget)
        .max_by(|a, b| predictions[a.index].accuracy.total_cmp(&predictions[b.index].accuracy))
        .or_else(|| attempts.iter().min_by(|a, b| a.measured.percentile_ms.total_cmp(&b.measured.percentile_ms)))
        .unwrap_or(last);
    Ok(Verified { choice, index: best.index, met: best.within_budget, attempts })
}

/// The runtime configuration `tune` saves and `classify --config` / `serve --config` read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    pub threshold: f32,
    pub signal: ExitSignal,
    /// The latency budget the threshold was tuned for (and that `serve`'s controller holds), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_ms: Option<f64>,
    /// Which latency percentile the budget applies to.
    #[serde(default = "default_percentile")]
    pub percentile: f64,
}

fn default_percentile() -> f64 {
    95.0
}

/// How a runtime config file is read and written.
pub const RUNTIME_CONFIG_JSON: JsonFile =
    JsonFile::plain("a runtime config (expected JSON with threshold, signal, budget_ms, percentile)");

/// Why a runtime config file was refused: it could not be read as one, or a value is out of range.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Json(#[from] JsonError),
    /// A value out of range; the setting is named `FILE: key`.
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
}

impl RuntimeConfig {
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let config: Self = RUNTIME_CONFIG_JSON.read(path)?;
        config.check(&path.display().to_string(), None)?;
        Ok(config)
    }

    /// Checks every value against its range (see [`crate::settings`]), the settings named `{origin}: key`; with
    /// the package's `num_layers`, a patience τ against its depth too.
    pub fn check(&self, origin: &str, num_layers: Option<usize>) -> Result<(), OutOfRange> {
        self.signal.check_threshold(&format!("{origin}: threshold"), self.threshold, num_layers)?;
        if let Some(budget) = self.budget_ms {
            settings::budget_ms(&format!("{origin}: budget_ms"), budget)?;
        }
        settings::percentile(&format!("{origin}: percentile"), self.percentile)?;
        Ok(())
    }

    pub fn write(&self, path: &Path) -> Result<(), JsonError> {
        RUNTIME_CONFIG_JSON.write(path, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{layer_speedup, SweepPoint};
    use crate::profile::{CostFit, ProfileOrigin, PROFILE_VERSION};

    /// 4 layers; tokenize 0.1 ms, embeddings 0.2 ms, each layer 1 ms + 0.01 ms/token, exits free, no jitter.
    fn profile() -> DeviceProfile {
        DeviceProfile {
            version: PROFILE_VERSION,
            origin: ProfileOrigin {
                arch: "test".into(),
                cpu: None,
                package: "synthetic".into(),
                quantization: "none".into(),
                num_layers: 4,
                hidden_size: 32,
                data: "synthetic".into(),
                inputs: 0,
            },
            tokenize: CostFit::exact(0.1, 0.0, 0.0),
            embeddings: CostFit::exact(0.2, 0.0, 0.0),
            layer: CostFit::exact(1.0, 0.01, 0.0),
            exit: CostFit::exact(0.0, 0.0, 0.0),
            overhead: CostFit::exact(0.0, 0.0, 0.0),
            jitter: vec![1.0],
            token_counts: BTreeMap::from([(20, 100)]),
        }
    }

    fn point(threshold: f32, accuracy: f64, hist: Vec<usize>) -> SweepPoint {
        SweepPoint { threshold, accuracy, f1: None, layer_speedup: layer_speedup(&hist), exit_histogram: hist }
    }

    /// Layer cost at 20 tokens is 1.2 ms, fixed 0.3 ms: exiting at layer m costs 0.3 + 1.2 m.
    fn table() -> Calibration {
        Calibration {
            data: "dev.tsv".into(),
            num_examples: 100,
            target_speedup: 2.0,
            points: vec![
                // τ 0.1: everything at layer 4 (5.1 ms), the most accurate.
                point(0.1, 0.90, vec![0, 0, 0, 100]),
                // τ 0.3: 90 % at layer 2 (2.7 ms), 10 % at layer 4 (5.1 ms): p95 = 5.1, p50 = 2.7.
                point(0.3, 0.88, vec![0, 90, 0, 10]),
                // τ 0.5: 96 % at layer 2, 4 % at layer 3 (3.9 ms): p95 = 2.7.
                point(0.5, 0.86, vec![0, 96, 4, 0]),
                // τ 0.7: everything at layer 1 (1.5 ms), least accurate.
                point(0.7, 0.80, vec![100, 0, 0, 0]),
            ],
        }
    }

    fn predictions(q: f64) -> Vec<Prediction> {
        let p = profile();
        predict_all(&p, &table(), 4, &p.token_counts, q).unwrap()
    }

    #[test]
    fn predicts_the_hand_computed_percentiles() {
        let preds = predictions(95.0);
        let p95: Vec<f64> = preds.iter().map(|p| p.percentile_ms).collect();
        for (got, want) in p95.iter().zip([5.1, 5.1, 2.7, 1.5]) {
            assert!((got - want).abs() < 1e-9, "{p95:?}");
        }
        assert!((preds[1].p50_ms - 2.7).abs() < 1e-9);
        assert!((preds[1].mean_ms - (0.9 * 2.7 + 0.1 * 5.1)).abs() < 1e-9);
    }

    #[test]
    fn picks_the_most_accurate_threshold_within_budget() {
        let preds = predictions(95.0);
        // 5.1 ms allows everything: the most accurate, τ 0.1.
        assert_eq!(choose(&preds, 5.2).unwrap(), Choice::WithinBudget { index: 0 });
        // 3 ms: τ 0.3 has p95 5.1 (its 10 % at layer 4), so τ 0.5 — not τ 0.7, which is faster but less accurate.
        assert_eq!(choose(&preds, 3.0).unwrap(), Choice::WithinBudget { index: 2 });
        // At p85 the 10 % tail of τ 0.3 no longer counts: τ 0.3 fits 3 ms.
        assert_eq!(choose(&predictions(85.0), 3.0).unwrap(), Choice::WithinBudget { index: 1 });
        assert_eq!(choose(&preds, 2.0).unwrap(), Choice::WithinBudget { index: 3 });
    }

    #[test]
    fn impossible_budget_is_reported_with_the_fastest_threshold() {
        let preds = predictions(95.0);
        let choice = choose(&preds, 1.0).unwrap();
        assert_eq!(choice, Choice::Impossible { index: 3, budget_ms: 1.0, fastest_ms: 1.5 });
        assert!(choice.to_string().contains("no threshold meets the 1.00 ms budget"), "{choice}");
        assert!(matches!(choose(&preds, 0.0), Err(TuneError::OutOfRange(_))));
        assert!(matches!(choose(&preds, f64::NAN), Err(TuneError::OutOfRange(_))));
    }

    #[test]
    fn token_lengths_and_jitter_shift_the_prediction() {
        let mut p = profile();
        // Half the inputs have 120 tokens: layer cost 2.2 ms there; τ 0.7 exits at layer 1: 0.3 + 2.2 = 2.5 ms.
        let tokens = BTreeMap::from([(20, 50), (120, 50)]);
        let preds = predict_all(&p, &table(), 4, &tokens, 95.0).unwrap();
        assert!((preds[3].percentile_ms - 2.5).abs() < 1e-9);
        assert!((preds[3].mean_ms - 2.0).abs() < 1e-9);
        // Jitter: half the requests 20 % slower.
        p.jitter = vec![1.0, 1.2];
        let preds = predict_all(&p, &table(), 4, &p.token_counts.clone(), 95.0).unwrap();
        assert!((preds[3].percentile_ms - 1.8).abs() < 1e-9);
        assert!((preds[3].p50_ms - 1.5).abs() < 1e-9);
    }

    #[test]
    fn bad_tables_are_refused_by_name() {
        let p = profile();
        let mut t = table();
        t.points[1].exit_histogram.pop();
        let err = predict_all(&p, &t, 4, &p.token_counts, 95.0).unwrap_err();
        assert!(err.to_string().contains("τ = 0.3"), "{err}");
        assert!(matches!(predict_all(&p, &table(), 4, &BTreeMap::new(), 95.0), Err(TuneError::NoTokenCounts)));
        assert!(matches!(predict_all(&p, &table(), 4, &p.token_counts, 101.0), Err(TuneError::OutOfRange(_))));
    }

    fn measured(ms: f64) -> Measured {
        Measured { percentile_ms: ms, p50_ms: ms, mean_ms: ms, accuracy: None, f1: None }
    }

    #[test]
    fn verification_accepts_a_measured_fit() {
        let preds = predictions(95.0);
        let v = verify::<TuneError>(&preds, 3.0, 3, &mut |i| Ok(measured(preds[i].percentile_ms * 0.9))).unwrap();
        assert_eq!((v.index, v.met, v.attempts.len()), (2, true, 1));
    }

    #[test]
    fn verification_corrects_a_slow_device_and_moves_faster() {
        let preds = predictions(95.0);
        // The device is 30 % slower than the profile says: τ 0.5 measures 3.51 ms > 3; corrected, τ 0.7 is
        // 1.95 ms and fits.
        let mut tried = Vec::new();
        let v = verify::<TuneError>(&preds, 3.0, 3, &mut |i| {
            tried.push(i);
            Ok(measured(preds[i].percentile_ms * 1.3))
        })
        .unwrap();
        assert_eq!(tried, vec![2, 3]);
        assert_eq!((v.index, v.met), (3, true));
        assert!(!v.attempts[0].within_budget && v.attempts[1].within_budget);
        assert!((v.attempts[1].predicted_ms - 1.95).abs() < 1e-9);
    }

    #[test]
    fn verification_of_an_impossible_budget_reports_not_met() {
        let preds = predictions(95.0);
        let v = verify::<TuneError>(&preds, 1.0, 3, &mut |i| Ok(measured(preds[i].percentile_ms))).unwrap();
        assert!(matches!(v.choice, Choice::Impossible { index: 3, .. }));
        assert_eq!((v.index, v.met), (3, false));
        // A measurement error is passed through.
        let err = verify::<TuneError>(&preds, 3.0, 3, &mut |_| Err(TuneError::NoTokenCounts)).unwrap_err();
        assert!(matches!(err, TuneError::NoTokenCounts));
    }

    #[test]
    fn weighted_percentile_by_hand() {
        let d = [(1.0, 0.5), (2.0, 0.3), (3.0, 0.2)];
        assert_eq!(weighted_percentile(&d, 50.0), 1.0);
        assert_eq!(weighted_percentile(&d, 51.0), 2.0);
        assert_eq!(weighted_percentile(&d, 80.0), 2.0);
        assert_eq!(weighted_percentile(&d, 95.0), 3.0);
        assert!(weighted_percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn runtime_config_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runtime.json");
        let c = RuntimeConfig { threshold: 0.35, signal: ExitSignal::Energy, budget_ms: Some(4.0), percentile: 95.0 };
        c.write(&path).unwrap();
        assert_eq!(RuntimeConfig::read(&path).unwrap(), c);
        std::fs::write(&path, r#"{"threshold": 0.2, "signal": "entropy"}"#).unwrap();
        let c = RuntimeConfig::read(&path).unwrap();
        assert_eq!((c.budget_ms, c.percentile), (None, 95.0));
        std::fs::write(&path, r#"{"threshold": "x"}"#).unwrap();
        assert!(matches!(RuntimeConfig::read(&path), Err(ConfigError::Json(JsonError::Parse { .. }))));
    }
}
