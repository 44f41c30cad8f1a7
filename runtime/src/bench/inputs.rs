//! Reading what to benchmark: a GLUE TSV, or plain text one input per line.

use crate::glue::{self, DataError, Example, Task};
use crate::tokenize::Input;
use std::path::Path;

use super::BenchError;

/// Reads the benchmark inputs: a GLUE TSV of `task` (labelled or not), or plain text, one input per line (a pair as
/// `first<TAB>second`), when `plain` is set or the first line is not a GLUE header of `task`.
pub fn read_inputs(path: &Path, task: Task, plain: bool) -> Result<Vec<Example>, BenchError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: display.clone(), source })?;
    let examples = if plain {
        plain_lines(&text, task.is_pair())
    } else {
        match glue::parse_tsv(task, &text, &display) {
            Ok(ex) => ex,
            // No header of this task: the file is plain text (or another task's file, which reads as text too).
            Err(DataError::MissingColumn { .. }) => plain_lines(&text, task.is_pair()),
            Err(e) => return Err(e.into()),
        }
    };
    if examples.is_empty() {
        return Err(BenchError::NoInputs(display));
    }
    Ok(examples)
}

fn plain_lines(text: &str, pair_task: bool) -> Vec<Example> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let input = Input::from_line(l, pair_task);
            Example { text_a: input.text.to_string(), text_b: input.pair.map(str::to_string), label: None }
        })
        .collect()
}
