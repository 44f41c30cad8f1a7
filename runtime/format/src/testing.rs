//! The test fixtures of the whole workspace, in one place: small real tokenizers and tiny model configurations.
//! Tests of every crate use these instead of the pretrained backbone, which they must not depend on. (Public, not
//! `cfg(test)`, so that other crates' tests and the tools' `random-checkpoint` reach them.)
//!
//! - [`test_tokenizer_json`]: a WordPiece tokenizer over a committed subset of the uncased BERT vocabulary, for
//!   models and packages.
//! - [`tiny_tokenizer_json`]: BERT's pipeline over 12 words, whose ids tests can spell out.
//! - [`tiny_config`]: a tiny COSEE model configuration over the test vocabulary.
//! - [`onnx_runtime_library`] and [`under_ci`]: for the tests that need ONNX Runtime, which skip loudly without it
//!   and fail under CI.
//!
//! The vocabulary (`runtime/format/data/test_vocab.txt`, made by `runtime/format/scripts/make_test_vocab.py`) keeps the special
//! tokens at ids 0–4, every single character with its `##` form, and the 2,500 pieces most used on SST-2, so real
//! SST-2 sentences tokenize into real word pieces and never into `[UNK]` for lack of a character.

use crate::config::{BertConfig, ExitConfig, ModelConfig};
use crate::{ExitSignal, Task};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The committed test vocabulary, one token per line, id = line number.
pub const TEST_VOCAB: &str = include_str!("../data/test_vocab.txt");

pub fn test_vocab() -> Vec<&'static str> {
    TEST_VOCAB.lines().collect()
}

pub fn test_vocab_len() -> usize {
    TEST_VOCAB.lines().count()
}

/// The `tokenizer.json` text of BERT's uncased pipeline over [`TEST_VOCAB`]: BertNormalizer (clean text, CJK
/// spacing, lower case, accents stripped), BertPreTokenizer, WordPiece with `##` continuations, and the
/// `[CLS] a [SEP] b [SEP]` post-processor with token type ids 0/1 — the same components as the backbone's file.
pub fn test_tokenizer_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> =
        test_vocab().iter().enumerate().map(|(i, t)| (t.to_string(), serde_json::Value::from(i))).collect();
    let id = |token: &str| test_vocab().iter().position(|t| *t == token).expect("special token in the test vocab");
    let added: Vec<serde_json::Value> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|t| {
            serde_json::json!({"id": id(t), "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                               "normalized": false, "special": true})
        })
        .collect();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", id("[SEP]")], "cls": ["[CLS]", id("[CLS]")]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    });
    serde_json::to_string_pretty(&json).expect("json values serialize")
}

/// The test tokenizer, parsed (which also proves the JSON is one the `tokenizers` crate accepts).
pub fn test_tokenizer() -> Result<tokenizers::Tokenizer, String> {
    tokenizers::Tokenizer::from_str(&test_tokenizer_json()).map_err(|e| e.to_string())
}

/// Writes the test tokenizer's `tokenizer.json`, after checking it parses.
pub fn write_test_tokenizer(path: &Path) -> Result<(), String> {
    test_tokenizer()?;
    std::fs::write(path, test_tokenizer_json()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A real BERT-style tokenizer.json over a tiny vocabulary, with the padding and truncation to 128 that the
/// pretrained MiniLM file carries (with `padding`), which the runtime's wrapper must override. Ids: `[PAD]` 0,
/// `[UNK]` 1, `[CLS]` 2, `[SEP]` 3, `[MASK]` 4, then the, movie, is, great, bad, a, ##s.
pub fn tiny_tokenizer_json(padding: bool) -> String {
    let words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "is", "great", "bad", "a", "##s"];
    let vocab: serde_json::Map<String, serde_json::Value> =
        words.iter().enumerate().map(|(i, w)| (w.to_string(), i.into())).collect();
    let added: Vec<serde_json::Value> = words[..5]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                               "normalized": false, "special": true})
        })
        .collect();
    let (truncation, pad) = if padding {
        (
            serde_json::json!({"direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0}),
            serde_json::json!({"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": null,
                               "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}),
        )
    } else {
        (serde_json::Value::Null, serde_json::Value::Null)
    };
    serde_json::json!({
        "version": "1.0", "truncation": truncation, "padding": pad, "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
    .to_string()
}

/// A tiny COSEE model configuration over the test vocabulary: `hidden` must be a multiple of `heads`; the
/// feed-forward size is 4 × hidden like BERT's.
pub fn tiny_config(num_layers: usize, hidden: usize, heads: usize, task: Task, signal: ExitSignal) -> ModelConfig {
    ModelConfig {
        bert: BertConfig {
            vocab_size: test_vocab_len(),
            hidden_size: hidden,
            num_hidden_layers: num_layers,
            num_attention_heads: heads,
            intermediate_size: 4 * hidden,
            max_position_embeddings: 128,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
            pad_token_id: 0,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
        },
        cosee: Some(ExitConfig::new(task, signal, 128)),
    }
}

/// The environment variable that names ONNX Runtime's shared library (the runtime's `ort` backend reads it).
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// ONNX Runtime's shared library for tests: the file `ORT_DYLIB_PATH` names when it is set, else the one
/// `scripts/setup-python.sh` installs into `<root>/.venv` (`lib/python3*/site-packages/onnxruntime/capi/`).
pub fn onnx_runtime_library(root: &Path) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(ORT_DYLIB_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let pythons = std::fs::read_dir(root.join(".venv/lib")).into_iter().flatten().flatten();
    pythons.into_iter().find_map(|python| {
        let capi = std::fs::read_dir(python.path().join("site-packages/onnxruntime/capi")).ok()?;
        let mut libraries = capi.flatten().map(|e| e.path());
        libraries.find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so.")))
    })
}

/// Whether the tests run under CI (`CI` set, and not to `false` or `0`): there a missing tool fails a test that
/// skips loudly on a developer's machine.
pub fn under_ci() -> bool {
    std::env::var("CI").map(|v| !v.is_empty() && v != "false" && v != "0").unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_real_sst2_text_into_word_pieces() {
        let tok = test_tokenizer().unwrap();
        let enc = tok.encode("It 's a charming and often affecting journey.", true).unwrap();
        let tokens = enc.get_tokens();
        assert_eq!(tokens.first().map(String::as_str), Some("[CLS]"));
        assert_eq!(tokens.last().map(String::as_str), Some("[SEP]"));
        assert!(tokens.iter().any(|t| t == "charming"), "{tokens:?}");
        assert!(!tokens.iter().any(|t| t == "[UNK]"), "{tokens:?}");
        // A word outside the vocabulary falls back to pieces, never to [UNK].
        let enc = tok.encode("zzyzxq", true).unwrap();
        assert!(!enc.get_tokens().iter().any(|t| t == "[UNK]"), "{:?}", enc.get_tokens());
        let pair = tok.encode(("first one", "second"), true).unwrap();
        assert_eq!(pair.get_type_ids().last(), Some(&1));
        assert_eq!(pair.get_type_ids()[0], 0);
    }

    #[test]
    fn special_ids_are_fixed() {
        let v = test_vocab();
        assert_eq!(&v[..5], ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]);
        assert!(test_vocab_len() > 4000);
    }
}
