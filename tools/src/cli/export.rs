//! `cosee-tools export --checkpoint DIR --out PKG [--quantize none|int8] [--embeddings f32|f16|int8]
//! [--numerics fused|portable] [--task T [--signal S] [--max-seq-len N]] [--threshold τ] [--seed N] [--force]
//! [--no-check]`

use anyhow::Context;
use cosee_runtime::config::ExitConfig;
use cosee_runtime::manifest::{EmbeddingStorage, Numerics, QuantScheme};
use cosee_runtime::{ExitSignal, Task};
use cosee_tools::export::{export, ExportOptions, ExportReport};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory (model.safetensors, config.json, tokenizer.json).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Package directory to create.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "none")]
    pub quantize: QuantScheme,
    /// Word-embedding table storage [default: f32 with --quantize none, f16 with --quantize int8 or int8-ort].
    #[arg(long, value_enum)]
    pub embeddings: Option<EmbeddingStorage>,
    /// How LayerNorm, softmax and GELU are written. `portable`: an int8 package answers on ARM bit for bit as on
    /// x86-64 (the fused kernels differ by an ulp, which an int8 rounding can turn into a whole step), at about 1.3x
    /// the latency (docs/raspberry-pi.md).
    #[arg(long, value_enum, default_value = "fused")]
    pub numerics: Numerics,
    /// For a pretrained backbone without a `cosee` section: export it for this task with RANDOM exit heads (for
    /// timing and format checks).
    #[arg(long)]
    pub task: Option<Task>,
    /// Exit signal of those random heads.
    #[arg(long, default_value = "energy", requires = "task")]
    pub signal: ExitSignal,
    /// Longest input of those random heads, in tokens.
    #[arg(long, default_value_t = 128, requires = "task")]
    pub max_seq_len: usize,
    /// Default τ written to the manifest [default: the signal's, until `calibrate`].
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Seed of random exit heads.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace an existing package.
    #[arg(long)]
    pub force: bool,
    /// Skip running the written graphs against the reference forward pass.
    #[arg(long)]
    pub no_check: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = ExportOptions {
        quantize: args.quantize,
        embeddings: args.embeddings.unwrap_or(ExportOptions::default_embeddings(args.quantize)),
        numerics: args.numerics,
        backbone_heads: args.task.map(|task| ExitConfig::new(task, args.signal, args.max_seq_len)),
        seed: args.seed,
        default_threshold: args.threshold,
        overwrite: args.force,
        self_check: !args.no_check,
        progress: true,
        ..ExportOptions::default()
    };
    let report = export(&args.checkpoint, &args.out, &options)
        .with_context(|| format!("exporting {} to {}", args.checkpoint.display(), args.out.display()))?;
    print(&report);
    Ok(ExitCode::SUCCESS)
}

/// Warnings on stderr; what was written and the self-check's verdict on stdout.
fn print(report: &ExportReport) {
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    let m = &report.manifest;
    println!(
        "wrote {} ({} layers, hidden {}, {:?} / {:?} embeddings / {:?} numerics, {:.1} MB)",
        report.package.display(),
        m.num_layers,
        m.hidden_size,
        m.quantization.scheme,
        m.quantization.embeddings,
        m.quantization.numerics,
        report.total_bytes as f64 / 1e6
    );
    if let Some(check) = &report.check {
        println!(
            "self-check vs reference (batch×tokens {:?}): max |Δ| hidden {:.2e}, logits {:.2e} (tolerance {:.0e})",
            check.shapes,
            check.deltas.max(),
            check.deltas.max_logit(),
            check.tolerance
        );
    }
    println!(
        "default threshold {} ({}); run `cosee-tools calibrate` to set it from data",
        m.default_threshold, m.signal.name
    );
}
