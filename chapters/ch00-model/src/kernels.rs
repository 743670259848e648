//! What makes [`crate::ops::linear`] and [`crate::attend_one`] fast on a CPU, kept apart from the
//! model so the chapters read as arithmetic.
//!
//! - **One dot product, one order.** Every output of `linear` and every attention score is
//!   [`dot`]: `LANES` running sums of fused multiply-adds, added pairwise at the end. The order
//!   never depends on the batch size, the tile shape or the thread, so a token's logits are the same
//!   bits whichever other tokens share its step — what lets every stage produce exactly the tokens
//!   of the one before.
//! - **Tiles.** [`tile`] computes a few tokens × a few weight rows at once: each weight vector
//!   loaded from memory feeds every token of the tile, each token vector every row.
//! - **All cores.** The output features are cut into bands, one task each (rayon): a core reads
//!   its band of the weights once for all the step's tokens.
//! - **Wide registers.** The same code is compiled a second time for AVX2 + FMA and chosen at run
//!   time when the CPU has them; elsewhere `mul_add` is still a fused multiply-add, so the bits
//!   are the same, only slower on x86 CPUs older than 2013.

use ndarray::{ArrayView2, ArrayViewMut2};

/// Independent running sums per dot product: eight f32 lanes fill one AVX register.
pub const LANES: usize = 8;
/// Weight rows per tile: each token vector loaded feeds this many rows.
const ROWS: usize = 4;
/// Tokens per tile: each weight vector loaded feeds this many tokens.
const TOKENS: usize = 4;
/// Output features per parallel task of `linear`: 32 rows of a 768-wide matrix are 96 KiB, which
/// stay in a core's L2 cache while every token block of the step passes over them.
pub const BAND: usize = 32;
/// Tokens per pass over a band: a prefill of hundreds of tokens is cut so its rows stay in cache.
const TOKEN_BLOCK: usize = 64;

// ANCHOR: tile
/// The dot products of `T` token rows with `R` weight rows, all of length `n`: (T, R) sums.
/// Lane `l` of each sum accumulates the products at positions `l, l + LANES, …` with fused
/// multiply-adds; the lanes are then added pairwise ([`reduce`]). One weight vector loaded feeds
/// `T` tokens; one token vector feeds `R` rows.
#[inline(always)]
fn tile<const T: usize, const R: usize>(x: [&[f32]; T], w: [&[f32]; R]) -> [[f32; R]; T] {
    let n = x[0].len();
    let full = n - n % LANES;
    let mut acc = [[[0.0f32; LANES]; R]; T];
    for start in (0..full).step_by(LANES) {
        let xv: [&[f32; LANES]; T] = std::array::from_fn(|t| chunk(x[t], start));
        let wv: [&[f32; LANES]; R] = std::array::from_fn(|r| chunk(w[r], start));
        for t in 0..T {
            for r in 0..R {
                for l in 0..LANES {
                    acc[t][r][l] = xv[t][l].mul_add(wv[r][l], acc[t][r][l]);
                }
            }
        }
    }
    for (l, i) in (full..n).enumerate() {
        for t in 0..T {
            for r in 0..R {
                acc[t][r][l] = x[t][i].mul_add(w[r][i], acc[t][r][l]);
            }
        }
    }
    acc.map(|row| row.map(reduce))
}
// ANCHOR_END: tile

#[inline(always)]
fn chunk(v: &[f32], start: usize) -> &[f32; LANES] {
    v[start..start + LANES].try_into().expect("LANES elements")
}

/// Adds the lanes pairwise: (0+4, 1+5, 2+6, 3+7), then (0+2, 1+3), then the last two.
#[inline(always)]
fn reduce(a: [f32; LANES]) -> f32 {
    let b = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    let c = [b[0] + b[2], b[1] + b[3]];
    c[0] + c[1]
}

/// `a · b` in the order every kernel here uses. Panics if the lengths differ (a caller's bug).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    with_simd(|| dot_inline(a, b))
}

