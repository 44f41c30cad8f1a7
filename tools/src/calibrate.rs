//! Calibration: the τ → {accuracy, layer speed-up (paper Eq. 12), exit histogram} table of a package on labelled
//! data, written into its manifest, and the default τ chosen from it.
//!
//! Every example runs once at full depth through the runtime's own engine; the sweep then replays the engine's
//! exit decision ([`FullDepth::exit_layer`], the same code as the real exit loop) at each τ, so the table says
//! exactly what `cosee-edge classify` will do at that τ, for the cost of one pass over the data.

use cosee_runtime::engine::{Engine, ExitPolicy, FullDepth};
use cosee_runtime::glue::{read_tsv, DataError};
use cosee_runtime::json::JsonError;
use cosee_runtime::manifest::{Calibration, Manifest};
use cosee_runtime::metrics::{accuracy, SweepPoint};
use cosee_runtime::signal::argmax;
use cosee_runtime::{ExitSignal, Input, LoadError, RunError, Task};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;

/// The layer speed-up the default τ must reach unless told otherwise (the paper compares methods at ≈2×).
pub const DEFAULT_TARGET_SPEEDUP: f64 = 2.0;

#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// The task whose TSV layout the data file has; the package's task by default.
    pub task: Option<Task>,
    pub target_speedup: f64,
    /// The τ grid; the signal's [`ExitSignal::default_sweep`] by default.
    pub thresholds: Option<Vec<f32>>,
    /// Use only the first N examples.
    pub limit: Option<usize>,
    /// Compute the table without writing it into the manifest.
    pub dry_run: bool,
    pub progress: bool,
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        Self {
            task: None,
            target_speedup: DEFAULT_TARGET_SPEEDUP,
            thresholds: None,
            limit: None,
            dry_run: false,
            progress: false,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CalibrationReport {
    pub calibration: Calibration,
    pub signal: ExitSignal,
    /// The τ now in the manifest.
    pub default_threshold: f32,
    /// Whether some τ reached the target speed-up; if not, the fastest τ was taken.
    pub target_reached: bool,
    /// Accuracy of the last exit (no early exit), for reference.
    pub full_depth_accuracy: f64,
    /// Wall time of the full-depth pass, seconds.
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Manifest(#[from] JsonError),
    #[error("{path}: example {line} has no label; calibration needs labelled data (a dev file, not a test file)")]
    Unlabelled { path: String, line: usize },
    #[error("{path} holds no examples")]
    NoExamples { path: String },
    #[error("the data is {data_task} with {data_labels} labels but the package classifies {package_task} into {package_labels}")]
    TaskMismatch { data_task: Task, data_labels: usize, package_task: Task, package_labels: usize },
    #[error("example {index} (\"{text}\"): {source}")]
    Run { index: usize, text: String, source: RunError },
    #[error("no thresholds to sweep")]
    NoThresholds,
}

/// One point of the table: the engine's exit decision at τ for every example, then the paper's measures.
pub fn sweep_point(
    runs: &[FullDepth],
    labels: &[usize],
    signal: ExitSignal,
    threshold: f32,
    num_layers: usize,
    with_f1: bool,
) -> SweepPoint {
    let policy = ExitPolicy { signal, threshold };
    let mut exits = Vec::with_capacity(runs.len());
    let mut predictions = Vec::with_capacity(runs.len());
    for run in runs {
        let m = run.exit_layer(policy);
        exits.push(m);
        predictions.push(argmax(&run.logits[m - 1]));
    }
    SweepPoint::new(threshold, &exits, num_layers, &predictions, labels, with_f1)
}

/// The default τ: the most accurate point whose layer speed-up reaches `target` (ties: the faster one). When no
/// point reaches it, the fastest point (ties: the more accurate one), and `false`.
pub fn choose_default(points: &[SweepPoint], target: f64) -> Option<(&SweepPoint, bool)> {
    let reaching = points
        .iter()
        .filter(|p| p.layer_speedup >= target)
        .max_by(|a, b| a.accuracy.total_cmp(&b.accuracy).then(a.layer_speedup.total_cmp(&b.layer_speedup)));
    match reaching {
        Some(p) => Some((p, true)),
        None => points
            .iter()
            .max_by(|a, b| a.layer_speedup.total_cmp(&b.layer_speedup).then(a.accuracy.total_cmp(&b.accuracy)))
            .map(|p| (p, false)),
    }
}

/// Runs the package in `package` over the labelled `data` file and writes the calibration into its manifest.
pub fn calibrate(package: &Path, data: &Path, options: &CalibrateOptions) -> Result<CalibrationReport, CalibrateError> {
    let engine = Engine::load(package)?;
    let manifest = engine.manifest().clone();
    let task = options.task.unwrap_or(manifest.task);
    if task.num_labels() != manifest.label_names.len() {
        return Err(CalibrateError::TaskMismatch {
            data_task: task,
            data_labels: task.num_labels(),
            package_task: manifest.task,
            package_labels: manifest.label_names.len(),
        });
    }
    let display = data.display().to_string();
    let mut examples = read_tsv(task, data)?;
    if let Some(limit) = options.limit {
        examples.truncate(limit);
    }
    if examples.is_empty() {
        return Err(CalibrateError::NoExamples { path: display });
    }
    let labels: Vec<usize> = examples
        .iter()
        .enumerate()
        .map(|(i, e)| e.label.ok_or(CalibrateError::Unlabelled { path: display.clone(), line: i + 2 }))
        .collect::<Result<_, _>>()?;
    let signal = manifest.signal.name;
    let thresholds = options.thresholds.clone().unwrap_or_else(|| signal.default_sweep(manifest.num_layers));
    if thresholds.is_empty() {
        return Err(CalibrateError::NoThresholds);
    }

    let progress = if options.progress { ProgressBar::new(examples.len() as u64) } else { ProgressBar::hidden() };
    progress.set_style(
        ProgressStyle::with_template("full depth [{bar:30}] {pos}/{len} {per_sec} eta {eta}").expect("valid template"),
    );
    let start = std::time::Instant::now();
    let mut runs = Vec::with_capacity(examples.len());
    for (index, example) in examples.iter().enumerate() {
        let run = engine.run_all_exits(&Input::from(example)).map_err(|source| CalibrateError::Run {
            index,
            text: example.text_a.chars().take(60).collect(),
            source,
        })?;
        runs.push(run);
        progress.inc(1);
    }
    progress.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();

    let m = manifest.num_layers;
    let with_f1 = task.reports_f1();
    let points: Vec<SweepPoint> =
        thresholds.iter().map(|&tau| sweep_point(&runs, &labels, signal, tau, m, with_f1)).collect();
    let full_depth: Vec<usize> = runs.iter().map(|r| argmax(&r.logits[m - 1])).collect();
    let (chosen, target_reached) =
        choose_default(&points, options.target_speedup).expect("the threshold list is not empty");
    let default_threshold = chosen.threshold;
    let calibration = Calibration {
        data: data.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or(display),
        num_examples: examples.len(),
        target_speedup: options.target_speedup,
        points,
    };
    if !options.dry_run {
        // The manifest is not among its own digested files, so the digests stay valid.
        let mut updated: Manifest = Manifest::read(package)?;
        updated.calibration = Some(calibration.clone());
        updated.default_threshold = default_threshold;
        updated.write(package)?;
    }
    Ok(CalibrationReport {
        calibration,
        signal,
        default_threshold,
        target_reached,
        full_depth_accuracy: accuracy(&full_depth, &labels),
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cosee_runtime::StageTimes;

    fn run(logits: Vec<Vec<f32>>) -> FullDepth {
        FullDepth { logits, stage_ms: StageTimes::with_capacity(0), tokens: 3, truncated: false }
    }

    #[test]
    fn sweep_by_hand() {
        // Max-softmax, 3 layers. Example A: confident and right at layer 1 (p = 0.95), B: unsure at 1 and 2,
        // confident and right at 3, C: confident but wrong at 1, right at 3.
        let ln = |p: f32| (p / (1.0 - p)).ln();
        let a = run(vec![vec![ln(0.95), 0.0], vec![ln(0.9), 0.0], vec![ln(0.99), 0.0]]);
        let b = run(vec![vec![0.0, 0.1], vec![0.1, 0.0], vec![0.0, ln(0.97)]]);
        let c = run(vec![vec![ln(0.92), 0.0], vec![0.0, 0.2], vec![0.0, ln(0.9)]]);
        let runs = [a, b, c];
        let labels = [0, 1, 1];
        // τ = 0.9: A exits at 1 (0.95 > 0.9), B at 3, C at 1 (0.92 > 0.9, wrong). Accuracy 2/3, histogram
        // [2, 0, 1], speed-up 9 / (1 + 3 + 1) = 1.8.
        let p = sweep_point(&runs, &labels, ExitSignal::MaxSoftmax, 0.9, 3, false);
        assert_eq!(p.exit_histogram, vec![2, 0, 1]);
        assert!((p.accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert!((p.layer_speedup - 1.8).abs() < 1e-12);
        assert_eq!(p.f1, None);
        // τ = 0.93: C no longer exits at 1 (0.92), nor at 2 (0.55): all right, speed-up 9 / 7.
        let p = sweep_point(&runs, &labels, ExitSignal::MaxSoftmax, 0.93, 3, true);
        assert_eq!(p.exit_histogram, vec![1, 0, 2]);
        assert!((p.accuracy - 1.0).abs() < 1e-12);
        assert!((p.layer_speedup - 9.0 / 7.0).abs() < 1e-12);
        assert_eq!(p.f1, Some(1.0));
    }

    fn point(threshold: f32, accuracy: f64, layer_speedup: f64) -> SweepPoint {
        SweepPoint { threshold, accuracy, f1: None, layer_speedup, exit_histogram: vec![] }
    }

    #[test]
    fn default_is_the_most_accurate_point_reaching_the_target() {
        let points = [point(0.1, 0.91, 1.2), point(0.2, 0.89, 2.1), point(0.3, 0.90, 2.0), point(0.4, 0.85, 3.0)];
        let (p, reached) = choose_default(&points, 2.0).unwrap();
        assert_eq!((p.threshold, reached), (0.3, true));
        // Accuracy ties go to the faster point.
        let points = [point(0.2, 0.9, 2.0), point(0.3, 0.9, 2.5)];
        assert_eq!(choose_default(&points, 2.0).unwrap().0.threshold, 0.3);
        // Nothing reaches 4×: the fastest point, flagged.
        let points = [point(0.1, 0.91, 1.2), point(0.4, 0.85, 3.0)];
        let (p, reached) = choose_default(&points, 4.0).unwrap();
        assert_eq!((p.threshold, reached), (0.4, false));
        assert!(choose_default(&[], 2.0).is_none());
    }
}
