//! Multi-turn chats replayed against a server (`kvserve loadgen --chat`): K conversations × T
//! turns, each turn's prompt the whole history (earlier prompts and answers, as token ids) plus a
//! new message, sent once every answer of the turn before is complete. Turns run in lockstep so
//! that the server's prefix-cache counters (`/metrics`) can be read apart for each turn.

use super::{one, Summary};
use ch00_serving::ChatSpec;
use anyhow::{bail, Result};
use serde::Serialize;

/// Where to send which chats.
#[derive(Debug, Clone)]
pub struct ChatLoadConfig {
    /// The API's base URL, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    pub model: Option<String>,
    pub spec: ChatSpec,
    pub vocab_size: usize,
}

/// One turn of every conversation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatTurn {
    pub turn: usize,
    pub failed: usize,
    pub mean_prompt_tokens: f64,
    pub ttft_ms: Summary,
    /// Share of the turn's prompt tokens the server's prefix cache held (`None`: the server does
    /// not export kvserve's counters).
    pub hit_rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatLoadReport {
    pub base_url: String,
    pub spec: ChatSpec,
    pub turns: Vec<ChatTurn>,
    /// A digest of every answer's ids in order: equal digests, equal answers (compare two servers).
    pub answers_digest: u64,
}

// ANCHOR: chat
/// Replays the chats; fails if a request fails (the next turn would have no history).
pub async fn run(cfg: &ChatLoadConfig) -> Result<ChatLoadReport> {
    let spec = cfg.spec;
    spec.validate(cfg.vocab_size, usize::MAX)?;
    let url = format!("{}/completions", cfg.base_url.trim_end_matches('/'));
    crate::client::split_url(&url)?;
    let metrics_url = format!("{}/metrics", cfg.base_url.trim_end_matches('/').trim_end_matches("/v1"));
    let mut history: Vec<Vec<u32>> = (0..spec.conversations).map(|c| spec.message(c, 0, cfg.vocab_size)).collect();
    let (mut turns, mut digest) = (Vec::new(), Fnv::new());
    for t in 0..spec.turns {
        if t > 0 {
            for (c, h) in history.iter_mut().enumerate() {
                h.extend(spec.message(c, t, cfg.vocab_size));
            }
        }
        let before = prefix_counters(&metrics_url).await;
        let tasks: Vec<_> = history
            .iter()
            .map(|h| {
                let body = serde_json::json!({
                    "model": cfg.model, "prompt": h, "max_tokens": spec.answer, "temperature": 0.0,
                    "ignore_eos": true, "stream": true, "return_token_ids": true,
                });
                let url = url.clone();
                tokio::spawn(async move { one(&url, body).await })
            })
            .collect();
        let mut ttft = Vec::new();
        let mut failed = 0;
        for (h, task) in history.iter_mut().zip(tasks) {
            match task.await? {
                Ok(timing) if timing.ok && timing.tokens.len() == spec.answer => {
                    ttft.push(timing.ttft_s);
                    digest.add(&timing.tokens);
                    h.extend(&timing.tokens); // the next turn's prompt: everything so far
                }
                _ => failed += 1,
            }
        }
        let after = prefix_counters(&metrics_url).await;
        let hit_rate = before.zip(after).map(|((q0, h0), (q1, h1))| (h1 - h0) / (q1 - q0).max(1.0));
        let prompt_tokens: usize = history.iter().map(|h| h.len() - spec.answer).sum();
        turns.push(ChatTurn {
            turn: t + 1,
            failed,
            mean_prompt_tokens: prompt_tokens as f64 / spec.conversations as f64,
            ttft_ms: Summary::of(&ttft),
            hit_rate,
        });
        if failed > 0 {
            bail!("turn {}: {failed} of {} requests failed", t + 1, spec.conversations);
        }
    }
    Ok(ChatLoadReport { base_url: cfg.base_url.clone(), spec, turns, answers_digest: digest.0 })
}
// ANCHOR_END: chat

/// The prefix cache's queried and hit token counters in `/metrics`, if the server has them.
async fn prefix_counters(url: &str) -> Option<(f64, f64)> {
    let (_, text) = crate::client::get(url).await.ok()?;
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
    };
    Some((value("kvserve_prefix_cache_queries_total")?, value("kvserve_prefix_cache_hits_total")?))
}

/// FNV-1a over token ids.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn add(&mut self, ids: &[u32]) {
        for b in ids.iter().flat_map(|i| i.to_le_bytes()) {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
}

impl ChatLoadReport {
    /// A row per turn.
    pub fn markdown(&self) -> String {
        let mut s = String::from("| turn | mean prompt | prefix-cache hits | TTFT p50 | TTFT p99 |\n|---:|---:|---:|---:|---:|\n");
        for t in &self.turns {
            let hits = t.hit_rate.map_or("n/a".to_string(), |h| format!("{:.0}%", 100.0 * h));
            s += &format!(
                "| {} | {:.0} tokens | {hits} | {:.1} ms | {:.1} ms |\n",
                t.turn, t.mean_prompt_tokens, t.ttft_ms.p50, t.ttft_ms.p99
            );
        }
        let sp = &self.spec;
        s += &format!(
            "\n{} conversations × {} turns (first prompt {} tokens, messages {}, answers {}); answers digest {:016x}\n",
            sp.conversations, sp.turns, sp.first_prompt, sp.message, sp.answer, self.answers_digest
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_equal_for_equal_answers_only() {
        let (mut a, mut b, mut c) = (Fnv::new(), Fnv::new(), Fnv::new());
        a.add(&[1, 2, 3]);
        b.add(&[1, 2, 3]);
        c.add(&[1, 3, 2]);
        assert_eq!(a.0, b.0);
        assert_ne!(a.0, c.0);
    }
}
