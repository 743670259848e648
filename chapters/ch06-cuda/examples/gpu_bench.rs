//! Chapter 6's measurements on the GPU, written as JSON records that `scripts/gpu_tables.py`
//! turns into the book's tables (beside the PyTorch peers, run in the same call by
//! `scripts/gpu_bench.sh`):
//!   a. the paged decode-attention kernel vs the K/V-read floor,
//!   b. whole decode steps of a Llama-2-7B shape (random f16 weights), eager and as CUDA graphs,
//!   c. throughput of the engine on a workload file (`--model DIR --workload FILE`),
//!   d. the 80 GB scenario: 7B weights + 16 requests of up to 8K tokens in one card's KV budget,
//!   e. prefill: the prefill attention kernels at the 7B shape, and whole prefills (16 prompts ×
//!      2048 tokens; one 4000-token prompt's TTFT) with the prefill kernel and with the per-token
//!      kernel it replaces (beside scripts/peer_prefill_attention.py and peer_torch_prefill.py).
//!
//!   gpu_bench --out DIR [--sections a,b,c,d,e] [--model DIR --workload FILE --max-requests N]
//!             [--decode-points 1x512,64x2048]  (section b's batch x context points)
//!             [--ladder]  (section b: each point also with the step's optimisations off, then on one by one)

use ch00_model::{kv_bytes_per_token, AttnShape, DType, LlamaConfig, CUDA_CONTEXT_BYTES, GPU_MEMORY_UTILIZATION, H100_80GB};
use ch00_serving::{Engine, Request, RunOptions};
use ch04_continuous_batching::SchedulerConfig as SlotConfig;
use ch05_paged_attention::{simulate_blocks, simulate_slots, PagedEngine, SchedulerConfig};
use ch06_cuda::bench::{attention, copy_bandwidth, decode_steps, matmul_peak, prefill_attention};
use ch06_cuda::kernels::StepTuning;
use ch06_cuda::roofline::Ceilings;
use ch06_cuda::prefill::PrefillVersion;
use ch06_cuda::{CudaEngine, Gpu};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = PathBuf::from(arg(&args, "--out").unwrap_or_else(|| ".".into()));
    std::fs::create_dir_all(&out)?;
    let sections = arg(&args, "--sections").unwrap_or_else(|| "a,b,c,d".into());
    let gpu = Gpu::new(0)?;
    let card = gpu.name();
    let copy_gbps = copy_bandwidth(&gpu)?;
    println!("{card}: device copy bandwidth {copy_gbps:.0} GB/s");
    let command = args.join(" ");
    let head = json!({ "card": card, "copy_gbps": copy_gbps, "command": command });
    if sections.contains('a') {
        let mut rows = Vec::new();
        let mha = AttnShape { heads: 32, kv_heads: 32, head_dim: 128 };
        let gqa = AttnShape { heads: 32, kv_heads: 8, head_dim: 128 };
        for (shape, b, l) in [(mha, 64, 512), (mha, 64, 2048), (mha, 16, 8192), (mha, 1, 4096), (gqa, 64, 2048)] {
            let r = attention::<half::f16>(&gpu, shape, b, l, 16, copy_gbps)?;
            println!("attention B{b} L{l} {}/{}: {:.1} us, {:.0} GB/s = {:.0}% of copy", shape.heads, shape.kv_heads, r.us, r.gbps, 100.0 * r.frac_of_copy_bw);
            rows.push(r);
        }
        write(&out.join("ch06_attention.json"), json!({ "machine": head, "rows": rows }))?;
    }
    if sections.contains('b') {
        let c = LlamaConfig::named("llama-7b")?;
        let mut rows = Vec::new();
        // `--decode-points 1x512,64x2048` measures only those (batch x context) points.
        let points = match arg(&args, "--decode-points") {
            Some(p) => p.split(',').map(|bc| {
                let (b, c) = bc.split_once('x').ok_or("--decode-points: BxCONTEXT,...")?;
                Ok::<_, Box<dyn std::error::Error>>((c.parse::<usize>()?, b.parse::<usize>()?))
            }).collect::<Result<Vec<_>, _>>()?,
            None => [512usize, 2048].iter().flat_map(|&c| [1usize, 32, 64].map(|b| (c, b))).collect(),
        };
        // `--ladder`: each point also with the decode-step work switched on one piece at a time.
        let best = StepTuning::best(gpu.compute_capability()?);
        let tunings = if args.iter().any(|a| a == "--ladder") {
            let split = StepTuning { split_partitions: true, ..StepTuning::NONE };
            let swiglu = StepTuning { fuse_swiglu: true, ..split };
            let pdl = StepTuning { pdl: best.pdl, ..swiglu };
            let norm = StepTuning { fuse_norm: true, ..pdl };
            let fold = StepTuning { fold_merge: true, ..norm };
            vec![StepTuning::NONE, split, swiglu, pdl, norm, fold]
        } else {
            vec![best]
        };
        for (ctx, b) in points {
            {
                match decode_steps::<half::f16>(&gpu, &c, &[b], &[ctx], copy_gbps, &tunings) {
                    Ok(r) => {
                        for x in &r {
                            println!(
                                "decode B{b} ctx{ctx} graph={} {:?}: {:.3} ms (floor {:.3} ms, {:.0}%), wall {:.3} ms, {} kernels",
                                x.cuda_graph, x.tuning, x.step_ms, x.floor_ms, 100.0 * x.frac_of_floor, x.wall_ms, x.kernels_per_step
                            );
                        }
                        rows.extend(r.into_iter().map(|x| serde_json::to_value(x).unwrap_or(Value::Null)));
                    }
                    Err(e) => {
                        println!("decode B{b} ctx{ctx}: skipped: {e}");
                        rows.push(json!({ "batch": b, "context": ctx, "skipped": e.to_string() }));
                    }
                }
            }
        }
        write(&out.join("ch06_decode.json"), json!({ "machine": head, "model": "llama-7b shape, random f16 weights", "rows": rows }))?;
    }
    if sections.contains('c') {
        if let (Some(model), Some(workload)) = (arg(&args, "--model"), arg(&args, "--workload")) {
            let max = arg(&args, "--max-requests").and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
            throughput(&gpu, &out, &head, Path::new(&model), Path::new(&workload), max)?;
        } else {
            println!("section c skipped: needs --model DIR --workload FILE");
        }
    }
    if sections.contains('d') {
        scenario(&out, &head)?;
    }
    if sections.contains('e') {
        prefill(&gpu, &out, &head)?;
    }
    Ok(())
}

