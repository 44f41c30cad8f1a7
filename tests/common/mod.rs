//! Shared by the cross-crate tests that run the `cosee-edge` binary.
#![allow(dead_code)]

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Finds the `cosee-edge` executable of this workspace, building it if it is missing or stale.
///
/// `env!("CARGO_BIN_EXE_cosee-edge")` only exists in the runtime package's own tests, and `cargo test -p cosee-suite`
/// does not build other packages' binaries, so this asks cargo (same cargo, same profile) and reads the path from
/// its JSON messages: it works with any target directory and never runs a stale binary. The build is the test
/// command's own (`--workspace --all-targets`, scripts/test.sh): a narrower `-p cosee-runtime` resolves features
/// differently and would compile tract a second time; this way, under the test command, it is a no-op.
pub fn cosee_edge() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--workspace", "--all-targets", "--message-format=json-render-diagnostics"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let out = cmd.current_dir(env!("CARGO_MANIFEST_DIR")).stderr(Stdio::inherit()).output().unwrap();
        assert!(out.status.success(), "cargo build of cosee-edge failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "cosee-edge")
            // --all-targets also builds the bin's unit-test harness under the same name.
            .filter(|m| m["profile"]["test"] == false)
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no cosee-edge executable")
    })
}

/// Runs `cmd` with `stdin` fed to it (or no stdin at all) and collects its output.
///
/// A command may rightly exit before it reads its input (a usage error, a missing model): writing to its closed pipe
/// then fails with `BrokenPipe`, which is the child's answer, not a test failure; its exit status says what happened.
pub fn run_with_stdin(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn cosee-edge");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        match pipe.write_all(bytes) {
            Err(e) if e.kind() != ErrorKind::BrokenPipe => panic!("writing the child's stdin: {e}"),
            _ => {}
        }
    }
    child.wait_with_output().expect("wait for cosee-edge")
}

/// A synthetic calibration table of five rungs (τ 0.1 … 0.9, accuracy falling as the layer speed-up rises, for a
/// 3-layer package), so that a ladder has rungs to move along whatever a random package's own calibration says.
pub fn five_rung_calibration() -> cosee_runtime::manifest::Calibration {
    use cosee_runtime::metrics::SweepPoint;
    let points = (0..5)
        .map(|i| SweepPoint {
            threshold: 0.1 + 0.2 * i as f32,
            accuracy: 0.9 - 0.05 * i as f64,
            f1: None,
            layer_speedup: 1.0 + 0.5 * i as f64,
            exit_histogram: vec![10 * i, 0, 40 - 10 * i],
        })
        .collect();
    cosee_runtime::manifest::Calibration { data: "synthetic".into(), num_examples: 40, target_speedup: 2.0, points }
}
