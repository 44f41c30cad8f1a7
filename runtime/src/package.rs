//! A model package on disk, validated: the manifest is of a known version and consistent, every file the format
//! requires is present and listed, every listed file matches its size and sha256, and the tokenizer loads. The
//! graphs themselves are checked (parsed, typed, shapes chained) when an [`crate::Engine`] is built from it.

use crate::error::LoadError;
use crate::load_phases::LoadPhases;
use crate::manifest::{self, digest_file, FileDigest, Manifest, MANIFEST_FILE, TOKENIZER_FILE};
use crate::tokenize::TextTokenizer;
use std::path::{Path, PathBuf};

/// A validated package: see the module doc. Nothing half-checked is ever handed out.
#[derive(Debug, Clone)]
pub struct Package {
    dir: PathBuf,
    manifest: Manifest,
    tokenizer: TextTokenizer,
}

impl Package {
    /// Reads and validates the package in `dir`. Each fault is its own [`LoadError`] variant naming the file.
    pub fn open(dir: &Path) -> Result<Self, LoadError> {
        let mut phases = LoadPhases::start();
        let manifest = Manifest::read(dir)?;
        check_manifest(dir, &manifest)?;
        phases.mark("manifest");
        check_listing(dir, &manifest)?;
        // Parsing tokenizer.json takes about 30 ms, as long as hashing everything else: it is checked and parsed on
        // a thread of its own while the other files are hashed on every core. A digest fault elsewhere is still
        // reported before anything about the tokenizer, as when the tokenizer was only read after every check.
        let (digests, tokenizer) = std::thread::scope(|scope| {
            let tokenizer = scope.spawn(|| open_tokenizer(dir, &manifest));
            let others: Vec<_> = manifest.files.iter().filter(|(file, _)| *file != TOKENIZER_FILE).collect();
            let digests =
                crate::parallel::map_in_order(&others, None, |(file, digest)| check_digest(dir, file, digest));
            (digests, tokenizer.join())
        });
        digests.into_iter().collect::<Result<(), _>>()?;
        let tokenizer = tokenizer.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        phases.mark("digests and tokenizer");
        log::debug!("opened {}: {phases}", dir.display());
        Ok(Self { dir: dir.to_path_buf(), manifest, tokenizer })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The path of one of the package's files.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// Internal consistency of the manifest, before any file is touched.
fn check_manifest(dir: &Path, m: &Manifest) -> Result<(), LoadError> {
    let invalid =
        |message: String| LoadError::InvalidManifest { path: dir.join(MANIFEST_FILE).display().to_string(), message };
    if m.num_layers == 0 {
        return Err(invalid("num_layers is 0: a package needs at least one layer".into()));
    }
    // Every layer needs a layer and an exit file listed, besides the embeddings: a layer count beyond what `files`
    // lists is refused here, before anything is built per layer (a damaged count of 2^64 - 1 once made the loader
    // list stage names until the process ran out of memory; found by tests/fuzz/manifest.rs).
    let listable = m.files.len().saturating_sub(1) / 2;
    if m.num_layers > listable {
        return Err(invalid(format!(
            "num_layers is {}, but files lists {} files: room for {listable} layers (a layer and an exit file each, \
             besides {})",
            m.num_layers,
            m.files.len(),
            manifest::EMBEDDINGS_FILE
        )));
    }
    if m.hidden_size == 0 {
        return Err(invalid("hidden_size is 0".into()));
    }
    if m.label_names.len() < 2 {
        return Err(invalid(format!("a classifier needs at least 2 label names, found {}", m.label_names.len())));
    }
    if m.label_names.len() != m.task.num_labels() {
        return Err(invalid(format!(
            "task {} has {} labels but label_names lists {}",
            m.task.name(),
            m.task.num_labels(),
            m.label_names.len()
        )));
    }
    if m.signal.direction != m.signal.name.direction() {
        return Err(invalid(format!(
            "signal {} exits {:?}, not {:?}",
            m.signal.name,
            m.signal.name.direction(),
            m.signal.direction
        )));
    }
    m.signal
        .name
        .check_threshold("default_threshold", m.default_threshold, Some(m.num_layers))
        .map_err(|e| invalid(e.to_string()))?;
    for name in m.files.keys() {
        // Listed names are plain file names inside the package, never paths out of it.
        let plain = Path::new(name).components().count() == 1
            && matches!(Path::new(name).components().next(), Some(std::path::Component::Normal(_)));
        if !plain {
            return Err(invalid(format!("files lists `{name}`, which is not a plain file name")));
        }
    }
    Ok(())
}

/// Presence, listing and size of every file, compared for all files before any is hashed, so that a truncated
/// file is reported as such, cheaply, and before a checksum error elsewhere.
fn check_listing(dir: &Path, m: &Manifest) -> Result<(), LoadError> {
    let mut required: Vec<(String, String)> = vec![(TOKENIZER_FILE.to_string(), "tokenizer".to_string())];
    required.extend(m.stage_files().into_iter().map(|f| {
        let what = if f == manifest::EMBEDDINGS_FILE { "the embeddings stage" } else { "a layer or exit stage" };
        (f, what.to_string())
    }));
    for (file, what) in &required {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(LoadError::MissingFile { path: path.display().to_string(), what: what.clone() });
        }
        if !m.files.contains_key(file) {
            return Err(LoadError::Unlisted { path: path.display().to_string() });
        }
    }
    for (file, digest) in &m.files {
        let path = dir.join(file);
        let display = path.display().to_string();
        let meta = std::fs::metadata(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => {
                LoadError::MissingFile { path: display.clone(), what: "listed in manifest.json".into() }
            }
            _ => LoadError::Io { path: display.clone(), source },
        })?;
        if meta.len() != digest.bytes {
            return Err(LoadError::SizeMismatch { path: display, expected: digest.bytes, found: meta.len() });
        }
    }
    Ok(())
}

