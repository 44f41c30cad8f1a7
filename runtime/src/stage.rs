//! One stage graph of a package (embeddings, a layer or an exit) as an optimized tract plan: parsed, given its
//! input facts (batch fixed to 1, `sequence` symbolic), shape-checked against the manifest, optimized and made
//! runnable once, at load. The ONNX details of the runtime stay in this module.

use crate::error::LoadError;
use crate::fused::{self, Fusion};
use crate::load_phases::LoadPhases;
use crate::manifest::io_names;
use crate::stage_file::{self, LargeTensors, StageFile};
use std::path::Path;
use tract_onnx::model::ParseResult;
use tract_onnx::pb::GraphProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

/// What a stage graph takes and gives, by the package format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StageKind {
    /// (input_ids, token_type_ids, attention_mask) → hidden_states.
    Embeddings,
    /// (hidden_states, attention_mask) → next_hidden_states (SSA ONNX cannot reuse the input's name).
    Layer,
    /// hidden_states → logits.
    Exit,
}

impl StageKind {
    /// The inputs in the order [`StagePlan::run`] takes them.
    fn inputs(self) -> &'static [&'static str] {
        match self {
            Self::Embeddings => &[io_names::INPUT_IDS, io_names::TOKEN_TYPE_IDS, io_names::ATTENTION_MASK],
            Self::Layer => &[io_names::HIDDEN_STATES, io_names::ATTENTION_MASK],
            Self::Exit => &[io_names::HIDDEN_STATES],
        }
    }

    fn output(self) -> &'static str {
        match self {
            Self::Embeddings => io_names::HIDDEN_STATES,
            Self::Layer => io_names::LAYER_OUTPUT,
            Self::Exit => io_names::LOGITS,
        }
    }
}

/// The shapes every stage of one package agrees on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shapes {
    pub hidden: usize,
    pub labels: usize,
}

/// A runnable stage. `order[k]` is the position, in [`StageKind::inputs`] order, of the graph's k-th input.
#[derive(Debug, Clone)]
pub(crate) struct StagePlan {
    pub file: String,
    /// What the load-time rewrites replaced in this stage's graph.
    pub fused: fused::Fused,
    plan: Arc<TypedSimplePlan>,
    order: TVec<usize>,
}

/// A stage graph read, typed and checked against the manifest: everything that can refuse a damaged file happens
/// here. Planning it ([`StageGraph::plan`]: tract's optimizer, our rewrites, kernel choice) is the costlier half, and
/// can wait until the stage is first needed (see [`crate::backend::TractBackend`]).
#[derive(Debug)]
pub(crate) struct StageGraph {
    file: String,
    display: String,
    model: TypedModel,
    order: TVec<usize>,
}

impl StageGraph {
    /// Reads and types a stage graph. tract's ONNX reader trusts parts of the file: on some damage it panics
    /// instead of failing (a raw tensor of a data type it cannot hold is `unimplemented!`, found by
    /// tests/fuzz/package.rs). A package is outside data, so such a panic is caught here and the file refused like
    /// any other unusable graph.
    pub fn read(path: &Path, kind: StageKind, shapes: Shapes) -> Result<Self, LoadError> {
        cosee_format::guard::catch_panic(|| Self::read_unguarded(path, kind, shapes))
            .unwrap_or_else(|message| Err(panicked(&path.display().to_string(), "reading", message)))
    }

