//! The paper's evaluation measures, shared by training-time evaluation, calibration and benchmarking.

use crate::signal::{Direction, ExitSignal};

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
    fn percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert_eq!(percentile(&v, 100.0), 5.0);
        assert!((percentile(&v, 95.0) - 4.8).abs() < 1e-12);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
