//! An independent, straightforward forward pass of the multi-exit BERT, written from the weights with loops (no
//! ONNX, no tract), used to check the exported graphs numerically.
//!
//! The f32 path is the model as trained. The int8 path simulates the exported int8 arithmetic exactly —
//! per-token symmetric activations, per-channel weights (the query's 1/√d folded in before quantizing, as the
//! exporter does), integer accumulation, one rescale — so an int8 graph can be held to a tight tolerance against
//! it, separately from the (larger) quantization error itself. The `int8-ort` path does the same for ONNX
//! Runtime's form: each linear layer's whole input quantized to u8 with a zero point, s8 weights per output channel.

use crate::quant;
use crate::stages::MASK_VALUE;
use crate::weights::{Activation, EmbeddingWeights, ExitWeights, LayerNorm, LayerWeights, Linear, ModelWeights};
use cosee_runtime::config::Pooling;
use cosee_runtime::manifest::{EmbeddingStorage, QuantScheme, Quantization};
use cosee_runtime::tokenize::EncodedBatch;

/// Hidden states `[batch, sequence, hidden]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Hidden {
    pub batch: usize,
    pub sequence: usize,
    pub hidden: usize,
    pub data: Vec<f32>,
}

impl Hidden {
    fn row(&self, b: usize, s: usize) -> &[f32] {
        let start = (b * self.sequence + s) * self.hidden;
        &self.data[start..start + self.hidden]
    }
}

fn layer_norm(x: &[f32], ln: &LayerNorm) -> Vec<f32> {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + ln.eps as f64).sqrt();
    x.iter()
        .zip(ln.weight.iter().zip(&ln.bias))
        .map(|(&v, (&g, &b))| ((v as f64 - mean) * inv * g as f64 + b as f64) as f32)
        .collect()
}

/// Rows of `x` (each `in` long) through `W xᵀ + b`, in f32 (f64 sums) or simulated int8.
fn linear(x: &[f32], lin: &Linear, scale: f32, scheme: QuantScheme) -> Vec<f32> {
    let (out, inp) = (lin.out_features(), lin.in_features());
    let rows = x.len() / inp;
    let mut y = vec![0.0f32; rows * out];
    match scheme {
        QuantScheme::None => {
            for r in 0..rows {
                let xr = &x[r * inp..(r + 1) * inp];
                for o in 0..out {
                    let wr = lin.weight.row(o);
                    let dot: f64 = xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum();
                    y[r * out + o] = ((dot + lin.bias[o] as f64) * scale as f64) as f32;
                }
            }
        }
        QuantScheme::Int8OrtDynamic => {
            // One quantization of the whole input tensor (every row of every batch element), as
            // `DynamicQuantizeLinear` does; the weight symmetric per output channel, in 7 bits.
            let scaled: Vec<f32> = lin.weight.data.iter().map(|v| v * scale).collect();
            let (wq, ws) = quant::quantize_rows_within(&scaled, out, inp, quant::QMAX_U8_SAFE);
            let (xq, xs, zero_point) = quant::quantize_dynamic_u8(x);
            let combined: Vec<f32> = ws.iter().map(|w| xs * w).collect();
            for r in 0..rows {
                let xr = &xq[r * inp..(r + 1) * inp];
                for o in 0..out {
                    let wr = &wq[o * inp..(o + 1) * inp];
                    let acc: i32 = xr.iter().zip(wr).map(|(&a, &b)| (a as i32 - zero_point as i32) * b as i32).sum();
                    y[r * out + o] = acc as f32 * combined[o] + lin.bias[o] * scale;
                }
            }
        }
        QuantScheme::Int8PerTokenSymmetric => {
            let scaled: Vec<f32> = lin.weight.data.iter().map(|v| v * scale).collect();
            let (wq, ws) = quant::quantize_rows(&scaled, out, inp);
            for r in 0..rows {
                let (xq, xs) = quant::quantize_symmetric(&x[r * inp..(r + 1) * inp]);
                for o in 0..out {
                    let wr = &wq[o * inp..(o + 1) * inp];
                    let acc: i32 = xq.iter().zip(wr).map(|(&a, &b)| a as i32 * b as i32).sum();
                    y[r * out + o] = acc as f32 * (xs * ws[o]) + lin.bias[o] * scale;
                }
            }
        }
    }
    y
}

