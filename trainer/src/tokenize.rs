//! Tokenization for training and evaluation: the runtime's own tokenizer ([`TextTokenizer`], from cosee-format)
//! over the checkpoint's `tokenizer.json`, so that the trainer sees exactly the token ids the runtime will; and
//! batching on top of it.
//!
//! Whatever padding and truncation a `tokenizer.json` has baked in (the MiniLM backbone pads everything to
//! 128) is replaced: every input is truncated to `max_len` tokens with the longest-first strategy ([CLS] and
//! [SEP] included, both texts of a pair trimmed in turn), and padding happens per batch, to the longest input
//! in the batch ([`EncodedBatch::pad`]) or to a fixed length with `pad_to` (the reference pads to 128).

use crate::error::{io_err, Result, TrainerError};
use cosee_format::glue::Example;
use cosee_format::tokenize::{parse_tokenizer_json, Input, TextTokenizer};
pub use cosee_format::tokenize::{Encoded, EncodedBatch};
use rand::seq::SliceRandom;
use rand::Rng;
use std::path::Path;
use tch::{Device, Tensor};

/// The paper's maximum sequence length.
pub const DEFAULT_MAX_LEN: usize = 128;

/// The tokenizer of a checkpoint, taking single texts and pairs alike, plus the original JSON to copy into
/// checkpoints and the padding id.
pub struct TextEncoder {
    tokenizer: TextTokenizer,
    json: Vec<u8>,
    pad_id: i64,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder").field("max_len", &self.max_len()).field("pad_id", &self.pad_id).finish()
    }
}

impl TextEncoder {
    /// Loads `tokenizer.json` and truncates to `max_len` tokens (special tokens included).
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let json = std::fs::read(path).map_err(io_err(path))?;
        Self::from_bytes(json, max_len, &path.display().to_string())
    }

    /// The tokenizer of a checkpoint directory, truncating to the checkpoint's `max_seq_len` (from the `cosee`
    /// section of its `config.json`), exactly as the model was trained and evaluated.
    pub fn for_checkpoint(dir: &Path) -> Result<Self> {
        let config = cosee_format::config::ModelConfig::read(&dir.join(crate::model::CONFIG_FILE))?;
        let max_len = config.cosee.map_or(DEFAULT_MAX_LEN, |c| c.max_seq_len);
        Self::from_file(&dir.join(crate::model::TOKENIZER_FILE), max_len)
    }

    /// Like [`TextEncoder::from_file`]; `origin` names the source in errors.
    pub fn from_bytes(json: Vec<u8>, max_len: usize, origin: &str) -> Result<Self> {
        let err = |message: String| TrainerError::Tokenizer { path: origin.to_string(), message };
        let inner = parse_tokenizer_json(&json).map_err(err)?;
        let tokenizer = TextTokenizer::for_any_input(inner, max_len).map_err(err)?;
        let pad_id = tokenizer.token_id("[PAD]").unwrap_or(0) as i64;
        Ok(Self { tokenizer, json, pad_id })
    }

    pub fn max_len(&self) -> usize {
        self.tokenizer.max_len()
    }

    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    /// The `tokenizer.json` as loaded (with its original padding/truncation settings, which loaders override).
    pub fn json_bytes(&self) -> &[u8] {
        &self.json
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.vocab_size()
    }

    /// Tokenizes one text or one pair.
    pub fn encode(&self, text_a: &str, text_b: Option<&str>) -> Result<Encoded> {
        let input = Input { text: text_a, pair: text_b };
        self.tokenizer
            .encode(&input)
            .map_err(|e| TrainerError::Tokenizer { path: "input".into(), message: e.to_string() })
    }

    pub fn encode_example(&self, example: &Example) -> Result<Encoded> {
        self.encode(&example.text_a, example.text_b.as_deref())
    }

    /// Tokenizes many examples, keeping their order; an error names the example (1-based).
    pub fn encode_all(&self, examples: &[Example]) -> Result<Vec<Encoded>> {
        examples
            .iter()
            .enumerate()
            .map(|(i, e)| {
                self.tokenizer.encode(&Input::from(e)).map_err(|err| TrainerError::Tokenizer {
                    path: format!("example {}", i + 1),
                    message: err.to_string(),
                })
            })
            .collect()
    }
}

/// What the trainer adds to the shared [`EncodedBatch`]: building one from raw text, and tch tensors of it.
pub trait BatchTensors: Sized {
    /// Tokenizes and pads texts in one call: the helper for callers holding raw text.
    fn from_texts(encoder: &TextEncoder, texts: &[(&str, Option<&str>)], pad_to: Option<usize>) -> Result<Self>;

    /// (input_ids, token_type_ids, attention_mask) as i64 tensors `[batch, seq_len]` on `device`.
    fn to_tensors(&self, device: Device) -> (Tensor, Tensor, Tensor);
}

impl BatchTensors for EncodedBatch {
    fn from_texts(encoder: &TextEncoder, texts: &[(&str, Option<&str>)], pad_to: Option<usize>) -> Result<Self> {
        let encoded = texts.iter().map(|(a, b)| encoder.encode(a, *b)).collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Encoded> = encoded.iter().collect();
        Ok(Self::pad(&refs, encoder.pad_id(), pad_to))
    }

    fn to_tensors(&self, device: Device) -> (Tensor, Tensor, Tensor) {
        let shape = [self.batch_size as i64, self.seq_len as i64];
        let make = |v: &[i64]| Tensor::from_slice(v).view(shape).to_device(device);
        (make(&self.input_ids), make(&self.token_type_ids), make(&self.attention_mask))
    }
}

/// Training batches with length bucketing: the examples are shuffled, cut into pools of `POOL` batches,
/// each pool is sorted by length and cut into batches, and the batch order is shuffled again. Batches then
/// hold inputs of similar length (little padding) while every epoch still sees a fresh random order.
pub fn bucketed_batches(lengths: &[usize], batch_size: usize, rng: &mut impl Rng) -> Vec<Vec<usize>> {
    const POOL: usize = 50;
    let batch_size = batch_size.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(rng);
    let mut batches: Vec<Vec<usize>> = Vec::with_capacity(lengths.len().div_ceil(batch_size));
    for pool in order.chunks(batch_size * POOL) {
        let mut pool = pool.to_vec();
        // Stable sort on the shuffled order: ties stay random.
        pool.sort_by_key(|&i| lengths[i]);
        batches.extend(pool.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(rng);
    batches
}

/// Evaluation batches: indices sorted by length (least padding), cut into batches. Callers put results back
/// in input order by index.
pub fn sorted_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    order.chunks(batch_size.max(1)).map(<[usize]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn bucketing_covers_every_index_once_with_similar_lengths() {
        let lengths: Vec<usize> = (0..800).map(|i| (i * 7919) % 120 + 3).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let batches = bucketed_batches(&lengths, 16, &mut rng);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..800).collect::<Vec<_>>());
        // 800 examples fill exactly one pool of 50 batches: within each batch the spread is small.
        let max_spread = batches.iter().map(|b| {
            let l: Vec<usize> = b.iter().map(|&i| lengths[i]).collect();
            l.iter().max().unwrap() - l.iter().min().unwrap()
        });
        assert!(max_spread.max().unwrap() <= 4);
        // Same seed, same batches; another seed, another order.
        let again = bucketed_batches(&lengths, 16, &mut rand::rngs::StdRng::seed_from_u64(1));
        assert_eq!(batches, again);
        let other = bucketed_batches(&lengths, 16, &mut rand::rngs::StdRng::seed_from_u64(2));
        assert_ne!(batches, other);
    }
}
