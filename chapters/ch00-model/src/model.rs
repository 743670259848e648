//! The Llama decoder: weights and the forward pass over a flat batch of tokens.

use crate::attention::{AttentionBackend, AttnShape, StepMeta, StepQkv};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::ops::{linear, rms_norm, swiglu};
use crate::rope::Rope;
use crate::cpu::packed::Packed;
use crate::dtype::DType;
use ndarray::{s, Array1, Array2, ArrayView2, Axis};

// ANCHOR: weights
/// One decoder block's weights as a checkpoint stores them: linear weights are
/// (out_features, in_features), as in Hugging Face.
#[derive(Debug, Clone)]
pub struct LayerWeights {
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

/// One decoder block as the model runs it. Projections of the same input are stacked at load
/// time, so a step makes one pass over the input instead of three (q, k, v) or two (gate, up);
/// every matrix is [`Packed`] for the kernels (its `unpack` gives the HF layout back), in the
/// model's weight type (f32, f16 or bf16; the norms stay f32).
#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: Array1<f32>, // (hidden)
    pub wqkv: Packed,           // (q_dim + 2 * kv_dim, hidden): q_proj rows, then k_proj, then v_proj
    pub wo: Packed,             // (hidden, q_dim)
    pub mlp_norm: Array1<f32>,  // (hidden)
    pub w_gate_up: Packed,      // (2 * intermediate, hidden): gate_proj rows, then up_proj
    pub w_down: Packed,         // (hidden, intermediate)
    q_dim: usize,
    kv_dim: usize,
}

/// A Llama-architecture decoder: f32 arithmetic over weights kept in f32, f16 or bf16.
#[derive(Debug, Clone)]
pub struct Model {
    pub config: LlamaConfig,
    pub embed: Packed, // (vocab, hidden): looked up by token, and the output projection when tied
    pub layers: Vec<Layer>,
    pub norm: Array1<f32>,      // (hidden)
    pub lm_head: Option<Packed>, // (vocab, hidden); None when tied to `embed`
    rope: Rope,
}
// ANCHOR_END: weights

impl Layer {
    /// Stacks q, k, v and gate, up, and packs every matrix as `dtype`. The shapes must already
    /// be checked (`Model::from_parts`).
    fn fuse(w: LayerWeights, dtype: DType) -> Result<Self> {
        Ok(Layer {
            wqkv: stack(&[w.wq.view(), w.wk.view(), w.wv.view()], dtype)?,
            wo: Packed::new_as(&w.wo.view(), dtype),
            w_gate_up: stack(&[w.w_gate.view(), w.w_up.view()], dtype)?,
            w_down: Packed::new_as(&w.w_down.view(), dtype),
            q_dim: w.wq.nrows(),
            kv_dim: w.wk.nrows(),
            attn_norm: w.attn_norm,
            mlp_norm: w.mlp_norm,
        })
    }

    // The checkpoint's matrices back in HF layout, (out_features, in_features), as copies.
    /// q_proj.weight: (heads * head_dim, hidden), the first rows of `wqkv`.
    pub fn wq(&self) -> Array2<f32> {
        self.wqkv.unpack_rows(0..self.q_dim)
    }
    /// k_proj.weight: (kv_heads * head_dim, hidden).
    pub fn wk(&self) -> Array2<f32> {
        self.wqkv.unpack_rows(self.q_dim..self.q_dim + self.kv_dim)
    }
    /// v_proj.weight: (kv_heads * head_dim, hidden).
    pub fn wv(&self) -> Array2<f32> {
        self.wqkv.unpack_rows(self.q_dim + self.kv_dim..self.wqkv.rows())
    }
    /// gate_proj.weight: (intermediate, hidden), the first half of `w_gate_up`.
    pub fn w_gate(&self) -> Array2<f32> {
        self.w_gate_up.unpack_rows(0..self.w_gate_up.rows() / 2)
    }
    /// up_proj.weight: (intermediate, hidden).
    pub fn w_up(&self) -> Array2<f32> {
        self.w_gate_up.unpack_rows(self.w_gate_up.rows() / 2..self.w_gate_up.rows())
    }
}

