//! A checkpoint directory — `model.safetensors`, `config.json` ([`crate::config::ModelConfig`]), `tokenizer.json` —
//! and the one safetensors reader of the workspace, used by the trainer (into tch variables) and the exporter (into
//! plain f32 matrices).
//!
//! Tensors are named as in Hugging Face's BERT (`embeddings.word_embeddings.weight`, `encoder.layer.0.…`,
//! `pooler.dense.…`) plus `exits.{i}.…`. A `BertModel`-style file names them with a `bert.` prefix
//! (`bert.encoder.layer.0.…`): [`TensorFile`] accepts both, and a name present both ways is read unprefixed.
//! f32, f16, bf16 and f64 tensors are read as f32.

use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The sha256 of every other file of a checkpoint, written by the trainer with it ([`write_checksums`]).
pub const CHECKSUMS_FILE: &str = "checksums.json";

/// The prefix Hugging Face's `BertModel` / `BertForSequenceClassification` files put before the encoder's names.
pub const HF_PREFIX: &str = "bert.";

/// Checkpoint tensor names, in one place.
pub mod names {
    pub const WORD: &str = "embeddings.word_embeddings.weight";
    pub const POSITION: &str = "embeddings.position_embeddings.weight";
    pub const TOKEN_TYPE: &str = "embeddings.token_type_embeddings.weight";
    pub const EMB_LN: &str = "embeddings.LayerNorm";
    pub const SHARED_POOLER: &str = "pooler.dense";

    pub fn layer(i: usize, part: &str) -> String {
        format!("encoder.layer.{i}.{part}")
    }
    pub fn exit(i: usize, part: &str) -> String {
        format!("exits.{i}.{part}")
    }
}

/// `checksums.json`: file name → sha256 (hex) of every other file of the checkpoint directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Checksums {
    files: BTreeMap<String, String>,
}

/// Records the sha256 of every file in `dir` (but itself) in its `checksums.json`. The trainer calls it last, on
/// the temporary directory of a checkpoint, before it is published.
pub fn write_checksums(dir: &Path) -> Result<(), TensorError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| TensorError::Io { path, source }
    };
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != CHECKSUMS_FILE && entry.file_type().map_err(io(&entry.path()))?.is_file() {
            let digest = crate::manifest::digest_file(&entry.path()).map_err(io(&entry.path()))?;
            files.insert(name, digest.sha256);
        }
    }
    let json = serde_json::to_vec_pretty(&Checksums { files }).expect("checksums serialize");
    let path = dir.join(CHECKSUMS_FILE);
    std::fs::write(&path, json).map_err(io(&path))
}

/// Checks every file `checksums.json` lists against its recorded sha256. `Ok(false)` when the directory has no
/// `checksums.json` (a checkpoint written before checksums, or a pretrained backbone): there is nothing to check.
pub fn verify_checksums(dir: &Path) -> Result<bool, TensorError> {
    let path = dir.join(CHECKSUMS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(TensorError::Io { path: path.display().to_string(), source }),
    };
    let invalid = |message: String| TensorError::Checksums { path: path.display().to_string(), message };
    let checksums: Checksums =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not a checksum list: {e}")))?;
    for (name, expected) in &checksums.files {
        if name.contains(['/', '\\']) || name == ".." {
            return Err(invalid(format!("names `{name}`, which is not a file of this directory")));
        }
        let file = dir.join(name);
        let found = crate::manifest::digest_file(&file)
            .map_err(|source| TensorError::Io { path: file.display().to_string(), source })?
            .sha256;
        if !found.eq_ignore_ascii_case(expected) {
            return Err(TensorError::Checksum { path: file.display().to_string(), expected: expected.clone(), found });
        }
    }
    Ok(true)
}

