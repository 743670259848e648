//! The chapter-6 engine: chapter 5's engine with the GPU runner. It sizes the KV pool the way a
//! real server does — load the weights, run one profiling pass at the largest batch, then give
//! `gpu_memory_utilization` of the card to blocks — and hands the loop to `ch05::run_paged`.

use crate::device::Gpu;
use crate::float::GpuFloat;
use crate::kernels::{check_shape, Kernels};
use crate::model::{Capacity, GpuModel, KvCache};
use crate::runner::{GpuRunner, GpuStats};
use crate::weights::GpuWeights;
use ch00_model::rope::Rope;
use ch00_model::{AttnShape, DType, LlamaConfig, Model, ModelError, Result};
use ch00_serving::{Engine, Request, RunOptions, RunOutput, StepEngine};
use ch05_paged_attention::{run_paged, PagedCore, PagedEngine, SchedulerConfig, SchedulerStats};

/// PagedAttention on one NVIDIA GPU. With `cuda_graphs` on, run one engine per process at a time:
/// engines share the device's primary context, and another engine's frees or synchronisations
/// during a graph capture invalidate it.
#[derive(Debug, Clone)]
pub struct CudaEngine {
    /// Block size, maximum length, watermark, prefix sharing: chapter 5's settings, shared.
    pub paged: PagedEngine,
    /// Element type of weights, activations and KV; `None` = the checkpoint's (f16 if unknown).
    pub dtype: Option<DType>,
    /// Share of the card's memory the engine may fill (weights + activations + KV blocks).
    pub gpu_memory_utilization: f64,
    /// Exactly this many KV blocks instead of filling memory (tests use small pools).
    pub num_blocks: Option<usize>,
    /// Most tokens in one forward pass; longer prefills are run as several passes.
    pub max_tokens_per_pass: usize,
    /// Most sequences in one pass.
    pub max_rows: usize,
    pub cuda_graphs: bool,
    /// Prefill passes on the prefill attention kernel (prefill.rs); off: the per-token kernel.
    pub prefill_kernel: bool,
    pub ordinal: usize,
    /// Measure every step against these ceilings and time the passes (`GpuStats::roofline_s`,
    /// `gpu_s`); `None`: neither (no events).
    pub ceilings: Option<crate::roofline::Ceilings>,
    /// What the last run set up and did.
    pub last_setup: Option<GpuSetup>,
    /// The block scheduler's counters of the last run.
    pub last_run: Option<SchedulerStats>,
}

impl Default for CudaEngine {
    fn default() -> Self {
        CudaEngine {
            paged: PagedEngine::default(),
            dtype: None,
            gpu_memory_utilization: 0.9,
            num_blocks: None,
            max_tokens_per_pass: 4096,
            max_rows: 256,
            cuda_graphs: true,
            prefill_kernel: true,
            ordinal: 0,
            ceilings: None,
            last_setup: None,
            last_run: None,
        }
    }
}

/// What the engine found and allocated on the card.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuSetup {
    pub device: String,
    pub dtype: String,
    pub total_bytes: u64,
    pub weight_bytes: u64,
    /// Device memory in use after the weights, buffers and the profiling pass, before KV.
    pub used_before_kv: u64,
    pub num_blocks: usize,
    pub block_size: usize,
    pub kv_bytes: u64,
    /// Tokens the pool holds at once: num_blocks × block_size.
    pub max_concurrent_tokens: usize,
    pub stats: GpuStats,
}

impl CudaEngine {
    fn dtype_for(&self, config: &LlamaConfig) -> DType {
        self.dtype.or(config.dtype).unwrap_or(DType::F16)
    }

    // ANCHOR: run_typed
    fn run_typed<T: GpuFloat>(&mut self, source: Weights<'_>, requests: &[Request], opts: &RunOptions) -> Result<RunOutput> {
        let (mut runner, cfg, max_len, mut setup) = self.build::<T>(source)?;
        let (out, info) = run_paged(&mut runner, cfg, max_len, requests, opts)?;
        setup.stats = runner.stats.clone();
        self.last_setup = Some(setup);
        self.last_run = Some(info);
        Ok(out)
    }