    fn read_unguarded(path: &Path, kind: StageKind, shapes: Shapes) -> Result<Self, LoadError> {
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let display = path.display().to_string();
        let invalid = |e: TractError| LoadError::InvalidGraph { path: display.clone(), message: format!("{e:#}") };

        // Where cold start goes, per stage and phase: `RUST_LOG=cosee_runtime=debug`.
        let mut phases = LoadPhases::start();
        let onnx = tract_onnx::onnx();
        // The large initializers straight into their tensors where the layout allows (stage_file.rs); an I/O error
        // there is left to tract's reader to report.
        let (proto, large) = match stage_file::read(path).ok().flatten() {
            Some(StageFile { proto, large }) => (proto, large),
            None => (onnx.proto_model_for_path(path).map_err(invalid)?, LargeTensors::default()),
        };
        if let Some(graph) = &proto.graph {
            check_axis_attributes(graph)
                .map_err(|message| LoadError::InvalidGraph { path: display.clone(), message })?;
        }
        // What `model_for_path` does, with the check above between reading the protobuf and translating it.
        let ParseResult { mut model, unresolved_inputs, .. } =
            onnx.parse(&proto, path.parent().and_then(Path::to_str)).map_err(invalid)?;
        drop(proto);
        large.install(&mut model).map_err(invalid)?;
        if !unresolved_inputs.is_empty() {
            return Err(LoadError::InvalidGraph {
                path: display,
                message: format!("inputs that no node or initializer gives: {}", unresolved_inputs.join(", ")),
            });
        }
        phases.mark("parse");
        let names: Vec<String> =
            model.input_outlets().map_err(invalid)?.iter().map(|o| model.node(o.node).name.clone()).collect();
        let wanted = kind.inputs();
        let mut order = TVec::new();
        for name in &names {
            match wanted.iter().position(|w| w == name) {
                Some(at) => order.push(at),
                None => return Err(missing(&display, "input", wanted.join(", "), &names)),
            }
        }
        if let Some(absent) = wanted.iter().find(|w| !names.iter().any(|n| n == *w)) {
            return Err(missing(&display, "input", absent.to_string(), &names));
        }

        // The ONNX file's own `batch` and `sequence` dims would do for shape inference, but fixing batch to 1 lets
        // tract specialize every kernel for one row, and giving the hidden size checks the graph against the
        // manifest before any input arrives.
        let sequence = model.symbols.sym(io_names::SEQUENCE_DIM);
        let tokens: TVec<TDim> = tvec![1.to_dim(), sequence.to_dim()];
        let hidden: TVec<TDim> = tvec![1.to_dim(), sequence.to_dim(), shapes.hidden.to_dim()];
        for (ix, &at) in order.iter().enumerate() {
            let fact = if wanted[at] == io_names::HIDDEN_STATES {
                check_declared(&display, &model, ix, &hidden)?;
                f32::fact(hidden.clone())
            } else {
                i64::fact(tokens.clone())
            };
            model.set_input_fact(ix, fact.into()).map_err(invalid)?;
        }

        let outputs: Vec<OutletId> = model.output_outlets().map_err(invalid)?.to_vec();
        let labels: Vec<String> =
            outputs.iter().map(|&o| model.outlet_label(o).unwrap_or_default().to_string()).collect();
        let Some(at) = labels.iter().position(|l| l == kind.output()) else {
            return Err(missing(&display, "output", kind.output().to_string(), &labels));
        };
        model.select_output_outlets(&[outputs[at]]).map_err(invalid)?;

        let typed = model.into_typed().map_err(invalid)?;
        phases.mark("type");
        let expected: TVec<TDim> = match kind {
            StageKind::Exit => tvec![1.to_dim(), shapes.labels.to_dim()],
            _ => hidden.clone(),
        };
        let out = typed.output_fact(0).map_err(invalid)?;
        if out.datum_type != f32::datum_type() || out.shape.dims() != expected.as_slice() {
            return Err(LoadError::ShapeMismatch {
                path: display,
                what: format!("output `{}`", kind.output()),
                expected: format!("f32 {}", shape_string(&expected)),
                found: format!("{:?} {}", out.datum_type, shape_string(out.shape.dims())),
            });
        }
        log::debug!("read {file}: {phases}");
        Ok(Self { file, display, model: typed, order })
    }

    /// The file the graph came from (`layer_03.onnx`), for messages.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Optimizes the graph with the load-time rewrites `fusion` asks for and makes it runnable. Guarded like
    /// [`StageGraph::read`]: a graph that typed can still make tract's optimizer fail or panic.
    pub fn plan(self, fusion: Fusion) -> Result<StagePlan, LoadError> {
        let display = self.display.clone();
        cosee_format::guard::catch_panic(move || self.plan_unguarded(fusion))
            .unwrap_or_else(|message| Err(panicked(&display, "planning", message)))
    }

    fn plan_unguarded(self, fusion: Fusion) -> Result<StagePlan, LoadError> {
        let Self { file, display, model: mut typed, order } = self;
        let invalid = |e: TractError| LoadError::InvalidGraph { path: display.clone(), message: format!("{e:#}") };
        let mut phases = LoadPhases::start();
        // tract's own optimization in its two halves, our rewrites between them: they match the decluttered
        // operators (`x / s` is `x · Recip(s)` by then) and must run before codegen picks kernels.
        typed.declutter().map_err(invalid)?;
        phases.mark("declutter");
        let mut fused = fused::apply(&mut typed, fusion).map_err(invalid)?;
        phases.mark("fuse");
        typed.optimize().map_err(invalid)?;
        fused::apply_after_codegen(&mut typed, fusion, &mut fused).map_err(invalid)?;
        phases.mark("codegen");
        let plan = typed.into_runnable().map_err(invalid)?;
        phases.mark("plan");
        log::debug!("planned {file}: {phases}");
        Ok(StagePlan { file, fused, plan, order })
    }
}

