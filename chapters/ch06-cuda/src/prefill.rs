//! Prefill attention: every query row of a prompt (or of a chunk of one, or of the rows after a
//! cached prefix) attends causally over its sequence's paged K/V. Three versions of one
//! computation, in the order the book reads them (as llm.c's dev/cuda does):
//!
//! 1. [`reference`]: the CPU definition, plain loops in f32;
//! 2. `prefill_attention_simple` in `kernels/prefill_attention.cu`: FlashAttention's tiling and
//!    online softmax on CUDA cores, in f32 (any element type, any head size the chapter supports);
//! 3. `prefill_attention_tc` beside it: the same tiles on tensor cores (`mma.sync` m16n8k16, f16 or
//!    bf16 in, f32 accumulation), K/V tiles copied one tile ahead with `cp.async`;
//! 4. `prefill_attention_wgmma` after it, Hopper only (compute capability 9.0, compiled for
//!    `sm_90a`): warpgroup-wide `wgmma` reading Q, K and V straight from swizzled shared memory,
//!    the next tile's Q·Kᵀ overlapping this one's softmax. [`PrefillKernels::best`] is this one
//!    where it compiles, else version 3, else version 2.
//!
//! tests/prefill.rs checks every kernel against [`reference`], outputs poisoned first.
//! [`seq_starts`] is what the runner uses to decide, per pass, which attention kernel runs.

use crate::device::{device_err, Gpu};
use crate::float::GpuFloat;
use ch00_model::{AttnShape, ModelError, Result};
use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};

/// Head sizes the tensor-core version is compiled for (multiples of 16 whose accumulators fit
/// in registers); other sizes use the simple version.
pub const TC_HEAD_DIMS: [usize; 3] = [32, 64, 128];
/// The tensor-core shape the engine uses: 8 warps of 16 rows, 64 keys per tile. At the 7B shape
/// on an H200 (`gpu_bench --sections e`) it was the fastest at B1×L4096 and within 5% of the
/// fastest (2 m-tiles per warp, 32 keys, which spills a few registers) at B8×L2048.
pub const DEFAULT_TC: PrefillVersion = PrefillVersion::TensorCores { warps: 8, m_tiles: 1, keys: 64 };
/// Head sizes the Hopper version is compiled for.
pub const WGMMA_HEAD_DIMS: [usize; 2] = [64, 128];
/// The Hopper shape the engine uses: 3 warpgroups (192 query rows), 64 keys per tile, two tiles,
/// no overlap. At the 7B shape on an H200 it was the fastest of the shapes tried, 277 TFLOP/s at
/// B1×L4096 and 308 at B8×L2048 (0.57× and 0.61× PyTorch SDPA in the same run); the overlapped
/// version came second (259, 290): with three warpgroups on the SM, one's softmax already runs
/// under another's products. Rerun: scripts/gpu_prefill_wgmma.sh; the development log:
/// `git show d4b9275:chapters/ch06-cuda/WGMMA.md`.
pub const DEFAULT_WGMMA: PrefillVersion = PrefillVersion::Wgmma { warpgroups: 3, keys: 64, stages: 2, overlap: false };
/// What [`PrefillKernels::new`] is asked for by the engine: the first that compiles here is used.
pub const DEFAULT_VERSIONS: [PrefillVersion; 2] = [DEFAULT_WGMMA, DEFAULT_TC];
/// The most shared memory one thread block may have on Hopper (227 KiB).
const MAX_SMEM: usize = 232_448;

