//! The BERT encoder, one struct per Hugging Face module, each created under the `nn::Path` of the tensor names
//! it owns, so that `VarStore::variables()` yields exactly the checkpoint names (`embeddings.LayerNorm.weight`,
//! `encoder.layer.0.attention.self.query.weight`, …) and loading or saving is by name with no mapping table.

pub use cosee_format::checkpoint::Activation;
use cosee_format::config::{BertConfig, Pooling};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Hugging Face's `initializer_range`: every linear and embedding weight starts from N(0, 0.02²), biases at 0.
pub const INITIALIZER_STD: f64 = 0.02;

/// The additive attention-mask value of HF BERT and the reference code, also used by the ONNX exporter.
pub const MASK_VALUE: f64 = -10000.0;

/// A linear layer initialised like HF BERT (`_init_weights`): N(0, 0.02²) weight, zero bias.
pub(crate) fn linear(p: nn::Path, inputs: i64, outputs: i64) -> nn::Linear {
    let config = nn::LinearConfig {
        ws_init: nn::Init::Randn { mean: 0.0, stdev: INITIALIZER_STD },
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    nn::linear(p, inputs, outputs, config)
}

fn layer_norm(p: nn::Path, size: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![size], nn::LayerNormConfig { eps, ..Default::default() })
}

fn embedding(p: nn::Path, count: i64, dim: i64, padding_idx: i64) -> nn::Embedding {
    let config = nn::EmbeddingConfig {
        ws_init: nn::Init::Randn { mean: 0.0, stdev: INITIALIZER_STD },
        padding_idx,
        ..Default::default()
    };
    nn::embedding(p, count, dim, config)
}

/// The feed-forward activation named by `hidden_act` (the checkpoint format's parser), in tch.
fn apply(activation: Activation, xs: &Tensor) -> Tensor {
    match activation {
        Activation::GeluErf => xs.gelu("none"),
        Activation::GeluTanh => xs.gelu("tanh"),
        Activation::Relu => xs.relu(),
    }
}

/// `embeddings.*`: word + position + token-type embeddings, LayerNorm, dropout.
#[derive(Debug)]
pub struct Embeddings {
    word_embeddings: nn::Embedding,
    position_embeddings: nn::Embedding,
    token_type_embeddings: nn::Embedding,
    layer_norm: nn::LayerNorm,
    dropout: f64,
}

impl Embeddings {
    pub fn new(p: nn::Path, c: &BertConfig) -> Self {
        let hidden = c.hidden_size as i64;
        Self {
            // HF gives the word embedding padding_idx = pad_token_id: the [PAD] row receives no gradient.
            word_embeddings: embedding(&p / "word_embeddings", c.vocab_size as i64, hidden, c.pad_token_id),
            position_embeddings: embedding(&p / "position_embeddings", c.max_position_embeddings as i64, hidden, -1),
            token_type_embeddings: embedding(&p / "token_type_embeddings", c.type_vocab_size as i64, hidden, -1),
            layer_norm: layer_norm(&p / "LayerNorm", hidden, c.layer_norm_eps),
            dropout: c.hidden_dropout_prob,
        }
    }

    /// `input_ids`, `token_type_ids`: i64 [batch, sequence] → [batch, sequence, hidden].
    pub fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor, train: bool) -> Tensor {
        let seq_len = input_ids.size()[1];
        let positions = Tensor::arange(seq_len, (Kind::Int64, input_ids.device())).unsqueeze(0);
        let sum = self.word_embeddings.forward(input_ids)
            + self.position_embeddings.forward(&positions)
            + self.token_type_embeddings.forward(token_type_ids);
        self.layer_norm.forward(&sum).dropout(self.dropout, train)
    }
}

/// `encoder.layer.{i}.attention.self.*`: multi-head scaled dot-product attention.
#[derive(Debug)]
struct SelfAttention {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    heads: i64,
    head_dim: i64,
    dropout: f64,
}

impl SelfAttention {
    fn new(p: nn::Path, c: &BertConfig) -> Self {
        let hidden = c.hidden_size as i64;
        Self {
            query: linear(&p / "query", hidden, hidden),
            key: linear(&p / "key", hidden, hidden),
            value: linear(&p / "value", hidden, hidden),
            heads: c.num_attention_heads as i64,
            head_dim: (c.hidden_size / c.num_attention_heads) as i64,
            dropout: c.attention_probs_dropout_prob,
        }
    }

    /// [batch, sequence, hidden] → [batch, heads, sequence, head_dim].
    fn split_heads(&self, xs: Tensor) -> Tensor {
        let (b, s, _) = xs.size3().expect("hidden states are 3-D");
        xs.view([b, s, self.heads, self.head_dim]).transpose(1, 2)
    }

