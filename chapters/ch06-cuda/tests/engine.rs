//! The GPU engine against chapter 5 on the CPU: in f32 the same greedy tokens, exactly, on the
//! shipped model and on a random GQA model, with and without CUDA graphs, under chunked passes,
//! preemption and prefix sharing; in f16/bf16, logits within a stated tolerance and the token
//! agreement printed. Run on the GPU machine: `.gpu/engine-<hash> --ignored --nocapture`.

use ch00_model::{DType, LlamaConfig, Model, SamplingParams};
use ch00_serving::{Engine, Request, RunOptions, RunOutput};
use ch05_paged_attention::{KvBudget, PagedEngine};
use ch06_cuda::CudaEngine;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// One GPU test at a time. The tests share the device's primary CUDA context, and while one
/// captures a CUDA graph, another's frees and synchronisations in that context can invalidate the
/// capture (CUDA_ERROR_STREAM_CAPTURE_INVALIDATED). A server runs one engine per process; tests
/// running side by side in one process would not.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static GPU: Mutex<()> = Mutex::new(());
    GPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn shipped() -> Model {
    let dir = ["models/shakespeare", "../../models/shakespeare"].into_iter().map(Path::new).find(|d| d.join("config.json").exists());
    let dir = dir.map(Path::to_path_buf).unwrap_or_else(ch00_model::default_model_dir);
    Model::load(&dir).expect("the shipped model")
}

/// A random model with grouped-query attention (8 query heads over 2 KV heads, head_dim 32).
fn random_gqa() -> Model {
    let mut c = LlamaConfig::named("tiny").unwrap();
    (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.intermediate_size) = (256, 8, 2, 32, 512);
    c.max_position_embeddings = 1024;
    Model::random(c, 3).unwrap()
}

/// Prompts of assorted lengths (one longer than a 256-position partition), outputs of assorted
/// lengths, ids drawn from the vocabulary; every request ignores EOS so lengths are exact.
fn requests(vocab: usize, n: usize) -> Vec<Request> {
    (0..n)
        .map(|i| {
            let len = [3, 17, 40, 300, 9, 64, 1, 128][i % 8];
            let prompt = (0..len).map(|j| ((i * 131 + j * 17 + 5) % (vocab - 3) + 3) as u32).collect();
            Request { ignore_eos: true, ..Request::greedy(i as u64, prompt, [12, 5, 30, 8, 20, 3, 16, 9][i % 8]) }
        })
        .collect()
}

fn cpu(model: &Model, reqs: &[Request], opts: &RunOptions) -> RunOutput {
    PagedEngine { max_len: Some(512), ..Default::default() }.run(model, reqs, opts).unwrap()
}

/// An engine with a fixed pool of 1024 blocks (16K tokens): room for every test here, without
/// profiling the card and claiming a share of its memory for each test.
fn gpu_engine(dtype: DType) -> CudaEngine {
    CudaEngine {
        dtype: Some(dtype),
        paged: PagedEngine { max_len: Some(512), ..Default::default() },
        num_blocks: Some(1024),
        ..Default::default()
    }
}

fn assert_same_tokens(what: &str, want: &RunOutput, got: &RunOutput) {
    assert_eq!(want.outputs.len(), got.outputs.len(), "{what}: number of outputs");
    for (a, b) in want.outputs.iter().zip(&got.outputs) {
        assert_eq!(a.tokens.len(), b.tokens.len(), "{what}: request {} lengths", a.id);
        assert!(!a.tokens.is_empty());
        assert_eq!(a.tokens, b.tokens, "{what}: request {} differs", a.id);
    }
}

// ANCHOR: f32_exact
#[test]
#[ignore = "needs a CUDA GPU"]
fn f32_gives_ch05_tokens_exactly() {
    let _gpu = one_at_a_time();
    let opts = RunOptions::default();
    for (name, model) in [("shipped", shipped()), ("random GQA", random_gqa())] {
        let reqs = requests(model.config.vocab_size, 12);
        let want = cpu(&model, &reqs, &opts);
        for graphs in [true, false] {
            let mut e = CudaEngine { cuda_graphs: graphs, ..gpu_engine(DType::F32) };
            let got = e.run(&model, &reqs, &opts).unwrap();
            assert_same_tokens(&format!("{name}, graphs {graphs}"), &want, &got);
            let s = e.last_setup.unwrap();
            println!("{name} graphs={graphs}: same tokens; {} blocks, {:?}", s.num_blocks, s.stats);
            assert_eq!(s.stats.graph_replays > 0, graphs, "graph replays {:?}", s.stats);
        }
    }
}
// ANCHOR_END: f32_exact

