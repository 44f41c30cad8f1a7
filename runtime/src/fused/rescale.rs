//! The int8 linear layer's output stage in one pass: the i32 accumulator of `MatMulInteger` back to f32, scaled by
//! the per-channel weight scale and the per-token activation scale, plus the bias.
//!
//! The exporter's `Sequential` form (`tools/src/stages/ops.rs`, `linear_int8`, the default) is
//!
//! ```text
//! y = (Cast<f32>(acc) · w_scale) · x_scale + bias        acc [.., tokens, out] i32, x_scale [.., tokens, 1]
//! ```
//!
//! which tract runs as a Cast and a chain of three binary operators, each over the whole output: 0.06 ms of a
//! 0.46 ms fused int8 layer at 16 tokens, 0.28 of 2.4 at 64 (`examples/fusion.rs --profile`). [`RescaleInt8`]
//! computes each output once, with the same f32 operations in the same order, so its values are the graph's bit
//! for bit.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::math::{Add, Mul};

use super::with_channel_constant;

/// `(acc, x_scale) → (acc · w_scale) · x_scale + bias`, per output channel `o` and token `t`.
#[derive(Debug, Clone, PartialEq)]
pub struct RescaleInt8 {
    /// Per output channel, `[out]`.
    pub weight_scale: Vec<f32>,
    /// Per output channel, `[out]`.
    pub bias: Vec<f32>,
    /// Then the exact GELU of every output, folded in by [`super::gelu::fuse`] (the FFN's first linear layer):
    /// the row is still in cache, and no tensor is written in between.
    pub gelu: bool,
}

impl Eq for RescaleInt8 {}

impl RescaleInt8 {
    /// One token's outputs from its accumulators.
    pub(super) fn row(&self, acc: &[i32], token_scale: f32, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { self.row_avx2_fma(acc, token_scale, out) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { self.row_avx2(acc, token_scale, out) };
        }
        self.row_body::<false>(acc, token_scale, out)
    }

    /// AVX2 without FMA (some hypervisors hide FMA): still 8-lane vectors.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn row_avx2(&self, acc: &[i32], token_scale: f32, out: &mut [f32]) {
        self.row_body::<false>(acc, token_scale, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row_avx2_fma(&self, acc: &[i32], token_scale: f32, out: &mut [f32]) {
        self.row_body::<true>(acc, token_scale, out)
    }

    /// The graph's operations in its order (no FMA: `a · b + c` is two roundings, as in the graph). The GELU's
    /// polynomials use FMA where `FMA` (a quarter fewer cycles for the fold); the rescale never does.
    #[inline(always)]
    fn row_body<const FMA: bool>(&self, acc: &[i32], token_scale: f32, out: &mut [f32]) {
        for (((o, &a), &w), &b) in out.iter_mut().zip(acc).zip(&self.weight_scale).zip(&self.bias) {
            *o = (a as f32 * w) * token_scale + b;
        }
        if self.gelu {
            out.iter_mut().for_each(|o| *o = super::gelu::gelu::<FMA>(*o));
        }
    }
}

/// Whether the CPU has AVX2 and FMA (the vectorized row with fused multiply-adds in the GELU). Only x86 asks,
/// and the tests on every target.
#[cfg(any(target_arch = "x86_64", test))]
fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

impl Op for RescaleInt8 {
    fn name(&self) -> StaticName {
        if self.gelu { "RescaleInt8+Gelu" } else { "RescaleInt8" }.into()
    }

