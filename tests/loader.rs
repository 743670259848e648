//! Round trips through the Hugging Face loader, and every way a checkpoint can be wrong.

use ch01_naive::NoCache;
use kvserve::ch00_model::{save::{config_json, encode, named_tensors, safetensors_bytes}};
use kvserve::ch00_model::{load_model, DType, LlamaConfig, LoadedModel, Model, ModelError, StepMeta, Tokenizer};
use safetensors::Dtype;
use std::path::{Path, PathBuf};

/// A fresh directory, removed when the returned guard drops (also when the test fails).
fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("kvserve-loader-").tempdir().unwrap()
}

fn tiny(tied: bool) -> Model {
    let config = LlamaConfig { tie_word_embeddings: tied, ..LlamaConfig::named("tiny").unwrap() };
    Model::random(config, 3).unwrap()
}

/// Every position's logits, recomputed from scratch (ch01's attention).
fn logits(m: &Model, ids: &[u32]) -> Vec<f32> {
    let rows: Vec<usize> = (0..ids.len()).collect();
    m.forward(ids, &StepMeta::span(0, 0, ids.len()), &rows, &mut NoCache).unwrap().iter().copied().collect()
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

const IDS: [u32; 6] = [1, 40, 7, 300, 12, 9];

#[test]
fn f32_round_trip_is_exact_tied_and_untied() {
    for tied in [false, true] {
        let m = tiny(tied);
        let guard = tmp();
        let dir = guard.path();
        m.save(dir, DType::F32).unwrap();
        let back = Model::load(dir).unwrap();
        assert_eq!(back.lm_head.is_none(), tied);
        assert_eq!(logits(&back, &IDS), logits(&m, &IDS));
    }
}

#[test]
fn f16_and_bf16_checkpoints_load_close_to_f32() {
    let m = tiny(false);
    let want = logits(&m, &IDS);
    for (dtype, tol) in [(DType::F16, 5e-3), (DType::BF16, 4e-2)] {
        let guard = tmp();
        let dir = guard.path();
        m.save(dir, dtype).unwrap();
        let got = logits(&Model::load(dir).unwrap(), &IDS);
        let err = max_rel(&got, &want);
        assert!(err < tol && err > 0.0, "{dtype:?}: relative error {err}");
    }
}

#[test]
fn half_checkpoints_stay_half_and_give_the_widened_models_bits() {
    // Kept in the checkpoint's type by default (2 bytes a weight), and the logits of the model
    // widened to f32 at load (`--dtype f32`, the old path) bit for bit: widening is exact and the
    // kernels' order is the same. Prefill (6 tokens) and one decode token both.
    let m = tiny(false);
    for dtype in [DType::F16, DType::BF16] {
        let guard = tmp();
        let dir = guard.path();
        m.save(dir, dtype).unwrap();
        let (half, wide) = (Model::load(dir).unwrap(), Model::load_as(dir, Some(DType::F32)).unwrap());
        assert_eq!((half.weight_dtype(), wide.weight_dtype()), (dtype, DType::F32));
        assert!(half.weight_bytes() * 2 < wide.weight_bytes() + 4 * 4096, "{dtype:?}: {} vs {}", half.weight_bytes(), wide.weight_bytes());
        for ids in [&IDS[..], &IDS[..1]] {
            let bits = |m: &Model| logits(m, ids).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&half), bits(&wide), "{dtype:?}, {} tokens", ids.len());
        }
        // Narrowing on request: an f32 model kept as this type is the checkpoint's model.
        let narrowed = m.clone().with_weight_dtype(dtype);
        assert_eq!(logits(&narrowed, &IDS), logits(&half, &IDS), "{dtype:?} narrowed at load");
    }
    let f32_dir = tmp();
    m.save(f32_dir.path(), DType::F32).unwrap();
    assert_eq!(load_model(Some(f32_dir.path()), None).unwrap().model.weight_dtype(), DType::F32);
}

