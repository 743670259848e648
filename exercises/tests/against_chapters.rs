//! The reference answers against the chapters: each exercise that has a counterpart in a chapter
//! crate is run side by side with it on the same random inputs (property tests), so a chapter
//! change that an exercise no longer mirrors fails CI. Only with `--features solutions`, which
//! also brings in the chapter crates (readers never build them).
//!
//! Counterparts:
//! - ch01 `causal_context`: `ch01_naive::NoCache` (its context, seen through the attention output);
//!   `naive_token_passes`: `NaiveEngine`'s `token_rows` on the tiny random model.
//! - ch02 `kv_bytes_per_token`: `ch00_model::kv_bytes_per_token`; `cached_token_passes`:
//!   `KvCacheEngine`'s `token_rows`; `cache_write`: `KvCache::write`; `attend_one`:
//!   `ch00_model::attend_one`.
//! - ch03 `static_batching`: `StaticBatchEngine`'s steps and slot-steps. `static_utilisation` has no
//!   chapter counterpart (1/H_B is only computed in bookgen's cheat sheet, privately).
//! - ch04 `slots_for_budget`: `ch04::slots_for_budget`; `schedule`: `Scheduler`, through
//!   `chapter_slot_scheduler` (the adapter); `continuous_batching`: `ContinuousBatchEngine`'s steps and slot-steps.
//! - ch05 `allocate`/`share`/`release`: `BlockAllocator`; `slot_mapping`: `block_table::locate`;
//!   `schedule_blocks` and `prepare_write`: `BlockScheduler`, through `chapter_block_scheduler` (the adapter).
//! - ch08 `shard_range`: `ch08_tensor_parallel::shard::part` (the split of heads, MLP columns and
//!   vocabulary); `row_parallel_linear`: the unsharded product (`ch00_model::ops::linear`).
#![cfg(feature = "solutions")]

use ch00_model::{AttentionBackend, DType, LlamaConfig, Model, StepMeta, StepQkv};
use ch00_serving::{Engine, Phase, Request, RunOptions, RunOutput};
use exercises::types::{self as ex, BlockId};
use exercises::{ch01, ch02, ch03, ch04, ch05, ch08};
use proptest::prelude::*;
use std::sync::OnceLock;

fn tiny() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| Model::random(LlamaConfig::named("tiny").unwrap(), 0).unwrap())
}

/// A model shape for memory math (weights never built): `group` query heads per KV head.
fn config(layers: usize, kv_heads: usize, group: usize, head_dim: usize) -> LlamaConfig {
    let heads = kv_heads * group;
    LlamaConfig {
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        hidden_size: heads * head_dim,
        ..LlamaConfig::named("tiny").unwrap()
    }
}

