//! The values a user's setting may take, checked here once for every flag and file that sets it: budgets,
//! percentiles and thread counts (τ depends on the exit signal: [`crate::signal::ExitSignal::check_threshold`]). The error
//! names the setting as the user wrote it (a flag, or a file and its key) and the values it allows, so that
//! `--threshold 7` on the energy signal is refused instead of making every input leave at layer 1.

/// A setting outside the values it may take.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{setting} {value} is out of range: {allowed}")]
pub struct OutOfRange {
    /// The flag or key as the user wrote it: `--threshold`, `runtime-config.json: threshold`.
    pub setting: String,
    pub value: String,
    /// The values it may take, in words.
    pub allowed: String,
}

impl OutOfRange {
    pub fn new(setting: &str, value: impl std::fmt::Display, allowed: impl Into<String>) -> Self {
        Self { setting: setting.to_string(), value: value.to_string(), allowed: allowed.into() }
    }
}

/// The most threads a thread count may ask for: far above the cores of any machine this runs on, so that a larger
/// number is a typo, not a wish.
pub const MAX_THREADS: usize = 1024;

/// A latency budget in milliseconds: finite and above 0.
pub fn budget_ms(setting: &str, value: f64) -> Result<f64, OutOfRange> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(OutOfRange::new(setting, value, "a budget is a finite number of milliseconds above 0"))
    }
}

/// A latency percentile: 0 to 100, both included (p100 is the maximum).
pub fn percentile(setting: &str, value: f64) -> Result<f64, OutOfRange> {
    if (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(OutOfRange::new(setting, value, "a percentile is a number from 0 to 100"))
    }
}

/// A thread count: 1 to [`MAX_THREADS`].
pub fn threads(setting: &str, value: usize) -> Result<usize, OutOfRange> {
    if (1..=MAX_THREADS).contains(&value) {
        Ok(value)
    } else {
        Err(OutOfRange::new(setting, value, format!("a thread count is an integer from 1 to {MAX_THREADS}")))
    }
}

/// `--threads` as a command-line parser (clap's `value_parser`): a number, through [`threads`], so a bad count is a
/// usage error naming the flag.
pub fn parse_threads_flag(text: &str) -> Result<usize, String> {
    let n: usize = text.parse().map_err(|e| format!("'{text}' is not a thread count: {e}"))?;
    threads("--threads", n).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_accept_their_ends_and_name_the_setting() {
        assert_eq!(budget_ms("--budget-ms", 0.001), Ok(0.001));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(budget_ms("--budget-ms", bad).is_err(), "{bad}");
        }
        assert_eq!(percentile("--percentile", 0.0), Ok(0.0));
        assert_eq!(percentile("--percentile", 100.0), Ok(100.0));
        for bad in [-0.1, 100.1, f64::NAN] {
            assert!(percentile("--percentile", bad).is_err(), "{bad}");
        }
        assert_eq!(threads("--threads", 1), Ok(1));
        assert_eq!(threads("--threads", MAX_THREADS), Ok(MAX_THREADS));
        assert!(threads("--threads", 0).is_err() && threads("--threads", MAX_THREADS + 1).is_err());
        let e = percentile("--percentile", 150.0).unwrap_err().to_string();
        assert_eq!(e, "--percentile 150 is out of range: a percentile is a number from 0 to 100");
    }
}
