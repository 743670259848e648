//! Reproducible workloads: request sets drawn from a seed, with chosen prompt-length, output-length
//! and arrival distributions. The same spec and seed always give the same requests, so every stage
//! can be measured on exactly the same work.

use ch00_model::{ModelError, Result};
use ch00_model::SamplingParams;
use crate::serving::Request;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ANCHOR: dists
/// How a length (prompt tokens or output tokens) is drawn.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum LengthDist {
    /// Always this many.
    Fixed(usize),
    /// Uniform over `lo..=hi`.
    Uniform { lo: usize, hi: usize },
    /// Exponential with this mean, rounded and clipped to `min..=max`: most requests are short, a
    /// few are very long. Real chat traffic has this long tail, and it is what hurts static batching.
    Exponential { mean: f64, min: usize, max: usize },
}

/// When requests arrive, in seconds after the start of the run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Arrivals {
    /// Everything is queued at time 0 (an offline batch job).
    AllAtOnce,
    /// A Poisson process: exponential gaps with mean `1 / rate_per_s` (independent users).
    Poisson { rate_per_s: f64 },
}
// ANCHOR_END: dists

/// A recipe for a request set. Prompts are token ids drawn uniformly from `3..vocab` (0..3 are
/// usually special tokens), sampling is greedy and EOS is ignored, so output lengths follow
/// `output_len` exactly.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkloadSpec {
    pub n_requests: usize,
    pub prompt_len: LengthDist,
    pub output_len: LengthDist,
    pub arrivals: Arrivals,
    pub seed: u64,
}

/// The first token id prompts are drawn from.
const FIRST_PROMPT_TOKEN: usize = 3;

impl LengthDist {
    /// Checks the parameters (a length of at least `min_allowed`, ordered bounds, a finite mean).
    pub fn validate(&self, what: &str, min_allowed: usize) -> Result<()> {
        let bad = |m: String| Err(ModelError::InvalidSettings(format!("{what}: {m}")));
        match *self {
            LengthDist::Fixed(n) if n < min_allowed => bad(format!("length {n} is below {min_allowed}")),
            LengthDist::Uniform { lo, hi } if lo > hi || lo < min_allowed => {
                bad(format!("uniform {lo}..={hi} needs {min_allowed} <= lo <= hi"))
            }
            LengthDist::Exponential { mean, min, max }
                if !(mean.is_finite() && mean > 0.0) || min > max || min < min_allowed =>
            {
                bad(format!("exponential mean {mean} in {min}..={max} needs mean > 0 and {min_allowed} <= min <= max"))
            }
            _ => Ok(()),
        }
    }

    /// Draws one length. Out-of-order bounds are treated as their ordered pair.
    pub fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        match *self {
            LengthDist::Fixed(n) => n,
            LengthDist::Uniform { lo, hi } => {
                let (lo, hi) = (lo.min(hi), lo.max(hi));
                lo + below(rng, (hi - lo) as u64 + 1) as usize
            }
            LengthDist::Exponential { mean, min, max } => {
                let (min, max) = (min.min(max), min.max(max));
                let x = -mean * unit_open(rng).ln(); // inverse CDF of Exp(1/mean)
                (x.round() as usize).clamp(min, max)
            }
        }
    }
}

impl WorkloadSpec {
    // ANCHOR: default
    /// The comparison default: `n_requests` chat-like requests, all queued at once.
    /// Prompts are uniform 16..=64 tokens; outputs are exponential with mean 64, clipped to
    /// 4..=384, so a batch almost always holds one request that runs far longer than the rest.
    pub fn exponential_default(n_requests: usize, seed: u64) -> WorkloadSpec {
        WorkloadSpec {
            n_requests,
            prompt_len: LengthDist::Uniform { lo: 16, hi: 64 },
            output_len: LengthDist::Exponential { mean: 64.0, min: 4, max: 384 },
            arrivals: Arrivals::AllAtOnce,
            seed,
        }
    }
    // ANCHOR_END: default

