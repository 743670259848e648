//! The chapter's CUDA C kernels, compiled by NVRTC for one element type and one attention shape,
//! and the Rust that launches them. Arguments are raw device addresses (`u64`): every buffer is
//! allocated once up front, so the addresses stay valid and CUDA graphs can replay them.
//!
//! # Safety
//!
//! A launcher that takes addresses is an `unsafe fn`: the kernels index their buffers by the shape
//! arguments and by ids stored in the buffers themselves (token ids, slots, block ids), which the
//! Rust side cannot see. Each launcher's `# Safety` section lists its buffers as
//! `name (elements) type`, `T` being the kernels' element type; for every one the caller promises:
//!
//! - it is a device allocation of `gpu`'s context (an address from [`ptr`](crate::device::ptr), or
//!   an offset into one) holding at least that many elements of that type, aligned to the type,
//!   and to 16 bytes where a kernel reads it with vector loads (the GEMV's `w` and `x`, attention's
//!   `q` and caches; allocations are 256-byte aligned, so an offset into one keeps this when it is
//!   a multiple of 16 bytes);
//! - it stays allocated until the launch has run: launches are asynchronous, in order on
//!   `gpu.stream`, and a launch captured in a CUDA graph uses the same addresses at every replay;
//! - nothing else writes it meanwhile (all our work is on the one stream, so in stream order);
//! - outputs overlap no other argument (the kernels declare their pointers `__restrict__`);
//! - every id it holds is in the range stated.
//!
//! [`Kernels::fill_uniform`] and [`Kernels::fill_const`] take a `CudaSlice` instead, whose length
//! is known, so they are safe.

use crate::device::{device_err, Gpu};
use crate::float::GpuFloat;
use crate::prefill::{PrefillKernels, DEFAULT_VERSIONS};
use ch00_model::{AttnShape, ModelError, Result};
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t};
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
use std::marker::PhantomData;

/// Context positions one attention thread block covers; longer contexts are split.
pub const PART: usize = 512;
// ANCHOR: partition_split
/// The shortest partition [`partition_split`] cuts to, and the grid it aims for: two blocks
/// for each SM of an H100/H200 (132), so that a batch of one still streams its K/V from every SM.
pub const MIN_PART: usize = 64;
const TARGET_BLOCKS: usize = 264;

/// How many pieces each PART-position partition is cut into for a launch of `blocks` thread
/// blocks (queries × head groups × partitions) using `pairs` (query, partition) pairs of the
/// partition buffers' `room`: halved until the grid reaches TARGET_BLOCKS, a partition would drop
/// below MIN_PART positions, or the buffers run out. A decode step of one sequence otherwise runs
/// a few dozen blocks, each walking 512 positions alone, while most SMs idle.
pub fn partition_split(blocks: usize, pairs: usize, room: usize) -> usize {
    let mut split = 1;
    while blocks * split < TARGET_BLOCKS && PART / (2 * split) >= MIN_PART && pairs * 2 * split <= room {
        split *= 2;
    }
    split
}
// ANCHOR_END: partition_split
/// Head sizes the attention kernel is compiled for.
pub const HEAD_DIMS: [usize; 5] = [16, 32, 64, 128, 256];

/// All kernels for element type `T` and one attention shape.
pub struct Kernels<T> {
    pub shape: AttnShape,
    /// Query heads one attention block handles (they share its K/V reads).
    pub group_chunk: usize,
    /// Decode attention runs on tensor cores (`paged_attention_tc`): see [`decode_on_tensor_cores`].
    pub decode_tc: bool,
    /// The decode-step optimisations, all on by default (off: the before/after table).
    pub tuning: StepTuning,
    embedding: CudaFunction,
    gather_rows: CudaFunction,
    add_rmsnorm: CudaFunction,
    rope_cache: CudaFunction,
    copy_blocks: CudaFunction,
    silu_mul: CudaFunction,
    argmax: CudaFunction,
    attention: CudaFunction,
    attention_reduce: CudaFunction,
    fill_uniform: CudaFunction,
    fill_const: CudaFunction,
    gemv: CudaFunction,
    gemv_swiglu: CudaFunction,
    gemv_norm: CudaFunction,
    gemv_swiglu_norm: CudaFunction,
    /// Prefill attention (many query rows per sequence): prefill.rs.
    pub prefill: PrefillKernels,
    _t: PhantomData<T>,
}

// ANCHOR: step_tuning
/// What a decode step does beyond the plain kernels; each can be switched off to measure it
/// (gpu_bench section b's before/after ladder). The default turns on all that the GPU supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StepTuning {
    /// A small batch cuts its attention partitions finer so that the grid fills the GPU.
    pub split_partitions: bool,
    /// gate/up GEMV and SiLU·mul in one kernel (`gemv_swiglu`) for GEMV-sized batches.
    pub fuse_swiglu: bool,
    /// Programmatic dependent launch (sm_90+): each kernel of the step is scheduled while its
    /// predecessor drains, and the GEMV's first weight loads overlap it.
    pub pdl: bool,
    /// The residual add and RMSNorm computed by the GEMV that reads them (`gemv_norm`), for
    /// GEMV-sized batches: no add_rmsnorm launch inside the layers.
    pub fuse_norm: bool,
    /// The last attention block of each (query, head group) merges the partitions
    /// (`fold_partitions`): no reduce launch per layer.
    pub fold_merge: bool,
}

