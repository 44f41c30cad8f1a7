//! Cold start without the deep layers on its path. Planning a layer (tract's optimizer, our rewrites, kernel choice)
//! is most of a tract load, about 25 ms per layer on a 2-core x86 box, and an input that leaves at layer 2 never
//! needs layers 3 to 6. So a [`crate::TractBackend`] reads and checks every stage at load (every damaged file is
//! still refused there), plans the embeddings and the first layer and exit at once, and leaves the other stages to
//! [`plan_in_background`]. A stage an input reaches before its plan is done is planned on the input's own thread; a
//! caller that arrives while another thread plans it waits for that thread. Either way each stage is planned once.

use crate::error::{LoadError, RunError};
use crate::fused::Fusion;
use crate::stage::{StageGraph, StagePlan};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

/// A stage read and checked at load, planned on first use or by the background planner, whichever comes first.
#[derive(Debug)]
pub(crate) struct DeferredStage {
    file: String,
    fusion: Fusion,
    graph: Mutex<Option<StageGraph>>,
    plan: OnceLock<Result<StagePlan, LoadError>>,
}

impl DeferredStage {
    /// A stage to be planned later with the rewrites `fusion` asks for.
    pub fn new(graph: StageGraph, fusion: Fusion) -> Self {
        Self { file: graph.file().to_string(), fusion, graph: Mutex::new(Some(graph)), plan: OnceLock::new() }
    }

    /// The stage's plan, built now on this thread unless another thread built it or is building it (then this one
    /// waits for it). A stage whose planning failed keeps its error and reports it every time it is asked for.
    pub fn get(&self) -> Result<&StagePlan, RunError> {
        self.planned()
            .as_ref()
            .map_err(|e| RunError::Stage { stage: self.file.clone(), message: format!("could not be planned: {e}") })
    }

    /// Plans the stage now, during the load, where a failure refuses the package like any other damaged file.
    pub fn plan_at_load(&self) -> Result<(), LoadError> {
        match self.planned() {
            Ok(_) => Ok(()),
            // Planning fails only as `InvalidGraph` (StageGraph::plan).
            Err(LoadError::InvalidGraph { path, message }) => {
                Err(LoadError::InvalidGraph { path: path.clone(), message: message.clone() })
            }
            Err(other) => Err(LoadError::InvalidGraph { path: self.file.clone(), message: other.to_string() }),
        }
    }

    fn planned(&self) -> &Result<StagePlan, LoadError> {
        self.plan.get_or_init(|| match self.graph.lock().unwrap_or_else(PoisonError::into_inner).take() {
            Some(graph) => graph.plan(self.fusion),
            // `get_or_init` runs this closure once; the graph is only ever taken here.
            None => Err(LoadError::InvalidGraph {
                path: self.file.clone(),
                message: "the stage's graph was gone before it was planned".into(),
            }),
        })
    }

    /// Whether the plan is built (or failed): asking for it now would not wait.
    pub fn is_planned(&self) -> bool {
        self.plan.get().is_some()
    }
}

/// What owns deferred stages, in the order inputs need them.
pub(crate) trait DeferredStages: Send + Sync + 'static {
    /// The `at`-th stage an input needs (0-based), or `None` past the last.
    fn deferred(&self, at: usize) -> Option<&DeferredStage>;
}

/// Plans the stages of `owner` in their order on the machine's cores but one (at least one thread), in the
/// background. The threads hold `owner` only weakly: when the engine is dropped they stop after the stage in hand, so
/// an engine loaded and dropped at once (a fuzz case, a failed request) leaves no work behind. The memory the
/// planning freed goes back to the system when the last thread is done.
pub(crate) fn plan_in_background<S: DeferredStages>(owner: &Arc<S>) {
    let pending = (0..).take_while(|&at| owner.deferred(at).is_some()).filter(|&at| !is_planned(owner, at)).count();
    if pending == 0 {
        return;
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = cores.saturating_sub(1).clamp(1, pending);
    let next = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(threads));
    for _ in 0..threads {
        let (owner, next, running) = (Arc::downgrade(owner), Arc::clone(&next), Arc::clone(&running));
        let work = move || {
            plan_each(&owner, &next);
            if running.fetch_sub(1, Ordering::AcqRel) == 1 {
                crate::parallel::release_freed_memory();
            }
        };
        // Without a thread (the system refused one) the stages are planned when first used: slower, still right.
        if std::thread::Builder::new().name("cosee-planner".into()).spawn(work).is_err() {
            log::debug!("no background planner thread; deeper stages will be planned on first use");
        }
    }
}

fn is_planned<S: DeferredStages>(owner: &Arc<S>, at: usize) -> bool {
    owner.deferred(at).is_some_and(DeferredStage::is_planned)
}

fn plan_each<S: DeferredStages>(owner: &Weak<S>, next: &AtomicUsize) {
    loop {
        let Some(owner) = owner.upgrade() else { return };
        let Some(stage) = owner.deferred(next.fetch_add(1, Ordering::Relaxed)) else { return };
        // A failure stays in the stage, and the input that needs the stage reports it.
        if let Err(e) = stage.get() {
            log::warn!("{e}");
        }
    }
}
