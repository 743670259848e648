//! Prints the block tables of a small run, step by step: which physical blocks each request
//! holds, how many are free, and who gets preempted when the pool runs dry.
//!
//! `cargo run --release -p ch05-paged-attention --example block_tables`

use ch00_serving::SeqId;
use ch05_paged_attention::{BlockScheduler, SchedulerConfig};
use std::collections::BTreeMap;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A pool of 9 blocks of 4 tokens; four requests (prompt length, tokens to generate).
    let requests = [(6usize, 9usize), (3, 4), (9, 7), (5, 10)];
    let mut sched = BlockScheduler::new(SchedulerConfig { watermark_blocks: 0, ..SchedulerConfig::new(9, 4) })?;
    // The engine's sequence table, as far as the scheduler sees it: each request's tokens.
    let mut tokens: BTreeMap<SeqId, Vec<u32>> = BTreeMap::new();
    for (i, &(prompt, out)) in requests.iter().enumerate() {
        let id = SeqId(i as u64);
        tokens.insert(id, (0..prompt as u32).map(|t| 100 * i as u32 + t).collect());
        sched.submit(&[id], prompt, prompt + out, 0.0)?;
    }
    let mut generated = vec![0; requests.len()];
    let mut step = 0;
    while !sched.is_done() {
        let plan = sched.schedule(&tokens, 0.0)?;
        let preempted: Vec<String> = plan.preempted.iter().map(|s| format!("R{}", s.0)).collect();
        println!("step {step:>2}  free {:>2}/9  preempted [{}]", sched.blocks_free(), preempted.join(" "));
        for w in &plan.work {
            let what = if w.prefill { format!("prefill {:>2} tokens", w.len) } else { "decode 1 token   ".to_string() };
            let len = tokens[&w.seq].len();
            println!("   R{}  {what}  len {len:>2}  table {:?}", w.seq.0, sched.table(w.seq));
        }
        for w in &plan.work {
            let i = w.seq.0 as usize;
            generated[i] += 1;
            if generated[i] == requests[i].1 {
                sched.finish(w.seq, &tokens[&w.seq])?;
            } else if let Some(t) = tokens.get_mut(&w.seq) {
                t.push(0); // the runner's part: the new token
            }
        }
        step += 1;
    }
    println!("preemptions {}, peak blocks used {}", sched.stats.preemptions, sched.stats.peak_blocks_used);
    Ok(())
}
