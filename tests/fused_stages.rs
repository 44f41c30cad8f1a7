//! The runtime's load-time operator fusion (`runtime/src/fused/`) against the plain graphs: every int8 package
//! form the exporter writes gets its per-token quantizations fused (four per layer: the layer input, the attention
//! output, the FFN input and the GELU output), and the fused plans give the same logits, bit for bit, at every exit
//! — so exit layers, labels and the portable packages' x86/aarch64 agreement cannot change.

use cosee_runtime::fused::Fusion;
use cosee_runtime::manifest::{Numerics, QuantScheme};
use cosee_runtime::{Engine, ExitSignal, Input, Package, Task, TractBackend};
use cosee_tools::export::{export, ExportOptions};
use cosee_tools::stages::Int8Rescale;
use cosee_tools::testing::tiny_config;
use cosee_tools::write_random_checkpoint;
use std::path::{Path, PathBuf};

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

fn engines(package: &Path) -> (Engine, Engine) {
    let open = |fusion| {
        let package = Package::open(package).unwrap();
        let backend = TractBackend::load_with(&package, fusion).unwrap();
        (Engine::from_parts(package, backend), fusion)
    };
    (open(Fusion::All).0, open(Fusion::None).0)
}

/// Every exit's logits of both engines on every input, compared bit for bit.
fn assert_identical(fused: &Engine, plain: &Engine) {
    for text in inputs() {
        let input = Input::single(&text);
        let a = fused.run_all_exits(&input).unwrap();
        let b = plain.run_all_exits(&input).unwrap();
        for (m, (x, y)) in a.logits.iter().zip(&b.logits).enumerate() {
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(x), bits(y), "exit {} differs on {text:?}: {x:?} vs {y:?}", m + 1);
        }
    }
}

fn exported(root: &Path, options: &ExportOptions) -> PathBuf {
    let checkpoint = root.join("checkpoint");
    if !checkpoint.exists() {
        write_random_checkpoint(&checkpoint, &tiny_config(3, 32, 4, Task::Sst2, ExitSignal::Energy), 17).unwrap();
    }
    let package = root.join(format!("package-{:?}-{:?}-{:?}", options.numerics, options.rescale, options.fused_qkv));
    export(&checkpoint, &package, options).unwrap();
    package
}

#[test]
fn every_int8_form_fuses_its_quantizations_and_answers_bit_for_bit() {
    let root = tempfile::tempdir().unwrap();
    let int8 = ExportOptions::int8();
    let mut forms = vec![
        int8.clone(),
        ExportOptions { numerics: Numerics::Portable, ..int8.clone() },
        ExportOptions { fused_qkv: !int8.fused_qkv, ..int8.clone() },
    ];
    forms.push(ExportOptions { rescale: other_rescale(int8.rescale), ..int8.clone() });
    for options in forms {
        let package = exported(root.path(), &options);
        let (fused, plain) = engines(&package);
        let layers = fused.num_layers();
        // Q, K and V share one quantization of the layer input whether or not they are one matmul.
        assert_eq!(fused.backend().fused().quantizers, 4 * layers, "{options:?}");
        assert_eq!(plain.backend().fused().quantizers, 0);
        assert_identical(&fused, &plain);
    }
}

#[test]
fn f32_packages_are_left_as_they_are() {
    let root = tempfile::tempdir().unwrap();
    let options = ExportOptions { quantize: QuantScheme::None, ..ExportOptions::default() };
    let (fused, _) = engines(&exported(root.path(), &options));
    assert_eq!(fused.backend().fused().quantizers, 0);
}

#[test]
fn the_shipped_model_answers_bit_for_bit_fused() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/sst2-minilm-l6");
    let (fused, plain) = engines(&shipped);
    assert_eq!(fused.backend().fused().quantizers, 4 * fused.num_layers());
    assert_identical(&fused, &plain);
}

fn other_rescale(r: Int8Rescale) -> Int8Rescale {
    use Int8Rescale::*;
    match r {
        Combined => Sequential,
        Sequential => Combined,
    }
}
