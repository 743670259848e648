//! Chapter 6's [`PagedRunner`]: the ch05 loop and block scheduler hand it each step's spans and
//! block tables; it turns them into one metadata upload and one GPU pass (or several, when a
//! long prefill exceeds the pass's buffers), and only token ids come back.

use crate::device::{device_err, ptr, Gpu};
use crate::float::GpuFloat;
use crate::model::{Capacity, GpuModel, KvCache, PassAttention};
use crate::prefill::seq_starts;
use crate::roofline::{Ceilings, StepShape};
use ch00_model::{DType, LlamaConfig, ModelError, Result};
use ch00_serving::{Clock, RunOptions, SeqTable, Span, TokenSource};
use ch05_paged_attention::{BlockId, PagedRunner};
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaGraph};
use std::collections::BTreeMap;

/// Counters of what the runner did, for the bench report.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GpuStats {
    pub passes: usize,
    pub graph_replays: usize,
    pub graphs_captured: usize,
    /// Copy-on-write block copies (parallel sampling).
    pub block_copies: usize,
    /// With `ceilings` set: seconds of device time of the passes (CUDA events, from the metadata
    /// upload to the last launch), and the steps' roofline (`roofline::Ceilings::step_s`).
    pub gpu_s: f64,
    pub roofline_s: f64,
    /// The same two sums split by kind of step: where the gap to the roofline is.
    pub decode: StepClass,
    pub prefill: StepClass,
}

/// Steps of one kind (decode only; with prompt tokens): how many, their device time and roofline.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct StepClass {
    pub steps: usize,
    pub tokens: usize,
    pub gpu_s: f64,
    pub roofline_s: f64,
}

pub struct GpuRunner<T> {
    pub gpu: Gpu,
    pub model: GpuModel<T>,
    pub kv: KvCache<T>,
    /// Decode batch sizes captured as graphs (1, 2, 4, 8, …); empty = CUDA graphs off.
    pub graph_sizes: Vec<usize>,
    graphs: BTreeMap<usize, CudaGraph>,
    /// Measure each step against the card's ceilings, and time each pass (off: no events).
    pub ceilings: Option<Ceilings>,
    timer: Option<(CudaEvent, CudaEvent)>,
    /// Context partitions at the longest allowed sequence: the decode graphs' fixed grid.
    max_parts: usize,
    host_meta: Vec<i32>,
    pub stats: GpuStats,
    /// Prefill passes (some sequence with several query rows) run the prefill kernel
    /// (prefill.rs); off, every pass runs the per-token paged kernel.
    pub prefill_kernel: bool,
}

/// One token of the step, flattened: which span (table row) it belongs to and where it goes.
#[derive(Debug, Clone, Copy)]
struct Tok {
    token: u32,
    pos: usize,
    span: usize,
    /// Whether its logits pick the span's next token (the span's last token).
    last: bool,
}

// ANCHOR: graph_sizes
/// vLLM's capture ladder: 1, 2, 4, 8, then every multiple of 8 up to 32, every 16 up to `max`…
/// kept short here: powers of two and their midpoints, so padding wastes at most a third.
pub fn graph_sizes(max: usize) -> Vec<usize> {
    let mut sizes = vec![];
    let mut b = 1;
    while b <= max {
        sizes.push(b);
        if b >= 4 && b + b / 2 <= max {
            sizes.push(b + b / 2);
        }
        b *= 2;
    }
    sizes
}
// ANCHOR_END: graph_sizes

impl<T: GpuFloat> GpuRunner<T> {
    pub fn new(gpu: Gpu, model: GpuModel<T>, kv: KvCache<T>, max_len: usize, cuda_graphs: bool) -> Self {
        let max_parts = GpuModel::<T>::parts_for(max_len);
        let cap = model.cap;
        let largest = cap.max_rows.min(cap.max_tokens).min(cap.max_query_parts / max_parts);
        let graph_sizes = if cuda_graphs { graph_sizes(largest.min(512)) } else { vec![] };
        let host_meta = vec![0; model.layout.len];
        GpuRunner {
            gpu,
            model,
            kv,
            graph_sizes,
            graphs: BTreeMap::new(),
            ceilings: None,
            timer: None,
            max_parts,
            host_meta,
            stats: GpuStats::default(),
            prefill_kernel: true,
        }
    }

