//! The attention softmax in one pass per row, with a vectorizable exp.
//!
//! tract 0.23.9 has a whole-row softmax kernel only for some targets; on x86-64 and aarch64 it runs three
//! dispatched kernels per row (max, exp-and-sum, scale), and the attention scores of a layer are `heads × tokens`
//! short rows (12 × 16 rows of 16 at 16 tokens): 0.11 ms of a 0.9 ms int8 layer at 16 tokens, 0.27 of 2.4 at 64,
//! where ONNX Runtime spends 0.01 / 0.04 (docs/ort-side-by-side.md). [`RowSoftmax`] does max, exp and sum, and
//! the scaling in two sweeps over each row in cache.
//!
//! Unlike [`super::quantize`], this changes numerics: its exp is Cephes' single-precision polynomial (within
//! 2 ulp of the true value), not tract's, so outputs differ from tract's softmax in the last bits. It is the
//! same on every CPU (plain IEEE operations, the sum over eight lanes in a fixed order), so packages of fused
//! numerics answer alike on x86-64 and aarch64 at least as closely as before; portable-numerics packages have no
//! Softmax operator (they spell it out with `Exp` and a matmul) and are untouched.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

/// Softmax over the last axis of an f32 tensor. Keeps tract's op for inputs that are not contiguous rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowSoftmax {
    /// The operator it replaces, evaluated instead on a tensor whose rows are not contiguous.
    pub original: Softmax,
}

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two so that k · LN2_HI is exact for the k of f32 (Cephes).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Below ln(smallest normal f32) exp is taken as 0: a masked key (score −10000) adds nothing.
const EXP_MIN: f32 = -87.336_55;
/// See `quantize::ROUNDING_MAGIC`: adding and subtracting it rounds to an integer, half to even.
const ROUNDING_MAGIC: f32 = 12_582_912.0;

/// e^x for x ≤ 0 (scores less their row's maximum), to within 2 ulp; 0 below [`EXP_MIN`]. Branch-free, so that a
/// loop over it vectorizes.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    let clamped = if x > EXP_MIN { x } else { EXP_MIN };
    // x = k ln 2 + r, |r| ≤ ln 2 / 2.
    let shifted = clamped * LOG2_E + ROUNDING_MAGIC;
    let k = (shifted.to_bits() as i32).wrapping_sub(ROUNDING_MAGIC.to_bits() as i32);
    let kf = shifted - ROUNDING_MAGIC;
    let r = clamped - kf * LN2_HI - kf * LN2_LO;
    // Cephes expf's minimax polynomial for e^r.
    let mut p = 1.987_569_2e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes writes 5.0000001201e-1, which is 0.5 in f32
    let e_r = p * (r * r) + r + 1.0;
    // 2^k with k in [−126, 0]: a normal number's exponent field.
    let two_k = f32::from_bits(((k + 127) as u32) << 23);
    if x > EXP_MIN {
        e_r * two_k
    } else {
        0.0
    }
}

/// Softmax of one row in place, with AVX2's 8-lane vectors where the CPU has them (the same IEEE operations lane
/// by lane, no FMA: the same results as the baseline build).
fn softmax_row(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { softmax_row_avx2(row) };
    }
    softmax_row_body(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn softmax_row_avx2(row: &mut [f32]) {
    softmax_row_body(row)
}

/// [`softmax_row`] without the dispatch, for callers already compiled for their CPU ([`super::attention`]).
#[inline(always)]
pub(super) fn softmax_row_body(row: &mut [f32]) {
    const LANES: usize = 8;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    for (m, &v) in lanes.iter_mut().zip(chunks.remainder()) {
        *m = if v > *m { v } else { *m };
    }
    let max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);

    // exp over the whole row first (one simple loop, which the compiler vectorizes; fused with the sum it did
    // not), then the sum: element i in lane i mod 8, the lanes added in a fixed tree, the same sum on every CPU.
    for v in row.iter_mut() {
        *v = exp_nonpositive(*v - max);
    }
    let sum = super::lane_sum(row, |v| v);
    let inverse = sum.recip();
    row.iter_mut().for_each(|v| *v *= inverse);
}

impl Op for RowSoftmax {
    fn name(&self) -> StaticName {
        "RowSoftmax".into()
    }

    op_as_typed_op!();
}

impl EvalOp for RowSoftmax {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let mut output = args_1!(inputs).into_tensor();
        let Some(&row_len) = output.shape().last() else { bail!("RowSoftmax on a scalar") };
        if output.strides() != &*Tensor::natural_strides(output.shape()) || row_len == 0 {
            return self.original.eval(ctx, tvec!(output.into_tvalue()));
        }
        {
            let mut plain = output.try_as_plain_ram_mut()?;
            for row in plain.as_slice_mut::<f32>()?.chunks_exact_mut(row_len) {
                softmax_row(row);
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for RowSoftmax {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type(), "RowSoftmax takes f32, got {:?}", inputs[0]);
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }
}

/// Replaces every f32 softmax over the last axis of the decluttered `model` by a [`RowSoftmax`]; returns how
/// many.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(softmax) = node.op_as::<Softmax>() else { continue };
        let input = model.outlet_fact(node.inputs[0])?;
        let last_axis = input.rank().checked_sub(1);
        let fits = softmax.kind == SoftmaxKind::Softmax
            && softmax.quant_output_dt.is_none()
            && input.datum_type == f32::datum_type()
            && last_axis.is_some_and(|last| softmax.axes.as_slice() == [last]);
        if !fits {
            continue;
        }
        let op = RowSoftmax { original: softmax.clone() };
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?;
        patch.apply(model)?;
        replaced += 1;
    }
    if replaced > 0 {
        model.compact()?;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let exact = (x as f64).exp();
            let ulp = (exact as f32).to_bits().abs_diff(exp_nonpositive(x).to_bits());
            worst = worst.max(ulp as f64);
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-10_000.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn rows_match_a_double_precision_softmax() {
        let rows: Vec<Vec<f32>> = vec![
            vec![0.0],
            vec![1.0, 2.0, 3.0],
            (0..17).map(|k| (k as f32 * 0.37).sin() * 8.0).collect(),
            // a padded key, masked with −10000 as the exporter does
            vec![0.5, -1.5, 2.0, -10_000.0, 0.25, 0.0, 1.0, 3.0, -2.0],
        ];
        for row in rows {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, |m, v| m.max(v as f64));
            let exps: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            let mut ours = row.clone();
            softmax_row(&mut ours);
            for (o, e) in ours.iter().zip(&exps) {
                let expected = e / sum;
                // the f32 subtraction of the maximum alone is off by up to half an ulp of the score (~1e-6
                // relative after exp, for scores near 8)
                assert!((*o as f64 - expected).abs() <= 2e-6 * expected.max(1e-30), "{o} vs {expected} in {row:?}");
            }
        }
    }
}
