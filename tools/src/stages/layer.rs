//! `layer_XX.onnx`: one BERT encoder layer, f32 or int8.

use crate::onnx::{Attr, Dim, Elem, GraphBuilder};
use crate::weights::{Activation, LayerWeights, Linear};
use cosee_runtime::manifest::{io_names, Numerics};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::ModelProto;

use super::ops::*;
use super::*;

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
