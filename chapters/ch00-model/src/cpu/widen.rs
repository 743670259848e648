//! The element types weights are kept in, and how each instruction set widens them to f32.
//!
//! A decode step reads every weight once, so a weight kept in 2 bytes instead of 4 halves the
//! bytes a step waits for. The kernels load weights in their stored type and widen them in
//! registers; every product and every sum stays f32. Widening f16 or bf16 to f32 is exact (each
//! half value is an f32 value), so a half-precision model computes bit for bit what the f32 model
//! made from the same checkpoint computes: only the bytes read change, never the order or the
//! arithmetic.
//!
//! ```text
//! bf16: s eeeeeeee mmmmmmm             → f32: s eeeeeeee mmmmmmm 0000000000000000  (a shift)
//! f16:  s eeeee mmmmmmmmmm             → f32: exponent re-biased, mantissa shifted (F16C's vcvtph2ps)
//! ```

use crate::dtype::DType;
use half::{bf16, f16};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// A weight element the kernels read: f32, or a half-precision type widened on load.
pub trait Weight: Copy + Send + Sync + PartialEq + std::fmt::Debug + 'static {
    /// The element type's name in the rest of the crate.
    const DTYPE: DType;
    /// Zero, which also pads a packed group's missing rows.
    const ZERO: Self;
    /// The nearest value of this type (round to nearest, ties to even).
    fn from_f32(v: f32) -> Self;
    /// The exact f32 value.
    fn to_f32(self) -> f32;
    /// Eight consecutive weights as eight f32 lanes. Inlined into the kernels' functions, which
    /// are compiled with the instructions it needs.
    ///
    /// # Safety
    /// `p` points at eight readable values; the CPU has AVX2 and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> __m256;
    /// Sixteen consecutive weights as sixteen f32 lanes.
    ///
    /// # Safety
    /// `p` points at sixteen readable values; the CPU has AVX-512 F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> __m512;
}

impl Weight for f32 {
    const DTYPE: DType = DType::F32;
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> __m256 {
        unsafe { _mm256_loadu_ps(p) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> __m512 {
        unsafe { _mm512_loadu_ps(p) }
    }
}

impl Weight for f16 {
    const DTYPE: DType = DType::F16;
    const ZERO: Self = f16::ZERO;
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> __m256 {
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) } // F16C
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f16) -> __m512 {
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
    }
}

// ANCHOR: bf16
impl Weight for bf16 {
    const DTYPE: DType = DType::BF16;
    const ZERO: Self = bf16::ZERO;
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        // The bits of a bf16 are the top half of an f32's: no rounding, no table.
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const bf16) -> __m256 {
        unsafe {
            let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)); // zero-extended
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const bf16) -> __m512 {
        unsafe {
            let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide))
        }
    }
}
// ANCHOR_END: bf16

#[cfg(test)]
mod tests {
    use super::*;

    /// Values that cover each type's normal, subnormal, signed-zero, infinite and large ranges.
    fn samples() -> Vec<f32> {
        let mut v: Vec<f32> = (0..4096).map(|i| ((i as f32) * 0.731).sin() * 2f32.powi(i % 40 - 20)).collect();
        v.extend([0.0, -0.0, 1.0, -1.0, 6.0e-8, -6.0e-8, 65504.0, 1.0e30, f32::INFINITY, f32::NEG_INFINITY]);
        v
    }

    #[test]
    fn bf16_widening_is_the_half_crates() {
        for v in samples() {
            let b = bf16::from_f32(v);
            assert_eq!(Weight::to_f32(b).to_bits(), b.to_f32().to_bits(), "{v}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_widening_gives_the_portable_values() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c")) {
            return;
        }
        #[target_feature(enable = "avx2,f16c")]
        unsafe fn check8<E: Weight>(v: &[E]) {
            for chunk in v.chunks_exact(8) {
                let mut out = [0.0f32; 8];
                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), E::load8(chunk.as_ptr())) };
                for (o, e) in out.iter().zip(chunk) {
                    assert_eq!(o.to_bits(), e.to_f32().to_bits(), "{e:?}");
                }
            }
        }
        #[target_feature(enable = "avx512f")]
        unsafe fn check16<E: Weight>(v: &[E]) {
            for chunk in v.chunks_exact(16) {
                let mut out = [0.0f32; 16];
                unsafe { _mm512_storeu_ps(out.as_mut_ptr(), E::load16(chunk.as_ptr())) };
                for (o, e) in out.iter().zip(chunk) {
                    assert_eq!(o.to_bits(), e.to_f32().to_bits(), "{e:?}");
                }
            }
        }
        let (h, b): (Vec<f16>, Vec<bf16>) = samples().iter().map(|&v| (f16::from_f32(v), bf16::from_f32(v))).unzip();
        // SAFETY: features checked above (AVX-512 just below).
        unsafe {
            check8(&h);
            check8(&b);
            if is_x86_feature_detected!("avx512f") {
                check16(&h);
                check16(&b);
            }
        }
    }
}
