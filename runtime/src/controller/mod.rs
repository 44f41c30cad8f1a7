//! The threshold controller: moves τ along the package's calibration table while serving, to hold a latency
//! percentile within a budget and to save energy on a low battery or a hot device.
//!
//! Two inputs drive it, each through its own rule:
//!
//! * **Latency feedback.** The most recent latencies at the current τ sit in a fixed-capacity ring
//!   ([`heapless::HistoryBuf`], no allocation per request). Once per batch of `min_samples` requests at one τ the
//!   rule judges the ring. Over budget — more than (100 − q) % of the requests exceeded it, by a margin of
//!   `confidence_z` binomial standard deviations so that chance alone does not trip it — → one rung faster.
//!   Comfortably under budget → one rung slower (more accurate), but only if the percentile *predicted* at the
//!   slower rung stays below `budget · (1 − headroom)`: today's percentile times the ratio of the two rungs'
//!   profile predictions (see `tune`) when the ladder has them, else the ratio of their layer speed-ups (paper
//!   Eq. 12; pessimistic, since tokenizer and embedding costs do not scale with layers). That gap is the
//!   hysteresis; one rung per decision is the bounded step; the ring is cleared on every change so a decision
//!   only ever sees latencies of the τ it judges. If a slower step is undone by an over-budget step (a reversal),
//!   the wait before the next slower step doubles (up to 64 batches), and a long calm stretch earns it back, so
//!   even a plant the prediction misjudges cannot make τ flap.
//! * **Power policy.** The [`PowerMode`] sets the slowest rung the feedback may use (the *floor*):
//!   - on mains power, or with no battery at all: accuracy first, the floor is the most accurate rung. A latency
//!     budget, when one is set, is still honoured: a budget is a promise to the caller, not an energy measure;
//!   - on battery (or when the kernel does not say): the configured operating point (the τ from `tune`, or the
//!     package default) is the floor; the budget is held as usual, so τ can only be that fast or faster;
//!   - energy saver: the battery is at or below `low_battery_pct` while discharging, or the hottest thermal zone is
//!     at or above `hot_c` (a Raspberry Pi throttles its clock near 80–85 °C, and early exit is the cheapest way to
//!     shed heat). The floor moves `saver_steps` rungs faster than the configured one. Saver ends only when the
//!     battery is back to `battery_recover_pct` (or charging) and the device has cooled below `cool_c`.
//!
//!   A supply change must be seen in `debounce` consecutive readings before it counts, and an unreadable value
//!   keeps the last known state, so a loose connector or a garbled sysfs file does not make τ flap. When the floor
//!   rises above the current τ, τ jumps to the floor at once (saving energy cannot wait for a latency window).
//!   Without a budget there is nothing to measure, so τ simply follows the floor.
//!
//! The table is reduced to its Pareto front (no kept rung is both slower and less accurate than another), ordered
//! by layer speed-up, so "slower" always means "more accurate". Everything is deterministic: readings and
//! latencies are arguments, so tests drive it with synthetic traces.

mod config;
mod events;
mod feedback;
mod ladder;
mod power_policy;

pub use config::{min_samples, ControllerConfig};
pub use events::{ControllerEvent, ModeChange, PowerMode, Reason, TauChange};
pub use ladder::{Ladder, Rung};

use crate::metrics::percentile;
use crate::settings::OutOfRange;
use crate::signal::ExitSignal;
use heapless::HistoryBuf;

/// How many recent latencies the ring keeps.
pub const WINDOW: usize = 128;

