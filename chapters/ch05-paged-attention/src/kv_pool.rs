//! The paged KV store: one big pre-allocated pool of blocks, each holding `block_size` tokens'
//! K and V for every layer. Which block belongs to which sequence is the block tables' business.

use crate::block_table::BlockId;
use ch00_model::{LlamaConfig, ModelError, Result};

// ANCHOR: pool
/// K and V for `num_blocks` blocks of `block_size` tokens:
/// (layers, num_blocks, block_size, kv_heads * head_dim) each, allocated once up front.
#[derive(Debug, Clone)]
pub struct PagedKvPool {
    k: Vec<f32>, // (layers, num_blocks, block_size, kv_dim)
    v: Vec<f32>, // (layers, num_blocks, block_size, kv_dim)
    num_blocks: usize,
    block_size: usize,
    kv_dim: usize,
}

impl PagedKvPool {
    pub fn new(config: &LlamaConfig, num_blocks: usize, block_size: usize) -> Result<Self> {
        if num_blocks == 0 || block_size == 0 {
            return Err(ModelError::InvalidSettings(format!(
                "a KV pool needs at least one block of at least one token (got {num_blocks} blocks of {block_size})"
            )));
        }
        let kv_dim = config.kv_dim();
        let size = config.num_hidden_layers * num_blocks * block_size * kv_dim;
        Ok(PagedKvPool { k: vec![0.0; size], v: vec![0.0; size], num_blocks, block_size, kv_dim })
    }

    fn offset(&self, layer: usize, block: BlockId, slot: usize) -> usize {
        ((layer * self.num_blocks + block) * self.block_size + slot) * self.kv_dim
    }
    // ANCHOR_END: pool

    /// Stores one token's K and V rows (kv_dim each) in slot `slot` of `block`, layer `layer`.
    pub fn write(&mut self, layer: usize, block: BlockId, slot: usize, k: &[f32], v: &[f32]) {
        let o = self.offset(layer, block, slot);
        self.k[o..o + self.kv_dim].copy_from_slice(k);
        self.v[o..o + self.kv_dim].copy_from_slice(v);
    }

    /// K row (kv_dim) in slot `slot` of `block`, layer `layer`.
    pub fn key(&self, layer: usize, block: BlockId, slot: usize) -> &[f32] {
        let o = self.offset(layer, block, slot);
        &self.k[o..o + self.kv_dim]
    }

    /// V row (kv_dim) in slot `slot` of `block`, layer `layer`.
    pub fn value(&self, layer: usize, block: BlockId, slot: usize) -> &[f32] {
        let o = self.offset(layer, block, slot);
        &self.v[o..o + self.kv_dim]
    }

    // ANCHOR: copy_block
    /// Copy-on-write's copy: every layer's K and V rows of block `src` into block `dst`.
    pub fn copy_block(&mut self, src: BlockId, dst: BlockId) -> Result<()> {
        if src >= self.num_blocks || dst >= self.num_blocks {
            return Err(ModelError::InvalidBatch(format!("copy of block {src} to {dst} in a pool of {}", self.num_blocks)));
        }
        let rows = self.block_size * self.kv_dim; // (block_size, kv_dim) per layer
        for layer in 0..self.k.len() / (self.num_blocks * rows) {
            let (from, to) = (self.offset(layer, src, 0), self.offset(layer, dst, 0));
            self.k.copy_within(from..from + rows, to);
            self.v.copy_within(from..from + rows, to);
        }
        Ok(())
    }
    // ANCHOR_END: copy_block

    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Bytes of the whole pool.
    pub fn bytes_allocated(&self) -> u64 {
        ((self.k.len() + self.v.len()) * std::mem::size_of::<f32>()) as u64
    }

    /// Bytes of one block (all layers, K and V).
    pub fn block_bytes(&self) -> u64 {
        self.bytes_allocated() / self.num_blocks as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_do_not_overlap_and_bytes_add_up() {
        let c = LlamaConfig::named("tiny").unwrap();
        let mut pool = PagedKvPool::new(&c, 3, 4).unwrap();
        let k: Vec<f32> = (0..c.kv_dim()).map(|i| i as f32 + 1.0).collect();
        let v: Vec<f32> = k.iter().map(|x| -x).collect();
        pool.write(1, 2, 3, &k, &v);
        assert_eq!(pool.key(1, 2, 3), &k[..]);
        assert_eq!(pool.value(1, 2, 3), &v[..]);
        assert!(pool.key(0, 2, 3).iter().chain(pool.key(1, 1, 3)).chain(pool.key(1, 2, 2)).all(|&x| x == 0.0));
        let per_token = ch00_model::kv_bytes_per_token(&c, ch00_model::DType::F32);
        assert_eq!(pool.block_bytes(), 4 * per_token);
        assert_eq!(pool.bytes_allocated(), 12 * per_token);
        assert!(PagedKvPool::new(&c, 3, 0).is_err());
    }

    #[test]
    fn a_copied_block_has_every_layer_of_the_source() {
        let c = LlamaConfig::named("tiny").unwrap();
        let mut pool = PagedKvPool::new(&c, 3, 2).unwrap();
        let row = |x: f32| vec![x; c.kv_dim()];
        for layer in 0..c.num_hidden_layers {
            pool.write(layer, 0, 1, &row(layer as f32 + 1.0), &row(-(layer as f32) - 1.0));
        }
        pool.copy_block(0, 2).unwrap();
        for layer in 0..c.num_hidden_layers {
            assert_eq!(pool.key(layer, 2, 1), &row(layer as f32 + 1.0)[..]);
            assert_eq!(pool.value(layer, 2, 1), &row(-(layer as f32) - 1.0)[..]);
            assert!(pool.key(layer, 1, 1).iter().all(|&x| x == 0.0), "block 1 untouched");
        }
        assert!(pool.copy_block(0, 3).is_err());
    }
}
