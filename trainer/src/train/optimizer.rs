//! AdamW, gradient clipping and the linear learning-rate schedule.
//!
//! tch's `nn::AdamW` wraps libtorch's optimizer but gives no access to its moment buffers, so a run resumed
//! from a checkpoint would restart Adam from zero moments. This AdamW keeps its state as named tensors that
//! go into the checkpoint (`optimizer.safetensors`), and follows `torch.optim.AdamW`'s single-tensor update
//! operation for operation, so it computes the same steps as the reference's PyTorch optimizer.

use crate::error::{Result, TrainerError};
use crate::model::checkpoint::named_variables;
use crate::model::MultiExitBert;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tch::{Kind, Tensor};

/// AdamW's constants; the defaults are PyTorch's (and the reference's) except the weight decay, which the
/// reference sets to 0. Also the `train` command's flags for them (flattened into its arguments).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct AdamWConfig {
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Learning-rate multiplier of the exit classifiers and the pooler ([`is_head`]). They start from random
    /// weights (a sentence-embedding backbone ships no trained pooler), and at the encoder's rate a linear head on a
    /// shallow layer barely moves in one epoch: the deep exits then learn through the encoder and the shallow ones
    /// stay at chance. 1 is the reference's single rate.
    #[serde(default = "one")]
    #[arg(
        long,
        default_value_t = 1.0,
        help = "Learning-rate multiplier of the exit classifiers and the pooler (randomly initialized heads)"
    )]
    pub head_lr_scale: f64,
    #[arg(long = "adam-beta1", value_name = "ADAM_BETA1", default_value_t = 0.9)]
    pub beta1: f64,
    #[arg(long = "adam-beta2", value_name = "ADAM_BETA2", default_value_t = 0.999)]
    pub beta2: f64,
    #[arg(long = "adam-eps", value_name = "ADAM_EPS", default_value_t = 1e-8)]
    pub eps: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, head_lr_scale: 1.0 }
    }
}

/// The parameters that sit on top of the encoder: the exit classifiers and the pooler(s).
pub fn is_head(name: &str) -> bool {
    name.starts_with("exits.") || name.starts_with("pooler.")
}

struct Param {
    name: String,
    var: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// HF's run_glue exempts biases and LayerNorm weights from weight decay; so do we.
    decay: bool,
    /// Multiplier of the scheduled learning rate for this parameter.
    lr_scale: f64,
}

pub struct AdamW {
    config: AdamWConfig,
    params: Vec<Param>,
    /// Number of updates taken (Adam's t, for the bias corrections).
    steps: i64,
}

impl AdamW {
    /// Optimizes every trainable variable of the model.
    pub fn new(model: &MultiExitBert, config: AdamWConfig) -> Self {
        Self::from_params(named_variables(model), config)
    }

    /// Optimizes the given named variables (sorted by the caller for a reproducible order).
    pub fn from_params(named: Vec<(String, Tensor)>, config: AdamWConfig) -> Self {
        let params = named
            .into_iter()
            .filter(|(_, v)| v.requires_grad())
            .map(|(name, var)| Param {
                decay: !(name.ends_with(".bias") || name.ends_with("LayerNorm.weight")),
                lr_scale: if is_head(&name) { config.head_lr_scale } else { 1.0 },
                exp_avg: var.zeros_like().detach(),
                exp_avg_sq: var.zeros_like().detach(),
                name,
                var,
            })
            .collect();
        Self { config, params, steps: 0 }
    }

    pub fn steps(&self) -> i64 {
        self.steps
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.var.zero_grad();
        }
    }

    /// Scales all gradients so that their global L2 norm is at most `max_norm` (torch's
    /// `clip_grad_norm_`); returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        tch::no_grad(|| {
            let norms: Vec<Tensor> = self
                .params
                .iter()
                .map(|p| p.var.grad())
                .filter(Tensor::defined)
                .map(|g| g.norm().to_kind(Kind::Float))
                .collect();
            if norms.is_empty() {
                return 0.0;
            }
            let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
            let coef = max_norm / (total + 1e-6);
            if coef < 1.0 {
                for p in &self.params {
                    let mut g = p.var.grad();
                    if g.defined() {
                        let _ = g.g_mul_scalar_(coef);
                    }
                }
            }
            total
        })
    }

    /// One AdamW update at learning rate `lr` (torch.optim.AdamW, amsgrad off).
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.steps as i32);
        let bias2_sqrt = (1.0 - c.beta2.powi(self.steps as i32)).sqrt();
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.var.grad();
                if !grad.defined() {
                    continue;
                }
                let lr = lr * p.lr_scale;
                let step_size = lr / bias1;
                if c.weight_decay > 0.0 && p.decay {
                    let _ = p.var.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                let _ = p.exp_avg.lerp_(&grad, 1.0 - c.beta1);
                let _ = p.exp_avg_sq.g_mul_scalar_(c.beta2);
                let _ = p.exp_avg_sq.addcmul_(&grad, &(&grad * (1.0 - c.beta2)));
                let denom = p.exp_avg_sq.sqrt() / bias2_sqrt + c.eps;
                let _ = p.var.addcdiv_(&(&p.exp_avg * -step_size), &denom);
            }
        });
    }

    /// The moments as named tensors (`exp_avg.<param>`, `exp_avg_sq.<param>`) for the checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .flat_map(|p| {
                [
                    (format!("exp_avg.{}", p.name), p.exp_avg.shallow_clone()),
                    (format!("exp_avg_sq.{}", p.name), p.exp_avg_sq.shallow_clone()),
                ]
            })
            .collect()
    }

    /// Restores the moments written by [`AdamW::state_tensors`] and the update count.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: i64) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for p in &mut self.params {
                for (prefix, target) in [("exp_avg", &mut p.exp_avg), ("exp_avg_sq", &mut p.exp_avg_sq)] {
                    let key = format!("{prefix}.{}", p.name);
                    let value = tensors
                        .get(&key)
                        .ok_or_else(|| TrainerError::Invalid(format!("optimizer state lacks '{key}'")))?;
                    if value.size() != target.size() {
                        return Err(TrainerError::Invalid(format!(
                            "optimizer state '{key}' has shape {:?}, expected {:?}",
                            value.size(),
                            target.size()
                        )));
                    }
                    target.f_copy_(value)?;
                }
            }
            Ok(())
        })?;
        self.steps = steps;
        Ok(())
    }
}

