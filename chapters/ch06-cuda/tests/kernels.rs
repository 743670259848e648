//! Every kernel against its CPU reference (ch00's functions) on fresh random inputs, with the
//! output poisoned (NaN) first so an element the kernel forgot to write shows up.
//! Thresholds are relative errors ‖gpu − cpu‖ / ‖cpu‖ per precision: f32 1e-5, f16 4e-3, bf16 3e-2.
//! Run on the GPU machine: `.gpu/kernels-<hash> --ignored --nocapture`.

use ch00_model::{ops::{linear, rms_norm, swiglu}};
use ch00_model::cpu::packed::Packed;
use ch00_model::rope::Rope;
use ch00_model::{attend_one, AttnShape, LlamaConfig};
use ch06_cuda::device::{ptr, Gpu};
use ch06_cuda::kernels::{linear as gpu_linear, AttentionIo, Kernels, NormIn, MIN_PART, PART};
use ch06_cuda::weights::interleave_halves;
use ch06_cuda::GpuFloat;
use half::{bf16, f16};
use ndarray::{Array1, Array2};
mod common;
use common::*;

// ANCHOR: attention_test
/// Paged attention of query tokens with assorted context lengths (inside one partition, exactly
/// at its edge, across several), K/V scattered over a shuffled pool, against ch00's attend_one.
fn attention_case<T: GpuFloat>(g: &Gpu, shape: AttnShape, block_size: usize, seed: u64) {
    // No spare room (one partition per PART positions), then room for the finest split; the
    // partitions merged by a launch of their own, then by the attention blocks themselves.
    for spare in [1, PART / MIN_PART] {
        for fold in [false, true] {
            attention_case_in::<T>(g, shape, block_size, seed, spare, fold);
        }
    }
}

fn attention_case_in<T: GpuFloat>(
    g: &Gpu,
    shape: AttnShape,
    block_size: usize,
    seed: u64,
    spare: usize,
    fold: bool,
) {
    let mut k = Kernels::<T>::new(g, shape).unwrap();
    k.tuning.fold_merge = fold;
    let mut rng = Rng(seed);
    // the last query is padding (no context): its output must be zeros
    let contexts = [1usize, 2, block_size, block_size + 1, PART - 1, PART, PART + 1, 3 * PART + 7, 40, 0];
    let n_q = contexts.len();
    let max_blocks = contexts.iter().max().unwrap().div_ceil(block_size);
    let num_blocks = n_q * max_blocks + 3;
    let kv_dim = shape.kv_dim();
    let kc = round::<T>(&rng.vec(num_blocks * block_size * kv_dim));
    let vc = round::<T>(&rng.vec(num_blocks * block_size * kv_dim));
    let q = round::<T>(&rng.vec(n_q * shape.q_dim()));
    // Each query gets its own table of distinct blocks drawn at random from the pool.
    let mut free: Vec<i32> = (0..num_blocks as i32).collect();
    let mut tables = vec![0i32; n_q * max_blocks];
    for t in tables.iter_mut() {
        *t = free.swap_remove(rng.below(free.len()));
    }
    let parts = contexts.iter().max().unwrap().div_ceil(PART);
    let out = poisoned::<T>(g, n_q * shape.q_dim());
    let (kd, vd, qd) = (up::<T>(g, &kc), up::<T>(g, &vc), up::<T>(g, &q));
    let td = g.upload("tables", &tables).unwrap();
    let rows = g.upload("rows", &(0..n_q as i32).collect::<Vec<_>>()).unwrap();
    let ctx = g.upload("ctx", &contexts.iter().map(|&c| c as i32).collect::<Vec<_>>()).unwrap();
    let room = n_q * parts * spare;
    let part_o = g.zeros::<f32>("p", room * shape.q_dim()).unwrap();
    let part_ml = g.zeros::<f32>("p", room * shape.heads * 2).unwrap();
    let done = g.zeros::<i32>("counters", n_q * shape.heads).unwrap();
    let io = AttentionIo {
        q: ptr(g, &qd),
        k_cache: ptr(g, &kd),
        v_cache: ptr(g, &vd),
        tables: ptr(g, &td),
        rows: ptr(g, &rows),
        ctx_lens: ptr(g, &ctx),
        part_o: ptr(g, &part_o),
        part_ml: ptr(g, &part_ml),
        out: ptr(g, &out),
        done: if fold { ptr(g, &done) } else { 0 },
    };
    // SAFETY: the buffers above are sized for n_q queries, `parts` partitions and `num_blocks`
    // blocks; each row's table holds distinct blocks of the pool, enough for its context.
    unsafe { k.attention(g, &io, n_q, block_size, max_blocks, parts, room) }.unwrap();
    let mut counters = vec![-1i32; n_q * shape.heads];
    g.stream.memcpy_dtoh(&done, &mut counters).unwrap();
    let zeroed = counters.iter().all(|&c| c == 0);
    assert!(zeroed, "attention {}: partition counters not left at zero", T::C_NAME);
    let got = down::<T>(g, &out);
    let mut want = vec![0.0f32; n_q * shape.q_dim()];
    let qd = shape.q_dim();
    for (i, &n_ctx) in contexts.iter().enumerate() {
        if n_ctx == 0 {
            continue; // want: zeros
        }
        let table = &tables[i * max_blocks..(i + 1) * max_blocks];
        let slot = move |t: usize| table[t / block_size] as usize * block_size + t % block_size;
        let (kr, vr) = (&kc, &vc);
        let key = move |t: usize| &kr[slot(t) * kv_dim..(slot(t) + 1) * kv_dim];
        let value = move |t: usize| &vr[slot(t) * kv_dim..(slot(t) + 1) * kv_dim];
        attend_one(shape, &q[i * qd..(i + 1) * qd], n_ctx, key, value, &mut want[i * qd..(i + 1) * qd]);
    }
    let err = rel_err("attention", &got, &want);
    let t = T::C_NAME;
    println!("attention {t} {shape:?} block {block_size} room x{spare} fold {fold}: rel err {err:.2e}");
    assert!(err < tol::<T>(), "attention {} {shape:?}: rel err {err:.2e}", T::C_NAME);
}
// ANCHOR_END: attention_test

