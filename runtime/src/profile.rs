//! The device profile: what each stage of a package costs on this machine as a function of the token count.
//!
//! `cosee-edge bench` measures every stage of every input and fits, per stage type, the least-squares curve
//! `ms(t) = a + b·t + c·t²` (t = tokens; the quadratic term is attention's t² score matrix, the linear term the
//! dense layers). Layers have identical shapes, so one curve serves all layers; likewise for exits. What the stage
//! timers do not see (tensor conversion, the exit decision, allocation) is fitted as `overhead` from wall-clock
//! time minus the stage sum. The remaining jitter is kept as quantiles of the ratio measured / predicted, so that
//! `tune` can predict a latency *distribution*, not just a mean.
//!
//! A request that exits at layer m with t tokens is then predicted to take
//! `tokenize(t) + embeddings(t) + m·(layer(t) + exit(t)) + overhead(t)`, times the jitter.

use crate::json::{JsonError, JsonFile};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Where `cosee-edge bench` writes the device profile unless told otherwise, and where `tune` looks for it.
pub const DEFAULT_PROFILE: &str = "device-profile.json";

/// Version of the profile file format.
pub const PROFILE_VERSION: u32 = 1;

/// How a profile file is read and written: its `version` is checked first.
pub const PROFILE_JSON: JsonFile =
    JsonFile::versioned("a device profile", "version", PROFILE_VERSION, "profile format");

/// Number of jitter quantiles kept (at the midpoints of 100 equal-probability bins).
pub const JITTER_QUANTILES: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot fit {stage}: no measurements")]
    NoData { stage: String },
}

/// Cost of one stage in milliseconds as a function of the token count: `a + b·t + c·t²`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostFit {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    /// Measurements the fit was made from.
    pub samples: usize,
    /// Root-mean-square error of the fit on those measurements, milliseconds.
    pub rmse_ms: f64,
    /// Token range measured; predictions outside it are extrapolations.
    pub min_tokens: usize,
    pub max_tokens: usize,
}

impl CostFit {
    /// Least squares over (tokens, ms) pairs. The degree adapts to the data: quadratic with at least four distinct
    /// token counts, linear with two or three, constant with one — a curve is never fitted through fewer points
    /// than it has parameters plus one.
    pub fn fit(stage: &str, points: &[(usize, f64)]) -> Result<Self, ProfileError> {
        let points: Vec<(f64, f64)> =
            points.iter().filter(|(_, ms)| ms.is_finite() && *ms >= 0.0).map(|&(t, ms)| (t as f64, ms)).collect();
        if points.is_empty() {
            return Err(ProfileError::NoData { stage: stage.to_string() });
        }
        let mut distinct: Vec<f64> = points.iter().map(|p| p.0).collect();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        let degree = match distinct.len() {
            1 => 0,
            2 | 3 => 1,
            _ => 2,
        };
        // Scale tokens to ~[0, 1] so that the normal equations stay well conditioned in t².
        let scale = distinct.last().copied().unwrap_or(1.0).max(1.0);
        let coef = least_squares(&points, degree, scale);
        let (a, b, c) = (coef[0], coef[1] / scale, coef[2] / (scale * scale));
        let mut fit = Self {
            a,
            b,
            c,
            samples: points.len(),
            rmse_ms: 0.0,
            min_tokens: distinct[0] as usize,
            max_tokens: scale as usize,
        };
        let sse: f64 = points.iter().map(|&(t, ms)| (fit.raw(t) - ms).powi(2)).sum();
        fit.rmse_ms = (sse / points.len() as f64).sqrt();
        Ok(fit)
    }

    fn raw(&self, tokens: f64) -> f64 {
        self.a + self.b * tokens + self.c * tokens * tokens
    }

    /// Predicted milliseconds at `tokens`, never negative.
    pub fn at(&self, tokens: usize) -> f64 {
        self.raw(tokens as f64).max(0.0)
    }

    /// A fit that is exactly `a + b·t + c·t²` (for tests and hand-made profiles).
    pub fn exact(a: f64, b: f64, c: f64) -> Self {
        Self { a, b, c, samples: 0, rmse_ms: 0.0, min_tokens: 0, max_tokens: 0 }
    }
}

