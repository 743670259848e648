//! The `kvserve` binary: memory calculator output, generate's --print-ids, and clear errors.

use kvserve::ch00_model::{DType, LlamaConfig, Model};
use std::process::Command;

fn kvserve(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kvserve")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn memory_reproduces_the_7b_numbers() {
    let (ok, out, _) = kvserve(&["memory"]);
    assert!(ok);
    assert!(out.contains("= 16 KiB (16384 B)"), "{out}");
    assert!(out.contains("= 512 KiB (524288 B)"), "{out}");
    assert!(out.contains("× 2048 tokens = 1 GiB"), "{out}");
    assert!(out.contains("× 16 requests = 16 GiB"), "{out}");
    assert!(out.contains("4× less"), "{out}");
    insta::assert_snapshot!("memory_7b", out);
}

#[test]
fn sixteen_8k_requests_do_not_fit() {
    let (ok, out, _) = kvserve(&["memory", "--batch", "16", "--seq-len", "8192"]);
    assert!(ok);
    assert!(out.contains("× 16 requests = 64 GiB (68.72 GB)"), "{out}");
    assert!(out.contains("84.2–86.2 GB of 80 GB: no"), "{out}");
}

#[test]
fn generate_prints_ids_that_match_the_engine() {
    let (ok, out, err) = kvserve(&["generate", "--config", "tiny", "--max-new-tokens", "7", "--print-ids", "1 5 9 200"]);
    assert!(ok, "{err}");
    let ids: Vec<u32> = out.lines().last().unwrap().split(' ').map(|s| s.parse().unwrap()).collect();
    assert_eq!(ids.len(), 7);
    let (ok2, out2, _) = kvserve(&["generate", "--config", "tiny", "--stage", "ch01", "--max-new-tokens", "7", "--print-ids", "1 5 9 200"]);
    assert!(ok2);
    assert_eq!(out2.lines().last(), out.lines().last(), "ch01 and ch02 agree through the CLI");
}

#[test]
fn generate_n_prints_every_sample_and_ch05_shares_its_prompt() {
    let args = |stage: &'static str, n: &'static str| {
        ["generate", "--config", "tiny", "--stage", stage, "--max-new-tokens", "6", "--temperature", "1", "--seed", "3", "--n", n, "--print-ids", "1 5 9 200"]
    };
    let (ok, out, err) = kvserve(&args("ch05", "3"));
    assert!(ok, "{err}");
    assert!(out.contains("--- sample 2 (seed 5) ---"), "{out}");
    let ids: Vec<&str> = out.lines().rev().take(3).collect();
    // Sample 2 is the lone request with seed 5; ch02 generates the samples one by one.
    let (ok, lone, _) = kvserve(&["generate", "--config", "tiny", "--stage", "ch05", "--max-new-tokens", "6", "--temperature", "1", "--seed", "5", "--print-ids", "1 5 9 200"]);
    assert!(ok);
    assert_eq!(lone.lines().last(), Some(ids[0]));
    let (ok, ch02, _) = kvserve(&args("ch02", "3"));
    assert!(ok);
    assert_eq!(ch02.lines().rev().take(3).collect::<Vec<_>>(), ids);
    let (ok, _, err) = kvserve(&args("ch05", "0"));
    assert!(!ok && err.contains("n = 0") && !err.contains("panicked"), "{err}");
}

