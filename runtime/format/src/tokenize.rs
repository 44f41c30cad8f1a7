//! Text → token ids for one input, batch size 1, never padded.
//!
//! The package's `tokenizer.json` is used for its normalizer, pre-tokenizer, vocabulary and `[CLS] a [SEP] b
//! [SEP]` template only: any padding or truncation baked into it is removed at load (the pretrained MiniLM file
//! pads every input to 128 tokens, which would make every layer cost as much as the longest input). Truncation to
//! the manifest's `max_seq_len` is done here, longest-first for pairs, exactly as `tokenizers` would do it.
//!
//! Very long text is cut *before* tokenizing, so that a line of megabytes costs about as much as one of a few
//! thousand characters plus a scan, and the token ids kept are exactly those of the whole text:
//! - a segment is cut after `CHARS_PER_TOKEN × max_seq_len` characters at a point where BERT's pre-tokenizer
//!   splits anyway (whitespace, punctuation, a CJK character), and the cut is kept only if the prefix alone already
//!   yields at least `max_seq_len` tokens: truncation keeps fewer, and they are exactly those of the whole text.
//!   When it yields fewer (long words, say), the budget grows until the prefix suffices or the text is used whole.
//! - before that, what cannot change a token is taken out (see [`BertCut`]): a word of more than WordPiece's
//!   `max_input_chars_per_word` characters (100 for BERT) is one `[UNK]` however long it is, so only its first
//!   101 characters are kept; runs of whitespace and of characters the normalizer deletes shrink to one.
//!   A 10 MB base64 blob without whitespace, or a run of a million `!`, reaches the tokenizer as a few kB.
//!
//! Those rules hold for the BERT pipeline (`BertNormalizer`, `BertPreTokenizer`, `WordPiece`), whose character
//! classes are known; they are checked against `tokenizers` itself over every Unicode scalar value in the tests.
//! A package with another pipeline gets the whitespace cut only, and its pre-tokenizer is assumed to split there.
//!
//! One case is not exact: a pair whose two texts are both cut. Longest-first truncation of an odd budget (125 for
//! 128 tokens) gives the extra token to the longer text, and which is longer would take tokenizing both whole to
//! know; the cut lengths decide. A pair with one text cut is exact (the cut one is cut longer than the other).

use std::borrow::Cow;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::utils::truncation::{truncate_encodings, TruncationDirection, TruncationParams, TruncationStrategy};
use tokenizers::{Encoding, PostProcessor, Tokenizer};
use unicode_categories::UnicodeCategories;

/// An input that cannot be classified as given. The message is meant for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("empty input: nothing to classify")]
    Empty,
    #[error("whitespace-only input: nothing to classify")]
    WhitespaceOnly,
    /// A pair task got a single text, or a single-text task got a pair.
    #[error("{0}")]
    Arity(String),
    #[error("tokenizer failed: {0}")]
    Tokenizer(String),
    /// A line of input longer than the reader's cap (`MAX_LINE_BYTES` of the runtime's line reader); it was skipped unread.
    #[error("line of {bytes} bytes is longer than the limit of {limit} bytes per input line: skipped")]
    LineTooLong { bytes: u64, limit: usize },
    #[error("line is not valid UTF-8 (invalid byte at offset {offset})")]
    InvalidUtf8 { offset: usize },
}

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

    /// An input of these ids, every token attended, not truncated: what a caller holding ids (a test, a sampled
    /// batch) encodes.
    pub fn new(input_ids: Vec<i64>, token_type_ids: Vec<i64>) -> Self {
        let attention_mask = vec![1; input_ids.len()];
        Self { input_ids, token_type_ids, attention_mask, truncated: false }
    }
}

/// Encoded inputs padded to one length, as plain row-major numbers (`[batch_size, seq_len]` each), ready for tch,
/// the reference forward pass or any other engine. The runtime itself runs one input at a time, unpadded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    pub input_ids: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub batch_size: usize,
    pub seq_len: usize,
}

