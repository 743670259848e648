//! The prefix cache across requests, through the block scheduler's public API: a finished (or
//! preempted) sequence's full blocks stay findable until the pool needs them.

use ch00_serving::SeqId;
use ch05_paged_attention::{BlockScheduler, PrefixCacheStats, SchedulerConfig, Work};
use std::collections::BTreeMap;

/// Queues a lone request as sequence `i`, with a prompt of `prompt` tokens.
fn submit(s: &mut BlockScheduler, i: u64, prompt: &[u32], max_tokens: usize) -> SeqId {
    s.submit(&[SeqId(i)], prompt.len(), max_tokens, 0.0).unwrap();
    SeqId(i)
}

/// Plans one step in which sequence `id` has `tokens`.
fn schedule_one(s: &mut BlockScheduler, id: SeqId, tokens: &[u32]) -> ch05_paged_attention::Plan {
    s.schedule(&BTreeMap::from([(id, tokens.to_vec())]), 0.0).unwrap()
}

/// Runs everything queued to the end; sequence `i` (`prompts[i]`) emits `1000 + i` every step and
/// finishes after `gen[i]` tokens. Returns each sequence's tokens (prompt and output) and every
/// plan's work.
fn run(sched: &mut BlockScheduler, gen: &[usize], prompts: &[Vec<u32>]) -> (Vec<Vec<u32>>, Vec<Work>) {
    let mut table: BTreeMap<SeqId, Vec<u32>> =
        prompts.iter().enumerate().map(|(i, p)| (SeqId(i as u64), p.clone())).collect();
    let mut done = vec![0; gen.len()];
    let mut work = Vec::new();
    while !sched.is_done() {
        let plan = sched.schedule(&table, 0.0).unwrap();
        for w in &plan.work {
            let i = w.seq.0 as usize;
            table.get_mut(&w.seq).unwrap().push(1000 + i as u32);
            done[i] += 1;
            if done[i] == gen[i] {
                sched.finish(w.seq, &table[&w.seq]).unwrap();
            }
        }
        work.extend(plan.work);
    }
    (table.into_values().collect(), work)
}

fn caching(num_blocks: usize, block_size: usize) -> SchedulerConfig {
    SchedulerConfig { prefix_sharing: true, watermark_blocks: 0, ..SchedulerConfig::new(num_blocks, block_size) }
}

#[test]
fn turn_two_of_a_chat_finds_every_full_block_of_turn_one_after_it_finished() {
    let mut s = BlockScheduler::new(caching(16, 4)).unwrap();
    // Turn 1: 10 prompt tokens, 7 generated; the K/V of 16 tokens is written (the last sampled
    // token is never fed back), 4 full blocks, the last of them filled by the final step.
    let prompt1: Vec<u32> = (0..10).collect();
    submit(&mut s, 0, &prompt1, 17);
    let (tokens, _) = run(&mut s, &[7], std::slice::from_ref(&prompt1));
    assert_eq!(s.blocks_used(), 0);
    // Turn 2 = the whole history + a new message, after turn 1 is gone.
    let prompt2: Vec<u32> = tokens[0].iter().copied().chain([7, 8, 9]).collect();
    let b = submit(&mut s, 1, &prompt2, prompt2.len() + 2);
    let plan = schedule_one(&mut s, b, &prompt2);
    assert_eq!(plan.work, vec![Work { seq: b, start: 16, len: 4, prefill: true }]);
    assert_eq!(&s.table(b)[..4], &[0, 1, 2, 3], "the revived blocks are turn 1's");
    assert!(s.table(b)[..4].iter().all(|&x| s.ref_count(x) == 1));
    assert_eq!(s.prefix_stats(), PrefixCacheStats { hits: 16, misses: 10 + 4, evictions: 0 });
    assert_eq!((s.stats.prefix_hit_tokens, s.stats.prefix_query_tokens), (16, 30));
}

#[test]
fn a_request_that_needs_the_memory_evicts_the_cache_and_the_next_turn_misses() {
    let mut s = BlockScheduler::new(caching(4, 4)).unwrap();
    submit(&mut s, 0, &(0..8).collect::<Vec<_>>(), 16);
    let (tokens, _) = run(&mut s, &[5], &[(0..8).collect()]); // 12 tokens written: 3 named blocks
    submit(&mut s, 1, &[50; 16], 16); // the whole pool
    run(&mut s, &[0, 1], &[tokens[0].clone(), vec![50; 16]]);
    let st = s.prefix_stats();
    assert_eq!(st.evictions, 3, "all three cached blocks were taken back");
    let c = submit(&mut s, 2, &tokens[0], 16);
    let plan = schedule_one(&mut s, c, &tokens[0]);
    assert_eq!(plan.work[0], Work { seq: c, start: 0, len: 13, prefill: true });
}

#[test]
fn a_preempted_sequence_parks_its_blocks_and_finds_its_head_again() {
    let mut s = BlockScheduler::new(caching(6, 2)).unwrap();
    let prompts: Vec<Vec<u32>> = vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]];
    submit(&mut s, 0, &prompts[0], 10);
    submit(&mut s, 1, &prompts[1], 9);
    let (_, work) = run(&mut s, &[6, 5], &prompts);
    assert!(s.stats.preemptions > 0);
    // B was preempted with 3 full blocks, which were parked; A's next two blocks evicted two of
    // them, B's tail first (a table is let go tail first), so B's head is still there when B
    // comes back and only the rest of its 7 tokens is recomputed. Head first, B would find nothing.
    let readmit = work.iter().filter(|w| w.seq == SeqId(1) && w.prefill).nth(1).unwrap();
    assert_eq!((readmit.start, readmit.len), (2, 5), "{work:?}");
    // Two evictions while A grew, two more (A's parked tail) for B's readmission.
    assert_eq!(s.prefix_stats().evictions, 4);
    assert_eq!(s.prefix_stats().hits, 2);
}

#[test]
fn with_prefix_caching_off_nothing_is_looked_up_or_kept() {
    let cfg = SchedulerConfig { prefix_sharing: false, ..caching(16, 4) };
    let mut s = BlockScheduler::new(cfg).unwrap();
    submit(&mut s, 0, &(0..10).collect::<Vec<_>>(), 20);
    let (tokens, _) = run(&mut s, &[7], &[(0..10).collect()]);
    let b = submit(&mut s, 1, &tokens[0], 20);
    assert_eq!(schedule_one(&mut s, b, &tokens[0]).work[0].start, 0);
    assert_eq!((s.prefix_stats(), s.blocks_free()), (PrefixCacheStats::default(), 16 - s.table(b).len()));
}
