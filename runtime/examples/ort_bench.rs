//! `cosee-edge bench` with ONNX Runtime as the stage backend (cargo feature `ort`): the same exit loop, the same
//! measurements (early exit at the package's τ and full depth, interleaved per input, one thread), the same JSON.
//!
//! ```text
//! export ORT_DYLIB_PATH=$PWD/.venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.23.2
//! cargo run --release -p cosee-runtime --features ort --example ort_bench -- PKG DATA [LIMIT] > ort-bench.json
//! ```
//!
//! scripts/side-by-side.sh runs it when `ORT_DYLIB_PATH` is set and adds its rows to the side-by-side table.

use anyhow::{bail, Context, Result};
use cosee_runtime::bench::{self, BenchOptions};
use cosee_runtime::ort_backend::OrtBackend;
use cosee_runtime::{Engine, Package};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, data, limit) = match args.as_slice() {
        [dir, data] => (dir, data, None),
        [dir, data, limit] => {
            (dir, data, Some(limit.parse::<usize>().with_context(|| format!("LIMIT `{limit}` is not a count"))?))
        }
        _ => bail!("usage: ort_bench PACKAGE_DIR DATA_FILE [LIMIT]"),
    };
    let start = Instant::now();
    let package = Package::open(&PathBuf::from(dir)).with_context(|| format!("cannot open {dir}"))?;
    let engine = Engine::<OrtBackend>::with_backend(package).with_context(|| format!("cannot load {dir}"))?;
    let loaded_ms = start.elapsed().as_secs_f64() * 1e3;
    // ONNX Runtime has every stage ready when it returns.
    let cold_start = bench::ColdStart { answers_ms: loaded_ms, all_stages_ms: loaded_ms };
    let examples = bench::read_inputs(&PathBuf::from(data), engine.manifest().task, false)?;
    let options = BenchOptions { limit, ..BenchOptions::default() };
    let run = bench::run(&engine, cold_start, dir, data, &examples, &options, &mut |done, total| {
        if done % 100 == 0 || done == total {
            eprintln!("ort_bench: {done}/{total} inputs");
        }
    })?;
    println!("{}", bench::to_json(&run.result));
    Ok(())
}
