//! `kvserve serve`, `kvserve loadgen` and `kvserve serve-bench`: chapter 7 from the command line.

use anyhow::{bail, Context, Result};
use ch03_static_batching::StaticBatchEngine;
use ch04_continuous_batching::{ContinuousBatchEngine, SlotBudget};
use ch05_paged_attention::{KvBudget, PagedEngine};
use ch07_server::loadgen::chat::ChatLoadConfig;
use ch07_server::loadgen::{self, LoadgenConfig, Report};
use ch07_server::{app_state, serve, spawn_engine, ChatTemplate, MakeStepper, ServerConfig};
use crate::prefill_flags::PrefillFlags;
use bookgen::figures::LoadPoint;
use kvserve::ch00_model::{load_model, LoadedModel};
use kvserve::ch00_serving::{Arrivals, ChatSpec, LengthDist, WorkloadSpec};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The engine's limits, for whichever stage serves.
#[derive(clap::Args, Clone, Debug)]
pub struct EngineLimits {
    /// Longest prompt + output, in tokens (default: the model's context, capped at 4096).
    #[arg(long)]
    pub(crate) max_len: Option<usize>,
    /// ch03: the batch size; ch04: cache slots; ch05: a pool of the same memory unless --kv-blocks.
    #[arg(long, default_value_t = 8)]
    pub(crate) slots: usize,
    /// ch05, ch06: KV blocks in the pool (ch06 default: as many as fit the card).
    #[arg(long)]
    pub(crate) kv_blocks: Option<usize>,
    /// ch05, ch06: tokens per block.
    #[arg(long, default_value_t = 16)]
    pub(crate) block_size: usize,
    /// ch04, ch05, ch06: most sequences running at once (default: chapter 4's for the memory).
    #[arg(long)]
    pub(crate) max_running: Option<usize>,
    #[command(flatten)]
    pub(crate) prefill: PrefillFlags,
}

impl Default for EngineLimits {
    /// The command line's defaults (what `kvserve serve` runs with no limit flags).
    fn default() -> Self {
        EngineLimits {
            max_len: None,
            slots: 8,
            kv_blocks: None,
            block_size: 16,
            max_running: None,
            prefill: PrefillFlags::default(),
        }
    }
}

