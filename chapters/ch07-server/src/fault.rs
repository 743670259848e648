//! Fault injection for the load/fault suite: a [`StepEngine`] that behaves like the one it wraps
//! until step `after`, then fails that step (an error, or a panic on the engine thread). The
//! server must then report the engine dead (`/health` 503), fail what is in flight, and exit
//! non-zero.

use ch00_model::{EngineLoad, Request, Result, StepEngine, StepOutput};

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
