//! One encoder layer of each given package in tract, single-threaded and with tract's multithreaded matmul, at 16
//! and 64 tokens, batch 1: whether more cores close the gap to ONNX Runtime (docs/ort-side-by-side.md).
//!
//! `cargo run --release -p cosee-runtime --features multithread-mm --example layer_variants -- PKG… [--runs N]`
//!
//! Each package's `layer_01.onnx` is planned as the runtime plans it (batch 1, symbolic `sequence`), then run under
//! each executor: tract's default (one thread), a rayon pool of 2…N threads (`multithread-mm`, the executor
//! scoped around the run as `RunOptions::executor` would set it), and the same pool with the panel gate at 0
//! (thread every matmul, however small). Variants run interleaved, one run of each per round; the table gives
//! medians. Latency does not depend on the weights, so a package with random exit heads serves.
//!
//! With `--chain`, also what a layer costs inside the exit loop rather than alone, one thread: all M layers of the
//! package in turn at a fixed length (other layers' weights evict this one's from the caches), and layer 1 alone with
//! the length alternating between two values (a symbolic `sequence` re-resolved every run), against layer 1 alone
//! at one length.
//!
//! With `--profile`, also where one thread's time goes: each node of the optimized plan timed as it runs (tract's
//! own evaluation, wrapped), summed by operator name, mean over the runs.

use anyhow::{bail, Context, Result};
use cosee_runtime::manifest::{io_names, layer_file, Manifest, QuantScheme};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::{eval, SimpleState};
use tract_onnx::tract_core::tract_linalg::multithread::{self, Executor};

struct Variant {
    name: String,
    plan: Arc<TypedRunnableModel>,
    executor: Executor,
    /// Panel-count gate of the rayon matmul dispatcher while this variant runs (tract's default is 64).
    panel_gate: usize,
}

fn plan(path: &std::path::Path, hidden: usize) -> TractResult<Arc<TypedRunnableModel>> {
    let mut model = tract_onnx::onnx().model_for_path(path)?;
    let seq = model.symbols.sym(io_names::SEQUENCE_DIM);
    model.set_input_fact(0, f32::fact([1.to_dim(), seq.to_dim(), hidden.to_dim()]).into())?;
    model.set_input_fact(1, i64::fact([1.to_dim(), seq.to_dim()]).into())?;
    model.into_optimized()?.into_runnable()
}

