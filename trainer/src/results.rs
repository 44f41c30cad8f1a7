//! The objective comparison that gets committed (`docs/results/<task>-objectives.json`): one record per
//! trained run — its objective, seed, budget and hyper-parameters from `train_config.json`, and from its dev
//! evaluation the metric at full depth and at the fixed layer speed-ups of Eq. (12). From those records: a
//! summary per objective (mean, min, max over seeds), a Markdown table and a chart (`plot::objectives`).

use crate::error::{Result, TrainerError};
use crate::eval::{task_metric, EvalReport};
use crate::train::TrainConfig;
use cosee_format::json::JsonFile;
use cosee_format::metrics::REPORTED_SPEEDUPS;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One trained run, evaluated on dev.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub task: String,
    pub objective: String,
    pub seed: u64,
    pub epochs: usize,
    pub beta0: f64,
    pub alpha: f64,
    pub epsilon: f64,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// The encoder's peak learning rate (absent in records from before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// Trained with zero-sum logits (`--centered-logits`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub centered_logits: bool,
    /// How the exits pool and how fast their heads learn (absent in records from before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_heads: Option<ExitHeads>,
    /// The fraction of train held out for tuning (absent: trained on all of train).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout_fraction: Option<f64>,
    /// "accuracy", or "f1" where the paper reports F1 (MRPC, QQP); `at_speedup` and `full_depth` are this.
    pub metric: String,
    pub full_depth_accuracy: f64,
    pub full_depth: f64,
    /// The metric at each fixed layer speed-up ("1.5", "2.0", …), as fractions.
    pub at_speedup: BTreeMap<String, f64>,
    /// Accuracy and DIS of every exit.
    pub exit_accuracy: Vec<f64>,
    pub exit_dis: Vec<Option<f64>>,
    /// Mean dev signal of each exit's right and wrong answers (the gap OSC widens).
    #[serde(default)]
    pub exit_signal_easy: Vec<Option<f64>>,
    #[serde(default)]
    pub exit_signal_hard: Vec<Option<f64>>,
    /// The last training epoch's per-exit diagnostics (mean loss weight, signal of right and wrong answers on
    /// the training batches), from `metrics.jsonl`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub train_exits: Vec<crate::train::diagnostics::ExitSummary>,
    /// Where it trained: "cpu" or "cuda" (from the `finished` line of `metrics.jsonl`; absent in records from
    /// before it was kept). Runs on another device are other numerics, so they are grouped apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The run directory's name.
    pub run: String,
}

/// The exits' heads as a run trained them: part of its recipe, like the batch size and learning rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitHeads {
    /// What each exit pools from its layer: "cls" or "mean".
    pub pooling: String,
    /// "shared" (one pooler, the reference code's), "per-exit", or "standardized per-exit" (per-exit poolers
    /// started as a standardization of what they pool).
    pub pooler: String,
    /// The heads' learning-rate multiplier over the encoder's.
    pub head_lr_scale: f64,
}

impl ExitHeads {
    fn of(config: &TrainConfig) -> Self {
        let pooler = match (config.per_exit_pooler, config.standardize_poolers) {
            (_, true) => "standardized per-exit",
            (true, false) => "per-exit",
            (false, false) => "shared",
        };
        Self { pooling: config.pooling.to_string(), pooler: pooler.into(), head_lr_scale: config.adam.head_lr_scale }
    }
}

impl std::fmt::Display for ExitHeads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = if self.pooler == "shared" { "" } else { "s" };
        write!(f, "{} pooling, {} pooler{plural}, heads ×{}", self.pooling, self.pooler, self.head_lr_scale)
    }
}

