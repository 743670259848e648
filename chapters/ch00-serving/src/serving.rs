//! The serving vocabulary every engine shares: requests, their outputs and run-level statistics,
//! plus `Sequence`, the per-request bookkeeping every engine reuses.

use ch00_model::LlamaConfig;
use ch00_model::{ModelError, Result};
use ch00_model::{SamplingParams, Sampler};
use std::time::Instant;

// ANCHOR: request
/// One generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: u64,
    pub prompt: Vec<u32>,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Seconds after the start of the run at which the request arrives.
    pub arrival_s: f64,
    /// Keep generating past EOS (benchmarks use this so output lengths follow the workload).
    pub ignore_eos: bool,
    /// Samples to draw from the one prompt (parallel sampling). Sample `i` draws with seed
    /// `sampling.seed + i`, so it gets exactly the tokens of a lone request with that seed.
    pub n: usize,
}
// ANCHOR_END: request

/// Most samples one request may ask for (a guard against absurd `n`, not a design limit).
pub const MAX_SAMPLES: usize = 256;

impl Request {
    /// A greedy request arriving at time 0, one sample.
    pub fn greedy(id: u64, prompt: Vec<u32>, max_new_tokens: usize) -> Self {
        let sampling = SamplingParams::greedy();
        Request { id, prompt, max_new_tokens, sampling, arrival_s: 0.0, ignore_eos: false, n: 1 }
    }

    // ANCHOR: sample_seed
    /// The sampling parameters of sample `i`: the request's, with seed `seed + i`.
    pub fn sample_params(&self, i: usize) -> SamplingParams {
        SamplingParams { seed: self.sampling.seed.wrapping_add(i as u64), ..self.sampling }
    }
    // ANCHOR_END: sample_seed
}

/// Why a request stopped generating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum FinishReason {
    /// The model produced an end-of-sequence token (it is kept in `tokens`).
    Eos,
    /// `max_new_tokens` tokens were generated (also when `max_new_tokens` is 0).
    Length,
    /// The sequence reached the engine's maximum length.
    ContextFull,
}

/// What one sample of a request produced, and when. A request with `n` samples has `n` outputs,
/// one after the other, with samples `0..n`.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOutput {
    pub id: u64,
    /// Which of the request's `n` samples this is.
    pub sample: usize,
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
    /// Seconds from arrival to the first generated token (0 when nothing was generated).
    pub ttft_s: f64,
    /// Seconds between consecutive generated tokens (one fewer than `tokens`).
    pub token_latencies_s: Vec<f64>,
    /// Logits behind each generated token, when [`RunOptions::record_logits`] is set.
    pub logits: Vec<Vec<f32>>,
}

// ANCHOR: run_stats
/// Run-level figures every engine reports.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RunStats {
    pub wall_s: f64,
    pub generated_tokens: usize,
    pub tokens_per_s: f64,
    /// Forward passes (steps) the engine ran.
    pub steps: usize,
    /// Token rows the model computed over the run: prompts, recomputed prefixes, decode tokens
    /// and padding. Each is one row through every linear layer.
    pub token_rows: u64,
    /// Mean number of sequences per step.
    pub mean_batch_size: f64,
    /// Peak KV-cache bytes the engine had allocated at once.
    pub kv_bytes_allocated: u64,
    /// Peak KV-cache bytes reserved by the sequences running at once: a whole `max_len` slot each
    /// (contiguous engines) or the blocks they hold (paged engines). What a design sets aside for
    /// its requests, beside what they fill (`kv_bytes_used`).
    pub kv_bytes_reserved: u64,
    /// Peak KV-cache bytes holding real tokens at once.
    pub kv_bytes_used: u64,
    /// Most sequences running in one step.
    pub peak_running: usize,
    /// Contiguous engines: busy slot-steps / total slot-steps (1.0 for one-at-a-time engines).
    /// Paged engines: the share of the pool's blocks holding tokens, averaged over steps.
    pub slot_utilisation: f64,
    /// Slot-steps spent on a row that had already finished (static batching's padding).
    pub wasted_slot_steps: u64,
    /// Sequences evicted and recomputed later (paged attention under memory pressure).
    pub preemptions: usize,
}
// ANCHOR_END: run_stats

/// The result of running a workload: outputs in the order of the input requests (a request with
/// `n` samples gives `n` consecutive outputs).
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutput {
    pub outputs: Vec<RequestOutput>,
    pub stats: RunStats,
    /// One entry per step, when [`RunOptions::trace`] is set.
    pub trace: Vec<TraceStep>,
}

