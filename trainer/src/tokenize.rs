//! Tokenization with the checkpoint's own `tokenizer.json` (HF tokenizers), and batching.
//!
//! Whatever padding and truncation a `tokenizer.json` has baked in (the MiniLM backbone pads everything to
//! 128) is replaced: every input is truncated to `max_len` tokens with the longest-first strategy ([CLS] and
//! [SEP] included, both texts of a pair trimmed in turn), and padding happens per batch, to the longest input
//! in the batch ([`EncodedBatch::pad`]) or to a fixed length with `pad_to` (the reference pads to 128).

use crate::error::{io_err, Result, TrainerError};
use cosee_format::glue::Example;
use rand::seq::SliceRandom;
use rand::Rng;
use std::path::Path;
use tch::{Device, Tensor};
use tokenizers::{EncodeInput, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// The paper's maximum sequence length.
pub const DEFAULT_MAX_LEN: usize = 128;

/// One tokenized input, unpadded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub input_ids: Vec<i64>,
    pub token_type_ids: Vec<i64>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// A tokenizer with our truncation and no padding, plus the original JSON to copy into checkpoints.
pub struct TextEncoder {
    tokenizer: Tokenizer,
    json: Vec<u8>,
    max_len: usize,
    pad_id: i64,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder").field("max_len", &self.max_len).field("pad_id", &self.pad_id).finish()
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
        if max_len < 3 {
            return Err(err(format!("max length {max_len} leaves no room for [CLS] text [SEP]")));
        }
        let mut tokenizer = Tokenizer::from_bytes(&json).map_err(|e| err(e.to_string()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| err(e.to_string()))?;
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0) as i64;
        Ok(Self { tokenizer, json, max_len, pad_id })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    /// The `tokenizer.json` as loaded (with its original padding/truncation settings, which loaders override).
    pub fn json_bytes(&self) -> &[u8] {
        &self.json
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Tokenizes one text or one pair.
    pub fn encode(&self, text_a: &str, text_b: Option<&str>) -> Result<Encoded> {
        let input: EncodeInput<'_> = match text_b {
            Some(b) => (text_a, b).into(),
            None => text_a.into(),
        };
        let encoding = self
            .tokenizer
            .encode(input, true)
            .map_err(|e| TrainerError::Tokenizer { path: "input".into(), message: e.to_string() })?;
        Ok(Encoded {
            input_ids: encoding.get_ids().iter().map(|&i| i as i64).collect(),
            token_type_ids: encoding.get_type_ids().iter().map(|&i| i as i64).collect(),
        })
    }

    pub fn encode_example(&self, example: &Example) -> Result<Encoded> {
        self.encode(&example.text_a, example.text_b.as_deref())
    }

    /// Tokenizes many examples (in parallel inside the tokenizer), keeping their order.
    pub fn encode_all(&self, examples: &[Example]) -> Result<Vec<Encoded>> {
        let inputs: Vec<EncodeInput<'_>> = examples
            .iter()
            .map(|e| match &e.text_b {
                Some(b) => (e.text_a.as_str(), b.as_str()).into(),
                None => e.text_a.as_str().into(),
            })
            .collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| TrainerError::Tokenizer { path: "input".into(), message: e.to_string() })?;
        Ok(encodings
            .iter()
            .map(|enc| Encoded {
                input_ids: enc.get_ids().iter().map(|&i| i as i64).collect(),
                token_type_ids: enc.get_type_ids().iter().map(|&i| i as i64).collect(),
            })
            .collect())
    }
}

/// A padded batch as plain row-major numbers (`[batch, seq_len]` each), ready for tch or any other engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    pub input_ids: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub batch_size: usize,
    pub seq_len: usize,
}

impl EncodedBatch {
    /// Pads to the longest input of the batch, or to `pad_to` when given (inputs are never longer than the
    /// encoder's `max_len`; `pad_to` below the longest input is raised to it).
    pub fn pad(items: &[&Encoded], pad_id: i64, pad_to: Option<usize>) -> Self {
        let longest = items.iter().map(|e| e.len()).max().unwrap_or(0);
        let seq_len = pad_to.map_or(longest, |p| p.max(longest));
        let mut batch = Self {
            input_ids: Vec::with_capacity(items.len() * seq_len),
            token_type_ids: Vec::with_capacity(items.len() * seq_len),
            attention_mask: Vec::with_capacity(items.len() * seq_len),
            batch_size: items.len(),
            seq_len,
        };
        for e in items {
            let pad = seq_len - e.len();
            batch.input_ids.extend(e.input_ids.iter().copied().chain(std::iter::repeat_n(pad_id, pad)));
            batch.token_type_ids.extend(e.token_type_ids.iter().copied().chain(std::iter::repeat_n(0, pad)));
            batch.attention_mask.extend(std::iter::repeat_n(1, e.len()).chain(std::iter::repeat_n(0, pad)));
        }
        batch
    }

    /// Tokenizes and pads texts in one call: the helper for callers holding raw text.
    pub fn from_texts(encoder: &TextEncoder, texts: &[(&str, Option<&str>)], pad_to: Option<usize>) -> Result<Self> {
        let encoded = texts.iter().map(|(a, b)| encoder.encode(a, *b)).collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Encoded> = encoded.iter().collect();
        Ok(Self::pad(&refs, encoder.pad_id(), pad_to))
    }

    /// (input_ids, token_type_ids, attention_mask) as i64 tensors `[batch, seq_len]` on `device`.
    pub fn to_tensors(&self, device: Device) -> (Tensor, Tensor, Tensor) {
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

    fn enc(n: usize) -> Encoded {
        Encoded { input_ids: (1..=n as i64).collect(), token_type_ids: vec![0; n] }
    }

    #[test]
    fn pads_to_longest_or_fixed() {
        let (a, b) = (enc(3), enc(5));
        let batch = EncodedBatch::pad(&[&a, &b], 0, None);
        assert_eq!(batch.seq_len, 5);
        assert_eq!(&batch.input_ids[..5], &[1, 2, 3, 0, 0]);
        assert_eq!(&batch.attention_mask[..5], &[1, 1, 1, 0, 0]);
        assert_eq!(&batch.attention_mask[5..], &[1, 1, 1, 1, 1]);
        let fixed = EncodedBatch::pad(&[&a, &b], 9, Some(8));
        assert_eq!(fixed.seq_len, 8);
        assert_eq!(fixed.input_ids[7], 9);
        assert_eq!(fixed.input_ids.len(), 16);
    }

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
