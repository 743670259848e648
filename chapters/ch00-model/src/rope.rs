//! Rotary position embeddings, in Hugging Face's rotate-half convention.

use crate::config::{LlamaConfig, RopeScaling};
use crate::config::DEFAULT_MAX_LEN_CAP;
use ndarray::Array2;

/// The inverse frequencies of RoPE for one head and, for the first positions, the cosines and
/// sines of every angle, computed once from the config.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>, // (head_dim / 2)
    head_dim: usize,
    cos: Vec<f32>, // (table positions, head_dim / 2)
    sin: Vec<f32>, // (table positions, head_dim / 2)
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
        Rope::with_table(inv_freq, d, config.max_position_embeddings.min(DEFAULT_MAX_LEN_CAP))
    }

    /// Tabulates cos and sin for positions `0..positions`; later positions are computed when met,
    /// by the same [`Rope::angles`], so the table changes the speed and never the bits.
    fn with_table(inv_freq: Vec<f32>, head_dim: usize, positions: usize) -> Self {
        let mut rope = Rope { inv_freq, head_dim, cos: Vec::new(), sin: Vec::new() };
        let half = head_dim / 2;
        let (mut cos, mut sin) = (vec![0.0; positions * half], vec![0.0; positions * half]);
        for (pos, (c, s)) in cos.chunks_exact_mut(half).zip(sin.chunks_exact_mut(half)).enumerate() {
            rope.angles(pos, c, s);
        }
        (rope.cos, rope.sin) = (cos, sin);
        rope
    }

    /// cos and sin of `pos × inv_freq[i]` for every i: (head_dim / 2) each.
    fn angles(&self, pos: usize, cos: &mut [f32], sin: &mut [f32]) {
        for ((&f, c), s) in self.inv_freq.iter().zip(cos.iter_mut()).zip(sin.iter_mut()) {
            (*s, *c) = (pos as f32 * f).sin_cos();
        }
    }

    /// The rotation frequency of each pair (i, i + head_dim/2), for kernels that rotate elsewhere.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    // ANCHOR: rope
    /// Rotates the first `heads` heads of every row by the row's position: x is
    /// (tokens, ≥ heads * head_dim), e.g. q's heads followed by k's heads.
    /// Pairs are (i, i + head_dim/2) — "rotate half" — as in Hugging Face's Llama.
    pub fn apply(&self, x: &mut Array2<f32>, positions: &[usize], heads: usize) {
        let half = self.head_dim / 2;
        let (mut cos_buf, mut sin_buf) = (vec![0.0; half], vec![0.0; half]); // past the table
        for (mut row, &pos) in x.rows_mut().into_iter().zip(positions) {
            let span = pos * half..(pos + 1) * half;
            let (cos, sin) = match (self.cos.get(span.clone()), self.sin.get(span)) {
                (Some(c), Some(s)) => (c, s),
                _ => {
                    self.angles(pos, &mut cos_buf, &mut sin_buf);
                    (&cos_buf[..], &sin_buf[..])
                }
            };
            let Some(row) = row.as_slice_mut() else { continue };
            for head in row[..heads * self.head_dim].chunks_exact_mut(self.head_dim) {
                let (first, second) = head.split_at_mut(half);
                for (((a, b), &c), &s) in first.iter_mut().zip(second.iter_mut()).zip(cos).zip(sin) {
                    (*a, *b) = (*a * c - *b * s, *b * c + *a * s);
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
        rope.apply(&mut at0, &[0], config.num_attention_heads);
        assert_eq!(at0, x);
        let mut at9 = x.clone();
        rope.apply(&mut at9, &[9], config.num_attention_heads);
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
            rope.apply(&mut a, &[pq], 1);
            rope.apply(&mut b, &[pk], 1);
            (&a * &b).sum()
        };
        assert!((dot_at(7, 3) - dot_at(14, 10)).abs() < 1e-4);
    }

    #[test]
    fn positions_past_the_table_get_the_same_angles() {
        let config = LlamaConfig::named("tiny").unwrap();
        let full = Rope::new(&config);
        let short = Rope::with_table(full.inv_freq.clone(), full.head_dim, 4);
        let x = Array2::from_shape_fn((3, config.q_dim()), |(t, i)| (t as f32 + i as f32 * 0.37).sin());
        let (mut a, mut b) = (x.clone(), x);
        full.apply(&mut a, &[2, 9, 100], config.num_attention_heads);
        short.apply(&mut b, &[2, 9, 100], config.num_attention_heads);
        assert_eq!(a, b);
    }
}
