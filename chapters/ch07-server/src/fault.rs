//! Engines for the load/fault suite. [`Faulty`] behaves like the engine it wraps until step
//! `after`, then fails that step (an error, or a panic on the engine thread): the server must then
//! report the engine dead (`/health` 503), fail what is in flight, and exit non-zero.
//! [`NullEngine`] has no model, to measure what the server alone costs and holds.

use ch00_model::Result;
use ch00_serving::{EngineLoad, Request, StepEngine, StepOutput};

/// How the injected fault shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `step` returns an error.
    Error,
    /// `step` panics.
    Panic,
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "error" => Ok(Fault::Error),
            "panic" => Ok(Fault::Panic),
            _ => Err(format!("unknown fault {s:?}: error or panic")),
        }
    }
}

/// `inner`, failing at its `after`-th step (counting from 0) that has work to do.
pub struct Faulty<'m> {
    pub inner: Box<dyn StepEngine + 'm>,
    pub fault: Fault,
    pub after: usize,
    steps: usize,
}

impl<'m> Faulty<'m> {
    pub fn new(inner: Box<dyn StepEngine + 'm>, fault: Fault, after: usize) -> Self {
        Faulty { inner, fault, after, steps: 0 }
    }
}

impl StepEngine for Faulty<'_> {
    fn now_s(&self) -> f64 {
        self.inner.now_s()
    }
    fn add_request(&mut self, req: &Request) -> Result<()> {
        self.inner.add_request(req)
    }
    fn step(&mut self) -> Result<StepOutput> {
        if self.steps == self.after {
            match self.fault {
                Fault::Error => return Err(ch00_model::ModelError::InvalidBatch(format!("injected fault at step {}", self.steps))),
                Fault::Panic => panic!("injected panic at step {}", self.steps),
            }
        }
        self.steps += 1;
        self.inner.step()
    }
    fn abort(&mut self, id: u64) -> Result<bool> {
        self.inner.abort(id)
    }
    fn has_unfinished(&self) -> bool {
        self.inner.has_unfinished()
    }
    fn next_arrival(&self) -> Option<f64> {
        self.inner.next_arrival()
    }
    fn load(&self) -> EngineLoad {
        self.inner.load()
    }
    fn max_len(&self) -> usize {
        self.inner.max_len()
    }
}

/// One sample in the [`NullEngine`].
struct NullSeq {
    id: u64,
    sample: usize,
    index: usize,
    last: u32,
    left: usize,
    tokens: Vec<u32>,
    arrival_s: f64,
    ttft_s: f64,
    last_s: f64,
    gaps: Vec<f64>,
}

/// A step engine with no model, to measure the server alone (`kvserve serve --stage null`, for
/// `kvserve soak`): each step, every running sample "generates" its previous token + 1 (mod the
/// vocabulary) until it has `max_new_tokens`; at most `max_running` run at once, first come first
/// served. It keeps nothing of a finished sequence, so any memory that grows with the requests
/// served is the server's.
pub struct NullEngine {
    vocab: usize,
    max_len: usize,
    max_running: usize,
    start: std::time::Instant,
    waiting: std::collections::VecDeque<NullSeq>,
    running: Vec<NullSeq>,
    added: usize,
}

impl NullEngine {
    pub fn new(vocab: usize, max_len: usize, max_running: usize) -> Self {
        let (start, waiting, running) = (std::time::Instant::now(), Default::default(), Vec::new());
        NullEngine { vocab: vocab.max(1), max_len, max_running: max_running.max(1), start, waiting, running, added: 0 }
    }
}

