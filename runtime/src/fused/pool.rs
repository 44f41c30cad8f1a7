//! The sum over the tokens of an exit's mean pooling, as one vectorized pass.
//!
//! An exit with mean pooling starts with `ReduceMean(h, axes = [1])` over `[batch, tokens, hidden]`, which tract
//! declutters into `Reduce<Sum>` over the tokens axis and a multiplication by 1/tokens. tract-core 0.23.9 sums a
//! middle axis through ndarray's `sum_axis` on dynamic dimensions, one `res = res + row` per token: 0.009 of a
//! 0.028 ms exit at 16 tokens and 0.028 of 0.043 at 64 on a Xeon (`examples/fusion.rs --profile`, 2026-12-07),
//! and an exit runs after every layer of the loop. [`SumOverTokens`] adds the same rows in the same order, starting
//! from zero as ndarray does, so its sums are tract's bit for bit: the rewrite runs on every package form (portable
//! numerics included) and architecture.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};

/// `Reduce<Sum>` of an f32 tensor over its second-to-last axis (rank ≥ 3), the reduced axis kept with size 1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SumOverTokens;

impl SumOverTokens {
    /// `out[o][j] = ((0 + x[o][0][j]) + x[o][1][j]) + …` for each outer index `o` of `x` `[outer, tokens, width]`.
    fn sums(x: &[f32], tokens: usize, width: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { Self::sums_avx2(x, tokens, width, out) };
        }
        Self::sums_body(x, tokens, width, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn sums_avx2(x: &[f32], tokens: usize, width: usize, out: &mut [f32]) {
        Self::sums_body(x, tokens, width, out)
    }

    #[inline(always)]
    fn sums_body(x: &[f32], tokens: usize, width: usize, out: &mut [f32]) {
        for (block, sums) in x.chunks_exact(tokens * width).zip(out.chunks_exact_mut(width)) {
            sums.iter_mut().for_each(|s| *s = 0.0);
            for row in block.chunks_exact(width) {
                for (s, &v) in sums.iter_mut().zip(row) {
                    *s += v;
                }
            }
        }
    }
}

impl Op for SumOverTokens {
    fn name(&self) -> StaticName {
        "SumOverTokens".into()
    }

    op_as_typed_op!();
}

impl EvalOp for SumOverTokens {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let rank = x.rank();
        ensure!(rank >= 3, "SumOverTokens on a tensor of rank {rank}");
        let (tokens, width) = (x.shape()[rank - 2], x.shape()[rank - 1]);
        let mut shape: TVec<usize> = x.shape().into();
        shape[rank - 2] = 1;
        let out = if x.strides() == &*Tensor::natural_strides(x.shape()) {
            let x = x.try_as_plain_ram()?;
            let x = x.as_slice::<f32>()?;
            super::tensor_filled(&shape, |out| Self::sums(x, tokens, width, out))?
        } else {
            let x = x.into_tensor().into_plain_array::<f32>()?;
            let x: Vec<f32> = x.as_standard_layout().iter().copied().collect();
            super::tensor_filled(&shape, |out| Self::sums(&x, tokens, width, out))?
        };
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for SumOverTokens {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        ensure!(x.datum_type == f32::datum_type() && x.rank() >= 3, "SumOverTokens takes f32 of rank ≥ 3, got {x:?}");
        let mut shape: TVec<TDim> = x.shape.to_tvec();
        shape[x.rank() - 2] = 1.to_dim();
        Ok(tvec!(f32::fact(shape)))
    }
}

/// Replaces every f32 `Reduce<Sum>` over the second-to-last axis of a tensor of rank ≥ 3 (an exit's mean pooling)
/// by [`SumOverTokens`]; returns how many. Sums over a leading axis take tract's other, blocked path, whose order
/// differs: they are left as they are.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    super::replace_all(model, "sum_over_tokens", |model, node| {
        let Some(reduce) = model.node(node).op_as::<Reduce>() else { return Ok(None) };
        let &[input] = model.node(node).inputs.as_slice() else { return Ok(None) };
        let fact = model.outlet_fact(input)?;
        let rank = fact.rank();
        let matches = reduce.reducer == Reducer::Sum
            && fact.datum_type == f32::datum_type()
            && rank >= 3
            && reduce.axes.as_slice() == [rank - 2];
        Ok(matches.then(|| super::Replacement {
            named_after: node,
            inputs: tvec![input],
            op: SumOverTokens,
            replaces: tvec![node.into()],
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tract's own Reduce<Sum> over the middle axis against ours, bit for bit, on values whose sums round
    /// (so that a different order would show), including -0.0 rows and a single token.
    #[test]
    fn sums_equal_tracts_reduce_bit_for_bit() {
        for (outer, tokens, width) in [(1, 1, 5), (1, 16, 384), (2, 7, 33), (1, 64, 384)] {
            let values: Vec<f32> = (0..outer * tokens * width)
                .map(|i| if i % 97 == 0 { -0.0 } else { ((i as f32 * 0.618).sin() * 1e3).powi(3) * 1e-7 })
                .collect();
            let mut ours = vec![f32::NAN; outer * width];
            SumOverTokens::sums(&values, tokens, width, &mut ours);
            let x = tract_ndarray::ArrayD::from_shape_vec(vec![outer, tokens, width], values).unwrap().into_tensor();
            let theirs = Reducer::Sum.reduce(&[1], &x).unwrap();
            assert_eq!(theirs.shape(), [outer, 1, width]);
            let theirs = theirs.try_as_plain_ram().unwrap();
            let theirs = theirs.as_slice::<f32>().unwrap();
            assert!(theirs.iter().zip(&ours).all(|(a, b)| a.to_bits() == b.to_bits()), "[{outer}, {tokens}, {width}]");
        }
    }
}
