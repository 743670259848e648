//! Loading a Hugging Face model directory: config.json + model.safetensors (or a sharded index).

use crate::config::LlamaConfig;
use crate::dtype::DType;
use crate::error::{ModelError, Result};
use crate::model::{LayerWeights, Model};
use half::{bf16, f16};
use ndarray::{Array1, Array2};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Raw bytes of every safetensors file of a checkpoint, kept while tensors are converted.
struct Shards {
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Shards {
    fn open(dir: &Path) -> Result<Self> {
        // ANCHOR: shards
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let names: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index.exists() {
            let text = read_to_string(&index)?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ModelError::Malformed { path: index.clone(), message: e.to_string() })?;
            let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| {
                ModelError::Malformed { path: index.clone(), message: "no weight_map object".into() }
            })?;
            let files: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
            files.into_iter().map(|f| dir.join(f)).collect()
        } else {
            return Err(ModelError::MissingFile(single));
        };
        // ANCHOR_END: shards
        let mut files = Vec::with_capacity(names.len());
        for path in names {
            if !path.exists() {
                return Err(ModelError::MissingFile(path));
            }
            let bytes = std::fs::read(&path).map_err(|source| ModelError::Io { path: path.clone(), source })?;
            SafeTensors::deserialize(&bytes)
                .map_err(|e| ModelError::Malformed { path: path.clone(), message: e.to_string() })?;
            files.push((path, bytes));
        }
        Ok(Shards { files })
    }

    fn parsed(&self) -> Vec<SafeTensors<'_>> {
        // Every file was checked in `open`, so parsing again cannot fail.
        self.files.iter().filter_map(|(_, b)| SafeTensors::deserialize(b).ok()).collect()
    }
}

/// Finds tensors by name across shards and converts them to f32.
struct TensorSource<'a> {
    index: HashMap<String, (usize, safetensors::tensor::TensorView<'a>)>,
}

impl<'a> TensorSource<'a> {
    fn new(parsed: &'a [SafeTensors<'a>]) -> Self {
        let mut index = HashMap::new();
        for (i, st) in parsed.iter().enumerate() {
            for (name, view) in st.tensors() {
                index.insert(name, (i, view));
            }
        }
        TensorSource { index }
    }

    /// The type the checkpoint's matrices are stored in, when they all agree (else f32, which
    /// holds every stored type exactly).
    fn matrix_dtype(&self) -> DType {
        let mut kinds = self.index.values().filter(|(_, v)| v.shape().len() == 2).map(|(_, v)| v.dtype());
        let first = kinds.next();
        match first {
            Some(d) if kinds.all(|k| k == d) => match d {
                Dtype::F16 => DType::F16,
                Dtype::BF16 => DType::BF16,
                _ => DType::F32,
            },
            _ => DType::F32,
        }
    }

    fn values(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let (_, view) = self.index.get(name).ok_or_else(|| ModelError::MissingTensor { name: name.into() })?;
        crate::model::check(name, view.shape(), expected)?;
        let data = view.data();
        // ANCHOR: dtypes
        Ok(match view.dtype() {
            Dtype::F32 => {
                data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            Dtype::F16 => data.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => {
                return Err(ModelError::UnsupportedDtype { name: name.into(), dtype: format!("{other:?}") })
            }
        })
        // ANCHOR_END: dtypes
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Array2<f32>> {
        let v = self.values(name, &[rows, cols])?;
        Array2::from_shape_vec((rows, cols), v).map_err(|e| ModelError::Malformed { path: name.into(), message: e.to_string() })
    }

    fn vector(&self, name: &str, len: usize) -> Result<Array1<f32>> {
        Ok(Array1::from(self.values(name, &[len])?))
    }
}

fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })
}

impl Model {
    /// Loads a Hugging Face Llama checkpoint directory (f32, f16 or bf16 weights), keeping the
    /// weights in the type the checkpoint stores them in.
    pub fn load(dir: &Path) -> Result<Self> {
        Model::load_as(dir, None)
    }

    // ANCHOR: load
    /// Loads a Hugging Face Llama checkpoint directory (f32, f16 or bf16 weights), with its
    /// matrices kept as `dtype`, or (None) as the checkpoint stores them, as transformers and
    /// llama.cpp keep them: a bf16 checkpoint stays 2 bytes a weight in memory.
    pub fn load_as(dir: &Path, dtype: Option<DType>) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::MissingFile(dir.to_path_buf()));
        }
        let mut config = LlamaConfig::from_file(&dir.join("config.json"))?;
        if let Some(eos) = crate::config::generation_eos_ids(dir)? {
            config.eos_token_ids = eos; // generation_config.json wins, as in transformers' generate
        }
        let shards = Shards::open(dir)?;
        let parsed = shards.parsed();
        let src = TensorSource::new(&parsed);
        let dtype = dtype.unwrap_or_else(|| src.matrix_dtype());
        let (h, q, kv, i, v) =
            (config.hidden_size, config.q_dim(), config.kv_dim(), config.intermediate_size,
             config.vocab_size);
        let embed = src.matrix("model.embed_tokens.weight", v, h)?;
        let layers = (0..config.num_hidden_layers)
            .map(|n| {
                let p = |s: &str| format!("model.layers.{n}.{s}.weight");
                Ok(LayerWeights {
                    attn_norm: src.vector(&p("input_layernorm"), h)?,
                    wq: src.matrix(&p("self_attn.q_proj"), q, h)?,
                    wk: src.matrix(&p("self_attn.k_proj"), kv, h)?,
                    wv: src.matrix(&p("self_attn.v_proj"), kv, h)?,
                    wo: src.matrix(&p("self_attn.o_proj"), h, q)?,
                    mlp_norm: src.vector(&p("post_attention_layernorm"), h)?,
                    w_gate: src.matrix(&p("mlp.gate_proj"), i, h)?,
                    w_up: src.matrix(&p("mlp.up_proj"), i, h)?,
                    w_down: src.matrix(&p("mlp.down_proj"), h, i)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = src.vector("model.norm.weight", h)?;
        // Tied checkpoints may still store a copy of lm_head; the embedding is what they mean.
        let lm_head =
            if config.tie_word_embeddings { None } else { Some(src.matrix("lm_head.weight", v, h)?) };
        Model::from_parts_as(config, embed, layers, norm, lm_head, dtype)
    }
    // ANCHOR_END: load
}