/// Which kernel runs a prefill pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefillVersion {
    /// CUDA cores, f32 arithmetic: any element type and head size.
    Simple,
    /// Tensor cores, f16/bf16 and [`TC_HEAD_DIMS`] only: `warps` warps of `m_tiles` × 16 query
    /// rows each per block, `keys` keys per K/V tile.
    TensorCores { warps: usize, m_tiles: usize, keys: usize },
    /// Hopper `wgmma` (compute capability 9.0 only), f16/bf16 and [`WGMMA_HEAD_DIMS`]:
    /// `warpgroups` × 64 query rows per block, `keys` (64 or 128) keys per K/V tile, `stages`
    /// tiles in shared memory; `overlap`: tile j's P·V runs under tile j+1's softmax (then
    /// stages ≥ 3), else each tile's two products run in turn (stages ≥ 2).
    Wgmma { warpgroups: usize, keys: usize, stages: usize, overlap: bool },
}

/// The buffers one prefill attention call reads and writes (device addresses).
#[derive(Debug, Clone, Copy, Default)]
pub struct PrefillIo {
    pub q: u64,         // (n, heads, head_dim) T
    pub k_cache: u64,   // (slots, kv_heads, head_dim) T, one layer
    pub v_cache: u64,   // (slots, kv_heads, head_dim) T
    pub tables: u64,    // (seqs, max_blocks) i32
    pub seq_start: u64, // (seqs + 1) i32: sequence s's query rows are seq_start[s] .. seq_start[s + 1]
    pub pos: u64,       // (n) i32: each row's position (a sequence's rows are consecutive)
    pub out: u64,       // (n, heads, head_dim) T
}

/// The prefill kernels for one element type and attention shape.
pub struct PrefillKernels {
    pub shape: AttnShape,
    simple: CudaFunction,
    /// (version, kernel, dynamic shared-memory bytes) of each tensor-core version compiled.
    tc: Vec<(PrefillVersion, CudaFunction, u32)>,
}

