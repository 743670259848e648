//! `kvserve`: the tour (no arguments), `generate`, `memory`, `bench` and `trace`.

mod chat_http_cmd;
mod machine;
mod memory_cmd;
mod prefill_cmd;
mod prefill_flags;
mod report;
mod serve_cmd;
mod soak_cmd;
mod trace_cmd;

// ANCHOR: allocator
/// mimalloc for the whole binary, server and offline runs alike. glibc gives threads malloc arenas
/// of their own, each warming up to its own high-water mark as the load moves between a server's
/// threads, so resident memory crept up over tens of thousands of requests; one glibc arena kept
/// it flat but put the engine's parallel workers behind one lock (`kvserve soak` measured both).
/// mimalloc's heaps are per thread and lock-free, and freed memory goes back to a pool any thread
/// reuses.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Freed pages go back to the OS at once rather than after mimalloc's default 10 ms delay: a
/// server's resident memory then follows what it holds (`kvserve soak` measured the default and
/// no purging at all: the first swung more, the second settled at a higher high-water mark).
/// `mi_option_purge_delay` is 15 in mimalloc.h's `mi_option_e`; libmimalloc-sys does not name it.
/// And mimalloc is built without transparent huge pages (the crate's `no_thp`, Cargo.toml): with
/// them, its memory came back in whole 2 MiB pages, and the memory at rest swung by ±8% from one
/// round of the same load to the next at half again the size. The weights keep their huge pages:
/// `cpu::pages` maps and advises them itself.
fn allocator_settings() {
    // SAFETY: sets one option's value; mimalloc reads it at its next purge decision.
    unsafe { libmimalloc_sys::mi_option_set(15, 0) }
}
// ANCHOR_END: allocator

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kvserve::ch00_serving::generate::complete;
use ch07_server::engine::Event;
use ch07_server::text::Assembler;
use kvserve::ch00_model::{load_model, load_model_as, DType, LoadedModel, SamplingParams};
use kvserve::ch00_serving::{Engine, Request, RequestOutput, RunOptions};
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "kvserve", version, about = "An LLM inference server built stage by stage. With no subcommand: the tour.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt with one stage.
    Generate(GenerateArgs),
    /// The KV-cache memory calculator.
    Memory(memory_cmd::MemoryArgs),
    /// The side-by-side report of every stage (longer than the tour).
    Bench(report::BenchArgs),
    /// Gantt charts of static vs continuous batching from a real traced run (SVG).
    Trace(trace_cmd::TraceArgs),
    /// Validation loss of a checkpoint on its val_sample.txt, next to its training report's.
    Eval(EvalArgs),
    /// An OpenAI-compatible HTTP server (POST /v1/completions, /v1/chat/completions; GET
    /// /v1/models, /health, /metrics) over a step-wise stage.
    Serve(serve_cmd::ServeArgs),
    /// Sends a workload to an OpenAI-compatible server and reports TTFT, TPOT, ITL and throughput.
    Loadgen(serve_cmd::LoadgenArgs),
    /// Serves each stage over HTTP in turn and runs loadgen at increasing rates: chapter 7's
    /// table and latency-throughput figure.
    ServeBench(serve_cmd::ServeBenchArgs),
    /// The server's load/fault suite against a `kvserve serve` process on a loopback port: memory
    /// slope, latency under load, malformed bodies, disconnects, slow readers, overload, SIGTERM
    /// and an injected engine fault, as a table.
    Soak(soak_cmd::SoakArgs),
    /// Chunked prefill on a mixed workload (long prompts among running decodes): ITL, TTFT and
    /// throughput with and without chunking, over a sweep of token budgets.
    BenchChunked(prefill_cmd::ChunkedArgs),
    /// Multi-turn chats (each turn the whole history plus a new message): the prefix cache's hit
    /// rate and TTFT by turn, cache on and off.
    BenchChat(prefill_cmd::ChatArgs),
    /// Multi-turn chats over HTTP: a stage served with its prefix cache off, then on, and the
    /// same conversations replayed against each by `loadgen --chat`.
    ServeChat(chat_http_cmd::ServeChatArgs),
}

#[derive(clap::Args)]
struct EvalArgs {
    /// Checkpoint directory (default: the shipped model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Text to score (default: DIR/val_sample.txt).
    #[arg(long)]
    text: Option<PathBuf>,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long, conflicts_with = "config")]
    model: Option<PathBuf>,
    /// A named random-weight config instead: tiny, bench, llama-7b, llama3-8b.
    #[arg(long)]
    config: Option<String>,
    /// Which stage generates (e.g. ch02-kv-cache or ch02).
    #[arg(long, default_value = "ch02-kv-cache")]
    stage: String,
    /// The type the weights are kept in: auto (as the checkpoint stores them; random models:
    /// f32), f32, f16 or bf16. Arithmetic is f32 whichever; half precision halves the bytes a
    /// decode step reads.
    #[arg(long, default_value = "auto")]
    dtype: String,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling threshold (1.0: off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Samples to draw from the prompt (sample i uses seed + i); in ch05 they share the prompt's
    /// KV blocks, copy-on-write.
    #[arg(long, default_value_t = 1)]
    n: usize,
    /// Also print the prompt's token ids (a line `prompt ids: …`, as the tokenizer gave them) and
    /// the generated token ids, space-separated, as the last line (one line per sample).
    #[arg(long)]
    print_ids: bool,
    #[command(flatten)]
    prefill: prefill_flags::PrefillFlags,
    /// The prompt (with a random-weight config: text, or whitespace-separated token ids).
    prompt: String,
}

