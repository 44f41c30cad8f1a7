//! Evaluation as in the paper (§4.3): the dev set runs once through every exit; early exit is then simulated
//! for every threshold τ of a sweep from those logits. Exit layers, speed-up (Eq. 12), accuracy, F1 and DIS
//! all come from `cosee_format::{signal, metrics}`, the same code the runtime and the calibration use.

pub mod report;

use crate::error::Result;
use crate::model::{tensor_to_rows, MultiExitBert};
use crate::tokenize::{sorted_batches, BatchTensors, Encoded, EncodedBatch, TextEncoder};
use cosee_format::glue::{Example, Task};
use cosee_format::metrics::{
    accuracy, dense_thresholds, difficulty_inversion_score, f1_binary, metric_at_speedup, SweepPoint, REPORTED_SPEEDUPS,
};
use cosee_format::signal::{argmax, log_sum_exp, ExitSignal, SignalTracker};
use indicatif::ProgressBar;
pub use report::{speedup_key, task_metric, EvalReport, LayerReport};

/// Logits of every exit for every sample, in input order, and the gold labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitOutputs {
    /// `[exit][sample][class]`.
    pub logits: Vec<Vec<Vec<f32>>>,
    pub labels: Vec<usize>,
}

/// Runs tokenized examples through all exits in evaluation mode (no dropout, no gradient), in batches of
/// similar length; results are put back in input order.
pub fn run_all_exits(
    model: &MultiExitBert,
    encoded: &[Encoded],
    labels: &[usize],
    batch_size: usize,
    pad_id: i64,
    pad_to: Option<usize>,
    progress: Option<&ProgressBar>,
) -> Result<ExitOutputs> {
    let lengths: Vec<usize> = encoded.iter().map(Encoded::len).collect();
    let num_layers = model.num_layers();
    let mut logits: Vec<Vec<Vec<f32>>> = vec![vec![Vec::new(); encoded.len()]; num_layers];
    for batch in sorted_batches(&lengths, batch_size) {
        let items: Vec<&Encoded> = batch.iter().map(|&i| &encoded[i]).collect();
        let padded = EncodedBatch::pad(&items, pad_id, pad_to);
        let (ids, types, mask) = padded.to_tensors(model.device());
        let outputs = tch::no_grad(|| model.forward(&ids, &types, &mask, false));
        for (exit, out) in outputs.iter().enumerate() {
            for (row, &i) in tensor_to_rows(out)?.into_iter().zip(&batch) {
                logits[exit][i] = row;
            }
        }
        if let Some(pb) = progress {
            pb.inc(batch.len() as u64);
        }
    }
    Ok(ExitOutputs { logits, labels: labels.to_vec() })
}

/// Tokenizes labelled examples and runs them through all exits.
pub fn run_examples(
    model: &MultiExitBert,
    encoder: &TextEncoder,
    examples: &[Example],
    batch_size: usize,
    pad_to: Option<usize>,
    progress: Option<&ProgressBar>,
) -> Result<ExitOutputs> {
    let encoded = encoder.encode_all(examples)?;
    let labels = crate::data::labels(examples);
    run_all_exits(model, &encoded, &labels, batch_size, encoder.pad_id(), pad_to, progress)
}

impl ExitOutputs {
    pub fn num_layers(&self) -> usize {
        self.logits.len()
    }

    pub fn num_samples(&self) -> usize {
        self.labels.len()
    }

    /// Mean cross-entropy of every exit (f64, from the logits with a stable logsumexp).
    pub fn per_exit_loss(&self) -> Vec<f64> {
        self.logits
            .iter()
            .map(|exit| {
                let total: f64 = exit.iter().zip(&self.labels).map(|(z, &y)| (log_sum_exp(z) - z[y]) as f64).sum();
                total / self.labels.len().max(1) as f64
            })
            .collect()
    }

    /// Argmax prediction of every exit, `[exit][sample]`.
    pub fn predictions(&self) -> Vec<Vec<usize>> {
        self.logits.iter().map(|exit| exit.iter().map(|z| argmax(z)).collect()).collect()
    }

    /// The signal of every sample at every layer, `[sample][layer]` (patience via the runtime's tracker).
    pub fn signals(&self, signal: ExitSignal) -> Vec<Vec<f32>> {
        (0..self.num_samples())
            .map(|n| {
                let mut tracker = SignalTracker::new(signal);
                self.logits.iter().map(|exit| tracker.observe(&exit[n])).collect()
            })
            .collect()
    }
}

