//! A package summary for people and scripts: layers, files with sizes and digest status, quantization, signal,
//! calibration table. One struct; `Display` is the human form, serde the JSON one.

use cosee_runtime::json::JsonError;
use cosee_runtime::manifest::{digest_file, Calibration, Manifest, Quantization, MANIFEST_FILE};
use cosee_runtime::{ExitSignal, Task};
use std::fmt;
use std::path::Path;

#[derive(Debug, Clone, serde::Serialize)]
pub struct FileSummary {
    pub name: String,
    pub bytes: u64,
    /// "ok", "missing", or "modified" (size or sha256 differs from the manifest).
    pub status: &'static str,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PackageSummary {
    pub path: String,
    pub format_version: u32,
    pub task: Task,
    pub label_names: Vec<String>,
    pub num_layers: usize,
    pub hidden_size: usize,
    pub max_seq_len: usize,
    pub signal: ExitSignal,
    pub default_threshold: f32,
    pub quantization: Quantization,
    pub files: Vec<FileSummary>,
    /// All files, manifest included.
    pub total_bytes: u64,
    pub calibration: Option<Calibration>,
}

impl PackageSummary {
    /// Whether every file is present and matches its digest.
    pub fn intact(&self) -> bool {
        self.files.iter().all(|f| f.status == "ok")
    }
}

/// Reads the manifest and checks every listed file's size and sha256.
pub fn inspect(package: &Path) -> Result<PackageSummary, JsonError> {
    let m = Manifest::read(package)?;
    let mut files = Vec::with_capacity(m.files.len());
    for (name, expected) in &m.files {
        let (bytes, status) = match digest_file(&package.join(name)) {
            Ok(d) if &d == expected => (d.bytes, "ok"),
            Ok(d) => (d.bytes, "modified"),
            Err(_) => (0, "missing"),
        };
        files.push(FileSummary { name: name.clone(), bytes, status });
    }
    let manifest_bytes = std::fs::metadata(package.join(MANIFEST_FILE)).map(|md| md.len()).unwrap_or(0);
    let total_bytes = manifest_bytes + files.iter().map(|f| f.bytes).sum::<u64>();
    Ok(PackageSummary {
        path: package.display().to_string(),
        format_version: m.format_version,
        task: m.task,
        label_names: m.label_names,
        num_layers: m.num_layers,
        hidden_size: m.hidden_size,
        max_seq_len: m.max_seq_len,
        signal: m.signal.name,
        default_threshold: m.default_threshold,
        quantization: m.quantization,
        files,
        total_bytes,
        calibration: m.calibration,
    })
}

fn mb(bytes: u64) -> String {
    if bytes >= 100_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} kB", bytes as f64 / 1e3)
    }
}

impl fmt::Display for PackageSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "package       {} (format v{})", self.path, self.format_version)?;
        writeln!(f, "task          {} [{}]", self.task, self.label_names.join(", "))?;
        writeln!(
            f,
            "model         {} layers, hidden {}, max {} tokens",
            self.num_layers, self.hidden_size, self.max_seq_len
        )?;
        writeln!(
            f,
            "quantization  {:?}, word embeddings {:?}, {:?} numerics",
            self.quantization.scheme, self.quantization.embeddings, self.quantization.numerics
        )?;
        writeln!(
            f,
            "signal        {} (exit when {:?} τ), default τ {}",
            self.signal,
            self.signal.direction(),
            self.default_threshold
        )?;
        writeln!(
            f,
            "files         {} in all{}",
            mb(self.total_bytes),
            if self.intact() { "" } else { "  (NOT INTACT)" }
        )?;
        for file in &self.files {
            writeln!(f, "  {:<16} {:>10}  {}", file.name, mb(file.bytes), file.status)?;
        }
        match &self.calibration {
            None => writeln!(f, "calibration   none (run `cosee-tools calibrate`)")?,
            Some(c) => {
                writeln!(
                    f,
                    "calibration   {} examples of {}, target speed-up {:.2}×",
                    c.num_examples, c.data, c.target_speedup
                )?;
                let with_f1 = c.points.iter().any(|p| p.f1.is_some());
                write!(f, "  {:>8} {:>9}", "τ", "accuracy")?;
                if with_f1 {
                    write!(f, " {:>7}", "F1")?;
                }
                writeln!(f, " {:>9}  exits per layer", "speed-up")?;
                for p in &c.points {
                    let mark = if (p.threshold - self.default_threshold).abs() < 1e-6 { "*" } else { " " };
                    write!(f, "{mark} {:>8.3} {:>8.2}%", p.threshold, 100.0 * p.accuracy)?;
                    if with_f1 {
                        write!(f, " {:>6.2}%", 100.0 * p.f1.unwrap_or(f64::NAN))?;
                    }
                    writeln!(f, " {:>8.2}×  {:?}", p.layer_speedup, p.exit_histogram)?;
                }
            }
        }
        Ok(())
    }
}