fn main() -> Result<()> {
    allocator_settings();
    let cli = Cli::parse();
    match cli.command {
        None => tour(),
        Some(Command::Generate(args)) => generate(&args),
        Some(Command::Memory(args)) => memory_cmd::run(&args),
        Some(Command::Bench(args)) => report::run(&args),
        Some(Command::Trace(args)) => trace_cmd::run(&args),
        Some(Command::Eval(args)) => eval(&args),
        Some(Command::Serve(args)) => serve_cmd::serve_cmd(&args),
        Some(Command::Loadgen(args)) => serve_cmd::loadgen_cmd(&args),
        Some(Command::ServeBench(args)) => serve_cmd::serve_bench_cmd(&args),
        Some(Command::Soak(args)) => soak_cmd::run(&args),
        Some(Command::BenchChunked(args)) => prefill_cmd::run(&args),
        Some(Command::BenchChat(args)) => prefill_cmd::run_chat(&args),
        Some(Command::ServeChat(args)) => chat_http_cmd::run(&args),
    }
}

fn eval(args: &EvalArgs) -> Result<()> {
    let dir = args.model.clone().unwrap_or_else(kvserve::default_model_dir);
    let loaded = load_model(Some(&dir), None)?;
    let text_path = args.text.clone().unwrap_or_else(|| dir.join("val_sample.txt"));
    let text = std::fs::read_to_string(&text_path).with_context(|| format!("reading {}", text_path.display()))?;
    let loss = kvserve::eval::val_sample_loss(&loaded, &text)?;
    println!("val_sample_loss (kvserve, CPU, {:?} weights): {loss:.6} nats/token on {}", loaded.model.weight_dtype(), text_path.display());
    let report: Option<serde_json::Value> =
        std::fs::read_to_string(dir.join("train_report.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
    if let Some(theirs) = report.as_ref().and_then(|r| r["val_sample_loss"].as_f64()) {
        println!("val_sample_loss (training script, PyTorch): {theirs:.6}");
        println!("relative difference: {:.4}%", 100.0 * (loss - theirs).abs() / theirs);
    }
    Ok(())
}

/// `--dtype`: None for auto (the checkpoint's type).
fn weight_dtype(s: &str) -> Result<Option<DType>> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    DType::parse(s).map(Some).with_context(|| format!("--dtype {s}: auto, f32, f16 or bf16"))
}

fn generate(args: &GenerateArgs) -> Result<()> {
    let loaded = load_model_as(args.model.as_deref(), args.config.as_deref(), weight_dtype(&args.dtype)?)?;
    let mut engine = kvserve::stage_with(&args.stage, &args.prefill.policy()).with_context(|| {
        let names: Vec<_> = kvserve::stages().iter().map(|e| e.name()).collect();
        format!("unknown stage {:?}; stages: {}", args.stage, names.join(", "))
    })?;
    let sampling =
        SamplingParams { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, seed: args.seed };
    let ids = |ids: &[u32]| ids.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" ");
    if args.n == 1 {
        if let Some((out, wall_s)) = stream_one(engine.as_ref(), &loaded, args, sampling)? {
            let tps = out.tokens.len() as f64 / wall_s.max(1e-9);
            let (name, n, source, decode) = (engine.name(), out.tokens.len(), &loaded.source, decode_rate(&out));
            let dtype = format!("{:?}", loaded.model.weight_dtype()).to_lowercase();
            eprintln!("[{name}: {n} tokens, {tps:.1} tokens/s, decode {decode:.1} tokens/s, finish {:?}, model {source}, {dtype} weights, streamed]", out.finish);
            if args.print_ids {
                println!("prompt ids: {}", ids(&loaded.encode(&args.prompt)?));
                println!("{}", ids(&out.tokens));
            }
            return Ok(());
        }
    }
    let (texts, run) = complete(engine.as_mut(), &loaded, &args.prompt, args.max_new_tokens, sampling, args.n)?;
    for (text, out) in texts.iter().zip(&run.outputs) {
        if args.n > 1 {
            println!("--- sample {} (seed {}) ---", out.sample, args.seed.wrapping_add(out.sample as u64));
        }
        println!("{text}");
    }
    let finish: Vec<String> = run.outputs.iter().map(|o| format!("{:?}", o.finish)).collect();
    eprintln!(
        "[{}: {} tokens, {:.1} tokens/s, decode {:.1} tokens/s, finish {}, model {}, {} weights]",
        engine.name(),
        run.stats.generated_tokens,
        run.stats.tokens_per_s,
        run.outputs.first().map_or(0.0, decode_rate),
        finish.join(" "),
        loaded.source,
        format!("{:?}", loaded.model.weight_dtype()).to_lowercase()
    );
    if args.print_ids {
        println!("prompt ids: {}", ids(&loaded.encode(&args.prompt)?));
        for out in &run.outputs {
            println!("{}", ids(&out.tokens));
        }
    }
    Ok(())
}

