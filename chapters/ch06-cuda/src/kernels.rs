//! The chapter's CUDA C kernels, compiled by NVRTC for one element type and one attention shape,
//! and the Rust that launches them. Arguments are raw device addresses (`u64`): every buffer is
//! allocated once up front, so the addresses stay valid and CUDA graphs can replay them.

use crate::device::{device_err, Gpu};
use crate::float::GpuFloat;
use ch00_model::{AttnShape, ModelError, Result};
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t};
use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use std::marker::PhantomData;

/// Context positions one attention thread block covers; longer contexts are split.
pub const PART: usize = 512;
/// Head sizes the attention kernel is compiled for.
pub const HEAD_DIMS: [usize; 5] = [16, 32, 64, 128, 256];

/// All kernels for element type `T` and one attention shape.
pub struct Kernels<T> {
    pub shape: AttnShape,
    /// Query heads one attention block handles (they share its K/V reads).
    pub group_chunk: usize,
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
    _t: PhantomData<T>,
}

fn cfg(grid: (u32, u32, u32), block: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: grid, block_dim: (block, 1, 1), shared_mem_bytes: 0 }
}

fn u32_of(what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| ModelError::InvalidBatch(format!("{what} = {n} is too large for a launch")))
}

/// The largest of 8, 4, 2, 1 query heads per attention block that divides the GQA group and
/// keeps the block's cross-warp partial sums within 16 KiB of shared memory.
pub fn group_chunk(shape: AttnShape) -> usize {
    let group = shape.heads / shape.kv_heads;
    let warps = shape.head_dim.max(128) / 32;
    [8, 4, 2, 1].into_iter().find(|c| group % c == 0 && warps * c * shape.head_dim * 4 <= 16 << 10).unwrap_or(1)
}

/// Batches up to this many rows take the GEMV kernel; larger ones cuBLAS.
pub const GEMV_MAX_N: usize = 8;

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
    ($gpu:expr, $f:expr, $grid:expr, $block:expr; $($arg:expr),* $(,)?) => {{
        let mut b = $gpu.stream.launch_builder(&$f);
        $( b.arg(&$arg); )*
        // SAFETY: arguments match the kernel's signature in the .cu file; buffers are sized by
        // the caller for the launch's shape.
        unsafe { b.launch(cfg($grid, $block)) }.map(|_| ()).map_err(|e| device_err(stringify!($f), e))
    }};
}

impl<T: GpuFloat> Kernels<T> {
    pub fn new(gpu: &Gpu, shape: AttnShape) -> Result<Self> {
        check_shape(shape)?;
        let chunk = group_chunk(shape);
        let dtype = ("DTYPE", T::C_NAME.to_string());
        let common = [dtype.clone()];
        let attn_defs = [
            dtype,
            ("HEAD_DIM", shape.head_dim.to_string()),
            ("GROUP", chunk.to_string()),
            ("PART", PART.to_string()),
        ];
        let m = |name: &str, src: &str, defs: &[(&str, String)]| gpu.compile(name, src, defs);
        let emb = m("embedding.cu", include_str!("kernels/embedding.cu"), &common)?;
        let norm = m("rmsnorm.cu", include_str!("kernels/rmsnorm.cu"), &common)?;
        let rope = m("rope_cache.cu", include_str!("kernels/rope_cache.cu"), &common)?;
        let silu = m("silu_mul.cu", include_str!("kernels/silu_mul.cu"), &common)?;
        let arg = m("argmax.cu", include_str!("kernels/argmax.cu"), &common)?;
        let init = m("init.cu", include_str!("kernels/init.cu"), &common)?;
        let attn = m("paged_attention.cu", include_str!("kernels/paged_attention.cu"), &attn_defs)?;
        let gemv = m("gemv.cu", include_str!("kernels/gemv.cu"), &common)?;
        Ok(Kernels {
            shape,
            group_chunk: chunk,
            embedding: gpu.function(&emb, "embedding")?,
            gather_rows: gpu.function(&emb, "gather_rows")?,
            add_rmsnorm: gpu.function(&norm, "add_rmsnorm")?,
            rope_cache: gpu.function(&rope, "rope_cache")?,
            copy_blocks: gpu.function(&rope, "copy_blocks")?,
            silu_mul: gpu.function(&silu, "silu_mul")?,
            argmax: gpu.function(&arg, "argmax")?,
            attention: gpu.function(&attn, "paged_attention")?,
            attention_reduce: gpu.function(&attn, "paged_attention_reduce")?,
            fill_uniform: gpu.function(&init, "fill_uniform")?,
            fill_const: gpu.function(&init, "fill_const")?,
            gemv: gpu.function(&gemv, "gemv")?,
            _t: PhantomData,
        })
    }

