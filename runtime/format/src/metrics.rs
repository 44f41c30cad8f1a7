//! The paper's evaluation measures and the τ sweep, shared by training-time evaluation, calibration and
//! benchmarking.

use crate::signal::{exit_layers, Direction, ExitSignal};
use serde::{Deserialize, Serialize};

/// Number of samples that exited at each layer; index 0 is layer 1.
pub fn exit_histogram(exit_layers: &[usize], num_layers: usize) -> Vec<usize> {
    let mut hist = vec![0; num_layers];
    for &m in exit_layers {
        if (1..=num_layers).contains(&m) {
            hist[m - 1] += 1;
        }
    }
    hist
}

/// Paper Eq. (12): Σ_m M·N^m / Σ_m m·N^m, the speed-up in executed layers. 1.0 for an empty histogram.
pub fn layer_speedup(histogram: &[usize]) -> f64 {
    let num_layers = histogram.len() as f64;
    let full: f64 = histogram.iter().map(|&n| num_layers * n as f64).sum();
    let executed: f64 = histogram.iter().enumerate().map(|(i, &n)| (i + 1) as f64 * n as f64).sum();
    if executed == 0.0 {
        1.0
    } else {
        full / executed
    }
}

pub fn accuracy(predictions: &[usize], labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let correct = predictions.iter().zip(labels).filter(|(p, l)| p == l).count();
    correct as f64 / labels.len() as f64
}

/// F1 of the positive class (label 1), as GLUE reports for MRPC and QQP.
pub fn f1_binary(predictions: &[usize], labels: &[usize]) -> f64 {
    let (mut tp, mut fp, mut fneg) = (0usize, 0usize, 0usize);
    for (&p, &l) in predictions.iter().zip(labels) {
        match (p == 1, l == 1) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fneg += 1,
            _ => {}
        }
    }
    if tp == 0 {
        return 0.0;
    }
    2.0 * tp as f64 / (2 * tp + fp + fneg) as f64
}

/// Difficulty Inversion Score (Li et al. 2021, CascadeBERT) of one exit.
///
/// Samples are ordered by confidence (the signal, negated when it grows with difficulty) and difficulty is 0 for
/// a correct prediction, 1 for a wrong one. DIS = 1 − (inverted pairs / all easy–hard pairs), where a pair is
/// inverted when the hard sample is more confident than the easy one (ties count half). 1.0 means the signal
/// ranks every wrong prediction below every right one; 0.5 is chance. `None` when a layer is all right or all
/// wrong, where no pair exists.
pub fn difficulty_inversion_score(signal: ExitSignal, signals: &[f32], correct: &[bool]) -> Option<f64> {
    let confidence = |s: f32| match signal.direction() {
        Direction::Below => -s,
        Direction::Above => s,
    };
    let mut scored: Vec<(f32, bool)> =
        signals.iter().zip(correct).map(|(&s, &c)| (confidence(s), c)).filter(|(s, _)| !s.is_nan()).collect();
    let easy_total = scored.iter().filter(|(_, c)| *c).count();
    let hard_total = scored.len() - easy_total;
    if easy_total == 0 || hard_total == 0 {
        return None;
    }
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Walk groups of equal confidence in ascending order; each easy sample inverts with every hard sample that
    // is strictly more confident, and half-inverts with hard samples of the same confidence.
    let mut inversions = 0.0f64;
    let mut hard_above = hard_total as f64;
    let mut i = 0;
    while i < scored.len() {
        let mut j = i;
        while j < scored.len() && scored[j].0 == scored[i].0 {
            j += 1;
        }
        let group = &scored[i..j];
        let easy = group.iter().filter(|(_, c)| *c).count() as f64;
        let hard = group.len() as f64 - easy;
        hard_above -= hard;
        inversions += easy * (hard_above + 0.5 * hard);
        i = j;
    }
    Some(1.0 - inversions / (easy_total as f64 * hard_total as f64))
}

