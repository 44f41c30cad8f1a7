//! Sample Weighting Mechanism (paper §3.2, Eq. 2–5).
//!
//! At every optimizer step K thresholds τ are drawn; for each, the test-time early exit is simulated on the
//! batch's (detached) signals to find every sample's exit layer m* (with the runtime's decision,
//! `cosee_format::signal::exit_layers`, so training simulates exactly what inference does), and each classifier's
//! cross-entropy is weighted by how close it sits to m*. The weights are built from numbers, so they carry no gradient.

use cosee_format::signal::{exit_layers, ExitSignal};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// The interval thresholds are drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdRange {
    pub lo: f32,
    pub hi: f32,
}

impl ThresholdRange {
    /// The first epoch's range. The paper draws from U(0, 1) — the range of the normalized signals. Patience
    /// is a count of agreeing layers, so its first range is its own: [0, M − 1].
    pub fn initial(signal: ExitSignal, num_layers: usize) -> Self {
        match signal {
            ExitSignal::Patience => Self { lo: 0.0, hi: num_layers.saturating_sub(1) as f32 },
            _ => Self { lo: 0.0, hi: 1.0 },
        }
    }

    /// K thresholds τ ~ U(lo, hi) (paper §3.2 "Range for Threshold Selection").
    pub fn sample(&self, k: usize, rng: &mut impl Rng) -> Vec<f32> {
        (0..k).map(|_| if self.hi > self.lo { rng.random_range(self.lo..self.hi) } else { self.lo }).collect()
    }
}

/// The running [min, max] of the internal-exit signals seen during one epoch; at the epoch's end it becomes
/// the next epoch's [`ThresholdRange`] (paper §3.2: "collect the maximum and minimum values of exiting signals
/// … within each epoch and use them to create the selection range for the next epoch"). The last layer is
/// left out because no threshold is ever applied to it (every sample leaves there regardless).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct RangeTracker {
    pub min: Option<f32>,
    pub max: Option<f32>,
}

impl RangeTracker {
    /// Records the signals `[sample][layer]` of one batch, internal layers only; NaN is skipped.
    pub fn observe(&mut self, signals: &[Vec<f32>]) {
        for row in signals {
            for &s in &row[..row.len().saturating_sub(1)] {
                if s.is_nan() {
                    continue;
                }
                self.min = Some(self.min.map_or(s, |m| m.min(s)));
                self.max = Some(self.max.map_or(s, |m| m.max(s)));
            }
        }
    }

    /// The range for the next epoch; `fallback` when nothing was seen.
    pub fn range(&self, fallback: ThresholdRange) -> ThresholdRange {
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => ThresholdRange { lo, hi },
            _ => fallback,
        }
    }
}

/// Paper Eq. (4): β_t = γ_t·β0 with γ_t = step / total_steps, a linear ramp from 0 at the first optimizer step
/// to β0 at the end of training. `step` counts the optimizer steps already taken.
pub fn beta_t(beta0: f64, step: usize, total_steps: usize) -> f64 {
    if total_steps == 0 {
        return beta0;
    }
    beta0 * (step as f64 / total_steps as f64).min(1.0)
}

/// Paper Eq. (3): w_n^{(m)} = exp(−β_t·|m − m*_n|) / Σ_m' exp(−β_t·|m' − m*_n|), as `[N, M]` f32 with no
/// gradient. Each row sums to 1 and peaks at m*; β = 0 gives uniform weights 1/M.
pub fn sample_weights(exit_layers: &[usize], num_layers: usize, beta: f64, device: Device) -> Tensor {
    let w: Vec<f32> =
        exit_layers.iter().flat_map(|&m_star| weight_row(m_star, num_layers, beta)).map(|w| w as f32).collect();
    Tensor::from_slice(&w).view([exit_layers.len() as i64, num_layers as i64]).to_device(device)
}

/// One row of Eq. (3): the weights of exits 1..=M for a sample leaving at `m_star`.
pub fn weight_row(m_star: usize, num_layers: usize, beta: f64) -> Vec<f64> {
    let logits: Vec<f64> = (1..=num_layers).map(|m| -beta * (m as f64 - m_star as f64).abs()).collect();
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
    logits.iter().map(|l| (l - max).exp() / z).collect()
}

