//! The exponential, eight lanes at a time, and its two users: attention's softmax and SwiGLU's
//! SiLU. A prompt of 512 tokens takes the exponential of every score of every head of every layer
//! and of every gate value of every MLP — tens of millions of them — and libm's `expf`, one value
//! at a time, was about a twelfth of a prompt's time, the softmax's sum (one add waiting for the
//! last) more besides. Here they run eight lanes at a time.
//!
//! The bits are fixed by the portable functions ([`exp`], [`softmax_portable`],
//! [`silu_mul_portable`]), which the SIMD paths follow exactly (tested below): every stage calls
//! the same [`softmax_in_place`] and [`silu_mul`], so all of them still give the same tokens.
//! - **exp**: [`exp`], the range reduction x = n·ln 2 + r (|r| ≤ ln 2 / 2, ln 2 in two parts) and a
//!   degree-5 polynomial for eʳ (Cephes' `expf` coefficients), every step one fused multiply-add,
//!   scaled by 2ⁿ through the exponent bits; below −87 it is 0 (e⁻⁸⁷ is near f32's smallest normal,
//!   and a softmax's largest term is 1). Within 2.5 ε (relative) of the true value (tested).
//! - **softmax**: the maximum first (any order gives the same); then eight running sums of the
//!   terms, lane l adding terms l, l + 8, …, the last n % 8 terms into lanes 0, 1, …, and the lanes
//!   added (0+4, 1+5, 2+6, 3+7), (0+2, 1+3), 0+1 — the order of [`super::kernels::dot`]; each term
//!   divided by the sum last.
//! - **SiLU · up**: g / (1 + e⁻ᵍ) · u, element by element.

const LANES: usize = 8;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 = LN2_HI + LN2_LO: LN2_HI has few bits, so n · LN2_HI is exact for the n that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 · 2²³: adding it rounds a float below 2²² to an integer (ties to even), in one rounding.
const ROUND: f32 = 12_582_912.0;
/// Below this, exp is 0.
const LOWEST: f32 = -87.0;
/// Above this, exp is ∞ (a softmax never asks: its arguments are ≤ 0).
const HIGHEST: f32 = 88.0;
/// eʳ ≈ 1 + r + r² · P(r), P's coefficients from the highest power down.
const P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];

// ANCHOR: exp
/// eˣ in the order the SIMD path follows (see the module's notes).
pub fn exp(x: f32) -> f32 {
    if x < LOWEST {
        return 0.0; // also −∞
    }
    let x = x.min(HIGHEST);
    let n = x.mul_add(LOG2E, ROUND) - ROUND; // round(x / ln 2)
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x)); // x − n ln 2
    let mut p = P[0];
    for &c in &P[1..] {
        p = p.mul_add(r, c);
    }
    let y = p.mul_add(r * r, r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23) // · 2ⁿ
}
// ANCHOR_END: exp

/// Softmax in place, shifted by the maximum for stability: the definition of the order (see the
/// module's notes).
pub fn softmax_portable(xs: &mut [f32]) {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut lanes = [0.0f32; LANES];
    let full = xs.len() / LANES * LANES;
    for chunk in xs[..full].chunks_exact_mut(LANES) {
        for (l, x) in chunk.iter_mut().enumerate() {
            *x = exp(*x - max);
            lanes[l] += *x;
        }
    }
    for (l, x) in xs[full..].iter_mut().enumerate() {
        *x = exp(*x - max);
        lanes[l] += *x;
    }
    let sum = pairwise(lanes);
    for x in xs.iter_mut() {
        *x /= sum;
    }
}

/// The lanes added as `dot` adds its lanes: (0+4, 1+5, 2+6, 3+7), (0+2, 1+3), 0+1.
#[inline(always)]
fn pairwise(a: [f32; LANES]) -> f32 {
    let b = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (b[0] + b[2]) + (b[1] + b[3])
}

/// Softmax in place (shifted by the maximum): [`softmax_portable`]'s bits, eight lanes at a time
/// where the CPU has AVX2 and FMA.
pub fn softmax_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the instructions.
        return unsafe { x86::softmax(xs) };
    }
    softmax_portable(xs)
}

// ANCHOR: silu_mul
/// SwiGLU's product silu(g) · u = g / (1 + e⁻ᵍ) · u of each gate value g and up value u, with
/// [`exp`]: [`silu_mul_portable`]'s bits, eight at a time where the CPU has AVX2 and FMA.
/// Panics if the lengths differ.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == out.len() && up.len() == out.len(), "silu_mul: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the instructions; the lengths are equal.
        return unsafe { x86::silu_mul(gate, up, out) };
    }
    silu_mul_portable(gate, up, out)
}