/// One threshold of a τ sweep: what early exit at τ gives on a labelled set. The calibration table of a package's
/// manifest, the trainer's evaluation sweep and every τ `cosee-edge bench` measures are made of it, by
/// [`SweepPoint::new`]. (The aliases read the trainer's evaluation reports written before the types were one.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    #[serde(alias = "tau")]
    pub threshold: f32,
    pub accuracy: f64,
    /// F1 of the positive class, for the tasks GLUE scores by it (MRPC, QQP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    /// Paper Eq. (12).
    #[serde(alias = "speedup")]
    pub layer_speedup: f64,
    /// Samples exiting at layers 1..=M; index 0 is layer 1.
    #[serde(alias = "histogram")]
    pub exit_histogram: Vec<usize>,
}

impl SweepPoint {
    /// The point at `threshold` from every sample's exit layer (`exits`, 1-based, for the histogram and Eq. 12) and
    /// the answers of the labelled ones (`predictions` from the exit each left at, against `labels`).
    pub fn new(
        threshold: f32,
        exits: &[usize],
        num_layers: usize,
        predictions: &[usize],
        labels: &[usize],
        with_f1: bool,
    ) -> Self {
        let exit_histogram = exit_histogram(exits, num_layers);
        Self {
            threshold,
            accuracy: accuracy(predictions, labels),
            f1: with_f1.then(|| f1_binary(predictions, labels)),
            layer_speedup: layer_speedup(&exit_histogram),
            exit_histogram,
        }
    }

    /// Early exit at `tau` simulated from every sample's signals `[sample][layer]` and every exit's predictions
    /// `[exit][sample]`, with the runtime's exit decision ([`exit_layers`]).
    pub fn simulate(
        signal: ExitSignal,
        signals: &[Vec<f32>],
        predictions: &[Vec<usize>],
        labels: &[usize],
        tau: f32,
        with_f1: bool,
    ) -> Self {
        let exits = exit_layers(signal, signals, tau);
        let answers: Vec<usize> = exits.iter().enumerate().map(|(n, &m)| predictions[m - 1][n]).collect();
        Self::new(tau, &exits, predictions.len(), &answers, labels, with_f1)
    }

    /// The mean exit layer (1-based) of the samples; 0 for none.
    pub fn mean_exit_layer(&self) -> f64 {
        let samples: usize = self.exit_histogram.iter().sum();
        let layers: usize = self.exit_histogram.iter().enumerate().map(|(i, &n)| (i + 1) * n).sum();
        layers as f64 / samples.max(1) as f64
    }
}

/// The layer speed-ups (Eq. 12) at which objectives are compared: the paper's operating range.
pub const REPORTED_SPEEDUPS: [f64; 5] = [1.5, 2.0, 2.5, 3.0, 4.0];

/// At most this many thresholds in a [`dense_thresholds`] sweep: enough that neighbouring points of the curve
/// differ by a handful of samples, few enough that a sweep over a large held-out slice stays under a second.
pub const MAX_DENSE_THRESHOLDS: usize = 2000;

/// The thresholds that realise every distinct early-exit outcome of a set of signals `[sample][layer]`: the
/// midpoints between consecutive distinct internal-layer signal values, plus one threshold beyond each end
/// (nobody exits, everybody exits where it can). A fixed grid such as 0.05 steps jumps over the steep part of
/// the accuracy / speed-up curve; this one moves one sample at a time. Above [`MAX_DENSE_THRESHOLDS`] distinct
/// values, evenly spaced quantiles are taken instead. Patience is a count: its thresholds are 1..M−1.
pub fn dense_thresholds(signal: ExitSignal, signals: &[Vec<f32>]) -> Vec<f32> {
    let num_layers = signals.first().map_or(0, Vec::len);
    if signal == ExitSignal::Patience {
        return (1..num_layers.max(2)).map(|p| p as f32).collect();
    }
    let mut values: Vec<f32> = signals
        .iter()
        .flat_map(|row| row[..row.len().saturating_sub(1)].iter().copied())
        .filter(|s| s.is_finite())
        .collect();
    values.sort_by(f32::total_cmp);
    values.dedup();
    if values.len() > MAX_DENSE_THRESHOLDS {
        let last = values.len() - 1;
        values = (0..MAX_DENSE_THRESHOLDS).map(|i| values[i * last / (MAX_DENSE_THRESHOLDS - 1)]).collect();
        values.dedup();
    }
    let (Some(&lo), Some(&hi)) = (values.first(), values.last()) else {
        return vec![0.0];
    };
    let mut out = Vec::with_capacity(values.len() + 1);
    out.push(lo - 1.0);
    out.extend(values.windows(2).map(|w| 0.5 * (w[0] + w[1])));
    out.push(hi + 1.0);
    // Sorted ascending, which for signals that exit below τ is also ascending speed-up.
    out
}

