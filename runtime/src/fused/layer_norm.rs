//! A residual add and the layer norm after it, in one pass per row.
//!
//! ONNX's `LayerNormalization` reaches tract's decluttered graph as
//!
//! ```text
//! x = a + b                                  (the residual add, when there is one)
//! d = x − ReduceSum(x, last axis) · (1/n)
//! y = RmsNorm(d, eps) · γ + β                RmsNorm(d) = d / √(mean(d²) + eps)
//! ```
//!
//! six operators, each a pass over the activation with a tensor allocated for its result; two per layer cost 12 %
//! of a fused int8 layer at 64 tokens on an AMD EPYC (`examples/fusion.rs --profile`). [`AddLayerNorm`] reads
//! each row once for the sum, once for the variance and once to write the result, in cache.
//!
//! Numerics: the sums run over eight interleaved lanes (the same order on every CPU, no FMA), not tract's order, so
//! outputs differ from the plain graph's in their last bits. Portable-numerics packages spell their layer norm
//! with matmuls and are untouched.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::math::{Add, Mul, Sub};
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer, RmsNorm};

use super::{binary_with_constant, lane_sum, used_once, with_channel_constant};

/// `LayerNorm(x [+ residual])` over the last axis: one input, or two of the same shape added first.
#[derive(Debug, Clone, PartialEq)]
pub struct AddLayerNorm {
    /// γ, one per channel.
    pub gamma: Vec<f32>,
    /// β, one per channel.
    pub beta: Vec<f32>,
    pub eps: f32,
}

impl Eq for AddLayerNorm {}

impl AddLayerNorm {
    /// One row: `out = LayerNorm(x + residual)`.
    fn row(&self, x: &[f32], residual: Option<&[f32]>, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { self.row_avx2(x, residual, out) };
        }
        self.row_body(x, residual, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn row_avx2(&self, x: &[f32], residual: Option<&[f32]>, out: &mut [f32]) {
        self.row_body(x, residual, out)
    }

    #[inline(always)]
    fn row_body(&self, x: &[f32], residual: Option<&[f32]>, out: &mut [f32]) {
        match residual {
            Some(r) => out.iter_mut().zip(x).zip(r).for_each(|((o, &a), &b)| *o = a + b),
            None => out.copy_from_slice(x),
        }
        let inv_n = (out.len() as f32).recip();
        let mean = lane_sum(out, |v| v) * inv_n;
        let variance = lane_sum(out, |v| (v - mean) * (v - mean)) * inv_n;
        let inv_std = (variance + self.eps).sqrt().recip();
        for ((o, &g), &b) in out.iter_mut().zip(&self.gamma).zip(&self.beta) {
            *o = ((*o - mean) * inv_std) * g + b;
        }
    }
}

impl Op for AddLayerNorm {
    fn name(&self) -> StaticName {
        "AddLayerNorm".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{} channels, eps {:e}", self.gamma.len(), self.eps)])
    }

    op_as_typed_op!();
}

impl EvalOp for AddLayerNorm {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let shape: TVec<usize> = inputs[0].shape().into();
        let width = self.gamma.len();
        ensure!(shape.last() == Some(&width), "AddLayerNorm: input {shape:?} for {width} channels");
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let residual = match inputs.get(1) {
            Some(r) => {
                ensure!(r.shape() == &*shape, "AddLayerNorm: residual {:?} for input {shape:?}", r.shape());
                Some(r.try_as_plain_ram()?)
            }
            None => None,
        };
        let residual = residual.as_ref().map(|r| r.as_slice::<f32>()).transpose()?;
        let out = super::tensor_filled(&shape, |out| {
            if width > 0 {
                for (k, (x, out)) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)).enumerate() {
                    self.row(x, residual.map(|r| &r[k * width..][..width]), out);
                }
            }
        })?;
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for AddLayerNorm {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.iter().all(|f| f.datum_type == f32::datum_type()), "AddLayerNorm takes f32 tensors");
        ensure!(inputs.iter().all(|f| f.shape == inputs[0].shape), "AddLayerNorm: inputs of different shapes");
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }
}

/// Replaces every layer norm over the last axis of the decluttered `model`, with the residual add before it where
/// the sum feeds nothing else, by one [`AddLayerNorm`]; returns how many.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    // One occurrence per patch, the graph compacted in between: a layer norm's output is the next one's residual,
    // so a patch built for both from the same graph would wire the second to the first's replaced nodes.
    let mut count = 0;
    while let Some(f) = super::occurrences(model, matched)?.into_iter().next() {
        let mut patch = TypedModelPatch::new("fuse add and layer norm");
        let inputs = patch.taps(model, &f.inputs)?;
        let name = format!("{}.add_layer_norm", model.node(f.norm).name);
        let out = patch.wire_node(name, f.op.clone(), &inputs)?;
        patch.shunt_outside(model, f.end.into(), out[0])?;
        patch.apply(model)?;
        model.compact()?;
        count += 1;
    }
    Ok(count)
}

