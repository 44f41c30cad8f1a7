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
//! and aarch64 (see `portable_*` in `ops.rs`). The `int8-ort` form ([`QuantScheme::Int8OrtDynamic`]) writes each
//! linear layer as ONNX Runtime's `quantize_dynamic` does instead, for ORT's fused kernels.

mod embeddings;
mod exit;
mod layer;
mod ops;

pub use embeddings::embeddings_graph;
pub use exit::exit_graph;
pub use layer::layer_graph;
pub use ops::computed_activation;

use crate::onnx::Dim;
use cosee_runtime::manifest::{io_names, Numerics, QuantScheme};

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
            QuantScheme::Int8OrtDynamic => Self { scheme, ..Self::int8() },
        }
    }
}
