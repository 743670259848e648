//! Chapter 1: naive generation. Every new token re-runs the model over the whole sequence so far;
//! nothing is remembered between steps. Obviously correct, and quadratically slow.

use ch00_model::ops::row;
use ch00_model::{attend_one, AttentionBackend, Model, Result, StepMeta, StepQkv};
use ch00_serving::{resolve_max_len, sequences, Clock, Engine, Request, RunOptions, RunOutput, RunStats};

// ANCHOR: backend
/// Attention with no memory: each token attends to the tokens of its own sequence that are in
/// this same step, at positions up to its own. Correct only because the step holds the whole
/// sequence.
pub struct NoCache;

impl AttentionBackend for NoCache {
    fn attend(&mut self, _layer: usize, meta: &StepMeta, qkv: &StepQkv<'_>, out: &mut [f32]) -> Result<()> {
        let q_dim = qkv.shape.q_dim();
        for (i, out_row) in out.chunks_exact_mut(q_dim).enumerate() {
            // The context of token i: same sequence, position <= its own, in position order.
            let mut ctx: Vec<usize> =
                (0..meta.len())
                    .filter(|&j| meta.seq[j] == meta.seq[i] && meta.pos[j] <= meta.pos[i])
                    .collect();
            ctx.sort_by_key(|&j| meta.pos[j]);
            let (k, v) = (|t: usize| qkv.k_row(ctx[t]), |t: usize| qkv.v_row(ctx[t]));
            attend_one(qkv.shape, qkv.q_row(i), ctx.len(), k, v, out_row);
        }
        Ok(())
    }
}
// ANCHOR_END: backend

/// The chapter-1 engine: one request at a time, the whole prefix recomputed for every token.
#[derive(Debug, Default)]
pub struct NaiveEngine;

impl Engine for NaiveEngine {
    fn name(&self) -> &'static str {
        "ch01-naive"
    }

    fn run(&mut self, model: &Model, requests: &[Request], opts: &RunOptions) -> Result<RunOutput> {
        let max_len = resolve_max_len(&model.config, None)?;
        // One sequence per sample: a request with `n` samples is generated `n` times.
        let mut seqs = sequences(&model.config, requests, max_len)?;
        let clock = Clock::start();
        let (mut steps, mut rows) = (0, 0);
        for seq in &mut seqs {
            clock.wait_until(seq.arrival_s());
            // ANCHOR: generate
            while !seq.is_finished() {
                let n = seq.tokens.len();
                let meta = StepMeta::span(0, 0, n);
                let logits = model.forward(&seq.tokens, &meta, &[n - 1], &mut NoCache)?; // (1, vocab)
                seq.accept(row(&logits, 0), clock.now_s(), opts);
                steps += 1;
                rows += n as u64;
            }
            // ANCHOR_END: generate
        }
        let stats = RunStats {
            wall_s: clock.now_s(),
            steps,
            token_rows: rows,
            mean_batch_size: if steps > 0 { 1.0 } else { 0.0 },
            kv_bytes_allocated: 0,
            kv_bytes_used: 0,
            peak_running: usize::from(steps > 0),
            slot_utilisation: 1.0,
            ..RunStats::default()
        };
        Ok(RunOutput::from_sequences(seqs, stats, Vec::new()))
    }
}
