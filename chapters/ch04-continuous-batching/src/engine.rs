//! The chapter-4 engine: asks the scheduler for a plan every step, runs the model once on it, and
//! tells the scheduler who finished.

use crate::budget::slots_for_budget;
use crate::scheduler::{default_max_tokens_per_step, Pending, Scheduler, SchedulerConfig};
use ch00_model::{Model, ModelError, Result};
use ch00_serving::{
    drive, resolve_max_len, Clock, Engine, EngineLoad, NewToken, Request, RunOptions, RunOutput, SeqTable, StepEngine,
    StepOutput,
};
use ch02_kv_cache::{ContiguousBackend, KvCache};
use ch03_static_batching::{alloc_slots, run_step, Feed, Row};

// ANCHOR: settings
/// How many cache slots the engine reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotBudget {
    /// Exactly this many slots.
    Slots(usize),
    /// As many slots of `max_len` tokens as fit in this many bytes of KV cache.
    KvBytes(u64),
}

/// Continuous batching over contiguous cache slots.
#[derive(Debug, Clone, Copy)]
pub struct ContinuousBatchEngine {
    pub slots: SlotBudget,
    /// Most requests running at once; `None` means one per slot.
    pub max_running: Option<usize>,
    /// Most tokens per step; `None` means `max(max_len, 2048)`, vLLM's default rule, which lets
    /// any prompt that fits a slot be admitted.
    pub max_tokens_per_step: Option<usize>,
    /// Tokens each slot is sized for; `None` means the model's context, capped at 4096 tokens.
    pub max_len: Option<usize>,
}

impl Default for ContinuousBatchEngine {
    fn default() -> Self {
        ContinuousBatchEngine {
            slots: SlotBudget::Slots(8),
            max_running: None,
            max_tokens_per_step: None,
            max_len: None,
        }
    }
}
// ANCHOR_END: settings

impl ContinuousBatchEngine {
    /// The scheduler limits these settings give for `model`, and the slot length.
    pub fn scheduler_config(&self, model: &Model) -> Result<(SchedulerConfig, usize)> {
        let max_len = resolve_max_len(&model.config, self.max_len)?;
        let num_slots = match self.slots {
            SlotBudget::Slots(0) => return Err(ModelError::InvalidSettings("at least one slot is needed".into())),
            SlotBudget::Slots(n) => n,
            SlotBudget::KvBytes(bytes) => slots_for_budget(&model.config, max_len, bytes)?,
        };
        let config = SchedulerConfig {
            num_slots,
            max_running: self.max_running.unwrap_or(num_slots),
            max_tokens_per_step: self.max_tokens_per_step.unwrap_or(default_max_tokens_per_step(max_len)),
        };
        Ok((config, max_len))
    }
}

impl Engine for ContinuousBatchEngine {
    fn name(&self) -> &'static str {
        "ch04-continuous-batching"
    }

    fn run(&mut self, model: &Model, requests: &[Request], opts: &RunOptions) -> Result<RunOutput> {
        drive(&mut ContinuousCore::new(model, *self, *opts)?, requests, opts)
    }

    fn stepper<'m>(&self, model: &'m Model) -> Result<Box<dyn StepEngine + 'm>> {
        Ok(Box::new(ContinuousCore::new(model, *self, RunOptions::default())?))
    }
}

// ANCHOR: core
/// Continuous batching, one step at a time: the scheduler's plan, one forward pass over it, and
/// the slots of whoever finished handed back for the next step.
pub struct ContinuousCore<'m> {
    model: &'m Model,
    sched: Scheduler,
    backend: ContiguousBackend,
    clock: Clock,
    opts: RunOptions,
    max_len: usize,
    seqs: SeqTable,
}
// ANCHOR_END: core

impl<'m> ContinuousCore<'m> {
    pub fn new(model: &'m Model, settings: ContinuousBatchEngine, opts: RunOptions) -> Result<Self> {
        let (config, max_len) = settings.scheduler_config(model)?;
        Ok(ContinuousCore {
            model,
            sched: Scheduler::new(config)?,
            backend: alloc_slots(model, config.num_slots, max_len),
            clock: Clock::start(),
            opts,
            max_len,
            seqs: SeqTable::new(),
        })
    }
}

