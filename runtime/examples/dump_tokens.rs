//! The token ids the runtime gives a data file's inputs, one JSON object per line, for feeding another engine the
//! exact same inputs (scripts/ort_side_by_side.py runs them in ONNX Runtime).
//!
//! `cargo run --release -p cosee-runtime --example dump_tokens -- PACKAGE_DIR DATA_FILE [LIMIT] > tokens.jsonl`
//!
//! The data file is read as `cosee-edge bench` reads it (a GLUE TSV of the package's task, or plain lines) and each
//! input is tokenized by the package's tokenizer exactly as the engine does (no padding, truncated to
//! `max_seq_len`). Each line: `{"input": n, "input_ids": [...], "token_type_ids": [...], "attention_mask": [...],
//! "label": k | null, "truncated": bool}`; `input` is 1-based, as in bench's failure reports. Inputs the tokenizer
//! refuses (empty lines…) are reported on stderr and skipped, as bench skips them.

use anyhow::{bail, Context, Result};
use cosee_runtime::{bench, Input, Package};
use std::io::Write;
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, data, limit) = match args.as_slice() {
        [dir, data] => (dir, data, None),
        [dir, data, limit] => {
            (dir, data, Some(limit.parse::<usize>().with_context(|| format!("LIMIT `{limit}` is not a count"))?))
        }
        _ => bail!("usage: dump_tokens PACKAGE_DIR DATA_FILE [LIMIT]"),
    };
    let dir = PathBuf::from(dir);
    let package = Package::open(&dir).with_context(|| format!("cannot open {}", dir.display()))?;
    let examples = bench::read_inputs(&PathBuf::from(data), package.manifest().task, false)?;
    let take = limit.unwrap_or(examples.len()).min(examples.len());
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (i, e) in examples[..take].iter().enumerate() {
        let encoded = match package.tokenizer().encode(&Input::from(e)) {
            Ok(enc) => enc,
            Err(err) => {
                eprintln!("dump_tokens: input {} skipped: {err}", i + 1);
                continue;
            }
        };
        let line = serde_json::json!({
            "input": i + 1,
            "input_ids": encoded.input_ids,
            "token_type_ids": encoded.token_type_ids,
            "attention_mask": encoded.attention_mask,
            "label": e.label,
            "truncated": encoded.truncated,
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}
