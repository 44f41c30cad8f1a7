//! The package loader on damaged stage graphs and tokenizers whose manifest digests are recomputed, so that the
//! damage passes the checksum and meets the loader (protobuf decoding, tract's model building, the shape checks
//! between stages, the tokenizer's JSON). A load is an error naming the file, or a package whose answers keep their
//! invariants; never a panic.

use crate::fixtures::{copy_package, package};
use crate::mutate::{apply, edits};
use crate::{fuzz, holds};
use cosee_runtime::manifest::{digest_file, Manifest};
use cosee_runtime::{Engine, Input, Task};

#[test]
fn fuzz_package_loader() {
    let manifest = Manifest::read(package(Task::Sst2)).unwrap();
    let files: Vec<String> = manifest.files.keys().filter(|f| f.as_str() != "manifest.json").cloned().collect();
    let originals: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(package(Task::Sst2).join(f)).unwrap()).collect();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("package");
    copy_package(Task::Sst2, &copy);
    fuzz("package", 192, (0..files.len(), edits()), |(which, e)| {
        let file = &files[which];
        let path = copy.join(file);
        std::fs::write(&path, apply(&originals[which], &e)).unwrap();
        let mut damaged = manifest.clone();
        damaged.files.insert(file.clone(), digest_file(&path).unwrap());
        damaged.write(&copy).unwrap();
        // The file and the manifest go back when the case ends, whether it passes, fails or panics.
        let _restore = Restore { path: &path, bytes: &originals[which], manifest: &manifest, package: &copy };
        match Engine::load(&copy) {
            Err(e) => {
                holds!(e.to_string().contains(file.as_str()) || e.to_string().contains("tokenizer"), "{file}: {e}")
            }
            Ok(engine) => {
                for text in ["a charming and often affecting journey", "", "x"] {
                    if let Ok(a) = engine.classify(&Input::single(text)) {
                        holds!((1..=a.num_layers).contains(&a.exit_layer), "{file}: exit {}", a.exit_layer);
                        holds!(a.label_index < a.probs.len(), "{file}: label {}", a.label_index);
                    }
                }
            }
        }
        Ok(())
    });
}

struct Restore<'a> {
    path: &'a std::path::Path,
    bytes: &'a [u8],
    manifest: &'a Manifest,
    package: &'a std::path::Path,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        std::fs::write(self.path, self.bytes).expect("restore the damaged file");
        self.manifest.write(self.package).expect("restore the manifest");
    }
}
