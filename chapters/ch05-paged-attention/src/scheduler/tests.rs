//! The block scheduler's tests: fixed cases, then a property test that plays the runner on a
//! shadow pool of token ids.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::ops::Range;

/// A sequence id in a test: a plain index or the scheduler's `SeqId`.
trait Ix: Copy {
    fn id(self) -> SeqId;
}
impl Ix for usize {
    fn id(self) -> SeqId {
        SeqId(self as u64)
    }
}
impl Ix for SeqId {
    fn id(self) -> SeqId {
        self
    }
}
/// The index of a sequence id (for the tests' per-sequence vectors).
fn ix(s: SeqId) -> usize {
    s.0 as usize
}

/// The scheduler with the engine's part played by a map of tokens (ids are plain indices here).
struct Sim {
    s: BlockScheduler,
    toks: BTreeMap<SeqId, Vec<u32>>,
    next: usize,
}

impl Sim {
    fn new(cfg: SchedulerConfig) -> Result<Sim> {
        Ok(Sim { s: BlockScheduler::new(cfg)?, toks: BTreeMap::new(), next: 0 })
    }
    /// Queues `n` samples of `prompt` with the next ids.
    fn submit_samples(&mut self, prompt: &[u32], max_tokens: usize, arrival_s: f64, n: usize) -> Result<Range<usize>> {
        let ids: Vec<SeqId> = (self.next..self.next + n).map(Ix::id).collect();
        self.s.submit(&ids, prompt.len(), max_tokens, arrival_s)?;
        ids.iter().for_each(|&id| drop(self.toks.insert(id, prompt.to_vec())));
        self.next += n;
        Ok(self.next - n..self.next)
    }
    fn submit(&mut self, prompt: &[u32], max_tokens: usize, arrival_s: f64) -> Result<usize> {
        Ok(self.submit_samples(prompt, max_tokens, arrival_s, 1)?.start)
    }
    fn schedule(&mut self, now_s: f64) -> Result<Plan> {
        self.s.schedule(&self.toks, now_s)
    }
    /// The runner's part: sequence `id` produced `token`.
    fn append(&mut self, id: impl Ix, token: u32) -> Result<()> {
        self.toks.get_mut(&id.id()).ok_or_else(|| stuck("no such sequence"))?.push(token);
        Ok(())
    }
    fn finish(&mut self, id: impl Ix) -> Result<()> {
        let tokens = self.toks.remove(&id.id()).unwrap_or_default();
        self.s.finish(id.id(), &tokens)
    }
    fn abort(&mut self, id: impl Ix) -> Result<()> {
        self.toks.remove(&id.id());
        self.s.abort(id.id())
    }
    fn table(&self, id: impl Ix) -> &[BlockId] {
        self.s.table(id.id())
    }
    fn tokens(&self, id: impl Ix) -> &[u32] {
        self.toks.tokens(id.id())
    }
}

impl std::ops::Deref for Sim {
    type Target = BlockScheduler;
    fn deref(&self) -> &BlockScheduler {
        &self.s
    }
}

/// A request for [`drive`]: prompt, tokens to generate, arrival step, samples.
type Req = (Vec<u32>, usize, u8, usize);

