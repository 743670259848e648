//! The attention step, abstracted: the model computes q, k, v for every token of a step and hands
//! them to a backend, which decides where K and V live. Each chapter supplies its own backend.

use crate::config::LlamaConfig;
use crate::error::Result;
use crate::cpu::kernels::head_scores;
use crate::cpu::weighted::weighted_sums;
use crate::ops::softmax_in_place;
use rayon::prelude::*;

// ANCHOR: step_meta
/// Per-token metadata of one step: which sequence each token belongs to and its position in it.
/// `seq` is whatever the backend indexes its storage by (a request, a cache slot, a block table).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepMeta {
    pub seq: Vec<usize>, // (tokens)
    pub pos: Vec<usize>, // (tokens)
}
// ANCHOR_END: step_meta

impl StepMeta {
    // ANCHOR: span
    /// Tokens at positions `start..start+len` of one sequence (a prefill chunk or a decode token).
    pub fn span(seq: usize, start: usize, len: usize) -> Self {
        StepMeta { seq: vec![seq; len], pos: (start..start + len).collect() }
    }

    /// Appends another sequence's span to this step (token-level batching).
    pub fn push_span(&mut self, seq: usize, start: usize, len: usize) {
        self.seq.extend(std::iter::repeat_n(seq, len));
        self.pos.extend(start..start + len);
    }
    // ANCHOR_END: span

    pub fn len(&self) -> usize {
        self.seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }
}

/// The head layout attention needs: how many query heads share each key/value head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    pub fn of(config: &LlamaConfig) -> Self {
        AttnShape { heads: config.num_attention_heads, kv_heads: config.num_key_value_heads, head_dim: config.head_dim }
    }
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// One layer's q, k, v for the step, after RoPE, as flat row-major slices.
/// q: (tokens, heads * head_dim); k, v: (tokens, kv_heads * head_dim).
pub struct StepQkv<'a> {
    pub shape: AttnShape,
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
}

impl<'a> StepQkv<'a> {
    pub fn q_row(&self, t: usize) -> &'a [f32] {
        let d = self.shape.q_dim();
        &self.q[t * d..(t + 1) * d]
    }
    pub fn k_row(&self, t: usize) -> &'a [f32] {
        let d = self.shape.kv_dim();
        &self.k[t * d..(t + 1) * d]
    }
    pub fn v_row(&self, t: usize) -> &'a [f32] {
        let d = self.shape.kv_dim();
        &self.v[t * d..(t + 1) * d]
    }
}

// ANCHOR: backend
/// Where K and V live. `attend` receives one layer's q, k, v for every token of the step and
/// writes each token's attention output (tokens, heads * head_dim) into `out`. Each token attends
/// to its own sequence's tokens at positions `0..=pos` (causal). `Send`: a step runs on whichever
/// core of the thread pool is free.
pub trait AttentionBackend: Send {
    fn attend(&mut self, layer: usize, meta: &StepMeta, qkv: &StepQkv<'_>, out: &mut [f32]) -> Result<()>;
}
// ANCHOR_END: backend

// ANCHOR: attend_one
/// Scaled dot-product attention of one query token over `n_ctx` context positions, for every
/// head. `key(t)` / `value(t)` return position t's row (kv_heads * head_dim), wherever it is
/// stored: this is the one function every backend shares. Query head h reads key/value head
/// h / (heads / kv_heads) — grouped-query attention.
pub fn attend_one<'k>(
    shape: AttnShape,
    q: &[f32],
    n_ctx: usize,
    key: impl Fn(usize) -> &'k [f32] + Sync,
    value: impl Fn(usize) -> &'k [f32] + Sync,
    out: &mut [f32],
) {
    let d = shape.head_dim;
    let group = shape.heads / shape.kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    // One K/V head and the `group` query heads that read it (adjacent in `out`).
    let kv_head = |(kvh, out_group): (usize, &mut [f32])| {
        let keys: Vec<&[f32]> = (0..n_ctx).map(|t| &key(t)[kvh * d..(kvh + 1) * d]).collect();
        let values: Vec<&[f32]> = (0..n_ctx).map(|t| &value(t)[kvh * d..(kvh + 1) * d]).collect();
        let mut probs = vec![0.0f32; group * n_ctx]; // (group, n_ctx)
        head_scores(&q[kvh * group * d..(kvh + 1) * group * d], &keys, scale, &mut probs); // q_h · k_t / √d
        probs.chunks_exact_mut(n_ctx.max(1)).for_each(softmax_in_place);
        weighted_sums(&probs, &values, out_group); // out_h = Σ_t p_h[t] · v_t, t in order
    };
    // A long context is worth spreading the K/V heads over the cores.
    if n_ctx * shape.q_dim() < PARALLEL_ATTENTION {
        out.chunks_exact_mut(group * d).enumerate().for_each(kv_head);
    } else {
        out.par_chunks_exact_mut(group * d).enumerate().for_each(kv_head);
    }
}
// ANCHOR_END: attend_one

/// Below this many (context position × query dimension) products, `attend_one` stays on one core:
/// waking the others would cost more than it saves.
const PARALLEL_ATTENTION: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_context_token_returns_its_value_for_every_head_in_the_group() {
        let shape = AttnShape { heads: 4, kv_heads: 2, head_dim: 2 };
        let q = [1.0f32; 8];
        let k = [0.5f32; 4];
        let v = [1.0f32, 2.0, 3.0, 4.0];
        let mut out = [0.0f32; 8];
        attend_one(shape, &q, 1, |_| &k[..], |_| &v[..], &mut out);
        assert_eq!(out, [1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0]);
    }

    #[test]
    fn attention_prefers_the_matching_key() {
        let shape = AttnShape { heads: 1, kv_heads: 1, head_dim: 2 };
        let keys = [[10.0f32, 0.0], [0.0, 10.0]];
        let values = [[1.0f32, 0.0], [0.0, 1.0]];
        let mut out = [0.0f32; 2];
        attend_one(shape, &[0.0, 1.0], 2, |t| &keys[t][..], |t| &values[t][..], &mut out);
        assert!(out[1] > 0.99 && out[0] < 0.01, "{out:?}");
    }
}