impl StepTuning {
    pub const NONE: StepTuning = StepTuning {
        split_partitions: false,
        fuse_swiglu: false,
        pdl: false,
        fuse_norm: false,
        fold_merge: false,
    };
    /// Every switch that a GPU of this compute capability runs, the GPU tests pass with, and the
    /// ladder measured faster.
    pub fn best(capability: (i32, i32)) -> StepTuning {
        StepTuning {
            split_partitions: true,
            fuse_swiglu: true,
            pdl: capability.0 >= 9,
            // Both pass the kernel GPU tests (vs the CPU reference), and neither pays (--ladder on an
            // H100, book/src/generated/gpu/ch06-decode-fusions.md): the fused norm is slower, as
            // every GEMV block recomputes its input row's norm from L2 before it streams weights;
            // the folded merge saves a launch a layer and no measurable time.
            fuse_norm: false,
            fold_merge: false,
        }
    }
}
// ANCHOR_END: step_tuning

/// Launches `f` with the programmatic-stream-serialization attribute (PDL): it may be scheduled
/// before the previous kernel on the stream has finished; the kernel's `griddepcontrol.wait`
/// (common.cuh's pdl_wait) holds it until that kernel's writes are visible.
///
/// # Safety
/// As a plain launch: `params` points at the kernel's arguments, in order and type, and the kernel
/// calls pdl_wait before it reads or writes any buffer that an earlier kernel touches.
unsafe fn launch_programmatic(
    gpu: &Gpu,
    f: &CudaFunction,
    c: LaunchConfig,
    params: &mut [*mut std::ffi::c_void],
) -> Result<()> {
    use cudarc::driver::sys;
    // SAFETY: a zeroed attribute is valid C data; the fields set below are the ones its id reads.
    let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
    attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr.value.programmaticStreamSerializationAllowed = 1;
    let config = sys::CUlaunchConfig {
        gridDimX: c.grid_dim.0,
        gridDimY: c.grid_dim.1,
        gridDimZ: c.grid_dim.2,
        blockDimX: c.block_dim.0,
        blockDimY: c.block_dim.1,
        blockDimZ: c.block_dim.2,
        sharedMemBytes: c.shared_mem_bytes,
        hStream: gpu.stream.cu_stream(),
        attrs: &mut attr,
        numAttrs: 1,
    };
    gpu.stream
        .context()
        .bind_to_thread()
        .map_err(|e| device_err("binding the context", e))?;
    // SAFETY: config and attr outlive the call; params is this fn's contract.
    unsafe {
        sys::cuLaunchKernelEx(
            &config,
            f.cu_function(),
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    }
    .result()
    .map_err(|e| device_err("cuLaunchKernelEx", e))
}

/// A kernel argument's address, for [`launch_programmatic`]'s parameter array. Implemented for
/// the scalar types the kernels take only: a blanket impl over `Copy` would also cover the
/// `&dyn KernelArg` references themselves and hand the kernel their addresses instead.
trait KernelArg {
    fn addr(&self) -> *mut std::ffi::c_void;
}
macro_rules! kernel_arg {
    ($($t:ty),*) => {$(
        impl KernelArg for $t {
            fn addr(&self) -> *mut std::ffi::c_void {
                self as *const $t as *mut std::ffi::c_void
            }
        }
    )*};
}
kernel_arg!(u64, i64, u32, i32, f32);

fn cfg(grid: (u32, u32, u32), block: u32) -> LaunchConfig {
    cfg_smem(grid, block, 0)
}

fn cfg_smem(grid: (u32, u32, u32), block: u32, smem: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: grid, block_dim: (block, 1, 1), shared_mem_bytes: smem as u32 }
}

/// Dynamic shared memory a `gemv_norm` block may use for its normed rows.
const NORM_SMEM: usize = 48 << 10;

/// The residual add and RMSNorm in front of a GEMV (device addresses): x (n, in) f32 + delta
/// (n, in) T (0: none), normed with weights w (in) T; a fused kernel stores x + delta to `x_out`
/// (the residual stream's other buffer) instead of in place.
#[derive(Debug, Clone, Copy)]
pub struct NormIn {
    pub x: u64,
    pub delta: u64,
    pub w: u64,
    pub x_out: u64,
    pub eps: f32,
}

impl NormIn {
    /// Where a fused kernel leaves the residual: `x_out` after an add, `x` when there is none.
    fn residual(&self) -> u64 {
        if self.delta != 0 { self.x_out } else { self.x }
    }
}

fn u32_of(what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| ModelError::InvalidBatch(format!("{what} = {n} is too large for a launch")))
}