/// Runs requests to completion with a fake model under which every sequence emits a token of
/// its own (so samples diverge), one step per time unit, and returns the number of steps.
/// After every step it checks the invariants and plays the runner on a shadow pool of token
/// ids: the plan's copies first, then every work item's writes through its block table. Then
/// every running sequence must read back exactly its own tokens through its table — which
/// fails if a sample ever wrote into a block another one still reads (a missing copy).
/// `aborts[r]`: the step at which request `r`'s client goes away (its samples still running
/// or waiting are aborted then), if it does.
fn drive(sched: &mut Sim, reqs: &[Req], aborts: &[Option<u8>]) -> std::result::Result<usize, TestCaseError> {
    let groups: Vec<Range<usize>> =
        reqs.iter().map(|(p, n, t, k)| sched.submit_samples(p, p.len() + n, *t as f64, *k).unwrap()).collect();
    let request_of = |s: SeqId| groups.iter().position(|g| g.contains(&ix(s))).unwrap();
    let cfg = sched.config();
    let bs = cfg.block_size;
    let mut pool = vec![vec![None::<u32>; bs]; cfg.num_blocks];
    let n_seqs = groups.last().map_or(0, |g| g.end);
    let mut generated = vec![0usize; n_seqs];
    let mut finished = vec![0usize; n_seqs];
    // Positions of each sequence whose K/V the shadow pool holds (reset by a preemption).
    let mut written = vec![0usize; n_seqs];
    let mut steps = 0;
    while !sched.is_done() {
        let now = steps as f64;
        for (r, g) in groups.iter().enumerate().filter(|&(r, _)| aborts.get(r).copied().flatten().is_some_and(|a| usize::from(a) == steps)) {
            let live: Vec<usize> = g.clone().filter(|&q| finished[q] == 0).collect();
            for q in live {
                sched.abort(q).unwrap();
                finished[q] += 1;
                prop_assert!(sched.table(q).is_empty(), "an aborted sequence keeps blocks");
            }
            prop_assert!(sched.running().iter().all(|&q| !g.contains(&ix(q))), "request {} still runs", r);
        }
        if sched.is_done() {
            break; // the aborts took the last of the work
        }
        let plan = sched.schedule(now).unwrap();
        if plan.work.is_empty() {
            // Only legitimate when nothing runs and the next request has not arrived yet.
            prop_assert!(sched.running().is_empty() && sched.next_arrival().is_some_and(|t| t > now), "deadlock");
        }
        prop_assert!(sched.running().len() <= cfg.max_running);
        prop_assert!(plan.work.iter().map(|w| w.len).sum::<usize>() <= cfg.max_tokens_per_step);
        for &(src, dst) in &plan.copies {
            prop_assert_eq!(sched.ref_count(dst), 1, "a copy's destination belongs to one sequence");
            pool[dst] = pool[src].clone();
        }
        for &p in &plan.preempted {
            written[ix(p)] = 0;
        }
        for w in &plan.work {
            let (table, tokens) = (sched.table(w.seq), sched.tokens(w.seq));
            // Work goes on where the last left off (a new admission may start past a cached prefix).
            let at = written[ix(w.seq)];
            prop_assert!(w.start == at || (w.prefill && w.start > at), "{:?} after {} written", w, at);
            written[ix(w.seq)] = w.start + w.len;
            if !w.prefill {
                prop_assert_eq!(sched.ref_count(table[w.start / bs]), 1, "a decode writes into a shared block");
            }
            for pos in w.start..w.start + w.len {
                pool[table[pos / bs]][pos % bs] = Some(tokens[pos]);
            }
        }
        check_invariants(sched, &written)?;
        for &s in sched.running() {
            let (table, tokens) = (sched.table(s), sched.tokens(s));
            for (pos, &t) in tokens.iter().enumerate().take(written[ix(s)]) {
                prop_assert_eq!(pool[table[pos / bs]][pos % bs], Some(t), "sequence {} position {}", s, pos);
            }
        }
        for w in &plan.work {
            let r = request_of(w.seq);
            prop_assert!(reqs[r].2 as f64 <= now, "admitted before its arrival");
            if w.start + w.len < sched.tokens(w.seq).len() {
                prop_assert!(cfg.chunked_prefill && w.prefill, "a chunk short of the end without chunked prefill: {:?}", w);
                continue; // a chunk from the middle of a prompt: no token yet
            }
            generated[ix(w.seq)] += 1;
            if generated[ix(w.seq)] == reqs[r].1 {
                sched.finish(w.seq).unwrap();
                finished[ix(w.seq)] += 1;
            } else {
                sched.append(w.seq, 1000 + w.seq.0 as u32).unwrap();
            }
        }
        steps += 1;
        prop_assert!(steps < 100_000);
    }
    prop_assert!(finished.iter().all(|&f| f == 1), "every sample finishes or is aborted exactly once: {:?}", finished);
    prop_assert_eq!(sched.blocks_used(), 0, "blocks leaked after every request finished");
    Ok(steps)
}