impl RunResult {
    /// The record of the run in `run_dir`, evaluated in `report`.
    pub fn from_run(run_dir: &Path, report: &EvalReport) -> Result<Self> {
        let config: TrainConfig = crate::train::state::read_config(run_dir)?;
        if config.task != report.task {
            return Err(TrainerError::Invalid(format!(
                "{}: trained on {} but the evaluation is of {}",
                run_dir.display(),
                config.task,
                report.task
            )));
        }
        let last = report.layers.last().ok_or_else(|| TrainerError::Invalid("an evaluation without exits".into()))?;
        let metric = task_metric(report.task);
        let full_depth = if metric == "f1" { last.f1.unwrap_or(f64::NAN) } else { last.accuracy };
        let epochs = match config.max_steps {
            Some(_) => 0,
            None => config.epochs,
        };
        Ok(Self {
            task: report.task.name().to_string(),
            objective: config.objective.kind.name().to_string(),
            seed: config.seed,
            epochs,
            beta0: config.objective.beta0,
            alpha: config.objective.alpha,
            epsilon: config.objective.epsilon,
            batch_size: config.batch_size,
            learning_rate: Some(config.learning_rate),
            centered_logits: config.centered_logits,
            exit_heads: Some(ExitHeads::of(&config)),
            holdout_fraction: config.holdout_fraction,
            metric: metric.to_string(),
            full_depth_accuracy: last.accuracy,
            full_depth,
            at_speedup: report.at_speedup.clone(),
            exit_accuracy: report.layers.iter().map(|l| l.accuracy).collect(),
            exit_dis: report.layers.iter().map(|l| l.dis).collect(),
            exit_signal_easy: report.layers.iter().map(|l| l.mean_signal_easy).collect(),
            exit_signal_hard: report.layers.iter().map(|l| l.mean_signal_hard).collect(),
            train_exits: last_epoch_diagnostics(run_dir),
            device: training_device(run_dir),
            run: run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        })
    }
}

/// The last line of `event` in a run's `metrics.jsonl`, if any.
fn last_metrics_event(run_dir: &Path, event: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(run_dir.join(crate::train::state::METRICS_FILE)).ok()?;
    text.lines().rev().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find(|v| v["event"] == event)
}

/// The per-exit diagnostics of the last epoch in a run's `metrics.jsonl` (empty for runs from before them).
fn last_epoch_diagnostics(run_dir: &Path) -> Vec<crate::train::diagnostics::ExitSummary> {
    last_metrics_event(run_dir, "epoch")
        .and_then(|v| serde_json::from_value(v["exits"].clone()).ok())
        .unwrap_or_default()
}

/// "cpu" or "cuda", from the device the trainer logged when it finished (`Cpu`, `Cuda(0)`).
fn training_device(run_dir: &Path) -> Option<String> {
    let logged = last_metrics_event(run_dir, "finished")?["device"].as_str()?.to_lowercase();
    Some(logged.split('(').next().unwrap_or_default().to_string())
}

/// Mean, minimum and maximum of one objective's runs at one operating point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Spread {
    fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Self { mean, min, max, runs: values.len() })
    }
}

/// One objective (with its hyper-parameters) over its seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectiveSummary {
    /// e.g. "cosee β0 1 α 0.01 · 3 ep".
    pub name: String,
    pub full_depth: Spread,
    /// At each of [`REPORTED_SPEEDUPS`], where every run reaches it.
    pub at_speedup: Vec<(f64, Option<Spread>)>,
}

/// The name a run is grouped under: the objective, and β0/α where the objective uses them.
pub fn group_name(run: &RunResult) -> String {
    let mut name = run.objective.clone();
    if matches!(run.objective.as_str(), "cosee" | "swm") {
        let _ = write!(name, " β0 {}", run.beta0);
    }
    if matches!(run.objective.as_str(), "cosee" | "osc") {
        let _ = write!(name, " α {}", run.alpha);
    }
    if run.centered_logits {
        name.push_str(" centered");
    }
    let _ = write!(name, " · {} ep", run.epochs);
    if run.device.as_deref().is_some_and(|d| d != "cpu") {
        name.push_str(" · GPU");
    }
    name
}

/// Each run's group: its [`group_name`], and its recipe where the runs given were not all trained with the same
/// one (a recipe probe), so that runs of other recipes are never averaged together. The recipe is named by the
/// parts that differ: batch size and learning rate, and the exits' heads. A record from before the heads were kept
/// differs from none (it cannot be told apart) and its name does not show them.
fn group_names(runs: &[RunResult]) -> Vec<String> {
    let differ = |key: &dyn Fn(&RunResult) -> Option<String>| {
        let known: Vec<String> = runs.iter().filter_map(key).collect();
        known.windows(2).any(|w| w[0] != w[1])
    };
    let optimizer = |r: &RunResult| match r.learning_rate {
        Some(lr) => format!("bs {} lr {lr:e}", r.batch_size),
        None => format!("bs {}", r.batch_size),
    };
    let heads = |r: &RunResult| r.exit_heads.as_ref().map(ToString::to_string);
    let (optimizer_differs, heads_differ) = (differ(&|r| Some(optimizer(r))), differ(&heads));
    runs.iter()
        .map(|r| {
            let mut name = group_name(r);
            if optimizer_differs {
                let _ = write!(name, " · {}", optimizer(r));
            }
            if let (true, Some(h)) = (heads_differ, heads(r)) {
                let _ = write!(name, " · {h}");
            }
            name
        })
        .collect()
}