    /// Checks the spec against a vocabulary: prompts need at least one token, the vocabulary
    /// must have ids beyond the special ones, the arrival rate must be positive.
    pub fn validate(&self, vocab_size: usize) -> Result<()> {
        self.prompt_len.validate("prompt_len", 1)?;
        self.output_len.validate("output_len", 0)?;
        if vocab_size <= FIRST_PROMPT_TOKEN {
            return Err(ModelError::InvalidSettings(format!("vocabulary of {vocab_size} has no ordinary tokens")));
        }
        if let Arrivals::Poisson { rate_per_s } = self.arrivals {
            if !(rate_per_s.is_finite() && rate_per_s > 0.0) {
                return Err(ModelError::InvalidSettings(format!("arrival rate {rate_per_s}/s must be > 0")));
            }
        }
        Ok(())
    }

    // ANCHOR: generate
    /// The request set: ids `0..n_requests`, in arrival order. Deterministic in `seed`. A spec
    /// that fails [`WorkloadSpec::validate`] still yields requests (prompts of at least one token,
    /// ids clamped into the vocabulary) so callers that skip validation get errors from the
    /// engine, not a panic here.
    pub fn generate(&self, vocab_size: usize) -> Vec<Request> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let first = FIRST_PROMPT_TOKEN.min(vocab_size.saturating_sub(1));
        let span = vocab_size.saturating_sub(first).max(1) as u64;
        let mut t = 0.0;
        (0..self.n_requests as u64)
            .map(|id| {
                let prompt_len = self.prompt_len.sample(&mut rng).max(1);
                let max_new_tokens = self.output_len.sample(&mut rng);
                let prompt = (0..prompt_len).map(|_| (first as u64 + below(&mut rng, span)) as u32).collect();
                if let Arrivals::Poisson { rate_per_s } = self.arrivals {
                    t += -unit_open(&mut rng).ln() / rate_per_s.max(f64::MIN_POSITIVE);
                }
                let sampling = SamplingParams::greedy();
                Request { id, prompt, max_new_tokens, sampling, arrival_s: t, ignore_eos: true, n: 1 }
            })
            .collect()
    }
    // ANCHOR_END: generate
}

/// Uniform integer in `0..n` (n >= 1), by a 64×64→128-bit multiply (Lemire; bias < n / 2^64).
fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    ((rng.next_u64() as u128 * n as u128) >> 64) as u64
}

/// Uniform in (0, 1]: never 0, so its logarithm is finite.
fn unit_open(rng: &mut ChaCha8Rng) -> f64 {
    ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
}

// ANCHOR: chat_spec
/// Multi-turn chats: `conversations` chats of `turns` turns. The first prompt has `first_prompt`
/// tokens; every later turn's prompt is the whole history (every earlier prompt and answer) plus
/// a new message of `message` tokens; answers are `answer` tokens (greedy, EOS ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ChatSpec {
    pub conversations: usize,
    pub turns: usize,
    pub first_prompt: usize,
    pub message: usize,
    pub answer: usize,
}
// ANCHOR_END: chat_spec

impl ChatSpec {
    /// The book's run on the `bench` model (context 1024).
    pub fn book() -> Self {
        ChatSpec { conversations: 6, turns: 4, first_prompt: 160, message: 24, answer: 32 }
    }

    /// Chapter 6's run on a 7B shape on one GPU: 32 chats growing to 1,920 tokens.
    pub fn gpu_7b() -> Self {
        ChatSpec { conversations: 32, turns: 4, first_prompt: 1024, message: 128, answer: 128 }
    }

    /// The most tokens a conversation reaches (its last prompt and answer).
    pub fn longest(&self) -> usize {
        self.first_prompt + self.turns.saturating_sub(1) * (self.answer + self.message) + self.answer
    }

    /// What conversation `c` adds in `turn`: the first prompt in turn 0, a new message after that;
    /// ids from `3..vocab`, different for every conversation and turn, the same on every run.
    pub fn message(&self, c: usize, turn: usize, vocab: usize) -> Vec<u32> {
        let len = if turn == 0 { self.first_prompt } else { self.message };
        let span = vocab.saturating_sub(3).max(1);
        (0..len).map(|i| (3 + (c * 7919 + turn * 104_729 + i * 15_485_863) % span) as u32).collect()
    }

