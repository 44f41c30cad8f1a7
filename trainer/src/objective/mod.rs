//! The training objectives: COSEE (paper Eq. 9, SWM + OSC) and the baselines of the ablation (Figure 4).
//!
//! | `--objective`   | classification term                   | + α·L_OSC |
//! |-----------------|---------------------------------------|-----------|
//! | `cosee`         | SWM, Eq. (2)–(5)                      | yes       |
//! | `swm`           | SWM, Eq. (2)–(5)                      | no        |
//! | `osc`           | Eq. (1), uniform weights              | yes       |
//! | `conventional`  | Eq. (1), uniform weights              | no        |
//! | `pabee`         | Eq. (1), w_m ∝ m (PABEE)              | no        |

pub mod osc;
pub mod signals;
pub mod swm;

use cosee_format::signal::ExitSignal;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveKind {
    Cosee,
    Swm,
    Osc,
    Conventional,
    Pabee,
}

impl ObjectiveKind {
    pub const ALL: [Self; 5] = [Self::Cosee, Self::Swm, Self::Osc, Self::Conventional, Self::Pabee];

    pub fn name(self) -> &'static str {
        match self {
            Self::Cosee => "cosee",
            Self::Swm => "swm",
            Self::Osc => "osc",
            Self::Conventional => "conventional",
            Self::Pabee => "pabee",
        }
    }

    pub fn uses_swm(self) -> bool {
        matches!(self, Self::Cosee | Self::Swm)
    }

    pub fn uses_osc(self) -> bool {
        matches!(self, Self::Cosee | Self::Osc)
    }
}

impl fmt::Display for ObjectiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ObjectiveKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s.to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|k| k.name() == key)
            .ok_or_else(|| format!("unknown objective '{s}' (expected cosee, swm, osc, conventional or pabee)"))
    }
}

/// Every hyper-parameter of the objective, with the paper's reference values as defaults; also the `train`
/// command's flags for them (flattened into its arguments, so that each is defined once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct ObjectiveConfig {
    #[arg(
        long = "objective",
        value_name = "OBJECTIVE",
        default_value = "cosee",
        help = "cosee (SWM+OSC), swm, osc, conventional (Eq. 1, uniform) or pabee (Eq. 1, w_m ∝ m)"
    )]
    pub kind: ObjectiveKind,
    /// The exit signal SWM simulates and OSC calibrates (paper: normalized energy).
    #[arg(
        long,
        default_value = "energy",
        help = "Exit signal: energy (paper default), entropy, max_softmax, patience"
    )]
    pub signal: ExitSignal,
    /// K, thresholds per optimizer step, Eq. (5).
    #[arg(long, default_value_t = 5, help = "K: SWM thresholds per optimizer step (Eq. 5)")]
    pub k: usize,
    /// β0 of Eq. (4).
    #[arg(long, default_value_t = 10.0, help = "β0 of the SWM decay factor (Eq. 4)")]
    pub beta0: f64,
    /// α of Eq. (9).
    #[arg(long, default_value_t = 0.1, help = "α: weight of the OSC loss (Eq. 9)")]
    pub alpha: f64,
    /// ε, the OSC margin of Eq. (7)/(8).
    #[arg(long, default_value_t = 0.3, help = "ε: OSC margin (Eq. 7)")]
    pub epsilon: f64,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        Self { kind: ObjectiveKind::Cosee, signal: ExitSignal::Energy, k: 5, beta0: 10.0, alpha: 0.1, epsilon: 0.3 }
    }
}

/// One micro-batch's loss and the numbers the training loop keeps.
#[derive(Debug)]
pub struct LossOutput {
    /// The loss to back-propagate, Eq. (9) (or the baseline's).
    pub total: Tensor,
    /// The classification term (detached).
    pub ce: f64,
    /// The OSC term before α (detached), when used.
    pub osc: Option<f64>,
    /// The detached signals `[sample][layer]`, for the threshold range of the next epoch (SWM only).
    pub signals: Option<Vec<Vec<f32>>>,
    /// The mean loss weight of each exit in this micro-batch (SWM: over samples and thresholds; Eq. (1): its
    /// fixed weights), for the training diagnostics.
    pub exit_weights: Vec<f64>,
}

