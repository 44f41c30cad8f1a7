//! Per-exit training diagnostics, summed over an epoch and written to `metrics.jsonl` at its end: how much of
//! the classification loss each exit receives (SWM's mean weight), and how far apart its signal sits on the
//! samples it gets right ("easy") and wrong ("hard") — the gap OSC widens. Together with the dev DIS they show
//! what each objective does to each exit, which the paper's Fig. 5 reads off for its own models.

use serde::{Deserialize, Serialize};

/// Sums of one epoch (carried in the training state, so a resumed epoch reports the same numbers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExitDiagnostics {
    /// Samples observed.
    pub samples: usize,
    /// Σ over samples of each exit's mean loss weight.
    pub weight_sum: Vec<f64>,
    pub easy_signal_sum: Vec<f64>,
    pub easy_count: Vec<usize>,
    pub hard_signal_sum: Vec<f64>,
    pub hard_count: Vec<usize>,
}

/// What one exit saw in one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitSummary {
    pub exit: usize,
    pub mean_weight: f64,
    /// Share of samples this exit got right.
    pub easy_share: f64,
    pub mean_signal_easy: Option<f64>,
    pub mean_signal_hard: Option<f64>,
}

impl ExitDiagnostics {
    /// Records one micro-batch: `signals` and `correct` are `[sample][exit]`, `exit_weights` the micro-batch's
    /// mean loss weight per exit.
    pub fn observe(&mut self, signals: &[Vec<f32>], correct: &[Vec<bool>], exit_weights: &[f64]) {
        let exits = exit_weights.len();
        if self.weight_sum.len() != exits {
            *self = Self {
                weight_sum: vec![0.0; exits],
                easy_signal_sum: vec![0.0; exits],
                easy_count: vec![0; exits],
                hard_signal_sum: vec![0.0; exits],
                hard_count: vec![0; exits],
                ..Self::default()
            };
        }
        let n = signals.len();
        self.samples += n;
        for (sum, w) in self.weight_sum.iter_mut().zip(exit_weights) {
            *sum += w * n as f64;
        }
        for (row, right) in signals.iter().zip(correct) {
            for (m, (&s, &ok)) in row.iter().zip(right).enumerate().take(exits) {
                if !s.is_finite() {
                    continue;
                }
                if ok {
                    self.easy_signal_sum[m] += s as f64;
                    self.easy_count[m] += 1;
                } else {
                    self.hard_signal_sum[m] += s as f64;
                    self.hard_count[m] += 1;
                }
            }
        }
    }

    pub fn summary(&self) -> Vec<ExitSummary> {
        let mean = |sum: f64, n: usize| (n > 0).then(|| sum / n as f64);
        (0..self.weight_sum.len())
            .map(|m| {
                let seen = self.easy_count[m] + self.hard_count[m];
                ExitSummary {
                    exit: m + 1,
                    mean_weight: self.weight_sum[m] / self.samples.max(1) as f64,
                    easy_share: self.easy_count[m] as f64 / seen.max(1) as f64,
                    mean_signal_easy: mean(self.easy_signal_sum[m], self.easy_count[m]),
                    mean_signal_hard: mean(self.hard_signal_sum[m], self.hard_count[m]),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_by_hand() {
        let mut d = ExitDiagnostics::default();
        // Micro-batch 1: 2 samples, weights (0.75, 0.25). Exit 1: right at 0.2, wrong at 0.6.
        d.observe(&[vec![0.2, 0.1], vec![0.6, 0.3]], &[vec![true, true], vec![false, true]], &[0.75, 0.25]);
        // Micro-batch 2: 1 sample, weights (0.5, 0.5), wrong at both exits.
        d.observe(&[vec![0.8, 0.5]], &[vec![false, false]], &[0.5, 0.5]);
        let s = d.summary();
        // Exit 1 weight: (2·0.75 + 0.5) / 3 = 2/3; exit 2: (2·0.25 + 0.5) / 3 = 1/3.
        assert!((s[0].mean_weight - 2.0 / 3.0).abs() < 1e-12 && (s[1].mean_weight - 1.0 / 3.0).abs() < 1e-12);
        assert!((s[0].easy_share - 1.0 / 3.0).abs() < 1e-12);
        assert!((s[0].mean_signal_easy.unwrap() - 0.2).abs() < 1e-6);
        assert!((s[0].mean_signal_hard.unwrap() - 0.7).abs() < 1e-6);
        assert!((s[1].mean_signal_easy.unwrap() - 0.2).abs() < 1e-6);
        assert!((s[1].mean_signal_hard.unwrap() - 0.5).abs() < 1e-6);
        assert_eq!(ExitDiagnostics::default().summary(), vec![]);
    }
}
