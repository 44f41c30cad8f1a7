//! cosee-runtime: loads a COSEE model package and classifies text with real early exit, one layer at a time.
//!
//! Shared definitions used by every crate of the workspace live here too: the exit [`signal`]s, the
//! package [`manifest`] format, the checkpoint [`config`], the GLUE [`glue`] readers and the paper's
//! [`metrics`].

pub mod config;
pub mod glue;
pub mod manifest;
pub mod metrics;
pub mod signal;

pub use glue::{Example, Task};
pub use manifest::Manifest;
pub use signal::ExitSignal;
