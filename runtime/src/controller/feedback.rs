//! Latency feedback: the ring of recent latencies judged once per batch, one rung per decision.

use super::*;

impl Controller {
    /// Records the latency of one request made at [`Controller::threshold`]; returns the τ change this decision
    /// makes, if any (at most one rung).
    pub fn record(&mut self, latency_ms: f64) -> Option<TauChange> {
        if latency_ms.is_finite() && latency_ms >= 0.0 {
            self.latencies.write(latency_ms);
        }
        self.since_move += 1;
        self.calm += 1;
        let floor = self.floor();
        let Some(budget) = self.config.budget_ms else {
            // Nothing to hold: τ follows the power policy.
            return (self.current != floor).then(|| self.move_to(floor, Reason::Power { mode: self.mode }));
        };
        if self.current < floor {
            return Some(self.move_to(floor, Reason::Power { mode: self.mode }));
        }
        // Decide once per batch of `min_samples` requests, not after every request: judging an overlapping
        // window at every request would test the same noise over and over until it trips.
        let samples = self.latencies.len();
        let batch = self.config.min_samples;
        if !self.since_move.is_multiple_of(batch) || samples < batch {
            return None;
        }
        let q = self.config.percentile;
        let observed = self.observed_percentile();
        let exceeding = self.latencies.as_slice().iter().filter(|&&ms| ms > budget).count();
        if exceeding as f64 > self.allowed_exceedances(samples) {
            if self.current < self.ladder.fastest() {
                let reason =
                    Reason::OverBudget { percentile: q, observed_ms: observed, budget_ms: budget, samples, exceeding };
                return Some(self.move_to(self.current + 1, reason));
            }
            return None;
        }
        // A long stretch within budget earns back one level of backoff.
        if self.backoff > 0 && self.calm >= (8 * batch) << self.backoff {
            self.backoff -= 1;
            self.calm = 0;
        }
        if self.current > floor && self.since_move >= batch << self.backoff {
            let predicted = observed * self.ladder.slowdown(self.current);
            if predicted <= budget * (1.0 - self.config.headroom) {
                let reason = Reason::Headroom {
                    percentile: q,
                    observed_ms: observed,
                    predicted_ms: predicted,
                    budget_ms: budget,
                    samples,
                };
                return Some(self.move_to(self.current - 1, reason));
            }
        }
        None
    }

    /// How many of `n` latencies may exceed the budget before the percentile counts as over it.
    ///
    /// "p95 within budget" means at most 5 % of requests exceed it. Out of n samples the count of exceedances is
    /// binomial, so a plant sitting just inside its budget shows more than 5 % now and then by chance alone; the
    /// rule only acts when the count is `confidence_z` standard deviations above n · (1 − q): evidence, not noise.
    fn allowed_exceedances(&self, n: usize) -> f64 {
        let p = 1.0 - self.config.percentile / 100.0;
        let n = n as f64;
        n * p + self.config.confidence_z * (n * p * (1.0 - p)).sqrt()
    }
}