/// The definition of [`silu_mul`]'s bits.
pub fn silu_mul_portable(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + exp(-g)) * u;
    }
}
// ANCHOR_END: silu_mul

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// [`exp`] of eight lanes: the same operations, lane by lane.
    #[inline(always)]
    unsafe fn exp8(x: __m256) -> __m256 {
        let zero = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LOWEST)); // lanes that are 0
        let x = _mm256_min_ps(x, _mm256_set1_ps(HIGHEST));
        let n = _mm256_sub_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(LOG2E), _mm256_set1_ps(ROUND)), _mm256_set1_ps(ROUND));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x); // −(n · hi) + x, one rounding
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(P[0]);
        for &c in &P[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0));
        // n is a whole number in [−126, 127] wherever the lane is kept: its bits convert exactly.
        let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
        _mm256_andnot_ps(zero, _mm256_mul_ps(y, _mm256_castsi256_ps(pow2)))
    }

    /// [`softmax_portable`] with eight lanes per instruction.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax(xs: &mut [f32]) {
        let full = xs.len() / LANES * LANES;
        let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
        for c in (0..full).step_by(LANES) {
            // SAFETY (here and below): c + LANES ≤ full ≤ xs.len().
            m = _mm256_max_ps(m, unsafe { _mm256_loadu_ps(xs.as_ptr().add(c)) });
        }
        let mut lanes = [0.0f32; LANES];
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), m) };
        let max = lanes.iter().chain(&xs[full..]).copied().fold(f32::NEG_INFINITY, f32::max);
        let (mx, mut sum) = (_mm256_set1_ps(max), _mm256_setzero_ps());
        for c in (0..full).step_by(LANES) {
            let p = xs.as_mut_ptr().wrapping_add(c);
            let e = unsafe { exp8(_mm256_sub_ps(_mm256_loadu_ps(p), mx)) };
            unsafe { _mm256_storeu_ps(p, e) };
            sum = _mm256_add_ps(sum, e);
        }
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        for (l, x) in xs[full..].iter_mut().enumerate() {
            *x = exp(*x - max);
            lanes[l] += *x;
        }
        let sum = pairwise(lanes);
        for x in xs.iter_mut() {
            *x /= sum;
        }
    }

    /// [`silu_mul_portable`] with eight lanes per instruction.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; the three slices are equally long.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let full = out.len() / LANES * LANES;
        let (sign, one) = (_mm256_set1_ps(-0.0), _mm256_set1_ps(1.0));
        for c in (0..full).step_by(LANES) {
            // SAFETY: c + LANES ≤ full ≤ every slice's length.
            unsafe {
                let g = _mm256_loadu_ps(gate.as_ptr().add(c));
                let e = exp8(_mm256_xor_ps(g, sign)); // e^−g
                let o = _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up.as_ptr().add(c)));
                _mm256_storeu_ps(out.as_mut_ptr().add(c), o);
            }
        }
        silu_mul_portable(&gate[full..], &up[full..], &mut out[full..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [lo, hi).
    fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect()
    }

    #[test]
    fn exp_is_within_two_and_a_half_epsilon_of_the_true_value() {
        let mut xs = values(200_000, 1, -87.0, 0.0);
        xs.extend([0.0, -0.0, -1e-8, -0.5, -1.0, -86.99, -87.0, 1.0, 10.0, 88.0]);
        for x in xs {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            let rel = ((got - want) / want).abs();
            assert!(rel < 2.5 * f32::EPSILON as f64, "exp({x}) = {got}, true {want}, rel {rel:e}");
        }
        assert_eq!(exp(-87.5), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn the_simd_softmax_gives_the_portable_bits() {
        for (i, n) in [1usize, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 511, 512, 1000].into_iter().enumerate() {
            for (lo, hi) in [(-3.0f32, 3.0), (-200.0, 40.0), (1000.0, 1001.0)] {
                let xs = values(n, i as u64 * 7 + 3, lo, hi);
                let (mut a, mut b) = (xs.clone(), xs.clone());
                softmax_portable(&mut a);
                softmax_in_place(&mut b);
                let (a, b): (Vec<u32>, Vec<u32>) = (a.iter().map(|v| v.to_bits()).collect(), b.iter().map(|v| v.to_bits()).collect());
                assert_eq!(a, b, "n {n}, values in [{lo}, {hi})");
            }
        }
    }

    #[test]
    fn the_simd_silu_gives_the_portable_bits_and_the_true_value() {
        for (i, n) in [1usize, 7, 8, 9, 64, 100, 2048].into_iter().enumerate() {
            let (g, u) = (values(n, i as u64 + 40, -100.0, 100.0), values(n, i as u64 + 80, -2.0, 2.0));
            let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
            silu_mul_portable(&g, &u, &mut a);
            silu_mul(&g, &u, &mut b);
            assert_eq!(a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "n {n}");
            for ((&g, &u), &o) in g.iter().zip(&u).zip(&a) {
                let want = g as f64 / (1.0 + (-(g as f64)).exp()) * u as f64;
                assert!((o as f64 - want).abs() <= 4.0 * f32::EPSILON as f64 * want.abs() + 1e-30, "silu({g}) · {u} = {o}, true {want}");
            }
        }
    }

    #[test]
    fn softmax_sums_to_one_and_matches_f64() {
        let xs = values(777, 5, -20.0, 20.0);
        let mut p = xs.clone();
        softmax_in_place(&mut p);
        let max = xs.iter().copied().fold(f64::NEG_INFINITY, |m, v| m.max(v as f64));
        let total: f64 = xs.iter().map(|&v| (v as f64 - max).exp()).sum();
        for (&v, &q) in xs.iter().zip(&p) {
            let want = (v as f64 - max).exp() / total;
            assert!((q as f64 - want).abs() <= 1e-6 * want.max(1e-30) + 1e-12, "{q} vs {want}");
        }
        assert!((p.iter().map(|&v| v as f64).sum::<f64>() - 1.0).abs() < 1e-5);
    }
}
