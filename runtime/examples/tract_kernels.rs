//! Which tract matrix-multiplication kernels a model package runs on this CPU.
//!
//! `cargo run --release -p cosee-runtime --example tract_kernels -- PACKAGE_DIR`
//!
//! tract picks its matmul kernels when a plan is optimized, from the instruction set it probes at start-up (on
//! aarch64: SDOT int8 kernels where the core has FEAT_DotProd, e.g. the Pi 5's Cortex-A76; SMLAL on the Pi 4's
//! Cortex-A72 or with `TRACT_DOTPROD_DISABLE=1`). It does not log the picks, so this program optimizes every stage
//! graph of the package the way the runtime does (batch 1, symbolic `sequence`, hidden size from the manifest) and
//! lists the kernels of every optimized matmul. scripts/check-aarch64.sh runs it under qemu with each Pi CPU model.
//!
//! A matmul whose `n` (tokens) is symbolic holds two kernels, chosen per run: one for a single token (`n=1`) and
//! one for more (`n>1`). Output: one `key: value` line per fact, for people and `grep` alike.

use anyhow::{bail, Context, Result};
use cosee_runtime::manifest::{io_names, Manifest, EMBEDDINGS_FILE};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::matmul::optimized::OptMatMul;
use tract_onnx::tract_core::ops::matmul::ModePicker;
use tract_onnx::tract_core::tract_linalg;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir] = args.as_slice() else { bail!("usage: tract_kernels PACKAGE_DIR") };
    let dir = PathBuf::from(dir);
    let manifest = Manifest::read(&dir).with_context(|| format!("cannot read the manifest of {}", dir.display()))?;

    // The kernels the runtime's plans get: its steering of tract (x86_kernels.rs) comes before tract's first probe.
    cosee_runtime::x86_kernels::steer_tract_kernels();
    let isa = tract_linalg::isa::native();
    println!("isa: {isa:?}");
    let tiers: Vec<&str> = tract_linalg::MmmDispatch::native().tiers().iter().map(|t| t.name).collect();
    println!("tiers: {}", tiers.join(" > "));
    print_cpu();

    // kernel name (with the n it serves) → number of matmuls using it, over the whole package.
    let mut kernels: BTreeMap<String, usize> = BTreeMap::new();
    let mut unlowered = 0usize;
    let mut files = vec![EMBEDDINGS_FILE.to_string()];
    for m in 1..=manifest.num_layers {
        files.push(cosee_runtime::manifest::layer_file(m));
        files.push(cosee_runtime::manifest::exit_file(m));
    }
    for file in &files {
        let plan = optimize(&dir.join(file), manifest.hidden_size)?;
        for node in plan.nodes() {
            if let Some(op) = node.op_as::<OptMatMul>() {
                let two_modes = op.mode_picker == ModePicker::VecVsMat && op.mmm.len() == 2;
                for (mode, mmm) in op.mmm.iter().enumerate() {
                    let serves = match (two_modes, mode) {
                        (true, 0) => " [n=1]",
                        (true, _) => " [n>1]",
                        _ => "",
                    };
                    *kernels.entry(format!("{}{serves}", mmm.name())).or_default() += 1;
                }
            } else if is_unlowered_matmul(&node.op().name()) {
                // A matmul tract could not lower to a kernel runs on its generic (slow) path: worth seeing.
                unlowered += 1;
                println!("unlowered: {file} {} {}", node.name, node.op().name());
            }
        }
    }
    for (kernel, count) in &kernels {
        println!("kernel: {kernel} x{count}");
    }
    println!("unlowered_matmuls: {unlowered}");
    Ok(())
}

/// A matmul-like op left in an optimized plan that is not tract's kernel-backed `OptMatMul` (or its weight packing).
fn is_unlowered_matmul(op: &str) -> bool {
    !op.starts_with("OptMatMul") && (op.contains("EinSum") || op.contains("MatMul"))
}

/// The stage graph as the runtime plans it (runtime/src/stage.rs): batch fixed to 1, `sequence` symbolic.
fn optimize(path: &Path, hidden: usize) -> Result<TypedModel> {
    let mut model =
        tract_onnx::onnx().model_for_path(path).with_context(|| format!("cannot parse {}", path.display()))?;
    let sequence = model.symbols.sym(io_names::SEQUENCE_DIM);
    let inputs: Vec<String> = model.input_outlets()?.iter().map(|o| model.node(o.node).name.clone()).collect();
    for (ix, name) in inputs.iter().enumerate() {
        let fact = if name == io_names::HIDDEN_STATES {
            f32::fact([1.to_dim(), sequence.to_dim(), hidden.to_dim()])
        } else {
            i64::fact([1.to_dim(), sequence.to_dim()])
        };
        model.set_input_fact(ix, fact.into())?;
    }
    model.into_optimized().with_context(|| format!("cannot optimize {}", path.display()))
}

/// What tract's aarch64 probe sees: the CPU family it tunes for and whether SDOT is usable.
#[cfg(target_arch = "aarch64")]
fn print_cpu() {
    println!("cpu_kind: {:?}", tract_linalg::arm64::Kind::choose());
    println!("dotprod: {}", tract_linalg::arm64::has_dotprod());
    println!("fp16: {}", tract_linalg::arm64::has_fp16());
}

#[cfg(not(target_arch = "aarch64"))]
fn print_cpu() {
    println!("cpu_kind: {}", std::env::consts::ARCH);
}
