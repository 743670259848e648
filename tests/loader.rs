//! Round trips through the Hugging Face loader, and every way a checkpoint can be wrong.

use ch01_naive::NoCache;
use kvserve::ch00_model::save::{config_json, encode, named_tensors, safetensors_bytes};
use kvserve::ch00_model::{DType, LlamaConfig, Model, ModelError, StepMeta};
use safetensors::Dtype;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvserve-loader-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

const IDS: [u32; 6] = [1, 40, 7, 300, 12, 9];

#[test]
fn f32_round_trip_is_exact_tied_and_untied() {
    for tied in [false, true] {
        let m = tiny(tied);
        let dir = tmp(&format!("f32-{tied}"));
        m.save(&dir, DType::F32).unwrap();
        let back = Model::load(&dir).unwrap();
        assert_eq!(back.lm_head.is_none(), tied);
        assert_eq!(logits(&back, &IDS), logits(&m, &IDS));
    }
}

#[test]
fn f16_and_bf16_checkpoints_load_close_to_f32() {
    let m = tiny(false);
    let want = logits(&m, &IDS);
    for (dtype, tol) in [(DType::F16, 5e-3), (DType::BF16, 4e-2)] {
        let dir = tmp(&format!("{dtype:?}"));
        m.save(&dir, dtype).unwrap();
        let got = logits(&Model::load(&dir).unwrap(), &IDS);
        let err = max_rel(&got, &want);
        assert!(err < tol && err > 0.0, "{dtype:?}: relative error {err}");
    }
}

#[test]
fn sharded_checkpoint_loads_through_the_index() {
    let m = tiny(false);
    let dir = tmp("sharded");
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
    assert_eq!(logits(&Model::load(&dir).unwrap(), &IDS), logits(&m, &IDS));
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
    let dir = tmp("missing-tensor");
    save_with(&dir, "model.layers.1.mlp.up_proj.weight", None);
    let e = Model::load(&dir).unwrap_err();
    assert!(matches!(&e, ModelError::MissingTensor { name } if name == "model.layers.1.mlp.up_proj.weight"), "{e}");
}

#[test]
fn misshaped_tensor_names_both_shapes() {
    let dir = tmp("bad-shape");
    save_with(&dir, "model.layers.0.self_attn.k_proj.weight", Some((vec![64, 32], vec![0; 64 * 32 * 4], Dtype::F32)));
    let e = Model::load(&dir).unwrap_err().to_string();
    assert!(e.contains("k_proj") && e.contains("[32, 64]") && e.contains("[64, 32]"), "{e}");
}

#[test]
fn unsupported_dtype_is_an_error() {
    let dir = tmp("bad-dtype");
    save_with(&dir, "model.norm.weight", Some((vec![64], vec![0; 64 * 8], Dtype::I64)));
    let e = Model::load(&dir).unwrap_err();
    assert!(matches!(&e, ModelError::UnsupportedDtype { name, .. } if name == "model.norm.weight"), "{e}");
}

#[test]
fn missing_files_and_foreign_architectures_are_clear_errors() {
    let dir = tmp("missing");
    assert!(matches!(Model::load(&dir.join("nope")), Err(ModelError::MissingFile(_))));
    assert!(matches!(Model::load(&dir), Err(ModelError::MissingFile(p)) if p.ends_with("config.json")));
    let m = tiny(false);
    std::fs::write(dir.join("config.json"), config_json(&m.config).to_string()).unwrap();
    assert!(matches!(Model::load(&dir), Err(ModelError::MissingFile(p)) if p.ends_with("model.safetensors")));
    let mut cfg = config_json(&m.config);
    cfg["architectures"] = serde_json::json!(["MambaForCausalLM"]);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let e = Model::load(&dir).unwrap_err().to_string();
    assert!(e.contains("MambaForCausalLM"), "{e}");
    std::fs::write(dir.join("config.json"), "{not json").unwrap();
    assert!(matches!(Model::load(&dir), Err(ModelError::Malformed { .. })));
}

#[test]
fn shipped_tokenizer_round_trips_text() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/shakespeare/tokenizer.json");
    let tok = kvserve::ch00_model::Tokenizer::from_file(&path, Some(1)).unwrap();
    let text = "ROMEO:\nBut, soft! what light through yonder window breaks?\n";
    let ids = tok.encode(text).unwrap();
    assert_eq!(ids[0], 1, "BOS first");
    assert!(ids.len() < text.len(), "BPE merges bytes: {} ids for {} bytes", ids.len(), text.len());
    assert_eq!(tok.decode(&ids).unwrap(), text);
    assert!(matches!(kvserve::ch00_model::Tokenizer::from_file(Path::new("/no/such/tokenizer.json"), None), Err(ModelError::MissingFile(_))));
}
