//! What the controller reports: the power mode, the reasons for a move, the τ and mode changes.

use crate::power::Supply;
use serde::Serialize;
use std::fmt;

/// What the power policy currently asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerMode {
    /// Mains power or no battery: accuracy first.
    Mains,
    /// On battery (or unknown): the configured operating point.
    Battery,
    /// Low battery or hot device: faster than configured.
    Saver,
}

impl fmt::Display for PowerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mains => "mains (accuracy first)",
            Self::Battery => "battery (configured operating point)",
            Self::Saver => "energy saver",
        })
    }
}

/// Why τ changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// The percentile of the recent latencies exceeded the budget.
    OverBudget { percentile: f64, observed_ms: f64, budget_ms: f64, samples: usize, exceeding: usize },
    /// The slower, more accurate rung is predicted to fit the budget with headroom.
    Headroom { percentile: f64, observed_ms: f64, predicted_ms: f64, budget_ms: f64, samples: usize },
    /// The power policy's floor moved (`mode` is the new mode).
    Power { mode: PowerMode },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OverBudget { percentile, observed_ms, budget_ms, samples, exceeding } => write!(
                f,
                "p{percentile} latency {observed_ms:.2} ms over the {budget_ms:.2} ms budget ({exceeding} of \
                 {samples} requests over it)"
            ),
            Self::Headroom { percentile, observed_ms, predicted_ms, budget_ms, samples } => write!(
                f,
                "p{percentile} latency {observed_ms:.2} ms ({samples} requests); the slower rung is predicted at \
                 {predicted_ms:.2} ms, within the {budget_ms:.2} ms budget with headroom"
            ),
            Self::Power { mode } => write!(f, "power policy: {mode}"),
        }
    }
}

/// One change of τ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TauChange {
    pub from: f32,
    pub to: f32,
    pub from_rung: usize,
    pub to_rung: usize,
    pub reason: Reason,
}

impl fmt::Display for TauChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "τ {} → {} (rung {} → {}): {}", self.from, self.to, self.from_rung, self.to_rung, self.reason)
    }
}

/// A change of power mode, with the reading that caused it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeChange {
    pub from: PowerMode,
    pub to: PowerMode,
    pub supply: Supply,
    pub temperature_c: Option<f32>,
    pub low_battery: bool,
    pub hot: bool,
}

impl fmt::Display for ModeChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "power mode {} → {}: {}", self.from, self.to, self.supply)?;
        if let Some(t) = self.temperature_c {
            write!(f, ", {t:.1} °C")?;
        }
        if self.low_battery {
            f.write_str(", low battery")?;
        }
        if self.hot {
            f.write_str(", hot")?;
        }
        Ok(())
    }
}

/// What a controller call reports, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ControllerEvent {
    Mode(ModeChange),
    Tau(TauChange),
}

impl fmt::Display for ControllerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mode(m) => m.fmt(f),
            Self::Tau(t) => t.fmt(f),
        }
    }
}
