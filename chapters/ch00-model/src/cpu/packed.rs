//! Weight matrices re-laid at load time for the CPU kernels.
//!
//! A checkpoint stores a linear weight as (out_features, in_features), row after row. `linear`
//! computes a few rows at once (a [`GROUP`]), and reading a few rows side by side means a few
//! memory streams that each restart at every row. [`Packed`] stores each group of rows
//! interleaved instead, `LANES` columns at a time, in exactly the order the kernel reads them: one
//! core working on a group reads one contiguous stream, which the hardware prefetcher follows at
//! full memory speed.
//!
//! ```text
//! rows r0..r3, columns in chunks of 8:      packed group:
//!   r0: a0 a1 a2 …                           a0 b0 c0 d0 a1 b1 c1 d1 a2 …   (then each row's last
//!   r1: b0 b1 b2 …          ──────────▶                                       cols % 8 values)
//!   r2: c0 c1 c2 …
//!   r3: d0 d1 d2 …                          (a0 = r0's columns 0..8, b0 = r1's columns 0..8, …)
//! ```

use crate::cpu::kernels::LANES;
use crate::cpu::pages::WeightMemory;
use crate::cpu::widen::Weight;
use crate::dtype::DType;
use half::{bf16, f16};
use ndarray::{Array2, ArrayView2};

pub use crate::cpu::kernels::GROUP;

/// A (rows, cols) weight matrix in the kernels' layout and in the element type it was kept in,
/// on huge pages where the OS allows it. Rows past `rows` in the last group are zeros.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    rows: usize,
    cols: usize,
    data: Elements, // (ceil(rows / GROUP), GROUP * cols), each group as drawn above
}

/// The packed values in their stored type: `linear` reads them as they are and widens half
/// precision to f32 in registers.
#[derive(Debug, Clone, PartialEq)]
pub enum Elements {
    F32(WeightMemory<f32>),
    F16(WeightMemory<f16>),
    BF16(WeightMemory<bf16>),
}

impl Packed {
    /// The rows of `parts` (all `cols` wide) one after the other, packed as f32. Errors when the
    /// widths differ.
    pub fn stack(parts: &[ArrayView2<f32>]) -> Result<Self, String> {
        Packed::stack_as(parts, DType::F32)
    }

    /// As [`Packed::stack`], each value kept as the nearest `dtype` value (exact when the values
    /// came from a checkpoint of that type).
    pub fn stack_as(parts: &[ArrayView2<f32>], dtype: DType) -> Result<Self, String> {
        let cols = parts.first().map_or(0, |p| p.ncols());
        if let Some(p) = parts.iter().find(|p| p.ncols() != cols) {
            return Err(format!("cannot stack a matrix {} wide under one {cols} wide", p.ncols()));
        }
        let rows: Vec<std::borrow::Cow<[f32]>> =
            parts.iter().flat_map(|p| p.rows()).map(|r| r.to_slice().map_or_else(|| r.to_vec().into(), Into::into)).collect();
        let data = match dtype {
            DType::F32 => Elements::F32(pack(&rows, cols)),
            DType::F16 => Elements::F16(pack(&rows, cols)),
            DType::BF16 => Elements::BF16(pack(&rows, cols)),
        };
        Ok(Packed { rows: rows.len(), cols, data })
    }

    /// One matrix, packed as f32.
    pub fn new(w: &ArrayView2<f32>) -> Self {
        Packed::new_as(w, DType::F32)
    }

    /// One matrix, packed as `dtype`.
    pub fn new_as(w: &ArrayView2<f32>, dtype: DType) -> Self {
        Packed::stack_as(std::slice::from_ref(w), dtype).unwrap_or_else(|_| unreachable!("one part has one width"))
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The element type the values are kept in.
    pub fn dtype(&self) -> DType {
        match self.data {
            Elements::F32(_) => DType::F32,
            Elements::F16(_) => DType::F16,
            Elements::BF16(_) => DType::BF16,
        }
    }

    /// Bytes the values take in memory (padding rows included).
    pub fn bytes(&self) -> u64 {
        let len = match &self.data {
            Elements::F32(d) => d.len(),
            Elements::F16(d) => d.len(),
            Elements::BF16(d) => d.len(),
        };
        len as u64 * self.dtype().bytes()
    }

    /// The packed groups, `GROUP * cols` values each, in their stored type.
    pub fn data(&self) -> &Elements {
        &self.data
    }

    /// Copies row `r` (HF layout: `cols` values) into `out`, widened to f32.
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        match &self.data {
            Elements::F32(d) => row_into(d, self.cols, r, out),
            Elements::F16(d) => row_into(d, self.cols, r, out),
            Elements::BF16(d) => row_into(d, self.cols, r, out),
        }
    }

