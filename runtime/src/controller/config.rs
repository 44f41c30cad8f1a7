//! The controller's settings and their range checks.

use crate::settings::{self, OutOfRange};
use serde::{Deserialize, Serialize};

use super::*;

/// Settings of the controller; the defaults are what `serve` uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControllerConfig {
    /// Latency budget for the chosen percentile, milliseconds; `None` = no latency target.
    pub budget_ms: Option<f64>,
    /// Which percentile of the recent latencies must stay within the budget (0–100).
    pub percentile: f64,
    /// Requests at one τ before the feedback rule judges it, and between two of its decisions.
    pub min_samples: usize,
    /// How sure the rule must be that the percentile exceeds the budget, in binomial standard deviations.
    pub confidence_z: f64,
    /// A slower rung is tried only if its predicted percentile is below `budget · (1 − headroom)`.
    pub headroom: f64,
    /// Energy saver below this battery charge (percent, while discharging) …
    pub low_battery_pct: f32,
    /// … until the charge is back to this level.
    pub battery_recover_pct: f32,
    /// Energy saver at or above this temperature (°C) …
    pub hot_c: f32,
    /// … until the device is below this one.
    pub cool_c: f32,
    /// How many rungs faster than the configured operating point the saver floor sits.
    pub saver_steps: usize,
    /// Consecutive identical supply readings needed to switch between mains and battery.
    pub debounce: usize,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            budget_ms: None,
            percentile: 95.0,
            min_samples: 32,
            confidence_z: 1.64,
            headroom: 0.15,
            low_battery_pct: 20.0,
            battery_recover_pct: 25.0,
            hot_c: 80.0,
            cool_c: 75.0,
            saver_steps: 2,
            debounce: 2,
        }
    }
}

impl ControllerConfig {
    /// Checks every setting against its range; budget and percentile as every flag and file that sets them are
    /// (see [`crate::settings`]), named by their field.
    pub fn validate(&self) -> Result<(), ControllerError> {
        let bad = |name: &str, value: f64, allowed: &str| Err(OutOfRange::new(name, value, allowed).into());
        if let Some(b) = self.budget_ms {
            settings::budget_ms("budget_ms", b)?;
        }
        settings::percentile("percentile", self.percentile)?;
        min_samples("min_samples", self.min_samples)?;
        if !(self.confidence_z.is_finite() && self.confidence_z >= 0.0) {
            return bad("confidence_z", self.confidence_z, "must be a non-negative number");
        }
        if !(0.0..1.0).contains(&self.headroom) {
            return bad("headroom", self.headroom, "must be within 0..1");
        }
        if self.battery_recover_pct < self.low_battery_pct {
            return bad("battery_recover_pct", self.battery_recover_pct as f64, "must be ≥ low_battery_pct");
        }
        if self.cool_c > self.hot_c {
            return bad("cool_c", self.cool_c as f64, "must be ≤ hot_c");
        }
        Ok(())
    }
}

/// Requests between two decisions of the latency rule: 1 to the capacity of the ring of recent latencies.
pub fn min_samples(setting: &str, value: usize) -> Result<usize, OutOfRange> {
    if (1..=WINDOW).contains(&value) {
        Ok(value)
    } else {
        Err(OutOfRange::new(setting, value, format!("an integer from 1 to {WINDOW} (the latency ring's capacity)")))
    }
}