    /// x (n, hidden) f32 = embed[tokens].
    pub fn embedding(&self, gpu: &Gpu, embed: u64, tokens: u64, x: u64, n: usize, hidden: usize) -> Result<()> {
        let h = hidden as i32;
        launch!(gpu, self.embedding, (u32_of("tokens", n)?, 1, 1), 512; embed, tokens, x, h)
    }

    /// out (n, cols) = src[idx].
    pub fn gather_rows(&self, gpu: &Gpu, src: u64, idx: u64, out: u64, n: usize, cols: usize) -> Result<()> {
        let c = cols as i32;
        launch!(gpu, self.gather_rows, (u32_of("rows", n)?, 1, 1), 256; src, idx, out, c)
    }

    /// x += delta (if `delta != 0`); out = rmsnorm(x) · w. x (n, hidden) f32; delta, out T.
    #[allow(clippy::too_many_arguments)]
    pub fn add_rmsnorm(&self, gpu: &Gpu, x: u64, delta: u64, w: u64, out: u64, n: usize, hidden: usize, eps: f32) -> Result<()> {
        let h = hidden as i32;
        // One block per token: at decode batch sizes there are few blocks, so each gets many threads
        // (the row's loads are then all in flight at once instead of in a long chain).
        launch!(gpu, self.add_rmsnorm, (u32_of("tokens", n)?, 1, 1), 1024; x, delta, w, out, h, eps)
    }