#[test]
#[ignore = "needs a CUDA GPU"]
fn multi_pass_steps_and_few_rows_give_the_same_tokens() {
    let _gpu = one_at_a_time();
    let model = random_gqa();
    let reqs = requests(model.config.vocab_size, 10);
    let want = cpu(&model, &reqs, &RunOptions::default());
    // 64 tokens per pass: the 300-token prompt runs as 5 passes; 3 rows per pass.
    let mut e = CudaEngine { max_tokens_per_pass: 64, max_rows: 3, ..gpu_engine(DType::F32) };
    let got = e.run(&model, &reqs, &RunOptions::default()).unwrap();
    assert_same_tokens("multi-pass steps", &want, &got);
    assert!(e.last_setup.unwrap().stats.passes > got.stats.steps, "steps should be split into passes");
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn chunked_prefill_gives_the_unchunked_tokens() {
    let _gpu = one_at_a_time();
    let model = random_gqa();
    let reqs = requests(model.config.vocab_size, 12);
    let want = cpu(&model, &reqs, &RunOptions::default());
    // Token budgets that cut the prompts anywhere: mid-block, on a block edge, a token from the
    // end; a chunk from the middle of a prompt runs on the prefill kernel and picks no token.
    for budget in [5, 16, 37, 100] {
        let paged =
            PagedEngine { max_len: Some(512), chunked_prefill: true, max_tokens_per_step: Some(budget), ..Default::default() };
        let mut e = CudaEngine { paged, ..gpu_engine(DType::F32) };
        let got = e.run(&model, &reqs, &RunOptions::default()).unwrap();
        assert_same_tokens(&format!("chunked prefill, budget {budget}"), &want, &got);
        println!("chunked prefill, budget {budget}: same tokens in {} steps", got.stats.steps);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn sampled_requests_match_ch05() {
    let _gpu = one_at_a_time();
    let model = shipped();
    let mut reqs = requests(model.config.vocab_size, 6);
    for (i, r) in reqs.iter_mut().enumerate() {
        r.sampling = SamplingParams { temperature: 0.8, top_k: 50, top_p: 0.9, seed: 100 + i as u64 };
    }
    let want = cpu(&model, &reqs, &RunOptions::default());
    let got = gpu_engine(DType::F32).run(&model, &reqs, &RunOptions::default()).unwrap();
    assert_same_tokens("sampled", &want, &got);
}

// ANCHOR: preemption_test
/// A pool of 24 blocks of 16 tokens forces preemption; prefix sharing is on and every prompt
/// starts with the same 48 tokens. Each request still gets the tokens it gets alone.
#[test]
#[ignore = "needs a CUDA GPU"]
fn preemption_and_prefix_sharing_keep_each_request_s_tokens() {
    let _gpu = one_at_a_time();
    let model = random_gqa();
    let system: Vec<u32> = (0..48).map(|j| (j * 7 + 11) as u32).collect();
    let reqs: Vec<Request> = (0..8)
        .map(|i| {
            let prompt = [system.clone(), vec![100 + i as u32; 1 + i % 3]].concat();
            Request { ignore_eos: true, ..Request::greedy(i as u64, prompt, 60 + 10 * (i % 4)) }
        })
        .collect();
    // The pool alone limits how many run (the default would allow one per 512-token slot: 0 → 1).
    let paged = PagedEngine {
        max_len: Some(512),
        prefix_sharing: true,
        budget: KvBudget::Blocks(24),
        max_running: Some(usize::MAX),
        ..Default::default()
    };
    let mut e = CudaEngine { num_blocks: Some(24), paged: paged.clone(), ..gpu_engine(DType::F32) };
    let got = e.run(&model, &reqs, &RunOptions::default()).unwrap();
    let info = e.last_run.clone().unwrap();
    assert!(got.stats.preemptions > 0, "the small pool should preempt");
    assert!(info.prefix_hit_tokens > 0, "the shared prefix should hit");
    assert_eq!(got.outputs.len(), reqs.len());
    for (r, out) in reqs.iter().zip(&got.outputs) {
        let alone = gpu_engine(DType::F32).run(&model, std::slice::from_ref(r), &RunOptions::default()).unwrap();
        assert_eq!(alone.outputs.len(), 1);
        assert_eq!(out.tokens.len(), alone.outputs[0].tokens.len());
        assert_eq!(out.tokens, alone.outputs[0].tokens, "request {} differs from its run alone", r.id);
    }
    // And the CPU engine with the same pool agrees.
    let cpu_out = PagedEngine { ..paged }.run(&model, &reqs, &RunOptions::default()).unwrap();
    assert_same_tokens("preempted, vs ch05", &cpu_out, &got);
    println!("preemptions {}, prefix hits {} tokens", got.stats.preemptions, info.prefix_hit_tokens);
}
// ANCHOR_END: preemption_test

// ANCHOR: half_tolerance
/// f16 / bf16 against the f32 CPU engine on the shipped model (stored in f16): the largest
/// logit difference relative to the logits' spread, and the share of greedy tokens that agree.
#[test]
#[ignore = "needs a CUDA GPU"]
fn half_precision_logits_are_close_and_tokens_mostly_agree() {
    let _gpu = one_at_a_time();
    let model = shipped();
    let reqs = requests(model.config.vocab_size, 8);
    let opts = RunOptions { record_logits: true, ..Default::default() };
    let want = cpu(&model, &reqs, &opts);
    for (dtype, tol) in [(DType::F16, 0.02), (DType::BF16, 0.08)] {
        let got = gpu_engine(dtype).run(&model, &reqs, &opts).unwrap();
        assert_eq!(want.outputs.len(), got.outputs.len());
        let (mut agree, mut total, mut worst) = (0, 0, 0.0f32);
        for (a, b) in want.outputs.iter().zip(&got.outputs) {
            assert_eq!(a.tokens.len(), b.tokens.len());
            // Compare logits only up to the first disagreement (after it the inputs differ).
            let same = a.tokens.iter().zip(&b.tokens).take_while(|(x, y)| x == y).count();
            agree += same;
            total += a.tokens.len();
            for (x, y) in a.logits.iter().zip(&b.logits).take(same + 1) {
                assert_eq!(x.len(), y.len());
                let spread = x.iter().fold(f32::MIN, |m, v| m.max(*v)) - x.iter().fold(f32::MAX, |m, v| m.min(*v));
                let d = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max) / spread;
                worst = worst.max(d);
            }
        }
        println!("{dtype:?}: max |Δlogit| / spread = {worst:.2e}; tokens agreeing before first divergence: {agree}/{total}");
        assert!(worst < tol, "{dtype:?}: logits differ by {worst:.2e} of their spread");
        assert!(agree * 2 > total, "{dtype:?}: only {agree}/{total} tokens agree");
    }
}
// ANCHOR_END: half_tolerance

/// On a machine without a GPU (CI), the engine answers with an error that says so; never a panic.
#[test]
fn without_a_gpu_the_engine_is_a_clear_error() {
    if let Ok(g) = ch06_cuda::Gpu::new(0) {
        println!("skipped: this machine has a GPU ({})", g.name());
        return;
    }
    let model = random_gqa();
    let err = gpu_engine(DType::F16).run(&model, &requests(model.config.vocab_size, 2), &RunOptions::default()).unwrap_err();
    assert!(matches!(err, ch00_model::ModelError::Device(_)), "{err}");
    assert!(err.to_string().contains("no CUDA GPU"), "{err}");
}

/// A head size the attention kernel is not built for is refused before anything is allocated.
#[test]
fn an_unsupported_head_size_is_refused_up_front() {
    let model = Model::random(LlamaConfig::named("tiny").unwrap(), 0).unwrap(); // head_dim 16: supported
    let mut c = model.config.clone();
    (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim) = (96, 2, 2, 48);
    let odd = Model::random(c, 0).unwrap();
    let err = gpu_engine(DType::F16).run(&odd, &requests(odd.config.vocab_size, 1), &RunOptions::default()).unwrap_err();
    assert!(err.to_string().contains("head_dim 48 is not supported"), "{err}");
    drop(model);
}

// ANCHOR: parallel_sampling
/// Parallel sampling on the GPU: 3 samples of each prompt share its blocks and copy the partly
/// filled last block on the first diverging write. Every sample equals chapter 5's (CPU) sample
/// and an independent run with its own seed; the GPU really copied blocks.
#[test]
#[ignore = "needs a CUDA GPU"]
fn parallel_samples_copy_on_write_match_ch05_and_independent_runs() {
    let _gpu = one_at_a_time();
    let model = shipped();
    let mut reqs = requests(model.config.vocab_size, 4);
    for (i, r) in reqs.iter_mut().enumerate() {
        r.n = 3;
        r.sampling = SamplingParams { temperature: 0.9, top_k: 40, top_p: 0.95, seed: 7 + i as u64 };
    }
    let opts = RunOptions::default();
    let want = cpu(&model, &reqs, &opts);
    let mut e = gpu_engine(DType::F32);
    let got = e.run(&model, &reqs, &opts).unwrap();
    assert_eq!(got.outputs.len(), 12);
    assert_same_tokens("parallel samples vs ch05", &want, &got);
    let alone = gpu_engine(DType::F32).run(&model, &ch00_serving::split_samples(&reqs), &opts).unwrap();
    assert_same_tokens("parallel samples vs independent requests", &alone, &got);
    let stats = e.last_setup.unwrap().stats;
    assert!(stats.block_copies > 0, "copy-on-write should have copied blocks: {stats:?}");
    println!("parallel sampling on the GPU: {} block copies, same tokens as ch05 and as 12 independent runs", stats.block_copies);
}
// ANCHOR_END: parallel_sampling
