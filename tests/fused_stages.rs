//! The runtime's load-time operator fusion (`runtime/src/fused/`) against the plain graphs.
//!
//! * Every int8 package form the exporter writes gets its per-token quantizations fused (four per layer: the layer
//!   input, the attention output, the FFN input and the GELU output), and the default (`Sequential`) rescale form
//!   its int8 output stages too (one per linear layer); with those exact fusions alone the plans give the same
//!   logits, bit for bit, at every exit.
//! * The softmax fusion replaces the attention softmax of fused-numerics packages (one per layer), the GELU fusion
//!   folds the FFN's GELU into the int8 output stage before it (one per layer, default rescale form), and the
//!   layer-norm fusion replaces every layer norm with the residual add before it (two per layer, one in the
//!   embeddings), and the attention fusion makes each layer's attention one operator (one per layer); they move
//!   logits only in their last bits: exit layers and labels stay those of the plain graphs.
//!   Portable-numerics packages have no softmax, erf or layer-norm operator, so with every fusion they still answer
//!   bit for bit — and so do x86 and aarch64.

use cosee_runtime::fused::linear::kernel_available;
use cosee_runtime::fused::Fusion;
use cosee_runtime::manifest::{Numerics, QuantScheme};
use cosee_runtime::{Engine, ExitSignal, Input, Package, Task, TractBackend};
use cosee_tools::export::{export, self_check_tolerance, ExportOptions};
use cosee_tools::stages::Int8Rescale;
use cosee_tools::testing::tiny_config;
use cosee_tools::write_random_checkpoint;
use std::path::{Path, PathBuf};

const QUANTIZE_ONLY: Fusion = Fusion::EXACT;

/// Lines of real SST-2 dev sentences (committed), plus inputs of odd shapes: one token, and a long text that is
/// truncated to the package's maximum length.
fn inputs() -> Vec<String> {
    let dev =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sst2-dev-40.tsv")).unwrap();
    let mut texts: Vec<String> = dev.lines().skip(1).filter_map(|l| l.split('\t').next()).map(str::to_string).collect();
    texts.push("ok".into());
    texts.push("the film is long , ".repeat(80));
    texts
}

fn engine(package: &Path, fusion: Fusion) -> Engine<TractBackend> {
    let package = Package::open(package).unwrap();
    let backend = TractBackend::load_with(&package, fusion).unwrap();
    Engine::from_parts(package, backend)
}

/// The largest |Δ| between the two engines' logits over every exit and input (0 when bit for bit equal), after
/// checking that the default exit layers and labels agree.
fn max_difference(a: &Engine<TractBackend>, b: &Engine<TractBackend>) -> f32 {
    let mut worst = 0f32;
    for text in inputs() {
        let input = Input::single(&text);
        let (x, y) = (a.run_all_exits(&input).unwrap(), b.run_all_exits(&input).unwrap());
        for (m, (x, y)) in x.logits.iter().zip(&y.logits).enumerate() {
            for (p, q) in x.iter().zip(y) {
                assert!(p.is_finite() && q.is_finite(), "exit {}: {x:?} vs {y:?}", m + 1);
                if p.to_bits() != q.to_bits() {
                    worst = worst.max((p - q).abs());
                }
            }
        }
        let (x, y) = (a.classify(&input).unwrap(), b.classify(&input).unwrap());
        assert_eq!((x.exit_layer, &x.label), (y.exit_layer, &y.label), "{text:?}");
    }
    worst
}

fn exported(root: &Path, options: &ExportOptions) -> PathBuf {
    let checkpoint = root.join("checkpoint");
    if !checkpoint.exists() {
        write_random_checkpoint(&checkpoint, &tiny_config(3, 32, 4, Task::Sst2, ExitSignal::Energy), 17).unwrap();
    }
    let name = format!("{:?}-{:?}-{:?}-{:?}", options.quantize, options.numerics, options.rescale, options.fused_qkv);
    let package = root.join(name);
    export(&checkpoint, &package, options).unwrap();
    package
}

fn int8_forms() -> Vec<ExportOptions> {
    let int8 = ExportOptions::int8();
    let other_rescale = match int8.rescale {
        Int8Rescale::Combined => Int8Rescale::Sequential,
        Int8Rescale::Sequential => Int8Rescale::Combined,
    };
    vec![
        int8.clone(),
        ExportOptions { numerics: Numerics::Portable, ..int8.clone() },
        ExportOptions { fused_qkv: !int8.fused_qkv, ..int8.clone() },
        ExportOptions { rescale: other_rescale, ..int8 },
    ]
}