    /// Writes the metadata of tokens `toks` (rows = the spans they touch) into the host buffer.
    /// Rows past `toks`'s spans up to `pad_rows` are padding: slot −1, context 0. The ids that the
    /// kernels index by are checked (tokens against the vocabulary, tables against the pool), so
    /// what it writes meets `GpuModel::forward`'s contract (with partitions for `toks`' contexts).
    fn fill_meta(&mut self, toks: &[Tok], tables: &[&[BlockId]], pad_to: usize) -> Result<Vec<usize>> {
        let (l, bs, mb) = (self.model.layout, self.kv.block_size, self.model.cap.max_blocks);
        let (vocab, blocks) = (self.model.config.vocab_size, self.kv.num_blocks);
        let m = &mut self.host_meta;
        let first_span = toks.first().map_or(0, |t| t.span);
        let mut logit_spans = Vec::new();
        for (i, t) in toks.iter().enumerate() {
            let row = t.span - first_span;
            let table = tables[t.span];
            let block = *table.get(t.pos / bs).ok_or_else(|| {
                ModelError::InvalidBatch(format!("position {} is beyond a block table of {} blocks", t.pos, table.len()))
            })?;
            if t.token as usize >= vocab {
                return Err(ModelError::InvalidBatch(format!("token {} is beyond the vocabulary of {vocab}", t.token)));
            }
            m[l.tokens + i] = t.token as i32;
            m[l.pos + i] = t.pos as i32;
            m[l.slot + i] = (block * bs + t.pos % bs) as i32;
            m[l.rows + i] = row as i32;
            m[l.ctx + i] = t.pos as i32 + 1;
            if t.last {
                m[l.logit_idx + logit_spans.len()] = i as i32;
                logit_spans.push(t.span);
            }
        }
        for i in toks.len()..pad_to {
            (m[l.tokens + i], m[l.pos + i], m[l.slot + i], m[l.rows + i], m[l.ctx + i]) = (0, 0, -1, 0, 0);
            m[l.logit_idx + i] = i as i32;
        }
        let spans = toks.last().map_or(0, |t| t.span + 1 - first_span);
        for r in 0..spans {
            let table = tables[first_span + r];
            if table.len() > mb {
                return Err(ModelError::InvalidBatch(format!("a block table of {} blocks exceeds {mb}", table.len())));
            }
            let row = &mut m[l.tables + r * mb..l.tables + (r + 1) * mb];
            row.fill(0);
            for (dst, &b) in row.iter_mut().zip(table) {
                if b >= blocks {
                    return Err(ModelError::InvalidBatch(format!("block {b} is beyond the pool of {blocks}")));
                }
                *dst = b as i32;
            }
        }
        Ok(logit_spans)
    }

    // ANCHOR: decode_graph
    /// Captures the decode graph of every size of the ladder, at start-up, so that no request
    /// waits for a capture (done lazily, the first step of each size ran eagerly and then
    /// recorded itself, inside somebody's TTFT). Each size runs once eagerly first, on padding
    /// rows only (no KV written), so that cuBLAS has picked its kernels before it is recorded.
    pub fn capture_graphs(&mut self) -> Result<()> {
        for size in self.graph_sizes.clone() {
            self.fill_meta(&[], &[], size)?;
            self.model.upload_meta(&self.gpu, &self.host_meta)?;
            self.capture(size)?;
        }
        Ok(())
    }

