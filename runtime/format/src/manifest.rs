//! The model package format, version 1: the one definition that `cosee-tools` writes and the runtime reads.
//!
//! A package is a directory holding `manifest.json`, `tokenizer.json`, and one ONNX graph per stage:
//! `embeddings.onnx` (input_ids, token_type_ids, attention_mask → hidden_states), `layer_01.onnx` …
//! (hidden_states, attention_mask → hidden_states) and `exit_01.onnx` … (hidden_states → logits). Every graph
//! has symbolic `batch` and `sequence` dimensions; token inputs are i64, hidden states f32 `[batch, sequence,
//! hidden]`, logits f32 `[batch, labels]`.

use crate::glue::Task;
use crate::json::{JsonError, JsonFile};
use crate::metrics::SweepPoint;
use crate::signal::{Direction, ExitSignal};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const EMBEDDINGS_FILE: &str = "embeddings.onnx";

/// Graph input and output names, fixed by the format.
pub mod io_names {
    pub const INPUT_IDS: &str = "input_ids";
    pub const TOKEN_TYPE_IDS: &str = "token_type_ids";
    pub const ATTENTION_MASK: &str = "attention_mask";
    pub const HIDDEN_STATES: &str = "hidden_states";
    /// The output of `layer_XX.onnx`. ONNX values are assigned once (SSA), so a layer cannot output a value named
    /// like its own input `hidden_states` (tract refuses such a graph with "Loop detected", ONNX Runtime with a
    /// duplicate definition); the embeddings graph, which has no such input, outputs `hidden_states`.
    pub const LAYER_OUTPUT: &str = "next_hidden_states";
    pub const LOGITS: &str = "logits";
    pub const BATCH_DIM: &str = "batch";
    pub const SEQUENCE_DIM: &str = "sequence";
}

/// `layer_01.onnx` for layer 1 (1-based, as the exit layers are reported).
pub fn layer_file(layer: usize) -> String {
    format!("layer_{layer:02}.onnx")
}

/// `exit_01.onnx` for the exit after layer 1.
pub fn exit_file(layer: usize) -> String {
    format!("exit_{layer:02}.onnx")
}

/// How the graphs' weights are stored and computed. With the `clap` feature, the values of `--quantize`: `none`,
/// `int8` and `int8-ort` (the help there is the short form of each variant's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum QuantScheme {
    /// Plain f32 everywhere.
    #[cfg_attr(feature = "clap", value(help = "f32 everywhere"))]
    None,
    /// Linear layers as s8×s8 MatMulInteger: weights per output channel, activations per token, both symmetric;
    /// LayerNorm, softmax and GELU stay f32.
    #[cfg_attr(
        feature = "clap",
        value(
            name = "int8",
            help = "s8×s8 linear layers (per-token activations, per-channel weights); LayerNorm/softmax/GELU in f32"
        )
    )]
    Int8PerTokenSymmetric,
    /// ONNX Runtime's dynamic int8 form, as its `quantize_dynamic(per_channel=True)` writes it: each linear layer's
    /// input quantized per tensor to u8 with a zero point by the standard `DynamicQuantizeLinear`, symmetric s8
    /// weights per output channel in 7 bits (±64, ORT's `reduce_range`: its u8×s8 kernels saturate past that on CPUs
    /// without VNNI), u8×s8 `MatMulInteger`, then Cast and one Mul by the product of the scales. ONNX Runtime fuses
    /// that chain into one kernel (`DynamicQuantizeMatMul`), its fastest int8 path on x86; tract runs it too, but
    /// slower than [`Self::Int8PerTokenSymmetric`] (its `DynamicQuantizeLinear` is a scalar loop).
    #[cfg_attr(
        feature = "clap",
        value(
            name = "int8-ort",
            help = "ONNX Runtime's dynamic int8 form (u8 activations per tensor, s8 weights per channel); for --backend ort"
        )
    )]
    #[serde(rename = "int8_ort")]
    Int8OrtDynamic,
}

/// How the word-embedding table is stored (dequantized in the embeddings graph); `int8` is per-row symmetric.
/// With the `clap` feature, the values of `--embeddings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingStorage {
    F32,
    F16,
    Int8,
}

/// How the f32 operations between the matmuls (LayerNorm, softmax, GELU) are written in the graphs. With the `clap`
/// feature, the values of `--numerics` (the help there is the short form of each variant's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Numerics {
    /// The standard operators, which tract runs with its fused LayerNorm, softmax and exact-erf GELU kernels.
    /// Fastest, but those kernels' vector reductions and erf differ by an ulp between x86-64 and aarch64.
    #[default]
    #[cfg_attr(
        feature = "clap",
        value(help = concat!(
            "The standard operators (tract's fused kernels): fastest, but differ by an ulp between x86-64 ",
            "and ARM"
        ))
    )]
    Fused,
    /// Only operations tract computes bit for bit alike on x86-64 and aarch64: sums as matmuls, softmax from
    /// `Exp`, GELU in its tanh form from `Exp`. For int8 packages, where a one-ulp difference before a rounding
    /// to int8 becomes a whole quantization step: the package answers on a Pi exactly as where it was calibrated.
    #[cfg_attr(
        feature = "clap",
        value(help = "Operations tract computes bit for bit alike on x86-64 and ARM; GELU in its tanh form")
    )]
    Portable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantization {
    pub scheme: QuantScheme,
    pub embeddings: EmbeddingStorage,
    /// Absent in packages written before it existed, which are all `fused`.
    #[serde(default)]
    pub numerics: Numerics,
}

