//! What makes [`crate::ops::linear`] and [`crate::attend_one`] fast on a CPU, kept apart from the
//! model so the chapters read as arithmetic.
//!
//! - **One dot product, one order.** Every output of `linear` and every attention score is
//!   [`dot`]: `LANES` running sums of fused multiply-adds, added pairwise at the end. The order
//!   never depends on the batch size, the tile, the layout of the weights or the thread, so a
//!   token's logits are the same bits whichever other tokens share its step — what lets every
//!   stage produce exactly the tokens of the one before.
//! - **Tiles.** A tile is a few tokens × a few weight rows: each weight vector loaded from memory
//!   feeds every token of the tile, each token vector every row.
//! - **One stream per core.** `linear`'s weights are [`Packed`](crate::cpu::packed::Packed): the rows
//!   of a tile are interleaved in memory in the order the tile reads them.
//! - **All cores.** `linear` cuts the output features into bands, one task each (rayon): a core
//!   reads its band of the weights once for all the step's tokens.
//! - **Memory busy during arithmetic.** When a step has more than one token, each tile prefetches
//!   a share of the weight group a few ahead into L2 (`Prefetch`), so reusing a group for several
//!   token tiles does not leave memory idle.
//! - **Wide registers.** On x86-64 CPUs with AVX2, FMA and F16C (and, when present, AVX-512's 32
//!   registers) the tile is written with those instructions and chosen at run time. Each lane is
//!   the same fused multiply-add as [`f32::mul_add`], so it gives the portable tile's bits exactly
//!   (tested below). With AVX-512 a decode tile holds up to eight tokens, so a batch-8 step loads
//!   each weight vector once for all its tokens.
//! - **Weights in their checkpoint's type.** f16 and bf16 weights are loaded as 2-byte values and
//!   widened to f32 in registers ([`crate::cpu::widen`]); the arithmetic and its order are the
//!   f32 path's, so the bits are too.

use crate::cpu::widen::Weight;
use ndarray::{ArrayView2, ArrayViewMut2};

/// Independent running sums per dot product: eight f32 lanes fill one AVX register.
pub const LANES: usize = 8;

/// Rows computed together by the kernels, and stored together in `crate::cpu::packed::Packed`.
pub const GROUP: usize = 4;
/// Tokens per tile in 16-register code (AVX2, plain Rust): each weight vector loaded feeds this
/// many tokens.
const TOKENS: usize = 4;
/// Tokens per tile with AVX-512's 32 registers: a decode step of up to eight tokens multiplies
/// each weight vector with all its tokens in the one load that brought it from memory.
const WIDE_TOKENS: usize = 8;
/// Output features per parallel task of `linear` (a multiple of [`GROUP`]): 32 rows of a
/// 768-wide matrix are 96 KiB, which stay in a core's L2 cache while every token block of the
/// step passes over them.
pub const BAND: usize = 32;
/// Tokens per pass over a band: a prefill of hundreds of tokens is cut so its rows stay in cache.
const TOKEN_BLOCK: usize = 64;

/// Where `R` weight rows of `n` values are: values `c·LANES..(c+1)·LANES` of row `r` start at
/// `start[r] + c·stride`, and its last `n % LANES` values are `tails[r]`. One description for
/// rows of a plain row-major matrix (`stride = LANES`) and for a packed group
/// (`stride = GROUP·LANES`), in any weight type `E`.
#[derive(Clone, Copy)]
struct Rows<'a, const R: usize, E> {
    start: [*const E; R],
    stride: usize,
    tails: [&'a [E]; R],
}

impl<'a, const R: usize, E> Rows<'a, R, E> {
    /// Rows of a row-major matrix, each `n` long.
    #[inline(always)]
    fn plain(rows: [&'a [E]; R], n: usize) -> Self {
        let full = n - n % LANES;
        let (mut start, mut tails) = ([std::ptr::null(); R], rows);
        for r in 0..R {
            start[r] = rows[r].as_ptr();
            tails[r] = &rows[r][full..n];
        }
        Rows { start, stride: LANES, tails }
    }
}

impl<'a, E> Rows<'a, GROUP, E> {
    /// The rows of one packed group (`GROUP · n` values, see [`crate::cpu::packed`]).
    #[inline(always)]
    fn packed(group: &'a [E], n: usize) -> Self {
        let (full, tail) = (n - n % LANES, n % LANES);
        let tails = &group[GROUP * full..GROUP * n];
        let (mut start, mut row_tails) = ([group.as_ptr(); GROUP], [&tails[..0]; GROUP]);
        for r in 0..GROUP {
            start[r] = group.as_ptr().wrapping_add(r * LANES); // read only when n ≥ LANES
            row_tails[r] = &tails[r * tail..(r + 1) * tail];
        }
        Rows { start, stride: GROUP * LANES, tails: row_tails }
    }
}

/// Cache lines of weights a tile asks memory for while it computes (a hint: never read, so it may
/// point anywhere). A tile spreads them over its chunks, so that the next groups of weights are on
/// their way while this one is multiplied — without it, a core that reuses a group for several
/// token tiles leaves memory idle, and the step costs memory time *plus* arithmetic time.
#[derive(Clone, Copy)]
pub(crate) struct Prefetch {
    next: *const u8,
    lines: usize,
}

impl Prefetch {
    pub(crate) const NONE: Prefetch = Prefetch { next: std::ptr::null(), lines: 0 };
}

/// Bytes of one cache line.
const LINE: usize = 64;
/// How many groups ahead of the one being multiplied the prefetches run (measured: 3 or 4 keep
/// memory busier than 1 or 2).
const AHEAD: usize = 4;

/// A way to compute a tile of dot products; every implementation gives the same bits.
trait Tiles {
    /// Tokens per tile of [`dot_rows`].
    const TOKENS: usize;

