//! What the load-time operator fusion (`src/fused/`) buys: the same package loaded with and without it, timed side
//! by side, interleaved, one thread, batch 1.
//!
//! `cargo run --release -p cosee-runtime --example fusion -- PACKAGE_DIR [--data TSV] [--runs N] [--baseline LIST] [--fused LIST]`
//!
//! The "plain" engine has no fusion, or those of `--baseline` (a comma list of quantize, softmax, gelu,
//! layer-norm, linear, attention, pool, pack: `--baseline quantize,softmax` measures what the GELU and layer-norm rewrites add);
//! the "fused" one has them all, or those of `--fused`.
//!
//! 1. One layer (layer 1) at 16, 32, 64 and 128 tokens: median ms per run, each engine's run alternating. With
//!    `--ort PKG` (cargo feature `ort`, `ORT_DYLIB_PATH` set), also layer 1 of PKG in ONNX Runtime, one thread, in
//!    the same rounds: the issue-13 comparison with ORT's own `quantize_dynamic` form (scripts/side-by-side.sh
//!    writes it as DIR/package-int8-ort).
//! 2. Whole inputs (the lines of `--data`, SST-2 dev format; default the committed tests/data/sst2-dev-40.tsv):
//!    median and mean ms per input at the package's default τ and at full depth, each input through every
//!    configuration in turn.
//!
//!    Before the timing: on how many of those inputs the two give the same exit layer and label at the default τ,
//!    and the largest logit difference over every exit.
//! 3. With `--chain`: each layer timed as the exit loop runs it (layers 1..L in turn, each exit in between), beside
//!    layer 1 alone.
//! 4. With `--profile`: layer 1 and exit 1 of each plan node by node at 16 and 64 tokens (tract's own evaluation,
//!    wrapped), mean ms per run summed by operator name, beside the plan's whole run; `--by-node` (implies
//!    `--profile`) lists each matmul node apart.
//!
//! Medians of interleaved runs, because the machine is shared: ratios within one run are the reliable part.

use anyhow::{bail, Context, Result};
use cosee_runtime::fused::Fusion;
use cosee_runtime::{Backend, Engine, Input, Package, TractBackend};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::{eval, SimpleState};

const USAGE: &str = "usage: fusion PACKAGE_DIR [--data TSV] [--runs N] [--profile|--by-node] [--chain] [--ort PKG] \
                     [--baseline LIST] [--fused LIST]";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Mean milliseconds per run spent in each operator (by name) of a stage plan.
/// With `by_node`, matmuls are keyed by node too (which matmul costs what). The entry "(whole run)" is the
/// plan's run from state creation to outputs: what it holds beyond the operators' sum is tract's own overhead.
fn profile(
    plan: &Arc<TypedSimplePlan>,
    inputs: TVec<TValue>,
    runs: usize,
    by_node: bool,
) -> Result<BTreeMap<String, f64>> {
    let mut by_op: BTreeMap<String, f64> = BTreeMap::new();
    let mut whole = 0.0;
    for _ in 0..runs {
        let started = Instant::now();
        let mut state = SimpleState::new(plan)?;
        state.run_plan_with_eval(inputs.clone(), |ctx, op_state, node, input| {
            let start = Instant::now();
            let out = eval(ctx, op_state, node, input);
            let op = node.op().name();
            let key = if by_node && op.contains("MatMul") { format!("{op} {}", node.name) } else { op.to_string() };
            *by_op.entry(key).or_default() += start.elapsed().as_secs_f64() * 1e3;
            out
        })?;
        whole += started.elapsed().as_secs_f64() * 1e3;
    }
    by_op.values_mut().for_each(|ms| *ms /= runs as f64);
    by_op.insert("(whole run)".into(), whole / runs as f64);
    Ok(by_op)
}

