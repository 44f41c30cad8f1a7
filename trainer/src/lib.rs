//! cosee-trainer: fine-tunes a pretrained BERT into a COSEE multi-exit classifier with tch (libtorch) and
//! evaluates it the way the paper does.
//!
//! - [`model`]: the multi-exit BERT (HF tensor names), pretrained loading, checkpoints.
//! - [`tokenize`]: the checkpoint's tokenizer with our truncation, dynamic padding, length bucketing.
//! - [`objective`]: SWM (Eq. 2–5), OSC (Eq. 6–8), COSEE (Eq. 9) and the Eq. (1) baselines.
//! - [`data`]: GLUE splits through `cosee_format::glue`.
//! - [`train`]: the training loop (AdamW, linear decay, clipping, accumulation, checkpoints, resume).
//! - [`eval`]: the τ sweep, per-layer accuracy and DIS, JSON/CSV reports; [`plot`]: PNG charts.
//! - [`results`]: the committed comparison of objectives at fixed speed-ups, over seeds.
//! - [`device`]: device selection and libtorch threads.

pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod model;
pub mod objective;
pub mod plot;
pub mod results;
pub mod tokenize;
pub mod train;

pub use error::{Result, TrainerError};
pub use model::MultiExitBert;
pub use tokenize::{EncodedBatch, TextEncoder};