fn i32_of(what: &str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| ModelError::InvalidBatch(format!("{what} = {n} is too large for a kernel argument")))
}

/// The largest of 8, 4, 2, 1 query heads per attention block that divides the GQA group and
/// keeps the block's cross-warp partial sums within 16 KiB of shared memory.
pub fn group_chunk(shape: AttnShape) -> usize {
    let group = shape.heads / shape.kv_heads;
    let warps = shape.head_dim.max(128) / 32;
    [8, 4, 2, 1].into_iter().find(|c| group % c == 0 && warps * c * shape.head_dim * 4 <= 16 << 10).unwrap_or(1)
}

/// Whether decode attention takes the tensor-core kernel: for a GQA group of at least 2 query heads
/// per block, half-precision K/V, head_dim a multiple of 64 and `mma.sync` (compute capability 8.0
/// or newer). Below that ratio the CUDA-core kernel already streams K/V at full bandwidth; above
/// it, its per-element conversions and FMAs per head become the bound.
pub fn decode_on_tensor_cores(shape: AttnShape, dtype: &str, capability: (i32, i32)) -> bool {
    dtype != "f32" && shape.head_dim % 64 == 0 && group_chunk(shape) >= 2 && capability.0 >= 8
}

/// Batches up to this many rows take the GEMV kernel; larger ones cuBLAS. The one definition:
/// `gemv.cu` is compiled with `-DGEMV_MAX_N=` this (its per-row accumulators). On the H200,
/// `scripts/gemv_dev.py` times our GEMV level with cuBLAS at one row (and ahead inside a step's
/// graph), but each further row adds CUDA-core conversions and FMAs per weight, while cuBLAS's
/// skinny kernels stay at the weight-read time up to 8 rows (records in
/// `book/src/generated/gpu/ch06-records-decode-step/gemv-dev/`): this bound should come down to 1
/// once the GPU tests have run with it.
pub const GEMV_MAX_N: usize = 8;
/// The GEMV's warps per block, output rows per warp and 16-byte loads in flight per row and lane
/// (`-DGEMV_WARPS=`, `-DGEMV_RPW=`, `-DGU=`), chosen by `scripts/gemv_dev.py` on an H200.
const GEMV_WARPS: usize = 8;
const GEMV_RPW: usize = 1;
const GEMV_UNROLL: usize = 4;

/// Checks that the attention kernel supports this shape.
pub fn check_shape(shape: AttnShape) -> Result<()> {
    if !HEAD_DIMS.contains(&shape.head_dim) {
        return Err(ModelError::UnsupportedConfig(format!(
            "head_dim {} is not supported by the CUDA attention kernel (supported: {HEAD_DIMS:?})",
            shape.head_dim
        )));
    }
    if shape.kv_heads == 0 || shape.heads % shape.kv_heads != 0 {
        return Err(ModelError::UnsupportedConfig(format!("{} heads over {} KV heads", shape.heads, shape.kv_heads)));
    }
    Ok(())
}

macro_rules! launch {
    (@cfg $gpu:expr, $f:expr, $c:expr; $($arg:expr),* $(,)?) => {{
        let mut b = $gpu.stream.launch_builder(&$f);
        $( b.arg(&$arg); )*
        // SAFETY: the arguments match the kernel's signature in its .cu file, in order and type;
        // the buffers hold what the launch's shape needs: the enclosing `unsafe fn`'s contract
        // (or, for the fills, a `CudaSlice` of this stream and its own length).
        unsafe { b.launch($c) }.map(|_| ()).map_err(|e| device_err(stringify!($f), e))
    }};
    ($gpu:expr, $f:expr, $grid:expr, $block:expr; $($arg:expr),* $(,)?) => {
        launch!(@cfg $gpu, $f, cfg($grid, $block); $($arg),*)
    };
}

/// `launch!` for the kernels of a decode step, which all begin with pdl_wait: with PDL when
/// `self.tuning.pdl` is on.
macro_rules! launch_step {
    (@cfg $self:expr, $gpu:expr, $f:expr, $c:expr; $($arg:expr),* $(,)?) => {{
        if $self.tuning.pdl {
            let args: &[&dyn KernelArg] = &[$(&$arg),*];
            let mut params: Vec<*mut std::ffi::c_void> = args.iter().map(|a| KernelArg::addr(*a)).collect();
            // SAFETY: as launch!'s; every kernel launched here calls pdl_wait before touching memory.
            unsafe { launch_programmatic($gpu, &$f, $c, &mut params) }
        } else {
            launch!(@cfg $gpu, $f, $c; $($arg),*)
        }
    }};
    ($self:expr, $gpu:expr, $f:expr, $grid:expr, $block:expr; $($arg:expr),* $(,)?) => {
        launch_step!(@cfg $self, $gpu, $f, cfg($grid, $block); $($arg),*)
    };
}


