//! Writes a small SST-2 checkpoint with random weights over the test tokenizer, for checks that need a real
//! package without the pretrained backbone (scripts/check-aarch64.sh exports it and compares x86 with aarch64).
//!
//! `cargo run --release -p cosee-tools --example random_checkpoint -- OUT_DIR [LAYERS HIDDEN HEADS SEED]`
//! (defaults 4 128 4 7; the feed-forward size is 4 × HIDDEN, the exit signal energy).

use anyhow::{bail, Context, Result};
use cosee_runtime::{ExitSignal, Task};
use cosee_tools::testing::tiny_config;
use cosee_tools::write_random_checkpoint;
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((out, rest)) = args.split_first() else {
        bail!("usage: random_checkpoint OUT_DIR [LAYERS HIDDEN HEADS SEED]")
    };
    let number = |at: usize, default: u64| -> Result<u64> {
        rest.get(at).map_or(Ok(default), |s| s.parse().with_context(|| format!("not a number: {s}")))
    };
    let (layers, hidden, heads, seed) = (number(0, 4)?, number(1, 128)?, number(2, 4)?, number(3, 7)?);
    if heads == 0 || hidden % heads != 0 {
        bail!("HIDDEN ({hidden}) must be a multiple of HEADS ({heads})");
    }
    let config = tiny_config(layers as usize, hidden as usize, heads as usize, Task::Sst2, ExitSignal::Energy);
    let out = PathBuf::from(out);
    write_random_checkpoint(&out, &config, seed).with_context(|| format!("cannot write {}", out.display()))?;
    println!("{}", out.display());
    Ok(())
}
