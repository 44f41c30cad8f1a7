//! Reading weights into a [`MultiExitBert`] and writing checkpoint directories.
//!
//! A checkpoint is a directory of `model.safetensors` (all f32, HF BERT names without `bert.`, plus
//! `exits.{i}.*`), `config.json` (`ModelConfig` with its `cosee` section) and `tokenizer.json`, plus whatever
//! trainer-private files the caller adds. It is written into a temporary sibling directory and renamed into
//! place, so a reader (or a resumed run after a crash) never sees half a checkpoint.

use super::MultiExitBert;
use crate::error::{io_err, Result, TrainerError};
use cosee_format::checkpoint::{TensorError, TensorFile};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub use cosee_format::checkpoint::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};

/// What to do with model variables the file lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Every variable must be in the file (loading our own checkpoints).
    Fail,
    /// Pooler and exit heads may be missing (a pretrained backbone): they keep their random init. Encoder and
    /// embedding weights are still required.
    InitHeads,
}

/// What loading a pretrained directory did, for the caller to show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Model variables read from the file.
    pub loaded: Vec<String>,
    /// Model variables absent from the file, left at their random init (N(0, 0.02²), zero bias).
    pub initialized: Vec<String>,
    /// (model variable, file tensor): per-exit poolers started from the backbone's shared pooler.
    pub copied: Vec<(String, String)>,
    /// File tensors the model does not use (buffers such as `embeddings.position_ids`, other heads).
    pub ignored: Vec<String>,
}

/// Reads `path` into the model's variables, by name, accepting an optional `bert.` prefix in the file (the
/// workspace's one safetensors reader, [`TensorFile`]).
pub fn load_weights(model: &MultiExitBert, path: &Path, missing: Missing) -> Result<LoadReport> {
    let file = TensorFile::read(path).map_err(tensor_error)?;
    let display = file.path().to_string();
    let mut report = LoadReport::default();
    let mut used: Vec<String> = Vec::new();
    let mut variables: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, mut var) in variables {
        let source = if file.contains(&name) {
            Some(name.clone())
        } else {
            shared_pooler_name(&name).filter(|shared| file.contains(shared))
        };
        match source {
            Some(source) => {
                let file_name = file.file_name(&source).expect("a tensor the file contains").to_string();
                let value = to_tensor(file.values(&source).map_err(tensor_error)?);
                if value.size() != var.size() {
                    return Err(TrainerError::Shape {
                        path: display,
                        name: file_name,
                        expected: var.size(),
                        found: value.size(),
                    });
                }
                tch::no_grad(|| var.f_copy_(&value))?;
                if source == name {
                    report.loaded.push(name);
                } else {
                    report.copied.push((name, file_name.clone()));
                }
                used.push(file_name);
            }
            None if missing == Missing::InitHeads && is_head(&name) => report.initialized.push(name),
            None => return Err(TrainerError::MissingWeight { path: display, name }),
        }
    }
    report.ignored = file.file_names().iter().filter(|n| !used.contains(n)).cloned().collect();
    Ok(report)
}

/// The trainer's error for a tensor-file fault.
fn tensor_error(e: TensorError) -> TrainerError {
    match e {
        TensorError::Io { path, source } => TrainerError::Io { path, source },
        TensorError::Safetensors { path, message } => TrainerError::Safetensors { path, message },
        TensorError::Missing { path, name } => TrainerError::MissingWeight { path, name },
        TensorError::Shape { path, name, expected, found } => TrainerError::Shape {
            path,
            name,
            expected: expected.iter().map(|&d| d as i64).collect(),
            found: found.iter().map(|&d| d as i64).collect(),
        },
        TensorError::Dtype { path, name, dtype } => TrainerError::Dtype { path, name, dtype },
        e @ (TensorError::Checksum { .. } | TensorError::Checksums { .. }) => TrainerError::Invalid(e.to_string()),
    }
}

/// An f32 tensor of `shape` on the CPU.
fn to_tensor((shape, values): (Vec<usize>, Vec<f32>)) -> Tensor {
    let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Tensor::from_slice(&values).reshape(&shape)
}

/// Pooler and exit tensors, which a pretrained backbone may lack or carry untrained.
fn is_head(name: &str) -> bool {
    name.starts_with("pooler.") || name.starts_with("exits.")
}

/// `exits.{i}.pooler.dense.weight` → `pooler.dense.weight`, to start private poolers from the shared one.
fn shared_pooler_name(name: &str) -> Option<String> {
    let rest = name.strip_prefix("exits.")?;
    let (_, tail) = rest.split_once('.')?;
    tail.starts_with("pooler.").then(|| tail.to_string())
}

/// Serializes named tensors as one f32 safetensors file, names sorted.
pub fn serialize_tensors(named: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let mut data: BTreeMap<&str, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (name, tensor) in named {
        let cpu = tensor.detach().to_kind(Kind::Float).to_device(Device::Cpu).contiguous();
        let shape: Vec<usize> = cpu.size().iter().map(|&d| d as usize).collect();
        let values = Vec::<f32>::try_from(cpu.view(-1))?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        data.insert(name, (shape, bytes));
    }
    let views = data
        .iter()
        .map(|(name, (shape, bytes))| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.to_string(), v))
                .map_err(|e| TrainerError::Invalid(format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| TrainerError::Invalid(e.to_string()))
}

