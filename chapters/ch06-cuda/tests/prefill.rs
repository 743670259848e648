//! Every prefill attention kernel (prefill.rs) against the CPU reference, outputs poisoned (NaN)
//! first so a row the kernel forgot shows up: f32 (simple version only), f16 and bf16 (simple,
//! mma.sync tensor cores, and on a Hopper GPU the wgmma version at head sizes 64 and 128); head
//! sizes 16 to 256; GQA ratios 1 to 6; block sizes that do and do not divide the tiles; sequences
//! of 1 to 300 query rows after cached prefixes of 0 to 450 positions, all in one pass (a mixed
//! step, chunked prefill and prefix hits look like this). Thresholds are
//! relative errors ‖gpu − cpu‖ / ‖cpu‖: f32 1e-5, f16 4e-3, bf16 3e-2.
//! Run on the GPU machine: `.gpu/prefill-<hash> --ignored --nocapture`.

use ch00_model::{AttnShape, DType, Model};
use ch00_serving::{Engine, Request, RunOptions};
use ch05_paged_attention::PagedEngine;
use ch06_cuda::device::{ptr, Gpu};
use ch06_cuda::prefill::{reference, PrefillIo, PrefillKernels, PrefillVersion};
use ch06_cuda::{CudaEngine, GpuFloat};
use half::{bf16, f16};
use std::path::Path;

mod common;
use common::*;

/// (query rows, cached prefix) per sequence of the pass.
/// (300, 450): more K/V tiles than any kernel keeps in shared memory, so its buffers wrap.
const SEQS: [(usize, usize); 10] = [(1, 0), (17, 0), (64, 0), (100, 0), (130, 37), (5, 200), (64, 64), (200, 3), (1, 70), (300, 450)];

// ANCHOR: prefill_test
fn prefill_case<T: GpuFloat>(g: &Gpu, shape: AttnShape, block_size: usize, seed: u64) {
    let tc = [(8, 1, 64), (4, 1, 64), (4, 2, 32), (4, 2, 64), (2, 1, 128)].map(|(warps, m_tiles, keys)| PrefillVersion::TensorCores { warps, m_tiles, keys });
    // The engine's wgmma shape first, both tile sizes with and without the overlap, one warpgroup alone.
    let wg = [(3, 64, 2, false), (3, 64, 3, true), (2, 128, 3, true), (2, 128, 2, false), (1, 128, 2, false)]
        .map(|(warpgroups, keys, stages, overlap)| PrefillVersion::Wgmma { warpgroups, keys, stages, overlap });
    let k = PrefillKernels::new::<T>(g, shape, &[&wg[..], &tc[..]].concat()).unwrap();
    let mut rng = Rng(seed);
    let ctx_max = SEQS.iter().map(|(l, p)| l + p).max().unwrap();
    let max_blocks = ctx_max.div_ceil(block_size);
    let num_blocks = SEQS.len() * max_blocks + 5;
    let kv_dim = shape.kv_dim();
    let kc = round::<T>(&rng.vec(num_blocks * block_size * kv_dim));
    let vc = round::<T>(&rng.vec(num_blocks * block_size * kv_dim));
    // Each sequence's table: distinct blocks drawn at random from the pool.
    let mut free: Vec<i32> = (0..num_blocks as i32).collect();
    let mut tables = vec![0i32; SEQS.len() * max_blocks];
    for t in tables.iter_mut() {
        *t = free.swap_remove(rng.below(free.len()));
    }
    let (mut seq_start, mut pos) = (vec![0i32], Vec::new());
    for &(l, p) in &SEQS {
        pos.extend((p..p + l).map(|x| x as i32));
        seq_start.push(pos.len() as i32);
    }
    let n = pos.len();
    let q = round::<T>(&rng.vec(n * shape.q_dim()));
    let want = reference(shape, &q, &kc, &vc, &tables, max_blocks, block_size, &seq_start, &pos);
    let (kd, vd, qd) = (up::<T>(g, &kc), up::<T>(g, &vc), up::<T>(g, &q));
    let (td, sd, pd) = (g.upload("t", &tables).unwrap(), g.upload("s", &seq_start).unwrap(), g.upload("p", &pos).unwrap());
    let max_q_len = SEQS.iter().map(|s| s.0).max().unwrap();
    let mut versions = vec![PrefillVersion::Simple];
    let half = matches!(T::C_NAME, "f16" | "bf16");
    if half && ch06_cuda::prefill::WGMMA_HEAD_DIMS.contains(&shape.head_dim) && g.compute_capability().unwrap() == (9, 0) {
        versions.extend(wg);
    }
    if half && ch06_cuda::prefill::TC_HEAD_DIMS.contains(&shape.head_dim) {
        versions.extend(tc);
    }
    assert_eq!(k.best(), versions.get(1).copied().unwrap_or(PrefillVersion::Simple));
    assert!(versions.iter().all(|v| k.has(*v)), "a version that applies here was not compiled");
    for version in versions {
        let out = up::<T>(g, &vec![f32::NAN; n * shape.q_dim()]);
        let io = PrefillIo {
            q: ptr(g, &qd),
            k_cache: ptr(g, &kd),
            v_cache: ptr(g, &vd),
            tables: ptr(g, &td),
            seq_start: ptr(g, &sd),
            pos: ptr(g, &pd),
            out: ptr(g, &out),
        };
        // SAFETY: the buffers above hold n rows of q and out, the pool's K/V, one table row per
        // sequence of distinct pool blocks covering its context, seq_start from 0 to n with no
        // run over max_q_len, and consecutive positions per sequence.
        unsafe { k.launch(g, &io, version, SEQS.len(), max_q_len, block_size, max_blocks) }.unwrap();
        let got = down::<T>(g, &out);
        let e = rel_err(&format!("{version:?}"), &got, &want);
        println!("prefill {} {shape:?} block {block_size} {version:?}: rel err {e:.2e}", T::C_NAME);
        assert!(e < tol::<T>(), "{} {shape:?} block {block_size} {version:?}: rel err {e:.2e}", T::C_NAME);
    }
}
// ANCHOR_END: prefill_test

