//! Checkpoint → model package: one ONNX graph per stage, the tokenizer, and the manifest with every file's
//! digest. The package is assembled in a temporary directory beside the destination and renamed into place only
//! once complete and checked, so a failed export leaves nothing half-written.

use crate::check::{self, CheckError, StageDeltas, StagePlans};
use crate::checkpoint::{Checkpoint, CheckpointError, OpenOptions};
use crate::onnx;
use crate::reference;
use crate::stages::{self, Int8Rescale, LayerForm};
use cosee_runtime::config::ExitConfig;
use cosee_runtime::json::JsonError;
use cosee_runtime::manifest::{
    digest_file, exit_file, layer_file, EmbeddingStorage, Manifest, Numerics, QuantScheme, Quantization,
    EMBEDDINGS_FILE, FORMAT_VERSION, TOKENIZER_FILE,
};
use cosee_runtime::ExitSignal;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tract_onnx::pb::ModelProto;

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub quantize: QuantScheme,
    pub embeddings: EmbeddingStorage,
    /// Int8 graph variants (see [`crate::stages::LayerForm`]); the defaults are the measured fastest.
    pub rescale: Int8Rescale,
    pub fused_qkv: bool,
    pub numerics: Numerics,
    /// For a backbone without a `cosee` section: export with random exit heads for this configuration.
    pub backbone_heads: Option<ExitConfig>,
    pub seed: u64,
    /// The manifest's default τ; [`default_threshold`] of the signal when absent. `calibrate` replaces it.
    pub default_threshold: Option<f32>,
    /// Replace an existing package at the destination (the old one is removed only after the new one is in place).
    pub overwrite: bool,
    /// Run every written graph in tract against the reference forward pass before publishing the package.
    pub self_check: bool,
    pub progress: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            quantize: QuantScheme::None,
            embeddings: EmbeddingStorage::F32,
            rescale: Int8Rescale::default(),
            fused_qkv: false,
            numerics: Numerics::Fused,
            backbone_heads: None,
            seed: 0,
            default_threshold: None,
            overwrite: false,
            self_check: true,
            progress: false,
        }
    }
}

impl ExportOptions {
    /// The int8 package: int8 linear layers and an f16 word-embedding table.
    pub fn int8() -> Self {
        Self::quantized(QuantScheme::Int8PerTokenSymmetric)
    }

    /// The package of `quantize`, with that scheme's default word-embedding storage.
    pub fn quantized(quantize: QuantScheme) -> Self {
        Self { quantize, embeddings: Self::default_embeddings(quantize), ..Self::default() }
    }

    /// The word-embedding storage unless told otherwise: f32 beside f32 linear layers, f16 beside int8 ones.
    pub fn default_embeddings(quantize: QuantScheme) -> EmbeddingStorage {
        match quantize {
            QuantScheme::None => EmbeddingStorage::F32,
            QuantScheme::Int8PerTokenSymmetric | QuantScheme::Int8OrtDynamic => EmbeddingStorage::F16,
        }
    }

    pub fn layer_form(&self) -> LayerForm {
        LayerForm { scheme: self.quantize, rescale: self.rescale, fused_qkv: self.fused_qkv, numerics: self.numerics }
    }
}

/// The self-check's verdict: stage outputs of the written graphs (tract) against the reference forward pass.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SelfCheck {
    /// Largest |Δ| per stage over every checked batch.
    pub deltas: StageDeltas,
    pub tolerance: f32,
    /// (batch, sequence) shapes checked.
    pub shapes: Vec<(usize, usize)>,
}

#[derive(Debug, Clone)]
pub struct ExportReport {
    pub package: PathBuf,
    pub manifest: Manifest,
    pub warnings: Vec<String>,
    pub check: Option<SelfCheck>,
    /// Bytes of every file of the package, manifest included.
    pub total_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path} already exists (pass --force to replace it)")]
    OutputExists { path: String },
    #[error("cannot write {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a tokenizer the runtime can load: {message}")]
    Tokenizer { path: String, message: String },
    #[error("self-check: {0}")]
    Check(#[from] CheckError),
    #[error(
        "self-check failed: {stage} differs from the reference forward pass by {delta:e} (tolerance {tolerance:e}); \
         the package was not written"
    )]
    CheckFailed { stage: String, delta: f32, tolerance: f32 },
    #[error(transparent)]
    Manifest(#[from] JsonError),
}

