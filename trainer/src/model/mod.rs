//! The multi-exit BERT classifier (paper §2.1, Figure 2): an encoder of M layers with one internal classifier
//! per layer. Exit m computes `classifier_m(dropout(tanh(pooler(x_m))))`, x_m the [CLS] vector `h_m[:, 0]` (the
//! reference code) or the masked mean of `h_m` (`pooling`); as in the reference code the pooler is shared by all
//! exits unless `per_exit_pooler` is set.
//!
//! Public API used by `cosee-tools verify`:
//! - [`MultiExitBert::load_checkpoint`] reads a checkpoint directory (weights + config),
//! - [`MultiExitBert::forward_logits`] runs an [`EncodedBatch`](crate::tokenize::EncodedBatch) through every
//!   exit and returns plain `Vec`s: `[exit][sample][class]`,
//! - [`crate::tokenize::TextEncoder`] tokenizes text exactly as training did.

pub mod bert;
pub mod checkpoint;

use crate::error::{Result, TrainerError};
use crate::tokenize::{BatchTensors, EncodedBatch};
use bert::{additive_mask, Activation, Embeddings, Layer, Pooler};
use cosee_format::config::{ExitConfig, ModelConfig};
use std::path::Path;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

pub use checkpoint::{LoadReport, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};

/// `exits.{i}`: an optional private pooler and the linear classifier.
#[derive(Debug)]
struct Exit {
    pooler: Option<Pooler>,
    classifier: nn::Linear,
}

/// BERT with an exit after every layer. Owns its `VarStore`, whose variable names are the checkpoint names.
#[derive(Debug)]
pub struct MultiExitBert {
    vs: nn::VarStore,
    config: ModelConfig,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    shared_pooler: Option<Pooler>,
    exits: Vec<Exit>,
    classifier_dropout: f64,
}

impl MultiExitBert {
    /// A randomly initialised model (HF's init: N(0, 0.02²) weights, zero biases, unit LayerNorm). The config
    /// must carry its `cosee` section (labels, pooler layout).
    pub fn new(config: &ModelConfig, device: Device) -> Result<Self> {
        config.validate().map_err(|m| TrainerError::Invalid(format!("model config: {m}")))?;
        let exit = exit_config(config)?;
        let b = &config.bert;
        let activation = Activation::from_hidden_act(&b.hidden_act)
            .ok_or_else(|| TrainerError::Invalid(format!("unsupported hidden_act '{}'", b.hidden_act)))?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let hidden = b.hidden_size as i64;
        let embeddings = Embeddings::new(&root / "embeddings", b);
        let layers =
            (0..b.num_hidden_layers).map(|i| Layer::new(&root / "encoder" / "layer" / i, b, activation)).collect();
        let shared_pooler = (!exit.per_exit_pooler).then(|| Pooler::new(&root / "pooler", hidden, exit.pooling));
        let labels = exit.label_names.len() as i64;
        let exits = (0..b.num_hidden_layers)
            .map(|i| {
                let p = &root / "exits" / i;
                Exit {
                    pooler: exit.per_exit_pooler.then(|| Pooler::new(&p / "pooler", hidden, exit.pooling)),
                    classifier: bert::linear(&p / "classifier", hidden, labels),
                }
            })
            .collect();
        Ok(Self {
            vs,
            config: config.clone(),
            embeddings,
            layers,
            shared_pooler,
            exits,
            classifier_dropout: b.hidden_dropout_prob,
        })
    }

    /// Reads a checkpoint directory written by [`checkpoint::save`]: `config.json` (with its `cosee` section)
    /// and `model.safetensors`. Every tensor must be present; nothing is left at random.
    pub fn load_checkpoint(dir: &Path, device: Device) -> Result<Self> {
        checkpoint::verify(dir)?;
        let config = ModelConfig::read(&dir.join(CONFIG_FILE))?;
        let model = Self::new(&config, device)?;
        checkpoint::load_weights(&model, &dir.join(WEIGHTS_FILE), checkpoint::Missing::Fail)?;
        Ok(model)
    }

