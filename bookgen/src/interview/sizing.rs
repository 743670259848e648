//! The mock interview's sizing: its workload, what one card of a tensor-parallel group holds,
//! the bandwidth and compute floors of a step, and the layouts (cards per group × KV design) that
//! the accounting run of chapter 5 sizes.

use crate::capacity::run::accounting_run;
use crate::capacity::spec::AccountingSpec;
use crate::interview::inputs::Inputs;
use crate::shape::Shape;
use anyhow::Result;
use crate::card::{engine_buffers, tp_shard};
use ch00_model::{kv_bytes_per_token, DType, LlamaConfig, GPU_MEMORY_UTILIZATION};
use ch00_serving::{Arrivals, LengthDist, WorkloadSpec};
use ch05_paged_attention::blocks_for_budget;

pub const GB: f64 = 1e9;

pub fn f16_config(name: &str) -> Result<(LlamaConfig, u64)> {
    let c = LlamaConfig::named(name)?;
    let weights = c.param_count() * DType::F16.bytes();
    Ok((c, weights))
}

/// The mock interview's workload: prompts uniform 512..=2048 tokens, outputs exponential with
/// mean 256 (a chat service), far more requests than fit, all queued at once.
pub fn mock_workload(i: &Inputs) -> WorkloadSpec {
    WorkloadSpec {
        n_requests: 2000,
        prompt_len: LengthDist::Uniform { lo: 512, hi: 2048 },
        output_len: LengthDist::Exponential { mean: 256.0, min: 1, max: i.max_len.saturating_sub(2048).max(1) },
        arrivals: Arrivals::AllAtOnce,
        seed: 0,
    }
}

/// Mean prompt length and mean final length (prompt + output) of the workload's requests.
pub fn mock_lengths(i: &Inputs, vocab: usize) -> (f64, f64) {
    let reqs = mock_workload(i).generate(vocab);
    let n = reqs.len().max(1) as f64;
    let prompt = reqs.iter().map(|r| r.prompt.len()).sum::<usize>() as f64 / n;
    let total = reqs.iter().map(|r| (r.prompt.len() + r.max_new_tokens).min(i.max_len)).sum::<usize>() as f64 / n;
    (prompt, total)
}

// ANCHOR: per_card
/// Tensor parallelism over `tp` cards: each card holds 1/tp of the weights and 1/tp of the KV
/// heads, so 1/tp of every token's KV. The KV budget of a card is the card model's: its share of
/// the card, minus the weights and the engine's buffers for that slice (`crate::card`).
pub struct PerCard {
    pub weights: u64,
    pub buffers: u64,
    pub kv_budget: u64,
    pub kv_per_token: u64,
    /// Tokens of context the whole group holds (every card holds its slice of each).
    pub tokens: u64,
    pub blocks: u64,
}

pub fn per_card(c: &LlamaConfig, weights: u64, tp: usize, i: &Inputs) -> Result<PerCard> {
    let shard = tp_shard(c, tp);
    let kv_per_token = kv_bytes_per_token(&shard, DType::F16);
    let weights = weights / tp as u64;
    let buffers = engine_buffers(&shard, i.max_len);
    let kv_budget = i.kv_budget(weights, buffers);
    let tokens = kv_budget / kv_per_token;
    let blocks = if kv_budget > 0 { blocks_for_budget(&shard, 16, kv_budget, DType::F16)? as u64 } else { 0 };
    Ok(PerCard { weights, buffers, kv_budget, kv_per_token, tokens, blocks })
}
// ANCHOR_END: per_card

// ANCHOR: floor
/// The bandwidth floor of one decode step on one card: every weight and every cached K/V row of
/// the batch is read at least once (1/tp of each per card), and nothing is faster than reading
/// it. Communication between the cards is left out: a real step is slower.
pub fn decode_floor_ms(card: &PerCard, batch: f64, mean_len: f64, i: &Inputs) -> f64 {
    let bytes = card.weights as f64 + batch * mean_len * card.kv_per_token as f64;
    bytes / (i.bandwidth_tbs * 1e12) * 1e3
}

/// The compute floor of a prefill: 2 FLOPs per parameter per prompt token, spread over tp cards
/// at their peak rate (attention's own FLOPs and any inefficiency only add to it).
pub fn prefill_floor_ms(params: u64, prompt: f64, tp: usize, i: &Inputs) -> f64 {
    2.0 * params as f64 * prompt / (tp as f64 * i.tflops * 1e12) * 1e3
}
// ANCHOR_END: floor

pub const TP: [usize; 4] = [1, 2, 4, 8];

/// The largest batch of `mean_len`-token requests whose decode step floor stays within `tpot_ms`
/// (`None` when not even one request does: the weights alone take longer to read).
fn max_batch_within(card: &PerCard, mean_len: f64, tpot_ms: f64, i: &Inputs) -> Option<usize> {
    let bytes = tpot_ms / 1e3 * i.bandwidth_tbs * 1e12 - card.weights as f64;
    let per_request = mean_len * card.kv_per_token as f64;
    (bytes >= per_request).then(|| (bytes / per_request) as usize)
}

/// One layout of the designs table: `tp` cards per group, a KV design, and what follows.
pub struct Layout {
    pub tp: usize,
    pub design: &'static str,
    /// Requests the group's KV memory holds while others wait (accounting run).
    pub held: f64,
    /// The largest batch within the target by the step floor; `None` when not even one.
    pub max_batch: Option<usize>,
    /// Weights-only step floor (ms), for the rows that cannot meet the target.
    pub weights_ms: f64,
    pub groups: usize,
    pub batch: usize,
    pub step_ms: f64,
}

/// For each degree of tensor parallelism that fits: how many requests a group holds with
/// contiguous slots (chapter 4) and with paged blocks (chapter 5) — from the accounting run, which
/// drives the real schedulers — how large a batch the step floor allows within `tpot_ms`, and so
/// how many groups of cards the users need.
pub fn layouts(i: &Inputs, tpot_ms: f64) -> Result<Vec<Layout>> {
    let (c, weights) = f16_config("llama3-70b")?;
    let (_, total) = mock_lengths(i, c.vocab_size);
    let mut out = Vec::new();
    for tp in TP {
        let card = per_card(&c, weights, tp, i)?;
        if card.kv_budget == 0 {
            continue;
        }
        // The group as one big card: tp × the card's share, tp × the buffers, all the weights.
        let spec = AccountingSpec {
            shape: Shape { name: "llama3-70b".into(), config: c.clone() },
            dtype: DType::F16,
            gpu_bytes: tp as u64 * (i.gpu_bytes() as f64 * GPU_MEMORY_UTILIZATION) as u64,
            weight_bytes: weights,
            reserve_bytes: tp as u64 * card.buffers,
            max_len: i.max_len,
            block_size: 16,
            workload: mock_workload(i),
        };
        let Ok(run) = accounting_run(&spec) else { continue }; // not even one slot fits
        let max_batch = max_batch_within(&card, total, tpot_ms, i);
        let designs = [("contiguous slots (ch04)", run.contiguous.mean_running_queued), ("paged blocks (ch05)", run.paged.mean_running_queued)];
        for (design, held) in designs {
            let per_group = (held.floor() as usize).min(max_batch.unwrap_or(1)).max(1);
            let groups = i.users.div_ceil(per_group);
            let batch = i.users.div_ceil(groups);
            let step_ms = decode_floor_ms(&card, batch as f64, total, i);
            let weights_ms = decode_floor_ms(&card, 0.0, total, i);
            out.push(Layout { tp, design, held, max_batch, weights_ms, groups, batch, step_ms });
        }
    }
    Ok(out)
}
