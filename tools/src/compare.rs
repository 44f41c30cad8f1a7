//! Two packages of the same model (typically f32 and int8) on the same labelled data through the runtime's engine:
//! per-exit max |Δlogit| and argmax agreement, and each one's full-depth accuracy — the measure of what int8
//! costs.

use cosee_runtime::glue::{read_tsv, DataError};
use cosee_runtime::metrics::accuracy;
use cosee_runtime::signal::argmax;
use cosee_runtime::{Engine, Input, LoadError, RunError, Task};
use indicatif::ProgressBar;
use std::path::Path;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ExitAgreement {
    /// 1-based exit layer.
    pub layer: usize,
    pub max_abs_logit_delta: f32,
    /// Share of examples whose argmax agrees.
    pub same_prediction: f64,
    pub accuracy_a: f64,
    pub accuracy_b: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    pub num_examples: usize,
    pub exits: Vec<ExitAgreement>,
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("the packages differ: {0}")]
    Mismatch(String),
    #[error("{path}: example {line} has no label")]
    Unlabelled { path: String, line: usize },
    #[error("example {index}: {source}")]
    Run { index: usize, source: RunError },
}

/// Runs both packages at full depth over `data` (read as `task`, the first package's by default).
pub fn compare_packages(
    a: &Path,
    b: &Path,
    data: &Path,
    task: Option<Task>,
    limit: Option<usize>,
    progress: bool,
) -> Result<Comparison, CompareError> {
    let (ea, eb) = (Engine::load(a)?, Engine::load(b)?);
    let (ma, mb) = (ea.manifest(), eb.manifest());
    if ma.num_layers != mb.num_layers || ma.label_names != mb.label_names {
        return Err(CompareError::Mismatch(format!(
            "{} layers {:?} vs {} layers {:?}",
            ma.num_layers, ma.label_names, mb.num_layers, mb.label_names
        )));
    }
    let task = task.unwrap_or(ma.task);
    let mut examples = read_tsv(task, data)?;
    if let Some(n) = limit {
        examples.truncate(n);
    }
    let labels: Vec<usize> = examples
        .iter()
        .enumerate()
        .map(|(i, e)| e.label.ok_or(CompareError::Unlabelled { path: data.display().to_string(), line: i + 2 }))
        .collect::<Result<_, _>>()?;
    let m = ma.num_layers;
    let mut pred_a = vec![Vec::with_capacity(examples.len()); m];
    let mut pred_b = vec![Vec::with_capacity(examples.len()); m];
    let mut worst = vec![0.0f32; m];
    let bar = if progress { ProgressBar::new(examples.len() as u64) } else { ProgressBar::hidden() };
    for (index, e) in examples.iter().enumerate() {
        let ra = ea.run_all_exits(&Input::from(e)).map_err(|source| CompareError::Run { index, source })?;
        let rb = eb.run_all_exits(&Input::from(e)).map_err(|source| CompareError::Run { index, source })?;
        for layer in 0..m {
            let (za, zb) = (&ra.logits[layer], &rb.logits[layer]);
            worst[layer] = za.iter().zip(zb).map(|(x, y)| (x - y).abs()).fold(worst[layer], f32::max);
            pred_a[layer].push(argmax(za));
            pred_b[layer].push(argmax(zb));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let exits = (0..m)
        .map(|layer| ExitAgreement {
            layer: layer + 1,
            max_abs_logit_delta: worst[layer],
            same_prediction: accuracy(&pred_a[layer], &pred_b[layer]),
            accuracy_a: accuracy(&pred_a[layer], &labels),
            accuracy_b: accuracy(&pred_b[layer], &labels),
        })
        .collect();
    Ok(Comparison { num_examples: examples.len(), exits })
}
