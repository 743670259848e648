//! The GPU model runner: weights, the paged KV cache and every activation buffer, allocated once;
//! `forward` launches one pass over a batch of tokens whose metadata is already on the device.
//! Because no buffer moves between steps, a decode pass can be captured as a CUDA graph.

use crate::device::{ptr, Gpu};
use crate::float::GpuFloat;
use crate::kernels::{AttentionIo, Kernels, NormIn, GEMV_MAX_N, PART};
use crate::prefill::{PrefillIo, PrefillVersion};
use crate::weights::GpuWeights;
use ch00_model::{LlamaConfig, ModelError, Result};
use cudarc::driver::CudaSlice;

/// How much one pass can hold; fixes every buffer's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Tokens per forward pass (longer steps are run as several passes: chunked prefill).
    pub max_tokens: usize,
    /// Sequences per pass (rows of block tables, rows of logits).
    pub max_rows: usize,
    /// Blocks per block table: ⌈max_len / block_size⌉.
    pub max_blocks: usize,
    /// Query tokens × context partitions the attention scratch holds.
    pub max_query_parts: usize,
}

// ANCHOR: meta
/// Where each per-step array lives inside the one i32 metadata buffer, so that a step uploads
/// its metadata with one copy and graphs always find it at the same addresses.
#[derive(Debug, Clone, Copy)]
pub struct MetaLayout {
    pub tokens: usize,    // (max_tokens) token ids
    pub pos: usize,       // (max_tokens) positions
    pub slot: usize,      // (max_tokens) cache slot = block · block_size + offset; -1 = padding
    pub rows: usize,      // (max_tokens) which block table each token uses
    pub ctx: usize,       // (max_tokens) context length each token attends over (pos + 1; 0 = padding)
    pub logit_idx: usize, // (max_rows) the token whose logits each row wants
    pub tables: usize,    // (max_rows, max_blocks) block tables
    pub seq_start: usize, // (max_rows + 1) first token of each row's query rows (prefill passes)
    pub len: usize,
}
// ANCHOR_END: meta

impl MetaLayout {
    pub fn new(c: &Capacity) -> Self {
        let m = c.max_tokens;
        let r = c.max_rows;
        MetaLayout {
            tokens: 0,
            pos: m,
            slot: 2 * m,
            rows: 3 * m,
            ctx: 4 * m,
            logit_idx: 5 * m,
            tables: 5 * m + r,
            seq_start: 5 * m + r + r * c.max_blocks,
            len: 5 * m + r + r * c.max_blocks + r + 1,
        }
    }
}

/// Activation buffers, sized for `Capacity`.
struct Buffers<T> {
    x: CudaSlice<f32>, // (max_tokens, hidden) residual stream
    x2: CudaSlice<f32>, // (GEMV_MAX_N, hidden) its other buffer, for the passes gemv_norm takes
    h: CudaSlice<T>,   // (max_tokens, hidden) normed
    qkv: CudaSlice<T>, // (max_tokens, q_dim + 2 kv_dim)
    q: CudaSlice<T>,   // (max_tokens, q_dim) after RoPE
    attn: CudaSlice<T>, // (max_tokens, q_dim)
    o: CudaSlice<T>,   // (max_tokens, hidden) o_proj and down_proj outputs
    gu: CudaSlice<T>,  // (max_tokens, 2 · intermediate), gate and up interleaved
    act: CudaSlice<T>, // (max_tokens, intermediate)
    part_o: CudaSlice<f32>,  // (max_query_parts, heads, head_dim)
    part_ml: CudaSlice<f32>, // (max_query_parts, heads, 2)
    done: CudaSlice<i32>,    // (max_rows, heads) partition counters (the folded merge), zero
    last: CudaSlice<T>,     // (max_rows, hidden)
    pub logits: CudaSlice<T>, // (max_rows, vocab)
    pub ids: CudaSlice<u32>,  // (max_rows)
    pub meta: CudaSlice<i32>,
}

/// The paged KV cache: (layers, num_blocks · block_size, kv_heads, head_dim) for K and for V.
pub struct KvCache<T> {
    pub k: CudaSlice<T>,
    pub v: CudaSlice<T>,
    pub num_blocks: usize,
    pub block_size: usize,
    /// Elements of one layer's K (or V) cache.
    pub layer_elems: usize,
}

