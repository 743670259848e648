//! Parallel sampling in the block scheduler: the `n` samples of one prompt share its blocks
//! (fork), and a sample about to write into a block it still shares gets its own copy first
//! (copy-on-write).

use super::{stuck, BlockScheduler, SeqId};
use crate::block_table::BlockId;
use ch00_model::Result;

impl BlockScheduler {
    // ANCHOR: fork
    /// The other samples of a prompt of `len` tokens take a reference on every block of the
    /// first one's table — the last, partly filled block too — instead of blocks of their own.
    /// Each computes only the prompt's last token again (the same token at the same position
    /// after the same prefix, so the same K/V the first sample writes there) to get its own row
    /// of logits to sample from.
    pub(super) fn fork(&mut self, first: SeqId, others: &[SeqId], len: usize) {
        let f = &self.seqs[&first];
        let (table, hashed, last_hash) = (f.table.clone(), f.hashed, f.last_hash);
        for s in others {
            for &b in &table {
                let _ = self.alloc.share(b); // in use by `first`: cannot fail
            }
            let Some(seq) = self.seqs.get_mut(s) else { continue };
            (seq.table, seq.hashed, seq.last_hash) = (table.clone(), hashed, last_hash);
            (seq.computed, seq.prefilling) = (len - 1, true);
        }
    }
    // ANCHOR_END: fork

    // ANCHOR: cow
    /// Copy-on-write. If the block that receives `s`'s next token is shared (with the other
    /// samples of its prompt), `s` takes a fresh block and the step copies the shared one into it
    /// before the forward pass. The last owner finds the block its own and writes in place.
    /// False if the pool ran dry.
    pub(super) fn copy_on_write(&mut self, s: SeqId, copies: &mut Vec<(BlockId, BlockId)>) -> Result<bool> {
        let seq = &self.seqs[&s];
        let i = seq.computed / self.cfg.block_size;
        let Some(&shared) = seq.table.get(i) else { return Ok(true) }; // a new block
        if self.alloc.ref_count(shared) == 1 {
            return Ok(true);
        }
        let Some(own) = self.alloc.allocate() else { return Ok(false) };
        self.alloc.release(shared)?; // its other owners keep it
        self.seqs.get_mut(&s).ok_or_else(|| stuck(&format!("no {s}")))?.table[i] = own;
        copies.push((shared, own));
        Ok(true)
    }
    // ANCHOR_END: cow
}
