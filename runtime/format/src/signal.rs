//! Exit signals: the one definition shared by the trainer, the tools and the runtime.
//!
//! Each signal maps the logits of one exit to a scalar and carries its own exit rule. Energy and entropy grow
//! with sample difficulty (exit when the signal is *below* τ); max-softmax and patience shrink with it (exit when
//! the signal is *above* τ, or when the streak reaches τ for patience).

use crate::settings::OutOfRange;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which exit signal decides when a sample stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitSignal {
    /// Normalized energy, paper Eq. (10)–(11): sigmoid(−logsumexp(z)), in (0, 1).
    Energy,
    /// Entropy of softmax(z) divided by log C, in [0, 1].
    Entropy,
    /// Largest softmax probability, in [1/C, 1].
    MaxSoftmax,
    /// PABEE patience: how many consecutive earlier layers agreed with this layer's argmax.
    Patience,
}

/// On which side of the threshold a sample exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Exit when signal < τ (signal grows with difficulty).
    Below,
    /// Exit when signal > τ (signal shrinks with difficulty); patience exits at signal ≥ τ.
    Above,
}

impl ExitSignal {
    pub const ALL: [ExitSignal; 4] = [Self::Energy, Self::Entropy, Self::MaxSoftmax, Self::Patience];

    pub fn name(self) -> &'static str {
        match self {
            Self::Energy => "energy",
            Self::Entropy => "entropy",
            Self::MaxSoftmax => "max_softmax",
            Self::Patience => "patience",
        }
    }

    pub fn direction(self) -> Direction {
        match self {
            Self::Energy | Self::Entropy => Direction::Below,
            Self::MaxSoftmax | Self::Patience => Direction::Above,
        }
    }

    /// Whether a sample with this signal value leaves at threshold `tau`.
    pub fn meets(self, value: f32, tau: f32) -> bool {
        if value.is_nan() {
            return false;
        }
        match self {
            Self::Energy | Self::Entropy => value < tau,
            Self::MaxSoftmax => value > tau,
            Self::Patience => value >= tau,
        }
    }

    /// Checks a threshold τ for this signal's exit rule. Energy, entropy and max-softmax are normalized to [0, 1],
    /// where both ends mean something (never exit early, always exit at layer 1); a τ outside is one of them in
    /// disguise, most likely a typo. Patience counts how many earlier layers agreed: an integer from 1 to
    /// `num_layers − 1` (the sweep's range; its top never exits early). Without `num_layers` (a config file read
    /// before its package) patience's top is not checked. `setting` names the flag or key in the error.
    pub fn check_threshold(self, setting: &str, tau: f32, num_layers: Option<usize>) -> Result<f32, OutOfRange> {
        let name = self.name();
        match self {
            Self::Patience => {
                let top = num_layers.map(|m| m.saturating_sub(1).max(1));
                let in_range = tau.fract() == 0.0 && tau >= 1.0 && top.is_none_or(|top| tau <= top as f32);
                match top {
                    _ if in_range => Ok(tau),
                    Some(top) => Err(OutOfRange::new(
                        setting,
                        tau,
                        format!("the {name} signal takes an integer τ from 1 to {top} (layers − 1)"),
                    )),
                    None => Err(OutOfRange::new(setting, tau, format!("the {name} signal takes an integer τ ≥ 1"))),
                }
            }
            _ if (0.0..=1.0).contains(&tau) => Ok(tau),
            _ => Err(OutOfRange::new(setting, tau, format!("the {name} signal takes τ from 0 to 1"))),
        }
    }

    /// The signal of one exit's logits, for the stateless signals. Patience needs the previous layers: use
    /// [`SignalTracker`].
    pub fn of_logits(self, logits: &[f32]) -> f32 {
        match self {
            Self::Energy => normalized_energy(logits),
            Self::Entropy => normalized_entropy(logits),
            Self::MaxSoftmax => max_softmax(logits),
            Self::Patience => f32::NAN,
        }
    }

    /// The threshold grid swept by evaluation and calibration for this signal.
    pub fn default_sweep(self, num_layers: usize) -> Vec<f32> {
        match self {
            Self::Patience => (1..num_layers.max(2)).map(|p| p as f32).collect(),
            _ => (0..=20).map(|i| i as f32 * 0.05).collect(),
        }
    }
}

