//! Export → tract numerics against the independent reference forward pass, the package's contents, and
//! export atomicity.

use cosee_runtime::manifest::{exit_file, layer_file, EmbeddingStorage, Manifest, Numerics, QuantScheme, Quantization};
use cosee_runtime::{ExitSignal, Task};
use cosee_tools::check::{compare, sample_batch, StagePlans};
use cosee_tools::reference;
use cosee_tools::testing::tiny_config;
use cosee_tools::{export, write_random_checkpoint, Checkpoint, ExportError, ExportOptions};
use std::path::Path;

fn tiny_checkpoint(dir: &Path, layers: usize, hidden: usize, heads: usize) {
    let config = tiny_config(layers, hidden, heads, Task::Sst2, ExitSignal::Energy);
    write_random_checkpoint(dir, &config, 7).unwrap();
}

/// Every stage of the written graphs, run in tract, against the reference at 1, 7 and 40 tokens, batch 1 and 2
/// with padding in the second row: stage by stage (each fed the reference's input) within `tolerance`, at most
/// `max_rows_off` of the rows beyond 1e-4; and for f32 also chained through the whole model within `tolerance`.
/// Returns the worst stagewise delta.
fn assert_matches_reference(
    package: &Path,
    checkpoint: &Checkpoint,
    quantization: Quantization,
    tolerance: f32,
    max_rows_off: f64,
) -> f32 {
    let w = &checkpoint.weights;
    let plans = StagePlans::load(package, w.num_layers()).unwrap();
    let mut worst = 0.0f32;
    let (mut rows, mut rows_off) = (0, 0);
    for (seed, (batch, sequence)) in [(1, 1), (2, 1), (1, 7), (2, 7), (1, 40), (2, 40)].into_iter().enumerate() {
        let tokens = sample_batch(batch, sequence, w.embeddings.word.rows, seed as u64 + 100);
        assert!(batch == 1 || sequence == 1 || tokens.attention_mask.contains(&0), "row 2 must be padded");
        let expected = reference::forward(w, quantization, &tokens);
        let stagewise = plans.compare_stagewise(&expected, &tokens).unwrap();
        assert!(
            stagewise.max() <= tolerance,
            "batch {batch} × {sequence} tokens, stagewise: {stagewise:?} exceeds {tolerance:e} ({quantization:?})"
        );
        worst = worst.max(stagewise.max());
        rows += stagewise.rows;
        rows_off += stagewise.rows_off;
        if quantization.scheme == QuantScheme::None {
            let chained = compare(&plans.forward(&tokens, w.hidden_size()).unwrap(), &expected, &tokens.attention_mask);
            assert!(chained.max() <= tolerance, "batch {batch} × {sequence} tokens, chained: {chained:?}");
        }
    }
    assert!(rows_off as f64 <= max_rows_off * rows as f64, "{rows_off} of {rows} rows beyond 1e-4 ({quantization:?})");
    eprintln!("{quantization:?}: worst stagewise |Δ| {worst:e}; {rows_off} of {rows} rows beyond 1e-4");
    worst
}

#[test]
fn f32_package_matches_reference_within_1e_4() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    tiny_checkpoint(&ckpt, 3, 32, 4);
    let pkg = tmp.path().join("pkg");
    let report = export(&ckpt, &pkg, &ExportOptions::default()).unwrap();
    let checkpoint = Checkpoint::open(&ckpt).unwrap();
    let q = Quantization { scheme: QuantScheme::None, embeddings: EmbeddingStorage::F32, numerics: Numerics::Fused };
    let worst = assert_matches_reference(&pkg, &checkpoint, q, 1e-4, 0.0);
    eprintln!("f32 max |Δ| vs reference: {worst:e}");
    assert!(report.check.unwrap().deltas.max() <= 1e-4);

    // The manifest describes the package and its digests are the files'.
    let manifest = Manifest::read(&pkg).unwrap();
    assert_eq!(manifest, report.manifest);
    assert_eq!(manifest.num_layers, 3);
    assert_eq!(manifest.hidden_size, 32);
    assert_eq!(manifest.label_names, ["negative", "positive"]);
    assert_eq!(manifest.default_threshold, cosee_tools::export::default_threshold(ExitSignal::Energy, 3));
    for file in manifest.stage_files().iter().chain([&"tokenizer.json".to_string()]) {
        let digest = cosee_runtime::manifest::digest_file(&pkg.join(file)).unwrap();
        assert_eq!(manifest.files.get(file), Some(&digest), "{file}");
    }
    assert_eq!(manifest.files.len(), 2 + 2 * 3);
    // Nothing but the package is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
}