/// The default τ before calibration: each signal's value at a 90%-confident prediction on a symmetric binary
/// case (logits ±1.1: max softmax 0.9, normalized entropy 0.47, normalized energy sigmoid(−ln 4) = 0.2), and
/// patience at half the depth (PABEE's 6 of 12 layers), within the sweep 1..M−1.
pub fn default_threshold(signal: ExitSignal, num_layers: usize) -> f32 {
    match signal {
        ExitSignal::Energy => 0.2,
        ExitSignal::Entropy => 0.45,
        ExitSignal::MaxSoftmax => 0.9,
        ExitSignal::Patience => (num_layers / 2).clamp(1, num_layers.saturating_sub(1).max(1)) as f32,
    }
}

/// The self-check tolerance on any stage output, each stage fed the reference's input (teacher forcing).
///
/// f32 graphs must match the reference to 1e-3 (tests hold tiny models to 1e-4; a 384-wide layer shows ~1e-5 of
/// f32 rounding). Int8 graphs are compared with the reference's simulation of the same int8 arithmetic and
/// reproduce it exactly except where an f32 intermediate (LayerNorm, softmax, GELU output; the reference computes
/// them in f64) lies within rounding noise of a quantization boundary and lands on the neighbouring integer: one
/// step (max|x|/127 of one token) on one input, which moves that token's outputs by up to a few 1e-2 after the
/// next LayerNorm. Hence 0.1 for int8, with [`MAX_ROWS_OFF`] bounding how often it may happen.
pub fn self_check_tolerance(scheme: QuantScheme) -> f32 {
    match scheme {
        QuantScheme::None => 1e-3,
        QuantScheme::Int8PerTokenSymmetric | QuantScheme::Int8OrtDynamic => 0.1,
    }
}

/// At most this share of compared rows may differ from the reference by more than [`check::ROW_EXACT`]: f32
/// graphs none; int8 graphs only the rare rounding-boundary rows.
pub fn max_rows_off(scheme: QuantScheme) -> f64 {
    match scheme {
        QuantScheme::None => 0.0,
        QuantScheme::Int8PerTokenSymmetric | QuantScheme::Int8OrtDynamic => 0.1,
    }
}

/// Reads the checkpoint at `checkpoint_dir` and writes its package to `out_dir`.
pub fn export(checkpoint_dir: &Path, out_dir: &Path, options: &ExportOptions) -> Result<ExportReport, ExportError> {
    refuse_existing(out_dir, options)?;
    let open = OpenOptions { backbone_heads: options.backbone_heads.clone(), seed: options.seed };
    let checkpoint = Checkpoint::open_with(checkpoint_dir, &open)?;
    export_checkpoint(&checkpoint, out_dir, options)
}

fn refuse_existing(out_dir: &Path, options: &ExportOptions) -> Result<(), ExportError> {
    if out_dir.exists() && !options.overwrite {
        return Err(ExportError::OutputExists { path: out_dir.display().to_string() });
    }
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io { path: path.display().to_string(), source }
}

fn write_graph(dir: &Path, name: &str, model: &ModelProto) -> Result<(), ExportError> {
    let path = dir.join(name);
    std::fs::write(&path, onnx::encode(model)).map_err(io_err(&path))
}

