//! The operators every stage graph is built from: LayerNorm, linear layers (f32 and int8 with the activation
//! quantized once), activations, and their portable forms.

use crate::onnx::{Attr, GraphBuilder};
use crate::quant;
use crate::weights::{Activation, LayerNorm, Linear};
use cosee_runtime::manifest::{Numerics, QuantScheme};
use tract_onnx::pb::tensor_proto::DataType;

use super::*;

pub(super) fn i64_tensor(g: &mut GraphBuilder, name: &str, values: &[i64]) -> String {
    g.i64s(name, &[values.len()], values)
}

pub(super) fn layer_norm(g: &mut GraphBuilder, x: &str, ln: &LayerNorm, prefix: &str, numerics: Numerics) -> String {
    let n = ln.weight.len();
    let gamma = g.f32s(&format!("{prefix}.weight"), &[n], &ln.weight);
    let beta = g.f32s(&format!("{prefix}.bias"), &[n], &ln.bias);
    match numerics {
        Numerics::Fused => g.op(
            "LayerNormalization",
            &[x, &gamma, &beta],
            vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(ln.eps))],
        ),
        Numerics::Portable => portable_layer_norm(g, x, ln, &gamma, &beta, prefix),
    }
}

// --- Portable numerics: the ops tract computes bit for bit alike on x86-64 and aarch64 ---
//
// Measured per op with tract 0.23.9 (x86-64 AVX-512 against qemu Cortex-A72/A76; scripts/check-aarch64.sh holds
// whole packages to it): elementwise IEEE operations (Add, Sub, Mul, Div, Sqrt, Round, Abs), ReduceMax, and
// `Exp` (one polynomial, the same FMA sequence on both) agree bit for bit, and so do matmuls with at least two
// output columns, whose kernels accumulate along k in order. tract's LayerNorm and softmax kernels (vector sums
// of different widths), its erf and GELU kernels (different polynomials), last-axis ReduceSum, and matmuls with
// one output column (matrix-vector kernels split k by CPU) do not.

/// Sums of the rows of `x` over its last axis (`width` long), `[.., 1]`: a matmul by the columns [1, 0], which
/// keeps tract on its k-ordered matrix kernels (one column would take the matrix-vector path, and an all-ones
/// operand is rewritten into a vector reduction).
pub(super) fn portable_row_sums(g: &mut GraphBuilder, x: &str, width: usize, prefix: &str) -> String {
    let columns: Vec<f32> = (0..width).flat_map(|_| [1.0, 0.0]).collect();
    let columns = g.f32s(&format!("{prefix}.sum_columns"), &[width, 2], &columns);
    let sums = g.op("MatMul", &[x, &columns], vec![]);
    first_column(g, &sums, prefix)
}

pub(super) fn first_column(g: &mut GraphBuilder, x: &str, prefix: &str) -> String {
    let start = i64_tensor(g, &format!("{prefix}.first.start"), &[0]);
    let end = i64_tensor(g, &format!("{prefix}.first.end"), &[1]);
    let axis = i64_tensor(g, &format!("{prefix}.first.axis"), &[-1]);
    g.op("Slice", &[x, &start, &end, &axis], vec![])
}

/// (x − mean) / √(var + ε) · γ + β with both means from [`portable_row_sums`].
pub(super) fn portable_layer_norm(
    g: &mut GraphBuilder,
    x: &str,
    ln: &LayerNorm,
    gamma: &str,
    beta: &str,
    prefix: &str,
) -> String {
    let width = ln.weight.len();
    let inv_width = g.scalar(&format!("{prefix}.inv_width"), 1.0 / width as f32);
    let eps = g.scalar(&format!("{prefix}.eps"), ln.eps);
    let sums = portable_row_sums(g, x, width, &format!("{prefix}.mean"));
    let mean = g.op("Mul", &[&sums, &inv_width], vec![]);
    let centred = g.op("Sub", &[x, &mean], vec![]);
    let squares = g.op("Mul", &[&centred, &centred], vec![]);
    let sums = portable_row_sums(g, &squares, width, &format!("{prefix}.var"));
    let var = g.op("Mul", &[&sums, &inv_width], vec![]);
    let var = g.op("Add", &[&var, &eps], vec![]);
    let std = g.op("Sqrt", &[&var], vec![]);
    let normed = g.op("Div", &[&centred, &std], vec![]);
    let scaled = g.op("Mul", &[&normed, gamma], vec![]);
    g.op("Add", &[&scaled, beta], vec![])
}