impl<T: GpuFloat> KvCache<T> {
    pub fn new(gpu: &Gpu, c: &LlamaConfig, num_blocks: usize, block_size: usize) -> Result<Self> {
        let layer_elems = num_blocks
            .checked_mul(block_size)
            .and_then(|x| x.checked_mul(c.kv_dim()))
            .ok_or_else(|| ModelError::InvalidSettings(format!("{num_blocks} blocks of {block_size} tokens overflow")))?;
        let total = layer_elems * c.num_hidden_layers;
        Ok(KvCache {
            k: gpu.zeros("the K cache", total)?,
            v: gpu.zeros("the V cache", total)?,
            num_blocks,
            block_size,
            layer_elems,
        })
    }

    /// Checks that the pool's sizes (public fields) agree with its buffers' lengths, for `c`.
    pub fn check(&self, c: &LlamaConfig) -> Result<()> {
        let want = self.num_blocks.checked_mul(self.block_size).and_then(|s| s.checked_mul(c.kv_dim()));
        let total = self.layer_elems.checked_mul(c.num_hidden_layers);
        if want != Some(self.layer_elems) || total.is_none_or(|t| self.k.len() < t || self.v.len() < t) {
            return Err(ModelError::InvalidSettings(format!(
                "a KV cache of {} blocks of {} tokens does not match its buffers or this model",
                self.num_blocks, self.block_size
            )));
        }
        Ok(())
    }

    /// Bytes of one block, all layers, K and V.
    pub fn block_bytes(c: &LlamaConfig, block_size: usize) -> u64 {
        (2 * c.num_hidden_layers * block_size * c.kv_dim() * std::mem::size_of::<T>()) as u64
    }
}

/// Device bytes of the activation buffers `GpuModel::new` allocates for `cap`.
pub fn buffer_bytes<T: GpuFloat>(c: &LlamaConfig, cap: &Capacity) -> u64 {
    let (m, r) = (cap.max_tokens, cap.max_rows);
    let (h, q, kv, i) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
    let t = std::mem::size_of::<T>();
    let f32s = (m + m.min(GEMV_MAX_N)) * h + cap.max_query_parts * (q + c.num_attention_heads * 2);
    let ts = m * (h + (q + 2 * kv) + 2 * q + h + 3 * i) + r * (h + c.vocab_size);
    (f32s * 4 + ts * t + (MetaLayout::new(cap).len + r * c.num_attention_heads) * 4 + r * 4) as u64
}

/// Which attention kernel a pass runs (the runner chooses: `GpuRunner::pass_attention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassAttention {
    /// The per-token paged kernel over `parts` context partitions (decode; any pass).
    Paged { parts: usize },
    /// The prefill kernel over the `seqs` sequences whose rows `meta.seq_start` delimits, the
    /// longest `max_q_len` rows.
    Prefill { seqs: usize, max_q_len: usize, version: PrefillVersion },
}

pub struct GpuModel<T> {
    pub config: LlamaConfig,
    pub kernels: Kernels<T>,
    pub weights: GpuWeights<T>,
    pub cap: Capacity,
    pub layout: MetaLayout,
    buf: Buffers<T>,
}

impl<T: GpuFloat> GpuModel<T> {
    pub fn new(gpu: &Gpu, config: LlamaConfig, kernels: Kernels<T>, weights: GpuWeights<T>, cap: Capacity) -> Result<Self> {
        let c = &config;
        let (m, r) = (cap.max_tokens, cap.max_rows);
        let (h, q, kv, i) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let layout = MetaLayout::new(&cap);
        let buf = Buffers {
            x: gpu.zeros("the residual stream", m * h)?,
            x2: gpu.zeros("the residual stream", m.min(GEMV_MAX_N) * h)?,
            h: gpu.zeros("activations", m * h)?,
            qkv: gpu.zeros("activations", m * (q + 2 * kv))?,
            q: gpu.zeros("activations", m * q)?,
            attn: gpu.zeros("activations", m * q)?,
            o: gpu.zeros("activations", m * h)?,
            gu: gpu.zeros("activations", m * 2 * i)?,
            act: gpu.zeros("activations", m * i)?,
            part_o: gpu.zeros("attention partitions", cap.max_query_parts * q)?,
            part_ml: gpu.zeros("attention partitions", cap.max_query_parts * c.num_attention_heads * 2)?,
            done: gpu.zeros("attention partition counters", r * c.num_attention_heads)?,
            last: gpu.zeros("activations", r * h)?,
            logits: gpu.zeros("logits", r * c.vocab_size)?,
            ids: gpu.zeros("token ids", r)?,
            meta: gpu.zeros("step metadata", layout.len)?,
        };
        Ok(GpuModel { config, kernels, weights, cap, layout, buf })
    }

