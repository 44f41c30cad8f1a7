//! Where training and evaluation examples come from: a standard GLUE directory (`--data-dir`, task folder
//! inside) or explicit files (`--train-file`, `--dev-file`). Parsing is `cosee_format::glue`'s.

use crate::error::{Result, TrainerError};
use cosee_format::glue::{read_tsv, Example, Task};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};

/// The location of one task's files.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataSource {
    /// A GLUE root holding `SST-2/`, `MRPC/`, …
    pub data_dir: Option<PathBuf>,
    pub train_file: Option<PathBuf>,
    pub dev_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Dev,
}

impl DataSource {
    /// The file of `split`: the explicit file if given, else `<data_dir>/<TASK>/train.tsv` or the task's first
    /// dev file (MNLI: `dev_matched.tsv`).
    pub fn path(&self, task: Task, split: Split) -> Result<PathBuf> {
        let explicit = match split {
            Split::Train => &self.train_file,
            Split::Dev => &self.dev_file,
        };
        if let Some(p) = explicit {
            return Ok(p.clone());
        }
        let dir = self.data_dir.as_ref().ok_or_else(|| {
            TrainerError::Invalid(format!(
                "no {} data: give --data-dir (a GLUE directory) or --{}-file",
                split_name(split),
                split_name(split)
            ))
        })?;
        let file = match split {
            Split::Train => task.train_file(),
            Split::Dev => task.dev_files()[0],
        };
        Ok(dir.join(task.dir_name()).join(file))
    }

    /// Reads a split; every example must carry a label.
    pub fn load(&self, task: Task, split: Split) -> Result<Vec<Example>> {
        let path = self.path(task, split)?;
        let examples = read_labelled(task, &path)?;
        Ok(examples)
    }
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Dev => "dev",
    }
}

/// Reads a GLUE TSV and insists on labels (training and evaluation both need them).
pub fn read_labelled(task: Task, path: &Path) -> Result<Vec<Example>> {
    require_labels(read_tsv(task, path)?, path)
}

/// The seed of the held-out slice: fixed, not the run's, so that runs of every seed and objective hold out the
/// same examples and are tuned on the same data.
pub const HOLDOUT_SEED: u64 = 0x4B1D_5EED;

/// The name of the held-out slice a run writes into its output directory.
pub const HOLDOUT_FILE: &str = "holdout.tsv";

/// Reads the training file with `fraction` of it held out (by [`HOLDOUT_SEED`]); the held-out slice is
/// written, as a GLUE file of the task, to `holdout_out`. Returns the examples to train on.
pub fn load_with_holdout(task: Task, path: &Path, fraction: f64, holdout_out: &Path) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(crate::error::io_err(path))?;
    let (kept, held) = cosee_format::glue::holdout_split(&text, fraction, HOLDOUT_SEED);
    crate::model::checkpoint::write_file_atomically(holdout_out, held.as_bytes())?;
    let origin = path.display().to_string();
    let examples = cosee_format::glue::parse_tsv(task, &kept, &origin)?;
    require_labels(examples, path)
}

fn require_labels(examples: Vec<Example>, path: &Path) -> Result<Vec<Example>> {
    if examples.is_empty() {
        return Err(TrainerError::Invalid(format!("{}: no examples", path.display())));
    }
    if let Some(i) = examples.iter().position(|e| e.label.is_none()) {
        return Err(TrainerError::Invalid(format!(
            "{}: example {} has no label (is this a GLUE test file?)",
            path.display(),
            i + 1
        )));
    }
    Ok(examples)
}

/// A random subset of `max` examples (a fixed seed, so runs with the same flags see the same subset), or all.
pub fn subset(mut examples: Vec<Example>, max: Option<usize>, seed: u64) -> Vec<Example> {
    match max {
        Some(n) if n < examples.len() => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5EED_5AB5E7);
            examples.shuffle(&mut rng);
            examples.truncate(n);
            examples
        }
        _ => examples,
    }
}

/// The labels of labelled examples.
pub fn labels(examples: &[Example]) -> Vec<usize> {
    examples.iter().map(|e| e.label.unwrap_or(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_glue_layout() {
        let src = DataSource { data_dir: Some("/g".into()), ..Default::default() };
        assert_eq!(src.path(Task::Sst2, Split::Train).unwrap(), PathBuf::from("/g/SST-2/train.tsv"));
        assert_eq!(src.path(Task::Mnli, Split::Dev).unwrap(), PathBuf::from("/g/MNLI/dev_matched.tsv"));
        let src = DataSource { dev_file: Some("/x/dev.tsv".into()), ..Default::default() };
        assert_eq!(src.path(Task::Rte, Split::Dev).unwrap(), PathBuf::from("/x/dev.tsv"));
        assert!(src.path(Task::Rte, Split::Train).is_err());
    }

    #[test]
    fn subsets_are_seeded() {
        let ex: Vec<Example> =
            (0..50).map(|i| Example { text_a: i.to_string(), text_b: None, label: Some(i % 2) }).collect();
        let a = subset(ex.clone(), Some(10), 1);
        assert_eq!(a.len(), 10);
        assert_eq!(a, subset(ex.clone(), Some(10), 1));
        assert_ne!(a, subset(ex.clone(), Some(10), 2));
        assert_eq!(subset(ex.clone(), None, 1), ex);
    }
}