/// `n` floats in [-1, 1) from `seed` (splitmix64): tensors whose size depends on other inputs.
fn floats(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Greedy requests at time 0 that generate exactly `output_lens[i]` tokens (EOS ignored).
fn requests(prompt_lens: &[usize], output_lens: &[usize]) -> Vec<Request> {
    (0..output_lens.len())
        .map(|i| {
            let prompt = (0..prompt_lens[i % prompt_lens.len()]).map(|t| (7 * i + t) as u32 % 500 + 3).collect();
            Request { ignore_eos: true, ..Request::greedy(i as u64, prompt, output_lens[i]) }
        })
        .collect()
}

/// A batching run's figures in the exercises' terms, read from the trace: steps, slot-steps that
/// fed a token, padding slot-steps (also checked against the engine's own counter).
fn slot_steps(out: &RunOutput) -> ex::SlotSteps {
    let entries = || out.trace.iter().flat_map(|t| &t.entries);
    let wasted = entries().filter(|e| e.phase == Phase::Padding).count();
    assert_eq!(wasted as u64, out.stats.wasted_slot_steps, "the trace and the stats disagree");
    assert_eq!(out.trace.len(), out.stats.steps);
    ex::SlotSteps { steps: out.stats.steps, busy: entries().count() - wasted, wasted }
}

fn traced() -> RunOptions {
    RunOptions { trace: true, ..Default::default() }
}

// --- Chapter 4's scheduler, behind one adapter -----------------------------------------------

/// What the driver asks a slot scheduler to do.
#[derive(Debug, Clone, Copy)]
enum SlotCall {
    Submit(ex::Pending),
    Schedule(f64),
    Finish(usize),
}

/// What it answered, in the exercises' types.
#[derive(Debug, Clone, PartialEq)]
enum SlotReply {
    Submitted(bool),
    Plan(ex::StepPlan),
    Finished(Option<usize>),
}

/// **adapter: the chapter's API.** The only code that names chapter 4's `Scheduler`: its calls,
/// answered in the exercises' types (the exercise's `key` is the chapter's `SeqId`).
fn chapter_slot_scheduler(num_slots: usize, max_running: usize, max_tokens: usize) -> impl FnMut(SlotCall) -> SlotReply {
    use ch00_serving::SeqId;
    use ch04_continuous_batching::{Pending, Scheduler, SchedulerConfig};
    let config = SchedulerConfig { num_slots, max_running, max_tokens_per_step: max_tokens };
    let mut s = Scheduler::new(config).expect("the test's limits are valid");
    move |call| match call {
        SlotCall::Submit(p) => SlotReply::Submitted(
            s.submit(Pending { seq: SeqId(p.key as u64), arrival_s: p.arrival_s, prefill_tokens: p.prefill_tokens })
                .is_ok(),
        ),
        SlotCall::Schedule(now_s) => {
            let plan = s.schedule(now_s);
            SlotReply::Plan(ex::StepPlan {
                decode: plan.decode.iter().map(|d| ex::Decode { key: d.seq.0 as usize, slot: d.slot }).collect(),
                admit: plan.admit.iter().map(|a| ex::Admit { key: a.seq.0 as usize, slot: a.slot, tokens: a.tokens }).collect(),
            })
        }
        SlotCall::Finish(key) => SlotReply::Finished(s.finish(SeqId(key as u64)).ok()),
    }
}

/// The same calls on the exercise's `SlotScheduler` and the reference `schedule`.
fn exercise_slot_scheduler(num_slots: usize, max_running: usize, max_tokens: usize) -> impl FnMut(SlotCall) -> SlotReply {
    let mut s = ex::SlotScheduler::new(num_slots, max_running, max_tokens).expect("the test's limits are valid");
    move |call| match call {
        SlotCall::Submit(p) => SlotReply::Submitted(s.submit(p).is_ok()),
        SlotCall::Schedule(now_s) => SlotReply::Plan(ch04::schedule(&mut s, now_s)),
        SlotCall::Finish(key) => SlotReply::Finished(s.finish(key).ok()),
    }
}

/// Drives a slot scheduler as chapter 4's engine does: submit every request (arrival, prompt,
/// output tokens), then one step per time unit; every planned request produces a token, and one
/// that has all of its tokens finishes. Returns every call's reply, in order.
fn drive_slots(mut sched: impl FnMut(SlotCall) -> SlotReply, reqs: &[(u8, usize, usize)]) -> Vec<SlotReply> {
    let mut log = Vec::new();
    let mut left = vec![0; reqs.len()];
    for (key, &(arrive, prompt, out)) in reqs.iter().enumerate() {
        let reply = sched(SlotCall::Submit(ex::Pending { key, arrival_s: arrive as f64 / 2.0, prefill_tokens: prompt }));
        if reply == SlotReply::Submitted(true) {
            left[key] = out;
        }
        log.push(reply);
    }
    let mut now = 0.0;
    while left.iter().any(|&n| n > 0) && now < 1000.0 {
        let reply = sched(SlotCall::Schedule(now));
        let SlotReply::Plan(plan) = &reply else { unreachable!() };
        let keys: Vec<usize> = plan.decode.iter().map(|d| d.key).chain(plan.admit.iter().map(|a| a.key)).collect();
        log.push(reply);
        for k in keys {
            left[k] -= 1;
            if left[k] == 0 {
                log.push(sched(SlotCall::Finish(k)));
            }
        }
        now += 1.0;
    }
    log
}

// --- Chapter 5's block scheduler, behind one adapter -----------------------------------------

/// What the driver asks a block scheduler to do. Sequence ids are the order of submission (a
/// request of `samples` samples takes that many consecutive ids).
#[derive(Debug, Clone, Copy)]
enum BlockCall {
    /// A prompt of `tokens` tokens that grows to at most `max_tokens`.
    Submit { tokens: usize, max_tokens: usize, samples: usize },
    Schedule,
    /// The running sequence produced a token (its K/V is written next step).
    Append(usize),
    Finish(usize),
    /// The running sequences and their block tables, reference counts and free blocks.
    Observe,
}

#[derive(Debug, Clone, PartialEq)]
enum BlockReply {
    Submitted(Vec<usize>),
    Step { admitted: Vec<usize>, preempted: Vec<usize>, copies: Vec<(BlockId, BlockId)> },
    Done(bool),
    State(BlockState),
}

#[derive(Debug, Clone, Default, PartialEq)]
struct BlockState {
    /// Running sequences in admission order, with their tables.
    running: Vec<(usize, Vec<BlockId>)>,
    ref_count: Vec<u32>,
    free: usize,
}

impl BlockState {
    fn table(&self, id: usize) -> Option<&[BlockId]> {
        self.running.iter().find(|(s, _)| *s == id).map(|(_, t)| &t[..])
    }
}

/// **adapter: the chapter's API.** The only code that names chapter 5's `BlockScheduler`: its
/// calls, answered in the exercises' types, without prefix sharing and with no per-step limits
/// (the exercise has neither). The exercise's sequence index is the chapter's `SeqId`; the
/// engine's sequence table (tokens by id, which the chapter's scheduler borrows) is kept here.
fn chapter_block_scheduler(num_blocks: usize, block_size: usize, watermark: usize) -> impl FnMut(BlockCall) -> BlockReply {
    use ch00_serving::SeqId;
    use ch05_paged_attention::{BlockScheduler, SchedulerConfig};
    use std::collections::BTreeMap;
    let config = SchedulerConfig { watermark_blocks: watermark, ..SchedulerConfig::new(num_blocks, block_size) };
    let mut s = BlockScheduler::new(config).expect("the test's pool is valid");
    let mut table: BTreeMap<SeqId, Vec<u32>> = BTreeMap::new();
    let ix = |id: SeqId| id.0 as usize;
    move |call| match call {
        BlockCall::Submit { tokens, max_tokens, samples } => {
            let first = table.len() as u64;
            let ids: Vec<SeqId> = (first..first + samples as u64).map(SeqId).collect();
            match s.submit(&ids, tokens, max_tokens, 0.0) {
                Ok(()) => {
                    ids.iter().for_each(|&id| drop(table.insert(id, vec![1; tokens])));
                    BlockReply::Submitted(ids.into_iter().map(ix).collect())
                }
                Err(_) => BlockReply::Submitted(vec![]),
            }
        }
        BlockCall::Schedule => {
            let plan = s.schedule(&table, 0.0).expect("the chapter's scheduler never gets stuck on these workloads");
            // Who was admitted: the work items marked `prefill` (every admitted sequence has one,
            // in running order, which is admission order).
            let admitted = plan.work.iter().filter(|w| w.prefill).map(|w| ix(w.seq)).collect();
            BlockReply::Step { admitted, preempted: plan.preempted.into_iter().map(ix).collect(), copies: plan.copies }
        }
        BlockCall::Append(id) => BlockReply::Done(table.get_mut(&SeqId(id as u64)).map(|t| t.push(7)).is_some()),
        BlockCall::Finish(id) => {
            let id = SeqId(id as u64);
            let done = table.get(&id).cloned().unwrap_or_default();
            BlockReply::Done(s.finish(id, &done).is_ok())
        }
        BlockCall::Observe => BlockReply::State(BlockState {
            running: s.running().iter().map(|&id| (ix(id), s.table(id).to_vec())).collect(),
            ref_count: (0..num_blocks).map(|b| s.ref_count(b)).collect(),
            free: s.blocks_free(),
        }),
    }
}

/// The same calls on the exercise's `BlockQueue` and the reference `schedule_blocks` (one sample
/// per request: the exercise has no sharing). A finished sequence's blocks go back tail first, as
/// the chapter's `finish` gives them back.
fn exercise_block_queue(num_blocks: usize, block_size: usize, watermark: usize) -> impl FnMut(BlockCall) -> BlockReply {
    let mut q = ex::BlockQueue::new(num_blocks, block_size, watermark);
    let mut next_id = 0;
    move |call| match call {
        BlockCall::Submit { tokens, samples, .. } => {
            assert_eq!(samples, 1, "the exercise schedules one sample per request");
            q.waiting.push_back(ex::SeqBlocks { id: next_id, tokens, table: vec![] });
            next_id += 1;
            BlockReply::Submitted(vec![next_id - 1])
        }
        BlockCall::Schedule => {
            let step = ch05::schedule_blocks(&mut q).expect("block_size is at least 1");
            BlockReply::Step { admitted: step.admitted, preempted: step.preempted, copies: vec![] }
        }
        BlockCall::Append(id) => BlockReply::Done(q.running.iter_mut().find(|s| s.id == id).map(|s| s.tokens += 1).is_some()),
        BlockCall::Finish(id) => {
            let Some(i) = q.running.iter().position(|s| s.id == id) else { return BlockReply::Done(false) };
            let done = q.running.remove(i);
            q.free.extend(done.table.iter().rev());
            BlockReply::Done(true)
        }
        BlockCall::Observe => {
            let mut ref_count = vec![0; num_blocks];
            q.running.iter().flat_map(|s| &s.table).for_each(|&b| ref_count[b] += 1);
            let running = q.running.iter().map(|s| (s.id, s.table.clone())).collect();
            BlockReply::State(BlockState { running, ref_count, free: q.free.len() })
        }
    }
}

/// One scheduling step as the driver saw it: the state before, the step, the state after.
type BlockTurn = (BlockState, BlockReply, BlockState);

/// Drives a block scheduler as chapter 5's engine does: submit every request (prompt tokens,
/// tokens to generate, samples; sample `j` generates `j` more than the first), then step until
/// all have finished: every running sequence produces a token and finishes when it has all of
/// them. A preempted sequence keeps what it generated. Returns the submissions and the turns.
fn drive_blocks(
    mut sched: impl FnMut(BlockCall) -> BlockReply,
    reqs: &[(usize, usize, usize)],
) -> (Vec<BlockReply>, Vec<BlockTurn>) {
    let state = |sched: &mut dyn FnMut(BlockCall) -> BlockReply| match sched(BlockCall::Observe) {
        BlockReply::State(s) => s,
        other => panic!("Observe answered {other:?}"),
    };
    let mut want = Vec::new(); // tokens to generate, by sequence id
    let mut submitted = Vec::new();
    for &(prompt, gen, samples) in reqs {
        submitted.push(sched(BlockCall::Submit { tokens: prompt, max_tokens: prompt + gen + samples - 1, samples }));
        want.extend((0..samples).map(|j| gen + j));
    }
    let (mut generated, mut finished) = (vec![0; want.len()], 0);
    let mut turns = Vec::new();
    while finished < want.len() && turns.len() < 2000 {
        let before = state(&mut sched);
        let step = sched(BlockCall::Schedule);
        let after = state(&mut sched);
        for &(id, _) in &after.running {
            generated[id] += 1;
            if generated[id] == want[id] {
                assert_eq!(sched(BlockCall::Finish(id)), BlockReply::Done(true));
                finished += 1;
            } else {
                assert_eq!(sched(BlockCall::Append(id)), BlockReply::Done(true));
            }
        }
        turns.push((before, step, after));
    }
    assert_eq!(finished, want.len(), "the workload did not finish");
    (submitted, turns)
}

/// Requests for the block schedulers: (prompt tokens, tokens to generate, samples).
fn block_requests(samples: usize) -> impl Strategy<Value = Vec<(usize, usize, usize)>> {
    prop::collection::vec((1usize..12, 1usize..10, 1..=samples), 1..8)
}

/// Blocks the largest request needs with the whole pool to itself (what the chapter requires).
fn largest_need(reqs: &[(usize, usize, usize)], bs: usize) -> usize {
    reqs.iter().map(|&(p, g, n)| (p + g + n - 1).div_ceil(bs).max(p.div_ceil(bs) + n - 1)).max().unwrap_or(1)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    // --- Chapter 1 ---

    /// The context `causal_context` names is the one `NoCache` attends over: attention over it
    /// with the chapter's own `attend_one` gives `NoCache`'s output bit for bit (a context that
    /// differs, even only in order, changes the rounding of the sums).
    #[test]
    fn ch01_causal_context_is_nocaches_context(
        tokens in prop::collection::vec((0usize..3, any::<u16>()), 1..14),
        offsets in prop::collection::vec(0usize..4, 3),
        kv_heads in 1usize..3, group in 1usize..3, head_dim in 1usize..5, seed: u64,
    ) {
        // Token j of sequence seq[j]; positions of each sequence are a shuffle of off..off + count.
        let seq: Vec<usize> = tokens.iter().map(|t| t.0).collect();
        let pos: Vec<usize> = (0..tokens.len())
            .map(|j| {
                let before = |i: &usize| seq[*i] == seq[j] && (tokens[*i].1, *i) < (tokens[j].1, j);
                offsets[seq[j]] + (0..tokens.len()).filter(before).count()
            })
            .collect();
        let shape = ch00_model::AttnShape { heads: kv_heads * group, kv_heads, head_dim };
        let n = tokens.len();
        let (q, k, v) = (floats(seed, n * shape.q_dim()), floats(seed ^ 1, n * shape.kv_dim()), floats(seed ^ 2, n * shape.kv_dim()));
        let qkv = StepQkv { shape, q: &q, k: &k, v: &v };
        let mut chapter = vec![0.0f32; q.len()];
        ch01_naive::NoCache.attend(0, &StepMeta { seq: seq.clone(), pos: pos.clone() }, &qkv, &mut chapter).unwrap();
        for (i, row) in chapter.chunks_exact(shape.q_dim()).enumerate() {
            let ctx = ch01::causal_context(&seq, &pos, i).unwrap();
            let mut ours = vec![0.0f32; shape.q_dim()];
            ch00_model::attend_one(shape, qkv.q_row(i), ctx.len(), |t| qkv.k_row(ctx[t]), |t| qkv.v_row(ctx[t]), &mut ours);
            prop_assert_eq!(&ours[..], row, "token {} (seq {:?}, pos {:?}): context {:?}", i, seq, pos, ctx);
        }
    }

    /// The token rows chapter 1's engine feeds for one request.
    #[test]
    fn ch01_naive_token_passes_is_naive_engines_token_rows(prompt in 1usize..12, new_tokens in 0usize..10) {
        let out = ch01_naive::NaiveEngine.run(tiny(), &requests(&[prompt], &[new_tokens]), &RunOptions::default()).unwrap();
        prop_assert_eq!(out.outputs[0].tokens.len(), new_tokens);
        prop_assert_eq!(ch01::naive_token_passes(prompt as u64, new_tokens as u64), out.stats.token_rows);
    }

    // --- Chapter 2 ---

    #[test]
    fn ch02_kv_bytes_per_token_is_ch00s(
        layers in 1usize..128, kv_heads in 1usize..64, group in 1usize..8, head_dim in 1usize..512,
        dtype in prop::sample::select(vec![DType::F32, DType::F16, DType::BF16]),
    ) {
        let c = config(layers, kv_heads, group, head_dim);
        let shape = ex::Shape {
            layers: layers as u64,
            hidden: c.hidden_size as u64,
            heads: c.num_attention_heads as u64,
            kv_heads: kv_heads as u64,
            head_dim: head_dim as u64,
        };
        prop_assert_eq!(ch02::kv_bytes_per_token(&shape, dtype.bytes()), ch00_model::kv_bytes_per_token(&c, dtype));
    }

    /// The token rows chapter 2's engine feeds for one request.
    #[test]
    fn ch02_cached_token_passes_is_kv_cache_engines_token_rows(prompt in 1usize..12, new_tokens in 0usize..10) {
        let mut engine = ch02_kv_cache::KvCacheEngine { max_len: Some(32) };
        let out = engine.run(tiny(), &requests(&[prompt], &[new_tokens]), &RunOptions::default()).unwrap();
        prop_assert_eq!(out.outputs[0].tokens.len(), new_tokens);
        prop_assert_eq!(ch02::cached_token_passes(prompt as u64, new_tokens as u64), out.stats.token_rows);
    }

    /// Any sequence of writes leaves the exercise's cache and `KvCache` holding the same rows and
    /// the same length. (Out-of-range writes are not compared: `KvCache::write` panics on them,
    /// its backend checks the position first.)
    #[test]
    fn ch02_cache_write_is_kv_cache_write(
        layers in 1usize..4, max_len in 1usize..9, kv_heads in 1usize..3, head_dim in 1usize..4,
        writes in prop::collection::vec((0usize..4, 0usize..9, any::<u64>()), 0..24),
    ) {
        let c = config(layers, kv_heads, 1, head_dim);
        let kv_dim = c.kv_dim();
        let mut chapter = ch02_kv_cache::KvCache::new(&c, max_len);
        let mut ours = ex::ContiguousCache::new(layers, max_len, kv_dim);
        for (layer, pos, seed) in writes {
            let (layer, pos) = (layer % layers, pos % max_len);
            let (k, v) = (floats(seed, kv_dim), floats(!seed, kv_dim));
            ch02::cache_write(&mut ours, layer, pos, &k, &v).unwrap();
            chapter.write(layer, pos, &k, &v);
            prop_assert_eq!(ours.len, chapter.len());
            for l in 0..layers {
                for p in 0..max_len {
                    let o = (l * max_len + p) * kv_dim;
                    prop_assert_eq!(&ours.k[o..o + kv_dim], chapter.key(l, p), "K at layer {} position {}", l, p);
                    prop_assert_eq!(&ours.v[o..o + kv_dim], chapter.value(l, p), "V at layer {} position {}", l, p);
                }
            }
        }
        prop_assert_eq!(((ours.k.len() + ours.v.len()) * 4) as u64, chapter.bytes_allocated());
    }

    /// The chapter's `attend_one` sums its dot products in another order (SIMD), so the outputs
    /// agree to rounding, not bit for bit.
    #[test]
    fn ch02_attend_one_is_ch00s(
        kv_heads in 1usize..4, group in 1usize..4, head_dim in 1usize..17, n_ctx in 1usize..40, seed: u64,
    ) {
        let shape = ch00_model::AttnShape { heads: kv_heads * group, kv_heads, head_dim };
        let q = floats(seed, shape.q_dim());
        let (keys, values) = (floats(seed ^ 1, n_ctx * shape.kv_dim()), floats(seed ^ 2, n_ctx * shape.kv_dim()));
        let ours = ch02::attend_one(ex::AttnShape { heads: shape.heads, kv_heads, head_dim }, &q, &keys, &values).unwrap();
        let row = |t: usize| t * shape.kv_dim()..(t + 1) * shape.kv_dim();
        let mut chapter = vec![0.0f32; shape.q_dim()];
        ch00_model::attend_one(shape, &q, n_ctx, |t| &keys[row(t)], |t| &values[row(t)], &mut chapter);
        for (i, (a, b)) in ours.iter().zip(&chapter).enumerate() {
            prop_assert!((a - b).abs() <= 1e-5, "element {}: {} vs the chapter's {}", i, a, b);
        }
    }

    // --- Chapter 3 ---

    /// Steps, busy and wasted slot-steps of chapter 3's engine on the tiny model.
    #[test]
    fn ch03_static_batching_is_static_batch_engines(
        output_lens in prop::collection::vec(0usize..7, 0..9),
        prompts in prop::collection::vec(1usize..4, 1..4),
        batch_size in 1usize..5,
    ) {
        let mut engine = ch03_static_batching::StaticBatchEngine { batch_size, max_len: Some(32) };
        let out = engine.run(tiny(), &requests(&prompts, &output_lens), &traced()).unwrap();
        prop_assert_eq!(ch03::static_batching(&output_lens, batch_size), Ok(slot_steps(&out)));
    }

    // --- Chapter 4 ---

    /// Slots for a budget, with `bytes_per_token` from the chapter's f32 KV size. Sizes stay below
    /// 2^64: the chapter multiplies unchecked (`max_len * kv_bytes_per_token`), the exercise asks
    /// that an overflowing slot fit no budget.
    #[test]
    fn ch04_slots_for_budget_is_ch04s(
        layers in 1usize..100, kv_heads in 1usize..16, head_dim in 1usize..256, max_len in 0usize..100_000,
        slots in 0u64..6, delta in -2i64..=2, raw in 0u64..1 << 45, near_a_multiple: bool,
    ) {
        let c = config(layers, kv_heads, 1, head_dim);
        let per_token = ch00_model::kv_bytes_per_token(&c, DType::F32);
        let slot = per_token * max_len as u64;
        let budget = if near_a_multiple { (slot * slots).saturating_add_signed(delta) } else { raw };
        let ours = ch04::slots_for_budget(per_token, max_len as u64, budget);
        match (ours, ch04_continuous_batching::slots_for_budget(&c, max_len, budget)) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b as u64),
            (Err(_), Err(_)) => {}
            (a, b) => {
                prop_assert!(false, "{} tokens × {} B, budget {}: {:?} vs the chapter's {:?}", max_len, per_token, budget, a, b)
            }
        }
    }

    /// Chapter 4's scheduler and the exercise's `schedule`, driven through the same workload
    /// (arrivals in any order, prompts that may not fit the step budget, any limits), answer every
    /// call alike: submissions, every step's plan, the slots finished requests free.
    #[test]
    fn ch04_schedule_is_the_chapters_scheduler(
        reqs in prop::collection::vec((0u8..20, 0usize..14, 1usize..10), 0..24),
        num_slots in 1usize..6, max_running in 1usize..8, extra_tokens in 0usize..20,
    ) {
        let max_tokens = max_running.min(num_slots) + extra_tokens;
        let ours = drive_slots(exercise_slot_scheduler(num_slots, max_running, max_tokens), &reqs);
        let chapter = drive_slots(chapter_slot_scheduler(num_slots, max_running, max_tokens), &reqs);
        prop_assert_eq!(ours, chapter);
    }

    /// Steps and slot-steps of chapter 4's engine on the tiny model (one slot per running request).
    #[test]
    fn ch04_continuous_batching_is_continuous_batch_engines(
        output_lens in prop::collection::vec(0usize..7, 0..9),
        prompts in prop::collection::vec(1usize..4, 1..4),
        slots in 1usize..5,
    ) {
        use ch04_continuous_batching::{ContinuousBatchEngine, SlotBudget};
        let mut engine = ContinuousBatchEngine { slots: SlotBudget::Slots(slots), max_len: Some(32), ..Default::default() };
        let out = engine.run(tiny(), &requests(&prompts, &output_lens), &traced()).unwrap();
        prop_assert_eq!(ch04::continuous_batching(&output_lens, slots), Ok(slot_steps(&out)));
    }

    // --- Chapter 5 ---

    /// Any sequence of allocations, shares and releases (double frees and blocks outside the pool
    /// included) gets the same answers from the exercise and from `BlockAllocator`, and leaves the
    /// same reference counts and free blocks.
    #[test]
    fn ch05_block_allocator_is_the_chapters(
        n in 1usize..12, ops in prop::collection::vec((0u8..3, 0usize..14), 0..200),
    ) {
        let mut chapter = ch05_paged_attention::BlockAllocator::new(n).unwrap();
        let mut ours = ex::BlockPool::new(n);
        for (op, b) in ops {
            match op {
                0 => prop_assert_eq!(ch05::allocate(&mut ours), chapter.allocate()),
                1 => prop_assert_eq!(ch05::share(&mut ours, b).is_ok(), chapter.share(b).is_ok(), "share {}", b),
                _ => prop_assert_eq!(ch05::release(&mut ours, b).ok(), chapter.release(b).ok(), "release {}", b),
            }
            prop_assert_eq!(ours.num_free(), chapter.num_free());
            for b in 0..n + 2 {
                prop_assert_eq!(ours.ref_count.get(b).copied().unwrap_or(0), chapter.ref_count(b), "ref count of {}", b);
            }
        }
    }

    /// Flat slots are `locate`'s (block, offset), and a position `locate` cannot place is an error.
    #[test]
    fn ch05_slot_mapping_is_locate((table, block_size, positions) in table_and_positions()) {
        let chapter: Option<Vec<usize>> = positions
            .iter()
            .map(|&p| ch05_paged_attention::locate(&table, block_size, p).map(|(b, offset)| b * block_size + offset))
            .collect();
        prop_assert_eq!(ch05::slot_mapping(&table, block_size, &positions).ok(), chapter);
    }

    /// Chapter 5's `BlockScheduler` and the exercise's `schedule_blocks`, driven through the same
    /// workload on pools from just large enough (preemption) to roomy: every step admits and
    /// preempts the same sequences in the same order, and the same sequences run with the same
    /// block tables and as many blocks free (both give a victim's blocks back tail first, so
    /// later allocations hand out the same blocks too).
    #[test]
    fn ch05_schedule_blocks_is_the_chapters_block_scheduler(
        reqs in block_requests(1), block_size in 1usize..5, extra in 0usize..4, watermark in 0usize..3,
    ) {
        let num_blocks = largest_need(&reqs, block_size) + extra;
        let (ours_sub, ours) = drive_blocks(exercise_block_queue(num_blocks, block_size, watermark), &reqs);
        let (chapter_sub, chapter) = drive_blocks(chapter_block_scheduler(num_blocks, block_size, watermark), &reqs);
        prop_assert_eq!(ours_sub, chapter_sub);
        prop_assert_eq!(ours.len(), chapter.len(), "steps to finish the workload");
        for (i, ((_, ours_step, ours_after), (_, chapter_step, chapter_after))) in ours.iter().zip(&chapter).enumerate() {
            prop_assert_eq!(ours_step, chapter_step, "step {}", i);
            prop_assert_eq!(ours_after, chapter_after, "step {}: running sequences, block tables, free blocks", i);
        }
    }

    /// Copy-on-write as chapter 5's `BlockScheduler` does it for parallel samples: replaying each
    /// step's writes with `prepare_write` — every running sequence, in the chapter's order, writes
    /// its newest token on a pool with the chapter's reference counts — gives the chapter's
    /// copies, tables and reference counts. Only the block taken is the chapter's choice (its free
    /// stack is private): the replay's pool holds just the block the chapter put at that position,
    /// so `prepare_write` decides whether to take one, and the rest follows. `rows` is not compared:
    /// the chapter copies whole blocks (`PagedKvPool::copy_block`).
    #[test]
    fn ch05_prepare_write_is_the_chapters_copy_on_write(reqs in block_requests(4), block_size in 1usize..5) {
        // A pool that never preempts: every request's samples at their longest, at once.
        let num_blocks: usize = reqs.iter().map(|&(p, g, n)| n * (p + g + n).div_ceil(block_size)).sum();
        let (_, turns) = drive_blocks(chapter_block_scheduler(num_blocks, block_size, 0), &reqs);
        // Where each running sequence writes next: its newest token's position, by id.
        let mut next_pos: std::collections::HashMap<usize, usize> = Default::default();
        for (i, (before, step, after)) in turns.iter().enumerate() {
            let BlockReply::Step { admitted, preempted, copies } = step else { unreachable!() };
            prop_assert!(preempted.is_empty());
            let mut pool = ex::BlockPool { free: vec![], ref_count: before.ref_count.clone() };
            let mut ours = Vec::new();
            for (id, table) in &before.running {
                let pos = next_pos[id];
                let new = after.table(*id).expect("no preemption");
                let at = pos / block_size;
                pool.free = new.get(at).filter(|&&b| table.get(at) != Some(&b)).into_iter().copied().collect();
                let mut table = table.clone();
                match ch05::prepare_write(&mut pool, &mut table, block_size, pos) {
                    Ok(ex::WriteTarget::Copy { from, to, .. }) => ours.push((from, to)),
                    Ok(_) => {}
                    Err(e) => prop_assert!(false, "step {}: sequence {} at {}: {:?}", i, id, pos, e),
                }
                prop_assert_eq!(&table[..], new, "step {}: table of sequence {}", i, id);
            }
            prop_assert_eq!(&ours, copies, "step {}: copies", i);
            // The sequences admitted this step took fresh blocks the replay does not see.
            let fresh: Vec<BlockId> = admitted.iter().flat_map(|&id| after.table(id).unwrap().to_vec()).collect();
            for b in (0..num_blocks).filter(|b| !fresh.contains(b)) {
                prop_assert_eq!(pool.ref_count[b], after.ref_count[b], "step {}: ref count of block {}", i, b);
            }
            // The token each running sequence produced now is written next step (at the prompt's
            // length after a prefill); a sequence that finished is gone by then.
            for &(id, _) in &after.running {
                let pos = if admitted.contains(&id) { prompt_of(&reqs, id) } else { next_pos[&id] + 1 };
                next_pos.insert(id, pos);
            }
        }
    }
}

