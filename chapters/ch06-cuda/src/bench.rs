//! Measurements on the GPU, each beside its floor: the paged-attention kernel against the K/V
//! bytes it must read, and a whole decode step against the weights plus K/V it must read, both
//! divided by the copy bandwidth measured in the same process. Timed with CUDA events after a
//! warm-up; the median of many repeats is reported.

use crate::device::{device_err, ptr, Gpu};
use crate::float::GpuFloat;
use crate::kernels::{AttentionIo, Kernels, StepTuning, MIN_PART, PART};
use crate::model::{Capacity, GpuModel, KvCache};
use crate::weights::GpuWeights;
use ch00_model::rope::Rope;
use ch00_model::{AttnShape, LlamaConfig, Result};
use cudarc::driver::sys::{CUevent_flags, CUgraphInstantiate_flags, CUstreamCaptureMode};
use serde::Serialize;

/// Median milliseconds of `f` over `iters` runs (after `warmup` runs), timed by CUDA events.
pub fn time_ms(gpu: &Gpu, warmup: usize, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let ev = || gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| device_err("creating an event", e));
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let (start, end) = (ev()?, ev()?);
        start.record(&gpu.stream).map_err(|e| device_err("recording an event", e))?;
        f()?;
        end.record(&gpu.stream).map_err(|e| device_err("recording an event", e))?;
        end.synchronize().map_err(|e| device_err("waiting for an event", e))?;
        times.push(start.elapsed_ms(&end).map_err(|e| device_err("event time", e))? as f64);
    }
    Ok(median(&mut times))
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

// ANCHOR: copy_bandwidth
/// Device-to-device copy bandwidth in GB/s (bytes read + bytes written per second), on 2 GiB.
pub fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
    let n = 1usize << 31;
    let src = gpu.zeros::<u8>("the bandwidth probe", n)?;
    let mut dst = gpu.zeros::<u8>("the bandwidth probe", n)?;
    let ms = time_ms(gpu, 2, 10, || gpu.stream.memcpy_dtod(&src, &mut dst).map_err(|e| device_err("copy", e)))?;
    Ok(2.0 * n as f64 / (ms * 1e-3) / 1e9)
}
// ANCHOR_END: copy_bandwidth

/// The dense matmul ceiling in FLOP/s: an n × n × n cuBLAS GEMM in T (f32 accumulation) on
/// uniform random data, the ceiling the run roofline sets compute-bound steps against.
pub fn matmul_peak<T: GpuFloat>(gpu: &Gpu, n: usize) -> Result<f64> {
    let k = Kernels::<T>::new(gpu, AttnShape { heads: 1, kv_heads: 1, head_dim: 64 })?;
    let mut a = gpu.zeros::<T>("matmul probe", n * n)?;
    let mut b = gpu.zeros::<T>("matmul probe", n * n)?;
    let c = gpu.zeros::<T>("matmul probe", n * n)?;
    k.fill_uniform(gpu, &mut a, 1, 1.0)?;
    k.fill_uniform(gpu, &mut b, 2, 1.0)?;
    // SAFETY: a, b and c hold n·n elements each, alive for the timing.
    let ms = time_ms(gpu, 3, 20, || unsafe { crate::kernels::linear::<T>(gpu, ptr(gpu, &a), ptr(gpu, &b), ptr(gpu, &c), n, n, n) })?;
    Ok(2.0 * (n as f64).powi(3) / (ms * 1e-3))
}

#[derive(Debug, Clone, Serialize)]
pub struct AttentionRow {
    pub batch: usize,
    pub context: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub us: f64,
    /// K and V bytes the kernel must read once.
    pub kv_bytes: u64,
    pub gbps: f64,
    /// Achieved bandwidth ÷ measured copy bandwidth.
    pub frac_of_copy_bw: f64,
}