    pub fn validate(&self, vocab: usize, max_len: usize) -> Result<()> {
        if self.conversations == 0 || self.turns == 0 || self.first_prompt == 0 || self.answer == 0 {
            return Err(ModelError::InvalidSettings("a chat needs a conversation, a turn, a prompt and an answer".into()));
        }
        if vocab <= 3 {
            return Err(ModelError::InvalidSettings(format!("a vocabulary of {vocab} leaves no ids for messages")));
        }
        if self.longest() > max_len {
            return Err(ModelError::InvalidSettings(format!(
                "the conversations grow to {} tokens, past the context of {max_len}",
                self.longest()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_requests_other_seed_other_requests() {
        let spec = WorkloadSpec::exponential_default(16, 7);
        assert_eq!(spec.generate(512), spec.generate(512));
        assert_ne!(spec.generate(512), WorkloadSpec { seed: 8, ..spec.clone() }.generate(512));
    }

    #[test]
    fn lengths_and_tokens_stay_in_their_ranges() {
        let spec = WorkloadSpec::exponential_default(500, 1);
        for (i, r) in spec.generate(100).iter().enumerate() {
            assert_eq!(r.id, i as u64);
            assert!((16..=64).contains(&r.prompt.len()), "{}", r.prompt.len());
            assert!((4..=384).contains(&r.max_new_tokens), "{}", r.max_new_tokens);
            assert!(r.prompt.iter().all(|&t| (3..100).contains(&t)));
            assert!(r.ignore_eos && r.arrival_s == 0.0);
        }
    }

    #[test]
    fn exponential_outputs_are_long_tailed() {
        let spec = WorkloadSpec::exponential_default(2000, 3);
        let mut outs: Vec<usize> = spec.generate(100).iter().map(|r| r.max_new_tokens).collect();
        outs.sort_unstable();
        let mean = outs.iter().sum::<usize>() as f64 / outs.len() as f64;
        let median = outs[outs.len() / 2] as f64;
        // Exp(mean 64): median = 64 ln 2 ≈ 44, well below the mean; the tail reaches past 250.
        assert!((55.0..75.0).contains(&mean), "mean {mean}");
        assert!((36.0..52.0).contains(&median), "median {median}");
        assert!(*outs.last().unwrap() > 250);
    }

    #[test]
    fn poisson_arrivals_increase_at_about_the_rate() {
        let spec = WorkloadSpec {
            arrivals: Arrivals::Poisson { rate_per_s: 10.0 },
            ..WorkloadSpec::exponential_default(1000, 2)
        };
        let reqs = spec.generate(100);
        assert!(reqs.windows(2).all(|w| w[0].arrival_s <= w[1].arrival_s));
        let last = reqs.last().unwrap().arrival_s;
        assert!((80.0..120.0).contains(&last), "1000 arrivals at 10/s took {last} s");
    }

    #[test]
    fn bad_specs_are_errors() {
        let ok = WorkloadSpec::exponential_default(4, 0);
        assert!(ok.validate(100).is_ok());
        assert!(ok.validate(3).is_err());
        assert!(WorkloadSpec { prompt_len: LengthDist::Fixed(0), ..ok.clone() }.validate(100).is_err());
        assert!(WorkloadSpec { prompt_len: LengthDist::Uniform { lo: 9, hi: 2 }, ..ok.clone() }.validate(100).is_err());
        let bad_rate = WorkloadSpec { arrivals: Arrivals::Poisson { rate_per_s: 0.0 }, ..ok.clone() };
        assert!(bad_rate.validate(100).is_err());
        // generate never panics, even on a spec that does not validate
        assert_eq!(bad_rate.generate(1).len(), 4);
        assert!(WorkloadSpec { prompt_len: LengthDist::Fixed(0), ..ok }
            .generate(100)
            .iter()
            .all(|r| r.prompt.len() == 1));
    }
}