/// `written[s]`: the positions of sequence `s` whose K/V has been written (all its tokens but the
/// newest, unless a chunked prefill is under way).
fn check_invariants(sched: &Sim, written: &[usize]) -> std::result::Result<(), TestCaseError> {
    let cfg = sched.config();
    let mut refs: HashMap<BlockId, u32> = HashMap::new();
    for &s in sched.running() {
        let t = sched.table(s);
        prop_assert!(t.len() >= blocks_for(written[ix(s)], cfg.block_size));
        if !cfg.chunked_prefill {
            prop_assert!(t.len() >= blocks_for(sched.tokens(s).len(), cfg.block_size));
        }
        for &b in t {
            *refs.entry(b).or_default() += 1;
        }
    }
    prop_assert_eq!(sched.blocks_used() + sched.blocks_free(), cfg.num_blocks);
    prop_assert_eq!(refs.len(), sched.blocks_used(), "a used block no table holds, or vice versa");
    for (&b, &n) in &refs {
        prop_assert_eq!(sched.ref_count(b), n, "ref count of block {} disagrees with the tables", b);
    }
    prop_assert!(sched.tokens_held() <= sched.blocks_used() * cfg.block_size);
    Ok(())
}

#[test]
fn a_request_larger_than_the_pool_is_refused_and_block_size_zero_is_an_error() {
    let mut s = Sim::new(SchedulerConfig::new(4, 4)).unwrap();
    assert!(s.submit(&[1; 10], 17, 0.0).is_err());
    assert!(s.submit(&[], 4, 0.0).is_err());
    assert!(s.submit(&[1; 10], 16, 0.0).is_ok());
    assert!(Sim::new(SchedulerConfig::new(4, 0)).is_err());
    assert!(Sim::new(SchedulerConfig::new(0, 4)).is_err());
}

#[test]
fn chapter_4_limits_cap_admission_with_blocks_to_spare() {
    let cfg = SchedulerConfig { max_running: 2, max_tokens_per_step: 10, ..SchedulerConfig::new(64, 4) };
    let mut s = Sim::new(cfg).unwrap();
    for _ in 0..3 {
        s.submit(&[1, 2, 3, 4], 8, 0.0).unwrap();
    }
    // Two of 4 tokens fit both limits; the third would be a third running sequence.
    let plan = s.schedule(0.0).unwrap();
    assert_eq!(plan.work.iter().map(|w| w.len).collect::<Vec<_>>(), vec![4, 4]);
    assert_eq!(s.num_waiting(), 1);
    // A request whose whole sequence could not be recomputed in one step is refused.
    assert!(s.submit(&[1; 4], 11, 0.0).is_err());
    let cfg = SchedulerConfig { max_tokens_per_step: 9, ..SchedulerConfig::new(64, 4) };
    let mut s = Sim::new(cfg).unwrap();
    for _ in 0..3 {
        s.submit(&[1, 2, 3, 4], 8, 0.0).unwrap();
    }
    // 4 + 4 tokens fit 9; the third prompt waits for the next step (2 decodes + 4 <= 9).
    assert_eq!(s.schedule(0.0).unwrap().work.len(), 2);
    s.append(0, 5).unwrap();
    s.append(1, 5).unwrap();
    assert_eq!(s.schedule(0.0).unwrap().work.iter().map(|w| w.len).sum::<usize>(), 6);
    assert!(Sim::new(SchedulerConfig { max_running: 0, ..SchedulerConfig::new(4, 4) }).is_err());
}