    /// The dot products of `T` token rows (`n` values each) with `R` weight rows: (T, R) sums.
    ///
    /// # Safety
    /// `w` describes rows of `n` values inside live memory, and the CPU supports the
    /// implementation's instructions.
    unsafe fn tile<const T: usize, const R: usize, E: Weight>(x: [&[f32]; T], w: Rows<'_, R, E>, pf: Prefetch) -> [[f32; R]; T];

    /// The dot products of `T` token rows with the rows of one packed group of `n`-long rows.
    ///
    /// # Safety
    /// As [`Tiles::tile`]; `group` holds `GROUP · n` values.
    #[inline(always)]
    unsafe fn group<const T: usize, E: Weight>(x: [&[f32]; T], group: &[E], n: usize, pf: Prefetch) -> [[f32; GROUP]; T] {
        unsafe { Self::tile::<T, GROUP, E>(x, Rows::packed(group, n), pf) }
    }
}

/// Plain Rust: the definition of the order every other implementation follows.
struct Portable;

impl Tiles for Portable {
    const TOKENS: usize = TOKENS;

    // ANCHOR: tile
    /// Lane `l` of each sum accumulates the products at positions `l, l + LANES, …` with fused
    /// multiply-adds; the lanes are then added pairwise ([`finish`]). One weight vector loaded
    /// feeds `T` tokens; one token vector feeds `R` rows. Weights kept in half precision are
    /// widened to f32 as they are loaded (exactly: see [`crate::cpu::widen`]).
    #[inline(always)]
    unsafe fn tile<const T: usize, const R: usize, E: Weight>(x: [&[f32]; T], w: Rows<'_, R, E>, _: Prefetch) -> [[f32; R]; T] {
        let full = x[0].len() / LANES * LANES;
        let mut acc = [[[0.0f32; LANES]; R]; T];
        for c in 0..full / LANES {
            for r in 0..R {
                // SAFETY: chunk c < full / LANES of row r, inside its memory (the caller's promise).
                let wv = unsafe { &*(w.start[r].add(c * w.stride) as *const [E; LANES]) }.map(E::to_f32);
                for t in 0..T {
                    for l in 0..LANES {
                        acc[t][r][l] = x[t][c * LANES + l].mul_add(wv[l], acc[t][r][l]);
                    }
                }
            }
        }
        finish(x, w.tails, full, acc)
    }
    // ANCHOR_END: tile
}

/// The end of every tile: the last `n % LANES` products go into lanes 0, 1, … with fused
/// multiply-adds, then each sum's lanes are added pairwise: (0+4, 1+5, 2+6, 3+7), (0+2, 1+3), 0+1.
#[inline(always)]
pub(crate) fn finish<const T: usize, const R: usize, E: Weight>(
    x: [&[f32]; T],
    tails: [&[E]; R],
    full: usize,
    mut acc: [[[f32; LANES]; R]; T],
) -> [[f32; R]; T] {
    for t in 0..T {
        for r in 0..R {
            for (l, (&a, &b)) in x[t][full..].iter().zip(tails[r]).enumerate() {
                acc[t][r][l] = a.mul_add(b.to_f32(), acc[t][r][l]);
            }
        }
    }
    let mut out = [[0.0f32; R]; T];
    for t in 0..T {
        for r in 0..R {
            let a = acc[t][r];
            let b = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
            out[t][r] = (b[0] + b[2]) + (b[1] + b[3]);
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::{finish, Prefetch, Rows, Tiles, Weight, GROUP, LANES, LINE, TOKENS, WIDE_TOKENS};
    use std::arch::x86_64::*;

    /// The tile in AVX2 + FMA (+ F16C to widen f16): one 8-lane register per running sum.
    pub(super) struct Avx2;

    impl Tiles for Avx2 {
        const TOKENS: usize = TOKENS;

        #[inline(always)]
        unsafe fn tile<const T: usize, const R: usize, E: Weight>(x: [&[f32]; T], w: Rows<'_, R, E>, pf: Prefetch) -> [[f32; R]; T] {
            let full = x[0].len() / LANES * LANES;
            let mut acc = [[_mm256_setzero_ps(); R]; T];
            let mut xv = [_mm256_setzero_ps(); T];
            let (mut next, mut left) = (pf.next, pf.lines);
            let per_chunk = pf.lines.div_ceil((full / LANES).max(1));
            for c in 0..full / LANES {
                for _ in 0..per_chunk.min(left) {
                    // A hint only: prefetches never fault, whatever the address.
                    // Into L2, not L1: a group and a tile's tokens already fill L1.
                    _mm_prefetch::<_MM_HINT_T1>(next as *const i8);
                    next = next.wrapping_add(LINE);
                    left -= 1;
                }
                for t in 0..T {
                    // SAFETY (here and below): chunk c lies inside every row (the caller's promise).
                    xv[t] = unsafe { _mm256_loadu_ps(x[t].as_ptr().add(c * LANES)) };
                }
                for r in 0..R {
                    let wv = unsafe { E::load8(w.start[r].add(c * w.stride)) };
                    for t in 0..T {
                        acc[t][r] = _mm256_fmadd_ps(xv[t], wv, acc[t][r]);
                    }
                }
            }
            if full == x[0].len() {
                // No tail: `finish`'s pairwise sum, in registers. (Plain loops: `array::map`'s
                // closures are not compiled with this function's instructions.)
                let mut out = [[0.0f32; R]; T];
                for t in 0..T {
                    for r in 0..R {
                        out[t][r] = unsafe { reduce(acc[t][r]) };
                    }
                }
                return out;
            }
            let mut lanes = [[[0.0f32; LANES]; R]; T];
            for t in 0..T {
                for r in 0..R {
                    unsafe { _mm256_storeu_ps(lanes[t][r].as_mut_ptr(), acc[t][r]) };
                }
            }
            finish(x, w.tails, full, lanes)
        }
    }

    /// AVX-512: packed groups through [`pairs`] (up to [`WIDE_TOKENS`] tokens a tile), anything
    /// else through the AVX2 tile.
    pub(super) struct Avx512;

    impl Tiles for Avx512 {
        const TOKENS: usize = WIDE_TOKENS;

        #[inline(always)]
        unsafe fn tile<const T: usize, const R: usize, E: Weight>(x: [&[f32]; T], w: Rows<'_, R, E>, pf: Prefetch) -> [[f32; R]; T] {
            unsafe { Avx2::tile(x, w, pf) }
        }

        #[inline(always)]
        unsafe fn group<const T: usize, E: Weight>(x: [&[f32]; T], group: &[E], _: usize, pf: Prefetch) -> [[f32; GROUP]; T] {
            let sums = unsafe { pairs::<T, 1, E>(x, [group], pf) };
            let mut out = [[0.0f32; GROUP]; T];
            for t in 0..T {
                out[t] = sums[t][0];
            }
            out
        }
    }

    // ANCHOR: pairs
    /// The dot products of `T` token rows with the `GROUP · G` rows of `G` packed groups:
    /// (T, G, GROUP) sums, each in the order of [`super::dot`]. A 16-lane register holds two rows'
    /// running sums side by side (the packed layout stores rows 0..3 of a group next to each
    /// other, eight columns at a time), so one load brings 8 columns of two rows, widened to f32
    /// if the weights are half precision, and feeds all `T` tokens:
    ///
    /// ```text
    /// per 8 columns (one chunk):
    ///   weights: 2·G loads of 16 lanes = rows (0|1), (2|3) of each group
    ///   tokens:  T loads of 8 columns, each copied into both halves of a register (x|x)
    ///   sums:    T·G·2 registers: token t × row pair h, lanes 0..8 = row 2h, lanes 8..16 = row 2h+1
    /// ```
    ///
    /// Decode steps use `G = 1` and up to eight tokens (19 of the 32 registers), the prefill GEMM
    /// `G = 2` and six (29).
    ///
    /// # Safety
    /// Each group holds `GROUP` rows as long as the token rows; the CPU has AVX-512 F/DQ and
    /// (for f16 weights) F16C.
    #[inline(always)]
    pub(crate) unsafe fn pairs<const T: usize, const G: usize, E: Weight>(
        x: [&[f32]; T],
        w: [&[E]; G],
        pf: Prefetch,
    ) -> [[[f32; GROUP]; G]; T] {
        let n = x[0].len();
        let full = n / LANES * LANES;
        let (mut next, mut left) = (pf.next, pf.lines);
        let per_chunk = pf.lines.div_ceil((full / LANES).max(1));
        // acc[t][g][h]: token t, rows 2h (lanes 0..8) and 2h+1 (lanes 8..16) of group g.
        let mut acc = [[[_mm512_setzero_ps(); 2]; G]; T];
        for c in 0..full / LANES {
            for _ in 0..per_chunk.min(left) {
                _mm_prefetch::<_MM_HINT_T1>(next as *const i8); // a hint: never faults
                next = next.wrapping_add(LINE);
                left -= 1;
            }
            let mut wv = [[_mm512_setzero_ps(); 2]; G];
            for g in 0..G {
                for h in 0..2 {
                    // SAFETY (here and below): chunk c of every row lies inside its memory.
                    wv[g][h] = unsafe { E::load16(w[g].as_ptr().add((c * GROUP + 2 * h) * LANES)) };
                }
            }
            for t in 0..T {
                let xv = _mm512_broadcast_f32x8(unsafe { _mm256_loadu_ps(x[t].as_ptr().add(c * LANES)) });
                for g in 0..G {
                    for h in 0..2 {
                        acc[t][g][h] = _mm512_fmadd_ps(xv, wv[g][h], acc[t][g][h]);
                    }
                }
            }
        }
        let mut out = [[[0.0f32; GROUP]; G]; T];
        if full == n {
            // Register (t, g, h) holds rows 2h and 2h + 1 of group g for token t: its two sums are
            // out[t][g][2h] and out[t][g][2h + 1], so `finish_halves` writes `out` in order.
            unsafe { finish_halves(acc.as_flattened().as_flattened(), out.as_flattened_mut().as_flattened_mut()) };
            return out;
        }
        // A tail: the lanes to memory, then `finish` for each group.
        let tail = n - full;
        for g in 0..G {
            let tails = &w[g][GROUP * full..GROUP * n];
            let row_tails: [&[E]; GROUP] = std::array::from_fn(|r| &tails[r * tail..(r + 1) * tail]);
            let mut lanes = [[[0.0f32; LANES]; GROUP]; T];
            for t in 0..T {
                for h in 0..2 {
                    unsafe { _mm512_storeu_ps(lanes[t][2 * h].as_mut_ptr(), acc[t][g][h]) }; // rows 2h, 2h+1
                }
            }
            let sums = finish(x, row_tails, full, lanes);
            for t in 0..T {
                out[t][g] = sums[t];
            }
        }
        out
    }
    // ANCHOR_END: pairs

    /// The two sums of eight lanes in each of `regs`, finished as `finish` adds lanes, eight
    /// registers at a time through [`reduce8`]: `sums[2i + h]` is register i's half h.
    ///
    /// # Safety
    /// The CPU has AVX-512 F; `sums` holds two values per register.
    #[inline(always)]
    unsafe fn finish_halves(regs: &[__m512], sums: &mut [f32]) {
        assert_eq!(sums.len(), 2 * regs.len(), "finish_halves: two sums per register");
        for (base, chunk) in regs.chunks(8).enumerate().map(|(c, r)| (8 * c, r)) {
            let mut r = [_mm512_setzero_ps(); 8];
            r[..chunk.len()].copy_from_slice(chunk);
            let mut lanes = [0.0f32; 2 * LANES];
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), reduce8(r)) };
            for (lane, &v) in lanes.iter().enumerate() {
                // Lane 4k + j: register 2j + k / 2, its half k % 2 (see `reduce8`).
                let (j, k) = (lane % 4, lane / 4);
                let i = 2 * j + k / 2;
                if i < chunk.len() {
                    sums[2 * (base + i) + k % 2] = v;
                }
            }
        }
    }

