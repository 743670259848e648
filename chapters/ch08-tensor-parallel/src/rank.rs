//! One rank's step: the ch00 forward pass over this rank's shard, with the two all-reduces per
//! layer (after o_proj and after down_proj), the embedding's all-reduce and the logits' gather.

use crate::comm::Group;
use crate::shard::RankWeights;
use ch00_model::ops::{linear, rms_norm, swiglu};
use ch00_model::rope::Rope;
use ch00_model::{AttentionBackend, AttnShape, LlamaConfig, ModelError, Result, StepMeta, StepQkv};
use ch02_kv_cache::{ContiguousBackend, KvCache};
use ndarray::{s, Array2};

/// A rank: its weights, the model's config, its slice's config, and its KV cache (its own K/V
/// heads only, one sequence).
pub struct Rank {
    pub weights: RankWeights,
    config: LlamaConfig,
    local: LlamaConfig,
    rope: Rope,
    kv: ContiguousBackend,
}

impl Rank {
    pub fn new(weights: RankWeights, config: &LlamaConfig, max_len: usize) -> Self {
        let local = weights.plan.rank_config(config);
        let kv = ContiguousBackend { slots: vec![KvCache::new(&local, max_len)] };
        Rank { rope: Rope::new(config), config: config.clone(), local, weights, kv }
    }

    /// K/V bytes this rank's cache holds for `len` positions.
    pub fn kv_bytes(&self, len: usize) -> u64 {
        2 * self.local.num_hidden_layers as u64 * (self.local.kv_dim() * len) as u64 * 4
    }

    // ANCHOR: step
    /// Feeds `tokens` at positions `start..` of the one sequence and returns the whole
    /// vocabulary's logits of the last token (gathered from every rank). Every rank of `group`
    /// must call it with the same tokens.
    pub fn step(&mut self, group: &Group, tokens: &[u32], start: usize) -> Result<Vec<f32>> {
        let (c, w, r) = (&self.config, &self.weights, self.weights.plan.rank);
        let (n, hidden) = (tokens.len(), c.hidden_size);
        let shape = AttnShape::of(&self.local);
        let meta = StepMeta::span(0, start, n);
        // Vocab-parallel embedding: the rows of this rank's ids, zeros for the others'; the sum
        // over ranks is the lookup.
        let mut x = Array2::<f32>::zeros((n, hidden)); // (n, hidden)
        for (t, mut row) in tokens.iter().zip(x.rows_mut()) {
            let t = *t as usize;
            if t >= c.vocab_size {
                return Err(ModelError::TokenOutOfRange { id: 0, token: t as u32, vocab: c.vocab_size });
            }
            if w.plan.vocab.contains(&t) {
                row.assign(&w.embed.row(t - w.plan.vocab.start));
            }
        }
        all_reduce(group, r, &mut x)?;
        let (q_r, kv_r) = (shape.q_dim(), shape.kv_dim());
        let mut h = Array2::zeros((n, hidden));
        let mut qkv = Array2::zeros((n, q_r + 2 * kv_r)); // (n, my heads' q, k, v)
        let mut attn = vec![0.0f32; n * q_r]; // (n, my heads · head_dim)
        let mut out = Array2::zeros((n, hidden)); // (n, hidden): a partial sum until all-reduced
        let inter_r = w.plan.inter.len();
        let mut gate_up = Array2::zeros((n, 2 * inter_r));
        let mut act = Array2::zeros((n, inter_r));
        for (l, layer) in w.layers.iter().enumerate() {
            rms_norm(&x.view(), &layer.attn_norm.view(), c.rms_norm_eps, &mut h);
            linear(&h.view(), &layer.wqkv, &mut qkv); // column-parallel: my heads, no communication
            self.rope.apply(&mut qkv, &meta.pos, shape.heads + shape.kv_heads);
            let (q, k, v) = (
                qkv.slice(s![.., ..q_r]).to_owned(),
                qkv.slice(s![.., q_r..q_r + kv_r]).to_owned(),
                qkv.slice(s![.., q_r + kv_r..]).to_owned(),
            );
            let step = StepQkv { shape, q: flat(&q)?, k: flat(&k)?, v: flat(&v)? };
            self.kv.attend(l, &meta, &step, &mut attn)?; // my heads over my cached K/V
            let attn_view = ndarray::ArrayView2::from_shape((n, q_r), &attn).map_err(|e| ModelError::InvalidBatch(e.to_string()))?;
            linear(&attn_view, &layer.wo, &mut out); // row-parallel: a partial sum of o_proj
            all_reduce(group, r, &mut out)?; // all-reduce 1 of 2
            x += &out;
            rms_norm(&x.view(), &layer.mlp_norm.view(), c.rms_norm_eps, &mut h);
            linear(&h.view(), &layer.w_gate_up, &mut gate_up); // column-parallel: my MLP columns
            swiglu(&gate_up.view(), &mut act);
            linear(&act.view(), &layer.w_down, &mut out); // row-parallel: a partial sum of down_proj
            all_reduce(group, r, &mut out)?; // all-reduce 2 of 2
            x += &out;
        }
        // The last token's logits: each rank scores its vocabulary rows; a gather joins them.
        let last = x.slice(s![n - 1..n, ..]).to_owned(); // (1, hidden)
        let mut normed = Array2::zeros((1, hidden));
        rms_norm(&last.view(), &w.norm.view(), c.rms_norm_eps, &mut normed);
        let mut logits = Array2::zeros((1, w.plan.vocab.len())); // (1, my vocab rows)
        linear(&normed.view(), &w.lm_head, &mut logits);
        Ok(group.all_gather(r, flat(&logits)?)) // (vocab)
    }
    // ANCHOR_END: step
}

fn all_reduce(group: &Group, rank: usize, a: &mut Array2<f32>) -> Result<()> {
    let buf = a.as_slice_mut().ok_or_else(|| ModelError::InvalidBatch("a non-contiguous activation".into()))?;
    group.all_reduce_sum(rank, buf);
    Ok(())
}

fn flat(a: &Array2<f32>) -> Result<&[f32]> {
    a.as_slice().ok_or_else(|| ModelError::InvalidBatch("a non-contiguous activation".into()))
}
