//! The trainer library's error type. The binary wraps it in `anyhow` for context.

use cosee_format::glue::DataError;
use cosee_format::json::JsonError;

#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("cannot access {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors { path: String, message: String },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: String, message: String },
    /// A JSON file (checkpoint config, training state or config, evaluation report, results) that does not read.
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{path}: tensor '{name}' has shape {found:?}, the model expects {expected:?}")]
    Shape { path: String, name: String, expected: Vec<i64>, found: Vec<i64> },
    #[error("{path}: tensor '{name}' has dtype {dtype}, expected a floating-point type (F32, F16, BF16 or F64)")]
    Dtype { path: String, name: String, dtype: String },
    #[error("{path}: required weight '{name}' is missing (checked with and without the 'bert.' prefix)")]
    MissingWeight { path: String, name: String },
    #[error("{0}")]
    Invalid(String),
    #[error("plot {path}: {message}")]
    Plot { path: String, message: String },
}

pub type Result<T, E = TrainerError> = std::result::Result<T, E>;

/// Attaches a path to an I/O error.
pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainerError + '_ {
    move |source| TrainerError::Io { path: path.display().to_string(), source }
}
