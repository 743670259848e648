//! The element types the GPU engine runs in: f32 (for exact comparisons with the CPU), f16 and bf16.

use ch00_model::DType;
use cudarc::cublas::sys::cudaDataType_t;
use cudarc::driver::{DeviceRepr, ValidAsZeroBits};

/// An element type of weights, activations and the KV cache on the GPU.
pub trait GpuFloat: DeviceRepr + ValidAsZeroBits + Copy + Default + Send + Sync + 'static {
    const DTYPE: DType;
    /// The C type name the kernels are compiled with (`-DDTYPE=...`).
    const C_NAME: &'static str;
    const CUBLAS: cudaDataType_t;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl GpuFloat for f32 {
    const DTYPE: DType = DType::F32;
    const C_NAME: &'static str = "f32";
    const CUBLAS: cudaDataType_t = cudaDataType_t::CUDA_R_32F;
    fn from_f32(x: f32) -> Self {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl GpuFloat for half::f16 {
    const DTYPE: DType = DType::F16;
    const C_NAME: &'static str = "f16";
    const CUBLAS: cudaDataType_t = cudaDataType_t::CUDA_R_16F;
    fn from_f32(x: f32) -> Self {
        half::f16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
}

impl GpuFloat for half::bf16 {
    const DTYPE: DType = DType::BF16;
    const C_NAME: &'static str = "bf16";
    const CUBLAS: cudaDataType_t = cudaDataType_t::CUDA_R_16BF;
    fn from_f32(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
}
