//! Calibration through the runtime's engine on a tiny exported package, and the inspect summary.

use cosee_runtime::manifest::Manifest;
use cosee_runtime::{Engine, ExitPolicy, ExitSignal, Input, Task};
use cosee_tools::calibrate::{calibrate, CalibrateOptions};
use cosee_tools::inspect::inspect;
use cosee_tools::testing::tiny_config;
use cosee_tools::{export, write_random_checkpoint, ExportOptions};

/// Real SST-2 dev lines (GLUE), enough to give the sweep something to count.
const SST2: &str = "sentence\tlabel
it 's a charming and often affecting journey . \t1
unflinchingly bleak and desperate \t0
allows us to hope that nolan is poised to embark a major career as a commercial yet inventive filmmaker . \t1
the acting , costumes , music , cinematography and sound are all astounding given the production 's austere locales . \t1
it 's slow -- very , very slow . \t0
although laced with humor and a few fanciful touches , the film is a refreshingly serious look at young women . \t1
a sometimes tedious film . \t0
or doing last year 's taxes with your ex-wife . \t0
you do n't have to know about music to appreciate the film 's easygoing blend of comedy and romance . \t1
in exactly 89 minutes , most of which passed as slowly as if i 'd been sitting naked on an igloo , formula 51 sank from quirky to jerky to utter turkey . \t0
the mesmerizing performances of the leads keep the film grounded and keep the audience riveted . \t1
it takes a strange kind of laziness to waste the talents of robert forster , anne meara , eugene levy , and reginald veljohnson all in the same movie . \t0
";

#[test]
fn calibration_table_matches_the_engine_and_sets_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    write_random_checkpoint(&ckpt, &tiny_config(3, 32, 4, Task::Sst2, ExitSignal::MaxSoftmax), 11).unwrap();
    let pkg = tmp.path().join("pkg");
    export(&ckpt, &pkg, &ExportOptions::default()).unwrap();
    let data = tmp.path().join("dev.tsv");
    std::fs::write(&data, SST2).unwrap();
    let before = Manifest::read(&pkg).unwrap();

    let options = CalibrateOptions { target_speedup: 1.5, ..CalibrateOptions::default() };
    let report = calibrate(&pkg, &data, &options).unwrap();
    let cal = &report.calibration;
    assert_eq!(cal.num_examples, 12);
    assert_eq!(cal.data, "dev.tsv");
    assert_eq!(cal.points.len(), ExitSignal::MaxSoftmax.default_sweep(3).len());
    for p in &cal.points {
        assert_eq!(p.exit_histogram.iter().sum::<usize>(), 12);
        assert!(p.layer_speedup >= 1.0 && p.layer_speedup <= 3.0);
    }
    // τ = 0 exits everything at layer 1 (max softmax > 0 always): 3×; τ = 1 never exits early.
    assert_eq!(cal.points[0].exit_histogram, vec![12, 0, 0]);
    assert_eq!(cal.points.last().unwrap().exit_histogram, vec![0, 0, 12]);

    // Each point is what the engine's real exit loop does at that τ.
    let engine = Engine::load(&pkg).unwrap();
    let examples = cosee_runtime::glue::read_tsv(Task::Sst2, &data).unwrap();
    for p in cal.points.iter().step_by(5) {
        let policy = ExitPolicy { signal: ExitSignal::MaxSoftmax, threshold: p.threshold };
        let mut hist = vec![0; 3];
        let mut correct = 0;
        for e in &examples {
            let answer = engine.classify_with(&Input::from(e), policy).unwrap();
            hist[answer.exit_layer - 1] += 1;
            correct += usize::from(Some(answer.label_index) == e.label);
        }
        assert_eq!(hist, p.exit_histogram, "τ = {}", p.threshold);
        assert!((p.accuracy - correct as f64 / 12.0).abs() < 1e-12);
    }

    // The default is the most accurate point reaching 1.5×, written with the table; digests untouched.
    let after = Manifest::read(&pkg).unwrap();
    assert_eq!(after.calibration.as_ref(), Some(cal));
    assert_eq!(after.default_threshold, report.default_threshold);
    assert_eq!(after.files, before.files);
    let best = cal.points.iter().filter(|p| p.layer_speedup >= 1.5).map(|p| p.accuracy).fold(f64::MIN, f64::max);
    let chosen = after.calibration_at(after.default_threshold).unwrap();
    assert!(report.target_reached);
    assert!(chosen.layer_speedup >= 1.5 && chosen.accuracy == best);
    Engine::load(&pkg).unwrap();

    let summary = inspect(&pkg).unwrap();
    assert!(summary.intact());
    assert_eq!(summary.files.len(), 8);
    let text = summary.to_string();
    assert!(text.contains("max_softmax") && text.contains("12 examples of dev.tsv"), "{text}");
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["num_layers"], 3);
}

#[test]
fn unlabelled_data_and_tampered_files_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    write_random_checkpoint(&ckpt, &tiny_config(1, 16, 2, Task::Sst2, ExitSignal::Energy), 1).unwrap();
    let pkg = tmp.path().join("pkg");
    export(&ckpt, &pkg, &ExportOptions::default()).unwrap();
    let data = tmp.path().join("test.tsv");
    std::fs::write(&data, "index\tsentence\n0\tuneasy mishmash .\n").unwrap();
    let err = calibrate(&pkg, &data, &CalibrateOptions::default()).unwrap_err();
    assert!(err.to_string().contains("no label"), "{err}");
    let mrpc = CalibrateOptions { task: Some(Task::Mnli), ..CalibrateOptions::default() };
    assert!(calibrate(&pkg, &data, &mrpc).unwrap_err().to_string().contains("labels"));

    let layer = pkg.join("layer_01.onnx");
    let mut bytes = std::fs::read(&layer).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&layer, bytes).unwrap();
    let summary = inspect(&pkg).unwrap();
    assert!(!summary.intact());
    assert_eq!(summary.files.iter().find(|f| f.name == "layer_01.onnx").unwrap().status, "modified");
}

#[test]
fn compare_reports_int8_against_f32_per_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    write_random_checkpoint(&ckpt, &tiny_config(2, 32, 4, Task::Sst2, ExitSignal::Energy), 5).unwrap();
    let (f32_pkg, int8_pkg) = (tmp.path().join("f32"), tmp.path().join("int8"));
    export(&ckpt, &f32_pkg, &ExportOptions::default()).unwrap();
    export(&ckpt, &int8_pkg, &ExportOptions::int8()).unwrap();
    let data = tmp.path().join("dev.tsv");
    std::fs::write(&data, SST2).unwrap();
    let same = cosee_tools::compare::compare_packages(&f32_pkg, &f32_pkg, &data, None, None, false).unwrap();
    assert!(same.exits.iter().all(|e| e.max_abs_logit_delta == 0.0 && e.same_prediction == 1.0));
    let c = cosee_tools::compare::compare_packages(&f32_pkg, &int8_pkg, &data, None, Some(10), false).unwrap();
    assert_eq!((c.num_examples, c.exits.len()), (10, 2));
    for e in &c.exits {
        assert!(e.max_abs_logit_delta > 0.0 && e.max_abs_logit_delta < 0.25, "{e:?}");
    }
}
