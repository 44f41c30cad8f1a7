//! The files `serve`, `classify` and `tune` read besides the package: the runtime config (`tune --write-config`) and
//! the device profile (`bench --profile`), damaged in their bytes or in their values. Either is refused with an
//! error, or what `serve` does with it next works: the config's τ and budget are in range, and the profile's
//! predictions along a calibration table, the ladder built from them and the controller all come up, no panic.

use crate::fixtures;
use crate::mutate::{apply_json_mutation, json_mutation};
use crate::{fuzz, holds};
use cosee_runtime::controller::{Controller, ControllerConfig, Ladder};
use cosee_runtime::manifest::Calibration;
use cosee_runtime::profile::{DeviceProfile, ProfileOrigin, StageSample};
use cosee_runtime::tune::{self, RuntimeConfig};
use cosee_runtime::{ExitSignal, Task};

fn config_bytes() -> Vec<u8> {
    let config = RuntimeConfig { threshold: 0.4, signal: ExitSignal::Energy, budget_ms: Some(12.5), percentile: 95.0 };
    serde_json::to_vec_pretty(&config).expect("serializes")
}

#[test]
fn fuzz_runtime_config() {
    let original = config_bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runtime.json");
    fuzz("runtime-config", 1024, json_mutation(), |m| {
        std::fs::write(&path, apply_json_mutation(&original, &m)).unwrap();
        if let Ok(c) = RuntimeConfig::read(&path) {
            holds!(c.check("fuzz", Some(3)).is_ok() || c.signal == ExitSignal::Patience, "{c:?} read but out of range");
            holds!(c.budget_ms.is_none_or(|b| b.is_finite() && b > 0.0), "budget {:?}", c.budget_ms);
            holds!((0.0..=100.0).contains(&c.percentile), "percentile {}", c.percentile);
        }
        Ok(())
    });
}

fn profile_bytes() -> Vec<u8> {
    let origin = ProfileOrigin {
        arch: "x86_64".into(),
        cpu: None,
        package: "fuzz".into(),
        quantization: "none".into(),
        num_layers: 3,
        hidden_size: 32,
        data: "fuzz".into(),
        inputs: 40,
    };
    let samples: Vec<StageSample> = (0..40)
        .map(|i| {
            let tokens = 4 + i % 20;
            let layers = 1 + i % 3;
            StageSample {
                tokens,
                tokenize_ms: 0.05 + 0.001 * tokens as f64,
                embeddings_ms: 0.02,
                layer_ms: vec![0.3 + 0.01 * tokens as f64; layers],
                exit_ms: vec![0.01; layers],
                wall_ms: 0.5 + 0.35 * layers as f64 + 0.01 * (i % 7) as f64,
            }
        })
        .collect();
    let counts: Vec<usize> = samples.iter().map(|s| s.tokens).collect();
    let profile = DeviceProfile::fit(origin, &samples, &counts).expect("fits");
    serde_json::to_vec_pretty(&profile).expect("serializes")
}

fn calibration() -> Calibration {
    crate::common::five_rung_calibration()
}

#[test]
fn fuzz_device_profile() {
    let original = profile_bytes();
    let calibration = calibration();
    let mut manifest = fixtures::engine(Task::Sst2).manifest().clone();
    manifest.calibration = Some(calibration.clone());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.json");
    fuzz("device-profile", 1024, json_mutation(), |m| {
        std::fs::write(&path, apply_json_mutation(&original, &m)).unwrap();
        let Ok(profile) = DeviceProfile::read(&path) else { return Ok(()) };
        // What `serve --profile` and `tune` do with it.
        let Ok(predictions) = tune::predict_all(&profile, &calibration, 3, &profile.token_counts, 95.0) else {
            return Ok(());
        };
        holds!(predictions.len() == calibration.points.len(), "{} predictions", predictions.len());
        let ladder = Ladder::from_manifest(&manifest).with_predictions(|tau| {
            predictions.iter().find(|p| (p.threshold - tau).abs() < 1e-6).map(|p| p.percentile_ms)
        });
        let config = ControllerConfig { budget_ms: Some(5.0), ..ControllerConfig::default() };
        let mut controller = Controller::new(ladder, 0.1, config)
            .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
        for ms in [1.0, 50.0, 0.5, 9.0] {
            for _ in 0..40 {
                controller.record(ms);
            }
        }
        holds!(controller.threshold().is_finite(), "τ {}", controller.threshold());
        let _ = tune::choose(&predictions, 5.0);
        Ok(())
    });
}
