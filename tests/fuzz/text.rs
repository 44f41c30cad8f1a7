//! Text and pairs into the engine: whatever an app hands `classify`/`serve` (after the line reader) is answered
//! with a label and the answer's invariants hold, or refused with an error value; never a panic.

use crate::fixtures::engine;
use crate::{fuzz, holds};
use cosee_runtime::{Input, Task};
use proptest::prelude::*;

/// Pieces hostile text is made of: words, every kind of whitespace, control characters, combining marks, scripts
/// the test vocabulary lacks, emoji sequences, long runs without whitespace, and any character at all.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{1,12}",
        2 => Just(" ".to_string()),
        1 => prop::sample::select(vec!["\t", "\r", "\u{a0}", "\u{2028}", "\u{3000}", "\u{200b}", "\u{feff}", "\n"])
            .prop_map(String::from),
        1 => prop::sample::select(vec!["\u{0}", "\u{7}", "\u{1b}[31m", "\u{7f}", "\u{85}", "\u{fffd}"]).prop_map(String::from),
        1 => prop::sample::select(vec!["e\u{301}", "\u{300}\u{301}\u{302}", "漢字", "한국어", "العربية", "ﬁ", "ß", "İ"])
            .prop_map(String::from),
        1 => prop::sample::select(vec!["👩‍👩‍👧‍👦", "🇫🇷", "🏳️‍🌈", "\u{1F600}\u{FE0F}"]).prop_map(String::from),
        1 => (any::<char>(), 1usize..3000).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
        1 => ("[!-~]{1,4}", 1usize..2000).prop_map(|(s, n)| s.repeat(n)),
        2 => any::<char>().prop_map(String::from),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..40).prop_map(|parts| parts.concat())
}

fn check(task: Task, first: &str, second: Option<&str>) -> Result<(), TestCaseError> {
    let engine = engine(task);
    let input = match second {
        Some(b) => Input::pair(first, b),
        None => Input::single(first),
    };
    match engine.classify(&input) {
        Ok(a) => {
            holds!((1..=a.num_layers).contains(&a.exit_layer), "exit layer {} of {}", a.exit_layer, a.num_layers);
            holds!(a.num_layers == engine.num_layers(), "num_layers {}", a.num_layers);
            holds!(a.label_index < a.probs.len(), "label {} of {} probs", a.label_index, a.probs.len());
            holds!(a.label == task.label_names()[a.label_index], "label {} at {}", a.label, a.label_index);
            let sum: f32 = a.probs.iter().sum();
            holds!(
                a.probs.iter().all(|p| p.is_finite() && *p >= 0.0) && (sum - 1.0).abs() < 1e-3,
                "probs {:?}",
                a.probs
            );
            holds!(a.tokens >= 2 && a.tokens <= engine.manifest().max_seq_len, "{} tokens", a.tokens);
            holds!(a.signals.len() == a.exit_layer, "{} signals for exit {}", a.signals.len(), a.exit_layer);
        }
        Err(e) => holds!(!e.to_string().is_empty(), "an empty error message"),
    }
    Ok(())
}

#[test]
fn fuzz_text_into_the_engine() {
    fuzz("text", 256, text(), |t| check(Task::Sst2, &t, None));
}

#[test]
fn fuzz_pairs_into_the_engine() {
    fuzz("pair", 128, (text(), text()), |(a, b)| check(Task::Mrpc, &a, Some(&b)));
}