impl<T: GpuFloat> Kernels<T> {
    pub fn new(gpu: &Gpu, shape: AttnShape) -> Result<Self> {
        check_shape(shape)?;
        let chunk = group_chunk(shape);
        let decode_tc = decode_on_tensor_cores(shape, T::C_NAME, gpu.compute_capability()?);
        let dtype = ("DTYPE", T::C_NAME.to_string());
        let common = [dtype.clone()];
        let gemv_defs = [
            dtype.clone(),
            ("GEMV_MAX_N", GEMV_MAX_N.to_string()),
            ("GEMV_WARPS", GEMV_WARPS.to_string()),
            ("GEMV_RPW", GEMV_RPW.to_string()),
            ("GU", GEMV_UNROLL.to_string()),
        ];
        let mut attn_defs = vec![
            dtype,
            ("HEAD_DIM", shape.head_dim.to_string()),
            ("GROUP", chunk.to_string()),
            ("PART", PART.to_string()),
        ];
        if decode_tc {
            attn_defs.push(("DECODE_TC", "1".to_string()));
        }
        let m = |name: &str, src: &str, defs: &[(&str, String)]| gpu.compile(name, src, defs);
        let emb = m("embedding.cu", include_str!("kernels/embedding.cu"), &common)?;
        let norm = m("rmsnorm.cu", include_str!("kernels/rmsnorm.cu"), &common)?;
        let rope = m("rope_cache.cu", include_str!("kernels/rope_cache.cu"), &common)?;
        let silu = m("silu_mul.cu", include_str!("kernels/silu_mul.cu"), &common)?;
        let arg = m("argmax.cu", include_str!("kernels/argmax.cu"), &common)?;
        let init = m("init.cu", include_str!("kernels/init.cu"), &common)?;
        let attn = m("paged_attention.cu", include_str!("kernels/paged_attention.cu"), &attn_defs)?;
        let gemv = m("gemv.cu", include_str!("kernels/gemv.cu"), &gemv_defs)?;
        Ok(Kernels {
            shape,
            group_chunk: chunk,
            decode_tc,
            tuning: StepTuning::best(gpu.compute_capability()?),
            embedding: gpu.function(&emb, "embedding")?,
            gather_rows: gpu.function(&emb, "gather_rows")?,
            add_rmsnorm: gpu.function(&norm, "add_rmsnorm")?,
            rope_cache: gpu.function(&rope, "rope_cache")?,
            copy_blocks: gpu.function(&rope, "copy_blocks")?,
            silu_mul: gpu.function(&silu, "silu_mul")?,
            argmax: gpu.function(&arg, "argmax")?,
            attention: gpu.function(&attn, if decode_tc { "paged_attention_tc" } else { "paged_attention" })?,
            attention_reduce: gpu.function(&attn, "paged_attention_reduce")?,
            fill_uniform: gpu.function(&init, "fill_uniform")?,
            fill_const: gpu.function(&init, "fill_const")?,
            gemv: gpu.function(&gemv, "gemv")?,
            gemv_swiglu: gpu.function(&gemv, "gemv_swiglu")?,
            gemv_norm: gpu.function(&gemv, "gemv_norm")?,
            gemv_swiglu_norm: gpu.function(&gemv, "gemv_swiglu_norm")?,
            prefill: PrefillKernels::new::<T>(gpu, shape, &DEFAULT_VERSIONS)?,
            _t: PhantomData,
        })
    }

    /// x (n, hidden) f32 = embed[tokens].
    ///
    /// # Safety
    /// The [module's contract](crate::kernels#safety) for `embed` (vocab · hidden) T, `tokens` (n) i32 each
    /// in 0..vocab, and the output `x` (n · hidden) f32.
    pub unsafe fn embedding(&self, gpu: &Gpu, embed: u64, tokens: u64, x: u64, n: usize, hidden: usize) -> Result<()> {
        let h = i32_of("hidden", hidden)?;
        launch_step!(self, gpu, self.embedding, (u32_of("tokens", n)?, 1, 1), 512; embed, tokens, x, h)
    }

    /// out (n, cols) = src[idx].
    ///
    /// # Safety
    /// The [module's contract](crate::kernels#safety) for `src` (rows · cols) T, `idx` (n) i32 each in
    /// 0..rows, and the output `out` (n · cols) T.
    pub unsafe fn gather_rows(&self, gpu: &Gpu, src: u64, idx: u64, out: u64, n: usize, cols: usize) -> Result<()> {
        let c = i32_of("cols", cols)?;
        launch_step!(self, gpu, self.gather_rows, (u32_of("rows", n)?, 1, 1), 256; src, idx, out, c)
    }

