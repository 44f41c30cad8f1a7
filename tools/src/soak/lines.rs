//! The hostile input stream of a soak: real sentences mixed, on a fixed schedule, with every kind of line an app
//! (or a mistake) can hand `serve`, each with the answer it must get.

use cosee_runtime::MAX_LINE_BYTES;
use serde::Serialize;

/// The kinds of line in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// A real sentence.
    Sentence,
    /// Two real sentences joined by a tab (a pair for a pair task; one text with a tab otherwise).
    Pair,
    /// A sentence ending in `\r` (a CRLF file).
    CarriageReturn,
    /// A sentence with NUL, control characters, combining marks and emoji spliced in.
    OddCharacters,
    /// Spaces and tabs only.
    Blank,
    /// Nothing between two newlines.
    Empty,
    /// A sentence with bytes that are not UTF-8.
    InvalidUtf8,
    /// Just under the 1 MiB cap, without any whitespace (the tokenizer's worst case before the pre-cut).
    NearCapNoWhitespace,
    /// Words past the 1 MiB cap.
    OverCap,
    /// 10 MB without a whitespace or a newline.
    HugeNoWhitespace,
}

/// What `serve` must answer to a line of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A label.
    Label,
    /// An error line.
    Error,
    /// One answer, label or error (inputs whose meaning is a judgement call, e.g. whitespace only).
    Either,
}

impl LineKind {
    pub fn expect(self) -> Expect {
        match self {
            Self::Sentence | Self::Pair | Self::CarriageReturn | Self::OddCharacters | Self::NearCapNoWhitespace => {
                Expect::Label
            }
            Self::Empty | Self::InvalidUtf8 | Self::OverCap | Self::HugeNoWhitespace => Expect::Error,
            Self::Blank => Expect::Either,
        }
    }
}

/// 10 MB, the size of the whitespace-free lines.
pub const HUGE_BYTES: usize = 10_000_000;

/// The stream: line `i`'s kind follows a fixed schedule, so that a run is reproducible and every hostile kind
/// appears within the first few hundred lines (inside any warm-up), then again and again.
#[derive(Debug, Clone)]
pub struct LineSource {
    sentences: Vec<String>,
    /// One 10 MB whitespace-free line per this many lines (0: none).
    pub huge_every: usize,
    near_cap: Vec<u8>,
    over_cap: Vec<u8>,
    huge: Vec<u8>,
}

impl LineSource {
    /// `sentences` must not be empty (nor contain newlines: they are GLUE sentences).
    pub fn new(sentences: Vec<String>, huge_every: usize) -> Self {
        assert!(!sentences.is_empty(), "a soak needs sentences");
        // Letters of one, two and three bytes, so that the cut happens inside and between characters.
        let pattern = "abcdéfghïjklm€nopq".as_bytes();
        let near_cap: Vec<u8> = pattern.iter().copied().cycle().take(MAX_LINE_BYTES - 64).collect();
        let near_cap = String::from_utf8_lossy(&near_cap).into_owned().into_bytes();
        let over_cap: Vec<u8> =
            b"the plot goes on and on ".iter().copied().cycle().take(MAX_LINE_BYTES + 4096).collect();
        let huge: Vec<u8> = b"0123456789abcdef".iter().copied().cycle().take(HUGE_BYTES).collect();
        Self { sentences, huge_every, near_cap, over_cap, huge }
    }

    pub fn kind(&self, i: usize) -> LineKind {
        if self.huge_every > 0 && i % self.huge_every == 50 {
            LineKind::HugeNoWhitespace
        } else if i % 997 == 20 {
            LineKind::OverCap
        } else if i % 1999 == 30 {
            LineKind::NearCapNoWhitespace
        } else if i % 13 == 5 {
            LineKind::Empty
        } else if i % 17 == 7 {
            LineKind::InvalidUtf8
        } else if i % 11 == 3 {
            LineKind::Pair
        } else if i % 19 == 9 {
            LineKind::CarriageReturn
        } else if i % 23 == 1 {
            LineKind::OddCharacters
        } else if i % 29 == 2 {
            LineKind::Blank
        } else {
            LineKind::Sentence
        }
    }

    fn sentence(&self, i: usize) -> &str {
        &self.sentences[i % self.sentences.len()]
    }

    /// Appends line `i` and its newline to `out`; returns its kind.
    pub fn write_line(&self, i: usize, out: &mut Vec<u8>) -> LineKind {
        let kind = self.kind(i);
        match kind {
            LineKind::Sentence => out.extend_from_slice(self.sentence(i).as_bytes()),
            LineKind::Pair => {
                out.extend_from_slice(self.sentence(i).as_bytes());
                out.push(b'\t');
                out.extend_from_slice(self.sentence(i + 1).as_bytes());
            }
            LineKind::CarriageReturn => {
                out.extend_from_slice(self.sentence(i).as_bytes());
                out.push(b'\r');
            }
            LineKind::OddCharacters => {
                out.extend_from_slice("\u{0}\u{7}e\u{301}\u{1F600} ".as_bytes());
                out.extend_from_slice(self.sentence(i).as_bytes());
                out.extend_from_slice(" \u{200B}\u{FEFF}\u{1F1EB}\u{1F1F7}".as_bytes());
            }
            LineKind::Blank => out.extend_from_slice(b"  \t \t  "),
            LineKind::Empty => {}
            LineKind::InvalidUtf8 => {
                let s = self.sentence(i).as_bytes();
                out.extend_from_slice(&s[..s.len() / 2]);
                out.extend_from_slice(b"\xff\xfe\xc3");
                out.extend_from_slice(&s[s.len() / 2..]);
            }
            LineKind::NearCapNoWhitespace => out.extend_from_slice(&self.near_cap),
            LineKind::OverCap => out.extend_from_slice(&self.over_cap),
            LineKind::HugeNoWhitespace => out.extend_from_slice(&self.huge),
        }
        out.push(b'\n');
        kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_appears_in_the_first_thousand_lines_and_lines_are_single() {
        let source = LineSource::new(vec!["a fine film".into(), "dull".into()], 500);
        let mut kinds = std::collections::BTreeSet::new();
        for i in 0..1000 {
            let mut out = Vec::new();
            let kind = source.write_line(i, &mut out);
            kinds.insert(kind);
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "line {i} ({kind:?})");
            assert_eq!(out.last(), Some(&b'\n'));
            let len = out.len() - 1;
            match kind {
                LineKind::OverCap | LineKind::HugeNoWhitespace => assert!(len > MAX_LINE_BYTES),
                LineKind::NearCapNoWhitespace => {
                    assert!(len <= MAX_LINE_BYTES && len > MAX_LINE_BYTES - 100);
                    assert!(std::str::from_utf8(&out[..len]).is_ok());
                    assert!(!out[..len].iter().any(u8::is_ascii_whitespace));
                }
                LineKind::InvalidUtf8 => assert!(std::str::from_utf8(&out[..len]).is_err()),
                LineKind::Empty => assert_eq!(len, 0),
                _ => assert!(std::str::from_utf8(&out[..len]).is_ok()),
            }
        }
        assert_eq!(kinds.len(), 10, "{kinds:?}");
    }
}
