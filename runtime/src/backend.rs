//! What runs a package's stage graphs: a small trait, so that the exit loop ([`crate::Engine::classify_with`]) is
//! the same whichever engine computes the layers. [`TractBackend`] (the default) plans every stage with tract; with
//! the `ort` cargo feature, [`crate::ort_backend::OrtBackend`] runs the same ONNX files in ONNX Runtime.
//!
//! A backend keeps the hidden states between stages in its own tensor type (no copy between layers); only the
//! logits of each executed exit come back as plain `f32`s, for the exit decision.

use crate::error::{LoadError, RunError};
use crate::fused::{Fused, Fusion};
use crate::manifest;
use crate::package::Package;
use crate::planner::{self, DeferredStage, DeferredStages};
use crate::stage::{Shapes, StageGraph, StageKind, StagePlan};
use crate::tokenize::Encoded;
use std::sync::Arc;
use tract_onnx::prelude::{IntoTValue, TValue, Tensor, TractError, TypedSimplePlan};

/// Runs one package's stages: the embeddings, layer m (1-based) and exit m, one input (batch 1) at a time.
///
/// Implementations are built once from a validated [`Package`] (every graph loaded and shape-checked there) and
/// are shared across threads; a call only runs one stage.
pub trait Backend: Sized + Send + Sync + std::fmt::Debug {
    /// The hidden states `[1, tokens, hidden]` between stages, in the backend's own form.
    type Hidden;
    /// The attention mask `[1, tokens]` every layer takes, in the backend's own form.
    type Mask;

    /// Loads every stage graph of the package; refuses one that does not fit the package format.
    fn load(package: &Package) -> Result<Self, LoadError>;

    fn num_layers(&self) -> usize;

    /// The engine's name in reports (bench JSON, `GET /v1/model`): which one produced a number matters.
    fn name(&self) -> &'static str;

    /// The embeddings stage on one encoded input: the first hidden states and the layers' mask.
    fn embed(&self, encoded: &Encoded) -> Result<(Self::Hidden, Self::Mask), RunError>;

    /// Layer `m` (1-based) on the hidden states of layer `m − 1`.
    fn layer(&self, m: usize, hidden: Self::Hidden, mask: &Self::Mask) -> Result<Self::Hidden, RunError>;

    /// Exit `m`'s logits on layer `m`'s hidden states, written into `logits` (cleared first).
    fn exit(&self, m: usize, hidden: &Self::Hidden, logits: &mut Vec<f32>) -> Result<(), RunError>;

    /// Returns once every stage runs without a first-use delay. A backend may finish loading after [`Backend::load`]
    /// returns (tract plans its deeper layers in the background); a benchmark waits here before it times
    /// anything. An error names a stage that cannot run.
    fn ready(&self) -> Result<(), RunError> {
        Ok(())
    }
}

/// The default backend: one optimized tract plan per stage.
///
/// Every stage is read and checked at load; the embeddings and layer 1 with its exit are planned there too, the
/// deeper stages in the background or on first use ([`crate::planner`]). Clones share the stages.
#[derive(Debug, Clone)]
pub struct TractBackend {
    stages: Arc<TractStages>,
}

#[derive(Debug)]
struct TractStages {
    embeddings: DeferredStage,
    layers: Vec<DeferredStage>,
    exits: Vec<DeferredStage>,
}

impl DeferredStages for TractStages {
    /// Layer m, then exit m, from layer 1 on: the order the exit loop needs them in.
    fn deferred(&self, at: usize) -> Option<&DeferredStage> {
        let stages = if at.is_multiple_of(2) { &self.layers } else { &self.exits };
        stages.get(at / 2)
    }
}

