//! Load-time rewrites of a package's standard ONNX stage graphs into faster tract operators of our own.
//!
//! The package files stay standard ONNX (ONNX Runtime runs them, and a package exported before these rewrites
//! gets them without re-export); only the plan tract builds at load differs. The quantization, rescale, int8
//! linear, pooling and packing rewrites compute bit for bit what the subgraphs they replace compute; the softmax,
//! GELU, layer-norm and attention rewrites change the last bits (see [`softmax`], [`gelu`], [`layer_norm`],
//! [`attention`]). `tests/fused_stages.rs` checks every one of them against the plain graphs.

pub mod attention;
pub mod gelu;
pub mod layer_norm;
pub mod linear;
pub mod pack;
pub mod pool;
pub mod quantize;
pub mod rescale;
pub mod softmax;

use tract_onnx::prelude::{Datum, OutletId, TVec, Tensor, TractResult, TypedModel, TypedModelPatch};
use tract_onnx::tract_core::num_traits;
use tract_onnx::tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_onnx::tract_core::ops::element_wise::{ElementWiseMiniOp, ElementWiseOp};
use tract_onnx::tract_core::ops::TypedOp;

/// Which rewrites a plan gets. [`Fusion::ALL`] (the default) is what the engine loads; [`Fusion::NONE`] plans
/// the graphs as they are (for measuring the rewrites, and for checking them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fusion {
    /// Per-token int8 quantizations into [`quantize::QuantizePerToken`], and the int8 output stage after each
    /// int8 matmul into [`rescale::RescaleInt8`] (both exact).
    pub quantize: bool,
    /// f32 last-axis softmaxes into [`softmax::RowSoftmax`] (last-bit differences).
    pub softmax: bool,
    /// The exact (erf) GELU after an int8 output stage into that stage's pass ([`rescale::RescaleInt8::gelu`];
    /// last-bit differences). Needs `quantize`: it folds into the fused output stage.
    pub gelu: bool,
    /// A residual add and the layer norm after it into [`layer_norm::AddLayerNorm`] (last-bit differences).
    pub layer_norm: bool,
    /// Each int8 matmul and its output stage into [`linear::Int8Linear`] where the CPU has its kernel (exact).
    /// Needs `quantize`: it takes the fused output stage in.
    pub linear: bool,
    /// Each layer's attention (scores, mask, softmax, weighted values) into [`attention::Attention`] (last-bit
    /// differences).
    pub attention: bool,
    /// Sums over the tokens axis (an exit's mean pooling) into [`pool::SumOverTokens`] (exact).
    pub pool: bool,
    /// After codegen: tract's packing of int8 activations into [`pack::PackI8K4`] (exact).
    pub pack: bool,
}

impl Fusion {
    pub const ALL: Self = Self {
        quantize: true,
        softmax: true,
        gelu: true,
        layer_norm: true,
        linear: true,
        attention: true,
        pool: true,
        pack: true,
    };
    pub const NONE: Self = Self {
        quantize: false,
        softmax: false,
        gelu: false,
        layer_norm: false,
        linear: false,
        attention: false,
        pool: false,
        pack: false,
    };
    /// Only the rewrites that keep every value bit for bit.
    pub const EXACT: Self = Self { quantize: true, linear: true, pool: true, pack: true, ..Self::NONE };
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
    /// GELUs now computed inside the int8 output stage before them.
    pub gelus: usize,
    /// Layer norms now [`layer_norm::AddLayerNorm`] (with or without the residual add before them).
    pub layer_norms: usize,
    /// int8 matmuls with their output stage now one [`linear::Int8Linear`] each (their output stages are also
    /// counted in `rescales`, and their GELUs in `gelus`).
    pub linears: usize,
    /// Attentions now [`attention::Attention`].
    pub attentions: usize,
    /// Sums over the tokens axis now [`pool::SumOverTokens`].
    pub pools: usize,
    /// int8 activation packings now [`pack::PackI8K4`] (counted after codegen, by [`apply_after_codegen`]).
    pub packs: usize,
}

impl std::ops::Add for Fused {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            quantizers: self.quantizers + other.quantizers,
            rescales: self.rescales + other.rescales,
            softmaxes: self.softmaxes + other.softmaxes,
            gelus: self.gelus + other.gelus,
            layer_norms: self.layer_norms + other.layer_norms,
            linears: self.linears + other.linears,
            attentions: self.attentions + other.attentions,
            pools: self.pools + other.pools,
            packs: self.packs + other.packs,
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
    if fusion.gelu {
        fused.gelus = gelu::fuse(model)?;
    }
    // After the GELU fold, so that the FFN's first linear layer takes its GELU along.
    if fusion.linear && fusion.quantize {
        fused.linears = linear::fuse(model)?;
    }
    if fusion.softmax {
        fused.softmaxes = softmax::fuse(model)?;
    }
    if fusion.layer_norm {
        fused.layer_norms = layer_norm::fuse(model)?;
    }
    // After the softmax rewrite, so that a softmax outside an attention still gets it; an attention's RowSoftmax
    // (counted in `softmaxes`) is then taken into the Attention op, which computes rows the same way.
    if fusion.attention {
        fused.attentions = attention::fuse(model)?;
    }
    if fusion.pool {
        fused.pools = pool::fuse(model)?;
    }
    Ok(fused)
}