impl RunOutput {
    /// Collects the sequences' outputs (in request order) and completes `stats` with the number
    /// of generated tokens and the throughput over `stats.wall_s`.
    pub fn from_sequences(seqs: Vec<Sequence>, stats: RunStats, trace: Vec<TraceStep>) -> Self {
        RunOutput::from_outputs(seqs.into_iter().map(Sequence::into_output).collect(), stats, trace)
    }

    /// The same from outputs already collected (a step-wise engine hands them out as they finish).
    pub fn from_outputs(outputs: Vec<RequestOutput>, mut stats: RunStats, trace: Vec<TraceStep>) -> Self {
        stats.generated_tokens = outputs.iter().map(|o| o.tokens.len()).sum();
        stats.tokens_per_s = stats.generated_tokens as f64 / stats.wall_s.max(1e-9);
        RunOutput { outputs, stats, trace }
    }
}

/// What a slot (or running sequence) did in one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Phase {
    Prefill,
    Decode,
    /// The row's request has finished, but its batch has not: it is computed as padding and its
    /// output thrown away (static batching's wasted work).
    Padding,
}

/// One sequence's part in one step.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TraceEntry {
    pub slot: usize,
    pub request: u64,
    pub phase: Phase,
    /// Tokens this sequence fed in the step.
    pub tokens: usize,
}

/// One step of an engine, for Gantt charts and memory-over-time figures.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TraceStep {
    pub step: usize,
    /// Seconds since the start of the run when the step ended.
    pub t_s: f64,
    pub entries: Vec<TraceEntry>,
    pub kv_bytes_allocated: u64,
    pub kv_bytes_used: u64,
    /// Requests of the sequences preempted before this step ran.
    pub preempted: Vec<u64>,
}

/// Switches for a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Keep the logits behind every generated token (for cross-stage tests).
    pub record_logits: bool,
    /// Record a [`TraceStep`] per step.
    pub trace: bool,
}


/// Wall-clock time since the start of a run, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Self {
        Clock(Instant::now())
    }
    pub fn now_s(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
    /// Sleeps until `t_s` when it is still in the future (an idle server waiting for work).
    pub fn wait_until(&self, t_s: f64) {
        // A non-finite or absurdly far arrival is not worth a panic: such a wait is skipped.
        if let Ok(wait) = std::time::Duration::try_from_secs_f64(t_s - self.now_s()) {
            std::thread::sleep(wait);
        }
    }
}

pub use ch00_model::config::DEFAULT_MAX_LEN_CAP;

/// The maximum sequence length an engine uses: `max_len`, or the model's context capped at
/// [`DEFAULT_MAX_LEN_CAP`]. Errors when `max_len` is 0 or beyond the model's context.
pub fn resolve_max_len(config: &LlamaConfig, max_len: Option<usize>) -> Result<usize> {
    let ctx = config.max_position_embeddings;
    let max_len = max_len.unwrap_or(ctx.min(DEFAULT_MAX_LEN_CAP));
    if max_len == 0 || max_len > ctx {
        return Err(ModelError::InvalidSettings(format!("max_len {max_len} must be in 1..={ctx}")));
    }
    Ok(max_len)
}

/// Checks a request against the model and an engine's maximum sequence length.
pub fn validate_request(config: &LlamaConfig, req: &Request, max_len: usize) -> Result<()> {
    if req.prompt.is_empty() {
        return Err(ModelError::EmptyPrompt { id: req.id });
    }
    if req.prompt.len() > max_len {
        return Err(ModelError::PromptTooLong { id: req.id, len: req.prompt.len(), max: max_len });
    }
    if let Some(&t) = req.prompt.iter().find(|&&t| t as usize >= config.vocab_size) {
        return Err(ModelError::TokenOutOfRange { id: req.id, token: t, vocab: config.vocab_size });
    }
    if !(1..=MAX_SAMPLES).contains(&req.n) {
        return Err(ModelError::InvalidSampling(format!("request {}: n = {} must be in 1..={MAX_SAMPLES}", req.id, req.n)));
    }
    req.sampling.validate()
}

// ANCHOR: sequences
/// The sequences of a workload: one per sample, `n` per request, in request order. Every engine
/// starts here; engines before chapter 5 treat the samples as independent sequences, chapter 5
/// lets them share their prompt's blocks.
pub fn sequences(config: &LlamaConfig, requests: &[Request], max_len: usize) -> Result<Vec<Sequence>> {
    let mut seqs = Vec::with_capacity(requests.len());
    for req in requests {
        validate_request(config, req, max_len)?;
        for i in 0..req.n {
            seqs.push(Sequence::sample(config, req, i, max_len)?);
        }
    }
    Ok(seqs)
}
// ANCHOR_END: sequences

