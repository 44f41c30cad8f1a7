//! What the engine gives back for one input, and the stage timings it carries. Human and JSON output are two views
//! of the same [`Answer`]; its JSON keys are a contract scripts rely on (issue 2): `label`, `probs`, `exit_layer`,
//! `num_layers`, `signals`, `stage_ms`, `truncated` (plus the extra keys documented on the fields).

use crate::signal::ExitSignal;
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::fmt;
use std::time::Duration;

/// One timed stage of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Tokenize,
    Embeddings,
    /// Transformer layer m (1-based).
    Layer(usize),
    /// The exit after layer m (1-based).
    Exit(usize),
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tokenize => f.write_str("tokenize"),
            Self::Embeddings => f.write_str("embeddings"),
            Self::Layer(m) => write!(f, "layer_{m:02}"),
            Self::Exit(m) => write!(f, "exit_{m:02}"),
        }
    }
}

/// Milliseconds per stage, in execution order. Serializes as a JSON object keyed `tokenize`, `embeddings`,
/// `layer_01`, `exit_01`, … in that order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageTimes(Vec<(Stage, f64)>);

impl StageTimes {
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    pub fn push(&mut self, stage: Stage, elapsed: Duration) {
        self.0.push((stage, elapsed.as_secs_f64() * 1e3));
    }

    /// Milliseconds spent in `stage`, if it ran.
    pub fn get(&self, stage: Stage) -> Option<f64> {
        self.0.iter().find(|(s, _)| *s == stage).map(|&(_, ms)| ms)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Stage, f64)> + '_ {
        self.0.iter().copied()
    }

    pub fn total_ms(&self) -> f64 {
        self.0.iter().map(|&(_, ms)| ms).sum()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for StageTimes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (stage, ms) in &self.0 {
            map.serialize_entry(&stage.to_string(), ms)?;
        }
        map.end()
    }
}

/// The classification of one input with real early exit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Answer {
    /// The predicted label's name.
    pub label: String,
    /// Index of `label` in the manifest's `label_names` (and in `probs`).
    pub label_index: usize,
    /// softmax of the answering exit's logits, in `label_names` order.
    pub probs: Vec<f32>,
    /// The layer at which computation stopped, 1-based; `num_layers` when no internal exit met the threshold.
    pub exit_layer: usize,
    pub num_layers: usize,
    /// The signal the exit decision used, and its threshold.
    pub signal: ExitSignal,
    pub threshold: f32,
    /// The signal at every executed layer, `exit_layer` values; `null` in JSON at a skipped exit.
    pub signals: Vec<f32>,
    /// Exits whose logits were NaN or infinite: they could not trigger an exit. If the last executed exit is among
    /// them, the answer comes from the deepest finite exit before it.
    pub skipped_exits: Vec<usize>,
    /// Time of every stage that ran, milliseconds.
    pub stage_ms: StageTimes,
    /// Sum of `stage_ms`.
    pub total_ms: f64,
    /// Tokens fed to the model, special tokens included.
    pub tokens: usize,
    /// The input was cut to the package's `max_seq_len`.
    pub truncated: bool,
}

impl Answer {
    /// Probability of the predicted label.
    pub fn confidence(&self) -> f32 {
        self.probs.get(self.label_index).copied().unwrap_or(f32::NAN)
    }

    /// The signal at the exit layer (NaN if that exit was skipped).
    pub fn exit_signal(&self) -> f32 {
        self.signals.last().copied().unwrap_or(f32::NAN)
    }
}

/// One line of human output: label, probability, exit layer, signal, time.
impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}  p={:.3}  exit {}/{}  {} {:.4} (τ {})  {:.2} ms  {} tokens",
            self.label,
            self.confidence(),
            self.exit_layer,
            self.num_layers,
            self.signal,
            self.exit_signal(),
            self.threshold,
            self.total_ms,
            self.tokens
        )?;
        if self.truncated {
            f.write_str("  (truncated)")?;
        }
        if !self.skipped_exits.is_empty() {
            write!(f, "  (skipped non-finite exits {:?})", self.skipped_exits)?;
        }
        Ok(())
    }
}

/// One answer as the CLI's JSON lines and the HTTP API give it: the answer's fields, or `error` for an input that
/// failed, plus the 1-based `input` number it answers. The one place where an answer becomes a JSON object.
pub fn json_object(number: usize, result: &Result<Answer, String>) -> serde_json::Map<String, serde_json::Value> {
    let mut object = match result {
        Ok(answer) => match serde_json::to_value(answer) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::from_iter([("error".to_string(), "cannot serialize the answer".into())]),
        },
        Err(message) => serde_json::Map::from_iter([("error".to_string(), message.as_str().into())]),
    };
    object.insert("input".into(), number.into());
    object
}

/// [`json_object`] as one line of text (no newline): what `classify` and `serve` print per input.
pub fn json_line(number: usize, result: &Result<Answer, String>) -> String {
    serde_json::Value::Object(json_object(number, result)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys_and_stage_order() {
        let mut stage_ms = StageTimes::default();
        for (stage, us) in [(Stage::Tokenize, 10), (Stage::Embeddings, 20), (Stage::Layer(1), 300), (Stage::Exit(1), 5)]
        {
            stage_ms.push(stage, Duration::from_micros(us));
        }
        let a = Answer {
            label: "positive".into(),
            label_index: 1,
            probs: vec![0.25, 0.75],
            exit_layer: 1,
            num_layers: 2,
            signal: ExitSignal::Energy,
            threshold: 0.5,
            signals: vec![f32::NAN],
            skipped_exits: vec![],
            total_ms: stage_ms.total_ms(),
            stage_ms,
            tokens: 5,
            truncated: false,
        };
        let json = serde_json::to_string(&a).unwrap();
        let order: Vec<usize> = ["\"tokenize\"", "\"embeddings\"", "\"layer_01\"", "\"exit_01\""]
            .iter()
            .map(|k| json.find(k).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        for key in ["label", "probs", "exit_layer", "num_layers", "signals", "stage_ms", "truncated"] {
            assert!(v.get(key).is_some(), "missing {key} in {json}");
        }
        assert!(v["signals"][0].is_null(), "NaN signals are null in JSON");
        assert_eq!(v["signal"], "energy");
        assert!((v["stage_ms"]["layer_01"].as_f64().unwrap() - 0.3).abs() < 1e-9);
        assert!(a.to_string().starts_with("positive  p=0.750  exit 1/2  energy"));
    }
}