#[test]
fn sharded_checkpoint_loads_through_the_index() {
    let m = tiny(false);
    let guard = tmp();
    let dir = guard.path();
    std::fs::write(dir.join("config.json"), config_json(&m.config).to_string()).unwrap();
    let tensors = named_tensors(&m);
    let (first, second) = tensors.split_at(tensors.len() / 2);
    let mut map = serde_json::Map::new();
    for (file, part) in [("model-00001-of-00002.safetensors", first), ("model-00002-of-00002.safetensors", second)] {
        let entries: Vec<_> = part.iter().map(|(n, s, v)| (n.clone(), s.clone(), encode(v, DType::F32), Dtype::F32)).collect();
        std::fs::write(dir.join(file), safetensors_bytes(&entries).unwrap()).unwrap();
        for (n, _, _) in part {
            map.insert(n.clone(), file.into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_eq!(logits(&Model::load(dir).unwrap(), &IDS), logits(&m, &IDS));
}

/// Saves the tiny model with one tensor replaced (or dropped when `replace` is None).
fn save_with(dir: &Path, name: &str, replace: Option<(Vec<usize>, Vec<u8>, Dtype)>) {
    let m = tiny(false);
    std::fs::write(dir.join("config.json"), config_json(&m.config).to_string()).unwrap();
    let entries: Vec<_> = named_tensors(&m)
        .into_iter()
        .filter_map(|(n, s, v)| match (&n == name, &replace) {
            (false, _) => Some((n, s, encode(&v, DType::F32), Dtype::F32)),
            (true, Some((s2, b, dt))) => Some((n, s2.clone(), b.clone(), *dt)),
            (true, None) => None,
        })
        .collect();
    std::fs::write(dir.join("model.safetensors"), safetensors_bytes(&entries).unwrap()).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let guard = tmp();
    let dir = guard.path();
    save_with(dir, "model.layers.1.mlp.up_proj.weight", None);
    let e = Model::load(dir).unwrap_err();
    assert!(matches!(&e, ModelError::MissingTensor { name } if name == "model.layers.1.mlp.up_proj.weight"), "{e}");
}

#[test]
fn misshaped_tensor_names_both_shapes() {
    let guard = tmp();
    let dir = guard.path();
    save_with(dir, "model.layers.0.self_attn.k_proj.weight", Some((vec![64, 32], vec![0; 64 * 32 * 4], Dtype::F32)));
    let e = Model::load(dir).unwrap_err().to_string();
    assert!(e.contains("k_proj") && e.contains("[32, 64]") && e.contains("[64, 32]"), "{e}");
}

#[test]
fn unsupported_dtype_is_an_error() {
    let guard = tmp();
    let dir = guard.path();
    save_with(dir, "model.norm.weight", Some((vec![64], vec![0; 64 * 8], Dtype::I64)));
    let e = Model::load(dir).unwrap_err();
    assert!(matches!(&e, ModelError::UnsupportedDtype { name, .. } if name == "model.norm.weight"), "{e}");
}

#[test]
fn missing_files_and_foreign_architectures_are_clear_errors() {
    let guard = tmp();
    let dir = guard.path();
    assert!(matches!(Model::load(&dir.join("nope")), Err(ModelError::MissingFile(_))));
    assert!(matches!(Model::load(dir), Err(ModelError::MissingFile(p)) if p.ends_with("config.json")));
    let m = tiny(false);
    std::fs::write(dir.join("config.json"), config_json(&m.config).to_string()).unwrap();
    assert!(matches!(Model::load(dir), Err(ModelError::MissingFile(p)) if p.ends_with("model.safetensors")));
    let mut cfg = config_json(&m.config);
    cfg["architectures"] = serde_json::json!(["MambaForCausalLM"]);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let e = Model::load(dir).unwrap_err().to_string();
    assert!(e.contains("MambaForCausalLM"), "{e}");
    std::fs::write(dir.join("config.json"), "{not json").unwrap();
    assert!(matches!(Model::load(dir), Err(ModelError::Malformed { .. })));
}

fn shipped_tokenizer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/shakespeare/tokenizer.json")
}

#[test]
fn shipped_tokenizer_round_trips_text_and_adds_no_bos() {
    let tok = Tokenizer::from_file(&shipped_tokenizer()).unwrap();
    // The ids transformers 5.17 gives: AutoTokenizer.from_pretrained("models/shakespeare")(text).
    // The tokenizer has no post-processor, so no BOS, although config.json names bos_token_id 1.
    let ids = tok.encode("ROMEO:\nO, she doth teach the torches to burn bright!").unwrap();
    assert_eq!(ids, [2036, 28, 201, 49, 14, 481, 808, 2810, 270, 3411, 1513, 292, 2180, 3674, 3]);
    let text = "ROMEO:\nBut, soft! what light through yonder window breaks?\n";
    let ids = tok.encode(text).unwrap();
    assert!(ids.len() < text.len(), "BPE merges bytes: {} ids for {} bytes", ids.len(), text.len());
    assert_eq!(tok.decode(&ids).unwrap(), text);
    assert!(matches!(Tokenizer::from_file(Path::new("/no/such/tokenizer.json")), Err(ModelError::MissingFile(_))));
}

/// A tiny checkpoint whose config names BOS 1 and EOS 2, with the shipped tokenizer (post-processor
/// replaced by `post`, JSON) and, if given, a generation_config.json.
fn checkpoint_with(post: serde_json::Value, generation_config: Option<&str>) -> tempfile::TempDir {
    let guard = tmp();
    let m = tiny(true);
    assert_eq!((m.config.bos_token_id, m.config.eos_token_ids.as_slice()), (Some(1), &[2][..]));
    m.save(guard.path(), DType::F32).unwrap();
    let mut tok: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(shipped_tokenizer()).unwrap()).unwrap();
    tok["post_processor"] = post;
    std::fs::write(guard.path().join("tokenizer.json"), tok.to_string()).unwrap();
    if let Some(text) = generation_config {
        std::fs::write(guard.path().join("generation_config.json"), text).unwrap();
    }
    guard
}

#[test]
fn checkpoint_prompts_get_bos_only_from_the_tokenizer_post_processor() {
    let plain = checkpoint_with(serde_json::Value::Null, None);
    let loaded = load_model(Some(plain.path()), None).unwrap();
    assert_eq!(loaded.encode("ROMEO:").unwrap(), [2036, 28], "config.json's bos_token_id is not prepended");
    let template = serde_json::json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
    });
    let with_bos = checkpoint_with(template, None);
    let loaded = load_model(Some(with_bos.path()), None).unwrap();
    assert_eq!(loaded.encode("ROMEO:").unwrap(), [1, 2036, 28]);
    assert_eq!(loaded.model.config.eos_token_ids, [2], "no generation_config.json: config.json's EOS");
}

#[test]
fn generation_config_eos_list_gives_the_stop_ids() {
    let dir = checkpoint_with(serde_json::Value::Null, Some(r#"{"bos_token_id": 1, "eos_token_id": [2, 7, 9]}"#));
    let loaded = load_model(Some(dir.path()), None).unwrap();
    assert_eq!(loaded.model.config.eos_token_ids, [2, 7, 9]);
    std::fs::write(dir.path().join("generation_config.json"), "{oops").unwrap();
    let e = load_model(Some(dir.path()), None).err().unwrap().to_string();
    assert!(e.contains("generation_config.json"), "{e}");
}

#[test]
fn text_prompt_without_tokenizer_and_a_tiny_vocabulary_is_an_error() {
    let config = LlamaConfig { vocab_size: 3, ..LlamaConfig::named("tiny").unwrap() };
    let loaded = LoadedModel { model: Model::random(config, 0).unwrap(), tokenizer: None, source: "test".into() };
    let e = loaded.encode("hello").unwrap_err().to_string();
    assert!(e.contains("vocabulary of 3") && e.contains("token ids"), "{e}");
    assert_eq!(loaded.encode("0 2 1").unwrap(), [0, 2, 1], "ids still work");
}