#[test]
fn int8_package_matches_simulated_int8_reference_and_stays_near_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    tiny_checkpoint(&ckpt, 2, 64, 4);
    let checkpoint = Checkpoint::open(&ckpt).unwrap();
    for embeddings in [EmbeddingStorage::F16, EmbeddingStorage::Int8] {
        let pkg = tmp.path().join(format!("pkg-{embeddings:?}"));
        let options = ExportOptions { embeddings, ..ExportOptions::int8() };
        let report = export(&ckpt, &pkg, &options).unwrap();
        let q = report.manifest.quantization;
        assert_eq!(
            q,
            Quantization { scheme: QuantScheme::Int8PerTokenSymmetric, embeddings, numerics: Numerics::Fused }
        );
        // Against the simulation of the same int8 arithmetic: the graphs compute exactly that, except for rare
        // activations within f32 noise of a rounding boundary (see export::self_check_tolerance).
        let worst = assert_matches_reference(&pkg, &checkpoint, q, 0.1, 0.05);
        eprintln!("int8 ({embeddings:?} embeddings) max |Δ| vs simulated int8 reference: {worst:e}");

        // Against the f32 model: quantization error, small but real.
        let plans = StagePlans::load(&pkg, 2).unwrap();
        let tokens = sample_batch(2, 24, checkpoint.weights.embeddings.word.rows, 5);
        let f32_trace = reference::forward(
            &checkpoint.weights,
            Quantization { scheme: QuantScheme::None, embeddings: EmbeddingStorage::F32, numerics: Numerics::Fused },
            &tokens,
        );
        let int8_trace = plans.forward(&tokens, 64).unwrap();
        let d = compare(&int8_trace, &f32_trace, &tokens.attention_mask);
        eprintln!("int8 ({embeddings:?}) vs f32 reference: {d:?}");
        assert!(d.max_logit() > 0.0, "int8 must actually differ from f32");
        assert!(d.max_logit() < 0.25, "{d:?}");
    }
}

/// The `int8-ort` form: ONNX Runtime's `quantize_dynamic` chain per linear layer. tract runs it like the
/// simulation of its arithmetic (per-tensor u8 activations over the whole batch, padding included, s8 weights),
/// and it stays near the f32 model; the graph holds the nodes ORT fuses.
#[test]
fn int8_ort_package_matches_its_simulation_and_stays_near_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    tiny_checkpoint(&ckpt, 2, 64, 4);
    let checkpoint = Checkpoint::open(&ckpt).unwrap();
    let pkg = tmp.path().join("pkg");
    let quantize = QuantScheme::Int8OrtDynamic;
    let options = ExportOptions::quantized(quantize);
    let report = export(&ckpt, &pkg, &options).unwrap();
    let q = report.manifest.quantization;
    assert_eq!(q, Quantization { scheme: quantize, embeddings: EmbeddingStorage::F16, numerics: Numerics::Fused });
    assert_matches_reference(&pkg, &checkpoint, q, 0.1, 0.05);

    let plans = StagePlans::load(&pkg, 2).unwrap();
    let tokens = sample_batch(1, 24, checkpoint.weights.embeddings.word.rows, 5);
    let f32_trace = reference::forward(
        &checkpoint.weights,
        Quantization { scheme: QuantScheme::None, embeddings: EmbeddingStorage::F32, numerics: Numerics::Fused },
        &tokens,
    );
    let d = compare(&plans.forward(&tokens, 64).unwrap(), &f32_trace, &tokens.attention_mask);
    assert!(d.max_logit() > 0.0 && d.max_logit() < 0.25, "int8-ort vs f32 reference: {d:?}");

    // Six linear layers, one DynamicQuantizeLinear per distinct input (Q, K and V share theirs).
    let layer = std::fs::read(pkg.join(layer_file(1))).unwrap();
    let graph = <tract_onnx::pb::ModelProto as prost::Message>::decode(layer.as_slice()).unwrap().graph.unwrap();
    let count = |op: &str| graph.node.iter().filter(|n| n.op_type == op).count();
    assert_eq!((count("MatMulInteger"), count("DynamicQuantizeLinear")), (6, 4));
}

