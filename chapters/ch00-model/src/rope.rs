//! Rotary position embeddings, in Hugging Face's rotate-half convention.

use crate::config::{LlamaConfig, RopeScaling};
use ndarray::Array2;

/// The inverse frequencies of RoPE for one head, computed once from the config.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>, // (head_dim / 2)
    head_dim: usize,
}

impl Rope {
    pub fn new(config: &LlamaConfig) -> Self {
        let d = config.head_dim;
        // ANCHOR: inv_freq
        let mut inv_freq: Vec<f32> = (0..d / 2)
            .map(|i| 1.0 / config.rope_theta.powf((2 * i) as f32 / d as f32))
            .collect();
        // ANCHOR_END: inv_freq
        if let RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } =
            config.rope_scaling
        {
            // Llama 3.1: slow (long-wavelength) frequencies are stretched by `factor`, fast ones kept,
            // and the band between is interpolated smoothly.
            let low_wavelen = original_max_position_embeddings / low_freq_factor;
            let high_wavelen = original_max_position_embeddings / high_freq_factor;
            for f in inv_freq.iter_mut() {
                let wavelen = 2.0 * std::f32::consts::PI / *f;
                *f = if wavelen < high_wavelen {
                    *f
                } else if wavelen > low_wavelen {
                    *f / factor
                } else {
                    let smooth = (original_max_position_embeddings / wavelen - low_freq_factor)
                        / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * *f / factor + smooth * *f
                };
            }
        }
        Rope { inv_freq, head_dim: d }
    }

    /// The rotation frequency of each pair (i, i + head_dim/2), for kernels that rotate elsewhere.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    // ANCHOR: rope
    /// Rotates every head of every token by its position. x: (tokens, heads * head_dim).
    /// Pairs are (i, i + head_dim/2) — "rotate half" — as in Hugging Face's Llama.
    pub fn apply(&self, x: &mut Array2<f32>, positions: &[usize]) {
        let half = self.head_dim / 2;
        for (mut row, &pos) in x.rows_mut().into_iter().zip(positions) {
            for head in row.as_slice_mut().into_iter().flat_map(|r| r.chunks_exact_mut(self.head_dim)) {
                for (i, &f) in self.inv_freq.iter().enumerate() {
                    let (sin, cos) = (pos as f32 * f).sin_cos();
                    let (a, b) = (head[i], head[i + half]);
                    head[i] = a * cos - b * sin;
                    head[i + half] = b * cos + a * sin;
                }
            }
        }
    }
    // ANCHOR_END: rope
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_rotation_keeps_norm() {
        let config = LlamaConfig::named("tiny").unwrap();
        let rope = Rope::new(&config);
        let row: Vec<f32> = (0..config.q_dim()).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = Array2::from_shape_vec((1, config.q_dim()), row).unwrap();
        let mut at0 = x.clone();
        rope.apply(&mut at0, &[0]);
        assert_eq!(at0, x);
        let mut at9 = x.clone();
        rope.apply(&mut at9, &[9]);
        assert_ne!(at9, x);
        let norm = |a: &Array2<f32>| a.iter().map(|v| v * v).sum::<f32>();
        assert!((norm(&at9) - norm(&x)).abs() < 1e-4);
    }

    #[test]
    fn dot_products_depend_only_on_relative_position() {
        let config = LlamaConfig::named("tiny").unwrap();
        let rope = Rope::new(&config);
        let d = config.head_dim;
        let q: Vec<f32> = (0..d).map(|i| (i as f32).cos()).collect();
        let k: Vec<f32> = (0..d).map(|i| (i as f32 * 0.5).sin()).collect();
        let dot_at = |pq: usize, pk: usize| {
            let mut a = Array2::from_shape_vec((1, d), q.clone()).unwrap();
            let mut b = Array2::from_shape_vec((1, d), k.clone()).unwrap();
            let (ra, rb) = (Rope { inv_freq: rope.inv_freq.clone(), head_dim: d }, rope.clone());
            ra.apply(&mut a, &[pq]);
            rb.apply(&mut b, &[pk]);
            (&a * &b).sum()
        };
        assert!((dot_at(7, 3) - dot_at(14, 10)).abs() < 1e-4);
    }
}