    op_as_typed_op!();
}

impl EvalOp for RescaleInt8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (acc, scale) = args_2!(inputs);
        let shape: TVec<usize> = acc.shape().into();
        let width = self.bias.len();
        ensure!(shape.last() == Some(&width), "RescaleInt8: accumulator {shape:?} for {width} channels");
        let acc = acc.try_as_plain_ram()?;
        let acc = acc.as_slice::<i32>()?;
        let scale = scale.try_as_plain_ram()?;
        let scale = scale.as_slice::<f32>()?;
        ensure!(scale.len() * width == acc.len(), "RescaleInt8: {} token scales for {shape:?}", scale.len());
        let out = super::tensor_filled(&shape, |out| {
            for ((acc, out), &s) in acc.chunks_exact(width).zip(out.chunks_exact_mut(width)).zip(scale) {
                self.row(acc, s, out);
            }
        })?;
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for RescaleInt8 {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == i32::datum_type(), "RescaleInt8 takes an i32 accumulator");
        ensure!(inputs[1].datum_type == f32::datum_type(), "RescaleInt8 takes f32 token scales");
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }
}

/// Replaces every `Sequential` int8 output stage of the decluttered `model` by one [`RescaleInt8`]; returns how
/// many. Other forms (the `Combined` rescale, f32 graphs) are left as they are.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    super::replace_all(model, "rescale_int8", |model, node| {
        Ok(matched(model, node)?.map(|(add, acc, scale, op)| super::Replacement {
            named_after: add,
            inputs: tvec![acc, scale],
            op,
            replaces: tvec![add.into()],
        }))
    })
}

/// `Add(Mul(Mul(Cast<f32>(acc), w_scale), x_scale), bias)` ending at node `add`: its accumulator and token-scale
/// outlets and the fused op.
fn matched(model: &TypedModel, add: usize) -> TractResult<Option<(usize, OutletId, OutletId, RescaleInt8)>> {
    let Some((scaled, bias)) = with_channel_constant::<Add>(model, add)? else { return Ok(None) };
    // (…) · x_scale: the token scale is the operand that is not a constant.
    let Some(product) = super::binary_inputs::<Mul>(model, scaled.node) else { return Ok(None) };
    let facts = [model.outlet_fact(product[0])?, model.outlet_fact(product[1])?];
    let Some(k) = (0..2).find(|&k| facts[k].konst.is_none() && facts[k].shape.last() == Some(&1.to_dim())) else {
        return Ok(None);
    };
    let (token_scale, weighted) = (product[k], product[1 - k]);
    let Some((converted, weight_scale)) = with_channel_constant::<Mul>(model, weighted.node)? else { return Ok(None) };
    let cast = model.node(converted.node);
    let &[acc] = cast.inputs.as_slice() else { return Ok(None) };
    let is_cast = cast.op_as::<Cast>().is_some_and(|c| c.to == f32::datum_type());
    if !is_cast || model.outlet_fact(acc)?.datum_type != i32::datum_type() {
        return Ok(None);
    }
    let out = model.outlet_fact(acc)?.shape.last().and_then(|d| d.to_usize().ok());
    if out != Some(bias.len()) || weight_scale.len() != bias.len() {
        return Ok(None);
    }
    Ok(Some((add, acc, token_scale, RescaleInt8 { weight_scale, bias, gelu: false })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_equals_the_graph_bit_for_bit() {
        let op = RescaleInt8 {
            weight_scale: vec![0.013, 1e-3, 7.5e-4, 0.02, 3e-5],
            bias: vec![0.1, -0.2, 0.0, 1e-7, -3.0],
            gelu: false,
        };
        let acc = [12_345, -77, 0, i32::MAX / 3, -1_000_000];
        for token_scale in [1.0f32, 0.0078, 3.3e-4] {
            let mut out = [0f32; 5];
            op.row(&acc, token_scale, &mut out);
            for o in 0..5 {
                let expected = (acc[o] as f32 * op.weight_scale[o]) * token_scale + op.bias[o];
                assert_eq!(out[o].to_bits(), expected.to_bits());
            }
            let with_gelu = RescaleInt8 { gelu: true, ..op.clone() };
            let mut activated = [0f32; 5];
            with_gelu.row(&acc, token_scale, &mut activated);
            for o in 0..5 {
                let expected = if avx2_fma() {
                    crate::fused::gelu::gelu::<true>(out[o])
                } else {
                    crate::fused::gelu::gelu::<false>(out[o])
                };
                assert_eq!(activated[o].to_bits(), expected.to_bits());
            }
        }
    }
}
