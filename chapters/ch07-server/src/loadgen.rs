//! `kvserve loadgen`: sends a workload to any OpenAI-compatible server, at a Poisson rate or all
//! at once, streaming every response, and reports what users would feel: time to first token
//! (TTFT), time per output token (TPOT, per request), inter-token latency (ITL, every gap), and
//! throughput — the figures of vLLM's serving benchmark.

pub mod chat;

use crate::client::{send, SseReader};
use anyhow::{bail, Result};
use ch00_serving::{Arrivals, WorkloadSpec};
use hyper::{Method, StatusCode};
use serde::Serialize;
use std::time::{Duration, Instant};

/// What to send, and where.
#[derive(Debug, Clone)]
pub struct LoadgenConfig {
    /// The API's base URL, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    pub model: Option<String>,
    /// Prompts (token ids), output lengths and arrival times.
    pub workload: WorkloadSpec,
    /// Vocabulary the prompt ids are drawn from.
    pub vocab_size: usize,
}

/// One request's experience.
#[derive(Debug, Clone, Default)]
struct Timing {
    ok: bool,
    ttft_s: f64,
    e2e_s: f64,
    output_tokens: usize,
    /// Gaps between consecutive tokens.
    itl_s: Vec<f64>,
    /// The generated ids, when the request asked for them (`return_token_ids`).
    tokens: Vec<u32>,
}

/// Mean and percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Summary {
    /// Of `xs` seconds (nearest-rank percentiles).
    pub fn of(xs: &[f64]) -> Summary {
        if xs.is_empty() {
            return Summary::default();
        }
        let mut v: Vec<f64> = xs.iter().map(|x| x * 1e3).collect();
        v.sort_by(f64::total_cmp);
        let at = |p: f64| v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Summary { mean: v.iter().sum::<f64>() / v.len() as f64, p50: at(50.0), p90: at(90.0), p99: at(99.0) }
    }
}

// ANCHOR: report
/// The load generator's findings.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub base_url: String,
    /// Offered load in requests per second (`None`: all at once).
    pub rate_per_s: Option<f64>,
    pub requests: usize,
    pub completed: usize,
    pub failed: usize,
    pub duration_s: f64,
    pub request_throughput: f64,
    pub output_tokens: usize,
    pub output_tokens_per_s: f64,
    pub ttft_ms: Summary,
    pub tpot_ms: Summary,
    pub itl_ms: Summary,
    pub e2e_ms: Summary,
}
// ANCHOR_END: report

// ANCHOR: run
/// Sends every request of the workload at its arrival time and waits for all of them.
pub async fn run(cfg: &LoadgenConfig) -> Result<Report> {
    cfg.workload.validate(cfg.vocab_size)?;
    let url = format!("{}/completions", cfg.base_url.trim_end_matches('/'));
    crate::client::split_url(&url)?; // a bad URL is one error, not N failed requests
    let start = Instant::now();
    let mut tasks = Vec::new();
    for r in cfg.workload.generate(cfg.vocab_size) {
        let body = serde_json::json!({
            "model": cfg.model,
            "prompt": r.prompt,
            "max_tokens": r.max_new_tokens.max(1),
            "temperature": 0.0,
            "ignore_eos": true,
            "stream": true,
            "stream_options": { "include_usage": true },
        });
        let url = url.clone();
        let at = start + Duration::from_secs_f64(r.arrival_s);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            one(&url, body).await.unwrap_or_default()
        }));
    }
    let mut timings = Vec::with_capacity(tasks.len());
    for t in tasks {
        timings.push(t.await.unwrap_or_default());
    }
    let rate_per_s = match cfg.workload.arrivals {
        Arrivals::Poisson { rate_per_s } => Some(rate_per_s),
        Arrivals::AllAtOnce => None,
    };
    Ok(summarise(&cfg.base_url, rate_per_s, &timings, start.elapsed().as_secs_f64()))
}