/// Decode attention: `batch` sequences of `context` positions each, K/V scattered over a shuffled
/// pool of `block_size`-token blocks, one query token per sequence.
pub fn attention<T: GpuFloat>(gpu: &Gpu, shape: AttnShape, batch: usize, context: usize, block_size: usize, copy_gbps: f64) -> Result<AttentionRow> {
    let k = Kernels::<T>::new(gpu, shape)?;
    let per_seq = context.div_ceil(block_size);
    let num_blocks = batch * per_seq;
    let kv_elems = num_blocks * block_size * shape.kv_dim();
    let mut kc = gpu.zeros::<T>("K", kv_elems)?;
    let mut vc = gpu.zeros::<T>("V", kv_elems)?;
    k.fill_uniform(gpu, &mut kc, 1, 1.0)?;
    k.fill_uniform(gpu, &mut vc, 2, 1.0)?;
    let mut q = gpu.zeros::<T>("q", batch * shape.q_dim())?;
    k.fill_uniform(gpu, &mut q, 3, 1.0)?;
    // Sequence i owns blocks permuted over the pool, so reads really are scattered.
    let mut ids: Vec<i32> = (0..num_blocks as i32).collect();
    let mut state = 0x2545F4914F6CDD1Du64;
    for i in (1..ids.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ids.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let tables = gpu.upload("block tables", &ids)?;
    let rows = gpu.upload("rows", &(0..batch as i32).collect::<Vec<_>>())?;
    let ctx = gpu.upload("contexts", &vec![context as i32; batch])?;
    let parts = GpuModel::<T>::parts_for(context);
    let room = batch * parts * (PART / MIN_PART); // as the engine's buffers: room to split a small batch
    let part_o = gpu.zeros::<f32>("partitions", room * shape.q_dim())?;
    let part_ml = gpu.zeros::<f32>("partitions", room * shape.heads * 2)?;
    let out = gpu.zeros::<T>("out", batch * shape.q_dim())?;
    let done = gpu.zeros::<i32>("partition counters", batch * shape.heads)?; // as the engine's
    let io = AttentionIo {
        q: ptr(gpu, &q),
        k_cache: ptr(gpu, &kc),
        v_cache: ptr(gpu, &vc),
        tables: ptr(gpu, &tables),
        rows: ptr(gpu, &rows),
        ctx_lens: ptr(gpu, &ctx),
        part_o: ptr(gpu, &part_o),
        part_ml: ptr(gpu, &part_ml),
        out: ptr(gpu, &out),
        done: ptr(gpu, &done),
    };
    // SAFETY: the buffers above are alive for the timing, sized for `batch` queries of `parts`
    // partitions over `num_blocks` blocks; each row's table holds `per_seq` of those blocks, enough
    // for `context` positions, and `parts` covers `context`.
    let ms = time_ms(gpu, 5, 50, || unsafe { k.attention(gpu, &io, batch, block_size, per_seq, parts, room) })?;
    let kv_bytes = (2 * batch * context * shape.kv_dim() * std::mem::size_of::<T>()) as u64;
    let gbps = kv_bytes as f64 / (ms * 1e-3) / 1e9;
    Ok(AttentionRow {
        batch,
        context,
        heads: shape.heads,
        kv_heads: shape.kv_heads,
        head_dim: shape.head_dim,
        block_size,
        us: ms * 1e3,
        kv_bytes,
        gbps,
        frac_of_copy_bw: gbps / copy_gbps,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct DecodeRow {
    pub batch: usize,
    pub context: usize,
    pub cuda_graph: bool,
    /// Device time of one step (events around the launches or the graph replay).
    pub step_ms: f64,
    /// Host wall time of one step as the engine runs it: upload metadata, launch, read ids.
    pub wall_ms: f64,
    pub tokens_per_s: f64,
    pub weight_bytes: u64,
    pub kv_bytes: u64,
    /// (weights + K/V read) ÷ copy bandwidth.
    pub floor_ms: f64,
    pub frac_of_floor: f64,
    /// The decode-step switches this row ran with.
    pub tuning: StepTuning,
    /// Kernels in one step: the captured graph's nodes (cuBLAS's own launches included).
    pub kernels_per_step: usize,
}

// ANCHOR: decode_bench
/// One decode step of `batch` sequences that each have `context` positions cached, on `model`
/// (random weights made on the device), with and without a CUDA graph.
pub fn decode_steps<T: GpuFloat>(gpu: &Gpu, config: &LlamaConfig, batches: &[usize], contexts: &[usize], copy_gbps: f64, tunings: &[StepTuning]) -> Result<Vec<DecodeRow>> {
    let shape = AttnShape::of(config);
    let kernels = Kernels::<T>::new(gpu, shape)?;
    let weights = GpuWeights::<T>::random(gpu, &kernels, config, Rope::new(config).inv_freq(), 7)?;
    let weight_bytes = weights.bytes;
    let block_size = 16;
    let (max_b, max_ctx) = (batches.iter().copied().max().unwrap_or(1), contexts.iter().copied().max().unwrap_or(1) + 1);
    let max_parts = GpuModel::<T>::parts_for(max_ctx);
    let cap = Capacity { max_tokens: max_b, max_rows: max_b, max_blocks: max_ctx.div_ceil(block_size), max_query_parts: max_b * max_parts * (PART / MIN_PART) };
    let mut model = GpuModel::new(gpu, config.clone(), kernels, weights, cap)?;
    let mut rows = Vec::new();
    for &ctx in contexts {
        for &b in batches {
            let per_seq = (ctx + 1).div_ceil(block_size);
            let mut kv = match KvCache::<T>::new(gpu, config, b * per_seq, block_size) {
                Ok(kv) => kv,
                Err(e) => return Err(ch00_model::ModelError::Device(format!("B={b} ctx={ctx}: {e}"))),
            };
            model.kernels.fill_uniform(gpu, &mut kv.k, 11, 1.0)?;
            model.kernels.fill_uniform(gpu, &mut kv.v, 12, 1.0)?;
            let l = model.layout;
            let mut meta = vec![0i32; l.len];
            for i in 0..b {
                meta[l.tokens + i] = (i * 7 % config.vocab_size) as i32;
                meta[l.pos + i] = ctx as i32;
                meta[l.slot + i] = ((i * per_seq + ctx / block_size) * block_size + ctx % block_size) as i32;
                meta[l.rows + i] = i as i32;
                meta[l.ctx + i] = ctx as i32 + 1;
                meta[l.logit_idx + i] = i as i32;
                for j in 0..per_seq {
                    meta[l.tables + i * cap.max_blocks + j] = (i * per_seq + j) as i32;
                }
            }
            model.upload_meta(gpu, &meta)?;
            let kv_bytes = (b * (ctx + 1)) as u64 * KvCache::<T>::block_bytes(config, 1);
            let floor_ms = (weight_bytes + kv_bytes) as f64 / (copy_gbps * 1e9) * 1e3;
            for &tuning in tunings {
                model.kernels.tuning = tuning;
                // Eager: every launch from the host.
                // SAFETY (here and below): sequence i's table holds its own `per_seq` blocks of the
                // `b · per_seq` in `kv`, enough for `ctx + 1` positions, which `max_parts` covers; its
                // slot is in its last block; tokens are below the vocabulary; rows and logit rows i < b.
                let eager = time_ms(gpu, 3, 20, || unsafe { model.forward(gpu, &kv, b, b, max_parts) })?;
                // Graph: the same launches captured once and replayed.
                let stream = gpu.stream.clone();
                stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(|e| device_err("capture", e))?;
                let captured = unsafe { model.forward(gpu, &kv, b, b, max_parts) };
                let graph = stream.end_capture(CUgraphInstantiate_flags(0)).map_err(|e| device_err("capture", e))?;
                captured?;
                let graph = graph.ok_or_else(|| ch00_model::ModelError::Device("empty graph".into()))?;
                let mut nodes = 0usize;
                // SAFETY: the graph is alive; a null node array asks only for the count.
                unsafe { cudarc::driver::sys::cuGraphGetNodes(graph.cu_graph(), std::ptr::null_mut(), &mut nodes) }
                    .result()
                    .map_err(|e| device_err("counting graph nodes", e))?;
                let replay = time_ms(gpu, 3, 20, || graph.launch().map_err(|e| device_err("replay", e)))?;
                // Wall time per step as the runner does it: metadata up, replay, ids down.
                let t = std::time::Instant::now();
                let steps = 20;
                for _ in 0..steps {
                    model.upload_meta(gpu, &meta)?;
                    graph.launch().map_err(|e| device_err("replay", e))?;
                    model.ids(gpu, b)?;
                }
                let wall_ms = t.elapsed().as_secs_f64() * 1e3 / steps as f64;
                for (cuda_graph, step_ms) in [(false, eager), (true, replay)] {
                    rows.push(DecodeRow {
                        batch: b,
                        context: ctx,
                        cuda_graph,
                        step_ms,
                        wall_ms: if cuda_graph { wall_ms } else { f64::NAN },
                        tokens_per_s: b as f64 / (step_ms * 1e-3),
                        weight_bytes,
                        kv_bytes,
                        floor_ms,
                        frac_of_floor: floor_ms / step_ms,
                        tuning,
                        kernels_per_step: nodes,
                    });
                }
            }
        }
    }
    Ok(rows)
}
// ANCHOR_END: decode_bench

#[derive(Debug, Clone, Serialize)]
pub struct PrefillRow {
    pub batch: usize,
    pub len: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub version: String,
    pub us: f64,
    /// FlashAttention's count for causal attention: 4 · heads · head_dim · L(L+1)/2 per sequence.
    pub flops: f64,
    pub tflops: f64,
}

// ANCHOR: prefill_bench
/// Causal prefill attention of `batch` prompts of `len` tokens each (no cached prefix), K/V
/// scattered over a shuffled pool of `block_size`-token blocks, for each of `versions`.
pub fn prefill_attention<T: GpuFloat>(
    gpu: &Gpu,
    shape: AttnShape,
    batch: usize,
    len: usize,
    block_size: usize,
    versions: &[crate::prefill::PrefillVersion],
) -> Result<Vec<PrefillRow>> {
    use crate::prefill::{flops, PrefillIo, PrefillKernels, PrefillVersion};
    let k = Kernels::<T>::new(gpu, shape)?;
    let pk = PrefillKernels::new::<T>(gpu, shape, versions)?;
    let per_seq = len.div_ceil(block_size);
    let num_blocks = batch * per_seq;
    let mut kc = gpu.zeros::<T>("K", num_blocks * block_size * shape.kv_dim())?;
    let mut vc = gpu.zeros::<T>("V", num_blocks * block_size * shape.kv_dim())?;
    let mut q = gpu.zeros::<T>("q", batch * len * shape.q_dim())?;
    k.fill_uniform(gpu, &mut kc, 1, 1.0)?;
    k.fill_uniform(gpu, &mut vc, 2, 1.0)?;
    k.fill_uniform(gpu, &mut q, 3, 1.0)?;
    let out = gpu.zeros::<T>("out", batch * len * shape.q_dim())?;
    let mut ids: Vec<i32> = (0..num_blocks as i32).collect();
    let mut state = 0x2545F4914F6CDD1Du64;
    for i in (1..ids.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ids.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let tables = gpu.upload("block tables", &ids)?;
    let starts = gpu.upload("starts", &(0..=batch).map(|b| (b * len) as i32).collect::<Vec<_>>())?;
    let pos = gpu.upload("positions", &(0..batch * len).map(|i| (i % len) as i32).collect::<Vec<_>>())?;
    let io = PrefillIo {
        q: ptr(gpu, &q),
        k_cache: ptr(gpu, &kc),
        v_cache: ptr(gpu, &vc),
        tables: ptr(gpu, &tables),
        seq_start: ptr(gpu, &starts),
        pos: ptr(gpu, &pos),
        out: ptr(gpu, &out),
    };
    let fl = flops(shape, &vec![(len, 0); batch]);
    let mut rows = Vec::new();
    for &v in versions.iter().filter(|v| pk.has(**v)) {
        let iters = if v == PrefillVersion::Simple { 3 } else { 20 };
        // SAFETY: the buffers above are alive for the timing: `batch` sequences of `len` rows at
        // positions 0.., each with its own `per_seq` blocks of the pool, enough for `len`.
        let ms = time_ms(gpu, 2, iters, || unsafe { pk.launch(gpu, &io, v, batch, len, block_size, per_seq) })?;
        rows.push(PrefillRow {
            batch,
            len,
            heads: shape.heads,
            kv_heads: shape.kv_heads,
            head_dim: shape.head_dim,
            block_size,
            version: format!("{v:?}"),
            us: ms * 1e3,
            flops: fl,
            tflops: fl / (ms * 1e-3) / 1e12,
        });
    }
    Ok(rows)
}
// ANCHOR_END: prefill_bench
