//! Per-token int8 quantization of an activation in one pass.
//!
//! The exporter writes it with standard ONNX operators (`tools/src/stages/ops.rs`, `quantize_activation`):
//!
//! ```text
//! s = max(ReduceMax(|x|, last axis), floor) · inv_qmax        [.., tokens, 1]
//! q = Cast<s8>(Round(x / s))                                  [.., tokens, hidden]
//! ```
//!
//! which tract, after decluttering (`x / s` becomes `x · Recip(s)`), evaluates as seven operators, each a pass over
//! the activation with a tensor allocated for its result: 0.25 ms of a 1.05 ms int8 layer at 16 tokens
//! (docs/ort-side-by-side.md). [`QuantizePerToken`] computes both outputs row by row in cache, with the same f32
//! operations in the same order, so its values are bit for bit the graph's on every CPU (the portable-numerics
//! guarantee of `scripts/check-aarch64.sh` holds through it).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::{binary_with_constant, is_element_wise, single_input_node};
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::math::{Abs, Max, Mul, Recip, RoundHalfToEven};
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};

/// `(q, s)` of the pattern above for `x` `[.., hidden]` f32: `q` s8 of `x`'s shape, `s` f32 `[.., 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizePerToken {
    /// The smallest absolute maximum a row is scaled by (the exporter's `MIN_ABS_MAX`: an all-zero row stays 0).
    pub floor: f32,
    /// 1 / the largest quantized value (1/127).
    pub inv_qmax: f32,
}

impl Eq for QuantizePerToken {}

/// f32 values below this magnitude round to nearest-even by adding and subtracting it (the sum's ulp is 1). Exact
/// for |y| < 2²²; [`QuantizePerToken::fits`] keeps every quantized value far inside that.
const ROUNDING_MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³

impl QuantizePerToken {
    /// Whether the one-pass rounding is exact for these constants: |x · (1/s)| ≤ 1/inv_qmax (up to an ulp).
    fn fits(&self) -> bool {
        self.floor >= 0.0 && self.inv_qmax > 0.0 && self.inv_qmax.recip() < (1u32 << 21) as f32
    }

    /// Quantizes one row of the activation into `q`; returns its scale. With AVX2's 8-lane vectors where the
    /// CPU has them: the same IEEE operations lane by lane, so the same values as the baseline build.
    fn row(&self, x: &[f32], q: &mut [i8]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU has AVX-512F and BW, checked just above.
            return unsafe { self.row_avx512(x, q) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { self.row_avx2(x, q) };
        }
        self.row_body(x, q)
    }

    /// AVX-512: 16-lane vectors and a narrowing store to bytes (`vpmovdb`); the same operations lane by lane.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx2")]
    unsafe fn row_avx512(&self, x: &[f32], q: &mut [i8]) -> f32 {
        self.row_body(x, q)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn row_avx2(&self, x: &[f32], q: &mut [i8]) -> f32 {
        self.row_body(x, q)
    }

    #[inline(always)]
    fn row_body(&self, x: &[f32], q: &mut [i8]) -> f32 {
        // The absolute maximum over 8 independent lanes, which the compiler keeps in vector registers. `>` rather
        // than `f32::max`: no NaN handling in the loop (a NaN activation gives garbage either way).
        let mut lanes = [0f32; 8];
        let mut chunks = x.chunks_exact(8);
        for chunk in &mut chunks {
            for (m, v) in lanes.iter_mut().zip(chunk) {
                let a = v.abs();
                *m = if a > *m { a } else { *m };
            }
        }
        let abs_max = chunks.remainder().iter().fold(lanes.iter().copied().fold(0f32, f32::max), |m, v| m.max(v.abs()));
        // The graph's own operations, in its order: Max, Mul, Recip, then Mul and round half to even per value.
        let scale = abs_max.max(self.floor) * self.inv_qmax;
        let inverse = scale.recip();
        // y + 1.5·2²³ rounds y to an integer (half to even) held in the low bits of the sum's mantissa: the
        // integer is the sum's bit pattern less the constant's. Integer arithmetic on the bits vectorizes where
        // a saturating float-to-int `as` does not; for |y| ≤ 128 the result is the graph's Round then Cast
        // exactly (a canonical NaN, which the graph casts to 0, also comes out 0).
        let magic_bits = ROUNDING_MAGIC.to_bits() as i32;
        for (o, &v) in q.iter_mut().zip(x) {
            let sum = v * inverse + ROUNDING_MAGIC;
            *o = (sum.to_bits() as i32).wrapping_sub(magic_bits) as i8;
        }
        scale
    }
}

impl Op for QuantizePerToken {
    fn name(&self) -> StaticName {
        "QuantizePerToken".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("floor {:e}, inv_qmax {:e}", self.floor, self.inv_qmax)])
    }

    op_as_typed_op!();
}

impl EvalOp for QuantizePerToken {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let shape: TVec<usize> = x.shape().into();
        let width = *shape.last().context("QuantizePerToken on a scalar")?;
        let values = x.try_as_plain_ram()?;
        let values = values.as_slice::<f32>()?;
        let rows = values.len().checked_div(width).unwrap_or(0);
        let mut scale_shape = shape.clone();
        if let Some(last) = scale_shape.last_mut() {
            *last = 1;
        }
        let mut scales = Vec::with_capacity(rows);
        let q = super::tensor_filled(&shape, |q| {
            if width > 0 {
                for (x, q) in values.chunks_exact(width).zip(q.chunks_exact_mut(width)) {
                    scales.push(self.row(x, q));
                }
            }
        })?;
        // A few floats: the copy into a tensor costs nothing.
        let scales = Tensor::from_shape(&scale_shape, &scales)?;
        Ok(tvec!(q.into_tvalue(), scales.into_tvalue()))
    }
}

