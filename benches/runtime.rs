//! Criterion benches of the runtime on real-size packages exported on the fly: hidden 384, FFN 1536, 12 heads
//! (the MiniLM-L6 shape), random weights from `cosee_tools::write_random_checkpoint`, so no model is committed.
//!
//! - `layer/{f32,int8,int8-unfused}/{16,32,64,128}`: one transformer layer at that many tokens (`int8-unfused`: the
//!   same int8 package planned without the runtime's load-time fusions, `cosee_runtime::fused`);
//! - `exit_head/{f32,int8}`: one exit (pooler on [CLS] + classifier);
//! - `int8_linear/{kernel}/{tokens}x{in}x{out}`: the runtime's int8 linear operator alone (`cosee_runtime::fused::
//!   linear`) on a layer's shapes, on the kernel this CPU gets (`COSEE_INT8_KERNEL=amx|vnni` picks one, `tract`
//!   leaves only the portable loop here);
//! - `tokenizer/{single,pair}`: text → ids for the 40 committed SST-2 dev sentences, and 39 pairs of them;
//! - `classify/int8/{exit_at_1,default,full_depth}`: end-to-end early exit on 6 layers at three thresholds, ten
//!   SST-2 dev sentences per iteration.
//!
//! Layer and exit times are those of the engine's own optimized stage plans: each iteration runs a one-layer
//! package through `Engine::run_all_exits` and reports (via `iter_custom`) only the time the engine recorded for
//! that stage, so tokenizer and embeddings do not blur the figure.
//!
//! Kept short by default (10 samples, 1 s each): `cargo bench --bench runtime`. Longer:
//! `cargo bench --bench runtime -- --measurement-time 5 --sample-size 50`.

use cosee_runtime::answer::Stage;
use cosee_runtime::fused::linear::Int8Linear;
use cosee_runtime::fused::rescale::RescaleInt8;
use cosee_runtime::fused::Fusion;
use cosee_runtime::glue::{parse_tsv, Task};
use cosee_runtime::{AnyBackend, Engine, ExitPolicy, ExitSignal, Input, Package, TractBackend};
use cosee_tools::testing::tiny_config;
use cosee_tools::{export, write_random_checkpoint, ExportOptions};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::path::Path;
use std::time::Duration;

const HIDDEN: usize = 384;
const HEADS: usize = 12;
const TOKEN_COUNTS: [usize; 4] = [16, 32, 64, 128];
const SST2_DEV: &str = include_str!("../tests/data/sst2-dev-40.tsv");

/// Exports a random real-size checkpoint of `layers` layers as an f32 or int8 package under `dir`.
fn package(dir: &Path, layers: usize, int8: bool) -> Engine {
    let name = format!("{}-{layers}l", if int8 { "int8" } else { "f32" });
    let checkpoint = dir.join(format!("ckpt-{layers}l"));
    if !checkpoint.exists() {
        let config = tiny_config(layers, HIDDEN, HEADS, Task::Sst2, ExitSignal::Energy);
        write_random_checkpoint(&checkpoint, &config, 7).expect("random checkpoint");
    }
    let options =
        ExportOptions { self_check: false, ..if int8 { ExportOptions::int8() } else { ExportOptions::default() } };
    let out = dir.join(name);
    export(&checkpoint, &out, &options).expect("export");
    Engine::load(&out).expect("load exported package")
}

/// The int8 package `package` exported, planned as the graphs are (no load-time fusion): what the fusions buy.
fn unfused(dir: &Path, layers: usize) -> Engine {
    let package = Package::open(&dir.join(format!("int8-{layers}l"))).expect("open the int8 package");
    let backend = TractBackend::load_with(&package, Fusion::NONE).expect("load without fusion");
    Engine::from_parts(package, AnyBackend::Tract(backend))
}

/// A single text of exactly `tokens` tokens ([CLS] and [SEP] included): the word "a" is one word piece.
fn text_of(engine: &Engine, tokens: usize) -> String {
    let text = vec!["a"; tokens - 2].join(" ");
    let got = engine.encode(&Input::single(&text)).expect("encode").len();
    assert_eq!(got, tokens, "the test vocabulary should make 'a' one token");
    text
}