/// Solves the normal equations of a polynomial fit of `degree` (0–2) in t / scale; returns [c0, c1, c2].
fn least_squares(points: &[(f64, f64)], degree: usize, scale: f64) -> [f64; 3] {
    let k = degree + 1;
    let mut ata = [[0.0f64; 3]; 3];
    let mut aty = [0.0f64; 3];
    for &(t, y) in points {
        let x = t / scale;
        let basis = [1.0, x, x * x];
        for i in 0..k {
            aty[i] += basis[i] * y;
            for j in 0..k {
                ata[i][j] += basis[i] * basis[j];
            }
        }
    }
    // Gaussian elimination with partial pivoting on the k×k system.
    let mut m = [[0.0f64; 4]; 3];
    for i in 0..k {
        m[i][..k].copy_from_slice(&ata[i][..k]);
        m[i][3] = aty[i];
    }
    for col in 0..k {
        let pivot = (col..k).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs())).unwrap_or(col);
        m.swap(col, pivot);
        if m[col][col].abs() < 1e-12 {
            // Degenerate (cannot happen with enough distinct points): drop to a lower degree.
            return if degree > 0 { least_squares(points, degree - 1, scale) } else { [0.0; 3] };
        }
        for row in 0..k {
            if row != col {
                let f = m[row][col] / m[col][col];
                let pivot_row = m[col];
                for (x, p) in m[row].iter_mut().zip(pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    let mut out = [0.0; 3];
    for i in 0..k {
        out[i] = m[i][3] / m[i][i];
    }
    out
}

/// The machine and package a profile was measured on, so that a profile from another device is recognisable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileOrigin {
    /// `std::env::consts::ARCH`.
    pub arch: String,
    /// The CPU model from /proc/cpuinfo, when known.
    pub cpu: Option<String>,
    /// The package directory and its manifest's quantization scheme, as given to bench.
    pub package: String,
    pub quantization: String,
    pub num_layers: usize,
    pub hidden_size: usize,
    /// The data file and how many inputs were measured.
    pub data: String,
    pub inputs: usize,
}

/// Per-stage cost curves of one package on one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceProfile {
    pub version: u32,
    pub origin: ProfileOrigin,
    pub tokenize: CostFit,
    pub embeddings: CostFit,
    /// One transformer layer (all layers pooled).
    pub layer: CostFit,
    /// One exit head (all exits pooled).
    pub exit: CostFit,
    /// Wall-clock time not inside any stage timer.
    pub overhead: CostFit,
    /// Quantiles of measured / predicted wall-clock time at the midpoints of 100 equal-probability bins; a profile
    /// without jitter has `[1.0]`.
    pub jitter: Vec<f64>,
    /// How many measured inputs had each token count: the default token-length distribution for `tune`.
    pub token_counts: BTreeMap<usize, usize>,
}

/// One input's measurements, as bench collects them for the fit.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSample {
    pub tokens: usize,
    pub tokenize_ms: f64,
    pub embeddings_ms: f64,
    /// One entry per layer that ran.
    pub layer_ms: Vec<f64>,
    /// One entry per exit that ran.
    pub exit_ms: Vec<f64>,
    /// Wall-clock time of the whole call.
    pub wall_ms: f64,
}

impl StageSample {
    fn stage_sum(&self) -> f64 {
        self.tokenize_ms + self.embeddings_ms + self.layer_ms.iter().sum::<f64>() + self.exit_ms.iter().sum::<f64>()
    }
}