impl TypedOp for QuantizePerToken {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        ensure!(x.datum_type == f32::datum_type() && x.rank() > 0, "QuantizePerToken takes an f32 tensor, got {x:?}");
        let mut scale_shape: TVec<TDim> = x.shape.to_tvec();
        if let Some(last) = scale_shape.last_mut() {
            *last = 1.to_dim();
        }
        Ok(tvec!(i8::fact(x.shape.clone()), f32::fact(scale_shape)))
    }
}

/// Replaces every per-token quantization of the decluttered `model` by one [`QuantizePerToken`]; returns how many.
/// A graph without the pattern (f32 packages, the embeddings, exits) is left as it is.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    super::replace_all(model, "quantize_per_token", |model, node| {
        Ok(matched(model, node)?.map(|f| super::Replacement {
            named_after: f.cast,
            inputs: tvec![f.input],
            op: f.op,
            replaces: tvec![f.cast.into(), f.scale],
        }))
    })
}

/// One occurrence of the pattern: the activation, the nodes whose outputs are replaced, the op replacing them.
struct Found {
    input: OutletId,
    cast: usize,
    scale: OutletId,
    op: QuantizePerToken,
}

/// The pattern ending at node `cast`, if it is one (walking up from the s8 cast).
fn matched(model: &TypedModel, cast: usize) -> TractResult<Option<Found>> {
    let node = model.node(cast);
    if node.op_as::<Cast>().is_none_or(|c| c.to != i8::datum_type()) {
        return Ok(None);
    }
    let Some(round) = single_input_node(model, cast).filter(|&n| is_element_wise::<RoundHalfToEven>(model, n)) else {
        return Ok(None);
    };
    let Some(product) = single_input_node(model, round).filter(|&n| super::binary_inputs::<Mul>(model, n).is_some())
    else {
        return Ok(None);
    };
    // x · Recip(s), either order.
    let inputs = &model.node(product).inputs;
    let Some(recip_at) = inputs.iter().position(|o| is_element_wise::<Recip>(model, o.node)) else {
        return Ok(None);
    };
    let input = inputs[1 - recip_at];
    let scale = model.node(inputs[recip_at].node).inputs[0];
    // s = Max(ReduceMax(|x|), floor) · inv_qmax.
    let Some((maximum, inv_qmax)) = binary_with_constant::<Mul>(model, scale.node)? else { return Ok(None) };
    let Some((reduced, floor)) = binary_with_constant::<Max>(model, maximum.node)? else { return Ok(None) };
    let rank = model.outlet_fact(input)?.rank();
    let reduce_ok = model
        .node(reduced.node)
        .op_as::<Reduce>()
        .is_some_and(|r| r.reducer == Reducer::Max && r.axes.as_slice() == [rank - 1]);
    if !reduce_ok {
        return Ok(None);
    }
    let Some(abs) = single_input_node(model, reduced.node).filter(|&n| is_element_wise::<Abs>(model, n)) else {
        return Ok(None);
    };
    if model.node(abs).inputs[0] != input || model.outlet_fact(input)?.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let op = QuantizePerToken { floor, inv_qmax };
    Ok(op.fits().then_some(Found { input, cast, scale, op }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exporter's chain in tract's decluttered form, evaluated op by op, against the fused row.
    #[test]
    fn one_pass_equals_the_graph_bit_for_bit() {
        let op = QuantizePerToken { floor: 1e-8, inv_qmax: 1.0 / 127.0 };
        let mut rows: Vec<Vec<f32>> = vec![
            vec![0.0; 13],
            vec![1.0, -1.0, 0.5, -0.5, 0.25],
            (0..40).map(|k| k as f32 / 254.0 * 2.0 - 0.3).collect(),
            (0..384).map(|k| ((k * 7919) % 1000) as f32 / 37.0 - 13.0).collect(),
        ];
        rows.push(rows[3].iter().map(|v| v * 1e-6).collect());
        for x in rows {
            check(&op, &x);
        }
        // Exact halves: with these constants s = 2 · 0.5 = 1, and round half to even must leave 0.5 at 0, 1.5 at 2.
        let halves = QuantizePerToken { floor: 2.0, inv_qmax: 0.5 };
        let mut q = vec![0i8; 6];
        assert_eq!(halves.row(&[0.5, 1.5, -0.5, -1.5, 2.0, 1.25], &mut q), 1.0);
        assert_eq!(q, [0, 2, 0, -2, 2, 1]);
        check(&halves, &[0.5, 1.5, 1.25, -1.5, 1.75]);
    }

    /// The fused row against the decluttered graph's operations one by one.
    fn check(op: &QuantizePerToken, x: &[f32]) {
        let abs_max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = abs_max.max(op.floor) * op.inv_qmax;
        let expected: Vec<i8> = x.iter().map(|v| (v * scale.recip()).round_ties_even() as i8).collect();
        let mut q = vec![0i8; x.len()];
        assert_eq!(op.row(x, &mut q).to_bits(), scale.to_bits());
        assert_eq!(q, expected);
    }

    #[test]
    fn refuses_constants_outside_the_exact_rounding() {
        assert!(QuantizePerToken { floor: 1e-8, inv_qmax: 1.0 / 127.0 }.fits());
        assert!(!QuantizePerToken { floor: 1e-8, inv_qmax: 1e-9 }.fits());
        assert!(!QuantizePerToken { floor: -1.0, inv_qmax: 1.0 / 127.0 }.fits());
    }
}
