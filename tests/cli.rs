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
fn sixteen_8k_requests_fit_an_h100_only_with_the_low_activation_estimate() {
    // The card is sized as nvidia-smi reports it: 81,559 MiB = 85.5 GB, not 80 × 10^9 bytes.
    let (ok, out, _) = kvserve(&["memory", "--batch", "16", "--seq-len", "8192"]);
    assert!(ok);
    assert!(out.contains("× 16 requests = 64 GiB (68.72 GB)"), "{out}");
    assert!(out.contains("84.2–86.2 GB of 81559 MiB (85.5 GB): only with the low activation estimate"), "{out}");
    let (ok, out, _) = kvserve(&["memory", "--batch", "16", "--seq-len", "8192", "--gpu-mib", "76294"]);
    assert!(ok);
    assert!(out.contains("84.2–86.2 GB of 76294 MiB (80.0 GB): no"), "{out}");
}

#[test]
fn a_quantized_kv_cache_halves_the_token_and_doubles_the_budget_in_tokens() {
    let tokens = |out: &str| -> u64 {
        let line = out.lines().find(|l| l.trim_start().starts_with("= ") && l.contains(" tokens, ")).unwrap();
        line.split(": ").last().unwrap().split(" tokens").next().unwrap().replace(',', "").parse().unwrap()
    };
    let (ok, fp16, _) = kvserve(&["memory"]);
    assert!(ok);
    let (ok, fp8, _) = kvserve(&["memory", "--kv-dtype", "fp8"]);
    assert!(ok);
    assert!(fp8.contains("fp16 weights, fp8 KV cache") && fp8.contains("× 32 layers = 256 KiB (262144 B)"), "{fp8}");
    assert!((tokens(&fp8) - 2 * tokens(&fp16)) <= 1, "the same budget, half the bytes per token");
    let (ok, int4, _) = kvserve(&["memory", "--weight-dtype", "int4"]);
    assert!(ok);
    assert!(int4.contains("6738415616 params × 4/8 B = 3.14 GiB"), "{int4}");
    // The precision table: fp8 weights and KV read half of fp16's bytes per decode step.
    let (ok, table, _) = kvserve(&["memory", "--precisions"]);
    assert!(ok);
    let row = table.lines().find(|l| l.starts_with("| fp8 | fp8 |")).unwrap();
    assert!(row.ends_with("| 0.50 |"), "{table}");
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
fn generate_takes_the_prefill_flags_and_keeps_the_tokens() {
    let base = ["generate", "--config", "tiny", "--max-new-tokens", "7", "--print-ids"];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).chain(&["1 5 9 200 7 3 11"]).copied().collect();
        let (ok, out, err) = kvserve(&args);
        assert!(ok, "{args:?}: {err}");
        out.lines().last().unwrap().to_string()
    };
    let ch02 = run(&["--stage", "ch02"]);
    // A budget of 3 tokens splits the 7-token prompt into chunks of 3, 3 and 1.
    assert_eq!(run(&["--stage", "ch05", "--max-num-batched-tokens", "3"]), ch02);
    assert_eq!(run(&["--stage", "ch05", "--no-chunked-prefill", "--no-prefix-caching"]), ch02);
    // Without chunking, a prompt longer than the budget cannot be scheduled: an error, not a hang.
    let (ok, _, err) = kvserve(&[&base[..], &["--stage", "ch05", "--no-chunked-prefill", "--max-num-batched-tokens", "3", "1 5 9 200 7"]].concat());
    assert!(!ok && err.contains("max_tokens_per_step 3"), "{err}");
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
fn generate_gives_the_same_ids_whatever_type_the_weights_are_kept_in() {
    // A bf16 checkpoint kept as bf16 (the default) and widened at load (`--dtype f32`).
    let dir = tempfile::Builder::new().prefix("kvserve-cli-").tempdir().unwrap();
    Model::random(LlamaConfig::named("tiny").unwrap(), 5).unwrap().save(dir.path(), DType::BF16).unwrap();
    let model = dir.path().to_str().unwrap();
    let ids = |dtype: &str| {
        let (ok, out, err) = kvserve(&["generate", "--model", model, "--dtype", dtype, "--max-new-tokens", "12", "--print-ids", "5 6 7"]);
        assert!(ok, "{dtype}: {err}");
        out.lines().last().unwrap_or_default().to_string()
    };
    assert_eq!(ids("auto"), ids("f32"));
}