    /// A decode step of `n` sequences as a graph replay, padded up to the next captured size (a
    /// size not captured yet is captured first).
    fn decode_with_graph(&mut self, toks: &[Tok], tables: &[&[BlockId]], size: usize) -> Result<()> {
        if let Some(t) = toks.iter().find(|t| parts_for(t.pos + 1) > self.max_parts) {
            return Err(ModelError::InvalidBatch(format!("position {} is beyond the longest sequence the graphs cover", t.pos)));
        }
        self.fill_meta(toks, tables, size)?;
        if !self.graphs.contains_key(&size) {
            self.model.upload_meta(&self.gpu, &self.host_meta)?;
            self.capture(size)?;
        }
        self.timer_start()?;
        self.model.upload_meta(&self.gpu, &self.host_meta)?;
        let graph = self.graphs.get(&size).ok_or_else(|| ModelError::Device(format!("no graph of size {size}")))?;
        graph.launch().map_err(|e| device_err("replaying a CUDA graph", e))?;
        self.stats.graph_replays += 1;
        self.timer_end()
    }

    /// Runs a decode pass of `size` rows over the metadata on the device, then records the same
    /// launches as the graph of that size (the eager run's results are overwritten by the replay).
    fn capture(&mut self, size: usize) -> Result<()> {
        // SAFETY: the metadata on the device was written by `fill_meta` (checked ids, padded to
        // `size`, every context within `max_parts` partitions); model and cache are this runner's
        // own, on its GPU. Replays read the metadata of later steps, written the same way.
        unsafe { self.model.forward(&self.gpu, &self.kv, size, size, self.max_parts)? };
        let stream = self.gpu.stream.clone();
        stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(|e| device_err("begin capture", e))?;
        // SAFETY: as above.
        let captured = unsafe { self.model.forward(&self.gpu, &self.kv, size, size, self.max_parts) };
        let graph = stream.end_capture(CUgraphInstantiate_flags(0)).map_err(|e| device_err("end capture", e))?;
        captured?;
        let graph = graph.ok_or_else(|| ModelError::Device("stream capture recorded nothing".into()))?;
        self.graphs.insert(size, graph);
        self.stats.graphs_captured += 1;
        Ok(())
    }
    // ANCHOR_END: decode_graph
}

/// Splits a step's tokens into passes that fit the buffers: at most `max_tokens` tokens,
/// `max_rows` sequences and, when every pass runs the paged kernel (`partitions`),
/// `max_query_parts` query × partition pairs per pass, in order. (With the prefill kernel on,
/// only all-decode passes use partitions, and `engine::capacity` sizes those for `max_rows`.)
fn split_passes(toks: &[Tok], cap: Capacity, partitions: bool) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut longest) = (0, 0);
    for (i, t) in toks.iter().enumerate() {
        let longest_with = longest.max(t.pos + 1);
        let n = i + 1 - start;
        let rows = t.span + 1 - toks[start].span;
        let too_big = n > cap.max_tokens || rows > cap.max_rows || (partitions && n * parts_for(longest_with) > cap.max_query_parts);
        if i > start && too_big {
            out.push(start..i);
            start = i;
            longest = t.pos + 1;
        } else {
            longest = longest_with;
        }
    }
    if start < toks.len() {
        out.push(start..toks.len());
    }
    out
}

fn parts_for(ctx: usize) -> usize {
    GpuModel::<f32>::parts_for(ctx)
}

impl<T: GpuFloat> PagedRunner for GpuRunner<T> {
    fn config(&self) -> &LlamaConfig {
        &self.model.config
    }

    fn kv_dtype(&self) -> DType {
        T::DTYPE
    }