/// Every sample of every request as a lone request (`n` = 1) with its own seed: the same work
/// without sharing, and exactly the tokens the `n` samples must produce.
pub fn split_samples(requests: &[Request]) -> Vec<Request> {
    let lone = |r: &Request, i: usize| Request { n: 1, sampling: r.sample_params(i), ..r.clone() };
    requests.iter().flat_map(|r| (0..r.n).map(move |i| lone(r, i))).collect()
}

// ANCHOR: sequence
/// A request in flight: its tokens so far, its sampler and its timings. Engines differ in how
/// they schedule sequences, never in this bookkeeping.
#[derive(Debug, Clone)]
pub struct Sequence {
    pub id: u64,
    /// Which of its request's samples this sequence is.
    pub sample: usize,
    /// Prompt followed by the generated tokens.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    max_new_tokens: usize,
    max_len: usize,
    eos: Vec<u32>,
    sampler: Sampler,
    arrival_s: f64,
    last_token_s: Option<f64>,
    ttft_s: f64,
    latencies: Vec<f64>,
    logits: Vec<Vec<f32>>,
    pub finish: Option<FinishReason>,
}

impl Sequence {
    /// Validates the request and starts the bookkeeping of its first sample. `max_len` bounds
    /// prompt + generated.
    pub fn new(config: &LlamaConfig, req: &Request, max_len: usize) -> Result<Self> {
        Sequence::sample(config, req, 0, max_len)
    }

    /// Sample `i` of the request: its own sampler, seeded with `seed + i`.
    pub fn sample(config: &LlamaConfig, req: &Request, i: usize, max_len: usize) -> Result<Self> {
        validate_request(config, req, max_len)?;
        let finish = (req.max_new_tokens == 0).then_some(FinishReason::Length);
        Ok(Sequence {
            id: req.id,
            sample: i,
            tokens: req.prompt.clone(),
            prompt_len: req.prompt.len(),
            max_new_tokens: req.max_new_tokens,
            max_len,
            eos: if req.ignore_eos { Vec::new() } else { config.eos_token_ids.clone() },
            sampler: Sampler::new(req.sample_params(i))?,
            arrival_s: req.arrival_s,
            last_token_s: None,
            ttft_s: 0.0,
            latencies: Vec::new(),
            logits: Vec::new(),
            finish,
        })
    }

    pub fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    pub fn is_finished(&self) -> bool {
        self.finish.is_some()
    }

    /// Seconds after the start of the run at which its request arrives.
    pub fn arrival_s(&self) -> f64 {
        self.arrival_s
    }

    /// The most tokens (prompt + generated) this sequence can reach.
    pub fn max_tokens(&self) -> usize {
        (self.prompt_len + self.max_new_tokens).min(self.max_len)
    }

    // ANCHOR: accept
    /// Samples the next token from this sequence's logits row, records its timing, and decides
    /// whether the sequence is finished. Returns the token.
    pub fn accept(&mut self, logits: &[f32], now_s: f64, opts: &RunOptions) -> u32 {
        let token = self.sampler.sample(logits);
        if opts.record_logits {
            self.logits.push(logits.to_vec());
        }
        self.accept_token(token, now_s);
        token
    }
    // ANCHOR_END: accept

    /// Whether choosing the next token needs the logits row on the host: the sequence samples,
    /// or the run records logits. A greedy sequence can take its argmax from the GPU instead.
    pub fn needs_logits(&self, opts: &RunOptions) -> bool {
        opts.record_logits || !self.sampler.is_greedy()
    }

    /// Records a token chosen elsewhere (by [`Sequence::accept`], or a greedy argmax on the
    /// GPU): its timing, and whether the sequence is now finished.
    pub fn accept_token(&mut self, token: u32, now_s: f64) {
        match self.last_token_s {
            None => self.ttft_s = (now_s - self.arrival_s).max(0.0),
            Some(prev) => self.latencies.push(now_s - prev),
        }
        self.last_token_s = Some(now_s);
        self.tokens.push(token);
        self.finish = if self.eos.contains(&token) {
            Some(FinishReason::Eos)
        } else if self.generated().len() >= self.max_new_tokens {
            Some(FinishReason::Length)
        } else if self.tokens.len() >= self.max_len {
            Some(FinishReason::ContextFull)
        } else {
            None
        };
    }

