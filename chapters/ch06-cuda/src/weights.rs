//! The model's weights on the GPU, uploaded once in the engine's element type, with Q/K/V fused
//! into one matrix and gate/up into another, so each layer runs four GEMMs instead of seven.

use crate::device::Gpu;
use crate::float::GpuFloat;
use crate::kernels::Kernels;
use ch00_model::{LlamaConfig, Model, Result};
use cudarc::driver::CudaSlice;
use ndarray::Array2;

// ANCHOR: gpu_layer
/// One decoder block on the GPU. Linear weights are (out, in) row-major, as in Hugging Face.
pub struct GpuLayer<T> {
    pub attn_norm: CudaSlice<T>, // (hidden)
    pub wqkv: CudaSlice<T>,      // (q_dim + 2 · kv_dim, hidden): q rows, then k, then v
    pub wo: CudaSlice<T>,        // (hidden, q_dim)
    pub mlp_norm: CudaSlice<T>,  // (hidden)
    pub wgu: CudaSlice<T>,       // (2 · intermediate, hidden): gate i and up i in rows 2i, 2i + 1
    pub wdown: CudaSlice<T>,     // (hidden, intermediate)
}
// ANCHOR_END: gpu_layer

pub struct GpuWeights<T> {
    pub embed: CudaSlice<T>, // (vocab, hidden)
    pub layers: Vec<GpuLayer<T>>,
    pub norm: CudaSlice<T>,            // (hidden)
    pub lm_head: Option<CudaSlice<T>>, // (vocab, hidden); None when tied to embed
    pub inv_freq: CudaSlice<f32>,      // (head_dim / 2)
    pub bytes: u64,
}

fn to_t<T: GpuFloat>(parts: &[&[f32]]) -> Vec<T> {
    parts.iter().flat_map(|p| p.iter().map(|&x| T::from_f32(x))).collect()
}

fn flat(a: &Array2<f32>) -> std::borrow::Cow<'_, [f32]> {
    match a.as_slice() {
        Some(s) => s.into(),
        None => a.iter().copied().collect::<Vec<_>>().into(),
    }
}

/// Rows (gate 0 … gate I−1, up 0 … up I−1) of ch00's fused (2I, in) matrix reordered to gate 0,
/// up 0, gate 1, up 1, …: one warp of `gemv_swiglu` then reads both rows of a pair.
pub fn interleave_halves(a: &Array2<f32>) -> Vec<f32> {
    let (rows, cols) = a.dim();
    let half = rows / 2;
    let mut out = Vec::with_capacity(rows * cols);
    for i in 0..half {
        out.extend(a.row(i).iter());
        out.extend(a.row(half + i).iter());
    }
    out
}

impl<T: GpuFloat> GpuWeights<T> {
    /// Uploads a CPU model, converting f32 to `T` (exact when the checkpoint was stored in `T`).
    pub fn upload(gpu: &Gpu, model: &Model) -> Result<Self> {
        let up = |what: &str, parts: &[&[f32]]| gpu.upload(what, &to_t::<T>(parts));
        let mut layers = Vec::with_capacity(model.layers.len());
        for l in &model.layers {
            layers.push(GpuLayer {
                attn_norm: up("a norm weight", &[l.attn_norm.as_slice().unwrap_or(&[])])?,
                wqkv: up("q/k/v weights", &[&flat(&l.wqkv.unpack())])?, // q, k, v rows, as here
                wo: up("o weights", &[&flat(&l.wo.unpack())])?,
                mlp_norm: up("a norm weight", &[l.mlp_norm.as_slice().unwrap_or(&[])])?,
                wgu: up("gate/up weights", &[&interleave_halves(&l.w_gate_up.unpack())])?, // gate, up, gate, up, …
                wdown: up("down weights", &[&flat(&l.w_down.unpack())])?,
            });
        }
        let embed = up("the embedding", &[&flat(&model.embed.unpack())])?;
        let norm = up("the final norm", &[model.norm.as_slice().unwrap_or(&[])])?;
        let lm_head = model.lm_head.as_ref().map(|h| up("lm_head", &[&flat(&h.unpack())])).transpose()?;
        let inv_freq = gpu.upload("RoPE frequencies", model.rope().inv_freq())?;
        Ok(GpuWeights { embed, layers, norm, lm_head, inv_freq, bytes: weight_bytes::<T>(&model.config) })
    }

    /// Deterministic random weights made on the device, for shapes too big to build on the host
    /// (a 7B model for the decode benchmark). Norm weights are 1; linear weights uniform in
    /// ±1/√in, so activations keep a sane scale through the layers.
    pub fn random(gpu: &Gpu, k: &Kernels<T>, c: &LlamaConfig, inv_freq: &[f32], seed: u64) -> Result<Self> {
        let (h, q, kv, i, v) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size, c.vocab_size);
        let mut n = 0u64;
        let mut rand = |what: &str, rows: usize, cols: usize| -> Result<CudaSlice<T>> {
            let mut w = gpu.zeros::<T>(what, rows * cols)?;
            n += 1;
            k.fill_uniform(gpu, &mut w, seed.wrapping_mul(1000).wrapping_add(n), 1.0 / (cols as f32).sqrt())?;
            Ok(w)
        };
        let ones = |what: &str, len: usize| -> Result<CudaSlice<T>> {
            let mut w = gpu.zeros::<T>(what, len)?;
            k.fill_const(gpu, &mut w, 1.0)?;
            Ok(w)
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for _ in 0..c.num_hidden_layers {
            layers.push(GpuLayer {
                attn_norm: ones("a norm weight", h)?,
                wqkv: rand("q/k/v weights", q + 2 * kv, h)?,
                wo: rand("o weights", h, q)?,
                mlp_norm: ones("a norm weight", h)?,
                wgu: rand("gate/up weights", 2 * i, h)?,
                wdown: rand("down weights", h, i)?,
            });
        }
        let embed = rand("the embedding", v, h)?;
        let lm_head = if c.tie_word_embeddings { None } else { Some(rand("lm_head", v, h)?) };
        let norm = ones("the final norm", h)?;
        let inv_freq = gpu.upload("RoPE frequencies", inv_freq)?;
        gpu.sync()?;
        Ok(GpuWeights { embed, layers, norm, lm_head, inv_freq, bytes: weight_bytes::<T>(c) })
    }

    pub fn lm_head(&self) -> &CudaSlice<T> {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}

/// Bytes of all weights in `T` (the decode floor reads each once per step).
pub fn weight_bytes<T: GpuFloat>(c: &LlamaConfig) -> u64 {
    let (h, q, kv, i, v) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size, c.vocab_size);
    let per_layer = 2 * h + (q + 2 * kv) * h + h * q + 3 * i * h;
    let head = if c.tie_word_embeddings { 0 } else { v * h };
    ((c.num_hidden_layers * per_layer + v * h + h + head) * std::mem::size_of::<T>()) as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn gate_and_up_rows_alternate() {
        // rows: gate 0 = [0, 1], gate 1 = [2, 3], up 0 = [4, 5], up 1 = [6, 7]
        let a = ndarray::Array2::from_shape_vec((4, 2), (0..8).map(|x| x as f32).collect()).unwrap();
        assert_eq!(super::interleave_halves(&a), [0., 1., 4., 5., 2., 3., 6., 7.]);
    }
}