impl fmt::Display for ExitSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ExitSignal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "energy" | "normalized_energy" => Ok(Self::Energy),
            "entropy" => Ok(Self::Entropy),
            "max_softmax" | "softmax" => Ok(Self::MaxSoftmax),
            "patience" | "pabee" => Ok(Self::Patience),
            other => Err(format!("unknown exit signal '{other}' (expected energy, entropy, max_softmax or patience)")),
        }
    }
}

/// logsumexp, shifted by the maximum so that logits of ±100 neither overflow nor underflow.
pub fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    max + logits.iter().map(|&z| (z - max).exp()).sum::<f32>().ln()
}

pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(logits);
    logits.iter().map(|&z| (z - lse).exp()).collect()
}

/// Numerically stable logistic function.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Paper Eq. (11) applied to Eq. (10): (1 + e^{−E})^{−1} with E = −logsumexp(z), i.e. sigmoid(−logsumexp(z)).
pub fn normalized_energy(logits: &[f32]) -> f32 {
    sigmoid(-log_sum_exp(logits))
}

/// Entropy of softmax(z) divided by log C, so that every layer and every task lives in [0, 1].
pub fn normalized_entropy(logits: &[f32]) -> f32 {
    if logits.len() < 2 {
        return 0.0;
    }
    let lse = log_sum_exp(logits);
    // H = −Σ p log p with log p = z − lse computed directly (no log of an underflowed probability).
    let h: f32 = logits
        .iter()
        .map(|&z| {
            let log_p = z - lse;
            -(log_p.exp() * log_p)
        })
        .sum();
    (h / (logits.len() as f32).ln()).clamp(0.0, 1.0)
}

pub fn max_softmax(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (max - log_sum_exp(logits)).exp()
}

pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// Follows one sample through the layers and yields its signal at each, including patience, which depends on
/// the argmax of the earlier layers.
#[derive(Debug, Clone)]
pub struct SignalTracker {
    signal: ExitSignal,
    previous_argmax: Option<usize>,
    streak: u32,
}

impl SignalTracker {
    pub fn new(signal: ExitSignal) -> Self {
        Self { signal, previous_argmax: None, streak: 0 }
    }

    /// The signal at the next layer, given that layer's logits.
    pub fn observe(&mut self, logits: &[f32]) -> f32 {
        match self.signal {
            ExitSignal::Patience => {
                let current = argmax(logits);
                self.streak = match self.previous_argmax {
                    Some(previous) if previous == current => self.streak + 1,
                    _ => 0,
                };
                self.previous_argmax = Some(current);
                self.streak as f32
            }
            other => other.of_logits(logits),
        }
    }
}

/// Which signal decides the exit, at which threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExitPolicy {
    pub signal: ExitSignal,
    pub threshold: f32,
}

/// **The exit decision**, one call per executed exit: the runtime's exit loop, its replay over full-depth logits
/// (calibration, bench, verify), the trainer's evaluation sweep and SWM's simulation all go through
/// [`ExitWalk::observe_signal`]: a sample leaves at the first internal layer whose signal meets τ, else at the last.
#[derive(Debug, Clone)]
pub struct ExitWalk {
    policy: ExitPolicy,
    tracker: SignalTracker,
    num_layers: usize,
    /// The signal at every exit walked so far (NaN for skipped ones); its length is the exit layer once the walk
    /// has stopped.
    pub signals: Vec<f32>,
    /// Exits whose logits were not finite, 1-based.
    pub skipped: Vec<usize>,
    /// The deepest exit with finite logits so far: the one that answers.
    pub answering: Option<usize>,
}

impl ExitWalk {
    pub fn new(policy: ExitPolicy, num_layers: usize) -> Self {
        Self {
            policy,
            tracker: SignalTracker::new(policy.signal),
            num_layers,
            signals: Vec::with_capacity(num_layers),
            skipped: Vec::new(),
            answering: None,
        }
    }

