//! The GLUE TSV reader on any text shaped like (or unlike) a task's file: examples or a data error, never a panic;
//! every label it returns is one of the task's.

use crate::{fuzz, holds};
use cosee_runtime::glue::parse_tsv;
use cosee_runtime::Task;
use proptest::prelude::*;

const TASKS: [Task; 6] = [Task::Sst2, Task::Mrpc, Task::Qqp, Task::Mnli, Task::Qnli, Task::Rte];

fn tsv() -> impl Strategy<Value = String> {
    let cell = prop_oneof![
        3 => "[a-z ]{0,12}",
        2 => prop::sample::select(vec!["0", "1", "2", "-1", "entailment", "not_entailment", "neutral", "contradiction",
            "sentence", "label", "#1 String", "question", "", "1.0", "99999999999999999999"]).prop_map(String::from),
        1 => ".{0,8}",
        1 => Just("\"".to_string()),
        1 => Just("\r".to_string()),
    ];
    let row = prop::collection::vec(cell, 0..12).prop_map(|c| c.join("\t"));
    prop::collection::vec(row, 0..12).prop_map(|r| r.join("\n"))
}

#[test]
fn fuzz_glue_tsv() {
    fuzz("glue", 2048, (prop::sample::select(TASKS.to_vec()), tsv()), |(task, text)| {
        if let Ok(examples) = parse_tsv(task, &text, "fuzz.tsv") {
            for e in &examples {
                holds!(e.label.is_none_or(|l| l < task.num_labels()), "label {:?} for {task}", e.label);
                holds!(task.is_pair() == e.text_b.is_some(), "{task}: text_b {:?}", e.text_b);
            }
        }
        Ok(())
    });
}