impl StepEngine for ContinuousCore<'_> {
    fn now_s(&self) -> f64 {
        self.clock.now_s()
    }

    fn add_request(&mut self, req: &Request) -> Result<()> {
        // One sequence per sample: n samples are n independent requests to this scheduler.
        let ids = self.seqs.add(&self.model.config, req, self.max_len)?;
        for &seq in &ids {
            let pending = Pending { seq, arrival_s: req.arrival_s, prefill_tokens: req.prompt.len() };
            if let Err(e) = self.sched.submit(pending) {
                // Identical prompts: the first sample is refused, so nothing has been queued.
                self.seqs.discard(&ids);
                return Err(e);
            }
        }
        Ok(())
    }

    fn step(&mut self) -> Result<StepOutput> {
        let mut out = StepOutput { finished: self.seqs.take_done(), ..Default::default() };
        if self.sched.is_done() {
            return Ok(out);
        }
        // ANCHOR: loop
        let now = self.clock.now_s();
        let plan = self.sched.schedule(now);
        if plan.is_empty() {
            // Nothing running and nobody has arrived yet: the caller waits for the next arrival.
            return match self.sched.next_arrival() {
                Some(t) if t > now => Ok(out),
                _ => Err(ModelError::InvalidSettings("the scheduler made no progress".into())),
            };
        }
        // One step: the running requests decode, the admitted ones prefill, in one forward pass.
        let row = |seq, slot, feed| Ok(Row { seq, request: self.seqs.get(seq)?.id, slot, feed });
        let decodes = plan.decode.iter().map(|d| row(d.seq, d.slot, Feed::Decode));
        let prefills = plan.admit.iter().map(|a| row(a.seq, a.slot, Feed::Prefill));
        let rows: Vec<Row> = decodes.chain(prefills).collect::<Result<_>>()?;
        let ran = run_step(self.model, &mut self.backend, &mut self.seqs, &rows, &self.clock, &self.opts)?;
        out.ran = Some(ran);
        // Finished requests leave now; their slots are free for the next step's admissions.
        for r in &rows {
            let seq = self.seqs.get(r.seq)?;
            let token = seq.tokens[seq.tokens.len() - 1];
            out.tokens.push(NewToken { id: seq.id, sample: seq.sample, token });
            if seq.is_finished() {
                self.sched.finish(r.seq)?;
                out.finished.push((r.seq, self.seqs.finish(r.seq)?));
            }
        }
        // ANCHOR_END: loop
        Ok(out)
    }

    fn abort(&mut self, id: u64) -> Result<bool> {
        let (gone, had_done) = self.seqs.abort(id);
        for (seq, _) in &gone {
            self.sched.abort(*seq); // its slot is free for the next step
        }
        Ok(!gone.is_empty() || had_done)
    }

    fn has_unfinished(&self) -> bool {
        !self.sched.is_done() || self.seqs.has_done()
    }

    fn next_arrival(&self) -> Option<f64> {
        self.sched.next_arrival()
    }

    fn load(&self) -> EngineLoad {
        let slots = self.sched.config().num_slots;
        EngineLoad {
            running: self.sched.running().len(),
            waiting: self.sched.waiting_len(),
            kv_units_used: slots - self.sched.free_slots(),
            kv_units_total: slots,
            kv_bytes_total: self.backend.slots.iter().map(KvCache::bytes_allocated).sum(),
            ..EngineLoad::default() // no preemption, no prefix cache
        }
    }

    fn max_len(&self) -> usize {
        self.max_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ch00_model::LlamaConfig;
    use ch00_serving::Phase;

    fn tiny() -> Model {
        Model::random(LlamaConfig::named("tiny").unwrap(), 0).unwrap()
    }

    fn reqs(outputs: &[usize]) -> Vec<Request> {
        let greedy = |i: usize, n: usize| Request { ignore_eos: true, ..Request::greedy(i as u64, vec![4, 5, 6], n) };
        outputs.iter().enumerate().map(|(i, &n)| greedy(i, n)).collect()
    }

    #[test]
    fn a_finished_slot_is_refilled_and_no_slot_step_is_wasted() {
        let model = tiny();
        let mut e = ContinuousBatchEngine { slots: SlotBudget::Slots(2), max_len: Some(32), ..Default::default() };
        let opts = RunOptions { trace: true, ..Default::default() };
        let out = e.run(&model, &reqs(&[6, 1, 1, 4]), &opts).unwrap();
        let s = &out.stats;
        assert_eq!(s.generated_tokens, 12);
        assert_eq!(s.wasted_slot_steps, 0);
        // Request 1 finishes at its prefill; request 2 takes slot 1 at step 1, then 3 at step 2.
        let who = |step: usize| out.trace[step].entries.iter().map(|e| (e.request, e.phase)).collect::<Vec<_>>();
        assert_eq!(who(1), vec![(0, Phase::Decode), (2, Phase::Prefill)]);
        assert_eq!(who(2), vec![(0, Phase::Decode), (3, Phase::Prefill)]);
        assert_eq!(s.steps, 6);
        assert_eq!(s.slot_utilisation, 1.0); // both slots busy in every step
    }

    #[test]
    fn a_budget_smaller_than_one_slot_is_an_error() {
        let model = tiny();
        let mut e = ContinuousBatchEngine { slots: SlotBudget::KvBytes(1000), max_len: Some(32), ..Default::default() };
        let err = e.run(&model, &reqs(&[2]), &RunOptions::default()).unwrap_err().to_string();
        assert!(err.contains("smaller than one request's slot"), "{err}");
        let mut e = ContinuousBatchEngine { slots: SlotBudget::Slots(0), ..Default::default() };
        assert!(e.run(&model, &reqs(&[2]), &RunOptions::default()).is_err());
    }

    #[test]
    fn a_prompt_over_the_step_budget_is_an_error() {
        let model = tiny();
        let mut e = ContinuousBatchEngine { max_tokens_per_step: Some(8), max_len: Some(32), ..Default::default() };
        let long = vec![Request::greedy(0, vec![5; 9], 2)];
        assert!(matches!(e.run(&model, &long, &RunOptions::default()), Err(ModelError::InvalidSettings(_))));
    }
}
