//! GLUE tasks and their TSV files, shared by training, calibration and benchmarking.
//!
//! Columns are found by header name where the standard files have a header, so the same reader takes the
//! GLUE download, our committed test slices, and a user's own file in the same layout.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// The six GLUE classification tasks of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    #[serde(rename = "sst-2", alias = "sst2")]
    Sst2,
    Mrpc,
    Qqp,
    Mnli,
    Qnli,
    Rte,
}

/// One labelled (or unlabelled) input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub text_a: String,
    pub text_b: Option<String>,
    /// Index into [`Task::label_names`]; `None` for unlabelled test files and plain text.
    pub label: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: the file is empty (expected a GLUE {task} header line)")]
    Empty { path: String, task: Task },
    #[error("{path}: header has no column '{column}' (found: {found})")]
    MissingColumn { path: String, column: String, found: String },
    #[error("{path}:{line}: expected at least {expected} tab-separated fields, found {found}")]
    ShortLine { path: String, line: usize, expected: usize, found: usize },
    #[error("{path}:{line}: unknown label '{label}' for {task} (expected one of {expected})")]
    UnknownLabel { path: String, line: usize, label: String, task: Task, expected: String },
    #[error("unknown task '{0}' (expected sst-2, mrpc, qqp, mnli, qnli or rte)")]
    UnknownTask(String),
}

impl Task {
    pub const ALL: [Task; 6] = [Self::Sst2, Self::Mrpc, Self::Qqp, Self::Mnli, Self::Qnli, Self::Rte];

    pub fn name(self) -> &'static str {
        match self {
            Self::Sst2 => "sst-2",
            Self::Mrpc => "mrpc",
            Self::Qqp => "qqp",
            Self::Mnli => "mnli",
            Self::Qnli => "qnli",
            Self::Rte => "rte",
        }
    }

    /// The folder name in the standard GLUE layout.
    pub fn dir_name(self) -> &'static str {
        match self {
            Self::Sst2 => "SST-2",
            Self::Mrpc => "MRPC",
            Self::Qqp => "QQP",
            Self::Mnli => "MNLI",
            Self::Qnli => "QNLI",
            Self::Rte => "RTE",
        }
    }

    /// Label names in the order of the classifier outputs.
    pub fn label_names(self) -> &'static [&'static str] {
        match self {
            Self::Sst2 => &["negative", "positive"],
            Self::Mrpc => &["not_equivalent", "equivalent"],
            Self::Qqp => &["not_duplicate", "duplicate"],
            Self::Mnli => &["contradiction", "entailment", "neutral"],
            Self::Qnli | Self::Rte => &["entailment", "not_entailment"],
        }
    }

    pub fn num_labels(self) -> usize {
        self.label_names().len()
    }

    pub fn is_pair(self) -> bool {
        !matches!(self, Self::Sst2)
    }

    /// MRPC and QQP are scored by F1 of the positive class as well as accuracy.
    pub fn reports_f1(self) -> bool {
        matches!(self, Self::Mrpc | Self::Qqp)
    }

    pub fn train_file(self) -> &'static str {
        "train.tsv"
    }

    /// The development file(s); MNLI has a matched and a mismatched one, the first is the default.
    pub fn dev_files(self) -> &'static [&'static str] {
        match self {
            Self::Mnli => &["dev_matched.tsv", "dev_mismatched.tsv"],
            _ => &["dev.tsv"],
        }
    }

    /// (first text, second text, label) column names in the file's header.
    fn columns(self) -> (&'static str, Option<&'static str>, &'static str) {
        match self {
            Self::Sst2 => ("sentence", None, "label"),
            Self::Mrpc => ("#1 String", Some("#2 String"), "Quality"),
            Self::Qqp => ("question1", Some("question2"), "is_duplicate"),
            Self::Mnli => ("sentence1", Some("sentence2"), "gold_label"),
            Self::Qnli => ("question", Some("sentence"), "label"),
            Self::Rte => ("sentence1", Some("sentence2"), "label"),
        }
    }

    /// Maps a label as written in the file to its class index.
    pub fn parse_label(self, raw: &str) -> Option<usize> {
        let raw = raw.trim();
        match self {
            Self::Sst2 | Self::Mrpc | Self::Qqp => match raw {
                "0" => Some(0),
                "1" => Some(1),
                _ => self.label_names().iter().position(|n| *n == raw),
            },
            _ => self.label_names().iter().position(|n| *n == raw),
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s.to_ascii_lowercase().replace(['-', '_'], "");
        Task::ALL
            .into_iter()
            .find(|t| t.name().replace('-', "") == key)
            .ok_or_else(|| DataError::UnknownTask(s.to_string()))
    }
}

