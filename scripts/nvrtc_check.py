#!/usr/bin/env python3
"""Compiles every CUDA kernel of chapter 6 with NVRTC on the CPU: no GPU, no driver needed.

The GPU machine is lent only at times, and a kernel that does not compile breaks every ch06 entry
point at start-up (`Kernels::new` compiles them all). This runs NVRTC exactly as device.rs does
(common.cuh prepended, the defines kernels.rs and prefill.rs pass, --std=c++17) for f32, f16 and
bf16 and every attention shape the Rust side compiles, for sm_90 (sm_90a for the wgmma prefill) and
sm_80. It proves the kernels compile, nothing about what they compute: the GPU tests do that.

    python3 scripts/nvrtc_check.py            # fetches NVRTC 12.9 from PyPI into $NVRTC_DIR (~/.cache/kvserve-nvrtc)

Exits non-zero, with NVRTC's log, on any failure (also when NVRTC cannot be fetched).
"""
import ctypes
import glob
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "chapters", "ch06-cuda", "src", "kernels")
CACHE = os.environ.get("NVRTC_DIR", os.path.expanduser("~/.cache/kvserve-nvrtc"))
WHEELS = ["nvidia-cuda-nvrtc-cu12==12.9.86", "nvidia-cuda-runtime-cu12==12.9.79"]  # libnvrtc; cuda_fp16.h


def fetch():
    """libnvrtc.so and the CUDA headers, from the two wheels (downloaded once)."""
    lib = os.path.join(CACHE, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so.12")
    inc = os.path.join(CACHE, "nvidia", "cuda_runtime", "include")
    if not os.path.exists(lib):
        os.makedirs(CACHE, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--platform", "manylinux2014_x86_64", "--python-version", "3.11", "-d", CACHE, *WHEELS], check=True)
        for w in glob.glob(os.path.join(CACHE, "*.whl")):
            zipfile.ZipFile(w).extractall(CACHE)
    return ctypes.CDLL(lib), inc


def compile_one(nvrtc, inc, name, defines, arch):
    src = open(os.path.join(KERNELS, "common.cuh")).read() + "\n" + open(os.path.join(KERNELS, name)).read()
    prog = ctypes.c_void_p()
    if nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), name.encode(), 0, None, None) != 0:
        return "nvrtcCreateProgram failed"
    opts = [f"-D{k}={v}".encode() for k, v in defines] + [f"--gpu-architecture={arch}".encode(), b"--std=c++17",
                                                           f"-I{inc}".encode()]
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    return None if rc == 0 else log.value.decode(errors="replace")


def cases():
    """(file, defines, arch) for every compilation the Rust side can ask for."""
    for arch in ["sm_90", "sm_80"]:
        for t in ["f32", "f16", "bf16"]:
            half = t != "f32"
            for f in ["rmsnorm.cu", "embedding.cu", "rope_cache.cu", "silu_mul.cu", "argmax.cu", "init.cu"]:
                yield f, [("DTYPE", t)], arch
            # kernels.rs: GEMV_MAX_N, GEMV_WARPS, GEMV_RPW, GU
            yield "gemv.cu", [("DTYPE", t), ("GEMV_MAX_N", 8), ("GEMV_WARPS", 8), ("GEMV_RPW", 1), ("GU", 4)], arch
            for d in [16, 32, 64, 128, 256]:  # kernels::HEAD_DIMS; GROUP: kernels::group_chunk's choices
                for g in [g for g in [1, 2, 4, 8] if (max(d, 128) // 32) * g * d * 4 <= 16 << 10]:
                    defs = [("DTYPE", t), ("HEAD_DIM", d), ("GROUP", g), ("PART", 512)]
                    if half and d % 64 == 0 and g >= 2:  # kernels::decode_on_tensor_cores
                        defs.append(("DECODE_TC", 1))
                    yield "paged_attention.cu", defs, arch
                base = [("DTYPE", t), ("HEAD_DIM", d)]
                yield "prefill_attention.cu", base, arch
                if half and d in (32, 64, 128):  # prefill::DEFAULT_TC
                    yield "prefill_attention.cu", base + [("TENSOR_CORES", 1), ("NWARPS", 8), ("MT", 1), ("BK", 64)], arch
                if half and d in (64, 128) and arch == "sm_90":  # prefill::DEFAULT_WGMMA
                    yield "prefill_attention.cu", base + [("WGMMA", 1), ("NWG", 3), ("WBK", 64), ("STAGES", 2),
                                                          ("OVERLAP", 0)], "sm_90a"


def main():
    nvrtc, inc = fetch()
    n, failed = 0, 0
    for name, defines, arch in cases():
        n += 1
        err = compile_one(nvrtc, inc, name, defines, arch)
        if err is not None:
            failed += 1
            print(f"FAILED {name} {arch} {defines}:\n{err}")
    print(f"nvrtc_check: {n - failed} of {n} compilations ok")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
