//! cosee-tools: turns a COSEE checkpoint into the per-layer ONNX model package the runtime serves (f32 or int8),
//! and calibrates and inspects packages.
//!
//! Pipeline: [`checkpoint`] (safetensors + config → validated [`weights`]) → [`stages`] (one ONNX graph per stage,
//! built with [`onnx`], int8 math in [`quant`]) → [`export`] (package directory + manifest, self-checked with
//! [`check`] against the independent [`reference`] forward pass) → [`calibrate`] (τ table from labelled data, via
//! the runtime's engine) → [`inspect`]. With the `verify` feature (libtorch), `verify` runs the trainer's tch model
//! beside the runtime on the same inputs.

pub mod calibrate;
pub mod check;
pub mod checkpoint;
pub mod compare;
pub mod export;
pub mod inspect;
pub mod onnx;
pub mod quant;
pub mod reference;
pub mod soak;
pub mod stages;
/// The test fixtures, defined once in cosee-format and kept here under their old path.
pub use cosee_format::testing;
#[cfg(feature = "verify")]
pub mod verify;
pub mod weights;

pub use checkpoint::{write_random_checkpoint, Checkpoint, CheckpointError};
pub use export::{export, ExportError, ExportOptions, ExportReport};