/// The mean Eq. (3) weight each exit gets in one step, over the batch's samples and the K thresholds: how
/// much of the classification loss SWM hands to each classifier (1/M each under Eq. (1)).
pub fn mean_exit_weights(signal: ExitSignal, signals: &[Vec<f32>], thresholds: &[f32], beta: f64) -> Vec<f64> {
    let num_layers = signals.first().map_or(0, Vec::len);
    let mut sum = vec![0.0; num_layers];
    let mut rows = 0usize;
    for &tau in thresholds {
        for m_star in exit_layers(signal, signals, tau) {
            for (s, w) in sum.iter_mut().zip(weight_row(m_star, num_layers, beta)) {
                *s += w;
            }
            rows += 1;
        }
    }
    sum.iter().map(|s| s / rows.max(1) as f64).collect()
}

/// Paper Eq. (2): L_CE,τ = (1/N) Σ_n Σ_m w_n^{(m)}·CE(ŷ_n^{(m)}, y_n), with `ce` the per-sample, per-exit
/// cross-entropy `[N, M]` and `weights` from [`sample_weights`].
pub fn weighted_ce(ce: &Tensor, weights: &Tensor) -> Tensor {
    (ce * weights).sum_dim_intlist(1i64, false, Kind::Float).mean(Kind::Float)
}