impl DeviceProfile {
    /// Fits a profile from per-input stage measurements (`samples`, any mix of early-exit and full-depth runs);
    /// `token_counts` are the token counts of the measured inputs (one per input, not per run).
    pub fn fit(origin: ProfileOrigin, samples: &[StageSample], token_counts: &[usize]) -> Result<Self, ProfileError> {
        let pairs = |f: &dyn Fn(&StageSample) -> Vec<f64>| -> Vec<(usize, f64)> {
            samples.iter().flat_map(|s| f(s).into_iter().map(move |ms| (s.tokens, ms))).collect()
        };
        let tokenize = CostFit::fit("tokenize", &pairs(&|s| vec![s.tokenize_ms]))?;
        let embeddings = CostFit::fit("embeddings", &pairs(&|s| vec![s.embeddings_ms]))?;
        let layer = CostFit::fit("layer", &pairs(&|s| s.layer_ms.clone()))?;
        let exit = CostFit::fit("exit", &pairs(&|s| s.exit_ms.clone()))?;
        let overhead = CostFit::fit("overhead", &pairs(&|s| vec![(s.wall_ms - s.stage_sum()).max(0.0)]))?;
        let mut profile = Self {
            version: PROFILE_VERSION,
            origin,
            tokenize,
            embeddings,
            layer,
            exit,
            overhead,
            jitter: vec![1.0],
            token_counts: BTreeMap::new(),
        };
        for &t in token_counts {
            *profile.token_counts.entry(t).or_default() += 1;
        }
        let mut ratios: Vec<f64> = samples
            .iter()
            .filter_map(|s| {
                let predicted = profile.predict_ms(s.layer_ms.len(), s.tokens);
                (predicted > 0.0 && s.wall_ms.is_finite()).then(|| s.wall_ms / predicted)
            })
            .collect();
        if !ratios.is_empty() {
            ratios.sort_by(f64::total_cmp);
            profile.jitter = (0..JITTER_QUANTILES)
                .map(|i| crate::metrics::percentile(&ratios, (i as f64 + 0.5) * 100.0 / JITTER_QUANTILES as f64))
                .collect();
        }
        Ok(profile)
    }

    /// Predicted wall-clock milliseconds of one request that stops at `exit_layer` with `tokens` tokens, before
    /// jitter.
    pub fn predict_ms(&self, exit_layer: usize, tokens: usize) -> f64 {
        let m = exit_layer as f64;
        self.tokenize.at(tokens)
            + self.embeddings.at(tokens)
            + m * (self.layer.at(tokens) + self.exit.at(tokens))
            + self.overhead.at(tokens)
    }

    pub fn read(path: &Path) -> Result<Self, JsonError> {
        PROFILE_JSON.read(path)
    }

    pub fn write(&self, path: &Path) -> Result<(), JsonError> {
        PROFILE_JSON.write(path, self)
    }
}