    // ANCHOR: reduce8
    /// The 16 sums held by eight registers of [`pairs`] (each: two sums of eight lanes), each
    /// added as `finish` adds lanes: (0+4, 1+5, 2+6, 3+7), (0+2, 1+3), 0+1 — the same pairs, so
    /// the same bits, in 21 instructions instead of six per register. Lane 4k + j of the result
    /// is register 2j + k / 2's sum in its lanes 8·(k % 2)..: quarters of 4 lanes are shuffled
    /// between two registers so that one add does the first step for both, and so on.
    ///
    /// # Safety
    /// The CPU has AVX-512 F.
    #[inline(always)]
    unsafe fn reduce8(r: [__m512; 8]) -> __m512 {
        // (Plain code, not closures: closures are not compiled with the caller's instructions.)
        // 1: quarters (a.0, a.2, b.0, b.2) + (a.1, a.3, b.1, b.3): lanes l + (l + 4) of each sum.
        let mut s = [_mm512_setzero_ps(); 4];
        for p in 0..4 {
            let (a, b) = (r[2 * p], r[2 * p + 1]);
            s[p] = _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(a, b), _mm512_shuffle_f32x4::<0xDD>(a, b));
        }
        // 2: within each quarter, (p0 + p2, p1 + p3) of two registers side by side.
        let u = _mm512_add_ps(_mm512_shuffle_ps::<0x44>(s[0], s[1]), _mm512_shuffle_ps::<0xEE>(s[0], s[1]));
        let v = _mm512_add_ps(_mm512_shuffle_ps::<0x44>(s[2], s[3]), _mm512_shuffle_ps::<0xEE>(s[2], s[3]));
        // 3: q0 + q1.
        _mm512_add_ps(_mm512_shuffle_ps::<0x88>(u, v), _mm512_shuffle_ps::<0xDD>(u, v))
    }
    // ANCHOR_END: reduce8

