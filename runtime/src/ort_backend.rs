//! ONNX Runtime as a stage [`Backend`] (cargo feature `ort`, off by default): the package's ONNX files, one ORT
//! session per stage, under the same exit loop as tract.
//!
//! Nothing is downloaded at build time: the `ort` crate is built with `load-dynamic`, and the library is the one the
//! pinned PyPI wheel ships (scripts/setup-python.sh installs it into `.venv`), named by `ORT_DYLIB_PATH`:
//!
//! ```text
//! export ORT_DYLIB_PATH=$PWD/.venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.23.2
//! ```
//!
//! Sessions run on one intra-op thread with every graph optimization, batch 1, like the tract plans. ORT's `run`
//! takes its session mutably, so each stage's session sits behind a mutex (uncontended for one request at a time).
//! Measured in docs/ort-side-by-side.md: on the package's int8 graphs ORT is much slower than tract (its s8×s8
//! MatMulInteger has no fast kernel on x86); on f32 graphs it is close.

use crate::backend::Backend;
use crate::error::{LoadError, RunError};
use crate::manifest::{self, io_names};
use crate::package::Package;
use crate::tokenize::Encoded;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{DynValue, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The environment variable naming ONNX Runtime's shared library.
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// One ORT session per stage of a package.
#[derive(Debug)]
pub struct OrtBackend {
    embeddings: OrtStage,
    layers: Vec<OrtStage>,
    exits: Vec<OrtStage>,
}

#[derive(Debug)]
struct OrtStage {
    file: String,
    session: Mutex<Session>,
    output: &'static str,
}

/// The library `ORT_DYLIB_PATH` names, checked to be a file (ort would panic on a missing one).
fn dylib(value: Option<std::ffi::OsString>) -> Result<PathBuf, LoadError> {
    let missing = |message: String| LoadError::Backend { backend: "onnxruntime", message };
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Err(missing(format!(
            "{DYLIB_ENV} is not set: point it at libonnxruntime.so (scripts/setup-python.sh installs one into .venv, \
             under lib/python3*/site-packages/onnxruntime/capi/)"
        )));
    };
    let path = PathBuf::from(value);
    if !path.is_file() {
        return Err(missing(format!("{DYLIB_ENV}={}: no such file", path.display())));
    }
    Ok(path)
}

impl OrtStage {
    fn load(path: &Path, output: &'static str) -> Result<Self, LoadError> {
        let display = path.display().to_string();
        let invalid = |e: ort::Error| LoadError::InvalidGraph { path: display.clone(), message: e.to_string() };
        let session = Session::builder()
            .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::Level3))
            .and_then(|b| b.with_intra_threads(1))
            .and_then(|b| b.with_inter_threads(1))
            .and_then(|b| b.commit_from_file(path))
            .map_err(invalid)?;
        let outputs: Vec<String> = session.outputs.iter().map(|o| o.name.clone()).collect();
        if !outputs.iter().any(|o| o == output) {
            return Err(LoadError::MissingTensor {
                path: display,
                kind: "output",
                name: output.to_string(),
                found: outputs.join(", "),
            });
        }
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Self { file, session: Mutex::new(session), output })
    }

    fn error(&self, message: impl std::fmt::Display) -> RunError {
        RunError::Stage { stage: self.file.clone(), message: message.to_string() }
    }

    /// Runs the stage on named inputs; returns its output.
    fn run(&self, inputs: Vec<(&'static str, ort::session::SessionInputValue<'_>)>) -> Result<DynValue, RunError> {
        let mut session = self.session.lock().map_err(|_| self.error("session poisoned by an earlier panic"))?;
        let inputs: Vec<(std::borrow::Cow<'_, str>, _)> = inputs.into_iter().map(|(n, v)| (n.into(), v)).collect();
        let mut outputs = session.run(inputs).map_err(|e| self.error(e))?;
        outputs.remove(self.output).ok_or_else(|| self.error(format!("no output `{}`", self.output)))
    }
}

impl Backend for OrtBackend {
    type Hidden = DynValue;
    type Mask = Tensor<i64>;

    fn load(package: &Package) -> Result<Self, LoadError> {
        let path = dylib(std::env::var_os(DYLIB_ENV))?;
        // ort panics when the library does not load (wrong file, wrong version): report it as a load error.
        let init = std::panic::catch_unwind(|| ort::init_from(path.display().to_string()).commit());
        match init {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(LoadError::Backend { backend: "onnxruntime", message: e.to_string() }),
            Err(_) => {
                return Err(LoadError::Backend {
                    backend: "onnxruntime",
                    message: format!("{} did not load as ONNX Runtime 1.22 or later", path.display()),
                })
            }
        }
        let m = package.manifest();
        let embeddings = OrtStage::load(&package.path(manifest::EMBEDDINGS_FILE), io_names::HIDDEN_STATES)?;
        let mut layers = Vec::with_capacity(m.num_layers);
        let mut exits = Vec::with_capacity(m.num_layers);
        for layer in 1..=m.num_layers {
            layers.push(OrtStage::load(&package.path(&manifest::layer_file(layer)), io_names::LAYER_OUTPUT)?);
            exits.push(OrtStage::load(&package.path(&manifest::exit_file(layer)), io_names::LOGITS)?);
        }
        Ok(Self { embeddings, layers, exits })
    }

    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn name(&self) -> &'static str {
        "onnxruntime"
    }

    fn embed(&self, encoded: &Encoded) -> Result<(DynValue, Tensor<i64>), RunError> {
        let stage = &self.embeddings;
        let tensor =
            |values: &[i64]| Tensor::from_array(([1usize, values.len()], values.to_vec())).map_err(|e| stage.error(e));
        let mask = tensor(&encoded.attention_mask)?;
        let hidden = stage.run(vec![
            (io_names::INPUT_IDS, tensor(&encoded.input_ids)?.into()),
            (io_names::TOKEN_TYPE_IDS, tensor(&encoded.token_type_ids)?.into()),
            (io_names::ATTENTION_MASK, (&mask).into()),
        ])?;
        Ok((hidden, mask))
    }

    fn layer(&self, m: usize, hidden: DynValue, mask: &Tensor<i64>) -> Result<DynValue, RunError> {
        self.layers[m - 1].run(vec![(io_names::HIDDEN_STATES, hidden.into()), (io_names::ATTENTION_MASK, mask.into())])
    }

    fn exit(&self, m: usize, hidden: &DynValue, logits: &mut Vec<f32>) -> Result<(), RunError> {
        let stage = &self.exits[m - 1];
        let out = stage.run(vec![(io_names::HIDDEN_STATES, hidden.into())])?;
        let (_, z) = out.try_extract_tensor::<f32>().map_err(|e| stage.error(e))?;
        logits.clear();
        logits.extend_from_slice(z);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_a_load_error() {
        let err = dylib(None).unwrap_err();
        assert!(err.to_string().contains(DYLIB_ENV), "{err}");
        let err = dylib(Some("/nonexistent/libonnxruntime.so".into())).unwrap_err();
        assert!(err.to_string().contains("no such file"), "{err}");
    }
}
