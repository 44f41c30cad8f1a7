//! Checkpoint reading: the random writer's output reads back; every fault is refused naming its cause.

use cosee_runtime::config::{ExitConfig, ModelConfig};
use cosee_runtime::{ExitSignal, Task};
use cosee_tools::checkpoint::OpenOptions;
use cosee_tools::testing::tiny_config;
use cosee_tools::{write_random_checkpoint, Checkpoint, CheckpointError};
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::path::Path;

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn config() -> ModelConfig {
    tiny_config(2, 16, 2, Task::Mrpc, ExitSignal::Entropy)
}

/// Rewrites model.safetensors through `edit`, which gets every tensor as (shape, f32 values).
fn rewrite(dir: &Path, edit: impl FnOnce(&mut BTreeMap<String, (Vec<usize>, Vec<f32>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)> =
        file.iter().map(|(n, v)| (n.to_string(), (v.shape().to_vec(), f32s(v.data())))).collect();
    edit(&mut tensors);
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, (s, d))| {
            (n.clone(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), bytemuck::cast_slice(d)).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

#[test]
fn random_checkpoint_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    write_random_checkpoint(tmp.path(), &config(), 1).unwrap();
    let c = Checkpoint::open(tmp.path()).unwrap();
    assert_eq!(c.weights.num_layers(), 2);
    assert_eq!(c.weights.hidden_size(), 16);
    assert_eq!(c.weights.num_labels(), 2);
    assert_eq!(c.weights.layers[1].intermediate.out_features(), 64);
    assert_eq!(c.exit_config().task, Task::Mrpc);
    assert!(c.warnings.is_empty());
    // Same seed, same weights; another seed, other weights.
    let again = tempfile::tempdir().unwrap();
    write_random_checkpoint(again.path(), &config(), 1).unwrap();
    assert_eq!(Checkpoint::open(again.path()).unwrap().weights, c.weights);
    write_random_checkpoint(again.path(), &config(), 2).unwrap();
    assert_ne!(Checkpoint::open(again.path()).unwrap().weights, c.weights);
}

#[test]
fn per_exit_poolers_are_read_per_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.cosee.as_mut().unwrap().per_exit_pooler = true;
    write_random_checkpoint(tmp.path(), &cfg, 3).unwrap();
    let c = Checkpoint::open(tmp.path()).unwrap();
    assert_ne!(c.weights.exits[0].pooler, c.weights.exits[1].pooler);
}

#[test]
fn missing_files_are_named() {
    for file in ["model.safetensors", "config.json", "tokenizer.json"] {
        let tmp = tempfile::tempdir().unwrap();
        write_random_checkpoint(tmp.path(), &config(), 1).unwrap();
        std::fs::remove_file(tmp.path().join(file)).unwrap();
        let err = Checkpoint::open(tmp.path()).unwrap_err();
        assert!(matches!(err, CheckpointError::MissingFile { .. }), "{err}");
        assert!(err.to_string().contains(file), "{err}");
    }
}

#[test]
fn missing_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    write_random_checkpoint(tmp.path(), &config(), 1).unwrap();
    rewrite(tmp.path(), |t| {
        t.remove("encoder.layer.1.attention.self.key.bias");
    });
    let err = Checkpoint::open(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::MissingTensor { name, .. } if name == "encoder.layer.1.attention.self.key.bias"),
        "{err}"
    );
}

#[test]
fn wrong_shape_names_expected_and_found() {
    let tmp = tempfile::tempdir().unwrap();
    write_random_checkpoint(tmp.path(), &config(), 1).unwrap();
    rewrite(tmp.path(), |t| {
        // Stored as [in, out] instead of PyTorch's [out, in].
        t.insert("encoder.layer.0.intermediate.dense.weight".into(), (vec![16, 64], vec![0.0; 16 * 64]));
    });
    let err = Checkpoint::open(tmp.path()).unwrap_err();
    match &err {
        CheckpointError::Shape { name, expected, found, .. } => {
            assert_eq!(name, "encoder.layer.0.intermediate.dense.weight");
            assert_eq!(expected, &vec![64, 16]);
            assert_eq!(found, &vec![16, 64]);
        }
        other => panic!("expected a shape error, got {other}"),
    }
    assert!(err.to_string().contains("[64, 16]"), "{err}");
}

#[test]
fn corrupt_safetensors_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write_random_checkpoint(tmp.path(), &config(), 1).unwrap();
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = Checkpoint::open(tmp.path()).unwrap_err();
    assert!(matches!(err, CheckpointError::Safetensors { .. }), "{err}");
    std::fs::write(&path, b"garbage").unwrap();
    assert!(matches!(Checkpoint::open(tmp.path()).unwrap_err(), CheckpointError::Safetensors { .. }));
}

