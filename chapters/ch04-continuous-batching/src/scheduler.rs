//! The iteration-level scheduler, as a pure data structure: a waiting queue, a running set and a
//! pool of free cache slots. Every step, [`Scheduler::schedule`] decides who decodes and who is
//! admitted (prefilled) into a free slot; the engine runs the model on that plan and reports the
//! requests that finished with [`Scheduler::finish`], which frees their slots for the next step.
//!
//! It never touches a model or a cache, so it can be driven by simulated token counts (tests,
//! capacity "accounting runs") exactly as the engine drives it with real ones.

use ch00_model::{ModelError, Result};
use ch00_serving::SeqId;
use std::collections::{BTreeSet, VecDeque};

// ANCHOR: config
/// The scheduler's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Cache slots: contiguous KV regions pre-allocated to the maximum length. The KV memory
    /// budget fixes this number (see [`crate::slots_for_budget`]).
    pub num_slots: usize,
    /// Most requests running (holding a slot) at once; the effective limit is
    /// `min(max_running, num_slots)`.
    pub max_running: usize,
    /// Most tokens one step may feed: each decode costs 1, each admission its whole prompt.
    /// Bounds the step's activations and how long a prefill can stall everyone's decode.
    pub max_tokens_per_step: usize,
}
// ANCHOR_END: config

/// The default step budget for sequences of up to `max_len` tokens: `max(max_len, 2048)`, vLLM's
/// rule, which lets any prompt that fits a slot be admitted (and, in chapter 5, any preempted
/// sequence be recomputed in one step).
pub fn default_max_tokens_per_step(max_len: usize) -> usize {
    max_len.max(2048)
}

/// A sequence as the scheduler sees it: an id and a count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pending {
    pub seq: SeqId,
    /// Seconds after the start of the run at which it may be admitted.
    pub arrival_s: f64,
    /// Tokens its prefill feeds (the prompt length).
    pub prefill_tokens: usize,
}

/// A request admitted this step: prefill `tokens` tokens into `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admit {
    pub seq: SeqId,
    pub slot: usize,
    pub tokens: usize,
}

/// A running request that feeds one token this step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decode {
    pub seq: SeqId,
    pub slot: usize,
}

/// What one step runs: every running request decodes, and the admitted ones prefill.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepPlan {
    pub decode: Vec<Decode>,
    pub admit: Vec<Admit>,
}

impl StepPlan {
    pub fn is_empty(&self) -> bool {
        self.decode.is_empty() && self.admit.is_empty()
    }

    /// Tokens the step feeds.
    pub fn tokens(&self) -> usize {
        self.decode.len() + self.admit.iter().map(|a| a.tokens).sum::<usize>()
    }
}

/// Waiting queue (in arrival order), running set and free slots.
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: SchedulerConfig,
    waiting: VecDeque<Pending>,
    /// Running sequences in admission order, with their slots.
    running: Vec<Decode>,
    /// Free slots; the lowest is handed out first, so traces are easy to read.
    free: BTreeSet<usize>,
    finished: usize,
}

