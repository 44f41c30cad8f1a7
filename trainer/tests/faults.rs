//! Faults a training run meets on a real machine, through the real `cosee-trainer` binary: a run killed with
//! SIGKILL in the middle of an epoch (twice) and resumed ends with the weights of an uninterrupted run of the same
//! seed, and a checkpoint damaged on disk is refused by `train --resume` and `eval` with an error naming the
//! damaged file, never a panic.
//!
//! The model is the tiny random 3-layer BERT of `common` on 192 of the committed SST-2 lines: a step takes
//! milliseconds, so the whole file runs in seconds.

mod common;

use common::{data, write_backbone};
use cosee_trainer::model::checkpoint::read_tensors;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tch::Device;

const TRAINER: &str = env!("CARGO_BIN_EXE_cosee-trainer");
/// 192 examples in batches of 16: 12 steps per epoch, 3 epochs.
const STEPS: usize = 36;

fn trainer() -> Command {
    let mut cmd = Command::new(TRAINER);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// `train` of a fresh run into `output`, a checkpoint after every step.
fn fresh(backbone: &Path, output: &Path) -> Command {
    let mut cmd = trainer();
    cmd.arg("train").args(["--task", "sst-2", "--backbone"]).arg(backbone).arg("--output-dir").arg(output);
    cmd.arg("--train-file").arg(data("sst2_train.tsv")).arg("--dev-file").arg(data("sst2_dev.tsv"));
    cmd.args(["--max-train-examples", "192", "--max-dev-examples", "32", "--batch-size", "16", "--epochs", "3"]);
    cmd.args(["--max-seq-len", "32", "--lr", "5e-4", "--seed", "9", "--save-steps", "1", "--keep-checkpoints", "2"]);
    cmd.args(["--threads", "1", "--device", "cpu", "--no-progress"]);
    cmd
}

fn resume(output: &Path) -> Command {
    let mut cmd = trainer();
    cmd.args(["train", "--resume", "--output-dir"]).arg(output).args(["--threads", "1", "--device", "cpu"]);
    cmd.arg("--no-progress");
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run cosee-trainer")
}

fn succeed(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(out.status.success(), "cosee-trainer failed: {}", text(&out.stderr));
    out
}

/// The step of the newest published checkpoint, if any (`checkpoints/latest` holds `step-NNNNNNN`).
fn latest_step(output: &Path) -> Option<usize> {
    let name = std::fs::read_to_string(output.join("checkpoints/latest")).ok()?;
    name.trim().strip_prefix("step-")?.parse().ok()
}

/// Waits until the run publishes a checkpoint after `after`, then kills it with SIGKILL (no handler runs: the
/// process dies wherever it is, possibly in the middle of writing the next checkpoint). Returns the newest
/// checkpoint's step at the kill.
fn kill_after_checkpoint(mut child: Child, output: &Path, after: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(step) = latest_step(output).filter(|&s| s > after) {
            child.kill().expect("SIGKILL the training run");
            let status = child.wait().expect("reap the killed run");
            assert!(!status.success(), "the run ended by itself before the kill (step {step})");
            return step;
        }
        if let Some(status) = child.try_wait().expect("poll the training run") {
            panic!("the run exited ({status}) before its checkpoint after step {after}");
        }
        assert!(Instant::now() < deadline, "no checkpoint after step {after} within 120 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn max_abs_difference(a: &Path, b: &Path) -> f64 {
    let a = read_tensors(a, Device::Cpu).unwrap();
    let b = read_tensors(b, Device::Cpu).unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .map(|(name, x)| {
            let y = b.get(name).unwrap_or_else(|| panic!("{name} missing from the resumed model"));
            assert_eq!(x.size(), y.size(), "{name}");
            (x - y).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

#[test]
fn a_run_killed_twice_mid_epoch_and_resumed_ends_with_the_uninterrupted_weights() {
    let root = tempfile::tempdir().unwrap();
    let backbone = root.path().join("backbone");
    write_backbone(&backbone, 3, 4);

    let full = root.path().join("full");
    let out = succeed(&mut fresh(&backbone, &full));
    assert!(text(&out.stderr).contains(&format!("{STEPS} of {STEPS} steps done")), "{}", text(&out.stderr));

    let split = root.path().join("split");
    let child = fresh(&backbone, &split).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let first = kill_after_checkpoint(child, &split, 0);
    let child = resume(&split).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let second = kill_after_checkpoint(child, &split, first);
    assert!(!split.join("model").exists(), "killed runs do not write the final model");
    let out = succeed(&mut resume(&split));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("{STEPS} of {STEPS} steps done")), "{stderr}");
    assert!(stderr.contains("resuming from"), "{stderr}");
    eprintln!("killed after the checkpoints of steps {first} and {second} of {STEPS}");

    let delta = max_abs_difference(&full.join("model/model.safetensors"), &split.join("model/model.safetensors"));
    eprintln!("max |Δ| over every tensor of the final model: {delta:e}");
    assert!(delta <= 1e-6, "resumed weights differ from the uninterrupted run's by {delta:e}");
}

/// A run stopped after 2 steps, a checkpoint after each: the material the damage tests start from.
fn stopped_run(root: &Path) -> PathBuf {
    let backbone = root.join("backbone");
    write_backbone(&backbone, 3, 4);
    let output = root.join("run");
    succeed(fresh(&backbone, &output).args(["--stop-after-steps", "2"]));
    assert!(output.join("checkpoints/step-0000002/optimizer.safetensors").exists());
    output
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The ways a file is damaged on disk.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Cut to a third of its length.
    Truncate,
    /// The 8-byte header length made enormous.
    HeaderLength,
    /// Bytes of the JSON header replaced by bytes that are not UTF-8.
    HeaderBytes,
    /// A byte of the JSON header changed into another plausible one (a digit of a data offset or shape).
    HeaderDigit,
    /// Deleted.
    Remove,
}

fn damage(path: &Path, how: Damage) {
    let mut bytes = std::fs::read(path).unwrap();
    match how {
        Damage::Truncate => bytes.truncate(bytes.len() / 3),
        Damage::HeaderLength => bytes[7] = 0x7f,
        Damage::HeaderBytes => bytes[20..28].fill(0xff),
        Damage::HeaderDigit => {
            // The last digit in the header: the end offset of the last tensor, or a shape.
            let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let at = (8..8 + header_len).rev().find(|&i| bytes[i].is_ascii_digit()).expect("a digit in the header");
            bytes[at] = if bytes[at] == b'9' { b'1' } else { bytes[at] + 1 };
        }
        Damage::Remove => {
            std::fs::remove_file(path).unwrap();
            return;
        }
    }
    std::fs::write(path, bytes).unwrap();
}

/// The command failed cleanly: a non-zero exit, no panic, and the damaged file named in the error.
fn refused(out: &Output, file: &Path, what: &str) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{what}: accepted: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: panicked: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{what}: killed by a signal? {stderr}");
    let name = file.display().to_string();
    assert!(stderr.contains(&name), "{what}: the error does not name {name}: {stderr}");
}

#[test]
fn damaged_checkpoints_are_refused_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    let output = stopped_run(root.path());
    let cases: &[(&str, Damage)] = &[
        ("model.safetensors", Damage::Truncate),
        ("model.safetensors", Damage::HeaderLength),
        ("model.safetensors", Damage::HeaderBytes),
        ("model.safetensors", Damage::HeaderDigit),
        ("model.safetensors", Damage::Remove),
        ("optimizer.safetensors", Damage::Truncate),
        ("optimizer.safetensors", Damage::HeaderBytes),
        ("optimizer.safetensors", Damage::HeaderDigit),
        ("optimizer.safetensors", Damage::Remove),
        ("trainer_state.json", Damage::Truncate),
        ("trainer_state.json", Damage::Remove),
        ("config.json", Damage::Truncate),
        ("config.json", Damage::Remove),
        ("tokenizer.json", Damage::Truncate),
    ];
    for (i, &(file, how)) in cases.iter().enumerate() {
        let what = format!("{file} {how:?}");
        let copy = root.path().join(format!("damaged-{i}"));
        copy_dir(&output, &copy);
        let ckpt = copy.join("checkpoints/step-0000002");
        let path = ckpt.join(file);
        damage(&path, how);
        let out = run(&mut resume(&copy));
        // The state file is what marks a checkpoint complete: without it the `latest` pointer is the fault.
        let named = if file == "trainer_state.json" && matches!(how, Damage::Remove) {
            copy.join("checkpoints/latest")
        } else {
            path.clone()
        };
        refused(&out, &named, &format!("train --resume, {what}"));
        if matches!(file, "model.safetensors" | "config.json" | "tokenizer.json") {
            let eval_out = root.path().join(format!("eval-{i}"));
            let out = run(trainer()
                .args(["eval", "--checkpoint"])
                .arg(&ckpt)
                .arg("--dev-file")
                .arg(data("sst2_dev.tsv"))
                .arg("--out")
                .arg(&eval_out)
                .args(["--threads", "1", "--device", "cpu", "--no-progress"]));
            refused(&out, &path, &format!("eval, {what}"));
        }
    }
    // An intact copy resumes (the damage, not the copying, is what the runs above refused), and into itself: the
    // saved configuration names the original directory, which must stay untouched.
    let copy = root.path().join("intact-copy");
    copy_dir(&output, &copy);
    let out = run(&mut resume(&copy));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(copy.join("model/model.safetensors").exists());
    assert!(!output.join("model").exists(), "the copy's resume wrote into the original run");
    assert_eq!(latest_step(&output), Some(2));
}

/// A byte of tensor data flipped on disk (the header intact, so safetensors itself reads the file): the checksum the
/// trainer wrote with the checkpoint refuses it, where the file alone would load as other weights.
#[test]
fn a_flipped_weight_is_refused_by_the_checkpoint_checksum() {
    let root = tempfile::tempdir().unwrap();
    let output = stopped_run(root.path());
    for (i, file) in ["model.safetensors", "optimizer.safetensors"].into_iter().enumerate() {
        let copy = root.path().join(format!("flipped-{i}"));
        copy_dir(&output, &copy);
        let ckpt = copy.join("checkpoints/step-0000002");
        let path = ckpt.join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x10;
        std::fs::write(&path, bytes).unwrap();
        let out = run(&mut resume(&copy));
        refused(&out, &path, &format!("train --resume, {file} with a flipped data byte"));
        assert!(text(&out.stderr).contains("sha256"), "{}", text(&out.stderr));
    }
}

/// What a killed run left half-written (a checkpoint's temporary directory, the `latest` pointer's temporary file,
/// both of another process) is removed when the resumed run publishes its next checkpoint.
#[test]
fn a_resumed_run_removes_the_temporaries_a_killed_run_left() {
    let root = tempfile::tempdir().unwrap();
    let output = stopped_run(root.path());
    let checkpoints = output.join("checkpoints");
    let left_dir = checkpoints.join(".step-0000003.tmp-4194999");
    std::fs::create_dir_all(&left_dir).unwrap();
    std::fs::write(left_dir.join("model.safetensors"), b"half written").unwrap();
    let left_file = checkpoints.join(".latest.tmp-4194999");
    std::fs::write(&left_file, b"step-00").unwrap();
    let out = run(&mut resume(&output));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!left_dir.exists() && !left_file.exists(), "the abandoned temporaries are still there");
    assert!(output.join("model/model.safetensors").exists());
}