/// A block table, a block size and positions mostly inside what the table covers.
fn table_and_positions() -> impl Strategy<Value = (Vec<BlockId>, usize, Vec<usize>)> {
    (prop::collection::vec(0usize..64, 0..8), 1usize..9).prop_flat_map(|(table, bs)| {
        let reach = table.len() * bs + 2;
        (Just(table), Just(bs), prop::collection::vec(0..reach, 0..20))
    })
}

/// The prompt length of sequence `id` in a workload of (prompt, generate, samples).
fn prompt_of(reqs: &[(usize, usize, usize)], id: usize) -> usize {
    let mut first = 0;
    for &(p, _, n) in reqs {
        if id < first + n {
            return p;
        }
        first += n;
    }
    panic!("no sequence {id}")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// `chunk_shares` splits a step's budget exactly as chapter 5's block scheduler does with
    /// chunked prefill (`ch05_paged_attention::chunk_shares`, which `BlockScheduler::schedule` calls).
    #[test]
    fn ch05_chunk_shares_is_the_chapters(
        running in prop::collection::vec((1usize..40, any::<bool>()), 0..10),
        budget in 0usize..64,
        max_chunk in 1usize..32,
    ) {
        // A sequence that is not prefilling is a decode: one token left to compute.
        let running: Vec<(usize, bool)> = running.into_iter().map(|(u, p)| (if p { u } else { 1 }, p)).collect();
        prop_assert_eq!(
            ch05::chunk_shares(&running, budget, max_chunk),
            ch05_paged_attention::chunk_shares(&running, budget, max_chunk)
        );
    }

    /// `park`, `revive` and `evict` keep the same order as chapter 5's `Lru` (`push`, `remove`,
    /// `pop_oldest`) under any sequence of calls.
    #[test]
    fn ch05_lru_is_the_chapters(calls in prop::collection::vec((0u8..3, 0usize..8), 0..40)) {
        let mut ours = std::collections::VecDeque::new();
        let mut chapter = ch05_paged_attention::Lru::default();
        for (op, b) in calls {
            match op {
                0 => {
                    ch05::park(&mut ours, b);
                    chapter.push(b);
                }
                1 => prop_assert_eq!(ch05::revive(&mut ours, b), chapter.remove(b)),
                _ => prop_assert_eq!(ch05::evict(&mut ours), chapter.pop_oldest()),
            }
            prop_assert_eq!(ours.iter().copied().collect::<Vec<_>>(), chapter.iter().collect::<Vec<_>>());
        }
    }
}

