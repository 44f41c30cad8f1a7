//! Shared fixtures: a tiny random BERT written as an HF-style "pretrained" directory, and the committed data.
#![allow(dead_code)]

use cosee_format::config::ModelConfig;
use cosee_format::glue::Task;
use cosee_format::signal::ExitSignal;
use cosee_trainer::model::checkpoint::named_variables;
use cosee_trainer::MultiExitBert;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::path::{Path, PathBuf};
use tch::Device;

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

pub fn tokenizer_path() -> PathBuf {
    data("tiny_tokenizer.json")
}

/// A BERT of `layers` layers, hidden 64, 4 heads, FFN 128, over the tiny test vocabulary: the workspace's
/// [`cosee_format::testing::tiny_config`] with this tokenizer's vocabulary, a narrower feed-forward layer and 64
/// tokens.
pub fn tiny_config(layers: usize, per_exit_pooler: bool) -> ModelConfig {
    let vocab = cosee_trainer::TextEncoder::from_file(&tokenizer_path(), 128).unwrap().vocab_size();
    let mut config = cosee_format::testing::tiny_config(layers, 64, 4, Task::Sst2, ExitSignal::Energy);
    config.bert.vocab_size = vocab;
    config.bert.intermediate_size = 128;
    let exit = config.cosee.as_mut().expect("the tiny config has exits");
    exit.per_exit_pooler = per_exit_pooler;
    exit.max_seq_len = 64;
    config
}

/// Writes a pretrained-style directory like a HF `BertModel` export: `bert.`-prefixed names, an int64
/// `embeddings.position_ids` buffer, a pooler, no exits, `config.json` without the `cosee` section, and the
/// tiny tokenizer. Returns the random model the encoder weights came from.
pub fn write_backbone(dir: &Path, layers: usize, seed: i64) -> MultiExitBert {
    tch::manual_seed(seed);
    let config = tiny_config(layers, false);
    let model = MultiExitBert::new(&config, Device::Cpu).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = named_variables(&model)
        .into_iter()
        .filter(|(name, _)| !name.starts_with("exits."))
        .map(|(name, t)| {
            let shape = t.size().iter().map(|&d| d as usize).collect();
            let values = Vec::<f32>::try_from(t.detach().contiguous().view(-1)).unwrap();
            (format!("bert.{name}"), shape, values.iter().flat_map(|v| v.to_le_bytes()).collect(), Dtype::F32)
        })
        .collect();
    let positions: Vec<u8> = (0..128i64).flat_map(|p| p.to_le_bytes()).collect();
    owned.push(("bert.embeddings.position_ids".into(), vec![1, 128], positions, Dtype::I64));
    let views: Vec<(String, TensorView<'_>)> =
        owned.iter().map(|(n, s, b, d)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(dir.join("model.safetensors"), safetensors::tensor::serialize(views, None).unwrap()).unwrap();
    let backbone_config = ModelConfig { cosee: None, ..config };
    std::fs::write(dir.join("config.json"), backbone_config.to_json()).unwrap();
    std::fs::copy(tokenizer_path(), dir.join("tokenizer.json")).unwrap();
    model
}
