//! Text → token ids for one input, batch size 1, never padded.
//!
//! The package's `tokenizer.json` is used for its normalizer, pre-tokenizer, vocabulary and `[CLS] a [SEP] b
//! [SEP]` template only: any padding or truncation baked into it is removed at load (the pretrained MiniLM file
//! pads every input to 128 tokens, which would make every layer cost as much as the longest input). Truncation to
//! the manifest's `max_seq_len` is done here, longest-first for pairs, exactly as `tokenizers` would do it.
//!
//! Very long text is cut *before* tokenizing, so that a 100,000-character input costs about as much as one of a few
//! thousand characters: a segment is cut at a whitespace boundary after `CHARS_PER_TOKEN × max_seq_len` characters,
//! and the cut is kept only if the prefix alone already yields at least `max_seq_len` tokens. Truncation keeps fewer
//! tokens than that, and the pre-tokenizer splits on whitespace, so the kept tokens are exactly those of the whole
//! text; when the prefix yields fewer (text made of characters the normalizer drops, say), the budget grows until
//! the prefix suffices or the whole segment is used.

use crate::error::InputError;
use tokenizers::utils::truncation::{truncate_encodings, TruncationDirection, TruncationParams, TruncationStrategy};
use tokenizers::{Encoding, PostProcessor, Tokenizer};

/// Characters of text read per token of `max_seq_len` before the first cut: English averages 4–5 characters per
/// word piece, so 16 leaves a wide margin and a retry is rare.
const CHARS_PER_TOKEN: usize = 16;

/// One input: a text, or a sentence pair for pair tasks (MRPC, RTE, QNLI…).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input<'a> {
    pub text: &'a str,
    pub pair: Option<&'a str>,
}

impl<'a> Input<'a> {
    pub fn single(text: &'a str) -> Self {
        Self { text, pair: None }
    }

    pub fn pair(first: &'a str, second: &'a str) -> Self {
        Self { text: first, pair: Some(second) }
    }

    /// One line of plain input: for a pair task, `first<TAB>second`; for a single-text task the whole line (a TAB
    /// is just whitespace there). A trailing `\r` is dropped.
    pub fn from_line(line: &'a str, pair_task: bool) -> Self {
        let line = line.strip_suffix('\r').unwrap_or(line);
        match line.split_once('\t') {
            Some((a, b)) if pair_task => Self::pair(a, b),
            _ => Self::single(line),
        }
    }
}

impl<'a> From<&'a crate::glue::Example> for Input<'a> {
    fn from(e: &'a crate::glue::Example) -> Self {
        Self { text: &e.text_a, pair: e.text_b.as_deref() }
    }
}

/// The graph inputs of one encoded input, `[1, tokens]` each, ready for the embeddings stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub input_ids: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    /// Tokens were dropped to fit `max_seq_len`.
    pub truncated: bool,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// The package's tokenizer with its padding and truncation overridden; see the module doc.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
    pair_task: bool,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("max_len", &self.max_len).field("pair_task", &self.pair_task).finish()
    }
}

