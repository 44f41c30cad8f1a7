//! The benchmark behind `cosee-edge bench`: what early exit saves in wall-clock time on this machine.
//!
//! Papers report layer counts (Eq. 12); this measures milliseconds. Every input runs at full depth (every layer
//! and exit, no early exit: what the engine pays for a sample that never meets τ) and with real early exit at each
//! benchmarked τ, *interleaved per input* — full depth first on even inputs, last on odd ones, and the τ order
//! rotating — so that frequency scaling, thermal throttling or a noisy neighbour hit both sides equally. The
//! realized wall-clock speed-up is the ratio of the mean latencies on the same inputs in the same run.
//!
//! The same measurements give the per-stage cost against the token count, fitted into a [`DeviceProfile`] for
//! `tune` and the controller. The result is one struct; the table and the JSON are two printers over it.

mod inputs;
mod result;
mod run;
mod table;

pub use inputs::read_inputs;
pub use result::*;
pub use run::{load_timed, peak_rss_mb, run, BenchOptions, ColdStart};
pub use table::{format_table, to_json};

use crate::error::LoadError;
use crate::glue::DataError;
use crate::profile::ProfileError;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{0}: no inputs to benchmark")]
    NoInputs(String),
    #[error("every input failed; the first: input {index}: {message}")]
    AllFailed { index: usize, message: String },
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

#[cfg(test)]
mod tests {
    use super::run::{sample_of, stage_costs};
    use super::*;
    use crate::answer::{Stage, StageTimes};
    use crate::glue::Task;
    use crate::profile::StageSample;

    #[test]
    fn latency_stats_by_hand() {
        let l = LatencyStats::of(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!((l.p50, l.mean), (3.0, 3.0));
        assert!((l.p95 - 4.8).abs() < 1e-12 && (l.p99 - 4.96).abs() < 1e-12);
        assert!(LatencyStats::of(&[]).mean.is_nan());
    }

    #[test]
    fn inputs_from_tsv_or_plain_text() {
        let dir = tempfile::tempdir().unwrap();
        let tsv = dir.path().join("dev.tsv");
        std::fs::write(&tsv, "sentence\tlabel\ngood .\t1\nbad .\t0\n").unwrap();
        let ex = read_inputs(&tsv, Task::Sst2, false).unwrap();
        assert_eq!((ex.len(), ex[0].label), (2, Some(1)));
        // Plain lines: no header, no labels; a tab in a single-text task is just text.
        let txt = dir.path().join("lines.txt");
        std::fs::write(&txt, "a fine film\n\nnot\tgood\n").unwrap();
        let ex = read_inputs(&txt, Task::Sst2, false).unwrap();
        assert_eq!(ex.len(), 2);
        assert!(ex.iter().all(|e| e.label.is_none() && e.text_b.is_none()));
        let ex = read_inputs(&txt, Task::Rte, true).unwrap();
        assert_eq!(ex[1].text_b.as_deref(), Some("good"));
        // A real TSV error is reported, not read as text.
        std::fs::write(&tsv, "sentence\tlabel\ngood .\tmaybe\n").unwrap();
        assert!(matches!(read_inputs(&tsv, Task::Sst2, false), Err(BenchError::Data(DataError::UnknownLabel { .. }))));
        std::fs::write(&txt, "\n\n").unwrap();
        assert!(matches!(read_inputs(&txt, Task::Sst2, true), Err(BenchError::NoInputs(_))));
    }

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let mb = peak_rss_mb().unwrap();
            assert!(mb > 0.1 && mb < 1e6, "{mb}");
        }
    }

    #[test]
    fn token_buckets_are_powers_of_two() {
        let sample = |tokens: usize, layer: f64| StageSample {
            tokens,
            tokenize_ms: 0.1,
            embeddings_ms: 0.2,
            layer_ms: vec![layer, layer],
            exit_ms: vec![0.01, 0.01],
            wall_ms: 2.0 * layer + 0.4,
        };
        let samples =
            [sample(5, 1.0), sample(16, 2.0), sample(17, 3.0), sample(32, 4.0), sample(33, 5.0), sample(100, 6.0)];
        let costs = stage_costs(&samples, &[]).unwrap();
        let ranges: Vec<(usize, usize, usize)> =
            costs.by_tokens.iter().map(|b| (b.min_tokens, b.max_tokens, b.inputs)).collect();
        assert_eq!(ranges, vec![(1, 16, 2), (17, 32, 2), (33, 64, 1), (65, 128, 1)]);
        assert!((costs.by_tokens[0].layer_ms - 1.5).abs() < 1e-12);
        assert!((costs.by_tokens[1].exit_ms - 0.01).abs() < 1e-12);
    }

    #[test]
    fn stage_samples_split_by_stage() {
        let mut t = StageTimes::default();
        for (s, us) in [(Stage::Tokenize, 10), (Stage::Embeddings, 20), (Stage::Layer(1), 300), (Stage::Exit(1), 5)] {
            t.push(s, std::time::Duration::from_micros(us));
        }
        t.push(Stage::Layer(2), std::time::Duration::from_micros(310));
        let s = sample_of(&t, 7, 1.0);
        assert_eq!((s.tokens, s.layer_ms.len(), s.exit_ms.len()), (7, 2, 1));
        assert!((s.tokenize_ms - 0.01).abs() < 1e-12 && (s.layer_ms[1] - 0.31).abs() < 1e-12);
    }
}
