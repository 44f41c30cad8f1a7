//! Tokenizer overrides, pretrained loading, checkpoint round trips and padding invariance of the model.

mod common;

use common::{tiny_config, tokenizer_path, write_backbone};
use cosee_format::config::ExitConfig;
use cosee_format::glue::Task;
use cosee_format::signal::ExitSignal;
use cosee_trainer::model::checkpoint::named_variables;
use cosee_trainer::model::TOKENIZER_FILE;
use cosee_trainer::tokenize::{BatchTensors, Encoded};
use cosee_trainer::{EncodedBatch, MultiExitBert, TextEncoder, TrainerError};
use tch::Device;

fn exit_config(per_exit_pooler: bool) -> ExitConfig {
    ExitConfig {
        task: Task::Sst2,
        label_names: vec!["negative".into(), "positive".into()],
        signal: ExitSignal::Energy,
        per_exit_pooler,
        pooling: cosee_format::config::Pooling::Cls,
        max_seq_len: 64,
    }
}

#[test]
fn tokenizer_overrides_baked_in_padding_and_truncates() {
    let enc = TextEncoder::from_file(&tokenizer_path(), 16).unwrap();
    // The file pads to 128; we must not.
    let short = enc.encode("a charming journey .", None).unwrap();
    assert!(short.len() < 10, "{short:?}");
    assert_eq!(short.input_ids[0], 2, "[CLS] is id 2 in the tiny vocabulary");
    assert_eq!(*short.input_ids.last().unwrap(), 3, "[SEP] closes the input");
    let long_text = "the movie is a charming and often affecting journey . ".repeat(10);
    let long = enc.encode(&long_text, None).unwrap();
    assert_eq!(long.len(), 16);
    assert_eq!(long.input_ids[15], 3);
    // Pairs: [CLS] a [SEP] b [SEP] with segment ids 0…0 1…1, trimmed longest-first to the limit.
    let pair = enc.encode("good film", Some("bad film")).unwrap();
    assert_eq!(pair.token_type_ids.iter().filter(|&&t| t == 1).count(), 3);
    assert_eq!(pair.input_ids.iter().filter(|&&t| t == 3).count(), 2);
    let long_pair = enc.encode(&long_text, Some("bad film")).unwrap();
    assert_eq!(long_pair.len(), 16);
    assert_eq!(long_pair.token_type_ids.iter().filter(|&&t| t == 1).count(), 3, "the short side is kept whole");
    // Batch and single encoding agree.
    let examples = [cosee_format::Example { text_a: "a charming journey .".into(), text_b: None, label: Some(1) }];
    assert_eq!(enc.encode_all(&examples).unwrap()[0], short);
    assert!(TextEncoder::from_file(&tokenizer_path(), 2).is_err());
}

#[test]
fn pretrained_loading_reports_missing_heads_and_skips_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let source = write_backbone(dir.path(), 2, 7);
    let (model, report) = MultiExitBert::from_pretrained(dir.path(), exit_config(false), Device::Cpu).unwrap();
    assert_eq!(report.ignored, vec!["bert.embeddings.position_ids".to_string()]);
    assert_eq!(report.initialized.len(), 4, "{:?}", report.initialized);
    assert!(report.initialized.iter().all(|n| n.starts_with("exits.")));
    assert!(report.loaded.contains(&"encoder.layer.1.attention.self.query.weight".to_string()));
    assert!(report.loaded.contains(&"pooler.dense.weight".to_string()));
    // Every encoder tensor equals the source's; the names are exactly the checkpoint names.
    let src: std::collections::HashMap<_, _> = named_variables(&source).into_iter().collect();
    for (name, t) in named_variables(&model) {
        if !name.starts_with("exits.") {
            assert!(t.equal(&src[&name]), "{name}");
        }
    }
    let names: Vec<String> = named_variables(&model).into_iter().map(|(n, _)| n).collect();
    for expected in [
        "embeddings.word_embeddings.weight",
        "embeddings.LayerNorm.bias",
        "encoder.layer.0.attention.output.LayerNorm.weight",
        "encoder.layer.1.intermediate.dense.weight",
        "encoder.layer.1.output.dense.bias",
        "exits.1.classifier.weight",
    ] {
        assert!(names.contains(&expected.to_string()), "{expected} missing from {names:?}");
    }

    // Per-exit poolers start from the backbone's shared pooler.
    let (per_exit, report) = MultiExitBert::from_pretrained(dir.path(), exit_config(true), Device::Cpu).unwrap();
    assert_eq!(report.copied.len(), 4);
    let vars = per_exit.var_store().variables();
    assert!(vars["exits.1.pooler.dense.weight"].equal(&src["pooler.dense.weight"]));
    assert!(!vars.contains_key("pooler.dense.weight"));

    // A shape mismatch is an error that names the tensor.
    let mut wrong = tiny_config(2, false);
    wrong.bert.intermediate_size = 48;
    wrong.cosee = None;
    std::fs::write(dir.path().join("config.json"), wrong.to_json()).unwrap();
    let err = MultiExitBert::from_pretrained(dir.path(), exit_config(false), Device::Cpu).unwrap_err();
    assert!(matches!(err, TrainerError::Shape { .. }), "{err}");
    assert!(err.to_string().contains("intermediate.dense"), "{err}");
}

