//! Reads a trainer checkpoint directory (`model.safetensors`, `config.json`, `tokenizer.json`) into validated
//! [`ModelWeights`], and writes random ones for tests.
//!
//! Every tensor is checked against the shape the config implies before anything is exported, so a wrong
//! checkpoint fails here naming the tensor, not later as an opaque ONNX shape error.

use crate::weights::{
    names, Activation, EmbeddingWeights, ExitWeights, LayerNorm, LayerWeights, Linear, Matrix, ModelWeights,
};
use cosee_format::checkpoint::{TensorError, TensorFile};
use cosee_runtime::config::{ExitConfig, ModelConfig};
use cosee_runtime::json::JsonError;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

pub use cosee_format::checkpoint::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: missing {what} (a checkpoint directory holds model.safetensors, config.json and tokenizer.json)")]
    MissingFile { path: String, what: &'static str },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] JsonError),
    #[error("{path} is not a valid safetensors file: {message}")]
    Safetensors { path: String, message: String },
    #[error("{path}: missing tensor '{name}'")]
    MissingTensor { path: String, name: String },
    #[error("{path}: tensor '{name}' has shape {found:?}, expected {expected:?}")]
    Shape { path: String, name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("{path}: tensor '{name}' has dtype {found}, expected a float (F32, F16, BF16 or F64)")]
    Dtype { path: String, name: String, found: String },
    #[error(
        "{path} has no `cosee` section: this is a pretrained backbone, not a COSEE checkpoint; give the task \
         (cosee-tools export --task ...) to export it with random exit heads"
    )]
    NoExitConfig { path: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl From<TensorError> for CheckpointError {
    fn from(e: TensorError) -> Self {
        match e {
            TensorError::Io { path, source } => Self::Io { path, source },
            TensorError::Safetensors { path, message } => Self::Safetensors { path, message },
            TensorError::Missing { path, name } => Self::MissingTensor { path, name },
            TensorError::Shape { path, name, expected, found } => Self::Shape { path, name, expected, found },
            TensorError::Dtype { path, name, dtype } => Self::Dtype { path, name, found: dtype },
            TensorError::Checksum { path, expected, found } => Self::Invalid {
                path,
                message: format!("sha256 {found} does not match checksums.json's {expected} (damaged or altered file)"),
            },
            TensorError::Checksums { path, message } => Self::Invalid { path, message },
        }
    }
}

/// How to open a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// For a backbone whose config.json has no `cosee` section: the exit configuration to use, with random exit
    /// heads (and a random pooler when the backbone has none). Ignored when the config has its own section.
    pub backbone_heads: Option<ExitConfig>,
    /// Seed of those random heads.
    pub seed: u64,
}

/// A validated checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    /// The config, with its `cosee` section always present (filled from [`OpenOptions::backbone_heads`] for a
    /// backbone).
    pub config: ModelConfig,
    pub weights: ModelWeights,
    pub tokenizer_path: PathBuf,
    /// Things the user should know (random heads on a backbone).
    pub warnings: Vec<String>,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Self, CheckpointError> {
        Self::open_with(dir, &OpenOptions::default())
    }

    pub fn open_with(dir: &Path, options: &OpenOptions) -> Result<Self, CheckpointError> {
        let config_path = require(dir, CONFIG_FILE, "config.json")?;
        let weights_path = require(dir, WEIGHTS_FILE, "model.safetensors")?;
        let tokenizer_path = require(dir, TOKENIZER_FILE, "tokenizer.json")?;
        // A checkpoint the trainer wrote carries the sha256 of its files: a damaged weight is refused here rather
        // than exported.
        cosee_format::checkpoint::verify_checksums(dir)?;
        let mut config = ModelConfig::read(&config_path)?;
        let mut warnings = Vec::new();
        let random_heads = match (&config.cosee, &options.backbone_heads) {
            (Some(_), _) => false,
            (None, Some(heads)) => {
                config.cosee = Some(heads.clone());
                config
                    .validate()
                    .map_err(|message| CheckpointError::Invalid { path: config_path.display().to_string(), message })?;
                warnings.push(format!(
                    "{} has no `cosee` section: exporting the backbone with RANDOM exit heads for {} (useful for \
                     timing and format checks only; its predictions are meaningless)",
                    config_path.display(),
                    heads.task
                ));
                true
            }
            (None, None) => return Err(CheckpointError::NoExitConfig { path: config_path.display().to_string() }),
        };
        let store = TensorStore::read(&weights_path)?;
        let weights = store.model_weights(&config, random_heads.then_some(options.seed), &mut warnings)?;
        Ok(Self { dir: dir.to_path_buf(), config, weights, tokenizer_path, warnings })
    }

    pub fn exit_config(&self) -> &ExitConfig {
        self.config.cosee.as_ref().expect("Checkpoint::open always fills the cosee section")
    }
}