#[test]
fn bad_input_gives_a_message_not_a_panic() {
    for (args, needle) in [
        (vec!["generate", "--config", "tiny", "--stage", "ch99", "x"], "unknown stage"),
        (vec!["generate", "--config", "nope", "x"], "unknown config name"),
        (vec!["generate", "--model", "/no/such/dir", "x"], "missing file"),
        (vec!["generate", "--config", "tiny", "--top-p", "0", "x"], "top_p"),
        (vec!["memory", "--dtype", "f8"], "unknown dtype"),
        (vec!["generate", "--config", "tiny", "--dtype", "f8", "x"], "--dtype f8: auto, f32, f16 or bf16"),
        (vec!["memory", "--batch", "100000000000", "--seq-len", "100000000000"], "too many bytes to count in 64 bits"),
        (vec!["memory", "--batch", "1e11"], "invalid value '1e11'"),
        (vec!["memory", "--gpu-mib=-1"], "--gpu-mib must be above 0"),
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

/// No silent random model: a default model that cannot be found is an error that says where it
/// looked and how to choose one; found through `KVSERVE_MODEL`, it runs from any directory.
#[test]
fn a_missing_default_model_is_an_error_not_a_random_model() {
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |env: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_kvserve"))
            .args(["generate", "--max-new-tokens", "3", "ROMEO:"])
            .current_dir(elsewhere.path())
            .env("KVSERVE_MODEL", env)
            .output()
            .unwrap()
    };
    let out = run(std::path::Path::new("/no/such/model"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no model found") && err.contains("/no/such/model") && err.contains("--config tiny"), "{err}");
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/shakespeare");
    let out = run(&shipped);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("shakespeare") && !err.contains("random:"), "{err}");
}

/// One HTTP/1.1 exchange over a plain socket: the status code and the whole response.
fn http(port: u16, request: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    s.write_all(request.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, out))
}

/// The fault suite's injected engine fault, through the binary: in-flight streams end with an
/// error, /health answers 503 with the reason, and the process exits non-zero by itself.
#[test]
fn serve_exits_non_zero_after_an_engine_fault() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvserve"))
        .args(["serve", "--config", "tiny", "--port", &port.to_string(), "--inject-fault", "error:2", "--dead-linger-s", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let get = |path: &str| http(port, &format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"));
    let mut up = false;
    for _ in 0..200 {
        if get("/health").is_ok_and(|(c, _)| c == 200) {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(up, "the server did not come up");
    let body = r#"{"prompt": [5, 6, 7], "max_tokens": 40, "ignore_eos": true, "stream": true}"#;
    let post = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (code, stream) = http(port, &post).unwrap();
    assert_eq!(code, 200, "{stream}");
    assert!(stream.contains("injected fault"), "{stream}");
    let (code, health) = get("/health").unwrap();
    assert_eq!(code, 503, "{health}");
    assert!(health.contains("engine_dead") && health.contains("injected fault"), "{health}");
    let mut status = None;
    for _ in 0..200 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("the server did not exit after its engine died");
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("injected fault"), "{err}");
}

/// `kvserve soak`'s short form: every check of the load/fault suite behaves as it should.
#[test]
fn the_short_soak_passes_every_check() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let port = port.min(65000).to_string();
    let (ok, out, err) = kvserve(&["soak", "--config", "tiny", "--rounds", "2", "--per-round", "100", "--port", &port]);
    assert!(ok, "{out}\n{err}");
    for what in ["bytes/request", "malformed", "disconnect storm", "slow readers", "overload", "SIGTERM", "engine fault"] {
        assert!(out.contains(what), "{what} missing: {out}");
    }
    assert!(!out.contains("**NO**"), "{out}");
}

#[test]
fn serve_chat_replays_chats_over_http_with_the_cache_off_and_on() {
    let (ok, out, err) = kvserve(&[
        "serve-chat", "--config", "tiny", "--conversations", "2", "--turns", "3", "--first-prompt", "9",
        "--message", "3", "--answer", "4",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("| 3 | 23 tokens |"), "{out}");
    assert!(out.contains("the same answers both ways: **yes**"), "{out}");
}
