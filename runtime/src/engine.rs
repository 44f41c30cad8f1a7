//! The early-exit engine: one input, batch size 1, layer by layer, stopping at the first exit whose signal meets τ.
//!
//! The exit loop is [`Engine::classify_with`]: tokenize → embeddings → for m in 1..=M { layer m → exit m → signal →
//! stop if it meets τ }; the last layer always answers. Unlike the paper's reference code, which runs every layer and
//! picks the exit afterwards, the layers after the exit are never computed. Stages are loaded once, in
//! [`Engine::new`] (tract) or [`Engine::with_backend`] (any [`Backend`]); a call only tokenizes and runs them.

use crate::answer::{Answer, Stage, StageTimes};
use crate::any_backend::{AnyBackend, BackendKind};
use crate::backend::Backend;
use crate::error::{InputError, LoadError, RunError};
use crate::manifest::Manifest;
use crate::package::Package;
/// Which signal decides the exit, at which threshold. Defaults to the package's ([`Engine::default_policy`]).
pub use crate::signal::ExitPolicy;
use crate::signal::{exit_layer_of_logits, softmax, ExitWalk};
use crate::tokenize::{Encoded, Input};
use std::path::Path;
use std::time::Instant;

/// Every exit's logits for one input (no early exit): what calibration and the parity tests compare.
#[derive(Debug, Clone, PartialEq)]
pub struct FullDepth {
    /// `logits[m - 1]` are exit m's logits, as computed (NaN or inf included).
    pub logits: Vec<Vec<f32>>,
    pub stage_ms: StageTimes,
    pub tokens: usize,
    pub truncated: bool,
}

impl FullDepth {
    /// The exit layer the engine would choose under `policy`, from these logits: the same decision code
    /// ([`ExitWalk`]) as [`Engine::classify_with`], so that a sweep over thresholds needs one full-depth run per input.
    pub fn exit_layer(&self, policy: ExitPolicy) -> usize {
        exit_layer_of_logits(policy, &self.logits)
    }
}

/// A loaded package: validated files, a tokenizer and every stage ready to run on backend `B` (tract by default:
/// one optimized plan per stage, unless [`Engine::load_on`] asks for ONNX Runtime; see [`AnyBackend`]).
#[derive(Debug, Clone)]
pub struct Engine<B = AnyBackend> {
    package: Package,
    backend: B,
}

impl Engine {
    /// Opens, validates and loads the package in `dir` on tract.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        Self::new(Package::open(dir)?)
    }

    /// Opens, validates and loads the package in `dir` on the backend `kind` names (`--backend`).
    pub fn load_on(dir: &Path, kind: BackendKind) -> Result<Self, LoadError> {
        let package = Package::open(dir)?;
        let backend = AnyBackend::load_kind(&package, kind)?;
        Ok(Self::from_parts(package, backend))
    }

    /// Builds every stage's tract plan (parse, fix input facts, check shapes against the manifest, optimize) once.
    pub fn new(package: Package) -> Result<Self, LoadError> {
        Self::with_backend(package)
    }
}

impl<B: Backend> Engine<B> {
    /// Loads every stage of a validated package on backend `B`: `Engine::<OrtBackend>::with_backend(package)`.
    pub fn with_backend(package: Package) -> Result<Self, LoadError> {
        let backend = B::load(&package)?;
        Ok(Self { package, backend })
    }