    /// Uploads (or makes) the weights, sizes the KV pool and builds the GPU runner.
    fn build<T: GpuFloat>(&self, source: Weights<'_>) -> Result<(GpuRunner<T>, SchedulerConfig, usize, GpuSetup)> {
        let c = source.config().clone();
        let (cfg, max_len) = self.paged.scheduler_config_for(&c)?;
        let gpu = Gpu::new(self.ordinal)?;
        let kernels = Kernels::<T>::new(&gpu, AttnShape::of(&c))?;
        let weights = match source {
            Weights::Model(m) => GpuWeights::<T>::upload(&gpu, m)?,
            Weights::Random(c, seed) => GpuWeights::<T>::random(&gpu, &kernels, c, Rope::new(c).inv_freq(), seed)?,
        };
        let weight_bytes = weights.bytes;
        let cap = capacity(cfg.block_size, max_len, self.max_tokens_per_pass, self.max_rows);
        let mut gm = GpuModel::new(&gpu, c.clone(), kernels, weights, cap)?;
        let num_blocks = match self.num_blocks {
            Some(n) => n,
            None => blocks_that_fit::<T>(&gpu, &mut gm, cfg.block_size, self.gpu_memory_utilization)?,
        };
        let used_before_kv = gpu.mem_info().map(|(free, total)| (total - free) as u64)?;
        let kv = KvCache::<T>::new(&gpu, &c, num_blocks, cfg.block_size)?;
        // Chapter 5's rules for the pool actually made: watermark, and chapter 4's per-step limits.
        let cfg = self.paged.pool_config(num_blocks, max_len);
        let setup = GpuSetup {
            device: gpu.name(),
            dtype: format!("{:?}", T::DTYPE).to_lowercase(),
            total_bytes: gpu.mem_info()?.1 as u64,
            weight_bytes,
            used_before_kv,
            num_blocks,
            block_size: cfg.block_size,
            kv_bytes: num_blocks as u64 * KvCache::<T>::block_bytes(&c, cfg.block_size),
            max_concurrent_tokens: num_blocks * cfg.block_size,
            stats: GpuStats::default(),
        };
        let mut runner = GpuRunner::new(gpu, gm, kv, max_len, self.cuda_graphs);
        runner.prefill_kernel = self.prefill_kernel;
        runner.ceilings = self.ceilings;
        runner.capture_graphs()?; // before the first request, not inside its TTFT
        Ok((runner, cfg, max_len, setup))
    }

    /// Runs on deterministic random weights made on the GPU (shapes too big for the CPU model,
    /// e.g. 7B for the benchmarks).
    pub fn run_random(&mut self, config: &LlamaConfig, seed: u64, requests: &[Request], opts: &RunOptions) -> Result<RunOutput> {
        self.dispatch(Weights::Random(config, seed), requests, opts)
    }

    fn dispatch(&mut self, source: Weights<'_>, requests: &[Request], opts: &RunOptions) -> Result<RunOutput> {
        let c = source.config();
        check_shape(AttnShape::of(c))?;
        match self.dtype_for(c) {
            DType::F32 => self.run_typed::<f32>(source, requests, opts),
            DType::F16 => self.run_typed::<half::f16>(source, requests, opts),
            DType::BF16 => self.run_typed::<half::bf16>(source, requests, opts),
        }
    }
    // ANCHOR_END: run_typed
}

impl Engine for CudaEngine {
    fn name(&self) -> &'static str {
        "ch06-cuda"
    }

    fn run(&mut self, model: &Model, requests: &[Request], opts: &RunOptions) -> Result<RunOutput> {
        self.dispatch(Weights::Model(model), requests, opts)
    }

    /// Chapter 5's `PagedCore` over the GPU runner: the server drives the GPU step by step.
    fn stepper<'m>(&self, model: &'m Model) -> Result<Box<dyn StepEngine + 'm>> {
        self.core(Weights::Model(model))
    }
}

