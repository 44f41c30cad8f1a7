//! The weights of a COSEE multi-exit BERT, grouped like the checkpoint's tensor names (Hugging Face BERT without
//! the `bert.` prefix, exits as `exits.{i}`; read by `cosee_format::checkpoint::TensorFile`), so that the exporter and the reference forward pass walk the same
//! structure the trainer writes.

/// The activation parser and the tensor names are the checkpoint format's (`cosee_format::checkpoint`).
pub use cosee_format::checkpoint::{names, Activation};
use cosee_runtime::config::Pooling;

/// A dense matrix in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert_eq!(rows * cols, data.len(), "matrix data does not match its shape");
        Self { rows, cols, data }
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// The transpose, `[cols, rows]`: ONNX MatMul wants `[in, out]` where PyTorch stores `[out, in]`.
    pub fn transposed(&self) -> Matrix {
        let mut data = vec![0.0; self.data.len()];
        for r in 0..self.rows {
            for c in 0..self.cols {
                data[c * self.rows + r] = self.data[r * self.cols + c];
            }
        }
        Matrix { rows: self.cols, cols: self.rows, data }
    }
}

/// `y = x Wᵀ + b` with `W` in PyTorch layout `[out, in]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    pub weight: Matrix,
    pub bias: Vec<f32>,
}

impl Linear {
    pub fn in_features(&self) -> usize {
        self.weight.cols
    }
    pub fn out_features(&self) -> usize {
        self.weight.rows
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub eps: f32,
}

/// `embeddings.*`.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingWeights {
    pub word: Matrix,
    pub position: Matrix,
    pub token_type: Matrix,
    pub layer_norm: LayerNorm,
}

/// `encoder.layer.{i}.*`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub attention_output: Linear,
    pub attention_layer_norm: LayerNorm,
    pub intermediate: Linear,
    pub output: Linear,
    pub output_layer_norm: LayerNorm,
}

/// One exit: `logits = classifier(tanh(pooler(h[:, 0, :])))`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitWeights {
    pub pooling: Pooling,
    pub pooler: Linear,
    pub classifier: Linear,
}

/// Everything the package needs, validated against the config.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelWeights {
    pub num_heads: usize,
    pub activation: Activation,
    pub embeddings: EmbeddingWeights,
    pub layers: Vec<LayerWeights>,
    pub exits: Vec<ExitWeights>,
}

impl ModelWeights {
    pub fn hidden_size(&self) -> usize {
        self.embeddings.word.cols
    }
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
    pub fn num_labels(&self) -> usize {
        self.exits.first().map(|e| e.classifier.out_features()).unwrap_or(0)
    }
    pub fn head_dim(&self) -> usize {
        self.hidden_size() / self.num_heads
    }
}
