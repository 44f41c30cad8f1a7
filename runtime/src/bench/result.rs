//! What a bench run reports: one result struct that the table and the JSON print.

use crate::glue::Task;
use crate::metrics::{percentile, SweepPoint};
use crate::profile::{cpu_model, CostFit, DeviceProfile, ProfileError, ProfileOrigin, StageSample};
use crate::signal::ExitSignal;
use serde::Serialize;

/// p50 / p95 / p99 / mean of a set of latencies, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyStats {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub mean: f64,
}

impl LatencyStats {
    pub fn of(ms: &[f64]) -> Self {
        let mean = if ms.is_empty() { f64::NAN } else { ms.iter().sum::<f64>() / ms.len() as f64 };
        Self { p50: percentile(ms, 50.0), p95: percentile(ms, 95.0), p99: percentile(ms, 99.0), mean }
    }
}

/// The measurements at one τ: the τ sweep's [`SweepPoint`] of the measured exits, with the latencies.
///
/// bench also takes unlabelled text: then the point's accuracy is NaN (which JSON writes as `null`) and its F1 is
/// absent; [`ThresholdResult::accuracy`] says which.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdResult {
    /// τ, accuracy and F1 over the labelled inputs, Eq. (12) and the exit histogram of the measured exit layers.
    #[serde(flatten)]
    pub point: SweepPoint,
    /// Mean full-depth latency / mean early-exit latency on the same inputs (absent without full-depth runs).
    pub wall_speedup: Option<f64>,
    /// Wall-clock latency of `Engine::classify_with`, tokenizer included.
    pub latency_ms: LatencyStats,
    /// Inputs whose real exit layer differs from the one the full-depth logits imply (should be 0; non-zero means
    /// the early-exit path and the full-depth path compute different numbers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_mismatches: Option<usize>,
}

impl ThresholdResult {
    /// The point of inputs of which `labelled` carried a label: with none, nothing is scored.
    pub fn new(mut point: SweepPoint, labelled: usize, latency_ms: LatencyStats) -> Self {
        if labelled == 0 {
            point.accuracy = f64::NAN;
            point.f1 = None;
        }
        Self { point, wall_speedup: None, latency_ms, exit_mismatches: None }
    }

    /// Over the labelled inputs; `None` for plain text.
    pub fn accuracy(&self) -> Option<f64> {
        Some(self.point.accuracy).filter(|a| !a.is_nan())
    }
}

/// Mean cost of each stage type for inputs of a range of token counts (full-depth runs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenBucket {
    pub min_tokens: usize,
    pub max_tokens: usize,
    pub inputs: usize,
    pub tokenize_ms: f64,
    pub embeddings_ms: f64,
    /// Mean over the layers (and inputs) of one layer.
    pub layer_ms: f64,
    pub exit_ms: f64,
}

/// Per-stage cost against the token count: buckets, fitted curves and the mean of every individual stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageCosts {
    pub by_tokens: Vec<TokenBucket>,
    pub tokenize: CostFit,
    pub embeddings: CostFit,
    pub layer: CostFit,
    pub exit: CostFit,
    pub overhead: CostFit,
    /// Mean milliseconds of every stage (`tokenize`, `embeddings`, `layer_01`, `exit_01`, …) over the runs that
    /// executed it.
    pub mean_ms: Vec<StageMean>,
}

/// Mean time of one stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageMean {
    pub stage: String,
    pub ms: f64,
}

/// An input that could not be classified.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedInput {
    /// 1-based position in the data file's inputs.
    pub input: usize,
    pub error: String,
}

/// Token counts of the measured inputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TokenStats {
    pub mean: f64,
    pub p50: f64,
    pub max: usize,
    /// Inputs cut to the package's `max_seq_len`.
    pub truncated: usize,
}

/// Everything `cosee-edge bench` reports. Top-level latency and accuracy keys are those of `threshold`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchResult {
    pub model: String,
    pub task: Task,
    pub signal: ExitSignal,
    pub num_layers: usize,
    pub hidden_size: usize,
    pub quantization: String,
    /// The engine that ran the stages (`tract`, `onnxruntime`).
    pub backend: String,
    pub data: String,
    /// Inputs measured (failed inputs excluded).
    pub n: usize,
    /// Inputs that could not be classified (empty lines…), with their 1-based index and message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedInput>,
    #[serde(flatten)]
    pub main: ThresholdResult,
    pub full_depth_latency_ms: Option<LatencyStats>,
    /// Accuracy of the last exit (every layer), over the labelled inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_depth_accuracy: Option<f64>,
    /// Package load until the engine answers: files checked, every stage read and checked, the stages every input
    /// needs (embeddings, layer 1, exit 1) planned.
    pub cold_start_ms: f64,
    /// Package load until every stage is planned (tract plans the deeper layers in the background); nothing is
    /// timed before then.
    pub all_stages_ms: f64,
    /// Peak resident set size of the process (Linux VmHWM), megabytes.
    pub peak_rss_mb: Option<f64>,
    pub tokens: TokenStats,
    pub stage_costs: StageCosts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Vec<ThresholdResult>>,
}

/// A bench run: the result, and the measurements the device profile is fitted from.
#[derive(Debug, Clone)]
pub struct BenchRun {
    pub result: BenchResult,
    pub samples: Vec<StageSample>,
    pub token_counts: Vec<usize>,
}

impl BenchRun {
    /// The device profile of this run.
    pub fn profile(&self) -> Result<DeviceProfile, ProfileError> {
        let r = &self.result;
        let origin = ProfileOrigin {
            arch: std::env::consts::ARCH.to_string(),
            cpu: cpu_model(),
            package: r.model.clone(),
            quantization: r.quantization.clone(),
            num_layers: r.num_layers,
            hidden_size: r.hidden_size,
            data: r.data.clone(),
            inputs: r.n,
        };
        DeviceProfile::fit(origin, &self.samples, &self.token_counts)
    }
}
