//! Per-layer latency of the exported layer graph forms in tract: f32 against the int8 variants (and portable
//! against fused numerics), at 16/32/64/128 tokens, batch 1, one thread — the measurement behind the default int8
//! form.
//!
//! usage: cargo run --release -p cosee-tools --example int8_timing [CHECKPOINT_DIR] [RUNS]
//!
//! Without a checkpoint a random one of the real size (hidden 384, 12 heads, FFN 1536) is used: latency does not
//! depend on the weights' values. A backbone without a `cosee` section gets random heads. Variants are run
//! interleaved (one run of each per round) so that load from other processes hits them alike; the table gives
//! medians over the rounds.

use cosee_runtime::config::ExitConfig;
use cosee_runtime::manifest::{io_names, Numerics};
use cosee_runtime::{ExitSignal, Task};
use cosee_tools::checkpoint::OpenOptions;
use cosee_tools::stages::{layer_graph, Int8Rescale, LayerForm};
use cosee_tools::{onnx, testing, write_random_checkpoint, Checkpoint};
use std::sync::Arc;
use std::time::Instant;
use tract_onnx::prelude::*;

fn plan(bytes: &[u8], tokens: usize, hidden: usize) -> TractResult<Arc<TypedRunnableModel>> {
    let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
    // As the runtime does: batch fixed to 1, the sequence symbolic (one plan serves every length).
    let seq = model.symbols.sym(io_names::SEQUENCE_DIM);
    model.set_input_fact(0, f32::fact([1.to_dim(), seq.to_dim(), hidden.to_dim()]).into())?;
    model.set_input_fact(1, i64::fact([1.to_dim(), seq.to_dim()]).into())?;
    let _ = tokens;
    model.into_optimized()?.into_runnable()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(60);
    let tmp = tempfile::tempdir()?;
    let dir = match args.get(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            let dir = tmp.path().join("ckpt");
            let mut config = testing::tiny_config(1, 384, 12, Task::Sst2, ExitSignal::Energy);
            config.bert.intermediate_size = 1536;
            write_random_checkpoint(&dir, &config, 0)?;
            dir
        }
    };
    let heads = ExitConfig {
        task: Task::Sst2,
        label_names: vec!["negative".into(), "positive".into()],
        signal: ExitSignal::Energy,
        per_exit_pooler: false,
        pooling: cosee_runtime::config::Pooling::Cls,
        max_seq_len: 128,
    };
    let ckpt = Checkpoint::open_with(&dir, &OpenOptions { backbone_heads: Some(heads), seed: 0 })?;
    let w = &ckpt.weights;
    let layer = &w.layers[0];
    let hidden = w.hidden_size();
    let int8 = |rescale, fused_qkv| LayerForm { rescale, fused_qkv, ..LayerForm::int8() };
    let variants: Vec<(&str, LayerForm)> = vec![
        ("f32", LayerForm::f32()),
        ("f32 fused-qkv", LayerForm { fused_qkv: true, ..LayerForm::f32() }),
        ("int8 combined", int8(Int8Rescale::Combined, false)),
        ("int8 sequential", int8(Int8Rescale::Sequential, false)),
        ("int8 combined fused-qkv", int8(Int8Rescale::Combined, true)),
        ("int8 sequential fused-qkv", int8(Int8Rescale::Sequential, true)),
        ("int8 sequential, portable numerics", LayerForm { numerics: Numerics::Portable, ..LayerForm::int8() }),
    ];
    println!(
        "one layer: hidden {hidden}, FFN {}, {} heads; batch 1, one thread; median of {runs} interleaved runs (ms)",
        layer.intermediate.out_features(),
        w.num_heads
    );
    print!("{:<32}", "tokens");
    let lengths = [16usize, 32, 64, 128];
    for t in lengths {
        print!("{t:>9}");
    }
    println!();
    let mut table: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for &tokens in &lengths {
        let plans: Vec<_> = variants
            .iter()
            .map(|(_, form)| {
                let bytes = onnx::encode(&layer_graph(layer, w.num_heads, w.activation, *form, 1));
                plan(&bytes, tokens, hidden)
            })
            .collect::<TractResult<_>>()?;
        let x: Tensor = tract_ndarray::Array3::from_shape_fn((1, tokens, hidden), |(_, s, h)| {
            ((s * 31 + h * 17) % 97) as f32 / 48.0 - 1.0
        })
        .into_tensor();
        let mask: Tensor = tract_ndarray::Array2::<i64>::ones((1, tokens)).into_tensor();
        let inputs = || tvec!(x.clone().into(), mask.clone().into());
        for p in &plans {
            for _ in 0..10 {
                p.run(inputs())?;
            }
        }
        let mut times = vec![Vec::with_capacity(runs); plans.len()];
        for _ in 0..runs {
            for (i, p) in plans.iter().enumerate() {
                let input = inputs();
                let start = Instant::now();
                p.run(input)?;
                times[i].push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        for (i, t) in times.into_iter().enumerate() {
            table[i].push(median(t));
        }
    }
    for ((name, _), row) in variants.iter().zip(&table) {
        print!("{name:<32}");
        for v in row {
            print!("{v:>9.3}");
        }
        println!();
    }
    let f32_row = &table[0];
    for ((name, _), row) in variants.iter().zip(&table).skip(1) {
        print!("{:<32}", format!("× {name}"));
        for (a, b) in f32_row.iter().zip(row) {
            print!("{:>8.2}×", a / b);
        }
        println!();
    }
    Ok(())
}