    /// The lanes of `a` added as `finish` adds them: (0+4, 1+5, 2+6, 3+7), (0+2, 1+3), 0+1.
    ///
    /// # Safety
    /// The CPU has AVX.
    #[inline(always)]
    unsafe fn reduce(a: __m256) -> f32 {
        unsafe {
            let b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let c = _mm_add_ps(b, _mm_movehl_ps(b, b));
            _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps::<1>(c, c)))
        }
    }

    /// The best instruction set of this CPU for the kernels, if better than plain Rust.
    #[derive(Clone, Copy)]
    pub(super) enum Simd {
        Avx2,
        /// AVX-512's 32 vector registers and 16-lane loads: the wide tiles of [`pairs`].
        Avx512,
    }

    impl Simd {
        #[inline]
        pub(super) fn detect() -> Option<Simd> {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
            let avx512 = is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512vl");
            match (avx2, avx512) {
                (true, true) => Some(Simd::Avx512),
                (true, false) => Some(Simd::Avx2),
                _ => None,
            }
        }
    }

    // The kernels' loops compiled for each instruction set (`Tiles` inlines into them).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_rows_avx2<E: Weight>(xs: &[&[f32]], w: &[E], y: &mut ndarray::ArrayViewMut2<f32>) {
        unsafe { super::dot_rows_with::<Avx2, E>(xs, w, y) }
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512dq,avx512vl")]
    pub(super) unsafe fn dot_rows_avx512<E: Weight>(xs: &[&[f32]], w: &[E], y: &mut ndarray::ArrayViewMut2<f32>) {
        unsafe { super::dot_rows_with::<Avx512, E>(xs, w, y) }
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores_avx2(q: &[&[f32]], keys: &[&[f32]], scale: f32, scores: &mut [f32]) {
        unsafe { super::scores_with::<Avx2>(q, keys, scale, scores) }
    }
    /// AVX-512: eight keys at a time through [`scores8`] when a key is whole chunks of eight; the
    /// last few keys, and other widths, through the AVX2 tiles.
    #[target_feature(enable = "avx2,fma,avx512f,avx512dq,avx512vl")]
    pub(super) unsafe fn scores_avx512(q: &[&[f32]], keys: &[&[f32]], scale: f32, scores: &mut [f32]) {
        let (n, d) = (keys.len(), keys.first().map_or(0, |k| k.len()));
        if n < 8 || d % LANES != 0 {
            return unsafe { super::scores_with::<Avx2>(q, keys, scale, scores) };
        }
        let wide = n / 8 * 8;
        for (p, qs) in q.chunks(super::SCORE_HEADS).enumerate() {
            let h0 = p * super::SCORE_HEADS;
            macro_rules! run {
                ($h:literal) => {{
                    let qh: [&[f32]; $h] = qs.try_into().expect("a tile's heads");
                    for b in (0..wide).step_by(8) {
                        let k: [&[f32]; 8] = keys[b..b + 8].try_into().expect("eight keys");
                        let sums = unsafe { scores8::<$h>(qh, k) };
                        for (h, sums) in sums.iter().enumerate() {
                            for (t, &v) in sums.iter().enumerate() {
                                scores[(h0 + h) * n + b + t] = v * scale;
                            }
                        }
                    }
                    for (t, &key) in keys.iter().enumerate().skip(wide) {
                        let sums = unsafe { Avx2::tile::<$h, 1, f32>(qh, Rows::plain([key], d), Prefetch::NONE) };
                        for (h, sums) in sums.iter().enumerate() {
                            scores[(h0 + h) * n + t] = sums[0] * scale;
                        }
                    }
                }};
            }
            match qs.len() {
                3 => run!(3),
                2 => run!(2),
                _ => run!(1),
            }
        }
    }

    // ANCHOR: scores8
    /// The dot products of `H` query heads with eight keys, each in [`super::dot`]'s order: a
    /// 16-lane register holds the running sums of two keys side by side (keys p and p + 4), fed
    /// by each head's eight columns copied into both halves, so one multiply-add serves two dot
    /// products; [`reduce8`] then finishes eight registers at once. Keys as long as the heads,
    /// whole chunks of eight.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/DQ; every row is as long as `k[0]`, a multiple of eight.
    #[inline(always)]
    unsafe fn scores8<const H: usize>(q: [&[f32]; H], k: [&[f32]; 8]) -> [[f32; 8]; H] {
        let d = k[0].len();
        let mut acc = [[_mm512_setzero_ps(); 4]; H]; // acc[h][p]: head h, keys p (lanes 0..8), p + 4
        for c in (0..d).step_by(LANES) {
            let mut kv = [_mm512_setzero_ps(); 4];
            for (p, kv) in kv.iter_mut().enumerate() {
                // SAFETY (here and below): chunk c lies inside every row (the caller's promise).
                let (lo, hi) = unsafe { (_mm256_loadu_ps(k[p].as_ptr().add(c)), _mm256_loadu_ps(k[p + 4].as_ptr().add(c))) };
                *kv = _mm512_insertf32x8::<1>(_mm512_castps256_ps512(lo), hi);
            }
            for h in 0..H {
                let qv = _mm512_broadcast_f32x8(unsafe { _mm256_loadu_ps(q[h].as_ptr().add(c)) });
                for p in 0..4 {
                    acc[h][p] = _mm512_fmadd_ps(qv, kv[p], acc[h][p]);
                }
            }
        }
        // Register (h, p): head h's sums with keys p (half 0) and p + 4 (half 1).
        let mut sums = [[[0.0f32; 2]; 4]; H];
        unsafe { finish_halves(acc.as_flattened(), sums.as_flattened_mut().as_flattened_mut()) };
        let mut out = [[0.0f32; 8]; H];
        for h in 0..H {
            for p in 0..4 {
                (out[h][p], out[h][p + 4]) = (sums[h][p][0], sums[h][p][1]);
            }
        }
        out
    }
    // ANCHOR_END: scores8
}

