//! Damaged stage graphs that once crashed the loader, found by the package fuzzer (tests/fuzz/package.rs) and kept
//! here as regression tests: each must be refused with `LoadError::InvalidGraph` naming the file. The damage is
//! made in the protobuf itself and the manifest digest is recomputed, so that the loader, not the checksum, meets
//! it.

use cosee_runtime::manifest::{digest_file, layer_file, Manifest};
use cosee_runtime::{Engine, ExitSignal, LoadError, Task};
use cosee_tools::export::{export, ExportOptions};
use cosee_tools::testing::tiny_config;
use cosee_tools::write_random_checkpoint;
use prost::Message;
use std::path::{Path, PathBuf};
use tract_onnx::pb::ModelProto;

fn package(root: &Path) -> PathBuf {
    let checkpoint = root.join("checkpoint");
    write_random_checkpoint(&checkpoint, &tiny_config(2, 32, 4, Task::Sst2, ExitSignal::Energy), 5).unwrap();
    let package = root.join("package");
    export(&checkpoint, &package, &ExportOptions::default()).unwrap();
    package
}

/// Rewrites stage `file` through `damage` and lists its new digest.
fn damage_graph(package: &Path, file: &str, damage: impl FnOnce(&mut ModelProto)) {
    let path = package.join(file);
    let mut model = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    damage(&mut model);
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    let mut manifest = Manifest::read(package).unwrap();
    manifest.files.insert(file.to_string(), digest_file(&path).unwrap());
    manifest.write(package).unwrap();
}

#[test]
fn a_raw_initializer_of_a_type_tract_cannot_hold_is_refused_not_a_panic() {
    // tract-onnx 0.23.9 answered this with `unimplemented!("FIXME, raw tensor loading")`.
    let root = tempfile::tempdir().unwrap();
    let package = package(root.path());
    let file = layer_file(1);
    damage_graph(&package, &file, |model| {
        let graph = model.graph.as_mut().expect("a graph");
        let raw = graph.initializer.iter_mut().find(|t| !t.raw_data.is_empty()).expect("a raw-data initializer");
        raw.data_type = 8; // STRING, held as raw bytes
    });
    match Engine::load(&package) {
        Err(LoadError::InvalidGraph { path, message }) => {
            assert!(path.ends_with(&file), "{path}");
            assert!(message.contains("panicked"), "{message}");
        }
        Err(e) => panic!("refused, but not as an invalid graph: {e}"),
        Ok(_) => panic!("a graph with a complex initializer loaded"),
    }
}