impl ObjectiveConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.kind.uses_osc() && self.signal == ExitSignal::Patience {
            return Err(format!(
                "objective '{}' includes OSC, which pushes gradients through the signal; patience is a count of \
                 agreeing layers with no gradient. Use --objective swm (or conventional/pabee) with patience",
                self.kind
            ));
        }
        if self.kind.uses_swm() && self.k == 0 {
            return Err("SWM needs K ≥ 1 thresholds per step".into());
        }
        if self.beta0 < 0.0 || self.alpha < 0.0 || self.epsilon < 0.0 {
            return Err("β0, α and ε must be non-negative".into());
        }
        Ok(())
    }

    /// The loss of one micro-batch. `logits[m]` is exit m+1's `[N, C]`, `labels` `[N]` i64; `thresholds` and
    /// `beta` are this optimizer step's SWM draw and β_t (ignored by the Eq. (1) objectives).
    pub fn loss(&self, logits: &[Tensor], labels: &Tensor, thresholds: &[f32], beta: f64) -> crate::Result<LossOutput> {
        let ce = per_exit_ce(logits, labels);
        let num_layers = logits.len();
        let signal_tensors: Vec<Tensor> = if self.kind.uses_osc() {
            logits
                .iter()
                .map(|l| signals::signal(self.signal, l).expect("validated: OSC signals are differentiable"))
                .collect()
        } else {
            Vec::new()
        };

        let mut kept_signals = None;
        let exit_weights;
        let ce_loss = if self.kind.uses_swm() {
            let values = self.detached_signals(logits, &signal_tensors)?;
            let loss = swm::swm_loss(self.signal, &ce, &values, thresholds, beta);
            exit_weights = swm::mean_exit_weights(self.signal, &values, thresholds, beta);
            kept_signals = Some(values);
            loss
        } else {
            let weights = match self.kind {
                ObjectiveKind::Pabee => static_weights(StaticWeights::Pabee, num_layers),
                _ => static_weights(StaticWeights::Uniform, num_layers),
            };
            let loss = eq1_loss(&ce, &weights);
            exit_weights = weights;
            loss
        };

        let (total, osc_value) = if self.kind.uses_osc() {
            let osc = osc::osc_loss(self.signal, &signal_tensors, logits, labels, self.epsilon);
            let value = osc.double_value(&[]);
            (&ce_loss + osc * self.alpha, Some(value))
        } else {
            (ce_loss.shallow_clone(), None)
        };
        Ok(LossOutput { ce: ce_loss.double_value(&[]), total, osc: osc_value, signals: kept_signals, exit_weights })
    }

    /// The detached signal of every sample at every exit, `[sample][layer]`, whatever the objective.
    pub fn signal_rows(&self, logits: &[Tensor]) -> crate::Result<Vec<Vec<f32>>> {
        self.detached_signals(logits, &[])
    }

    /// The batch's signals as numbers `[sample][layer]`: from the tensors already computed for OSC, else
    /// from the logits (patience from the argmax streaks, with the runtime's tracker).
    fn detached_signals(&self, logits: &[Tensor], computed: &[Tensor]) -> crate::Result<Vec<Vec<f32>>> {
        if self.signal == ExitSignal::Patience {
            let per_exit =
                logits.iter().map(|l| crate::model::tensor_to_rows(&l.detach())).collect::<crate::Result<Vec<_>>>()?;
            return Ok(signals::patience(&per_exit));
        }
        let columns: Vec<Tensor> = if computed.is_empty() {
            logits.iter().map(|l| signals::signal(self.signal, &l.detach()).expect("stateless signal")).collect()
        } else {
            computed.iter().map(Tensor::detach).collect()
        };
        crate::model::tensor_to_rows(&Tensor::stack(&columns, 1))
    }
}

/// Per-sample cross-entropy of every exit, `[N, M]`.
pub fn per_exit_ce(logits: &[Tensor], labels: &Tensor) -> Tensor {
    let columns: Vec<Tensor> = logits
        .iter()
        .map(|l| -l.log_softmax(-1, Kind::Float).gather(1, &labels.unsqueeze(1), false).squeeze_dim(1))
        .collect();
    Tensor::stack(&columns, 1)
}

/// The fixed per-exit weights of the conventional objective, Eq. (1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaticWeights {
    /// w_m = 1/M.
    Uniform,
    /// w_m = m / Σ m' (PABEE's weighted average, deeper exits count more).
    Pabee,
}

