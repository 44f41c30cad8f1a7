//! The real files the targets start from: tiny random packages (3 layers, hidden 32) exported by `cosee-tools`, one
//! per kind of task, built once.

use cosee_runtime::{Engine, ExitSignal, Task};
use cosee_tools::export::{export, ExportOptions};
use cosee_tools::testing::tiny_config;
use cosee_tools::write_random_checkpoint;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

struct Built {
    _root: tempfile::TempDir,
    package: PathBuf,
    engine: Engine,
}

fn build(task: Task) -> Built {
    let root = tempfile::tempdir().expect("a temporary directory");
    let checkpoint = root.path().join("checkpoint");
    write_random_checkpoint(&checkpoint, &tiny_config(3, 32, 4, task, ExitSignal::Energy), 21).expect("checkpoint");
    let package = root.path().join("package");
    export(&checkpoint, &package, &ExportOptions::default()).expect("export");
    let engine = Engine::load(&package).expect("the intact package loads");
    Built { _root: root, package, engine }
}

fn built(task: Task) -> &'static Built {
    static SINGLE: OnceLock<Built> = OnceLock::new();
    static PAIR: OnceLock<Built> = OnceLock::new();
    if task.is_pair() {
        PAIR.get_or_init(|| build(Task::Mrpc))
    } else {
        SINGLE.get_or_init(|| build(Task::Sst2))
    }
}

/// The package directory of a single-sentence (SST-2) or pair (MRPC) task; never modified.
pub fn package(task: Task) -> &'static Path {
    &built(task).package
}

pub fn engine(task: Task) -> &'static Engine {
    &built(task).engine
}

/// A copy of the package, to damage.
pub fn copy_package(task: Task, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(package(task)).expect("read the package") {
        let entry = entry.expect("a directory entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a package file");
    }
}
