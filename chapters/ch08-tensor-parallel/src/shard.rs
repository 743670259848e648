//! Which rows and columns of each matrix a rank holds (Megatron-LM's split of a Llama block).

use ch00_model::cpu::packed::Packed;
use ch00_model::{LlamaConfig, Model, ModelError, Result};
use ndarray::{s, Array1, Array2};
use std::ops::Range;

/// Rank `rank` of `world`: the heads, K/V heads, MLP columns and vocabulary rows it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub rank: usize,
    pub world: usize,
    /// Query heads (a contiguous range; every rank has as many).
    pub heads: Range<usize>,
    /// K/V heads: its query heads' own. With more ranks than K/V heads, a K/V head is replicated
    /// on `world / kv_heads` ranks (each computes and caches it).
    pub kv_heads: Range<usize>,
    /// Columns of the MLP's intermediate dimension.
    pub inter: Range<usize>,
    /// Rows of the vocabulary (embedding lookup and lm_head).
    pub vocab: Range<usize>,
}

/// The `rank`-th of `world` near-equal parts of `0..n`.
pub fn part(n: usize, rank: usize, world: usize) -> Range<usize> {
    rank * n / world..(rank + 1) * n / world
}

impl Plan {
    // ANCHOR: plan
    pub fn new(c: &LlamaConfig, rank: usize, world: usize) -> Result<Self> {
        let (h, kv) = (c.num_attention_heads, c.num_key_value_heads);
        let fits = world > 0 && rank < world && h % world == 0 && (kv % world == 0 || world % kv == 0);
        if !fits {
            return Err(ModelError::UnsupportedConfig(format!(
                "{world} ranks cannot split {h} query heads and {kv} K/V heads evenly (rank {rank})"
            )));
        }
        let heads = part(h, rank, world);
        let group = h / kv; // query heads per K/V head
        let kv_heads = heads.start / group..(heads.end - 1) / group + 1;
        Ok(Plan {
            rank,
            world,
            heads,
            kv_heads,
            inter: part(c.intermediate_size, rank, world),
            vocab: part(c.vocab_size, rank, world),
        })
    }
    // ANCHOR_END: plan

    /// The config of this rank's slice: its heads and K/V heads (what its attention and its KV
    /// cache see); every other dimension as the model's.
    pub fn rank_config(&self, c: &LlamaConfig) -> LlamaConfig {
        LlamaConfig { num_attention_heads: self.heads.len(), num_key_value_heads: self.kv_heads.len(), ..c.clone() }
    }
}

/// One rank's weights. Column-parallel matrices keep their rows (output features), row-parallel
/// ones their columns (input features); norms are replicated.
#[derive(Debug, Clone)]
pub struct RankWeights {
    pub plan: Plan,
    pub embed: Array2<f32>, // (vocab slice, hidden)
    pub layers: Vec<RankLayer>,
    pub norm: Array1<f32>,  // (hidden)
    pub lm_head: Packed,    // (vocab slice, hidden)
}

#[derive(Debug, Clone)]
pub struct RankLayer {
    pub attn_norm: Array1<f32>, // (hidden)
    pub wqkv: Packed,           // (heads_r·d + 2·kv_r·d, hidden): column-parallel
    pub wo: Packed,             // (hidden, heads_r·d): row-parallel
    pub mlp_norm: Array1<f32>,  // (hidden)
    pub w_gate_up: Packed,      // (2·inter_r, hidden): column-parallel
    pub w_down: Packed,         // (hidden, inter_r): row-parallel
}

impl RankWeights {
    // ANCHOR: shard
    /// Cuts this rank's shard out of the whole model.
    pub fn of(model: &Model, plan: Plan) -> Result<Self> {
        let c = &model.config;
        let d = c.head_dim;
        let rows = |r: &Range<usize>, unit: usize| r.start * unit..r.end * unit;
        let (q, kv, i) = (rows(&plan.heads, d), rows(&plan.kv_heads, d), plan.inter.clone());
        let stack = |parts: &[Array2<f32>]| -> Result<Packed> {
            let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
            Packed::stack(&views).map_err(ModelError::UnsupportedConfig)
        };
        let layers = model
            .layers
            .iter()
            .map(|l| {
                let (wq, wk, wv) = (l.wq(), l.wk(), l.wv()); // (out, in), HF layout
                let wo = l.wo.unpack(); // (hidden, q_dim)
                let (gate, up, down) = (l.w_gate(), l.w_up(), l.w_down.unpack());
                Ok(RankLayer {
                    attn_norm: l.attn_norm.clone(),
                    wqkv: stack(&[wq.slice(s![q.clone(), ..]).to_owned(), wk.slice(s![kv.clone(), ..]).to_owned(), wv.slice(s![kv.clone(), ..]).to_owned()])?,
                    wo: Packed::new(&wo.slice(s![.., q.clone()])),
                    mlp_norm: l.mlp_norm.clone(),
                    w_gate_up: stack(&[gate.slice(s![i.clone(), ..]).to_owned(), up.slice(s![i.clone(), ..]).to_owned()])?,
                    w_down: Packed::new(&down.slice(s![.., i.clone()])),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let v = plan.vocab.clone();
        let embed = model.embed.unpack_rows(v.clone());
        let lm_head = Packed::new(&model.lm_head().unpack_rows(v).view());
        Ok(RankWeights { plan, embed, layers, norm: model.norm.clone(), lm_head })
    }
    // ANCHOR_END: shard

    /// Bytes of f32 weights this rank holds.
    pub fn bytes(&self) -> u64 {
        let packed = |p: &Packed| p.rows() as u64 * p.cols() as u64;
        let layers: u64 = self.layers.iter().map(|l| packed(&l.wqkv) + packed(&l.wo) + packed(&l.w_gate_up) + packed(&l.w_down)).sum();
        4 * (layers + self.embed.len() as u64 + packed(&self.lm_head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_split_evenly_and_kv_heads_replicate_past_their_count() {
        let c = LlamaConfig { num_attention_heads: 8, num_key_value_heads: 2, ..LlamaConfig::named("tiny").unwrap() };
        let p = |r, w| Plan::new(&c, r, w).unwrap();
        assert_eq!((p(1, 2).heads, p(1, 2).kv_heads), (4..8, 1..2));
        assert_eq!((p(3, 4).heads, p(3, 4).kv_heads), (6..8, 1..2));
        assert_eq!((p(2, 8).heads, p(2, 8).kv_heads), (2..3, 0..1)); // K/V head 0 on ranks 0-3
        assert!(Plan::new(&c, 0, 3).is_err());
        let parts: Vec<_> = (0..3).map(|r| part(10, r, 3)).collect();
        assert_eq!(parts, [0..3, 3..6, 6..10]);
    }
}
