//! Every package fault of issue 2 is refused at load with its own error, naming the file: a missing stage file, a
//! truncated file, a tampered file (checksum mismatch), an unlisted file, an unknown format version, a shape mismatch
//! between stages (a layer of another hidden size, an exit of another label count), and a corrupt ONNX graph.
//!
//! Packages are real: a tiny random checkpoint (3 layers, hidden 32) exported by `cosee-tools`, then damaged. A fault
//! that the checksums would catch first (a spliced or corrupt graph) gets its manifest digest rewritten, so that the
//! check under test is the one that answers.

use cosee_runtime::json::JsonError;
use cosee_runtime::manifest::{digest_file, Manifest};
use cosee_runtime::{Engine, ExitSignal, Input, LoadError, Package, Task};
use cosee_tools::export::{export, ExportOptions};
use cosee_tools::testing::tiny_config;
use cosee_tools::write_random_checkpoint;
use std::path::{Path, PathBuf};

/// Exports a random tiny model of `task` into `root/name` and returns the package directory.
fn export_tiny(root: &Path, name: &str, hidden: usize, task: Task, seed: u64) -> PathBuf {
    let checkpoint = root.join(format!("{name}-checkpoint"));
    let config = tiny_config(3, hidden, 4, task, ExitSignal::Energy);
    write_random_checkpoint(&checkpoint, &config, seed).expect("random checkpoint");
    let package = root.join(name);
    export(&checkpoint, &package, &ExportOptions::default()).expect("export");
    package
}

fn tiny(root: &Path) -> PathBuf {
    export_tiny(root, "package", 32, Task::Sst2, 7)
}

/// Rewrites the manifest's digest of `file` to the file's current content.
fn relist(package: &Path, file: &str) {
    let mut manifest = Manifest::read(package).unwrap();
    manifest.files.insert(file.to_string(), digest_file(&package.join(file)).unwrap());
    manifest.write(package).unwrap();
}

fn load_error(package: &Path) -> LoadError {
    match Engine::load(package) {
        Ok(_) => panic!("{} loaded despite its fault", package.display()),
        Err(e) => e,
    }
}

#[test]
fn the_intact_package_loads_and_answers() {
    let root = tempfile::tempdir().unwrap();
    let package = tiny(root.path());
    let engine = Engine::load(&package).unwrap();
    let answer = engine.classify(&Input::single("a charming and often affecting journey")).unwrap();
    assert_eq!(answer.num_layers, 3);
    assert!((1..=3).contains(&answer.exit_layer));
}

#[test]
fn missing_stage_file() {
    let root = tempfile::tempdir().unwrap();
    let package = tiny(root.path());
    std::fs::remove_file(package.join("layer_02.onnx")).unwrap();
    let err = load_error(&package);
    assert!(matches!(&err, LoadError::MissingFile { path, .. } if path.ends_with("layer_02.onnx")), "{err}");
}

#[test]
fn truncated_file() {
    let root = tempfile::tempdir().unwrap();
    let package = tiny(root.path());
    let path = package.join("layer_03.onnx");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_error(&package);
    assert!(matches!(&err, LoadError::SizeMismatch { path, .. } if path.ends_with("layer_03.onnx")), "{err}");
}

#[test]
fn tampered_file_fails_its_checksum() {
    let root = tempfile::tempdir().unwrap();
    let package = tiny(root.path());
    let path = package.join("exit_01.onnx");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last / 2] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = load_error(&package);
    assert!(matches!(&err, LoadError::ChecksumMismatch { path, .. } if path.ends_with("exit_01.onnx")), "{err}");
}

#[test]
fn unlisted_stage_file() {
    let root = tempfile::tempdir().unwrap();
    let package = tiny(root.path());
    let mut manifest = Manifest::read(&package).unwrap();
    manifest.files.remove("embeddings.onnx");
    manifest.write(&package).unwrap();
    let err = load_error(&package);
    assert!(matches!(&err, LoadError::Unlisted { path } if path.ends_with("embeddings.onnx")), "{err}");
}

