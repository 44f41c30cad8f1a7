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
use crate::stage::{Shapes, StageKind, StagePlan};
use crate::tokenize::Encoded;
use tract_onnx::prelude::{IntoTValue, TValue, Tensor, TractError};

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
}

/// The default backend: one optimized tract plan per stage.
#[derive(Debug, Clone)]
pub struct TractBackend {
    embeddings: StagePlan,
    layers: Vec<StagePlan>,
    exits: Vec<StagePlan>,
}

impl TractBackend {
    /// Every stage's plan with the load-time rewrites `fusion` asks for ([`Backend::load`]: all of them).
    ///
    /// Planning is most of cold start, and the stages are independent: the layers and exits are planned on every
    /// core ([`crate::parallel::map_in_order`]), after the embeddings. The embeddings go alone and first because
    /// their 24 MB word table is copied twice while it is read (protobuf, then tensor): overlapping that with the
    /// layers' planning raised the peak RSS by about 20 MB for no time saved, the other jobs filling the other
    /// cores just as well afterwards. A fault is reported for the first faulty stage in package order, as a
    /// sequential load would.
    pub fn load_with(package: &Package, fusion: Fusion) -> Result<Self, LoadError> {
        let m = package.manifest();
        let shapes = Shapes { hidden: m.hidden_size, labels: m.label_names.len() };
        let stage = |file: &str, kind| StagePlan::load(&package.path(file), kind, shapes, fusion);
        let embeddings = stage(manifest::EMBEDDINGS_FILE, StageKind::Embeddings)?;
        let jobs: Vec<(String, StageKind)> = (1..=m.num_layers)
            .flat_map(|layer| {
                [(manifest::layer_file(layer), StageKind::Layer), (manifest::exit_file(layer), StageKind::Exit)]
            })
            .collect();
        let plans = crate::parallel::map_in_order(&jobs, None, |(file, kind)| stage(file, *kind));
        crate::parallel::release_freed_memory();
        let mut plans = plans.into_iter().collect::<Result<Vec<_>, _>>()?.into_iter();
        let (mut layers, mut exits) = (Vec::with_capacity(m.num_layers), Vec::with_capacity(m.num_layers));
        while let (Some(layer), Some(exit)) = (plans.next(), plans.next()) {
            layers.push(layer);
            exits.push(exit);
        }
        Ok(Self { embeddings, layers, exits })
    }

    /// Layer `m`'s (1-based) optimized tract plan, for tools that profile it node by node (its inputs in the
    /// graph's order: hidden states, attention mask for the exporter's packages).
    pub fn layer_plan(&self, m: usize) -> &std::sync::Arc<tract_onnx::prelude::TypedSimplePlan> {
        self.layers[m - 1].plan()
    }

    /// What the load-time rewrites replaced, over every stage.
    pub fn fused(&self) -> Fused {
        let stages = std::iter::once(&self.embeddings).chain(&self.layers).chain(&self.exits);
        stages.fold(Fused::default(), |total, stage| total + stage.fused)
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
        self.layers.len()
    }

    fn name(&self) -> &'static str {
        "tract"
    }

    fn embed(&self, encoded: &Encoded) -> Result<(TValue, TValue), RunError> {
        let shape = [1, encoded.len()];
        let tensor = |values: &[i64]| -> Result<TValue, RunError> {
            Tensor::from_shape(&shape, values)
                .map(IntoTValue::into_tvalue)
                .map_err(|e| stage_error(&self.embeddings, e))
        };
        let ids = tensor(&encoded.input_ids)?;
        let types = tensor(&encoded.token_type_ids)?;
        let mask = tensor(&encoded.attention_mask)?;
        let hidden = self.embeddings.run(&[&ids, &types, &mask]).map_err(|e| stage_error(&self.embeddings, e))?;
        Ok((hidden, mask))
    }

    fn layer(&self, m: usize, hidden: TValue, mask: &TValue) -> Result<TValue, RunError> {
        let stage = &self.layers[m - 1];
        stage.run(&[&hidden, mask]).map_err(|e| stage_error(stage, e))
    }

    fn exit(&self, m: usize, hidden: &TValue, logits: &mut Vec<f32>) -> Result<(), RunError> {
        let stage = &self.exits[m - 1];
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
