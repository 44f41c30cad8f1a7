//! Symmetric int8 quantization, the math shared by the exporter (weights, embedding rows) and the reference
//! forward pass (activations), so both round the same way.
//!
//! Symmetric: q = clip(round(x / s), −127, 127) with s = max|x| / 127 and no zero point, so that a product of two
//! quantized values is a plain s8×s8 multiply-accumulate (ONNX MatMulInteger with no zero points), rescaled once
//! by s_x · s_w. Rounding is half to even, as ONNX `Round` does. −128 is never used, keeping the range symmetric.

/// The largest quantized magnitude.
pub const QMAX: f32 = 127.0;
/// Floor of max|x| before dividing, so that an all-zero row gets a finite scale (and quantizes to zeros).
pub const MIN_ABS_MAX: f32 = 1e-12;

/// 1/127 as an f32: scales are computed as max|x| · (1/127), a multiplication, because tract rewrites a
/// division by a constant into exactly this product; writing it so in both the graph and here keeps the exported
/// graph and the reference bit-identical.
pub const INV_QMAX: f32 = 1.0 / QMAX;

/// The scale of a group of values: max(max|x|, MIN_ABS_MAX) · (1/127).
pub fn symmetric_scale(values: &[f32]) -> f32 {
    scale_within(values, QMAX)
}

/// max(max|x|, MIN_ABS_MAX) · (1/qmax); at `QMAX` the factor is [`INV_QMAX`] exactly (both are f32 1/127).
fn scale_within(values: &[f32], qmax: f32) -> f32 {
    let abs_max = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    abs_max.max(MIN_ABS_MAX) * (1.0 / qmax)
}

/// clip(round_half_even(x / scale), −127, 127).
pub fn quantize_value(x: f32, scale: f32) -> i8 {
    quantize_value_within(x, scale, QMAX)
}

fn quantize_value_within(x: f32, scale: f32, qmax: f32) -> i8 {
    (x / scale).round_ties_even().clamp(-qmax, qmax) as i8
}

/// Quantizes a group with its own symmetric scale; returns (values, scale).
pub fn quantize_symmetric(values: &[f32]) -> (Vec<i8>, f32) {
    quantize_symmetric_within(values, QMAX)
}

/// [`quantize_symmetric`] with the largest quantized magnitude `qmax` (≤ 127).
fn quantize_symmetric_within(values: &[f32], qmax: f32) -> (Vec<i8>, f32) {
    let scale = scale_within(values, qmax);
    (values.iter().map(|&x| quantize_value_within(x, scale, qmax)).collect(), scale)
}

pub fn dequantize(values: &[i8], scale: f32) -> Vec<f32> {
    values.iter().map(|&q| q as f32 * scale).collect()
}

/// Per-row quantization of a row-major `[rows, cols]` matrix: one scale per row. For a PyTorch linear weight
/// `[out, in]` a row is an output channel; for the word-embedding table it is one token's vector.
pub fn quantize_rows(data: &[f32], rows: usize, cols: usize) -> (Vec<i8>, Vec<f32>) {
    quantize_rows_within(data, rows, cols, QMAX)
}

/// The weights' range in ONNX Runtime's u8×s8 form: ±64, 7 bits. Without VNNI, ONNX Runtime's x86 kernels multiply
/// u8 activations by s8 weights with `vpmaddubsw`, which adds two u8·s8 products into an *i16* and saturates: with
/// weights up to ±127 a pair reaches 2·255·127 = 64,770, past 32,767. Measured on an AMD EPYC (AVX2, no VNNI): the
/// logits of a full-range package were up to 0.54 away from the exact result. With |w| ≤ 64 a pair is at most
/// 2·255·64 = 32,640, so every CPU computes the exact sum (ONNX Runtime documents the same cure as `reduce_range`).
pub const QMAX_U8_SAFE: f32 = 64.0;

/// [`quantize_rows`] with the largest quantized magnitude `qmax` (≤ 127): q = clip(round(x / s), −qmax, qmax),
/// s = max|x| / qmax per row.
pub fn quantize_rows_within(data: &[f32], rows: usize, cols: usize, qmax: f32) -> (Vec<i8>, Vec<f32>) {
    assert_eq!(data.len(), rows * cols, "matrix data does not match its shape");
    assert!(qmax > 0.0 && qmax <= QMAX, "qmax {qmax} is outside (0, 127]");
    let mut q = Vec::with_capacity(data.len());
    let mut scales = Vec::with_capacity(rows);
    for row in data.chunks_exact(cols.max(1)).take(rows) {
        let (values, scale) = quantize_symmetric_within(row, qmax);
        q.extend(values);
        scales.push(scale);
    }
    (q, scales)
}

