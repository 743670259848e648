//! Turning logits into the next token: greedy, temperature, top-k, top-p, with a per-request seed.

use crate::error::{ModelError, Result};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How a request picks its tokens. `temperature == 0` means greedy (argmax).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p; 1.0 disables.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(ModelError::InvalidSampling(format!("temperature {} must be >= 0", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ModelError::InvalidSampling(format!("top_p {} must be in (0, 1]", self.top_p)));
        }
        Ok(())
    }
}

// ANCHOR: sampler
/// A request's sampler: its parameters and its own random stream, so a request draws the same
/// tokens whatever else is in the batch.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        Ok(Sampler { params, rng: ChaCha8Rng::seed_from_u64(params.seed) })
    }
// ANCHOR_END: sampler

    /// Greedy: the next token is the argmax, no randomness involved.
    pub fn is_greedy(&self) -> bool {
        self.params.temperature == 0.0
    }

    // ANCHOR: sample
    /// Picks the next token from one row of logits (vocab).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.temperature == 0.0 {
            return argmax(logits);
        }
        // Candidates sorted by logit, highest first (ties: lower id first, for determinism).
        let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
        ids.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        if self.params.top_k > 0 {
            ids.truncate(self.params.top_k);
        }
        let t = self.params.temperature;
        let max = logits[ids[0] as usize];
        let mut probs: Vec<f32> = ids.iter().map(|&i| ((logits[i as usize] - max) / t).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if self.params.top_p < 1.0 {
            let mut cum = 0.0;
            let keep = probs.iter().position(|&p| {
                cum += p;
                cum >= self.params.top_p
            });
            probs.truncate(keep.map_or(probs.len(), |k| k + 1));
        }
        // Draw u in [0, total) and walk the cumulative distribution.
        let total: f32 = probs.iter().sum();
        let u = (self.rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * total;
        let mut cum = 0.0;
        for (i, p) in probs.iter().enumerate() {
            cum += p;
            if u < cum {
                return ids[i];
            }
        }
        ids[probs.len() - 1]
    }
    // ANCHOR_END: sample
}

/// Index of the largest logit; the lowest index wins a tie.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplingParams {
        SamplingParams { temperature, top_k, top_p, seed }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let mut s = Sampler::new(params(5.0, 1, 1.0, 7)).unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.0, 0.5, 0.2]), 1);
        }
    }

    #[test]
    fn top_p_drops_the_unlikely_tail() {
        // p(0) ≈ 0.88, p(1) ≈ 0.12, p(2) ≈ 0.0000: top_p 0.5 keeps only token 0.
        let mut s = Sampler::new(params(1.0, 0, 0.5, 3)).unwrap();
        for _ in 0..50 {
            assert_eq!(s.sample(&[4.0, 2.0, -8.0]), 0);
        }
    }

    #[test]
    fn same_seed_same_tokens_different_seed_differs() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.7).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(params(1.0, 0, 1.0, seed)).unwrap();
            (0..30).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn temperature_sampling_follows_the_distribution() {
        // logits ln(1), ln(3): token 1 should come up about 75% of the time.
        let mut s = Sampler::new(params(1.0, 0, 1.0, 11)).unwrap();
        let ones = (0..4000).filter(|_| s.sample(&[0.0, 3f32.ln()]) == 1).count();
        assert!((2800..3200).contains(&ones), "{ones}");
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(Sampler::new(params(-1.0, 0, 1.0, 0)).is_err());
        assert!(Sampler::new(params(1.0, 0, 0.0, 0)).is_err());
        assert!(Sampler::new(params(f32::NAN, 0, 1.0, 0)).is_err());
    }
}
