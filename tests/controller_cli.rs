//! `bench`, `tune` and `serve` on a real package: a tiny random checkpoint (3 layers, hidden 32) exported by
//! `cosee-tools`, given a calibration table computed here from the engine's own full-depth logits over the 40
//! committed SST-2 dev sentences (so that `tune` and the controller have a real τ table to work on).

mod common;

use common::{cosee_edge, run_with_stdin};
use cosee_runtime::bench::{self, BenchOptions};
use cosee_runtime::controller::Ladder;
use cosee_runtime::glue::{parse_tsv, Example};
use cosee_runtime::manifest::{Calibration, Manifest};
use cosee_runtime::metrics::SweepPoint;
use cosee_runtime::metrics::{accuracy, exit_histogram, layer_speedup};
use cosee_runtime::signal::argmax;
use cosee_runtime::tune::{self, RuntimeConfig, TuneEvent, TuneOptions};
use cosee_runtime::{BackendKind, Engine, ExitPolicy, ExitSignal, Input, Task};
use cosee_tools::export::{export, ExportOptions};
use cosee_tools::testing::tiny_config;
use cosee_tools::write_random_checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const SST2_DEV: &str = include_str!("data/sst2-dev-40.tsv");

fn examples() -> Vec<Example> {
    parse_tsv(Task::Sst2, SST2_DEV, "sst2-dev-40.tsv").unwrap()
}

/// The calibration table of `engine` on the examples, as `cosee-tools calibrate` would write it.
fn calibration(engine: &Engine, examples: &[Example]) -> Calibration {
    let full: Vec<_> = examples.iter().map(|e| engine.run_all_exits(&Input::from(e)).unwrap()).collect();
    let gold: Vec<usize> = examples.iter().map(|e| e.label.unwrap()).collect();
    let points = ExitSignal::Energy
        .default_sweep(engine.num_layers())
        .into_iter()
        .map(|threshold| {
            let policy = ExitPolicy { signal: ExitSignal::Energy, threshold };
            let layers: Vec<usize> = full.iter().map(|f| f.exit_layer(policy)).collect();
            let pred: Vec<usize> = full.iter().zip(&layers).map(|(f, &m)| argmax(&f.logits[m - 1])).collect();
            let hist = exit_histogram(&layers, engine.num_layers());
            SweepPoint {
                threshold,
                accuracy: accuracy(&pred, &gold),
                f1: None,
                layer_speedup: layer_speedup(&hist),
                exit_histogram: hist,
            }
        })
        .collect();
    Calibration { data: "sst2-dev-40.tsv".into(), num_examples: examples.len(), target_speedup: 2.0, points }
}

/// The shared package (with its calibration table) and a directory for the tests' files.
fn package() -> &'static Path {
    static PACKAGE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &PACKAGE
        .get_or_init(|| {
            let root = tempfile::tempdir().unwrap();
            let checkpoint = root.path().join("checkpoint");
            write_random_checkpoint(&checkpoint, &tiny_config(3, 32, 4, Task::Sst2, ExitSignal::Energy), 5).unwrap();
            let package = root.path().join("package");
            export(&checkpoint, &package, &ExportOptions::default()).unwrap();
            let engine = Engine::load(&package).unwrap();
            let mut manifest: Manifest = engine.manifest().clone();
            manifest.calibration = Some(calibration(&engine, &examples()));
            manifest.write(&package).unwrap();
            (root, package)
        })
        .1
}

fn data_file(dir: &Path) -> PathBuf {
    let path = dir.join("dev.tsv");
    std::fs::write(&path, SST2_DEV).unwrap();
    path
}