#[test]
fn checkpoint_round_trip_and_padding_invariance() {
    tch::manual_seed(3);
    let model = MultiExitBert::new(&tiny_config(3, true), Device::Cpu).unwrap();
    let enc = TextEncoder::from_file(&tokenizer_path(), 64).unwrap();
    let texts = [("a charming and often affecting journey .", None), ("unflinchingly bleak", None)];
    let batch = EncodedBatch::from_texts(&enc, &texts, None).unwrap();
    let logits = model.forward_logits(&batch).unwrap();
    assert_eq!((logits.len(), logits[0].len(), logits[0][0].len()), (3, 2, 2));

    // Padding to 64 changes nothing but float noise (padding is masked out of attention).
    let padded = model.forward_logits(&EncodedBatch::from_texts(&enc, &texts, Some(64)).unwrap()).unwrap();
    for (a, b) in logits.iter().flatten().flatten().zip(padded.iter().flatten().flatten()) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    // Alone or in a batch: the same answer.
    let single: Vec<&Encoded> = Vec::new();
    assert_eq!(EncodedBatch::pad(&single, 0, None).batch_size, 0);
    let alone = model.forward_logits(&EncodedBatch::from_texts(&enc, &texts[1..], None).unwrap()).unwrap();
    for m in 0..3 {
        for c in 0..2 {
            assert!((alone[m][0][c] - logits[m][1][c]).abs() < 1e-5);
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    model.save_checkpoint(&ckpt, enc.json_bytes()).unwrap();
    for file in ["model.safetensors", "config.json", TOKENIZER_FILE] {
        assert!(ckpt.join(file).exists(), "{file}");
    }
    let back = MultiExitBert::load_checkpoint(&ckpt, Device::Cpu).unwrap();
    let reloaded_encoder = TextEncoder::for_checkpoint(&ckpt).unwrap();
    assert_eq!(reloaded_encoder.max_len(), 64, "the checkpoint's max_seq_len");
    assert_eq!(EncodedBatch::from_texts(&reloaded_encoder, &texts, None).unwrap(), batch);
    assert_eq!(back.config(), model.config());
    assert_eq!(back.forward_logits(&batch).unwrap(), logits, "reloaded outputs must be identical");
    // The saved file holds exactly the model's variables, all f32.
    let bytes = std::fs::read(ckpt.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(file.len(), named_variables(&model).len());
    assert!(file.tensors().iter().all(|(_, v)| v.dtype() == safetensors::Dtype::F32));

    // A checkpoint missing a tensor does not load. (Made by hand, so without the trainer's checksums, which would
    // refuse the replaced file before the reader saw it.)
    std::fs::remove_file(ckpt.join(cosee_format::checkpoint::CHECKSUMS_FILE)).unwrap();
    let trimmed: Vec<(String, tch::Tensor)> =
        named_variables(&model).into_iter().filter(|(n, _)| n != "exits.2.classifier.bias").collect();
    std::fs::write(
        ckpt.join("model.safetensors"),
        cosee_trainer::model::checkpoint::serialize_tensors(&trimmed).unwrap(),
    )
    .unwrap();
    let err = MultiExitBert::load_checkpoint(&ckpt, Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("exits.2.classifier.bias"), "{err}");
}

#[test]
fn standardized_poolers_center_and_scale_each_layers_cls() {
    let enc = TextEncoder::from_file(&tokenizer_path(), 32).unwrap();
    let texts: Vec<(&str, Option<&str>)> = [
        "a charming journey .",
        "the movie is dull",
        "often affecting and a little funny",
        "bad film",
        "a gorgeous , witty movie",
        "nothing works here",
    ]
    .iter()
    .map(|t| (*t, None))
    .collect();
    let batch = EncodedBatch::from_texts(&enc, &texts, None).unwrap();
    let shared = MultiExitBert::new(&tiny_config(2, false), Device::Cpu).unwrap();
    assert!(matches!(shared.standardize_exit_poolers(&batch), Err(TrainerError::Invalid(_))));

    let model = MultiExitBert::new(&tiny_config(2, true), Device::Cpu).unwrap();
    model.standardize_exit_poolers(&batch).unwrap();
    let (ids, types, mask) = batch.to_tensors(Device::Cpu);
    let states = tch::no_grad(|| model.hidden_states(&ids, &types, &mask, false));
    let vars: std::collections::HashMap<String, tch::Tensor> = named_variables(&model).into_iter().collect();
    for m in 0..2 {
        let w = &vars[&format!("exits.{m}.pooler.dense.weight")];
        let b = &vars[&format!("exits.{m}.pooler.dense.bias")];
        assert!(w.equal(&w.diagonal(0, 0, 1).diag_embed(0, -2, -1)), "exit {m}: the weight is diagonal");
        // W·h[CLS] + b over the batch: zero mean and unit std per unit (the tiny model's σ are all above the floor).
        let z = states[m + 1].select(1, 0).matmul(&w.tr()) + b;
        let mean = z.mean_dim(0, false, tch::Kind::Float).abs().max().double_value(&[]);
        let std = z.std_dim(0, false, false);
        // W·h and b cancel: both are as large as |b| = |μ/σ| (~680 here), so the mean is zero up to f32 rounding of
        // that size (a fixed 1e-4 failed now and then, at 1.2e-4 = one ulp of 1024), which is what is checked.
        let scale = b.abs().max().double_value(&[]).max(1.0);
        assert!(mean < 8.0 * f32::EPSILON as f64 * scale, "exit {m}: mean {mean} (|b| up to {scale})");
        assert!((std - 1.0).abs().max().double_value(&[]) < 1e-3, "exit {m}");
    }
}

#[test]
fn centered_classifiers_give_zero_sum_logits_and_the_same_softmax() {
    let enc = TextEncoder::from_file(&tokenizer_path(), 32).unwrap();
    let texts: Vec<(&str, Option<&str>)> =
        ["a charming journey .", "the movie is dull", "bad film"].iter().map(|t| (*t, None)).collect();
    let batch = EncodedBatch::from_texts(&enc, &texts, None).unwrap();
    let model = MultiExitBert::new(&tiny_config(2, true), Device::Cpu).unwrap();
    // Give the heads a common level that centering has to remove (HF init draws zero biases).
    for (name, var) in named_variables(&model) {
        if name.ends_with("classifier.bias") {
            tch::no_grad(|| var.shallow_clone().copy_(&tch::Tensor::from_slice(&[1.5f32, 0.5])));
        }
    }
    let (ids, types, mask) = batch.to_tensors(Device::Cpu);
    let before = tch::no_grad(|| model.forward(&ids, &types, &mask, false));
    model.center_classifiers();
    let after = tch::no_grad(|| model.forward(&ids, &types, &mask, false));
    for (b, a) in before.iter().zip(&after) {
        let row_sums = a.sum_dim_intlist(-1i64, false, tch::Kind::Float).abs().max().double_value(&[]);
        assert!(row_sums < 1e-5, "logits not zero-sum: {row_sums}");
        let level = b.mean_dim(-1i64, false, tch::Kind::Float).abs().min().double_value(&[]);
        assert!(level > 0.5, "the test needs a level to remove: {level}");
        let (pb, pa) = (b.softmax(-1, tch::Kind::Float), a.softmax(-1, tch::Kind::Float));
        assert!((pb - pa).abs().max().double_value(&[]) < 1e-6, "softmax changed");
    }
}