    /// An engine on a backend already loaded from `package` (one built with options of its own, such as
    /// [`crate::TractBackend::load_with`]).
    pub fn from_parts(package: Package, backend: B) -> Self {
        Self { package, backend }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn package(&self) -> &Package {
        &self.package
    }

    pub fn manifest(&self) -> &Manifest {
        self.package.manifest()
    }

    pub fn num_layers(&self) -> usize {
        self.backend.num_layers()
    }

    /// Returns once every stage runs without a first-use delay ([`Backend::ready`]): the engine answers as soon as
    /// it is loaded, while tract still plans the deeper layers in the background; a benchmark calls this before it
    /// times anything.
    pub fn ready(&self) -> Result<(), RunError> {
        self.backend.ready()
    }

    /// The package's signal and default threshold.
    pub fn default_policy(&self) -> ExitPolicy {
        let m = self.manifest();
        ExitPolicy { signal: m.signal.name, threshold: m.default_threshold }
    }

    /// Tokenizes one input as the engine would (no padding, truncated to `max_seq_len`).
    pub fn encode(&self, input: &Input) -> Result<Encoded, InputError> {
        self.package.tokenizer().encode(input)
    }

    /// Classifies one input with the package's default policy.
    pub fn classify(&self, input: &Input) -> Result<Answer, RunError> {
        self.classify_with(input, self.default_policy())
    }

    /// **The exit loop.** Classifies one input, running layers only until an exit's signal meets `policy`'s τ.
    pub fn classify_with(&self, input: &Input, policy: ExitPolicy) -> Result<Answer, RunError> {
        let num_layers = self.num_layers();
        let mut times = StageTimes::with_capacity(2 + 2 * num_layers);
        let start = Instant::now();
        let encoded = self.encode(input)?;
        times.push(Stage::Tokenize, start.elapsed());
        let (mut hidden, mask) = self.embed(&encoded, &mut times)?;

        let mut walk = ExitWalk::new(policy, num_layers);
        let labels = self.manifest().label_names.len();
        let mut logits: Vec<f32> = Vec::with_capacity(labels);
        let mut z: Vec<f32> = Vec::with_capacity(labels);
        for m in 1..=num_layers {
            hidden = timed(&mut times, Stage::Layer(m), || self.backend.layer(m, hidden, &mask))?;
            timed(&mut times, Stage::Exit(m), || self.backend.exit(m, &hidden, &mut z))?;
            let stop = walk.observe(m, &z);
            if walk.answering == Some(m) {
                logits.clear();
                logits.extend_from_slice(&z);
            }
            if stop {
                break;
            }
        }
        if walk.answering.is_none() {
            return Err(RunError::NoFiniteExit(walk.skipped));
        }
        Ok(self.answer(&logits, walk, policy, times, &encoded))
    }

    /// Runs every layer and every exit, with no early exit; returns all exits' logits and the stage timings.
    pub fn run_all_exits(&self, input: &Input) -> Result<FullDepth, RunError> {
        let num_layers = self.num_layers();
        let mut times = StageTimes::with_capacity(2 + 2 * num_layers);
        let start = Instant::now();
        let encoded = self.encode(input)?;
        times.push(Stage::Tokenize, start.elapsed());
        let (mut hidden, mask) = self.embed(&encoded, &mut times)?;
        let mut logits = Vec::with_capacity(num_layers);
        for m in 1..=num_layers {
            hidden = timed(&mut times, Stage::Layer(m), || self.backend.layer(m, hidden, &mask))?;
            let mut z = Vec::with_capacity(self.manifest().label_names.len());
            timed(&mut times, Stage::Exit(m), || self.backend.exit(m, &hidden, &mut z))?;
            logits.push(z);
        }
        Ok(FullDepth { logits, stage_ms: times, tokens: encoded.len(), truncated: encoded.truncated })
    }

    /// The embeddings stage; returns the hidden states and the attention mask every layer takes.
    fn embed(&self, encoded: &Encoded, times: &mut StageTimes) -> Result<(B::Hidden, B::Mask), RunError> {
        timed(times, Stage::Embeddings, || self.backend.embed(encoded))
    }

    fn answer(&self, logits: &[f32], walk: ExitWalk, policy: ExitPolicy, times: StageTimes, enc: &Encoded) -> Answer {
        let probs = softmax(logits);
        let label_index = crate::signal::argmax(&probs);
        Answer {
            label: self.manifest().label_names[label_index].clone(),
            label_index,
            probs,
            exit_layer: walk.exit_layer(),
            num_layers: self.num_layers(),
            signal: policy.signal,
            threshold: policy.threshold,
            signals: walk.signals,
            skipped_exits: walk.skipped,
            total_ms: times.total_ms(),
            stage_ms: times,
            tokens: enc.len(),
            truncated: enc.truncated,
        }
    }
}

/// Runs one stage and records its time.
fn timed<T>(times: &mut StageTimes, name: Stage, f: impl FnOnce() -> Result<T, RunError>) -> Result<T, RunError> {
    let start = Instant::now();
    let out = f()?;
    times.push(name, start.elapsed());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(logits: Vec<Vec<f32>>) -> FullDepth {
        FullDepth { logits, stage_ms: StageTimes::default(), tokens: 3, truncated: false }
    }

    #[test]
    fn engine_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Engine>();
    }

    use crate::signal::ExitSignal;

    #[test]
    fn exit_decision_matches_signal_exit_layer() {
        let logits = vec![vec![0.0, 0.1], vec![0.0, 3.0], vec![0.0, 9.0]];
        let policy = |threshold| ExitPolicy { signal: ExitSignal::MaxSoftmax, threshold };
        let signals: Vec<f32> = logits.iter().map(|z| ExitSignal::MaxSoftmax.of_logits(z)).collect();
        for tau in [0.0, 0.6, 0.9, 0.99, 1.0] {
            assert_eq!(
                full(logits.clone()).exit_layer(policy(tau)),
                crate::signal::exit_layer(ExitSignal::MaxSoftmax, &signals, tau),
                "τ = {tau}"
            );
        }
    }

    #[test]
    fn non_finite_exits_never_trigger() {
        // Exit 1 is NaN: even τ = 1.0 (energy always below) cannot stop there; exit 2 stops.
        let f = full(vec![vec![f32::NAN, 0.0], vec![0.0, 1.0], vec![0.0, 1.0]]);
        assert_eq!(f.exit_layer(ExitPolicy { signal: ExitSignal::Energy, threshold: 1.0 }), 2);
        let mut walk = ExitWalk::new(ExitPolicy { signal: ExitSignal::Energy, threshold: 1.0 }, 2);
        assert!(!walk.observe(1, &[f32::INFINITY, 0.0]));
        assert!(walk.observe(2, &[f32::NAN, 0.0]));
        assert_eq!(walk.skipped, [1, 2]);
        assert_eq!(walk.answering, None);
    }

    #[test]
    fn patience_skips_non_finite_exits() {
        let policy = ExitPolicy { signal: ExitSignal::Patience, threshold: 2.0 };
        let f = full(vec![vec![1.0, 0.0], vec![f32::NAN, 0.0], vec![2.0, 0.0], vec![3.0, 0.0], vec![0.0, 1.0]]);
        // Layers 1, 3, 4 agree: the streak reaches 2 at layer 4.
        assert_eq!(f.exit_layer(policy), 4);
    }
}