const SHAPES: [AttnShape; 6] = [
    AttnShape { heads: 4, kv_heads: 4, head_dim: 128 },
    AttnShape { heads: 6, kv_heads: 2, head_dim: 128 },
    AttnShape { heads: 8, kv_heads: 2, head_dim: 64 },
    AttnShape { heads: 6, kv_heads: 1, head_dim: 32 },
    AttnShape { heads: 4, kv_heads: 2, head_dim: 256 },
    AttnShape { heads: 3, kv_heads: 3, head_dim: 16 },
];

#[test]
#[ignore = "needs a CUDA GPU"]
fn prefill_kernels_match_the_cpu_reference_f16() {
    let g = Gpu::new(0).unwrap();
    for (i, s) in SHAPES.iter().enumerate() {
        prefill_case::<f16>(&g, *s, [16, 5][i % 2], 10 + i as u64);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn prefill_kernels_match_the_cpu_reference_bf16() {
    let g = Gpu::new(0).unwrap();
    for (i, s) in SHAPES.iter().enumerate() {
        prefill_case::<bf16>(&g, *s, [5, 16][i % 2], 20 + i as u64);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn prefill_simple_kernel_matches_the_cpu_reference_f32() {
    let g = Gpu::new(0).unwrap();
    for (i, s) in SHAPES.iter().enumerate() {
        prefill_case::<f32>(&g, *s, [16, 7][i % 2], 30 + i as u64);
    }
}

/// The engine with the prefill kernel and with the per-token kernel on the shipped model in f16
/// (tensor cores at head size 32): the same greedy tokens, nearly always, and close logits.
#[test]
#[ignore = "needs a CUDA GPU"]
fn the_engine_s_prefill_kernel_agrees_with_the_per_token_kernel() {
    let dir = ["models/shakespeare", "../../models/shakespeare"].into_iter().map(Path::new).find(|d| d.join("config.json").exists());
    let model = Model::load(dir.map(Path::to_path_buf).unwrap_or_else(ch00_model::default_model_dir).as_path()).unwrap();
    let v = model.config.vocab_size;
    let reqs: Vec<Request> = (0..6)
        .map(|i| {
            let prompt = (0..[5, 70, 300, 2, 129, 33][i]).map(|j| ((i * 131 + j * 17 + 5) % (v - 3) + 3) as u32).collect();
            Request { ignore_eos: true, ..Request::greedy(i as u64, prompt, 6) }
        })
        .collect();
    let opts = RunOptions { record_logits: true, ..Default::default() };
    let run = |prefill_kernel: bool, max_tokens_per_pass: usize| {
        let mut e = CudaEngine {
            dtype: Some(DType::F16),
            paged: PagedEngine { max_len: Some(512), ..Default::default() },
            num_blocks: Some(1024),
            prefill_kernel,
            max_tokens_per_pass,
            ..Default::default()
        };
        e.run(&model, &reqs, &opts).unwrap()
    };
    let old = run(false, 4096);
    for pass in [4096, 50] {
        let new = run(true, pass);
        let mut worst = 0.0f32;
        for (a, b) in old.outputs.iter().zip(&new.outputs) {
            let (x, y) = (&a.logits[0], &b.logits[0]); // the prefill's logits
            let spread = x.iter().fold(f32::MIN, |m, v| m.max(*v)) - x.iter().fold(f32::MAX, |m, v| m.min(*v));
            worst = worst.max(x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max) / spread);
        }
        let same = old.outputs.iter().zip(&new.outputs).filter(|(a, b)| a.tokens == b.tokens).count();
        println!("passes of {pass}: first-token logits within {worst:.2e} of their spread; {same}/6 requests' tokens identical");
        assert!(worst < 0.02, "prefill kernel logits differ by {worst:.2e} of their spread");
        assert!(same >= 4, "only {same}/6 requests agree");
    }
}