/// Groups runs by [`group_names`] (in order of first appearance) and summarises each group.
pub fn summarize(runs: &[RunResult]) -> Vec<ObjectiveSummary> {
    let names = group_names(runs);
    let mut order: Vec<&String> = Vec::new();
    for name in &names {
        if !order.contains(&name) {
            order.push(name);
        }
    }
    order
        .into_iter()
        .filter_map(|name| {
            let group: Vec<&RunResult> = runs.iter().zip(&names).filter(|(_, n)| *n == name).map(|(r, _)| r).collect();
            let full_depth = Spread::of(&group.iter().map(|r| r.full_depth).collect::<Vec<_>>())?;
            let at_speedup = REPORTED_SPEEDUPS
                .iter()
                .map(|&s| {
                    let key = crate::eval::speedup_key(s);
                    let values: Vec<f64> = group.iter().filter_map(|r| r.at_speedup.get(&key).copied()).collect();
                    (s, if values.len() == group.len() { Spread::of(&values) } else { None })
                })
                .collect();
            Some(ObjectiveSummary { name: name.clone(), full_depth, at_speedup })
        })
        .collect()
}

/// A Markdown table: one row per objective, the mean metric (%) at full depth and at each fixed speed-up,
/// with the spread over seeds where there is more than one.
pub fn markdown_table(runs: &[RunResult]) -> String {
    let metric = runs.first().map_or("accuracy", |r| r.metric.as_str());
    let mut out = format!("| objective | seeds | {metric}, full depth |");
    for s in REPORTED_SPEEDUPS {
        let _ = write!(out, " {s:.1}× |");
    }
    out.push_str("\n|---|---:|---:|");
    out.push_str(&"---:|".repeat(REPORTED_SPEEDUPS.len()));
    out.push('\n');
    let cell = |s: Option<Spread>| match s {
        None => "–".to_string(),
        Some(s) if s.runs == 1 => format!("{:.2}", 100.0 * s.mean),
        Some(s) => format!("{:.2} ({:.2}–{:.2})", 100.0 * s.mean, 100.0 * s.min, 100.0 * s.max),
    };
    for g in summarize(runs) {
        let _ = write!(out, "| {} | {} | {} |", g.name, g.full_depth.runs, cell(Some(g.full_depth)));
        for (_, s) in &g.at_speedup {
            let _ = write!(out, " {} |", cell(*s));
        }
        out.push('\n');
    }
    out
}

/// How a results file is read.
pub const RESULTS_JSON: JsonFile = JsonFile::plain("a results file (cosee-trainer results)");

/// Reads a committed results file.
pub fn read(path: &Path) -> Result<Vec<RunResult>> {
    Ok(RESULTS_JSON.read(path)?)
}

/// `kept` (an earlier collection, whose run directories may be gone: `runs/` is not committed) with `fresh` (runs
/// collected now). A fresh record replaces a kept one of the same run name on the same device; the result is ordered
/// by run name, then device, as a collection of the directories would be.
pub fn merge(kept: Vec<RunResult>, fresh: Vec<RunResult>) -> Vec<RunResult> {
    let key = |r: &RunResult| (r.run.clone(), r.device.clone());
    let replaced: std::collections::BTreeSet<_> = fresh.iter().map(key).collect();
    let mut runs: Vec<RunResult> = kept.into_iter().filter(|r| !replaced.contains(&key(r))).chain(fresh).collect();
    runs.sort_by_key(key);
    runs
}