#[inline(always)]
pub(crate) fn dot_inline(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot of unequal lengths");
    tile::<1, 1>([a], [b])[0][0]
}

/// `q · keys[j]` for four keys at once (four independent chains of multiply-adds), each equal to
/// [`dot`]`(q, keys[j])` bit for bit.
#[inline(always)]
pub(crate) fn dot4(q: &[f32], keys: [&[f32]; 4]) -> [f32; 4] {
    assert!(keys.iter().all(|k| k.len() == q.len()), "dot of unequal lengths");
    tile::<1, 4>([q], keys)[0]
}

/// Runs `f` compiled with AVX2 + FMA when this CPU has them, else as compiled by default.
/// Only code inlined into `f` gets the wider instructions: the kernels here are
/// `#[inline(always)]` for that reason.
#[inline(always)]
pub(crate) fn with_simd<O>(f: impl FnOnce() -> O) -> O {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        fn wide<O>(f: impl FnOnce() -> O) -> O {
            f()
        }
        // SAFETY: the CPU supports the features `wide` is compiled for (checked just above).
        return unsafe { wide(f) };
    }
    f()
}

/// `y[t][o] = x[t] · w[o]` for a band of weight rows `w` (band, n) and its columns of `y`
/// (tokens, band): token blocks × tiles of `TOKENS` tokens and `ROWS` rows, with smaller tiles at
/// the edges.
pub fn dot_rows(x: &ArrayView2<f32>, w: &ArrayView2<f32>, y: &mut ArrayViewMut2<f32>) {
    assert_eq!((x.ncols(), y.dim()), (w.ncols(), (x.nrows(), w.nrows())), "dot_rows: shapes disagree");
    let xs: Vec<&[f32]> = x.rows().into_iter().map(|r| r.to_slice().expect("contiguous rows")).collect();
    let ws: Vec<&[f32]> = w.rows().into_iter().map(|r| r.to_slice().expect("contiguous rows")).collect();
    with_simd(|| {
        for t0 in (0..xs.len()).step_by(TOKEN_BLOCK) {
            let tokens = &xs[t0..xs.len().min(t0 + TOKEN_BLOCK)];
            for r0 in (0..ws.len()).step_by(ROWS) {
                let rows = &ws[r0..ws.len().min(r0 + ROWS)];
                for t1 in (0..tokens.len()).step_by(TOKENS) {
                    let ts = &tokens[t1..tokens.len().min(t1 + TOKENS)];
                    let mut put = |t: usize, r: usize, v: f32| y[[t0 + t1 + t, r0 + r]] = v;
                    edge_tile(ts, rows, &mut put);
                }
            }
        }
    })
}

/// A tile of up to `TOKENS` × `ROWS`, dispatched to the `tile` of exactly that shape.
#[inline(always)]
fn edge_tile(ts: &[&[f32]], rows: &[&[f32]], put: &mut impl FnMut(usize, usize, f32)) {
    macro_rules! run {
        ($t:literal, $r:literal) => {{
            let out = tile::<$t, $r>(std::array::from_fn(|i| ts[i]), std::array::from_fn(|i| rows[i]));
            for (t, row) in out.iter().enumerate() {
                for (r, &v) in row.iter().enumerate() {
                    put(t, r, v);
                }
            }
        }};
    }
    match (ts.len(), rows.len()) {
        (4, 4) => run!(4, 4),
        (4, 3) => run!(4, 3),
        (4, 2) => run!(4, 2),
        (4, 1) => run!(4, 1),
        (3, 4) => run!(3, 4),
        (3, 3) => run!(3, 3),
        (3, 2) => run!(3, 2),
        (3, 1) => run!(3, 1),
        (2, 4) => run!(2, 4),
        (2, 3) => run!(2, 3),
        (2, 2) => run!(2, 2),
        (2, 1) => run!(2, 1),
        (1, 4) => run!(1, 4),
        (1, 3) => run!(1, 3),
        (1, 2) => run!(1, 2),
        (1, 1) => run!(1, 1),
        _ => {}
    }
}
