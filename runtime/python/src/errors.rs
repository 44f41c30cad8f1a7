//! The runtime's errors as Python exceptions. The classes are defined in Python (`cosee_edge/__init__.py`, so that
//! `InputError` can be both a `CoseeError` and a `ValueError`, as Python callers expect of a bad argument) and
//! handed to this module once at import by `_register_errors`; the messages are the runtime's own.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The four exception classes, in the order `_register_errors` takes them.
struct Classes {
    cosee: Py<PyType>,
    package: Py<PyType>,
    input: Py<PyType>,
    setting: Py<PyType>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

/// Which exception a runtime error becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Anything else the runtime refuses (a stage failed, every exit was non-finite, the config file…).
    Cosee,
    /// The package cannot be loaded: missing, truncated or altered file, bad manifest.
    Package,
    /// An input the model cannot take: empty, whitespace only, a pair for a single-text model or the reverse.
    Input,
    /// A setting out of range (threshold, signal, budget, percentile).
    Setting,
}

/// Called once by `cosee_edge/__init__.py` with its exception classes.
#[pyfunction]
pub fn _register_errors(
    py: Python<'_>,
    cosee: Py<PyType>,
    package: Py<PyType>,
    input: Py<PyType>,
    setting: Py<PyType>,
) -> PyResult<()> {
    // A second import of the package (importlib.reload) keeps the first classes: the ones users already caught.
    let _ = CLASSES.get_or_init(py, || Classes { cosee, package, input, setting });
    Ok(())
}

/// A Python exception of `kind` carrying `message`.
pub fn error(kind: Kind, message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::attach(|py| match CLASSES.get(py) {
        Some(c) => {
            let class = match kind {
                Kind::Cosee => &c.cosee,
                Kind::Package => &c.package,
                Kind::Input => &c.input,
                Kind::Setting => &c.setting,
            };
            PyErr::from_type(class.bind(py).clone(), message)
        }
        // Only when `_native` is imported without the package around it.
        None => PyRuntimeError::new_err(message),
    })
}
