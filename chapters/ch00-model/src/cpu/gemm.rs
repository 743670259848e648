//! The prefill GEMM: `linear` for a step of many tokens (a prompt), where the arithmetic, not the
//! weight stream, sets the pace.
//!
//! At one token a linear layer does one multiply-add per weight it reads: memory-bound. At 512
//! tokens it does 512 per weight, far more than a core can do while memory delivers it, so what
//! counts is how many multiply-adds the core's vector units finish per cycle — and that depends on
//! how few loads each one needs. [`crate::cpu::kernels`]'s tile (4 tokens × 4 rows, eight-lane
//! registers) needs one load per two multiply-adds. This one keeps a tile of
//! [`TOKENS`] tokens × [`ROWS`] weight rows in AVX-512's 32 registers and needs one load per
//! 2.4 sixteen-lane multiply-adds:
//!
//! ```text
//! per 8 columns (one "chunk") of the dot products:
//!   weights: 4 loads of 16 lanes = rows (0|1), (2|3), (4|5), (6|7), 8 columns each (the packed
//!            layout already stores rows 0..3 of a group side by side, 8 columns at a time)
//!   tokens:  6 loads of 8 columns, each copied into both halves of a 16-lane register (x|x)
//!   sums:    24 registers: token t × row pair p, lanes 0..8 = row 2p, lanes 8..16 = row 2p+1
//! ```
//!
//! **The same order as every other kernel.** Lane `l` of row `r`'s half accumulates exactly the
//! products at positions `l, l + 8, …` in that order with fused multiply-adds — the running sum
//! lane `l` of [`crate::cpu::kernels::dot`] keeps — and the lanes are added pairwise as `dot`
//! adds them ((0+4, 1+5, 2+6, 3+7), (0+2, 1+3), 0+1; the last `n % 8` products first go into lanes
//! 0, 1, … as there). So each output is bit for bit the dot product the decode path computes for
//! the same row (tested below against the portable kernel); the tile only changes which sums are
//! in registers at the same time. On CPUs without AVX-512 `dot_rows` is the kernels' tile (AVX2
//! or plain Rust), which computes the same bits. The tile itself is the kernels' `pairs` (the
//! decode path uses it too, one group at a time); this file is its blocking for prompts.

use crate::cpu::kernels::{self, GROUP};
use crate::cpu::widen::Weight;
use ndarray::{ArrayView2, ArrayViewMut2};

/// From this many tokens in a step `linear` uses this kernel (below, the tokens of a step are too
/// few to fill its tile, and the decode kernel's prefetching of the weight stream matters more).
pub const MIN_TOKENS: usize = 16;
/// Tokens per tile.
pub const TOKENS: usize = 6;
/// Weight rows per tile: two packed groups.
pub const ROWS: usize = 2 * GROUP;
/// Bytes of token rows one pass over a band's weights works on: they stay in L2 while each pair
/// of weight groups passes over them.
const BLOCK_BYTES: usize = 192 * 1024;

/// `y[t][o] = x[t] · w[o]` for a band of packed weight groups `w` (any [`Weight`] type), as
/// [`kernels::dot_rows`], with the same bits. Panics if the shapes disagree.
pub fn dot_rows<E: Weight>(x: &ArrayView2<f32>, w: &[E], y: &mut ArrayViewMut2<f32>) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        let Some(xs) = kernels::token_rows(x, w, y) else { return };
        // SAFETY: shapes checked by `token_rows`; the CPU has the instructions (`available`).
        unsafe { avx512::dot_rows(&xs, w, y) };
        return;
    }
    kernels::dot_rows(x, w, y)
}

