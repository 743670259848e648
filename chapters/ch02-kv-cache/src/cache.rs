//! A contiguous KV cache for one sequence, pre-allocated to the maximum length.

use ch00_model::LlamaConfig;

/// K and V of one sequence for every layer, laid out contiguously and allocated up front for
/// `max_len` tokens: (layers, max_len, kv_heads * head_dim) each.
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Vec<f32>, // (layers, max_len, kv_dim)
    v: Vec<f32>, // (layers, max_len, kv_dim)
    kv_dim: usize,
    max_len: usize,
    /// Tokens written so far (positions 0..len are valid).
    len: usize,
}

impl KvCache {
    // ANCHOR: alloc
    /// Reserves room for `max_len` tokens in every layer, whether or not they will be used.
    pub fn new(config: &LlamaConfig, max_len: usize) -> Self {
        let kv_dim = config.kv_dim();
        let size = config.num_hidden_layers * max_len * kv_dim;
        KvCache { k: vec![0.0; size], v: vec![0.0; size], kv_dim, max_len, len: 0 }
    }
    // ANCHOR_END: alloc

    fn offset(&self, layer: usize, pos: usize) -> usize {
        (layer * self.max_len + pos) * self.kv_dim
    }

    // ANCHOR: append
    /// Stores one token's K and V rows (kv_dim each) at `pos` of `layer`.
    pub fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let o = self.offset(layer, pos);
        self.k[o..o + self.kv_dim].copy_from_slice(k);
        self.v[o..o + self.kv_dim].copy_from_slice(v);
        self.len = self.len.max(pos + 1);
    }

    /// K row of `pos` in `layer` (kv_dim).
    pub fn key(&self, layer: usize, pos: usize) -> &[f32] {
        let o = self.offset(layer, pos);
        &self.k[o..o + self.kv_dim]
    }

    /// V row of `pos` in `layer` (kv_dim).
    pub fn value(&self, layer: usize, pos: usize) -> &[f32] {
        let o = self.offset(layer, pos);
        &self.v[o..o + self.kv_dim]
    }
    // ANCHOR_END: append

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Tokens currently held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the contents so the region can serve another sequence (no reallocation).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    // ANCHOR: bytes
    /// Bytes reserved for this cache.
    pub fn bytes_allocated(&self) -> u64 {
        ((self.k.len() + self.v.len()) * std::mem::size_of::<f32>()) as u64
    }

    /// Bytes holding real tokens.
    pub fn bytes_used(&self) -> u64 {
        let layers = (self.k.len() / (self.max_len * self.kv_dim).max(1)) as u64;
        2 * layers * (self.len * self.kv_dim * std::mem::size_of::<f32>()) as u64
    }
    // ANCHOR_END: bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_land_where_they_are_read_and_bytes_add_up() {
        let c = LlamaConfig::named("tiny").unwrap();
        let mut cache = KvCache::new(&c, 8);
        let k: Vec<f32> = (0..c.kv_dim()).map(|i| i as f32).collect();
        let v: Vec<f32> = k.iter().map(|x| -x).collect();
        cache.write(1, 3, &k, &v);
        assert_eq!(cache.key(1, 3), &k[..]);
        assert_eq!(cache.value(1, 3), &v[..]);
        assert!(cache.key(0, 3).iter().all(|&x| x == 0.0));
        assert_eq!(cache.len(), 4);
        let per_token = ch00_model::kv_bytes_per_token(&c, ch00_model::DType::F32);
        assert_eq!(cache.bytes_allocated(), 8 * per_token);
        assert_eq!(cache.bytes_used(), 4 * per_token);
    }
}
