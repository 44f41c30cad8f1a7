//! The benchmark behind `cosee-edge bench`: what early exit saves in wall-clock time on this machine.
//!
//! Papers report layer counts (Eq. 12); this measures milliseconds. Every input runs at full depth (every layer
//! and exit, no early exit: what the engine pays for a sample that never meets τ) and with real early exit at each
//! benchmarked τ, *interleaved per input* — full depth first on even inputs, last on odd ones, and the τ order
//! rotating — so that frequency scaling, thermal throttling or a noisy neighbour hit both sides equally. The
//! realized wall-clock speed-up is the ratio of the mean latencies on the same inputs in the same run.
//!
//! The same measurements give the per-stage cost against the token count, fitted into a [`DeviceProfile`] for
//! `tune` and the controller. The result is one struct; the table and the JSON are two printers over it.

use crate::answer::{Stage, StageTimes};
use crate::backend::Backend;
use crate::engine::{Engine, ExitPolicy, FullDepth};
use crate::error::{LoadError, RunError};
use crate::glue::{self, DataError, Example, Task};
use crate::metrics::{accuracy, f1_binary, percentile, SweepPoint};
use crate::profile::{cpu_model, CostFit, DeviceProfile, ProfileError, ProfileOrigin, StageSample};
use crate::signal::{argmax, ExitSignal};
use crate::tokenize::Input;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{0}: no inputs to benchmark")]
    NoInputs(String),
    #[error("every input failed; the first: input {index}: {message}")]
    AllFailed { index: usize, message: String },
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

/// Reads the benchmark inputs: a GLUE TSV of `task` (labelled or not), or plain text, one input per line (a pair as
/// `first<TAB>second`), when `plain` is set or the first line is not a GLUE header of `task`.
pub fn read_inputs(path: &Path, task: Task, plain: bool) -> Result<Vec<Example>, BenchError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: display.clone(), source })?;
    let examples = if plain {
        plain_lines(&text, task.is_pair())
    } else {
        match glue::parse_tsv(task, &text, &display) {
            Ok(ex) => ex,
            // No header of this task: the file is plain text (or another task's file, which reads as text too).
            Err(DataError::MissingColumn { .. }) => plain_lines(&text, task.is_pair()),
            Err(e) => return Err(e.into()),
        }
    };
    if examples.is_empty() {
        return Err(BenchError::NoInputs(display));
    }
    Ok(examples)
}

fn plain_lines(text: &str, pair_task: bool) -> Vec<Example> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let input = Input::from_line(l, pair_task);
            Example { text_a: input.text.to_string(), text_b: input.pair.map(str::to_string), label: None }
        })
        .collect()
}

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    /// The signal (default: the package's).
    pub signal: Option<ExitSignal>,
    /// The τ reported at the top level (default: the package's default threshold).
    pub threshold: Option<f32>,
    /// Also measure every τ of this list (`--sweep`); the top-level τ is added if missing.
    pub sweep: Option<Vec<f32>>,
    /// Untimed runs before measuring (each runs full depth and every τ once).
    pub warmup: usize,
    /// Measure only the first N inputs.
    pub limit: Option<usize>,
    /// Run every input at full depth too (needed for the wall-clock speed-up; `tune`'s verification skips it).
    pub full_depth: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self { signal: None, threshold: None, sweep: None, warmup: 3, limit: None, full_depth: true }
    }
}

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

/// The measurements at one τ: the τ sweep's [`SweepPoint`] of the measured exits (its accuracy and F1 optional, as
/// bench also takes unlabelled text), with the latencies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdResult {
    pub threshold: f32,
    /// Over the labelled inputs; absent for plain text.
    pub accuracy: Option<f64>,
    /// F1 of the positive class, for the tasks GLUE scores by it (MRPC, QQP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    /// Paper Eq. (12) on the measured exit layers.
    pub layer_speedup: f64,
    /// Mean full-depth latency / mean early-exit latency on the same inputs (absent without full-depth runs).
    pub wall_speedup: Option<f64>,
    /// Wall-clock latency of `Engine::classify_with`, tokenizer included.
    pub latency_ms: LatencyStats,
    /// Inputs exiting at layers 1..=M.
    pub exit_histogram: Vec<usize>,
    /// Inputs whose real exit layer differs from the one the full-depth logits imply (should be 0; non-zero means
    /// the early-exit path and the full-depth path compute different numbers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_mismatches: Option<usize>,
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
    /// Package load: validation, ONNX parse and plan optimization of every stage.
    pub cold_start_ms: f64,
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