    /// `mask` is the additive mask [batch, 1, 1, sequence] (0 for tokens, −10000 for padding).
    fn forward(&self, xs: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let (b, s, h) = xs.size3().expect("hidden states are 3-D");
        let q = self.split_heads(self.query.forward(xs));
        let k = self.split_heads(self.key.forward(xs));
        let v = self.split_heads(self.value.forward(xs));
        let scores = q.matmul(&k.transpose(-1, -2)) / (self.head_dim as f64).sqrt() + mask;
        let probs = scores.softmax(-1, Kind::Float).dropout(self.dropout, train);
        probs.matmul(&v).transpose(1, 2).contiguous().view([b, s, h])
    }
}

/// `encoder.layer.{i}`: attention block and feed-forward block, each with residual + post-LayerNorm.
#[derive(Debug)]
pub struct Layer {
    attention: SelfAttention,
    attention_output_dense: nn::Linear,
    attention_output_layer_norm: nn::LayerNorm,
    intermediate_dense: nn::Linear,
    output_dense: nn::Linear,
    output_layer_norm: nn::LayerNorm,
    activation: Activation,
    dropout: f64,
}

impl Layer {
    pub fn new(p: nn::Path, c: &BertConfig, activation: Activation) -> Self {
        let (hidden, ffn) = (c.hidden_size as i64, c.intermediate_size as i64);
        let attention = &p / "attention";
        Self {
            attention: SelfAttention::new(&attention / "self", c),
            attention_output_dense: linear(&attention / "output" / "dense", hidden, hidden),
            attention_output_layer_norm: layer_norm(&attention / "output" / "LayerNorm", hidden, c.layer_norm_eps),
            intermediate_dense: linear(&p / "intermediate" / "dense", hidden, ffn),
            output_dense: linear(&p / "output" / "dense", ffn, hidden),
            output_layer_norm: layer_norm(&p / "output" / "LayerNorm", hidden, c.layer_norm_eps),
            activation,
            dropout: c.hidden_dropout_prob,
        }
    }

    pub fn forward(&self, xs: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let context = self.attention.forward(xs, mask, train);
        let attended = self
            .attention_output_layer_norm
            .forward(&(self.attention_output_dense.forward(&context).dropout(self.dropout, train) + xs));
        let inner = apply(self.activation, &self.intermediate_dense.forward(&attended));
        self.output_layer_norm.forward(&(self.output_dense.forward(&inner).dropout(self.dropout, train) + attended))
    }
}

/// `pooler.dense` (or `exits.{i}.pooler.dense`): tanh(W·x + b), x the [CLS] vector or the masked mean of the
/// hidden states ([`Pooling`]).
#[derive(Debug)]
pub struct Pooler {
    dense: nn::Linear,
    pooling: Pooling,
}

impl Pooler {
    pub fn new(p: nn::Path, hidden: i64, pooling: Pooling) -> Self {
        Self { dense: linear(&p / "dense", hidden, hidden), pooling }
    }

    /// What the dense layer reads: [batch, sequence, hidden] → [batch, hidden]. `token_mask` is f32
    /// [batch, sequence] of 1/0, so that padding never enters a mean.
    pub fn input(&self, hidden_states: &Tensor, token_mask: &Tensor) -> Tensor {
        match self.pooling {
            Pooling::Cls => hidden_states.select(1, 0),
            Pooling::Mean => {
                let summed = (hidden_states * token_mask.unsqueeze(-1)).sum_dim_intlist(1, false, Kind::Float);
                summed / token_mask.sum_dim_intlist(1, true, Kind::Float)
            }
        }
    }

    /// Makes this pooler tanh((x − mean) / std) per hidden unit (a diagonal W): a data-dependent start.
    pub fn set_standardizing(&self, mean: &Tensor, std: &Tensor) {
        let inv = std.reciprocal();
        tch::no_grad(|| {
            // Shallow clones share storage with the VarStore's variables: the copies land in the model.
            self.dense.ws.shallow_clone().copy_(&inv.diag_embed(0, -2, -1));
            if let Some(bias) = &self.dense.bs {
                bias.shallow_clone().copy_(&(-(mean * &inv)));
            }
        });
    }

    pub fn forward(&self, hidden_states: &Tensor, token_mask: &Tensor) -> Tensor {
        self.dense.forward(&self.input(hidden_states, token_mask)).tanh()
    }
}

/// The additive attention mask: i64 [batch, sequence] of 1/0 → f32 [batch, 1, 1, sequence] of 0/−10000.
pub fn additive_mask(attention_mask: &Tensor) -> Tensor {
    // (mask − 1)·(−MASK_VALUE) = (1 − mask)·MASK_VALUE.
    ((attention_mask.to_kind(Kind::Float) - 1.0) * -MASK_VALUE).unsqueeze(1).unsqueeze(2)
}
