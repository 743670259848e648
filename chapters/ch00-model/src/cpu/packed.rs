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
use ndarray::{Array2, ArrayView2};

pub use crate::cpu::kernels::GROUP;

/// A (rows, cols) weight matrix in the kernels' layout, on huge pages where the OS allows it.
/// Rows past `rows` in the last group are zeros.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    rows: usize,
    cols: usize,
    data: WeightMemory, // (ceil(rows / GROUP), GROUP * cols), each group as drawn above
}

impl Packed {
    /// The rows of `parts` (all `cols` wide) one after the other, packed. Errors when the widths
    /// differ.
    pub fn stack(parts: &[ArrayView2<f32>]) -> Result<Self, String> {
        let cols = parts.first().map_or(0, |p| p.ncols());
        if let Some(p) = parts.iter().find(|p| p.ncols() != cols) {
            return Err(format!("cannot stack a matrix {} wide under one {cols} wide", p.ncols()));
        }
        let rows: Vec<std::borrow::Cow<[f32]>> =
            parts.iter().flat_map(|p| p.rows()).map(|r| r.to_slice().map_or_else(|| r.to_vec().into(), Into::into)).collect();
        let groups = rows.len().div_ceil(GROUP);
        let (full, tail) = (cols - cols % LANES, cols % LANES);
        let mut data = WeightMemory::zeros(groups * GROUP * cols);
        let mut next = 0;
        let mut put = |values: Option<&[f32]>, len: usize| {
            if let Some(values) = values {
                data[next..next + len].copy_from_slice(values);
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
        Ok(Packed { rows: rows.len(), cols, data })
    }

    /// One matrix, packed.
    pub fn new(w: &ArrayView2<f32>) -> Self {
        Packed::stack(std::slice::from_ref(w)).unwrap_or_else(|_| unreachable!("one part has one width"))
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The packed groups, `GROUP * cols` values each.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Copies row `r` (HF layout: `cols` values) into `out`.
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let (cols, full) = (self.cols, self.cols - self.cols % LANES);
        let group = &self.data[r / GROUP * GROUP * cols..][..GROUP * cols];
        let i = r % GROUP;
        for (c, chunk) in out[..full].chunks_exact_mut(LANES).enumerate() {
            chunk.copy_from_slice(&group[(c * GROUP + i) * LANES..][..LANES]);
        }
        let tail = cols - full;
        out[full..cols].copy_from_slice(&group[GROUP * full + i * tail..][..tail]);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_for_any_shape() {
        for (rows, cols) in [(1, 1), (3, 8), (4, 16), (5, 13), (9, 77)] {
            let a = Array2::from_shape_fn((rows, cols), |(r, c)| (r * 100 + c) as f32);
            let p = Packed::new(&a.view());
            assert_eq!(p.data().len(), rows.div_ceil(GROUP) * GROUP * cols);
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
}
