//! Text ↔ token ids through a Hugging Face `tokenizer.json`.

use crate::error::{ModelError, Result};
use std::path::Path;

/// A `tokenizers` tokenizer plus the model's special ids.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos: Option<u32>,
}

impl Tokenizer {
    /// Loads `tokenizer.json`; `bos` is prepended by [`Tokenizer::encode`] when given.
    pub fn from_file(path: &Path, bos: Option<u32>) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::MissingFile(path.to_path_buf()));
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ModelError::Malformed { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(Tokenizer { inner, bos })
    }

    /// Token ids of `text`, with BOS first when the model has one.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(self.bos.into_iter().chain(enc.get_ids().iter().copied()).collect())
    }

    /// Token ids of `text` without BOS (for scoring raw text).
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, skipping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
