//! Weight memory on huge pages, where the operating system allows it.
//!
//! A decode step reads every weight once. 300 MB of weights are 75,000 pages of 4 KiB, and the
//! first touch of each page in a step costs a page-table walk (in a virtual machine, a walk of two
//! nested tables) that the streaming loads must wait for. With 2 MiB pages the same bytes span
//! 150 pages. On Linux the kernel backs an address range with 2 MiB pages when asked with
//! `madvise(MADV_HUGEPAGE)` before the range is first written (transparent huge pages in
//! `madvise` or `always` mode); elsewhere the request is skipped and nothing else changes.

use ndarray::{Array2, ArrayView2, ShapeError};

const HUGE_PAGE: usize = 2 << 20;

// ANCHOR: stack_rows
/// The rows of `parts` one after the other, as one (Σ rows, cols) matrix, in memory that the OS
/// is asked to back with huge pages before it is written.
pub fn stack_rows(parts: &[ArrayView2<f32>]) -> Result<Array2<f32>, ShapeError> {
    let cols = parts.first().map_or(0, |p| p.ncols());
    let rows = parts.iter().map(|p| p.nrows()).sum::<usize>();
    let mut data = Vec::with_capacity(rows * cols);
    advise_huge_pages(&data);
    for part in parts {
        match part.as_slice() {
            Some(s) if part.ncols() == cols => data.extend_from_slice(s),
            _ => data.extend(part.iter()), // a wrong width is caught by the shape check below
        }
    }
    Array2::from_shape_vec((rows, cols), data)
}
// ANCHOR_END: stack_rows

/// Asks for huge pages over the whole 2 MiB pages inside `v`'s allocated capacity. Only a hint:
/// the result is ignored, and memory contents are never affected.
pub fn advise_huge_pages(v: &Vec<f32>) {
    #[cfg(target_os = "linux")]
    {
        let start = v.as_ptr() as usize;
        let end = start + v.capacity() * std::mem::size_of::<f32>();
        let (first, last) = (start.next_multiple_of(HUGE_PAGE), end / HUGE_PAGE * HUGE_PAGE);
        if first < last {
            // SAFETY: the range lies inside `v`'s allocation; MADV_HUGEPAGE changes how the kernel
            // backs it with pages, never what it holds.
            unsafe { libc::madvise(first as *mut libc::c_void, last - first, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (v, HUGE_PAGE);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn stacks_rows_in_order_and_refuses_mixed_widths() {
        let (a, b) = (array![[1.0f32, 2.0]], array![[3.0f32, 4.0], [5.0, 6.0]]);
        assert_eq!(stack_rows(&[a.view(), b.view()]).unwrap(), array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]);
        assert_eq!(stack_rows(&[b.t()]).unwrap(), array![[3.0, 5.0], [4.0, 6.0]]);
        assert!(stack_rows(&[a.view(), array![[1.0f32, 2.0, 3.0]].view()]).is_err());
    }
}