    /// Records exit `m`'s logits; `true` when the sample leaves here. Non-finite logits are skipped: their signal is
    /// NaN, they never trigger an exit and they do not feed the patience streak.
    pub fn observe(&mut self, m: usize, logits: &[f32]) -> bool {
        if logits.iter().any(|z| !z.is_finite()) {
            self.skipped.push(m);
            return self.observe_signal(m, f32::NAN);
        }
        let value = self.tracker.observe(logits);
        self.answering = Some(m);
        self.observe_signal(m, value)
    }

    /// Records exit `m`'s signal, computed elsewhere; `true` when the sample leaves here. NaN never meets τ.
    pub fn observe_signal(&mut self, m: usize, value: f32) -> bool {
        self.signals.push(value);
        m >= self.num_layers || self.policy.signal.meets(value, self.policy.threshold)
    }

    /// The exit layer, 1-based: the number of exits walked.
    pub fn exit_layer(&self) -> usize {
        self.signals.len()
    }
}

/// The exit layer under `policy` of a sample whose every exit's logits `[layer][class]` are known (a full-depth run):
/// the decision the exit loop would have taken, logit by logit.
pub fn exit_layer_of_logits(policy: ExitPolicy, logits: &[Vec<f32>]) -> usize {
    let mut walk = ExitWalk::new(policy, logits.len());
    for (i, z) in logits.iter().enumerate() {
        if walk.observe(i + 1, z) {
            break;
        }
    }
    walk.exit_layer()
}

/// The 1-based exit layer of a sample whose signals at layers 1..=M are given: the first internal layer whose
/// signal meets τ, else the last layer. NaN signals never meet τ.
pub fn exit_layer(signal: ExitSignal, signals: &[f32], tau: f32) -> usize {
    let mut walk = ExitWalk::new(ExitPolicy { signal, threshold: tau }, signals.len());
    for (i, &value) in signals.iter().enumerate() {
        if walk.observe_signal(i + 1, value) {
            break;
        }
    }
    walk.exit_layer()
}

