//! `exit_XX.onnx`: pooling, pooler and classifier of one exit.

use crate::onnx::{Attr, Dim, Elem, GraphBuilder};
use crate::weights::ExitWeights;
use cosee_runtime::config::Pooling;
use cosee_runtime::manifest::io_names;
use tract_onnx::pb::ModelProto;

use super::ops::*;
use super::*;

/// `exit_XX.onnx`: logits = classifier(tanh(pooler(pooled))), pooled = h[:, 0, :] ([CLS]) or the mean of h over
/// the sequence axis (every position given: the runtime never pads).
pub fn exit_graph(w: &ExitWeights, layer: usize) -> ModelProto {
    let h = w.pooler.in_features();
    let labels = w.classifier.out_features();
    let mut g = GraphBuilder::new(&format!("exit_{layer:02}"));
    let x = g.input(io_names::HIDDEN_STATES, Elem::F32, &[BATCH, SEQUENCE, Dim::Fixed(h)]);
    let pooled = match w.pooling {
        Pooling::Cls => {
            let zero = g.i64s("cls_index", &[], &[0]);
            g.op("Gather", &[&x, &zero], vec![("axis", Attr::Int(1))])
        }
        Pooling::Mean => g.op("ReduceMean", &[&x], vec![("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))]),
    };
    let pooled = linear_f32(&mut g, &pooled, &w.pooler, "pooler.dense", 1.0);
    let pooled = g.op("Tanh", &[&pooled], vec![]);
    let logits = linear_f32(&mut g, &pooled, &w.classifier, "classifier", 1.0);
    g.output(&logits, io_names::LOGITS, Elem::F32, &[BATCH, Dim::Fixed(labels)]);
    g.build()
}