#[test]
fn backbone_needs_heads_and_gets_random_ones_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    write_random_checkpoint(tmp.path(), &config(), 1).unwrap();
    // A pretrained backbone: no cosee section, no exits, no pooler.
    let mut cfg = config();
    let heads: ExitConfig = cfg.cosee.take().unwrap();
    std::fs::write(tmp.path().join("config.json"), cfg.to_json()).unwrap();
    rewrite(tmp.path(), |t| t.retain(|name, _| !name.starts_with("exits.") && !name.starts_with("pooler.")));
    let err = Checkpoint::open(tmp.path()).unwrap_err();
    assert!(matches!(err, CheckpointError::NoExitConfig { .. }), "{err}");
    let opened = Checkpoint::open_with(tmp.path(), &OpenOptions { backbone_heads: Some(heads), seed: 4 }).unwrap();
    assert_eq!(opened.weights.exits.len(), 2);
    assert!(opened.warnings.iter().any(|w| w.contains("RANDOM")), "{:?}", opened.warnings);
    assert!(opened.warnings.iter().any(|w| w.contains("pooler")), "{:?}", opened.warnings);
}

#[test]
fn half_precision_tensors_are_widened() {
    let tmp = tempfile::tempdir().unwrap();
    write_random_checkpoint(tmp.path(), &config(), 1).unwrap();
    let f32_weights = Checkpoint::open(tmp.path()).unwrap().weights;
    // Store one tensor as f16: it reads back as its f16 rounding.
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in file.iter() {
        if name == "exits.0.classifier.bias" {
            let values: Vec<f32> = f32s(view.data());
            let halves: Vec<u8> = values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
            owned.push((name.to_string(), Dtype::F16, view.shape().to_vec(), halves));
        } else {
            owned.push((name.to_string(), Dtype::F32, view.shape().to_vec(), view.data().to_vec()));
        }
    }
    let views: Vec<_> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let c = Checkpoint::open(tmp.path()).unwrap();
    let expected: Vec<f32> =
        f32_weights.exits[0].classifier.bias.iter().map(|v| half::f16::from_f32(*v).to_f32()).collect();
    assert_eq!(c.weights.exits[0].classifier.bias, expected);
}

/// A Hugging Face `BertModel`-style file names the encoder `bert.embeddings…`, `bert.encoder…`, `bert.pooler…`. The
/// exporter reads it as the trainer does, and a backbone exported with random heads (`cosee-tools export --task`)
/// gives the same package as the unprefixed file.
#[test]
fn bert_prefixed_checkpoint_exports_like_the_unprefixed_one() {
    let plain = tempfile::tempdir().unwrap();
    write_random_checkpoint(plain.path(), &config(), 4).unwrap();
    let prefixed = tempfile::tempdir().unwrap();
    for file in ["model.safetensors", "config.json", "tokenizer.json"] {
        std::fs::copy(plain.path().join(file), prefixed.path().join(file)).unwrap();
    }
    rewrite(prefixed.path(), |tensors| {
        let names: Vec<String> = tensors.keys().filter(|n| !n.starts_with("exits.")).cloned().collect();
        for name in names {
            let tensor = tensors.remove(&name).unwrap();
            tensors.insert(format!("bert.{name}"), tensor);
        }
    });
    let c = Checkpoint::open(prefixed.path()).unwrap();
    assert_eq!(c.weights, Checkpoint::open(plain.path()).unwrap().weights);

    // The backbone case of the bug: no `cosee` section, every tensor prefixed, random heads from --task.
    let backbone = |dir: &Path| {
        let mut cfg = ModelConfig::read(&dir.join("config.json")).unwrap();
        cfg.cosee = None;
        std::fs::write(dir.join("config.json"), cfg.to_json()).unwrap();
    };
    backbone(plain.path());
    backbone(prefixed.path());
    rewrite(prefixed.path(), |tensors| tensors.retain(|n, _| !n.starts_with("exits.")));
    let heads = config().cosee;
    let options = cosee_tools::ExportOptions { backbone_heads: heads, self_check: true, ..Default::default() };
    let out = tempfile::tempdir().unwrap();
    let a = cosee_tools::export(plain.path(), &out.path().join("plain"), &options).unwrap();
    let b = cosee_tools::export(prefixed.path(), &out.path().join("prefixed"), &options).unwrap();
    assert_eq!(a.manifest.files, b.manifest.files, "the same weights must give the same graphs");
}