impl Scheduler {
    /// An empty scheduler. Errors when a limit is 0, or when a step's token budget could not
    /// even hold one decode token per running request.
    pub fn new(config: SchedulerConfig) -> Result<Self> {
        let bad = |m: String| Err(ModelError::InvalidSettings(m));
        if config.num_slots == 0 {
            return bad("at least one cache slot is needed (is the KV budget too small?)".into());
        }
        if config.max_running == 0 {
            return bad("max_running must be at least 1".into());
        }
        let running_cap = config.max_running.min(config.num_slots);
        if config.max_tokens_per_step < running_cap {
            return bad(format!(
                "max_tokens_per_step {} cannot fit one decode token for each of {running_cap} running requests",
                config.max_tokens_per_step
            ));
        }
        let free = (0..config.num_slots).collect();
        Ok(Scheduler { config, waiting: VecDeque::new(), running: Vec::new(), free, finished: 0 })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Queues a request. Requests are kept in arrival order (ties: submission order). Errors when
    /// its prefill could never fit a step, or its arrival time is not a finite number.
    pub fn submit(&mut self, p: Pending) -> Result<()> {
        if p.prefill_tokens == 0 || p.prefill_tokens > self.config.max_tokens_per_step {
            return Err(ModelError::InvalidSettings(format!(
                "{}: a prefill of {} tokens does not fit max_tokens_per_step {}",
                p.seq, p.prefill_tokens, self.config.max_tokens_per_step
            )));
        }
        if !p.arrival_s.is_finite() {
            return Err(ModelError::InvalidSettings(format!("{}: arrival time {}", p.seq, p.arrival_s)));
        }
        let at = self.waiting.partition_point(|w| w.arrival_s <= p.arrival_s);
        self.waiting.insert(at, p);
        Ok(())
    }

    // ANCHOR: schedule
    /// Plans the next step at time `now_s`: every running request decodes one token, then
    /// waiting requests that have arrived are admitted in arrival order while a slot is free,
    /// `max_running` allows and their prompt fits the step's remaining token budget. Admission is
    /// first-come first-served: a prompt that does not fit blocks those behind it (no starvation).
    pub fn schedule(&mut self, now_s: f64) -> StepPlan {
        let decode = self.running.clone();
        let mut budget = self.config.max_tokens_per_step.saturating_sub(decode.len());
        let mut admit = Vec::new();
        // ANCHOR: admit
        while let Some(&next) = self.waiting.front() {
            let room = self.running.len() < self.config.max_running;
            if next.arrival_s > now_s || !room || next.prefill_tokens > budget {
                break;
            }
            let Some(slot) = self.free.pop_first() else { break };
            self.waiting.pop_front();
            budget -= next.prefill_tokens;
            self.running.push(Decode { seq: next.seq, slot });
            admit.push(Admit { seq: next.seq, slot, tokens: next.prefill_tokens });
        }
        // ANCHOR_END: admit
        StepPlan { decode, admit }
    }
    // ANCHOR_END: schedule

    // ANCHOR: finish
    /// Removes a finished request from the running set and frees its slot for the next step.
    /// Returns the slot. Errors when `seq` is not running (finishing twice is a bug).
    pub fn finish(&mut self, seq: SeqId) -> Result<usize> {
        let i = self
            .running
            .iter()
            .position(|r| r.seq == seq)
            .ok_or_else(|| ModelError::InvalidBatch(format!("{seq} finished but is not running")))?;
        let slot = self.running.remove(i).slot;
        self.free.insert(slot);
        self.finished += 1;
        Ok(slot)
    }
    // ANCHOR_END: finish

    /// The client went away: sequence `seq` leaves the queue, or the running set and its slot.
    /// Returns whether it was there.
    pub fn abort(&mut self, seq: SeqId) -> bool {
        if let Some(i) = self.running.iter().position(|r| r.seq == seq) {
            let slot = self.running.remove(i).slot;
            self.free.insert(slot);
            return true;
        }
        let before = self.waiting.len();
        self.waiting.retain(|w| w.seq != seq);
        self.waiting.len() < before
    }

    /// Arrival time of the first waiting request (the engine sleeps until then when idle).
    pub fn next_arrival(&self) -> Option<f64> {
        self.waiting.front().map(|p| p.arrival_s)
    }

    /// Nothing waiting and nothing running.
    pub fn is_done(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Running requests with their slots, in admission order.
    pub fn running(&self) -> &[Decode] {
        &self.running
    }

    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    pub fn free_slots(&self) -> usize {
        self.free.len()
    }

    /// Requests finished so far.
    pub fn finished(&self) -> usize {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(num_slots: usize, max_running: usize, max_tokens_per_step: usize) -> SchedulerConfig {
        SchedulerConfig { num_slots, max_running, max_tokens_per_step }
    }

    fn pending(key: u64, arrival_s: f64, prefill_tokens: usize) -> Pending {
        Pending { seq: SeqId(key), arrival_s, prefill_tokens }
    }

    #[test]
    fn a_finished_slot_is_refilled_at_the_next_step() {
        let mut s = Scheduler::new(config(2, 8, 100)).unwrap();
        for k in 0..3 {
            s.submit(pending(k, 0.0, 5)).unwrap();
        }
        let p = s.schedule(0.0);
        assert_eq!(p.admit, vec![Admit { seq: SeqId(0), slot: 0, tokens: 5 }, Admit { seq: SeqId(1), slot: 1, tokens: 5 }]);
        assert!(p.decode.is_empty());
        assert_eq!(s.finish(SeqId(0)).unwrap(), 0);
        let p = s.schedule(0.0);
        assert_eq!(p.decode, vec![Decode { seq: SeqId(1), slot: 1 }]);
        assert_eq!(p.admit, vec![Admit { seq: SeqId(2), slot: 0, tokens: 5 }]);
        assert_eq!(p.tokens(), 6);
    }

    #[test]
    fn waits_for_arrivals_and_respects_the_token_budget_in_order() {
        let mut s = Scheduler::new(config(4, 4, 10)).unwrap();
        s.submit(pending(0, 1.0, 3)).unwrap();
        s.submit(pending(1, 0.5, 8)).unwrap();
        s.submit(pending(2, 0.5, 2)).unwrap();
        assert!(s.schedule(0.0).is_empty());
        assert_eq!(s.next_arrival(), Some(0.5));
        // 1 (8 tokens) fits; 2 (2 tokens) fits too: 10 in all.
        assert_eq!(s.schedule(0.6).admit.iter().map(|a| a.seq.0).collect::<Vec<_>>(), vec![1, 2]);
        // 0 has arrived but 2 decodes + 3 tokens fit 10: admitted.
        let p = s.schedule(2.0);
        assert_eq!((p.decode.len(), p.admit.len()), (2, 1));
    }

    #[test]
    fn bad_settings_and_requests_are_errors() {
        assert!(Scheduler::new(config(0, 4, 10)).is_err());
        assert!(Scheduler::new(config(4, 0, 10)).is_err());
        assert!(Scheduler::new(config(4, 4, 3)).is_err());
        let mut s = Scheduler::new(config(1, 1, 10)).unwrap();
        assert!(s.submit(pending(0, 0.0, 11)).is_err());
        assert!(s.submit(pending(0, 0.0, 0)).is_err());
        assert!(s.submit(pending(0, f64::NAN, 1)).is_err());
        assert!(s.finish(SeqId(7)).is_err());
    }

    // ANCHOR: property
    proptest! {
        /// Driven with simulated output lengths, in any arrival order and under any limits: every
        /// request is admitted once and finishes once, no slot is ever shared, and no step breaks
        /// a limit.
        #[test]
        fn every_request_finishes_exactly_once(
            reqs in prop::collection::vec((0u32..20, 1usize..12, 1usize..10), 0..40),
            num_slots in 1usize..6,
            max_running in 1usize..8,
            extra_tokens in 0usize..30,
        ) {
            let max_tokens = max_running.min(num_slots) + 11 + extra_tokens;
            let mut s = Scheduler::new(config(num_slots, max_running, max_tokens)).unwrap();
            for (key, &(arrive, prompt, _)) in reqs.iter().enumerate() {
                s.submit(pending(key as u64, arrive as f64, prompt)).unwrap();
            }
            let mut left: Vec<usize> = reqs.iter().map(|r| r.2).collect(); // tokens still to generate
            let mut admitted = vec![0; reqs.len()];
            let mut finished = vec![0; reqs.len()];
            let mut now = 0.0;
            while !s.is_done() {
                prop_assert!(now < 10_000.0, "no progress");
                let plan = s.schedule(now);
                prop_assert!(plan.tokens() <= max_tokens);
                let mut slots: Vec<usize> =
                    plan.decode.iter().map(|d| d.slot).chain(plan.admit.iter().map(|a| a.slot)).collect();
                prop_assert!(slots.len() <= max_running.min(num_slots));
                slots.sort_unstable();
                slots.dedup();
                prop_assert_eq!(slots.len(), plan.decode.len() + plan.admit.len(), "a slot is shared");
                for a in &plan.admit {
                    let k = a.seq.0 as usize;
                    prop_assert!(reqs[k].0 as f64 <= now);
                    admitted[k] += 1;
                }
                // Every planned request produces one token; those with nothing left finish.
                let seqs: Vec<SeqId> =
                    plan.decode.iter().map(|d| d.seq).chain(plan.admit.iter().map(|a| a.seq)).collect();
                for q in seqs {
                    let k = q.0 as usize;
                    left[k] -= 1;
                    if left[k] == 0 {
                        s.finish(q).unwrap();
                        finished[k] += 1;
                    }
                }
                now += 1.0;
            }
            prop_assert!(admitted.iter().all(|&n| n == 1));
            prop_assert!(finished.iter().all(|&n| n == 1));
            prop_assert_eq!(s.finished(), reqs.len());
            prop_assert_eq!(s.free_slots(), num_slots);
        }
    }
    // ANCHOR_END: property
}
