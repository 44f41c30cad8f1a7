//! Where cold start goes: the time of each phase of opening a package or planning a stage, written to the debug
//! log (`RUST_LOG=cosee_runtime=debug`) so that a slow load can be taken apart without a profiler.

/// Milliseconds spent in each phase of a load, for the debug log.
pub(crate) struct LoadPhases {
    last: std::time::Instant,
    done: Vec<(&'static str, f64)>,
}

impl LoadPhases {
    pub(crate) fn start() -> Self {
        Self { last: std::time::Instant::now(), done: Vec::new() }
    }

    pub(crate) fn mark(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        self.done.push((phase, (now - self.last).as_secs_f64() * 1e3));
        self.last = now;
    }
}

impl std::fmt::Display for LoadPhases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total: f64 = self.done.iter().map(|(_, ms)| ms).sum();
        write!(f, "{total:.1} ms")?;
        for (phase, ms) in &self.done {
            write!(f, ", {phase} {ms:.1}")?;
        }
        Ok(())
    }
}