/// Tokens per pass over a band, for rows of `n` values: a multiple of [`TOKENS`].
fn token_block(n: usize) -> usize {
    (BLOCK_BYTES / (n * size_of::<f32>()) / TOKENS).max(1) * TOKENS
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{token_block, GROUP, TOKENS};
    use crate::cpu::kernels::{x86::pairs, Prefetch};
    use crate::cpu::widen::Weight;
    use ndarray::ArrayViewMut2;

    #[inline]
    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    // ANCHOR: blocks
    /// Token blocks × pairs of packed groups × tiles of up to `TOKENS` tokens, each tile the
    /// kernels' [`pairs`] of two groups (`TOKENS` × 8 rows).
    ///
    /// # Safety
    /// `w` holds whole groups of rows as long as the token rows (at least one value); the CPU has
    /// AVX-512 F/DQ/VL and F16C.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512dq,avx512vl")]
    pub(super) unsafe fn dot_rows<E: Weight>(xs: &[&[f32]], w: &[E], y: &mut ArrayViewMut2<f32>) {
        let n = xs[0].len();
        let groups: Vec<&[E]> = w.chunks_exact(GROUP * n).collect();
        let block = token_block(n);
        for t0 in (0..xs.len()).step_by(block) {
            let xb = &xs[t0..xs.len().min(t0 + block)];
            for (p, pair) in groups.chunks(2).enumerate() {
                let kept = (y.ncols() - p * 2 * GROUP).min(2 * GROUP); // padding rows are dropped
                for t1 in (0..xb.len()).step_by(TOKENS) {
                    let tokens = &xb[t1..xb.len().min(t1 + TOKENS)];
                    macro_rules! run {
                        ($t:literal, $g:literal) => {{
                            let x: [&[f32]; $t] = tokens.try_into().expect("a tile's tokens");
                            let g: [&[E]; $g] = pair.try_into().expect("a tile's groups");
                            // SAFETY: every group holds GROUP rows of n values (the caller's promise).
                            let sums = unsafe { pairs::<$t, $g, E>(x, g, Prefetch::NONE) };
                            for (t, sums) in sums.iter().enumerate() {
                                let mut out = y.row_mut(t0 + t1 + t);
                                for (r, &v) in sums.iter().flatten().enumerate().take(kept) {
                                    out[p * 2 * GROUP + r] = v;
                                }
                            }
                        }};
                    }
                    match (tokens.len(), pair.len()) {
                        (6, 2) => run!(6, 2),
                        (5, 2) => run!(5, 2),
                        (4, 2) => run!(4, 2),
                        (3, 2) => run!(3, 2),
                        (2, 2) => run!(2, 2),
                        (_, 2) => run!(1, 2),
                        (6, _) => run!(6, 1),
                        (5, _) => run!(5, 1),
                        (4, _) => run!(4, 1),
                        (3, _) => run!(3, 1),
                        (2, _) => run!(2, 1),
                        (_, _) => run!(1, 1),
                    }
                }
            }
        }
    }
    // ANCHOR_END: blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::packed::{Elements, Packed};
    use crate::dtype::DType;
    use ndarray::{s, Array2};

    fn values(rows: usize, cols: usize, seed: usize) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(r, c)| (((r * 131 + c * 71 + seed * 17) % 1009) as f32 / 504.5 - 1.0) * 1.37)
    }

    #[test]
    fn every_output_is_the_decode_kernels_dot_product_bit_for_bit() {
        // 77 columns: a tail of five; 64 and 768: none. 37 rows: an odd number of groups (a last
        // pair of one group) and a last group of one row. 70 tokens: tiles of 6 and a last of 4.
        // Each weight type: half-precision weights are widened exactly, so the reference is the
        // dot product with the kept values as f32.
        for (cols, dtype) in [(77, DType::F32), (64, DType::F32), (768, DType::F32), (77, DType::F16), (77, DType::BF16), (64, DType::F16)] {
            let packed = Packed::new_as(&values(37, cols, 1).view(), dtype);
            let w = packed.unpack();
            let x = values(70, cols, 2);
            for batch in [1, 5, 6, 70] {
                let x = x.slice(s![..batch, ..]);
                let mut y = Array2::from_elem((batch, 37), f32::NAN);
                let mut v = y.view_mut();
                match packed.data() {
                    Elements::F32(d) => dot_rows(&x, d, &mut v),
                    Elements::F16(d) => dot_rows(&x, d, &mut v),
                    Elements::BF16(d) => dot_rows(&x, d, &mut v),
                }
                for t in 0..batch {
                    for o in 0..37 {
                        let expected = kernels::dot(x.row(t).as_slice().unwrap(), w.row(o).as_slice().unwrap());
                        assert_eq!(y[[t, o]].to_bits(), expected.to_bits(), "{dtype:?}, {cols} columns, batch {batch}, token {t}, row {o}");
                    }
                }
            }
        }
    }

    #[test]
    fn token_blocks_are_whole_tiles() {
        for n in [1, 77, 768, 2048, 1 << 20] {
            assert!(token_block(n) >= TOKENS && token_block(n) % TOKENS == 0, "{n}");
        }
    }
}
