//! The mock interview's second floor: a step must also do its FLOPs. In steady state the users'
//! requests finish and are replaced continuously, so every decode step of a batch also carries the
//! prefill of the prompts that replace the requests finishing in it. Each design below (weights and
//! KV in fp16 or FP8, tensor parallelism 2/4/8, prefill in the decode steps or on separate cards) is
//! bounded by bytes ÷ bandwidth and by FLOPs ÷ peak, and the larger floor is the step's.

use crate::interview::inputs::Inputs;
use crate::interview::sizing::{f16_config, mock_lengths, TP};
use anyhow::Result;
use crate::card::{engine_buffers, tp_shard};
use ch00_model::{kv_bytes_per_token, DType};

/// Where the prompts are prefilled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Prefill {
    /// In the decode steps (continuous batching; chunked prefill spreads a prompt over several).
    Mixed,
    /// On separate prefill cards; the decode step carries only decodes (its KV arrives by copy).
    Disaggregated,
}

/// One design: its inputs and the floors that follow.
#[derive(Debug, Clone)]
pub struct Design {
    pub dtype: &'static str,
    pub tp: usize,
    pub prefill: Prefill,
    /// Requests of the mean length one group's KV memory holds (no block waste: the paged bound).
    pub held: u64,
    pub groups: usize,
    pub batch: usize,
    /// Prompt tokens prefilled per decode step (0 when disaggregated).
    pub prefill_tokens: f64,
    pub bytes_ms: f64,
    pub compute_ms: f64,
    pub step_ms: f64,
    /// Prefill instances of `tp` cards (disaggregated), by the compute floor at peak.
    pub prefill_groups: usize,
    /// Requests per second the users send when every step takes `step_ms`.
    pub arrival_rate: f64,
    /// Prompt KV copied from the prefill to the decode cards per second (disaggregated).
    pub kv_copy_gb_s: f64,
    pub ttft_ms: f64,
}

impl Design {
    pub fn cards(&self) -> usize {
        (self.groups + self.prefill_groups) * self.tp
    }
    pub fn meets(&self, i: &Inputs) -> bool {
        self.step_ms <= i.tpot_ms && self.ttft_ms <= i.ttft_ms
    }
}

/// Requests per second the users send: each user sends a new request when the last one ends, so by
/// Little's law users ÷ (mean output tokens × TPOT target).
pub fn arrival_rate(i: &Inputs, mean_out: f64) -> f64 {
    i.users as f64 / (mean_out * i.tpot_ms / 1e3)
}

// ANCHOR: compute_floor
/// The two floors of one decode step on a card of a `tp`-way group running `batch` requests: the
/// bytes it reads (its share of the weights, the batch's K/V) over the bandwidth, and the FLOPs it
/// does over the peak — two per parameter per token, for the batch's decode tokens and for the
/// prompt tokens that arrive while the step runs (`prompt_rate` tokens/s for this group). The
/// longer the step, the more prompt tokens it must carry: compute = (B + rate × step) × k with
/// k = 2 × params ÷ (tp × peak), so when compute binds, step = B × k ÷ (1 − rate × k), and the
/// group cannot keep up at all once rate × k ≥ 1 (prefill alone needs its whole peak).
/// Returns (bytes floor, compute floor, prompt tokens per step), in ms; `None` if it cannot keep up.
#[allow(clippy::too_many_arguments)]
pub fn step_floors(
    params: u64,
    weight_bytes_card: f64,
    kv_bytes_request: f64,
    batch: f64,
    prompt_rate: f64,
    tp: usize,
    peak_tflops: f64,
    i: &Inputs,
) -> Option<(f64, f64, f64)> {
    let bytes_s = (weight_bytes_card + batch * kv_bytes_request) / (i.bandwidth_tbs * 1e12);
    let k = 2.0 * params as f64 / (tp as f64 * peak_tflops * 1e12); // seconds per token
    if prompt_rate * k >= 1.0 {
        return None;
    }
    let step_s = bytes_s.max(batch * k / (1.0 - prompt_rate * k));
    let prompt_tokens = prompt_rate * step_s;
    Some((bytes_s * 1e3, (batch + prompt_tokens) * k * 1e3, prompt_tokens))
}
// ANCHOR_END: compute_floor

/// Every design: fp16 and FP8 (1 byte per weight and per K/V element, at the FP8 peak), each tensor
/// parallel degree whose cards hold the weights, prefill mixed into the decode steps or not; for
/// each, the fewest groups memory allows and, when that fails a target, the fewest that meet both.
pub fn designs(i: &Inputs) -> Result<Vec<Design>> {
    let (c, _) = f16_config("llama3-70b")?;
    let (prompt, total) = mock_lengths(i, c.vocab_size);
    let mean_out = (total - prompt).max(1.0);
    let rate = arrival_rate(i, mean_out);
    let params = c.param_count();
    let mut out = Vec::new();
    for (dtype, bytes, peak) in [("fp16", 2u64, i.tflops), ("FP8", 1, i.fp8_tflops)] {
        for tp in TP {
            let shard = tp_shard(&c, tp);
            let kv_token = (kv_bytes_per_token(&shard, DType::F16) / 2 * bytes) as f64;
            let weights_card = (params * bytes) as f64 / tp as f64;
            // The card model: fp16 activations whatever the weights' precision.
            let budget = i.kv_budget(weights_card as u64, engine_buffers(&shard, i.max_len)) as f64;
            let held = (budget / kv_token / total) as u64;
            if held == 0 {
                continue;
            }
            let one_prompt_ms = prompt * 2.0 * params as f64 / (tp as f64 * peak * 1e12) * 1e3;
            for prefill in [Prefill::Mixed, Prefill::Disaggregated] {
                let first = i.users.div_ceil(held as usize);
                let mut best = None;
                for groups in first..=i.users.min(first + 64) {
                    let batch = i.users.div_ceil(groups);
                    let group_rate = if prefill == Prefill::Mixed { rate / groups as f64 * prompt } else { 0.0 };
                    let floors = step_floors(params, weights_card, kv_token * total, batch as f64, group_rate, tp, peak, i);
                    let (bytes_ms, compute_ms, prefill_tokens) = floors.unwrap_or((f64::INFINITY, f64::INFINITY, f64::INFINITY));
                    let step_ms = bytes_ms.max(compute_ms);
                    let (prefill_groups, kv_copy_gb_s, ttft_ms) = match prefill {
                        // The prompt rides in the decode steps: at least one step, at least its compute.
                        Prefill::Mixed => (0, 0.0, one_prompt_ms.max(step_ms)),
                        Prefill::Disaggregated => {
                            let cards = rate * prompt * 2.0 * params as f64 / (peak * 1e12);
                            let kv_request = (kv_bytes_per_token(&c, DType::F16) / 2 * bytes) as f64 * prompt;
                            ((cards / tp as f64).ceil() as usize, rate * kv_request / 1e9, one_prompt_ms)
                        }
                    };
                    let d = Design { dtype, tp, prefill, held, groups, batch, prefill_tokens, bytes_ms, compute_ms, step_ms, prefill_groups, arrival_rate: rate, kv_copy_gb_s, ttft_ms };
                    let meets = d.meets(i);
                    if groups == first && !meets {
                        // The fewest groups memory allows, failing by its floors: shown too.
                        out.push(d.clone());
                    }
                    if meets {
                        best = Some(d);
                        break;
                    }
                }
                out.extend(best);
            }
        }
    }
    Ok(out)
}
