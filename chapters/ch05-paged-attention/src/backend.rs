//! The paged attention backend: write the step's K/V through the block table ("reshape and
//! cache"), then attend by walking the block table.

use crate::block_table::BlockId;
use crate::block_table::locate;
use crate::kv_pool::PagedKvPool;
use ch00_model::{attend_one, AttentionBackend, ModelError, Result, StepMeta, StepQkv};

/// The pool plus one block table per row of the step: `StepMeta::seq` indexes `tables`.
#[derive(Debug)]
pub struct PagedBackend {
    pub pool: PagedKvPool,
    pub tables: Vec<Vec<BlockId>>,
}

impl AttentionBackend for PagedBackend {
    // ANCHOR: attend
    fn attend(&mut self, layer: usize, meta: &StepMeta, qkv: &StepQkv<'_>, out: &mut [f32]) -> Result<()> {
        let bs = self.pool.block_size();
        // 1. Reshape and cache: token i's K/V goes to (table[pos / bs], pos % bs).
        for i in 0..meta.len() {
            let table = self.tables.get(meta.seq[i]).ok_or_else(|| no_table(meta.seq[i]))?;
            let (block, slot) = locate(table, bs, meta.pos[i]).ok_or_else(|| short_table(meta.pos[i], table.len()))?;
            self.pool.write(layer, block, slot, qkv.k_row(i), qkv.v_row(i));
        }
        // 2. Each token attends over positions 0..=pos, found by walking its block table.
        let pool = &self.pool;
        for (i, out_row) in out.chunks_exact_mut(qkv.shape.q_dim()).enumerate() {
            let table = &self.tables[meta.seq[i]];
            let key = |t: usize| pool.key(layer, table[t / bs], t % bs);
            let value = |t: usize| pool.value(layer, table[t / bs], t % bs);
            attend_one(qkv.shape, qkv.q_row(i), meta.pos[i] + 1, key, value, out_row);
        }
        Ok(())
    }
    // ANCHOR_END: attend
}

fn no_table(seq: usize) -> ModelError {
    ModelError::InvalidBatch(format!("no block table for row {seq}"))
}

fn short_table(pos: usize, blocks: usize) -> ModelError {
    ModelError::InvalidBatch(format!("position {pos} is beyond a block table of {blocks} blocks"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ch00_model::ops::row;
    use ch00_model::{LlamaConfig, Model};
    use ch02_kv_cache::{ContiguousBackend, KvCache};

    /// Two sequences batched in one step, scattered over non-adjacent blocks, give the same
    /// logits as ch02's contiguous caches — for the prefill and for decode steps after it.
    #[test]
    fn paged_matches_contiguous_on_the_tiny_model() {
        let model = Model::random(LlamaConfig::named("tiny").unwrap(), 0).unwrap();
        let c = &model.config;
        let (a, b) = (vec![1u32, 17, 42, 99, 3, 8, 8], vec![1u32, 5, 6]);
        let mut paged =
            PagedBackend { pool: PagedKvPool::new(c, 8, 2).unwrap(), tables: vec![vec![5, 0, 7, 2, 4], vec![6, 1, 3]] };
        let mut contiguous = ContiguousBackend { slots: vec![KvCache::new(c, 16), KvCache::new(c, 16)] };
        let mut tokens: Vec<u32> = a.iter().chain(&b).copied().collect();
        let mut meta = StepMeta::span(0, 0, a.len());
        meta.push_span(1, 0, b.len());
        let mut logits_for = vec![a.len() - 1, tokens.len() - 1];
        let mut lens = [a.len(), b.len()];
        for _step in 0..3 {
            let p = model.forward(&tokens, &meta, &logits_for, &mut paged).unwrap();
            let q = model.forward(&tokens, &meta, &logits_for, &mut contiguous).unwrap();
            let diff = (&p - &q).iter().fold(0.0f32, |m, x| m.max(x.abs()));
            assert!(diff < 1e-5, "paged and contiguous logits differ by {diff}");
            // Decode: each sequence feeds its greedy token at its next position.
            tokens = (0..2).map(|r| ch00_model::sampling::argmax(row(&p, r))).collect();
            meta = StepMeta::span(0, lens[0], 1);
            meta.push_span(1, lens[1], 1);
            logits_for = vec![0, 1];
            lens = [lens[0] + 1, lens[1] + 1];
        }
    }

    #[test]
    fn a_position_past_the_table_is_an_error() {
        let model = Model::random(LlamaConfig::named("tiny").unwrap(), 0).unwrap();
        let mut paged = PagedBackend { pool: PagedKvPool::new(&model.config, 2, 2).unwrap(), tables: vec![vec![0]] };
        let err = model.forward(&[1, 2, 3], &StepMeta::span(0, 0, 3), &[2], &mut paged).unwrap_err();
        assert!(matches!(err, ModelError::InvalidBatch(_)), "{err}");
    }
}
