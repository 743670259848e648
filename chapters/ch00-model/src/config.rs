//! The model's shape: Hugging Face `config.json` for Llama, plus named shapes for experiments.

use crate::error::{ModelError, Result};
use serde::Deserialize;
use std::path::Path;

/// How RoPE frequencies are rescaled for long context (Llama 3.1/3.2 use `llama3`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_max_position_embeddings: f32 },
}

/// The fields of a Llama `config.json` that the decoder needs.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The dtype the checkpoint says it is stored in (`dtype`, or `torch_dtype` before
    /// transformers 5); the GPU engine runs in it unless told otherwise.
    pub dtype: Option<crate::dtype::DType>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f32>,
    rope_theta: Option<f32>,
    rope_scaling: Option<serde_json::Value>,
    /// transformers >= 5 writes `{"rope_theta": .., "rope_type": .., ...}` here instead.
    rope_parameters: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    dtype: Option<String>,
    torch_dtype: Option<String>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
}

impl LlamaConfig {
    /// Reads and checks a Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::MissingFile(path.to_path_buf()));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
        Self::from_json(&text).map_err(|e| match e {
            ModelError::Malformed { message, .. } => ModelError::Malformed { path: path.to_path_buf(), message },
            other => other,
        })
    }

    /// Parses the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text)
            .map_err(|e| ModelError::Malformed { path: "config.json".into(), message: e.to_string() })?;
        // ANCHOR: validate
        let arch = raw.architectures.as_ref().and_then(|a| a.first().cloned());
        let is_llama = arch.as_deref() == Some("LlamaForCausalLM")
            || (arch.is_none() && raw.model_type.as_deref() == Some("llama"));
        if !is_llama {
            let found = arch.or(raw.model_type).unwrap_or_else(|| "<none given>".into());
            return Err(ModelError::UnsupportedArchitecture { found });
        }
        if raw.attention_bias == Some(true) || raw.mlp_bias == Some(true) {
            return Err(ModelError::UnsupportedConfig("linear layers with bias".into()));
        }
        if let Some(act) = raw.hidden_act.as_deref() {
            if act != "silu" {
                return Err(ModelError::UnsupportedConfig(format!("hidden_act {act:?} (only silu)")));
            }
        }
        let heads = raw.num_attention_heads;
        let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(ModelError::UnsupportedConfig(format!(
                "{heads} attention heads cannot be grouped over {kv_heads} key/value heads"
            )));
        }
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / heads);
        if head_dim == 0 || head_dim % 2 != 0 {
            let msg = format!("head_dim {head_dim} must be even and non-zero");
            return Err(ModelError::UnsupportedConfig(msg));
        }
        // ANCHOR_END: validate
        let eos_token_ids = raw.eos_token_id.map(OneOrMany::into_vec).unwrap_or_default();
        Ok(LlamaConfig {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: raw
                .rope_theta
                .or_else(|| raw.rope_parameters.as_ref()?.get("rope_theta")?.as_f64().map(|t| t as f32))
                .unwrap_or(10_000.0),
            rope_scaling: parse_rope_scaling(raw.rope_scaling.or(raw.rope_parameters))?,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            bos_token_id: raw.bos_token_id,
            eos_token_ids,
            dtype: raw.dtype.or(raw.torch_dtype).as_deref().and_then(crate::dtype::DType::parse),
        })
    }

    /// A named shape: `tiny` (tests), `bench` (CPU benchmarks: weights far larger than the caches),
    /// `peer-76m` (the comparison with candle, `scripts/peer_candle.sh`), `llama-7b`, `llama3-8b`
    /// and `llama3-70b` (the real shapes, for memory math).
    pub fn named(name: &str) -> Result<Self> {
        let base = |vocab, hidden, inter, layers, heads, kv, max_pos, theta: f32| LlamaConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            head_dim: hidden / heads,
            rms_norm_eps: 1e-5,
            rope_theta: theta,
            rope_scaling: RopeScaling::None,
            max_position_embeddings: max_pos,
            tie_word_embeddings: false,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            dtype: None,
        };
        // ANCHOR: named
        Ok(match name {
            "tiny" => base(512, 64, 172, 2, 4, 2, 256, 10_000.0),
            "bench" => {
                LlamaConfig { tie_word_embeddings: true, ..base(8192, 1024, 2816, 8, 16, 4, 1024, 10_000.0) }
            }
            "peer-76m" => base(512, 768, 2048, 12, 12, 4, 2048, 10_000.0),
            "llama-7b" => base(32_000, 4096, 11_008, 32, 32, 32, 4096, 10_000.0),
            "llama3-8b" => LlamaConfig {
                bos_token_id: Some(128_000),
                eos_token_ids: vec![128_001],
                ..base(128_256, 4096, 14_336, 32, 32, 8, 8192, 500_000.0)
            },
            "llama3-70b" => LlamaConfig {
                bos_token_id: Some(128_000),
                eos_token_ids: vec![128_001],
                ..base(128_256, 8192, 28_672, 80, 64, 8, 8192, 500_000.0)
            },
            _ => return Err(ModelError::UnknownConfig(name.into(), Self::NAMES.join(", "))),
        })
        // ANCHOR_END: named
    }

    pub const NAMES: [&'static str; 6] = ["tiny", "bench", "peer-76m", "llama-7b", "llama3-8b", "llama3-70b"];

    // ANCHOR: dims
    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of all key (or value) heads together: what one token stores per layer, per K or V.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
    // ANCHOR_END: dims

    /// Number of parameters, counting a tied lm_head once.
    pub fn param_count(&self) -> u64 {
        let (h, i, v) = (self.hidden_size as u64, self.intermediate_size as u64, self.vocab_size as u64);
        let (q, kv) = (self.q_dim() as u64, self.kv_dim() as u64);
        let per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers as u64 * per_layer + h + head
    }
}

