//! `world` ranks as threads of one process: the weights cut once, then every step run by all ranks
//! at the same time, meeting in the group's collectives. Greedy decoding of one sequence.

use crate::comm::Group;
use crate::rank::Rank;
use crate::shard::{Plan, RankWeights};
use ch00_model::{Model, ModelError, Result};

/// Tensor parallelism over `world` ranks.
#[derive(Debug, Clone, Copy)]
pub struct TensorParallel {
    pub world: usize,
}

/// What a greedy run produced: the new tokens, and the logits each was picked from.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub logits: Vec<Vec<f32>>, // (new tokens, vocab)
    /// Bytes of weights and of KV (at the sequence's full length) on each rank.
    pub weight_bytes: Vec<u64>,
    pub kv_bytes: Vec<u64>,
}

impl TensorParallel {
    // ANCHOR: generate
    /// Greedy: the prompt in one step, then one token per step, `max_new` tokens.
    pub fn generate(&self, model: &Model, prompt: &[u32], max_new: usize) -> Result<Generation> {
        let c = &model.config;
        let len = prompt.len() + max_new;
        if prompt.is_empty() || max_new == 0 || len > c.max_position_embeddings {
            return Err(ModelError::InvalidBatch(format!("a prompt of {} tokens and {max_new} new ones", prompt.len())));
        }
        if let Some(&t) = prompt.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(ModelError::TokenOutOfRange { id: 0, token: t, vocab: c.vocab_size });
        }
        let ranks = (0..self.world)
            .map(|r| Ok(Rank::new(RankWeights::of(model, Plan::new(c, r, self.world)?)?, c, len)))
            .collect::<Result<Vec<_>>>()?;
        let group = Group::new(self.world);
        let results: Vec<Result<Generation>> = std::thread::scope(|s| {
            let handles: Vec<_> = ranks.into_iter().map(|rank| s.spawn(|| run_rank(rank, &group, prompt, max_new))).collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(ModelError::InvalidBatch("a rank panicked".into())))).collect()
        });
        let mut all = results.into_iter().collect::<Result<Vec<_>>>()?;
        let mut out = all.remove(0); // every rank saw the same logits and picked the same tokens
        for g in &all {
            out.weight_bytes.extend(&g.weight_bytes);
            out.kv_bytes.extend(&g.kv_bytes);
        }
        Ok(out)
    }
    // ANCHOR_END: generate
}

/// One rank's loop: the same steps as every other rank, in the same order.
fn run_rank(mut rank: Rank, group: &Group, prompt: &[u32], max_new: usize) -> Result<Generation> {
    let (mut tokens, mut logits) = (Vec::with_capacity(max_new), Vec::with_capacity(max_new));
    let mut row = rank.step(group, prompt, 0)?;
    for i in 0..max_new {
        let next = argmax(&row);
        tokens.push(next);
        logits.push(row);
        if i + 1 == max_new {
            break;
        }
        row = rank.step(group, &[next], prompt.len() + i)?;
    }
    let len = prompt.len() + max_new;
    Ok(Generation { tokens, logits, weight_bytes: vec![rank.weights.bytes()], kv_bytes: vec![rank.kv_bytes(len)] })
}

/// The first index of the largest value (greedy sampling's rule in ch00).
fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}