    /// Uploads a step's metadata (laid out by `self.layout`) in one copy.
    pub fn upload_meta(&mut self, gpu: &Gpu, host: &[i32]) -> Result<()> {
        if host.len() != self.layout.len {
            return Err(ModelError::InvalidBatch(format!("metadata of {} ints, expected {}", host.len(), self.layout.len)));
        }
        gpu.stream.memcpy_htod(host, &mut self.buf.meta).map_err(|e| crate::device::device_err("uploading step metadata", e))
    }

    fn meta(&self, gpu: &Gpu, offset: usize) -> u64 {
        ptr(gpu, &self.buf.meta) + (offset * 4) as u64
    }

    // ANCHOR: forward
    /// One pass over `n` tokens (metadata already uploaded): every layer, then logits and greedy
    /// ids for `rows` sequences into `self.logits()` / `self.ids()`. Launches only; no sync.
    /// `parts`: context partitions of the longest context (the graph's maximum when captured).
    ///
    /// # Safety
    /// `self` and `kv` were made on `gpu`; `self`'s public fields are as [`GpuModel::new`] made
    /// them, from kernels and weights built for `self.config` (the pass's sizes are checked
    /// against `self.cap`, and `kv`'s against its buffers).
    /// The kernels index the caches and tables by the ids in the metadata last uploaded, which
    /// must describe this pass over `kv`: for the first `n` tokens, `tokens` in 0..vocab, `slot`
    /// −1 or a slot of `kv` (in 0..num_blocks · block_size) no other token writes, `rows` in
    /// 0..max_rows, `ctx` at most `parts · PART` and `max_blocks · block_size`, and the first
    /// ⌈ctx / block_size⌉ entries of the token's table row blocks of `kv`; for the first `rows`
    /// rows, `logit_idx` in 0..n.
    pub unsafe fn forward(&self, gpu: &Gpu, kv: &KvCache<T>, n: usize, rows: usize, parts: usize) -> Result<()> {
        // SAFETY: this fn's contract is forward_with's for the paged kernel.
        unsafe { self.forward_with(gpu, kv, n, rows, PassAttention::Paged { parts }) }
    }

