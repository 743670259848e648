//! Choosing a model: a checkpoint directory, a named random shape, or the model shipped in the repo.

use crate::config::LlamaConfig;
use crate::dtype::DType;
use crate::error::{ModelError, Result};
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

/// The environment variable that names the default model directory.
pub const MODEL_ENV: &str = "KVSERVE_MODEL";

/// Where the default model is looked for, in order: `$KVSERVE_MODEL`; `models/shakespeare` in
/// the working directory; beside the executable (`<exe dir>/models/shakespeare`, and two levels
/// up for `target/release/kvserve` in a copy of the repository); the repository path compiled in.
pub fn default_model_candidates() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os(MODEL_ENV) {
        return vec![PathBuf::from(dir)]; // asked for by name: nothing else will do
    }
    let mut dirs = vec![PathBuf::from("models/shakespeare")];
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        dirs.push(exe_dir.join("models/shakespeare"));
        dirs.push(exe_dir.join("../../models/shakespeare"));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/shakespeare"));
    dirs
}

/// The default model directory: the first of [`default_model_candidates`] that holds a
/// `config.json`, or (none does) the first candidate, which [`load_model`] then reports missing.
pub fn default_model_dir() -> PathBuf {
    let dirs = default_model_candidates();
    let dir = dirs.iter().find(|d| d.join("config.json").exists()).unwrap_or(&dirs[0]).clone();
    dir.canonicalize().unwrap_or(dir)
}

/// A model and, when it came from a checkpoint directory, its tokenizer.
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
    /// Where it came from: a directory, or "random:<config name>".
    pub source: String,
}

/// Loads `dir`, or builds a random model from the named config, or (neither given) loads the
/// default model ([`default_model_dir`]). No default model is an error that says where it looked:
/// a random model is built only when asked for by name. Weights stay in the checkpoint's type
/// (random models: f32).
pub fn load_model(dir: Option<&Path>, config: Option<&str>) -> Result<LoadedModel> {
    load_model_as(dir, config, None)
}

/// As [`load_model`], with the weight matrices kept as `dtype` (None: as stored; random models
/// are made in f32).
pub fn load_model_as(dir: Option<&Path>, config: Option<&str>, dtype: Option<DType>) -> Result<LoadedModel> {
    if let Some(name) = config {
        let model = Model::random(LlamaConfig::named(name)?, 0)?;
        let model = match dtype {
            Some(d) => model.with_weight_dtype(d),
            None => model,
        };
        return Ok(LoadedModel { model, tokenizer: None, source: format!("random:{name}") });
    }
    let default = default_model_dir();
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None if default.join("config.json").exists() => default,
        None => {
            let looked: Vec<String> = default_model_candidates().iter().map(|d| d.display().to_string()).collect();
            return Err(ModelError::NoModel(looked.join(", ")));
        }
    };
    let model = Model::load_as(&dir, dtype)?;
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = if tok_path.exists() { Some(Tokenizer::from_file(&tok_path)?) } else { None };
    let source = dir.canonicalize().unwrap_or(dir).display().to_string();
    Ok(LoadedModel { model, tokenizer, source })
}

impl LoadedModel {
    /// The source without this machine's directories: `models/shakespeare`, `random:bench`, or the
    /// last path component of a checkpoint directory.
    pub fn source_name(&self) -> String {
        let path = std::path::Path::new(&self.source);
        match (path.parent().and_then(|p| p.file_name()), path.file_name()) {
            (Some(parent), Some(name)) if parent == "models" => format!("models/{}", name.to_string_lossy()),
            (_, Some(name)) if path.is_absolute() => name.to_string_lossy().into_owned(),
            _ => self.source.clone(),
        }
    }

    /// Token ids for a prompt: through the tokenizer (as transformers encodes it), or (no
    /// tokenizer) ids parsed from whitespace-separated numbers, else the bytes of the text folded
    /// into the vocabulary above its first three (special) ids.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        if let Some(tok) = &self.tokenizer {
            return tok.encode(prompt);
        }
        let nums: Option<Vec<u32>> = prompt.split_whitespace().map(|w| w.parse().ok()).collect();
        if let Some(ids) = nums.filter(|ids| !ids.is_empty()) {
            return Ok(ids);
        }
        let vocab = u32::try_from(self.model.config.vocab_size).unwrap_or(u32::MAX);
        if vocab <= 3 {
            return Err(crate::ModelError::Tokenizer(format!(
                "{} has no tokenizer.json and a vocabulary of {vocab} ids, too small to fold text into; \
                 give the prompt as whitespace-separated token ids",
                self.source
            )));
        }
        Ok(prompt.bytes().map(|b| 3 + u32::from(b) % (vocab - 3)).collect())
    }

    /// Text for generated ids (random models: the ids themselves).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match &self.tokenizer {
            Some(tok) => tok.decode(ids),
            None => Ok(ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" ")),
        }
    }
}

