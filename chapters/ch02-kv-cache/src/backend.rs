//! The attention backend over contiguous caches: write the step's K/V, then attend over the cache.

use crate::cache::KvCache;
use ch00_model::{attend_one, AttentionBackend, ModelError, Result, StepMeta, StepQkv};
use rayon::prelude::*;

/// A set of contiguous cache regions ("slots"); `StepMeta::seq` names the slot of each token.
/// Chapter 2 uses one slot; the batching chapters use many.
#[derive(Debug, Default)]
pub struct ContiguousBackend {
    pub slots: Vec<KvCache>,
}

impl AttentionBackend for ContiguousBackend {
    // ANCHOR: attend
    fn attend(&mut self, layer: usize, meta: &StepMeta, qkv: &StepQkv<'_>, out: &mut [f32]) -> Result<()> {
        // 1. Append this step's K and V at their positions (a prefill writes many, a decode one).
        for i in 0..meta.len() {
            let (slot, pos) = (meta.seq[i], meta.pos[i]);
            let cache = self.slots.get_mut(slot).ok_or_else(|| bad_slot(slot))?;
            if pos >= cache.max_len() {
                let msg = format!("position {pos} beyond cache of {}", cache.max_len());
                return Err(ModelError::InvalidBatch(msg));
            }
            cache.write(layer, pos, qkv.k_row(i), qkv.v_row(i));
        }
        // 2. Each token attends over its slot's positions 0..=pos, read back from the cache. The
        //    tokens are independent, so a step's tokens spread over the cores (a prompt's 512
        //    keep both busy); each output is the same bits on any core.
        let slots = &self.slots;
        out.par_chunks_exact_mut(qkv.shape.q_dim()).enumerate().for_each(|(i, out_row)| {
            let cache = &slots[meta.seq[i]];
            let n_ctx = meta.pos[i] + 1;
            let (k, v) = (|t| cache.key(layer, t), |t| cache.value(layer, t));
            attend_one(qkv.shape, qkv.q_row(i), n_ctx, k, v, out_row);
        });
        Ok(())
    }
    // ANCHOR_END: attend
}

fn bad_slot(slot: usize) -> ModelError {
    ModelError::InvalidBatch(format!("no cache slot {slot}"))
}