impl EncodedBatch {
    /// Pads to the longest input of the batch, or to `pad_to` when given (`pad_to` below the longest input is raised
    /// to it). Padding is `pad_id` with token type 0 and attention mask 0.
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
            batch.attention_mask.extend(e.attention_mask.iter().copied().chain(std::iter::repeat_n(0, pad)));
        }
        batch
    }
}

/// One text's word pieces, as far as truncation needs them.
#[derive(Debug)]
struct Segment {
    pieces: Encoding,
    /// The text was cut before tokenizing (so it has more than `max_len` tokens).
    capped: bool,
    /// Bytes given to the tokenizer, after the pre-cut.
    tokenized: usize,
}

/// The package's tokenizer with its padding and truncation overridden; see the module doc.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
    arity: Arity,
    pre_cut: PreCut,
}

/// Which inputs a tokenizer takes: a package's task fixes it (and inputs of the other kind are refused with
/// [`InputError::Arity`]); the trainer's tokenizer takes each example as its task's file gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arity {
    Single,
    Pair,
    Either,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("max_len", &self.max_len).field("arity", &self.arity).finish()
    }
}

impl TextTokenizer {
    /// Wraps a parsed tokenizer for a task of single texts or of pairs. `max_len` counts the special tokens
    /// (`[CLS]`, `[SEP]`) too and must leave room for at least one token of each text.
    pub fn new(inner: Tokenizer, max_len: usize, pair_task: bool) -> Result<Self, String> {
        Self::with_arity(inner, max_len, if pair_task { Arity::Pair } else { Arity::Single })
    }

    /// Wraps a parsed tokenizer that takes single texts and pairs alike (training and evaluation data, whose task
    /// says which); `max_len` must leave room for a pair.
    pub fn for_any_input(inner: Tokenizer, max_len: usize) -> Result<Self, String> {
        Self::with_arity(inner, max_len, Arity::Either)
    }

