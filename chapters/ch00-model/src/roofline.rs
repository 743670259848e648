//! The memory roofline of a CPU decode step: a step must read every weight once, so no step can
//! be faster than (weight bytes) ÷ (how fast this machine's cores read memory), measured here.

use crate::config::LlamaConfig;
use crate::cpu::kernels::LANES;
use crate::dtype::DType;
use crate::cpu::pages::WeightMemory;
use rayon::prelude::*;
use std::time::Instant;

// ANCHOR: weight_bytes
/// Bytes of weights kept as `dtype` one decode step reads: every layer's matrices and norms, the
/// final norm and the output projection (the embedding when tied). The input embedding is a
/// lookup of one row per token, so an untied embedding table is not read. Half precision halves
/// the floor (the norms, kept in f32, are counted at the same width: a rounding error).
pub fn weight_bytes_per_step(c: &LlamaConfig, dtype: DType) -> u64 {
    let untied_embed = if c.tie_word_embeddings { 0 } else { c.vocab_size as u64 * c.hidden_size as u64 };
    dtype.bytes() * (c.param_count() - untied_embed)
}
// ANCHOR_END: weight_bytes

// ANCHOR: read_bandwidth
/// How fast all cores together read a `bytes`-long buffer (far larger than the caches), in bytes
/// per second: the best of `repeats` passes, each core summing its share of the buffer. The
/// buffer is on huge pages where the OS allows it, like the model's weights.
pub fn read_bandwidth(bytes: usize, repeats: usize) -> f64 {
    let mut buf = WeightMemory::<f32>::zeros(bytes / 4); // on huge pages, as the weights are
    buf.fill(1.0); // written once, so every page is really there
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        let total: f32 = buf.par_chunks(1 << 16).map(sum).sum();
        best = best.min(start.elapsed().as_secs_f64());
        std::hint::black_box(total);
    }
    (buf.len() * 4) as f64 / best
}
// ANCHOR_END: read_bandwidth

/// A sum with four independent accumulators of `LANES` each, which the compiler turns into
/// vector adds: fast enough that memory, not the adds, is what limits it.
fn sum(v: &[f32]) -> f32 {
    let mut acc = [[0.0f32; LANES]; 4];
    let mut blocks = v.chunks_exact(4 * LANES);
    for block in &mut blocks {
        for (a, part) in acc.iter_mut().zip(block.chunks_exact(LANES)) {
            for (a, &x) in a.iter_mut().zip(part) {
                *a += x;
            }
        }
    }
    acc.iter().flatten().sum::<f32>() + blocks.remainder().iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tied_model_reads_its_embedding_once_an_untied_one_only_its_head() {
        let tied = LlamaConfig::named("bench").unwrap();
        assert_eq!(weight_bytes_per_step(&tied, DType::F32), 4 * tied.param_count());
        assert_eq!(weight_bytes_per_step(&tied, DType::BF16), 2 * tied.param_count());
        let untied = LlamaConfig::named("tiny").unwrap();
        let embed = (untied.vocab_size * untied.hidden_size) as u64;
        assert_eq!(weight_bytes_per_step(&untied, DType::F32), 4 * (untied.param_count() - embed));
    }

    #[test]
    fn bandwidth_is_positive_and_the_sum_counts_every_element() {
        assert!(read_bandwidth(1 << 20, 2) > 0.0);
        let v = vec![1.0f32; 4 * LANES * 3 + 5];
        assert_eq!(sum(&v), v.len() as f32);
    }
}
