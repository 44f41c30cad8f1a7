//! `cosee_edge._native`: the Python package's compiled half. It wraps the runtime's library API, the same calls the
//! `cosee-edge` CLI makes ([`cosee_runtime::Engine::classify_with`] for the exit loop,
//! [`cosee_runtime::serving`] for the threshold controller and the checks of τ and signal), and converts answers
//! through the runtime's own serializer. The GIL is released while the engine computes, so Python threads
//! classify in parallel on one engine. The Python side (`python/cosee_edge/`) adds the exception classes, the type
//! stubs and the documentation users read.

mod convert;
mod errors;

use cosee_runtime::serving::{self, ServeError, ServeOptions, ThresholdControl};
use cosee_runtime::{Answer, ExitPolicy, ExitSignal, Input, LoadError, RunError};
use errors::{error, Kind};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

/// One input as Python gave it: a text, or the two texts of a pair.
enum Item {
    Single(String),
    Pair(String, String),
}

impl Item {
    fn input(&self) -> Input<'_> {
        match self {
            Self::Single(text) => Input::single(text),
            Self::Pair(a, b) => Input::pair(a, b),
        }
    }

    fn extract(value: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(text) = value.extract::<String>() {
            return Ok(Self::Single(text));
        }
        if let Ok((a, b)) = value.extract::<(String, String)>() {
            return Ok(Self::Pair(a, b));
        }
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "an input must be a str or a pair (tuple of two str), not {}",
            value.get_type().name()?
        )))
    }
}

/// The Python name of a setting: the keyword argument.
fn keyword(field: &str) -> String {
    field.to_string()
}

/// An input the model refused is the caller's mistake; anything else the engine's.
fn run_error(e: &RunError, prefix: &str) -> PyErr {
    let kind = if matches!(e, RunError::Input(_)) { Kind::Input } else { Kind::Cosee };
    error(kind, format!("{prefix}{e}"))
}

fn parse_signal(name: Option<&str>) -> PyResult<Option<ExitSignal>> {
    name.map(|s| s.parse::<ExitSignal>().map_err(|e| error(Kind::Setting, format!("signal: {e}")))).transpose()
}

/// A loaded model package: every stage ready to run, built once; share one across threads.
///
/// Engine(model, *, threshold=None, signal=None, budget_ms=None, percentile=None)
#[pyclass(frozen, module = "cosee_edge")]
struct Engine {
    engine: cosee_runtime::Engine,
    /// The engine's policy when no call overrides it and no controller runs.
    policy: ExitPolicy,
    /// With `budget_ms`: the threshold controller, shared by every thread that calls this engine.
    control: Option<Mutex<ThresholdControl>>,
}

impl Engine {
    /// The policy of one call: its own overrides (fixed, outside the controller), or `None` to let the engine's
    /// default or its controller decide.
    fn call_policy(&self, threshold: Option<f32>, signal: Option<&str>) -> PyResult<Option<ExitPolicy>> {
        let signal = parse_signal(signal)?;
        if threshold.is_none() && signal.is_none() {
            return Ok(None);
        }
        serving::fixed_policy(self.policy, signal, threshold, self.engine.num_layers(), keyword)
            .map(Some)
            .map_err(|e| error(Kind::Setting, e.to_string()))
    }

    /// Runs one checked input; called without the GIL.
    fn answer(&self, input: &Input, policy: Option<ExitPolicy>) -> Result<Answer, RunError> {
        match (policy, &self.control) {
            (Some(p), _) => self.engine.classify_with(input, p),
            (None, Some(control)) => serving::classify_controlled(control, &self.engine, input, |event| {
                log::info!("{event}");
            }),
            (None, None) => self.engine.classify_with(input, self.policy),
        }
    }

    fn to_dict(py: Python<'_>, answer: &Answer) -> PyResult<Py<PyAny>> {
        let value = serde_json::to_value(answer).map_err(|e| error(Kind::Cosee, e.to_string()))?;
        convert::to_python(py, &value)
    }
}

#[pymethods]
impl Engine {
    /// Loads and checks the package in `model` (PackageError if it cannot). `threshold`/`signal`: a fixed policy
    /// for every call; `budget_ms` (and `percentile`): the threshold controller of `cosee-edge serve` instead.
    #[new]
    #[pyo3(signature = (model, *, threshold=None, signal=None, budget_ms=None, percentile=None))]
    fn new(
        py: Python<'_>,
        model: PathBuf,
        threshold: Option<f32>,
        signal: Option<&str>,
        budget_ms: Option<f64>,
        percentile: Option<f64>,
    ) -> PyResult<Self> {
        let signal = parse_signal(signal)?;
        if budget_ms.is_none() && percentile.is_some() {
            return Err(error(Kind::Setting, "percentile applies to budget_ms: give budget_ms too"));
        }
        if budget_ms.is_some() && (threshold.is_some() || signal.is_some()) {
            return Err(error(
                Kind::Setting,
                "budget_ms lets the threshold controller choose τ: give it without threshold and signal (a call's \
                 own threshold still overrides it for that call)",
            ));
        }
        let options = ServeOptions { budget_ms, percentile, ..ServeOptions::default() };
        // Before the package is loaded, as the CLI checks its flags.
        options.check(keyword).map_err(|e| error(Kind::Setting, e.to_string()))?;
        let engine = py
            .detach(|| cosee_runtime::Engine::load(&model))
            .map_err(|e: LoadError| error(Kind::Package, format!("cannot load {}: {e}", model.display())))?;
        let policy = serving::fixed_policy(engine.default_policy(), signal, threshold, engine.num_layers(), keyword)
            .map_err(|e| error(Kind::Setting, e.to_string()))?;
        let control = match budget_ms {
            None => None,
            Some(_) => {
                Some(Mutex::new(ThresholdControl::new(engine.manifest(), &options, keyword).map_err(|e| match e {
                    ServeError::Setting(e) => error(Kind::Setting, e.to_string()),
                    e => error(Kind::Cosee, e.to_string()),
                })?))
            }
        };
        Ok(Self { engine, policy, control })
    }