    /// x += delta (if `delta != 0`); out = rmsnorm(x) · w. x (n, hidden) f32; delta, out T.
    ///
    /// # Safety
    /// The [module's contract](crate::kernels#safety) for `x` (n · hidden) f32, read and written in place,
    /// `delta` (n · hidden) T or 0 for none, `w` (hidden) T, and the output `out` (n · hidden) T.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn add_rmsnorm(&self, gpu: &Gpu, x: u64, delta: u64, w: u64, out: u64, n: usize, hidden: usize, eps: f32) -> Result<()> {
        let h = i32_of("hidden", hidden)?;
        // One block per token: at decode batch sizes there are few blocks, so each gets many threads
        // (the row's loads are then all in flight at once instead of in a long chain).
        launch_step!(self, gpu, self.add_rmsnorm, (u32_of("tokens", n)?, 1, 1), 1024; x, delta, w, out, h, eps)
    }

    /// RoPE on q and k of the fused qkv rows; q into `q_out`, k and v into the caches at `slot`.
    ///
    /// # Safety
    /// The [module's contract](crate::kernels#safety), with `q_dim`, `kv_dim` and `head_dim` of `self.shape`,
    /// for `qkv` (n · (q_dim + 2 kv_dim)) T, `pos` (n) i32, `slot` (n) i32 each −1 (padding: no
    /// write) or in 0..slots, `inv_freq` (head_dim / 2) f32, and the outputs `q_out` (n · q_dim) T
    /// and `k_cache`, `v_cache` (slots · kv_dim) T each. Two tokens' slots may not be the same.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn rope_cache(
        &self,
        gpu: &Gpu,
        qkv: u64,
        q_out: u64,
        k_cache: u64,
        v_cache: u64,
        pos: u64,
        slot: u64,
        inv_freq: u64,
        n: usize,
    ) -> Result<()> {
        let s = self.shape;
        let (h, kvh, d) = (i32_of("heads", s.heads)?, i32_of("kv_heads", s.kv_heads)?, i32_of("head_dim", s.head_dim)?);
        let threads = (s.head_dim / 2).div_ceil(32).max(1) as u32 * 32;
        launch_step!(self, gpu, self.rope_cache, (u32_of("tokens", n)?, (s.heads + s.kv_heads) as u32, 1), threads; qkv, q_out, k_cache, v_cache, pos, slot, inv_freq, h, kvh, d)
    }

    /// Copies blocks src[i] -> dst[i] (device arrays of `n` ids) in one layer's K and V caches.
    ///
    /// # Safety
    /// The [module's contract](crate::kernels#safety) for `k` and `v` (blocks · block_elems) T each, read and
    /// written, and `src`, `dst` (n) i32 each in 0..blocks. The copies run at once: no `dst` may
    /// be another copy's `src` or `dst`.
    pub unsafe fn copy_blocks(&self, gpu: &Gpu, k: u64, v: u64, src: u64, dst: u64, n: usize, block_elems: usize) -> Result<()> {
        let e = block_elems as i64;
        launch!(gpu, self.copy_blocks, (u32_of("copies", n)?, 2, 1), 256; k, v, src, dst, e)
    }

    /// out (n, I) = silu(gate) · up, gate j and up j in columns 2j and 2j + 1 of `gu`.
    ///
    /// # Safety
    /// The [module's contract](crate::kernels#safety) for `gu` (n · 2 I) T and the output `out` (n · I) T.
    pub unsafe fn silu_mul(&self, gpu: &Gpu, gu: u64, out: u64, n: usize, inter: usize) -> Result<()> {
        let blocks = (n * inter).div_ceil(256).clamp(1, 65536) as u32;
        let (nn, i) = (i32_of("tokens", n)?, i32_of("intermediate", inter)?);
        launch_step!(self, gpu, self.silu_mul, (blocks, 1, 1), 256; gu, out, nn, i)
    }

    /// ids (n) = argmax of each logits row (n, vocab).
    ///
    /// # Safety
    /// The [module's contract](crate::kernels#safety) for `logits` (n · vocab) T and the output `ids` (n) u32.
    pub unsafe fn argmax(&self, gpu: &Gpu, logits: u64, ids: u64, n: usize, vocab: usize) -> Result<()> {
        let v = i32_of("vocab", vocab)?;
        launch_step!(self, gpu, self.argmax, (u32_of("rows", n)?, 1, 1), 1024; logits, ids, v)
    }

    // ANCHOR: attention_launch
    /// Paged attention of `n_q` query tokens, then the merge of their context partitions (in the
    /// same launch with `io.done` given and `tuning.fold_merge` on).
    /// `parts` = ⌈longest context / PART⌉ (fixed at the maximum when captured in a graph); the
    /// partition buffers have room for `room` (query, partition) pairs, at least `n_q · parts`:
    /// a small batch uses the spare room to cut its partitions finer ([`partition_split`]).
    ///
    /// # Safety
    /// The [module's contract](crate::kernels#safety) for every buffer of `io`, with the sizes its fields
    /// list: `n_q` queries, `room` (query, partition) pairs, `block_size`-token blocks, tables of
    /// `max_blocks` entries. Every `ctx_lens[i]` is at most `parts · PART` and `max_blocks · block_size`, every
    /// `rows[i]` is a row of `tables`, and that row's first ⌈ctx_lens[i] / block_size⌉ entries are
    /// blocks of the caches. `io.done`, when given, holds n_q · heads zeroed i32 that no other
    /// launch uses meanwhile (each launch leaves them zero).
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn attention(
        &self,
        gpu: &Gpu,
        io: &AttentionIo,
        n_q: usize,
        block_size: usize,
        max_blocks: usize,
        parts: usize,
        room: usize,
    ) -> Result<()> {
        let s = self.shape;
        let chunks = s.heads / s.kv_heads / self.group_chunk;
        let head_blocks = s.kv_heads * chunks;
        if n_q * parts > room {
            return Err(ModelError::InvalidBatch(format!("{n_q} queries of {parts} partitions exceed the room for {room}")));
        }
        let split = if self.tuning.split_partitions { partition_split(n_q * head_blocks * parts, n_q * parts, room) } else { 1 };
        let threads = if self.decode_tc { 128 } else { s.head_dim.max(128) as u32 };
        let grid = (u32_of("queries", n_q)?, head_blocks as u32, u32_of("partitions", parts * split)?);
        let (heads, kv_heads) = (i32_of("heads", s.heads)?, i32_of("kv_heads", s.kv_heads)?);
        let (bs, mb, mp) = (i32_of("block_size", block_size)?, i32_of("max_blocks", max_blocks)?, i32_of("partitions", parts * split)?);
        let part_len = (PART / split) as i32;
        let scale = 1.0f32 / (s.head_dim as f32).sqrt();
        let done = if self.tuning.fold_merge { io.done } else { 0 };
        launch_step!(self, gpu, self.attention, grid, threads;
            io.q, io.k_cache, io.v_cache, io.tables, io.rows, io.ctx_lens, io.part_o, io.part_ml,
            heads, kv_heads, bs, mb, mp, part_len, scale, io.out, done)?;
        if done != 0 {
            return Ok(()); // the attention blocks merged their partitions themselves
        }
        launch_step!(self, gpu, self.attention_reduce, (grid.0, s.heads as u32, 1), s.head_dim as u32;
            io.part_o, io.part_ml, io.ctx_lens, io.out, heads, mp, part_len)
    }
    // ANCHOR_END: attention_launch

    /// Whether a product of `n` rows of `in_f` features takes the GEMV (it reads 16-byte vectors).
    fn gemv_takes(n: usize, in_f: usize) -> bool {
        n <= GEMV_MAX_N && in_f % (16 / std::mem::size_of::<T>()) == 0
    }

    // ANCHOR: linear_dispatch
    /// y (n, out) = x (n, in) · wᵀ: our GEMV for a small decode batch, cuBLAS otherwise.
    ///
    /// # Safety
    /// As [`linear`]'s.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn linear(&self, gpu: &Gpu, x: u64, w: u64, y: u64, n: usize, in_f: usize, out_f: usize) -> Result<()> {
        if !Self::gemv_takes(n, in_f) {
            // SAFETY: the same contract, passed on.
            return unsafe { linear::<T>(gpu, x, w, y, n, in_f, out_f) };
        }
        let (nn, i, o) = (i32_of("rows", n)?, i32_of("in features", in_f)?, i32_of("out features", out_f)?);
        let blocks = u32_of("rows", out_f.div_ceil(GEMV_WARPS * GEMV_RPW))?;
        launch_step!(self, gpu, self.gemv, (blocks, 1, 1), (32 * GEMV_WARPS) as u32; w, x, y, nn, i, o)
    }
    // ANCHOR_END: linear_dispatch

    // ANCHOR: swiglu_dispatch
    /// act (n, I) = SwiGLU of x (n, in) through the interleaved gate/up weights w (2I, in): one
    /// fused GEMV for a small decode batch; [`linear`](Self::linear) into `gu` (n, 2I) and
    /// silu_mul otherwise (or with `tuning.fuse_swiglu` off).
    ///
    /// # Safety
    /// The [module's contract](crate::kernels#safety) for `x` (n · in) T, `w` (2I · in) T, the
    /// scratch `gu` (n · 2I) T and the output `act` (n · I) T.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gate_up_swiglu(&self, gpu: &Gpu, x: u64, w: u64, gu: u64, act: u64, n: usize, in_f: usize, inter: usize) -> Result<()> {
        if !self.tuning.fuse_swiglu || !Self::gemv_takes(n, in_f) {
            // SAFETY: the same contract, passed on.
            unsafe {
                self.linear(gpu, x, w, gu, n, in_f, 2 * inter)?;
                return self.silu_mul(gpu, gu, act, n, inter);
            }
        }
        let (nn, i, o) = (i32_of("rows", n)?, i32_of("in features", in_f)?, i32_of("intermediate", inter)?);
        let blocks = u32_of("rows", inter.div_ceil(GEMV_WARPS))?;
        launch_step!(self, gpu, self.gemv_swiglu, (blocks, 1, 1), (32 * GEMV_WARPS) as u32; w, x, act, nn, i, o)
    }
    // ANCHOR_END: swiglu_dispatch

    // ANCHOR: norm_dispatch
    /// Whether `gemv_norm` takes a batch: a GEMV-sized one whose normed rows fit the block's
    /// shared memory (48 KiB without opting in to more).
    fn norm_fuses(&self, n: usize, in_f: usize) -> bool {
        self.tuning.fuse_norm && Self::gemv_takes(n, in_f) && Self::norm_smem(n, in_f) <= NORM_SMEM
    }

    /// Shared-memory bytes of `gemv_norm`'s n normed rows.
    fn norm_smem(n: usize, in_f: usize) -> usize {
        n * in_f * std::mem::size_of::<T>()
    }

    /// y (n, out) = rmsnorm(x + delta) · norm_w, times wᵀ, and the residual x + delta: one
    /// `gemv_norm` for a GEMV-sized batch (x + delta stored to `norm.x_out`), add_rmsnorm into
    /// `h` then [`linear`](Self::linear) otherwise (x updated in place). Returns the buffer that
    /// now holds the residual.
    ///
    /// # Safety
    /// As [`linear`]'s for `w` (out · in) T and `y` (n · out) T, and add_rmsnorm's for `norm`'s
    /// buffers (each n · in; `x_out` f32 overlapping no other) and the scratch `h` (n · in) T.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn norm_linear(&self, gpu: &Gpu, norm: &NormIn, h: u64, w: u64, y: u64, n: usize, in_f: usize, out_f: usize) -> Result<u64> {
        if !self.norm_fuses(n, in_f) {
            // SAFETY: the same contract, passed on.
            unsafe {
                self.add_rmsnorm(gpu, norm.x, norm.delta, norm.w, h, n, in_f, norm.eps)?;
                self.linear(gpu, h, w, y, n, in_f, out_f)?;
            }
            return Ok(norm.x);
        }
        let (nn, i, o) = (i32_of("rows", n)?, i32_of("in features", in_f)?, i32_of("out features", out_f)?);
        let blocks = u32_of("rows", out_f.div_ceil(GEMV_WARPS * GEMV_RPW))?;
        let c = cfg_smem((blocks, 1, 1), (32 * GEMV_WARPS) as u32, Self::norm_smem(n, in_f));
        let NormIn { x, delta, w: nw, x_out, eps } = *norm;
        launch_step!(@cfg self, gpu, self.gemv_norm, c; w, x, delta, nw, x_out, eps, y, nn, i, o)?;
        Ok(norm.residual())
    }

    /// [`gate_up_swiglu`](Self::gate_up_swiglu) of rmsnorm(x + delta) · norm_w, as
    /// [`norm_linear`](Self::norm_linear) does it (`gemv_swiglu_norm` when both fusions take the
    /// batch). Returns the buffer that now holds the residual.
    ///
    /// # Safety
    /// As [`gate_up_swiglu`](Self::gate_up_swiglu)'s and [`norm_linear`](Self::norm_linear)'s.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn norm_gate_up_swiglu(&self, gpu: &Gpu, norm: &NormIn, h: u64, w: u64, gu: u64, act: u64, n: usize, in_f: usize, inter: usize) -> Result<u64> {
        if !self.tuning.fuse_swiglu || !self.norm_fuses(n, in_f) {
            // SAFETY: the same contract, passed on.
            unsafe {
                self.add_rmsnorm(gpu, norm.x, norm.delta, norm.w, h, n, in_f, norm.eps)?;
                self.gate_up_swiglu(gpu, h, w, gu, act, n, in_f, inter)?;
            }
            return Ok(norm.x);
        }
        let (nn, i, o) = (i32_of("rows", n)?, i32_of("in features", in_f)?, i32_of("intermediate", inter)?);
        let blocks = u32_of("rows", inter.div_ceil(GEMV_WARPS))?;
        let c = cfg_smem((blocks, 1, 1), (32 * GEMV_WARPS) as u32, Self::norm_smem(n, in_f));
        let NormIn { x, delta, w: nw, x_out, eps } = *norm;
        launch_step!(@cfg self, gpu, self.gemv_swiglu_norm, c; w, x, delta, nw, x_out, eps, act, nn, i, o)?;
        Ok(norm.residual())
    }
    // ANCHOR_END: norm_dispatch

    /// Every element of `w` = uniform(-scale, scale) from (seed, index), deterministic.
    pub fn fill_uniform(&self, gpu: &Gpu, w: &mut CudaSlice<T>, seed: u64, scale: f32) -> Result<()> {
        let (w, nn, blocks) = fill_args(gpu, w)?;
        launch!(gpu, self.fill_uniform, (blocks, 1, 1), 256; w, nn, seed, scale)
    }

    /// Every element of `w` = `value`.
    pub fn fill_const(&self, gpu: &Gpu, w: &mut CudaSlice<T>, value: f32) -> Result<()> {
        let (w, nn, blocks) = fill_args(gpu, w)?;
        launch!(gpu, self.fill_const, (blocks, 1, 1), 256; w, nn, value)
    }
}