/// The CPU model line of /proc/cpuinfo (x86 `model name`, or the ARM `Model`/`CPU part` lines), if readable.
pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    for key in ["model name", "Model", "Hardware", "CPU part"] {
        if let Some(line) = text.lines().find(|l| l.split(':').next().is_some_and(|k| k.trim() == key)) {
            if let Some((_, v)) = line.split_once(':') {
                return Some(v.trim().to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> ProfileOrigin {
        ProfileOrigin {
            arch: "x86_64".into(),
            cpu: None,
            package: "pkg".into(),
            quantization: "none".into(),
            num_layers: 4,
            hidden_size: 32,
            data: "dev.tsv".into(),
            inputs: 0,
        }
    }

    #[test]
    fn fits_an_exact_quadratic() {
        let points: Vec<(usize, f64)> =
            [8, 16, 24, 32, 64, 128].iter().map(|&t| (t, 0.2 + 0.01 * t as f64 + 0.0001 * (t * t) as f64)).collect();
        let f = CostFit::fit("layer", &points).unwrap();
        assert!((f.a - 0.2).abs() < 1e-9 && (f.b - 0.01).abs() < 1e-9 && (f.c - 0.0001).abs() < 1e-11, "{f:?}");
        assert!(f.rmse_ms < 1e-9);
        assert_eq!((f.min_tokens, f.max_tokens, f.samples), (8, 128, 6));
        assert!((f.at(100) - (0.2 + 1.0 + 1.0)).abs() < 1e-9);
    }

    #[test]
    fn degree_adapts_to_the_data() {
        // One token count: the mean.
        let f = CostFit::fit("x", &[(10, 1.0), (10, 3.0)]).unwrap();
        assert_eq!((f.a, f.b, f.c), (2.0, 0.0, 0.0));
        // Two counts: a line through the means.
        let f = CostFit::fit("x", &[(10, 1.0), (20, 2.0), (20, 2.0)]).unwrap();
        assert!((f.a - 0.0).abs() < 1e-9 && (f.b - 0.1).abs() < 1e-9 && f.c == 0.0, "{f:?}");
        // Noise-free least squares recovers a line from noisy-symmetric data: (t, 2t ± 1).
        let pts: Vec<(usize, f64)> =
            (1..=20).flat_map(|t| [(t, 2.0 * t as f64 + 1.0), (t, 2.0 * t as f64 - 1.0)]).collect();
        let f = CostFit::fit("x", &pts).unwrap();
        assert!((f.b - 2.0).abs() < 1e-6 && f.a.abs() < 1e-6 && f.c.abs() < 1e-6, "{f:?}");
        assert!((f.rmse_ms - 1.0).abs() < 1e-6);
        assert!(matches!(CostFit::fit("exit", &[]), Err(ProfileError::NoData { .. })));
        // Negative extrapolation is clamped.
        assert_eq!(CostFit::exact(-5.0, 0.0, 0.0).at(3), 0.0);
    }

    /// Synthetic device: tokenize 0.05 + 0.001 t, embeddings 0.1 + 0.002 t, layer 0.3 + 0.02 t + 1e-4 t²,
    /// exit 0.02, overhead 0.01; every input runs 4 layers.
    fn sample(tokens: usize, jitter: f64) -> StageSample {
        let t = tokens as f64;
        let layer = 0.3 + 0.02 * t + 1e-4 * t * t;
        let s = StageSample {
            tokens,
            tokenize_ms: 0.05 + 0.001 * t,
            embeddings_ms: 0.1 + 0.002 * t,
            layer_ms: vec![layer; 4],
            exit_ms: vec![0.02; 4],
            wall_ms: 0.0,
        };
        let wall = (s.stage_sum() + 0.01) * jitter;
        StageSample { wall_ms: wall, ..s }
    }

    #[test]
    fn profile_fits_stages_and_jitter_and_round_trips() {
        let tokens = [8, 12, 16, 24, 32, 48, 64, 96, 128];
        let exact: Vec<StageSample> = tokens.iter().map(|&t| sample(t, 1.0)).collect();
        let p = DeviceProfile::fit(origin(), &exact, &tokens).unwrap();
        assert!((p.layer.at(50) - (0.3 + 1.0 + 0.25)).abs() < 1e-9);
        assert!((p.exit.at(77) - 0.02).abs() < 1e-9);
        // Four layers and exits at 16 tokens, plus the 0.01 ms overhead.
        let expected = 0.066 + 0.132 + 4.0 * (0.3 + 0.32 + 0.0256 + 0.02) + 0.01;
        assert!((p.predict_ms(4, 16) - expected).abs() < 1e-9, "{} vs {expected}", p.predict_ms(4, 16));
        assert!(p.jitter.iter().all(|j| (j - 1.0).abs() < 1e-9), "{:?}", p.jitter);
        assert_eq!(p.token_counts.values().sum::<usize>(), tokens.len());

        // Every other input 10 % slower: the jitter quantiles spread over about [1.0, 1.1] (the overhead fit
        // absorbs part of it), sorted.
        let noisy: Vec<StageSample> =
            tokens.iter().enumerate().map(|(i, &t)| sample(t, if i % 2 == 0 { 1.0 } else { 1.1 })).collect();
        let p = DeviceProfile::fit(origin(), &noisy, &tokens).unwrap();
        assert_eq!(p.jitter.len(), JITTER_QUANTILES);
        assert!(p.jitter[0] > 0.9 && *p.jitter.last().unwrap() < 1.2, "{:?}", p.jitter);
        assert!(p.jitter.last().unwrap() - p.jitter[0] > 0.03, "{:?}", p.jitter);
        assert!(p.jitter.windows(2).all(|w| w[0] <= w[1]));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.json");
        p.write(&path).unwrap();
        // serde_json parses floats to within an ulp or so, not always bit-exactly.
        let back = DeviceProfile::read(&path).unwrap();
        assert_eq!((&back.origin, &back.token_counts), (&p.origin, &p.token_counts));
        for t in [1, 16, 77, 128] {
            assert!((back.predict_ms(3, t) - p.predict_ms(3, t)).abs() < 1e-12);
        }
        assert!(back.jitter.iter().zip(&p.jitter).all(|(a, b)| (a - b).abs() < 1e-12));
        let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        json["version"] = 9.into();
        std::fs::write(&path, json.to_string()).unwrap();
        assert!(matches!(DeviceProfile::read(&path), Err(JsonError::UnsupportedVersion { found: 9, .. })));
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(DeviceProfile::read(&path), Err(JsonError::Parse { .. })));
    }
}
