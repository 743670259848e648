//! Chapter 6: PagedAttention on CUDA. Chapter 5's scheduler, block allocator, block tables and
//! loop drive an NVIDIA GPU: weights and the paged KV cache live in device memory, the linear
//! layers are cuBLAS GEMMs over the step's flattened tokens, the small operations are CUDA C
//! kernels compiled at start-up by NVRTC, attention is our own paged kernel, and decode steps
//! are replayed as CUDA graphs.
//!
//! [`device`] opens the GPU (a clear error where there is none), [`kernels`] compiles and
//! launches the `.cu` files beside it, [`weights`] uploads the model, [`model`] is one forward
//! pass, [`runner`] plugs it into chapter 5's loop, [`prefill`] is the prefill attention over the
//! paged cache (CPU reference and launch), [`float`] the f16/bf16/f32 element types, [`engine`]
//! sizes the KV pool, [`roofline`] bounds a whole run by the card's ceilings, and [`bench`]
//! measures kernels and decode steps against their floors.

// The kernel launchers are `unsafe fn`s (raw device addresses); every unsafe call inside them
// still gets its own `unsafe` block and `SAFETY` comment.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod bench;
pub mod device;
pub mod engine;
pub mod float;
pub mod kernels;
pub mod model;
pub mod prefill;
pub mod roofline;
pub mod runner;
pub mod weights;

pub use device::Gpu;
pub use engine::{CudaEngine, GpuSetup};
pub use float::GpuFloat;
pub use runner::{GpuRunner, GpuStats};