/// `a · b` in the order every kernel here uses. Panics if the lengths differ (a caller's bug).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot of unequal lengths");
    // SAFETY: `b` has a.len() values; plain Rust runs anywhere.
    unsafe { Portable::tile::<1, 1, f32>([a], Rows::plain([b], a.len()), Prefetch::NONE)[0][0] }
}

/// `y[t][o] = x[t] · w[o]` for a band of packed weight groups `w` (see [`crate::cpu::packed`]; its
/// rows are `y`'s columns, the padding rows of its last group beyond them) and tokens `x`, the
/// weights in any [`Weight`] type. Panics if the shapes disagree.
pub fn dot_rows<E: Weight>(x: &ArrayView2<f32>, w: &[E], y: &mut ArrayViewMut2<f32>) {
    let Some(xs) = token_rows(x, w, y) else { return };
    // SAFETY: every group holds GROUP rows of n values and every token row has n values (checked
    // by `token_rows`); each path runs only on a CPU that has its instructions.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        match x86::Simd::detect() {
            Some(x86::Simd::Avx512) => return x86::dot_rows_avx512(&xs, w, y),
            Some(x86::Simd::Avx2) => return x86::dot_rows_avx2(&xs, w, y),
            None => {}
        }
        dot_rows_with::<Portable, E>(&xs, w, y)
    }
}

