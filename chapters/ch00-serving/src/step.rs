//! One batched step, whatever the engine: every scheduled sequence's new tokens in one flat list,
//! one forward pass, and each sequence samples its next token from its own row of logits.

use ch00_model::{AttentionBackend, StepMeta};
use ch00_model::{ModelError, Result};
use ch00_model::Model;
use ch00_model::ops::row;
use crate::serving::{Clock, RunOptions};
use crate::table::{SeqId, SeqTable};

// ANCHOR: span
/// A sequence's part in a step: `len` of its tokens from position `start` (a whole prompt, a
/// chunk of one, a recomputed prefix, or just the newest token), stored by the backend under
/// `slot`. Only a span that reaches the sequence's newest token samples the next one: the logits
/// of a chunk from the middle of a prompt are thrown away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub seq: SeqId,
    /// What the backend files this sequence's K/V under (`StepMeta::seq`): a cache slot, a block table.
    pub slot: usize,
    pub start: usize,
    pub len: usize,
    /// Padding: this token fed again at position `start`, its logits thrown away (static
    /// batching's finished rows, which ride along until their batch ends; their sequence has
    /// left the table, so the row carries its own token).
    pub padding: Option<u32>,
}
// ANCHOR_END: span

// ANCHOR: run_spans
/// Runs one forward pass over all `spans` and lets each sequence whose span reaches its end (but
/// padding) accept its next token.
pub fn run_spans(
    model: &Model,
    backend: &mut dyn AttentionBackend,
    seqs: &mut SeqTable,
    spans: &[Span],
    clock: &Clock,
    opts: &RunOptions,
) -> Result<()> {
    let mut tokens = Vec::new(); // (step tokens)
    let mut meta = StepMeta::default();
    let mut logits_for = Vec::new(); // (spans): each span's last token
    let mut samples = Vec::with_capacity(spans.len()); // (spans): whether it picks a token
    for s in spans {
        let before = tokens.len();
        let picks = match s.padding {
            Some(token) if s.len == 1 => {
                tokens.push(token);
                false
            }
            Some(_) => return Err(bad(s, "padding feeds one token")),
            None => {
                let seq = seqs.get(s.seq).map_err(|_| bad(s, "no such sequence"))?;
                let end = s.start + s.len;
                if seq.is_finished() || s.len == 0 || end > seq.tokens.len() {
                    return Err(bad(s, "nothing to feed"));
                }
                tokens.extend_from_slice(&seq.tokens[s.start..end]);
                end == seq.tokens.len()
            }
        };
        samples.push(picks);
        meta.push_span(s.slot, s.start, tokens.len() - before);
        logits_for.push(tokens.len() - 1);
    }
    if spans.is_empty() {
        return Ok(());
    }
    // One pass: the weights are read once for every sequence of the step.
    let logits = model.forward(&tokens, &meta, &logits_for, backend)?; // (spans, vocab)
    let now = clock.now_s();
    for (i, s) in spans.iter().enumerate().filter(|&(i, _)| samples[i]) {
        seqs.get_mut(s.seq)?.accept(row(&logits, i), now, opts);
    }
    Ok(())
}
// ANCHOR_END: run_spans

fn bad(s: &Span, why: &str) -> ModelError {
    ModelError::InvalidBatch(format!("span of {} (slot {}, from {}): {why}", s.seq, s.slot, s.start))
}