#[test]
fn bench_sweep_is_consistent_with_full_depth() {
    let engine = Engine::load(package()).unwrap();
    let ex = examples();
    let options = BenchOptions { sweep: Some(vec![0.0, 0.5, 1.0]), warmup: 1, ..BenchOptions::default() };
    let cold_start = bench::ColdStart { answers_ms: 1.0, all_stages_ms: 2.0 };
    let run = bench::run(&engine, cold_start, "pkg", "dev", &ex, &options, &mut |_, _| {}).unwrap();
    let r = &run.result;
    assert_eq!(r.n, 40);
    assert_eq!(r.backend, "tract", "the report says which engine produced its numbers");
    let sweep = r.sweep.as_ref().unwrap();
    // The package default (0.2) is added to the sweep and reported at the top level.
    assert_eq!(sweep.iter().map(|t| t.point.threshold).collect::<Vec<_>>(), vec![0.0, 0.2, 0.5, 1.0]);
    assert_eq!(r.main.point.threshold, 0.2);
    for t in sweep {
        assert_eq!(
            t.exit_mismatches,
            Some(0),
            "τ {}: early exit disagrees with the full-depth logits",
            t.point.threshold
        );
        assert_eq!(t.point.exit_histogram.iter().sum::<usize>(), 40);
        assert!(t.wall_speedup.unwrap() > 0.0 && t.latency_ms.p50 > 0.0);
        assert!(t.latency_ms.p50 <= t.latency_ms.p95 && t.latency_ms.p95 <= t.latency_ms.p99);
    }
    // Energy is in (0, 1): τ = 1 exits everything at layer 1, τ = 0 nothing before the last layer.
    assert_eq!((sweep[3].point.exit_histogram[0], sweep[3].point.layer_speedup), (40, 3.0));
    assert_eq!((sweep[0].point.exit_histogram[2], sweep[0].point.layer_speedup), (40, 1.0));
    // At τ = 0 every answer comes from the last exit: the full-depth accuracy.
    assert_eq!(sweep[0].accuracy(), r.full_depth_accuracy);
    // The accuracy at each τ is the calibration table's (same engine, same inputs).
    let manifest = engine.manifest();
    for t in sweep {
        if let Some(p) = manifest.calibration_at(t.point.threshold) {
            assert_eq!(t.accuracy(), Some(p.accuracy), "τ {}", t.point.threshold);
            assert_eq!(t.point.exit_histogram, p.exit_histogram);
        }
    }
    assert!(r.cold_start_ms > 0.0 && r.peak_rss_mb.unwrap() > 1.0);
    assert!(r.stage_costs.layer.samples >= 40 * 3);
    let profile = run.profile().unwrap();
    assert_eq!(profile.token_counts.values().sum::<usize>(), 40);
    assert!(profile.predict_ms(3, 20) > profile.predict_ms(1, 20));
}