/// Loads a package and times it: the cold start.
pub fn load_timed(dir: &Path) -> Result<(Engine, f64), LoadError> {
    let start = Instant::now();
    let engine = Engine::load(dir)?;
    Ok((engine, start.elapsed().as_secs_f64() * 1e3))
}

/// Peak resident set size from `/proc/self/status` (VmHWM), megabytes; `None` where there is no procfs.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

/// One input's early-exit runs (one per τ) and its full-depth run with its wall time.
type InputRuns = (Vec<Timed>, Option<(FullDepth, f64)>);

/// One timed early-exit run.
struct Timed {
    wall_ms: f64,
    exit_layer: usize,
    label: usize,
    stage_ms: StageTimes,
    tokens: usize,
}

fn sample_of(stage_ms: &StageTimes, tokens: usize, wall_ms: f64) -> StageSample {
    let mut s = StageSample {
        tokens,
        tokenize_ms: 0.0,
        embeddings_ms: 0.0,
        layer_ms: Vec::new(),
        exit_ms: Vec::new(),
        wall_ms,
    };
    for (stage, ms) in stage_ms.iter() {
        match stage {
            Stage::Tokenize => s.tokenize_ms = ms,
            Stage::Embeddings => s.embeddings_ms = ms,
            Stage::Layer(_) => s.layer_ms.push(ms),
            Stage::Exit(_) => s.exit_ms.push(ms),
        }
    }
    s
}

fn early_exit<B: Backend>(engine: &Engine<B>, input: &Input, policy: ExitPolicy) -> Result<Timed, RunError> {
    let start = Instant::now();
    let a = engine.classify_with(input, policy)?;
    let wall_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok(Timed { wall_ms, exit_layer: a.exit_layer, label: a.label_index, stage_ms: a.stage_ms, tokens: a.tokens })
}

fn full_depth<B: Backend>(engine: &Engine<B>, input: &Input) -> Result<(FullDepth, f64), RunError> {
    let start = Instant::now();
    let f = engine.run_all_exits(input)?;
    Ok((f, start.elapsed().as_secs_f64() * 1e3))
}