    fn with_arity(mut inner: Tokenizer, max_len: usize, arity: Arity) -> Result<Self, String> {
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| format!("cannot disable truncation: {e}"))?;
        let pairs = arity != Arity::Single;
        let added = inner.get_post_processor().map(|p| p.added_tokens(pairs)).unwrap_or(0);
        let needed = added + if pairs { 2 } else { 1 };
        if max_len < needed {
            return Err(format!("max_seq_len {max_len} leaves no room for text after {added} special tokens"));
        }
        let pre_cut = PreCut::of(&inner);
        Ok(Self { inner, max_len, arity, pre_cut })
    }

    pub fn from_file(path: &std::path::Path, max_len: usize, pair_task: bool) -> Result<Self, String> {
        let json = std::fs::read(path).map_err(|e| e.to_string())?;
        Self::new(parse_tokenizer_json(&json)?, max_len, pair_task)
    }

    /// The vocabulary's size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of `token`, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Whether this tokenizer's task classifies sentence pairs (`false` for one that takes either kind).
    pub fn is_pair_task(&self) -> bool {
        self.arity == Arity::Pair
    }

    /// Refuses an input this model cannot take (a pair for a single-text task or the reverse, an empty or
    /// whitespace-only text) without tokenizing it: the checks [`Self::encode`] starts with, for a caller that
    /// validates a whole request before it runs any of it (the HTTP API). Returns the pair's second text.
    pub fn check<'a>(&self, input: &Input<'a>) -> Result<Option<&'a str>, InputError> {
        let second = match (self.arity, input.pair) {
            (Arity::Pair | Arity::Either, Some(b)) => Some(b),
            (Arity::Single | Arity::Either, None) => None,
            (Arity::Pair, None) => {
                return Err(InputError::Arity(
                    "this model classifies sentence pairs: give both texts separated by a TAB".into(),
                ))
            }
            (Arity::Single, Some(_)) => {
                return Err(InputError::Arity("this model classifies single texts, but a pair was given".into()))
            }
        };
        check_text(input.text)?;
        if let Some(b) = second {
            check_text(b)?;
        }
        Ok(second)
    }

    /// Tokenizes one input: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, at most `max_len` tokens, no padding.
    pub fn encode(&self, input: &Input) -> Result<Encoded, InputError> {
        let second = self.check(input)?;

        let mut first = self.segment(input.text, 0, self.max_len)?;
        let mut pair = second.map(|b| self.segment(b, 1, self.max_len).map(|s| (b, s))).transpose()?;
        // Longest-first truncation gives the odd token of an odd budget to the longer text: a cut text is cut anew
        // until it is longer than the other, whole, text, as the whole of it is. (When both are cut, which is longer
        // would take tokenizing both whole to know: their cut lengths decide.)
        if let Some((b, second)) = pair.as_mut() {
            if first.capped && !second.capped && first.pieces.len() <= second.pieces.len() {
                first = self.segment(input.text, 0, second.pieces.len() + 1)?;
            } else if second.capped && !first.capped && second.pieces.len() <= first.pieces.len() {
                *second = self.segment(b, 1, first.pieces.len() + 1)?;
            }
        }
        let (capped_a, capped_b) = (first.capped, pair.as_ref().is_some_and(|(_, s)| s.capped));
        let (first, second) = (first.pieces, pair.map(|(_, s)| s.pieces));
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

    /// The word pieces of one text (no special tokens), cut before tokenizing when it is very long: the cut is kept
    /// once it yields `min_tokens` (at least `max_len`, so that truncation keeps only tokens of the whole text).
    fn segment(&self, text: &str, type_id: u32, min_tokens: usize) -> Result<Segment, InputError> {
        let mut chars = self.max_len.saturating_mul(CHARS_PER_TOKEN);
        let mut segment = loop {
            let (prefix, whole) = self.pre_cut.cut(text, chars);
            let pieces = self.pieces(&prefix)?;
            if whole || pieces.len() >= min_tokens {
                break Segment { pieces, capped: !whole, tokenized: prefix.len() };
            }
            chars = chars.saturating_mul(4);
        };
        if segment.tokenized < text.len() {
            log::debug!("pre-cut: {} of {} bytes of a text tokenized", segment.tokenized, text.len());
        }
        if segment.pieces.is_empty() {
            return Err(InputError::Tokenizer("the text has no tokens after normalization".into()));
        }
        if type_id != 0 {
            let n = segment.pieces.len();
            segment.pieces.set_type_ids(vec![type_id; n]);
        }
        Ok(segment)
    }

    fn pieces(&self, text: &str) -> Result<Encoding, InputError> {
        self.inner.encode_fast(text, false).map_err(tokenizer_error)
    }
}

/// Parses a `tokenizer.json`. `tokenizers` 0.22 unwraps inside its decoder deserializer, so a damaged file can
/// panic it (found by tests/fuzz/package.rs): the panic is caught and reported like any parse error.
pub fn parse_tokenizer_json(json: &[u8]) -> Result<Tokenizer, String> {
    crate::guard::catch_panic(|| Tokenizer::from_bytes(json))
        .map_err(|panic| format!("the tokenizers crate panicked while reading it ({panic})"))?
        .map_err(|e| e.to_string())
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

/// How a long text is shortened before tokenizing; see the module doc.
#[derive(Debug, Clone)]
enum PreCut {
    Bert(BertCut),
    /// Not the BERT pipeline: cut at whitespace only, nothing taken out.
    Whitespace,
}

impl PreCut {
    fn of(tokenizer: &Tokenizer) -> Self {
        BertCut::of(tokenizer).map_or(Self::Whitespace, Self::Bert)
    }

    /// What to tokenize of `text` with a budget of `chars` characters, and whether it stands for the whole text
    /// (`false`: a prefix, cut where the pre-tokenizer splits).
    fn cut<'a>(&self, text: &'a str, chars: usize) -> (Cow<'a, str>, bool) {
        match self {
            Self::Bert(bert) => bert.condense(text, chars),
            Self::Whitespace => match whitespace_cut(text, chars) {
                Some(prefix) => (Cow::Borrowed(prefix), false),
                None => (Cow::Borrowed(text), true),
            },
        }
    }
}