    // ANCHOR: copy_blocks
    /// Copy-on-write for parallel sampling (`n` > 1): every layer's K and V rows of block `src`
    /// into block `dst`, before the step, in stream order (so before the step's kernels read them).
    /// Copies that do not read each other's destinations run as one launch per layer.
    fn copy_blocks(&mut self, copies: &[(BlockId, BlockId)]) -> Result<()> {
        if copies.is_empty() {
            return Ok(());
        }
        let blocks = self.kv.num_blocks;
        if let Some(&(s, d)) = copies.iter().find(|&&(s, d)| s >= blocks || d >= blocks) {
            return Err(ModelError::InvalidBatch(format!("copy of block {s} to {d} in a pool of {blocks}")));
        }
        // Copies must behave as if run in order. When a copy writes a block another one reads or
        // writes (a block freed and reused within one schedule), run them one launch at a time.
        let clash = |i: usize, d: BlockId| copies.iter().enumerate().any(|(j, &(s, dj))| j != i && (s == d || dj == d));
        let ordered = copies.iter().enumerate().any(|(i, &(_, d))| clash(i, d));
        if ordered && copies.len() > 1 {
            return copies.iter().try_for_each(|c| self.copy_blocks(std::slice::from_ref(c)));
        }
        let (src, dst): (Vec<i32>, Vec<i32>) = copies.iter().map(|&(s, d)| (s as i32, d as i32)).unzip();
        let (src, dst) = (self.gpu.upload("copy-on-write ids", &src)?, self.gpu.upload("copy-on-write ids", &dst)?);
        let c = &self.model.config;
        let block_elems = self.kv.block_size * c.kv_dim();
        let elem = std::mem::size_of::<T>() as u64;
        let (k0, v0) = (ptr(&self.gpu, &self.kv.k), ptr(&self.gpu, &self.kv.v));
        for layer in 0..c.num_hidden_layers {
            let off = (layer * self.kv.layer_elems) as u64 * elem;
            let (s, d) = (ptr(&self.gpu, &src), ptr(&self.gpu, &dst));
            // SAFETY: k0 + off and v0 + off start layer `layer`'s caches of `num_blocks` blocks of
            // `block_elems` each; `src` and `dst` hold `copies.len()` ids of those blocks (checked),
            // no destination another copy's source or destination (else one launch per copy).
            unsafe { self.model.kernels.copy_blocks(&self.gpu, k0 + off, v0 + off, s, d, copies.len(), block_elems)? };
        }
        self.stats.block_copies += copies.len();
        Ok(())
    }
    // ANCHOR_END: copy_blocks

    // ANCHOR: step
    fn step(&mut self, seqs: &mut SeqTable, spans: &[Span], tables: Vec<Vec<BlockId>>, clock: &Clock, opts: &RunOptions) -> Result<()> {
        // Flatten: every span's tokens from its start to its end, in order.
        let mut toks = Vec::new();
        for (i, s) in spans.iter().enumerate() {
            let seq = seqs.get(s.seq)?;
            let (end, len) = (s.start + s.len, seq.tokens.len());
            if s.len == 0 || end > len || s.slot != i || s.padding.is_some() {
                return Err(ModelError::InvalidBatch(format!("span {i} of {} feeds nothing", s.seq)));
            }
            // Only a span that reaches the sequence's end picks a token (a chunk from the middle
            // of a prompt, chunked prefill, only writes its K/V).
            toks.extend((s.start..end).map(|p| Tok { token: seq.tokens[p], pos: p, span: i, last: p + 1 == len }));
        }
        let tables: Vec<&[BlockId]> = tables.iter().map(|t| t.as_slice()).collect();
        if tables.len() != spans.len() {
            return Err(ModelError::InvalidBatch(format!("{} block tables for {} spans", tables.len(), spans.len())));
        }
        let (gpu_before, mut step_roofline) = (self.stats.gpu_s, 0.0);
        if let Some(ceilings) = self.ceilings {
            let shape = StepShape {
                tokens: toks.len(),
                logit_rows: toks.iter().filter(|t| t.last).count(),
                attended: toks.iter().map(|t| t.pos as u64 + 1).sum(),
                kv_positions: spans.iter().map(|s| s.start as u64).sum(),
            };
            step_roofline = ceilings.step_s(&self.model.config, std::mem::size_of::<T>(), &shape);
            self.stats.roofline_s += step_roofline;
        }
        let decode_only = toks.len() == spans.len() && toks.iter().all(|t| t.last);
        let mut chosen = vec![None; spans.len()];
        let graph_size = self.graph_sizes.iter().copied().find(|&b| b >= toks.len());
        match graph_size {
            // A decode step (one token per sequence, each picking its next) that a captured graph can take.
            Some(size) if decode_only => {
                self.decode_with_graph(&toks, &tables, size)?;
                self.stats.passes += 1;
                let all: Vec<usize> = (0..spans.len()).collect();
                self.collect(&all, seqs, spans, opts, &mut chosen)?;
            }
            _ => {
                for range in split_passes(&toks, self.model.cap, !self.prefill_kernel) {
                    self.eager_pass(&toks[range], &tables, seqs, spans, opts, &mut chosen)?;
                }
            }
        }
        let class = if decode_only { &mut self.stats.decode } else { &mut self.stats.prefill };
        class.steps += 1;
        class.tokens += toks.len();
        class.gpu_s += self.stats.gpu_s - gpu_before;
        class.roofline_s += step_roofline;
        let now = clock.now_s();
        let picks: Vec<bool> = spans.iter().map(|s| s.start + s.len == seqs.tokens(s.seq).len()).collect();
        for (i, s) in spans.iter().enumerate().filter(|&(i, _)| picks[i]) {
            match chosen[i].take() {
                Some((_, Some(logits))) => {
                    seqs.get_mut(s.seq)?.accept(&logits, now, opts);
                }
                Some((id, None)) => seqs.get_mut(s.seq)?.accept_token(id, now),
                None => return Err(ModelError::InvalidBatch(format!("span {i} got no token"))),
            }
        }
        Ok(())
    }
    // ANCHOR_END: step
}

