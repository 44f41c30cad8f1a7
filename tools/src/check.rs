//! Runs a package's stage graphs directly in tract and compares every stage with the [`crate::reference`] forward
//! pass. `export` runs this on every package it writes, so a graph that loads but computes the wrong thing never
//! leaves the exporter silently.

use crate::reference::{Hidden, Trace};
use cosee_runtime::manifest::{exit_file, layer_file, EMBEDDINGS_FILE};
use cosee_runtime::tokenize::EncodedBatch;
use std::path::Path;
use std::sync::Arc;
use tract_onnx::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("tract cannot load {path}: {message}")]
    Load { path: String, message: String },
    #[error("tract failed running {stage}: {message}")]
    Run { stage: String, message: String },
}

/// One optimized tract plan per stage, built once.
pub struct StagePlans {
    embeddings: Arc<TypedRunnableModel>,
    layers: Vec<Arc<TypedRunnableModel>>,
    exits: Vec<Arc<TypedRunnableModel>>,
}

/// Loads one ONNX file into an optimized, runnable tract plan with its symbolic dims kept.
pub fn load_plan(path: &Path) -> Result<Arc<TypedRunnableModel>, CheckError> {
    // The runtime's kernel choice, so that the exporter checks what the runtime will run.
    cosee_runtime::x86_kernels::steer_tract_kernels();
    let err = |e: TractError| CheckError::Load { path: path.display().to_string(), message: format!("{e:#}") };
    tract_onnx::onnx().model_for_path(path).map_err(err)?.into_optimized().map_err(err)?.into_runnable().map_err(err)
}

fn i64_input(values: &[i64], batch: usize, sequence: usize) -> TValue {
    tract_ndarray::Array2::from_shape_vec((batch, sequence), values.to_vec())
        .expect("token batch shape is consistent")
        .into_tensor()
        .into()
}

fn hidden_input(h: &Hidden) -> TValue {
    tract_ndarray::Array3::from_shape_vec((h.batch, h.sequence, h.hidden), h.data.clone())
        .expect("hidden shape is consistent")
        .into_tensor()
        .into()
}

fn run(plan: &Arc<TypedRunnableModel>, inputs: TVec<TValue>, stage: &str) -> Result<Vec<f32>, CheckError> {
    let err = |e: TractError| CheckError::Run { stage: stage.to_string(), message: format!("{e:#}") };
    let out = plan.run(inputs).map_err(err)?;
    let view = out[0].to_plain_array_view::<f32>().map_err(err)?;
    Ok(view.iter().copied().collect())
}

impl StagePlans {
    pub fn load(package: &Path, num_layers: usize) -> Result<Self, CheckError> {
        Ok(Self {
            embeddings: load_plan(&package.join(EMBEDDINGS_FILE))?,
            layers: (1..=num_layers).map(|m| load_plan(&package.join(layer_file(m)))).collect::<Result<_, _>>()?,
            exits: (1..=num_layers).map(|m| load_plan(&package.join(exit_file(m)))).collect::<Result<_, _>>()?,
        })
    }

    pub fn embeddings(&self, tokens: &EncodedBatch, hidden: usize) -> Result<Hidden, CheckError> {
        let (b, s) = (tokens.batch_size, tokens.seq_len);
        let inputs = tvec!(
            i64_input(&tokens.input_ids, b, s),
            i64_input(&tokens.token_type_ids, b, s),
            i64_input(&tokens.attention_mask, b, s)
        );
        Ok(Hidden { batch: b, sequence: s, hidden, data: run(&self.embeddings, inputs, EMBEDDINGS_FILE)? })
    }

    /// Layer `m` (1-based).
    pub fn layer(&self, m: usize, x: &Hidden, attention_mask: &[i64]) -> Result<Hidden, CheckError> {
        let inputs = tvec!(hidden_input(x), i64_input(attention_mask, x.batch, x.sequence));
        let data = run(&self.layers[m - 1], inputs, &layer_file(m))?;
        Ok(Hidden { data, ..x.clone() })
    }

    /// Exit `m` (1-based).
    pub fn exit(&self, m: usize, x: &Hidden) -> Result<Vec<f32>, CheckError> {
        run(&self.exits[m - 1], tvec!(hidden_input(x)), &exit_file(m))
    }

    /// All stages at full depth.
    pub fn forward(&self, tokens: &EncodedBatch, hidden: usize) -> Result<Trace, CheckError> {
        let embeddings = self.embeddings(tokens, hidden)?;
        let mut layers = Vec::new();
        let mut exits = Vec::new();
        let mut h = embeddings.clone();
        for m in 1..=self.layers.len() {
            h = self.layer(m, &h, &tokens.attention_mask)?;
            exits.push(self.exit(m, &h)?);
            layers.push(h.clone());
        }
        Ok(Trace { embeddings, layers, exits })
    }
}

/// Largest |Δ| between two traces, per stage, and how many compared rows (one token's hidden vector, or one
/// example's logits) differ by more than [`ROW_EXACT`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageDeltas {
    pub embeddings: f32,
    pub layers: Vec<f32>,
    pub exits: Vec<f32>,
    pub rows: usize,
    pub rows_off: usize,
}

/// A row within this of the reference counts as reproduced exactly (f32 rounding only).
pub const ROW_EXACT: f32 = 1e-4;

impl StageDeltas {
    pub fn max(&self) -> f32 {
        self.layers.iter().chain(&self.exits).fold(self.embeddings, |m, &v| m.max(v))
    }

    pub fn max_logit(&self) -> f32 {
        self.exits.iter().fold(0.0, |m, &v| m.max(v))
    }