fn require(dir: &Path, file: &str, what: &'static str) -> Result<PathBuf, CheckpointError> {
    let path = dir.join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(CheckpointError::MissingFile { path: path.display().to_string(), what })
    }
}

/// The checkpoint's tensors, read by the workspace's one safetensors reader, as the exporter's matrices.
struct TensorStore {
    path: String,
    file: TensorFile,
}

impl TensorStore {
    fn read(path: &Path) -> Result<Self, CheckpointError> {
        let file = TensorFile::read(path)?;
        Ok(Self { path: file.path().to_string(), file })
    }

    fn has(&self, name: &str) -> bool {
        self.file.contains(name)
    }

    fn get(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, CheckpointError> {
        Ok(self.file.get(name, expected)?)
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix, CheckpointError> {
        Ok(Matrix::new(rows, cols, self.get(name, &[rows, cols])?))
    }

    fn linear(&self, prefix: &str, out: usize, inp: usize) -> Result<Linear, CheckpointError> {
        Ok(Linear {
            weight: self.matrix(&format!("{prefix}.weight"), out, inp)?,
            bias: self.get(&format!("{prefix}.bias"), &[out])?,
        })
    }

    fn layer_norm(&self, prefix: &str, size: usize, eps: f32) -> Result<LayerNorm, CheckpointError> {
        Ok(LayerNorm {
            weight: self.get(&format!("{prefix}.weight"), &[size])?,
            bias: self.get(&format!("{prefix}.bias"), &[size])?,
            eps,
        })
    }

    /// Validates and gathers every tensor the config implies. `random_heads` (a seed) replaces the exits (and a
    /// missing pooler) of a backbone by random ones.
    fn model_weights(
        &self,
        config: &ModelConfig,
        random_heads: Option<u64>,
        warnings: &mut Vec<String>,
    ) -> Result<ModelWeights, CheckpointError> {
        let b = &config.bert;
        let exit = config.cosee.as_ref().expect("caller fills the cosee section");
        let (h, f) = (b.hidden_size, b.intermediate_size);
        let eps = b.layer_norm_eps as f32;
        let activation = Activation::from_hidden_act(&b.hidden_act).ok_or_else(|| CheckpointError::Invalid {
            path: self.path.clone(),
            message: format!("hidden_act '{}' is not supported", b.hidden_act),
        })?;
        let embeddings = EmbeddingWeights {
            word: self.matrix(names::WORD, b.vocab_size, h)?,
            position: self.matrix(names::POSITION, b.max_position_embeddings, h)?,
            token_type: self.matrix(names::TOKEN_TYPE, b.type_vocab_size, h)?,
            layer_norm: self.layer_norm(names::EMB_LN, h, eps)?,
        };
        let mut layers = Vec::with_capacity(b.num_hidden_layers);
        for i in 0..b.num_hidden_layers {
            let p = |part: &str| names::layer(i, part);
            layers.push(LayerWeights {
                query: self.linear(&p("attention.self.query"), h, h)?,
                key: self.linear(&p("attention.self.key"), h, h)?,
                value: self.linear(&p("attention.self.value"), h, h)?,
                attention_output: self.linear(&p("attention.output.dense"), h, h)?,
                attention_layer_norm: self.layer_norm(&p("attention.output.LayerNorm"), h, eps)?,
                intermediate: self.linear(&p("intermediate.dense"), f, h)?,
                output: self.linear(&p("output.dense"), h, f)?,
                output_layer_norm: self.layer_norm(&p("output.LayerNorm"), h, eps)?,
            });
        }
        let labels = exit.label_names.len();
        let exits = match random_heads {
            None => (0..b.num_hidden_layers)
                .map(|i| {
                    let pooler = if exit.per_exit_pooler {
                        names::exit(i, "pooler.dense")
                    } else {
                        names::SHARED_POOLER.to_string()
                    };
                    Ok(ExitWeights {
                        pooling: exit.pooling,
                        pooler: self.linear(&pooler, h, h)?,
                        classifier: self.linear(&names::exit(i, "classifier"), labels, h)?,
                    })
                })
                .collect::<Result<Vec<_>, CheckpointError>>()?,
            Some(seed) => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let pooler_name = format!("{}.weight", names::SHARED_POOLER);
                let pooler = if self.has(&pooler_name) {
                    self.linear(names::SHARED_POOLER, h, h)?
                } else {
                    warnings.push(format!("{} has no pooler.dense: using a random pooler", self.path));
                    random_linear(&mut rng, h, h, 0.05)
                };
                (0..b.num_hidden_layers)
                    .map(|_| ExitWeights {
                        pooling: exit.pooling,
                        pooler: pooler.clone(),
                        classifier: random_linear(&mut rng, labels, h, 0.5),
                    })
                    .collect()
            }
        };
        Ok(ModelWeights { num_heads: b.num_attention_heads, activation, embeddings, layers, exits })
    }
}

fn random_values(rng: &mut impl Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0) * scale).collect()
}