impl PrefillKernels {
    /// Compiles the simple version and each of `versions` that applies here: tensor cores for
    /// f16/bf16 at a [`TC_HEAD_DIMS`] size; `Wgmma` also needs a Hopper GPU and a
    /// [`WGMMA_HEAD_DIMS`] size (elsewhere it is left out, not an error). The first compiled is
    /// [`best`](Self::best).
    pub fn new<T: GpuFloat>(gpu: &Gpu, shape: AttnShape, versions: &[PrefillVersion]) -> Result<Self> {
        let src = include_str!("kernels/prefill_attention.cu");
        let base = [("DTYPE", T::C_NAME.to_string()), ("HEAD_DIM", shape.head_dim.to_string())];
        let m = gpu.compile("prefill_attention.cu", src, &base)?;
        let simple = gpu.function(&m, "prefill_attention_simple")?;
        let mut tc = Vec::new();
        let hopper = gpu.compute_capability()? == (9, 0);
        for &v in versions {
            let PrefillVersion::Wgmma { warpgroups, keys, stages, overlap } = v else { continue };
            let lag = if overlap { 2 } else { 1 };
            if !(1..=3).contains(&warpgroups) || ![64, 128].contains(&keys) || stages <= lag {
                return Err(ModelError::InvalidSettings(format!("prefill kernel {v:?}: warpgroups 1..=3, keys 64/128, stages over {lag}")));
            }
            if !(hopper && tensor_cores_fit::<T>(shape) && WGMMA_HEAD_DIMS.contains(&shape.head_dim)) {
                continue;
            }
            // Q, K and V tiles, and 1 KiB to align them (the kernel's 2 × keys slot table is static).
            let smem = (64 * warpgroups + 2 * stages * keys) * shape.head_dim * std::mem::size_of::<T>() + 1024;
            if smem + 8 * keys > MAX_SMEM {
                return Err(ModelError::InvalidSettings(format!("prefill kernel {v:?} needs more than {MAX_SMEM} bytes of shared memory")));
            }
            let mut defs = base.to_vec();
            defs.extend([
                ("WGMMA", "1".to_string()),
                ("NWG", warpgroups.to_string()),
                ("WBK", keys.to_string()),
                ("STAGES", stages.to_string()),
                ("OVERLAP", (overlap as u8).to_string()),
            ]);
            let m = gpu.compile_for("sm_90a", "prefill_attention.cu (wgmma)", src, &defs)?;
            let f = gpu.function(&m, "prefill_attention_wgmma")?;
            f.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32)
                .map_err(|e| device_err("raising the prefill kernel's shared-memory limit", e))?;
            tc.push((v, f, smem as u32));
        }
        if tensor_cores_fit::<T>(shape) {
            for &v in versions {
                let PrefillVersion::TensorCores { warps, m_tiles, keys } = v else { continue };
                if !(1..=8).contains(&warps) || !(1..=2).contains(&m_tiles) || ![32, 64, 128].contains(&keys) {
                    return Err(ModelError::InvalidSettings(format!("prefill kernel {v:?}: warps 1..=8, m_tiles 1..=2, keys 32/64/128")));
                }
                let mut defs = base.to_vec();
                defs.extend([
                    ("TENSOR_CORES", "1".to_string()),
                    ("NWARPS", warps.to_string()),
                    ("MT", m_tiles.to_string()),
                    ("BK", keys.to_string()),
                ]);
                let m = gpu.compile("prefill_attention.cu (tensor cores)", src, &defs)?;
                let f = gpu.function(&m, "prefill_attention_tc")?;
                let smem = ((16 * warps * m_tiles + 4 * keys) * (shape.head_dim + 8) * std::mem::size_of::<T>()) as u32;
                f.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32)
                    .map_err(|e| device_err("raising the prefill kernel's shared-memory limit", e))?;
                tc.push((v, f, smem));
            }
        }
        // In the order asked for, so that the first is `best`.
        tc.sort_by_key(|(v, ..)| versions.iter().position(|w| w == v));
        Ok(PrefillKernels { shape, simple, tc })
    }

    /// The fastest version compiled here (the first of `versions` that applied), else the simple one.
    pub fn best(&self) -> PrefillVersion {
        self.tc.first().map_or(PrefillVersion::Simple, |(v, ..)| *v)
    }

    /// Whether `version` was compiled here (the simple one always is).
    pub fn has(&self, version: PrefillVersion) -> bool {
        version == PrefillVersion::Simple || self.tc.iter().any(|(v, ..)| *v == version)
    }

    // ANCHOR: launch
    /// Causal attention of the query rows of `seqs` sequences, the longest `max_q_len` rows, over
    /// their cached K/V (which already holds these rows' own K/V: `rope_cache` ran first).
    ///
    /// # Safety
    /// The [module's contract](crate::kernels#safety) for every buffer of `io`, with `n` =
    /// `seq_start[seqs]` rows: `q` and `out` (n · heads · head_dim) T, `pos` (n) i32, `seq_start`
    /// (seqs + 1) i32 non-decreasing from 0 with no sequence longer than `max_q_len`, `tables`
    /// (seqs · max_blocks) i32. Sequence s's rows are at consecutive positions from
    /// `pos[seq_start[s]]`; its context (last position + 1) is at most `max_blocks · block_size`,
    /// and the first ⌈context / block_size⌉ entries of its table row are blocks of the caches
    /// (`k_cache`, `v_cache`: (blocks · block_size · kv_heads · head_dim) T each).
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn launch(
        &self,
        gpu: &Gpu,
        io: &PrefillIo,
        version: PrefillVersion,
        seqs: usize,
        max_q_len: usize,
        block_size: usize,
        max_blocks: usize,
    ) -> Result<()> {
        let s = self.shape;
        if seqs == 0 || max_q_len == 0 {
            return Ok(());
        }
        let d = s.head_dim as f32;
        let (f, rows_per_block, threads, smem, scale) = match version {
            PrefillVersion::Simple => (&self.simple, if s.head_dim > 128 { 16 } else { 32 }, 128, 0, 1.0 / d.sqrt()),
            PrefillVersion::TensorCores { .. } | PrefillVersion::Wgmma { .. } => {
                let (_, f, smem) = self.tc.iter().find(|(v, ..)| *v == version).ok_or_else(|| {
                    ModelError::UnsupportedConfig(format!("no prefill kernel {version:?} compiled for {s:?} in this type on this GPU"))
                })?;
                let (rows, threads) = match version {
                    PrefillVersion::TensorCores { warps, m_tiles, .. } => (16 * warps * m_tiles, 32 * warps),
                    PrefillVersion::Wgmma { warpgroups, .. } => (64 * warpgroups, 128 * warpgroups),
                    PrefillVersion::Simple => unreachable!(),
                };
                (f, rows, threads as u32, *smem, std::f32::consts::LOG2_E / d.sqrt())
            }
        };
        let cfg = LaunchConfig {
            grid_dim: (u32_of("query tiles", max_q_len.div_ceil(rows_per_block))?, u32_of("heads", s.heads)?, u32_of("sequences", seqs)?),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: smem,
        };
        let (heads, kv_heads) = (i32_of("heads", s.heads)?, i32_of("kv_heads", s.kv_heads)?);
        let (bs, mb) = (i32_of("block_size", block_size)?, i32_of("max_blocks", max_blocks)?);
        let mut b = gpu.stream.launch_builder(f);
        b.arg(&io.q).arg(&io.k_cache).arg(&io.v_cache).arg(&io.tables).arg(&io.seq_start).arg(&io.pos).arg(&io.out);
        b.arg(&heads).arg(&kv_heads).arg(&bs).arg(&mb).arg(&scale);
        // SAFETY: the arguments match the kernel's signature, in order and type; the buffers
        // hold what this launch reads and writes (this fn's contract); the grid covers every
        // sequence's rows and the dynamic shared memory is what the kernel was allowed above.
        unsafe { b.launch(cfg) }.map(|_| ()).map_err(|e| device_err("prefill attention", e))
    }
    // ANCHOR_END: launch
}