    /// RoPE on q and k of the fused qkv rows; q into `q_out`, k and v into the caches at `slot`.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_cache(
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
        let (h, kvh, d) = (s.heads as i32, s.kv_heads as i32, s.head_dim as i32);
        launch!(gpu, self.rope_cache, (u32_of("tokens", n)?, 1, 1), 512; qkv, q_out, k_cache, v_cache, pos, slot, inv_freq, h, kvh, d)
    }

    /// Copies blocks src[i] -> dst[i] (device arrays of `n` ids) in one layer's K and V caches.
    pub fn copy_blocks(&self, gpu: &Gpu, k: u64, v: u64, src: u64, dst: u64, n: usize, block_elems: usize) -> Result<()> {
        let e = block_elems as i64;
        launch!(gpu, self.copy_blocks, (u32_of("copies", n)?, 2, 1), 256; k, v, src, dst, e)
    }

    /// out (n, I) = silu(gu[:, :I]) · gu[:, I:].
    pub fn silu_mul(&self, gpu: &Gpu, gu: u64, out: u64, n: usize, inter: usize) -> Result<()> {
        let blocks = (n * inter).div_ceil(256).clamp(1, 65536) as u32;
        let (nn, i) = (n as i32, inter as i32);
        launch!(gpu, self.silu_mul, (blocks, 1, 1), 256; gu, out, nn, i)
    }

    /// ids (n) = argmax of each logits row (n, vocab).
    pub fn argmax(&self, gpu: &Gpu, logits: u64, ids: u64, n: usize, vocab: usize) -> Result<()> {
        let v = vocab as i32;
        launch!(gpu, self.argmax, (u32_of("rows", n)?, 1, 1), 1024; logits, ids, v)
    }

    // ANCHOR: attention_launch
    /// Paged attention of `n_q` query tokens, then the merge of their context partitions.
    /// `parts` = ⌈longest context / PART⌉ (fixed at the maximum when captured in a graph).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        gpu: &Gpu,
        io: &AttentionIo,
        n_q: usize,
        block_size: usize,
        max_blocks: usize,
        parts: usize,
    ) -> Result<()> {
        let s = self.shape;
        let chunks = s.heads / s.kv_heads / self.group_chunk;
        let threads = s.head_dim.max(128) as u32;
        let grid = (u32_of("queries", n_q)?, (s.kv_heads * chunks) as u32, u32_of("partitions", parts)?);
        let (heads, kv_heads, bs, mb, mp) = (s.heads as i32, s.kv_heads as i32, block_size as i32, max_blocks as i32, parts as i32);
        let scale = 1.0f32 / (s.head_dim as f32).sqrt();
        launch!(gpu, self.attention, grid, threads;
            io.q, io.k_cache, io.v_cache, io.tables, io.rows, io.ctx_lens, io.part_o, io.part_ml,
            heads, kv_heads, bs, mb, mp, scale)?;
        launch!(gpu, self.attention_reduce, (grid.0, s.heads as u32, 1), s.head_dim as u32;
            io.part_o, io.part_ml, io.ctx_lens, io.out, heads, mp)
    }
    // ANCHOR_END: attention_launch

    // ANCHOR: linear_dispatch
    /// y (n, out) = x (n, in) · wᵀ: our GEMV for a small decode batch, cuBLAS otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn linear(&self, gpu: &Gpu, x: u64, w: u64, y: u64, n: usize, in_f: usize, out_f: usize) -> Result<()> {
        let vec = 16 / std::mem::size_of::<T>();
        if n > GEMV_MAX_N || in_f % vec != 0 {
            return linear::<T>(gpu, x, w, y, n, in_f, out_f);
        }
        let (nn, i, o) = (n as i32, in_f as i32, out_f as i32);
        launch!(gpu, self.gemv, (u32_of("rows", out_f.div_ceil(8))?, 1, 1), 256; w, x, y, nn, i, o)
    }
    // ANCHOR_END: linear_dispatch

    /// w (n) = uniform(-scale, scale) from (seed, index), deterministic.
    pub fn fill_uniform(&self, gpu: &Gpu, w: u64, n: usize, seed: u64, scale: f32) -> Result<()> {
        let (nn, blocks) = (n as i64, n.div_ceil(256).clamp(1, 65536) as u32);
        launch!(gpu, self.fill_uniform, (blocks, 1, 1), 256; w, nn, seed, scale)
    }

    pub fn fill_const(&self, gpu: &Gpu, w: u64, n: usize, value: f32) -> Result<()> {
        let (nn, blocks) = (n as i64, n.div_ceil(256).clamp(1, 65536) as u32);
        launch!(gpu, self.fill_const, (blocks, 1, 1), 256; w, nn, value)
    }
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
}

// ANCHOR: linear
/// y (n, out) = x (n, in) · wᵀ, with w (out, in) row-major as Hugging Face stores it. In cuBLAS's
/// column-major terms that is yᵀ = w · xᵀ: A = w transposed, B = x as is. f32 accumulation.
pub fn linear<T: GpuFloat>(gpu: &Gpu, x: u64, w: u64, y: u64, n: usize, in_f: usize, out_f: usize) -> Result<()> {
    let (alpha, beta) = (1.0f32, 0.0f32);
    // SAFETY: x, w, y are device buffers of at least n·in, out·in and n·out elements of T.
    unsafe {
        cudarc::cublas::result::gemm_ex(
            *gpu.blas.handle(),
            cublasOperation_t::CUBLAS_OP_T,
            cublasOperation_t::CUBLAS_OP_N,
            out_f as i32,
            n as i32,
            in_f as i32,
            (&alpha) as *const f32 as *const _,
            w as *const _,
            T::CUBLAS,
            in_f as i32,
            x as *const _,
            T::CUBLAS,
            in_f as i32,
            (&beta) as *const f32 as *const _,
            y as *mut _,
            T::CUBLAS,
            out_f as i32,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| device_err("cuBLAS GEMM", e))
}
// ANCHOR_END: linear