/// The same outputs as [`dot_rows`] from the plain-Rust tile alone: what the SIMD paths are
/// tested against, bit for bit.
pub fn dot_rows_portable<E: Weight>(x: &ArrayView2<f32>, w: &[E], y: &mut ArrayViewMut2<f32>) {
    let Some(xs) = token_rows(x, w, y) else { return };
    // SAFETY: shapes checked by `token_rows`; plain Rust runs anywhere.
    unsafe { dot_rows_with::<Portable, E>(&xs, w, y) }
}

/// The token rows of `x` as slices, after checking the shapes `dot_rows` needs (panics if they
/// disagree); `None` (and `y` zeroed) when the rows are empty.
pub(crate) fn token_rows<'x, E>(x: &'x ArrayView2<f32>, w: &[E], y: &mut ArrayViewMut2<f32>) -> Option<Vec<&'x [f32]>> {
    let n = x.ncols();
    let groups = y.ncols().div_ceil(GROUP);
    assert!(y.nrows() == x.nrows() && w.len() == groups * GROUP * n, "dot_rows: shapes disagree");
    if n == 0 {
        y.fill(0.0);
        return None;
    }
    Some(x.rows().into_iter().map(|r| r.to_slice().expect("contiguous rows")).collect())
}

/// Whether a one-token step over f32 weights prefetches too. Measured with `scripts/peer_llamacpp.sh`
/// and `kvserve generate`: on an Intel Xeon (AVX-512) decode ran faster with the prefetches, with
/// one thread and with two; on an AMD EPYC the hardware prefetcher followed the one stream alone
/// and the prefetches made it slower. So: on Intel CPUs only (a hint either way: same results).
fn prefetch_one_f32_stream() -> bool {
    static INTEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INTEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            // CPUID leaf 0: the vendor string in EBX, EDX, ECX.
            #[allow(unused_unsafe)] // `__cpuid` is safe to call in newer Rust, unsafe in older
            let r = unsafe { std::arch::x86_64::__cpuid(0) };
            (r.ebx, r.edx, r.ecx) == (u32::from_le_bytes(*b"Genu"), u32::from_le_bytes(*b"ineI"), u32::from_le_bytes(*b"ntel"))
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// Token blocks × packed groups × tiles of up to `K::TOKENS` tokens.
///
/// # Safety
/// `w` holds whole groups of rows as long as the token rows; instructions supported.
#[inline(always)]
unsafe fn dot_rows_with<K: Tiles, E: Weight>(xs: &[&[f32]], w: &[E], y: &mut ArrayViewMut2<f32>) {
    let n = xs.first().map_or(0, |x| x.len());
    let group_bytes = GROUP * n * size_of::<E>();
    let group_lines = group_bytes.div_ceil(LINE);
    let one_token_prefetch = size_of::<E>() < size_of::<f32>() || prefetch_one_f32_stream();
    for t0 in (0..xs.len()).step_by(TOKEN_BLOCK) {
        let block = &xs[t0..xs.len().min(t0 + TOKEN_BLOCK)];
        let tiles = block.len().div_ceil(K::TOKENS);
        for (g, group) in w.chunks_exact(GROUP * n).enumerate() {
            let kept = (y.ncols() - g * GROUP).min(GROUP); // the last group's padding rows are dropped
            // The group AHEAD groups on, a share of it per token tile (past the band's end it
            // is the next band's, which this core most likely takes next). With one token the
            // hardware prefetcher follows an f32 stream alone: prefetching too was slower
            // (measured; from two tokens on, prefetching is faster even with one tile per group).
            // A 2-byte stream passes twice the weights per cache line, and one token of it on
            // one core ran faster with the prefetches (measured); so did one f32 token on Intel.
            let ahead = (group.as_ptr() as *const u8).wrapping_add(AHEAD * group_bytes);
            let prefetch = block.len() > 1 || one_token_prefetch;
            for (k, t1) in (0..block.len()).step_by(K::TOKENS).enumerate() {
                let tokens = &block[t1..block.len().min(t1 + K::TOKENS)];
                let (first, last) = (k * group_lines / tiles, (k + 1) * group_lines / tiles);
                let pf = if prefetch { Prefetch { next: ahead.wrapping_add(first * LINE), lines: last - first } } else { Prefetch::NONE };
                macro_rules! run {
                    ($t:literal) => {{
                        let x: [&[f32]; $t] = tokens.try_into().expect("a tile's tokens");
                        let sums = unsafe { K::group::<$t, E>(x, group, n, pf) };
                        for (t, sums) in sums.iter().enumerate() {
                            for (r, &v) in sums.iter().enumerate().take(kept) {
                                y[[t0 + t1 + t, g * GROUP + r]] = v;
                            }
                        }
                    }};
                }
                // Tiles wider than K::TOKENS are never asked for (their arms are dead code there).
                match tokens.len() {
                    8 => run!(8),
                    7 => run!(7),
                    6 => run!(6),
                    5 => run!(5),
                    4 => run!(4),
                    3 => run!(3),
                    2 => run!(2),
                    _ => run!(1),
                }
            }
        }
    }
}

/// `scores[h·n + t] = (q_h · keys[t]) × scale` for the query heads `q_h` of `q` (whole rows as
/// long as a key; one head or the heads that share these keys) and the `n` keys: each bit for bit
/// [`dot`]`(q_h, keys[t]) × scale`. Tiles of up to three heads × four positions, so each key
/// loaded feeds every head of the group. Panics if a key's length differs from a head's or the
/// shapes disagree.
pub fn head_scores(q: &[f32], keys: &[&[f32]], scale: f32, scores: &mut [f32]) {
    let d = keys.first().map_or(q.len(), |k| k.len());
    assert!(keys.iter().all(|k| k.len() == d), "keys differ in length");
    assert!(d > 0 && q.len() % d == 0 && scores.len() == q.len() / d * keys.len(), "head_scores: shapes disagree");
    let heads: Vec<&[f32]> = q.chunks_exact(d).collect();
    // SAFETY: lengths checked above; each path runs only on a CPU that has its instructions.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        match x86::Simd::detect() {
            Some(x86::Simd::Avx512) => return x86::scores_avx512(&heads, keys, scale, scores),
            Some(x86::Simd::Avx2) => return x86::scores_avx2(&heads, keys, scale, scores),
            None => {}
        }
        scores_with::<Portable>(&heads, keys, scale, scores)
    }
}

