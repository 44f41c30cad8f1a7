//! Everything a resumed run needs besides the weights and the optimizer moments, and the checkpoint layout
//! of a training output directory:
//!
//! ```text
//! <output>/train_config.json          the run's configuration (a resumed run reuses it)
//! <output>/metrics.jsonl              one line per epoch (and one at the end): wall time, losses, dev metrics
//! <output>/checkpoints/step-0000123/  model.safetensors, config.json, tokenizer.json,
//!                                     trainer_state.json, optimizer.safetensors
//! <output>/checkpoints/latest         the name of the newest complete checkpoint (written after it)
//! <output>/model/                     the final model (a checkpoint without training state)
//! ```
//!
//! Randomness is derived, never carried: the data order of epoch e comes from (seed, e), the dropout masks
//! and the SWM thresholds of step t from (seed, t). So (step, epoch, position in the epoch) restores the
//! random streams exactly, and a resumed run takes the same steps an uninterrupted one would.

use super::TrainConfig;
use crate::error::{io_err, Result, TrainerError};
use crate::model::checkpoint::write_file_atomically;
use crate::objective::swm::{RangeTracker, ThresholdRange};
use cosee_format::json::JsonFile;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const CONFIG_FILE: &str = "train_config.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
const LATEST: &str = "latest";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    /// Optimizer steps completed.
    pub step: usize,
    /// 0-based epoch in progress (== epochs when done).
    pub epoch: usize,
    /// Optimizer batches of `epoch` already consumed.
    pub batch_in_epoch: usize,
    pub total_steps: usize,
    pub steps_per_epoch: usize,
    pub seed: u64,
    /// The interval the current epoch draws SWM thresholds from.
    pub threshold_range: ThresholdRange,
    /// Running [min, max] of internal-exit signals in the current epoch (the next epoch's range).
    pub range_tracker: RangeTracker,
    /// Seconds of training so far in the current epoch (for the per-epoch wall time across a resume).
    pub epoch_seconds: f64,
    /// Sums over the current epoch, for the epoch's mean losses.
    pub epoch_loss_sum: f64,
    pub epoch_ce_sum: f64,
    pub epoch_osc_sum: f64,
    pub epoch_batches: usize,
    /// Per-exit sums of the current epoch (loss weights, signals of right and wrong answers).
    #[serde(default)]
    pub diagnostics: super::diagnostics::ExitDiagnostics,
}

impl TrainingState {
    /// The state of a run before its first step: epoch 0, SWM thresholds drawn from `threshold_range`.
    pub fn start(seed: u64, threshold_range: ThresholdRange) -> Self {
        Self {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            total_steps: 0,
            steps_per_epoch: 0,
            seed,
            threshold_range,
            range_tracker: RangeTracker::default(),
            epoch_seconds: 0.0,
            epoch_loss_sum: 0.0,
            epoch_ce_sum: 0.0,
            epoch_osc_sum: 0.0,
            epoch_batches: 0,
            diagnostics: Default::default(),
        }
    }

    /// Counts one optimizer step with its batch-mean losses.
    pub fn record_step(&mut self, loss: f64, ce: f64, osc: f64) {
        self.step += 1;
        self.batch_in_epoch += 1;
        self.epoch_loss_sum += loss;
        self.epoch_ce_sum += ce;
        self.epoch_osc_sum += osc;
        self.epoch_batches += 1;
    }

    /// Moves to the next epoch: its position, the per-epoch sums and the signal tracking start over (the threshold
    /// range for it is set by the caller from this epoch's tracker first).
    pub fn start_next_epoch(&mut self) {
        self.epoch += 1;
        self.batch_in_epoch = 0;
        self.range_tracker = RangeTracker::default();
        self.diagnostics = Default::default();
        self.epoch_seconds = 0.0;
        (self.epoch_loss_sum, self.epoch_ce_sum, self.epoch_osc_sum, self.epoch_batches) = (0.0, 0.0, 0.0, 0);
    }
}

/// Deterministic seed derivation (SplitMix64 of the seed, a stream tag and an index).
pub fn derive_seed(seed: u64, stream: u64, index: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn checkpoints_dir(output: &Path) -> PathBuf {
    output.join("checkpoints")
}

pub fn checkpoint_name(step: usize) -> String {
    format!("step-{step:07}")
}

/// Records `name` as the newest checkpoint (atomically) and removes all but the newest `keep`.
pub fn publish_checkpoint(output: &Path, name: &str, keep: usize) -> Result<()> {
    let dir = checkpoints_dir(output);
    write_file_atomically(&dir.join(LATEST), name.as_bytes())?;
    let mut steps: Vec<String> = std::fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    steps.sort();
    let excess = steps.len().saturating_sub(keep.max(1));
    for old in steps.into_iter().take(excess).filter(|n| n != name) {
        let path = dir.join(old);
        std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
    }
    remove_abandoned_temporaries(&dir)
}

/// Removes what a killed run left half-written in `dir`: the temporary copies (`.step-….tmp-PID`,
/// `.latest.tmp-PID`) of processes other than this one. They are never read (a checkpoint is published by a rename
/// only when whole), but each can hold a model's worth of disk. One run writes a directory at a time, so another
/// process's temporary is an abandoned one.
pub fn remove_abandoned_temporaries(dir: &Path) -> Result<()> {
    let own = format!(".tmp-{}", std::process::id());
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))?.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let abandoned = name.starts_with('.')
            && name
                .rsplit_once(".tmp-")
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
            && !name.ends_with(&own);
        if abandoned {
            let path = entry.path();
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// The newest complete checkpoint of an output directory, if any.
pub fn latest_checkpoint(output: &Path) -> Result<Option<PathBuf>> {
    let pointer = checkpoints_dir(output).join(LATEST);
    if !pointer.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&pointer).map_err(io_err(&pointer))?;
    let dir = checkpoints_dir(output).join(name.trim());
    if !dir.join(STATE_FILE).exists() {
        return Err(TrainerError::Invalid(format!(
            "{} names {}, which has no {STATE_FILE}",
            pointer.display(),
            dir.display()
        )));
    }
    Ok(Some(dir))
}

pub fn read_state(checkpoint: &Path) -> Result<TrainingState> {
    read_json(&checkpoint.join(STATE_FILE))
}

pub fn read_config(output: &Path) -> Result<TrainConfig> {
    read_json(&output.join(CONFIG_FILE))
}

/// How the trainer's own JSON files (`training_state.json`, the run's config) are read.
const TRAINER_JSON: JsonFile = JsonFile::plain("a training state or config written by the trainer");

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    Ok(TRAINER_JSON.read(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_by_stream_and_index() {
        let a = derive_seed(42, 1, 0);
        assert_eq!(a, derive_seed(42, 1, 0));
        assert_ne!(a, derive_seed(42, 1, 1));
        assert_ne!(a, derive_seed(42, 2, 0));
        assert_ne!(a, derive_seed(43, 1, 0));
    }

    #[test]
    fn keeps_the_newest_checkpoints() {
        let out = tempfile::tempdir().unwrap();
        for step in [1, 2, 3] {
            let name = checkpoint_name(step);
            let dir = checkpoints_dir(out.path()).join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(STATE_FILE), "{}").unwrap();
            publish_checkpoint(out.path(), &name, 2).unwrap();
        }
        let latest = latest_checkpoint(out.path()).unwrap().unwrap();
        assert!(latest.ends_with("step-0000003"));
        assert!(!checkpoints_dir(out.path()).join("step-0000001").exists());
        assert!(checkpoints_dir(out.path()).join("step-0000002").exists());
    }
}
