//! What the GPU kernel tests share: a small deterministic random source, the GPU, uploads
//! (rounded through the element type, or poisoned with NaN), downloads, and the relative error
//! with its per-precision thresholds.
#![allow(dead_code)] // each test file uses its own part

use ch06_cuda::device::Gpu;
use ch06_cuda::GpuFloat;
use cudarc::driver::CudaSlice;


pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next() + 1.0) * 0.5 * n as f32) as usize % n
    }
}

pub fn gpu() -> Gpu {
    Gpu::new(0).expect("these tests need a CUDA GPU")
}

/// Rounds through T, so the CPU reference sees exactly the GPU's inputs.
pub fn round<T: GpuFloat>(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| T::from_f32(x).to_f32()).collect()
}

pub fn up<T: GpuFloat>(g: &Gpu, v: &[f32]) -> CudaSlice<T> {
    g.upload("test input", &v.iter().map(|&x| T::from_f32(x)).collect::<Vec<T>>()).unwrap()
}

pub fn poisoned<T: GpuFloat>(g: &Gpu, n: usize) -> CudaSlice<T> {
    up::<T>(g, &vec![f32::NAN; n])
}

pub fn down<T: GpuFloat>(g: &Gpu, s: &CudaSlice<T>) -> Vec<f32> {
    let mut out = vec![T::default(); s.len()];
    g.stream.memcpy_dtoh(s, &mut out).unwrap();
    out.into_iter().map(T::to_f32).collect()
}

pub fn tol<T: GpuFloat>() -> f64 {
    match T::C_NAME {
        "f32" => 1e-5,
        "f16" => 4e-3,
        _ => 3e-2,
    }
}

/// ‖a − b‖ / ‖b‖, after checking lengths and that every element was written.
pub fn rel_err(what: &str, got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    assert!(!got.is_empty(), "{what}: empty");
    if let Some(i) = got.iter().position(|x| !x.is_finite()) {
        panic!("{what}: element {i} of {} not written (or not finite): {}", got.len(), got[i]);
    }
    let num: f64 = got.iter().zip(want).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}
