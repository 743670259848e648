//! The second half of attention: each head's output is its probabilities times the values,
//! `out[i] = Σ_t p[t] · v[t][i]`.
//!
//! **One order.** Each output starts at 0 and adds `p[t] · v[t][i]` for t = 0, 1, … in turn, the
//! product rounded, then the sum (no fused multiply-add): the order of the plain loop
//! `o += p * v`. Columns are independent, so how many a register holds changes nothing: the
//! vector paths give the plain loop's bits (tested below).
//!
//! **Why a kernel.** In a 512-token prompt this is half of attention's arithmetic, and the plain
//! loop kept its 64 running sums in memory, re-read and re-written for every position. Here a
//! block of [`COLS`] sums per head stays in registers while the positions pass, and the query
//! heads that share a K/V head (grouped-query attention) share each value row's load.

/// Output columns per pass: 64 sums are four 16-lane AVX-512 registers (eight AVX2 ones).
const COLS: usize = 64;
/// Query heads per pass over the values: each value row loaded feeds this many heads.
const HEADS: usize = 3;

/// `out[h·d..(h+1)·d] = Σ_t probs[h·n + t] · values[t]` for every head h of the group, where `n`
/// is `values.len()` and `d` each value row's length (`out` holds whole rows of `d`). The order
/// of each output is the module's. Panics if the shapes disagree (a caller's bug).
pub fn weighted_sums(probs: &[f32], values: &[&[f32]], out: &mut [f32]) {
    let Some(d) = values.first().map(|v| v.len()) else {
        out.fill(0.0); // no positions: empty sums
        return;
    };
    let n = values.len();
    assert!(values.iter().all(|v| v.len() == d), "value rows differ in length");
    if d == 0 {
        return;
    }
    assert!(out.len() % d == 0 && probs.len() == out.len() / d * n, "weighted_sums: shapes disagree");
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the instructions.
            return unsafe { with_avx512(probs, values, out) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { with_avx2(probs, values, out) };
        }
    }
    with_heads(probs, values, out)
}

/// The plain loop the module's order is defined by: what the other paths are tested against.
pub fn weighted_sums_portable(probs: &[f32], values: &[&[f32]], out: &mut [f32]) {
    let n = values.len();
    let d = values.first().map_or(0, |v| v.len());
    for (out_h, p_h) in out.chunks_exact_mut(d.max(1)).zip(probs.chunks_exact(n.max(1))) {
        out_h.fill(0.0);
        for (&p, v) in p_h.iter().zip(values) {
            for (o, &x) in out_h.iter_mut().zip(*v) {
                *o += p * x;
            }
        }
    }
}

// The same loops compiled for wider registers (same bits: IEEE products and sums, lane by lane).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn with_avx512(probs: &[f32], values: &[&[f32]], out: &mut [f32]) {
    with_heads(probs, values, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn with_avx2(probs: &[f32], values: &[&[f32]], out: &mut [f32]) {
    with_heads(probs, values, out)
}

/// The heads in passes of up to [`HEADS`].
#[inline(always)]
fn with_heads(probs: &[f32], values: &[&[f32]], out: &mut [f32]) {
    let (n, d) = (values.len(), values[0].len());
    let mut rest = out;
    let mut p = probs;
    while !rest.is_empty() {
        let h = (rest.len() / d).min(HEADS);
        let (now, later) = rest.split_at_mut(h * d);
        let (p_now, p_later) = p.split_at(h * n);
        match h {
            3 => pass::<3>(p_now, values, now),
            2 => pass::<2>(p_now, values, now),
            _ => pass::<1>(p_now, values, now),
        }
        (rest, p) = (later, p_later);
    }
}

/// `H` heads at once: for each block of [`COLS`] columns, `H × COLS` running sums in a fixed-size
/// array (which the compiler keeps in registers) while every position passes once.
#[inline(always)]
fn pass<const H: usize>(probs: &[f32], values: &[&[f32]], out: &mut [f32]) {
    let (n, d) = (values.len(), values[0].len());
    let full = d - d % COLS;
    for c0 in (0..full).step_by(COLS) {
        let mut acc = [[0.0f32; COLS]; H];
        for (t, v) in values.iter().enumerate() {
            let Some(v) = v.get(c0..c0 + COLS).and_then(|v| <&[f32; COLS]>::try_from(v).ok()) else { continue };
            for h in 0..H {
                let p = probs[h * n + t];
                for (a, &x) in acc[h].iter_mut().zip(v) {
                    *a += p * x;
                }
            }
        }
        for (h, acc) in acc.iter().enumerate() {
            out[h * d + c0..h * d + c0 + COLS].copy_from_slice(acc);
        }
    }
    if full < d {
        // The last d % COLS columns: the plain loop, in the same order.
        for h in 0..H {
            let out_h = &mut out[h * d + full..(h + 1) * d];
            out_h.fill(0.0);
            for (t, v) in values.iter().enumerate() {
                let p = probs[h * n + t];
                for (o, &x) in out_h.iter_mut().zip(&v[full..]) {
                    *o += p * x;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| (((i * 131 + seed * 71) % 1009) as f32 / 504.5 - 1.0) * 1.37).collect()
    }

    #[test]
    fn every_path_gives_the_plain_loops_bits() {
        // Head dims with and without a tail of columns; groups of 1..=7 heads (passes of 3, 2, 1).
        for d in [64, 128, 16, 77, 200] {
            for heads in 1..=7 {
                for n in [1, 5, 33] {
                    let v = values(n * d, 1);
                    let rows: Vec<&[f32]> = v.chunks_exact(d).collect();
                    let p = values(heads * n, 2);
                    let (mut fast, mut plain) = (vec![f32::NAN; heads * d], vec![f32::NAN; heads * d]);
                    weighted_sums(&p, &rows, &mut fast);
                    weighted_sums_portable(&p, &rows, &mut plain);
                    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&fast), bits(&plain), "d {d}, {heads} heads, {n} positions");
                }
            }
        }
    }
}
