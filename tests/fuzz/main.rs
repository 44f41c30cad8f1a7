//! Fuzzing, on stable Rust, of every entry point that reads outside data: text and pairs into the engine, input
//! lines, the package manifest, the package loader (damaged ONNX graphs whose digests are recomputed, so that the
//! loader, not the checksum, meets the damage), GLUE TSV files, the runtime config, the device profile and the sysfs
//! battery and thermal readers. One module per target; each states the properties it holds its target to (at
//! least: no panic, and an error is an error value, not a crash).
//!
//! The runner is proptest's (strategies that build structured hostile inputs and mutations of real files, and
//! shrinking to a minimal failing input), seeded so that a CI run is reproducible:
//!
//! - CI (no variable): a fixed number of cases per target, all targets together well under two minutes;
//! - `COSEE_FUZZ_CASES=N`: N cases per target;
//! - `COSEE_FUZZ_SECONDS=S`: each target runs batches of fresh seeds for S seconds (the long runs of
//!   docs/reliability.md: `COSEE_FUZZ_SECONDS=1800 cargo test --release --workspace --all-targets fuzz_ -- --nocapture
//!   --test-threads 1`); `COSEE_FUZZ_SEED` moves the seeds.
//!
//! Every target prints `fuzz TARGET: N inputs in S s`.

#[path = "../common/mod.rs"]
mod common;
mod fixtures;
mod glue;
mod lines;
mod manifest;
mod mutate;
mod package;
mod settings;
mod sysfs;
mod text;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use std::time::{Duration, Instant};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Runs `property` on inputs drawn from `strategy`: `ci_cases` of them, or as the environment says (module doc).
/// Panics with the shrunk input when the property fails or the target panics.
pub fn fuzz<S>(target: &str, ci_cases: u32, strategy: S, property: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let seconds = env_u64("COSEE_FUZZ_SECONDS").map(Duration::from_secs);
    let cases = env_u64("COSEE_FUZZ_CASES").map_or(ci_cases, |n| n.clamp(1, u32::MAX as u64) as u32);
    let base_seed = env_u64("COSEE_FUZZ_SEED").unwrap_or(0);
    let started = Instant::now();
    let (mut inputs, mut batch) = (0u64, 0u64);
    loop {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&base_seed.to_le_bytes());
        seed[8..16].copy_from_slice(&batch.to_le_bytes());
        for (i, b) in target.bytes().enumerate().take(16) {
            seed[16 + i] = b;
        }
        let config = Config { cases, failure_persistence: None, max_shrink_iters: 2048, ..Config::default() };
        let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        match runner.run(&strategy, &property) {
            Ok(()) => {}
            Err(TestError::Fail(reason, input)) => {
                panic!("fuzz {target}: seed {base_seed}, batch {batch}: {reason}\nminimal input: {input:?}")
            }
            Err(TestError::Abort(reason)) => panic!("fuzz {target}: aborted: {reason}"),
        }
        inputs += u64::from(cases);
        batch += 1;
        if seconds.is_none_or(|s| started.elapsed() >= s) {
            break;
        }
    }
    eprintln!("fuzz {target}: {inputs} inputs in {:.1} s", started.elapsed().as_secs_f64());
}

/// `Err(TestCaseError)` unless `cond`, with the message built only then.
#[macro_export]
macro_rules! holds {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(proptest::test_runner::TestCaseError::fail(format!($($msg)+)));
        }
    };
}