/// How BERT's pipeline sees one character of raw text: `BertNormalizer` with `clean_text` and
/// `handle_chinese_chars` (accents stripped or not, lowercased or not), then `BertPreTokenizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CharClass {
    /// Becomes a space: separates words and yields no token.
    Space,
    /// Deleted by the normalizer (control and format characters, U+FFFD; nonspacing marks when accents are
    /// stripped): yields nothing and does not separate words.
    Removed,
    /// Always a token of its own, so a word ends before it: punctuation, a CJK ideograph, or a character whose
    /// decomposition starts with punctuation (when accents are stripped, the normalizer decomposes).
    Isolated,
    /// Part of a word, at least one character of it after normalization.
    Word,
}

/// The pre-cut for BERT's pipeline. Three rewrites leave the token ids unchanged, and bound what is tokenized:
/// - a word is kept up to its first `max_word_chars + 1` word characters: each yields at least one character
///   after normalization, so the kept word is still longer than WordPiece's limit and still one `[UNK]`;
/// - a run of spaces and deleted characters becomes one space if it holds a space, else its first deleted
///   character (one, not none, so that no added token such as `[MASK]` is formed by joining its neighbours);
/// - the cut comes before a `Space` or `Isolated` character, never inside an added token the tokenizer would find
///   in the raw text.
#[derive(Debug, Clone)]
struct BertCut {
    /// Nonspacing marks are deleted (the normalizer strips accents after decomposing).
    strip_accents: bool,
    /// WordPiece's `max_input_chars_per_word`: a longer word is one `[UNK]`.
    max_word_chars: usize,
    /// The added tokens (`[CLS]`, `[MASK]`…), found by the tokenizer in raw text before normalizing.
    added: Vec<String>,
}

impl BertCut {
    /// The rules, if `tokenizer` is the BERT pipeline they hold for. Added tokens must look like BERT's (ASCII,
    /// punctuation at both ends, no longer than a word, matched in raw text anywhere): a cut or a shortened word
    /// can then neither split one nor form one.
    fn of(tokenizer: &Tokenizer) -> Option<Self> {
        let Some(NormalizerWrapper::BertNormalizer(normalizer)) = tokenizer.get_normalizer() else { return None };
        let Some(PreTokenizerWrapper::BertPreTokenizer(_)) = tokenizer.get_pre_tokenizer() else { return None };
        let ModelWrapper::WordPiece(model) = tokenizer.get_model() else { return None };
        if !(normalizer.clean_text && normalizer.handle_chinese_chars) {
            return None;
        }
        let max_word_chars = model.max_input_chars_per_word;
        let added: Vec<String> = tokenizer
            .get_added_tokens_decoder()
            .into_values()
            .map(|t| {
                let bert_like = !t.single_word
                    && !t.normalized
                    && t.content.len() <= max_word_chars
                    && t.content.bytes().all(|b| b.is_ascii_graphic())
                    && t.content.starts_with(|c: char| c.is_ascii_punctuation())
                    && t.content.ends_with(|c: char| c.is_ascii_punctuation());
                bert_like.then_some(t.content)
            })
            .collect::<Option<_>>()?;
        Some(Self { strip_accents: normalizer.strip_accents.unwrap_or(normalizer.lowercase), max_word_chars, added })
    }

    fn class(&self, c: char) -> CharClass {
        let control = !matches!(c, '\t' | '\n' | '\r') && c.is_other();
        if c == '\0' || c == '\u{fffd}' || control || (self.strip_accents && c.is_mark_nonspacing()) {
            CharClass::Removed
        } else if c.is_whitespace() {
            CharClass::Space
        } else if c.is_ascii_punctuation()
            || c.is_punctuation()
            || is_chinese_char(c)
            || (self.strip_accents && DECOMPOSE_TO_PUNCTUATION.contains(&c))
        {
            CharClass::Isolated
        } else {
            CharClass::Word
        }
    }