/// Times one stage of the engine's full-depth run.
fn stage_time(engine: &Engine, input: &Input, stage: Stage, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let run = engine.run_all_exits(input).expect("run");
        let ms = run.stage_ms.get(stage).expect("stage ran");
        total += Duration::from_secs_f64(ms / 1e3);
    }
    total
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let one_layer = [
        ("f32", package(dir.path(), 1, false)),
        ("int8", package(dir.path(), 1, true)),
        ("int8-unfused", unfused(dir.path(), 1)),
    ];

    let mut group = c.benchmark_group("layer");
    for (name, engine) in &one_layer {
        for tokens in TOKEN_COUNTS {
            let text = text_of(engine, tokens);
            let input = Input::single(&text);
            group.bench_with_input(BenchmarkId::new(*name, tokens), &input, |b, input| {
                b.iter_custom(|iters| stage_time(engine, input, Stage::Layer(1), iters))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("int8_linear");
    let kernel = cosee_runtime::fused::linear::kernel().map_or("portable".to_string(), |k| format!("{k:?}"));
    for (tokens, k, n) in
        [(16, HIDDEN, 3 * HIDDEN), (16, 4 * HIDDEN, HIDDEN), (64, HIDDEN, 4 * HIDDEN), (64, 4 * HIDDEN, HIDDEN)]
    {
        let linear = int8_linear(k, n);
        let q: Vec<i8> = (0..tokens * k).map(|i| (i % 251) as i8).collect();
        let scales = vec![0.01f32; tokens];
        let mut out = vec![0f32; tokens * n];
        group.bench_function(BenchmarkId::new(&kernel, format!("{tokens}x{k}x{n}")), |b| {
            b.iter(|| linear.forward(std::hint::black_box(&q), &scales, &mut out).expect("shapes fit"))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("exit_head");
    for (name, engine) in &one_layer {
        let text = text_of(engine, 32);
        let input = Input::single(&text);
        group.bench_function(*name, |b| b.iter_custom(|iters| stage_time(engine, &input, Stage::Exit(1), iters)));
    }
    group.finish();

    let examples = parse_tsv(Task::Sst2, SST2_DEV, "sst2-dev-40.tsv").expect("committed SST-2 slice");
    let engine = package(dir.path(), 6, true);
    let mut group = c.benchmark_group("tokenizer");
    group.bench_function("single", |b| {
        b.iter(|| {
            for e in &examples {
                std::hint::black_box(engine.encode(&Input::from(e)).expect("encode"));
            }
        })
    });
    let pairs: Vec<(String, String)> =
        examples.windows(2).map(|w| (w[0].text_a.clone(), w[1].text_a.clone())).collect();
    let rte = package_pair_tokenizer(&engine);
    group.bench_function("pair", |b| {
        b.iter(|| {
            for (a, p) in &pairs {
                std::hint::black_box(rte.encode(&Input::pair(a, p)).expect("encode"));
            }
        })
    });
    group.finish();

    // Three thresholds on the energy signal: 1.0 exits at layer 1 (every energy is below 1), 0.0 never exits,
    // and the package default in between.
    let mut group = c.benchmark_group("classify/int8");
    let default = engine.default_policy();
    for (name, tau) in [("exit_at_1", 1.0), ("default", default.threshold), ("full_depth", 0.0)] {
        let policy = ExitPolicy { signal: ExitSignal::Energy, threshold: tau };
        group.bench_function(name, |b| {
            b.iter(|| {
                for e in &examples[..10] {
                    std::hint::black_box(engine.classify_with(&Input::from(e), policy).expect("classify"));
                }
            })
        });
    }
    group.finish();
}

/// An int8 linear layer `[k, n]` of arbitrary weights, with a plain output stage.
fn int8_linear(k: usize, n: usize) -> Int8Linear {
    let w: Vec<i8> = (0..k * n).map(|i| (i % 253) as i8).collect();
    let stage = RescaleInt8 { weight_scale: vec![1e-3; n], bias: vec![0.0; n], gelu: false };
    Int8Linear::new(&w, k, n, stage).expect("weights fit")
}

/// The same tokenizer configured for a pair task: the pair benchmark needs `[CLS] a [SEP] b [SEP]`.
fn package_pair_tokenizer(engine: &Engine) -> cosee_runtime::TextTokenizer {
    let path = engine.package().path(cosee_runtime::manifest::TOKENIZER_FILE);
    cosee_runtime::TextTokenizer::from_file(&path, engine.manifest().max_seq_len, true).expect("pair tokenizer")
}

criterion_group! {
    name = runtime;
    config = Criterion::default()
        .without_plots()
        .sample_size(10)
        .measurement_time(Duration::from_secs(1))
        .warm_up_time(Duration::from_millis(300));
    targets = benches
}
criterion_main!(runtime);