/// The linear schedule of HF's `get_linear_schedule_with_warmup`: the learning rate after `step` completed
/// optimizer steps rises linearly over `warmup` steps, then decays linearly to 0 at `total`.
pub fn linear_lr(base: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    let remaining = total.saturating_sub(step) as f64;
    base * (remaining / total.saturating_sub(warmup).max(1) as f64).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_adamw_steps_by_hand() {
        // Step 1: m̂ = g, v̂ = g², so the update is lr·g/(|g| + ε) ≈ lr·sign(g), whatever |g|.
        let w = Tensor::from_slice(&[1.0f32, 1.0]).set_requires_grad(true);
        let mut opt = AdamW::from_params(vec![("w".into(), w.shallow_clone())], AdamWConfig::default());
        let loss = (&w * Tensor::from_slice(&[3.0f32, -0.5])).sum(Kind::Float);
        loss.backward();
        assert!((opt.clip_grad_norm(100.0) - (9.0f64 + 0.25).sqrt()).abs() < 1e-5);
        opt.step(0.1);
        let v: Vec<f32> = Vec::try_from(&w.detach()).unwrap();
        assert!((v[0] - 0.9).abs() < 1e-6 && (v[1] - 1.1).abs() < 1e-6, "{v:?}");
        // Clipping scales the gradient to the requested norm.
        opt.zero_grad();
        let loss = (&w * Tensor::from_slice(&[3.0f32, 4.0])).sum(Kind::Float);
        loss.backward();
        assert!((opt.clip_grad_norm(1.0) - 5.0).abs() < 1e-5);
        let g: Vec<f32> = Vec::try_from(&w.grad()).unwrap();
        assert!((g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5, "{g:?}");
        // The state round-trips.
        let state: HashMap<String, Tensor> = opt.state_tensors().into_iter().collect();
        assert!(state.contains_key("exp_avg.w") && state.contains_key("exp_avg_sq.w"));
        let mut other = AdamW::from_params(vec![("w".into(), w.shallow_clone())], AdamWConfig::default());
        other.load_state(&state, opt.steps()).unwrap();
        assert_eq!(other.steps(), 1);
        assert!(other.state_tensors()[0].1.equal(&state["exp_avg.w"]));
        // Weight decay shrinks decayed parameters only (not biases).
        let cfg = AdamWConfig { weight_decay: 0.5, ..Default::default() };
        let bias = Tensor::from_slice(&[2.0f32]).set_requires_grad(true);
        let mut wd = AdamW::from_params(vec![("l.bias".into(), bias.shallow_clone())], cfg);
        bias.sum(Kind::Float).backward();
        wd.step(0.1);
        assert!((bias.double_value(&[0]) - 1.9).abs() < 1e-6);
    }

    #[test]
    fn head_parameters_step_at_the_scaled_rate() {
        // First step ≈ lr·sign(g): the head moves 10× as far as the encoder weight.
        let encoder = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let head = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let named = vec![
            ("encoder.layer.0.attention.self.query.weight".into(), encoder.shallow_clone()),
            ("exits.0.classifier.weight".into(), head.shallow_clone()),
        ];
        let mut opt = AdamW::from_params(named, AdamWConfig { head_lr_scale: 10.0, ..Default::default() });
        (&encoder + &head).sum(Kind::Float).backward();
        opt.step(0.01);
        assert!((encoder.double_value(&[0]) - 0.99).abs() < 1e-6);
        assert!((head.double_value(&[0]) - 0.9).abs() < 1e-6);
        assert!(is_head("pooler.dense.weight") && is_head("exits.3.pooler.dense.bias"));
        assert!(!is_head("embeddings.word_embeddings.weight"));
    }

    #[test]
    fn linear_schedule() {
        assert_eq!(linear_lr(1.0, 0, 0, 10), 1.0);
        assert!((linear_lr(1.0, 5, 0, 10) - 0.5).abs() < 1e-12);
        assert_eq!(linear_lr(1.0, 10, 0, 10), 0.0);
        assert!((linear_lr(1.0, 1, 2, 10) - 0.5).abs() < 1e-12);
        assert!((linear_lr(1.0, 6, 2, 10) - 0.5).abs() < 1e-12);
    }
}
