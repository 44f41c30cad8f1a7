//! The subcommands of `cosee-edge`, one module each. They parse nothing themselves (clap does, from their `Args`)
//! and compute nothing themselves (the library does): they load, loop over inputs and print.

pub mod bench;
pub mod classify;
#[cfg(feature = "http")]
pub mod http;
pub mod serve;
pub mod tune;

use cosee_runtime::settings::OutOfRange;
use cosee_runtime::BackendKind;
use std::process::ExitCode;

/// Every input answered.
pub const EXIT_OK: u8 = 0;
/// At least one input failed; it was answered with an error and the others went on.
pub const EXIT_INPUT_ERRORS: u8 = 1;
/// The command line is wrong (also clap's own code for usage errors).
pub const EXIT_USAGE: u8 = 2;
/// The package failed to load, or reading input / writing output failed.
pub const EXIT_FATAL: u8 = 3;

/// `--backend`, the engine that runs a package's stages: one definition, flattened into every subcommand that loads
/// a package.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct BackendArg {
    /// The engine that computes the stages: `tract`, or `ort` (ONNX Runtime, loaded from the library ORT_DYLIB_PATH
    /// names, e.g. the one scripts/setup-python.sh installs into .venv): the fast engine for `int8-ort` packages on
    /// x86.
    #[arg(long, value_enum, default_value_t = BackendKind::Tract, value_name = "ENGINE")]
    pub backend: BackendKind,
}

/// A command-line mistake clap cannot see (e.g. two flags that only make sense together).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A flag out of range is a command-line mistake.
impl From<OutOfRange> for UsageError {
    fn from(e: OutOfRange) -> Self {
        Self(e.to_string())
    }
}

/// Prints a subcommand's fatal error and picks the exit code: usage mistakes get 2, everything else 3.
pub fn fatal(e: &anyhow::Error) -> ExitCode {
    // Many errors repeat their source in their own message; print each cause once.
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    eprintln!("cosee-edge: error: {message}");
    if e.downcast_ref::<UsageError>().is_some() {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::from(EXIT_FATAL)
    }
}

/// One JSON line of `classify` (stdin or `--json`) and `serve`: the library's one serializer of answers, shared with
/// the HTTP API.
pub use cosee_runtime::answer::json_line;