/// A fill's address, element count and grid; the slice must live on `gpu`'s stream.
fn fill_args<T>(gpu: &Gpu, w: &CudaSlice<T>) -> Result<(u64, i64, u32)> {
    if !std::sync::Arc::ptr_eq(w.stream(), &gpu.stream) {
        return Err(ModelError::Device("filling a buffer of another GPU handle's stream".into()));
    }
    let n = w.len();
    Ok((crate::device::ptr(gpu, w), n as i64, n.div_ceil(256).clamp(1, 65536) as u32))
}

/// The buffers one attention call reads and writes (device addresses).
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionIo {
    pub q: u64,       // (n_q, heads, head_dim) T
    pub k_cache: u64, // (num_blocks · block_size, kv_heads, head_dim) T, one layer
    pub v_cache: u64,
    pub tables: u64,   // (rows, max_blocks) i32
    pub rows: u64,     // (n_q) i32: which table
    pub ctx_lens: u64, // (n_q) i32: positions seen, 0 = padding
    pub part_o: u64,   // (n_q, heads, parts, head_dim) f32
    pub part_ml: u64,  // (n_q, heads, parts, 2) f32
    pub out: u64,      // (n_q, heads, head_dim) T
    /// (n_q, heads) i32 counters, zero, that the attention blocks merge by (`StepTuning::fold_merge`);
    /// 0: the merge is a launch of its own.
    pub done: u64,
}

