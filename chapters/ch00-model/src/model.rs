//! The Llama decoder: weights and the forward pass over a flat batch of tokens.

use crate::attention::{AttentionBackend, AttnShape, StepMeta, StepQkv};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::ops::{linear, rms_norm, swiglu};
use crate::rope::Rope;
use ndarray::{Array1, Array2, Axis};

// ANCHOR: weights
/// One decoder block's weights. Linear weights are (out_features, in_features), as in HF.
#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: Array1<f32>, // (hidden)
    pub wq: Array2<f32>,        // (heads * head_dim, hidden)
    pub wk: Array2<f32>,        // (kv_heads * head_dim, hidden)
    pub wv: Array2<f32>,        // (kv_heads * head_dim, hidden)
    pub wo: Array2<f32>,        // (hidden, heads * head_dim)
    pub mlp_norm: Array1<f32>,  // (hidden)
    pub w_gate: Array2<f32>,    // (intermediate, hidden)
    pub w_up: Array2<f32>,      // (intermediate, hidden)
    pub w_down: Array2<f32>,    // (hidden, intermediate)
}

/// A Llama-architecture decoder in f32.
#[derive(Debug, Clone)]
pub struct Model {
    pub config: LlamaConfig,
    pub embed: Array2<f32>, // (vocab, hidden)
    pub layers: Vec<Layer>,
    pub norm: Array1<f32>,           // (hidden)
    pub lm_head: Option<Array2<f32>>, // (vocab, hidden); None when tied to `embed`
    rope: Rope,
}
// ANCHOR_END: weights

impl Model {
    /// Assembles a model from its parts, checking every shape against the config.
    pub fn from_parts(
        config: LlamaConfig,
        embed: Array2<f32>,
        layers: Vec<Layer>,
        norm: Array1<f32>,
        lm_head: Option<Array2<f32>>,
    ) -> Result<Self> {
        let (h, v) = (config.hidden_size, config.vocab_size);
        check("model.embed_tokens.weight", embed.shape(), &[v, h])?;
        check("model.norm.weight", norm.shape(), &[h])?;
        if let Some(head) = &lm_head {
            check("lm_head.weight", head.shape(), &[v, h])?;
        }
        if layers.len() != config.num_hidden_layers {
            return Err(ModelError::UnsupportedConfig(format!(
                "{} layers given, config says {}",
                layers.len(),
                config.num_hidden_layers
            )));
        }
        let (q, kv, i) = (config.q_dim(), config.kv_dim(), config.intermediate_size);
        for (n, l) in layers.iter().enumerate() {
            let name = |s: &str| format!("model.layers.{n}.{s}.weight");
            check(&name("input_layernorm"), l.attn_norm.shape(), &[h])?;
            check(&name("self_attn.q_proj"), l.wq.shape(), &[q, h])?;
            check(&name("self_attn.k_proj"), l.wk.shape(), &[kv, h])?;
            check(&name("self_attn.v_proj"), l.wv.shape(), &[kv, h])?;
            check(&name("self_attn.o_proj"), l.wo.shape(), &[h, q])?;
            check(&name("post_attention_layernorm"), l.mlp_norm.shape(), &[h])?;
            check(&name("mlp.gate_proj"), l.w_gate.shape(), &[i, h])?;
            check(&name("mlp.up_proj"), l.w_up.shape(), &[i, h])?;
            check(&name("mlp.down_proj"), l.w_down.shape(), &[h, i])?;
        }
        let rope = Rope::new(&config);
        Ok(Model { config, embed, layers, norm, lm_head, rope })
    }