/// Decode rate of one output: the tokens after the first over the time they took (no prefill).
fn decode_rate(out: &RequestOutput) -> f64 {
    let secs: f64 = out.token_latencies_s.iter().sum();
    if secs > 0.0 { out.token_latencies_s.len() as f64 / secs } else { 0.0 }
}

// ANCHOR: stream_one
/// Streams one sample to the terminal token by token, driving a step-wise stage; `None` when the
/// stage only runs whole workloads. Returns the output and the seconds it took.
fn stream_one(
    engine: &dyn Engine,
    loaded: &LoadedModel,
    args: &GenerateArgs,
    sampling: SamplingParams,
) -> Result<Option<(RequestOutput, f64)>> {
    let Ok(mut stepper) = engine.stepper(&loaded.model) else { return Ok(None) };
    let request = Request { sampling, ..Request::greedy(0, loaded.encode(&args.prompt)?, args.max_new_tokens) };
    stepper.add_request(&request)?;
    let start = std::time::Instant::now();
    let mut text = Assembler::new(loaded, 1, Vec::new()); // holds back half-decoded characters
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{}", args.prompt)?;
    let mut output = None;
    while stepper.has_unfinished() {
        let step = stepper.step()?;
        let tokens = step.tokens.iter().map(|t| Event::Token { sample: 0, token: t.token });
        let ends = step.finished.iter().map(|(_, o)| Event::Finished { sample: 0, reason: o.finish });
        for ev in tokens.chain(ends) {
            if let Some(d) = text.on_event(ev).map_err(anyhow::Error::msg)? {
                write!(stdout, "{}", d.text)?;
                stdout.flush()?;
            }
        }
        output = step.finished.into_iter().next().map(|(_, o)| o).or(output);
    }
    writeln!(stdout)?;
    Ok(output.map(|o| (o, start.elapsed().as_secs_f64())))
}
// ANCHOR_END: stream_one

/// Rounds of the tour: every stage runs the workload this many times, in alternating order, so
/// that the table can show each stage's median speed and its spread.
const TOUR_ROUNDS: usize = 5;

/// The tour: every stage on the default model over a small fixed workload, side by side.
fn tour() -> Result<()> {
    let loaded = load_model(None, None)?;
    let requests = report::tour_requests(&loaded, 48)?;
    println!("kvserve tour — model {} ({} params)", loaded.source, loaded.model.config.param_count());
    println!("workload: {} prompts, {} new tokens each, greedy, {TOUR_ROUNDS} rounds\n", requests.len(), requests[0].max_new_tokens);
    let mut stages = kvserve::stages();
    let bar = ProgressBar::new((TOUR_ROUNDS * stages.len()) as u64)
        .with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let mut runs: Vec<Vec<_>> = stages.iter().map(|_| Vec::new()).collect();
    for round in 0..TOUR_ROUNDS {
        // Forward in even rounds, backward in odd ones: no stage always runs first or last.
        let order: Vec<usize> = if round % 2 == 0 { (0..stages.len()).collect() } else { (0..stages.len()).rev().collect() };
        for i in order {
            bar.set_message(format!("round {}: {}", round + 1, stages[i].name()));
            runs[i].push(stages[i].run(&loaded.model, &requests, &RunOptions::default())?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let rows: Vec<(&str, Vec<_>)> = stages.iter().map(|e| e.name()).zip(runs).collect();
    println!("{}", bookgen::bench::stage_table(&rows));
    let same = rows.iter().flat_map(|(_, r)| r).collect::<Vec<_>>().windows(2).all(|w| {
        let (a, b) = (&w[0].outputs, &w[1].outputs);
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.tokens == y.tokens)
    });
    println!("every stage generated the same tokens: {}", if same { "yes" } else { "NO" });
    println!("(equal-length requests: batching helps, continuous batching cannot beat static here;");
    println!(" `kvserve bench` runs the long-tailed workload and the capacity comparison)\n");
    let last = rows.last().and_then(|(_, r)| r.first()).context("no stages")?;
    for (req, out) in requests.iter().zip(&last.outputs) {
        println!("--- request {} ---\n{}{}\n", req.id, loaded.decode(&req.prompt)?, loaded.decode(&out.tokens)?);
    }
    Ok(())
}
