//! The ladder: the calibration table's Pareto front, the thresholds the controller may use.

use crate::manifest::{Calibration, Manifest};
use crate::signal::ExitSignal;
use serde::Serialize;

use super::*;

/// One usable threshold of the calibration table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rung {
    pub threshold: f32,
    /// Calibration accuracy at this τ (NaN when the package has no calibration table).
    pub accuracy: f64,
    /// Paper Eq. (12) on the calibration set.
    pub layer_speedup: f64,
    /// The latency percentile `tune` predicts for this τ from the device profile, when known.
    pub predicted_ms: Option<f64>,
}

/// The thresholds the controller may use, slowest (most accurate) first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ladder {
    pub signal: ExitSignal,
    rungs: Vec<Rung>,
}

impl Ladder {
    /// The Pareto front of a calibration table, ordered by layer speed-up (ascending).
    pub fn from_calibration(signal: ExitSignal, calibration: &Calibration) -> Result<Self, ControllerError> {
        let points: Vec<Rung> = calibration
            .points
            .iter()
            .filter(|p| p.threshold.is_finite() && p.accuracy.is_finite() && p.layer_speedup.is_finite())
            .map(|p| Rung {
                threshold: p.threshold,
                accuracy: p.accuracy,
                layer_speedup: p.layer_speedup,
                predicted_ms: None,
            })
            .collect();
        Self::from_rungs(signal, points)
    }

    /// The package's calibration table, or a single rung at its default threshold when it has none (the
    /// controller then has nowhere to move, and says so by never changing τ).
    pub fn from_manifest(manifest: &Manifest) -> Self {
        let signal = manifest.signal.name;
        manifest.calibration.as_ref().and_then(|c| Self::from_calibration(signal, c).ok()).unwrap_or_else(|| Self {
            signal,
            rungs: vec![Rung {
                threshold: manifest.default_threshold,
                accuracy: f64::NAN,
                layer_speedup: 1.0,
                predicted_ms: None,
            }],
        })
    }

    /// Keeps the rungs no other rung beats on both speed and accuracy, slowest first.
    pub fn from_rungs(signal: ExitSignal, mut points: Vec<Rung>) -> Result<Self, ControllerError> {
        // Fastest first, and among equally fast the most accurate first; then sweep keeping strict accuracy gains
        // as speed drops.
        points.sort_by(|a, b| b.layer_speedup.total_cmp(&a.layer_speedup).then(b.accuracy.total_cmp(&a.accuracy)));
        let mut front: Vec<Rung> = Vec::new();
        for p in points {
            if front.last().is_none_or(|last| p.accuracy > last.accuracy && p.layer_speedup < last.layer_speedup) {
                front.push(p);
            }
        }
        if front.is_empty() {
            return Err(ControllerError::EmptyTable);
        }
        front.reverse();
        Ok(Self { signal, rungs: front })
    }

    pub fn rungs(&self) -> &[Rung] {
        &self.rungs
    }

    pub fn len(&self) -> usize {
        self.rungs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rungs.is_empty()
    }

    pub fn get(&self, index: usize) -> Rung {
        self.rungs[index.min(self.rungs.len() - 1)]
    }

    /// Index of the fastest rung.
    pub fn fastest(&self) -> usize {
        self.rungs.len() - 1
    }

    /// Attaches predicted latencies (from `tune` and the device profile) to the rungs, by threshold.
    pub fn with_predictions(mut self, predict: impl Fn(f32) -> Option<f64>) -> Self {
        for r in &mut self.rungs {
            r.predicted_ms = predict(r.threshold).filter(|ms| ms.is_finite() && *ms > 0.0);
        }
        self
    }

    /// How much slower the rung below `index` is expected to be, as a factor on today's latency: the ratio of the
    /// profile's predictions when both rungs have one (it knows the fixed tokenizer and embedding costs), else the
    /// ratio of layer speed-ups (pessimistic, as if everything scaled with the layers).
    pub fn slowdown(&self, index: usize) -> f64 {
        if index == 0 {
            return 1.0;
        }
        let (here, slower) = (self.get(index), self.get(index - 1));
        match (here.predicted_ms, slower.predicted_ms) {
            (Some(h), Some(s)) => s / h,
            _ => here.layer_speedup / slower.layer_speedup.max(1e-9),
        }
    }

    /// The rung whose threshold is closest to `threshold` (the configured operating point snapped to the table).
    pub fn nearest(&self, threshold: f32) -> usize {
        let mut best = 0;
        for (i, r) in self.rungs.iter().enumerate() {
            if (r.threshold - threshold).abs() < (self.rungs[best].threshold - threshold).abs() {
                best = i;
            }
        }
        best
    }
}