/// The longest wait, in multiples of `min_samples`, before a slower step after repeated reversals.
const MAX_BACKOFF_EXPONENT: u32 = 6;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControllerError {
    #[error("the calibration table has no usable point (need a finite threshold, accuracy and layer speed-up)")]
    EmptyTable,
    /// A setting out of range, named by its field.
    #[error("invalid controller setting: {0}")]
    InvalidSetting(#[from] OutOfRange),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Faster,
    Slower,
}

/// The controller. Call [`Controller::threshold`] before a request, [`Controller::record`] after it, and
/// [`Controller::observe_power`] whenever a power reading arrives.
#[derive(Debug, Clone)]
pub struct Controller {
    config: ControllerConfig,
    ladder: Ladder,
    /// The configured operating point, snapped to the ladder.
    configured: usize,
    current: usize,
    latencies: HistoryBuf<f64, WINDOW>,
    since_move: usize,
    mode: PowerMode,
    on_battery: bool,
    /// A supply class seen but not yet confirmed, and for how many readings.
    pending_battery: Option<(bool, usize)>,
    low_battery: bool,
    hot: bool,
    last_step: Option<Step>,
    /// Slower steps wait `min_samples << backoff` requests.
    backoff: u32,
    /// Requests within budget since the last move or backoff decay.
    calm: usize,
}

impl Controller {
    /// A controller starting on mains power (the state of a device without battery) at the floor of that mode.
    /// `configured_threshold` is the operating point for battery power: the `tune` result or the package default.
    pub fn new(ladder: Ladder, configured_threshold: f32, config: ControllerConfig) -> Result<Self, ControllerError> {
        config.validate()?;
        let configured = ladder.nearest(configured_threshold);
        let mut c = Self {
            config,
            ladder,
            configured,
            current: 0,
            latencies: HistoryBuf::new(),
            since_move: 0,
            mode: PowerMode::Mains,
            on_battery: false,
            pending_battery: None,
            low_battery: false,
            hot: false,
            last_step: None,
            backoff: 0,
            calm: 0,
        };
        c.current = c.floor();
        Ok(c)
    }

    /// The τ to use for the next request.
    pub fn threshold(&self) -> f32 {
        self.ladder.get(self.current).threshold
    }

    pub fn signal(&self) -> ExitSignal {
        self.ladder.signal
    }

    pub fn rung(&self) -> usize {
        self.current
    }

    pub fn ladder(&self) -> &Ladder {
        &self.ladder
    }

    pub fn mode(&self) -> PowerMode {
        self.mode
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The chosen percentile of the latencies recorded at the current τ (NaN before the first).
    pub fn observed_percentile(&self) -> f64 {
        percentile(self.latencies.as_slice(), self.config.percentile)
    }

    /// The slowest rung the power mode allows.
    fn floor(&self) -> usize {
        match self.mode {
            PowerMode::Mains => 0,
            PowerMode::Battery => self.configured,
            PowerMode::Saver => (self.configured + self.config.saver_steps).min(self.ladder.fastest()),
        }
    }

    fn move_to(&mut self, to: usize, reason: Reason) -> TauChange {
        let change = TauChange {
            from: self.threshold(),
            to: self.ladder.get(to).threshold,
            from_rung: self.current,
            to_rung: to,
            reason,
        };
        log::info!("{change}");
        let step = if to > self.current { Step::Faster } else { Step::Slower };
        if let (Some(Step::Slower), Step::Faster, Reason::OverBudget { .. }) = (self.last_step, step, &change.reason) {
            // The last slower step was a mistake: wait longer before the next one.
            self.backoff = (self.backoff + 1).min(MAX_BACKOFF_EXPONENT);
        }
        if !matches!(change.reason, Reason::Power { .. }) {
            self.last_step = Some(step);
        }
        self.current = to;
        self.latencies.clear();
        self.since_move = 0;
        self.calm = 0;
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::{PowerReading, Supply};

    /// Eight rungs, layer speed-up 1.0 … 4.5 and accuracy falling with it, thresholds 0.1 … 0.8, plus one
    /// dominated point that must be dropped.
    fn ladder() -> Ladder {
        let mut rungs: Vec<Rung> = (0..8)
            .map(|i| Rung {
                threshold: 0.1 * (i + 1) as f32,
                accuracy: 0.92 - 0.01 * i as f64,
                layer_speedup: 1.0 + 0.5 * i as f64,
                predicted_ms: None,
            })
            .collect();
        rungs.push(Rung { threshold: 0.85, accuracy: 0.80, layer_speedup: 2.0, predicted_ms: None });
        Ladder::from_rungs(ExitSignal::Energy, rungs).unwrap()
    }

    /// A device: 12 layers of 1 ms, 0.5 ms fixed cost; a rung runs 12 / speed-up layers on average.
    fn plant_ms(ladder: &Ladder, rung: usize, slowdown: f64) -> f64 {
        (0.5 + 12.0 / ladder.get(rung).layer_speedup) * slowdown
    }

    /// Deterministic noise in [0, 1) (xorshift64*).
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Runs a trace; returns the rung after every request and the feedback moves.
    fn run(
        c: &mut Controller,
        n: usize,
        latency: impl Fn(usize, usize) -> f64, // (request index, rung) → ms
    ) -> (Vec<usize>, Vec<TauChange>) {
        let (rungs, moves, _) = run_traced(c, n, latency);
        (rungs, moves)
    }

    /// [`run`], also returning every latency served.
    fn run_traced(
        c: &mut Controller,
        n: usize,
        latency: impl Fn(usize, usize) -> f64,
    ) -> (Vec<usize>, Vec<TauChange>, Vec<f64>) {
        let (mut rungs, mut moves, mut served) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let ms = latency(i, c.rung());
            served.push(ms);
            if let Some(m) = c.record(ms) {
                moves.push(m);
            }
            rungs.push(c.rung());
        }
        (rungs, moves, served)
    }

    fn reversals(moves: &[TauChange]) -> usize {
        let dirs: Vec<bool> = moves.iter().map(|m| m.to_rung > m.from_rung).collect();
        dirs.windows(2).filter(|w| w[0] != w[1]).count()
    }

    fn budgeted(budget: f64) -> ControllerConfig {
        ControllerConfig { budget_ms: Some(budget), min_samples: 16, ..ControllerConfig::default() }
    }

    #[test]
    fn ladder_keeps_the_pareto_front_slowest_first() {
        let l = ladder();
        assert_eq!(l.len(), 8);
        assert!(l.rungs().windows(2).all(|w| w[0].layer_speedup < w[1].layer_speedup && w[0].accuracy > w[1].accuracy));
        assert!(!l.rungs().iter().any(|r| r.threshold == 0.85));
        assert_eq!(l.nearest(0.42), 3);
        assert_eq!(l.fastest(), 7);
        assert!(Ladder::from_rungs(ExitSignal::Energy, vec![]).is_err());
    }

    #[test]
    fn steady_load_settles_on_the_most_accurate_rung_within_budget() {
        let l = ladder();
        // Budget 5 ms: rung latencies are 12.5, 8.5, 6.5, 5.3, 4.5, 3.9, … → rung 4 is the slowest that fits.
        let mut c = Controller::new(l.clone(), 0.1, budgeted(5.0)).unwrap();
        assert_eq!(c.rung(), 0);
        let (rungs, moves) = run(&mut c, 3000, |_, r| plant_ms(&l, r, 1.0));
        assert_eq!(c.rung(), 4, "moves: {moves:?}");
        assert!(plant_ms(&l, c.rung(), 1.0) <= 5.0);
        // It walked down one rung per decision and then stayed: no reversal, nothing in the last 2500 requests.
        assert!(moves.iter().all(|m| m.to_rung == m.from_rung + 1));
        assert_eq!(reversals(&moves), 0);
        assert!(rungs[500..].iter().all(|&r| r == 4));
        // A move needs at least min_samples requests at the previous rung.
        let first_change = rungs.iter().position(|&r| r != 0).unwrap();
        assert_eq!(first_change, 15);
    }

    #[test]
    fn step_change_moves_faster_then_recovers_without_flapping() {
        let l = ladder();
        let mut c = Controller::new(l.clone(), 0.1, budgeted(5.0)).unwrap();
        // Requests 0..1000 normal, 1000..3000 the device is 1.6× slower (thermal throttling), then normal again.
        let slow = |i: usize| if (1000..3000).contains(&i) { 1.6 } else { 1.0 };
        let (rungs, moves) = run(&mut c, 5000, |i, r| plant_ms(&l, r, slow(i)));
        assert_eq!(rungs[999], 4);
        // 1.6× slower: rung 7 (4.5 × 1.6 = 7.2 ms) … no rung fits, it goes to the fastest and stays.
        assert_eq!(rungs[2999], 7);
        // Back to normal: it climbs back while the slower rung is predicted inside budget · (1 − headroom) =
        // 4.25 ms. Without a profile the prediction scales by layer speed-up: rung 5 (3.93 ms) predicts rung 4 at
        // 4.58 ms, so it stops at rung 5 — inside the hysteresis band, below budget, and still.
        assert_eq!(c.rung(), 5, "{moves:?}");
        assert!(plant_ms(&l, 5, 1.0) <= 5.0);
        assert!(rungs[3500..].iter().all(|&r| r == 5));
        // Faster, then slower: exactly one reversal, never an over-budget step undoing a headroom step.
        assert_eq!(reversals(&moves), 1, "{moves:?}");
    }

    #[test]
    fn noisy_load_holds_the_percentile_and_does_not_oscillate() {
        let l = ladder();
        let mut c = Controller::new(l.clone(), 0.1, budgeted(6.0)).unwrap();
        let noise = std::cell::RefCell::new(Noise(0x9E37_79B9_7F4A_7C15));
        // ±30 % uniform jitter plus a 25 ms spike in 2 % of requests (another process on the core).
        let latency = |_: usize, r: usize| {
            let mut n = noise.borrow_mut();
            let base = plant_ms(&l, r, 1.0) * (0.7 + 0.6 * n.next());
            if n.next() < 0.02 {
                base + 25.0
            } else {
                base
            }
        };
        let (rungs, moves, served) = run_traced(&mut c, 20_000, latency);
        // Rung 4 serves 3.15–5.85 ms plus 2 % spikes: its true p95 is ≈ 5.77 ms, within 6 ms. Rung 3 serves
        // 3.7–6.9 ms: 29 % of its requests exceed the budget. So rung 4 is the answer, and spikes (2 % < 5 %) must
        // not push it away.
        assert_eq!(*rungs.last().unwrap(), 4, "{moves:?}");
        assert!(reversals(&moves) <= 2, "{} reversals in {} moves: {moves:?}", reversals(&moves), moves.len());
        let settled = rungs.iter().rposition(|&r| r != 4).map_or(0, |i| i + 1);
        assert!(settled < 1000, "settled only after request {settled}");
        let p95 = percentile(&served[settled..], 95.0);
        assert!(p95 <= 6.0, "served p95 {p95:.2} ms over the 6 ms budget");
    }

    #[test]
    fn profile_predictions_know_the_fixed_cost() {
        // A device with a large fixed cost (5 ms tokenizer + embeddings): latency = 5 + 12 / speed-up.
        let big_fixed = |l: &Ladder, r: usize| 5.0 + 12.0 / l.get(r).layer_speedup;
        let config = ControllerConfig { budget_ms: Some(12.0), min_samples: 16, ..ControllerConfig::default() };
        let climb_from_hot = |l: Ladder| {
            let mut c = Controller::new(l.clone(), 0.3, config.clone()).unwrap();
            c.observe_power(&PowerReading::new(Supply::NoBattery, Some(90.0)));
            assert_eq!(c.rung(), 4);
            c.observe_power(&PowerReading::new(Supply::NoBattery, Some(50.0)));
            run(&mut c, 1000, |_, r| big_fixed(&l, r));
            c.rung()
        };
        // By speed-up ratio alone rung 3 looks like 9.0 × 3 / 2.5 = 10.8 ms > 10.2: it stays at rung 4.
        assert_eq!(climb_from_hot(ladder()), 4);
        // The profile knows rung 3 costs 9.8 ms ≤ 10.2: it climbs there, and no further (rung 2: 11 ms).
        let l = ladder();
        let profiled = l.clone().with_predictions(|tau| Some(big_fixed(&l, l.nearest(tau))));
        assert_eq!(climb_from_hot(profiled), 3);
    }

    #[test]
    fn impossible_budget_goes_to_the_fastest_rung_and_stays() {
        let l = ladder();
        let mut c = Controller::new(l.clone(), 0.1, budgeted(1.0)).unwrap();
        let (_, moves) = run(&mut c, 2000, |_, r| plant_ms(&l, r, 1.0));
        assert_eq!(c.rung(), 7);
        assert_eq!(moves.len(), 7);
        assert!(matches!(moves[0].reason, Reason::OverBudget { budget_ms, .. } if budget_ms == 1.0));
    }

    fn battery(capacity: f32) -> PowerReading {
        PowerReading::new(Supply::Battery { capacity: Some(capacity) }, Some(50.0))
    }

    fn mains() -> PowerReading {
        PowerReading::new(Supply::Mains { capacity: Some(90.0) }, Some(50.0))
    }

    #[test]
    fn battery_policies_without_budget() {
        // Configured operating point τ = 0.3 (rung 2); saver two rungs faster (rung 4).
        let mut c = Controller::new(ladder(), 0.3, ControllerConfig::default()).unwrap();
        assert_eq!((c.mode(), c.rung()), (PowerMode::Mains, 0));
        // No battery behaves as mains.
        assert!(c.observe_power(&PowerReading::new(Supply::NoBattery, None)).is_empty());
        // Unplugged: debounced, the change counts on the second reading.
        assert!(c.observe_power(&battery(80.0)).is_empty());
        let ev = c.observe_power(&battery(80.0));
        assert!(matches!(ev[0], ControllerEvent::Mode(ModeChange { to: PowerMode::Battery, .. })));
        assert!(
            matches!(&ev[1], ControllerEvent::Tau(t) if t.to_rung == 2 && t.reason == Reason::Power { mode: PowerMode::Battery })
        );
        assert_eq!(c.threshold(), 0.3);
        // Draining: at 20 % the saver starts; it stays at 21–24 % and ends at 25 %.
        for pct in [50.0, 30.0, 21.0] {
            assert!(c.observe_power(&battery(pct)).is_empty());
        }
        let ev = c.observe_power(&battery(20.0));
        assert!(matches!(&ev[1], ControllerEvent::Tau(t) if t.to_rung == 4), "{ev:?}");
        for pct in [21.0, 24.0, 22.0, 24.9] {
            assert!(c.observe_power(&battery(pct)).is_empty(), "flapped at {pct}");
        }
        assert_eq!(c.mode(), PowerMode::Saver);
        let ev = c.observe_power(&battery(25.0));
        assert!(matches!(&ev[0], ControllerEvent::Mode(m) if m.to == PowerMode::Battery));
        assert_eq!(c.rung(), 2);
        // A garbled capacity keeps the last known state.
        c.observe_power(&battery(15.0));
        assert_eq!(c.mode(), PowerMode::Saver);
        assert!(c.observe_power(&PowerReading::new(Supply::Battery { capacity: None }, Some(50.0))).is_empty());
        assert_eq!(c.mode(), PowerMode::Saver);
        // Plugged in (debounced): accuracy first, low battery forgotten once charging.
        assert!(c.observe_power(&mains()).len() == 2, "charging ends the low-battery saver at once");
        assert_eq!(c.mode(), PowerMode::Battery, "but the supply switch itself waits for the second reading");
        let ev = c.observe_power(&mains());
        assert!(matches!(&ev[0], ControllerEvent::Mode(m) if m.to == PowerMode::Mains));
        assert_eq!(c.rung(), 0);
        // A single flicker of the supply does nothing.
        assert!(c.observe_power(&battery(90.0)).is_empty());
        assert!(c.observe_power(&mains()).is_empty());
        assert_eq!(c.mode(), PowerMode::Mains);
    }

    #[test]
    fn unknown_supply_uses_the_configured_point() {
        let mut c = Controller::new(ladder(), 0.3, ControllerConfig { debounce: 1, ..Default::default() }).unwrap();
        c.observe_power(&PowerReading::new(Supply::Unknown { capacity: None }, None));
        assert_eq!((c.mode(), c.rung()), (PowerMode::Battery, 2));
    }

    #[test]
    fn hot_device_is_a_saver_with_hysteresis_even_on_mains() {
        let mut c = Controller::new(ladder(), 0.3, ControllerConfig::default()).unwrap();
        let at = |t: f32| PowerReading::new(Supply::NoBattery, Some(t));
        assert!(c.observe_power(&at(79.9)).is_empty());
        let ev = c.observe_power(&at(80.0));
        assert!(matches!(&ev[0], ControllerEvent::Mode(m) if m.to == PowerMode::Saver && m.hot));
        assert_eq!(c.rung(), 4);
        for t in [78.0, 76.0, 75.0, 79.0] {
            assert!(c.observe_power(&at(t)).is_empty(), "flapped at {t} °C");
        }
        // The sensor vanishing keeps the state.
        assert!(c.observe_power(&PowerReading::new(Supply::NoBattery, None)).is_empty());
        let ev = c.observe_power(&at(74.9));
        assert!(matches!(&ev[0], ControllerEvent::Mode(m) if m.to == PowerMode::Mains));
        assert_eq!(c.rung(), 0);
    }

    #[test]
    fn saver_with_budget_jumps_to_the_floor_then_feedback_holds_it() {
        let l = ladder();
        let mut c = Controller::new(l.clone(), 0.3, budgeted(20.0)).unwrap();
        // Generous budget: on mains it stays at the most accurate rung.
        run(&mut c, 200, |_, r| plant_ms(&l, r, 1.0));
        assert_eq!(c.rung(), 0);
        let hot = PowerReading::new(Supply::NoBattery, Some(85.0));
        let ev = c.observe_power(&hot);
        assert!(matches!(&ev[1], ControllerEvent::Tau(t) if t.to_rung == 4), "{ev:?}");
        // The budget has headroom, but the floor forbids slower rungs while hot.
        let (_, moves) = run(&mut c, 500, |_, r| plant_ms(&l, r, 1.0));
        assert!(moves.is_empty(), "{moves:?}");
        // Cooled down: the feedback climbs back one rung at a time.
        c.observe_power(&PowerReading::new(Supply::NoBattery, Some(60.0)));
        assert_eq!(c.rung(), 4, "with a budget the climb back goes through the feedback");
        let (_, moves) = run(&mut c, 500, |_, r| plant_ms(&l, r, 1.0));
        assert_eq!(c.rung(), 0);
        assert!(moves.iter().all(|m| m.from_rung == m.to_rung + 1 && matches!(m.reason, Reason::Headroom { .. })));
    }

    #[test]
    fn events_explain_themselves() {
        let l = ladder();
        let mut c = Controller::new(l.clone(), 0.1, budgeted(5.0)).unwrap();
        let (_, moves) = run(&mut c, 16, |_, r| plant_ms(&l, r, 1.0));
        let text = moves[0].to_string();
        assert!(text.contains("τ 0.1 → 0.2") && text.contains("over the 5.00 ms budget"), "{text}");
        let json = serde_json::to_value(ControllerEvent::Tau(moves[0].clone())).unwrap();
        assert_eq!(json["event"], "tau");
        assert_eq!(json["reason"]["kind"], "over_budget");
    }

    #[test]
    fn settings_are_validated() {
        let bad = ControllerConfig { budget_ms: Some(-1.0), ..Default::default() };
        assert!(Controller::new(ladder(), 0.1, bad).is_err());
        let bad = ControllerConfig { cool_c: 90.0, ..Default::default() };
        assert!(Controller::new(ladder(), 0.1, bad).is_err());
        let bad = ControllerConfig { min_samples: 200, ..Default::default() };
        assert!(Controller::new(ladder(), 0.1, bad).is_err());
    }
}