#[test]
fn int8_variants_compute_the_same_function() {
    use cosee_tools::stages::Int8Rescale;
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    tiny_checkpoint(&ckpt, 1, 32, 2);
    let checkpoint = Checkpoint::open(&ckpt).unwrap();
    for (rescale, fused_qkv, numerics) in [
        (Int8Rescale::Sequential, false, Numerics::Portable),
        (Int8Rescale::Combined, true, Numerics::Portable),
        (Int8Rescale::Sequential, false, Numerics::Fused),
    ] {
        let pkg = tmp.path().join(format!("pkg-{rescale:?}-{fused_qkv}-{numerics:?}"));
        let options = ExportOptions { rescale, fused_qkv, numerics, ..ExportOptions::int8() };
        let report = export(&ckpt, &pkg, &options).unwrap();
        assert_eq!(report.manifest.quantization.numerics, numerics);
        assert_matches_reference(&pkg, &checkpoint, report.manifest.quantization, 0.1, 0.05);
    }
}

#[test]
fn failed_export_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    tiny_checkpoint(&ckpt, 2, 16, 2);
    // A tokenizer.json that does not parse is only found after every graph has been written.
    std::fs::write(ckpt.join("tokenizer.json"), "{\"not\": \"a tokenizer\"}").unwrap();
    let out = tmp.path().join("out");
    let pkg = out.join("pkg");
    let err = export(&ckpt, &pkg, &ExportOptions::default()).unwrap_err();
    assert!(matches!(err, ExportError::Tokenizer { .. }), "{err}");
    assert!(!pkg.exists());
    let leftovers: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn existing_package_is_refused_then_replaced_with_force() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    tiny_checkpoint(&ckpt, 1, 16, 2);
    let pkg = tmp.path().join("pkg");
    export(&ckpt, &pkg, &ExportOptions::default()).unwrap();
    let err = export(&ckpt, &pkg, &ExportOptions::int8()).unwrap_err();
    assert!(matches!(err, ExportError::OutputExists { .. }), "{err}");
    assert_eq!(Manifest::read(&pkg).unwrap().quantization.scheme, QuantScheme::None);
    export(&ckpt, &pkg, &ExportOptions { overwrite: true, ..ExportOptions::int8() }).unwrap();
    assert_eq!(Manifest::read(&pkg).unwrap().quantization.scheme, QuantScheme::Int8PerTokenSymmetric);
    assert!(pkg.join(layer_file(1)).is_file() && pkg.join(exit_file(1)).is_file());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
}

/// Portable numerics write only operations tract computes bit for bit alike on x86-64 and aarch64 (the measured
/// list in stages.rs); scripts/check-aarch64.sh holds the answers themselves to it under qemu.
#[test]
fn portable_graphs_use_only_cpu_independent_operations() {
    use prost::Message;
    const PORTABLE: &[&str] = &[
        "Abs",
        "Add",
        "Cast",
        "Concat",
        "Div",
        "Exp",
        "Gather",
        "MatMul",
        "MatMulInteger",
        "Max",
        "Mul",
        "ReduceMax",
        "Reshape",
        "Round",
        "Shape",
        "Slice",
        "Sqrt",
        "Sub",
        "Transpose",
        "Unsqueeze",
        "Identity",
    ];
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    tiny_checkpoint(&ckpt, 2, 32, 2);
    let op_types = |pkg: &Path| -> std::collections::BTreeSet<String> {
        let mut files = vec!["embeddings.onnx".to_string()];
        files.extend((1..=2).map(layer_file));
        files
            .iter()
            .flat_map(|f| {
                let bytes = std::fs::read(pkg.join(f)).unwrap();
                let model = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
                model.graph.unwrap().node.into_iter().map(|n| n.op_type)
            })
            .collect()
    };
    let portable = tmp.path().join("portable");
    export(&ckpt, &portable, &ExportOptions { numerics: Numerics::Portable, ..ExportOptions::int8() }).unwrap();
    let ops = op_types(&portable);
    let foreign: Vec<&String> = ops.iter().filter(|op| !PORTABLE.contains(&op.as_str())).collect();
    assert!(foreign.is_empty(), "portable graphs use {foreign:?}");
    // The fused form, the check's counter-example, uses tract's CPU-specific kernels.
    let fused = tmp.path().join("fused");
    export(&ckpt, &fused, &ExportOptions::int8()).unwrap();
    let ops = op_types(&fused);
    for op in ["LayerNormalization", "Softmax", "Erf"] {
        assert!(ops.contains(op), "fused graphs lack {op}: {ops:?}");
    }
}
