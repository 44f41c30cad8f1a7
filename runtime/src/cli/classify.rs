//! `cosee-edge classify --model DIR [--config FILE] [--budget-ms X] [--threshold T] [--signal NAME] [--json] [TEXT ...]`
//!
//! With TEXT arguments: one answer per text, a human line each (label, probability, exit layer / layers, signal,
//! time) or, with `--json`, one JSON object per line. Without: reads stdin one input per line (a pair as
//! `first<TAB>second`) and writes one JSON object per line, as each line is answered. A line that cannot be
//! classified (empty, whitespace only, invalid UTF-8, longer than [`cosee_runtime::MAX_LINE_BYTES`] = 1 MiB…)
//! answers `{"input": n, "error": "..."}` and the next line goes on. Every JSON object carries `input`, the 1-based
//! argument or line number it answers. With a latency budget (`--budget-ms`, or a tuned config that has one) and no
//! `--threshold`, stdin input runs under the threshold controller, exactly as `serve` (its τ changes are logged on
//! stderr).

use super::{json_line, UsageError, EXIT_INPUT_ERRORS, EXIT_OK};
use anyhow::Context;
use cosee_runtime::power::{DEFAULT_POWER_ROOT, DEFAULT_THERMAL_ROOT};
use cosee_runtime::serving;
use cosee_runtime::settings;
use cosee_runtime::tune::RuntimeConfig;
use cosee_runtime::{Answer, Engine, ExitPolicy, ExitSignal, Input, LineReader, RunError};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model package directory (written by `cosee-tools export`).
    #[arg(long, short = 'm', value_name = "DIR")]
    pub model: PathBuf,
    #[command(flatten)]
    pub backend: super::BackendArg,
    /// Exit threshold τ. Default: the package's `default_threshold`. Energy and entropy exit below τ, max_softmax
    /// above τ, patience once that many consecutive layers agree.
    #[arg(long, short = 't', value_name = "T")]
    pub threshold: Option<f32>,
    /// Exit signal: energy, entropy, max_softmax or patience. Default: the package's. Another signal than the
    /// package's needs --threshold (the default τ belongs to the package's signal).
    #[arg(long, value_name = "NAME")]
    pub signal: Option<ExitSignal>,
    /// Runtime config written by `tune`: its τ and signal replace the package's defaults (--threshold and --signal
    /// still win). With stdin input and a budget in it, the threshold controller runs as in `serve`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Latency budget in milliseconds for stdin input: the threshold controller moves τ along the calibration
    /// table to hold it (and to save energy on battery or when hot), exactly as `serve` does.
    #[arg(long, value_name = "X")]
    pub budget_ms: Option<f64>,
    /// One JSON object per input and line instead of human lines (stdin input is always answered in JSON).
    #[arg(long)]
    pub json: bool,
    /// Texts to classify, each one input (a pair as `first<TAB>second`). None: read stdin, one input per line; a
    /// line longer than 1 MiB is answered with an error and skipped.
    #[arg(value_name = "TEXT")]
    pub texts: Vec<OsString>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(budget) = args.budget_ms {
        settings::budget_ms("--budget-ms", budget).map_err(UsageError::from)?;
    }
    let tuned = args.config.as_deref().map(RuntimeConfig::read).transpose()?;
    if let Some(controlled) = controlled(&args, tuned.as_ref())? {
        return super::serve::run(controlled);
    }
    let engine = Engine::load_on(&args.model, args.backend.backend)
        .with_context(|| format!("cannot load {}", args.model.display()))?;
    let policy = policy(&engine, &args, tuned.as_ref())?;
    let pair_task = engine.manifest().task.is_pair();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = 0usize;

    if args.texts.is_empty() {
        let stdin = std::io::stdin();
        let mut lines = LineReader::new(stdin.lock());
        let mut number = 0usize;
        while let Some(line) = lines.next_line().context("cannot read stdin")? {
            number += 1;
            let result = line
                .map_err(|e| e.to_string())
                .and_then(|text| classify(&engine, Input::from_line(text, pair_task), policy));
            failed += usize::from(result.is_err());
            writeln!(out, "{}", json_line(number, &result)).context("cannot write to stdout")?;
            out.flush().context("cannot write to stdout")?;
        }
    } else {
        for (i, arg) in args.texts.iter().enumerate() {
            let number = i + 1;
            let result = match arg.to_str() {
                Some(text) => classify(&engine, Input::from_line(text, pair_task), policy),
                None => Err("argument is not valid UTF-8".to_string()),
            };
            failed += usize::from(result.is_err());
            if args.json {
                writeln!(out, "{}", json_line(number, &result)).context("cannot write to stdout")?;
            } else {
                match &result {
                    Ok(answer) => writeln!(out, "{answer}").context("cannot write to stdout")?,
                    Err(message) => eprintln!("cosee-edge: input {number}: {message}"),
                }
            }
        }
    }
    Ok(ExitCode::from(if failed == 0 { EXIT_OK } else { EXIT_INPUT_ERRORS }))
}

/// Stdin input under a latency budget (from --budget-ms or the tuned config) and no fixed τ: the controller's
/// loop of `serve`, whose answers are the same JSON lines.
fn controlled(args: &Args, tuned: Option<&RuntimeConfig>) -> anyhow::Result<Option<super::serve::Args>> {
    let Some(budget) = args.budget_ms.or(tuned.and_then(|t| t.budget_ms)) else { return Ok(None) };
    if !args.texts.is_empty() {
        if args.budget_ms.is_some() {
            return Err(UsageError(
                "--budget-ms applies to stdin input (one input per line), not to TEXT arguments".into(),
            )
            .into());
        }
        return Ok(None);
    }
    if args.threshold.is_some() || args.signal.is_some() {
        return Ok(None);
    }
    Ok(Some(super::serve::Args {
        model: args.model.clone(),
        backend: args.backend,
        config: args.config.clone(),
        budget_ms: Some(budget),
        percentile: None,
        threshold: None,
        profile: None,
        min_samples: super::serve::DEFAULT_MIN_SAMPLES,
        power_root: DEFAULT_POWER_ROOT.into(),
        thermal_root: DEFAULT_THERMAL_ROOT.into(),
        power_poll_ms: super::serve::DEFAULT_POWER_POLL_MS,
        #[cfg(feature = "http")]
        http: super::http::Args::default(),
    }))
}

/// The package's policy, replaced by the tuned one of `--config`, with the command line's overrides.
fn policy(engine: &Engine, args: &Args, tuned: Option<&RuntimeConfig>) -> anyhow::Result<ExitPolicy> {
    let layers = Some(engine.num_layers());
    let default = match (tuned, &args.config) {
        (Some(t), Some(path)) => {
            t.check(&path.display().to_string(), layers)?;
            ExitPolicy { signal: t.signal, threshold: t.threshold }
        }
        _ => engine.default_policy(),
    };
    let flag = |field: &str| format!("--{field}");
    Ok(serving::fixed_policy(default, args.signal, args.threshold, engine.num_layers(), flag)
        .map_err(|e| UsageError(e.to_string()))?)
}

fn classify(engine: &Engine, input: Input, policy: ExitPolicy) -> Result<Answer, String> {
    engine.classify_with(&input, policy).map_err(|e: RunError| e.to_string())
}
