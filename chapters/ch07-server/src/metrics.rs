//! `/metrics` in Prometheus' text format: what the engine holds now (gauges), what it has done
//! (counters), and how long users waited (histograms of TTFT and TPOT).

use ch00_serving::{EngineLoad, FinishReason, RequestOutput};
use std::fmt::Write;
use std::sync::Mutex;

// ANCHOR: histogram
/// A Prometheus histogram: cumulative counts of observations at or below each bound.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    pub fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}", self.count, self.sum, self.count);
    }
}
// ANCHOR_END: histogram

const TTFT_BOUNDS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const TPOT_BOUNDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Debug, Clone)]
struct Inner {
    load: EngineLoad,
    ttft: Histogram,
    tpot: Histogram,
    finished: [u64; 3], // eos, length, context full
    aborted: u64,
    generated: u64,
    prompt: u64,
    steps: u64,
    /// The server's own per-request records: requests in flight, admission slots taken, aborts
    /// not yet taken in by the engine thread. All three return to 0 when the server is idle.
    live: usize,
    queued: usize,
    aborts_pending: usize,
    dead: bool,
}

/// Shared between the engine thread (which writes) and `/metrics` (which reads).
#[derive(Debug)]
pub struct Metrics(Mutex<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Metrics(Mutex::new(Inner {
            load: EngineLoad::default(),
            ttft: Histogram::new(TTFT_BOUNDS),
            tpot: Histogram::new(TPOT_BOUNDS),
            finished: [0; 3],
            aborted: 0,
            generated: 0,
            prompt: 0,
            steps: 0,
            live: 0,
            queued: 0,
            aborts_pending: 0,
            dead: false,
        }))
    }
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A panic elsewhere must not take the metrics down with it.
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    pub fn load(&self) -> EngineLoad {
        self.with(|m| m.load)
    }

    pub fn set_load(&self, load: EngineLoad, stepped: bool) {
        self.with(|m| {
            m.load = load;
            m.steps += u64::from(stepped);
        });
    }

    /// The server's per-request records (see [`Inner`]'s fields), published by the engine thread.
    pub fn set_server(&self, live: usize, queued: usize, aborts_pending: usize) {
        self.with(|m| (m.live, m.queued, m.aborts_pending) = (live, queued, aborts_pending));
    }

    /// The engine thread died (a step error or a panic).
    pub fn died(&self) {
        self.with(|m| m.dead = true);
    }

    pub fn added(&self, prompt_tokens: usize) {
        self.with(|m| m.prompt += prompt_tokens as u64);
    }

    pub fn aborted(&self) {
        self.with(|m| m.aborted += 1);
    }

    /// A sequence finished: its first-token wait and its mean gap between tokens.
    pub fn finished(&self, o: &RequestOutput) {
        self.with(|m| {
            m.finished[o.finish as usize] += 1;
            m.generated += o.tokens.len() as u64;
            if !o.tokens.is_empty() {
                m.ttft.observe(o.ttft_s);
            }
            if !o.token_latencies_s.is_empty() {
                m.tpot.observe(o.token_latencies_s.iter().sum::<f64>() / o.token_latencies_s.len() as f64);
            }
        });
    }

    // ANCHOR: render
    pub fn render(&self) -> String {
        let m = self.with(|m| m.clone());
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        one("kvserve_requests_running", "gauge", "Sequences in the running batch.", m.load.running.to_string());
        one("kvserve_requests_waiting", "gauge", "Sequences waiting for admission.", m.load.waiting.to_string());
        one("kvserve_kv_blocks_used", "gauge", "KV blocks (or slots) in use.", m.load.kv_units_used.to_string());
        one("kvserve_kv_blocks_total", "gauge", "KV blocks (or slots) in the pool.", m.load.kv_units_total.to_string());
        one("kvserve_preemptions_total", "counter", "Sequences evicted and recomputed.", m.load.preemptions.to_string());
        let l = &m.load;
        one("kvserve_prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.", l.prefix_query_tokens.to_string());
        one("kvserve_prefix_cache_hits_total", "counter", "Looked-up tokens found in the prefix cache.", l.prefix_hit_tokens.to_string());
        one("kvserve_prefix_cache_evictions_total", "counter", "Cached KV blocks evicted for room.", l.prefix_evicted_blocks.to_string());
        one("kvserve_engine_steps_total", "counter", "Engine steps that ran the model.", m.steps.to_string());
        one("kvserve_prompt_tokens_total", "counter", "Prompt tokens accepted.", m.prompt.to_string());
        one("kvserve_generation_tokens_total", "counter", "Tokens generated by finished sequences.", m.generated.to_string());
        one("kvserve_requests_aborted_total", "counter", "Requests aborted (client gone or stop string).", m.aborted.to_string());
        one("kvserve_server_requests_live", "gauge", "Requests the engine thread has a record of.", m.live.to_string());
        one("kvserve_server_requests_queued", "gauge", "Admission slots taken (requests not started yet).", m.queued.to_string());
        one("kvserve_server_aborts_pending", "gauge", "Aborts not yet taken in by the engine thread.", m.aborts_pending.to_string());
        one("kvserve_engine_dead", "gauge", "1 once the engine has failed or panicked.", u8::from(m.dead).to_string());
        let _ = writeln!(out, "# HELP kvserve_sequences_finished_total Sequences finished, by reason.");
        let _ = writeln!(out, "# TYPE kvserve_sequences_finished_total counter");
        for (i, r) in [FinishReason::Eos, FinishReason::Length, FinishReason::ContextFull].iter().enumerate() {
            let _ = writeln!(out, "kvserve_sequences_finished_total{{reason=\"{r:?}\"}} {}", m.finished[i]);
        }
        m.ttft.render(&mut out, "kvserve_time_to_first_token_seconds", "Arrival at the engine to first token.");
        m.tpot.render(&mut out, "kvserve_time_per_output_token_seconds", "Mean gap between a sequence's tokens.");
        out
    }
    // ANCHOR_END: render
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        [0.05, 0.5, 5.0].iter().for_each(|&v| h.observe(v));
        let mut s = String::new();
        h.render(&mut s, "x", "help");
        assert!(s.contains("x_bucket{le=\"0.1\"} 1\nx_bucket{le=\"1\"} 2\nx_bucket{le=\"+Inf\"} 3\nx_sum 5.55\nx_count 3"), "{s}");
    }
}