type Chosen = Option<(u32, Option<Vec<f32>>)>;

impl<T: GpuFloat> GpuRunner<T> {
    /// With ceilings set, records the start of a pass's device work.
    fn timer_start(&mut self) -> Result<()> {
        if self.ceilings.is_none() {
            return Ok(());
        }
        if self.timer.is_none() {
            let ev = || self.gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| device_err("creating an event", e));
            self.timer = Some((ev()?, ev()?));
        }
        let (start, _) = self.timer.as_ref().ok_or_else(|| ModelError::Device("no timer".into()))?;
        start.record(&self.gpu.stream).map_err(|e| device_err("recording an event", e))
    }

    /// With ceilings set, waits for the pass and adds its device time.
    fn timer_end(&mut self) -> Result<()> {
        let Some((start, end)) = self.timer.as_ref().filter(|_| self.ceilings.is_some()) else { return Ok(()) };
        end.record(&self.gpu.stream).map_err(|e| device_err("recording an event", e))?;
        end.synchronize().map_err(|e| device_err("waiting for an event", e))?;
        self.stats.gpu_s += start.elapsed_ms(end).map_err(|e| device_err("event time", e))? as f64 * 1e-3;
        Ok(())
    }

    /// One pass over `part` of the step's tokens, without a graph.
    fn eager_pass(
        &mut self,
        part: &[Tok],
        tables: &[&[BlockId]],
        seqs: &SeqTable,
        spans: &[Span],
        opts: &RunOptions,
        chosen: &mut [Chosen],
    ) -> Result<()> {
        let logit_spans = self.fill_meta(part, tables, 0)?;
        if logit_spans.is_empty() {
            // A chunk from the middle of a long prompt: only its K/V matters; one logits row is
            // computed and ignored.
            self.host_meta[self.model.layout.logit_idx] = 0;
        }
        // Before the upload: it writes the sequences' query rows into the metadata.
        let attn = self.pass_attention(part)?;
        self.timer_start()?;
        self.model.upload_meta(&self.gpu, &self.host_meta)?;
        // SAFETY: `fill_meta` wrote checked metadata for these tokens, and `pass_attention`
        // either the partitions covering the longest of their contexts or the sequences' query
        // rows; model and cache are this runner's own, on its GPU.
        unsafe { self.model.forward_with(&self.gpu, &self.kv, part.len(), logit_spans.len().max(1), attn)? };
        self.timer_end()?;
        self.stats.passes += 1;
        match logit_spans.is_empty() {
            true => Ok(()),
            false => self.collect(&logit_spans, seqs, spans, opts, chosen),
        }
    }

    // ANCHOR: pass_attention
    /// The one place a pass's attention kernel is chosen, after `fill_meta`: when some sequence
    /// has more than one query row in the pass (a prompt, a chunk of one, the rows after a cached
    /// prefix), the prefill kernel, given each sequence's query rows (`seq_start` in the
    /// metadata, written here); otherwise (decode) the per-token paged kernel over partitions.
    fn pass_attention(&mut self, part: &[Tok]) -> Result<PassAttention> {
        let l = self.model.layout;
        let longest = part.iter().map(|t| t.pos + 1).max().unwrap_or(1);
        let paged = PassAttention::Paged { parts: GpuModel::<T>::parts_for(longest) };
        if !self.prefill_kernel {
            return Ok(paged);
        }
        let (rows, starts) = self.host_meta[l.rows..].split_at_mut(l.seq_start - l.rows);
        let starts = &mut starts[..self.model.cap.max_rows + 1];
        Ok(match seq_starts(&rows[..part.len()], starts) {
            Some((seqs, max_q_len)) if max_q_len > 1 => {
                PassAttention::Prefill { seqs, max_q_len, version: self.model.kernels.prefill.best() }
            }
            _ => paged,
        })
    }
    // ANCHOR_END: pass_attention

    /// Reads back the last pass's greedy ids, and the logits rows of sequences that sample.
    fn collect(
        &self,
        logit_spans: &[usize],
        seqs: &SeqTable,
        spans: &[Span],
        opts: &RunOptions,
        chosen: &mut [Chosen],
    ) -> Result<()> {
        let ids = self.model.ids(&self.gpu, logit_spans.len())?;
        if ids.len() != logit_spans.len() {
            return Err(ModelError::Device(format!("{} ids for {} rows", ids.len(), logit_spans.len())));
        }
        for (row, (&span, &id)) in logit_spans.iter().zip(&ids).enumerate() {
            let logits = match seqs.get(spans[span].seq)?.needs_logits(opts) {
                true => Some(self.model.logits_row(&self.gpu, row)?),
                false => None,
            };
            chosen[span] = Some((id, logits));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_graph_ladder_is_powers_of_two_and_midpoints() {
        assert_eq!(graph_sizes(64), vec![1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64]);
        assert_eq!(graph_sizes(1), vec![1]);
        assert!(graph_sizes(0).is_empty());
    }

    proptest! {
        /// Passes cover every token once, in order, and each fits the buffers (unless a single
        /// token alone is already too big, which then runs alone).
        #[test]
        fn passes_cover_the_step_and_fit(lens in proptest::collection::vec(1usize..300, 1..12),
                                         max_tokens in 1usize..200, max_rows in 1usize..5) {
            let mut toks = Vec::new();
            for (span, &len) in lens.iter().enumerate() {
                for pos in 0..len {
                    toks.push(Tok { token: 1, pos: pos + 3 * span, span, last: pos + 1 == len });
                }
            }
            let cap = Capacity { max_tokens, max_rows, max_blocks: 64, max_query_parts: max_tokens * 2 };
            let passes = split_passes(&toks, cap, true);
            let mut next = 0;
            for r in &passes {
                prop_assert_eq!(r.start, next);
                prop_assert!(r.end > r.start);
                next = r.end;
                let p = &toks[r.clone()];
                let rows = p.last().unwrap().span + 1 - p[0].span;
                let longest = p.iter().map(|t| t.pos + 1).max().unwrap();
                let fits = p.len() <= cap.max_tokens && rows <= cap.max_rows && p.len() * parts_for(longest) <= cap.max_query_parts;
                prop_assert!(fits || p.len() == 1, "pass {:?} does not fit {:?}", r, cap);
            }
            prop_assert_eq!(next, toks.len());
        }
    }
}