/// Mean milliseconds per run spent in each operator (by name) of the plan, and the mean total.
fn profile(plan: &Arc<TypedRunnableModel>, x: &Tensor, mask: &Tensor, runs: usize) -> TractResult<Vec<(String, f64)>> {
    let mut by_op: BTreeMap<String, f64> = BTreeMap::new();
    for _ in 0..runs {
        let mut state = SimpleState::new(plan)?;
        state.run_plan_with_eval(tvec!(x.clone().into(), mask.clone().into()), |ctx, op_state, node, input| {
            let start = Instant::now();
            let out = eval(ctx, op_state, node, input);
            *by_op.entry(node.op().name().to_string()).or_default() += start.elapsed().as_secs_f64() * 1e3;
            out
        })?;
    }
    let mut rows: Vec<(String, f64)> = by_op.into_iter().map(|(op, ms)| (op, ms / runs as f64)).collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total = rows.iter().map(|r| r.1).sum();
    rows.push(("total".into(), total));
    Ok(rows)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let mut runs = 200usize;
    let mut packages = Vec::new();
    let mut with_profile = false;
    let mut chain = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--profile" {
            with_profile = true;
        } else if a == "--chain" {
            chain = true;
        } else if a == "--runs" {
            let n = args.next().context("--runs needs a count")?;
            runs = n.parse().with_context(|| format!("--runs `{n}` is not a count"))?;
        } else {
            packages.push(PathBuf::from(a));
        }
    }
    if packages.is_empty() {
        bail!("usage: layer_variants PACKAGE_DIR… [--runs N] [--chain] [--profile]");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let default_gate = multithread::current_threading_panel_threshold();
    let mut variants = Vec::new();
    for dir in &packages {
        let manifest = Manifest::read(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        let scheme = if manifest.quantization.scheme == QuantScheme::None { "f32" } else { "int8" };
        let p = plan(&dir.join(layer_file(1)), manifest.hidden_size)?;
        variants.push(Variant {
            name: format!("{scheme}, 1 thread"),
            plan: p.clone(),
            executor: Executor::SingleThread,
            panel_gate: default_gate,
        });
        for threads in (2..=cores).filter(|t| t.is_power_of_two() || *t == cores) {
            let pool = Executor::multithread(threads);
            variants.push(Variant {
                name: format!("{scheme}, {threads} threads"),
                plan: p.clone(),
                executor: pool.clone(),
                panel_gate: default_gate,
            });
            variants.push(Variant {
                name: format!("{scheme}, {threads} threads, gate 0"),
                plan: p.clone(),
                executor: pool,
                panel_gate: 0,
            });
        }
    }
    let hidden = Manifest::read(&packages[0])?.hidden_size;
    println!("one layer (layer_01), batch 1; median of {runs} interleaved runs (ms); {cores} cores");
    let lengths = [16usize, 64];
    print!("{:<34}", "variant \\ tokens");
    for t in lengths {
        print!("{t:>9}");
    }
    println!();
    let hidden_states = |tokens: usize| -> Tensor {
        tract_ndarray::Array3::from_shape_fn((1, tokens, hidden), |(_, s, h)| {
            ((s * 31 + h * 17) % 97) as f32 / 48.0 - 1.0
        })
        .into_tensor()
    };
    let mut table = vec![Vec::new(); variants.len()];
    for &tokens in &lengths {
        let x = hidden_states(tokens);
        let mask: Tensor = tract_ndarray::Array2::<i64>::ones((1, tokens)).into_tensor();
        let run = |v: &Variant| -> TractResult<f64> {
            let inputs = tvec!(x.clone().into(), mask.clone().into());
            multithread::set_threading_panel_threshold(v.panel_gate);
            let start = Instant::now();
            multithread::multithread_tract_scope(v.executor.clone(), || v.plan.run(inputs))?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        };
        for v in &variants {
            for _ in 0..10 {
                run(v)?;
            }
        }
        let mut times = vec![Vec::with_capacity(runs); variants.len()];
        for _ in 0..runs {
            for (i, v) in variants.iter().enumerate() {
                times[i].push(run(v)?);
            }
        }
        for (i, t) in times.into_iter().enumerate() {
            table[i].push(median(t));
        }
    }
    multithread::set_threading_panel_threshold(default_gate);
    for (v, row) in variants.iter().zip(&table) {
        print!("{:<34}", v.name);
        for ms in row {
            print!("{ms:>9.3}");
        }
        println!();
    }
    if chain {
        println!("\nin the exit loop: mean ms per layer run, one thread, median of {runs} rounds");
        println!("{:<34}{:>9}{:>9}{:>9}", "package \\ tokens", "alone", "M layers", "16↔17");
        for dir in &packages {
            let manifest = Manifest::read(dir)?;
            let layers: Vec<_> = (1..=manifest.num_layers)
                .map(|m| plan(&dir.join(layer_file(m)), hidden))
                .collect::<TractResult<_>>()?;
            let mask16: Tensor = tract_ndarray::Array2::<i64>::ones((1, 16)).into_tensor();
            let mask17: Tensor = tract_ndarray::Array2::<i64>::ones((1, 17)).into_tensor();
            let (x16, x17) = (hidden_states(16), hidden_states(17));
            let m = layers.len();
            let (mut alone, mut all, mut alternating) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..runs + 10 {
                let time = |f: &mut dyn FnMut() -> TractResult<()>| -> TractResult<f64> {
                    let start = Instant::now();
                    f()?;
                    Ok(start.elapsed().as_secs_f64() * 1e3 / m as f64)
                };
                let a = time(&mut || {
                    for _ in 0..m {
                        layers[0].run(tvec!(x16.clone().into(), mask16.clone().into()))?;
                    }
                    Ok(())
                })?;
                let b = time(&mut || {
                    for l in &layers {
                        l.run(tvec!(x16.clone().into(), mask16.clone().into()))?;
                    }
                    Ok(())
                })?;
                let c = time(&mut || {
                    for i in 0..m {
                        let (x, mask) = if i % 2 == 0 { (&x16, &mask16) } else { (&x17, &mask17) };
                        layers[0].run(tvec!(x.clone().into(), mask.clone().into()))?;
                    }
                    Ok(())
                })?;
                if round >= 10 {
                    alone.push(a);
                    all.push(b);
                    alternating.push(c);
                }
            }
            let scheme = if manifest.quantization.scheme == QuantScheme::None { "f32" } else { "int8" };
            println!("{:<34}{:>9.3}{:>9.3}{:>9.3}", scheme, median(alone), median(all), median(alternating));
        }
    }
    if with_profile {
        for v in variants.iter().filter(|v| matches!(v.executor, Executor::SingleThread)) {
            for &tokens in &lengths {
                let x = hidden_states(tokens);
                let mask: Tensor = tract_ndarray::Array2::<i64>::ones((1, tokens)).into_tensor();
                println!("\nprofile: {}, {tokens} tokens (mean ms per run, by operator)", v.name);
                for (op, ms) in profile(&v.plan, &x, &mask, runs)? {
                    println!("  {op:<28}{ms:>9.3}");
                }
            }
        }
    }
    Ok(())
}
