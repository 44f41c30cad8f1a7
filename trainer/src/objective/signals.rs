//! Exit signals as differentiable tensor functions of a batch of logits, so that OSC (Eq. 6–8) can push
//! gradients through them. They are the tensor twins of `cosee_format::signal` (one scalar per sample);
//! `tests::agree_with_runtime` holds them to the runtime's values, extreme logits included.

use cosee_format::signal::{ExitSignal, SignalTracker};
use tch::{Kind, Tensor};

/// The signal of every sample at one exit: logits `[batch, C]` → `[batch]`. `None` for patience, which is
/// not a function of one layer's logits (see [`patience`]).
pub fn signal(signal: ExitSignal, logits: &Tensor) -> Option<Tensor> {
    match signal {
        ExitSignal::Energy => Some(normalized_energy(logits)),
        ExitSignal::Entropy => Some(normalized_entropy(logits)),
        ExitSignal::MaxSoftmax => Some(max_softmax(logits)),
        ExitSignal::Patience => None,
    }
}

/// Paper Eq. (10)–(11): E = −logsumexp(f), E_norm = (1 + e^{−E})^{−1} = sigmoid(−logsumexp(f)).
/// Both logsumexp and sigmoid are computed stably by libtorch, so logits of ±100 stay finite.
pub fn normalized_energy(logits: &Tensor) -> Tensor {
    (-logits.to_kind(Kind::Float).logsumexp([-1], false)).sigmoid()
}

/// Entropy of softmax(f) over log C, clamped to [0, 1] like the runtime. log p comes from log_softmax, never
/// from the log of an underflowed probability.
pub fn normalized_entropy(logits: &Tensor) -> Tensor {
    let classes = logits.size().last().copied().unwrap_or(1);
    let log_p = logits.to_kind(Kind::Float).log_softmax(-1, Kind::Float);
    let h = -(log_p.exp() * &log_p).sum_dim_intlist(-1i64, false, Kind::Float);
    if classes < 2 {
        return h.zeros_like();
    }
    (h / (classes as f64).ln()).clamp(0.0, 1.0)
}

/// Largest softmax probability, exp(max f − logsumexp f).
pub fn max_softmax(logits: &Tensor) -> Tensor {
    let logits = logits.to_kind(Kind::Float);
    let (max, _) = logits.max_dim(-1, false);
    (max - logits.logsumexp([-1], false)).exp()
}

/// PABEE patience of every sample at every layer, `[sample][layer]`: how many consecutive earlier layers
/// agreed with this layer's argmax. Computed with the runtime's own [`SignalTracker`] so that training simulates
/// exactly the rule the runtime applies. It is a count, so it carries no gradient.
pub fn patience(per_exit_logits: &[Vec<Vec<f32>>]) -> Vec<Vec<f32>> {
    let samples = per_exit_logits.first().map_or(0, Vec::len);
    (0..samples)
        .map(|n| {
            let mut tracker = SignalTracker::new(ExitSignal::Patience);
            per_exit_logits.iter().map(|exit| tracker.observe(&exit[n])).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cosee_format::signal as rt;
    use rand::{Rng, SeedableRng};

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.contiguous().view(-1)).unwrap()
    }

    /// Random logits of 2, 3 and 5 classes, with rows of ±100 and of large equal values mixed in.
    fn test_logits(classes: usize) -> Vec<Vec<f32>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(classes as u64);
        let mut rows: Vec<Vec<f32>> =
            (0..200).map(|_| (0..classes).map(|_| rng.random_range(-8.0f32..8.0)).collect()).collect();
        rows.push((0..classes).map(|c| if c == 0 { 100.0 } else { -100.0 }).collect());
        rows.push(vec![-100.0; classes]);
        rows.push(vec![100.0; classes]);
        rows.push((0..classes).map(|c| if c % 2 == 0 { 100.0 } else { -100.0 }).collect());
        rows.push(vec![0.0; classes]);
        rows
    }

    #[test]
    fn agree_with_runtime() {
        for classes in [2usize, 3, 5] {
            let rows = test_logits(classes);
            let flat: Vec<f32> = rows.iter().flatten().copied().collect();
            let logits = Tensor::from_slice(&flat).view([rows.len() as i64, classes as i64]);
            for s in [ExitSignal::Energy, ExitSignal::Entropy, ExitSignal::MaxSoftmax] {
                let got = values(&signal(s, &logits).unwrap());
                for (row, g) in rows.iter().zip(&got) {
                    let want = s.of_logits(row);
                    let tol = 1e-5 + 1e-5 * want.abs();
                    assert!(g.is_finite(), "{s} of {row:?} is {g}");
                    assert!((g - want).abs() <= tol, "{s} of {row:?}: tensor {g} vs runtime {want}");
                }
            }
        }
    }

    #[test]
    fn hand_values() {
        let logits = Tensor::from_slice(&[0.0f32, 0.0, 1.0, 2.0, 0.0, 3f32.ln()]).view([3, 2]);
        let e = values(&normalized_energy(&logits));
        assert!((e[0] - 1.0 / 3.0).abs() < 1e-6 && (e[1] - 0.090_030_6).abs() < 1e-6);
        let h = values(&normalized_entropy(&logits));
        assert!((h[0] - 1.0).abs() < 1e-6 && (h[2] - 0.811_278_1).abs() < 1e-5);
        let p = values(&max_softmax(&logits));
        assert!((p[0] - 0.5).abs() < 1e-6 && (p[2] - 0.75).abs() < 1e-6);
    }

    #[test]
    fn gradients_flow_through_signals() {
        let logits = Tensor::from_slice(&[0.3f32, -0.2, 1.5, 0.1]).view([2, 2]).set_requires_grad(true);
        for s in [ExitSignal::Energy, ExitSignal::Entropy, ExitSignal::MaxSoftmax] {
            let out = signal(s, &logits).unwrap().sum(Kind::Float);
            let grads = Tensor::run_backward(&[out], &[&logits], false, false);
            assert!(grads[0].abs().sum(Kind::Float).double_value(&[]) > 0.0, "{s} has no gradient");
        }
        assert!(signal(ExitSignal::Patience, &logits).is_none());
    }

    #[test]
    fn patience_matches_the_runtime_tracker() {
        // 3 exits, 2 samples. Sample 0 keeps class 0; sample 1 flips at exit 2 and keeps it.
        let exits = vec![
            vec![vec![1.0, 0.0], vec![1.0, 0.0]],
            vec![vec![2.0, 0.0], vec![0.0, 1.0]],
            vec![vec![3.0, 0.0], vec![0.0, 2.0]],
        ];
        assert_eq!(patience(&exits), vec![vec![0.0, 1.0, 2.0], vec![0.0, 0.0, 1.0]]);
        assert_eq!(rt::exit_layer(ExitSignal::Patience, &patience(&exits)[0], 1.0), 2);
    }
}