// ANCHOR: linear
/// y (n, out) = x (n, in) · wᵀ, with w (out, in) row-major as Hugging Face stores it. In cuBLAS's
/// column-major terms that is yᵀ = w · xᵀ: A = w transposed, B = x as is. f32 accumulation.
///
/// # Safety
/// The [module's contract](crate::kernels#safety) for `x` (n · in) T, `w` (out · in) T and the output
/// `y` (n · out) T; cuBLAS runs on `gpu.blas`, whose stream is `gpu.stream`.
pub unsafe fn linear<T: GpuFloat>(gpu: &Gpu, x: u64, w: u64, y: u64, n: usize, in_f: usize, out_f: usize) -> Result<()> {
    let (alpha, beta) = (1.0f32, 0.0f32);
    let (m, nn, k) = (i32_of("out features", out_f)?, i32_of("rows", n)?, i32_of("in features", in_f)?);
    // SAFETY: x, w, y hold n·in, out·in and n·out elements of T (this fn's contract); the
    // dimensions fit cuBLAS's ints (checked above); alpha and beta outlive the call.
    unsafe {
        cudarc::cublas::result::gemm_ex(
            *gpu.blas.handle(),
            cublasOperation_t::CUBLAS_OP_T,
            cublasOperation_t::CUBLAS_OP_N,
            m,
            nn,
            k,
            (&alpha) as *const f32 as *const _,
            w as *const _,
            T::CUBLAS,
            k,
            x as *const _,
            T::CUBLAS,
            k,
            (&beta) as *const f32 as *const _,
            y as *mut _,
            T::CUBLAS,
            m,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| device_err("cuBLAS GEMM", e))
}
// ANCHOR_END: linear

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_batches_cut_their_partitions_within_the_room() {
        assert_eq!(partition_split(64, 2, 2), 1, "no spare room: no split");
        assert_eq!(partition_split(64, 2, 1000), 8, "64 blocks -> 512, the first grid past TARGET_BLOCKS");
        assert_eq!(partition_split(1, 1, 1000), PART / MIN_PART, "never below MIN_PART positions");
        assert_eq!(partition_split(16, 2, 8), 4, "room for four times the pairs only");
        assert_eq!(partition_split(4096, 128, 4096), 1, "a big batch fills the GPU as is");
        for blocks in 1..600 {
            for room in [1usize, 3, 16, 100] {
                let s = partition_split(blocks, 1, room);
                assert!(s.is_power_of_two() && PART / s >= MIN_PART && (s == 1 || s <= room));
            }
        }
    }

    #[test]
    fn decode_takes_tensor_cores_only_for_half_precision_gqa_on_ampere_or_newer() {
        let gqa = AttnShape { heads: 32, kv_heads: 8, head_dim: 128 };
        let tiny = AttnShape { heads: 32, kv_heads: 4, head_dim: 64 };
        let mha = AttnShape { heads: 32, kv_heads: 32, head_dim: 128 };
        assert!(decode_on_tensor_cores(gqa, "f16", (9, 0)) && decode_on_tensor_cores(tiny, "bf16", (8, 0)));
        assert!(!decode_on_tensor_cores(gqa, "f32", (9, 0)), "mma.sync takes f16/bf16 operands");
        assert!(!decode_on_tensor_cores(gqa, "f16", (7, 5)), "m16n8k16 needs sm_80");
        assert!(!decode_on_tensor_cores(mha, "f16", (9, 0)), "one head per block: CUDA cores");
        assert!(!decode_on_tensor_cores(AttnShape { heads: 8, kv_heads: 2, head_dim: 32 }, "f16", (9, 0)));
        assert!(!decode_on_tensor_cores(AttnShape { heads: 9, kv_heads: 3, head_dim: 64 }, "f16", (9, 0)), "group 3: chunk 1");
    }
}