/// The metric at a fixed layer speed-up, read off a curve of `(speed-up, metric)` points by linear
/// interpolation between the two points that bracket `target`. Points at the same speed-up are averaged first.
/// `None` when the curve never reaches `target` (or starts above it).
pub fn metric_at_speedup(points: &[(f64, f64)], target: f64) -> Option<f64> {
    let mut sorted: Vec<(f64, f64)> = points.iter().copied().filter(|(s, m)| s.is_finite() && m.is_finite()).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut curve: Vec<(f64, f64)> = Vec::with_capacity(sorted.len());
    let mut i = 0;
    while i < sorted.len() {
        let j = sorted[i..].iter().position(|p| p.0 != sorted[i].0).map_or(sorted.len(), |k| i + k);
        let mean = sorted[i..j].iter().map(|p| p.1).sum::<f64>() / (j - i) as f64;
        curve.push((sorted[i].0, mean));
        i = j;
    }
    let exact = curve.iter().find(|p| p.0 == target);
    if let Some(p) = exact {
        return Some(p.1);
    }
    curve.windows(2).find(|w| w[0].0 < target && target < w[1].0).map(|w| {
        let t = (target - w[0].0) / (w[1].0 - w[0].0);
        w[0].1 + t * (w[1].1 - w[0].1)
    })
}

