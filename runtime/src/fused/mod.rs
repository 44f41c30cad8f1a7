//! Load-time rewrites of a package's standard ONNX stage graphs into faster tract operators of our own.
//!
//! The package files stay standard ONNX (ONNX Runtime runs them, and a package exported before these rewrites
//! gets them without re-export); only the plan tract builds at load differs. The quantization and rescale
//! rewrites compute bit for bit what the subgraphs they replace compute; the softmax rewrite changes the last bits of the attention
//! probabilities (see [`softmax`]). `tests/fused_stages.rs` checks both against the plain graphs.

pub mod quantize;
pub mod rescale;
pub mod softmax;

use tract_onnx::prelude::{OutletId, TractResult, TypedModel};
use tract_onnx::tract_core::ops::binary::{BinMiniOp, TypedBinOp};

/// Which rewrites a plan gets. [`Fusion::ALL`] (the default) is what the engine loads; [`Fusion::NONE`] plans
/// the graphs as they are (for measuring the rewrites, and for checking them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fusion {
    /// Per-token int8 quantizations into [`quantize::QuantizePerToken`], and the int8 output stage after each
    /// int8 matmul into [`rescale::RescaleInt8`] (both exact).
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
    /// int8 output stages (Cast, ·w_scale, ·x_scale, +bias) now one [`rescale::RescaleInt8`] each.
    pub rescales: usize,
    /// Softmaxes now [`softmax::RowSoftmax`].
    pub softmaxes: usize,
}

impl std::ops::Add for Fused {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            quantizers: self.quantizers + other.quantizers,
            rescales: self.rescales + other.rescales,
            softmaxes: self.softmaxes + other.softmaxes,
        }
    }
}

/// Applies the rewrites `fusion` asks for to a decluttered model (before codegen: `TypedModel::optimize`).
pub fn apply(model: &mut TypedModel, fusion: Fusion) -> TractResult<Fused> {
    let mut fused = Fused::default();
    if fusion.quantize {
        fused.quantizers = quantize::fuse(model)?;
        fused.rescales = rescale::fuse(model)?;
    }
    if fusion.softmax {
        fused.softmaxes = softmax::fuse(model)?;
    }
    Ok(fused)
}

/// Every match of `matched` in the model, in evaluation order (each rewrite collects its occurrences first, then
/// replaces them all in one patch: they share no node).
fn occurrences<T>(
    model: &TypedModel,
    matched: impl Fn(&TypedModel, usize) -> TractResult<Option<T>>,
) -> TractResult<Vec<T>> {
    let mut found = Vec::new();
    for id in model.eval_order()? {
        if let Some(f) = matched(model, id)? {
            found.push(f);
        }
    }
    Ok(found)
}

/// The two inputs of node `node` if it is a binary `T`.
fn binary_inputs<T: BinMiniOp>(model: &TypedModel, node: usize) -> Option<[OutletId; 2]> {
    let node = model.node(node);
    match (node.op_as::<TypedBinOp>(), node.inputs.as_slice()) {
        (Some(op), &[a, b]) if op.0.is::<T>() => Some([a, b]),
        _ => None,
    }
}