impl TractBackend {
    /// Every stage's plan with the load-time rewrites `fusion` asks for ([`Backend::load`]: all of them).
    ///
    /// Every stage file is read, typed and checked on every core ([`crate::parallel::map_in_order`], the
    /// embeddings first: theirs is the longest job); then the stages every input needs (the embeddings, layer 1,
    /// exit 1) are planned, on every core too. The rest are left to the background planner. The embeddings' 24 MB
    /// word table used to be held twice while it was read (protobuf, then tensor), which kept it alone; read
    /// straight into its tensor ([`crate::stage_file`]) it no longer raises the peak beside the other stages. A
    /// fault is reported for the first faulty stage in package order, as a sequential load would.
    pub fn load_with(package: &Package, fusion: Fusion) -> Result<Self, LoadError> {
        crate::x86_kernels::steer_tract_kernels();
        let m = package.manifest();
        let shapes = Shapes { hidden: m.hidden_size, labels: m.label_names.len() };
        let read = |file: &str, kind| {
            StageGraph::read(&package.path(file), kind, shapes).map(|graph| DeferredStage::new(graph, fusion))
        };
        let jobs: Vec<(String, StageKind)> =
            std::iter::once((manifest::EMBEDDINGS_FILE.to_string(), StageKind::Embeddings))
                .chain((1..=m.num_layers).flat_map(|layer| {
                    [(manifest::layer_file(layer), StageKind::Layer), (manifest::exit_file(layer), StageKind::Exit)]
                }))
                .collect();
        let read = crate::parallel::map_in_order(&jobs, None, |(file, kind)| read(file, *kind));
        let mut read = read.into_iter().collect::<Result<Vec<_>, LoadError>>()?.into_iter();
        let embeddings = read.next().expect("map_in_order gives one result per job, the embeddings' first");
        let (mut layers, mut exits) = (Vec::with_capacity(m.num_layers), Vec::with_capacity(m.num_layers));
        while let (Some(layer), Some(exit)) = (read.next(), read.next()) {
            layers.push(layer);
            exits.push(exit);
        }
        let stages = TractStages { embeddings, layers, exits };
        let needed_by_every_input = [&stages.embeddings, &stages.layers[0], &stages.exits[0]];
        let planned = crate::parallel::map_in_order(&needed_by_every_input, None, |stage| stage.plan_at_load());
        crate::parallel::release_freed_memory();
        planned.into_iter().collect::<Result<Vec<_>, LoadError>>()?;
        let stages = Arc::new(stages);
        planner::plan_in_background(&stages);
        Ok(Self { stages })
    }

    /// Layer `m`'s (1-based) optimized tract plan, for tools that profile it node by node (its inputs in the
    /// graph's order: hidden states, attention mask for the exporter's packages). Planned now if it was not yet.
    pub fn layer_plan(&self, m: usize) -> Result<&Arc<TypedSimplePlan>, RunError> {
        self.stages.layers[m - 1].get().map(StagePlan::plan)
    }

    /// Exit `m`'s (1-based) optimized tract plan, for the same tools (its one input: layer `m`'s hidden states).
    pub fn exit_plan(&self, m: usize) -> Result<&Arc<TypedSimplePlan>, RunError> {
        self.stages.exits[m - 1].get().map(StagePlan::plan)
    }

    /// What the load-time rewrites replaced, over every stage (planning every stage first).
    pub fn fused(&self) -> Result<Fused, RunError> {
        let mut total = self.stages.embeddings.get()?.fused;
        for stage in self.stages.layers.iter().chain(&self.stages.exits) {
            total = total + stage.get()?.fused;
        }
        Ok(total)
    }
}

impl Backend for TractBackend {
    type Hidden = TValue;
    type Mask = TValue;

    /// Builds every stage's plan (parse, fix input facts, check shapes against the manifest, optimize with our
    /// fused operators) once.
    fn load(package: &Package) -> Result<Self, LoadError> {
        Self::load_with(package, Fusion::ALL)
    }

    fn num_layers(&self) -> usize {
        self.stages.layers.len()
    }

    fn name(&self) -> &'static str {
        "tract"
    }

    /// Plans, on this thread, every stage the background planner has not planned yet (waiting for those it is
    /// planning), and reports the first stage that could not be planned.
    fn ready(&self) -> Result<(), RunError> {
        (0..).map_while(|at| self.stages.deferred(at)).try_for_each(|stage| stage.get().map(drop))
    }

    fn embed(&self, encoded: &Encoded) -> Result<(TValue, TValue), RunError> {
        let embeddings = self.stages.embeddings.get()?;
        let shape = [1, encoded.len()];
        let tensor = |values: &[i64]| -> Result<TValue, RunError> {
            Tensor::from_shape(&shape, values).map(IntoTValue::into_tvalue).map_err(|e| stage_error(embeddings, e))
        };
        let ids = tensor(&encoded.input_ids)?;
        let types = tensor(&encoded.token_type_ids)?;
        let mask = tensor(&encoded.attention_mask)?;
        let hidden = embeddings.run(&[&ids, &types, &mask]).map_err(|e| stage_error(embeddings, e))?;
        Ok((hidden, mask))
    }

    fn layer(&self, m: usize, hidden: TValue, mask: &TValue) -> Result<TValue, RunError> {
        let stage = self.stages.layers[m - 1].get()?;
        stage.run(&[&hidden, mask]).map_err(|e| stage_error(stage, e))
    }

    fn exit(&self, m: usize, hidden: &TValue, logits: &mut Vec<f32>) -> Result<(), RunError> {
        let stage = self.stages.exits[m - 1].get()?;
        let out = stage.run(&[hidden]).map_err(|e| stage_error(stage, e))?;
        let z = out.try_as_plain_ram().and_then(|t| t.as_slice::<f32>()).map_err(|e| stage_error(stage, e))?;
        logits.clear();
        logits.extend_from_slice(z);
        Ok(())
    }
}

fn stage_error(stage: &StagePlan, e: TractError) -> RunError {
    RunError::Stage { stage: stage.file.clone(), message: format!("{e:#}") }
}