/// Measures `examples` on a loaded engine. `progress(done, total)` is called after each input.
pub fn run<B: Backend>(
    engine: &Engine<B>,
    cold_start_ms: f64,
    model: &str,
    data: &str,
    examples: &[Example],
    options: &BenchOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<BenchRun, BenchError> {
    let manifest = engine.manifest();
    let m = engine.num_layers();
    let signal = options.signal.unwrap_or(manifest.signal.name);
    let main_tau = options.threshold.unwrap_or(manifest.default_threshold);
    let mut taus: Vec<f32> = vec![main_tau];
    if let Some(sweep) = &options.sweep {
        taus = sweep.clone();
        if !taus.iter().any(|t| (t - main_tau).abs() < 1e-6) {
            taus.push(main_tau);
        }
        taus.sort_by(f32::total_cmp);
        taus.dedup();
    }
    let main_index = taus.iter().position(|t| (t - main_tau).abs() < 1e-6).unwrap_or(0);
    let examples = &examples[..options.limit.unwrap_or(examples.len()).min(examples.len())];
    if examples.is_empty() {
        return Err(BenchError::NoInputs(data.to_string()));
    }
    let policies: Vec<ExitPolicy> = taus.iter().map(|&threshold| ExitPolicy { signal, threshold }).collect();

    // Warm-up: caches, allocator pools and lazily initialized kernels; errors here are reported by the real pass.
    for e in examples.iter().cycle().take(options.warmup) {
        let input = Input::from(e);
        let _ = engine.run_all_exits(&input);
        for p in &policies {
            let _ = engine.classify_with(&input, *p);
        }
    }

    let k = policies.len();
    let mut ee: Vec<Vec<Timed>> = (0..k).map(|_| Vec::with_capacity(examples.len())).collect();
    let mut full: Vec<(FullDepth, f64)> = Vec::with_capacity(examples.len());
    let mut labels: Vec<Option<usize>> = Vec::with_capacity(examples.len());
    let mut failed = Vec::new();
    for (i, e) in examples.iter().enumerate() {
        let input = Input::from(e);
        let result = (|| -> Result<InputRuns, RunError> {
            let full_first = i % 2 == 0;
            let mut f = None;
            if options.full_depth && full_first {
                f = Some(full_depth(engine, &input)?);
            }
            let mut runs: Vec<Option<Timed>> = (0..k).map(|_| None).collect();
            for j in 0..k {
                let idx = (i + j) % k;
                runs[idx] = Some(early_exit(engine, &input, policies[idx])?);
            }
            if options.full_depth && !full_first {
                f = Some(full_depth(engine, &input)?);
            }
            Ok((runs.into_iter().flatten().collect(), f))
        })();
        match result {
            Ok((runs, f)) => {
                for (j, r) in runs.into_iter().enumerate() {
                    ee[j].push(r);
                }
                if let Some(f) = f {
                    full.push(f);
                }
                labels.push(e.label);
            }
            Err(err) => failed.push(FailedInput { input: i + 1, error: err.to_string() }),
        }
        progress(i + 1, examples.len());
    }
    let n = labels.len();
    if n == 0 {
        let first = failed.into_iter().next();
        let (index, message) = first.map_or((0, "no input".into()), |f| (f.input, f.error));
        return Err(BenchError::AllFailed { index, message });
    }

    let labelled: Vec<usize> = (0..n).filter(|&i| labels[i].is_some()).collect();
    let gold: Vec<usize> = labelled.iter().filter_map(|&i| labels[i]).collect();
    let task = manifest.task;
    let score = |pred: &dyn Fn(usize) -> usize| -> (Option<f64>, Option<f64>) {
        if labelled.is_empty() {
            return (None, None);
        }
        let p: Vec<usize> = labelled.iter().map(|&i| pred(i)).collect();
        (Some(accuracy(&p, &gold)), task.reports_f1().then(|| f1_binary(&p, &gold)))
    };
    let full_ms: Vec<f64> = full.iter().map(|f| f.1).collect();
    let full_mean = (!full_ms.is_empty()).then(|| full_ms.iter().sum::<f64>() / full_ms.len() as f64);

    let results: Vec<ThresholdResult> = (0..k)
        .map(|j| {
            let runs = &ee[j];
            let layers: Vec<usize> = runs.iter().map(|r| r.exit_layer).collect();
            let answers: Vec<usize> = labelled.iter().map(|&i| runs[i].label).collect();
            let point = SweepPoint::new(taus[j], &layers, m, &answers, &gold, task.reports_f1());
            let ms: Vec<f64> = runs.iter().map(|r| r.wall_ms).collect();
            let latency = LatencyStats::of(&ms);
            let mismatches = (!full.is_empty())
                .then(|| runs.iter().zip(&full).filter(|(r, f)| f.0.exit_layer(policies[j]) != r.exit_layer).count());
            let scored = !labelled.is_empty();
            ThresholdResult {
                threshold: point.threshold,
                accuracy: scored.then_some(point.accuracy),
                f1: point.f1.filter(|_| scored),
                layer_speedup: point.layer_speedup,
                wall_speedup: full_mean.map(|f| f / latency.mean),
                latency_ms: latency,
                exit_histogram: point.exit_histogram,
                exit_mismatches: mismatches,
            }
        })
        .collect();

    // Profile samples: every early-exit run and every full-depth run.
    let mut samples: Vec<StageSample> = Vec::with_capacity(n * (k + 1));
    for runs in &ee {
        samples.extend(runs.iter().map(|r| sample_of(&r.stage_ms, r.tokens, r.wall_ms)));
    }
    samples.extend(full.iter().map(|(f, ms)| sample_of(&f.stage_ms, f.tokens, *ms)));
    let token_counts: Vec<usize> = ee[main_index].iter().map(|r| r.tokens).collect();
    let truncated = full.iter().filter(|f| f.0.truncated).count();
    let tokens_f: Vec<f64> = token_counts.iter().map(|&t| t as f64).collect();
    let tokens = TokenStats {
        mean: tokens_f.iter().sum::<f64>() / n as f64,
        p50: percentile(&tokens_f, 50.0),
        max: token_counts.iter().copied().max().unwrap_or(0),
        truncated,
    };

    let full_labels: Vec<usize> = full.iter().map(|f| f.0.logits.last().map_or(0, |z| argmax(z))).collect();
    let full_depth_accuracy = if full.is_empty() { None } else { score(&|i| full_labels[i]).0 };
    let stage_costs = stage_costs(&samples, &full)?;
    let result = BenchResult {
        model: model.to_string(),
        task,
        signal,
        num_layers: m,
        hidden_size: manifest.hidden_size,
        quantization: format!("{:?}", manifest.quantization.scheme).to_lowercase(),
        data: data.to_string(),
        n,
        failed,
        main: results[main_index].clone(),
        full_depth_latency_ms: (!full_ms.is_empty()).then(|| LatencyStats::of(&full_ms)),
        full_depth_accuracy,
        cold_start_ms,
        peak_rss_mb: peak_rss_mb(),
        tokens,
        stage_costs,
        sweep: options.sweep.is_some().then_some(results),
    };
    Ok(BenchRun { result, samples, token_counts })
}

/// Buckets (by powers of two of the token count) over the full-depth runs, or over all runs without them.
fn stage_costs(samples: &[StageSample], full: &[(FullDepth, f64)]) -> Result<StageCosts, ProfileError> {
    let fit = |name: &str, f: &dyn Fn(&StageSample) -> Vec<f64>| {
        let pts: Vec<(usize, f64)> =
            samples.iter().flat_map(|s| f(s).into_iter().map(move |ms| (s.tokens, ms))).collect();
        CostFit::fit(name, &pts)
    };
    let basis: Vec<StageSample> = if full.is_empty() {
        samples.to_vec()
    } else {
        full.iter().map(|(f, ms)| sample_of(&f.stage_ms, f.tokens, *ms)).collect()
    };
    let mut by_tokens = Vec::new();
    let mut lo = 1usize;
    let max = basis.iter().map(|s| s.tokens).max().unwrap_or(0);
    while lo <= max {
        // 1–16, 17–32, 33–64, 65–128, …
        let hi = if lo == 1 { 16 } else { 2 * (lo - 1) };
        let inside: Vec<&StageSample> = basis.iter().filter(|s| (lo..=hi).contains(&s.tokens)).collect();
        if !inside.is_empty() {
            let mean = |f: &dyn Fn(&StageSample) -> (f64, usize)| {
                let (sum, count) = inside.iter().map(|s| f(s)).fold((0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
                sum / count.max(1) as f64
            };
            by_tokens.push(TokenBucket {
                min_tokens: lo,
                max_tokens: hi,
                inputs: inside.len(),
                tokenize_ms: mean(&|s| (s.tokenize_ms, 1)),
                embeddings_ms: mean(&|s| (s.embeddings_ms, 1)),
                layer_ms: mean(&|s| (s.layer_ms.iter().sum(), s.layer_ms.len())),
                exit_ms: mean(&|s| (s.exit_ms.iter().sum(), s.exit_ms.len())),
            });
        }
        lo = hi + 1;
    }
    // Mean of every individual stage over the runs that executed it.
    let mut mean_ms: Vec<(String, f64, usize)> = Vec::new();
    let all_times = full.iter().map(|f| &f.0.stage_ms);
    for times in all_times {
        for (stage, ms) in times.iter() {
            let name = stage.to_string();
            match mean_ms.iter_mut().find(|e| e.0 == name) {
                Some(e) => {
                    e.1 += ms;
                    e.2 += 1;
                }
                None => mean_ms.push((name, ms, 1)),
            }
        }
    }
    Ok(StageCosts {
        by_tokens,
        tokenize: fit("tokenize", &|s| vec![s.tokenize_ms])?,
        embeddings: fit("embeddings", &|s| vec![s.embeddings_ms])?,
        layer: fit("layer", &|s| s.layer_ms.clone())?,
        exit: fit("exit", &|s| s.exit_ms.clone())?,
        overhead: fit("overhead", &|s| {
            let inside =
                s.tokenize_ms + s.embeddings_ms + s.layer_ms.iter().sum::<f64>() + s.exit_ms.iter().sum::<f64>();
            vec![(s.wall_ms - inside).max(0.0)]
        })?,
        mean_ms: mean_ms.into_iter().map(|(stage, sum, count)| StageMean { stage, ms: sum / count as f64 }).collect(),
    })
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

fn hist(h: &[usize]) -> String {
    h.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" ")
}

/// The human table.
pub fn format_table(r: &BenchResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model {} ({}, {} layers, {}), {} inputs from {}{}",
        r.model,
        r.task,
        r.num_layers,
        r.quantization,
        r.n,
        r.data,
        if r.failed.is_empty() { String::new() } else { format!(" ({} failed)", r.failed.len()) }
    );
    let _ = writeln!(
        s,
        "cold start {:.1} ms (load + optimize), peak RSS {} MB, tokens mean {:.1} / p50 {:.0} / max {} ({} truncated)",
        r.cold_start_ms,
        opt(r.peak_rss_mb, 1),
        r.tokens.mean,
        r.tokens.p50,
        r.tokens.max,
        r.tokens.truncated
    );
    let main = &r.main;
    let _ = writeln!(
        s,
        "\n{} τ = {}: accuracy {}{}  layer speed-up {:.2}×  wall speed-up {}×",
        r.signal,
        main.threshold,
        opt(main.accuracy, 4),
        main.f1.map(|f| format!("  F1 {f:.4}")).unwrap_or_default(),
        main.layer_speedup,
        opt(main.wall_speedup, 2)
    );
    let _ = writeln!(s, "{:<14}{:>9}{:>9}{:>9}{:>9}", "latency ms", "p50", "p95", "p99", "mean");
    let row =
        |name: &str, l: &LatencyStats| format!("{name:<14}{:>9.3}{:>9.3}{:>9.3}{:>9.3}\n", l.p50, l.p95, l.p99, l.mean);
    s.push_str(&row("early exit", &main.latency_ms));
    if let Some(f) = &r.full_depth_latency_ms {
        s.push_str(&row("full depth", f));
    }
    if let Some(acc) = r.full_depth_accuracy {
        let _ = writeln!(s, "full-depth accuracy {acc:.4}");
    }
    let _ = writeln!(s, "exit histogram (layers 1..{}): {}", r.num_layers, hist(&main.exit_histogram));
    if let Some(sweep) = &r.sweep {
        let _ = writeln!(
            s,
            "\n{:>8}{:>9}{:>8}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}  exit histogram",
            "τ", "accuracy", "F1", "layer×", "wall×", "p50", "p95", "p99", "mean"
        );
        for t in sweep {
            let _ = writeln!(
                s,
                "{:>8}{:>9}{:>8}{:>9.2}{:>9}{:>9.3}{:>9.3}{:>9.3}{:>9.3}  {}",
                t.threshold,
                opt(t.accuracy, 4),
                opt(t.f1, 4),
                t.layer_speedup,
                opt(t.wall_speedup, 2),
                t.latency_ms.p50,
                t.latency_ms.p95,
                t.latency_ms.p99,
                t.latency_ms.mean,
                hist(&t.exit_histogram)
            );
        }
    }
    let c = &r.stage_costs;
    let _ = writeln!(s, "\nstage cost, ms per call (full-depth runs)");
    let _ =
        writeln!(s, "{:>10}{:>7}{:>10}{:>12}{:>9}{:>9}", "tokens", "inputs", "tokenize", "embeddings", "layer", "exit");
    for b in &c.by_tokens {
        let _ = writeln!(
            s,
            "{:>10}{:>7}{:>10.3}{:>12.3}{:>9.3}{:>9.3}",
            format!("{}-{}", b.min_tokens, b.max_tokens),
            b.inputs,
            b.tokenize_ms,
            b.embeddings_ms,
            b.layer_ms,
            b.exit_ms
        );
    }
    let fit = |name: &str, f: &CostFit| {
        format!("{name:<11}{:.4} + {:.3e}·t + {:.3e}·t²  (rmse {:.4} ms, n {})\n", f.a, f.b, f.c, f.rmse_ms, f.samples)
    };
    s.push_str("fitted ms(t), t = tokens:\n");
    s.push_str(&fit("tokenize", &c.tokenize));
    s.push_str(&fit("embeddings", &c.embeddings));
    s.push_str(&fit("layer", &c.layer));
    s.push_str(&fit("exit", &c.exit));
    s.push_str(&fit("overhead", &c.overhead));
    s
}

/// The JSON printer.
pub fn to_json(r: &BenchResult) -> String {
    serde_json::to_string_pretty(r).expect("a bench result always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_stats_by_hand() {
        let l = LatencyStats::of(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!((l.p50, l.mean), (3.0, 3.0));
        assert!((l.p95 - 4.8).abs() < 1e-12 && (l.p99 - 4.96).abs() < 1e-12);
        assert!(LatencyStats::of(&[]).mean.is_nan());
    }

    #[test]
    fn inputs_from_tsv_or_plain_text() {
        let dir = tempfile::tempdir().unwrap();
        let tsv = dir.path().join("dev.tsv");
        std::fs::write(&tsv, "sentence\tlabel\ngood .\t1\nbad .\t0\n").unwrap();
        let ex = read_inputs(&tsv, Task::Sst2, false).unwrap();
        assert_eq!((ex.len(), ex[0].label), (2, Some(1)));
        // Plain lines: no header, no labels; a tab in a single-text task is just text.
        let txt = dir.path().join("lines.txt");
        std::fs::write(&txt, "a fine film\n\nnot\tgood\n").unwrap();
        let ex = read_inputs(&txt, Task::Sst2, false).unwrap();
        assert_eq!(ex.len(), 2);
        assert!(ex.iter().all(|e| e.label.is_none() && e.text_b.is_none()));
        let ex = read_inputs(&txt, Task::Rte, true).unwrap();
        assert_eq!(ex[1].text_b.as_deref(), Some("good"));
        // A real TSV error is reported, not read as text.
        std::fs::write(&tsv, "sentence\tlabel\ngood .\tmaybe\n").unwrap();
        assert!(matches!(read_inputs(&tsv, Task::Sst2, false), Err(BenchError::Data(DataError::UnknownLabel { .. }))));
        std::fs::write(&txt, "\n\n").unwrap();
        assert!(matches!(read_inputs(&txt, Task::Sst2, true), Err(BenchError::NoInputs(_))));
    }

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let mb = peak_rss_mb().unwrap();
            assert!(mb > 0.1 && mb < 1e6, "{mb}");
        }
    }

    #[test]
    fn token_buckets_are_powers_of_two() {
        let sample = |tokens: usize, layer: f64| StageSample {
            tokens,
            tokenize_ms: 0.1,
            embeddings_ms: 0.2,
            layer_ms: vec![layer, layer],
            exit_ms: vec![0.01, 0.01],
            wall_ms: 2.0 * layer + 0.4,
        };
        let samples =
            [sample(5, 1.0), sample(16, 2.0), sample(17, 3.0), sample(32, 4.0), sample(33, 5.0), sample(100, 6.0)];
        let costs = stage_costs(&samples, &[]).unwrap();
        let ranges: Vec<(usize, usize, usize)> =
            costs.by_tokens.iter().map(|b| (b.min_tokens, b.max_tokens, b.inputs)).collect();
        assert_eq!(ranges, vec![(1, 16, 2), (17, 32, 2), (33, 64, 1), (65, 128, 1)]);
        assert!((costs.by_tokens[0].layer_ms - 1.5).abs() < 1e-12);
        assert!((costs.by_tokens[1].exit_ms - 0.01).abs() < 1e-12);
    }

    #[test]
    fn stage_samples_split_by_stage() {
        let mut t = StageTimes::default();
        for (s, us) in [(Stage::Tokenize, 10), (Stage::Embeddings, 20), (Stage::Layer(1), 300), (Stage::Exit(1), 5)] {
            t.push(s, std::time::Duration::from_micros(us));
        }
        t.push(Stage::Layer(2), std::time::Duration::from_micros(310));
        let s = sample_of(&t, 7, 1.0);
        assert_eq!((s.tokens, s.layer_ms.len(), s.exit_ms.len()), (7, 2, 1));
        assert!((s.tokenize_ms - 0.01).abs() < 1e-12 && (s.layer_ms[1] - 0.31).abs() < 1e-12);
    }
}