/// The exit layer m* (1-based) of every sample `[sample][layer]` at threshold τ: what SWM simulates at each drawn
/// τ and what the evaluation sweep replays, with the runtime's decision.
pub fn exit_layers(signal: ExitSignal, signals: &[Vec<f32>], tau: f32) -> Vec<usize> {
    signals.iter().map(|row| exit_layer(signal, row, tau)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn energy_matches_hand_values() {
        // logits [0, 0]: lse = ln 2, sigmoid(−ln 2) = 1 / (1 + 2) = 1/3.
        assert!(close(normalized_energy(&[0.0, 0.0]), 1.0 / 3.0, 1e-6));
        // logits [1, 2]: lse = 2 + ln(1 + e^−1) = 2.3132617; sigmoid(−2.3132617) = 0.0900306.
        assert!(close(normalized_energy(&[1.0, 2.0]), 0.090_030_6, 1e-6));
    }

    #[test]
    fn energy_is_stable_at_extreme_logits() {
        // Naively exp(100) overflows f32 to inf; the stable form gives sigmoid(−100) ≈ 3.72e−44 > 0.
        let e = normalized_energy(&[100.0, -100.0]);
        assert!(e.is_finite() && (0.0..1e-40).contains(&e), "{e}");
        // lse(−100, −100) = −100 + ln 2; sigmoid(100 − ln 2) → 1.
        let e = normalized_energy(&[-100.0, -100.0]);
        assert!(close(e, 1.0, 1e-6), "{e}");
    }

    #[test]
    fn entropy_and_softmax_match_hand_values() {
        assert!(close(normalized_entropy(&[0.0, 0.0]), 1.0, 1e-6));
        assert!(close(normalized_entropy(&[3.0, 3.0, 3.0]), 1.0, 1e-6));
        // p = softmax([0, ln 3]) = [0.25, 0.75]; H = 0.5623351 nats; / ln 2 = 0.8112781.
        assert!(close(normalized_entropy(&[0.0, 3f32.ln()]), 0.811_278_1, 1e-5));
        assert!(close(max_softmax(&[0.0, 3f32.ln()]), 0.75, 1e-6));
        assert!(normalized_entropy(&[100.0, -100.0]).abs() < 1e-6);
        assert!(close(max_softmax(&[100.0, -100.0]), 1.0, 1e-6));
    }

    #[test]
    fn directions() {
        assert!(ExitSignal::Energy.meets(0.1, 0.2));
        assert!(!ExitSignal::Energy.meets(0.3, 0.2));
        assert!(ExitSignal::Entropy.meets(0.1, 0.2));
        assert!(ExitSignal::MaxSoftmax.meets(0.9, 0.8));
        assert!(!ExitSignal::MaxSoftmax.meets(0.7, 0.8));
        assert!(ExitSignal::Patience.meets(2.0, 2.0));
        assert!(!ExitSignal::Patience.meets(1.0, 2.0));
        assert!(!ExitSignal::Energy.meets(f32::NAN, 1.0));
    }

    #[test]
    fn thresholds_are_checked_per_signal() {
        for signal in [ExitSignal::Energy, ExitSignal::Entropy, ExitSignal::MaxSoftmax] {
            for tau in [0.0, 0.5, 1.0] {
                assert_eq!(signal.check_threshold("--threshold", tau, Some(6)), Ok(tau));
            }
            for tau in [7.0, -0.1, 1.01, f32::NAN, f32::INFINITY] {
                assert!(signal.check_threshold("--threshold", tau, Some(6)).is_err(), "{signal} {tau}");
            }
        }
        let e = ExitSignal::Energy.check_threshold("--threshold", 7.0, None).unwrap_err();
        assert_eq!(e.to_string(), "--threshold 7 is out of range: the energy signal takes τ from 0 to 1");
        let patience = ExitSignal::Patience;
        assert_eq!(patience.check_threshold("t", 5.0, Some(6)), Ok(5.0));
        assert_eq!(patience.check_threshold("t", 1.0, Some(1)), Ok(1.0));
        for tau in [0.0, 1.5, 6.0, -1.0, f32::NAN] {
            assert!(patience.check_threshold("t", tau, Some(6)).is_err(), "{tau}");
        }
        // Without the package, any positive integer.
        assert_eq!(patience.check_threshold("t", 40.0, None), Ok(40.0));
        assert!(patience.check_threshold("t", 0.5, None).is_err());
        // Every τ of the sweeps is accepted.
        for signal in ExitSignal::ALL {
            for tau in signal.default_sweep(6) {
                assert_eq!(signal.check_threshold("t", tau, Some(6)), Ok(tau), "{signal}");
            }
        }
    }

    #[test]
    fn patience_counts_agreeing_layers() {
        let mut t = SignalTracker::new(ExitSignal::Patience);
        assert_eq!(t.observe(&[1.0, 0.0]), 0.0);
        assert_eq!(t.observe(&[2.0, 0.0]), 1.0);
        assert_eq!(t.observe(&[3.0, 0.0]), 2.0);
        assert_eq!(t.observe(&[0.0, 1.0]), 0.0);
        assert_eq!(t.observe(&[0.0, 5.0]), 1.0);
    }

    #[test]
    fn exit_layer_takes_first_internal_hit_else_last() {
        let s = [0.5, 0.3, 0.1, 0.05];
        assert_eq!(exit_layer(ExitSignal::Energy, &s, 0.4), 2);
        assert_eq!(exit_layer(ExitSignal::Energy, &s, 0.0), 4);
        assert_eq!(exit_layer(ExitSignal::Energy, &s, 1.0), 1);
        // The last layer answers even when its own signal would not meet τ.
        assert_eq!(exit_layer(ExitSignal::MaxSoftmax, &[0.6, 0.7, 0.8], 0.99), 3);
        assert_eq!(exit_layer(ExitSignal::MaxSoftmax, &[0.6, 0.95, 0.8], 0.9), 2);
    }

    #[test]
    fn names_round_trip() {
        for s in ExitSignal::ALL {
            assert_eq!(s.name().parse::<ExitSignal>().unwrap(), s);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
        }
        assert!("bogus".parse::<ExitSignal>().is_err());
    }
}
