//! Parallel sampling with copy-on-write, step by step: three samples of one 6-token prompt in
//! blocks of 4 tokens. Prints each sample's block table, the copies the step makes before its
//! forward pass, and what every block in use holds (and how many tables point at it); then the
//! peak blocks against three independent requests.
//!
//! `cargo run --release -p ch05-paged-attention --example parallel_sampling`

use ch00_serving::SeqId;
use ch05_paged_attention::{BlockScheduler, SchedulerConfig};
use std::collections::{BTreeMap, BTreeSet};

const PROMPT: usize = 6;
const NEW_TOKENS: usize = 5;
const SAMPLES: usize = 3;
const BLOCK: usize = 4;

/// The name of a token id: prompt tokens are p0, p1, …; sample i's k-th token is a letter + k.
fn name(t: u32) -> String {
    match t {
        t if (t as usize) < PROMPT => format!("p{t}"),
        t => {
            let (sample, k) = ((t as usize - 100) / 100, (t as usize - 100) % 100);
            format!("{}{k}", (b'a' + sample as u8) as char)
        }
    }
}

/// Runs the prompt's samples (together, or as `SAMPLES` separate requests) and returns the peak
/// blocks used; with `print`, shows every step.
fn run(shared: bool, print: bool) -> Result<usize, Box<dyn std::error::Error>> {
    let mut sched = BlockScheduler::new(SchedulerConfig { watermark_blocks: 0, ..SchedulerConfig::new(16, BLOCK) })?;
    let prompt: Vec<u32> = (0..PROMPT as u32).collect();
    let most = PROMPT + NEW_TOKENS;
    // The engine's sequence table, as far as the scheduler sees it: each sample's tokens.
    let ids: Vec<SeqId> = (0..SAMPLES as u64).map(SeqId).collect();
    let mut tokens: BTreeMap<SeqId, Vec<u32>> = ids.iter().map(|&id| (id, prompt.clone())).collect();
    if shared {
        sched.submit(&ids, prompt.len(), most, 0.0)?;
    } else {
        for id in &ids {
            sched.submit(std::slice::from_ref(id), prompt.len(), most, 0.0)?;
        }
    }
    // What each block holds, as the runner would have written it: copies first, then the step.
    let mut pool = vec![vec![String::from(".."); BLOCK]; 16];
    let mut generated = [0; SAMPLES];
    let mut step = 0;
    while !sched.is_done() {
        let plan = sched.schedule(&tokens, 0.0)?;
        for &(src, dst) in &plan.copies {
            pool[dst] = pool[src].clone();
        }
        for w in &plan.work {
            let (table, toks) = (sched.table(w.seq), &tokens[&w.seq]);
            for pos in w.start..w.start + w.len {
                pool[table[pos / BLOCK]][pos % BLOCK] = name(toks[pos]);
            }
        }
        if print {
            let copies: Vec<String> = plan.copies.iter().map(|(s, d)| format!("{s} -> {d}")).collect();
            println!("step {step}  copies before the forward pass: [{}]", copies.join(", "));
            for w in &plan.work {
                let what = if w.prefill { "prefill" } else { "decode " };
                let fed: Vec<String> = tokens[&w.seq][w.start..w.start + w.len].iter().map(|&t| name(t)).collect();
                println!("   sample {}  {what} {:<18}  table {:?}", w.seq.0, fed.join(" "), sched.table(w.seq));
            }
            let used: BTreeSet<usize> = sched.running().iter().flat_map(|&s| sched.table(s).to_vec()).collect();
            for b in used {
                println!("      block {b:>2}  [{}]  tables {}", pool[b].join(" "), sched.ref_count(b));
            }
        }
        for w in &plan.work {
            let i = w.seq.0 as usize;
            generated[i] += 1;
            if generated[i] == NEW_TOKENS {
                sched.finish(w.seq, &tokens[&w.seq])?;
            } else if let Some(t) = tokens.get_mut(&w.seq) {
                t.push((100 * (i + 1) + generated[i] - 1) as u32); // the runner's part: the new token
            }
        }
        step += 1;
    }
    if print {
        println!("copies {}, peak blocks used {}", sched.stats.cow_copies, sched.stats.peak_blocks_used);
    }
    Ok(sched.stats.peak_blocks_used)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("{SAMPLES} samples of a {PROMPT}-token prompt, {NEW_TOKENS} new tokens each, blocks of {BLOCK} tokens\n");
    let shared = run(true, true)?;
    let independent = run(false, false)?;
    println!("the same {SAMPLES} samples as independent requests: peak blocks used {independent} (copy-on-write: {shared})");
    Ok(())
}