impl CudaEngine {
    /// The same on deterministic random weights made on the card (the benchmarks' 7B shapes).
    pub fn stepper_random(&self, config: &LlamaConfig, seed: u64) -> Result<Box<dyn StepEngine>> {
        self.core(Weights::Random(config, seed))
    }

    fn core(&self, source: Weights<'_>) -> Result<Box<dyn StepEngine>> {
        check_shape(AttnShape::of(source.config()))?;
        fn core<T: GpuFloat>(e: &CudaEngine, source: Weights<'_>) -> Result<Box<dyn StepEngine>> {
            let (runner, cfg, max_len, _) = e.build::<T>(source)?;
            Ok(Box::new(PagedCore::new(runner, cfg, max_len, RunOptions::default())?))
        }
        match self.dtype_for(source.config()) {
            DType::F32 => core::<f32>(self, source),
            DType::F16 => core::<half::f16>(self, source),
            DType::BF16 => core::<half::bf16>(self, source),
        }
    }
}

/// Where the weights come from: a CPU model to upload, or random ones made on the device.
#[derive(Clone, Copy)]
enum Weights<'a> {
    Model(&'a Model),
    Random(&'a LlamaConfig, u64),
}

impl Weights<'_> {
    fn config(&self) -> &LlamaConfig {
        match self {
            Weights::Model(m) => &m.config,
            Weights::Random(c, _) => c,
        }
    }
}

/// Buffer sizes for a model: `max_tokens` per pass, `max_rows` sequences, and attention scratch
/// for the larger of a full pass at two partitions or the biggest decode graph at `max_len`.
pub fn capacity(block_size: usize, max_len: usize, max_tokens: usize, max_rows: usize) -> Capacity {
    let max_parts = GpuModel::<f32>::parts_for(max_len);
    Capacity {
        max_tokens,
        max_rows,
        max_blocks: max_len.div_ceil(block_size),
        max_query_parts: (max_tokens * 2).max(max_rows.min(max_tokens) * max_parts).max(max_parts),
    }
}

// ANCHOR: profile
/// How many KV blocks fit: run one pass at the largest token count (its K/V goes nowhere), see
/// what the card has left, and give blocks everything up to `utilization` of its memory.
pub fn blocks_that_fit<T: GpuFloat>(gpu: &Gpu, model: &mut GpuModel<T>, block_size: usize, utilization: f64) -> Result<usize> {
    if !(utilization > 0.0 && utilization <= 1.0) {
        return Err(ModelError::InvalidSettings(format!("gpu_memory_utilization {utilization} must be in (0, 1]")));
    }
    let c = model.config.clone();
    let probe = KvCache::<T>::new(gpu, &c, 1, block_size)?;
    let n = model.cap.max_tokens;
    let l = model.layout;
    let mut meta = vec![0i32; l.len];
    // (n tokens of one sequence, no block table needed)
    for i in 0..n {
        meta[l.pos + i] = i as i32;
        meta[l.slot + i] = -1; // profile only: write no K/V and attend to nothing
    }
    model.upload_meta(gpu, &meta)?;
    // SAFETY: every slot is −1 (no K/V written) and every context 0 (attention reads no table);
    // tokens and the logit row are 0, in range; `probe` is on `gpu`, and so is `model`, taken to
    // be as `GpuModel::new` made it (its fields are public: hand-edited ones void this).
    unsafe { model.forward(gpu, &probe, n, 1, 1)? };
    gpu.sync()?;
    drop(probe);
    let (free, total) = gpu.mem_info()?;
    let keep_free = (1.0 - utilization) * total as f64;
    let budget = free as f64 - keep_free;
    let block_bytes = KvCache::<T>::block_bytes(&c, block_size) as f64;
    let blocks = (budget / block_bytes).floor();
    if blocks < 1.0 {
        return Err(ModelError::Device(format!(
            "no room for KV blocks: {:.2} GiB free of {:.2} GiB, {:.0}% must stay free; raise --gpu-memory-utilization",
            free as f64 / GIB,
            total as f64 / GIB,
            (1.0 - utilization) * 100.0
        )));
    }
    Ok(blocks as usize)
}
// ANCHOR_END: profile

const GIB: f64 = (1u64 << 30) as f64;