/// A safetensors file that could not be read, or a tensor of it that is not what the model needs.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a valid safetensors file: {message}")]
    Safetensors { path: String, message: String },
    #[error("{path}: missing tensor '{name}' (looked for with and without the 'bert.' prefix)")]
    Missing { path: String, name: String },
    #[error("{path}: tensor '{name}' has shape {found:?}, expected {expected:?}")]
    Shape { path: String, name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("{path}: tensor '{name}' has dtype {dtype}, expected a floating-point type (F32, F16, BF16 or F64)")]
    Dtype { path: String, name: String, dtype: String },
    /// A file of a checkpoint differs from the digest the trainer recorded in `checksums.json` when it wrote it: a
    /// damaged or altered file (safetensors has no checksum of its own, so a flipped weight would load silently).
    #[error("{path}: sha256 {found} does not match {CHECKSUMS_FILE}'s {expected} (damaged or altered file)")]
    Checksum { path: String, expected: String, found: String },
    /// `checksums.json` is not a checksum list, or names something that is not a file of the directory.
    #[error("{path}: {message}")]
    Checksums { path: String, message: String },
}

#[derive(Debug, Clone)]
struct Entry {
    /// The name in the file (with its `bert.` prefix, if it has one).
    file_name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range of the data in the file.
    start: usize,
    end: usize,
}

/// The tensors of a safetensors file, by model name (without the `bert.` prefix); values are converted to f32 when
/// asked for, one tensor at a time.
#[derive(Debug, Clone)]
pub struct TensorFile {
    path: String,
    bytes: Vec<u8>,
    entries: BTreeMap<String, Entry>,
    /// Every tensor name as written in the file, sorted.
    file_names: Vec<String>,
}

impl TensorFile {
    pub fn read(path: &Path) -> Result<Self, TensorError> {
        let display = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| TensorError::Io { path: display.clone(), source })?;
        Self::from_bytes(bytes, &display)
    }

    /// Parses the bytes of a safetensors file; `origin` names it in errors.
    pub fn from_bytes(bytes: Vec<u8>, origin: &str) -> Result<Self, TensorError> {
        let invalid = |e: safetensors::SafeTensorError| TensorError::Safetensors {
            path: origin.to_string(),
            message: e.to_string(),
        };
        // `deserialize` validates the header and the offsets; `read_metadata` gives them.
        SafeTensors::deserialize(&bytes).map_err(invalid)?;
        let (header_len, metadata) = SafeTensors::read_metadata(&bytes).map_err(invalid)?;
        let data_start = 8 + header_len;
        let mut file_names: Vec<String> = metadata.tensors().into_keys().collect();
        file_names.sort();
        let mut entries = BTreeMap::new();
        for file_name in &file_names {
            let info = metadata.info(file_name).expect("a name from the same metadata");
            let key = file_name.strip_prefix(HF_PREFIX).unwrap_or(file_name).to_string();
            if file_name.starts_with(HF_PREFIX) && file_names.binary_search(&key).is_ok() {
                continue;
            }
            let (start, end) = info.data_offsets;
            entries.insert(
                key,
                Entry {
                    file_name: file_name.clone(),
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: data_start + start,
                    end: data_start + end,
                },
            );
        }
        Ok(Self { path: origin.to_string(), bytes, entries, file_names })
    }

    /// The file, for error messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The tensor's shape, by model name.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// The tensor's name in the file (`bert.…` for a prefixed one).
    pub fn file_name(&self, name: &str) -> Option<&str> {
        self.entries.get(name).map(|e| e.file_name.as_str())
    }

    /// The model names of the file's tensors, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Every tensor name as written in the file (a name shadowed by its unprefixed twin included), sorted.
    pub fn file_names(&self) -> &[String] {
        &self.file_names
    }

    /// The tensor's shape and its values as f32, whatever its shape.
    pub fn values(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), TensorError> {
        let entry = self.entry(name)?;
        Ok((entry.shape.clone(), self.convert(entry)?))
    }

    /// The tensor's values as f32, after checking its shape is `expected`.
    pub fn get(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, TensorError> {
        let entry = self.entry(name)?;
        if entry.shape != expected {
            return Err(TensorError::Shape {
                path: self.path.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
                found: entry.shape.clone(),
            });
        }
        self.convert(entry)
    }

    fn entry(&self, name: &str) -> Result<&Entry, TensorError> {
        self.entries.get(name).ok_or_else(|| TensorError::Missing { path: self.path.clone(), name: name.to_string() })
    }

    fn convert(&self, entry: &Entry) -> Result<Vec<f32>, TensorError> {
        let data = &self.bytes[entry.start..entry.end];
        Ok(match entry.dtype {
            Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
                .collect(),
            // Integer buffers such as `embeddings.position_ids` are not weights.
            other => {
                return Err(TensorError::Dtype {
                    path: self.path.clone(),
                    name: entry.file_name.clone(),
                    dtype: format!("{other:?}"),
                })
            }
        })
    }
}