// ANCHOR: make_stepper
/// The step-wise engine of `stage` with these limits, built on the engine thread.
pub fn make_stepper(stage: &str, l: &EngineLimits) -> Result<MakeStepper> {
    if stage == "null" {
        // No model (`kvserve soak --stage null`): what the server alone holds.
        let (max_len, max_running) = (l.max_len, l.max_running.unwrap_or(l.slots));
        return Ok(Box::new(move |m| {
            let max_len = max_len.unwrap_or(m.config.max_position_embeddings.min(4096));
            Ok(Box::new(ch07_server::fault::NullEngine::new(m.config.vocab_size, max_len, max_running)) as Box<_>)
        }));
    }
    let name = kvserve::stage(stage).with_context(|| format!("unknown stage {stage:?}"))?.name();
    Ok(match name {
        "ch03-static-batching" => {
            let e = StaticBatchEngine { batch_size: l.slots, max_len: l.max_len };
            Box::new(move |m| kvserve::ch00_serving::Engine::stepper(&e, m))
        }
        "ch04-continuous-batching" => {
            let e = ContinuousBatchEngine {
                slots: SlotBudget::Slots(l.slots),
                max_running: l.max_running,
                max_len: l.max_len,
                ..Default::default()
            };
            Box::new(move |m| kvserve::ch00_serving::Engine::stepper(&e, m))
        }
        "ch05-paged-attention" => {
            let e = l.prefill.policy().apply(PagedEngine {
                budget: l.kv_blocks.map_or(KvBudget::Slots(l.slots), KvBudget::Blocks),
                block_size: l.block_size,
                max_len: l.max_len,
                max_running: l.max_running,
                ..Default::default()
            });
            Box::new(move |m| kvserve::ch00_serving::Engine::stepper(&e, m))
        }
        "ch06-cuda" => {
            let paged = l.prefill.policy().apply(PagedEngine {
                block_size: l.block_size,
                max_len: l.max_len,
                max_running: l.max_running,
                ..Default::default()
            });
            // The pool fills the card unless --kv-blocks says how many blocks.
            let e = ch06_cuda::CudaEngine { paged, num_blocks: l.kv_blocks, ..Default::default() };
            Box::new(move |m| kvserve::ch00_serving::Engine::stepper(&e, m))
        }
        other => bail!("{other} runs whole workloads only and cannot serve; use ch03, ch04, ch05 or ch06"),
    })
}
// ANCHOR_END: make_stepper

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Hugging Face model directory (default: the shipped model).
    #[arg(long, conflicts_with = "config")]
    model: Option<PathBuf>,
    /// A named random-weight config instead: tiny, bench, llama-7b, llama3-8b.
    #[arg(long)]
    config: Option<String>,
    /// Which stage serves: ch03, ch04, ch05 or ch06 (an NVIDIA GPU).
    #[arg(long, default_value = "ch05-paged-attention")]
    stage: String,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The model name clients use (default: the checkpoint's).
    #[arg(long)]
    served_model_name: Option<String>,
    #[command(flatten)]
    limits: EngineLimits,
    /// Waiting sequences beyond which new requests get 429.
    #[arg(long, default_value_t = 256)]
    max_waiting: usize,
    /// Seconds in-flight requests may take to finish after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 30.0)]
    grace_s: f64,
    /// Largest request body accepted, in bytes (413 above).
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Seconds the server goes on answering 503 (and /health its reason) after the engine dies,
    /// before it exits non-zero.
    #[arg(long, default_value_t = 2.0)]
    dead_linger_s: f64,
    /// Fault injection for the load/fault suite: `error:N` or `panic:N` fails the engine's N-th
    /// step that has work.
    #[arg(long, hide = true)]
    inject_fault: Option<String>,
}

/// `error:N` or `panic:N`.
fn parse_fault(s: &str) -> Result<(ch07_server::fault::Fault, usize)> {
    let (kind, after) = s.split_once(':').context("--inject-fault takes error:N or panic:N")?;
    Ok((kind.parse().map_err(anyhow::Error::msg)?, after.parse().context("--inject-fault: N")?))
}

/// The server's async runtime. Tokenization runs on its blocking pool, kept to one thread per
/// core (it is short CPU work) and never retired: tokio's default (up to 512 threads, each retired
/// after 10 s idle) churns threads with the load, and each new thread's allocator heap warms up
/// afresh, so resident memory crept up over the first tens of thousands of requests (`kvserve
/// soak` measured it under glibc's per-thread arenas).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Ok(tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(cores.max(2))
        .thread_keep_alive(Duration::from_secs(365 * 24 * 3600))
        .enable_all()
        .build()?)
}

/// A model, its engine thread and the server's settings: everything but the socket.
fn start(
    loaded: LoadedModel,
    make: MakeStepper,
    mut cfg: ServerConfig,
    name: Option<String>,
) -> Result<(ch07_server::Shared, ServerConfig, std::thread::JoinHandle<()>)> {
    cfg.model_name = name.unwrap_or_else(|| loaded.source_name());
    let loaded = Arc::new(loaded);
    let (engine, thread) = spawn_engine(loaded.clone(), make)?;
    Ok((app_state(engine, loaded, &cfg), cfg, thread))
}


