//! The evaluation result and its files: one JSON document (read back by `cosee-trainer plot`), a CSV of the
//! τ sweep and a CSV of the per-layer numbers, and a plain-text table for the terminal.

use crate::error::{io_err, Result};
use cosee_format::glue::Task;
use cosee_format::json::JsonFile;
use cosee_format::metrics::SweepPoint;
use cosee_format::signal::ExitSignal;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// One exit, evaluated on every sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    /// 1-based.
    pub layer: usize,
    pub accuracy: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Difficulty Inversion Score of the signal at this exit; `None` when the exit is all right or all wrong.
    pub dis: Option<f64>,
    pub mean_signal: f64,
    /// Mean signal of the samples this exit gets right ("easy", as OSC splits them) and wrong ("hard").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_signal_easy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_signal_hard: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub task: Task,
    pub signal: ExitSignal,
    pub num_layers: usize,
    pub num_examples: usize,
    /// A name for plots (the run or checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub layers: Vec<LayerReport>,
    pub sweep: Vec<SweepPoint>,
    /// The task's metric (the paper's: F1 for MRPC and QQP, accuracy otherwise) at the fixed layer speed-ups of
    /// `cosee_format::metrics::REPORTED_SPEEDUPS`, read off a sweep over every distinct outcome (keys "1.5",
    /// "2.0", …; a speed-up the model never reaches is left out).
    #[serde(default)]
    pub at_speedup: std::collections::BTreeMap<String, f64>,
}

/// The name of the metric [`EvalReport::at_speedup`] holds for `task`.
pub fn task_metric(task: Task) -> &'static str {
    if task.reports_f1() {
        "f1"
    } else {
        "accuracy"
    }
}

/// The key of a speed-up in [`EvalReport::at_speedup`]: one decimal ("2.0", "2.5").
pub fn speedup_key(speedup: f64) -> String {
    format!("{speedup:.1}")
}

/// How `eval.json` is read.
pub const EVAL_REPORT_JSON: JsonFile = JsonFile::plain("an evaluation report");

impl EvalReport {
    pub fn read(path: &Path) -> Result<Self> {
        Ok(EVAL_REPORT_JSON.read(path)?)
    }

    pub fn to_json(&self) -> String {
        cosee_format::json::pretty(self)
    }

    /// `tau,accuracy[,f1],speedup,mean_exit_layer,exit_1,…,exit_M`.
    pub fn sweep_csv(&self) -> String {
        let f1 = self.task.reports_f1();
        let mut out = String::from("tau,accuracy");
        if f1 {
            out.push_str(",f1");
        }
        out.push_str(",speedup,mean_exit_layer");
        for m in 1..=self.num_layers {
            let _ = write!(out, ",exit_{m}");
        }
        out.push('\n');
        for p in &self.sweep {
            let _ = write!(out, "{:.4},{:.6}", p.threshold, p.accuracy);
            if f1 {
                let _ = write!(out, ",{:.6}", p.f1.unwrap_or(f64::NAN));
            }
            let _ = write!(out, ",{:.6},{:.6}", p.layer_speedup, p.mean_exit_layer());
            for n in &p.exit_histogram {
                let _ = write!(out, ",{n}");
            }
            out.push('\n');
        }
        out
    }

    /// `layer,accuracy[,f1],loss,dis,mean_signal` (empty DIS where undefined).
    pub fn layers_csv(&self) -> String {
        let f1 = self.task.reports_f1();
        let mut out = String::from(if f1 {
            "layer,accuracy,f1,loss,dis,mean_signal\n"
        } else {
            "layer,accuracy,loss,dis,mean_signal\n"
        });
        for l in &self.layers {
            let _ = write!(out, "{},{:.6}", l.layer, l.accuracy);
            if f1 {
                let _ = write!(out, ",{:.6}", l.f1.unwrap_or(f64::NAN));
            }
            let dis = l.dis.map(|d| format!("{d:.6}")).unwrap_or_default();
            let _ = writeln!(out, ",{:.6},{dis},{:.6}", l.loss, l.mean_signal);
        }
        out
    }