    pub fn into_output(self) -> RequestOutput {
        RequestOutput {
            id: self.id,
            sample: self.sample,
            tokens: self.tokens[self.prompt_len..].to_vec(),
            finish: self.finish.unwrap_or(FinishReason::Length),
            ttft_s: self.ttft_s,
            token_latencies_s: self.latencies,
            logits: self.logits,
        }
    }
}
// ANCHOR_END: sequence

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LlamaConfig {
        LlamaConfig::named("tiny").unwrap()
    }

    #[test]
    fn bad_requests_are_errors_not_panics() {
        let c = config();
        assert!(matches!(Sequence::new(&c, &Request::greedy(1, vec![], 4), 16), Err(ModelError::EmptyPrompt { id: 1 })));
        assert!(matches!(
            Sequence::new(&c, &Request::greedy(2, vec![3; 17], 4), 16),
            Err(ModelError::PromptTooLong { len: 17, max: 16, .. })
        ));
        assert!(matches!(
            Sequence::new(&c, &Request::greedy(3, vec![9999], 4), 16),
            Err(ModelError::TokenOutOfRange { token: 9999, .. })
        ));
    }

    #[test]
    fn default_max_len_is_the_context_capped_and_bad_lengths_are_errors() {
        let tiny = config();
        assert_eq!(resolve_max_len(&tiny, None).unwrap(), 256);
        assert_eq!(resolve_max_len(&tiny, Some(100)).unwrap(), 100);
        assert!(resolve_max_len(&tiny, Some(0)).is_err());
        assert!(resolve_max_len(&tiny, Some(257)).is_err());
        let long = LlamaConfig { max_position_embeddings: 131_072, ..config() };
        assert_eq!(resolve_max_len(&long, None).unwrap(), DEFAULT_MAX_LEN_CAP);
        assert_eq!(resolve_max_len(&long, Some(8192)).unwrap(), 8192);
    }

    #[test]
    fn n_samples_are_n_sequences_with_consecutive_seeds() {
        let c = config();
        let sampling = SamplingParams { temperature: 1.0, seed: 7, ..SamplingParams::greedy() };
        let req = Request { n: 3, sampling, ..Request::greedy(4, vec![5, 6], 2) };
        let seqs = sequences(&c, &[req.clone(), Request::greedy(5, vec![5], 1)], 16).unwrap();
        let who: Vec<_> = seqs.iter().map(|s| (s.id, s.sample)).collect();
        assert_eq!(who, vec![(4, 0), (4, 1), (4, 2), (5, 0)]);
        assert_eq!(req.sample_params(2).seed, 9);
        assert_eq!(seqs[0].max_tokens(), 4);
        for n in [0, MAX_SAMPLES + 1] {
            let bad = Request { n, ..req.clone() };
            assert!(matches!(sequences(&c, &[bad], 16), Err(ModelError::InvalidSampling(_))), "n = {n}");
        }
    }

    #[test]
    fn zero_new_tokens_is_finished_at_once() {
        let s = Sequence::new(&config(), &Request::greedy(1, vec![5], 0), 16).unwrap();
        assert!(s.is_finished());
        let out = s.into_output();
        assert!(out.tokens.is_empty());
        assert_eq!(out.finish, FinishReason::Length);
    }

    #[test]
    fn stops_on_eos_length_or_context() {
        let c = config();
        let mut logits = vec![0.0f32; c.vocab_size];
        let opts = RunOptions::default();
        logits[2] = 1.0; // EOS is 2 in the tiny config
        let mut s = Sequence::new(&c, &Request::greedy(1, vec![5], 9), 16).unwrap();
        s.accept(&logits, 0.5, &opts);
        assert_eq!(s.finish, Some(FinishReason::Eos));

        logits[2] = 0.0;
        logits[7] = 1.0;
        let mut s = Sequence::new(&c, &Request::greedy(1, vec![5], 2), 16).unwrap();
        s.accept(&logits, 0.5, &opts);
        assert!(!s.is_finished());
        s.accept(&logits, 0.75, &opts);
        assert_eq!(s.finish, Some(FinishReason::Length));
        let out = s.into_output();
        assert_eq!((out.tokens, out.ttft_s, out.token_latencies_s), (vec![7, 7], 0.5, vec![0.25]));

        let mut s = Sequence::new(&c, &Request::greedy(1, vec![5, 5, 5], 9), 4).unwrap();
        s.accept(&logits, 0.1, &opts);
        assert_eq!(s.finish, Some(FinishReason::ContextFull));
    }
}