pub fn serve_cmd(args: &ServeArgs) -> Result<()> {
    let mut make = make_stepper(&args.stage, &args.limits)?;
    if let Some(spec) = &args.inject_fault {
        let (fault, after) = parse_fault(spec)?;
        make = Box::new(move |m| Ok(Box::new(ch07_server::fault::Faulty::new(make(m)?, fault, after)) as Box<_>));
    }
    let loaded = load_model(args.model.as_deref(), args.config.as_deref())?;
    let dir = match (&args.model, &args.config) {
        (Some(d), _) => Some(d.clone()),
        (None, None) => Some(kvserve::default_model_dir()),
        (None, Some(_)) => None,
    };
    let chat = match dir {
        Some(d) => ChatTemplate::from_dir(&d)?,
        None => None,
    };
    let grace = Duration::try_from_secs_f64(args.grace_s).context("--grace-s")?;
    let dead_linger = Duration::try_from_secs_f64(args.dead_linger_s).context("--dead-linger-s")?;
    let cfg =
        ServerConfig { chat, max_waiting: args.max_waiting, max_body_bytes: args.max_body_bytes, grace, dead_linger, ..ServerConfig::default() };
    let (state, cfg, thread) = start(loaded, make, cfg, args.served_model_name.clone())?;
    let addr = format!("{}:{}", args.host, args.port);
    let served = runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
        let random = if args.config.is_some() { " (RANDOM WEIGHTS from --config: the text is gibberish)" } else { "" };
        eprintln!(
            "kvserve: {} serving {}{random} on http://{} (max_len {}, chat {}); Ctrl-C to stop",
            args.stage,
            cfg.model_name,
            listener.local_addr()?,
            state.engine.max_len,
            if cfg.chat.is_some() { "on" } else { "off: no chat template" }
        );
        serve(listener, state, &cfg, ch07_server::shutdown_signal()).await
    });
    let _ = thread.join();
    served?; // the engine died: exit non-zero, so a supervisor restarts the server
    eprintln!("kvserve: stopped");
    Ok(())
}