fn activation(v: f32, act: Activation) -> f32 {
    match act {
        Activation::GeluErf => (0.5 * v as f64 * (1.0 + erf(v as f64 / std::f64::consts::SQRT_2))) as f32,
        Activation::GeluTanh => {
            let x = v as f64;
            let c = (2.0 / std::f64::consts::PI).sqrt();
            (0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())) as f32
        }
        Activation::Relu => v.max(0.0),
    }
}

/// erf by the Abramowitz–Stegun 7.1.26-free route: a Taylor series near 0 and the continued-fraction
/// complement beyond, both accurate to ~1e-15, so the reference's GELU does not inherit an approximation.
pub fn erf(x: f64) -> f64 {
    if x < 0.0 {
        return -erf(-x);
    }
    if x == 0.0 {
        return 0.0;
    }
    if x < 2.5 {
        // erf(x) = 2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1))
        let mut term = x;
        let mut sum = x;
        let x2 = x * x;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() <= 1e-17 * sum.abs() || n > 200.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(x) = exp(−x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))) (Lentz-free backward evaluation).
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (x + f);
        }
        1.0 - (-x * x).exp() / std::f64::consts::PI.sqrt() / (x + f)
    }
}

/// The embeddings stage: LayerNorm(word[id] + position[s] + token_type[t]), the word table stored as the
/// package stores it.
pub fn embeddings(w: &EmbeddingWeights, storage: EmbeddingStorage, tokens: &EncodedBatch) -> Hidden {
    let h = w.word.cols;
    let (word_table, row_scales): (Vec<f32>, Option<Vec<f32>>) = match storage {
        EmbeddingStorage::F32 => (w.word.data.clone(), None),
        EmbeddingStorage::F16 => (w.word.data.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(), None),
        EmbeddingStorage::Int8 => {
            let (q, s) = quant::quantize_rows(&w.word.data, w.word.rows, h);
            (q.into_iter().map(|v| v as f32).collect(), Some(s))
        }
    };
    let mut data = Vec::with_capacity(tokens.batch_size * tokens.seq_len * h);
    for b in 0..tokens.batch_size {
        for s in 0..tokens.seq_len {
            let id = tokens.input_ids[b * tokens.seq_len + s] as usize;
            let tt = tokens.token_type_ids[b * tokens.seq_len + s] as usize;
            let word = &word_table[id * h..(id + 1) * h];
            let row_scale = row_scales.as_ref().map(|r| r[id]).unwrap_or(1.0);
            let sum: Vec<f32> =
                (0..h).map(|j| word[j] * row_scale + w.token_type.row(tt)[j] + w.position.row(s)[j]).collect();
            data.extend(layer_norm(&sum, &w.layer_norm));
        }
    }
    Hidden { batch: tokens.batch_size, sequence: tokens.seq_len, hidden: h, data }
}