/// Softmax over the keys of `scores` `[batch, heads, query, key]`: exp(s − max) divided by its sum over the keys,
/// the sum a matmul by the key mask `[batch, 1, key, 2]` (two columns, see [`portable_row_sums`]). The mask
/// being 1 on every real key, this is the plain softmax; padded keys, already at exp(−10000) = 0, add nothing.
pub(super) fn portable_softmax(g: &mut GraphBuilder, scores: &str, key_mask: &str) -> String {
    let max = g.op("ReduceMax", &[scores], vec![("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(1))]);
    let shifted = g.op("Sub", &[scores, &max], vec![]);
    let exps = g.op("Exp", &[&shifted], vec![]);
    let axes = i64_tensor(g, "softmax.mask_axes", &[1, 3]);
    let column = g.op("Unsqueeze", &[key_mask, &axes], vec![]);
    let columns = g.op("Concat", &[&column, &column], vec![("axis", Attr::Int(-1))]);
    let sums = g.op("MatMul", &[&exps, &columns], vec![]);
    let sums = first_column(g, &sums, "softmax.sum");
    g.op("Div", &[&exps, &sums], vec![])
}

/// GELU in its tanh form, 0.5·x·(1 + tanh(u)) = x / (1 + exp(−2u)) with u = √(2/π)·(x + 0.044715·x³): only `Exp`
/// is transcendental. Used for exact-erf GELU models too (see [`computed_activation`]): it differs from the erf
/// form by at most 2.3e-4, a hundredth of the int8 step of a GELU output.
pub(super) fn portable_gelu(g: &mut GraphBuilder, x: &str) -> String {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    // −2u = x · (a·x² + b)
    let a = g.scalar("gelu.cubic", (-2.0 * c * 0.044715) as f32);
    let b = g.scalar("gelu.linear", (-2.0 * c) as f32);
    let one = g.scalar("gelu.one", 1.0);
    let x2 = g.op("Mul", &[x, x], vec![]);
    let t = g.op("Mul", &[&x2, &a], vec![]);
    let t = g.op("Add", &[&t, &b], vec![]);
    let t = g.op("Mul", &[&t, x], vec![]);
    let t = g.op("Exp", &[&t], vec![]);
    let t = g.op("Add", &[&t, &one], vec![]);
    g.op("Div", &[x, &t], vec![])
}

/// The activation a graph of these numerics computes for a model trained with `act`: portable numerics compute
/// GELU in its tanh form ([`portable_gelu`]). The reference forward pass follows the same rule.
pub fn computed_activation(act: Activation, numerics: Numerics) -> Activation {
    match (act, numerics) {
        (Activation::GeluErf, Numerics::Portable) => Activation::GeluTanh,
        (act, _) => act,
    }
}

/// `x Wᵀ + b` in f32, `scale` folded into W and b.
pub(super) fn linear_f32(g: &mut GraphBuilder, x: &str, lin: &Linear, prefix: &str, scale: f32) -> String {
    let wt = lin.weight.transposed();
    let data: Vec<f32> = wt.data.iter().map(|v| v * scale).collect();
    let bias: Vec<f32> = lin.bias.iter().map(|v| v * scale).collect();
    let w = g.f32s(&format!("{prefix}.weight"), &[wt.rows, wt.cols], &data);
    let b = g.f32s(&format!("{prefix}.bias"), &[bias.len()], &bias);
    let y = g.op("MatMul", &[x, &w], vec![]);
    g.op("Add", &[&y, &b], vec![])
}

/// A per-token quantized activation: s8 values and their f32 scale `[batch, sequence, 1]`.
pub(super) struct QuantizedInput {
    values: String,
    scale: String,
}

/// s = max(max|x| over hidden, ε) · (1/127); q = cast_s8(round(x / s)) (= the clipped formula, see below).
pub(super) fn quantize_activation(g: &mut GraphBuilder, x: &str) -> QuantizedInput {
    let abs = g.op("Abs", &[x], vec![]);
    let abs_max = g.op("ReduceMax", &[&abs], vec![("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(1))]);
    let floor = g.scalar(&format!("{abs_max}.floor"), quant::MIN_ABS_MAX);
    let inv_qmax = g.scalar(&format!("{abs_max}.inv_qmax"), quant::INV_QMAX);
    let abs_max = g.op("Max", &[&abs_max, &floor], vec![]);
    let scale = g.op("Mul", &[&abs_max, &inv_qmax], vec![]);
    let scaled = g.op("Div", &[x, &scale], vec![]);
    let rounded = g.op("Round", &[&scaled], vec![]);
    // No Clip: |x| ≤ max|x| makes |x / s| ≤ 127 up to an ulp, which rounds to at most 127, so the clip of the
    // formula never acts here — and tract's Clip is a scalar loop costing as much as the int8 matmul saves
    // (1.0 ms on [128, 1536], measured by examples/int8_timing.rs' predecessor probes).
    let values = g.op("Cast", &[&rounded], vec![("to", Attr::Int(DataType::Int8 as i64))]);
    QuantizedInput { values, scale }
}

/// A linear layer's initializers in both int8 forms: W `[in, out]` as s8, symmetric per output channel with
/// `scale` folded in before quantizing, its scales `[out]`, and the bias `[out]` (scaled alike) in f32.
struct Int8Weights {
    w: String,
    ws: String,
    b: String,
}

/// The weights symmetric per output channel, quantized to ±`qmax`.
fn int8_weights(g: &mut GraphBuilder, lin: &Linear, prefix: &str, scale: f32, qmax: f32) -> Int8Weights {
    let (out, inp) = (lin.out_features(), lin.in_features());
    let scaled: Vec<f32> = lin.weight.data.iter().map(|v| v * scale).collect();
    let (q, w_scales) = quant::quantize_rows_within(&scaled, out, inp, qmax);
    let bias: Vec<f32> = lin.bias.iter().map(|v| v * scale).collect();
    let w = g.i8s(&format!("{prefix}.weight_s8"), &[inp, out], &transposed(&q, out, inp));
    let ws = g.f32s(&format!("{prefix}.weight_scale"), &[out], &w_scales);
    let b = g.f32s(&format!("{prefix}.bias"), &[out], &bias);
    Int8Weights { w, ws, b }
}

/// `x Wᵀ + b` as s8×s8 MatMulInteger with per-output-channel weight scales (`scale` folded into W before
/// quantizing and into b).
pub(super) fn linear_int8(
    g: &mut GraphBuilder,
    x: &QuantizedInput,
    lin: &Linear,
    prefix: &str,
    scale: f32,
    rescale: Int8Rescale,
) -> String {
    let Int8Weights { w, ws, b } = int8_weights(g, lin, prefix, scale, quant::QMAX);
    let acc = g.op("MatMulInteger", &[&x.values, &w], vec![]);
    let acc = g.op("Cast", &[&acc], vec![("to", Attr::Int(DataType::Float as i64))]);
    let y = match rescale {
        Int8Rescale::Combined => {
            let s = g.op("Mul", &[&x.scale, &ws], vec![]);
            g.op("Mul", &[&acc, &s], vec![])
        }
        Int8Rescale::Sequential => {
            let y = g.op("Mul", &[&acc, &ws], vec![]);
            g.op("Mul", &[&y, &x.scale], vec![])
        }
    };
    g.op("Add", &[&y, &b], vec![])
}

/// An activation quantized per tensor by `DynamicQuantizeLinear`: u8 values, f32 scale and u8 zero point (scalars).
pub(super) struct DynamicQuantizedInput {
    values: String,
    scale: String,
    zero_point: String,
}

/// `x Wᵀ + b` in ONNX Runtime's dynamic int8 form ([`QuantScheme::Int8OrtDynamic`]), the node chain its
/// `quantize_dynamic(per_channel=True)` writes, so that ORT's graph optimizer recognises the chain and fuses it:
/// MatMulInteger(x_u8, W_s8, z_x) → Cast → Mul by (s_x · s_W) → Add b. W is symmetric per output channel (`scale`
/// folded in before quantizing, as in [`linear_int8`]): on the retrained SST-2 model per-channel weights gave 95.52 %
/// on the hold-out at full depth against 95.10 % per tensor (tract's `int8` form: 95.54 %), and ORT still fuses it.
/// The weights use 7 bits ([`quant::QMAX_U8_SAFE`]), so that ORT's u8×s8 kernels cannot saturate on CPUs without VNNI.
pub(super) fn linear_int8_dynamic(
    g: &mut GraphBuilder,
    x: &DynamicQuantizedInput,
    lin: &Linear,
    prefix: &str,
    scale: f32,
) -> String {
    let Int8Weights { w, ws, b } = int8_weights(g, lin, prefix, scale, quant::QMAX_U8_SAFE);
    let acc = g.op("MatMulInteger", &[&x.values, &w, &x.zero_point], vec![]);
    let acc = g.op("Cast", &[&acc], vec![("to", Attr::Int(DataType::Float as i64))]);
    let s = g.op("Mul", &[&x.scale, &ws], vec![]);
    let y = g.op("Mul", &[&acc, &s], vec![]);
    g.op("Add", &[&y, &b], vec![])
}

/// A row-major `[rows, cols]` matrix as `[cols, rows]`: a PyTorch weight `[out, in]` as MatMul's `[in, out]`.
fn transposed<T: Copy + Default>(data: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut t = vec![T::default(); data.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = data[r * cols + c];
        }
    }
    t
}

/// One linear layer input, quantized as the scheme asks, once for every layer reading it.
enum InputForm {
    F32,
    PerToken(QuantizedInput),
    Dynamic(DynamicQuantizedInput),
}

/// Linear layers reading one input: f32, or int8 sharing one quantization of that input.
pub(super) struct Linears<'a> {
    input: &'a str,
    quantized: InputForm,
    form: LayerForm,
}

impl<'a> Linears<'a> {
    pub(super) fn new(g: &mut GraphBuilder, input: &'a str, form: LayerForm) -> Self {
        let quantized = match form.scheme {
            QuantScheme::None => InputForm::F32,
            QuantScheme::Int8PerTokenSymmetric => InputForm::PerToken(quantize_activation(g, input)),
            QuantScheme::Int8OrtDynamic => {
                let [values, scale, zero_point] = g.op_n("DynamicQuantizeLinear", &[input], vec![]);
                InputForm::Dynamic(DynamicQuantizedInput { values, scale, zero_point })
            }
        };
        Self { input, quantized, form }
    }

    pub(super) fn apply(&self, g: &mut GraphBuilder, lin: &Linear, prefix: &str, scale: f32) -> String {
        match &self.quantized {
            InputForm::F32 => linear_f32(g, self.input, lin, prefix, scale),
            InputForm::PerToken(q) => linear_int8(g, q, lin, prefix, scale, self.form.rescale),
            InputForm::Dynamic(q) => linear_int8_dynamic(g, q, lin, prefix, scale),
        }
    }
}

pub(super) fn activation(g: &mut GraphBuilder, x: &str, act: Activation, numerics: Numerics) -> String {
    match act {
        Activation::GeluTanh if numerics == Numerics::Portable => portable_gelu(g, x),
        Activation::GeluErf => {
            // 0.5 · x · (1 + erf(x / √2))
            let sqrt2 = g.scalar("gelu.sqrt2", std::f32::consts::SQRT_2);
            let one = g.scalar("gelu.one", 1.0);
            let half = g.scalar("gelu.half", 0.5);
            let t = g.op("Div", &[x, &sqrt2], vec![]);
            let t = g.op("Erf", &[&t], vec![]);
            let t = g.op("Add", &[&t, &one], vec![]);
            let t = g.op("Mul", &[x, &t], vec![]);
            g.op("Mul", &[&t, &half], vec![])
        }
        Activation::GeluTanh => {
            // 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 x³)))
            let c = g.scalar("gelu.c", (2.0 / std::f32::consts::PI).sqrt());
            let k = g.scalar("gelu.k", 0.044715);
            let one = g.scalar("gelu.one", 1.0);
            let half = g.scalar("gelu.half", 0.5);
            let x2 = g.op("Mul", &[x, x], vec![]);
            let x3 = g.op("Mul", &[&x2, x], vec![]);
            let t = g.op("Mul", &[&x3, &k], vec![]);
            let t = g.op("Add", &[x, &t], vec![]);
            let t = g.op("Mul", &[&t, &c], vec![]);
            let t = g.op("Tanh", &[&t], vec![]);
            let t = g.op("Add", &[&t, &one], vec![]);
            let t = g.op("Mul", &[x, &t], vec![]);
            g.op("Mul", &[&t, &half], vec![])
        }
        Activation::Relu => g.op("Relu", &[x], vec![]),
    }
}
