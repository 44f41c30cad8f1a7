//! Load-time rewrites of a package's standard ONNX stage graphs into faster tract operators of our own.
//!
//! The package files stay standard ONNX (ONNX Runtime runs them, and a package exported before these rewrites
//! gets them without re-export); only the plan tract builds at load differs. Each rewrite computes exactly what
//! the subgraph it replaces computes, so answers do not change: the stage plans are checked against the plain
//! graphs in `tests/fused_stages.rs`.

pub mod quantize;

use tract_onnx::prelude::{TractResult, TypedModel};

/// Which rewrites a plan gets. [`Fusion::All`] is what the engine loads; [`Fusion::None`] plans the graphs as
/// they are (for measuring the rewrites, and for checking them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fusion {
    #[default]
    All,
    None,
}

/// What [`apply`] replaced in one graph.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fused {
    /// Per-token quantizations now one [`quantize::QuantizePerToken`] each.
    pub quantizers: usize,
}

impl std::ops::Add for Fused {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self { quantizers: self.quantizers + other.quantizers }
    }
}

/// Applies the rewrites `fusion` asks for to a decluttered model (before codegen: `TypedModel::optimize`).
pub fn apply(model: &mut TypedModel, fusion: Fusion) -> TractResult<Fused> {
    match fusion {
        Fusion::None => Ok(Fused::default()),
        Fusion::All => Ok(Fused { quantizers: quantize::fuse(model)? }),
    }
}
