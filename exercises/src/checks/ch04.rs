//! Checks of the chapter-4 exercises.

use crate::ch04::{continuous_batching, schedule, slots_for_budget};
use crate::types::{Admit, Decode, ExerciseError, Pending, SlotScheduler, SlotSteps};

pub fn ch04_slots_for_budget() {
    let mib = 1 << 20;
    // Llama-2-7B in f32 (1 MiB per token), 4,096-token slots, an "80 GB" H100: 81,559 MiB.
    assert_eq!(slots_for_budget(mib, 4096, 81_559 * mib), Ok(19));
    assert_eq!(slots_for_budget(100, 10, 1000), Ok(1), "exactly one slot fits");
    assert_eq!(slots_for_budget(100, 10, 3999), Ok(3), "only whole slots");
    assert!(matches!(slots_for_budget(100, 10, 999), Err(ExerciseError::BudgetTooSmall { .. })));
    assert!(matches!(slots_for_budget(100, 0, 1000), Err(ExerciseError::InvalidSettings(_))));
    assert!(matches!(slots_for_budget(0, 10, 1000), Err(ExerciseError::InvalidSettings(_))));
    // A slot whose size overflows u64 fits in no budget, and asking must not panic.
    assert!(matches!(slots_for_budget(u64::MAX / 2, 4, u64::MAX), Err(ExerciseError::BudgetTooSmall { .. })));
}

fn pending(key: usize, arrival_s: f64, prefill_tokens: usize) -> Pending {
    Pending { key, arrival_s, prefill_tokens }
}

fn keys(admit: &[Admit]) -> Vec<usize> {
    admit.iter().map(|a| a.key).collect()
}

pub fn ch04_schedule() {
    // A finished slot is refilled at the very next step, lowest free slot first.
    let mut s = SlotScheduler::new(2, 8, 100).unwrap();
    for k in 0..3 {
        s.submit(pending(k, 0.0, 5)).unwrap();
    }
    let p = schedule(&mut s, 0.0);
    assert_eq!(p.admit, vec![Admit { key: 0, slot: 0, tokens: 5 }, Admit { key: 1, slot: 1, tokens: 5 }]);
    assert!(p.decode.is_empty(), "admitted requests prefill; they do not also decode");
    assert_eq!(s.running, vec![Decode { key: 0, slot: 0 }, Decode { key: 1, slot: 1 }]);
    s.finish(0).unwrap();
    let p = schedule(&mut s, 0.0);
    assert_eq!(p.decode, vec![Decode { key: 1, slot: 1 }]);
    assert_eq!(p.admit, vec![Admit { key: 2, slot: 0, tokens: 5 }]);
    assert!(s.waiting.is_empty() && s.free.is_empty());

    // Nobody is admitted before arriving.
    let mut s = SlotScheduler::new(4, 4, 10).unwrap();
    s.submit(pending(0, 1.0, 3)).unwrap();
    s.submit(pending(1, 0.5, 8)).unwrap();
    s.submit(pending(2, 0.5, 2)).unwrap();
    let p = schedule(&mut s, 0.0);
    assert!(p.admit.is_empty() && p.decode.is_empty());
    // 8 + 2 tokens fill the step budget of 10 exactly.
    assert_eq!(keys(&schedule(&mut s, 0.6).admit), vec![1, 2]);
    // Two decodes leave 8 of 10: request 0's 3 tokens fit.
    let p = schedule(&mut s, 2.0);
    assert_eq!((p.decode.len(), keys(&p.admit)), (2, vec![0]));

    // The decodes come out of the step's token budget, and a prompt that does not fit blocks
    // those behind it (first come, first served), even if theirs would fit.
    let mut s = SlotScheduler::new(4, 4, 10).unwrap();
    s.submit(pending(0, 0.0, 5)).unwrap();
    s.submit(pending(1, 0.0, 5)).unwrap();
    s.submit(pending(2, 0.0, 9)).unwrap();
    s.submit(pending(3, 0.0, 1)).unwrap();
    assert_eq!(keys(&schedule(&mut s, 0.0).admit), vec![0, 1]);
    let p = schedule(&mut s, 0.0); // 2 decodes leave 8 tokens: request 2 (9) does not fit
    assert!(p.admit.is_empty(), "request 3 overtook request 2: {:?}", p.admit);
    assert_eq!(s.waiting.len(), 2);

    // max_running caps the running set even with free slots.
    let mut s = SlotScheduler::new(4, 1, 100).unwrap();
    s.submit(pending(0, 0.0, 1)).unwrap();
    s.submit(pending(1, 0.0, 1)).unwrap();
    assert_eq!(keys(&schedule(&mut s, 0.0).admit), vec![0]);
    assert!(schedule(&mut s, 0.0).admit.is_empty());
    s.finish(0).unwrap();
    assert_eq!(schedule(&mut s, 0.0).admit, vec![Admit { key: 1, slot: 0, tokens: 1 }]);

    // No free slot, no admission.
    let mut s = SlotScheduler::new(1, 4, 100).unwrap();
    s.submit(pending(0, 0.0, 1)).unwrap();
    s.submit(pending(1, 0.0, 1)).unwrap();
    schedule(&mut s, 0.0);
    let p = schedule(&mut s, 0.0);
    assert_eq!((p.decode.len(), p.admit.len()), (1, 0));
}

pub fn ch04_continuous_batching() {
    let run = |steps, busy| SlotSteps { steps, busy, wasted: 0 };
    // Chapter 4's engine test: 2 slots, 6 + 1 + 1 + 4 tokens in 6 steps, both slots always busy.
    assert_eq!(continuous_batching(&[6, 1, 1, 4], 2), Ok(run(6, 12)));
    // Chapter 3 needs 7 steps and wastes 5 slot-steps on {6, 1, 1} with 2 rows; this needs 6.
    assert_eq!(continuous_batching(&[6, 1, 1], 2), Ok(run(6, 8)));
    assert_eq!(continuous_batching(&[2, 5, 3], 4), Ok(run(5, 10)));
    assert_eq!(continuous_batching(&[3, 3, 3], 1), Ok(run(9, 9)));
    assert_eq!(continuous_batching(&[0, 2, 0], 1), Ok(run(2, 2)), "requests that want nothing take no slot");
    assert_eq!(continuous_batching(&[], 3), Ok(SlotSteps::default()));
    assert!(matches!(continuous_batching(&[1], 0), Err(ExerciseError::InvalidSettings(_))));
}