#[test]
fn every_int8_form_fuses_its_quantizations_bit_for_bit() {
    let root = tempfile::tempdir().unwrap();
    for options in int8_forms() {
        let package = exported(root.path(), &options);
        let (fused, plain) = (engine(&package, QUANTIZE_ONLY), engine(&package, Fusion::NONE));
        let layers = fused.num_layers();
        // Q, K and V share one quantization of the layer input whether or not they are one matmul.
        let counts = fused.backend().fused().unwrap();
        assert_eq!(counts.quantizers, 4 * layers, "{options:?}");
        // Q, K, V, attention output, FFN in and out each end in their own output stage (a fused QKV matmul's
        // output is split before it).
        let rescales = if options.rescale == Int8Rescale::Sequential { 6 * layers } else { 0 };
        assert_eq!(counts.rescales, rescales, "{options:?}");
        // Each of those output stages with its matmul as one Int8Linear, where the CPU has the kernel.
        let linears = if kernel_available() { rescales } else { 0 };
        assert_eq!(counts.linears, linears, "{options:?}");
        assert_eq!(plain.backend().fused().unwrap(), Default::default());
        assert_eq!(max_difference(&fused, &plain), 0.0, "{options:?}");
    }
}

#[test]
fn every_fusion_keeps_exits_and_labels_and_portable_packages_bit_for_bit() {
    let root = tempfile::tempdir().unwrap();
    let f32_form = ExportOptions { quantize: QuantScheme::None, ..ExportOptions::default() };
    for options in int8_forms().into_iter().chain([f32_form]) {
        let package = exported(root.path(), &options);
        let (fused, plain) = (engine(&package, Fusion::ALL), engine(&package, Fusion::NONE));
        let portable = options.numerics == Numerics::Portable;
        let layers = fused.num_layers();
        let counts = fused.backend().fused().unwrap();
        assert_eq!(counts.softmaxes, if portable { 0 } else { layers }, "{options:?}");
        assert_eq!(counts.layer_norms, if portable { 0 } else { 2 * layers + 1 }, "{options:?}");
        assert_eq!(counts.attentions, if portable { 0 } else { layers }, "{options:?}");
        let folds_gelu =
            !portable && options.quantize != QuantScheme::None && options.rescale == Int8Rescale::Sequential;
        assert_eq!(counts.gelus, if folds_gelu { layers } else { 0 }, "{options:?}");
        let worst = max_difference(&fused, &plain);
        if portable {
            assert_eq!(worst, 0.0, "portable numerics must stay bit for bit");
        } else {
            // The exporter's own tolerance (its self-check against the reference forward pass). In int8 a
            // last-bit change of an activation can move it across a rounding step of the next quantization.
            let tolerance = self_check_tolerance(options.quantize);
            assert!(worst <= tolerance, "{options:?}: max |Δlogit| {worst}");
            println!("{:?} {:?}: max |Δlogit| {worst:e}", options.quantize, options.numerics);
        }
    }
}

#[test]
fn the_shipped_model_fuses_and_answers_as_before() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/sst2-minilm-l6");
    let plain = engine(&shipped, Fusion::NONE);
    let quantized = engine(&shipped, QUANTIZE_ONLY);
    let counts = quantized.backend().fused().unwrap();
    let layers = quantized.num_layers();
    assert_eq!(counts.quantizers, 4 * layers);
    assert_eq!(counts.rescales, 6 * layers);
    assert_eq!(counts.linears, if kernel_available() { 6 * layers } else { 0 });
    // Its exits pool by the mean: one sum over the tokens each.
    assert_eq!(counts.pools, layers);
    assert_eq!(max_difference(&quantized, &plain), 0.0);
    // With tract's matmuls (every CPU without our kernel), each reads activations packed by PackI8K4 (one
    // packing can serve several matmuls).
    let tract_matmuls = engine(&shipped, Fusion { linear: false, ..QUANTIZE_ONLY });
    let packs = tract_matmuls.backend().fused().unwrap().packs;
    assert!(packs >= 4 * layers, "{packs} packings replaced");
    assert_eq!(max_difference(&tract_matmuls, &plain), 0.0);
    let fused = engine(&shipped, Fusion::ALL);
    let counts = fused.backend().fused().unwrap();
    assert_eq!(counts.softmaxes, fused.num_layers());
    assert_eq!(counts.gelus, fused.num_layers());
    assert_eq!(counts.layer_norms, 2 * fused.num_layers() + 1);
    assert_eq!(counts.attentions, fused.num_layers());
    let worst = max_difference(&fused, &plain);
    assert!(worst <= self_check_tolerance(QuantScheme::Int8PerTokenSymmetric), "max |Δlogit| {worst}");
    println!("shipped model, every fusion against the plain graphs: max |Δlogit| {worst:e}");
}