    /// Starts a multi-exit model from a pretrained HF BERT directory (`config.json`, `model.safetensors`):
    /// encoder weights are required, pooler and exits that the file lacks start at random (see the report).
    pub fn from_pretrained(dir: &Path, exit: ExitConfig, device: Device) -> Result<(Self, LoadReport)> {
        let mut config = ModelConfig::read(&dir.join(CONFIG_FILE))?;
        config.cosee = Some(exit);
        let model = Self::new(&config, device)?;
        let report = checkpoint::load_weights(&model, &dir.join(WEIGHTS_FILE), checkpoint::Missing::InitHeads)?;
        Ok((model, report))
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn exit_config(&self) -> &ExitConfig {
        self.config.cosee.as_ref().expect("checked in MultiExitBert::new")
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn num_labels(&self) -> usize {
        self.exit_config().label_names.len()
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// Logits at every exit, `[batch, labels]` each, layer 1 first. Inputs are i64 `[batch, sequence]` on the
    /// model's device; `train` switches dropout on.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Vec<Tensor> {
        let mask = additive_mask(attention_mask);
        let token_mask = attention_mask.to_kind(Kind::Float);
        let mut hidden = self.embeddings.forward(input_ids, token_type_ids, train);
        let mut logits = Vec::with_capacity(self.layers.len());
        for (layer, exit) in self.layers.iter().zip(&self.exits) {
            hidden = layer.forward(&hidden, &mask, train);
            let pooled = self.pooler(exit).forward(&hidden, &token_mask).dropout(self.classifier_dropout, train);
            logits.push(exit.classifier.forward(&pooled));
        }
        logits
    }

    /// The encoder's hidden states `[batch, sequence, hidden]`: index 0 is the embeddings' output, index m the
    /// output of layer m. For checking an exported graph stage by stage.
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Vec<Tensor> {
        let mask = additive_mask(attention_mask);
        let mut states = vec![self.embeddings.forward(input_ids, token_type_ids, train)];
        for layer in &self.layers {
            let next = layer.forward(states.last().expect("starts with the embeddings"), &mask, train);
            states.push(next);
        }
        states
    }

    /// Projects every exit's classifier onto zero-sum logits: W ← W − mean over classes, b ← b − mean(b), so that
    /// each exit's logits sum to 0 for every input. Softmax, cross-entropy and the prediction are unchanged (they
    /// ignore a common shift); what goes is the common level of the logits, which the normalized energy reads
    /// (logsumexp = level + a function of the margins) and which cross-entropy never trains. Called after every
    /// optimizer step with `--centered-logits`, it keeps OSC from turning that free level into a second,
    /// weaker difficulty score (docs/results/osc-on-minilm.md). The saved weights are the centered ones, so the
    /// exported package computes exactly what was trained.
    pub fn center_classifiers(&self) {
        tch::no_grad(|| {
            for exit in &self.exits {
                let mut w = exit.classifier.ws.shallow_clone();
                let centered = &w - w.mean_dim(0i64, true, Kind::Float);
                w.copy_(&centered);
                if let Some(b) = &exit.classifier.bs {
                    let mut b = b.shallow_clone();
                    let centered = &b - b.mean(Kind::Float);
                    b.copy_(&centered);
                }
            }
        });
    }

    /// Data-dependent start of per-exit poolers: exit m's pooler becomes tanh((x_m − μ_m) / σ_m) per hidden unit,
    /// x_m what it pools from layer m, μ and σ measured on `batch` in evaluation mode; σ is floored at a tenth of
    /// its median so that near-constant units are not blown up.
    ///
    /// Why: a sentence-embedding backbone ships an untrained pooler (all-MiniLM-L6-v2: weights of std 0.009, zero
    /// bias) that shrinks the pooled vector to near-identical features for every input; a linear head behind it
    /// moves too slowly at fine-tuning rates and the shallow exits stay at chance.
    pub fn standardize_exit_poolers(&self, batch: &EncodedBatch) -> Result<()> {
        if self.shared_pooler.is_some() {
            return Err(TrainerError::Invalid(
                "standardized poolers need one pooler per exit (per_exit_pooler): a shared one cannot fit every layer"
                    .into(),
            ));
        }
        if batch.batch_size < 2 {
            return Err(TrainerError::Invalid("standardizing the poolers needs at least 2 examples".into()));
        }
        let (ids, types, mask) = batch.to_tensors(self.device());
        let token_mask = mask.to_kind(Kind::Float);
        let states = tch::no_grad(|| self.hidden_states(&ids, &types, &mask, false));
        for (exit, hidden) in self.exits.iter().zip(&states[1..]) {
            let pooler = self.pooler(exit);
            let x = tch::no_grad(|| pooler.input(hidden, &token_mask));
            let mean = x.mean_dim(0, false, Kind::Float);
            let std = x.std_dim(0, false, false);
            let floor = (std.median().double_value(&[]) * 0.1).max(1e-6);
            pooler.set_standardizing(&mean, &std.clamp_min(floor));
        }
        Ok(())
    }

    fn pooler<'a>(&'a self, exit: &'a Exit) -> &'a Pooler {
        exit.pooler.as_ref().or(self.shared_pooler.as_ref()).expect("a shared pooler or one per exit")
    }

    /// Evaluation-mode logits as plain numbers, `[exit][sample][class]`, for comparison with other engines.
    pub fn forward_logits(&self, batch: &EncodedBatch) -> Result<Vec<Vec<Vec<f32>>>> {
        let (ids, types, mask) = batch.to_tensors(self.device());
        let outputs = tch::no_grad(|| self.forward(&ids, &types, &mask, false));
        outputs.iter().map(tensor_to_rows).collect()
    }

    /// Writes this model as a checkpoint directory (weights, config, tokenizer) atomically.
    pub fn save_checkpoint(&self, dir: &Path, tokenizer_json: &[u8]) -> Result<()> {
        checkpoint::save(self, dir, tokenizer_json, &[])
    }
}

fn exit_config(config: &ModelConfig) -> Result<&ExitConfig> {
    config.cosee.as_ref().ok_or_else(|| {
        TrainerError::Invalid("the model config has no `cosee` section (task, labels, signal)".to_string())
    })
}

/// A 2-D float tensor → rows of f32.
pub fn tensor_to_rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    let (rows, cols) = t.size2()?;
    let flat: Vec<f32> = Vec::<f32>::try_from(t.to_kind(Kind::Float).to_device(Device::Cpu).contiguous().view(-1))?;
    Ok((0..rows as usize).map(|r| flat[r * cols as usize..(r + 1) * cols as usize].to_vec()).collect())
}
