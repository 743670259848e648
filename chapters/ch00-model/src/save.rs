//! Writing a model as a Hugging Face directory (config.json + model.safetensors), so tests and
//! experiments can round-trip through the same loader a downloaded checkpoint goes through.

use crate::config::{LlamaConfig, RopeScaling};
use crate::error::{ModelError, Result};
use crate::memory::DType;
use crate::model::Model;
use ndarray::{Array1, Array2};
use half::{bf16, f16};
use safetensors::{Dtype, tensor::TensorView};
use std::path::Path;

/// The `config.json` Hugging Face writes for this shape.
pub fn config_json(c: &LlamaConfig) -> serde_json::Value {
    let mut v = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "max_position_embeddings": c.max_position_embeddings,
        "tie_word_embeddings": c.tie_word_embeddings,
        "hidden_act": "silu",
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_ids,
    });
    if let RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } = c.rope_scaling {
        v["rope_scaling"] = serde_json::json!({
            "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor, "original_max_position_embeddings": original_max_position_embeddings,
        });
    }
    v
}

/// Every tensor of the model under its Hugging Face name, as row-major f32.
pub fn named_tensors(m: &Model) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let matrix = |name: String, a: Array2<f32>| (name, a.shape().to_vec(), a.iter().copied().collect());
    let vector = |name: String, v: &Array1<f32>| (name, v.shape().to_vec(), v.to_vec());
    let mut out = vec![matrix("model.embed_tokens.weight".into(), m.embed.unpack())];
    for (n, l) in m.layers.iter().enumerate() {
        let p = |s: &str| format!("model.layers.{n}.{s}.weight");
        out.extend([
            vector(p("input_layernorm"), &l.attn_norm),
            matrix(p("self_attn.q_proj"), l.wq()),
            matrix(p("self_attn.k_proj"), l.wk()),
            matrix(p("self_attn.v_proj"), l.wv()),
            matrix(p("self_attn.o_proj"), l.wo.unpack()),
            vector(p("post_attention_layernorm"), &l.mlp_norm),
            matrix(p("mlp.gate_proj"), l.w_gate()),
            matrix(p("mlp.up_proj"), l.w_up()),
            matrix(p("mlp.down_proj"), l.w_down.unpack()),
        ]);
    }
    out.push(vector("model.norm.weight".into(), &m.norm));
    if let Some(head) = &m.lm_head {
        out.push(matrix("lm_head.weight".into(), head.unpack()));
    }
    out
}

/// f32 values as little-endian bytes of `dtype`.
pub fn encode(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => values.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
        DType::BF16 => values.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect(),
    }
}

/// Serialises (name, shape, bytes, dtype) entries into one safetensors file's bytes.
pub fn safetensors_bytes(entries: &[(String, Vec<usize>, Vec<u8>, Dtype)]) -> Result<Vec<u8>> {
    let views = entries
        .iter()
        .map(|(n, shape, bytes, dt)| Ok((n.clone(), TensorView::new(*dt, shape.clone(), bytes).map_err(malformed)?)))
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(malformed)
}

fn malformed(e: safetensors::SafeTensorError) -> ModelError {
    ModelError::Malformed { path: "model.safetensors".into(), message: e.to_string() }
}

impl Model {
    /// Writes `dir/config.json` and `dir/model.safetensors` with weights stored as `dtype`.
    pub fn save(&self, dir: &Path, dtype: DType) -> Result<()> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ModelError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let st_dtype = match dtype {
            DType::F32 => Dtype::F32,
            DType::F16 => Dtype::F16,
            DType::BF16 => Dtype::BF16,
        };
        let entries: Vec<_> =
            named_tensors(self).into_iter().map(|(n, s, v)| (n, s, encode(&v, dtype), st_dtype)).collect();
        let config = dir.join("config.json");
        let text = serde_json::to_string_pretty(&config_json(&self.config)).unwrap_or_default();
        std::fs::write(&config, text).map_err(io(&config))?;
        let weights = dir.join("model.safetensors");
        std::fs::write(&weights, safetensors_bytes(&entries)?).map_err(io(&weights))
    }
}