#[test]
fn bad_input_gives_a_message_not_a_panic() {
    for (args, needle) in [
        (vec!["generate", "--config", "tiny", "--stage", "ch99", "x"], "unknown stage"),
        (vec!["generate", "--config", "nope", "x"], "unknown config name"),
        (vec!["generate", "--model", "/no/such/dir", "x"], "missing file"),
        (vec!["generate", "--config", "tiny", "--top-p", "0", "x"], "top_p"),
        (vec!["memory", "--dtype", "f8"], "unknown dtype"),
        (vec!["memory", "--batch", "100000000000", "--seq-len", "100000000000"], "too many bytes to count in 64 bits"),
        (vec!["memory", "--batch", "1e11"], "invalid value '1e11'"),
        (vec!["memory", "--gpu-gb=-1"], "--gpu-gb must be above 0"),
        (vec!["trace", "--config", "tiny", "--slots", "100000000000"], "--slots 100000000000 is out of range"),
        (vec!["trace", "--config", "tiny", "--kv-budget", "18446744073709551615"], "requests can use: give at most"),
        (vec!["trace", "--config", "tiny", "--requests", "100000000000"], "--requests 100000000000 is out of range"),
        (vec!["trace", "--config", "tiny", "--requests", "0"], "--requests 0 is out of range"),
    ] {
        let (ok, _, err) = kvserve(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(needle) && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn bench_json_has_every_field_the_book_and_scripts_read() {
    let dir = tempfile::tempdir().unwrap(); // removed when the test ends, pass or fail
    let path = dir.path().join("bench.json");
    let (ok, out, err) = kvserve(&["bench", "--quick", "--config", "tiny", "--requests", "6", "--json", path.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("continuous (ch04) / static (ch03) throughput"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(json["machine"].is_string() && json["model"] == "random:tiny");
    assert_eq!(json["workload"]["n_requests"], 6);
    let stages: Vec<&str> = json["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["ch02-kv-cache", "ch03-static-batching", "ch04-continuous-batching", "ch05-paged-attention"]);
    for s in json["stages"].as_array().unwrap() {
        for key in ["tokens_per_s", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p99", "itl_ms_p50", "itl_ms_p99", "token_rows", "ms_per_step", "slot_utilisation", "wasted_slot_steps"] {
            assert!(s[key].is_number(), "{} lacks {key}", s["stage"]);
        }
    }
    let single: Vec<&str> =
        json["single_stream"]["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(single, ["ch01-naive", "ch02-kv-cache"]);
    assert!(json["continuous_over_static"].as_f64().unwrap() > 0.0);
    let acc = &json["capacity"]["accounting"];
    for design in ["contiguous", "paged"] {
        for key in ["peak_running", "mean_running", "kv_bytes_allocated", "kv_bytes_used", "waste_pct", "preemptions"] {
            assert!(acc[design][key].is_number(), "accounting.{design} lacks {key}");
        }
    }
    assert!(json["capacity"]["real"].is_null(), "--quick skips the real capacity run");
    // ch05 ran with ch04's limits; n-way sampling compares copy-on-write with independent requests.
    assert_eq!(json["equal_limits"]["max_running"][0], json["equal_limits"]["max_running"][1]);
    assert_eq!(json["equal_limits"]["max_tokens_per_step"][0], json["equal_limits"]["max_tokens_per_step"][1]);
    let sampling = &json["parallel_sampling"]["accounting"][0]["designs"];
    assert_eq!(sampling[0]["design"], "ch05, copy-on-write");
    assert!(sampling[0]["peak_blocks_used"].as_u64() < sampling[1]["peak_blocks_used"].as_u64());
    assert!(json["step_cost_ms"].as_array().is_some_and(|a| !a.is_empty()));
}

#[test]
fn text_prompt_for_a_checkpoint_with_a_tiny_vocabulary_and_no_tokenizer_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = LlamaConfig { vocab_size: 3, ..LlamaConfig::named("tiny").unwrap() };
    Model::random(config, 0).unwrap().save(dir.path(), DType::F32).unwrap();
    let model = dir.path().to_str().unwrap();
    let (ok, _, err) = kvserve(&["generate", "--model", model, "--max-new-tokens", "2", "hello"]);
    assert!(!ok && err.contains("vocabulary of 3") && !err.contains("panicked"), "{err}");
    let (ok, out, err) = kvserve(&["generate", "--model", model, "--max-new-tokens", "2", "--print-ids", "1 2 0"]);
    assert!(ok, "token ids still work: {err}");
    assert!(out.contains("prompt ids: 1 2 0"), "{out}");
}

#[test]
fn generate_prints_the_prompt_ids_the_tokenizer_gives() {
    // The shipped tokenizer has no post-processor: no BOS, as transformers' AutoTokenizer gives.
    let (ok, out, err) = kvserve(&["generate", "--max-new-tokens", "1", "--print-ids", "ROMEO:"]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l == "prompt ids: 2036 28"), "{out}");
}

#[test]
fn bench_labels_the_capacity_run_with_the_model_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.json");
    let (ok, out, err) = kvserve(&["bench", "--config", "tiny", "--requests", "6", "--json", path.to_str().unwrap()]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["capacity"]["real"]["model"], "random:tiny", "{out}");
    assert!(!out.contains("random:bench"), "{out}");
}

/// `--stage ch06` on a machine without an NVIDIA GPU (CI) fails with a clear error, exit non-zero.
#[test]
fn the_gpu_stage_without_a_gpu_is_a_clear_error() {
    if kvserve::ch06_available() {
        return; // a GPU machine: the GPU tests of ch06 cover it
    }
    let (ok, _, err) = kvserve(&["generate", "--config", "tiny", "--stage", "ch06", "--max-new-tokens", "3", "1 5 9"]);
    assert!(!ok);
    assert!(err.contains("no CUDA GPU"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn generate_streams_on_step_wise_stages_with_the_same_text() {
    let args = |stage| ["generate", "--config", "tiny", "--stage", stage, "--max-new-tokens", "9", "--print-ids", "1 5 9 200"];
    let (ok, whole, _) = kvserve(&args("ch02"));
    assert!(ok);
    for stage in ["ch03", "ch04", "ch05"] {
        let (ok, streamed, err) = kvserve(&args(stage));
        assert!(ok, "{err}");
        assert!(err.contains("streamed"), "{stage}: {err}");
        assert_eq!(streamed, whole, "{stage} streams the text ch02 prints at once");
    }
}

#[test]
fn serve_and_loadgen_refuse_bad_settings_with_clear_errors() {
    let (ok, _, err) = kvserve(&["serve", "--config", "tiny", "--stage", "ch01"]);
    assert!(!ok);
    assert!(err.contains("cannot serve"), "{err}");
    let (ok, _, err) = kvserve(&["serve", "--config", "tiny", "--stage", "ch05", "--block-size", "0"]);
    assert!(!ok);
    assert!(err.contains("engine could not start"), "{err}");
    let (ok, _, err) = kvserve(&["loadgen", "--url", "https://api.example.com/v1", "--vocab", "100", "--num-requests", "1"]);
    assert!(!ok);
    assert!(err.contains("only http://"), "{err}");
}

/// `serve --stage ch06` without an NVIDIA GPU: the engine cannot start, and says why.
#[test]
fn serving_the_gpu_stage_without_a_gpu_is_a_clear_error() {
    if kvserve::ch06_available() {
        return;
    }
    let (ok, _, err) = kvserve(&["serve", "--config", "tiny", "--stage", "ch06", "--port", "0"]);
    assert!(!ok);
    assert!(err.contains("engine could not start") && err.contains("GPU"), "{err}");
}