/// Writes the package of an opened checkpoint.
pub fn export_checkpoint(
    checkpoint: &Checkpoint,
    out_dir: &Path,
    options: &ExportOptions,
) -> Result<ExportReport, ExportError> {
    refuse_existing(out_dir, options)?;
    let w = &checkpoint.weights;
    let exit = checkpoint.exit_config();
    let m = w.num_layers();
    let parent = match out_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    let staging = tempfile::Builder::new().prefix(".cosee-export-").tempdir_in(&parent).map_err(io_err(&parent))?;
    let dir = staging.path();

    let progress = if options.progress { ProgressBar::new((2 * m + 3) as u64) } else { ProgressBar::hidden() };
    progress
        .set_style(ProgressStyle::with_template("{msg:>14} [{bar:30}] {pos}/{len} {elapsed}").expect("valid template"));
    progress.set_message("embeddings");
    write_graph(dir, EMBEDDINGS_FILE, &stages::embeddings_graph(&w.embeddings, options.embeddings, options.numerics))?;
    progress.inc(1);
    let form = options.layer_form();
    for (i, (layer, head)) in w.layers.iter().zip(&w.exits).enumerate() {
        let layer_no = i + 1;
        progress.set_message(format!("layer {layer_no}/{m}"));
        write_graph(
            dir,
            &layer_file(layer_no),
            &stages::layer_graph(layer, w.num_heads, w.activation, form, layer_no),
        )?;
        progress.inc(1);
        write_graph(dir, &exit_file(layer_no), &stages::exit_graph(head, layer_no))?;
        progress.inc(1);
    }

    progress.set_message("tokenizer");
    let tokenizer_dst = dir.join(TOKENIZER_FILE);
    let tokenizer_error =
        |message: String| ExportError::Tokenizer { path: checkpoint.tokenizer_path.display().to_string(), message };
    let json = std::fs::read(&checkpoint.tokenizer_path).map_err(|e| tokenizer_error(e.to_string()))?;
    cosee_runtime::tokenize::parse_tokenizer_json(&json).map_err(tokenizer_error)?;
    std::fs::copy(&checkpoint.tokenizer_path, &tokenizer_dst).map_err(io_err(&tokenizer_dst))?;
    progress.inc(1);

    let quantization =
        Quantization { scheme: options.quantize, embeddings: options.embeddings, numerics: options.numerics };
    let check = if options.self_check {
        progress.set_message("self-check");
        let check = self_check(dir, checkpoint, quantization)?;
        progress.inc(1);
        Some(check)
    } else {
        None
    };

    let mut files = BTreeMap::new();
    let mut names = vec![EMBEDDINGS_FILE.to_string(), TOKENIZER_FILE.to_string()];
    names.extend((1..=m).flat_map(|l| [layer_file(l), exit_file(l)]));
    for name in names {
        let path = dir.join(&name);
        files.insert(name, digest_file(&path).map_err(io_err(&path))?);
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        task: exit.task,
        label_names: exit.label_names.clone(),
        num_layers: m,
        hidden_size: w.hidden_size(),
        max_seq_len: exit.max_seq_len,
        signal: exit.signal.into(),
        default_threshold: options.default_threshold.unwrap_or_else(|| default_threshold(exit.signal, m)),
        calibration: None,
        quantization,
        files,
    };
    manifest.write(dir)?;
    let total_bytes =
        std::fs::read_dir(dir).map_err(io_err(dir))?.filter_map(|e| e.ok()?.metadata().ok()).map(|md| md.len()).sum();
    progress.finish_and_clear();

    publish(staging, out_dir)?;
    Ok(ExportReport {
        package: out_dir.to_path_buf(),
        manifest,
        warnings: checkpoint.warnings.clone(),
        check,
        total_bytes,
    })
}

/// Moves the finished staging directory to `out_dir`, replacing an existing package only after the new one is
/// complete: the old one is first renamed aside, and removed last.
fn publish(staging: tempfile::TempDir, out_dir: &Path) -> Result<(), ExportError> {
    let aside = if out_dir.exists() {
        let parent = staging.path().parent().unwrap_or(Path::new(".")).to_path_buf();
        let aside = tempfile::Builder::new().prefix(".cosee-replaced-").tempdir_in(&parent).map_err(io_err(&parent))?;
        let aside_path = aside.path().join("old");
        std::fs::rename(out_dir, &aside_path).map_err(io_err(out_dir))?;
        Some(aside)
    } else {
        None
    };
    let staged = staging.keep();
    if let Err(source) = std::fs::rename(&staged, out_dir) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(ExportError::Io { path: out_dir.display().to_string(), source });
    }
    drop(aside);
    Ok(())
}

/// Runs the written graphs in tract on batches of 1 and 2 rows (the second padded) at 1, 7 and 40 tokens and
/// compares every stage with the reference forward pass.
fn self_check(dir: &Path, checkpoint: &Checkpoint, quantization: Quantization) -> Result<SelfCheck, ExportError> {
    let w = &checkpoint.weights;
    let plans = StagePlans::load(dir, w.num_layers())?;
    let vocab = w.embeddings.word.rows;
    let max_len = checkpoint.exit_config().max_seq_len;
    let shapes: Vec<(usize, usize)> = [(1, 1), (2, 7), (1, 40)].into_iter().filter(|&(_, s)| s <= max_len).collect();
    let mut deltas: Option<StageDeltas> = None;
    for (seed, &(batch, sequence)) in shapes.iter().enumerate() {
        let tokens = check::sample_batch(batch, sequence, vocab, seed as u64);
        let expected = reference::forward(w, quantization, &tokens);
        let d = plans.compare_stagewise(&expected, &tokens)?;
        match &mut deltas {
            None => deltas = Some(d),
            Some(all) => all.merge(&d),
        }
    }
    let deltas = deltas.expect("at least the 1-token shape is checked");
    let tolerance = self_check_tolerance(quantization.scheme);
    for (stage, delta) in deltas.named() {
        if delta.is_nan() || delta > tolerance {
            return Err(ExportError::CheckFailed { stage, delta, tolerance });
        }
    }
    let share_off = deltas.rows_off as f64 / deltas.rows.max(1) as f64;
    if share_off > max_rows_off(quantization.scheme) {
        return Err(ExportError::CheckFailed {
            stage: format!("{} of {} rows", deltas.rows_off, deltas.rows),
            delta: share_off as f32,
            tolerance: max_rows_off(quantization.scheme) as f32,
        });
    }
    Ok(SelfCheck { deltas, tolerance, shapes })
}
