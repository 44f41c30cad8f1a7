//! The model configuration written by the trainer into a checkpoint's `config.json` and read by the tools.
//!
//! It is Hugging Face's BERT `config.json` (so a pretrained backbone's file reads as is) plus a `cosee` section
//! naming the task, the labels and the exit signal of a fine-tuned multi-exit model.

use crate::glue::Task;
use crate::json::{JsonError, JsonFile};
use crate::signal::ExitSignal;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The BERT encoder's shape, with Hugging Face's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub pad_token_id: i64,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
}

fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_hidden_act() -> String {
    "gelu".to_string()
}
fn default_dropout() -> f64 {
    0.1
}

/// What an exit's pooler reads from its layer's hidden states `[batch, tokens, hidden]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The first token, [CLS] (BERT's pooler; the paper's reference code).
    #[default]
    Cls,
    /// The mean over the input's tokens (padding excluded), as sentence-embedding backbones such as
    /// all-MiniLM-L6-v2 were trained: their shallow layers' [CLS] barely varies between inputs. The exported exit
    /// graph averages every position it is given; the runtime never pads, so that is the same mean.
    Mean,
}

impl std::str::FromStr for Pooling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cls" => Ok(Self::Cls),
            "mean" => Ok(Self::Mean),
            other => Err(format!("unknown pooling '{other}' (cls, mean)")),
        }
    }
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cls => "cls",
            Self::Mean => "mean",
        })
    }
}

/// What makes a BERT a COSEE multi-exit classifier: one linear exit per layer over a pooled hidden state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitConfig {
    pub task: Task,
    pub label_names: Vec<String>,
    /// The signal the model was trained with (SWM simulation and OSC) and that the package exits on by default.
    pub signal: ExitSignal,
    /// One pooler per exit (`exits.{i}.pooler.dense`) instead of the shared `pooler.dense` of the reference code.
    #[serde(default)]
    pub per_exit_pooler: bool,
    #[serde(default)]
    pub pooling: Pooling,
    /// Longest input in tokens, [CLS] and [SEP] included.
    pub max_seq_len: usize,
}

impl ExitConfig {
    /// The exit heads of the reference code for `task`: its label names, one shared pooler over [CLS].
    pub fn new(task: Task, signal: ExitSignal, max_seq_len: usize) -> Self {
        Self {
            task,
            label_names: task.label_names().iter().map(|s| s.to_string()).collect(),
            signal,
            per_exit_pooler: false,
            pooling: Pooling::Cls,
            max_seq_len,
        }
    }
}

/// A checkpoint's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    #[serde(flatten)]
    pub bert: BertConfig,
    /// Absent in a pretrained backbone's config; present in every checkpoint the trainer writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosee: Option<ExitConfig>,
}

/// How a checkpoint's `config.json` is read.
pub const CONFIG_JSON: JsonFile = JsonFile::plain("a valid BERT config.json");

impl ModelConfig {
    /// Reads and validates a `config.json`.
    pub fn read(path: &Path) -> Result<Self, JsonError> {
        let config: ModelConfig = CONFIG_JSON.read(path)?;
        config.validate().map_err(|message| JsonError::Invalid { path: path.display().to_string(), message })?;
        Ok(config)
    }

    pub fn to_json(&self) -> String {
        crate::json::pretty(self)
    }

    pub fn validate(&self) -> Result<(), String> {
        let b = &self.bert;
        if b.hidden_size == 0 || b.num_attention_heads == 0 || !b.hidden_size.is_multiple_of(b.num_attention_heads) {
            return Err(format!(
                "hidden_size {} must be a positive multiple of num_attention_heads {}",
                b.hidden_size, b.num_attention_heads
            ));
        }
        if b.num_hidden_layers == 0 {
            return Err("num_hidden_layers must be at least 1".into());
        }
        if crate::checkpoint::Activation::from_hidden_act(&b.hidden_act).is_none() {
            return Err(format!("hidden_act '{}' is not supported (gelu, gelu_new, relu)", b.hidden_act));
        }
        if let Some(exit) = &self.cosee {
            if exit.label_names.len() < 2 {
                return Err(format!("a classifier needs at least 2 labels, found {}", exit.label_names.len()));
            }
            if exit.max_seq_len < 3 || exit.max_seq_len > b.max_position_embeddings {
                return Err(format!(
                    "max_seq_len {} must be in 3..={} (max_position_embeddings)",
                    exit.max_seq_len, b.max_position_embeddings
                ));
            }
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.bert.hidden_size / self.bert.num_attention_heads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM: &str = r#"{"architectures":["BertModel"],"attention_probs_dropout_prob":0.1,"hidden_act":"gelu",
        "hidden_dropout_prob":0.1,"hidden_size":384,"initializer_range":0.02,"intermediate_size":1536,
        "layer_norm_eps":1e-12,"max_position_embeddings":512,"model_type":"bert","num_attention_heads":12,
        "num_hidden_layers":6,"pad_token_id":0,"type_vocab_size":2,"vocab_size":30522}"#;

    #[test]
    fn reads_a_pretrained_backbone_config() {
        let c: ModelConfig = serde_json::from_str(MINILM).unwrap();
        assert_eq!(c.bert.hidden_size, 384);
        assert_eq!(c.head_dim(), 32);
        assert!(c.cosee.is_none());
        c.validate().unwrap();
    }

    #[test]
    fn cosee_section_round_trips() {
        let mut c: ModelConfig = serde_json::from_str(MINILM).unwrap();
        c.cosee = Some(ExitConfig {
            task: Task::Sst2,
            label_names: vec!["negative".into(), "positive".into()],
            signal: ExitSignal::Energy,
            per_exit_pooler: false,
            pooling: Pooling::Mean,
            max_seq_len: 128,
        });
        assert!(c.to_json().contains(r#""pooling": "mean""#));
        let back: ModelConfig = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn rejects_bad_shapes() {
        let mut c: ModelConfig = serde_json::from_str(MINILM).unwrap();
        c.bert.num_attention_heads = 5;
        assert!(c.validate().unwrap_err().contains("multiple"));
    }
}