#[test]
fn samples_share_the_prompt_and_copy_the_partly_filled_block_on_write() {
    let mut s = Sim::new(SchedulerConfig::new(16, 4)).unwrap();
    let samples = s.submit_samples(&[1, 2, 3, 4, 5, 6], 12, 0.0, 3).unwrap();
    // One prompt in 2 blocks for 3 samples: the first computes it, the others its last token.
    let plan = s.schedule(0.0).unwrap();
    let work = |seq: usize, start, len| Work { seq: seq.id(), start, len, prefill: true };
    assert_eq!(plan.work, vec![work(0, 0, 6), work(1, 5, 1), work(2, 5, 1)]);
    assert!(plan.copies.is_empty());
    assert!(samples.clone().all(|i| s.table(i) == [0, 1]));
    assert_eq!((s.blocks_used(), s.ref_count(1), s.tokens_held()), (2, 3, 6));
    // Each sample's first token goes to position 6, in the half-full shared block 1: samples 0
    // and 1 copy it first; sample 2, by then its only owner, writes in place.
    for i in samples.clone() {
        s.append(i, 10 + i as u32).unwrap();
    }
    let plan = s.schedule(0.0).unwrap();
    assert_eq!(plan.copies, vec![(1, 2), (1, 3)]);
    assert_eq!(samples.map(|i| s.table(i).to_vec()).collect::<Vec<_>>(), vec![vec![0, 2], vec![0, 3], vec![0, 1]]);
    // The full block stays shared, once in memory; each sample holds 3 tokens of its own.
    assert_eq!((s.ref_count(0), s.blocks_used(), s.tokens_held()), (3, 4, 4 + 3 * 3));
    assert_eq!(s.stats.cow_copies, 2);

    // A prompt that fills its blocks: nothing to copy, each sample opens a new block.
    let mut s = Sim::new(SchedulerConfig::new(16, 4)).unwrap();
    let samples = s.submit_samples(&[1, 2, 3, 4], 12, 0.0, 2).unwrap();
    s.schedule(0.0).unwrap();
    samples.clone().for_each(|i| s.append(i, 9).unwrap());
    assert!(s.schedule(0.0).unwrap().copies.is_empty());
    assert_eq!((s.table(0), s.table(1)), (&[0, 1][..], &[0, 2][..]));
    // More samples than may run at once is refused, not queued forever.
    let cfg = SchedulerConfig { max_running: 2, ..SchedulerConfig::new(16, 4) };
    assert!(Sim::new(cfg).unwrap().submit_samples(&[1], 4, 0.0, 3).is_err());
}

#[test]
fn a_tiny_pool_forces_preemption_and_everyone_still_finishes() {
    let mut s = Sim::new(SchedulerConfig::new(4, 2)).unwrap();
    let reqs: Vec<_> = (0..3).map(|i| (vec![1, 2, i], 4, 0, 1)).collect();
    drive(&mut s, &reqs, &[]).unwrap();
    assert!(s.stats.preemptions > 0);
    assert_eq!(s.stats.peak_blocks_used, 4);
}

#[test]
fn blocks_are_taken_every_block_size_tokens() {
    let mut s = Sim::new(SchedulerConfig::new(8, 4)).unwrap();
    let a = s.submit(&[1, 2, 3], 12, 0.0).unwrap();
    let plan = s.schedule(0.0).unwrap();
    assert_eq!(plan.work, vec![Work { seq: a.id(), start: 0, len: 3, prefill: true }]);
    assert_eq!(s.table(a).len(), 1);
    s.append(a, 9).unwrap(); // token 4 fits block 0
    s.schedule(0.0).unwrap();
    assert_eq!(s.table(a).len(), 1);
    s.append(a, 9).unwrap(); // token 5 opens block 1
    let plan = s.schedule(0.0).unwrap();
    assert_eq!(plan.work, vec![Work { seq: a.id(), start: 4, len: 1, prefill: false }]);
    assert_eq!((s.table(a).len(), s.tokens_held()), (2, 5));
}