/// The activations of one step, allocated once per step and reused by every layer.
struct Scratch {
    h: Array2<f32>,       // (tokens, hidden): the normalised residual stream
    qkv: Array2<f32>,     // (tokens, q_dim + 2 * kv_dim)
    q: Array2<f32>,       // (tokens, q_dim)
    k: Array2<f32>,       // (tokens, kv_dim)
    v: Array2<f32>,       // (tokens, kv_dim)
    attn: Array2<f32>,    // (tokens, q_dim)
    out: Array2<f32>,     // (tokens, hidden): o_proj or down_proj, before the residual add
    gate_up: Array2<f32>, // (tokens, 2 * intermediate)
    act: Array2<f32>,     // (tokens, intermediate)
}

impl Scratch {
    fn new(c: &LlamaConfig, tokens: usize) -> Self {
        let (h, q, kv, i) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let z = |cols: usize| Array2::zeros((tokens, cols));
        Scratch {
            h: z(h),
            qkv: z(q + 2 * kv),
            q: z(q),
            k: z(kv),
            v: z(kv),
            attn: z(q),
            out: z(h),
            gate_up: z(2 * i),
            act: z(i),
        }
    }

    /// Copies the stacked projection's columns into q, k and v.
    fn split_qkv(&mut self) {
        let (q, kv) = (self.q.ncols(), self.k.ncols());
        self.q.assign(&self.qkv.slice(s![.., ..q]));
        self.k.assign(&self.qkv.slice(s![.., q..q + kv]));
        self.v.assign(&self.qkv.slice(s![.., q + kv..]));
    }
}

impl Model {
    /// Assembles a model from its parts, checking every shape against the config; weights kept
    /// in f32.
    pub fn from_parts(
        config: LlamaConfig,
        embed: Array2<f32>,
        layers: Vec<LayerWeights>,
        norm: Array1<f32>,
        lm_head: Option<Array2<f32>>,
    ) -> Result<Self> {
        Model::from_parts_as(config, embed, layers, norm, lm_head, DType::F32)
    }

    /// As [`Model::from_parts`], with the matrices kept as `dtype` (each value the nearest one of
    /// that type: exact for values read from a checkpoint of that type).
    pub fn from_parts_as(
        config: LlamaConfig,
        embed: Array2<f32>,
        layers: Vec<LayerWeights>,
        norm: Array1<f32>,
        lm_head: Option<Array2<f32>>,
        dtype: DType,
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
        let layers = layers.into_iter().map(|l| Layer::fuse(l, dtype)).collect::<Result<Vec<_>>>()?;
        let embed = Packed::new_as(&embed.view(), dtype);
        let lm_head = lm_head.map(|head| Packed::new_as(&head.view(), dtype));
        let rope = Rope::new(&config);
        Ok(Model { config, embed, layers, norm, lm_head, rope })
    }

    /// The type the weight matrices are kept in.
    pub fn weight_dtype(&self) -> DType {
        self.embed.dtype()
    }

    /// The same model with its matrices kept as `dtype`: widening is exact; narrowing rounds
    /// each weight to the nearest value of the narrower type.
    pub fn with_weight_dtype(self, dtype: DType) -> Self {
        if dtype == self.weight_dtype() {
            return self;
        }
        let repack = |p: &Packed| Packed::new_as(&p.unpack().view(), dtype);
        let Model { config, embed, layers, norm, lm_head, rope } = self;
        let layers = layers
            .into_iter()
            .map(|l| Layer { wqkv: repack(&l.wqkv), wo: repack(&l.wo), w_gate_up: repack(&l.w_gate_up), w_down: repack(&l.w_down), ..l })
            .collect();
        Model { config, embed: repack(&embed), layers, norm, lm_head: lm_head.as_ref().map(repack), rope }
    }

