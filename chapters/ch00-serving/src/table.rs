//! The sequence table: the one owner of every sequence in flight — its tokens, sampler, timings
//! and status — keyed by [`SeqId`]. Schedulers hold ids and counts and borrow tokens from here;
//! runners read and write the table. A sequence leaves the table when it finishes or its request
//! is aborted, so a long-running engine holds nothing of a request that is over.

use crate::serving::{sequences, Request, RequestOutput, Sequence};
use ch00_model::{LlamaConfig, ModelError, Result};
use std::collections::BTreeMap;

// ANCHOR: seq_id
/// A sequence's name in every engine: one per sample, handed out in the order sequences are
/// added (so sorting by id is sorting by submission).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SeqId(pub u64);
// ANCHOR_END: seq_id

impl std::fmt::Display for SeqId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seq {}", self.0)
    }
}

/// Where a scheduler reads a sequence's tokens (only to name full blocks for prefix caching and
/// to count them): the engine's [`SeqTable`], or a plain map in model-free runs and tests.
pub trait TokenSource {
    /// The sequence's tokens so far (prompt then generated); empty for an unknown id.
    fn tokens(&self, id: SeqId) -> &[u32];
}

// ANCHOR: table
/// Every sequence in flight, by id, and the outputs of requests that had nothing to generate
/// (handed out by the engine's next step).
#[derive(Debug, Default)]
pub struct SeqTable {
    seqs: BTreeMap<SeqId, Sequence>,
    next: u64,
    done: Vec<(SeqId, RequestOutput)>,
}
// ANCHOR_END: table

impl SeqTable {
    pub fn new() -> Self {
        SeqTable::default()
    }

    /// Validates `req` and adds one sequence per sample. Returns the ids of the sequences that
    /// must run, in sample order; a request with nothing to generate (`max_new_tokens` 0) runs
    /// nothing: its outputs wait in [`SeqTable::take_done`].
    pub fn add(&mut self, config: &LlamaConfig, req: &Request, max_len: usize) -> Result<Vec<SeqId>> {
        let new = sequences(config, std::slice::from_ref(req), max_len)?; // validates
        let mut ids = Vec::with_capacity(new.len());
        for seq in new {
            let id = SeqId(self.next);
            self.next += 1;
            if seq.is_finished() {
                self.done.push((id, seq.into_output()));
            } else {
                self.seqs.insert(id, seq);
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Removes sequences just added whose admission failed (a scheduler refused them).
    pub fn discard(&mut self, ids: &[SeqId]) {
        for id in ids {
            self.seqs.remove(id);
        }
    }

    pub fn get(&self, id: SeqId) -> Result<&Sequence> {
        self.seqs.get(&id).ok_or_else(|| missing(id))
    }

    pub fn get_mut(&mut self, id: SeqId) -> Result<&mut Sequence> {
        self.seqs.get_mut(&id).ok_or_else(|| missing(id))
    }

    /// The sequence is over: it leaves the table and its output is returned.
    pub fn finish(&mut self, id: SeqId) -> Result<RequestOutput> {
        Ok(self.seqs.remove(&id).ok_or_else(|| missing(id))?.into_output())
    }

    /// The client of request `request` went away: every sequence of it leaves the table (and any
    /// output not yet handed out is dropped). Returns the sequences removed, in id order.
    pub fn abort(&mut self, request: u64) -> (Vec<(SeqId, Sequence)>, bool) {
        let before = self.done.len();
        self.done.retain(|(_, o)| o.id != request);
        let ids: Vec<SeqId> = self.seqs.iter().filter(|(_, s)| s.id == request).map(|(&id, _)| id).collect();
        let gone = ids.into_iter().filter_map(|id| self.seqs.remove(&id).map(|s| (id, s))).collect();
        (gone, self.done.len() < before)
    }

    /// Outputs of requests that had nothing to generate, since the last call.
    pub fn take_done(&mut self) -> Vec<(SeqId, RequestOutput)> {
        std::mem::take(&mut self.done)
    }

    /// Sequences in flight.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Outputs waiting to be handed out.
    pub fn has_done(&self) -> bool {
        !self.done.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (SeqId, &Sequence)> {
        self.seqs.iter().map(|(&id, s)| (id, s))
    }
}

impl TokenSource for SeqTable {
    fn tokens(&self, id: SeqId) -> &[u32] {
        self.seqs.get(&id).map_or(&[], |s| &s.tokens)
    }
}

impl TokenSource for BTreeMap<SeqId, Vec<u32>> {
    fn tokens(&self, id: SeqId) -> &[u32] {
        self.get(&id).map_or(&[], |t| t)
    }
}

fn missing(id: SeqId) -> ModelError {
    ModelError::InvalidBatch(format!("{id} is not in the sequence table"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_order_added_and_entries_leave_when_over() {
        let c = LlamaConfig::named("tiny").unwrap();
        let mut t = SeqTable::new();
        let two = Request { n: 2, ..Request::greedy(7, vec![4, 5], 3) };
        assert_eq!(t.add(&c, &two, 16).unwrap(), vec![SeqId(0), SeqId(1)]);
        assert!(t.add(&c, &Request::greedy(8, vec![4], 0), 16).unwrap().is_empty(), "nothing to generate");
        assert_eq!(t.add(&c, &Request::greedy(9, vec![4], 2), 16).unwrap(), vec![SeqId(3)]);
        assert!(t.add(&c, &Request::greedy(10, vec![], 2), 16).is_err());
        assert_eq!((t.len(), t.take_done().len(), t.has_done()), (3, 1, false));
        assert_eq!(t.finish(SeqId(3)).unwrap().id, 9);
        assert!(t.finish(SeqId(3)).is_err(), "finishing twice is an error");
        let (gone, done) = t.abort(7);
        assert_eq!((gone.len(), done, t.is_empty()), (2, false, true));
        assert_eq!(t.tokens(SeqId(0)), &[] as &[u32]);
    }
}