#[test]
fn a_shared_system_prompt_is_stored_once() {
    let cfg = SchedulerConfig { prefix_sharing: true, ..SchedulerConfig::new(16, 4) };
    let mut s = Sim::new(cfg).unwrap();
    let system = [5u32, 6, 7, 8, 9, 10, 11, 12];
    let a = s.submit(&[&system[..], &[1, 2]].concat(), 16, 0.0).unwrap();
    s.schedule(0.0).unwrap(); // a's prefill writes its blocks
    s.append(a, 3).unwrap();
    let b = s.submit(&[&system[..], &[4]].concat(), 16, 0.0).unwrap();
    let plan = s.schedule(0.0).unwrap();
    assert_eq!(plan.work[1], Work { seq: b.id(), start: 8, len: 1, prefill: true });
    assert_eq!(&s.table(b)[..2], &s.table(a)[..2]);
    assert_eq!(s.ref_count(s.table(a)[0]), 2);
    assert_eq!(s.blocks_used(), 4); // a: 2 shared + 1; b: 1 of its own
    assert_eq!(s.tokens_held(), 11 + 9 - 8);
    assert_eq!((s.stats.prefix_hit_tokens, s.stats.prefix_query_tokens), (8, 19));
}

fn workload() -> impl Strategy<Value = Vec<Req>> {
    // Prompts share prefixes often (tokens from a tiny alphabet) so prefix sharing is exercised;
    // arrivals are spread over the first 20 steps, in any order; up to 3 samples per prompt.
    let prompt = proptest::collection::vec(0u32..2, 1..12);
    proptest::collection::vec((prompt, 1usize..12, 0u8..20, 1usize..4), 1..12)
}

proptest! {
    /// Any workload, any arrival order, any number of samples per prompt, any pool that fits
    /// the largest request, with or without prefix sharing, with or without chunked prefill (a
    /// chunk short of the end never samples: a first token comes after the last chunk), under
    /// any per-step limits: no
    /// deadlock, every sample finishes exactly once, no step breaks a limit, ref counts match
    /// the tables after every step, copy-on-write keeps every sequence's tokens its own,
    /// clients that go away (aborts, running or waiting) give every block back, and nothing
    /// leaks at the end.
    #[test]
    fn scheduler_invariants_hold(
        reqs in workload(),
        bs in 1usize..6,
        extra in 0usize..8,
        share: bool,
        wm in 0usize..3,
        max_running in 3usize..9,
        extra_tokens in 0usize..16,
        aborts in proptest::collection::vec(proptest::option::weighted(0.3, 0u8..30), 12),
        chunked: bool,
        max_partial_prefills in 1usize..3,
        max_chunk_tokens in 1usize..8,
    ) {
        let need = |(p, n, _, k): &Req| blocks_for(p.len() + n, bs).max(blocks_for(p.len(), bs) + k - 1);
        let largest = reqs.iter().map(need).max().unwrap();
        let longest = reqs.iter().map(|(p, n, _, k)| (p.len() + n).max(p.len() + k - 1)).max().unwrap();
        // Chunked prefill needs a step to hold only a sample group's prompt (it is admitted whole):
        // budgets far below the longest sequence, so prompts and recomputes span many steps.
        let groups = reqs.iter().filter(|r| r.3 > 1).map(|(p, _, _, k)| p.len() + k - 1).max().unwrap_or(1);
        let cfg = SchedulerConfig {
            watermark_blocks: wm,
            prefix_sharing: share,
            max_running,
            max_tokens_per_step: if chunked { groups + extra_tokens % 4 } else { longest + extra_tokens },
            chunked_prefill: chunked,
            max_partial_prefills,
            max_chunk_tokens,
            ..SchedulerConfig::new(largest + extra, bs)
        };
        let mut s = Sim::new(cfg).unwrap();
        drive(&mut s, &reqs, &aborts)?;
    }
}