/// Reads a GLUE TSV of `task`. Files without the label column (the test splits) give unlabelled examples.
pub fn read_tsv(task: Task, path: &Path) -> Result<Vec<Example>, DataError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: display.clone(), source })?;
    parse_tsv(task, &text, &display)
}

/// Parses the text of a GLUE TSV; `origin` names it in errors.
pub fn parse_tsv(task: Task, text: &str, origin: &str) -> Result<Vec<Example>, DataError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate();
    let (_, header) = lines.next().ok_or(DataError::Empty { path: origin.to_string(), task })?;
    let header: Vec<&str> = header.trim_end_matches('\r').split('\t').map(str::trim).collect();
    let (a_name, b_name, label_name) = task.columns();
    let find = |name: &str| header.iter().position(|h| *h == name);
    let missing = |name: &str| DataError::MissingColumn {
        path: origin.to_string(),
        column: name.to_string(),
        found: header.join(", "),
    };
    let a_col = find(a_name).ok_or_else(|| missing(a_name))?;
    let b_col = match b_name {
        Some(name) => Some(find(name).ok_or_else(|| missing(name))?),
        None => None,
    };
    let label_col = find(label_name);
    let needed = 1 + [Some(a_col), b_col, label_col].into_iter().flatten().max().unwrap_or(0);

    let mut examples = Vec::new();
    for (index, line) in lines {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() < needed {
            return Err(DataError::ShortLine {
                path: origin.to_string(),
                line: index + 1,
                expected: needed,
                found: fields.len(),
            });
        }
        let label = match label_col {
            Some(col) => Some(task.parse_label(fields[col]).ok_or_else(|| DataError::UnknownLabel {
                path: origin.to_string(),
                line: index + 1,
                label: fields[col].to_string(),
                task,
                expected: task.label_names().join(", "),
            })?),
            None => None,
        };
        examples.push(Example {
            text_a: fields[a_col].trim().to_string(),
            text_b: b_col.map(|c| fields[c].trim().to_string()),
            label,
        });
    }
    Ok(examples)
}