/// Reads an f32 safetensors file written by [`serialize_tensors`] into a name → tensor map on `device`.
pub fn read_tensors(path: &Path, device: Device) -> Result<HashMap<String, Tensor>> {
    let file = TensorFile::read(path).map_err(tensor_error)?;
    file.names()
        .map(|name| Ok((name.to_string(), to_tensor(file.values(name).map_err(tensor_error)?).to_device(device))))
        .collect()
}

/// The model's variables with their checkpoint names, sorted.
pub fn named_variables(model: &MultiExitBert) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Writes a full checkpoint (weights, config, tokenizer, and `extra` files) atomically into `dir`.
pub fn save(model: &MultiExitBert, dir: &Path, tokenizer_json: &[u8], extra: &[(&str, Vec<u8>)]) -> Result<()> {
    let weights = serialize_tensors(&named_variables(model))?;
    let config = model.config().to_json();
    write_dir_atomically(dir, |tmp| {
        write_synced(&tmp.join(WEIGHTS_FILE), &weights)?;
        write_synced(&tmp.join(CONFIG_FILE), config.as_bytes())?;
        write_synced(&tmp.join(TOKENIZER_FILE), tokenizer_json)?;
        for (name, bytes) in extra {
            write_synced(&tmp.join(name), bytes)?;
        }
        // Last, over all of the above: safetensors has no checksum, so a damaged weight would load silently.
        cosee_format::checkpoint::write_checksums(tmp).map_err(tensor_error)
    })
}

/// Refuses a checkpoint directory whose files differ from the checksums written with them (none to check in a
/// directory written without them, such as a pretrained backbone).
pub fn verify(dir: &Path) -> Result<()> {
    cosee_format::checkpoint::verify_checksums(dir).map(|_| ()).map_err(tensor_error)
}

/// Writes a file and flushes it to disk before returning, so that a rename after it publishes whole data.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = fs::File::create(path).map_err(io_err(path))?;
    file.write_all(bytes).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

/// Writes a file through a temporary sibling and a rename.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = sibling(path, "tmp");
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Fills a fresh temporary sibling of `dir` with `fill`, then swaps it in for `dir`. An existing `dir` is
/// moved aside first and removed only after the new one is in place.
pub fn write_dir_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = sibling(dir, "tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        let old = sibling(dir, "old");
        if old.exists() {
            fs::remove_dir_all(&old).map_err(io_err(&old))?;
        }
        fs::rename(dir, &old).map_err(io_err(dir))?;
        fs::rename(&tmp, dir).map_err(io_err(dir))?;
        fs::remove_dir_all(&old).map_err(io_err(&old))?;
    } else {
        fs::rename(&tmp, dir).map_err(io_err(dir))?;
    }
    Ok(())
}

/// `.name.{tag}-{pid}` next to `path`.
fn sibling(path: &Path, tag: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "checkpoint".into());
    path.with_file_name(format!(".{name}.{tag}-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_pooler_names() {
        assert_eq!(shared_pooler_name("exits.3.pooler.dense.weight").as_deref(), Some("pooler.dense.weight"));
        assert_eq!(shared_pooler_name("exits.3.classifier.weight"), None);
        assert_eq!(shared_pooler_name("pooler.dense.weight"), None);
        assert!(is_head("exits.0.classifier.bias") && is_head("pooler.dense.bias"));
        assert!(!is_head("encoder.layer.0.output.dense.bias"));
    }

    #[test]
    fn atomic_dir_replaces_and_cleans_up() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        write_dir_atomically(&dir, |tmp| write_synced(&tmp.join("a"), b"1")).unwrap();
        write_dir_atomically(&dir, |tmp| write_synced(&tmp.join("b"), b"2")).unwrap();
        assert!(!dir.join("a").exists());
        assert_eq!(fs::read(dir.join("b")).unwrap(), b"2");
        // A failing fill leaves the previous directory untouched and no temporary behind.
        let err = write_dir_atomically(&dir, |_| Err(TrainerError::Invalid("boom".into())));
        assert!(err.is_err());
        assert_eq!(fs::read(dir.join("b")).unwrap(), b"2");
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn tensors_round_trip_through_safetensors() {
        let t = Tensor::from_slice(&[1.0f32, -2.5, 3.25, 100.0, 0.0, -0.0]).view([2, 3]);
        let bytes = serialize_tensors(&[("a.weight".to_string(), t.shallow_clone())]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        fs::write(&path, bytes).unwrap();
        let back = read_tensors(&path, Device::Cpu).unwrap();
        assert_eq!(back["a.weight"].size(), vec![2, 3]);
        assert!(back["a.weight"].equal(&t));
    }
}