    /// `text` rewritten as the type doc says, up to the first cut point after `chars` characters of it; `true`
    /// when that is all of the text.
    fn condense<'a>(&self, text: &'a str, chars: usize) -> (Cow<'a, str>, bool) {
        let mut out = String::new();
        let mut kept = 0usize;
        // Word characters of the current word so far, kept or not.
        let mut word = 0usize;
        // What stands for the run of spaces and deleted characters just read, written before the next character.
        let mut gap: Option<char> = None;
        for (at, c) in text.char_indices() {
            let class = self.class(c);
            let cut_point = matches!(class, CharClass::Space | CharClass::Isolated);
            if cut_point && kept >= chars && !self.splits_added_token(text, at) {
                return (Cow::Owned(out), false);
            }
            match class {
                CharClass::Space => {
                    gap = Some(' ');
                    word = 0;
                }
                // Inside a word already cut short, deleted characters go with the rest of it.
                CharClass::Removed if word <= self.max_word_chars => {
                    gap.get_or_insert(c);
                }
                CharClass::Removed => {}
                CharClass::Word if word > self.max_word_chars => {}
                CharClass::Word | CharClass::Isolated => {
                    if let Some(g) = gap.take() {
                        out.push(g);
                        kept += 1;
                    }
                    out.push(c);
                    kept += 1;
                    word = if class == CharClass::Word { word + 1 } else { 0 };
                }
            }
        }
        (Cow::Owned(out), true)
    }

    /// Whether a cut before byte `at` would fall inside an occurrence of an added token.
    fn splits_added_token(&self, text: &str, at: usize) -> bool {
        let bytes = text.as_bytes();
        self.added.iter().any(|token| {
            let token = token.as_bytes();
            (at.saturating_sub(token.len() - 1)..at).any(|start| bytes[start..].starts_with(token))
        })
    }
}

/// Characters that are not punctuation themselves but decompose (NFD) into punctuation followed by marks: once
/// accents are stripped they are a token of their own like the punctuation they start with. Found, and checked
/// complete, by `char_classes_agree_with_tokenizers` over every Unicode scalar value.
const DECOMPOSE_TO_PUNCTUATION: [char; 4] = ['\u{1fef}', '\u{2260}', '\u{226e}', '\u{226f}'];

