//! The measurement: full depth and every τ interleaved per input, and the per-stage costs.

use crate::answer::{Stage, StageTimes};
use crate::any_backend::BackendKind;
use crate::backend::Backend;
use crate::engine::{Engine, ExitPolicy, FullDepth};
use crate::error::{LoadError, RunError};
use crate::glue::Example;
use crate::metrics::{accuracy, f1_binary, percentile, SweepPoint};
use crate::profile::{CostFit, ProfileError, StageSample};
use crate::signal::{argmax, ExitSignal};
use crate::tokenize::Input;
use std::path::Path;
use std::time::Instant;

use super::*;

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

/// How long a package took to load, in two steps (milliseconds from the start of the load).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColdStart {
    /// Until the engine answers: the files checked, every stage read, the stages every input needs planned.
    pub answers_ms: f64,
    /// Until every stage is planned (tract plans the deeper layers in the background; [`Engine::ready`]).
    pub all_stages_ms: f64,
}

/// Loads a package and times it, then waits until every stage is planned, so that nothing timed afterwards pays
/// for planning: the cold start.
pub fn load_timed(dir: &Path, backend: BackendKind) -> Result<(Engine, ColdStart), LoadError> {
    let start = Instant::now();
    let engine = Engine::load_on(dir, backend)?;
    let answers_ms = start.elapsed().as_secs_f64() * 1e3;
    engine.ready().map_err(|e| match e {
        RunError::Stage { stage, message } => {
            LoadError::InvalidGraph { path: dir.join(stage).display().to_string(), message }
        }
        other => LoadError::InvalidGraph { path: dir.display().to_string(), message: other.to_string() },
    })?;
    Ok((engine, ColdStart { answers_ms, all_stages_ms: start.elapsed().as_secs_f64() * 1e3 }))
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

pub(super) fn sample_of(stage_ms: &StageTimes, tokens: usize, wall_ms: f64) -> StageSample {
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
    cold_start: ColdStart,
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
            ThresholdResult {
                wall_speedup: full_mean.map(|f| f / latency.mean),
                exit_mismatches: mismatches,
                ..ThresholdResult::new(point, labelled.len(), latency)
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
        backend: engine.backend().name().to_string(),
        data: data.to_string(),
        n,
        failed,
        main: results[main_index].clone(),
        full_depth_latency_ms: (!full_ms.is_empty()).then(|| LatencyStats::of(&full_ms)),
        full_depth_accuracy,
        cold_start_ms: cold_start.answers_ms,
        all_stages_ms: cold_start.all_stages_ms,
        peak_rss_mb: peak_rss_mb(),
        tokens,
        stage_costs,
        sweep: options.sweep.is_some().then_some(results),
    };
    Ok(BenchRun { result, samples, token_counts })
}

/// Buckets (by powers of two of the token count) over the full-depth runs, or over all runs without them.
pub(super) fn stage_costs(samples: &[StageSample], full: &[(FullDepth, f64)]) -> Result<StageCosts, ProfileError> {
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