impl TextTokenizer {
    /// Wraps a parsed tokenizer. `max_len` counts the special tokens (`[CLS]`, `[SEP]`) too and must leave room for
    /// at least one token of each text.
    pub fn new(mut inner: Tokenizer, max_len: usize, pair_task: bool) -> Result<Self, String> {
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| format!("cannot disable truncation: {e}"))?;
        let added = inner.get_post_processor().map(|p| p.added_tokens(pair_task)).unwrap_or(0);
        let needed = added + if pair_task { 2 } else { 1 };
        if max_len < needed {
            return Err(format!("max_seq_len {max_len} leaves no room for text after {added} special tokens"));
        }
        Ok(Self { inner, max_len, pair_task })
    }

    pub fn from_file(path: &std::path::Path, max_len: usize, pair_task: bool) -> Result<Self, String> {
        let inner = Tokenizer::from_file(path).map_err(|e| e.to_string())?;
        Self::new(inner, max_len, pair_task)
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn is_pair_task(&self) -> bool {
        self.pair_task
    }

    /// Tokenizes one input: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, at most `max_len` tokens, no padding.
    pub fn encode(&self, input: &Input) -> Result<Encoded, InputError> {
        let second = match (self.pair_task, input.pair) {
            (true, Some(b)) => Some(b),
            (false, None) => None,
            (true, None) => {
                return Err(InputError::Arity(
                    "this model classifies sentence pairs: give both texts separated by a TAB".into(),
                ))
            }
            (false, Some(_)) => {
                return Err(InputError::Arity("this model classifies single texts, but a pair was given".into()))
            }
        };
        check_text(input.text)?;
        if let Some(b) = second {
            check_text(b)?;
        }

        let (first, capped_a) = self.segment(input.text, 0)?;
        let (second, capped_b) = match second {
            Some(b) => {
                let (e, capped) = self.segment(b, 1)?;
                (Some(e), capped)
            }
            None => (None, false),
        };
        let added = self.inner.get_post_processor().map(|p| p.added_tokens(second.is_some())).unwrap_or(0);
        let budget = self.max_len - added;
        let total = first.len() + second.as_ref().map_or(0, Encoding::len);
        let params = TruncationParams {
            direction: TruncationDirection::Right,
            max_length: budget,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        };
        let (first, second) = truncate_encodings(first, second, &params).map_err(tokenizer_error)?;
        let encoding = self.inner.post_process(first, second, true).map_err(tokenizer_error)?;

        Ok(Encoded {
            input_ids: encoding.get_ids().iter().map(|&i| i64::from(i)).collect(),
            token_type_ids: encoding.get_type_ids().iter().map(|&i| i64::from(i)).collect(),
            attention_mask: encoding.get_attention_mask().iter().map(|&i| i64::from(i)).collect(),
            truncated: capped_a || capped_b || total > budget,
        })
    }

    /// The word pieces of one text (no special tokens), cut before tokenizing when it is very long; `true` when the
    /// text was cut (which implies it also exceeds `max_len` tokens).
    fn segment(&self, text: &str, type_id: u32) -> Result<(Encoding, bool), InputError> {
        let mut chars = self.max_len.saturating_mul(CHARS_PER_TOKEN);
        let (mut encoding, capped) = loop {
            match whitespace_cut(text, chars) {
                None => break (self.pieces(text)?, false),
                Some(prefix) => {
                    let encoding = self.pieces(prefix)?;
                    if encoding.len() >= self.max_len {
                        break (encoding, true);
                    }
                    chars = chars.saturating_mul(4);
                }
            }
        };
        if encoding.is_empty() {
            return Err(InputError::Tokenizer("the text has no tokens after normalization".into()));
        }
        if type_id != 0 {
            let n = encoding.len();
            encoding.set_type_ids(vec![type_id; n]);
        }
        Ok((encoding, capped))
    }

    fn pieces(&self, text: &str) -> Result<Encoding, InputError> {
        self.inner.encode_fast(text, false).map_err(tokenizer_error)
    }
}

fn tokenizer_error(e: tokenizers::Error) -> InputError {
    InputError::Tokenizer(e.to_string())
}

fn check_text(text: &str) -> Result<(), InputError> {
    if text.is_empty() {
        Err(InputError::Empty)
    } else if text.trim().is_empty() {
        Err(InputError::WhitespaceOnly)
    } else {
        Ok(())
    }
}