fn write(path: &Path, v: Value) -> Res<()> {
    std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")?;
    println!("wrote {}", path.display());
    Ok(())
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

// ANCHOR: throughput
/// The engine on every request of a workload file (all arriving at t = 0, ignoring EOS so each
/// produces exactly its max_new_tokens), with TTFT, TPOT and ITL percentiles.
fn throughput(gpu: &Gpu, out: &Path, head: &Value, model_dir: &Path, workload: &Path, max: usize) -> Res<()> {
    let model = ch00_model::Model::load(model_dir)?;
    // The card's ceilings, measured here: copy bandwidth (bytes read + written) and an f16 GEMM.
    let ceilings = Ceilings { bytes_per_s: copy_bandwidth(gpu)? * 1e9, flops_per_s: matmul_peak::<half::f16>(gpu, 8192)? };
    println!("roofline ceilings: {:.0} GB/s, {:.0} TFLOP/s (f16 8192^3 GEMM)", ceilings.bytes_per_s / 1e9, ceilings.flops_per_s / 1e12);
    let w: Value = serde_json::from_str(&std::fs::read_to_string(workload)?)?;
    let list = w.get("requests").unwrap_or(&w).as_array().ok_or("workload: expected a list")?;
    let reqs: Vec<Request> = list
        .iter()
        .take(max)
        .enumerate()
        .map(|(i, r)| {
            let prompt = r["prompt_ids"].as_array().map(|a| a.iter().filter_map(|t| t.as_u64()).map(|t| t as u32).collect()).unwrap_or_default();
            let n = r["max_new_tokens"].as_u64().unwrap_or(1) as usize;
            Request { ignore_eos: true, ..Request::greedy(i as u64, prompt, n) }
        })
        .collect();
    let max_len = reqs.iter().map(|r| r.prompt.len() + r.max_new_tokens).max().unwrap_or(1);
    let mut rows = Vec::new();
    for graphs in [true, false] {
        let mut e = CudaEngine {
            dtype: Some(DType::F16),
            cuda_graphs: graphs,
            ceilings: Some(ceilings),
            paged: PagedEngine { max_len: Some(max_len), ..Default::default() },
            ..Default::default()
        };
        let run = e.run(&model, &reqs, &RunOptions::default())?;
        let setup = e.last_setup.clone().unwrap_or_default();
        let mut ttft: Vec<f64> = run.outputs.iter().map(|o| o.ttft_s).collect();
        let mut tpot: Vec<f64> = run
            .outputs
            .iter()
            .filter(|o| o.tokens.len() > 1)
            .map(|o| o.token_latencies_s.iter().sum::<f64>() / (o.tokens.len() - 1) as f64)
            .collect();
        let mut itl: Vec<f64> = run.outputs.iter().flat_map(|o| o.token_latencies_s.iter().copied()).collect();
        let tokens: usize = run.outputs.iter().map(|o| o.tokens.len()).sum();
        let row = json!({
            "cuda_graphs": graphs,
            "requests": reqs.len(),
            "generated_tokens": tokens,
            "wall_s": run.stats.wall_s,
            "tokens_per_s": tokens as f64 / run.stats.wall_s,
            "steps": run.stats.steps,
            "mean_batch": run.stats.mean_batch_size,
            "peak_running": run.stats.peak_running,
            "preemptions": run.stats.preemptions,
            "ttft_s": { "p50": pct(&mut ttft, 50.0), "p90": pct(&mut ttft, 90.0), "p99": pct(&mut ttft, 99.0) },
            "tpot_s": { "p50": pct(&mut tpot, 50.0), "p90": pct(&mut tpot, 90.0), "p99": pct(&mut tpot, 99.0) },
            "itl_s": { "p50": pct(&mut itl, 50.0), "p90": pct(&mut itl, 90.0), "p99": pct(&mut itl, 99.0) },
            "num_blocks": setup.num_blocks,
            "kv_gib": setup.kv_bytes as f64 / GIB,
            "gpu": setup.stats,
            // The run against its roofline: Σ per step of max(bytes ÷ bandwidth, FLOPs ÷ peak).
            "roofline_s": setup.stats.roofline_s,
            "gpu_s": setup.stats.gpu_s,
            "frac_of_roofline": setup.stats.roofline_s / run.stats.wall_s,
            "host_s": run.stats.wall_s - setup.stats.gpu_s,
            "ceilings": ceilings,
            "first_tokens": run.outputs.iter().take(4).map(|o| o.tokens.iter().take(16).copied().collect::<Vec<_>>()).collect::<Vec<_>>(),
        });
        println!("throughput graphs={graphs}: {:.0} tokens/s over {} requests ({} steps, mean batch {:.1})", tokens as f64 / run.stats.wall_s, reqs.len(), run.stats.steps, run.stats.mean_batch_size);
        let st = &setup.stats;
        println!(
            "  roofline {:.3} s = {:.0}% of the wall {:.3} s; device time {:.3} s, host {:.3} s between passes",
            st.roofline_s, 100.0 * st.roofline_s / run.stats.wall_s, run.stats.wall_s, st.gpu_s, run.stats.wall_s - st.gpu_s
        );
        for (name, c) in [("decode-only", st.decode), ("with prompt tokens", st.prefill)] {
            println!(
                "  {name} steps: {} ({} tokens), device {:.3} s, roofline {:.3} s ({:.0}%)",
                c.steps, c.tokens, c.gpu_s, c.roofline_s, 100.0 * c.roofline_s / c.gpu_s.max(1e-12)
            );
        }
        rows.push(row);
    }
    write(&out.join("ch06_throughput.json"), json!({ "machine": head, "model": model_dir.display().to_string(), "rows": rows }))
}
// ANCHOR_END: throughput

const GIB: f64 = (1u64 << 30) as f64;

// ANCHOR: scenario
/// 7B weights and 16 requests of up to 8K tokens each, in the KV budget an 80 GB card leaves
/// (ch00's card model: `GPU_MEMORY_UTILIZATION` of `H100_80GB`, minus the weights and the
/// buffers counted here). Contiguous slots (chapter 4) reserve 8K tokens per request; the paged
/// engine holds only what each request has.
fn scenario(out: &Path, head: &Value) -> Res<()> {
    let c = LlamaConfig { max_position_embeddings: 8192, ..LlamaConfig::named("llama-7b")? };
    let max_len = 8192;
    let h100_bytes = H100_80GB.bytes() as f64;
    let per_token = kv_bytes_per_token(&c, DType::F16);
    let weights = ch06_cuda::weights::weight_bytes::<half::f16>(&c) as f64;
    // The engine's activation buffers at its defaults (4096 tokens, 256 sequences per pass).
    let cap = ch06_cuda::engine::capacity(16, max_len, 4096, 256);
    let activations = (ch06_cuda::model::buffer_bytes::<half::f16>(&c, &cap) + CUDA_CONTEXT_BYTES) as f64;
    let budget = H100_80GB.kv_budget(GPU_MEMORY_UTILIZATION, weights as u64, activations as u64) as f64;
    let block = 16usize;
    let num_blocks = (budget / (block as f64 * per_token as f64)).floor() as usize;
    // Chapter 4's rule: a slot per request, each reserving max_len tokens.
    let slot_bytes = (max_len as u64 * per_token) as f64;
    let slots = (budget / slot_bytes).floor() as usize;
    let contiguous = if slots >= 16 {
        format!("16 slots of {max_len} tokens fit")
    } else {
        format!(
            "refused: 16 slots × {max_len} tokens × {} KiB = {:.1} GiB > the {:.1} GiB budget; only {slots} fit at once",
            per_token / 1024,
            16.0 * slot_bytes / GIB,
            budget / GIB
        )
    };
    println!("80 GB scenario: KV budget {:.1} GiB = {num_blocks} blocks; contiguous: {contiguous}", budget / GIB);
    // 16 requests whose prompts (1K–6K) and outputs (128–512) vary, as real ones do.
    let reqs: Vec<Request> = (0..16)
        .map(|i| {
            let p = 1024 + (i * 331) % 5120;
            let prompt = (0..p).map(|j| ((i * 7919 + j * 31) % 31_000 + 3) as u32).collect();
            Request { ignore_eos: true, ..Request::greedy(i as u64, prompt, 128 + (i * 97) % 384) }
        })
        .collect();
    let used_tokens: usize = reqs.iter().map(|r| r.prompt.len() + r.max_new_tokens).sum();
    // The real run: random 7B weights on this GPU, the pool cut to the 80 GB budget.
    let mut e = CudaEngine {
        dtype: Some(DType::F16),
        num_blocks: Some(num_blocks),
        // Memory is the limit this scenario measures: no per-step limits (as chapter 5's capacity run).
        paged: PagedEngine {
            max_len: Some(max_len),
            block_size: block,
            max_running: Some(usize::MAX),
            max_tokens_per_step: Some(usize::MAX),
            ..Default::default()
        },
        ..Default::default()
    };
    let run = e.run_random(&c, 7, &reqs, &RunOptions::default())?;
    let info = e.last_run.clone().unwrap_or_default();
    let served = run.outputs.iter().filter(|o| !o.tokens.is_empty()).count();
    println!("paged: served {served}/16, peak running {}, preemptions {}", run.stats.peak_running, run.stats.preemptions);
    // Peak concurrency of both designs under the same budget on a longer real-length workload
    // (the scheduler alone, no model): slots reserve max_len, blocks hold what is used.
    let spec = ch00_serving::WorkloadSpec {
        n_requests: 200,
        prompt_len: ch00_serving::LengthDist::Uniform { lo: 512, hi: 4096 },
        output_len: ch00_serving::LengthDist::Exponential { mean: 512.0, min: 16, max: 4096 },
        arrivals: ch00_serving::Arrivals::AllAtOnce,
        seed: 0,
    };
    let workload = spec.generate(c.vocab_size);
    let slot_cfg = SlotConfig { num_slots: slots.max(1), max_running: slots.max(1), max_tokens_per_step: usize::MAX / 2 };
    let slot_series = simulate_slots(&workload, slot_cfg, max_len, per_token)?;
    let block_series = simulate_blocks(&workload, SchedulerConfig::new(num_blocks, block), max_len, per_token)?;
    write(
        &out.join("ch06_scenario.json"),
        json!({
            "machine": head,
            "model": "llama-7b shape, max_len 8192, random f16 weights",
            "h100_bytes": h100_bytes, "weight_bytes": weights, "activation_bytes": activations,
            "kv_budget_bytes": budget, "kv_bytes_per_token": per_token, "num_blocks": num_blocks, "block_size": block,
            "contiguous_slots": slots, "contiguous": contiguous,
            "requests": 16, "tokens_used": used_tokens, "tokens_reserved_contiguous": 16 * max_len,
            "paged_served": served, "paged_peak_running": run.stats.peak_running, "paged_preemptions": run.stats.preemptions,
            "paged_peak_blocks": info.peak_blocks_used, "paged_wall_s": run.stats.wall_s,
            "generated_tokens": run.stats.generated_tokens,
            "workload": "200 requests, prompts uniform 512-4096, outputs exponential mean 512 (16-4096), all queued at once",
            "workload_peak_running": { "contiguous": slot_series.peak_running(), "paged": block_series.peak_running() },
            "workload_mean_running": { "contiguous": slot_series.mean_running(), "paged": block_series.mean_running() },
        }),
    )
}
// ANCHOR_END: scenario

// ANCHOR: prefill
/// e. The prefill attention kernels alone at the 7B attention shape (f16, block 16), then whole
/// prefills on random 7B f16 weights: 16 prompts × 2048 tokens, and one 4000-token prompt's TTFT,
/// each with the prefill kernel and with the per-token paged kernel it replaces. Every engine
/// configuration runs twice (each run builds its engine afresh); the second run is reported.
fn prefill(gpu: &Gpu, out: &Path, head: &Value) -> Res<()> {
    let mha = AttnShape { heads: 32, kv_heads: 32, head_dim: 128 };
    let gqa = AttnShape { heads: 32, kv_heads: 8, head_dim: 128 };
    let tc = |warps, m_tiles, keys| PrefillVersion::TensorCores { warps, m_tiles, keys };
    let wg = |warpgroups, keys, stages, overlap| PrefillVersion::Wgmma { warpgroups, keys, stages, overlap };
    let mut kernel = Vec::new();
    for (shape, b, l, simple) in [(mha, 1, 4096, true), (mha, 8, 2048, false), (gqa, 8, 2048, false)] {
        // The Hopper versions are timed only where they compile (compute capability 9.0).
        let mut versions = vec![wg(3, 64, 2, false), wg(3, 64, 3, true), wg(2, 128, 2, false), wg(2, 128, 3, true)];
        versions.extend([tc(8, 1, 64), tc(4, 1, 64), tc(4, 2, 32), tc(8, 2, 32), tc(4, 2, 64)]);
        if simple {
            versions.push(PrefillVersion::Simple);
        }
        for r in prefill_attention::<half::f16>(gpu, shape, b, l, 16, &versions)? {
            println!("prefill attention B{b}×L{l} {}/{} {}: {:.1} us = {:.0} TFLOP/s", shape.heads, shape.kv_heads, r.version, r.us, r.tflops);
            kernel.push(r);
        }
    }
    let c = LlamaConfig::named("llama-7b")?;
    let prompts = |n: usize, len: usize| -> Vec<Request> {
        (0..n)
            .map(|i| {
                let prompt = (0..len).map(|j| ((i * 7919 + j * 31) % 31_000 + 3) as u32).collect();
                Request { ignore_eos: true, ..Request::greedy(i as u64, prompt, 1) }
            })
            .collect()
    };
    // FLOPs of one prefill: every linear layer on every token (lm_head on each prompt's last
    // one), plus causal attention (FlashAttention's count).
    let (h, inter, layers) = (c.hidden_size, c.intermediate_size, c.num_hidden_layers);
    let per_token = 2.0 * (layers * (h * (c.q_dim() + 2 * c.kv_dim()) + c.q_dim() * h + 3 * h * inter)) as f64;
    let mut whole = Vec::new();
    for (what, prefill_kernel, pass, n, len) in [
        ("16 × 2048, prefill kernel, passes of 4096 tokens", true, 4096, 16, 2048),
        ("16 × 2048, prefill kernel, passes of 16384 tokens", true, 16384, 16, 2048),
        ("16 × 2048, per-token kernel (before), passes of 4096", false, 4096, 16, 2048),
        ("1 × 4000 (TTFT), prefill kernel", true, 4096, 1, 4000),
        ("1 × 4000 (TTFT), per-token kernel (before)", false, 4096, 1, 4000),
    ] {
        let reqs = prompts(n, len);
        let mut e = CudaEngine {
            dtype: Some(DType::F16),
            num_blocks: Some(n * len / 16 + 64),
            prefill_kernel,
            max_tokens_per_pass: pass,
            cuda_graphs: false,
            paged: PagedEngine { max_len: Some(4096), max_tokens_per_step: Some(pass), ..Default::default() },
            ..Default::default()
        };
        let mut walls = Vec::new();
        let mut last = None;
        for _ in 0..2 {
            let run = e.run_random(&c, 7, &reqs, &RunOptions::default())?;
            walls.push(run.stats.wall_s);
            last = Some(run);
        }
        let run = last.ok_or("no run")?;
        let wall = run.stats.wall_s;
        let ttft = run.outputs.iter().map(|o| o.ttft_s).fold(0.0, f64::max);
        let flops = per_token * (n * len) as f64
            + 2.0 * (n * h * c.vocab_size) as f64
            + layers as f64 * ch06_cuda::prefill::flops(AttnShape::of(&c), &vec![(len, 0); n]);
        let passes = e.last_setup.as_ref().map_or(0, |s| s.stats.passes);
        println!(
            "whole prefill {what}: {wall:.3} s (runs {walls:.3?}), {:.0} tokens/s, last TTFT {ttft:.3} s, {:.0} TFLOP/s, {} steps, {passes} passes",
            (n * len) as f64 / wall,
            flops / wall / 1e12,
            run.stats.steps
        );
        whole.push(json!({
            "what": what, "prefill_kernel": prefill_kernel, "max_tokens_per_pass": pass, "prompts": n, "prompt_len": len,
            "wall_s": wall, "wall_s_runs": walls, "tokens_per_s": (n * len) as f64 / wall, "ttft_max_s": ttft,
            "flops": flops, "tflops": flops / wall / 1e12, "steps": run.stats.steps, "passes": passes,
        }));
    }
    write(
        &out.join("ch06_prefill.json"),
        json!({ "machine": head, "model": "llama-7b shape, random f16 weights", "kernel": kernel, "whole": whole }),
    )
}
// ANCHOR_END: prefill