fn tensor_cores_fit<T: GpuFloat>(shape: AttnShape) -> bool {
    matches!(T::C_NAME, "f16" | "bf16") && TC_HEAD_DIMS.contains(&shape.head_dim)
}

fn u32_of(what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| ModelError::InvalidBatch(format!("{what} = {n} is too large for a launch")))
}

fn i32_of(what: &str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| ModelError::InvalidBatch(format!("{what} = {n} is too large for a kernel argument")))
}

// ANCHOR: seq_starts
/// From a pass's per-token table rows (`rows[i]`: which sequence token i belongs to, 0, 0, …, 1,
/// …, in order, each sequence's tokens together) the start of each sequence's query rows, written
/// to `starts[0..=seqs]`; returns (seqs, longest query run). `None` when `rows` is not of that
/// form or `starts` is too short (the caller then keeps the per-token kernel).
pub fn seq_starts(rows: &[i32], starts: &mut [i32]) -> Option<(usize, usize)> {
    let (mut seqs, mut longest, mut run) = (0usize, 0usize, 0usize);
    for (i, &r) in rows.iter().enumerate() {
        if i == 0 || r != rows[i - 1] {
            if r != seqs as i32 || seqs >= starts.len() {
                return None; // rows must count 0, 1, 2, … without gaps
            }
            starts[seqs] = i as i32;
            seqs += 1;
            run = 0;
        }
        run += 1;
        longest = longest.max(run);
    }
    *starts.get_mut(seqs)? = rows.len() as i32;
    Some((seqs, longest))
}
// ANCHOR_END: seq_starts

