//! One batched step over contiguous cache slots: gather every row's tokens into one flat list,
//! run the model once, and hand each live row its logits. Static and continuous batching differ
//! only in which rows they put here.

use ch00_model::{Model, ModelError, Result};
use ch00_serving::{run_spans, Clock, Phase, RunOptions, Sequence, Span};
use ch02_kv_cache::ContiguousBackend;

/// One sequence's part in a step: `seq` indexes the engine's sequences, `slot` its cache region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub seq: usize,
    pub slot: usize,
    /// `Prefill` feeds every token of the sequence so far (into an emptied slot), `Decode` feeds
    /// its newest token. `Padding` is a finished row riding along as padding: it feeds its last token
    /// again, at the same position, and its output is thrown away.
    pub phase: Phase,
}

// ANCHOR: run_step
/// Runs one forward pass over all `rows` and lets each live row's sequence accept its next token.
/// Returns the number of tokens each row fed (1 for a padding row: it costs a decode row).
pub fn run_step(
    model: &Model,
    backend: &mut ContiguousBackend,
    seqs: &mut [Sequence],
    rows: &[Row],
    clock: &Clock,
    opts: &RunOptions,
) -> Result<Vec<usize>> {
    let mut spans = Vec::new();
    let mut fed = vec![0; rows.len()];
    for (i, r) in rows.iter().enumerate() {
        let seq = seqs.get(r.seq).ok_or_else(|| bad_row(r, "no such sequence"))?;
        let cache = backend.slots.get_mut(r.slot).ok_or_else(|| bad_row(r, "no such slot"))?;
        let start = match r.phase {
            // Padding: recompute the newest position. It stays inside the slot however long the
            // batch runs on, and its K/V is the same every time.
            Phase::Padding => seq.tokens.len() - 1,
            _ if seq.is_finished() => return Err(bad_row(r, "sequence already finished")),
            Phase::Prefill => {
                cache.clear(); // the slot may hold a previous request's tokens
                0
            }
            Phase::Decode => seq.tokens.len() - 1, // the cache holds everything before it
        };
        fed[i] = seq.tokens.len() - start;
        spans.push(Span { seq: r.seq, slot: r.slot, start, padding: r.phase == Phase::Padding });
    }
    // One pass over every row: the weights are read once for the whole batch.
    run_spans(model, backend, seqs, &spans, clock, opts)?;
    Ok(fed)
}
// ANCHOR_END: run_step

fn bad_row(r: &Row, why: &str) -> ModelError {
    ModelError::InvalidBatch(format!("row for sequence {} in slot {}: {why}", r.seq, r.slot))
}