fn cli(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    run_with_stdin(Command::new(cosee_edge()).current_dir(dir).args(args), stdin)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn bench_json_has_the_documented_keys_and_writes_a_profile() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_file(dir.path());
    let model = package().to_str().unwrap();
    let out = cli(
        dir.path(),
        &["bench", "--model", model, "--data", data.to_str().unwrap(), "--sweep", "--warmup", "1", "--json", "-"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "n",
        "accuracy",
        "layer_speedup",
        "wall_speedup",
        "latency_ms",
        "full_depth_latency_ms",
        "cold_start_ms",
        "all_stages_ms",
        "peak_rss_mb",
        "exit_histogram",
        "sweep",
        "stage_costs",
    ] {
        assert!(!json[key].is_null(), "missing {key}");
    }
    let (answers, all_stages) = (json["cold_start_ms"].as_f64().unwrap(), json["all_stages_ms"].as_f64().unwrap());
    assert!(answers > 0.0 && all_stages >= answers, "cold start {answers} ms, every stage planned at {all_stages} ms");
    for key in ["p50", "p95", "p99", "mean"] {
        assert!(json["latency_ms"][key].as_f64().unwrap() > 0.0);
        assert!(json["full_depth_latency_ms"][key].as_f64().unwrap() > 0.0);
    }
    assert!(json.get("f1").is_none(), "SST-2 reports no F1");
    let calibration_points = 21;
    assert_eq!(json["sweep"].as_array().unwrap().len(), calibration_points);
    assert!(dir.path().join("device-profile.json").exists());

    // The table, on plain lines: no labels, so no accuracy.
    let plain = dir.path().join("lines.txt");
    std::fs::write(&plain, "a charming journey\nbleak and desperate\n").unwrap();
    let out = cli(
        dir.path(),
        &["bench", "-m", model, "-d", plain.to_str().unwrap(), "--threshold", "0.5", "--profile-out", "p2.json"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("2 inputs") && table.contains("accuracy -") && table.contains("full depth"), "{table}");
    assert!(dir.path().join("p2.json").exists());
}

/// `tune` as one library call: without a profile it measures one on the data, then measures its choice (the steps
/// reported in that order), and saves the τ its report says it chose.
#[test]
fn tune_is_one_library_call_that_reports_its_steps() {
    let dir = tempfile::tempdir().unwrap();
    let options = TuneOptions {
        budget_ms: 1000.0,
        percentile: 90.0,
        data: Some(data_file(dir.path())),
        task: None,
        plain: false,
        profile: None,
        limit: Some(20),
        attempts: 2,
        out: dir.path().join("config.json"),
        backend: BackendKind::Tract,
    };
    let mut steps = Vec::new();
    let report = tune::run(package(), &options, &mut |event| match event {
        TuneEvent::Progress { .. } => {}
        TuneEvent::MeasuringProfile { inputs } => steps.push(format!("profile {inputs}")),
        TuneEvent::ProfileMeasured { inputs } => steps.push(format!("profiled {inputs}")),
        TuneEvent::MeasuringThreshold { inputs, .. } => steps.push(format!("measure {inputs}")),
        TuneEvent::Measured => steps.push("measured".into()),
        TuneEvent::ProfileRead { .. } => steps.push("read".into()),
    })
    .unwrap();
    assert_eq!(steps[..3], ["profile 20", "profiled 20", "measure 20"], "{steps:?}");
    assert_eq!(steps.last().unwrap(), "measured");
    assert_eq!((report.token_inputs, report.data_inputs), (20, Some(20)));
    let verification = report.verification.as_ref().unwrap();
    assert_eq!(report.index, verification.index);
    let config = RuntimeConfig::read(&options.out).unwrap();
    assert_eq!(config, report.config);
    assert_eq!(config.threshold, report.chosen().threshold);
    assert_eq!((config.budget_ms, config.percentile), (Some(1000.0), 90.0));

    // Neither a profile nor data: nothing to predict with.
    let options = TuneOptions { data: None, ..options };
    assert!(matches!(tune::run(package(), &options, &mut |_| {}), Err(tune::TuneError::NoProfile)));
}

#[test]
fn tune_chooses_within_budget_and_reports_an_impossible_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_file(dir.path());
    let model = package().to_str().unwrap();
    let data = data.to_str().unwrap();
    // A generous budget: the most accurate τ (ties: the faster), measured and saved.
    let out = cli(dir.path(), &["tune", "-m", model, "--budget-ms", "1000", "--data", data, "--json"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["choice"]["outcome"], "within_budget");
    let preds = json["predictions"].as_array().unwrap();
    let best = preds.iter().map(|p| p["accuracy"].as_f64().unwrap()).fold(0.0, f64::max);
    let index = json["verification"]["index"].as_u64().unwrap() as usize;
    assert_eq!(preds[index]["accuracy"].as_f64().unwrap(), best);
    assert_eq!(json["verification"]["met"], true);
    let config = RuntimeConfig::read(&dir.path().join("runtime-config.json")).unwrap();
    assert_eq!(config.threshold as f64, preds[index]["threshold"].as_f64().unwrap());
    assert_eq!((config.signal, config.budget_ms, config.percentile), (ExitSignal::Energy, Some(1000.0), 95.0));

    // An impossible budget: said plainly, the fastest τ saved.
    let out = cli(
        dir.path(),
        &["tune", "-m", model, "--budget-ms", "0.000001", "--data", data, "--out", "fast.json", "--attempts", "1"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("no threshold meets the 0.00 ms budget"), "{stdout}");
    assert!(stdout.contains("over budget"), "{stdout}");
    // Which τ is fastest is a measurement: it is checked against the predictions of the same run (comparing with
    // another run's flaked on a loaded machine, where two τ of about the same latency swapped places).
    let out = cli(
        dir.path(),
        &[
            "tune",
            "-m",
            model,
            "--budget-ms",
            "0.000001",
            "--data",
            data,
            "--out",
            "fast.json",
            "--attempts",
            "1",
            "--json",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["choice"]["outcome"], "impossible", "{json}");
    let preds = json["predictions"].as_array().unwrap();
    let fastest = preds
        .iter()
        .min_by(|a, b| a["percentile_ms"].as_f64().unwrap().total_cmp(&b["percentile_ms"].as_f64().unwrap()))
        .unwrap();
    let fast = RuntimeConfig::read(&dir.path().join("fast.json")).unwrap();
    assert_eq!(fast.threshold as f64, fastest["threshold"].as_f64().unwrap());

    // No profile and no data: a clear usage error.
    let out = cli(dir.path(), &["tune", "-m", model, "--budget-ms", "5", "--profile", "absent.json"], None);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("absent.json"), "{}", text(&out.stderr));
}

#[test]
fn serve_answers_every_line_and_saves_energy_on_a_low_battery() {
    let dir = tempfile::tempdir().unwrap();
    let power = dir.path().join("power_supply");
    let thermal = dir.path().join("thermal");
    std::fs::create_dir_all(power.join("BAT0")).unwrap();
    std::fs::write(power.join("BAT0/type"), "Battery\n").unwrap();
    std::fs::write(power.join("BAT0/status"), "Discharging\n").unwrap();
    std::fs::write(power.join("BAT0/capacity"), "10\n").unwrap();
    std::fs::create_dir_all(thermal.join("thermal_zone0")).unwrap();
    std::fs::write(thermal.join("thermal_zone0/temp"), "41000\n").unwrap();

    // A copy of the package with a synthetic five-point table (accuracy falling as speed rises), so that the
    // ladder has rungs to move along whatever the random weights' own calibration looks like.
    let model = dir.path().join("package");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(package()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    let mut manifest = Manifest::read(&model).unwrap();
    manifest.calibration = Some(common::five_rung_calibration());
    manifest.write(&model).unwrap();
    let ladder = Ladder::from_manifest(&manifest);
    assert_eq!(ladder.len(), 5);
    // Configured at the most accurate rung (τ 0.1): the low-battery saver moves two rungs faster, to τ 0.5.
    let configured = ladder.get(0).threshold;
    let expected = ladder.get(2).threshold;

    let mut input = b"a charming journey\nbleak and desperate\n\xff\xfe\nthe movie is great\n".to_vec();
    input.extend_from_slice(b"\n");
    let out = cli(
        dir.path(),
        &[
            "serve",
            "-m",
            model.to_str().unwrap(),
            "--threshold",
            &configured.to_string(),
            "--power-root",
            power.to_str().unwrap(),
            "--thermal-root",
            thermal.to_str().unwrap(),
        ],
        Some(&input),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "two inputs fail (invalid UTF-8, empty): {stderr}");
    let lines: Vec<serde_json::Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    assert!(lines[2]["error"].as_str().unwrap().contains("UTF-8"));
    assert!(lines[4]["error"].is_string());
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["input"], i + 1);
    }
    for l in [&lines[0], &lines[1], &lines[3]] {
        assert_eq!(l["threshold"].as_f64().unwrap(), expected as f64, "{stderr}");
    }
    assert!(stderr.contains("→ energy saver") && stderr.contains("low battery"), "{stderr}");
    assert!(stderr.contains("power policy: energy saver"), "the τ change is logged with its reason: {stderr}");
}

#[test]
fn serve_skips_a_line_over_the_cap_and_answers_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let model = package().to_str().unwrap();
    let mut input = b"a charming journey\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', cosee_runtime::MAX_LINE_BYTES + 1));
    input.extend_from_slice(b"\nthe movie is great\n");
    // No battery, no thermal zone: an empty directory for both.
    let none = dir.path().to_str().unwrap();
    let out = cli(dir.path(), &["serve", "-m", model, "--power-root", none, "--thermal-root", none], Some(&input));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0]["label"].is_string() && lines[2]["label"].is_string());
    assert_eq!((&lines[1]["input"], &lines[2]["input"]), (&2.into(), &3.into()));
    assert!(lines[1]["error"].as_str().unwrap().contains("bytes per input line"), "{}", lines[1]);
}

#[test]
fn out_of_range_flags_of_serve_tune_and_bench_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = package().to_str().unwrap();
    let data = data_file(dir.path());
    let data = data.to_str().unwrap();
    let cases: [(&[&str], &str); 8] = [
        (&["serve", "-m", model, "--threshold", "7"], "--threshold 7"),
        (&["serve", "-m", model, "--percentile", "101"], "--percentile 101"),
        (&["serve", "-m", model, "--budget-ms", "0"], "--budget-ms 0"),
        (&["serve", "-m", model, "--min-samples", "0"], "--min-samples 0"),
        (&["tune", "-m", model, "--budget-ms=-3", "--data", data], "--budget-ms -3"),
        (&["tune", "-m", model, "--budget-ms", "5", "--percentile=-1", "--data", data], "--percentile -1"),
        (&["bench", "-m", model, "--data", data, "--threshold", "1.5"], "--threshold 1.5"),
        (&["bench", "-m", model, "--data", data, "--signal", "patience", "--threshold", "0"], "--threshold 0"),
    ];
    for (args, says) in cases {
        // A usage error answers before reading any input.
        let out = cli(dir.path(), args, Some(b"the movie is great\n"));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says) && stderr.contains("out of range"), "{args:?}: {stderr}");
    }
}