fn random_linear(rng: &mut impl Rng, out: usize, inp: usize, scale: f32) -> Linear {
    Linear { weight: Matrix::new(out, inp, random_values(rng, out * inp, scale)), bias: random_values(rng, out, scale) }
}

/// Writes a complete, valid checkpoint with random weights to `dir` (created if needed): `model.safetensors`,
/// `config.json` and the small real WordPiece `tokenizer.json` of [`crate::testing`]. `config` must have its
/// `cosee` section and a `vocab_size` at least the test tokenizer's.
///
/// Weights are uniform so that activations are realistic (unit-scale hidden states after LayerNorm), with
/// classifier weights large enough that exits disagree and signals spread over their range: tests of exit
/// decisions need that, and a numerical check over tiny logits would prove little.
pub fn write_random_checkpoint(dir: &Path, config: &ModelConfig, seed: u64) -> Result<(), CheckpointError> {
    let config_display = dir.join(CONFIG_FILE).display().to_string();
    let invalid = |message: String| CheckpointError::Invalid { path: config_display.clone(), message };
    config.validate().map_err(invalid)?;
    let exit = config.cosee.as_ref().ok_or_else(|| CheckpointError::NoExitConfig { path: config_display.clone() })?;
    let vocab = crate::testing::test_vocab_len();
    if config.bert.vocab_size < vocab {
        return Err(invalid(format!(
            "vocab_size {} is smaller than the test tokenizer's vocabulary ({vocab})",
            config.bert.vocab_size
        )));
    }
    let write_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| CheckpointError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;

    let b = &config.bert;
    let (h, f) = (b.hidden_size, b.intermediate_size);
    let mut t = RandomTensors { rng: rand::rngs::StdRng::seed_from_u64(seed), tensors: Vec::new() };
    t.add(names::WORD.into(), vec![b.vocab_size, h], 0.5, 0.0);
    t.add(names::POSITION.into(), vec![b.max_position_embeddings, h], 0.5, 0.0);
    t.add(names::TOKEN_TYPE.into(), vec![b.type_vocab_size, h], 0.5, 0.0);
    t.layer_norm(names::EMB_LN, h);
    for i in 0..b.num_hidden_layers {
        let p = |part: &str| names::layer(i, part);
        for part in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"] {
            t.linear(&p(part), h, h);
        }
        t.layer_norm(&p("attention.output.LayerNorm"), h);
        t.linear(&p("intermediate.dense"), f, h);
        t.linear(&p("output.dense"), h, f);
        t.layer_norm(&p("output.LayerNorm"), h);
    }
    let labels = exit.label_names.len();
    if !exit.per_exit_pooler {
        t.linear(names::SHARED_POOLER, h, h);
    }
    for i in 0..b.num_hidden_layers {
        if exit.per_exit_pooler {
            t.linear(&names::exit(i, "pooler.dense"), h, h);
        }
        // Three times the unit-variance scale over tanh features in (−1, 1) gives logits of a few units.
        let scale = 3.0 * unit_scale(h);
        t.add(names::exit(i, "classifier.weight"), vec![labels, h], scale, 0.0);
        t.add(names::exit(i, "classifier.bias"), vec![labels], 0.5, 0.0);
    }
    let tensors = t.tensors;
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                shape.clone(),
                bytemuck::cast_slice(data),
            )
            .expect("shape and data agree by construction");
            (name.clone(), view)
        })
        .collect();
    let weights_path = dir.join(WEIGHTS_FILE);
    safetensors::serialize_to_file(views, None, &weights_path).map_err(|e| CheckpointError::Write {
        path: weights_path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let config_path = dir.join(CONFIG_FILE);
    std::fs::write(&config_path, config.to_json() + "\n").map_err(write_err(&config_path))?;
    let tokenizer_path = dir.join(TOKENIZER_FILE);
    crate::testing::write_test_tokenizer(&tokenizer_path).map_err(|e| CheckpointError::Write {
        path: tokenizer_path.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    Ok(())
}

/// Uniform(−a, a) with a = sqrt(3 / fan_in) keeps unit variance through a linear layer.
fn unit_scale(fan_in: usize) -> f32 {
    (3.0 / fan_in as f32).sqrt()
}

struct RandomTensors {
    rng: rand::rngs::StdRng,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl RandomTensors {
    fn add(&mut self, name: String, shape: Vec<usize>, scale: f32, offset: f32) {
        let n = shape.iter().product();
        let data = random_values(&mut self.rng, n, scale).into_iter().map(|v| v + offset).collect();
        self.tensors.push((name, shape, data));
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize) {
        self.add(format!("{prefix}.weight"), vec![out, inp], unit_scale(inp), 0.0);
        self.add(format!("{prefix}.bias"), vec![out], 0.1, 0.0);
    }

    fn layer_norm(&mut self, prefix: &str, size: usize) {
        self.add(format!("{prefix}.weight"), vec![size], 0.2, 1.0);
        self.add(format!("{prefix}.bias"), vec![size], 0.1, 0.0);
    }
}
