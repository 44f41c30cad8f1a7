//! `embeddings.onnx`: the embedding sum and its LayerNorm.

use crate::onnx::{Attr, Dim, Elem, GraphBuilder};
use crate::quant;
use crate::weights::EmbeddingWeights;
use cosee_runtime::manifest::{io_names, EmbeddingStorage, Numerics};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::ModelProto;

use super::ops::*;
use super::*;

/// `embeddings.onnx`: LayerNorm(word[ids] + position[0..S] + token_type[types]). The word table is stored as
/// f32, f16 (Cast after the Gather) or per-row int8 (Cast, then Mul by the gathered row scale).
pub fn embeddings_graph(w: &EmbeddingWeights, storage: EmbeddingStorage, numerics: Numerics) -> ModelProto {
    let h = w.word.cols;
    let mut g = GraphBuilder::new("embeddings");
    let ids = g.input(io_names::INPUT_IDS, Elem::I64, &[BATCH, SEQUENCE]);
    let types = g.input(io_names::TOKEN_TYPE_IDS, Elem::I64, &[BATCH, SEQUENCE]);
    // Part of every stage's interface; the embeddings do not need it.
    g.input(io_names::ATTENTION_MASK, Elem::I64, &[BATCH, SEQUENCE]);

    let word = match storage {
        EmbeddingStorage::F32 => {
            let table = g.f32s("embeddings.word_embeddings.weight", &[w.word.rows, h], &w.word.data);
            g.op("Gather", &[&table, &ids], vec![("axis", Attr::Int(0))])
        }
        EmbeddingStorage::F16 => {
            let data: Vec<half::f16> = w.word.data.iter().map(|&v| half::f16::from_f32(v)).collect();
            let table = g.f16s("embeddings.word_embeddings.weight_f16", &[w.word.rows, h], &data);
            let rows = g.op("Gather", &[&table, &ids], vec![("axis", Attr::Int(0))]);
            g.op("Cast", &[&rows], vec![("to", Attr::Int(DataType::Float as i64))])
        }
        EmbeddingStorage::Int8 => {
            let (q, scales) = quant::quantize_rows(&w.word.data, w.word.rows, h);
            let table = g.i8s("embeddings.word_embeddings.weight_s8", &[w.word.rows, h], &q);
            let scale_table = g.f32s("embeddings.word_embeddings.row_scale", &[w.word.rows, 1], &scales);
            let rows = g.op("Gather", &[&table, &ids], vec![("axis", Attr::Int(0))]);
            let rows = g.op("Cast", &[&rows], vec![("to", Attr::Int(DataType::Float as i64))]);
            let scales = g.op("Gather", &[&scale_table, &ids], vec![("axis", Attr::Int(0))]);
            g.op("Mul", &[&rows, &scales], vec![])
        }
    };
    let type_table = g.f32s("embeddings.token_type_embeddings.weight", &[w.token_type.rows, h], &w.token_type.data);
    let token_type = g.op("Gather", &[&type_table, &types], vec![("axis", Attr::Int(0))]);
    // Positions 0..S: the first S rows of the table, S read from the input's shape.
    let pos_table = g.f32s("embeddings.position_embeddings.weight", &[w.position.rows, h], &w.position.data);
    let shape = g.op("Shape", &[&ids], vec![]);
    let one = i64_tensor(&mut g, "const.one", &[1]);
    let two = i64_tensor(&mut g, "const.two", &[2]);
    let zero = i64_tensor(&mut g, "const.zero", &[0]);
    let seq_len = g.op("Slice", &[&shape, &one, &two, &zero], vec![]);
    let position = g.op("Slice", &[&pos_table, &zero, &seq_len, &zero], vec![]);
    let sum = g.op("Add", &[&word, &token_type], vec![]);
    let sum = g.op("Add", &[&sum, &position], vec![]);
    let out = layer_norm(&mut g, &sum, &w.layer_norm, "embeddings.LayerNorm", numerics);
    g.output(&out, io_names::HIDDEN_STATES, Elem::F32, &[BATCH, SEQUENCE, Dim::Fixed(h)]);
    g.build()
}
