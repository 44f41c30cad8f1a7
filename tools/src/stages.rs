//! The three kinds of stage graph of a package — embeddings, one encoder layer, one exit — built from the
//! checkpoint's weights with standard ONNX operators (opset [`crate::onnx::OPSET`]) and symbolic `batch` and
//! `sequence` dimensions, so one file serves every input length in tract and in ONNX Runtime.
//!
//! The layer follows Hugging Face's `BertLayer` exactly (post-LayerNorm, additive mask of −10000 on padded keys,
//! exact-erf GELU). In int8 form each linear layer becomes s8×s8 `MatMulInteger` over per-token symmetric
//! activations and per-output-channel symmetric weights ([`crate::quant`]), the activation quantized with basic
//! operators (ReduceMax of |x|, Div, Round, Cast) once per input and shared by the layers reading it (Q/K/V):
//! tract's `DynamicQuantizeLinear` and `QuantizeLinear` are scalar loops that cost more than the int8 matmul
//! saves, while these elementwise operators are vectorized. LayerNorm, softmax and GELU stay f32, written as the
//! standard operators or, for [`Numerics::Portable`], from operations tract computes bit for bit alike on x86-64
//! and aarch64 (see `portable_*` below).

use crate::onnx::{Attr, Dim, Elem, GraphBuilder};
use crate::quant;
use crate::weights::{Activation, EmbeddingWeights, ExitWeights, LayerNorm, LayerWeights, Linear};
use cosee_runtime::config::Pooling;
use cosee_runtime::manifest::{io_names, EmbeddingStorage, Numerics, QuantScheme};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::ModelProto;

/// The additive attention mask on padded keys, as in Hugging Face BERT and the trainer: (1 − mask) · −10000.
pub const MASK_VALUE: f32 = -10000.0;

const BATCH: Dim = Dim::Symbol(io_names::BATCH_DIM);
const SEQUENCE: Dim = Dim::Symbol(io_names::SEQUENCE_DIM);

/// Where an int8 linear layer applies its two scales; the variants are measured by `examples/int8_timing.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Int8Rescale {
    /// One Mul of the int32→f32 accumulator by (activation scale × weight scale), the product formed first.
    Combined,
    /// Two Muls on the accumulator: by the per-channel weight scales, then by the per-token activation scale.
    /// Faster in tract (the constant per-channel Mul folds into the matmul's output stage).
    #[default]
    Sequential,
}

/// How the linear layers of an encoder layer are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerForm {
    pub scheme: QuantScheme,
    pub rescale: Int8Rescale,
    /// Q, K and V as one `[hidden, 3·hidden]` matmul followed by a Split, instead of three matmuls.
    pub fused_qkv: bool,
    pub numerics: Numerics,
}

impl LayerForm {
    pub fn f32() -> Self {
        Self { scheme: QuantScheme::None, rescale: Int8Rescale::default(), fused_qkv: false, numerics: Numerics::Fused }
    }
    pub fn int8() -> Self {
        Self {
            scheme: QuantScheme::Int8PerTokenSymmetric,
            rescale: Int8Rescale::default(),
            fused_qkv: false,
            numerics: Numerics::Fused,
        }
    }
    pub fn of(scheme: QuantScheme) -> Self {
        match scheme {
            QuantScheme::None => Self::f32(),
            QuantScheme::Int8PerTokenSymmetric => Self::int8(),
        }
    }
}

fn i64_tensor(g: &mut GraphBuilder, name: &str, values: &[i64]) -> String {
    g.i64s(name, &[values.len()], values)
}