/// The activation of the feed-forward block, named by the config's `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, x·Φ(x) with erf (`gelu`), what BERT and MiniLM use.
    GeluErf,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

impl Activation {
    pub fn from_hidden_act(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    #[test]
    fn checksums_refuse_a_changed_byte_and_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!verify_checksums(dir.path()).unwrap(), "nothing to check without checksums.json");
        std::fs::write(dir.path().join(WEIGHTS_FILE), [1u8, 2, 3, 4]).unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), b"{}").unwrap();
        write_checksums(dir.path()).unwrap();
        assert!(verify_checksums(dir.path()).unwrap());
        std::fs::write(dir.path().join(WEIGHTS_FILE), [1u8, 2, 3, 5]).unwrap();
        let err = verify_checksums(dir.path()).unwrap_err();
        assert!(matches!(err, TensorError::Checksum { ref path, .. } if path.ends_with(WEIGHTS_FILE)), "{err}");
        std::fs::remove_file(dir.path().join(WEIGHTS_FILE)).unwrap();
        let err = verify_checksums(dir.path()).unwrap_err();
        assert!(matches!(err, TensorError::Io { ref path, .. } if path.ends_with(WEIGHTS_FILE)), "{err}");
        std::fs::write(dir.path().join(CHECKSUMS_FILE), br#"{"files": {"../x": "00"}}"#).unwrap();
        assert!(matches!(verify_checksums(dir.path()), Err(TensorError::Checksums { .. })));
    }

    fn file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> TensorFile {
        let views: Vec<(String, TensorView<'_>)> =
            tensors.iter().map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
        TensorFile::from_bytes(safetensors::tensor::serialize(views, None).unwrap(), "t.safetensors").unwrap()
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_every_float_dtype_and_strips_the_bert_prefix() {
        let half: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
        let bf: Vec<u8> = [0.5f32].iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect();
        let f64s: Vec<u8> = [3.0f64].iter().flat_map(|x| x.to_le_bytes()).collect();
        let f = file(&[
            ("bert.encoder.layer.0.output.dense.bias", Dtype::F16, vec![2], half),
            ("bert.pooler.dense.bias", Dtype::BF16, vec![1], bf.clone()),
            ("pooler.dense.bias", Dtype::F32, vec![1], f32_bytes(&[7.0])),
            ("exits.0.classifier.bias", Dtype::F64, vec![1], f64s),
            ("embeddings.position_ids", Dtype::I64, vec![1], vec![0; 8]),
        ]);
        assert_eq!(f.get("encoder.layer.0.output.dense.bias", &[2]).unwrap(), vec![1.5, -2.0]);
        assert_eq!(f.file_name("encoder.layer.0.output.dense.bias"), Some("bert.encoder.layer.0.output.dense.bias"));
        // Present both ways: the unprefixed tensor is read.
        assert_eq!(f.get("pooler.dense.bias", &[1]).unwrap(), vec![7.0]);
        assert_eq!(f.values("exits.0.classifier.bias").unwrap(), (vec![1], vec![3.0]));
        assert_eq!(f.file_names().len(), 5);
        assert_eq!(f.names().count(), 4);

        let err = f.get("pooler.dense.bias", &[2]).unwrap_err();
        assert!(matches!(&err, TensorError::Shape { found, .. } if found == &[1]), "{err}");
        assert!(matches!(f.get("nope", &[1]).unwrap_err(), TensorError::Missing { .. }));
        assert!(matches!(f.values("embeddings.position_ids").unwrap_err(), TensorError::Dtype { .. }));
        let err = TensorFile::from_bytes(vec![1, 2, 3], "x").unwrap_err();
        assert!(matches!(err, TensorError::Safetensors { .. }), "{err}");
    }

    #[test]
    fn activations_by_name() {
        assert_eq!(Activation::from_hidden_act("gelu"), Some(Activation::GeluErf));
        assert_eq!(Activation::from_hidden_act("gelu_pytorch_tanh"), Some(Activation::GeluTanh));
        assert_eq!(Activation::from_hidden_act("swish"), None);
    }
}