    /// [`forward`](Self::forward) with the attention kernel chosen by the caller.
    ///
    /// # Safety
    /// As [`forward`](Self::forward)'s with `parts` for `Paged`. For `Prefill`, in place of the
    /// partitions: `seq_start[0..=seqs]` in the metadata is non-decreasing from 0 to `n`, no
    /// sequence longer than `max_q_len`, `seqs` at most `max_rows`; the tokens of sequence s
    /// (`seq_start[s] .. seq_start[s + 1]`) have table row s and consecutive positions, and the
    /// first ⌈(last position + 1) / block_size⌉ entries of that row are blocks of `kv`.
    pub unsafe fn forward_with(&self, gpu: &Gpu, kv: &KvCache<T>, n: usize, rows: usize, attn: PassAttention) -> Result<()> {
        let (c, k, w, b, l) = (&self.config, &self.kernels, &self.weights, &self.buf, &self.layout);
        let fits = match attn {
            PassAttention::Paged { parts } => n * parts <= self.cap.max_query_parts,
            PassAttention::Prefill { seqs, max_q_len, .. } => seqs <= self.cap.max_rows && max_q_len <= n,
        };
        if n > self.cap.max_tokens || rows > self.cap.max_rows || !fits || rows == 0 {
            return Err(ModelError::InvalidBatch(format!("pass of {n} tokens, {rows} rows, {attn:?} exceeds {:?}", self.cap)));
        }
        kv.check(c)?;
        let (h, q, kvd, inter, eps) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size, c.rms_norm_eps as f32);
        let p = |s: &CudaSlice<T>| ptr(gpu, s);
        // The residual stream's two buffers: an add fused into a GEMV writes the one it does not read
        // (only GEMV-sized passes fuse, and x2 holds GEMV_MAX_N rows; kernels.rs norm_fuses).
        let (xa, xb) = (ptr(gpu, &b.x), ptr(gpu, &b.x2));
        let mut x = xa; // the buffer that holds the residual now
        let norm = |x: u64, delta: u64, w: &CudaSlice<T>| NormIn { x, delta, w: p(w), x_out: if x == xa { xb } else { xa }, eps };
        // SAFETY: the activation buffers were allocated by `new` for `self.cap`, which the pass
        // fits (checked above), and the weights for `self.config`; `kv` holds `layers ·
        // layer_elems` elements per cache (checked); the ids in the metadata are this fn's
        // contract. No launch's output is one of its inputs; all run on `gpu.stream`.
        unsafe {
            k.embedding(gpu, p(&w.embed), self.meta(gpu, l.tokens), x, n, h)?;
            let elem = std::mem::size_of::<T>() as u64;
            for (li, layer) in w.layers.iter().enumerate() {
                let (kc, vc) = (p(&kv.k) + (li * kv.layer_elems) as u64 * elem, p(&kv.v) + (li * kv.layer_elems) as u64 * elem);
                // x += the last layer's MLP output (none before the first layer), normed into the QKV GEMV
                let delta = if li == 0 { 0 } else { p(&b.o) };
                x = k.norm_linear(gpu, &norm(x, delta, &layer.attn_norm), p(&b.h), p(&layer.wqkv), p(&b.qkv), n, h, q + 2 * kvd)?; // (n, q + 2 kv)
                let (pos, slot) = (self.meta(gpu, l.pos), self.meta(gpu, l.slot));
                k.rope_cache(gpu, p(&b.qkv), p(&b.q), kc, vc, pos, slot, ptr(gpu, &w.inv_freq), n)?;
                let io = AttentionIo {
                    q: p(&b.q),
                    k_cache: kc,
                    v_cache: vc,
                    tables: self.meta(gpu, l.tables),
                    rows: self.meta(gpu, l.rows),
                    ctx_lens: self.meta(gpu, l.ctx),
                    part_o: ptr(gpu, &b.part_o),
                    part_ml: ptr(gpu, &b.part_ml),
                    out: p(&b.attn),
                    // decode passes (a token per row) fold the merge; longer ones launch it
                    done: if n <= self.cap.max_rows { ptr(gpu, &b.done) } else { 0 },
                };
                match attn {
                    PassAttention::Paged { parts } => k.attention(gpu, &io, n, kv.block_size, self.cap.max_blocks, parts, self.cap.max_query_parts)?,
                    PassAttention::Prefill { seqs, max_q_len, version } => {
                        let pio = PrefillIo {
                            q: io.q,
                            k_cache: kc,
                            v_cache: vc,
                            tables: io.tables,
                            seq_start: self.meta(gpu, l.seq_start),
                            pos,
                            out: io.out,
                        };
                        k.prefill.launch(gpu, &pio, version, seqs, max_q_len, kv.block_size, self.cap.max_blocks)?
                    }
                } // (n, heads · head_dim)
                k.linear(gpu, p(&b.attn), p(&layer.wo), p(&b.o), n, q, h)?;
                let mlp = norm(x, p(&b.o), &layer.mlp_norm);
                x = k.norm_gate_up_swiglu(gpu, &mlp, p(&b.h), p(&layer.wgu), p(&b.gu), p(&b.act), n, h, inter)?; // (n, intermediate)
                k.linear(gpu, p(&b.act), p(&layer.wdown), p(&b.o), n, inter, h)?;
            }
            k.add_rmsnorm(gpu, x, p(&b.o), p(&w.norm), p(&b.h), n, h, eps)?;
            k.gather_rows(gpu, p(&b.h), self.meta(gpu, l.logit_idx), p(&b.last), rows, h)?; // (rows, hidden)
            k.linear(gpu, p(&b.last), p(w.lm_head()), p(&b.logits), rows, h, c.vocab_size)?; // (rows, vocab)
            k.argmax(gpu, p(&b.logits), ptr(gpu, &b.ids), rows, c.vocab_size)
        }
    }
    // ANCHOR_END: forward

    /// The first `rows` greedy ids of the last pass (synchronises).
    pub fn ids(&self, gpu: &Gpu, rows: usize) -> Result<Vec<u32>> {
        let mut out = vec![0u32; rows];
        gpu.stream.memcpy_dtoh(&self.buf.ids.slice(0..rows), &mut out).map_err(|e| crate::device::device_err("reading token ids", e))?;
        Ok(out)
    }

    /// Logits row `row` of the last pass, as f32 (synchronises).
    pub fn logits_row(&self, gpu: &Gpu, row: usize) -> Result<Vec<f32>> {
        let v = self.config.vocab_size;
        let mut out = vec![T::default(); v];
        gpu.stream
            .memcpy_dtoh(&self.buf.logits.slice(row * v..(row + 1) * v), &mut out)
            .map_err(|e| crate::device::device_err("reading logits", e))?;
        Ok(out.into_iter().map(T::to_f32).collect())
    }

    /// Context partitions for a context of `ctx` positions.
    pub fn parts_for(ctx: usize) -> usize {
        ctx.div_ceil(PART).max(1)
    }
}