fn layer_norm(g: &mut GraphBuilder, x: &str, ln: &LayerNorm, prefix: &str, numerics: Numerics) -> String {
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
fn portable_row_sums(g: &mut GraphBuilder, x: &str, width: usize, prefix: &str) -> String {
    let columns: Vec<f32> = (0..width).flat_map(|_| [1.0, 0.0]).collect();
    let columns = g.f32s(&format!("{prefix}.sum_columns"), &[width, 2], &columns);
    let sums = g.op("MatMul", &[x, &columns], vec![]);
    first_column(g, &sums, prefix)
}

fn first_column(g: &mut GraphBuilder, x: &str, prefix: &str) -> String {
    let start = i64_tensor(g, &format!("{prefix}.first.start"), &[0]);
    let end = i64_tensor(g, &format!("{prefix}.first.end"), &[1]);
    let axis = i64_tensor(g, &format!("{prefix}.first.axis"), &[-1]);
    g.op("Slice", &[x, &start, &end, &axis], vec![])
}

/// (x − mean) / √(var + ε) · γ + β with both means from [`portable_row_sums`].
fn portable_layer_norm(g: &mut GraphBuilder, x: &str, ln: &LayerNorm, gamma: &str, beta: &str, prefix: &str) -> String {
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
fn portable_softmax(g: &mut GraphBuilder, scores: &str, key_mask: &str) -> String {
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
fn portable_gelu(g: &mut GraphBuilder, x: &str) -> String {
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
fn linear_f32(g: &mut GraphBuilder, x: &str, lin: &Linear, prefix: &str, scale: f32) -> String {
    let wt = lin.weight.transposed();
    let data: Vec<f32> = wt.data.iter().map(|v| v * scale).collect();
    let bias: Vec<f32> = lin.bias.iter().map(|v| v * scale).collect();
    let w = g.f32s(&format!("{prefix}.weight"), &[wt.rows, wt.cols], &data);
    let b = g.f32s(&format!("{prefix}.bias"), &[bias.len()], &bias);
    let y = g.op("MatMul", &[x, &w], vec![]);
    g.op("Add", &[&y, &b], vec![])
}

/// A per-token quantized activation: s8 values and their f32 scale `[batch, sequence, 1]`.
struct QuantizedInput {
    values: String,
    scale: String,
}

/// s = max(max|x| over hidden, ε) · (1/127); q = cast_s8(round(x / s)) (= the clipped formula, see below).
fn quantize_activation(g: &mut GraphBuilder, x: &str) -> QuantizedInput {
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

/// `x Wᵀ + b` as s8×s8 MatMulInteger with per-output-channel weight scales (`scale` folded into W before
/// quantizing and into b).
fn linear_int8(
    g: &mut GraphBuilder,
    x: &QuantizedInput,
    lin: &Linear,
    prefix: &str,
    scale: f32,
    rescale: Int8Rescale,
) -> String {
    let (out, inp) = (lin.out_features(), lin.in_features());
    let scaled: Vec<f32> = lin.weight.data.iter().map(|v| v * scale).collect();
    let (q, w_scales) = quant::quantize_rows(&scaled, out, inp);
    // [out, in] → [in, out] for MatMul.
    let mut qt = vec![0i8; q.len()];
    for o in 0..out {
        for i in 0..inp {
            qt[i * out + o] = q[o * inp + i];
        }
    }
    let bias: Vec<f32> = lin.bias.iter().map(|v| v * scale).collect();
    let w = g.i8s(&format!("{prefix}.weight_s8"), &[inp, out], &qt);
    let ws = g.f32s(&format!("{prefix}.weight_scale"), &[out], &w_scales);
    let b = g.f32s(&format!("{prefix}.bias"), &[out], &bias);
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

/// Linear layers reading one input: f32, or int8 sharing one quantization of that input.
struct Linears<'a> {
    input: &'a str,
    quantized: Option<QuantizedInput>,
    form: LayerForm,
}

impl<'a> Linears<'a> {
    fn new(g: &mut GraphBuilder, input: &'a str, form: LayerForm) -> Self {
        let quantized = match form.scheme {
            QuantScheme::None => None,
            QuantScheme::Int8PerTokenSymmetric => Some(quantize_activation(g, input)),
        };
        Self { input, quantized, form }
    }

    fn apply(&self, g: &mut GraphBuilder, lin: &Linear, prefix: &str, scale: f32) -> String {
        match &self.quantized {
            None => linear_f32(g, self.input, lin, prefix, scale),
            Some(q) => linear_int8(g, q, lin, prefix, scale, self.form.rescale),
        }
    }
}

fn activation(g: &mut GraphBuilder, x: &str, act: Activation, numerics: Numerics) -> String {
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

/// `embeddings.onnx`: LayerNorm(word[ids] + position[0..S] + token_type[types]). The word table is stored as
/// f32, f16 (Cast after the Gather) or per-row int8 (Cast, then Mul by the gathered row scale).
pub fn embeddings_graph(w: &EmbeddingWeights, storage: EmbeddingStorage, numerics: Numerics) -> ModelProto {
    let h = w.word.cols;
    let mut g = GraphBuilder::new("embeddings");
    let ids = g.input(io_names::INPUT_IDS, Elem::I64, &[BATCH, SEQUENCE]);
    let types = g.input(io_names::TOKEN_TYPE_IDS, Elem::I64, &[BATCH, SEQUENCE]);
    // Part of every stage's interface; the embeddings do not need it.
    g.input(io_names::ATTENTION_MASK, Elem::I64, &[BATCH, SEQUENCE]);

    let word = match storage {
        EmbeddingStorage::F32 => {
            let table = g.f32s("embeddings.word_embeddings.weight", &[w.word.rows, h], &w.word.data);
            g.op("Gather", &[&table, &ids], vec![("axis", Attr::Int(0))])
        }
        EmbeddingStorage::F16 => {
            let data: Vec<half::f16> = w.word.data.iter().map(|&v| half::f16::from_f32(v)).collect();
            let table = g.f16s("embeddings.word_embeddings.weight_f16", &[w.word.rows, h], &data);
            let rows = g.op("Gather", &[&table, &ids], vec![("axis", Attr::Int(0))]);
            g.op("Cast", &[&rows], vec![("to", Attr::Int(DataType::Float as i64))])
        }
        EmbeddingStorage::Int8 => {
            let (q, scales) = quant::quantize_rows(&w.word.data, w.word.rows, h);
            let table = g.i8s("embeddings.word_embeddings.weight_s8", &[w.word.rows, h], &q);
            let scale_table = g.f32s("embeddings.word_embeddings.row_scale", &[w.word.rows, 1], &scales);
            let rows = g.op("Gather", &[&table, &ids], vec![("axis", Attr::Int(0))]);
            let rows = g.op("Cast", &[&rows], vec![("to", Attr::Int(DataType::Float as i64))]);
            let scales = g.op("Gather", &[&scale_table, &ids], vec![("axis", Attr::Int(0))]);
            g.op("Mul", &[&rows, &scales], vec![])
        }
    };
    let type_table = g.f32s("embeddings.token_type_embeddings.weight", &[w.token_type.rows, h], &w.token_type.data);
    let token_type = g.op("Gather", &[&type_table, &types], vec![("axis", Attr::Int(0))]);
    // Positions 0..S: the first S rows of the table, S read from the input's shape.
    let pos_table = g.f32s("embeddings.position_embeddings.weight", &[w.position.rows, h], &w.position.data);
    let shape = g.op("Shape", &[&ids], vec![]);
    let one = i64_tensor(&mut g, "const.one", &[1]);
    let two = i64_tensor(&mut g, "const.two", &[2]);
    let zero = i64_tensor(&mut g, "const.zero", &[0]);
    let seq_len = g.op("Slice", &[&shape, &one, &two, &zero], vec![]);
    let position = g.op("Slice", &[&pos_table, &zero, &seq_len, &zero], vec![]);
    let sum = g.op("Add", &[&word, &token_type], vec![]);
    let sum = g.op("Add", &[&sum, &position], vec![]);
    let out = layer_norm(&mut g, &sum, &w.layer_norm, "embeddings.LayerNorm", numerics);
    g.output(&out, io_names::HIDDEN_STATES, Elem::F32, &[BATCH, SEQUENCE, Dim::Fixed(h)]);
    g.build()
}

/// `layer_XX.onnx`: one BERT encoder layer (attention with the additive mask, then the feed-forward block),
/// `layer` being 1-based for naming only.
pub fn layer_graph(w: &LayerWeights, num_heads: usize, act: Activation, form: LayerForm, layer: usize) -> ModelProto {
    let h = w.query.out_features();
    let head_dim = h / num_heads;
    let mut g = GraphBuilder::new(&format!("layer_{layer:02}"));
    let x = g.input(io_names::HIDDEN_STATES, Elem::F32, &[BATCH, SEQUENCE, Dim::Fixed(h)]);
    let mask = g.input(io_names::ATTENTION_MASK, Elem::I64, &[BATCH, SEQUENCE]);

    // Additive key mask [batch, 1, 1, sequence].
    let maskf = g.op("Cast", &[&mask], vec![("to", Attr::Int(DataType::Float as i64))]);
    let one = g.scalar("mask.one", 1.0);
    let big = g.scalar("mask.value", MASK_VALUE);
    let inverted = g.op("Sub", &[&one, &maskf], vec![]);
    let additive = g.op("Mul", &[&inverted, &big], vec![]);
    let axes = i64_tensor(&mut g, "mask.axes", &[1, 2]);
    let additive = g.op("Unsqueeze", &[&additive, &axes], vec![]);

    // Q, K, V; 1/√d folded into the query so the scores need no extra pass.
    let qkv_in = Linears::new(&mut g, &x, form);
    let q_scale = 1.0 / (head_dim as f32).sqrt();
    let (q, k, v) = if form.fused_qkv {
        let fused = fuse_qkv(w, q_scale);
        let qkv = qkv_in.apply(&mut g, &fused, "attention.self.qkv", 1.0);
        split3(&mut g, &qkv, h)
    } else {
        (
            qkv_in.apply(&mut g, &w.query, "attention.self.query", q_scale),
            qkv_in.apply(&mut g, &w.key, "attention.self.key", 1.0),
            qkv_in.apply(&mut g, &w.value, "attention.self.value", 1.0),
        )
    };
    let heads = i64_tensor(&mut g, "attention.heads_shape", &[0, 0, num_heads as i64, head_dim as i64]);
    let q = g.op("Reshape", &[&q, &heads], vec![]);
    let q = g.op("Transpose", &[&q], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
    let k = g.op("Reshape", &[&k, &heads], vec![]);
    let k = g.op("Transpose", &[&k], vec![("perm", Attr::Ints(vec![0, 2, 3, 1]))]);
    let v = g.op("Reshape", &[&v, &heads], vec![]);
    let v = g.op("Transpose", &[&v], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
    let scores = g.op("MatMul", &[&q, &k], vec![]);
    let scores = g.op("Add", &[&scores, &additive], vec![]);
    let probs = match form.numerics {
        Numerics::Fused => g.op("Softmax", &[&scores], vec![("axis", Attr::Int(-1))]),
        Numerics::Portable => portable_softmax(&mut g, &scores, &maskf),
    };
    let context = g.op("MatMul", &[&probs, &v], vec![]);
    let context = g.op("Transpose", &[&context], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
    let merged = i64_tensor(&mut g, "attention.merged_shape", &[0, 0, h as i64]);
    let context = g.op("Reshape", &[&context, &merged], vec![]);

    let attn = Linears::new(&mut g, &context, form).apply(&mut g, &w.attention_output, "attention.output.dense", 1.0);
    let attn = g.op("Add", &[&attn, &x], vec![]);
    let h1 = layer_norm(&mut g, &attn, &w.attention_layer_norm, "attention.output.LayerNorm", form.numerics);

    let inter = Linears::new(&mut g, &h1, form).apply(&mut g, &w.intermediate, "intermediate.dense", 1.0);
    let inter = activation(&mut g, &inter, computed_activation(act, form.numerics), form.numerics);
    let out = Linears::new(&mut g, &inter, form).apply(&mut g, &w.output, "output.dense", 1.0);
    let out = g.op("Add", &[&out, &h1], vec![]);
    let h2 = layer_norm(&mut g, &out, &w.output_layer_norm, "output.LayerNorm", form.numerics);
    g.output(&h2, io_names::LAYER_OUTPUT, Elem::F32, &[BATCH, SEQUENCE, Dim::Fixed(h)]);
    g.build()
}

/// Q, K, V stacked into one `[3h, h]` linear layer, the query rows pre-scaled by `q_scale`.
fn fuse_qkv(w: &LayerWeights, q_scale: f32) -> Linear {
    let h = w.query.out_features();
    let mut data = Vec::with_capacity(3 * h * h);
    data.extend(w.query.weight.data.iter().map(|v| v * q_scale));
    data.extend_from_slice(&w.key.weight.data);
    data.extend_from_slice(&w.value.weight.data);
    let mut bias = Vec::with_capacity(3 * h);
    bias.extend(w.query.bias.iter().map(|v| v * q_scale));
    bias.extend_from_slice(&w.key.bias);
    bias.extend_from_slice(&w.value.bias);
    Linear { weight: crate::weights::Matrix::new(3 * h, h, data), bias }
}

/// Splits the last axis into three parts of `h` with Slices (portable across runtimes, one output per node).
fn split3(g: &mut GraphBuilder, x: &str, h: usize) -> (String, String, String) {
    let axis = i64_tensor(g, "attention.self.qkv.axis", &[-1]);
    let mut part = |i: usize| {
        let start = i64_tensor(g, &format!("attention.self.qkv.start{i}"), &[(i * h) as i64]);
        let end = i64_tensor(g, &format!("attention.self.qkv.end{i}"), &[((i + 1) * h) as i64]);
        g.op("Slice", &[x, &start, &end, &axis], vec![])
    };
    (part(0), part(1), part(2))
}

/// `exit_XX.onnx`: logits = classifier(tanh(pooler(pooled))), pooled = h[:, 0, :] ([CLS]) or the mean of h over
/// the sequence axis (every position given: the runtime never pads).
pub fn exit_graph(w: &ExitWeights, layer: usize) -> ModelProto {
    let h = w.pooler.in_features();
    let labels = w.classifier.out_features();
    let mut g = GraphBuilder::new(&format!("exit_{layer:02}"));
    let x = g.input(io_names::HIDDEN_STATES, Elem::F32, &[BATCH, SEQUENCE, Dim::Fixed(h)]);
    let pooled = match w.pooling {
        Pooling::Cls => {
            let zero = g.i64s("cls_index", &[], &[0]);
            g.op("Gather", &[&x, &zero], vec![("axis", Attr::Int(1))])
        }
        Pooling::Mean => g.op("ReduceMean", &[&x], vec![("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))]),
    };
    let pooled = linear_f32(&mut g, &pooled, &w.pooler, "pooler.dense", 1.0);
    let pooled = g.op("Tanh", &[&pooled], vec![]);
    let logits = linear_f32(&mut g, &pooled, &w.classifier, "classifier", 1.0);
    g.output(&logits, io_names::LOGITS, Elem::F32, &[BATCH, Dim::Fixed(labels)]);
    g.build()
}
