//! The GPU handle: one CUDA context, one stream, one cuBLAS handle, and NVRTC compilation of the
//! chapter's `.cu` files. Everything runs on the one stream, in order, so the only
//! synchronisation is copying token ids back at the end of a step.

use ch00_model::{ModelError, Result};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr, ValidAsZeroBits};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use std::sync::Arc;

/// Bytes cuBLAS may use as scratch; given to it up front so graph capture never allocates.
const CUBLAS_WORKSPACE: usize = 32 << 20;

pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub blas: CudaBlas,
    _workspace: CudaSlice<u8>,
    include: String,
}

/// Why there is no GPU to run on, or what a CUDA call said: always an error, never a panic.
pub fn device_err(what: &str, e: impl std::fmt::Debug) -> ModelError {
    ModelError::Device(format!("{what}: {e:?}"))
}

impl Gpu {
    /// Opens GPU `ordinal`. Without the CUDA driver, NVRTC or cuBLAS this is a clear error
    /// (cudarc loads them at run time, so the crate builds and tests everywhere).
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: these only try to dlopen the libraries.
        let present = unsafe {
            [
                ("the CUDA driver (libcuda)", cudarc::driver::sys::is_culib_present()),
                ("NVRTC (libnvrtc)", cudarc::nvrtc::sys::is_culib_present()),
                ("cuBLAS (libcublas)", cudarc::cublas::sys::is_culib_present()),
            ]
        };
        if let Some((name, _)) = present.iter().find(|(_, ok)| !ok) {
            return Err(ModelError::Device(format!("no CUDA GPU here: {name} was not found")));
        }
        let count = CudaContext::device_count().map_err(|e| device_err("counting CUDA devices", e))?;
        if ordinal as i32 >= count {
            return Err(ModelError::Device(format!("no CUDA GPU {ordinal}: this machine has {count}")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| device_err("creating a CUDA context", e))?;
        // One stream, in-order: cudarc's cross-stream event tracking would only add event
        // records to every launch (and to captured graphs).
        // SAFETY: no other stream touches our buffers.
        unsafe { ctx.disable_event_tracking() };
        // A stream of our own: the legacy default stream cannot be captured into a graph.
        let stream = ctx.new_stream().map_err(|e| device_err("creating a stream", e))?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| device_err("creating a cuBLAS handle", e))?;
        let workspace = stream.alloc_zeros::<u8>(CUBLAS_WORKSPACE).map_err(|e| oom("the cuBLAS workspace", CUBLAS_WORKSPACE, e))?;
        let (wp, _) = workspace.device_ptr(&stream);
        // SAFETY: the workspace lives as long as the handle (both in this struct).
        let status = unsafe { cudarc::cublas::sys::cublasSetWorkspace_v2(*blas.handle(), wp as *mut _, CUBLAS_WORKSPACE) };
        if status != cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(ModelError::Device(format!("cublasSetWorkspace: {status:?}")));
        }
        let include = std::env::var("CUDA_HOME").map(|h| format!("{h}/include")).unwrap_or("/usr/local/cuda/include".into());
        Ok(Gpu { ctx, stream, blas, _workspace: workspace, include })
    }

    pub fn name(&self) -> String {
        self.ctx.name().unwrap_or_else(|_| "unknown GPU".into())
    }

    /// (free, total) bytes of device memory.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        self.ctx.mem_get_info().map_err(|e| device_err("cuMemGetInfo", e))
    }

    // ANCHOR: compile
    /// Compiles one of the chapter's `.cu` files for this GPU with NVRTC, with `defines`
    /// (element type, head size, …) fixed at compile time, and loads it.
    pub fn compile(&self, name: &str, source: &str, defines: &[(&str, String)]) -> Result<Arc<CudaModule>> {
        let (major, minor) = self.compute_capability()?;
        self.compile_for(&format!("sm_{major}{minor}"), name, source, defines)
    }

    /// [`compile`](Self::compile) for a named target, e.g. `sm_90a`: Hopper's architecture-specific
    /// instructions (`wgmma`, `setmaxnreg`) exist only there, and its code runs on no other GPU.
    pub fn compile_for(&self, arch: &str, name: &str, source: &str, defines: &[(&str, String)]) -> Result<Arc<CudaModule>> {
        let mut options: Vec<String> = defines.iter().map(|(k, v)| format!("-D{k}={v}")).collect();
        options.push(format!("--gpu-architecture={arch}"));
        options.push("--std=c++17".into());
        let opts = CompileOptions { include_paths: vec![self.include.clone()], options, ..Default::default() };
        let src = format!("{}\n{}", include_str!("kernels/common.cuh"), source);
        let ptx = compile_ptx_with_opts(src, opts).map_err(|e| ModelError::Device(format!("NVRTC compiling {name}: {e}")))?;
        self.ctx.load_module(ptx).map_err(|e| device_err(&format!("loading {name}"), e))
    }
    // ANCHOR_END: compile

    /// (major, minor) compute capability: (9, 0) is Hopper (H100, H200).
    pub fn compute_capability(&self) -> Result<(i32, i32)> {
        self.ctx.compute_capability().map_err(|e| device_err("compute capability", e))
    }

    pub fn function(&self, module: &Arc<CudaModule>, name: &str) -> Result<CudaFunction> {
        module.load_function(name).map_err(|e| device_err(&format!("kernel {name}"), e))
    }

    /// Device memory for `len` elements, zeroed; out of memory is an error naming what was asked.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, what: &str, len: usize) -> Result<CudaSlice<T>> {
        self.stream.alloc_zeros::<T>(len.max(1)).map_err(|e| oom(what, len * std::mem::size_of::<T>(), e))
    }

    /// Copies host data into new device memory.
    pub fn upload<T: DeviceRepr>(&self, what: &str, data: &[T]) -> Result<CudaSlice<T>> {
        self.stream.clone_htod(data).map_err(|e| oom(what, std::mem::size_of_val(data), e))
    }

    pub fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| device_err("synchronising the stream", e))
    }
}

/// The raw device address of a buffer, for kernel arguments and cuBLAS.
pub fn ptr<T>(gpu: &Gpu, s: &CudaSlice<T>) -> u64 {
    s.device_ptr(&gpu.stream).0
}

pub fn oom(what: &str, bytes: usize, e: impl std::fmt::Debug) -> ModelError {
    ModelError::Device(format!(
        "could not allocate {what} ({:.2} GiB) on the GPU: {e:?}; lower --gpu-memory-utilization, the batch or the model size",
        bytes as f64 / (1u64 << 30) as f64
    ))
}
