//! The backend chosen when the program runs, not when it is compiled: `--backend tract|ort` on every `cosee-edge`
//! subcommand. [`AnyBackend`] is the [`Engine`](crate::Engine)'s default backend; it forwards each stage call to
//! tract or, in a build with the `ort` cargo feature, to ONNX Runtime.
//!
//! Why a run-time choice at all: the package forms favour different engines. tract runs the `int8` form
//! (per-token s8×s8, with the runtime's load-time fusions) fastest; ONNX Runtime runs its own `int8-ort` form
//! (`cosee-tools export --quantize int8-ort`) fastest, into fused kernels tract does not have, and about 1.8× faster
//! than tract's int8 on x86 (docs/ort-side-by-side.md). One binary serves either, and every subcommand (bench, tune,
//! serve, the HTTP API) keeps one code path. The cost is one `match` per stage call, against stages that take
//! 0.1–5 ms.

use crate::backend::{Backend, TractBackend};
use crate::error::{LoadError, RunError};
use crate::package::Package;
use crate::tokenize::Encoded;
use tract_onnx::prelude::TValue;

/// Which engine computes the stages: the values of `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// tract (always built in): the `none` and `int8` package forms, and every platform the binary builds for.
    #[default]
    Tract,
    /// ONNX Runtime, loaded at run time from the library `ORT_DYLIB_PATH` names (the `ort` cargo feature, on by
    /// default): the `int8-ort` package form on x86.
    Ort,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tract => "tract",
            Self::Ort => "ort",
        })
    }
}

/// A backend picked at run time; see the module documentation. Cloning shares the loaded stages (tract's plans
/// are `Arc`s; ONNX Runtime's sessions sit behind one `Arc`).
#[derive(Debug, Clone)]
pub enum AnyBackend {
    Tract(TractBackend),
    #[cfg(feature = "ort")]
    Ort(std::sync::Arc<crate::ort_backend::OrtBackend>),
}

/// The hidden states between stages, in the chosen backend's own form.
pub enum AnyHidden {
    Tract(TValue),
    #[cfg(feature = "ort")]
    Ort(ort::value::DynValue),
}

/// The attention mask every layer takes, in the chosen backend's own form.
pub enum AnyMask {
    Tract(TValue),
    #[cfg(feature = "ort")]
    Ort(ort::value::Tensor<i64>),
}

impl AnyBackend {
    /// Loads every stage of `package` on the backend `kind` names. `ort` in a build without the `ort` feature is a
    /// load error that says how to get it, not a panic.
    pub fn load_kind(package: &Package, kind: BackendKind) -> Result<Self, LoadError> {
        match kind {
            BackendKind::Tract => TractBackend::load(package).map(Self::Tract),
            #[cfg(feature = "ort")]
            BackendKind::Ort => crate::ort_backend::OrtBackend::load(package).map(|b| Self::Ort(b.into())),
            #[cfg(not(feature = "ort"))]
            BackendKind::Ort => Err(LoadError::Backend {
                backend: "onnxruntime",
                message: "this build has no ONNX Runtime backend; build it with `cargo build --release \
                          --features cosee-runtime/ort` and set ORT_DYLIB_PATH (docs/ort-side-by-side.md)"
                    .into(),
            }),
        }
    }

    pub fn kind(&self) -> BackendKind {
        match self {
            Self::Tract(_) => BackendKind::Tract,
            #[cfg(feature = "ort")]
            Self::Ort(_) => BackendKind::Ort,
        }
    }
}

/// A value of one backend handed to the other: impossible through [`crate::Engine`], which threads each stage's
/// output into the next stage of the same backend, but an error rather than a panic if it ever happened.
#[cfg(feature = "ort")]
fn crossed() -> RunError {
    RunError::Stage { stage: "backend".into(), message: "a value of one backend was handed to another".into() }
}

impl Backend for AnyBackend {
    type Hidden = AnyHidden;
    type Mask = AnyMask;

    /// tract, the default backend.
    fn load(package: &Package) -> Result<Self, LoadError> {
        Self::load_kind(package, BackendKind::Tract)
    }

    fn num_layers(&self) -> usize {
        match self {
            Self::Tract(b) => b.num_layers(),
            #[cfg(feature = "ort")]
            Self::Ort(b) => b.num_layers(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Tract(b) => b.name(),
            #[cfg(feature = "ort")]
            Self::Ort(b) => b.name(),
        }
    }

    fn ready(&self) -> Result<(), RunError> {
        match self {
            Self::Tract(b) => b.ready(),
            #[cfg(feature = "ort")]
            Self::Ort(b) => b.ready(),
        }
    }

    fn embed(&self, encoded: &Encoded) -> Result<(AnyHidden, AnyMask), RunError> {
        match self {
            Self::Tract(b) => b.embed(encoded).map(|(h, m)| (AnyHidden::Tract(h), AnyMask::Tract(m))),
            #[cfg(feature = "ort")]
            Self::Ort(b) => b.embed(encoded).map(|(h, m)| (AnyHidden::Ort(h), AnyMask::Ort(m))),
        }
    }

    fn layer(&self, m: usize, hidden: AnyHidden, mask: &AnyMask) -> Result<AnyHidden, RunError> {
        match (self, hidden, mask) {
            (Self::Tract(b), AnyHidden::Tract(h), AnyMask::Tract(mask)) => b.layer(m, h, mask).map(AnyHidden::Tract),
            #[cfg(feature = "ort")]
            (Self::Ort(b), AnyHidden::Ort(h), AnyMask::Ort(mask)) => b.layer(m, h, mask).map(AnyHidden::Ort),
            #[cfg(feature = "ort")]
            _ => Err(crossed()),
        }
    }

    fn exit(&self, m: usize, hidden: &AnyHidden, logits: &mut Vec<f32>) -> Result<(), RunError> {
        match (self, hidden) {
            (Self::Tract(b), AnyHidden::Tract(h)) => b.exit(m, h, logits),
            #[cfg(feature = "ort")]
            (Self::Ort(b), AnyHidden::Ort(h)) => b.exit(m, h, logits),
            #[cfg(feature = "ort")]
            _ => Err(crossed()),
        }
    }
}