// ANCHOR: reference
/// The CPU definition. `q`, the caches and the output are f32 here (inputs rounded through the
/// GPU's type by the caller); `tables` is (seqs, max_blocks); every row i of sequence s attends to
/// positions 0 ..= pos[i] of that sequence, softmax(q · kᵀ / √d) · v, grouped-query heads sharing
/// K/V head h / (heads / kv_heads).
#[allow(clippy::too_many_arguments)]
pub fn reference(
    shape: AttnShape,
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    tables: &[i32],
    max_blocks: usize,
    block_size: usize,
    seq_start: &[i32],
    pos: &[i32],
) -> Vec<f32> {
    let (hq, hkv, d) = (shape.heads, shape.kv_heads, shape.head_dim);
    let group = hq / hkv;
    let scale = 1.0 / (d as f32).sqrt();
    let n = pos.len();
    let mut out = vec![0.0f32; n * hq * d];
    for s in 0..seq_start.len() - 1 {
        let table = &tables[s * max_blocks..(s + 1) * max_blocks];
        for i in seq_start[s] as usize..seq_start[s + 1] as usize {
            let ctx = pos[i] as usize + 1;
            for h in 0..hq {
                let qv = &q[(i * hq + h) * d..][..d];
                let row = |cache: &'_ [f32], p: usize| -> Vec<f32> {
                    let slot = table[p / block_size] as usize * block_size + p % block_size;
                    cache[(slot * hkv + h / group) * d..][..d].to_vec()
                };
                let scores: Vec<f32> = (0..ctx).map(|p| row(k_cache, p).iter().zip(qv).map(|(k, q)| k * q).sum::<f32>() * scale).collect();
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let w: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f32 = w.iter().sum();
                let o = &mut out[(i * hq + h) * d..][..d];
                for (p, wp) in w.iter().enumerate() {
                    for (o, v) in o.iter_mut().zip(row(v_cache, p)) {
                        *o += wp / total * v;
                    }
                }
            }
        }
    }
    out
}
// ANCHOR_END: reference

/// FLOPs of causal prefill attention as FlashAttention counts them: 4 · heads · head_dim per
/// (query, key) pair it computes (q·k and p·v, 2 each), over every row's positions 0 ..= pos.
pub fn flops(shape: AttnShape, q_lens_and_prefix: &[(usize, usize)]) -> f64 {
    let pairs: f64 = q_lens_and_prefix.iter().map(|&(l, p)| (l * p) as f64 + (l * (l + 1) / 2) as f64).sum();
    4.0 * (shape.heads * shape.head_dim) as f64 * pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_starts_finds_each_sequences_rows() {
        let mut s = [0i32; 5];
        assert_eq!(seq_starts(&[0, 0, 0, 1, 2, 2], &mut s), Some((3, 3)));
        assert_eq!(&s[..4], &[0, 3, 4, 6]);
        assert_eq!(seq_starts(&[0, 1, 2, 3], &mut s), Some((4, 1)));
        assert_eq!(&s, &[0, 1, 2, 3, 4]);
        assert_eq!(seq_starts(&[0, 2], &mut s), None, "a gap in the rows");
        assert_eq!(seq_starts(&[0, 1, 0], &mut s), None, "a sequence's tokens split");
        assert_eq!(seq_starts(&[0, 1, 2, 3, 4], &mut s), None, "more sequences than room");
        assert_eq!(seq_starts(&[], &mut s), Some((0, 0)));
    }

    #[test]
    fn the_reference_is_causal_and_averages_v() {
        // One head of size 1, k = 0 everywhere: uniform weights, so row i's output is the mean of v[0..=i].
        let shape = AttnShape { heads: 1, kv_heads: 1, head_dim: 1 };
        let v = [1.0, 2.0, 3.0, 6.0];
        let out = reference(shape, &[1.0; 4], &[0.0; 4], &v, &[0, 1], 2, 2, &[0, 4], &[0, 1, 2, 3]);
        assert_eq!(out, vec![1.0, 1.5, 2.0, 3.0]);
    }

    #[test]
    fn causal_flops_count_each_pair_once() {
        let s = AttnShape { heads: 2, kv_heads: 2, head_dim: 8 };
        assert_eq!(flops(s, &[(3, 0)]), 4.0 * 16.0 * 6.0);
        assert_eq!(flops(s, &[(1, 9)]), 4.0 * 16.0 * 10.0);
    }
}
