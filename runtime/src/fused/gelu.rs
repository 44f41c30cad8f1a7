//! The exact (erf) GELU of the FFN, computed inside the int8 output stage that precedes it.
//!
//! In a layer of a fused-numerics int8 package the FFN's first linear layer ends in an output stage
//! ([`super::rescale::RescaleInt8`]) whose only consumer is tract's `GeluExact`: a second pass over the widest
//! activation of the layer (`tokens × 1536`), 6 % of a fused layer at 64 tokens on an AMD EPYC
//! (`examples/fusion.rs --profile`). [`fuse`] folds the GELU into the output stage, so each value is activated
//! while its row is still in cache and no intermediate tensor is written.
//!
//! The erf is a rational approximation of our own, not tract's, so the outputs differ from the plain graph's in
//! their last bits (both within about 1e-6 of the true GELU, see the tests). Its polynomials use fused
//! multiply-adds where the CPU has AVX2 and FMA (the fold then saves a quarter of the GELU's and output stage's
//! time; without FMA it saved nothing measurable), so x86 machines with and without FMA differ in those last bits;
//! fused-numerics packages promise no more. Portable-numerics packages spell their GELU with `Exp` (tanh form) and
//! are untouched.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::nn::GeluExact;

use super::rescale::RescaleInt8;

/// 1/√2.
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// erf(x) as x·P(x²)/Q(x²) on [−4, 4] (beyond it erf is ±1 to within 2e-8), the polynomials by fused multiply-adds
/// when `FMA`: the rational minimax form of Eigen's `generic_fast_erf_float`, absolute error below 7e-8 in exact
/// arithmetic and 4e-7 in f32 (its Horner steps round; worst near |x| = 3–4, where erf is ±1 to a few ulp).
/// Branch-free, so a loop over it vectorizes.
#[inline(always)]
pub fn erf<const FMA: bool>(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let step = |acc: f32, &c: &f32| if FMA { acc.mul_add(x2, c) } else { acc * x2 + c };
    let p = ERF_P.iter().fold(0.0f32, step);
    let q = ERF_Q.iter().fold(0.0f32, step);
    // Clamped to [−1, 1]: near ±4 the quotient overshoots by an ulp, and 1 + erf must not turn negative.
    (x * p / q).clamp(-1.0, 1.0)
}

/// Numerator coefficients, x¹³ down to x¹ (Eigen's `generic_fast_erf_float`).
const ERF_P: [f32; 7] = [
    -2.726_142_258_013_06e-10_f64 as f32,
    2.770_681_424_959_02e-8_f64 as f32,
    -2.101_024_020_825_08e-6_f64 as f32,
    -5.692_506_394_623_46e-5_f64 as f32,
    -7.349_906_303_268_55e-4_f64 as f32,
    -2.954_599_808_540_25e-3_f64 as f32,
    -1.609_603_332_624_15e-2_f64 as f32,
];
/// Denominator coefficients, x⁸ down to x⁰.
const ERF_Q: [f32; 5] = [
    -1.456_607_184_649_96e-5_f64 as f32,
    -2.133_740_552_789_05e-4_f64 as f32,
    -1.682_826_974_382_03e-3_f64 as f32,
    -7.373_329_167_204_68e-3_f64 as f32,
    -1.426_473_905_141_89e-2_f64 as f32,
];

/// GELU(x) = x/2 · (1 + erf(x/√2)), in the operation order of tract's `GeluExact`.
#[inline(always)]
pub fn gelu<const FMA: bool>(x: f32) -> f32 {
    (x * 0.5) * (erf::<FMA>(x * FRAC_1_SQRT_2) + 1.0)
}

/// Folds every f32 `GeluExact` whose input is a fused int8 output stage used by nothing else into that stage;
/// returns how many. Run after [`super::rescale::fuse`]; any other GELU (f32 packages) is left to tract.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    super::replace_all(model, "gelu", |model, node| {
        let gelu = model.node(node);
        if !super::is_element_wise::<GeluExact>(model, node) || gelu.outputs[0].fact.datum_type != f32::datum_type() {
            return Ok(None);
        }
        let Some(stage) = super::single_input_node(model, node) else { return Ok(None) };
        let fused = match model.node(stage).op_as::<RescaleInt8>() {
            Some(op) if !op.gelu && super::used_once(model, stage.into()) => RescaleInt8 { gelu: true, ..op.clone() },
            _ => return Ok(None),
        };
        let inputs = model.node(stage).inputs.iter().copied().collect();
        Ok(Some(super::Replacement { named_after: stage, inputs, op: fused, replaces: tvec![node.into()] }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::element_wise::ElementWiseMiniOp;

    /// erf in double precision: its Taylor series up to 3 (cancellation costs ~1e-12 there), beyond it 1 − erfc by
    /// erfc's continued fraction, erfc(x) = e^(−x²)/√π / (x + (1/2)/(x + 1/(x + (3/2)/(x + …)))).
    fn erf_f64(x: f64) -> f64 {
        if x.abs() > 3.0 {
            let a = x.abs();
            let fraction = (1..80).rev().fold(a, |tail, k| a + (k as f64 / 2.0) / tail);
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / fraction;
            return x.signum() * (1.0 - erfc);
        }
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    fn grid() -> impl Iterator<Item = f32> {
        (-12_000..=12_000).map(|k| k as f32 / 1000.0).chain([0.0, -0.0, 1e-30, -1e-30, 40.0, -40.0, 1e6, -1e6])
    }

    #[test]
    fn erf_is_within_4e7_of_the_true_value() {
        for erf in [erf::<false>, erf::<true>] {
            for x in grid() {
                let err = (erf(x) as f64 - erf_f64(x as f64)).abs();
                assert!(err < 4e-7, "erf({x}) = {} off by {err:e}", erf(x));
                assert!(erf(x).abs() <= 1.0, "erf({x}) = {}", erf(x));
            }
            assert_eq!(erf(0.0), 0.0);
            assert_eq!(erf(-2.0), -erf(2.0));
        }
    }

    /// Ours and tract's against the exact GELU: both within about 1e-6 (tract's own worst is 8.1e-7 on this grid,
    /// ours 9.9e-7, both near x = −5.6 where 1 + erf cancels), and so within 2e-6 of each other.
    #[test]
    fn gelu_is_as_close_to_the_exact_value_as_tracts() {
        let xs: Vec<f32> = grid().filter(|x| x.abs() < 100.0).collect();
        let mut tract = tract_ndarray::arr1(&xs).into_tensor();
        GeluExact {}.eval_in_place(&mut tract, None).unwrap();
        let tract = tract.try_as_plain_ram().unwrap();
        for (&x, &t) in xs.iter().zip(tract.as_slice::<f32>().unwrap()) {
            for gelu in [gelu::<false>, gelu::<true>] {
                let exact = x as f64 * 0.5 * (1.0 + erf_f64(x as f64 / std::f64::consts::SQRT_2));
                let ours = gelu(x);
                let rounding = 2.0 * f32::EPSILON as f64 * exact.abs();
                assert!((ours as f64 - exact).abs() <= 1.2e-6 + rounding, "gelu({x}) = {ours}, exact {exact}");
                assert!((ours - t).abs() as f64 <= 2e-6 + 2.0 * rounding, "gelu({x}) = {ours}, tract {t}");
                assert!(x >= 0.0 || ours <= 0.0, "gelu({x}) = {ours} has the wrong sign");
            }
        }
    }
}