    // ANCHOR: lm_head
    /// The output projection: `lm_head`, or the embedding matrix when the two are tied.
    pub fn lm_head(&self) -> &Array2<f32> {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
    // ANCHOR_END: lm_head

    pub fn rope(&self) -> &Rope {
        &self.rope
    }

    pub fn attn_shape(&self) -> AttnShape {
        AttnShape::of(&self.config)
    }

    // ANCHOR: forward
    /// Runs one step over a flat batch of tokens (any mix of sequences, prefill and decode) and
    /// returns the logits of the tokens listed in `logits_for` as (logits_for.len(), vocab).
    /// The linear layers see all tokens at once; attention is the backend's business.
    pub fn forward(
        &self,
        tokens: &[u32],
        meta: &StepMeta,
        logits_for: &[usize],
        backend: &mut dyn AttentionBackend,
    ) -> Result<Array2<f32>> {
        self.check_step(tokens, meta, logits_for)?;
        let c = &self.config;
        let shape = self.attn_shape();
        let mut x = self.embed.select(Axis(0), &tokens.iter().map(|&t| t as usize).collect::<Vec<_>>()); // (tokens, hidden)
        for (l, layer) in self.layers.iter().enumerate() {
            // ANCHOR: attn_block
            let h = rms_norm(&x.view(), &layer.attn_norm, c.rms_norm_eps); // (tokens, hidden)
            let mut q = linear(&h.view(), &layer.wq); // (tokens, heads * head_dim)
            let mut k = linear(&h.view(), &layer.wk); // (tokens, kv_heads * head_dim)
            let v = linear(&h.view(), &layer.wv); // (tokens, kv_heads * head_dim)
            self.rope.apply(&mut q, &meta.pos);
            self.rope.apply(&mut k, &meta.pos);
            let mut attn = Array2::<f32>::zeros((tokens.len(), shape.q_dim())); // (tokens, heads * head_dim)
            let qkv = StepQkv { shape, q: flat(&q)?, k: flat(&k)?, v: flat(&v)? };
            backend.attend(l, meta, &qkv, attn.as_slice_mut().ok_or_else(not_contiguous)?)?;
            x += &linear(&attn.view(), &layer.wo);
            // ANCHOR_END: attn_block

            // ANCHOR: mlp_block
            let h = rms_norm(&x.view(), &layer.mlp_norm, c.rms_norm_eps);
            let act = swiglu(&linear(&h.view(), &layer.w_gate), &linear(&h.view(), &layer.w_up)); // (tokens, intermediate)
            x += &linear(&act.view(), &layer.w_down);
            // ANCHOR_END: mlp_block
        }
        // ANCHOR: head
        let last = x.select(Axis(0), logits_for); // (logits_for, hidden)
        let h = rms_norm(&last.view(), &self.norm, c.rms_norm_eps);
        Ok(linear(&h.view(), self.lm_head())) // (logits_for, vocab)
        // ANCHOR_END: head
    }
    // ANCHOR_END: forward

    fn check_step(&self, tokens: &[u32], meta: &StepMeta, logits_for: &[usize]) -> Result<()> {
        if tokens.is_empty() || tokens.len() != meta.seq.len() || tokens.len() != meta.pos.len() {
            return Err(ModelError::InvalidBatch(format!(
                "{} tokens with metadata for {} sequences / {} positions",
                tokens.len(),
                meta.seq.len(),
                meta.pos.len()
            )));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(ModelError::TokenOutOfRange { id: 0, token: t, vocab: self.config.vocab_size });
        }
        if let Some(&r) = logits_for.iter().find(|&&r| r >= tokens.len()) {
            return Err(ModelError::InvalidBatch(format!("logits asked for token {r} of {}", tokens.len())));
        }
        Ok(())
    }
}

fn flat(a: &Array2<f32>) -> Result<&[f32]> {
    a.as_slice().ok_or_else(not_contiguous)
}

fn not_contiguous() -> ModelError {
    ModelError::InvalidBatch("activation is not contiguous".into())
}

pub(crate) fn check(name: &str, found: &[usize], expected: &[usize]) -> Result<()> {
    if found != expected {
        return Err(ModelError::TensorShape { name: name.into(), expected: expected.to_vec(), found: found.to_vec() });
    }
    Ok(())
}
