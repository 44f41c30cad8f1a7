//! The package manifest, damaged in its bytes or its values (digests left as they are: the manifest is what is
//! read first, and a value it gets wrong must be refused before anything trusts it). `Engine::load` answers with
//! an error, or a package that loads and answers; then `serve`'s ladder and controller come up. Never a panic.

use crate::fixtures::{copy_package, package};
use crate::mutate::{apply_json_mutation, json_mutation};
use crate::{fuzz, holds};
use cosee_runtime::controller::{Controller, ControllerConfig, Ladder};
use cosee_runtime::manifest::MANIFEST_FILE;
use cosee_runtime::{Engine, Input, Task};

#[test]
fn fuzz_manifest() {
    let original = std::fs::read(package(Task::Sst2).join(MANIFEST_FILE)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("package");
    copy_package(Task::Sst2, &copy);
    fuzz("manifest", 384, json_mutation(), |m| {
        std::fs::write(copy.join(MANIFEST_FILE), apply_json_mutation(&original, &m)).unwrap();
        let Ok(engine) = Engine::load(&copy) else { return Ok(()) };
        let manifest = engine.manifest();
        holds!(
            engine.num_layers() == manifest.num_layers,
            "{} layers loaded for {}",
            engine.num_layers(),
            manifest.num_layers
        );
        if let Ok(answer) = engine.classify(&Input::single("a charming and often affecting journey")) {
            holds!((1..=answer.num_layers).contains(&answer.exit_layer), "exit {}", answer.exit_layer);
        }
        let ladder = Ladder::from_manifest(manifest);
        holds!(!ladder.is_empty(), "an empty ladder");
        let _ = Controller::new(ladder, manifest.default_threshold, ControllerConfig::default());
        Ok(())
    });
}