/// Percentile by linear interpolation between closest ranks (`q` in 0..=100); NaN for no data.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = (q / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eq12_speedup_by_hand() {
        // 4 layers; 2 samples exit at layer 1, 1 at layer 2, 1 at layer 4: 16 / (2 + 2 + 4) = 2.0.
        let hist = exit_histogram(&[1, 1, 2, 4], 4);
        assert_eq!(hist, vec![2, 1, 0, 1]);
        assert!((layer_speedup(&hist) - 2.0).abs() < 1e-12);
        assert!((layer_speedup(&[0, 0, 5]) - 1.0).abs() < 1e-12);
        assert!((layer_speedup(&[6, 0, 0]) - 3.0).abs() < 1e-12);
        assert_eq!(layer_speedup(&[0, 0]), 1.0);
    }

    #[test]
    fn accuracy_and_f1_by_hand() {
        let pred = [1, 1, 0, 0, 1];
        let gold = [1, 0, 0, 1, 1];
        assert!((accuracy(&pred, &gold) - 0.6).abs() < 1e-12);
        // tp = 2, fp = 1, fn = 1: F1 = 4 / 6.
        assert!((f1_binary(&pred, &gold) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(f1_binary(&[0, 0], &[1, 0]), 0.0);
    }

    #[test]
    fn dis_by_hand() {
        // Max-softmax (higher = more confident). Correct samples at 0.9, 0.8; wrong at 0.7, 0.85.
        // Pairs (easy, hard): (0.9, 0.7) ok, (0.9, 0.85) ok, (0.8, 0.7) ok, (0.8, 0.85) inverted: DIS = 3/4.
        let dis =
            difficulty_inversion_score(ExitSignal::MaxSoftmax, &[0.9, 0.8, 0.7, 0.85], &[true, true, false, false]);
        assert!((dis.unwrap() - 0.75).abs() < 1e-12);
        // Energy grows with difficulty: low energy on right answers is perfect ranking.
        let dis = difficulty_inversion_score(ExitSignal::Energy, &[0.1, 0.2, 0.5, 0.6], &[true, true, false, false]);
        assert!((dis.unwrap() - 1.0).abs() < 1e-12);
        // A tie between an easy and a hard sample counts half.
        let dis = difficulty_inversion_score(ExitSignal::Energy, &[0.3, 0.3], &[true, false]);
        assert!((dis.unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(difficulty_inversion_score(ExitSignal::Energy, &[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn metric_at_speedup_interpolates_between_bracketing_points() {
        let curve = [(1.0, 0.90), (2.0, 0.88), (2.0, 0.86), (4.0, 0.80)];
        // Exactly on a point: the two points at 2.0 average to 0.87.
        assert!((metric_at_speedup(&curve, 2.0).unwrap() - 0.87).abs() < 1e-12);
        // 1.5 lies halfway between 1.0 (0.90) and 2.0 (0.87).
        assert!((metric_at_speedup(&curve, 1.5).unwrap() - 0.885).abs() < 1e-12);
        // 3.0 halfway between 2.0 (0.87) and 4.0 (0.80); order of the input does not matter.
        let shuffled = [curve[3], curve[0], curve[2], curve[1]];
        assert!((metric_at_speedup(&shuffled, 3.0).unwrap() - 0.835).abs() < 1e-12);
        assert_eq!(metric_at_speedup(&curve, 4.5), None);
        assert_eq!(metric_at_speedup(&curve, 0.5), None);
    }

    #[test]
    fn dense_thresholds_move_one_sample_at_a_time() {
        // Internal signals 0.2, 0.4 (sample 0) and 0.3, 0.3 (sample 1); the last column is never thresholded.
        let signals = vec![vec![0.2, 0.4, 0.9], vec![0.3, 0.3, 0.0]];
        let t = dense_thresholds(ExitSignal::Energy, &signals);
        assert_eq!(t.len(), 4);
        assert!(t[0] < 0.2 && (t[1] - 0.25).abs() < 1e-6 && (t[2] - 0.35).abs() < 1e-6 && t[3] > 0.4);
        let layers = |tau| -> Vec<usize> {
            signals.iter().map(|r| crate::signal::exit_layer(ExitSignal::Energy, r, tau)).collect()
        };
        assert_eq!(layers(t[0]), vec![3, 3]);
        assert_eq!(layers(t[1]), vec![1, 3]);
        assert_eq!(layers(t[2]), vec![1, 1]);
        assert_eq!(dense_thresholds(ExitSignal::Patience, &signals), vec![1.0, 2.0]);
        // Many distinct values are thinned to quantiles, still sorted.
        let many: Vec<Vec<f32>> = (0..5000).map(|i| vec![i as f32 / 5000.0, 0.0]).collect();
        let t = dense_thresholds(ExitSignal::Energy, &many);
        assert!(t.len() <= MAX_DENSE_THRESHOLDS + 1 && t.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn sweep_point_by_hand() {
        // 3 samples, 2 layers: exits 1, 2, 1; answers 0, 1, 0 against labels 0, 1, 1.
        let p = SweepPoint::new(0.5, &[1, 2, 1], 2, &[0, 1, 0], &[0, 1, 1], true);
        assert_eq!(p.exit_histogram, vec![2, 1]);
        assert!((p.accuracy - 2.0 / 3.0).abs() < 1e-12);
        // Eq. 12: 2·3 / (1 + 2 + 1) = 1.5; F1: tp 1, fn 1: 2 / 3.
        assert!((p.layer_speedup - 1.5).abs() < 1e-12 && (p.f1.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((p.mean_exit_layer() - 4.0 / 3.0).abs() < 1e-12);
        // The same from signals: energy 0.1 meets τ = 0.5 at layer 1 for samples 0 and 2.
        let signals = vec![vec![0.1, 0.9], vec![0.7, 0.9], vec![0.2, 0.9]];
        let predictions = vec![vec![0, 0, 0], vec![1, 1, 1]];
        assert_eq!(SweepPoint::simulate(ExitSignal::Energy, &signals, &predictions, &[0, 1, 1], 0.5, true), p);
        // A manifest's field names; an evaluation report's older ones read too.
        let json = serde_json::to_value(&p).unwrap();
        assert!(json.get("layer_speedup").is_some() && json.get("exit_histogram").is_some());
        let old = r#"{"tau": 0.5, "accuracy": 1.0, "speedup": 1.5, "mean_exit_layer": 1.3, "histogram": [2, 1]}"#;
        assert_eq!(serde_json::from_str::<SweepPoint>(old).unwrap().exit_histogram, vec![2, 1]);
    }

    #[test]
    fn percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert_eq!(percentile(&v, 100.0), 5.0);
        assert!((percentile(&v, 95.0) - 4.8).abs() < 1e-12);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