/// A profile table, one column per engine (plain, fused), operators by their largest time.
fn print_profile(what: &str, columns: &[BTreeMap<String, f64>]) {
    println!("\nprofile of {what}: mean ms per run by operator");
    println!("{:<60} {:>9} {:>9}", "operator", "plain", "fused");
    let mut names: Vec<&String> = columns.iter().flat_map(|c| c.keys()).collect();
    names.sort_by(|a, b| {
        let ms = |n: &String| columns.iter().map(|c| c.get(n).copied().unwrap_or(0.0)).fold(0.0, f64::max);
        ms(b).total_cmp(&ms(a))
    });
    names.dedup();
    for name in names {
        let cell = |c: &BTreeMap<String, f64>| c.get(name).map_or("–".into(), |ms| format!("{ms:.3}"));
        println!("{name:<60} {:>9} {:>9}", cell(&columns[0]), cell(&columns[1]));
    }
    let operators =
        |c: &BTreeMap<String, f64>| c.iter().filter(|(n, _)| !n.starts_with('(')).map(|(_, ms)| ms).sum::<f64>();
    println!("{:<60} {:>9.3} {:>9.3}", "operators' sum", operators(&columns[0]), operators(&columns[1]));
}

/// One run of layer 1 on `input`, in ms (the embeddings run first, untimed).
fn time_layer<B: Backend>(engine: &Engine<B>, input: &Input) -> Result<f64> {
    let encoded = engine.encode(input)?;
    let (hidden, mask) = engine.backend().embed(&encoded)?;
    let start = Instant::now();
    engine.backend().layer(1, hidden, &mask)?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// `quantize,softmax` → those fusions on, the others off.
fn parse_fusions(list: &str) -> Result<Fusion> {
    let mut fusion = Fusion::NONE;
    for name in list.split(',').filter(|n| !n.is_empty()) {
        match name {
            "quantize" => fusion.quantize = true,
            "softmax" => fusion.softmax = true,
            "gelu" => fusion.gelu = true,
            "layer-norm" => fusion.layer_norm = true,
            "attention" => fusion.attention = true,
            "linear" => fusion.linear = true,
            "pool" => fusion.pool = true,
            "pack" => fusion.pack = true,
            other => {
                bail!("unknown fusion {other:?} (quantize, softmax, gelu, layer-norm, linear, attention, pool, pack)")
            }
        }
    }
    Ok(fusion)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut package_dir = None;
    let mut data = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/sst2-dev-40.tsv"));
    let mut runs = 200usize;
    let mut with_profile = false;
    let mut by_node = false;
    let mut chain = false;
    let mut baseline = Fusion::NONE;
    let mut candidate = Fusion::ALL;
    let mut ort_package: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--profile" => with_profile = true,
            "--by-node" => (with_profile, by_node) = (true, true),
            "--chain" => chain = true,
            "--baseline" => baseline = parse_fusions(&args.next().context("--baseline needs a list")?)?,
            "--ort" => ort_package = Some(args.next().context("--ort needs a package")?.into()),
            "--fused" => candidate = parse_fusions(&args.next().context("--fused needs a list")?)?,
            "--data" => data = args.next().context("--data needs a file")?.into(),
            "--runs" => runs = args.next().context("--runs needs a number")?.parse()?,
            _ if package_dir.is_none() => package_dir = Some(PathBuf::from(a)),
            _ => {
                bail!(USAGE)
            }
        }
    }
    let dir = package_dir.context(USAGE)?;
    let load = |fusion| -> Result<(Engine<TractBackend>, f64)> {
        let start = Instant::now();
        let package = Package::open(&dir)?;
        let backend = TractBackend::load_with(&package, fusion)?;
        Ok((Engine::from_parts(package, backend), start.elapsed().as_secs_f64() * 1e3))
    };
    let (fused, fused_load) = load(candidate)?;
    let (plain, plain_load) = load(baseline)?;
    let counts = fused.backend().fused()?;
    println!(
        "{}: fused {} per-token quantizations, {} int8 output stages, {} GELUs, {} int8 linear layers, {} softmaxes, {} layer norms, {} attentions, \
         {} token sums, {} activation packings; \
         load {:.0} ms fused, {:.0} ms plain ({baseline:?})",
        dir.display(),
        counts.quantizers,
        counts.rescales,
        counts.gelus,
        counts.linears,
        counts.softmaxes,
        counts.layer_norms,
        counts.attentions,
        counts.pools,
        counts.packs,
        fused_load,
        plain_load
    );

    #[cfg(feature = "ort")]
    let ort = match &ort_package {
        Some(dir) => {
            let package = Package::open(dir)?;
            let backend = cosee_runtime::ort_backend::OrtBackend::load(&package)?;
            Some(Engine::from_parts(package, backend))
        }
        None => None,
    };
    #[cfg(not(feature = "ort"))]
    if ort_package.is_some() {
        bail!("--ort needs the `ort` cargo feature");
    }

    println!("\none layer (layer 1), median ms of {runs} interleaved runs");
    print!("{:>8} {:>9} {:>9} {:>7}", "tokens", "plain", "fused", "ratio");
    #[cfg(feature = "ort")]
    if ort.is_some() {
        print!(" {:>9} {:>11}", "ORT", "fused / ORT");
    }
    println!();
    let word = "good ";
    for tokens in [16usize, 32, 64, 128] {
        // [CLS] + words + [SEP]: a text of tokens − 2 one-token words.
        let text = word.repeat(tokens - 2);
        let input = Input::single(text.trim_end());
        let mut times = [Vec::with_capacity(runs), Vec::with_capacity(runs), Vec::with_capacity(runs)];
        for round in 0..runs + 10 {
            let mut round_times = [time_layer(&plain, &input)?, time_layer(&fused, &input)?, 0.0];
            #[cfg(feature = "ort")]
            if let Some(ort) = &ort {
                round_times[2] = time_layer(ort, &input)?;
            }
            if round >= 10 {
                for (t, ms) in times.iter_mut().zip(round_times) {
                    t.push(ms);
                }
            }
        }
        let [p, f, o] = times.map(median);
        print!("{tokens:>8} {p:>9.3} {f:>9.3} {:>6.2}×", p / f);
        if ort_package.is_some() {
            print!(" {o:>9.3} {:>10.2}×", f / o);
        }
        println!();
    }

    if chain {
        // Each layer as the exit loop runs it (after the one before, with its exit), against layer 1 alone: what a
        // layer pays for running among the others (its weights no longer in cache, the exit's in between).
        println!("\nlayers in a chain (fused engine): median ms per layer of {runs} runs, each layer after the one before and its exit");
        println!(
            "{:>8} {:>9} {}",
            "tokens",
            "alone",
            (1..=fused.num_layers()).map(|m| format!("{:>8}", format!("layer {m}"))).collect::<String>()
        );
        for tokens in [16usize, 32, 64] {
            let text = word.repeat(tokens - 2);
            let input = Input::single(text.trim_end());
            let layers = fused.num_layers();
            let (mut alone, mut chained) = (Vec::new(), vec![Vec::new(); layers]);
            let mut logits = Vec::new();
            for round in 0..runs + 10 {
                let lone = time_layer(&fused, &input)?;
                let (mut hidden, mask) = fused.backend().embed(&fused.encode(&input)?)?;
                let mut times = Vec::with_capacity(layers);
                for m in 1..=layers {
                    let start = Instant::now();
                    hidden = fused.backend().layer(m, hidden, &mask)?;
                    times.push(start.elapsed().as_secs_f64() * 1e3);
                    fused.backend().exit(m, &hidden, &mut logits)?;
                }
                if round >= 10 {
                    alone.push(lone);
                    chained.iter_mut().zip(times).for_each(|(c, t)| c.push(t));
                }
            }
            print!("{tokens:>8} {:>9.3}", median(alone));
            chained.into_iter().for_each(|c| print!(" {:>8.3}", median(c)));
            println!();
        }
    }

    if with_profile {
        for tokens in [16usize, 64] {
            let text = word.repeat(tokens - 2);
            let input = Input::single(text.trim_end());
            let mut columns = Vec::new();
            let mut exit_columns = Vec::new();
            for engine in [&plain, &fused] {
                let (hidden, mask) = engine.backend().embed(&engine.encode(&input)?)?;
                columns.push(profile(
                    engine.backend().layer_plan(1)?,
                    tvec!(hidden.clone(), mask.clone()),
                    runs,
                    by_node,
                )?);
                let hidden = engine.backend().layer(1, hidden, &mask)?;
                exit_columns.push(profile(engine.backend().exit_plan(1)?, tvec!(hidden), runs, by_node)?);
            }
            print_profile(&format!("layer 1, {tokens} tokens"), &columns);
            print_profile(&format!("exit 1, {tokens} tokens"), &exit_columns);
        }
    }

    let text = std::fs::read_to_string(&data).with_context(|| format!("reading {}", data.display()))?;
    let lines: Vec<&str> =
        text.lines().skip(1).filter_map(|l| l.split('\t').next()).filter(|s| !s.is_empty()).collect();
    if lines.is_empty() {
        return Ok(()); // `--data /dev/null`: the layer comparison only
    }
    let default = fused.default_policy();
    // Agreement first (the softmax fusion moves logits in their last bits, so int8 roundings can differ).
    let (mut same, mut worst) = (0usize, 0f32);
    // Logits compared, and how many differ by more than 0.01 and by more than 0.1 (the exporter's int8 tolerance).
    let (mut logits, mut beyond) = (0usize, [0usize; 2]);
    for line in &lines {
        let input = Input::single(line);
        let (a, b) = (fused.classify_with(&input, default)?, plain.classify_with(&input, default)?);
        same += usize::from(a.exit_layer == b.exit_layer && a.label == b.label);
        let (a, b) = (fused.run_all_exits(&input)?, plain.run_all_exits(&input)?);
        for (x, y) in a.logits.iter().flatten().zip(b.logits.iter().flatten()) {
            let d = (x - y).abs();
            worst = worst.max(d);
            logits += 1;
            beyond[0] += usize::from(d > 0.01);
            beyond[1] += usize::from(d > 0.1);
        }
    }
    println!(
        "\nagreement at the default τ: same exit layer and label on {same} of {} inputs ({:.2} %); max |Δlogit| over every exit {worst:.3e}; \
         {} / {} of {logits} logits differ by more than 0.01 / 0.1",
        lines.len(),
        100.0 * same as f64 / lines.len() as f64,
        beyond[0],
        beyond[1]
    );
    println!("\nwhole inputs: {} lines of {}, ms per input (tokenization included)", lines.len(), data.display());
    println!("{:<22} {:>9} {:>9} {:>9} {:>9} {:>7}", "", "plain p50", "fused p50", "plain mean", "fused mean", "ratio");
    // Full depth as `cosee-edge bench` runs it: every layer and every exit.
    for (name, policy) in [("default τ", Some(default)), ("full depth", None)] {
        let mut times = [Vec::new(), Vec::new()];
        for round in 0..3 {
            for line in &lines {
                for (k, engine) in [&plain, &fused].into_iter().enumerate() {
                    let input = Input::single(line);
                    let start = Instant::now();
                    match policy {
                        Some(policy) => drop(engine.classify_with(&input, policy)?),
                        None => drop(engine.run_all_exits(&input)?),
                    }
                    if round > 0 {
                        times[k].push(start.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
        }
        let (pm, fm) = (mean(&times[0]), mean(&times[1]));
        let [p, f] = times.map(median);
        println!("{name:<22} {p:>9.3} {f:>9.3} {pm:>9.3} {fm:>9.3} {:>6.2}×", pm / fm);
    }
    Ok(())
}
