//! The small tensor operations of a Llama block, on row-major `ndarray` matrices.

use crate::cpu::packed::{Elements, Packed};
use crate::cpu::widen::Weight;
use crate::cpu::exp::silu_mul;
use crate::cpu::{gemm, kernels};
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, Axis, Zip};
use rayon::prelude::*;

// ANCHOR: linear
/// `y = x · Wᵀ` for a weight `w` of (out_features, in_features), as Hugging Face stores it,
/// re-laid for the kernel at load time ([`Packed`]). x: (tokens, in) → y: (tokens, out), written
/// into a buffer the caller reuses step after step. Every output is one dot product,
/// `y[t][o] = x[t] · w[o]`. The output features are cut into bands, one task per band on every
/// core; a core reads its band of `w` once for all the tokens of the step — this is where
/// batching pays. A step of many tokens (a prompt) takes the larger tile of [`gemm`]; each output
/// is the same bits either way. Weights kept in f16 or bf16 are read as they are stored and
/// widened in registers: half the bytes, the same f32 arithmetic.
pub fn linear(x: &ArrayView2<f32>, w: &Packed, y: &mut Array2<f32>) {
    assert_eq!((x.ncols(), y.dim()), (w.cols(), (x.nrows(), w.rows())), "linear: shapes disagree");
    match w.data() {
        Elements::F32(d) => linear_with(x, d, w.cols(), y),
        Elements::F16(d) => linear_with(x, d, w.cols(), y),
        Elements::BF16(d) => linear_with(x, d, w.cols(), y),
    }
}

/// `linear` over packed values of one weight type `E`, rows `cols` wide.
fn linear_with<E: Weight>(x: &ArrayView2<f32>, w: &[E], cols: usize, y: &mut Array2<f32>) {
    let dot_rows = if x.nrows() >= gemm::MIN_TOKENS { gemm::dot_rows::<E> } else { kernels::dot_rows::<E> };
    y.axis_chunks_iter_mut(Axis(1), kernels::BAND)
        .into_par_iter()
        .zip(w.par_chunks((kernels::BAND * cols).max(1)))
        .for_each(|(mut y_band, w_band)| dot_rows(x, w_band, &mut y_band));
}
// ANCHOR_END: linear

// ANCHOR: rms_norm
/// RMSNorm over the last axis: x / sqrt(mean(x²) + eps) · weight. x, out: (tokens, hidden).
pub fn rms_norm(x: &ArrayView2<f32>, weight: &ArrayView1<f32>, eps: f32, out: &mut Array2<f32>) {
    let norm = |(row, mut out): (ArrayView1<f32>, ndarray::ArrayViewMut1<f32>)| {
        let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
        let scale = 1.0 / (mean_sq + eps).sqrt();
        Zip::from(&mut out).and(&row).and(weight).for_each(|o, &v, &w| *o = w * (v * scale));
    };
    // Rows are independent: a prompt's spread over the cores (the same bits on any core).
    if x.nrows() >= PARALLEL_ROWS {
        x.axis_iter(Axis(0)).into_par_iter().zip(out.axis_iter_mut(Axis(0))).for_each(norm);
    } else {
        x.rows().into_iter().zip(out.rows_mut()).for_each(norm);
    }
}

/// From this many tokens the elementwise steps (RMSNorm, SwiGLU) spread their rows over the
/// cores; for a few decode tokens waking the other cores would cost more than it saves.
const PARALLEL_ROWS: usize = 16;
// ANCHOR_END: rms_norm

// ANCHOR: swiglu
/// SwiGLU's gate: silu(gate) · up, elementwise. gate_up: (tokens, 2 × intermediate), each row
/// the gate projection then the up projection; out: (tokens, intermediate).
pub fn swiglu(gate_up: &ArrayView2<f32>, out: &mut Array2<f32>) {
    let inter = out.ncols();
    assert_eq!(gate_up.dim(), (out.nrows(), 2 * inter), "swiglu: shapes disagree");
    // out = g / (1 + e^−g) · u for each gate value g and its up value u (`cpu::exp::silu_mul`).
    let act = |(gu, o): (ArrayView1<f32>, ArrayViewMut1<f32>)| {
        let gu = gu.to_slice().expect("row-major rows");
        silu_mul(&gu[..inter], &gu[inter..], o.into_slice().expect("row-major rows"));
    };
    if out.nrows() >= PARALLEL_ROWS {
        gate_up.axis_iter(Axis(0)).into_par_iter().zip(out.axis_iter_mut(Axis(0))).for_each(act);
    } else {
        gate_up.rows().into_iter().zip(out.rows_mut()).for_each(act);
    }
}
// ANCHOR_END: swiglu

/// Row `i` of a row-major matrix as a slice (every matrix the model returns is row-major).
pub fn row(a: &Array2<f32>, i: usize) -> &[f32] {
    let cols = a.ncols();
    a.as_slice().map_or(&[][..], |s| &s[i * cols..(i + 1) * cols])
}

/// Softmax in place, shifted by the maximum for stability: exp(x − max) / Σ exp(x − max), with
/// the exponential and the sum eight lanes at a time (`cpu::exp` fixes their order).
pub use crate::cpu::exp::softmax_in_place;

/// Mean cross-entropy of `targets` under the rows of `logits` (rows, vocab), natural log.
pub fn cross_entropy(logits: &ArrayView2<f32>, targets: &[u32]) -> f64 {
    let mut total = 0.0f64;
    for (row, &t) in logits.axis_iter(Axis(0)).zip(targets) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
        total += lse - row[t as usize] as f64;
    }
    total / targets.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn rms_norm_gives_unit_rms_before_weight() {
        let x = array![[3.0f32, 4.0], [1.0, 1.0]];
        let mut y = Array2::zeros((2, 2));
        rms_norm(&x.view(), &array![1.0, 2.0].view(), 0.0, &mut y);
        let rms = (12.5f32).sqrt();
        assert!((y[[0, 0]] - 3.0 / rms).abs() < 1e-6);
        assert!((y[[0, 1]] - 2.0 * 4.0 / rms).abs() < 1e-6);
        assert!((y[[1, 1]] - 2.0).abs() < 1e-6);
    }

    #[test]
    fn linear_uses_out_by_in_weights() {
        let x = array![[1.0f32, 2.0]];
        let w = array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]]; // (out 3, in 2)
        let mut y = Array2::zeros((1, 3));
        linear(&x.view(), &Packed::new(&w.view()), &mut y);
        assert_eq!(y, array![[1.0, 2.0, 3.0]]);
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut xs = [1000.0f32, 1001.0, 999.0];
        softmax_in_place(&mut xs);
        assert!((xs.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(xs[1] > xs[0] && xs[0] > xs[2]);
    }

    #[test]
    fn cross_entropy_of_uniform_logits_is_ln_vocab() {
        let logits = Array2::<f32>::zeros((2, 8));
        assert!((cross_entropy(&logits.view(), &[3, 5]) - (8f64).ln()).abs() < 1e-9);
    }
}
