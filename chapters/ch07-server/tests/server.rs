//! The server end to end, in process on 127.0.0.1 with an ephemeral port, driven by the
//! project's HTTP client over real sockets.

use ch00_model::{load_model, LoadedModel, SamplingParams};
use ch00_serving::{Engine, Request, RunOptions};
use ch05_paged_attention::{KvBudget, PagedEngine};
use ch07_server::client::{get, post_raw, read_all, send, SseReader};
use ch07_server::fault::{Fault, Faulty};
use ch07_server::{app_state, serve, spawn_engine, ChatTemplate, MakeStepper, ServerConfig, Shared};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const BLOCKS: usize = 48;

fn engine() -> PagedEngine {
    PagedEngine { budget: KvBudget::Blocks(BLOCKS), block_size: 4, max_len: Some(128), max_running: Some(16), ..Default::default() }
}

struct Server {
    url: String,
    state: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
    loaded: Arc<LoadedModel>,
}

async fn start(cfg: ServerConfig) -> Server {
    start_with(cfg, Box::new(|m| engine().stepper(m))).await
}

async fn start_with(cfg: ServerConfig, make: MakeStepper) -> Server {
    let loaded = Arc::new(load_model(None, Some("tiny")).unwrap());
    let (handle, _thread) = spawn_engine(loaded.clone(), make).unwrap();
    let state = app_state(handle, loaded.clone(), &cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let st = state.clone();
    let done = tokio::spawn(async move { serve(listener, st, &cfg, async { drop(rx.await) }).await });
    Server { url, state, stop: Some(tx), done, loaded }
}

impl Server {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.done).await.unwrap().unwrap().unwrap();
    }

    /// Polls `/metrics` (the engine publishes its load after each step) until no block is used.
    async fn all_blocks_free(&self) -> bool {
        for _ in 0..200 {
            if self.metric("kvserve_kv_blocks_used").await == 0.0 && self.metric("kvserve_requests_running").await == 0.0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    async fn metric(&self, name: &str) -> f64 {
        let (_, text) = get(&format!("{}/metrics", self.url)).await.unwrap();
        let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {text}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

/// What `kvserve generate` gives for this prompt and sampling: the offline engine, one request.
fn generate(loaded: &LoadedModel, prompt: &[u32], max_tokens: usize, sampling: SamplingParams) -> Vec<u32> {
    let req = Request { sampling, ..Request::greedy(0, prompt.to_vec(), max_tokens) };
    let out = engine().run(&loaded.model, &[req], &RunOptions::default()).unwrap();
    assert_eq!(out.outputs.len(), 1);
    out.outputs[0].tokens.clone()
}

/// Streams one completion: the token ids and text of its chunks, and the finish reason.
async fn stream(url: &str, body: Value) -> (Vec<u32>, String, String) {
    let (status, body) = send(Method::POST, &format!("{url}/v1/completions"), body.to_string()).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let mut sse = SseReader::new(body);
    let (mut ids, mut text, mut finish) = (Vec::new(), String::new(), String::new());
    let mut done = false;
    while let Some(data) = sse.next().await.unwrap() {
        if data == "[DONE]" {
            done = true;
            break;
        }
        let c: Value = serde_json::from_str(&data).unwrap();
        for ch in c["choices"].as_array().unwrap() {
            ids.extend(ch["token_ids"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32));
            text += ch["text"].as_str().unwrap();
            if let Some(f) = ch["finish_reason"].as_str() {
                finish = f.to_string();
            }
        }
    }
    assert!(done, "the stream ends with data: [DONE]");
    (ids, text, finish)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_streams_get_exactly_the_tokens_of_generate() {
    let srv = start(ServerConfig::default()).await;
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let prompt: Vec<u32> = (0..3 + i as u32 % 5).map(|k| 10 + k * 7 + i as u32).collect();
        let sampling = SamplingParams { temperature: if i % 2 == 0 { 0.0 } else { 0.9 }, seed: 100 + i, ..SamplingParams::greedy() };
        let want = generate(&srv.loaded, &prompt, 10 + i as usize, sampling);
        let body = json!({
            "prompt": prompt, "max_tokens": 10 + i, "temperature": sampling.temperature, "seed": sampling.seed,
            "stream": true, "return_token_ids": true,
        });
        let url = srv.url.clone();
        tasks.push(tokio::spawn(async move { (want, stream(&url, body).await) }));
    }
    for t in tasks {
        let (want, (ids, text, finish)) = t.await.unwrap();
        assert_eq!(ids, want);
        assert_eq!(text, srv.loaded.decode(&want).unwrap());
        assert!(finish == "length" || finish == "stop");
    }
    assert!(srv.all_blocks_free().await);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_prefix_cache_a_second_turn_hits() {
    let srv = start(ServerConfig::default()).await;
    // A 10-token prompt in blocks of 4: the second, identical request finds its 2 full blocks
    // cached (the first request has finished, so they were parked, not shared).
    let body = json!({ "prompt": (10..20).collect::<Vec<u32>>(), "max_tokens": 3, "temperature": 0 });
    for _ in 0..2 {
        let (status, _) = send(Method::POST, &format!("{}/v1/completions", srv.url), body.to_string()).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(srv.all_blocks_free().await);
    }
    assert_eq!(srv.metric("kvserve_prefix_cache_queries_total").await, 20.0);
    assert_eq!(srv.metric("kvserve_prefix_cache_hits_total").await, 8.0);
    assert_eq!(srv.metric("kvserve_prefix_cache_evictions_total").await, 0.0);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_replays_multi_turn_chats_and_the_cache_serves_later_turns() {
    use ch00_serving::ChatSpec;
    use ch07_server::loadgen::chat::{run, ChatLoadConfig};
    let spec = ChatSpec { conversations: 3, turns: 3, first_prompt: 18, message: 5, answer: 6 };
    let mut reports = Vec::new();
    for caching in [true, false] {
        let make: MakeStepper = Box::new(move |m| PagedEngine { prefix_sharing: caching, ..engine() }.stepper(m));
        let srv = start_with(ServerConfig::default(), make).await;
        let vocab_size = srv.loaded.model.config.vocab_size;
        let cfg = ChatLoadConfig { base_url: format!("{}/v1", srv.url), model: None, spec, vocab_size };
        reports.push(run(&cfg).await.unwrap());
        srv.shutdown().await;
    }
    let (on, off) = (&reports[0], &reports[1]);
    assert_eq!(on.turns.len(), 3);
    assert!(on.turns.iter().chain(&off.turns).all(|t| t.failed == 0));
    // Turn 2's prompt is 18 + 6 + 5 = 29 tokens. Turn 1 wrote KV for 23 of them (its last answer
    // token was sampled, never fed): 5 full blocks of 4, so 20 hit. Turn 3: 40 tokens, 34 written
    // in turn 2, 8 full blocks: 32 hit.
    let hits: Vec<Option<f64>> = on.turns.iter().map(|t| t.hit_rate).collect();
    assert_eq!(on.turns.iter().map(|t| t.mean_prompt_tokens).collect::<Vec<_>>(), [18.0, 29.0, 40.0]);
    assert_eq!(hits, [Some(0.0), Some(20.0 / 29.0), Some(32.0 / 40.0)]);
    assert!(off.turns.iter().all(|t| t.hit_rate == Some(0.0)));
    assert_eq!(on.answers_digest, off.answers_digest, "the cache changes no answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_frees_its_blocks() {
    let srv = start(ServerConfig::default()).await;
    let body = json!({ "prompt": [5, 6, 7, 8, 9], "max_tokens": 120, "ignore_eos": true, "stream": true });
    let (status, resp) = send(Method::POST, &format!("{}/v1/completions", srv.url), body.to_string()).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let mut sse = SseReader::new(resp);
    sse.next().await.unwrap().unwrap();
    sse.next().await.unwrap().unwrap();
    assert!(srv.metric("kvserve_kv_blocks_used").await > 0.0);
    drop(sse); // the connection closes mid-stream
    assert!(srv.all_blocks_free().await, "blocks still held after the client left");
    assert_eq!(srv.metric("kvserve_kv_blocks_total").await, BLOCKS as f64);
    assert_eq!(srv.metric("kvserve_requests_aborted_total").await, 1.0);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_while_another_stream_completes() {
    let srv = start(ServerConfig { max_body_bytes: 4096, ..ServerConfig::default() }).await;
    let sampling = SamplingParams { temperature: 0.7, seed: 3, ..SamplingParams::greedy() };
    let want = generate(&srv.loaded, &[4, 5, 6], 80, SamplingParams { ..sampling });
    let body = json!({ "prompt": [4, 5, 6], "max_tokens": 80, "temperature": 0.7, "seed": 3, "stream": true, "return_token_ids": true });
    let url = srv.url.clone();
    let good = tokio::spawn(async move { stream(&url, body).await });
    let completions = format!("{}/v1/completions", srv.url);
    let cases: Vec<(String, StatusCode, &str)> = vec![
        ("{not json".into(), StatusCode::BAD_REQUEST, "invalid request body"),
        (json!({ "prompt": "1 2", "max_tokens": "ten" }).to_string(), StatusCode::BAD_REQUEST, "invalid request body"),
        (json!({ "max_tokens": 3 }).to_string(), StatusCode::BAD_REQUEST, "prompt"),
        (json!({ "prompt": vec![1u32; 127], "max_tokens": 4 }).to_string(), StatusCode::BAD_REQUEST, "context length"),
        (json!({ "prompt": "1 2", "max_tokens": 0 }).to_string(), StatusCode::BAD_REQUEST, "max_tokens"),
        (json!({ "prompt": "1 2", "max_tokens": 1_000_000_000u64 }).to_string(), StatusCode::BAD_REQUEST, "context length"),
        (json!({ "prompt": "1 2", "temperature": -1 }).to_string(), StatusCode::BAD_REQUEST, "temperature"),
        (json!({ "prompt": "1 2", "n": 0 }).to_string(), StatusCode::BAD_REQUEST, "n must be"),
        (json!({ "prompt": [99999] }).to_string(), StatusCode::BAD_REQUEST, "vocab"),
        (json!({ "prompt": "x".repeat(5000) }).to_string(), StatusCode::PAYLOAD_TOO_LARGE, "too large"),
    ];
    for (body, status, says) in cases {
        let (got, text) = post_raw(&completions, &body).await.unwrap();
        assert_eq!(got, status, "{body:.80}: {text}");
        let err: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        let msg = err["error"]["message"].as_str().unwrap().to_lowercase();
        assert!(msg.contains(says), "{msg} should mention {says}");
    }
    let (got, text) = post_raw(&format!("{}/v1/chat/completions", srv.url), &json!({ "messages": [] }).to_string()).await.unwrap();
    assert_eq!(got, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("no chat template"));
    assert_eq!(get(&format!("{}/nowhere", srv.url)).await.unwrap().0, StatusCode::NOT_FOUND);
    let (ids, _, finish) = good.await.unwrap();
    assert_eq!((ids, finish.as_str()), (want, "length"));
    // Shutting down: new requests get 503, health says so.
    srv.state.shutting_down.store(true, Ordering::SeqCst);
    assert_eq!(post_raw(&completions, r#"{"prompt": "1 2"}"#).await.unwrap().0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&format!("{}/health", srv.url)).await.unwrap().0, StatusCode::SERVICE_UNAVAILABLE);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_429_and_whole_responses_have_n_choices_and_usage() {
    let srv = start(ServerConfig { max_waiting: 0, ..ServerConfig::default() }).await;
    let (status, text) = post_raw(&format!("{}/v1/completions", srv.url), r#"{"prompt": "1 2"}"#).await.unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    srv.shutdown().await;

    let chat = ChatTemplate {
        template: "{% for m in messages %}{{ m.content }} {% endfor %}".into(),
        bos_token: String::new(),
        eos_token: String::new(),
    };
    let srv = start(ServerConfig { chat: Some(chat), ..ServerConfig::default() }).await;
    let body = json!({ "prompt": [4, 5], "max_tokens": 6, "n": 3, "temperature": 1.0, "seed": 9, "ignore_eos": true });
    let (status, text) = post_raw(&format!("{}/v1/completions", srv.url), &body.to_string()).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    let c: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(c["choices"].as_array().unwrap().len(), 3);
    assert_eq!(c["usage"], json!({ "prompt_tokens": 2, "completion_tokens": 18, "total_tokens": 20 }));
    for (i, ch) in c["choices"].as_array().unwrap().iter().enumerate() {
        let sampling = SamplingParams { temperature: 1.0, seed: 9 + i as u64, ..SamplingParams::greedy() };
        let want = generate(&srv.loaded, &[4, 5], 6, sampling);
        assert_eq!(ch["text"].as_str().unwrap(), srv.loaded.decode(&want).unwrap(), "sample {i}");
    }
    let body = json!({ "messages": [{ "role": "user", "content": "7 8 9" }], "max_tokens": 4 });
    let (status, text) = post_raw(&format!("{}/v1/chat/completions", srv.url), &body.to_string()).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    let c: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(c["choices"][0]["message"]["role"], "assistant");
    let (status, models) = get(&format!("{}/v1/models", srv.url)).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(models.contains("\"max_model_len\":128"), "{models}");
    srv.shutdown().await;
}

/// Every 4xx of the malformed-input table is a JSON error in OpenAI's shape.
fn openai_error(text: &str) -> Value {
    let err: Value = serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text:.200}"));
    assert!(err["error"]["message"].is_string() && err["error"]["type"].is_string(), "{err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_fields_the_server_does_not_implement_are_400_unknown_models_404_huge_bodies_413() {
    let srv = start(ServerConfig { model_name: "shakespeare".into(), ..ServerConfig::default() }).await;
    let completions = format!("{}/v1/completions", srv.url);
    let cases: Vec<(Value, StatusCode, &str, Option<&str>)> = vec![
        (json!({ "prompt": "1 2", "logprobs": 2 }), StatusCode::BAD_REQUEST, "logprobs", Some("unsupported_parameter")),
        (json!({ "prompt": "1 2", "echo": true }), StatusCode::BAD_REQUEST, "echo", Some("unsupported_parameter")),
        (json!({ "prompt": "1 2", "best_of": 3 }), StatusCode::BAD_REQUEST, "best_of", Some("unsupported_parameter")),
        (json!({ "prompt": "1 2", "presence_penalty": 0.5 }), StatusCode::BAD_REQUEST, "presence_penalty", Some("unsupported_parameter")),
        (json!({ "prompt": "1 2", "model": "gpt-4" }), StatusCode::NOT_FOUND, "gpt-4", Some("model_not_found")),
    ];
    for (body, status, says, code) in cases {
        let (got, text) = post_raw(&completions, &body.to_string()).await.unwrap();
        assert_eq!(got, status, "{body}: {text}");
        let err = openai_error(&text);
        assert!(err["error"]["message"].as_str().unwrap().contains(says), "{err}");
        assert_eq!(err["error"]["code"].as_str(), code, "{err}");
    }
    // The defaults of those fields are fine, and so is the served model's name.
    let ok = json!({ "prompt": "1 2", "max_tokens": 2, "logprobs": null, "echo": false, "best_of": 1, "model": "shakespeare" });
    let (got, text) = post_raw(&completions, &ok.to_string()).await.unwrap();
    assert_eq!(got, StatusCode::OK, "{text}");
    // 10 MB against the 1 MiB default: the client finishes sending and reads a JSON 413.
    let huge = json!({ "prompt": "x".repeat(10 << 20) }).to_string();
    let (got, text) = post_raw(&completions, &huge).await.unwrap();
    assert_eq!(got, StatusCode::PAYLOAD_TOO_LARGE, "{text:.200}");
    let err = openai_error(&text);
    assert!(err["error"]["message"].as_str().unwrap().contains(&format!("limit is {} bytes", 1 << 20)), "{err}");
    srv.shutdown().await;
}

/// A step error or a panic on the engine thread, at its third step with work.
async fn dead_engine(fault: Fault) {
    let make: MakeStepper = Box::new(move |m| Ok(Box::new(Faulty::new(engine().stepper(m)?, fault, 3)) as Box<_>));
    let cfg = ServerConfig { dead_linger: Duration::from_secs(30), ..ServerConfig::default() };
    let mut srv = start_with(cfg, make).await;
    let (status, _) = get(&format!("{}/health", srv.url)).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    // In flight when the engine dies: the stream ends with an error event, then [DONE].
    let body = json!({ "prompt": [5, 6, 7], "max_tokens": 50, "ignore_eos": true, "stream": true });
    let (status, resp) = send(Method::POST, &format!("{}/v1/completions", srv.url), body.to_string()).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let events = tokio::time::timeout(Duration::from_secs(10), read_all(resp)).await.expect("the stream hangs").unwrap();
    assert!(events.contains("\"error\"") && events.contains("injected"), "{events}");
    assert!(events.trim_end().ends_with("data: [DONE]"), "{events}");
    // Health says why; new requests get a 503 JSON error.
    let (status, health) = get(&format!("{}/health", srv.url)).await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let h: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(h["status"], "engine_dead");
    assert!(h["reason"].as_str().unwrap().contains("injected"), "{h}");
    let (status, text) = post_raw(&format!("{}/v1/completions", srv.url), r#"{"prompt": [1, 2]}"#).await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(openai_error(&text)["error"]["message"].as_str().unwrap().contains("engine is down"));
    assert_eq!(srv.metric("kvserve_engine_dead").await, 1.0);
    // serve() returns the engine's error (the CLI exits non-zero).
    let _ = srv.stop.take().unwrap().send(());
    let served = tokio::time::timeout(Duration::from_secs(10), srv.done).await.unwrap().unwrap();
    assert!(served.unwrap_err().to_string().contains("injected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_error_kills_the_engine_and_health_reports_it() {
    dead_engine(Fault::Error).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_on_the_engine_thread_kills_the_engine_and_health_reports_it() {
    dead_engine(Fault::Panic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_engine_shuts_the_server_down_after_the_linger_with_an_error() {
    let make: MakeStepper = Box::new(|m| Ok(Box::new(Faulty::new(engine().stepper(m)?, Fault::Error, 0)) as Box<_>));
    let cfg = ServerConfig { dead_linger: Duration::from_millis(200), ..ServerConfig::default() };
    let srv = start_with(cfg, make).await;
    let (status, _) = post_raw(&format!("{}/v1/completions", srv.url), r#"{"prompt": [1, 2], "max_tokens": 4}"#).await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // No shutdown signal: the server stops by itself, with the engine's error.
    let served = tokio::time::timeout(Duration::from_secs(10), srv.done).await.expect("the server kept running").unwrap();
    assert!(served.unwrap_err().to_string().contains("injected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_per_request_records_return_to_empty_after_many_requests() {
    let srv = start(ServerConfig::default()).await;
    let completions = format!("{}/v1/completions", srv.url);
    let mut tasks = Vec::new();
    for i in 0..240u64 {
        let url = completions.clone();
        tasks.push(tokio::spawn(async move {
            let prompt: Vec<u32> = (0..2 + i as u32 % 6).map(|k| 3 + k * 5 + i as u32 % 50).collect();
            let stream = i % 2 == 0;
            // Some end by the engine, some by a stop string (" 1" is in many tiny-model texts),
            // some by the client leaving after the first event.
            let stop = if i % 3 == 0 { json!([" 1"]) } else { json!(null) };
            let body = json!({ "prompt": prompt, "max_tokens": 4 + i % 12, "temperature": 0.8, "seed": i, "stream": stream, "stop": stop });
            let (status, resp) = send(Method::POST, &url, body.to_string()).await.unwrap();
            if status == StatusCode::TOO_MANY_REQUESTS {
                return;
            }
            assert_eq!(status, StatusCode::OK);
            if stream && i % 5 == 0 {
                let mut sse = SseReader::new(resp);
                sse.next().await.unwrap();
                return; // dropped: the connection closes mid-stream
            }
            read_all(resp).await.unwrap();
        }));
        if i % 16 == 15 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(srv.all_blocks_free().await);
    let mut empty = false;
    for _ in 0..200 {
        let records = [
            srv.metric("kvserve_server_requests_live").await,
            srv.metric("kvserve_server_requests_queued").await,
            srv.metric("kvserve_server_aborts_pending").await,
            srv.metric("kvserve_requests_waiting").await,
        ];
        if records == [0.0; 4] {
            empty = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(empty, "the server still holds records of finished requests");
    assert_eq!(srv.state.engine.waiting(), 0);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_slows_only_its_own_stream() {
    let srv = start(ServerConfig::default()).await;
    let completions = format!("{}/v1/completions", srv.url);
    let body = json!({ "prompt": [5, 6, 7], "max_tokens": 120, "ignore_eos": true, "stream": true, "return_token_ids": true });
    let (status, slow) = send(Method::POST, &completions, body.to_string()).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    // While it reads nothing, other requests go through.
    for i in 0..8u32 {
        let body = json!({ "prompt": [9 + i, 10], "max_tokens": 30, "ignore_eos": true });
        let (status, text) = tokio::time::timeout(Duration::from_secs(20), post_raw(&completions, &body.to_string()))
            .await
            .expect("a slow reader stalled the engine")
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{text}");
    }
    // ... and it gets all of its tokens when it does read.
    let mut sse = SseReader::new(slow);
    let mut ids = 0;
    while let Some(data) = sse.next().await.unwrap() {
        if data == "[DONE]" {
            break;
        }
        let c: Value = serde_json::from_str(&data).unwrap();
        ids += c["choices"][0]["token_ids"].as_array().map_or(0, Vec::len);
    }
    assert_eq!(ids, 120);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_never_exceeds_max_waiting_under_concurrency() {
    let srv = start(ServerConfig::default()).await;
    let engine = srv.state.engine.clone();
    let max = 7;
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let e = engine.clone();
            std::thread::spawn(move || (0..50).filter_map(|_| e.admit(max).ok()).collect::<Vec<_>>())
        })
        .collect();
    let held: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!(held.len(), max, "16 threads racing for {max} slots");
    assert_eq!(engine.waiting(), max);
    drop(held); // never sent: each slot comes back
    assert_eq!(engine.waiting(), 0);
    srv.shutdown().await;
}