/// One encoder layer (Hugging Face `BertLayer`, eval mode).
pub fn layer(
    w: &LayerWeights,
    num_heads: usize,
    act: Activation,
    scheme: QuantScheme,
    x: &Hidden,
    attention_mask: &[i64],
) -> Hidden {
    let (bs, seq, h) = (x.batch, x.sequence, x.hidden);
    let d = h / num_heads;
    let inv_sqrt_d = 1.0 / (d as f32).sqrt();
    // The f32 model scales the scores; the int8 exports fold 1/√d into the query before quantizing.
    let (q_scale, score_scale) = match scheme {
        QuantScheme::None => (1.0, inv_sqrt_d as f64),
        QuantScheme::Int8PerTokenSymmetric | QuantScheme::Int8OrtDynamic => (inv_sqrt_d, 1.0),
    };
    // Every linear layer sees the whole batch at once, as in the graph: a per-tensor quantization
    // (`Int8OrtDynamic`) takes its range over all of it. The other schemes work row by row, where it is the same.
    let q = linear(&x.data, &w.query, q_scale, scheme);
    let k = linear(&x.data, &w.key, 1.0, scheme);
    let v = linear(&x.data, &w.value, 1.0, scheme);
    let mut context = vec![0.0f32; bs * seq * h];
    for b in 0..bs {
        let row = |i: usize| (b * seq + i) * h;
        for head in 0..num_heads {
            for i in 0..seq {
                let qi = &q[row(i) + head * d..row(i) + (head + 1) * d];
                let scores: Vec<f64> = (0..seq)
                    .map(|j| {
                        let kj = &k[row(j) + head * d..row(j) + (head + 1) * d];
                        let dot: f64 = qi.iter().zip(kj).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let masked = (1.0 - attention_mask[b * seq + j] as f64) * MASK_VALUE as f64;
                        dot * score_scale + masked
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = exps.iter().sum();
                for c in 0..d {
                    let val: f64 = (0..seq).map(|j| exps[j] / total * v[row(j) + head * d + c] as f64).sum();
                    context[row(i) + head * d + c] = val as f32;
                }
            }
        }
    }
    let attn = linear(&context, &w.attention_output, 1.0, scheme);
    let h1 = residual_layer_norm(&attn, &x.data, h, &w.attention_layer_norm);
    let inter: Vec<f32> = linear(&h1, &w.intermediate, 1.0, scheme).into_iter().map(|v| activation(v, act)).collect();
    let ffn = linear(&inter, &w.output, 1.0, scheme);
    let out = residual_layer_norm(&ffn, &h1, h, &w.output_layer_norm);
    Hidden { batch: bs, sequence: seq, hidden: h, data: out }
}

/// LayerNorm(y + x) row by row, rows `width` long.
fn residual_layer_norm(y: &[f32], x: &[f32], width: usize, ln: &LayerNorm) -> Vec<f32> {
    y.chunks_exact(width)
        .zip(x.chunks_exact(width))
        .flat_map(|(y, x)| layer_norm(&y.iter().zip(x).map(|(a, b)| a + b).collect::<Vec<f32>>(), ln))
        .collect()
}

/// One exit: classifier(tanh(pooler(h[:, 0, :] or the mean of h over every position, as the graph))), logits
/// `[batch, labels]` row-major. Always f32.
pub fn exit(w: &ExitWeights, x: &Hidden) -> Vec<f32> {
    let mut logits = Vec::new();
    for b in 0..x.batch {
        let input: Vec<f32> = match w.pooling {
            Pooling::Cls => x.row(b, 0).to_vec(),
            Pooling::Mean => (0..x.hidden)
                .map(|j| ((0..x.sequence).map(|i| x.row(b, i)[j] as f64).sum::<f64>() / x.sequence as f64) as f32)
                .collect(),
        };
        let pooled: Vec<f32> =
            linear(&input, &w.pooler, 1.0, QuantScheme::None).into_iter().map(|v| (v as f64).tanh() as f32).collect();
        logits.extend(linear(&pooled, &w.classifier, 1.0, QuantScheme::None));
    }
    logits
}

/// Every stage's output: the hidden states after the embeddings and after each layer, and each exit's logits.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub embeddings: Hidden,
    pub layers: Vec<Hidden>,
    pub exits: Vec<Vec<f32>>,
}

/// Runs the whole model at full depth, as a package with `quantization` computes it.
pub fn forward(w: &ModelWeights, quantization: Quantization, tokens: &EncodedBatch) -> Trace {
    let emb = embeddings(&w.embeddings, quantization.embeddings, tokens);
    let mut layers = Vec::with_capacity(w.num_layers());
    let mut exits = Vec::with_capacity(w.num_layers());
    let mut h = emb.clone();
    // LayerNorm and softmax are the same functions in either numerics (here in f64); GELU may not be.
    let activation_computed = crate::stages::computed_activation(w.activation, quantization.numerics);
    for (lw, ew) in w.layers.iter().zip(&w.exits) {
        h = layer(lw, w.num_heads, activation_computed, quantization.scheme, &h, &tokens.attention_mask);
        exits.push(exit(ew, &h));
        layers.push(h.clone());
    }
    Trace { embeddings: emb, layers, exits }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // Values from tables of the error function.
        for (x, e) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (-1.0, -0.842_700_792_949_714_9),
        ] {
            assert!((erf(x) - e).abs() < 1e-13, "erf({x}) = {} not {e}", erf(x));
        }
    }

    #[test]
    fn layer_norm_by_hand() {
        // [1, 3]: mean 2, var 1 → [−1, 1]; γ = [2, 1], β = [0, 1] → [−2, 2].
        let ln = LayerNorm { weight: vec![2.0, 1.0], bias: vec![0.0, 1.0], eps: 0.0 };
        assert_eq!(layer_norm(&[1.0, 3.0], &ln), vec![-2.0, 2.0]);
    }

    #[test]
    fn gelu_by_hand() {
        // GELU(1) = Φ(1) = 0.841344746...
        assert!((activation(1.0, Activation::GeluErf) - 0.841_344_7).abs() < 1e-6);
        assert!((activation(1.0, Activation::GeluTanh) - 0.841_192).abs() < 1e-5);
        assert_eq!(activation(-2.0, Activation::Relu), 0.0);
    }
}