/// The rewrites of the optimized graph (their nodes exist only after tract's codegen), added to `fused`.
pub fn apply_after_codegen(model: &mut TypedModel, fusion: Fusion, fused: &mut Fused) -> TractResult<()> {
    if fusion.pack {
        fused.packs = pack::fuse(model)?;
    }
    Ok(())
}

/// A tensor of `shape` whose values `fill` writes, in tract's own buffer: an ndarray or a Vec turned into a tensor
/// is copied into a new aligned allocation, a second pass over every output of the operator.
fn tensor_filled<T: Datum + Copy + num_traits::Zero>(
    shape: &[usize],
    fill: impl FnOnce(&mut [T]),
) -> TractResult<Tensor> {
    let mut tensor = Tensor::zero::<T>(shape)?;
    fill(tensor.try_as_plain_ram_mut()?.as_slice_mut::<T>()?);
    Ok(tensor)
}

/// One place a rewrite changes: `op`, wired on `inputs`, takes over the outlets `replaces` (with its outputs, in
/// order); its node is named after node `named_after`.
struct Replacement<O> {
    named_after: usize,
    inputs: TVec<OutletId>,
    op: O,
    replaces: TVec<OutletId>,
}

/// Applies every [`Replacement`] `matched` finds in the model, in one patch (a rewrite's places share no node), its
/// nodes named `<node>.<name>`; returns how many.
fn replace_all<O: TypedOp + Clone>(
    model: &mut TypedModel,
    name: &str,
    matched: impl Fn(&TypedModel, usize) -> TractResult<Option<Replacement<O>>>,
) -> TractResult<usize> {
    let found = occurrences(model, matched)?;
    if found.is_empty() {
        return Ok(0);
    }
    let mut patch = TypedModelPatch::new(format!("fuse {name}"));
    for place in &found {
        let inputs = patch.taps(model, &place.inputs)?;
        let node = format!("{}.{name}", model.node(place.named_after).name);
        let outputs = patch.wire_node(node, place.op.clone(), &inputs)?;
        for (&old, &new) in place.replaces.iter().zip(&outputs) {
            patch.shunt_outside(model, old, new)?;
        }
    }
    patch.apply(model)?;
    // The replaced nodes are dead now; the optimizer's passes would drop them, compacting keeps the graph tidy.
    model.compact()?;
    Ok(found.len())
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

/// The input node of a node with exactly one input.
fn single_input_node(model: &TypedModel, node: usize) -> Option<usize> {
    match model.node(node).inputs.as_slice() {
        [only] => Some(only.node),
        _ => None,
    }
}

/// How many times `outlet` is used: by the inputs it feeds, plus one if it is a model output.
fn uses(model: &TypedModel, outlet: OutletId) -> usize {
    let is_output = model.output_outlets().is_ok_and(|o| o.contains(&outlet));
    model.node(outlet.node).outputs[outlet.slot].successors.len() + usize::from(is_output)
}

/// Whether `outlet` feeds exactly one input and is no model output: a rewrite may then absorb it.
fn used_once(model: &TypedModel, outlet: OutletId) -> bool {
    uses(model, outlet) == 1
}

fn is_element_wise<T: ElementWiseMiniOp>(model: &TypedModel, node: usize) -> bool {
    model.node(node).op_as::<ElementWiseOp>().is_some_and(|op| op.0.is::<T>())
}

/// For a binary `T` node with one single-valued f32 constant input: its other input and the constant.
fn binary_with_constant<T: BinMiniOp>(model: &TypedModel, node: usize) -> TractResult<Option<(OutletId, f32)>> {
    let Some(inputs) = binary_inputs::<T>(model, node) else { return Ok(None) };
    for (k, other) in [(0, 1), (1, 0)] {
        if let Some(konst) = &model.outlet_fact(inputs[k])?.konst {
            if konst.len() == 1 && konst.datum_type() == f32::datum_type() {
                return Ok(Some((inputs[other], konst.cast_to_scalar::<f32>()?)));
            }
        }
    }
    Ok(None)
}

/// For a binary `T` node with one constant f32 input holding one value per output channel (`[1, …, 1, out]`):
/// its other input and those values.
fn with_channel_constant<T: BinMiniOp>(model: &TypedModel, node: usize) -> TractResult<Option<(OutletId, Vec<f32>)>> {
    let Some(inputs) = binary_inputs::<T>(model, node) else { return Ok(None) };
    for (k, other) in [(0, 1), (1, 0)] {
        let Some(konst) = &model.outlet_fact(inputs[k])?.konst else { continue };
        let channels = konst.shape().last().copied().unwrap_or(1);
        if konst.datum_type() == f32::datum_type() && konst.len() == channels && channels > 1 {
            let values = konst.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
            return Ok(Some((inputs[other], values)));
        }
    }
    Ok(None)
}

/// The sum of a row as eight interleaved lanes (element i in lane i mod 8) added in a fixed tree: the compiler keeps
/// the lanes in one vector register, and the result is the same on every CPU whatever its vector width.
#[inline(always)]
fn lane_sum(row: &[f32], term: impl Fn(f32) -> f32) -> f32 {
    const LANES: usize = 8;
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (s, &v) in sums.iter_mut().zip(chunk) {
            *s += term(v);
        }
    }
    for (s, &v) in sums.iter_mut().zip(chunks.remainder()) {
        *s += term(v);
    }
    ((sums[0] + sums[1]) + (sums[2] + sums[3])) + ((sums[4] + sums[5]) + (sums[6] + sums[7]))
}
