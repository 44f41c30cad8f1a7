//! The power policy: supply, battery and heat readings set the slowest rung the feedback may use.

use crate::power::{PowerReading, Supply};

use super::*;

impl Controller {
    /// Takes a power reading; returns the mode change and the τ change it causes, if any.
    pub fn observe_power(&mut self, reading: &PowerReading) -> Vec<ControllerEvent> {
        let mut events = Vec::new();
        for path in &reading.garbled {
            log::debug!("unreadable power/thermal attribute {path}: treated as unknown");
        }
        // Supply class, debounced. No battery counts as mains; an unknown state as battery (the configured
        // operating point, the conservative middle).
        let battery_now = matches!(reading.supply, Supply::Battery { .. } | Supply::Unknown { .. });
        if battery_now == self.on_battery {
            self.pending_battery = None;
        } else {
            let seen = match self.pending_battery {
                Some((b, n)) if b == battery_now => n + 1,
                _ => 1,
            };
            if seen >= self.config.debounce {
                self.on_battery = battery_now;
                self.pending_battery = None;
            } else {
                self.pending_battery = Some((battery_now, seen));
            }
        }
        // Low battery, with hysteresis; an unknown charge keeps the last state.
        let discharging = matches!(reading.supply, Supply::Battery { .. });
        if !discharging {
            if matches!(reading.supply, Supply::Mains { .. } | Supply::NoBattery) {
                self.low_battery = false;
            }
        } else if let Some(c) = reading.supply.capacity() {
            if c <= self.config.low_battery_pct {
                self.low_battery = true;
            } else if c >= self.config.battery_recover_pct {
                self.low_battery = false;
            }
        }
        // Heat, with hysteresis; no sensor keeps the last state.
        if let Some(t) = reading.temperature_c {
            if t >= self.config.hot_c {
                self.hot = true;
            } else if t < self.config.cool_c {
                self.hot = false;
            }
        }
        let mode = if self.low_battery || self.hot {
            PowerMode::Saver
        } else if self.on_battery {
            PowerMode::Battery
        } else {
            PowerMode::Mains
        };
        if mode != self.mode {
            let change = ModeChange {
                from: self.mode,
                to: mode,
                supply: reading.supply,
                temperature_c: reading.temperature_c,
                low_battery: self.low_battery,
                hot: self.hot,
            };
            log::info!("{change}");
            self.mode = mode;
            events.push(ControllerEvent::Mode(change));
            // Saving energy cannot wait for a latency window; without a budget τ simply follows the floor.
            let floor = self.floor();
            if self.current < floor || (self.config.budget_ms.is_none() && self.current != floor) {
                events.push(ControllerEvent::Tau(self.move_to(floor, Reason::Power { mode })));
            }
        }
        events
    }
}