/// The CJK ideographs `BertNormalizer` surrounds with spaces (its own list, `handle_chinese_chars`).
fn is_chinese_char(c: char) -> bool {
    matches!(
        u32::from(c),
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tiny_tokenizer_json as tokenizer_json;
    use std::str::FromStr;

    fn enc(n: usize) -> Encoded {
        Encoded::new((1..=n as i64).collect(), vec![0; n])
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

    fn tokenizer(max_len: usize, pair: bool) -> TextTokenizer {
        let inner = Tokenizer::from_str(&tokenizer_json(true)).unwrap();
        assert!(inner.get_padding().is_some(), "the fixture must carry padding for the override to be tested");
        TextTokenizer::new(inner, max_len, pair).unwrap()
    }

    /// Regression (tests/fuzz/package.rs, long run): a syntax error inside the `decoder` section made `tokenizers`
    /// 0.22.2 panic (`expect("Helper")`) instead of failing; a damaged package's tokenizer then crashed the loader.
    #[test]
    fn a_damaged_decoder_section_is_an_error_not_a_panic() {
        let json = tokenizer_json(false);
        let broken = json.replacen(r#""decoder":{"#, r#""decoder":{"x" 1,"#, 1);
        assert_ne!(broken, json, "the fixture's decoder section moved: {json}");
        let err = parse_tokenizer_json(broken.as_bytes()).unwrap_err();
        assert!(err.contains("panicked"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, broken).unwrap();
        assert!(TextTokenizer::from_file(&path, 16, false).is_err());
        assert!(parse_tokenizer_json(json.as_bytes()).is_ok());
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
        let segment = t.segment(&huge, 0, 128).unwrap();
        assert!(segment.capped && segment.pieces.len() >= 128);
        // The cut comes at the first word boundary after the budget: a word at most past it.
        let bound = 128 * CHARS_PER_TOKEN + "movie ".len();
        assert!(segment.tokenized <= bound, "{} bytes of the text were tokenized", segment.tokenized);
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

/// The pre-cut against `tokenizers` itself: the character classes over every Unicode scalar value, and the ids of
/// cut text against those of the whole text on texts made to break it.
#[cfg(test)]
mod pre_cut_tests {
    use super::*;
    use crate::testing::tiny_tokenizer_json as tokenizer_json;
    use std::str::FromStr;
    use tokenizers::normalizers::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    use tokenizers::{NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    /// The words BERT's normalizer and pre-tokenizer make of `text`.
    fn words(normalizer: &BertNormalizer, text: &str) -> Vec<String> {
        let mut normalized = NormalizedString::from(text);
        normalizer.normalize(&mut normalized).unwrap();
        let mut split = PreTokenizedString::from(normalized);
        BertPreTokenizer.pre_tokenize(&mut split).unwrap();
        split.get_splits(OffsetReferential::Normalized, OffsetType::Char).into_iter().map(|s| s.0.to_string()).collect()
    }

    #[test]
    fn char_classes_agree_with_tokenizers() {
        // The shipped MiniLM's (accents stripped because lowercased), and neither.
        for (strip_accents, lowercase) in [(None, true), (None, false)] {
            let normalizer = BertNormalizer::new(true, true, strip_accents, lowercase);
            let cut = BertCut { strip_accents: strip_accents.unwrap_or(lowercase), max_word_chars: 100, added: vec![] };
            let mut wrong = Vec::new();
            for c in (0..=0x10ffff).filter_map(char::from_u32) {
                // Between two letters: does `c` vanish, separate them, stand alone, or join their word?
                let found = words(&normalizer, &format!("a{c}b"));
                let class = cut.class(c);
                let agrees = match class {
                    CharClass::Removed => found == ["ab"],
                    CharClass::Space => found == ["a", "b"],
                    CharClass::Isolated => found.len() >= 3 && found[0] == "a" && found[found.len() - 1] == "b",
                    CharClass::Word => found.len() == 1 && found[0].chars().count() >= 3,
                };
                if !agrees {
                    wrong.push(format!("U+{:04X} {class:?} {found:?}", u32::from(c)));
                }
            }
            let some = &wrong[..wrong.len().min(40)];
            assert!(wrong.is_empty(), "strip {strip_accents:?} lowercase {lowercase}: {} wrong: {some:?}", wrong.len());
        }
    }

    /// The shipped package's tokenizer (the real BERT vocabulary), with truncation to `max_len` or none.
    fn minilm(max_len: Option<usize>) -> Tokenizer {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/sst2-minilm-l6/tokenizer.json");
        let mut t = Tokenizer::from_file(path).unwrap();
        t.with_padding(None);
        let truncation = max_len.map(|max_length| TruncationParams { max_length, ..Default::default() });
        t.with_truncation(truncation).unwrap();
        t
    }

    /// A deterministic generator (xorshift), so that a failing text can be rebuilt.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// `n` characters of base64 (letters, digits, `+`, `/`): no whitespace at all.
    fn base64(n: usize, seed: u64) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut rng = Rng(seed);
        (0..n).map(|_| char::from(ALPHABET[rng.below(64)])).collect()
    }

    /// Texts made to break the pre-cut: long words and runs, punctuation, CJK, accents as one character and as
    /// marks, characters the normalizer deletes, added tokens whole and broken, whitespace of every kind.
    fn hostile_texts() -> Vec<String> {
        let mut texts = vec![
            "the movie is great ".repeat(2000),
            "a".repeat(100),
            "a".repeat(101),
            format!("{} the movie is great", "a".repeat(150_000)),
            format!("{} {}", "é".repeat(150), "the movie ".repeat(300)),
            format!("{} {}", "e\u{301}".repeat(150), "great ".repeat(300)),
            format!("a{} movie", "\u{301}".repeat(50_000)),
            "supercalifragilisticexpialidocious ".repeat(500),
            "!".repeat(100_000),
            "!?.,;:()[]{}<>'\"-_/\\@#$%^&*+=|~`".repeat(3000),
            "a!b?c.d,".repeat(20_000),
            "我爱北京天安门".repeat(5000),
            format!("{}the movie{}", "中文".repeat(200), "文".repeat(20_000)),
            "café naïve résumé Ünïcödé ".repeat(1000),
            "İstanbul ΣΊΣΥΦΟΣ Straße ".repeat(1000),
            "≠≮≯\u{1fef}a≠b ".repeat(3000),
            format!("{}movie", "\u{1}\u{200b}\u{fffd}\u{0}".repeat(30_000)),
            " \u{200b}\t\u{3000}\u{a0}\u{b}\u{85}".repeat(30_000) + "the end",
            "[MASK] [CLS][SEP]x[MA\u{200b}SK] [[MASK]] [MASK".repeat(3000),
            format!("[{}MASK]", "\u{200b}".repeat(10_000)),
            "a\u{200b}".repeat(30_000),
            "😀🎉👍🏽".repeat(10_000),
            format!("{}!{}", "x".repeat(101), "y".repeat(99)).repeat(2000),
            base64(200_000, 7),
        ];
        // Random mixtures of the pieces above, short enough for the budgets of small max lengths to cut them.
        let pieces = [
            "a", "movie", " ", "!", "é", "e\u{301}", "\u{301}", "\u{200b}", "中", "≠", "\u{1fef}", "[MASK]", "[", "]",
            "\u{3000}", "\t", "İ", "😀", "\u{1}", "+", "/",
        ];
        let mut rng = Rng(0x5eed);
        for _ in 0..300 {
            let mut text = String::new();
            for _ in 0..rng.below(400) {
                let piece = pieces[rng.below(pieces.len())];
                let repeat = if rng.below(10) == 0 { 1 + rng.below(300) } else { 1 };
                text.push_str(&piece.repeat(repeat));
            }
            texts.push(text);
        }
        texts
    }

    fn ids(encoding: &Encoding) -> Vec<i64> {
        encoding.get_ids().iter().map(|&i| i64::from(i)).collect()
    }

    #[test]
    fn cut_text_keeps_the_ids_of_the_whole_text() {
        let fixture = tokenizer_json(false);
        for max_len in [8, 128] {
            let reference = minilm(Some(max_len));
            let ours = TextTokenizer::new(minilm(None), max_len, false).unwrap();
            let tiny_reference = {
                let mut t = Tokenizer::from_str(&fixture).unwrap();
                t.with_truncation(Some(TruncationParams { max_length: max_len, ..Default::default() })).unwrap();
                t
            };
            let tiny = TextTokenizer::new(Tokenizer::from_str(&fixture).unwrap(), max_len, false).unwrap();
            assert!(matches!(ours.pre_cut, PreCut::Bert(_)) && matches!(tiny.pre_cut, PreCut::Bert(_)));
            for (i, text) in hostile_texts().iter().enumerate() {
                for (ours, reference) in [(&ours, &reference), (&tiny, &tiny_reference)] {
                    let expected = reference.encode(text.as_str(), true).unwrap();
                    match ours.encode(&Input::single(text)) {
                        Ok(e) => assert_eq!(e.input_ids, ids(&expected), "text {i}, max_len {max_len}"),
                        Err(e) => assert!(expected.len() <= 2, "text {i}, max_len {max_len}: {e}"),
                    }
                }
            }
        }
    }

    #[test]
    fn cut_pairs_keep_the_ids_of_the_whole_pair() {
        let texts = hostile_texts();
        let short = "the movie is great, and the acting is worse".to_string();
        // The reference: each text tokenized whole, truncated longest-first by `tokenizers`' own function. (Its
        // `encode` of a pair with truncation would also build every combination of the overflowing parts.)
        let whole = minilm(None);
        for max_len in [8, 9, 128] {
            let ours = TextTokenizer::new(minilm(None), max_len, true).unwrap();
            let mut pairs: Vec<(&String, &String)> =
                texts[..24].iter().flat_map(|t| [(t, &short), (&short, t)]).collect();
            // Two long texts: which keeps the odd token of an odd budget cannot be known from cut texts (see
            // `encode`); with an even budget (9 − 3 special tokens) neither does.
            if max_len == 9 {
                pairs.extend(texts[..24].iter().zip(&texts[1..25]));
            }
            let params = TruncationParams { max_length: max_len - 3, ..Default::default() };
            for (i, &(a, b)) in pairs.iter().enumerate() {
                let (a_ids, b_ids) =
                    (whole.encode(a.as_str(), false).unwrap(), whole.encode(b.as_str(), false).unwrap());
                let (a_ids, b_ids) = truncate_encodings(a_ids, Some(b_ids), &params).unwrap();
                let b_ids = b_ids.unwrap();
                let expected: Vec<i64> = [101]
                    .iter()
                    .chain(a_ids.get_ids())
                    .chain(&[102])
                    .chain(b_ids.get_ids())
                    .chain(&[102])
                    .map(|&i| i64::from(i))
                    .collect();
                let e = ours.encode(&Input::pair(a, b)).unwrap();
                assert_eq!(e.input_ids, expected, "pair {i}, max_len {max_len}");
                assert_eq!(e.token_type_ids.iter().filter(|&&t| t == 1).count(), b_ids.len() + 1, "pair {i}");
            }
        }
    }

    /// Bytes of the (rewritten) text that reached the tokenizer.
    fn tokenized_bytes(t: &TextTokenizer, text: &str) -> usize {
        t.segment(text, 0, t.max_len).unwrap().tokenized
    }

    /// Issue 15's line: 10 MB without whitespace took 27.5 s and 1.29 GB to tokenize whole. Structural, not a
    /// timing: what reaches the tokenizer is a few kB, and the ids are those `tokenizers` gives the whole text.
    #[test]
    fn ten_megabytes_without_whitespace_reach_the_tokenizer_as_a_few_kilobytes() {
        let t = TextTokenizer::new(minilm(None), 128, false).unwrap();
        let bound = 4 * 128 * CHARS_PER_TOKEN;
        let blob = base64(10_000_000, 1);
        let e = t.encode(&Input::single(&blob)).unwrap();
        assert!(e.truncated && e.len() == 128);
        let tokenized = tokenized_bytes(&t, &blob);
        assert!(tokenized <= bound, "{tokenized} bytes of the text were tokenized");
        // The reference is `tokenizers` on the first 100 kB only, up to a `/`: BERT's pre-tokenizer splits before
        // any punctuation, so these are the first tokens of the whole text too (which it takes half a minute on).
        let head = &blob[..blob[..100_000].rfind('/').unwrap()];
        assert_eq!(e.input_ids, ids(&minilm(Some(128)).encode(head, true).unwrap()));

        // One word of ten million letters is one [UNK], and 101 of its letters are enough to say so.
        let word = "a".repeat(10_000_000);
        assert_eq!(t.encode(&Input::single(&word)).unwrap().input_ids, [101, 100, 102]);
        assert_eq!(tokenized_bytes(&t, &word), 101);
        // A megabyte of one punctuation character is a million tokens whole, a few kB cut.
        let bangs = "!".repeat(1 << 20);
        assert!(t.encode(&Input::single(&bangs)).unwrap().truncated);
        assert!(tokenized_bytes(&t, &bangs) <= bound, "{} bytes", tokenized_bytes(&t, &bangs));
    }
}