    /// Classifies one text (or the pair `text`, `pair` for a pair task) with early exit; returns a dict with the
    /// keys of `cosee-edge classify --json`. `threshold`/`signal` override the engine's policy for this call.
    /// Raises InputError for an input the model cannot take. Releases the GIL while it computes.
    #[pyo3(signature = (text, pair=None, *, threshold=None, signal=None))]
    fn classify(
        &self,
        py: Python<'_>,
        text: String,
        pair: Option<String>,
        threshold: Option<f32>,
        signal: Option<&str>,
    ) -> PyResult<Py<PyAny>> {
        let policy = self.call_policy(threshold, signal)?;
        let item = match pair {
            Some(b) => Item::Pair(text, b),
            None => Item::Single(text),
        };
        let answer = py.detach(|| self.answer(&item.input(), policy)).map_err(|e| run_error(&e, ""))?;
        Self::to_dict(py, &answer)
    }

    /// Classifies every input in order (a str, or a tuple of two str for a pair); returns one dict each. Every
    /// input is checked before any runs; the first bad one raises InputError naming it. Releases the GIL.
    #[pyo3(signature = (texts, *, threshold=None, signal=None))]
    fn classify_many(
        &self,
        py: Python<'_>,
        texts: &Bound<'_, PyAny>,
        threshold: Option<f32>,
        signal: Option<&str>,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let policy = self.call_policy(threshold, signal)?;
        let items = texts.try_iter()?.map(|v| Item::extract(&v?)).collect::<PyResult<Vec<Item>>>()?;
        // Every input is checked before any runs, so that a bad one costs no computation of the others.
        let tokenizer = self.engine.package().tokenizer();
        for (i, item) in items.iter().enumerate() {
            tokenizer.check(&item.input()).map_err(|e| error(Kind::Input, format!("input {}: {e}", i + 1)))?;
        }
        let answers = py.detach(|| {
            items
                .iter()
                .enumerate()
                .map(|(i, item)| self.answer(&item.input(), policy).map_err(|e| (i, e)))
                .collect::<Result<Vec<Answer>, _>>()
        });
        let answers = answers.map_err(|(i, e)| run_error(&e, &format!("input {}: ", i + 1)))?;
        answers.iter().map(|a| Self::to_dict(py, a)).collect()
    }

    /// The package's manifest.json, as a dict.
    #[getter]
    fn manifest(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let value = serde_json::to_value(self.engine.manifest()).map_err(|e| error(Kind::Cosee, e.to_string()))?;
        convert::to_python(py, &value)
    }

    /// The package directory.
    #[getter]
    fn path(&self) -> String {
        self.engine.package().dir().display().to_string()
    }

    /// The label names, in `probs` order.
    #[getter]
    fn labels(&self) -> Vec<String> {
        self.engine.manifest().label_names.clone()
    }

    /// The number of layers (and exits) of the package.
    #[getter]
    fn num_layers(&self) -> usize {
        self.engine.num_layers()
    }

    /// The exit signal of the next call without overrides.
    #[getter]
    fn signal(&self) -> String {
        self.current().signal.to_string()
    }

    /// The τ of the next call without overrides (the controller's current one with `budget_ms`).
    #[getter]
    fn threshold(&self) -> f32 {
        self.current().threshold
    }

    /// The threshold controller's state as a dict, or None without `budget_ms`.
    #[getter]
    fn controller(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let Some(control) = &self.control else { return Ok(None) };
        let state = control.lock().unwrap_or_else(PoisonError::into_inner).state();
        let value = serde_json::to_value(state).map_err(|e| error(Kind::Cosee, e.to_string()))?;
        convert::to_python(py, &value).map(Some)
    }

    fn __repr__(&self) -> String {
        let p = self.current();
        format!(
            "Engine({:?}, {} layers, {} τ={}{})",
            self.engine.package().dir().display().to_string(),
            self.engine.num_layers(),
            p.signal,
            p.threshold,
            if self.control.is_some() { ", controlled" } else { "" }
        )
    }
}

impl Engine {
    /// The policy the next call without overrides gets.
    fn current(&self) -> ExitPolicy {
        match &self.control {
            Some(control) => {
                let c = control.lock().unwrap_or_else(PoisonError::into_inner);
                ExitPolicy { signal: c.controller().signal(), threshold: c.controller().threshold() }
            }
            None => self.policy,
        }
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine>()?;
    m.add_function(wrap_pyfunction!(errors::_register_errors, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
