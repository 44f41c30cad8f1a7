//! cosee-runtime: loads a COSEE model package and classifies text with real early exit, one layer at a time.
//!
//! The lifecycle is in the types: a [`Package`] is a directory that passed validation (manifest version and
//! consistency, files present, sizes and sha256s, tokenizer); an [`Engine`] holds every stage ready to run on a
//! [`Backend`] (by default [`TractBackend`]: one optimized tract plan per stage), built once from a package;
//! [`Engine::classify_with`] — the exit loop, in `engine.rs` — answers one [`Input`] with an [`Answer`].
//!
//! Shared definitions used by every crate of the workspace live here too: the exit [`signal`]s, the
//! package [`manifest`] format, the checkpoint [`config`], the GLUE [`glue`] readers and the paper's
//! [`metrics`].

pub mod answer;
pub mod backend;
pub mod config;
pub mod engine;
pub mod error;
pub mod glue;
pub mod lines;
pub mod manifest;
pub mod metrics;
#[cfg(feature = "ort")]
pub mod ort_backend;
pub mod package;
pub mod settings;
pub mod signal;
pub mod sigpipe;
mod stage;
pub mod tokenize;

pub use answer::{Answer, Stage, StageTimes};
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
pub mod tune;

pub use glue::{Example, Task};
pub use manifest::Manifest;
pub use signal::ExitSignal;
