//! The workspace's JSON files — the package manifest, a checkpoint's config, the device profile, the runtime
//! config, the trainer's reports and state — are read and written here, with one error type that names the file.
//!
//! A [`JsonFile`] says what a file is (for the parse error) and, for a versioned format, which key holds the version
//! and which version this build reads: that key is looked at before the rest is parsed, so that a file of a future
//! format fails with the right message rather than with a parse error.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

/// A versioned format's version key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// The top-level key holding the version (`format_version`, `version`).
    pub key: &'static str,
    /// The version this build reads and writes.
    pub expected: u32,
    /// How errors name the format (`package format`, `profile format`).
    pub name: &'static str,
}

/// What a kind of JSON file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonFile {
    /// The parse error says "`path` is not `what`: …" (`a valid package manifest`, `a device profile`).
    pub what: &'static str,
    pub version: Option<Version>,
}

/// A JSON file that could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{path} is not {what}: {source}")]
    Parse { path: String, what: &'static str, source: serde_json::Error },
    #[error("{path}: {name} version {found} is not supported (this build reads version {expected})")]
    UnsupportedVersion { path: String, name: &'static str, found: u32, expected: u32 },
    /// The file parses but contradicts itself (a checkpoint config whose hidden size the heads do not divide…).
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl JsonFile {
    /// A file with no version key.
    pub const fn plain(what: &'static str) -> Self {
        Self { what, version: None }
    }

    /// A file whose top-level `key` holds its format version, `expected` in this build.
    pub const fn versioned(what: &'static str, key: &'static str, expected: u32, name: &'static str) -> Self {
        Self { what, version: Some(Version { key, expected, name }) }
    }

    /// Reads and parses `path`, refusing another format version before anything else.
    pub fn read<T: DeserializeOwned>(&self, path: &Path) -> Result<T, JsonError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| JsonError::Io { path: display.clone(), source })?;
        let parse = |source| JsonError::Parse { path: display.clone(), what: self.what, source };
        let Some(version) = self.version else {
            return serde_json::from_str(&text).map_err(parse);
        };
        let raw: serde_json::Value = serde_json::from_str(&text).map_err(parse)?;
        let found = raw.get(version.key).and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        if found != version.expected {
            return Err(JsonError::UnsupportedVersion {
                path: display,
                name: version.name,
                found,
                expected: version.expected,
            });
        }
        serde_json::from_value(raw).map_err(parse)
    }

    /// Writes `value` to `path` as pretty JSON with a final newline.
    pub fn write<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), JsonError> {
        std::fs::write(path, pretty(value) + "\n")
            .map_err(|source| JsonError::Write { path: path.display().to_string(), source })
    }

    /// As [`JsonFile::write`], atomically: into `<path>.partial` first, then renamed over `path`, so that a reader
    /// never sees half a file.
    pub fn write_atomic<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), JsonError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".partial");
        let err = |source| JsonError::Write { path: path.display().to_string(), source };
        std::fs::write(&tmp, pretty(value) + "\n").map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

/// Pretty JSON of a value whose type always serializes (plain structs of numbers, strings, maps with string keys).
pub fn pretty<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("the workspace's JSON types always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    const THING: JsonFile = JsonFile::versioned("a thing", "version", 2, "thing format");

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Thing {
        version: u32,
        name: String,
    }

    #[test]
    fn round_trips_and_names_the_file_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("thing.json");
        let thing = Thing { version: 2, name: "x".into() };
        THING.write_atomic(&path, &thing).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
        assert_eq!(THING.read::<Thing>(&path).unwrap(), thing);
        assert!(!dir.path().join("thing.json.partial").exists());

        std::fs::write(&path, r#"{"version": 3, "name": 1}"#).unwrap();
        let err = THING.read::<Thing>(&path).unwrap_err();
        assert!(matches!(err, JsonError::UnsupportedVersion { found: 3, expected: 2, .. }), "{err}");
        assert!(err.to_string().contains("thing.json: thing format version 3"), "{err}");

        std::fs::write(&path, r#"{"version": 2, "name": 1}"#).unwrap();
        let err = THING.read::<Thing>(&path).unwrap_err();
        assert!(err.to_string().contains("thing.json is not a thing: "), "{err}");
        let err = THING.read::<Thing>(&dir.path().join("absent.json")).unwrap_err();
        assert!(matches!(&err, JsonError::Io { path, .. } if path.ends_with("absent.json")), "{err}");
        let err = JsonFile::plain("a thing").write(&dir.path().join("no/such/dir.json"), &thing).unwrap_err();
        assert!(matches!(err, JsonError::Write { .. }), "{err}");
    }
}