/// One streamed request, timed from the moment it is sent.
async fn one(url: &str, body: serde_json::Value) -> Result<Timing> {
    let t0 = Instant::now();
    let (status, body) = send(Method::POST, url, body.to_string()).await?;
    if status != StatusCode::OK {
        bail!("status {status}");
    }
    let mut sse = SseReader::new(body);
    let (mut last, mut t) = (None::<Instant>, Timing::default());
    let mut usage_tokens = None;
    while let Some(data) = sse.next().await? {
        if data == "[DONE]" {
            t.ok = true;
            break;
        }
        let chunk: serde_json::Value = serde_json::from_str(&data)?;
        if let Some(e) = chunk.get("error") {
            bail!("the stream ended with an error: {e}"); // then [DONE]: still a failed request
        }
        if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
            usage_tokens = Some(n as usize);
        }
        if let Some(ids) = chunk["choices"][0]["token_ids"].as_array() {
            t.tokens.extend(ids.iter().filter_map(|v| v.as_u64()).map(|v| v as u32));
        }
        // A chunk with a choice carries (at most) one new token.
        if chunk["choices"].as_array().is_some_and(|c| !c.is_empty()) {
            let now = Instant::now();
            match last {
                None => t.ttft_s = (now - t0).as_secs_f64(),
                Some(prev) => t.itl_s.push((now - prev).as_secs_f64()),
            }
            last = Some(now);
            t.output_tokens += 1;
        }
    }
    t.output_tokens = usage_tokens.unwrap_or(t.output_tokens);
    t.e2e_s = t0.elapsed().as_secs_f64();
    Ok(t)
}
// ANCHOR_END: run

fn summarise(base_url: &str, rate_per_s: Option<f64>, timings: &[Timing], duration_s: f64) -> Report {
    let ok: Vec<&Timing> = timings.iter().filter(|t| t.ok).collect();
    let output_tokens = ok.iter().map(|t| t.output_tokens).sum();
    let tpot: Vec<f64> =
        ok.iter().filter(|t| t.output_tokens > 1).map(|t| (t.e2e_s - t.ttft_s) / (t.output_tokens - 1) as f64).collect();
    let itl: Vec<f64> = ok.iter().flat_map(|t| t.itl_s.iter().copied()).collect();
    let d = duration_s.max(1e-9);
    Report {
        base_url: base_url.to_string(),
        rate_per_s,
        requests: timings.len(),
        completed: ok.len(),
        failed: timings.len() - ok.len(),
        duration_s,
        request_throughput: ok.len() as f64 / d,
        output_tokens,
        output_tokens_per_s: output_tokens as f64 / d,
        ttft_ms: Summary::of(&ok.iter().map(|t| t.ttft_s).collect::<Vec<_>>()),
        tpot_ms: Summary::of(&tpot),
        itl_ms: Summary::of(&itl),
        e2e_ms: Summary::of(&ok.iter().map(|t| t.e2e_s).collect::<Vec<_>>()),
    }
}

impl Report {
    /// A Markdown table row per figure.
    pub fn markdown(&self) -> String {
        let rate = self.rate_per_s.map_or("all at once".to_string(), |r| format!("{r} req/s (Poisson)"));
        let mut s = format!(
            "| | |\n|---|---|\n| offered load | {rate} |\n| completed / failed | {} / {} |\n| duration | {:.2} s |\n\
             | request throughput | {:.2} req/s |\n| output throughput | {:.1} tokens/s |\n\n",
            self.completed, self.failed, self.duration_s, self.request_throughput, self.output_tokens_per_s
        );
        s += "| ms | mean | p50 | p90 | p99 |\n|---|---:|---:|---:|---:|\n";
        for (name, v) in [("TTFT", self.ttft_ms), ("TPOT", self.tpot_ms), ("ITL", self.itl_ms), ("end to end", self.e2e_ms)] {
            s += &format!("| {name} | {:.1} | {:.1} | {:.1} | {:.1} |\n", v.mean, v.p50, v.p90, v.p99);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_in_ms() {
        let xs: Vec<f64> = (1..=100).map(|i| i as f64 / 1000.0).collect();
        let s = Summary::of(&xs);
        assert_eq!((s.p50, s.p90, s.p99), (50.0, 90.0, 99.0));
        assert!((s.mean - 50.5).abs() < 1e-9);
        assert_eq!(Summary::of(&[]), Summary::default());
    }

    #[test]
    fn failures_do_not_count_towards_latency() {
        let ok = Timing { ok: true, ttft_s: 0.1, e2e_s: 0.5, output_tokens: 5, itl_s: vec![0.1; 4], tokens: vec![] };
        let r = summarise("u", Some(2.0), &[ok, Timing::default()], 1.0);
        assert_eq!((r.completed, r.failed, r.output_tokens), (1, 1, 5));
        assert!((r.tpot_ms.mean - 100.0).abs() < 1e-9);
        assert!(r.markdown().contains("| TTFT | 100.0 |"));
    }
}
