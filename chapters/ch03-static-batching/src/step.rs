//! One batched step over contiguous cache slots: gather every row's tokens into one flat list,
//! run the model once, and hand each live row its logits. Static and continuous batching differ
//! only in which rows they put here.

use ch00_model::{Model, ModelError, Result};
use ch00_serving::{run_spans, Clock, Phase, RunOptions, SeqId, SeqTable, Span, StepRecord, TraceEntry};
use ch02_kv_cache::{ContiguousBackend, KvCache};

/// What a row feeds in its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Every token of the sequence so far, into an emptied slot.
    Prefill,
    /// The sequence's newest token (the slot holds everything before it).
    Decode,
    /// A finished (or aborted) row riding along: its last token fed again at the same position,
    /// its output thrown away. Its sequence has left the table, so the row keeps the token.
    Padding { token: u32, pos: usize },
}

/// One sequence's part in a step: its id in the table, its request, and its cache slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub seq: SeqId,
    pub request: u64,
    pub slot: usize,
    pub feed: Feed,
}

impl Row {
    pub fn phase(&self) -> Phase {
        match self.feed {
            Feed::Prefill => Phase::Prefill,
            Feed::Decode => Phase::Decode,
            Feed::Padding { .. } => Phase::Padding,
        }
    }
}

// ANCHOR: run_step
/// Runs one forward pass over all `rows` and lets each live row's sequence accept its next token.
/// Returns what the step computed and held (a padding row costs a decode row).
pub fn run_step(
    model: &Model,
    backend: &mut ContiguousBackend,
    seqs: &mut SeqTable,
    rows: &[Row],
    clock: &Clock,
    opts: &RunOptions,
) -> Result<StepRecord> {
    let mut spans = Vec::with_capacity(rows.len());
    let mut entries = Vec::with_capacity(rows.len());
    for r in rows {
        let cache = backend.slots.get_mut(r.slot).ok_or_else(|| bad_row(r, "no such slot"))?;
        let (start, padding) = match r.feed {
            // Padding: recompute the newest position. It stays inside the slot however long the
            // batch runs on, and its K/V is the same every time.
            Feed::Padding { token, pos } => (pos, Some(token)),
            Feed::Prefill => {
                cache.clear(); // the slot may hold a previous request's tokens
                (0, None)
            }
            Feed::Decode => (seqs.get(r.seq)?.tokens.len().saturating_sub(1), None),
        };
        let fed = match padding {
            Some(_) => 1,
            None => seqs.get(r.seq)?.tokens.len() - start,
        };
        spans.push(Span { seq: r.seq, slot: r.slot, start, len: fed, padding });
        entries.push(TraceEntry { slot: r.slot, request: r.request, phase: r.phase(), tokens: fed });
    }
    // One pass over every row: the weights are read once for the whole batch.
    run_spans(model, backend, seqs, &spans, clock, opts)?;
    // Every row, padding or not, still holds its tokens' K and V.
    let kv_bytes_used = rows.iter().map(|r| backend.slots.get(r.slot).map_or(0, KvCache::bytes_used)).sum();
    Ok(StepRecord {
        kv_units_used: rows.iter().filter(|r| r.phase() != Phase::Padding).count(),
        kv_units_reserved: rows.len(), // a finished row keeps its slot until its batch ends
        rows: entries,
        kv_bytes_allocated: backend.slots.iter().map(KvCache::bytes_allocated).sum(),
        kv_bytes_used,
    })
}
// ANCHOR_END: run_step

fn bad_row(r: &Row, why: &str) -> ModelError {
    ModelError::InvalidBatch(format!("row for {} in slot {}: {why}", r.seq, r.slot))
}