/// Eq. (1) weights, normalised to sum to 1 (as PABEE's reference code divides by Σ w), so the loss has the
/// same scale as SWM's (whose per-sample weights also sum to 1) and gradient clipping acts alike on both.
pub fn static_weights(kind: StaticWeights, num_layers: usize) -> Vec<f64> {
    let raw: Vec<f64> = (1..=num_layers)
        .map(|m| match kind {
            StaticWeights::Uniform => 1.0,
            StaticWeights::Pabee => m as f64,
        })
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|w| w / sum).collect()
}

/// Paper Eq. (1): L = Σ_m w_m·L^{(m)}, with L^{(m)} the batch-mean cross-entropy of exit m.
pub fn eq1_loss(ce: &Tensor, weights: &[f64]) -> Tensor {
    let w: Vec<f32> = weights.iter().map(|&w| w as f32).collect();
    let w = Tensor::from_slice(&w).to_device(ce.device());
    (ce.mean_dim(0i64, false, Kind::Float) * w).sum(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eq1_weights() {
        assert_eq!(static_weights(StaticWeights::Uniform, 4), vec![0.25; 4]);
        let p = static_weights(StaticWeights::Pabee, 3);
        assert!((p[0] - 1.0 / 6.0).abs() < 1e-12 && (p[2] - 0.5).abs() < 1e-12);
        // CE rows [1, 3], [3, 5]: exit means [2, 4]; uniform → 3; PABEE (1·2 + 2·4)/3 = 10/3.
        let ce = Tensor::from_slice(&[1.0f32, 3.0, 3.0, 5.0]).view([2, 2]);
        assert!((eq1_loss(&ce, &static_weights(StaticWeights::Uniform, 2)).double_value(&[]) - 3.0).abs() < 1e-6);
        let l = eq1_loss(&ce, &static_weights(StaticWeights::Pabee, 2)).double_value(&[]);
        assert!((l - 10.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn per_exit_ce_by_hand() {
        // logits [0, 0] → CE ln 2 for either label; [ln 3, 0] with label 0 → −ln(3/4).
        let l = Tensor::from_slice(&[0.0f32, 0.0, 3f32.ln(), 0.0]).view([2, 2]);
        let labels = Tensor::from_slice(&[1i64, 0]);
        let ce = crate::model::tensor_to_rows(&per_exit_ce(&[l], &labels)).unwrap();
        assert!((ce[0][0] - 2f32.ln()).abs() < 1e-6);
        assert!((ce[1][0] + 0.75f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn objectives_compose() {
        let logits = vec![
            Tensor::from_slice(&[2.0f32, 0.0, 2.0, 0.0]).view([2, 2]),
            Tensor::from_slice(&[2.0f32, 0.0, 0.0, 2.0]).view([2, 2]),
        ];
        let labels = Tensor::from_slice(&[0i64, 1]);
        let mut cfg = ObjectiveConfig { kind: ObjectiveKind::Conventional, ..Default::default() };
        let conventional = cfg.loss(&logits, &labels, &[], 0.0).unwrap();
        assert!(conventional.osc.is_none() && conventional.signals.is_none());
        cfg.kind = ObjectiveKind::Cosee;
        // β = 0 makes SWM uniform, so COSEE = conventional + α·OSC exactly.
        let cosee = cfg.loss(&logits, &labels, &[0.3, 0.7], 0.0).unwrap();
        let osc = cosee.osc.unwrap();
        assert!(osc > 0.0);
        let want = conventional.total.double_value(&[]) + 0.1 * osc;
        assert!((cosee.total.double_value(&[]) - want).abs() < 1e-6);
        assert_eq!(cosee.signals.as_ref().unwrap().len(), 2);
        cfg.signal = ExitSignal::Patience;
        assert!(cfg.validate().is_err());
        cfg.kind = ObjectiveKind::Swm;
        cfg.validate().unwrap();
        let swm = cfg.loss(&logits, &labels, &[1.0], 0.0).unwrap();
        assert_eq!(swm.signals.unwrap(), vec![vec![0.0, 1.0], vec![0.0, 0.0]]);
        assert_eq!("PABEE".parse::<ObjectiveKind>().unwrap(), ObjectiveKind::Pabee);
    }
}
