//! Reading outside data with dependencies that sometimes panic on it. tract's ONNX reader (`unimplemented!` for a
//! raw tensor of a type it cannot hold) and `tokenizers` (an `unwrap` inside its decoder deserializer) were both
//! found panicking on damaged package files by tests/fuzz/package.rs. A damaged file must be refused, not crash the
//! process, so those calls go through [`catch_panic`].

/// Runs `f`, turning a panic inside it into `Err` with the panic's message. (The panic hook still prints the
/// panic on stderr; the process carries on.)
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into())
    })
}