/// Query heads per score tile: 3 heads × 4 keys are 12 running sums, which with the heads' and
/// a key's vectors fill AVX2's 16 registers.
const SCORE_HEADS: usize = 3;

/// # Safety
/// Every key as long as every head; instructions supported.
#[inline(always)]
unsafe fn scores_with<K: Tiles>(heads: &[&[f32]], keys: &[&[f32]], scale: f32, scores: &mut [f32]) {
    let n = keys.len();
    for (p, qs) in heads.chunks(SCORE_HEADS).enumerate() {
        let h0 = p * SCORE_HEADS;
        macro_rules! run {
            ($h:literal) => {{
                let q: [&[f32]; $h] = qs.try_into().expect("a tile's heads");
                for (b, k) in keys.chunks(4).enumerate() {
                    if let &[k0, k1, k2, k3] = k {
                        let sums = unsafe { K::tile::<$h, 4, f32>(q, Rows::plain([k0, k1, k2, k3], k0.len()), Prefetch::NONE) };
                        for (h, sums) in sums.iter().enumerate() {
                            for (r, &v) in sums.iter().enumerate() {
                                scores[(h0 + h) * n + 4 * b + r] = v * scale;
                            }
                        }
                    } else {
                        for (r, &key) in k.iter().enumerate() {
                            let sums = unsafe { K::tile::<$h, 1, f32>(q, Rows::plain([key], key.len()), Prefetch::NONE) };
                            for (h, sums) in sums.iter().enumerate() {
                                scores[(h0 + h) * n + 4 * b + r] = sums[0] * scale;
                            }
                        }
                    }
                }
            }};
        }
        match qs.len() {
            3 => run!(3),
            2 => run!(2),
            _ => run!(1),
        }
    }
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

    /// `dot_rows` (the CPU's best path) or its portable twin over a packed matrix of any type.
    fn run(x: &ArrayView2<f32>, p: &Packed, portable: bool) -> Array2<f32> {
        let mut y = Array2::from_elem((x.nrows(), p.rows()), f32::NAN);
        let mut v = y.view_mut();
        match (p.data(), portable) {
            (Elements::F32(d), false) => dot_rows(x, d, &mut v),
            (Elements::F16(d), false) => dot_rows(x, d, &mut v),
            (Elements::BF16(d), false) => dot_rows(x, d, &mut v),
            (Elements::F32(d), true) => dot_rows_portable(x, d, &mut v),
            (Elements::F16(d), true) => dot_rows_portable(x, d, &mut v),
            (Elements::BF16(d), true) => dot_rows_portable(x, d, &mut v),
        }
        y
    }

    #[test]
    fn every_output_is_the_same_dot_product_whatever_the_batch_and_weight_type() {
        // 77 columns: nine full lane chunks and a tail of five; 64: no tail. 37 rows: a last
        // group of one. Batches 1..=9 cover every tile width, 70 several token tiles.
        for cols in [77, 64] {
            let x = values(70, cols, 2);
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                let packed = Packed::new_as(&values(37, cols, 1).view(), dtype);
                let w = packed.unpack(); // the kept values, widened: exactly what the kernels multiply
                for batch in (1..=9).chain([70]) {
                    let x = x.slice(s![..batch, ..]);
                    let (y, portable) = (run(&x, &packed, false), run(&x, &packed, true));
                    for t in 0..batch {
                        for o in 0..37 {
                            let expected = dot(x.row(t).as_slice().unwrap(), w.row(o).as_slice().unwrap());
                            let at = format!("{dtype:?}, {cols} columns, batch {batch}, token {t}, row {o}");
                            assert_eq!(y[[t, o]].to_bits(), expected.to_bits(), "{at}");
                            assert_eq!(portable[[t, o]].to_bits(), expected.to_bits(), "portable, {at}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn half_weights_give_the_f32_models_bits() {
        // A matrix of half values packed as f32 and as f16: the same products, the same order.
        let w = Packed::new_as(&values(12, 100, 7).view(), DType::F16).unpack();
        let x = values(8, 100, 8);
        let (wide, half) = (Packed::new(&w.view()), Packed::new_as(&w.view(), DType::F16));
        for batch in [1, 8] {
            let x = x.slice(s![..batch, ..]);
            assert_eq!(run(&x, &wide, false).mapv(f32::to_bits), run(&x, &half, false).mapv(f32::to_bits), "batch {batch}");
        }
    }

    #[test]
    fn dot_is_close_to_the_exact_sum() {
        let (a, b) = (values(1, 1000, 3), values(1, 1000, 4));
        let exact: f64 = a.iter().zip(&b).map(|(&p, &q)| p as f64 * q as f64).sum();
        let got = dot(a.as_slice().unwrap(), b.as_slice().unwrap()) as f64;
        assert!((got - exact).abs() < 1e-4 * exact.abs().max(1.0), "{got} vs {exact}");
    }

    #[test]
    fn head_scores_are_scaled_dot_products() {
        // 1..=7 heads (tiles of 3, 2, 1); 7 keys (a block of 4 and three alone) and 21 (with
        // AVX-512: two blocks of 8 and five alone); 64 and 20 wide (20: the AVX2 tiles only).
        for (d, heads, n) in [(64, 1, 7), (64, 3, 7), (64, 7, 7), (20, 2, 7), (20, 4, 7), (64, 1, 21), (64, 3, 21), (64, 7, 21), (128, 2, 16), (20, 3, 21)] {
            let q = values(heads, d, 5);
            let k = values(n, d, 6);
            let keys: Vec<&[f32]> = k.rows().into_iter().map(|r| r.to_slice().unwrap()).collect();
            let mut scores = vec![f32::NAN; heads * n];
            head_scores(q.as_slice().unwrap(), &keys, 0.125, &mut scores);
            for h in 0..heads {
                for (t, key) in keys.iter().enumerate() {
                    let expected = dot(q.row(h).as_slice().unwrap(), key) * 0.125;
                    assert_eq!(scores[h * n + t].to_bits(), expected.to_bits(), "d {d}, head {h} of {heads}, key {t} of {n}");
                }
            }
        }
    }
}