impl StepEngine for NullEngine {
    fn now_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
    fn add_request(&mut self, req: &Request) -> Result<()> {
        use ch00_model::ModelError;
        let Some(&last) = req.prompt.last() else { return Err(ModelError::EmptyPrompt { id: req.id }) };
        if req.prompt.len() + req.max_new_tokens > self.max_len {
            return Err(ModelError::PromptTooLong { id: req.id, len: req.prompt.len(), max: self.max_len });
        }
        if let Some(&token) = req.prompt.iter().find(|&&t| t as usize >= self.vocab) {
            return Err(ModelError::TokenOutOfRange { id: req.id, token, vocab: self.vocab });
        }
        for sample in 0..req.n {
            let (index, arrival_s) = (self.added, req.arrival_s);
            self.added += 1;
            let s = NullSeq { id: req.id, sample, index, last, left: req.max_new_tokens, tokens: Vec::new(), arrival_s, ttft_s: 0.0, last_s: 0.0, gaps: Vec::new() };
            self.waiting.push_back(s);
        }
        Ok(())
    }
    fn step(&mut self) -> Result<StepOutput> {
        while self.running.len() < self.max_running {
            match self.waiting.pop_front() {
                Some(s) => self.running.push(s),
                None => break,
            }
        }
        let now = self.now_s();
        let ran = (!self.running.is_empty()).then(ch00_serving::StepRecord::default);
        let mut out = StepOutput { ran, ..Default::default() };
        for s in &mut self.running {
            s.last = (s.last + 1) % self.vocab as u32;
            s.tokens.push(s.last);
            s.left -= 1;
            match s.tokens.len() {
                1 => s.ttft_s = now - s.arrival_s,
                _ => s.gaps.push(now - s.last_s),
            }
            s.last_s = now;
            out.tokens.push(ch00_serving::NewToken { id: s.id, sample: s.sample, token: s.last });
        }
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.running).into_iter().partition(|s| s.left == 0);
        self.running = running;
        for s in done {
            let o = ch00_serving::RequestOutput {
                id: s.id,
                sample: s.sample,
                tokens: s.tokens,
                finish: ch00_serving::FinishReason::Length,
                ttft_s: s.ttft_s,
                token_latencies_s: s.gaps,
                logits: Vec::new(),
            };
            out.finished.push((ch00_serving::SeqId(s.index as u64), o));
        }
        Ok(out)
    }
    fn abort(&mut self, id: u64) -> Result<bool> {
        let before = self.waiting.len() + self.running.len();
        self.waiting.retain(|s| s.id != id);
        self.running.retain(|s| s.id != id);
        Ok(self.waiting.len() + self.running.len() < before)
    }
    fn has_unfinished(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }
    fn next_arrival(&self) -> Option<f64> {
        None
    }
    fn load(&self) -> EngineLoad {
        let (running, waiting) = (self.running.len(), self.waiting.len());
        EngineLoad { running, waiting, kv_units_used: running, kv_units_total: self.max_running, ..Default::default() }
    }
    fn max_len(&self) -> usize {
        self.max_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_null_engine_counts_up_from_the_prompt_and_keeps_nothing_finished() {
        let mut e = NullEngine::new(10, 32, 2);
        let reqs = [Request::greedy(1, vec![3, 8], 4), Request { n: 2, ..Request::greedy(2, vec![5], 3) }];
        let outs = ch00_serving::drive(&mut e, &reqs, &Default::default()).unwrap().outputs;
        let tokens: Vec<_> = outs.iter().map(|o| (o.id, o.sample, o.tokens.clone())).collect();
        assert_eq!(tokens, [(1, 0, vec![9, 0, 1, 2]), (2, 0, vec![6, 7, 8]), (2, 1, vec![6, 7, 8])]);
        assert!(!e.has_unfinished() && e.running.is_empty() && e.waiting.is_empty());
        assert!(e.add_request(&Request::greedy(3, vec![], 2)).is_err());
        assert!(e.add_request(&Request::greedy(3, vec![1; 30], 3)).is_err());
        assert!(e.add_request(&Request::greedy(3, vec![10], 3)).is_err());
        e.add_request(&Request::greedy(4, vec![1], 5)).unwrap();
        assert!(e.abort(4).unwrap() && !e.has_unfinished());
    }

    #[test]
    fn faulty_fails_at_its_step() {
        let inner = Box::new(NullEngine::new(10, 32, 2));
        let mut e = Faulty::new(inner, Fault::Error, 1);
        e.add_request(&Request::greedy(1, vec![3], 5)).unwrap();
        assert!(e.step().is_ok());
        assert!(e.step().unwrap_err().to_string().contains("injected fault at step 1"));
        assert_eq!("panic".parse::<Fault>(), Ok(Fault::Panic));
        assert!("boom".parse::<Fault>().is_err());
    }
}