/// Splits the text of a GLUE TSV into (kept, held out): `fraction` of its data lines, chosen by `seed` alone,
/// go to the second part. Both keep the header and the original line order, so each is a GLUE file of the same
/// task that every reader here takes. The choice ranks lines by a hash of (seed, line index), so it does not
/// depend on a random-number library's version, and the same file, fraction and seed give the same slice on
/// every machine. Used to tune hyper-parameters and τ on training data and keep the dev set unseen.
pub fn holdout_split(text: &str, fraction: f64, seed: u64) -> (String, String) {
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = body.lines();
    let header = lines.next().unwrap_or("");
    let data: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    let wanted = ((data.len() as f64 * fraction.clamp(0.0, 1.0)).round() as usize).min(data.len());
    let mut ranked: Vec<(u64, usize)> = (0..data.len()).map(|i| (splitmix64(seed ^ splitmix64(i as u64)), i)).collect();
    ranked.sort_unstable();
    let mut held = vec![false; data.len()];
    for &(_, i) in &ranked[..wanted] {
        held[i] = true;
    }
    let (mut kept, mut out) = (format!("{header}\n"), format!("{header}\n"));
    for (line, h) in data.iter().zip(held) {
        let target = if h { &mut out } else { &mut kept };
        target.push_str(line);
        target.push('\n');
    }
    (kept, out)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sst2_with_and_without_labels() {
        let dev = "sentence\tlabel\nit 's a charming journey . \t1\nawful .\t0\n";
        let ex = parse_tsv(Task::Sst2, dev, "dev").unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].text_a, "it 's a charming journey .");
        assert_eq!(ex[0].label, Some(1));
        let test = "index\tsentence\n0\tuneasy mishmash .\n";
        let ex = parse_tsv(Task::Sst2, test, "test").unwrap();
        assert_eq!(ex[0].label, None);
    }

    #[test]
    fn mrpc_with_bom_and_pairs() {
        let text = "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said .\tHe says .\n";
        let ex = parse_tsv(Task::Mrpc, text, "mrpc").unwrap();
        assert_eq!(ex[0].text_b.as_deref(), Some("He says ."));
        assert_eq!(ex[0].label, Some(1));
    }

    #[test]
    fn mnli_finds_columns_by_name_and_string_labels() {
        let text = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n\
                    0\t1\t2\tg\tb\tb\tp\tp\tThe cat sat.\tA cat sat.\tentailment\tentailment\n";
        let ex = parse_tsv(Task::Mnli, text, "mnli").unwrap();
        assert_eq!(ex[0].text_a, "The cat sat.");
        assert_eq!(ex[0].label, Some(1));
        let qqp = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\tWhy?\tHow?\t0\n";
        assert_eq!(parse_tsv(Task::Qqp, qqp, "qqp").unwrap()[0].label, Some(0));
        let rte = "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tnot_entailment\n";
        assert_eq!(parse_tsv(Task::Rte, rte, "rte").unwrap()[0].label, Some(1));
    }

    #[test]
    fn errors_name_the_place() {
        let err = parse_tsv(Task::Rte, "index\tsentence1\tlabel\n", "x.tsv").unwrap_err();
        assert!(err.to_string().contains("sentence2"), "{err}");
        let err = parse_tsv(Task::Sst2, "sentence\tlabel\ngood\tmaybe\n", "x.tsv").unwrap_err();
        assert!(err.to_string().contains("x.tsv:2"), "{err}");
        assert!(matches!(parse_tsv(Task::Sst2, "", "x"), Err(DataError::Empty { .. })));
    }

    #[test]
    fn task_names_parse() {
        for t in Task::ALL {
            assert_eq!(t.name().parse::<Task>().unwrap(), t);
            assert_eq!(t.dir_name().parse::<Task>().unwrap(), t);
        }
        assert_eq!(serde_json::to_string(&Task::Sst2).unwrap(), "\"sst-2\"");
    }

    #[test]
    fn holdout_split_is_a_seeded_partition_of_the_lines() {
        let text: String = std::iter::once("sentence\tlabel\n".to_string())
            .chain((0..200).map(|i| format!("s{i}\t{}\n", i % 2)))
            .collect();
        let (kept, held) = holdout_split(&text, 0.05, 7);
        let kept_ex = parse_tsv(Task::Sst2, &kept, "kept").unwrap();
        let held_ex = parse_tsv(Task::Sst2, &held, "held").unwrap();
        assert_eq!(held_ex.len(), 10);
        assert_eq!(kept_ex.len(), 190);
        // A partition: every line lands in exactly one part, each part in file order.
        let mut all: Vec<String> = kept_ex.iter().chain(&held_ex).map(|e| e.text_a.clone()).collect();
        let index = |s: &String| s[1..].parse::<usize>().unwrap();
        assert!(held_ex.windows(2).all(|w| index(&w[0].text_a) < index(&w[1].text_a)));
        all.sort_by_key(index);
        assert_eq!(all, (0..200).map(|i| format!("s{i}")).collect::<Vec<_>>());
        // The same seed gives the same slice; another seed another one.
        assert_eq!(holdout_split(&text, 0.05, 7).1, held);
        assert_ne!(holdout_split(&text, 0.05, 8).1, held);
        assert_eq!(parse_tsv(Task::Sst2, &holdout_split(&text, 0.0, 7).1, "x").unwrap().len(), 0);
    }
}