#[test]
#[ignore = "needs a CUDA GPU"]
fn paged_attention_matches_cpu_for_every_shape_and_precision() {
    let g = gpu();
    let shapes = [
        AttnShape { heads: 4, kv_heads: 2, head_dim: 16 },
        AttnShape { heads: 8, kv_heads: 2, head_dim: 32 },
        AttnShape { heads: 9, kv_heads: 3, head_dim: 64 },
        AttnShape { heads: 8, kv_heads: 8, head_dim: 64 },
        AttnShape { heads: 32, kv_heads: 8, head_dim: 128 },
        AttnShape { heads: 16, kv_heads: 2, head_dim: 128 },
        AttnShape { heads: 4, kv_heads: 4, head_dim: 256 },
    ];
    for (i, &s) in shapes.iter().enumerate() {
        let seed = 17 + i as u64;
        attention_case::<f32>(&g, s, 16, seed);
        attention_case::<f16>(&g, s, 16, seed + 100);
        attention_case::<bf16>(&g, s, 16, seed + 200);
    }
    attention_case::<f32>(&g, shapes[1], 4, 99);
    attention_case::<f16>(&g, shapes[4], 32, 98);
}

fn rope_cache_case<T: GpuFloat>(g: &Gpu, seed: u64) {
    let mut config = LlamaConfig::named("tiny").unwrap();
    (config.num_attention_heads, config.num_key_value_heads, config.head_dim, config.hidden_size) = (8, 2, 32, 256);
    let shape = AttnShape::of(&config);
    let k = Kernels::<T>::new(g, shape).unwrap();
    let rope = Rope::new(&config);
    let mut rng = Rng(seed);
    let n = 6;
    let (qd, kvd) = (shape.q_dim(), shape.kv_dim());
    let qkv = round::<T>(&rng.vec(n * (qd + 2 * kvd)));
    let pos = [0i32, 1, 5, 77, 300, 4000];
    let slot = [3i32, -1, 0, 9, 4, 7]; // token 1 is padding: writes nothing
    let cache_slots = 10;
    let (q_out, kc, vc) = (poisoned::<T>(g, n * qd), poisoned::<T>(g, cache_slots * kvd), poisoned::<T>(g, cache_slots * kvd));
    let (qkvd, posd, slotd, inv) =
        (up::<T>(g, &qkv), g.upload("p", &pos).unwrap(), g.upload("s", &slot).unwrap(), g.upload("f", rope.inv_freq()).unwrap());
    // SAFETY: n tokens' qkv, q_out, pos and slot; distinct slots below `cache_slots` (or −1).
    unsafe { k.rope_cache(g, ptr(g, &qkvd), ptr(g, &q_out), ptr(g, &kc), ptr(g, &vc), ptr(g, &posd), ptr(g, &slotd), ptr(g, &inv), n) }
        .unwrap();
    let qkv = Array2::from_shape_vec((n, qd + 2 * kvd), qkv).unwrap();
    let positions: Vec<usize> = pos.iter().map(|&p| p as usize).collect();
    let mut q = qkv.slice(ndarray::s![.., ..qd]).to_owned();
    let mut kk = qkv.slice(ndarray::s![.., qd..qd + kvd]).to_owned();
    rope.apply(&mut q, &positions, shape.heads);
    rope.apply(&mut kk, &positions, shape.kv_heads);
    let err = rel_err("rope q", &down::<T>(g, &q_out), q.as_slice().unwrap());
    assert!(err < tol::<T>(), "rope q {}: {err:.2e}", T::C_NAME);
    let (got_k, got_v) = (down::<T>(g, &kc), down::<T>(g, &vc));
    for (t, &s) in slot.iter().enumerate().filter(|(_, &s)| s >= 0) {
        let s = s as usize;
        let e = rel_err("cached k", &got_k[s * kvd..(s + 1) * kvd], kk.row(t).as_slice().unwrap());
        assert!(e < tol::<T>(), "cached k of token {t}: {e:.2e}");
        let want_v: Vec<f32> = qkv.row(t).as_slice().unwrap()[qd + kvd..].to_vec();
        assert_eq!(&got_v[s * kvd..(s + 1) * kvd], &want_v[..], "cached v of token {t}");
    }
    // Slots no token maps to (1, 2, 5, 6, 8) must still hold the poison.
    for s in [1usize, 2, 5, 6, 8] {
        assert!(got_k[s * kvd..(s + 1) * kvd].iter().all(|x| x.is_nan()), "slot {s} was written");
    }
    println!("rope_cache {}: q rel err {err:.2e}", T::C_NAME);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn rope_and_reshape_and_cache_match_cpu() {
    let g = gpu();
    rope_cache_case::<f32>(&g, 1);
    rope_cache_case::<f16>(&g, 2);
    rope_cache_case::<bf16>(&g, 3);
}

/// ch00's `linear` of x (rows, hidden) and w (inter, hidden), both row-major.
fn cpu_linear(x: Vec<f32>, w: Vec<f32>, rows: usize, hidden: usize, inter: usize) -> Array2<f32> {
    let w = Packed::new(&Array2::from_shape_vec((inter, hidden), w).unwrap().view());
    let mut y = Array2::zeros((rows, inter));
    linear(&Array2::from_shape_vec((rows, hidden), x).unwrap().view(), &w, &mut y);
    y
}

fn small_ops_case<T: GpuFloat>(g: &Gpu, seed: u64) {
    let shape = AttnShape { heads: 4, kv_heads: 2, head_dim: 32 };
    let k = Kernels::<T>::new(g, shape).unwrap();
    let mut rng = Rng(seed);
    let (n, hidden, inter, vocab) = (5, 200, 300, 1000);
    // add_rmsnorm: x += delta, h = rmsnorm(x) · w
    let x0 = rng.vec(n * hidden);
    let delta = round::<T>(&rng.vec(n * hidden));
    let w = round::<T>(&rng.vec(hidden));
    let (xd, dd, wd, hd) = (g.upload("x", &x0).unwrap(), up::<T>(g, &delta), up::<T>(g, &w), poisoned::<T>(g, n * hidden));
    // SAFETY (each launch below): the buffers were just allocated with the lengths the launch
    // reads and writes, and the ids (tokens, gather rows) are in range.
    unsafe { k.add_rmsnorm(g, ptr(g, &xd), ptr(g, &dd), ptr(g, &wd), ptr(g, &hd), n, hidden, 1e-5) }.unwrap();
    let x1: Vec<f32> = x0.iter().zip(&delta).map(|(a, b)| a + b).collect();
    let mut want = Array2::zeros((n, hidden));
    rms_norm(&Array2::from_shape_vec((n, hidden), x1.clone()).unwrap().view(), &Array1::from(w.clone()).view(), 1e-5, &mut want);
    let e = rel_err("add_rmsnorm", &down::<T>(g, &hd), want.as_slice().unwrap());
    assert!(e < tol::<T>(), "add_rmsnorm {}: {e:.2e}", T::C_NAME);
    let mut xs = vec![0f32; n * hidden];
    g.stream.memcpy_dtoh(&xd, &mut xs).unwrap();
    assert!(rel_err("residual", &xs, &x1) < 1e-6);
    // silu_mul, on gate/up columns interleaved as weights.rs lays out the fused weights
    let gu = round::<T>(&rng.vec(n * 2 * inter));
    let gu2 = Array2::from_shape_vec((n, 2 * inter), gu).unwrap();
    let mut gu_il = Vec::with_capacity(n * 2 * inter);
    for row in gu2.rows() {
        for j in 0..inter {
            gu_il.extend([row[j], row[inter + j]]);
        }
    }
    let (gud, act) = (up::<T>(g, &gu_il), poisoned::<T>(g, n * inter));
    unsafe { k.silu_mul(g, ptr(g, &gud), ptr(g, &act), n, inter) }.unwrap();
    let mut want = Array2::zeros((n, inter));
    swiglu(&gu2.view(), &mut want);
    let e = rel_err("silu_mul", &down::<T>(g, &act), want.as_slice().unwrap());
    assert!(e < tol::<T>(), "silu_mul {}: {e:.2e}", T::C_NAME);
    // gate_up_swiglu against ch00's linear + swiglu, and (fused GEMV path) bit for bit against
    // the unfused gemv + silu_mul on the same interleaved weights
    for rows in [1, 3, 8, 9, 40] {
        let (a, wl) = (round::<T>(&rng.vec(rows * hidden)), round::<T>(&rng.vec(2 * inter * hidden)));
        let w_il = interleave_halves(&Array2::from_shape_vec((2 * inter, hidden), wl.clone()).unwrap());
        let (ad, wd) = (up::<T>(g, &a), up::<T>(g, &w_il));
        let (gus, fused, gu_un, unfused) = (poisoned::<T>(g, rows * 2 * inter), poisoned::<T>(g, rows * inter), poisoned::<T>(g, rows * 2 * inter), poisoned::<T>(g, rows * inter));
        unsafe { k.gate_up_swiglu(g, ptr(g, &ad), ptr(g, &wd), ptr(g, &gus), ptr(g, &fused), rows, hidden, inter) }.unwrap();
        unsafe { k.linear(g, ptr(g, &ad), ptr(g, &wd), ptr(g, &gu_un), rows, hidden, 2 * inter) }.unwrap();
        unsafe { k.silu_mul(g, ptr(g, &gu_un), ptr(g, &unfused), rows, inter) }.unwrap();
        let mut want = Array2::zeros((rows, inter));
        swiglu(&cpu_linear(a, wl, rows, hidden, 2 * inter).view(), &mut want);
        let got = down::<T>(g, &fused);
        let e = rel_err("gate_up_swiglu", &got, want.as_slice().unwrap());
        assert!(e < tol::<T>(), "gate_up_swiglu {} with {rows} rows: {e:.2e}", T::C_NAME);
        let same = got.iter().zip(down::<T>(g, &unfused)).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "gate_up_swiglu {} with {rows} rows: fused and unfused differ", T::C_NAME);
    }
    let mut kf = Kernels::<T>::new(g, shape).unwrap();
    kf.tuning.fuse_norm = true;
    // norm_linear / norm_gate_up_swiglu (gemv_norm for GEMV-sized batches, add_rmsnorm + the
    // GEMV or cuBLAS otherwise) against ch00's rms_norm then linear (+ swiglu), with and without
    // a delta; the residual: x + delta in the returned buffer, the fused kernel's input untouched
    for rows in [1, 3, 9] {
        for with_delta in [true, false] {
            let x0 = rng.vec(rows * hidden);
            let dl = round::<T>(&rng.vec(rows * hidden));
            let nw = round::<T>(&rng.vec(hidden));
            let (wl, wg) = (round::<T>(&rng.vec(inter * hidden)), round::<T>(&rng.vec(2 * inter * hidden)));
            let x1: Vec<f32> = if with_delta { x0.iter().zip(&dl).map(|(a, b)| a + b).collect() } else { x0.clone() };
            let mut hn = Array2::zeros((rows, hidden));
            rms_norm(&Array2::from_shape_vec((rows, hidden), x1.clone()).unwrap().view(), &Array1::from(nw.clone()).view(), 1e-5, &mut hn);
            let hn = round::<T>(hn.as_slice().unwrap());
            let want_y = cpu_linear(hn.clone(), wl.clone(), rows, hidden, inter);
            let mut want_act = Array2::zeros((rows, inter));
            swiglu(&cpu_linear(hn, wg.clone(), rows, hidden, 2 * inter).view(), &mut want_act);
            let w_il = interleave_halves(&Array2::from_shape_vec((2 * inter, hidden), wg).unwrap());
            let (wld, wgd, nwd, dd) = (up::<T>(g, &wl), up::<T>(g, &w_il), up::<T>(g, &nw), up::<T>(g, &dl));
            for (fused, gate_up) in [(false, false), (false, true), (true, false), (true, true)] {
                let k = if fused { &kf } else { &k };
                let (xa, xb) = (g.upload("x", &x0).unwrap(), g.upload("x", &vec![f32::NAN; rows * hidden]).unwrap());
                let (hs, gus) = (poisoned::<T>(g, rows * hidden), poisoned::<T>(g, rows * 2 * inter));
                let out = poisoned::<T>(g, rows * inter);
                let delta = if with_delta { ptr(g, &dd) } else { 0 };
                let norm = NormIn { x: ptr(g, &xa), delta, w: ptr(g, &nwd), x_out: ptr(g, &xb), eps: 1e-5 };
                let res = if gate_up {
                    unsafe { k.norm_gate_up_swiglu(g, &norm, ptr(g, &hs), ptr(g, &wgd), ptr(g, &gus), ptr(g, &out), rows, hidden, inter) }.unwrap()
                } else {
                    unsafe { k.norm_linear(g, &norm, ptr(g, &hs), ptr(g, &wld), ptr(g, &out), rows, hidden, inter) }.unwrap()
                };
                let op = if gate_up { "gate_up_swiglu" } else { "linear" };
                let what = format!("norm + {op} {} with {rows} rows, delta {with_delta}, fused {fused}", T::C_NAME);
                let want = if gate_up { want_act.as_slice().unwrap() } else { want_y.as_slice().unwrap() };
                let e = rel_err(&what, &down::<T>(g, &out), want);
                assert!(e < tol::<T>(), "{what}: {e:.2e}");
                let (mut a, mut b) = (vec![0f32; rows * hidden], vec![0f32; rows * hidden]);
                g.stream.memcpy_dtoh(&xa, &mut a).unwrap();
                g.stream.memcpy_dtoh(&xb, &mut b).unwrap();
                let got = if res == ptr(g, &xb) { &b } else { assert_eq!(res, ptr(g, &xa), "{what}: residual buffer"); &a };
                assert_eq!(got, &x1, "{what}: residual");
                if res == ptr(g, &xb) {
                    assert_eq!(a, x0, "{what}: the fused kernel wrote its input");
                }
            }
        }
    }
    // linear against ch00's: a decode-sized batch (our GEMV) and a prefill-sized one (cuBLAS)
    for rows in [1, 5, 8, 9, 40] {
        let (a, wl) = (round::<T>(&rng.vec(rows * hidden)), round::<T>(&rng.vec(inter * hidden)));
        let (ad, wld, yd) = (up::<T>(g, &a), up::<T>(g, &wl), poisoned::<T>(g, rows * inter));
        unsafe { k.linear(g, ptr(g, &ad), ptr(g, &wld), ptr(g, &yd), rows, hidden, inter) }.unwrap();
        let want = cpu_linear(a, wl, rows, hidden, inter);
        let e = rel_err("linear", &down::<T>(g, &yd), want.as_slice().unwrap());
        assert!(e < tol::<T>(), "linear {} with {rows} rows: {e:.2e}", T::C_NAME);
    }
    // and cuBLAS directly
    let (a, wl) = (round::<T>(&rng.vec(n * hidden)), round::<T>(&rng.vec(inter * hidden)));
    let (ad, wld, yd) = (up::<T>(g, &a), up::<T>(g, &wl), poisoned::<T>(g, n * inter));
    unsafe { gpu_linear::<T>(g, ptr(g, &ad), ptr(g, &wld), ptr(g, &yd), n, hidden, inter) }.unwrap();
    let want = cpu_linear(a, wl, n, hidden, inter);
    let e = rel_err("cuBLAS linear", &down::<T>(g, &yd), want.as_slice().unwrap());
    assert!(e < tol::<T>(), "cuBLAS linear {}: {e:.2e}", T::C_NAME);
    // embedding + gather_rows
    let table = round::<T>(&rng.vec(vocab * hidden));
    let tokens = [3i32, 999, 0, 3, 500];
    let (td, tok, xe) = (up::<T>(g, &table), g.upload("t", &tokens).unwrap(), g.upload("x", &vec![f32::NAN; n * hidden]).unwrap());
    unsafe { k.embedding(g, ptr(g, &td), ptr(g, &tok), ptr(g, &xe), n, hidden) }.unwrap();
    let mut emb = vec![0f32; n * hidden];
    g.stream.memcpy_dtoh(&xe, &mut emb).unwrap();
    for (i, &t) in tokens.iter().enumerate() {
        assert_eq!(&emb[i * hidden..(i + 1) * hidden], &table[t as usize * hidden..(t as usize + 1) * hidden]);
    }
    let idx = [4i32, 0];
    let (idxd, gathered) = (g.upload("i", &idx).unwrap(), poisoned::<T>(g, 2 * hidden));
    unsafe { k.gather_rows(g, ptr(g, &hd), ptr(g, &idxd), ptr(g, &gathered), 2, hidden) }.unwrap();
    let hs = down::<T>(g, &hd);
    assert_eq!(down::<T>(g, &gathered), [&hs[4 * hidden..5 * hidden], &hs[..hidden]].concat());
    // argmax, with a tie that the lower index must win
    let mut logits = round::<T>(&rng.vec(3 * vocab));
    logits[vocab + 10] = 5.0;
    logits[vocab + 700] = 5.0;
    let (ld, ids) = (up::<T>(g, &logits), g.upload("ids", &[u32::MAX; 3]).unwrap());
    unsafe { k.argmax(g, ptr(g, &ld), ptr(g, &ids), 3, vocab) }.unwrap();
    let mut got = [0u32; 3];
    g.stream.memcpy_dtoh(&ids, &mut got).unwrap();
    let want: Vec<u32> = logits.chunks(vocab).map(ch00_model::sampling::argmax).collect();
    assert_eq!(got.to_vec(), want);
    assert_eq!(got[1], 10);
    println!("small ops {}: ok", T::C_NAME);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn small_kernels_match_cpu() {
    let g = gpu();
    small_ops_case::<f32>(&g, 5);
    small_ops_case::<f16>(&g, 6);
    small_ops_case::<bf16>(&g, 7);
}

/// Without a GPU (CI), opening one is an error that says so, not a panic.
#[test]
fn opening_a_gpu_never_panics() {
    match Gpu::new(0) {
        Ok(g) => println!("GPU present: {}", g.name()),
        Err(e) => {
            let msg = e.to_string();
            println!("no GPU: {msg}");
            assert!(msg.contains("GPU"), "{msg}");
        }
    }
}
