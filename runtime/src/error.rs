//! The runtime's errors: what refuses a package at load ([`LoadError`]), and what fails one input at run time
//! ([`InputError`], [`RunError`]). Every load error names the file it is about, so that a user can see which part of
//! a package to re-export; an input error never affects the other inputs of a batch.

use crate::json::JsonError;

/// A package refused at load. Each fault has its own variant (tests and callers match on them).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `manifest.json` is missing, unreadable, not a manifest, or of an unknown format version.
    #[error(transparent)]
    Manifest(#[from] JsonError),
    /// The manifest contradicts itself (no layers, labels missing, max length too short…).
    #[error("{path}: {message}")]
    InvalidManifest { path: String, message: String },
    /// A file the format requires is not in the package directory.
    #[error("{path}: missing ({what} required by the package format)")]
    MissingFile { path: String, what: String },
    /// A file the format requires is in the directory but the manifest does not list it (so it cannot be checked).
    #[error("{path}: not listed in manifest.json's `files`, so its checksum cannot be verified")]
    Unlisted { path: String },
    /// The file's size differs from the manifest's: typically a truncated copy or download.
    #[error("{path}: {found} bytes, but manifest.json says {expected} (truncated or replaced file)")]
    SizeMismatch { path: String, expected: u64, found: u64 },
    /// Same size, different content: a tampered or corrupted file.
    #[error("{path}: sha256 {found} does not match manifest.json's {expected} (tampered or corrupted file)")]
    ChecksumMismatch { path: String, expected: String, found: String },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// `tokenizer.json` does not parse, or cannot be configured for this package.
    #[error("{path}: not a usable tokenizer: {message}")]
    Tokenizer { path: String, message: String },
    /// The ONNX file does not parse, or tract cannot type or optimize it.
    #[error("{path}: not a usable ONNX stage graph: {message}")]
    InvalidGraph { path: String, message: String },
    /// A stage graph lacks an input or output the format names.
    #[error("{path}: the graph has no {kind} named `{name}` (found: {found})")]
    MissingTensor { path: String, kind: &'static str, name: String, found: String },
    /// Consecutive stages disagree on a shape (e.g. a layer of another hidden size spliced into the package).
    #[error("{path}: {what} has shape {found}, expected {expected}")]
    ShapeMismatch { path: String, what: String, expected: String, found: String },
    /// The stage backend itself is unavailable (e.g. ONNX Runtime's library for the `ort` feature's backend).
    #[error("{backend} backend: {message}")]
    Backend { backend: &'static str, message: String },
}

pub use cosee_format::tokenize::InputError;

/// One input failed. The engine stays usable for the next input.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Input(#[from] InputError),
    /// tract failed while running a stage (it validated at load, so this is unexpected).
    #[error("{stage}: {message}")]
    Stage { stage: String, message: String },
    /// Every exit produced NaN or infinite logits: there is no answer to give.
    #[error("every exit produced NaN or infinite logits (layers {0:?}); the package's weights are broken")]
    NoFiniteExit(Vec<usize>),
}
