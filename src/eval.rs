//! Scoring text with the model: the validation loss the shipped model's training script reports.

use ch00_model::ops::cross_entropy;
use ch00_model::{LoadedModel, ModelError, Result, StepMeta};
use ch01_naive::NoCache;

/// Window length of `val_sample_loss` (see `scripts/train_tiny.py`).
pub const VAL_SAMPLE_WINDOW: usize = 256;

// ANCHOR: val_sample_loss
/// `val_sample_loss` exactly as `scripts/train_tiny.py` defines it: the text's token ids (no BOS)
/// in non-overlapping windows of `VAL_SAMPLE_WINDOW` tokens, each scored from a fresh context;
/// the mean next-token cross-entropy (nats) over every prediction of every window.
pub fn val_sample_loss(loaded: &LoadedModel, text: &str) -> Result<f64> {
    let tokenizer = loaded.tokenizer.as_ref().ok_or_else(|| ModelError::Tokenizer("the model has no tokenizer.json".into()))?;
    let ids = tokenizer.encode_raw(text)?;
    let rows: Vec<usize> = (0..VAL_SAMPLE_WINDOW - 1).collect();
    let windows: Vec<&[u32]> = ids.chunks_exact(VAL_SAMPLE_WINDOW).collect();
    if windows.is_empty() {
        return Err(ModelError::InvalidBatch(format!("text shorter than one {VAL_SAMPLE_WINDOW}-token window")));
    }
    let mut total = 0.0;
    for w in &windows {
        let meta = StepMeta::span(0, 0, VAL_SAMPLE_WINDOW);
        let logits = loaded.model.forward(w, &meta, &rows, &mut NoCache)?; // (255, vocab)
        total += cross_entropy(&logits.view(), &w[1..]) * rows.len() as f64;
    }
    Ok(total / (rows.len() * windows.len()) as f64)
}
// ANCHOR_END: val_sample_loss
