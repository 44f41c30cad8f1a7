//! Load-time rewrites of a package's standard ONNX stage graphs into faster tract operators of our own.
//!
//! The package files stay standard ONNX (ONNX Runtime runs them, and a package exported before these rewrites
//! gets them without re-export); only the plan tract builds at load differs. The quantization rewrite computes
//! bit for bit what the subgraph it replaces computes; the softmax rewrite changes the last bits of the attention
//! probabilities (see [`softmax`]). `tests/fused_stages.rs` checks both against the plain graphs.

pub mod quantize;
pub mod softmax;

use tract_onnx::prelude::{TractResult, TypedModel};

/// Which rewrites a plan gets. [`Fusion::ALL`] (the default) is what the engine loads; [`Fusion::NONE`] plans
/// the graphs as they are (for measuring the rewrites, and for checking them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fusion {
    /// Per-token int8 quantizations into [`quantize::QuantizePerToken`] (exact).
    pub quantize: bool,
    /// f32 last-axis softmaxes into [`softmax::RowSoftmax`] (last-bit differences).
    pub softmax: bool,
}

impl Fusion {
    pub const ALL: Self = Self { quantize: true, softmax: true };
    pub const NONE: Self = Self { quantize: false, softmax: false };
}

impl Default for Fusion {
    fn default() -> Self {
        Self::ALL
    }
}

/// What [`apply`] replaced in one graph (or, summed, in a package).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fused {
    /// Per-token quantizations now one [`quantize::QuantizePerToken`] each.
    pub quantizers: usize,
    /// Softmaxes now [`softmax::RowSoftmax`].
    pub softmaxes: usize,
}

impl std::ops::Add for Fused {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self { quantizers: self.quantizers + other.quantizers, softmaxes: self.softmaxes + other.softmaxes }
    }
}

/// Applies the rewrites `fusion` asks for to a decluttered model (before codegen: `TypedModel::optimize`).
pub fn apply(model: &mut TypedModel, fusion: Fusion) -> TractResult<Fused> {
    let mut fused = Fused::default();
    if fusion.quantize {
        fused.quantizers = quantize::fuse(model)?;
    }
    if fusion.softmax {
        fused.softmaxes = softmax::fuse(model)?;
    }
    Ok(fused)
}
