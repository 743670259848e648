//! Prints the block tables of a small run, step by step: which physical blocks each request
//! holds, how many are free, and who gets preempted when the pool runs dry.
//!
//! `cargo run --release -p ch05-paged-attention --example block_tables`

use ch05_paged_attention::{BlockScheduler, SchedulerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A pool of 9 blocks of 4 tokens; four requests (prompt length, tokens to generate).
    let requests = [(6usize, 9usize), (3, 4), (9, 7), (5, 10)];
    let mut sched = BlockScheduler::new(SchedulerConfig { watermark_blocks: 0, ..SchedulerConfig::new(9, 4) })?;
    for (i, &(prompt, out)) in requests.iter().enumerate() {
        let tokens: Vec<u32> = (0..prompt as u32).map(|t| 100 * i as u32 + t).collect();
        sched.submit(&tokens, prompt + out, 0.0)?;
    }
    let mut generated = vec![0; requests.len()];
    let mut step = 0;
    while !sched.is_done() {
        let plan = sched.schedule(0.0)?;
        let preempted: Vec<String> = plan.preempted.iter().map(|s| format!("R{s}")).collect();
        println!("step {step:>2}  free {:>2}/9  preempted [{}]", sched.blocks_free(), preempted.join(" "));
        for w in &plan.work {
            let what = if w.prefill { format!("prefill {:>2} tokens", w.len) } else { "decode 1 token   ".to_string() };
            let len = sched.tokens(w.seq).len();
            println!("   R{}  {what}  len {len:>2}  table {:?}", w.seq, sched.table(w.seq));
        }
        for w in &plan.work {
            generated[w.seq] += 1;
            if generated[w.seq] == requests[w.seq].1 {
                sched.finish(w.seq)?;
            } else {
                sched.append(w.seq, 0)?;
            }
        }
        step += 1;
    }
    println!("preemptions {}, peak blocks used {}", sched.stats.preemptions, sched.stats.peak_blocks_used);
    Ok(())
}
