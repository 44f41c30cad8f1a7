//! cosee-runtime: loads a COSEE model package and classifies text with real early exit, one layer at a time.
//!
//! The lifecycle is in the types: a [`Package`] is a directory that passed validation (manifest version and
//! consistency, files present, sizes and sha256s, tokenizer); an [`Engine`] holds every stage ready to run on a
//! [`Backend`] (by default [`AnyBackend`], the one `--backend` picks: [`TractBackend`], one optimized tract plan per
//! stage, unless ONNX Runtime is asked for), built once from a package;
//! [`Engine::classify_with`] — the exit loop, in `engine.rs` — answers one [`Input`] with an [`Answer`].
//!
//! The definitions every crate of the workspace shares (the exit [`signal`]s and the exit decision, the package
//! [`manifest`] format, the checkpoint [`config`], the GLUE [`glue`] readers, the paper's [`metrics`] and the τ
//! sweep, [`json`] files) live in the `cosee-format` crate (`runtime/format/`), which needs no tract; they are
//! re-exported here under the same paths.

pub use cosee_format::{config, glue, json, manifest, metrics, settings, signal, sigpipe, tokenize};

pub mod answer;
pub mod any_backend;
pub mod backend;
pub mod engine;
pub mod error;
pub mod fused;
#[cfg(feature = "http")]
pub mod http;
pub mod lines;
mod load_phases;
#[cfg(feature = "ort")]
pub mod ort_backend;
pub mod package;
pub mod parallel;
mod planner;
mod stage;
mod stage_file;
pub mod x86_kernels;

pub use answer::{Answer, Stage, StageTimes};
pub use any_backend::{AnyBackend, BackendKind};
pub use backend::{Backend, TractBackend};
pub use engine::{Engine, ExitPolicy, FullDepth};
pub use error::{InputError, LoadError, RunError};
pub use lines::{LineReader, MAX_LINE_BYTES};
pub use package::Package;
pub use tokenize::{Encoded, Input, TextTokenizer};
pub mod bench;
pub mod controller;
pub mod power;
pub mod profile;
pub mod serving;
pub mod tune;

pub use glue::{Example, Task};
pub use manifest::Manifest;
pub use signal::ExitSignal;