fn panicked(path: &str, doing: &str, message: String) -> LoadError {
    LoadError::InvalidGraph { path: path.to_string(), message: format!("tract panicked while {doing} it ({message})") }
}

impl StagePlan {
    /// The optimized plan (for profiling tools; inputs in the graph's own order).
    pub fn plan(&self) -> &Arc<TypedSimplePlan> {
        &self.plan
    }

    /// Runs the stage on its inputs given in [`StageKind::inputs`] order; returns its single output.
    /// Runs the plan on one input. A graph that loaded can still make tract panic when it runs: an index constant
    /// damaged past the input's length makes `Gather` slice out of range (found by the 30-minute fuzz run of
    /// tests/fuzz/package.rs). The panic is caught and becomes this input's error; the plan keeps no state between
    /// runs, so the next input is unaffected.
    pub fn run(&self, inputs: &[&TValue]) -> TractResult<TValue> {
        let ordered: TVec<TValue> = self.order.iter().map(|&at| inputs[at].clone()).collect();
        let mut outputs = cosee_format::guard::catch_panic(|| self.plan.run(ordered))
            .map_err(|panic| TractError::msg(format!("{}: tract panicked while running it ({panic})", self.file)))??;
        outputs.pop().ok_or_else(|| TractError::msg(format!("{} returned no output", self.file)))
    }
}

/// The highest tensor rank an axis attribute may name. The package's graphs have rank ≤ 4; ONNX allows more, and the
/// bound only has to be far below where a loop over axes stops being instant.
const MAX_AXIS_RANK: i64 = 8;

/// Refuses a node whose `axis`, `axes` or `perm` attribute names an axis no tensor of rank ≤ [`MAX_AXIS_RANK`] has,
/// in the graph and any subgraph, before tract sees the graph. tract-onnx 0.23.9's `LayerNormalization` inference
/// rules loop `for ax in 0..axis`, with a negative axis wrapped by `as usize`: a damaged attribute made
/// `Engine::load` spin for up to 2^63 steps instead of refusing the file (found by the 30-minute fuzz run of
/// tests/fuzz/package.rs). Checking every op's axes, not only that one, closes the same door for the others.
fn check_axis_attributes(graph: &GraphProto) -> Result<(), String> {
    for node in &graph.node {
        for attribute in &node.attribute {
            if matches!(attribute.name.as_str(), "axis" | "axes" | "perm") {
                let mut values = std::iter::once(attribute.i).chain(attribute.ints.iter().copied());
                if let Some(bad) = values.find(|v| !(-MAX_AXIS_RANK..MAX_AXIS_RANK).contains(v)) {
                    return Err(format!(
                        "node `{}` ({}) has {} = {bad}, an axis no tensor of rank ≤ {MAX_AXIS_RANK} has",
                        node.name, node.op_type, attribute.name
                    ));
                }
            }
            for subgraph in attribute.g.iter().chain(&attribute.graphs) {
                check_axis_attributes(subgraph)?;
            }
        }
    }
    Ok(())
}

fn missing(path: &str, kind: &'static str, name: String, found: &[String]) -> LoadError {
    LoadError::MissingTensor { path: path.to_string(), kind, name, found: found.join(", ") }
}

/// The hidden-states input as declared in the file must agree with the manifest where the file is specific: a
/// layer exported with another hidden size declares it, and is refused here with both shapes.
fn check_declared(path: &str, model: &InferenceModel, ix: usize, expected: &[TDim]) -> Result<(), LoadError> {
    let Ok(fact) = model.input_fact(ix) else { return Ok(()) };
    let declared: Vec<Option<TDim>> = fact.shape.dims().map(|d| d.concretize()).collect();
    let rank_clash = !fact.shape.is_open() && declared.len() != expected.len();
    let dim_clash = declared.iter().zip(expected).any(|(d, e)| {
        let d = d.as_ref().and_then(|d| d.to_i64().ok());
        matches!((d, e.to_i64()), (Some(d), Ok(e)) if d != e)
    });
    if rank_clash || dim_clash {
        let found: Vec<String> = declared.iter().map(|d| d.as_ref().map_or("?".into(), |d| d.to_string())).collect();
        return Err(LoadError::ShapeMismatch {
            path: path.to_string(),
            what: format!("input `{}`", io_names::HIDDEN_STATES),
            expected: format!("f32 {}", shape_string(expected)),
            found: format!("[{}]", found.join(", ")),
        });
    }
    Ok(())
}

fn shape_string(dims: &[TDim]) -> String {
    let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}