    /// Bytes the weights take in memory (matrices in their kept type, norms in f32).
    pub fn weight_bytes(&self) -> u64 {
        let norms = (self.norm.len() + self.layers.iter().map(|l| l.attn_norm.len() + l.mlp_norm.len()).sum::<usize>()) as u64 * 4;
        let layers: u64 = self.layers.iter().map(|l| l.wqkv.bytes() + l.wo.bytes() + l.w_gate_up.bytes() + l.w_down.bytes()).sum();
        norms + layers + self.embed.bytes() + self.lm_head.as_ref().map_or(0, Packed::bytes)
    }

    // ANCHOR: lm_head
    /// The output projection: `lm_head`, or the embedding matrix when the two are tied.
    pub fn lm_head(&self) -> &Packed {
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
        // The step runs on a thread of the pool that `linear` splits its work over, which hands
        // the work to the other cores directly (from outside the pool: tens of µs per call).
        rayon::scope(|_| self.forward_in_pool(tokens, meta, logits_for, backend))
    }

    fn forward_in_pool(
        &self,
        tokens: &[u32],
        meta: &StepMeta,
        logits_for: &[usize],
        backend: &mut dyn AttentionBackend,
    ) -> Result<Array2<f32>> {
        let c = &self.config;
        let shape = self.attn_shape();
        let mut x = Array2::zeros((tokens.len(), c.hidden_size)); // (tokens, hidden)
        for (&t, mut row) in tokens.iter().zip(x.rows_mut()) {
            self.embed.row_into(t as usize, row.as_slice_mut().ok_or_else(not_contiguous)?); // a lookup
        }
        let mut s = Scratch::new(c, tokens.len());
        for (l, layer) in self.layers.iter().enumerate() {
            // ANCHOR: attn_block
            rms_norm(&x.view(), &layer.attn_norm.view(), c.rms_norm_eps, &mut s.h); // (tokens, hidden)
            linear(&s.h.view(), &layer.wqkv, &mut s.qkv); // (tokens, q_dim + 2 * kv_dim)
            self.rope.apply(&mut s.qkv, &meta.pos, shape.heads + shape.kv_heads); // the q and k heads
            s.split_qkv();
            let qkv = StepQkv { shape, q: flat(&s.q)?, k: flat(&s.k)?, v: flat(&s.v)? };
            backend.attend(l, meta, &qkv, s.attn.as_slice_mut().ok_or_else(not_contiguous)?)?;
            linear(&s.attn.view(), &layer.wo, &mut s.out);
            x += &s.out;
            // ANCHOR_END: attn_block

            // ANCHOR: mlp_block
            rms_norm(&x.view(), &layer.mlp_norm.view(), c.rms_norm_eps, &mut s.h);
            linear(&s.h.view(), &layer.w_gate_up, &mut s.gate_up); // (tokens, 2 * intermediate)
            swiglu(&s.gate_up.view(), &mut s.act); // (tokens, intermediate)
            linear(&s.act.view(), &layer.w_down, &mut s.out);
            x += &s.out;
            // ANCHOR_END: mlp_block
        }
        // ANCHOR: head
        let last = x.select(Axis(0), logits_for); // (logits_for, hidden)
        let mut h = Array2::zeros(last.dim());
        rms_norm(&last.view(), &self.norm.view(), c.rms_norm_eps, &mut h);
        let mut logits = Array2::zeros((logits_for.len(), c.vocab_size));
        linear(&h.view(), self.lm_head(), &mut logits);
        Ok(logits) // (logits_for, vocab)
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

/// [`Packed::stack_as`], with its error in the model's terms.
fn stack(parts: &[ArrayView2<f32>], dtype: DType) -> Result<Packed> {
    Packed::stack_as(parts, dtype).map_err(|e| ModelError::UnsupportedConfig(format!("stacking weights: {e}")))
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