/// ONNX `DynamicQuantizeLinear` of a whole tensor, as the ONNX spec, tract and ONNX Runtime compute it: the range
/// [min(0, min x), max(0, max x)] spread over 0..=255, s = (max − min) / 255, zero point z = round(−min / s)
/// clipped to 0..=255, q = clip(round(x / s) + z, 0, 255), rounding half to even. Returns (q, s, z).
///
/// Asymmetric: unlike [`quantize_symmetric`], a product with an s8 weight needs the zero point subtracted, which
/// `MatMulInteger` does with its `a_zero_point` input.
pub fn quantize_dynamic_u8(values: &[f32]) -> (Vec<u8>, f32, u8) {
    let (min, max) = values.iter().fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let scale = (max - min) / 255.0;
    let zero_point = (-min / scale).round_ties_even().clamp(0.0, 255.0) as u8;
    let q = values
        .iter()
        .map(|&x| ((x / scale).round_ties_even() as i32 + zero_point as i32).clamp(0, 255) as u8)
        .collect();
    (q, scale, zero_point)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_bit_weights_keep_every_u8_pair_within_i16() {
        // Row 0: max 64/16 → s = 1/16, so 4.0 → 64 and −1.03125 → −16.5 → −16 (half to even); row 1 all zero.
        let (q, s) = quantize_rows_within(&[4.0, -1.03125, 0.5, 0.0, 0.0, 0.0], 2, 3, QMAX_U8_SAFE);
        assert_eq!((q, s[0]), (vec![64, -16, 8, 0, 0, 0], 1.0 / 16.0));
        // Whatever the data, |q| ≤ 64, and the worst pair of u8·s8 products an x86 kernel adds in an i16 fits.
        let data: Vec<f32> = (0..4096).map(|i| ((i * 7919) % 1000) as f32 - 500.0).collect();
        let (q, _) = quantize_rows_within(&data, 64, 64, QMAX_U8_SAFE);
        let widest = q.iter().map(|&v| (v as i32).abs()).max().unwrap();
        assert_eq!(widest, 64);
        assert!(2 * 255 * widest <= i16::MAX as i32);
        // With the full ±127 range the same bound fails: why ONNX Runtime's form needs the reduced one.
        assert!(2 * 255 * 127 > i16::MAX as i32);
        // At 127 it is `quantize_rows`, bit for bit.
        assert_eq!(quantize_rows_within(&data, 64, 64, QMAX), quantize_rows(&data, 64, 64));
    }

    /// The three examples of the ONNX operator documentation of `DynamicQuantizeLinear`.
    #[test]
    fn dynamic_u8_matches_the_onnx_examples() {
        let cases: [(&[f32], f32, u8, &[u8]); 3] = [
            (&[0., 2., -3., -2.5, 1.34, 0.5], 0.019_607_844, 153, &[153, 255, 0, 26, 221, 179]),
            (&[-1., -2.1, -1.3, -2.5, -3.34, -4.], 0.015_686_275, 255, &[191, 121, 172, 96, 42, 0]),
            (
                &[1., 2.1, 1.3, 2.5, 3.34, 4., 1.5, 2.6, 3.9, 4., 3., 2.345],
                0.015_686_275,
                0,
                &[64, 134, 83, 159, 213, 255, 96, 166, 249, 255, 191, 149],
            ),
        ];
        for (values, scale, zero_point, q) in cases {
            let (got_q, got_scale, got_zero) = quantize_dynamic_u8(values);
            assert!((got_scale - scale).abs() < 1e-8, "{got_scale} vs {scale}");
            assert_eq!((got_q.as_slice(), got_zero), (q, zero_point));
        }
    }

    #[test]
    fn hand_values() {
        // Values chosen so every step is exact in f32: max|x| = 127/32 → s = 1/32; 1.0 → 32; −127/32 → −127;
        // 0.5 steps round half to even: 0.015625 = 0.5 s → 0, 0.046875 = 1.5 s → 2.
        let (q, s) = quantize_symmetric(&[1.0, -3.96875, 0.015625, 0.046875]);
        assert!((s - 1.0 / 32.0).abs() < 1e-9, "{s}");
        assert_eq!(q, vec![32, -127, 0, 2]);
        let back = dequantize(&q, s);
        assert!(back.iter().zip([1.0, -3.96875, 0.0, 0.0625]).all(|(a, b)| (a - b).abs() < 1e-6), "{back:?}");
        // Beyond the scale's range (never produced by its own scale) clips to ±127.
        assert_eq!(quantize_value(10.0, s), 127);
        assert_eq!(quantize_value(-10.0, s), -127);
    }

    #[test]
    fn round_trip_error_is_at_most_half_a_step() {
        let values: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
        let (q, s) = quantize_symmetric(&values);
        let back = dequantize(&q, s);
        let worst = values.iter().zip(&back).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= s / 2.0 + 1e-6, "worst {worst} step {s}");
        assert!(q.iter().all(|&v| v != -128));
    }

    #[test]
    fn all_zero_rows_quantize_to_zero_with_finite_scale() {
        let (q, s) = quantize_symmetric(&[0.0, 0.0]);
        assert_eq!(q, vec![0, 0]);
        assert!(s.is_finite() && s > 0.0);
    }

    #[test]
    fn per_row_scales() {
        // Row 0: max 127/64 → s = 1/64; row 1: max 127/8 → s = 1/8: the small row keeps its own resolution.
        // −6.3125 = −50.5 steps → −50 (half to even); 0.0625 = 0.5 steps → 0.
        let (q, s) = quantize_rows(&[1.984375, 0.5, -0.0078125, 15.875, -6.3125, 0.0625], 2, 3);
        assert!((s[0] - 1.0 / 64.0).abs() < 1e-9 && (s[1] - 1.0 / 8.0).abs() < 1e-9, "{s:?}");
        assert_eq!(q, vec![127, 32, 0, 127, -50, 0]);
    }
}