/// A record with made-up numbers, for tests of what reads records (tables, charts).
#[cfg(test)]
pub(crate) fn example_run(objective: &str, seed: u64) -> RunResult {
    RunResult {
        task: "sst-2".into(),
        objective: objective.into(),
        seed,
        epochs: 1,
        beta0: 1.0,
        alpha: 0.01,
        epsilon: 0.3,
        batch_size: 32,
        learning_rate: Some(5e-5),
        centered_logits: false,
        exit_heads: None,
        holdout_fraction: Some(0.05),
        metric: "accuracy".into(),
        full_depth_accuracy: 0.9,
        full_depth: 0.9,
        at_speedup: BTreeMap::new(),
        exit_accuracy: vec![0.8, 0.9],
        exit_dis: vec![Some(0.7), None],
        exit_signal_easy: vec![],
        exit_signal_hard: vec![],
        train_exits: vec![],
        device: None,
        run: format!("{objective}-{seed}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_earlier_records_and_replaces_a_rerun_on_the_same_device() {
        let record = |run: &str, device: &str, full: f64| RunResult {
            run: run.into(),
            device: Some(device.into()),
            full_depth: full,
            ..example_run("conventional", 42)
        };
        let kept = vec![record("b-s43", "cuda", 0.1), record("a-s42", "cuda", 0.2), record("a-s42", "cpu", 0.3)];
        let fresh = vec![record("a-s42", "cpu", 0.4), record("c-s44", "cpu", 0.5)];
        let merged = merge(kept, fresh);
        let summary: Vec<(&str, &str, f64)> =
            merged.iter().map(|r| (r.run.as_str(), r.device.as_deref().unwrap(), r.full_depth)).collect();
        assert_eq!(
            summary,
            [("a-s42", "cpu", 0.4), ("a-s42", "cuda", 0.2), ("b-s43", "cuda", 0.1), ("c-s44", "cpu", 0.5)]
        );
    }

    fn run(objective: &str, seed: u64, two: f64, three: Option<f64>) -> RunResult {
        let mut at = BTreeMap::new();
        at.insert("2.0".to_string(), two);
        if let Some(t) = three {
            at.insert("3.0".to_string(), t);
        }
        RunResult { at_speedup: at, ..example_run(objective, seed) }
    }

    #[test]
    fn a_run_directory_becomes_a_record() {
        use crate::eval::{evaluate, ExitOutputs};
        use crate::train::state::CONFIG_FILE;
        use cosee_format::glue::Task;
        use cosee_format::signal::ExitSignal;
        let dir = tempfile::tempdir().unwrap();
        let mut config = TrainConfig::new(Task::Mrpc, "bb".into(), Default::default(), dir.path().into());
        config.objective.alpha = 0.001;
        config.holdout_fraction = Some(0.05);
        std::fs::write(dir.path().join(CONFIG_FILE), serde_json::to_string(&config).unwrap()).unwrap();
        let epoch = |w: f64| {
            serde_json::json!({"event": "epoch", "exits": [{"exit": 1, "mean_weight": w, "easy_share": 0.5,
                "mean_signal_easy": 0.1, "mean_signal_hard": null}]})
            .to_string()
        };
        let metrics = format!("{}\n{}\n{{\"event\":\"finished\",\"device\":\"Cuda(0)\"}}\n", epoch(0.7), epoch(0.6));
        std::fs::write(dir.path().join(crate::train::state::METRICS_FILE), metrics).unwrap();
        // Labels [1, 1, 0]; exit 1 says 1 for all, exit 2 is right on all.
        let outputs = ExitOutputs {
            logits: vec![
                vec![vec![0.0, 3.0], vec![0.0, 1.0], vec![0.0, 2.0]],
                vec![vec![0.0, 3.0], vec![0.0, 3.0], vec![3.0, 0.0]],
            ],
            labels: vec![1, 1, 0],
        };
        let report = evaluate(&outputs, Task::Mrpc, ExitSignal::Energy, &[0.5]);
        let r = RunResult::from_run(dir.path(), &report).unwrap();
        assert_eq!((r.objective.as_str(), r.alpha, r.epochs, r.metric.as_str()), ("cosee", 0.001, 10, "f1"));
        assert_eq!((r.full_depth, r.full_depth_accuracy), (1.0, 1.0));
        let heads = r.exit_heads.as_ref().unwrap();
        assert_eq!((heads.pooling.as_str(), heads.pooler.as_str()), ("cls", "shared"), "the trainer's defaults");
        assert_eq!(heads.head_lr_scale, config.adam.head_lr_scale);
        assert_eq!(r.exit_accuracy, vec![2.0 / 3.0, 1.0]);
        // The last epoch's diagnostics, not the first's.
        assert_eq!(r.train_exits.len(), 1);
        assert_eq!(r.train_exits[0].mean_weight, 0.6);
        assert_eq!(r.device.as_deref(), Some("cuda"));
        assert_eq!(group_name(&r), "cosee β0 10 α 0.001 · 10 ep · GPU");
        // The wrong answer of exit 1 (sample 2, logits [0, 2]) has energy σ(−lse(0, 2)).
        let hard = cosee_format::signal::normalized_energy(&[0.0, 2.0]) as f64;
        assert!((r.exit_signal_hard[0].unwrap() - hard).abs() < 1e-6);
        // A report of another task is refused.
        let other = evaluate(&outputs, Task::Sst2, ExitSignal::Energy, &[0.5]);
        assert!(RunResult::from_run(dir.path(), &other).is_err());
    }

    #[test]
    fn groups_by_objective_and_spreads_over_seeds() {
        let runs = vec![
            run("cosee", 1, 0.88, Some(0.86)),
            run("conventional", 1, 0.87, Some(0.85)),
            run("cosee", 2, 0.90, None),
        ];
        let s = summarize(&runs);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "cosee β0 1 α 0.01 · 1 ep");
        assert_eq!(s[1].name, "conventional · 1 ep");
        let two = s[0].at_speedup.iter().find(|(x, _)| *x == 2.0).unwrap().1.unwrap();
        assert!((two.mean - 0.89).abs() < 1e-12 && two.min == 0.88 && two.max == 0.90 && two.runs == 2);
        // 3.0× is missing from one COSEE run: no summary rather than a mean of one.
        assert!(s[0].at_speedup.iter().find(|(x, _)| *x == 3.0).unwrap().1.is_none());
        let mut centered = run("osc", 1, 0.8, None);
        centered.centered_logits = true;
        assert_eq!(group_name(&centered), "osc α 0.01 centered · 1 ep");
        centered.device = Some("cpu".into());
        assert_eq!(group_name(&centered), "osc α 0.01 centered · 1 ep", "the CPU is the default, not named");
        // A recipe probe: runs of another batch size or learning rate form their own group, named by its recipe.
        let mut fast = run("cosee", 3, 0.80, Some(0.80));
        fast.learning_rate = Some(1e-4);
        let mut large = fast.clone();
        large.batch_size = 128;
        let probe = [runs.clone(), vec![fast, large]].concat();
        let names: Vec<String> = summarize(&probe).into_iter().map(|g| g.name).collect();
        let cosee = "cosee β0 1 α 0.01 · 1 ep";
        assert_eq!(
            names,
            [
                format!("{cosee} · bs 32 lr 5e-5"),
                "conventional · 1 ep · bs 32 lr 5e-5".into(),
                format!("{cosee} · bs 32 lr 1e-4"),
                format!("{cosee} · bs 128 lr 1e-4")
            ]
        );
        // A probe of the exits' heads: named by them; a record from before they were kept is not split off.
        let heads = |pooler: &str, scale: f64| {
            Some(ExitHeads { pooling: "mean".into(), pooler: pooler.into(), head_lr_scale: scale })
        };
        let mut recipe = run("conventional", 1, 0.86, None);
        recipe.exit_heads = heads("standardized per-exit", 20.0);
        let mut shared = run("conventional", 1, 0.85, None);
        shared.exit_heads = heads("shared", 1.0);
        let names: Vec<String> =
            summarize(&[recipe.clone(), shared, run("osc", 1, 0.84, None)]).into_iter().map(|g| g.name).collect();
        assert_eq!(
            names,
            [
                "conventional · 1 ep · mean pooling, standardized per-exit poolers, heads ×20",
                "conventional · 1 ep · mean pooling, shared pooler, heads ×1",
                "osc α 0.01 · 1 ep",
            ]
        );
        let names: Vec<String> =
            summarize(&[recipe, run("conventional", 2, 0.87, None)]).into_iter().map(|g| g.name).collect();
        assert_eq!(names, ["conventional · 1 ep"], "the same heads, or unknown ones, are not named");
        let table = markdown_table(&runs);
        assert!(
            table.contains("| cosee β0 1 α 0.01 · 1 ep | 2 | 90.00 (90.00–90.00) | – | 89.00 (88.00–90.00) |"),
            "{table}"
        );
        assert!(table.contains("| conventional · 1 ep | 1 | 90.00 | – | 87.00 | – | 85.00 |"), "{table}");
    }
}
