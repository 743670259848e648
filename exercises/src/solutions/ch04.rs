//! Reference answers for chapter 4 (compiled instead of `src/ch04.rs` with `--features solutions`).

use crate::types::{Admit, Decode, ExerciseError, Result, SlotScheduler, SlotSteps, StepPlan};
use std::collections::VecDeque;

pub fn slots_for_budget(bytes_per_token: u64, max_len: u64, budget_bytes: u64) -> Result<u64> {
    if bytes_per_token == 0 || max_len == 0 {
        return Err(ExerciseError::InvalidSettings("a slot holds at least one token of at least one byte".into()));
    }
    let slot = bytes_per_token.saturating_mul(max_len); // u64::MAX: fits no budget
    if budget_bytes < slot || slot == u64::MAX {
        return Err(ExerciseError::BudgetTooSmall { budget: budget_bytes, needed: slot });
    }
    Ok(budget_bytes / slot)
}

pub fn schedule(s: &mut SlotScheduler, now_s: f64) -> StepPlan {
    let decode = s.running.clone();
    let mut budget = s.max_tokens_per_step.saturating_sub(decode.len());
    let mut admit = Vec::new();
    while let Some(&next) = s.waiting.front() {
        if next.arrival_s > now_s || s.running.len() >= s.max_running || next.prefill_tokens > budget {
            break;
        }
        let Some(slot) = s.free.pop_first() else { break };
        s.waiting.pop_front();
        budget -= next.prefill_tokens;
        s.running.push(Decode { key: next.key, slot });
        admit.push(Admit { key: next.key, slot, tokens: next.prefill_tokens });
    }
    StepPlan { decode, admit }
}

pub fn continuous_batching(output_lens: &[usize], slots: usize) -> Result<SlotSteps> {
    if slots == 0 {
        return Err(ExerciseError::InvalidSettings("at least one slot is needed".into()));
    }
    let mut waiting: VecDeque<usize> = output_lens.iter().copied().filter(|&n| n > 0).collect();
    let mut running: Vec<usize> = Vec::new(); // tokens each running request still wants
    let mut run = SlotSteps::default();
    loop {
        while running.len() < slots {
            let Some(n) = waiting.pop_front() else { break };
            running.push(n);
        }
        if running.is_empty() {
            return Ok(run);
        }
        run.steps += 1;
        run.busy += running.len();
        running.iter_mut().for_each(|n| *n -= 1);
        running.retain(|&n| n > 0);
    }
}