proptest! {
    /// `shard_range` is the split chapter 8 cuts every dimension with.
    #[test]
    fn ch08_shard_range_is_the_chapters(n in 0usize..300, world in 1usize..17) {
        for rank in 0..world {
            prop_assert_eq!(ch08::shard_range(n, rank, world), ch08_tensor_parallel::shard::part(n, rank, world));
        }
    }

    /// A row-parallel layer on any number of ranks equals chapter 0's unsharded `linear`.
    #[test]
    fn ch08_row_parallel_linear_is_the_whole_product(
        n in 1usize..4, k in 1usize..40, m in 1usize..6, world in 1usize..9, seed in 0u64..1000,
    ) {
        let vals = |len: usize, salt: u64| -> Vec<f32> {
            (0..len).map(|i| (((i as u64 * 2654435761 + seed * 97 + salt) % 2001) as f32) / 1000.0 - 1.0).collect()
        };
        let (x, w) = (vals(n * k, 1), vals(m * k, 2));
        let xa = ndarray::Array2::from_shape_vec((n, k), x.clone()).unwrap();
        let wa = ndarray::Array2::from_shape_vec((m, k), w.clone()).unwrap();
        let mut y = ndarray::Array2::zeros((n, m));
        ch00_model::ops::linear(&xa.view(), &ch00_model::cpu::packed::Packed::new(&wa.view()), &mut y);
        let got = ch08::row_parallel_linear(&x, &w, n, k, m, world);
        prop_assert_eq!(got.len(), n * m);
        for (a, b) in got.iter().zip(y.iter()) {
            prop_assert!((a - b).abs() <= 1e-4, "{} vs {}", a, b);
        }
    }
}