struct Found {
    /// `[x]` or `[a, b]` for `x = a + b`.
    inputs: TVec<OutletId>,
    /// The `RmsNorm` node (for the new node's name).
    norm: usize,
    /// The `+ β` node whose output the fused op replaces.
    end: usize,
    op: AddLayerNorm,
}

/// The pattern around the `RmsNorm` node `norm`, if it is one.
fn matched(model: &TypedModel, norm: usize) -> TractResult<Option<Found>> {
    let node = model.node(norm);
    let Some(rms) = node.op_as::<RmsNorm>() else { return Ok(None) };
    let fact = model.outlet_fact(node.inputs[0])?;
    let rank = fact.rank();
    let Some(width) = fact.shape.last().and_then(|d| d.to_usize().ok()) else { return Ok(None) };
    if rank == 0 || rms.axis != rank - 1 || fact.datum_type != f32::datum_type() || rms.eps.len() != 1 {
        return Ok(None);
    }
    let eps = rms.eps.cast_to_scalar::<f32>()?;
    // d = x − mean, used by the RmsNorm alone.
    let d = node.inputs[0];
    let Some(&[x, mean]) = super::binary_inputs::<Sub>(model, d.node).as_ref() else { return Ok(None) };
    if !used_once(model, d) || !used_once(model, mean) {
        return Ok(None);
    }
    // mean = ReduceSum(x) · (1/n).
    let Some((reduced, inv_n)) = binary_with_constant::<Mul>(model, mean.node)? else { return Ok(None) };
    let reduce_ok = model
        .node(reduced.node)
        .op_as::<Reduce>()
        .is_some_and(|r| r.reducer == Reducer::Sum && r.axes.as_slice() == [rank - 1]);
    if !reduce_ok || model.node(reduced.node).inputs.as_slice() != [x] || inv_n != (width as f32).recip() {
        return Ok(None);
    }
    // RmsNorm(d) · γ + β, each used once.
    let Some(scaled) = single_successor(model, norm.into()) else { return Ok(None) };
    let Some((_, gamma)) = with_channel_constant::<Mul>(model, scaled)? else { return Ok(None) };
    let Some(end) = single_successor(model, scaled.into()) else { return Ok(None) };
    let Some((_, beta)) = with_channel_constant::<Add>(model, end)? else { return Ok(None) };
    if gamma.len() != width || beta.len() != width {
        return Ok(None);
    }
    // x = a + b, when x feeds only the sum and the difference and both terms have x's shape.
    let terms = super::binary_inputs::<Add>(model, x.node).filter(|terms| {
        super::uses(model, x) == 2
            && terms.iter().all(|t| model.outlet_fact(*t).is_ok_and(|f| f.shape == fact.shape && f.konst.is_none()))
    });
    let inputs = match terms {
        Some(terms) => terms.into_iter().collect(),
        None => tvec!(x),
    };
    Ok(Some(Found { inputs, norm, end, op: AddLayerNorm { gamma, beta, eps } }))
}

/// The node that alone consumes `outlet`, if one does.
fn single_successor(model: &TypedModel, outlet: OutletId) -> Option<usize> {
    used_once(model, outlet).then(|| model.node(outlet.node).outputs[outlet.slot].successors[0].node)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row against the decluttered graph's operations in double precision.
    #[test]
    fn rows_match_a_double_precision_layer_norm() {
        let width = 384;
        let op = AddLayerNorm {
            gamma: (0..width).map(|k| 0.5 + (k % 7) as f32 / 10.0).collect(),
            beta: (0..width).map(|k| (k % 5) as f32 / 50.0 - 0.04).collect(),
            eps: 1e-12,
        };
        let a: Vec<f32> = (0..width).map(|k| ((k * 7919) % 1000) as f32 / 37.0 - 13.0).collect();
        let b: Vec<f32> = (0..width).map(|k| ((k * 104_729) % 611) as f32 / 91.0 - 3.0).collect();
        for residual in [None, Some(&b[..])] {
            let mut out = vec![0f32; width];
            op.row(&a, residual, &mut out);
            let x: Vec<f64> = (0..width).map(|k| a[k] as f64 + residual.map_or(0.0, |r| r[k] as f64)).collect();
            let mean = x.iter().sum::<f64>() / width as f64;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / width as f64;
            for k in 0..width {
                let expected = (x[k] - mean) / (var + 1e-12).sqrt() * op.gamma[k] as f64 + op.beta[k] as f64;
                assert!((out[k] as f64 - expected).abs() < 2e-6, "{k}: {} vs {expected}", out[k]);
            }
        }
        // A constant row normalizes to β (d = 0), whatever eps.
        let mut out = vec![0f32; width];
        op.row(&vec![3.25; width], None, &mut out);
        assert_eq!(out, op.beta);
    }
}
