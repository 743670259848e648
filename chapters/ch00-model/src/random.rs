//! Deterministic random weights, for tests and benchmarks that need a model of a given shape.

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::model::{LayerWeights, Model};
use ndarray::{Array1, Array2};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Random models larger than this are refused: the big named shapes are for memory math.
pub const MAX_RANDOM_BYTES: u64 = 2 << 30;

impl Model {
    /// A model with uniform random weights (scaled by 1/sqrt(fan_in)) and unit norms, the same for
    /// the same seed. Refuses shapes whose f32 weights would exceed [`MAX_RANDOM_BYTES`].
    pub fn random(config: LlamaConfig, seed: u64) -> Result<Self> {
        let bytes = config.param_count() * 4;
        if bytes > MAX_RANDOM_BYTES {
            return Err(ModelError::TooLarge {
                name: format!("{} layers × hidden {}", config.num_hidden_layers, config.hidden_size),
                gib: bytes as f64 / (1u64 << 30) as f64,
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut mat = |rows: usize, cols: usize, scale: f32| {
            Array2::from_shape_simple_fn((rows, cols), || {
                let u = (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32; // [0, 1)
                (2.0 * u - 1.0) * scale
            })
        };
        let (h, q, kv, i) = (config.hidden_size, config.q_dim(), config.kv_dim(), config.intermediate_size);
        let fan = |n: usize| (3.0 / n as f32).sqrt(); // unit variance outputs
        let embed = mat(config.vocab_size, h, 1.0);
        let layers = (0..config.num_hidden_layers)
            .map(|_| LayerWeights {
                attn_norm: Array1::ones(h),
                wq: mat(q, h, fan(h)),
                wk: mat(kv, h, fan(h)),
                wv: mat(kv, h, fan(h)),
                wo: mat(h, q, fan(q)),
                mlp_norm: Array1::ones(h),
                w_gate: mat(i, h, fan(h)),
                w_up: mat(i, h, fan(h)),
                w_down: mat(h, i, fan(i)),
            })
            .collect();
        let lm_head = (!config.tie_word_embeddings).then(|| mat(config.vocab_size, h, fan(h)));
        Model::from_parts(config, embed, layers, Array1::ones(h), lm_head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights() {
        let c = LlamaConfig::named("tiny").unwrap();
        let a = Model::random(c.clone(), 5).unwrap();
        let b = Model::random(c.clone(), 5).unwrap();
        let d = Model::random(c, 6).unwrap();
        assert_eq!(a.layers[1].wk(), b.layers[1].wk());
        assert_ne!(a.layers[1].wk(), d.layers[1].wk());
    }

    #[test]
    fn refuses_to_allocate_a_7b_model() {
        let e = Model::random(LlamaConfig::named("llama-7b").unwrap(), 0).unwrap_err();
        assert!(matches!(e, ModelError::TooLarge { .. }), "{e}");
    }
}