/// Paper Eq. (5): L_CE = (1/K) Σ_τ L_CE,τ over the drawn thresholds.
pub fn swm_loss(signal: ExitSignal, ce: &Tensor, signals: &[Vec<f32>], thresholds: &[f32], beta: f64) -> Tensor {
    let num_layers = ce.size()[1] as usize;
    let losses: Vec<Tensor> = thresholds
        .iter()
        .map(|&tau| {
            let m_star = exit_layers(signal, signals, tau);
            weighted_ce(ce, &sample_weights(&m_star, num_layers, beta, ce.device()))
        })
        .collect();
    Tensor::stack(&losses, 0).mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        crate::model::tensor_to_rows(t).unwrap()
    }

    #[test]
    fn weights_sum_to_one_and_peak_at_the_exit_layer() {
        let w = rows(&sample_weights(&[1, 3, 6], 6, 2.0, Device::Cpu));
        for (row, m_star) in w.iter().zip([1usize, 3, 6]) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            let peak = cosee_format::signal::argmax(row) + 1;
            assert_eq!(peak, m_star);
            // Symmetric around m*: layers at equal distance get equal weight.
            if m_star == 3 {
                assert!((row[1] - row[3]).abs() < 1e-7 && (row[0] - row[4]).abs() < 1e-7);
                assert!(row[0] < row[1] && row[4] > row[5]);
            }
        }
        // By hand: M = 3, m* = 1, β = ln 2: exp(0), exp(−ln 2), exp(−2 ln 2) = 1, 1/2, 1/4 over 7/4.
        let w = rows(&sample_weights(&[1], 3, 2f64.ln(), Device::Cpu));
        for (got, want) in w[0].iter().zip([4.0 / 7.0, 2.0 / 7.0, 1.0 / 7.0]) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn mean_exit_weights_by_hand() {
        // Energy signals of 2 samples × 3 exits; τ = 0.3: sample 0 leaves at 2, sample 1 at 3.
        let signals = vec![vec![0.5, 0.2, 0.1], vec![0.6, 0.5, 0.05]];
        // β = ln 2: m* = 2 → (1/2, 1, 1/2)/2 = (1/4, 1/2, 1/4); m* = 3 → (1/4, 1/2, 1)/(7/4) = (1/7, 2/7, 4/7).
        let w = mean_exit_weights(ExitSignal::Energy, &signals, &[0.3], 2f64.ln());
        let want = [(0.25 + 1.0 / 7.0) / 2.0, (0.5 + 2.0 / 7.0) / 2.0, (0.25 + 4.0 / 7.0) / 2.0];
        for (g, w) in w.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{g} vs {w}");
        }
        // A second τ where both leave at the last exit averages in (1/7, 2/7, 4/7) twice.
        let w2 = mean_exit_weights(ExitSignal::Energy, &signals, &[0.3, 0.01], 2f64.ln());
        assert!((w2[2] - (0.25 + 4.0 / 7.0 * 3.0) / 4.0).abs() < 1e-12);
        assert!((w2.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn weights_are_uniform_when_beta_is_zero() {
        for row in rows(&sample_weights(&[1, 4], 4, 0.0, Device::Cpu)) {
            assert!(row.iter().all(|&w| (w - 0.25).abs() < 1e-7));
        }
        // A huge β is a one-hot on m*.
        let w = rows(&sample_weights(&[2], 3, 1e4, Device::Cpu));
        assert_eq!(w[0], vec![0.0, 1.0, 0.0]);
    }

    #[test]
    fn beta_ramps_linearly() {
        assert_eq!(beta_t(10.0, 0, 100), 0.0);
        assert!((beta_t(10.0, 25, 100) - 2.5).abs() < 1e-12);
        assert_eq!(beta_t(10.0, 100, 100), 10.0);
        assert_eq!(beta_t(10.0, 150, 100), 10.0);
    }

    #[test]
    fn exit_simulation_in_both_directions() {
        // Energy exits below τ: sample 0 is confident at layer 2, sample 1 never (leaves at the last layer 3,
        // even though its last-layer signal is below τ: the last layer always answers).
        let energy = vec![vec![0.5, 0.2, 0.1], vec![0.6, 0.5, 0.05]];
        assert_eq!(exit_layers(ExitSignal::Energy, &energy, 0.3), vec![2, 3]);
        assert_eq!(exit_layers(ExitSignal::Energy, &energy, 0.55), vec![1, 2]);
        assert_eq!(exit_layers(ExitSignal::Energy, &energy, 0.0), vec![3, 3]);
        // Max-softmax exits above τ.
        let softmax = vec![vec![0.6, 0.95, 0.99], vec![0.97, 0.7, 0.8]];
        assert_eq!(exit_layers(ExitSignal::MaxSoftmax, &softmax, 0.9), vec![2, 1]);
        assert_eq!(exit_layers(ExitSignal::MaxSoftmax, &softmax, 0.999), vec![3, 3]);
        // Patience exits when the streak reaches τ.
        let patience = vec![vec![0.0, 1.0, 2.0, 3.0], vec![0.0, 0.0, 1.0, 0.0]];
        assert_eq!(exit_layers(ExitSignal::Patience, &patience, 2.0), vec![3, 4]);
        assert_eq!(exit_layers(ExitSignal::Patience, &patience, 1.0), vec![2, 3]);
    }

    #[test]
    fn threshold_range_update() {
        let mut tracker = RangeTracker::default();
        assert_eq!(tracker.range(ThresholdRange::initial(ExitSignal::Energy, 4)), ThresholdRange { lo: 0.0, hi: 1.0 });
        // The last column (final layer) is never counted.
        tracker.observe(&[vec![0.4, 0.3, 0.01], vec![0.2, f32::NAN, 0.99]]);
        tracker.observe(&[vec![0.35, 0.6, 0.0]]);
        assert_eq!(tracker.range(ThresholdRange { lo: 0.0, hi: 1.0 }), ThresholdRange { lo: 0.2, hi: 0.6 });
        assert_eq!(ThresholdRange::initial(ExitSignal::Patience, 6), ThresholdRange { lo: 0.0, hi: 5.0 });
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let taus = ThresholdRange { lo: 0.2, hi: 0.6 }.sample(1000, &mut rng);
        assert_eq!(taus.len(), 1000);
        assert!(taus.iter().all(|t| (0.2..0.6).contains(t)));
        let mean = taus.iter().sum::<f32>() / 1000.0;
        assert!((mean - 0.4).abs() < 0.02, "{mean}");
        assert_eq!(ThresholdRange { lo: 0.3, hi: 0.3 }.sample(2, &mut rng), vec![0.3, 0.3]);
    }

    #[test]
    fn weighted_ce_and_mean_over_thresholds() {
        // 2 samples × 2 exits. CE rows [1, 3] and [2, 4].
        let ce = Tensor::from_slice(&[1.0f32, 3.0, 2.0, 4.0]).view([2, 2]);
        // β = 0: uniform weights → mean over samples of the mean CE = (2 + 3) / 2 = 2.5.
        let w = sample_weights(&[1, 2], 2, 0.0, Device::Cpu);
        assert!((weighted_ce(&ce, &w).double_value(&[]) - 2.5).abs() < 1e-6);
        // Huge β: one-hot at m*. τ = 0.5 on energy signals: sample 0 exits at 1 (CE 1), sample 1 at 2 (CE 4).
        let signals = vec![vec![0.1, 0.9], vec![0.9, 0.9]];
        let l1 = swm_loss(ExitSignal::Energy, &ce, &signals, &[0.5], 1e4).double_value(&[]);
        assert!((l1 - 2.5).abs() < 1e-5, "{l1}");
        // τ = 0.05: both leave at exit 2 → (3 + 4) / 2 = 3.5; the mean over the two τ is 3.0 (Eq. 5).
        let l = swm_loss(ExitSignal::Energy, &ce, &signals, &[0.5, 0.05], 1e4).double_value(&[]);
        assert!((l - 3.0).abs() < 1e-5, "{l}");
    }
}