/// The longest prefix of `text` of at most `chars` characters that ends before a whitespace character; `None` when
/// `text` is no longer than that or has no whitespace to cut at (then it must be used whole). A prefix ending in
/// whitespace-free text is extended to the next whitespace, never cut inside a word.
fn whitespace_cut(text: &str, chars: usize) -> Option<&str> {
    let (limit, _) = text.char_indices().nth(chars)?;
    let head = &text[..limit];
    match head.rfind(char::is_whitespace) {
        Some(at) if !head[..at].trim().is_empty() => Some(&text[..at]),
        _ => text[limit..].find(char::is_whitespace).map(|at| &text[..limit + at]),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::str::FromStr;

    /// A real BERT-style tokenizer.json over a tiny vocabulary, with the padding and truncation to 128 that the
    /// pretrained MiniLM file carries, which the wrapper must override.
    pub(crate) fn tokenizer_json(padding: bool) -> String {
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

    fn tokenizer(max_len: usize, pair: bool) -> TextTokenizer {
        let inner = Tokenizer::from_str(&tokenizer_json(true)).unwrap();
        assert!(inner.get_padding().is_some(), "the fixture must carry padding for the override to be tested");
        TextTokenizer::new(inner, max_len, pair).unwrap()
    }

    #[test]
    fn baked_in_padding_is_overridden() {
        let t = tokenizer(16, false);
        let e = t.encode(&Input::single("The movie is great")).unwrap();
        assert_eq!(e.input_ids, [2, 5, 6, 7, 8, 3]);
        assert_eq!(e.attention_mask, [1; 6]);
        assert_eq!(e.token_type_ids, [0; 6]);
        assert!(!e.truncated);
    }

    #[test]
    fn truncates_single_text_to_max_len() {
        let t = tokenizer(5, false);
        let e = t.encode(&Input::single("the movie is great")).unwrap();
        assert_eq!(e.input_ids, [2, 5, 6, 7, 3]);
        assert!(e.truncated);
        // Exactly max_len tokens is not truncation.
        let e = t.encode(&Input::single("the movie is")).unwrap();
        assert_eq!(e.len(), 5);
        assert!(!e.truncated);
    }

    #[test]
    fn pairs_get_type_ids_and_longest_first_truncation() {
        let t = tokenizer(32, true);
        let e = t.encode(&Input::pair("the movie", "is great")).unwrap();
        assert_eq!(e.input_ids, [2, 5, 6, 3, 7, 8, 3]);
        assert_eq!(e.token_type_ids, [0, 0, 0, 0, 1, 1, 1]);
        // max 8 leaves 5 word pieces after [CLS], [SEP], [SEP]; 4 + 1 fit as they are.
        let t = tokenizer(8, true);
        let e = t.encode(&Input::pair("the movie is great", "bad")).unwrap();
        assert_eq!(e.input_ids, [2, 5, 6, 7, 8, 3, 9, 3]);
        assert!(!e.truncated);
        let e = t.encode(&Input::pair("the movie is great a", "bad movie")).unwrap();
        // 5 + 2 pieces into 5: the shorter keeps 2, the longer keeps 3.
        assert_eq!(e.input_ids, [2, 5, 6, 7, 3, 9, 6, 3]);
        assert!(e.truncated);
    }

    #[test]
    fn bad_inputs_are_input_errors() {
        let t = tokenizer(16, false);
        assert_eq!(t.encode(&Input::single("")), Err(InputError::Empty));
        assert_eq!(t.encode(&Input::single(" \t \n")), Err(InputError::WhitespaceOnly));
        assert!(matches!(t.encode(&Input::pair("a", "b")), Err(InputError::Arity(_))));
        // Characters the normalizer drops (control characters) leave nothing to classify.
        assert!(matches!(t.encode(&Input::single("\u{1}\u{2}")), Err(InputError::Tokenizer(_))));
        let p = tokenizer(16, true);
        assert!(matches!(p.encode(&Input::single("the movie")), Err(InputError::Arity(_))));
        assert_eq!(p.encode(&Input::pair("the movie", "  ")), Err(InputError::WhitespaceOnly));
    }

    #[test]
    fn lines_split_at_tab_for_pairs_only() {
        assert_eq!(Input::from_line("a\tb\r", true), Input::pair("a", "b"));
        assert_eq!(Input::from_line("a\tb", false), Input::single("a\tb"));
    }

    #[test]
    fn huge_text_is_truncated_quickly_and_exactly() {
        let t = tokenizer(128, false);
        let words = ["the", "movie", "is", "great", "bad", "a"];
        let text: String = (0..20_000).map(|i| words[i % words.len()]).collect::<Vec<_>>().join(" ");
        let huge: String = text.chars().take(100_000).collect();
        let cut = t.encode(&Input::single(&huge)).unwrap();
        assert!(cut.truncated);
        assert_eq!(cut.len(), 128);
        // The reference: the same text through `tokenizers`' own truncation, without the cut.
        let mut reference = Tokenizer::from_str(&tokenizer_json(false)).unwrap();
        reference.with_truncation(Some(TruncationParams { max_length: 128, ..Default::default() })).unwrap();
        let full = reference.encode(huge.as_str(), true).unwrap();
        let ids: Vec<i64> = full.get_ids().iter().map(|&i| i64::from(i)).collect();
        assert_eq!(cut.input_ids, ids);
        // Quickly, by construction rather than by a timing: only the first cut was tokenized, a prefix of about
        // `CHARS_PER_TOKEN × max_len` characters, not the 100,000.
        let (pieces, capped) = t.segment(&huge, 0).unwrap();
        let tokenized = pieces.get_offsets().iter().map(|&(_, end)| end).max().unwrap();
        assert!(capped && pieces.len() >= 128);
        assert!(tokenized <= 128 * CHARS_PER_TOKEN, "{tokenized} bytes of the text were tokenized");
    }

    #[test]
    fn text_the_normalizer_mostly_drops_still_truncates_exactly() {
        // 40 control characters per word: the first cut (128 characters) holds 2 tokens, so the budget grows.
        let t = tokenizer(8, false);
        let word = format!("{}movie", "\u{1}".repeat(40));
        let text = vec![word; 2000].join(" ");
        let e = t.encode(&Input::single(&text)).unwrap();
        assert_eq!(e.input_ids, [2, 6, 6, 6, 6, 6, 6, 3]);
        assert!(e.truncated);
        // One giant word is never cut inside: WordPiece maps it to [UNK] as a whole.
        let word = "a".repeat(100_000);
        let e = t.encode(&Input::single(&word)).unwrap();
        assert_eq!(e.input_ids, [2, 1, 3]);
        assert!(!e.truncated);
    }

    #[test]
    fn whitespace_cut_never_splits_words() {
        assert_eq!(whitespace_cut("abc def", 10), None);
        assert_eq!(whitespace_cut("abc def ghi", 5), Some("abc"));
        assert_eq!(whitespace_cut("abcdefgh ij", 3), Some("abcdefgh"));
        assert_eq!(whitespace_cut("abcdefghij", 3), None);
        assert_eq!(whitespace_cut("  abcdefgh ij", 4), Some("  abcdefgh"));
    }
}
