//! The CI soak of `cosee-edge serve` (the long one is scripts/soak-serve.sh): 20,000 lines of the committed SST-2
//! sentences mixed with empty lines, invalid UTF-8, lines over the 1 MiB cap, 10 MB lines without whitespace, lines
//! just under the cap without whitespace, tab-joined pairs and odd characters, while the fake battery and thermal
//! files serve reads change every 20 ms between plausible states and garbage. It runs `cosee_tools::soak`, the code
//! `cosee-tools soak` runs, on a tiny random package with a synthetic five-rung τ table.
//!
//! Asserted: every line answered exactly once, in order, with the kind of answer its line calls for; no panic;
//! exit code 1 (some inputs are errors); τ changes logged; RSS after the warm-up at most 2x the warm-up's. The memory
//! bound is a gross-leak bound, not a measurement: the tiny package's whole process is a few tens of MB, and a
//! shared 2-core CI machine moves the allocator's working set by several MB; a server that kept any of the four
//! 10 MB lines, or a few hundred bytes of every line, doubles it. The 5 % bound is the long soak's
//! (scripts/soak-serve.sh, docs/reliability.md).

mod common;

use common::cosee_edge;
use cosee_runtime::manifest::Manifest;
use cosee_runtime::{ExitSignal, Task};
use cosee_tools::export::{export, ExportOptions};
use cosee_tools::soak::{self, lines::LineSource, SoakOptions};
use cosee_tools::testing::tiny_config;
use cosee_tools::write_random_checkpoint;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A tiny random SST-2 package whose table has five rungs, so that the power policy has τ to move along.
fn package(root: &Path) -> PathBuf {
    let checkpoint = root.join("checkpoint");
    write_random_checkpoint(&checkpoint, &tiny_config(3, 32, 4, Task::Sst2, ExitSignal::Energy), 3).unwrap();
    let package = root.join("package");
    export(&checkpoint, &package, &ExportOptions::default()).unwrap();
    let mut manifest = Manifest::read(&package).unwrap();
    manifest.calibration = Some(common::five_rung_calibration());
    manifest.write(&package).unwrap();
    package
}

#[test]
fn serve_soak_answers_20000_hostile_lines_once_in_order_with_flat_memory() {
    let root = tempfile::tempdir().unwrap();
    let model = package(root.path());
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sst2-dev-40.tsv");
    let sentences = soak::sentences_from_tsv(Task::Sst2, &data).unwrap();
    let options = SoakOptions {
        serve: cosee_edge().to_path_buf(),
        model,
        lines: 20_000,
        huge_every: 5000,
        warmup_lines: 2000,
        sysfs_every: Duration::from_millis(20),
        power_poll: Duration::from_millis(5),
        rss_every: Duration::from_millis(25),
        serve_args: vec!["--threshold".into(), "0.1".into()],
    };
    let scratch = root.path().join("sysfs");
    let started = Instant::now();
    let report = soak::run(&options, LineSource::new(sentences, options.huge_every), &scratch).unwrap();
    let summary = format!(
        "{:.1} s, RSS {} → {} KiB ({:+.1} %), peak {} KiB, {} τ changes, {} rewrites, per kind {:?}; stderr {:?}",
        started.elapsed().as_secs_f64(),
        report.baseline_rss_kib,
        report.max_rss_kib_after_warmup,
        report.rss_growth * 100.0,
        report.peak_rss_kib,
        report.tau_changes,
        report.sysfs_rewrites,
        report.per_kind,
        report.stderr_tail
    );
    eprintln!("{summary}");
    let failures = report.failures(1.0);
    assert!(failures.is_empty(), "{failures:?}\n{summary}");
    assert_eq!(report.per_kind.len(), 10, "every kind of line was sent: {summary}");
    assert_eq!(report.per_kind["HugeNoWhitespace"].sent, 4);
    assert_eq!(report.per_kind["HugeNoWhitespace"].errors, 4);
    assert!(report.sysfs_rewrites >= 10 && report.tau_changes >= 2, "{summary}");
}
