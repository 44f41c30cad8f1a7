//! cosee-format: what every crate of the workspace shares and none needs tract or libtorch for.
//!
//! - [`signal`]: the exit signals (energy, entropy, max-softmax, patience), their directions, and the exit decision.
//! - [`metrics`]: the paper's measures (Eq. 12 speed-up, accuracy, F1, DIS) and the τ sweep.
//! - [`glue`]: GLUE tasks and their TSV files.
//! - [`checkpoint`]: the checkpoint directory's files, tensor names and the one safetensors reader.
//! - [`config`]: a checkpoint's `config.json` (Hugging Face's BERT config plus the `cosee` section).
//! - [`manifest`]: the model package format (manifest, file names, digests).
//! - [`tokenize`]: text to token ids with a package's or checkpoint's `tokenizer.json`, the one tokenizer of the
//!   runtime and the trainer, and the padded batch.
//! - [`guard`]: catching the panics of dependencies that read outside data (tract, `tokenizers`).
//! - [`testing`]: the test fixtures of every crate (tokenizers, tiny model configurations).
//! - [`json`]: reading and writing the JSON files above (and the other crates' own), with one error type.
//!
//! The runtime re-exports these modules under their old paths (`cosee_runtime::signal`, …); the trainer depends on
//! this crate alone, so it does not link tract.

pub mod checkpoint;
pub mod config;
pub mod glue;
pub mod guard;
pub mod json;
pub mod manifest;
pub mod metrics;
pub mod settings;
pub mod signal;
pub mod sigpipe;
pub mod testing;
pub mod tokenize;

pub use glue::{Example, Task};
pub use manifest::Manifest;
pub use signal::ExitSignal;