    /// Writes `<stem>.json`, `<stem>_sweep.csv` and `<stem>_layers.csv` into `dir`; returns the JSON path.
    pub fn write_files(&self, dir: &Path, stem: &str) -> Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let json = dir.join(format!("{stem}.json"));
        for (path, text) in [
            (json.clone(), self.to_json()),
            (dir.join(format!("{stem}_sweep.csv")), self.sweep_csv()),
            (dir.join(format!("{stem}_layers.csv")), self.layers_csv()),
        ] {
            std::fs::write(&path, text).map_err(io_err(&path))?;
        }
        Ok(json)
    }

    /// A terminal table of the per-layer numbers and the sweep.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{} dev, {} examples, signal {}", self.task, self.num_examples, self.signal);
        let _ = writeln!(out, "{:>5} {:>8} {:>8} {:>8}", "layer", "acc", "loss", "DIS");
        for l in &self.layers {
            let dis = l.dis.map(|d| format!("{d:.4}")).unwrap_or_else(|| "-".into());
            let _ = writeln!(out, "{:>5} {:>8.4} {:>8.4} {:>8}", l.layer, l.accuracy, l.loss, dis);
        }
        let f1 = self.task.reports_f1();
        let _ = writeln!(
            out,
            "{:>6} {:>8}{} {:>8} {:>6}  exits per layer",
            "tau",
            "acc",
            if f1 { format!(" {:>8}", "F1") } else { String::new() },
            "speedup",
            "mean m"
        );
        for p in &self.sweep {
            let f1_col = if f1 { format!(" {:>8.4}", p.f1.unwrap_or(f64::NAN)) } else { String::new() };
            let hist: Vec<String> = p.exit_histogram.iter().map(usize::to_string).collect();
            let _ = writeln!(
                out,
                "{:>6.3} {:>8.4}{f1_col} {:>7.2}x {:>6.2}  {}",
                p.threshold,
                p.accuracy,
                p.layer_speedup,
                p.mean_exit_layer(),
                hist.join(" ")
            );
        }
        if !self.at_speedup.is_empty() {
            let cells: Vec<String> = self.at_speedup.iter().map(|(s, v)| format!("{s}x {v:.4}")).collect();
            let _ = writeln!(out, "{} at fixed speed-ups: {}", task_metric(self.task), cells.join(", "));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip() {
        let report = EvalReport {
            task: Task::Mrpc,
            signal: ExitSignal::Energy,
            num_layers: 2,
            num_examples: 3,
            label: Some("run".into()),
            layers: vec![
                LayerReport {
                    layer: 1,
                    accuracy: 0.5,
                    f1: Some(0.4),
                    loss: 0.7,
                    dis: None,
                    mean_signal: 0.3,
                    mean_signal_easy: None,
                    mean_signal_hard: None,
                },
                LayerReport {
                    layer: 2,
                    accuracy: 0.9,
                    f1: Some(0.8),
                    loss: 0.2,
                    dis: Some(0.75),
                    mean_signal: 0.1,
                    mean_signal_easy: Some(0.05),
                    mean_signal_hard: Some(0.4),
                },
            ],
            sweep: vec![SweepPoint {
                threshold: 0.25,
                accuracy: 0.8,
                f1: Some(0.7),
                layer_speedup: 1.5,
                exit_histogram: vec![2, 1],
            }],
            at_speedup: [("1.5".to_string(), 0.7)].into_iter().collect(),
        };
        let dir = tempfile::tempdir().unwrap();
        let json = report.write_files(dir.path(), "eval").unwrap();
        assert_eq!(EvalReport::read(&json).unwrap(), report);
        let csv = std::fs::read_to_string(dir.path().join("eval_sweep.csv")).unwrap();
        assert_eq!(csv.lines().next().unwrap(), "tau,accuracy,f1,speedup,mean_exit_layer,exit_1,exit_2");
        assert_eq!(csv.lines().nth(1).unwrap(), "0.2500,0.800000,0.700000,1.500000,1.333333,2,1");
        let layers = std::fs::read_to_string(dir.path().join("eval_layers.csv")).unwrap();
        assert_eq!(layers.lines().nth(1).unwrap(), "1,0.500000,0.400000,0.700000,,0.300000");
        assert!(report.table().contains("1.50x"));
    }
}