/// The stop ids of `generation_config.json` in `dir`, when the file exists: transformers'
/// `generate` takes `eos_token_id` (one id or a list) from there and falls back to `config.json`
/// only without the file. A file that names no `eos_token_id` means no EOS stop, as there.
pub fn generation_eos_ids(dir: &Path) -> Result<Option<Vec<u32>>> {
    #[derive(Deserialize)]
    struct Raw {
        eos_token_id: Option<OneOrMany>,
    }
    let path = dir.join("generation_config.json");
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io { path: path.clone(), source })?;
    let raw: Raw = serde_json::from_str(&text).map_err(|e| ModelError::Malformed { path, message: e.to_string() })?;
    Ok(Some(raw.eos_token_id.map(OneOrMany::into_vec).unwrap_or_default()))
}

impl OneOrMany {
    fn into_vec(self) -> Vec<u32> {
        match self {
            OneOrMany::One(id) => vec![id],
            OneOrMany::Many(ids) => ids,
        }
    }
}

fn parse_rope_scaling(value: Option<serde_json::Value>) -> Result<RopeScaling> {
    let Some(value) = value.filter(|v| !v.is_null()) else { return Ok(RopeScaling::None) };
    let kind = value.get("rope_type").or_else(|| value.get("type")).and_then(|v| v.as_str()).unwrap_or("");
    let num = |key: &str| -> Result<f32> {
        value
            .get(key)
            .and_then(|v| v.as_f64())
            .map(|v| v as f32)
            .ok_or_else(|| ModelError::UnsupportedConfig(format!("rope_scaling without {key}")))
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        }),
        other => Err(ModelError::UnsupportedConfig(format!("rope_scaling type {other:?}"))),
    }
}

/// Longest sequence an engine allows when not told otherwise: the model's context, capped so that
/// a long-context checkpoint (Llama 3.2 claims 131,072 tokens) does not make every contiguous cache
/// slot gigabytes big. Pass an explicit `max_len` to go beyond it.
pub const DEFAULT_MAX_LEN_CAP: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_gqa_config_with_eos_list() {
        let c = LlamaConfig::from_json(
            r#"{"architectures":["LlamaForCausalLM"],"vocab_size":100,"hidden_size":64,
            "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":8,
            "num_key_value_heads":2,"rope_theta":500000.0,"eos_token_id":[2,3]}"#,
        )
        .unwrap();
        assert_eq!((c.head_dim, c.kv_dim(), c.q_dim()), (8, 16, 64));
        assert_eq!(c.eos_token_ids, vec![2, 3]);
        assert_eq!(c.rope_theta, 500000.0);
    }

    #[test]
    fn generation_config_gives_the_stop_ids_when_present() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(generation_eos_ids(dir.path()).unwrap(), None, "no file: config.json's ids stand");
        let file = dir.path().join("generation_config.json");
        for (text, want) in [
            (r#"{"bos_token_id":128000,"eos_token_id":[128001,128008,128009]}"#, vec![128_001, 128_008, 128_009]),
            (r#"{"eos_token_id":2}"#, vec![2]),
            (r#"{"do_sample":true}"#, vec![]),
        ] {
            std::fs::write(&file, text).unwrap();
            assert_eq!(generation_eos_ids(dir.path()).unwrap(), Some(want), "{text}");
        }
        std::fs::write(&file, "{not json").unwrap();
        assert!(matches!(generation_eos_ids(dir.path()), Err(ModelError::Malformed { .. })));
    }

    #[test]
    fn reads_rope_parameters_as_transformers_5_writes_them() {
        let c = LlamaConfig::from_json(
            r#"{"architectures":["LlamaForCausalLM"],"vocab_size":100,"hidden_size":64,
            "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":8,
            "rope_parameters":{"rope_theta":500000.0,"rope_type":"llama3","factor":32.0,
            "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#,
        )
        .unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        assert!(matches!(c.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 32.0));
    }

    #[test]
    fn rejects_other_architectures_by_name() {
        let e = LlamaConfig::from_json(
            r#"{"architectures":["GPT2LMHeadModel"],"vocab_size":1,"hidden_size":8,
            "intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":1}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("GPT2LMHeadModel"), "{e}");
    }

    #[test]
    fn llama_7b_has_about_6_7_billion_parameters() {
        let c = LlamaConfig::named("llama-7b").unwrap();
        assert_eq!(c.param_count(), 6_738_415_616);
    }

    #[test]
    fn llama3_70b_has_the_published_parameter_count() {
        // Meta-Llama-3-70B as transformers counts it: 70,553,706,496.
        let c = LlamaConfig::named("llama3-70b").unwrap();
        assert_eq!(c.param_count(), 70_553_706_496);
        assert_eq!((c.num_hidden_layers, c.num_key_value_heads, c.head_dim), (80, 8, 128));
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let e = LlamaConfig::named("gpt5").unwrap_err().to_string();
        assert!(e.contains("tiny") && e.contains("llama3-8b"), "{e}");
    }
}