/// The τ sweep, per-layer accuracy and DIS of one model on one dev set.
pub fn evaluate(outputs: &ExitOutputs, task: Task, signal: ExitSignal, thresholds: &[f32]) -> EvalReport {
    let num_layers = outputs.num_layers();
    let predictions = outputs.predictions();
    let signals = outputs.signals(signal);
    let losses = outputs.per_exit_loss();
    let labels = &outputs.labels;
    let f1 = |pred: &[usize]| task.reports_f1().then(|| f1_binary(pred, labels));

    let layers = (0..num_layers)
        .map(|m| {
            let column: Vec<f32> = signals.iter().map(|row| row[m]).collect();
            let correct: Vec<bool> = predictions[m].iter().zip(labels).map(|(p, l)| p == l).collect();
            let mean_where = |keep: &dyn Fn(bool) -> bool| -> Option<f64> {
                let v: Vec<f64> = column
                    .iter()
                    .zip(&correct)
                    .filter(|(s, &c)| s.is_finite() && keep(c))
                    .map(|(&s, _)| s as f64)
                    .collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            };
            LayerReport {
                layer: m + 1,
                accuracy: accuracy(&predictions[m], labels),
                f1: f1(&predictions[m]),
                loss: losses[m],
                dis: difficulty_inversion_score(signal, &column, &correct),
                mean_signal: mean_where(&|_| true).unwrap_or(0.0),
                mean_signal_easy: mean_where(&|c| c),
                mean_signal_hard: mean_where(&|c| !c),
            }
        })
        .collect();

    let point = |tau: f32| SweepPoint::simulate(signal, &signals, &predictions, labels, tau, task.reports_f1());
    let sweep: Vec<SweepPoint> = thresholds.iter().map(|&tau| point(tau)).collect();

    // The comparison at fixed speed-ups reads a sweep over every distinct outcome, not the report's grid.
    let curve: Vec<(f64, f64)> = dense_thresholds(signal, &signals)
        .into_iter()
        .map(point)
        .map(|p| (p.layer_speedup, if task.reports_f1() { p.f1.unwrap_or(f64::NAN) } else { p.accuracy }))
        .collect();
    let at_speedup =
        REPORTED_SPEEDUPS.iter().filter_map(|&s| metric_at_speedup(&curve, s).map(|v| (speedup_key(s), v))).collect();

    EvalReport { task, signal, num_layers, num_examples: outputs.num_samples(), label: None, layers, sweep, at_speedup }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3 samples × 2 exits, 2 classes; labels [0, 1, 1].
    fn outputs() -> ExitOutputs {
        ExitOutputs {
            logits: vec![
                // Exit 1: confident right on 0, unsure wrong on 1, confident wrong on 2.
                vec![vec![5.0, -5.0], vec![0.1, 0.0], vec![5.0, -5.0]],
                // Exit 2: right on all.
                vec![vec![3.0, 0.0], vec![0.0, 3.0], vec![0.0, 3.0]],
            ],
            labels: vec![0, 1, 1],
        }
    }

    #[test]
    fn sweep_simulates_exits_by_hand() {
        let o = outputs();
        // Max-softmax at exit 1: 0.99995, 0.525, 0.99995. τ = 0.9: samples 0 and 2 leave at exit 1, sample 1 at 2.
        let r = evaluate(&o, Task::Sst2, ExitSignal::MaxSoftmax, &[0.9, 0.9999999]);
        let p = &r.sweep[0];
        assert_eq!(p.exit_histogram, vec![2, 1]);
        // Predictions 0 (right), 1 (from exit 2, right), 0 (wrong): 2/3. Eq. 12: 2·3 / (1 + 2 + 1) = 1.5.
        assert!((p.accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert!((p.layer_speedup - 1.5).abs() < 1e-12);
        assert!((p.mean_exit_layer() - 4.0 / 3.0).abs() < 1e-12);
        assert!(p.f1.is_none());
        // τ above every signal: all run to the last exit.
        assert_eq!(r.sweep[1].exit_histogram, vec![0, 3]);
        assert_eq!(r.sweep[1].accuracy, 1.0);
        // The dense sweep's curve: (1.0, 1.0) at full depth, then sample 1 cannot leave before samples 0 and 2
        // (its signal is lowest), so (1.5, 2/3) once both confident ones leave at exit 1 and (2.0, 1/3) with all
        // three. 1.5x reads 2/3 exactly; 2.0x is reached (1/3); nothing lies beyond.
        assert!((r.at_speedup["1.5"] - 2.0 / 3.0).abs() < 1e-12, "{:?}", r.at_speedup);
        assert!((r.at_speedup["2.0"] - 1.0 / 3.0).abs() < 1e-12);
        assert!(!r.at_speedup.contains_key("2.5"));
        // Exit 1's right sample has max-softmax 0.99995, its wrong ones 0.525 and 0.99995.
        assert!((r.layers[0].mean_signal_easy.unwrap() - 0.99995).abs() < 1e-4);
        assert!((r.layers[0].mean_signal_hard.unwrap() - (0.525 + 0.99995) / 2.0).abs() < 1e-3);
        assert_eq!(r.layers[1].mean_signal_hard, None);
        // Per layer: exit 1 is right once; its DIS: the right sample (0) is as confident as the confident
        // wrong one (2) → a tie, half an inversion; the unsure wrong one (1) is below → 1 − 0.5/2 = 0.75.
        assert!((r.layers[0].accuracy - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.layers[0].dis.unwrap() - 0.75).abs() < 1e-9, "{:?}", r.layers[0].dis);
        assert_eq!(r.layers[1].dis, None);
        // CE of exit 2: sample 0: lse(3, 0) − 3; samples 1, 2 the same value.
        let ce = (log_sum_exp(&[3.0, 0.0]) - 3.0) as f64;
        assert!((r.layers[1].loss - ce).abs() < 1e-6);
    }

    #[test]
    fn f1_for_mrpc() {
        let r = evaluate(&outputs(), Task::Mrpc, ExitSignal::Energy, &[0.0]);
        assert_eq!(r.sweep[0].f1, Some(1.0));
        assert!(r.layers[0].f1.is_some());
    }
}
