//! The model shipped in `models/shakespeare`: its validation loss as computed by our forward pass
//! matches the training script's, every stage writes the same text, and greedy decoding matches
//! Hugging Face transformers' token ids recorded on the GPU machine.

use kvserve::ch00_model::{load_model, LoadedModel};
use kvserve::ch00_serving::{Request, RunOptions};
use std::path::PathBuf;

/// The model under test: `models/shakespeare`, or `KVSERVE_TEST_MODEL` (to check a fresh training run).
fn model_dir() -> PathBuf {
    std::env::var_os("KVSERVE_TEST_MODEL").map(PathBuf::from).unwrap_or_else(kvserve::default_model_dir)
}

fn load() -> LoadedModel {
    load_model(Some(&model_dir()), None).expect("the shipped model loads")
}

fn report() -> serde_json::Value {
    let text = std::fs::read_to_string(model_dir().join("train_report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn val_sample_loss(loaded: &LoadedModel) -> f64 {
    let text = std::fs::read_to_string(model_dir().join("val_sample.txt")).unwrap();
    kvserve::eval::val_sample_loss(loaded, &text).unwrap()
}

#[test]
fn validation_loss_matches_the_training_script_within_one_percent() {
    let loaded = load();
    let ours = val_sample_loss(&loaded);
    let theirs = report()["val_sample_loss"].as_f64().unwrap();
    let rel = (ours - theirs).abs() / theirs;
    assert!(rel < 0.01, "Rust {ours:.5} vs PyTorch {theirs:.5}: {:.3}% apart", rel * 100.0);
}

const PROMPT: &str = "ROMEO:\nO, she doth teach the torches to burn bright!";

#[test]
fn every_stage_writes_the_same_text() {
    let loaded = load();
    let prompt = loaded.encode(PROMPT).unwrap();
    let requests = [Request::greedy(0, prompt, 40)];
    let mut texts = Vec::new();
    for mut engine in kvserve::stages() {
        let run = engine.run(&loaded.model, &requests, &RunOptions::default()).unwrap();
        texts.push((engine.name(), loaded.decode(&run.outputs[0].tokens).unwrap()));
    }
    for (name, text) in &texts {
        assert_eq!(text, &texts[0].1, "{name} differs from {}", texts[0].0);
    }
    if std::env::var_os("KVSERVE_TEST_MODEL").is_none() {
        insta::assert_snapshot!("shakespeare_greedy", format!("{PROMPT}{}", texts[0].1));
    }
}

#[test]
fn greedy_tokens_from_text_match_transformers() {
    // Written by `scripts/hf_check.py generate ... --json-out` (see the book's appendix B): transformers'
    // prompt ids (AutoTokenizer, which adds no BOS with this tokenizer.json) and its greedy tokens.
    let path = model_dir().join("hf_greedy.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        assert!(std::env::var_os("KVSERVE_TEST_MODEL").is_some(), "{} is missing", path.display());
        return;
    };
    let hf: serde_json::Value = serde_json::from_str(&text).unwrap();
    let prompt = hf["prompt"].as_str().unwrap();
    let ids = |key: &str| -> Vec<u32> { hf[key].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect() };
    let want = ids("new_ids");
    let loaded = load();
    let prompt_ids = loaded.encode(prompt).unwrap();
    assert_eq!(prompt_ids, ids("prompt_ids"), "the prompt is tokenized as transformers tokenizes it");
    let req = Request::greedy(0, prompt_ids, want.len());
    let mut engine = kvserve::stage("ch02").unwrap();
    let got = engine.run(&loaded.model, &[req], &RunOptions::default()).unwrap();
    assert_eq!(got.outputs[0].tokens, want);
}