#[test]
fn unknown_format_version() {
    let root = tempfile::tempdir().unwrap();
    let package = tiny(root.path());
    let path = package.join("manifest.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["format_version"] = 2.into();
    std::fs::write(&path, json.to_string()).unwrap();
    let err = load_error(&package);
    assert!(
        matches!(&err, LoadError::Manifest(JsonError::UnsupportedVersion { found: 2, path, .. }) if path.ends_with("manifest.json")),
        "{err}"
    );
}

#[test]
fn layer_of_another_hidden_size_is_a_shape_mismatch() {
    let root = tempfile::tempdir().unwrap();
    let package = tiny(root.path());
    let other = export_tiny(root.path(), "wider", 48, Task::Sst2, 8);
    std::fs::copy(other.join("layer_02.onnx"), package.join("layer_02.onnx")).unwrap();
    relist(&package, "layer_02.onnx");
    // The files are intact as listed: the package opens; the engine refuses it while chaining the stages.
    Package::open(&package).unwrap();
    let err = load_error(&package);
    assert!(matches!(&err, LoadError::ShapeMismatch { path, .. } if path.ends_with("layer_02.onnx")), "{err}");
    assert!(err.to_string().contains("48"), "{err}");
}

#[test]
fn exit_of_another_label_count_is_a_shape_mismatch() {
    let root = tempfile::tempdir().unwrap();
    let package = tiny(root.path());
    let mnli = export_tiny(root.path(), "mnli", 32, Task::Mnli, 9);
    std::fs::copy(mnli.join("exit_03.onnx"), package.join("exit_03.onnx")).unwrap();
    relist(&package, "exit_03.onnx");
    let err = load_error(&package);
    assert!(matches!(&err, LoadError::ShapeMismatch { path, .. } if path.ends_with("exit_03.onnx")), "{err}");
}

#[test]
fn corrupt_onnx_graph() {
    let root = tempfile::tempdir().unwrap();
    let package = tiny(root.path());
    let path = package.join("layer_01.onnx");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() / 3);
    bytes.extend_from_slice(b"\xff\xfe not protobuf");
    std::fs::write(&path, &bytes).unwrap();
    relist(&package, "layer_01.onnx");
    let err = load_error(&package);
    assert!(matches!(&err, LoadError::InvalidGraph { path, .. } if path.ends_with("layer_01.onnx")), "{err}");
}

#[test]
fn a_layer_count_beyond_the_listed_files_is_refused_before_any_stage_is_named() {
    // Found by tests/fuzz/manifest.rs: a count of 2^64 - 1 made the loader list stage names until it ran out of
    // memory. The count must fit the files the manifest lists (a layer and an exit file each).
    let root = tempfile::tempdir().unwrap();
    let package = tiny(root.path());
    for count in [4, usize::MAX] {
        let mut manifest = Manifest::read(&package).unwrap();
        manifest.num_layers = count;
        manifest.write(&package).unwrap();
        let err = load_error(&package);
        assert!(
            matches!(&err, LoadError::InvalidManifest { path, message } if path.ends_with("manifest.json")
                && message.contains(&format!("num_layers is {count}"))),
            "{err}"
        );
    }
}

/// Regression (the 30-minute fuzz run of tests/fuzz/package.rs, batch 115: one flipped bit): an exit graph whose
/// [CLS] gather index is damaged (0 → 3) loads, since the index is only a value, but made tract's `Gather` panic on
/// any input of 3 tokens or fewer. The input now gets an error; longer inputs and the engine carry on.
#[test]
fn a_damaged_gather_index_fails_the_input_not_the_process() {
    use prost::Message;
    let root = tempfile::tempdir().unwrap();
    let package = tiny(root.path());
    let path = package.join("exit_01.onnx");
    let mut model = tract_onnx::pb::ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let index = graph.initializer.iter_mut().find(|t| t.name == "cls_index").expect("the exit's [CLS] index");
    index.raw_data = 3i64.to_le_bytes().to_vec();
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    relist(&package, "exit_01.onnx");
    let engine = Engine::load(&package).expect("the damage is in a value: the graph loads");
    let err = engine.classify(&Input::single("x")).expect_err("[CLS] x [SEP] has no token 3");
    assert!(err.to_string().contains("exit_01.onnx"), "{err}");
    let answer = engine.classify(&Input::single("the movie is a charming and often affecting journey")).unwrap();
    assert!((1..=answer.num_layers).contains(&answer.exit_layer));
}

/// Regression (the rerun of the 30-minute fuzz run of tests/fuzz/package.rs, after 17 minutes): a damaged `axis` on
/// a layer's `LayerNormalization` node made tract's inference rules loop up to 2^63 times, so `Engine::load` hung
/// instead of refusing the file. The load runs on its own thread here, so that a regression fails this test after a
/// minute instead of hanging the suite.
#[test]
fn a_damaged_layer_norm_axis_is_refused_not_a_hang() {
    use prost::Message;
    for axis in [-(1i64 << 40), 1 << 40, 9, -9] {
        let root = tempfile::tempdir().unwrap();
        let package = tiny(root.path());
        let path = package.join("layer_01.onnx");
        let mut model = tract_onnx::pb::ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
        let graph = model.graph.as_mut().unwrap();
        let node = graph.node.iter_mut().find(|n| n.op_type == "LayerNormalization").expect("a LayerNorm node");
        let attribute = node.attribute.iter_mut().find(|a| a.name == "axis").expect("its axis attribute");
        attribute.i = axis;
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        relist(&package, "layer_01.onnx");

        let (send, receive) = std::sync::mpsc::channel();
        let loading = package.clone();
        std::thread::spawn(move || send.send(Engine::load(&loading).err()));
        let err = receive
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("Engine::load still running after 60 s with axis = {axis}"))
            .unwrap_or_else(|| panic!("a LayerNorm axis of {axis} loaded"));
        assert!(
            matches!(&err, LoadError::InvalidGraph { path, message } if path.ends_with("layer_01.onnx")
                && message.contains(&format!("axis = {axis}"))),
            "{err}"
        );
    }
}