    /// Rows `range` back in HF layout: (range.len(), cols).
    pub fn unpack_rows(&self, range: std::ops::Range<usize>) -> Array2<f32> {
        let mut out = Array2::zeros((range.len(), self.cols));
        for (r, mut row) in range.zip(out.rows_mut()) {
            if let Some(row) = row.as_slice_mut() {
                self.row_into(r, row);
            }
        }
        out
    }

    /// The whole matrix back in HF layout: (rows, cols).
    pub fn unpack(&self) -> Array2<f32> {
        self.unpack_rows(0..self.rows)
    }
}

/// `rows` (each `cols` wide) in the packed layout, as `E`.
fn pack<E: Weight>(rows: &[std::borrow::Cow<[f32]>], cols: usize) -> WeightMemory<E> {
    let groups = rows.len().div_ceil(GROUP);
    let (full, tail) = (cols - cols % LANES, cols % LANES);
    let mut data = WeightMemory::<E>::zeros(groups * GROUP * cols);
    let mut next = 0;
    let mut put = |values: Option<&[f32]>, len: usize| {
        if let Some(values) = values {
            for (d, &v) in data[next..next + len].iter_mut().zip(values) {
                *d = E::from_f32(v);
            }
        } // else a padding row of the last group: left zero
        next += len;
    };
    for group in rows.chunks(GROUP) {
        let row = |r: usize| group.get(r).map(|row| &row[..]);
        for start in (0..full).step_by(LANES) {
            (0..GROUP).for_each(|r| put(row(r).map(|row| &row[start..start + LANES]), LANES));
        }
        (0..GROUP).for_each(|r| put(row(r).map(|row| &row[full..]), tail));
    }
    data
}

/// Row `r` of packed values `data` (rows `cols` wide) into `out`, widened.
fn row_into<E: Weight>(data: &[E], cols: usize, r: usize, out: &mut [f32]) {
    let full = cols - cols % LANES;
    let group = &data[r / GROUP * GROUP * cols..][..GROUP * cols];
    let i = r % GROUP;
    for (c, chunk) in out[..full].chunks_exact_mut(LANES).enumerate() {
        for (o, w) in chunk.iter_mut().zip(&group[(c * GROUP + i) * LANES..][..LANES]) {
            *o = w.to_f32();
        }
    }
    let tail = cols - full;
    for (o, w) in out[full..cols].iter_mut().zip(&group[GROUP * full + i * tail..][..tail]) {
        *o = w.to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_for_any_shape() {
        for (rows, cols) in [(1, 1), (3, 8), (4, 16), (5, 13), (9, 77)] {
            let a = Array2::from_shape_fn((rows, cols), |(r, c)| (r * 100 + c) as f32);
            let p = Packed::new(&a.view());
            assert_eq!(p.bytes(), (rows.div_ceil(GROUP) * GROUP * cols * 4) as u64);
            assert_eq!(p.unpack(), a, "{rows} × {cols}");
            assert_eq!(p.unpack_rows(1.min(rows - 1)..rows), a.slice(ndarray::s![1.min(rows - 1).., ..]));
        }
    }

    #[test]
    fn stacking_keeps_row_order_and_refuses_mixed_widths() {
        let (a, b) = (Array2::from_elem((2, 9), 1.0f32), Array2::from_elem((3, 9), 2.0f32));
        let p = Packed::stack(&[a.view(), b.view()]).unwrap();
        assert_eq!(p.unpack(), ndarray::concatenate![ndarray::Axis(0), a, b]);
        assert!(Packed::stack(&[a.view(), Array2::<f32>::zeros((1, 8)).view()]).is_err());
    }

    #[test]
    fn half_precision_keeps_two_bytes_and_round_trips_half_values() {
        // Values that f16 and bf16 hold exactly: a matrix read from such a checkpoint.
        let a = Array2::from_shape_fn((9, 77), |(r, c)| ((r * 7 + c) % 64) as f32 * 0.25 - 8.0);
        for dtype in [DType::F16, DType::BF16] {
            let p = Packed::new_as(&a.view(), dtype);
            assert_eq!((p.dtype(), p.bytes()), (dtype, (3 * GROUP * 77 * 2) as u64));
            assert_eq!(p.unpack(), a, "{dtype:?}");
        }
        let rounded = Packed::new_as(&Array2::from_elem((1, 3), 1.0f32 + 1.0 / 1024.0).view(), DType::BF16);
        assert_eq!(rounded.unpack()[[0, 0]], 1.0, "bf16 keeps 8 bits of mantissa");
    }
}
