//! Online Signal Calibration (paper §3.3, Eq. 6–8).
//!
//! At every internal exit the batch is split by whether that exit predicts correctly ("easy") or not
//! ("hard"), and a hinge pushes the mean signal of the two groups at least ε apart in the signal's own
//! direction. The loss is built from the signal tensors themselves, so its gradient reaches the logits.

use cosee_format::signal::{Direction, ExitSignal};
use tch::{Kind, Tensor};

/// Paper Eq. (7) (signals that grow with difficulty: energy, entropy):
/// L^{(m)} = max(0, mean S_easy − mean S_hard + ε);
/// Eq. (8) (signals that shrink with difficulty: max-softmax): max(0, mean S_hard − mean S_easy + ε).
/// `signal` `[N]`, `correct` bool `[N]`. `None` when the batch is all easy or all hard at this exit: one
/// mean would be of nothing, so the layer is skipped.
pub fn layer_loss(direction: Direction, signal: &Tensor, correct: &Tensor, epsilon: f64) -> Option<Tensor> {
    let easy_count = correct.to_kind(Kind::Int64).sum(Kind::Int64).int64_value(&[]);
    let total = correct.size()[0];
    if easy_count == 0 || easy_count == total {
        return None;
    }
    let easy = correct.to_kind(Kind::Float);
    let hard = 1.0 - &easy;
    // Means through masks rather than masked_select: same value, and no data-dependent shapes on the GPU.
    let mean_easy = (signal * &easy).sum(Kind::Float) / easy_count as f64;
    let mean_hard = (signal * &hard).sum(Kind::Float) / (total - easy_count) as f64;
    let gap = match direction {
        Direction::Below => mean_easy - mean_hard,
        Direction::Above => mean_hard - mean_easy,
    };
    Some((gap + epsilon).relu())
}

/// Paper Eq. (6): the mean of L^{(m)} over the internal exits (the last layer never has to decide whether to
/// exit). A layer where the batch is all easy or all hard has no L^{(m)} and is left out of the mean, as the
/// reference code does (`calculate_R` averages the layers it computed); Eq. (6) as printed divides by M−1
/// whatever was skipped, which weakens OSC exactly when the shallow exits are all wrong or the deep ones all
/// right. With every layer skipped the loss is 0.
///
/// `signals[m]` is the `[N]` signal of exit m+1 (all M exits may be given; the last is ignored), `logits[m]`
/// its `[N, C]` logits, `labels` `[N]`.
pub fn osc_loss(signal: ExitSignal, signals: &[Tensor], logits: &[Tensor], labels: &Tensor, epsilon: f64) -> Tensor {
    let internal = logits.len().saturating_sub(1);
    let zero = Tensor::zeros([], (Kind::Float, labels.device()));
    if internal == 0 {
        return zero;
    }
    let layers: Vec<Tensor> = (0..internal)
        .filter_map(|m| {
            let correct = logits[m].argmax(-1, false).eq_tensor(labels);
            layer_loss(signal.direction(), &signals[m], &correct, epsilon)
        })
        .collect();
    if layers.is_empty() {
        return zero;
    }
    let count = layers.len() as f64;
    layers.into_iter().fold(zero, |acc, l| acc + l) / count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v)
    }

    fn b(v: &[bool]) -> Tensor {
        Tensor::from_slice(v)
    }

    #[test]
    fn hinge_by_hand_for_both_directions() {
        // Easy mean 0.2, hard mean 0.6: energy already separated by 0.4 > ε = 0.3 → 0.
        let s = t(&[0.1, 0.3, 0.5, 0.7]);
        let c = b(&[true, true, false, false]);
        let l = layer_loss(Direction::Below, &s, &c, 0.3).unwrap().double_value(&[]);
        assert!(l.abs() < 1e-7, "{l}");
        // ε = 0.5: 0.2 − 0.6 + 0.5 = 0.1.
        let l = layer_loss(Direction::Below, &s, &c, 0.5).unwrap().double_value(&[]);
        assert!((l - 0.1).abs() < 1e-6, "{l}");
        // Max-softmax reversed (Eq. 8): hard − easy + ε = 0.6 − 0.2 + 0.3 = 0.7.
        let l = layer_loss(Direction::Above, &s, &c, 0.3).unwrap().double_value(&[]);
        assert!((l - 0.7).abs() < 1e-6, "{l}");
    }

    #[test]
    fn skips_all_right_and_all_wrong_layers() {
        let s = t(&[0.1, 0.9]);
        assert!(layer_loss(Direction::Below, &s, &b(&[true, true]), 0.3).is_none());
        assert!(layer_loss(Direction::Below, &s, &b(&[false, false]), 0.3).is_none());
    }

    #[test]
    fn averages_over_internal_layers_and_ignores_the_last() {
        // 3 exits, 2 samples with labels [0, 1].
        let labels = Tensor::from_slice(&[0i64, 1]);
        // Exit 1: sample 0 right, sample 1 wrong. Exit 2: both right (skipped). Exit 3: ignored (last layer).
        let logits = vec![
            t(&[2.0, 0.0, 2.0, 0.0]).view([2, 2]),
            t(&[2.0, 0.0, 0.0, 2.0]).view([2, 2]),
            t(&[0.0, 2.0, 2.0, 0.0]).view([2, 2]),
        ];
        // Energy: easy 0.5, hard 0.4 → 0.5 − 0.4 + 0.3 = 0.4 at exit 1; exit 2 is skipped, so the mean is over
        // the one layer computed (the reference's normalisation): 0.4, not 0.4 / (M − 1) = 0.2.
        let signals = vec![t(&[0.5, 0.4]), t(&[0.1, 0.9]), t(&[0.9, 0.9])];
        let l = osc_loss(ExitSignal::Energy, &signals, &logits, &labels, 0.3).double_value(&[]);
        assert!((l - 0.4).abs() < 1e-6, "{l}");
        // Both internal exits computed: exit 2 with sample 0 wrong there too → the mean of the two.
        let mixed = vec![logits[0].shallow_clone(), logits[0].shallow_clone(), logits[2].shallow_clone()];
        let two = vec![t(&[0.5, 0.4]), t(&[0.2, 0.6]), t(&[0.9, 0.9])];
        // Exit 2: easy 0.2, hard 0.6 → max(0, 0.2 − 0.6 + 0.3) = 0; mean (0.4 + 0) / 2 = 0.2.
        let l = osc_loss(ExitSignal::Energy, &two, &mixed, &labels, 0.3).double_value(&[]);
        assert!((l - 0.2).abs() < 1e-6, "{l}");
        // Every internal layer skipped → 0.
        let all_right = vec![logits[1].shallow_clone(), logits[1].shallow_clone(), logits[2].shallow_clone()];
        let l = osc_loss(ExitSignal::Energy, &signals, &all_right, &labels, 0.3).double_value(&[]);
        assert_eq!(l, 0.0);
    }

    #[test]
    fn gradient_reaches_the_signal() {
        let s = t(&[0.1, 0.3, 0.5, 0.7]).set_requires_grad(true);
        let c = b(&[true, false, true, false]);
        let l = layer_loss(Direction::Below, &s, &c, 0.3).unwrap();
        let g = Tensor::run_backward(&[l], &[&s], false, false);
        // d/dS of (mean_easy − mean_hard): +1/2 on easy samples, −1/2 on hard ones.
        let g: Vec<f32> = Vec::<f32>::try_from(&g[0]).unwrap();
        assert_eq!(g, vec![0.5, -0.5, 0.5, -0.5]);
    }
}