/// What to send: the workload generator's shape.
#[derive(clap::Args, Clone, Debug)]
pub struct WorkloadArgs {
    #[arg(long, default_value_t = 32)]
    num_requests: usize,
    /// Shortest and longest prompt, in tokens (uniform).
    #[arg(long, default_value_t = 16)]
    prompt_min: usize,
    #[arg(long, default_value_t = 64)]
    prompt_max: usize,
    /// Mean output length (exponential, clipped to 4..=--output-max).
    #[arg(long, default_value_t = 64.0)]
    output_mean: f64,
    #[arg(long, default_value_t = 256)]
    output_max: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl WorkloadArgs {
    fn spec(&self, rate: Option<f64>) -> WorkloadSpec {
        WorkloadSpec {
            n_requests: self.num_requests,
            prompt_len: LengthDist::Uniform { lo: self.prompt_min, hi: self.prompt_max },
            output_len: LengthDist::Exponential { mean: self.output_mean, min: 4, max: self.output_max },
            arrivals: rate.map_or(Arrivals::AllAtOnce, |rate_per_s| Arrivals::Poisson { rate_per_s }),
            seed: self.seed,
        }
    }
}

#[derive(clap::Args)]
pub struct LoadgenArgs {
    /// The server's OpenAI API base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000/v1")]
    url: String,
    /// The model name to send (default: none).
    #[arg(long)]
    model: Option<String>,
    /// Requests per second, Poisson arrivals (default: all at once).
    #[arg(long)]
    rate: Option<f64>,
    /// Vocabulary the prompt ids come from (default: the server's `vocab_size` in /v1/models).
    #[arg(long)]
    vocab: Option<usize>,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Replay multi-turn chats instead (each turn the whole history plus a new message, sent when
    /// the turn before has answered); the workload flags then do not apply.
    #[arg(long)]
    chat: bool,
    #[command(flatten)]
    chat_spec: ChatArgs,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The chats of `loadgen --chat` (defaults: the book's `bench-chat` run).
#[derive(clap::Args)]
pub(crate) struct ChatArgs {
    #[arg(long, default_value_t = ChatSpec::book().conversations)]
    conversations: usize,
    #[arg(long, default_value_t = ChatSpec::book().turns)]
    turns: usize,
    /// Tokens of each conversation's first prompt.
    #[arg(long, default_value_t = ChatSpec::book().first_prompt)]
    first_prompt: usize,
    /// Tokens of each later turn's new message.
    #[arg(long, default_value_t = ChatSpec::book().message)]
    message: usize,
    /// Tokens of every answer.
    #[arg(long, default_value_t = ChatSpec::book().answer)]
    answer: usize,
}

impl ChatArgs {
    pub(crate) fn spec(&self) -> ChatSpec {
        ChatSpec {
            conversations: self.conversations,
            turns: self.turns,
            first_prompt: self.first_prompt,
            message: self.message,
            answer: self.answer,
        }
    }
}

pub fn loadgen_cmd(args: &LoadgenArgs) -> Result<()> {
    if args.chat {
        return loadgen_chat(args);
    }
    let report = runtime()?.block_on(async {
        let vocab_size = match args.vocab {
            Some(v) => v,
            None => server_vocab(&args.url).await?,
        };
        let cfg = LoadgenConfig {
            base_url: args.url.clone(),
            model: args.model.clone(),
            workload: args.workload.spec(args.rate),
            vocab_size,
        };
        loadgen::run(&cfg).await
    })?;
    println!("{}", report.markdown());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    if report.failed > 0 {
        bail!("{} of {} requests failed", report.failed, report.requests);
    }
    Ok(())
}

fn loadgen_chat(args: &LoadgenArgs) -> Result<()> {
    let report = runtime()?.block_on(async {
        let vocab_size = match args.vocab {
            Some(v) => v,
            None => server_vocab(&args.url).await?,
        };
        let cfg = ChatLoadConfig { base_url: args.url.clone(), model: args.model.clone(), spec: args.chat_spec.spec(), vocab_size };
        loadgen::chat::run(&cfg).await
    })?;
    println!("{}", report.markdown());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn server_vocab(base: &str) -> Result<usize> {
    let (status, text) = ch07_server::client::get(&format!("{}/models", base.trim_end_matches('/'))).await?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("/models answered {status}: {text}"))?;
    v["data"][0]["vocab_size"].as_u64().map(|v| v as usize).context("the server does not say its vocab_size; pass --vocab")
}

#[derive(clap::Args)]
pub struct ServeBenchArgs {
    /// A named random-weight config (default: bench).
    #[arg(long, default_value = "bench")]
    config: String,
    /// Stages to serve, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "ch03,ch04,ch05")]
    stages: Vec<String>,
    /// Offered loads, requests per second (Poisson).
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,2,4")]
    rates: Vec<f64>,
    #[command(flatten)]
    limits: EngineLimits,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Where the JSON and Markdown go.
    #[arg(long, default_value = "book/src/generated")]
    out: PathBuf,
    /// Where the figure goes.
    #[arg(long, default_value = "book/src/figures")]
    figures: PathBuf,
    /// A TTFT objective drawn on the figure (ms), the line a goodput count would use.
    #[arg(long, default_value_t = 500.0)]
    ttft_slo_ms: f64,
}

/// Serves `stage` (with `limits`, on the random model `config`) on a loopback port for as long as
/// `f` runs; `f` gets the API's base URL and the vocabulary size. The server stops afterwards.
pub(crate) fn on_loopback<T>(
    rt: &tokio::runtime::Runtime,
    stage: &str,
    limits: &EngineLimits,
    config: &str,
    f: impl AsyncFnOnce(String, usize) -> Result<T>,
) -> Result<T> {
    let make = make_stepper(stage, limits)?;
    let loaded = load_model(None, Some(config))?;
    let vocab_size = loaded.model.config.vocab_size;
    let (state, cfg, thread) = start(loaded, make, ServerConfig::default(), Some(config.to_string()))?;
    let out = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}/v1", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move { serve(listener, state, &cfg, async { drop(stopped.await) }).await });
        let out = f(base_url, vocab_size).await;
        let _ = stop.send(());
        server.await??;
        out
    });
    let _ = thread.join();
    out
}

// ANCHOR: serve_bench
/// Serves each stage over HTTP on a loopback port and drives it with `loadgen` at each rate.
pub fn serve_bench_cmd(args: &ServeBenchArgs) -> Result<()> {
    let machine = crate::machine::machine();
    let rt = runtime()?;
    let mut series: Vec<(String, Vec<Report>)> = Vec::new();
    for stage in &args.stages {
        let name = kvserve::stage(stage).map_or(stage.clone(), |e| e.name().to_string());
        let reports = on_loopback(&rt, stage, &args.limits, &args.config, async |base_url, vocab_size| {
            let mut reports = Vec::new();
            for &rate in &args.rates {
                let workload = args.workload.spec(Some(rate));
                let cfg = LoadgenConfig { base_url: base_url.clone(), model: None, workload, vocab_size };
                let r = loadgen::run(&cfg).await?;
                eprintln!("{name} at {rate} req/s: {:.1} tokens/s, TTFT p50 {:.0} ms", r.output_tokens_per_s, r.ttft_ms.p50);
                reports.push(r);
            }
            Ok(reports)
        })?;
        series.push((name, reports));
    }
    let w = &args.workload;
    let command = format!(
        "kvserve serve-bench --config {} --stages {} --rates {} --num-requests {} --prompt-min {} --prompt-max {} \
         --output-mean {} --output-max {} --seed {} --slots {}",
        args.config,
        args.stages.join(","),
        args.rates.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(","),
        w.num_requests,
        w.prompt_min,
        w.prompt_max,
        w.output_mean,
        w.output_max,
        w.seed,
        args.limits.slots
    );
    // With at most 100 requests a nearest-rank p99 is the largest sample: call it that.
    let few = series.iter().flat_map(|(_, rs)| rs).all(|r| r.completed <= 100);
    let tail = if few { "TTFT max ms" } else { "TTFT p99 ms" };
    let mut md = format!("| stage | offered req/s | completed | tokens/s | TTFT p50 ms | {tail} | TPOT p50 ms | ITL p99 ms |\n");
    md += "|---|--:|--:|--:|--:|--:|--:|--:|\n";
    for (name, reports) in &series {
        for r in reports {
            md += &format!(
                "| {name} | {} | {}/{} | {:.1} | {:.0} | {:.0} | {:.1} | {:.1} |\n",
                r.rate_per_s.unwrap_or(0.0),
                r.completed,
                r.requests,
                r.output_tokens_per_s,
                r.ttft_ms.p50,
                r.ttft_ms.p99,
                r.tpot_ms.p50,
                r.itl_ms.p99
            );
        }
    }
    let note = if few { " With this many requests per rate the TTFT tail column is the slowest request (a p99 needs more than 100); ITL pools every gap between tokens, so its p99 is one." } else { "" };
    md += &format!("\n*Measured on {machine} with `{command}`: each stage served over HTTP on a loopback port.{note}*\n");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("serving.md"), &md)?;
    let json = serde_json::json!({ "machine": machine, "command": command, "series": series });
    std::fs::write(args.out.join("serving.json"), serde_json::to_string_pretty(&json)?)?;
    let point = |r: &Report| LoadPoint {
        rate: r.rate_per_s.unwrap_or(0.0),
        ttft_p50_ms: r.ttft_ms.p50,
        ttft_p99_ms: r.ttft_ms.p99,
        tokens_per_s: r.output_tokens_per_s,
    };
    let points: Vec<_> = series.iter().map(|(n, rs)| (n.clone(), rs.iter().map(point).collect())).collect();
    let title = format!("{} model served over HTTP, {} requests per rate; {machine}", args.config, args.workload.num_requests);
    std::fs::create_dir_all(&args.figures)?;
    std::fs::write(args.figures.join("serving-latency-throughput.svg"), bookgen::figures::latency_throughput_svg(&points, &title, Some(args.ttft_slo_ms))?)?;
    println!("{md}");
    Ok(())
}
// ANCHOR_END: serve_bench