/// The signal a package exits on, with its direction spelled out for readers of the JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalSpec {
    pub name: ExitSignal,
    pub direction: Direction,
}

impl From<ExitSignal> for SignalSpec {
    fn from(name: ExitSignal) -> Self {
        Self { name, direction: name.direction() }
    }
}

/// The τ table written by `cosee-tools calibrate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Where the labelled data came from (file name), for the record.
    pub data: String,
    pub num_examples: usize,
    /// The layer speed-up the default threshold was chosen to reach.
    pub target_speedup: f64,
    pub points: Vec<SweepPoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub sha256: String,
    pub bytes: u64,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub task: Task,
    pub label_names: Vec<String>,
    pub num_layers: usize,
    pub hidden_size: usize,
    pub max_seq_len: usize,
    pub signal: SignalSpec,
    pub default_threshold: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    pub quantization: Quantization,
    /// Every other file of the package with its digest; the runtime refuses a package whose files differ.
    pub files: BTreeMap<String, FileDigest>,
}

/// How `manifest.json` is read and written: its `format_version` is checked before anything else is parsed.
pub const MANIFEST_JSON: JsonFile =
    JsonFile::versioned("a valid package manifest", "format_version", FORMAT_VERSION, "package format");

impl Manifest {
    /// Reads and parses `dir/manifest.json`, refusing unknown format versions before anything else.
    pub fn read(dir: &Path) -> Result<Self, JsonError> {
        MANIFEST_JSON.read(&dir.join(MANIFEST_FILE))
    }

    /// Writes `dir/manifest.json` atomically (temporary file, then rename).
    pub fn write(&self, dir: &Path) -> Result<(), JsonError> {
        MANIFEST_JSON.write_atomic(&dir.join(MANIFEST_FILE), self)
    }

    /// The stage files the format requires for this many layers, in execution order.
    pub fn stage_files(&self) -> Vec<String> {
        let mut files = vec![EMBEDDINGS_FILE.to_string()];
        for m in 1..=self.num_layers {
            files.push(layer_file(m));
            files.push(exit_file(m));
        }
        files
    }

    /// The calibration point at this threshold, if the table has it.
    pub fn calibration_at(&self, threshold: f32) -> Option<&SweepPoint> {
        self.calibration.as_ref()?.points.iter().find(|p| (p.threshold - threshold).abs() < 1e-6)
    }
}

/// sha256 and size of a file, streamed.
pub fn digest_file(path: &Path) -> std::io::Result<FileDigest> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileDigest { sha256: hex::encode(hasher.finalize()), bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            task: Task::Sst2,
            label_names: vec!["negative".into(), "positive".into()],
            num_layers: 2,
            hidden_size: 32,
            max_seq_len: 128,
            signal: ExitSignal::Energy.into(),
            default_threshold: 0.3,
            calibration: Some(Calibration {
                data: "dev.tsv".into(),
                num_examples: 4,
                target_speedup: 2.0,
                points: vec![SweepPoint {
                    threshold: 0.3,
                    accuracy: 0.75,
                    f1: None,
                    layer_speedup: 2.0,
                    exit_histogram: vec![4, 0],
                }],
            }),
            quantization: Quantization {
                scheme: QuantScheme::Int8PerTokenSymmetric,
                embeddings: EmbeddingStorage::F16,
                numerics: Numerics::Portable,
            },
            files: BTreeMap::from([("embeddings.onnx".into(), FileDigest { sha256: "00".into(), bytes: 1 })]),
        }
    }

    #[test]
    fn round_trips_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let m = sample();
        m.write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), m);
        assert_eq!(
            m.stage_files(),
            ["embeddings.onnx", "layer_01.onnx", "exit_01.onnx", "layer_02.onnx", "exit_02.onnx"]
        );
        assert!(m.calibration_at(0.3).is_some());
    }

    #[test]
    fn refuses_other_versions_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut json = serde_json::to_value(sample()).unwrap();
        json["format_version"] = 2.into();
        std::fs::write(dir.path().join(MANIFEST_FILE), json.to_string()).unwrap();
        let err = Manifest::read(dir.path()).unwrap_err();
        assert!(matches!(err, JsonError::UnsupportedVersion { found: 2, .. }));
        assert!(err.to_string().contains("manifest.json"));
    }

    #[test]
    fn a_manifest_without_numerics_is_fused() {
        let dir = tempfile::tempdir().unwrap();
        let mut json = serde_json::to_value(sample()).unwrap();
        json["quantization"].as_object_mut().unwrap().remove("numerics");
        std::fs::write(dir.path().join(MANIFEST_FILE), json.to_string()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap().quantization.numerics, Numerics::Fused);
    }

    #[test]
    fn digests_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"abc").unwrap();
        let d = digest_file(&p).unwrap();
        assert_eq!(d.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(d.bytes, 3);
    }
}
