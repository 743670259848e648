//! Text ↔ token ids through a Hugging Face `tokenizer.json`, as transformers uses it.

use crate::error::{ModelError, Result};
use std::path::Path;

/// A `tokenizers` tokenizer, encoding prompts exactly as transformers' `tokenizer(text)` does.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// Loads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::MissingFile(path.to_path_buf()));
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ModelError::Malformed { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(Tokenizer { inner })
    }

    // ANCHOR: encode
    /// Token ids of a prompt, as `AutoTokenizer.from_pretrained(dir)(text)` gives them: special
    /// tokens on, so the post-processor in `tokenizer.json` decides what is added — `<s>` for a
    /// Llama-2-style template, `<|begin_of_text|>` for Llama 3, nothing when there is none.
    /// `config.json`'s `bos_token_id` is not consulted: transformers does not consult it either.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }
    // ANCHOR_END: encode

    /// Token ids of `text` with no special tokens added (for scoring raw text).
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

#[cfg(test)]
mod tests {
    //! Three kinds of `tokenizer.json`, built here with the `tokenizers` crate, saved, and loaded
    //! the way a checkpoint's is. The ids are those transformers 5 gives for the same files
    //! (checked with `AutoTokenizer.from_pretrained`; `scripts/hf_check.py tokenize` does it on
    //! checkpoints it builds).
    use super::Tokenizer;
    use std::collections::HashMap;
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
    use tokenizers::processors::sequence::Sequence;
    use tokenizers::processors::template::TemplateProcessing;
    use tokenizers::processors::PostProcessorWrapper;
    use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper};

    const SPECIAL: [&str; 4] = ["<unk>", "<s>", "</s>", "<|begin_of_text|>"];

    /// A word-level tokenizer: the special tokens are ids 0..=3, then `words` from id 4; `pre`
    /// splits the text and, as in real tokenizers, also decodes.
    fn build<P>(words: &[&str], pre: P, post: Option<PostProcessorWrapper>) -> Tokenizer
    where
        P: Into<PreTokenizerWrapper> + Into<DecoderWrapper> + Clone,
    {
        let vocab: HashMap<String, u32> =
            SPECIAL.iter().chain(words).enumerate().map(|(i, w)| (w.to_string(), i as u32)).collect();
        let model = WordLevel::builder().vocab(vocab.into_iter().collect()).unk_token("<unk>".into()).build().unwrap();
        let mut tok = tokenizers::Tokenizer::new(model);
        tok.with_pre_tokenizer(Some(pre.clone()));
        tok.with_decoder(Some(pre));
        tok.with_post_processor(post);
        tok.add_special_tokens(&SPECIAL.map(|s| AddedToken::from(s, true)));
        // Through a file, as a checkpoint's tokenizer.json is read.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path, false).unwrap();
        Tokenizer::from_file(&path).unwrap()
    }

    fn template(bos: &str, id: u32) -> TemplateProcessing {
        TemplateProcessing::builder()
            .try_single(format!("{bos} $A"))
            .unwrap()
            .try_pair(format!("{bos} $A {bos} $B:1"))
            .unwrap()
            .special_tokens(vec![(bos, id)])
            .build()
            .unwrap()
    }

    #[test]
    fn llama2_style_template_adds_bos() {
        // Metaspace words ("▁hello") and `single: "<s> $A"`, as Llama 2 and TinyLlama ship it.
        let pre = Metaspace::new('▁', PrependScheme::First, true);
        let tok = build(&["▁hello", "▁world", "▁!"], pre, Some(template("<s>", 1).into()));
        assert_eq!(tok.encode("hello world !").unwrap(), [1, 4, 5, 6]);
        assert_eq!(tok.encode_raw("hello world !").unwrap(), [4, 5, 6]);
        assert_eq!(tok.decode(&[1, 4, 5, 6]).unwrap(), "hello world !", "BOS is skipped when decoding");
    }

    #[test]
    fn llama3_style_template_adds_begin_of_text() {
        // Byte-level words ("Ġworld") and a Sequence[ByteLevel, Template] post-processor, as Llama 3 ships it.
        let pre = ByteLevel::new(false, true, true);
        let post = Sequence::new(vec![ByteLevel::new(true, false, true).into(), template("<|begin_of_text|>", 3).into()]);
        let tok = build(&["hello", "Ġworld", "!"], pre, Some(post.into()));
        assert_eq!(tok.encode("hello world!").unwrap(), [3, 4, 5, 6]);
        assert_eq!(tok.encode_raw("hello world!").unwrap(), [4, 5, 6]);
        assert_eq!(tok.decode(&[3, 4, 5, 6]).unwrap(), "hello world!");
    }

    #[test]
    fn no_post_processor_adds_nothing() {
        // SmolLM2 / GPT-2-style byte-level BPE with no post-processor (so is the shipped model's):
        // no BOS, even though the checkpoint's config.json names one.
        let pre = ByteLevel::new(false, true, true);
        let tok = build(&["hello", "Ġworld", "!"], pre, None);
        assert_eq!(tok.encode("hello world!").unwrap(), [4, 5, 6]);
        // A special token written in the text is still that token, as in transformers.
        assert_eq!(tok.encode("<s>hello").unwrap(), [1, 4]);
    }

    #[test]
    fn missing_and_malformed_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        assert!(matches!(Tokenizer::from_file(&path), Err(crate::ModelError::MissingFile(_))));
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(Tokenizer::from_file(&path), Err(crate::ModelError::Malformed { .. })));
    }
}