    /// Elementwise maximum over several comparisons; row counts add up.
    pub fn merge(&mut self, other: &StageDeltas) {
        self.embeddings = self.embeddings.max(other.embeddings);
        for (a, b) in self.layers.iter_mut().zip(&other.layers) {
            *a = a.max(*b);
        }
        for (a, b) in self.exits.iter_mut().zip(&other.exits) {
            *a = a.max(*b);
        }
        self.rows += other.rows;
        self.rows_off += other.rows_off;
    }

    /// Every stage with its file name and delta, in execution order.
    pub fn named(&self) -> Vec<(String, f32)> {
        std::iter::once((EMBEDDINGS_FILE.to_string(), self.embeddings))
            .chain(self.layers.iter().enumerate().map(|(i, &d)| (layer_file(i + 1), d)))
            .chain(self.exits.iter().enumerate().map(|(i, &d)| (exit_file(i + 1), d)))
            .collect()
    }
}

/// Max |a − b| (NaN anywhere counts as infinitely far).
pub fn max_abs_delta(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| if x.is_nan() || y.is_nan() { f32::INFINITY } else { (x - y).abs() })
        .fold(0.0, f32::max)
}

/// Accumulates per-row deltas of one comparison.
#[derive(Default)]
struct Rows {
    rows: usize,
    off: usize,
}

impl Rows {
    /// Hidden states, only at positions the mask keeps: padded positions are garbage by design (they attend
    /// normally but nothing reads them) and need not agree.
    fn hidden(&mut self, x: &Hidden, y: &Hidden, attention_mask: &[i64]) -> f32 {
        let mut worst = 0.0f32;
        for (pos, &keep) in attention_mask.iter().enumerate() {
            if keep != 0 {
                let r = pos * x.hidden..(pos + 1) * x.hidden;
                worst = worst.max(self.row(&x.data[r.clone()], &y.data[r]));
            }
        }
        worst
    }

    fn logits(&mut self, x: &[f32], y: &[f32], batch: usize) -> f32 {
        if x.len() != y.len() || batch == 0 {
            return f32::INFINITY;
        }
        let labels = x.len() / batch;
        (0..batch)
            .map(|b| self.row(&x[b * labels..(b + 1) * labels], &y[b * labels..(b + 1) * labels]))
            .fold(0.0, f32::max)
    }

    fn row(&mut self, a: &[f32], b: &[f32]) -> f32 {
        let d = max_abs_delta(a, b);
        self.rows += 1;
        if d.is_nan() || d > ROW_EXACT {
            self.off += 1;
        }
        d
    }
}

/// Compares two full-depth traces stage by stage (each computed from its own earlier stages, so differences
/// accumulate as they would in use).
pub fn compare(a: &Trace, b: &Trace, attention_mask: &[i64]) -> StageDeltas {
    let mut rows = Rows::default();
    let batch = a.embeddings.batch;
    StageDeltas {
        embeddings: rows.hidden(&a.embeddings, &b.embeddings, attention_mask),
        layers: a.layers.iter().zip(&b.layers).map(|(x, y)| rows.hidden(x, y, attention_mask)).collect(),
        exits: a.exits.iter().zip(&b.exits).map(|(x, y)| rows.logits(x, y, batch)).collect(),
        rows: rows.rows,
        rows_off: rows.off,
    }
}

impl StagePlans {
    /// Runs every stage on the *expected* trace's inputs (teacher forcing) and compares its output with the
    /// expected output: each stage is judged on its own, without the earlier stages' differences. For int8
    /// graphs this matters: an input differing by one f32 ulp can move an activation across a rounding boundary
    /// of its quantization, a full step, which a chained comparison would then carry through every later layer.
    pub fn compare_stagewise(&self, expected: &Trace, tokens: &EncodedBatch) -> Result<StageDeltas, CheckError> {
        let mut rows = Rows::default();
        let mask = &tokens.attention_mask;
        let hidden = expected.embeddings.hidden;
        let embeddings = rows.hidden(&self.embeddings(tokens, hidden)?, &expected.embeddings, mask);
        let mut layers = Vec::new();
        let mut exits = Vec::new();
        for m in 1..=self.layers.len() {
            let input = if m == 1 { &expected.embeddings } else { &expected.layers[m - 2] };
            layers.push(rows.hidden(&self.layer(m, input, mask)?, &expected.layers[m - 1], mask));
            exits.push(rows.logits(&self.exit(m, &expected.layers[m - 1])?, &expected.exits[m - 1], tokens.batch_size));
        }
        Ok(StageDeltas { embeddings, layers, exits, rows: rows.rows, rows_off: rows.off })
    }
}

/// Deterministic token batches for checks: `batch` rows of length `sequence`, row r > 0 padded after
/// `sequence − 2r` tokens (at least 1), ids drawn from [5, vocab) with [CLS]-like id first.
pub fn sample_batch(batch: usize, sequence: usize, vocab: usize, seed: u64) -> EncodedBatch {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut input_ids = Vec::with_capacity(batch * sequence);
    let mut token_type_ids = Vec::with_capacity(batch * sequence);
    let mut attention_mask = Vec::with_capacity(batch * sequence);
    for r in 0..batch {
        let len = sequence.saturating_sub(2 * r).max(1);
        let second_segment = len / 2 + 1;
        for s in 0..sequence {
            let real = s < len;
            input_ids.push(if !real {
                0
            } else if s == 0 {
                2
            } else {
                (5 + next() % (vocab - 5).max(1)) as i64
            });
            token_type_ids.push(i64::from(real && s >= second_segment && sequence > 3));
            attention_mask.push(i64::from(real));
        }
    }
    EncodedBatch { input_ids, token_type_ids, attention_mask, batch_size: batch, seq_len: sequence }
}