/// One listed file's sha256 against the manifest's.
fn check_digest(dir: &Path, file: &str, digest: &FileDigest) -> Result<(), LoadError> {
    let path = dir.join(file);
    let display = path.display().to_string();
    let found = digest_file(&path).map_err(|source| LoadError::Io { path: display.clone(), source })?;
    if !found.sha256.eq_ignore_ascii_case(&digest.sha256) {
        return Err(LoadError::ChecksumMismatch {
            path: display,
            expected: digest.sha256.clone(),
            found: found.sha256,
        });
    }
    Ok(())
}

/// `tokenizer.json`, its digest checked first, configured for the package's length and task.
fn open_tokenizer(dir: &Path, m: &Manifest) -> Result<TextTokenizer, LoadError> {
    let path = dir.join(TOKENIZER_FILE);
    let listed = m.files.get(TOKENIZER_FILE).ok_or_else(|| LoadError::Unlisted { path: path.display().to_string() })?;
    check_digest(dir, TOKENIZER_FILE, listed)?;
    TextTokenizer::from_file(&path, m.max_seq_len, m.task.is_pair())
        .map_err(|message| LoadError::Tokenizer { path: path.display().to_string(), message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{EmbeddingStorage, Numerics, QuantScheme, Quantization, FORMAT_VERSION};
    use crate::{ExitSignal, Task};
    use std::collections::BTreeMap;

    /// A package whose stage files are placeholder bytes (graphs are the engine's business) and whose tokenizer is
    /// real, with a manifest listing every file's true digest.
    fn fake_package(dir: &Path) -> Manifest {
        let mut m = Manifest {
            format_version: FORMAT_VERSION,
            task: Task::Sst2,
            label_names: vec!["negative".into(), "positive".into()],
            num_layers: 2,
            hidden_size: 32,
            max_seq_len: 16,
            signal: ExitSignal::Energy.into(),
            default_threshold: 0.3,
            calibration: None,
            quantization: Quantization {
                scheme: QuantScheme::None,
                embeddings: EmbeddingStorage::F32,
                numerics: Numerics::Fused,
            },
            files: BTreeMap::new(),
        };
        std::fs::write(dir.join(TOKENIZER_FILE), cosee_format::testing::tiny_tokenizer_json(true)).unwrap();
        for (i, f) in m.stage_files().into_iter().enumerate() {
            std::fs::write(dir.join(&f), format!("graph {i} {f}").repeat(10)).unwrap();
        }
        relist(dir, &mut m);
        m
    }

    fn relist(dir: &Path, m: &mut Manifest) {
        let mut files: Vec<String> = m.stage_files();
        files.push(TOKENIZER_FILE.into());
        m.files = files.into_iter().map(|f| (f.clone(), digest_file(&dir.join(&f)).unwrap())).collect();
        m.write(dir).unwrap();
    }

    #[test]
    fn opens_a_consistent_package() {
        let dir = tempfile::tempdir().unwrap();
        let m = fake_package(dir.path());
        let p = Package::open(dir.path()).unwrap();
        assert_eq!(p.manifest(), &m);
        assert_eq!(p.tokenizer().max_len(), 16);
        assert!(!p.tokenizer().is_pair_task());
    }

    #[test]
    fn missing_stage_file() {
        let dir = tempfile::tempdir().unwrap();
        fake_package(dir.path());
        std::fs::remove_file(dir.path().join("exit_02.onnx")).unwrap();
        let err = Package::open(dir.path()).unwrap_err();
        assert!(matches!(&err, LoadError::MissingFile { path, .. } if path.ends_with("exit_02.onnx")), "{err}");
    }

    #[test]
    fn unlisted_stage_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = fake_package(dir.path());
        m.files.remove("layer_01.onnx");
        m.write(dir.path()).unwrap();
        let err = Package::open(dir.path()).unwrap_err();
        assert!(matches!(&err, LoadError::Unlisted { path } if path.ends_with("layer_01.onnx")), "{err}");
    }

    #[test]
    fn truncated_file_is_a_size_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        fake_package(dir.path());
        let path = dir.path().join("layer_02.onnx");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = Package::open(dir.path()).unwrap_err();
        assert!(matches!(&err, LoadError::SizeMismatch { path, .. } if path.ends_with("layer_02.onnx")), "{err}");
        assert!(err.to_string().contains("truncated"));
    }

    #[test]
    fn tampered_file_is_a_checksum_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        fake_package(dir.path());
        let path = dir.path().join("embeddings.onnx");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let err = Package::open(dir.path()).unwrap_err();
        assert!(matches!(&err, LoadError::ChecksumMismatch { path, .. } if path.ends_with("embeddings.onnx")), "{err}");
    }

    #[test]
    fn unknown_format_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = fake_package(dir.path());
        m.format_version = 7;
        m.write(dir.path()).unwrap();
        let err = Package::open(dir.path()).unwrap_err();
        assert!(matches!(err, LoadError::Manifest(crate::json::JsonError::UnsupportedVersion { found: 7, .. })));
    }

    #[test]
    fn inconsistent_manifest_and_paths_out_of_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = fake_package(dir.path());
        m.label_names.push("neutral".into());
        m.write(dir.path()).unwrap();
        assert!(matches!(Package::open(dir.path()), Err(LoadError::InvalidManifest { .. })));
        let mut m = fake_package(dir.path());
        m.files.insert("../secret".into(), FileDigest { sha256: "00".into(), bytes: 1 });
        m.write(dir.path()).unwrap();
        let err = Package::open(dir.path()).unwrap_err();
        assert!(matches!(&err, LoadError::InvalidManifest { message, .. } if message.contains("../secret")), "{err}");
        // A default τ its signal cannot use (fake_package's signal is normalized energy, in [0, 1]).
        let mut m = fake_package(dir.path());
        m.default_threshold = 7.0;
        m.write(dir.path()).unwrap();
        let err = Package::open(dir.path()).unwrap_err();
        assert!(matches!(&err, LoadError::InvalidManifest { message, .. } if message.contains("default_threshold 7")));
    }

    #[test]
    fn broken_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = fake_package(dir.path());
        std::fs::write(dir.path().join(TOKENIZER_FILE), "{\"not\": \"a tokenizer\"}").unwrap();
        relist(dir.path(), &mut m);
        let err = Package::open(dir.path()).unwrap_err();
        assert!(matches!(&err, LoadError::Tokenizer { path, .. } if path.ends_with(TOKENIZER_FILE)), "{err}");
    }
}
