//! Weight memory on huge pages, where the operating system allows it.
//!
//! A decode step reads every weight once. 300 MB of weights are 75,000 pages of 4 KiB, and the
//! first touch of each page in a step costs a page-table walk (in a virtual machine, a walk of two
//! nested tables) that the streaming loads wait for. With 2 MiB pages the same bytes span 150
//! pages. On Linux, [`WeightMemory`] is a fresh anonymous mapping, aligned to 2 MiB and marked
//! `MADV_HUGEPAGE` before it is first written, which the kernel then backs with huge pages
//! (transparent huge pages in `madvise` or `always` mode). Elsewhere, or if the mapping fails, it
//! is an ordinary `Vec`: the same values, only slower to stream.

use crate::cpu::widen::Weight;
use std::ops::{Deref, DerefMut};

/// 2 MiB: the huge page size of x86-64 and of most aarch64 Linux kernels.
const HUGE_PAGE: usize = 2 << 20;

/// A fixed-length run of weights (f32, f16 or bf16), on huge pages where possible.
pub struct WeightMemory<T: Weight = f32>(Repr<T>);

enum Repr<T> {
    Heap(Vec<T>),
    #[cfg(target_os = "linux")]
    Mapped { base: *mut libc::c_void, mapped: usize, data: *mut T, len: usize },
}

// SAFETY: `Mapped` owns its mapping exclusively, like a Vec owns its buffer.
unsafe impl<T: Weight> Send for WeightMemory<T> {}
// SAFETY: shared access only reads.
unsafe impl<T: Weight> Sync for WeightMemory<T> {}

impl<T: Weight> WeightMemory<T> {
    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        #[cfg(target_os = "linux")]
        if len * std::mem::size_of::<T>() >= HUGE_PAGE {
            if let Some(m) = Self::map(len) {
                return m;
            }
        }
        WeightMemory(Repr::Heap(vec![T::ZERO; len]))
    }

    /// A private anonymous mapping (zero-filled by the kernel: all-zero bits are 0.0 in every
    /// weight type) with one spare huge page, so that the values can start on a 2 MiB boundary.
    #[cfg(target_os = "linux")]
    fn map(len: usize) -> Option<Self> {
        let bytes = len * std::mem::size_of::<T>();
        let mapped = bytes + HUGE_PAGE;
        let (prot, flags) = (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS);
        // SAFETY: a new mapping of our own, not aliased, checked for failure below.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), mapped, prot, flags, -1, 0) };
        if base == libc::MAP_FAILED {
            return None;
        }
        let start = (base as usize).next_multiple_of(HUGE_PAGE);
        // SAFETY: [start, start + bytes) lies inside the mapping. The advice only changes which
        // pages back it; a refusal leaves ordinary pages, so its result is not needed.
        unsafe { libc::madvise(start as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE) };
        Some(WeightMemory(Repr::Mapped { base, mapped, data: start as *mut T, len }))
    }
}

impl<T: Weight> Deref for WeightMemory<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.0 {
            Repr::Heap(v) => v,
            // SAFETY: `len` values inside the live mapping, zero-initialised by the kernel.
            #[cfg(target_os = "linux")]
            Repr::Mapped { data, len, .. } => unsafe { std::slice::from_raw_parts(*data, *len) },
        }
    }
}

impl<T: Weight> DerefMut for WeightMemory<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.0 {
            Repr::Heap(v) => v,
            // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
            #[cfg(target_os = "linux")]
            Repr::Mapped { data, len, .. } => unsafe { std::slice::from_raw_parts_mut(*data, *len) },
        }
    }
}

impl<T: Weight> Drop for WeightMemory<T> {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Repr::Mapped { base, mapped, .. } = self.0 {
            // SAFETY: the whole mapping made in `map`, unmapped once.
            unsafe { libc::munmap(base, mapped) };
        }
    }
}

impl<T: Weight> Clone for WeightMemory<T> {
    fn clone(&self) -> Self {
        let mut copy = WeightMemory::zeros(self.len());
        copy.copy_from_slice(self);
        copy
    }
}

impl<T: Weight> std::fmt::Debug for WeightMemory<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = if matches!(self.0, Repr::Heap(_)) { "heap" } else { "huge pages" };
        write!(f, "WeightMemory({} {:?} values, {place})", self.len(), T::DTYPE)
    }
}

impl<T: Weight> PartialEq for WeightMemory<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_buffers_hold_what_is_written() {
        for len in [0, 5, HUGE_PAGE / 4 + 3] {
            let mut m = WeightMemory::<f32>::zeros(len);
            assert!(m.iter().all(|&v| v == 0.0));
            for (i, v) in m.iter_mut().enumerate() {
                *v = i as f32;
            }
            let c = m.clone();
            assert_eq!(c, m);
            assert_eq!(c.last().copied(), len.checked_sub(1).map(|l| l as f32));
        }
    }
}
